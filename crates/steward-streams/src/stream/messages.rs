//! The messages a stream actor receives.

use std::sync::Arc;

use actix::Message;

use super::Subscriber;
use super::subscribers::Subscription;
use crate::Result;
use crate::model::{
    HistoryPage, HistoryQuery, NewPublication, Position, Publication, Published, StreamInfo,
    StreamQuotas,
};

/// Store a publication and fan it out.
#[derive(Message)]
#[rtype(result = "Result<Published>")]
pub(crate) struct Publish {
    pub(crate) publication: NewPublication,
    pub(crate) quotas: StreamQuotas,
}

/// Add a subscriber: its snapshot is offered first, then live publications.
#[derive(Message)]
#[rtype(result = "Result<Subscription>")]
pub(crate) struct Subscribe {
    pub(crate) since: Option<Position>,
    pub(crate) latest: bool,
    pub(crate) subscriber: Arc<dyn Subscriber>,
    pub(crate) quotas: StreamQuotas,
}

/// A page of history.
#[derive(Message)]
#[rtype(result = "Result<HistoryPage>")]
pub(crate) struct GetHistory(pub(crate) HistoryQuery);

/// The latest value of a key, or of every key.
#[derive(Message)]
#[rtype(result = "Result<(Position, Vec<Publication>)>")]
pub(crate) struct GetLatest(pub(crate) Option<Arc<str>>);

/// Remove a key's latest value.
#[derive(Message)]
#[rtype(result = "Result<bool>")]
pub(crate) struct RemoveKey(pub(crate) Arc<str>);

/// What the stream holds.
#[derive(Message)]
#[rtype(result = "Result<StreamInfo>")]
pub(crate) struct GetInfo;

/// The last subscription ended (sent by its guard's drop).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubscribersLeft;
