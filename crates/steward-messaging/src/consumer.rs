//! Consumers.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::sync::mpsc;

use crate::service::ConsumerEvent;

/// The event stream of one consumer, handed to the edge by [`crate::Messaging::receive`].
/// Dropping it ends the consumer: it stops and returns every unacked delivery to the broker.
pub struct ConsumerStream {
    pub(crate) rx: mpsc::Receiver<ConsumerEvent>,
    pub(crate) consumer_id: String,
}

impl ConsumerStream {
    /// The stream's consumer id (the client's, or a generated one).
    #[must_use]
    pub fn consumer_id(&self) -> &str {
        &self.consumer_id
    }
}

impl Stream for ConsumerStream {
    type Item = ConsumerEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}
