//! `steward.messaging.v1.Messaging` ([`MessagingService`]): the messaging proxy's gRPC face,
//! called with tenant API tokens (protocol: `docs/protocol/messaging.md`). It turns wire types
//! into the domain's ([`SendEntry`], [`ReceiveSpec`], receipts with durations) and back, asks the
//! tenant's quota for each new producer or consumer through the [`Admit`] closure it hands to
//! [`Messaging`], and renders a consumer's events as a `ReceiveMessages` stream.
//!
//! Malformed well-known types (a negative or out-of-range `google.protobuf.Duration`, an
//! out-of-range `google.protobuf.Timestamp`; the rules are in [`crate::wkt`]) are refused here, as
//! a whole request, naming the field; every other rule is [`Messaging`]'s
//! (`steward_messaging::names`).
//!
//! [`Admit`]: steward_messaging::Admit

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::{Stream, StreamExt as _};
use steward_core::ResourceKind;
use steward_messaging::consumer::StreamSettings;
use steward_messaging::names::Invalid;
use steward_messaging::{
    AdmitGuard, ConsumerEvent, Delivered, EntryError, Messaging, MessagingError, OutMessage,
    ReceiveSpec, SendEntry, SendResult,
};
use steward_proto::messaging::v1 as pb;
use steward_proto::messaging::v1::messaging_server::{Messaging as MessagingRpc, MessagingServer};
use steward_proto::messaging::v1::receive_messages_response::{Deliveries, Event, Started};
use steward_proto::prost::Message as _;
use steward_proto::prost::encoding::encoded_len_varint;
use steward_tenancy::{Tenancy, TenantContext};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::error::status_from_messaging;
use crate::tenant_of;
use crate::wkt::{self, duration_to_pb};

/// Most encoded bytes of deliveries in one `ReceiveMessages` response: 4 MiB, the default
/// receive limit of gRPC clients (grpc-go, grpc-java, grpc-core), so that streams of ordinary
/// messages work with default clients. A single delivery bigger than this travels alone.
pub const DELIVERIES_FRAME_BUDGET: usize = 4 * 1024 * 1024;

/// Bytes a `Deliveries` response adds around its deliveries: the oneof field's tag and length.
const FRAME_OVERHEAD: usize = 1 + 10;

/// `steward.messaging.v1.Messaging`: the calling tenant's producers and consumers, through the
/// [`Messaging`] handle. Serve it behind [`TenantAuth`](crate::TenantAuth), which supplies the
/// caller, and with the request size limits of [`MessagingService::into_server`].
///
/// Its `ReceiveMessages` streams end with `UNAVAILABLE` ("shutting_down: …") when `streams` is
/// cancelled (shutdown phase `notify_clients`), so tonic's graceful stop never waits on them;
/// ending a stream drops its consumer, which returns what it held unacked to the broker.
#[derive(Clone)]
pub struct MessagingService {
    messaging: Messaging,
    tenancy: Tenancy,
    streams: CancellationToken,
}

impl MessagingService {
    /// Counts a refusal by a quota the broker keeps in the tenant's admission ledger, so
    /// `/metrics` shows it with the other refusals.
    fn record_refusal(&self, ctx: &TenantContext, quota: &str) {
        if let Some(q) = steward_tenancy::QuotaKind::ALL.into_iter().find(|q| q.as_str() == quota) {
            self.tenancy.ledger().record(ctx.tenant_id(), ctx.quotas(), q, true);
        }
    }

    /// A service over `messaging`; `tenancy` admits new producers and consumers against the
    /// caller's quotas; `streams` ends every open `ReceiveMessages` stream when cancelled.
    #[must_use]
    pub fn new(messaging: Messaging, tenancy: Tenancy, streams: CancellationToken) -> Self {
        Self { messaging, tenancy, streams }
    }

    /// Largest encoded request (and response) message, in bytes: `[messaging] max_request`.
    #[must_use]
    pub fn max_request(&self) -> usize {
        byte_limit(self.messaging.config().max_request.as_u64())
    }

    /// The tonic server of this service, decoding requests of at most
    /// [`MessagingService::max_request`] bytes (a bigger one fails with `OUT_OF_RANGE` before
    /// a handler runs: tonic's decoder refuses it) and encoding responses of at most as many.
    #[must_use]
    pub fn into_server(self) -> MessagingServer<Self> {
        let limit = self.max_request();
        MessagingServer::new(self).max_decoding_message_size(limit).max_encoding_message_size(limit)
    }

    /// Largest encoded `Deliveries` response: [`DELIVERIES_FRAME_BUDGET`], or less when
    /// `max_request` is smaller.
    fn frame_budget(&self) -> usize {
        DELIVERIES_FRAME_BUDGET.min(self.max_request())
    }
}

fn byte_limit(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// The calling tenant: its context (for quota admission) and its id, as the broker keys it.
fn caller<T>(req: &Request<T>) -> Result<(TenantContext, Arc<str>), Status> {
    let ctx = tenant_of(req)?.clone();
    let tenant = ctx.tenant_id().as_str().into();
    Ok((ctx, tenant))
}

/// The messaging quotas of a tenant, as the broker enforces them.
fn tenant_limits(q: &steward_tenancy::Quotas) -> steward_messaging::TenantLimits {
    steward_messaging::TenantLimits {
        topics: q.topics,
        groups: q.groups,
        stored_messages: q.stored_messages,
        stored_bytes: q.stored_bytes,
    }
}

/// Admits one new producer or consumer of `ctx`'s tenant: its quota slot, held by the guard.
fn admit(
    tenancy: &Tenancy,
    ctx: &TenantContext,
    kind: ResourceKind,
) -> Result<AdmitGuard, MessagingError> {
    match tenancy.admit(ctx, kind) {
        Ok(reservation) => Ok(Box::new(reservation)),
        Err(e) => Err(admission_error(&e)),
    }
}

/// What a refused quota admission is to the messaging front door:
/// - `QuotaExceeded` is [`MessagingError::Exhausted`] with its `retry_after` (the ledger's
///   `[tenancy] quota_retry_after`, as the WebSocket edge advises), or zero when waiting cannot
///   help (a quota of 0): then no `retry-after` is sent;
/// - `NotFound` (the tenant is being deleted) is [`MessagingError::Conflict`]
///   (`FAILED_PRECONDITION`): retrying cannot succeed;
/// - anything else is [`MessagingError::Internal`] (`admit` fails in no other way).
pub(crate) fn admission_error(e: &steward_tenancy::Error) -> MessagingError {
    use steward_tenancy::Error as E;
    match e {
        E::QuotaExceeded { retry_after, .. } => MessagingError::Exhausted {
            message: e.to_string(),
            retry_after: retry_after.unwrap_or_default(),
        },
        E::NotFound(_) => MessagingError::Conflict(format!("the tenant is being deleted: {e}")),
        other => MessagingError::Internal(format!("quota admission failed: {other}")),
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> MessagingError {
    MessagingError::Invalid(Invalid::new(field, reason))
}

/// `None` for the empty string (proto3's unset).
fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// A non-negative `google.protobuf.Duration` of request field `field` ([`wkt::duration_from_pb`]).
pub(crate) fn duration_from_pb(
    field: &str,
    d: &prost_types::Duration,
) -> Result<Duration, MessagingError> {
    wkt::duration_from_pb(field, d).map_err(bad_field)
}

/// The instant of `google.protobuf.Timestamp` request field `field` ([`wkt::time_from_pb`]).
pub(crate) fn time_from_pb(
    field: &str,
    t: &prost_types::Timestamp,
) -> Result<SystemTime, MessagingError> {
    wkt::time_from_pb(field, t).map_err(bad_field)
}

fn bad_field(e: wkt::BadField) -> MessagingError {
    invalid(e.field, e.reason)
}

/// The entries of a `SendMessage` request.
///
/// # Errors
/// `Invalid` naming `messages[I].deliver_at` when it is not a valid timestamp.
pub(crate) fn send_entries(
    messages: Vec<pb::OutgoingMessage>,
) -> Result<Vec<SendEntry>, MessagingError> {
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let deliver_at = m
                .deliver_at
                .as_ref()
                .map(|t| time_from_pb(&format!("messages[{i}].deliver_at"), t))
                .transpose()?;
            Ok(SendEntry {
                topic: m.topic,
                message: OutMessage {
                    client_id: m.client_message_id,
                    body: m.body,
                    tag: non_empty(m.tag),
                    keys: m.keys,
                    properties: m.properties,
                    deliver_at,
                },
            })
        })
        .collect()
}

/// One message's result on the wire.
pub(crate) fn send_result_to_pb(result: SendResult) -> pb::SendResult {
    let failed = |code: pb::ResultCode, detail: String| pb::SendResult {
        code: code.into(),
        detail,
        ..pb::SendResult::default()
    };
    match result {
        SendResult::Ok { message_id, duplicate } => pb::SendResult {
            code: pb::ResultCode::Ok.into(),
            message_id,
            duplicate,
            detail: String::new(),
        },
        SendResult::RetryLater(detail) => failed(pb::ResultCode::RetryLater, detail),
        SendResult::Invalid(detail) => failed(pb::ResultCode::InvalidArgument, detail),
        SendResult::Unavailable(detail) => failed(pb::ResultCode::Unavailable, detail),
        SendResult::QuotaExceeded(refusal) => {
            failed(pb::ResultCode::ResourceExhausted, format!("quota_exceeded: {refusal}"))
        }
    }
}

/// The code of an entry that failed.
pub(crate) fn entry_code(e: &EntryError) -> pb::ResultCode {
    match e {
        EntryError::Invalid(_) => pb::ResultCode::InvalidArgument,
        EntryError::NotFound(_) => pb::ResultCode::NotFound,
        EntryError::Unavailable(_) => pb::ResultCode::Unavailable,
    }
}

/// One ack's or nack's result on the wire.
pub(crate) fn entry_result_to_pb(result: Result<(), EntryError>) -> pb::EntryResult {
    match result {
        Ok(()) => pb::EntryResult { code: pb::ResultCode::Ok.into(), detail: String::new() },
        Err(e) => pb::EntryResult { code: entry_code(&e).into(), detail: e.to_string() },
    }
}

/// One `ChangeInvisibleDuration` result on the wire.
pub(crate) fn change_result_to_pb(
    result: Result<SystemTime, EntryError>,
) -> pb::ChangeInvisibleDurationResult {
    match result {
        Ok(until) => pb::ChangeInvisibleDurationResult {
            code: pb::ResultCode::Ok.into(),
            detail: String::new(),
            invisible_until: Some(until.into()),
        },
        Err(e) => pb::ChangeInvisibleDurationResult {
            code: entry_code(&e).into(),
            detail: e.to_string(),
            invisible_until: None,
        },
    }
}

/// The receipts and delays of a `NackMessages` request (an unset delay is zero: at once).
///
/// # Errors
/// `Invalid` naming `entries[I].delay` when it is negative or malformed.
pub(crate) fn nack_entries(
    entries: Vec<pb::NackEntry>,
) -> Result<Vec<(String, Duration)>, MessagingError> {
    entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let delay = e
                .delay
                .as_ref()
                .map(|d| duration_from_pb(&format!("entries[{i}].delay"), d))
                .transpose()?
                .unwrap_or_default();
            Ok((e.receipt_handle, delay))
        })
        .collect()
}

/// The receipts and durations of a `ChangeInvisibleDuration` request.
///
/// # Errors
/// `Invalid` naming `entries[I].invisible_duration` when it is unset, negative or malformed
/// (its range is [`Messaging::change_invisible_duration`]'s rule).
pub(crate) fn change_entries(
    entries: Vec<pb::ChangeInvisibleDurationEntry>,
) -> Result<Vec<(String, Duration)>, MessagingError> {
    entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let field = format!("entries[{i}].invisible_duration");
            let Some(d) = e.invisible_duration.as_ref() else {
                return Err(invalid(field, "is required"));
            };
            Ok((e.receipt_handle, duration_from_pb(&field, d)?))
        })
        .collect()
}

/// The spec of a `ReceiveMessages` request (zeros and empty strings are unset).
///
/// # Errors
/// `Invalid` naming `invisible_duration` when it is negative or malformed (its range is
/// [`Messaging::receive`]'s rule).
pub(crate) fn receive_spec(req: pb::ReceiveMessagesRequest) -> Result<ReceiveSpec, MessagingError> {
    let invisible_duration = req
        .invisible_duration
        .as_ref()
        .map(|d| duration_from_pb("invisible_duration", d))
        .transpose()?;
    Ok(ReceiveSpec {
        group: req.group,
        topic: req.topic,
        tag: non_empty(req.tag),
        consumer_id: non_empty(req.consumer_id),
        max_outstanding_messages: (req.max_outstanding_messages != 0)
            .then_some(req.max_outstanding_messages),
        max_outstanding_bytes: (req.max_outstanding_bytes != 0)
            .then_some(req.max_outstanding_bytes),
        invisible_duration,
        auto_renew: req.auto_renew,
    })
}

/// The `started` message of a stream: its consumer id and effective `settings`, and the
/// heartbeat interval of an idle stream.
pub(crate) fn started(
    consumer_id: &str,
    settings: &StreamSettings,
    heartbeat_interval: Duration,
) -> pb::ReceiveMessagesResponse {
    pb::ReceiveMessagesResponse {
        event: Some(Event::Started(Started {
            consumer_id: consumer_id.to_owned(),
            max_outstanding_messages: settings.max_outstanding_messages,
            max_outstanding_bytes: settings.max_outstanding_bytes,
            invisible_duration: Some(duration_to_pb(settings.invisible_duration)),
            auto_renew: settings.auto_renew,
            heartbeat_interval: Some(duration_to_pb(heartbeat_interval)),
        })),
    }
}

/// A delivery on the wire.
pub(crate) fn delivered_to_pb(d: &Delivered) -> pb::ReceivedMessage {
    let m = &d.message;
    pb::ReceivedMessage {
        message_id: m.message_id.clone(),
        client_message_id: m.client_id.clone(),
        topic: m.topic.to_string(),
        body: m.body.clone(),
        tag: m.tag.clone().unwrap_or_default(),
        keys: m.keys.clone(),
        properties: m.properties.clone(),
        published_at: Some(m.published_at.into()),
        delivery_attempt: d.attempt,
        receipt_handle: d.receipt.clone(),
        invisible_until: Some(d.invisible_until.into()),
        deliver_at: m.deliver_at.map(Into::into),
    }
}

/// `delivered` as `Deliveries` responses, in order, each at most `budget` encoded bytes unless
/// it holds a single delivery that is bigger alone.
pub(crate) fn deliveries_frames(
    delivered: &[Delivered],
    budget: usize,
) -> Vec<pb::ReceiveMessagesResponse> {
    fn frame(messages: Vec<pb::ReceivedMessage>) -> pb::ReceiveMessagesResponse {
        pb::ReceiveMessagesResponse { event: Some(Event::Deliveries(Deliveries { messages })) }
    }
    let mut frames = Vec::new();
    let mut batch = Vec::new();
    let mut size = FRAME_OVERHEAD;
    for d in delivered {
        let message = delivered_to_pb(d);
        let len = message.encoded_len();
        // the repeated field's tag, the length and the message
        let cost = 1 + encoded_len_varint(len as u64) + len;
        if !batch.is_empty() && size + cost > budget {
            frames.push(frame(std::mem::take(&mut batch)));
            size = FRAME_OVERHEAD;
        }
        size += cost;
        batch.push(message);
    }
    if !batch.is_empty() {
        frames.push(frame(batch));
    }
    frames
}

fn heartbeat() -> pb::ReceiveMessagesResponse {
    pb::ReceiveMessagesResponse {
        event: Some(Event::Heartbeat(pb::receive_messages_response::Heartbeat {})),
    }
}

fn shutting_down() -> Status {
    Status::unavailable("shutting_down: server shutting down")
}

type ReceiveStream =
    Pin<Box<dyn Stream<Item = Result<pb::ReceiveMessagesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl MessagingRpc for MessagingService {
    async fn send_message(
        &self,
        req: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        let (ctx, tenant) = caller(&req)?;
        let pb::SendMessageRequest { producer_id, messages } = req.into_inner();
        let entries = send_entries(messages).map_err(|e| status_from_messaging(&e))?;
        let admit_one = |kind| admit(&self.tenancy, &ctx, kind);
        let producer_id = (!producer_id.is_empty()).then_some(producer_id.as_str());
        self.messaging.set_limits(&tenant, tenant_limits(ctx.quotas()));
        let results = self
            .messaging
            .send(&tenant, producer_id, entries, &admit_one)
            .await
            .map_err(|e| status_from_messaging(&e))?;
        for r in &results {
            if let SendResult::QuotaExceeded(refusal) = r {
                self.record_refusal(&ctx, refusal.quota);
            }
        }
        let results = results.into_iter().map(send_result_to_pb).collect();
        Ok(Response::new(pb::SendMessageResponse { results }))
    }

    type ReceiveMessagesStream = ReceiveStream;

    async fn receive_messages(
        &self,
        req: Request<pb::ReceiveMessagesRequest>,
    ) -> Result<Response<Self::ReceiveMessagesStream>, Status> {
        let (ctx, tenant) = caller(&req)?;
        let spec = receive_spec(req.into_inner()).map_err(|e| status_from_messaging(&e))?;
        if self.streams.is_cancelled() {
            return Err(shutting_down());
        }
        let admit_one = |kind| admit(&self.tenancy, &ctx, kind);
        self.messaging.set_limits(&tenant, tenant_limits(ctx.quotas()));
        let events = self.messaging.receive(&tenant, spec, &admit_one).await.map_err(|e| {
            if let MessagingError::QuotaExceeded(refusal) = &e {
                self.record_refusal(&ctx, refusal.quota);
            }
            status_from_messaging(&e)
        })?;
        let heartbeat_interval = self.messaging.config().heartbeat_interval;
        let started = started(events.consumer_id(), events.settings(), heartbeat_interval);
        let receive = Receive::new(events, self.streams.clone(), self.frame_budget());
        Ok(Response::new(Box::pin(receive.into_stream(started))))
    }

    async fn ack_messages(
        &self,
        req: Request<pb::AckMessagesRequest>,
    ) -> Result<Response<pb::AckMessagesResponse>, Status> {
        let (_, tenant) = caller(&req)?;
        let receipts = req.into_inner().receipt_handles;
        let results =
            self.messaging.ack(&tenant, receipts).await.map_err(|e| status_from_messaging(&e))?;
        let results = results.into_iter().map(entry_result_to_pb).collect();
        Ok(Response::new(pb::AckMessagesResponse { results }))
    }

    async fn nack_messages(
        &self,
        req: Request<pb::NackMessagesRequest>,
    ) -> Result<Response<pb::NackMessagesResponse>, Status> {
        let (_, tenant) = caller(&req)?;
        let receipts =
            nack_entries(req.into_inner().entries).map_err(|e| status_from_messaging(&e))?;
        let results =
            self.messaging.nack(&tenant, receipts).await.map_err(|e| status_from_messaging(&e))?;
        let results = results.into_iter().map(entry_result_to_pb).collect();
        Ok(Response::new(pb::NackMessagesResponse { results }))
    }

    async fn change_invisible_duration(
        &self,
        req: Request<pb::ChangeInvisibleDurationRequest>,
    ) -> Result<Response<pb::ChangeInvisibleDurationResponse>, Status> {
        let (_, tenant) = caller(&req)?;
        let receipts =
            change_entries(req.into_inner().entries).map_err(|e| status_from_messaging(&e))?;
        let results = self
            .messaging
            .change_invisible_duration(&tenant, receipts)
            .await
            .map_err(|e| status_from_messaging(&e))?;
        let results = results.into_iter().map(change_result_to_pb).collect();
        Ok(Response::new(pb::ChangeInvisibleDurationResponse { results }))
    }

    async fn cleanup_producer(
        &self,
        req: Request<pb::CleanupProducerRequest>,
    ) -> Result<Response<pb::CleanupProducerResponse>, Status> {
        let (_, tenant) = caller(&req)?;
        let existed = self
            .messaging
            .cleanup_producer(&tenant, &req.get_ref().producer_id)
            .await
            .map_err(|e| status_from_messaging(&e))?;
        Ok(Response::new(pb::CleanupProducerResponse { existed }))
    }

    async fn cleanup_consumer(
        &self,
        req: Request<pb::CleanupConsumerRequest>,
    ) -> Result<Response<pb::CleanupConsumerResponse>, Status> {
        let (_, tenant) = caller(&req)?;
        let pb::CleanupConsumerRequest { group, consumer_id } = req.into_inner();
        let consumer_id = (!consumer_id.is_empty()).then_some(consumer_id.as_str());
        let report = self
            .messaging
            .cleanup_consumer(&tenant, &group, consumer_id)
            .await
            .map_err(|e| status_from_messaging(&e))?;
        Ok(Response::new(pb::CleanupConsumerResponse {
            streams_ended: report.streams,
            messages_returned: report.returned,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let (_, tenant) = caller(&req)?;
        let live_producers = self
            .messaging
            .heartbeat(&tenant, &req.get_ref().producer_ids)
            .map_err(|e| status_from_messaging(&e))?;
        Ok(Response::new(pb::HeartbeatResponse { live_producers }))
    }
}

/// One `ReceiveMessages` stream: the consumer's events (a
/// [`ConsumerStream`](steward_messaging::consumer::ConsumerStream) when served), rendered.
/// Dropping it — the client went away, the stream ended, the server cancelled it — drops the
/// consumer's stream, which ends the consumer and returns what it held unacked to the broker.
pub(crate) struct Receive<S> {
    events: S,
    cancel: CancellationToken,
    /// Responses rendered from one `Deliveries` event, not yet handed to tonic.
    queued: VecDeque<pb::ReceiveMessagesResponse>,
    budget: usize,
}

impl<S> Receive<S>
where
    S: Stream<Item = ConsumerEvent> + Unpin + Send + 'static,
{
    pub(crate) fn new(events: S, cancel: CancellationToken, budget: usize) -> Self {
        Self { events, cancel, queued: VecDeque::new(), budget }
    }

    /// The next response; an error is the last item.
    async fn next(&mut self) -> Result<pb::ReceiveMessagesResponse, Status> {
        if self.cancel.is_cancelled() {
            return Err(shutting_down());
        }
        if let Some(frame) = self.queued.pop_front() {
            return Ok(frame);
        }
        loop {
            let event = tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Err(shutting_down()),
                event = self.events.next() => event,
            };
            match event {
                Some(ConsumerEvent::Deliveries(delivered)) => {
                    self.queued.extend(deliveries_frames(&delivered, self.budget));
                    if let Some(frame) = self.queued.pop_front() {
                        return Ok(frame);
                    }
                }
                Some(ConsumerEvent::Heartbeat) => return Ok(heartbeat()),
                Some(ConsumerEvent::End(e)) => return Err(status_from_messaging(&e)),
                None => {
                    tracing::debug!("consumer stream closed without an end event");
                    return Err(Status::unavailable(
                        "unavailable: the consumer stopped; receive again",
                    ));
                }
            }
        }
    }

    /// `started`, then the responses until the first error, which ends the stream.
    pub(crate) fn into_stream(
        self,
        started: pb::ReceiveMessagesResponse,
    ) -> impl Stream<Item = Result<pb::ReceiveMessagesResponse, Status>> + Send + 'static {
        let rest = futures_util::stream::unfold(Some(self), |receive| async move {
            let mut receive = receive?;
            let item = receive.next().await;
            // after an error the state drops at once: the consumer ends now, not when tonic
            // drops the stream
            let more = item.is_ok().then_some(receive);
            Some((item, more))
        });
        futures_util::stream::once(std::future::ready(Ok(started))).chain(rest)
    }
}

#[cfg(test)]
mod tests;
