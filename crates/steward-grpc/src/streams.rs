//! `steward.streams.v1.Streams` ([`StreamsService`]): streams over gRPC, called with tenant API
//! tokens. A `Watch` is a [`Subscriber`] over a bounded channel that the stream offers to
//! without ever waiting on it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures_util::Stream;
use steward_core::ResourceKind;
use steward_proto::streams::v1 as pb;
use steward_proto::streams::v1::streams_server::Streams as StreamsRpc;
use steward_streams::model::{
    HistoryQuery, NewPublication, Position, Publication, Snapshot, StreamQuotas, SubscribeOptions,
};
use steward_streams::stream::{Delivery, Offer};
use steward_streams::{AdmitGuard, Streams, Subscriber, Subscription};
use steward_tenancy::{QuotaKind, Reservation, Tenancy, TenantContext};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::error::{status_from_streams, status_from_tenancy};
use crate::tenant_of;

/// `steward.streams.v1.Streams`: the streams of the calling tenant. Serve it behind
/// [`TenantAuth`](crate::TenantAuth), which supplies the caller. A new stream is admitted
/// against the caller's `streams` quota; a `Watch` holds a `watch_streams` slot while it lives,
/// ends `UNAVAILABLE` when `cancel` is cancelled (shutdown phase `notify_clients`) and
/// `RESOURCE_EXHAUSTED` when more than `watch_buffer` messages wait for its reader.
#[derive(Clone)]
pub struct StreamsService {
    streams: Streams,
    tenancy: Tenancy,
    cancel: CancellationToken,
}

impl StreamsService {
    /// A service over `streams`, admitting with `tenancy`.
    #[must_use]
    pub fn new(streams: Streams, tenancy: Tenancy, cancel: CancellationToken) -> Self {
        Self { streams, tenancy, cancel }
    }
}

/// What a request needs of its caller: tenant, quotas, and the admission of a new stream.
struct Caller {
    tenant: Arc<str>,
    ctx: TenantContext,
    quotas: StreamQuotas,
}

impl Caller {
    fn of<T>(req: &Request<T>) -> Result<Self, Status> {
        let ctx = tenant_of(req)?.clone();
        let q = ctx.quotas();
        let quotas = StreamQuotas { stream_keys: q.stream_keys, stream_bytes: q.stream_bytes };
        Ok(Self { tenant: ctx.tenant_id().as_str().into(), ctx, quotas })
    }

    fn admit(&self, tenancy: &Tenancy) -> steward_streams::Result<AdmitGuard> {
        match tenancy.admit(&self.ctx, ResourceKind::Stream) {
            Ok(reservation) => Ok(Box::new(reservation)),
            Err(steward_tenancy::Error::QuotaExceeded { limit, .. }) => {
                Err(steward_streams::Error::QuotaExceeded { quota: "streams", limit })
            }
            Err(e) => Err(steward_streams::Error::Unavailable(e.to_string())),
        }
    }
}

fn position_to_pb(p: &Position) -> pb::Position {
    pb::Position { offset: p.offset, epoch: p.epoch.clone() }
}

fn position_from_pb(p: pb::Position) -> Position {
    Position { offset: p.offset, epoch: p.epoch }
}

fn publication_to_pb(p: &Publication) -> pb::Publication {
    let payload = if p.json {
        match std::str::from_utf8(&p.data) {
            Ok(text) => pb::publication::Payload::Json(text.to_owned()),
            Err(_) => pb::publication::Payload::Data(p.data.clone()),
        }
    } else {
        pb::publication::Payload::Data(p.data.clone())
    };
    pb::Publication {
        offset: p.offset,
        key: p.key.as_deref().map(str::to_owned),
        payload: Some(payload),
        time_ms: p.time_ms,
    }
}

fn publications_to_pb(ps: &[Publication]) -> Vec<pb::Publication> {
    ps.iter().map(publication_to_pb).collect()
}

fn answer<T>(result: steward_streams::Result<T>) -> Result<T, Status> {
    result.map_err(|e| status_from_streams(&e))
}

fn shutting_down() -> Status {
    Status::unavailable("shutting_down: server shutting down")
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl StreamsRpc for StreamsService {
    async fn publish(
        &self,
        req: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let caller = Caller::of(&req)?;
        let pb::PublishRequest { stream, key, payload, idempotency_key } = req.into_inner();
        let (data, json) = match payload {
            Some(pb::publish_request::Payload::Data(data)) => (data, false),
            Some(pb::publish_request::Payload::Json(text)) => (Bytes::from(text), true),
            None => {
                return Err(status_from_streams(&steward_streams::Error::invalid(
                    "data",
                    "give `data` (bytes) or `json` (text)",
                )));
            }
        };
        let publication = NewPublication {
            key: key.map(Arc::from),
            data,
            json,
            idempotency_key: idempotency_key.map(Arc::from),
        };
        let admit = || caller.admit(&self.tenancy);
        let published = answer(
            self.streams.publish(&caller.tenant, &stream, publication, caller.quotas, &admit).await,
        )?;
        Ok(Response::new(pb::PublishResponse {
            position: Some(position_to_pb(&published.position)),
            duplicate: published.duplicate,
        }))
    }

    async fn latest(
        &self,
        req: Request<pb::LatestRequest>,
    ) -> Result<Response<pb::LatestResponse>, Status> {
        let caller = Caller::of(&req)?;
        let pb::LatestRequest { stream, key } = req.into_inner();
        let admit = || caller.admit(&self.tenancy);
        let (position, publications) = answer(
            self.streams
                .latest(&caller.tenant, &stream, key.as_deref(), caller.quotas, &admit)
                .await,
        )?;
        Ok(Response::new(pb::LatestResponse {
            position: Some(position_to_pb(&position)),
            publications: publications_to_pb(&publications),
        }))
    }

    async fn history(
        &self,
        req: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let caller = Caller::of(&req)?;
        let pb::HistoryRequest { stream, since, limit, reverse } = req.into_inner();
        let query =
            HistoryQuery { since: since.map(position_from_pb), limit: limit as usize, reverse };
        let admit = || caller.admit(&self.tenancy);
        let page = answer(
            self.streams.history(&caller.tenant, &stream, query, caller.quotas, &admit).await,
        )?;
        Ok(Response::new(pb::HistoryResponse {
            position: Some(position_to_pb(&page.position)),
            publications: publications_to_pb(&page.publications),
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        if self.cancel.is_cancelled() {
            return Err(shutting_down());
        }
        let caller = Caller::of(&req)?;
        let slot = self
            .tenancy
            .reserve(&caller.ctx, QuotaKind::WatchStreams)
            .map_err(|e| status_from_tenancy(&e))?;
        let pb::WatchRequest { stream, since, latest } = req.into_inner();
        let buffer = self.streams.config().watch_buffer as usize;
        let (tx, rx) = mpsc::channel(buffer.max(1));
        let overflowed = Arc::new(AtomicBool::new(false));
        let subscriber = Arc::new(WatchSubscriber { tx, overflowed: overflowed.clone() });
        let options = SubscribeOptions { since: since.map(position_from_pb), latest };
        let admit = || caller.admit(&self.tenancy);
        let subscription = answer(
            self.streams
                .subscribe(&caller.tenant, &stream, options, subscriber, caller.quotas, &admit)
                .await,
        )?;
        let watch = Watch {
            rx,
            overflowed,
            cancel: self.cancel.clone(),
            buffer,
            _subscription: subscription,
            _slot: slot,
        };
        Ok(Response::new(Box::pin(watch.into_stream())))
    }

    async fn remove_key(
        &self,
        req: Request<pb::RemoveKeyRequest>,
    ) -> Result<Response<pb::RemoveKeyResponse>, Status> {
        let caller = Caller::of(&req)?;
        let pb::RemoveKeyRequest { stream, key } = req.into_inner();
        let admit = || caller.admit(&self.tenancy);
        let removed = answer(
            self.streams.remove_key(&caller.tenant, &stream, &key, caller.quotas, &admit).await,
        )?;
        Ok(Response::new(pb::RemoveKeyResponse { removed }))
    }

    async fn info(
        &self,
        req: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        let caller = Caller::of(&req)?;
        let stream = req.into_inner().stream;
        let admit = || caller.admit(&self.tenancy);
        let info = answer(self.streams.info(&caller.tenant, &stream, caller.quotas, &admit).await)?;
        Ok(Response::new(pb::InfoResponse {
            position: Some(position_to_pb(&info.store.position)),
            history: info.store.history,
            keys: info.store.keys,
            bytes: info.store.bytes,
            subscribers: info.subscribers,
            engine: info.engine.to_owned(),
        }))
    }
}

/// What the stream offers a `Watch`.
enum Item {
    Event(pb::WatchEvent),
    Ended(Status),
}

/// The stream's side of one `Watch`: `try_send` into a bounded channel.
struct WatchSubscriber {
    tx: mpsc::Sender<Item>,
    overflowed: Arc<AtomicBool>,
}

impl WatchSubscriber {
    fn push(&self, item: Item) -> Offer {
        match self.tx.try_send(item) {
            Ok(()) => Offer::Queued,
            Err(TrySendError::Full(_)) => {
                self.overflowed.store(true, Ordering::Release);
                Offer::Overflow
            }
            Err(TrySendError::Closed(_)) => Offer::Closed,
        }
    }
}

impl Subscriber for WatchSubscriber {
    fn subscribed(&self, _stream: &Arc<str>, s: &Snapshot) -> Offer {
        self.push(Item::Event(pb::WatchEvent {
            event: Some(pb::watch_event::Event::Subscribed(pb::Subscribed {
                position: Some(position_to_pb(&s.position)),
                recovered: s.recovered,
                was_recovering: s.was_recovering,
                latest: publications_to_pb(&s.latest),
                publications: publications_to_pb(&s.publications),
            })),
        }))
    }

    fn publication(&self, delivery: &Arc<Delivery>) -> Offer {
        self.push(Item::Event(pb::WatchEvent {
            event: Some(pb::watch_event::Event::Publication(publication_to_pb(
                &delivery.publication,
            ))),
        }))
    }

    fn ended(&self, stream: &Arc<str>, code: &'static str, message: &str) {
        let status = Status::unavailable(format!(
            "{code}: the stream `{stream}` ended this watch: {message}; watch again with the last position"
        ));
        // a full queue: the reader is behind anyway and ends as a slow consumer
        let _ = self.push(Item::Ended(status));
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The reading side of one `Watch`; dropping it ends the subscription and frees the slot.
struct Watch {
    rx: mpsc::Receiver<Item>,
    overflowed: Arc<AtomicBool>,
    cancel: CancellationToken,
    buffer: usize,
    _subscription: Subscription,
    _slot: Reservation,
}

impl Watch {
    async fn next(&mut self) -> Option<Result<pb::WatchEvent, Status>> {
        if self.overflowed.load(Ordering::Acquire) {
            return Some(Err(self.slow_consumer()));
        }
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => Some(Err(shutting_down())),
            item = self.rx.recv() => match item {
                Some(Item::Event(event)) => Some(Ok(event)),
                Some(Item::Ended(status)) => Some(Err(status)),
                None if self.overflowed.load(Ordering::Acquire) => Some(Err(self.slow_consumer())),
                None => Some(Err(Status::unavailable("unavailable: the stream stopped; watch again"))),
            },
        }
    }

    fn slow_consumer(&self) -> Status {
        Status::resource_exhausted(format!(
            "slow_consumer: more than {} messages waited for this watch; watch again with the last position",
            self.buffer
        ))
    }

    fn into_stream(self) -> impl Stream<Item = Result<pb::WatchEvent, Status>> + Send + 'static {
        futures_util::stream::unfold(Some(self), |watch| async move {
            let mut watch = watch?;
            let item = watch.next().await?;
            let more = item.is_ok().then_some(watch);
            Some((item, more))
        })
    }
}
