//! Streams on the WebSocket (`subscribe {stream}`): the [`StreamPort`] one admitted connection
//! gets, over `steward-streams`, with the caller's quotas as its token resolved them at the
//! upgrade. Frames are rendered by `steward_streams::frames` (a publication once, for every
//! socket) and offered to the socket's bounded queue without waiting.

use std::sync::Arc;

use bytestring::ByteString;
use futures_util::future::BoxFuture;
use serde_json::Value;
use steward_core::ResourceKind;
use steward_socket::jobs::Offer as SocketOffer;
use steward_socket::port::{FrameSink, PortError, StreamGuard, StreamPort, StreamRequest};
use steward_streams::model::{Position, Snapshot, StreamQuotas, SubscribeOptions};
use steward_streams::stream::{Delivery, Offer};
use steward_streams::{AdmitGuard, Streams, Subscriber, Subscription, frames};
use steward_tenancy::{Tenancy, TenantContext};

/// Streams as one connection's tenant sees them.
pub(crate) struct TenantStreams {
    pub(crate) streams: Streams,
    pub(crate) tenancy: Tenancy,
    pub(crate) tenant: TenantContext,
}

/// The caller's stream quotas.
pub(crate) fn stream_quotas(ctx: &TenantContext) -> StreamQuotas {
    let q = ctx.quotas();
    StreamQuotas { stream_keys: q.stream_keys, stream_bytes: q.stream_bytes }
}

/// Admits a new stream against the caller's `streams` quota.
pub(crate) fn admit_stream(
    tenancy: &Tenancy,
    ctx: &TenantContext,
) -> steward_streams::Result<AdmitGuard> {
    match tenancy.admit(ctx, ResourceKind::Stream) {
        Ok(reservation) => Ok(Box::new(reservation)),
        Err(steward_tenancy::Error::QuotaExceeded { limit, .. }) => {
            Err(steward_streams::Error::QuotaExceeded { quota: "streams", limit })
        }
        Err(e) => Err(steward_streams::Error::Unavailable(e.to_string())),
    }
}

impl StreamPort for TenantStreams {
    fn subscribe(
        &self,
        request: StreamRequest,
        sink: Arc<dyn FrameSink>,
    ) -> BoxFuture<'static, Result<Box<dyn StreamGuard>, PortError>> {
        let (streams, tenancy, ctx) =
            (self.streams.clone(), self.tenancy.clone(), self.tenant.clone());
        Box::pin(async move {
            let tenant: Arc<str> = ctx.tenant_id().as_str().into();
            let StreamRequest { stream, since, latest, id } = request;
            let options = SubscribeOptions {
                since: since.map(|(offset, epoch)| Position { offset, epoch }),
                latest,
            };
            let subscriber = Arc::new(SocketSubscriber { sink, id, latest });
            let admit = || admit_stream(&tenancy, &ctx);
            streams
                .subscribe(&tenant, &stream, options, subscriber, stream_quotas(&ctx), &admit)
                .await
                .map(|s| Box::new(Guard(s)) as Box<dyn StreamGuard>)
                .map_err(|e| PortError { code: e.code(), message: e.to_string() })
        })
    }
}

/// A socket as a stream subscriber: frames into its outbound queue.
struct SocketSubscriber {
    sink: Arc<dyn FrameSink>,
    /// The `subscribe` request's id, echoed in `subscribed`.
    id: Option<Value>,
    latest: bool,
}

impl SocketSubscriber {
    fn offer(&self, frame: ByteString) -> Offer {
        match self.sink.offer_frame(frame) {
            SocketOffer::Queued => Offer::Queued,
            SocketOffer::Overflow => Offer::Overflow,
            SocketOffer::Closed => Offer::Closed,
        }
    }
}

impl Subscriber for SocketSubscriber {
    fn subscribed(&self, stream: &Arc<str>, snapshot: &Snapshot) -> Offer {
        self.offer(frames::subscribed(stream, snapshot, self.latest, self.id.as_ref()))
    }

    fn publication(&self, delivery: &Arc<Delivery>) -> Offer {
        self.offer(delivery.frame().clone())
    }

    fn ended(&self, stream: &Arc<str>, code: &'static str, message: &str) {
        let _ = self.offer(frames::ended(stream, code, message));
    }

    fn is_closed(&self) -> bool {
        self.sink.is_sink_closed()
    }
}

/// A stream subscription held by a socket.
struct Guard(Subscription);

impl StreamGuard for Guard {
    fn is_active(&self) -> bool {
        self.0.is_active()
    }
}
