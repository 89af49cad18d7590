//! One member of a group: [`Pull::fetch`] over JetStream pull requests, deliver-at deferral and
//! dead-lettering.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::jetstream::AckKind;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::{PullConsumer, pull};
use async_nats::jetstream::stream::ConsumerErrorKind;
use async_nats::{StatusCode, Subject};
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{GroupShared, Inner, NatsLease, codec, naming, within};
use crate::broker::{
    BrokerError, Delivery, GroupKey, Lease, LeaseInner, Message, Pull, SendOutcome,
};
use crate::stats::MessagingStats;

/// How long past a pull request's `expires` the member waits for the server's closing status.
const PULL_MARGIN: Duration = Duration::from_secs(1);
/// Shortest `wait` whose pull request asks for idle heartbeats (nats-server wants a heartbeat
/// under half the request's `expires`).
const MIN_WAIT_FOR_HEARTBEAT: Duration = Duration::from_secs(2);
/// Longest idle-heartbeat period of a pull request.
const MAX_HEARTBEAT: Duration = Duration::from_secs(5);
/// Pause before asking again when the server takes no pull request now.
const BUSY_PAUSE: Duration = Duration::from_millis(100);
/// Pause before a dead letter that could not be moved (its dead-letter topic full or
/// unreachable) is tried again.
const DEAD_LETTER_RETRY: Duration = Duration::from_secs(5);

/// An open pull request's inbox and what it received: handed to the release task when the
/// fetch is dropped before the request ended (the member went away), so what the server still
/// sends to it is returned at once instead of after the ack wait.
struct Abandon<'a> {
    inner: &'a Arc<Inner>,
    sub: Option<async_nats::Subscriber>,
    raw: Vec<async_nats::Message>,
    expires: Instant,
}

impl Abandon<'_> {
    async fn next(&mut self) -> Option<async_nats::Message> {
        match self.sub.as_mut() {
            Some(sub) => sub.next().await,
            None => None,
        }
    }

    /// The request ended: what it brought; the inbox is closed.
    fn finish(mut self) -> Vec<async_nats::Message> {
        self.sub = None;
        std::mem::take(&mut self.raw)
    }
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if let Some(sub) = self.sub.take() {
            self.inner.abandon(sub, std::mem::take(&mut self.raw), self.expires);
        }
    }
}

/// A member's pull handle (see [`super`]).
pub(super) struct NatsPull {
    inner: Arc<Inner>,
    group: Arc<GroupShared>,
    key: GroupKey,
    /// The invisible duration this member asked for.
    invisible: Duration,
    consumer: PullConsumer,
    /// Leased deliveries that did not fit the last fetch's `max_bytes`, with their leases.
    buffer: VecDeque<(Delivery, NatsLease)>,
}

/// How one pull request ended.
enum End {
    /// The batch is full.
    Full,
    /// The server closed the request (nothing more now, or `expires` passed).
    Closed,
    /// The server refused to queue the request while other members' requests wait for what is
    /// there (nats-server 2.9 `408 Requests Pending`, `409 Exceeded MaxWaiting`).
    Busy,
    /// The consumer (or its stream) does not exist (`503`, `409 Consumer Deleted`).
    Gone(String),
    /// The connection dropped.
    Lost(String),
    /// The server neither closed the request nor sent a heartbeat in time.
    Silent,
}

impl NatsPull {
    pub(super) fn new(
        inner: Arc<Inner>,
        group: Arc<GroupShared>,
        key: GroupKey,
        invisible: Duration,
        consumer: PullConsumer,
    ) -> Self {
        Self { inner, group, key, invisible, consumer, buffer: VecDeque::new() }
    }

    /// The consumer's ack wait: a member that asked for another invisible duration moves each
    /// delivery's deadline with a nack-with-delay.
    fn ack_wait(&self) -> Duration {
        self.consumer.cached_info().config.ack_wait
    }

    async fn fetch_inner(
        &mut self,
        max_messages: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, BrokerError> {
        self.inner.check_open()?;
        if !self.buffer.is_empty() {
            let buffered = self.take_buffered(max_messages, max_bytes).await;
            if !buffered.is_empty() {
                return Ok(buffered);
            }
        }
        let start = Instant::now();
        let until = start + wait;
        self.inner.wait_connected(start + self.inner.settings.send_timeout).await?;
        let mut recreated = false;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let (raw, end) = self.pull_round(max_messages, left).await?;
            match end {
                End::Gone(why) if raw.is_empty() => {
                    if recreated {
                        return Err(BrokerError::Unavailable(why));
                    }
                    debug!(consumer = %self.group.consumer, reason = %why, "re-creating the group");
                    self.recreate().await?;
                    recreated = true;
                    continue;
                }
                End::Lost(why) if raw.is_empty() => return Err(BrokerError::Unavailable(why)),
                End::Busy if raw.is_empty() => {
                    // the server takes no request now (`409 Exceeded MaxWaiting`): pause, not spin
                    let left = until.saturating_duration_since(Instant::now());
                    tokio::time::sleep(left.min(BUSY_PAUSE)).await;
                }
                _ => {}
            }
            let deliveries = self.accept(raw).await;
            if !deliveries.is_empty() || Instant::now() >= until {
                return Ok(self.fit(deliveries, max_bytes));
            }
        }
    }

    /// One pull request `{batch, no_wait, expires: wait}`, falling back to a plain long poll
    /// (batch 1) then a top-up when the server answers `Busy` at once.
    async fn pull_round(
        &self,
        batch: usize,
        wait: Duration,
    ) -> Result<(Vec<async_nats::Message>, End), BrokerError> {
        let started = Instant::now();
        // short requests: one that outlives its member (the stream ended mid-fetch) must be
        // gone from the server before that member's leases are returned (see release_task)
        let wait = wait.min(super::PULL_EXPIRES_MAX);
        let (raw, end) = self.pull_once(batch, wait, true).await?;
        if !matches!(end, End::Busy) || !raw.is_empty() {
            return Ok((raw, end));
        }
        let left = wait.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Ok((raw, End::Closed));
        }
        let (mut raw, end) = self.pull_once(1, left, false).await?;
        if raw.len() == 1 && batch > 1 {
            let (more, _) = self.pull_once(batch - 1, Duration::ZERO, true).await?;
            raw.extend(more);
        }
        Ok((raw, end))
    }

    /// Sends one pull request and collects what it brings.
    async fn pull_once(
        &self,
        batch: usize,
        wait: Duration,
        no_wait: bool,
    ) -> Result<(Vec<async_nats::Message>, End), BrokerError> {
        let client = &self.inner.client;
        let inbox = Subject::from(client.new_inbox());
        let sub = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| BrokerError::Unavailable(format!("subscribing for a pull: {e}")))?;
        // a request that waits gets idle heartbeats, so one nobody serves (its consumer was
        // deleted: nats-server answers nothing then) is noticed within `2 * hb`, not `wait`
        let hb = (wait >= MIN_WAIT_FOR_HEARTBEAT).then(|| (wait / 4).min(MAX_HEARTBEAT));
        let request = pull::BatchConfig {
            batch,
            expires: (!wait.is_zero()).then_some(wait),
            no_wait,
            idle_heartbeat: hb.unwrap_or_default(),
            ..pull::BatchConfig::default()
        };
        self.consumer
            .request_batch(request, inbox)
            .await
            .map_err(|e| BrokerError::Unavailable(format!("sending a pull request: {e}")))?;
        // dropped mid-request (the member went away), the inbox goes to the release task
        let mut guard = Abandon {
            inner: &self.inner,
            sub: Some(sub),
            raw: Vec::new(),
            expires: Instant::now() + wait,
        };
        let give_up = Instant::now() + wait + PULL_MARGIN;
        let silence = hb.map_or(wait + PULL_MARGIN, |hb| 2 * hb + PULL_MARGIN);
        let mut heard = Instant::now();
        let mut connected = self.inner.connected.clone();
        connected.borrow_and_update();
        let started = Instant::now();
        let end = loop {
            tokio::select! {
                next = guard.next() => {
                    let Some(m) = next else { break End::Lost("the NATS client closed".into()) };
                    heard = Instant::now();
                    match m.status {
                        None | Some(StatusCode::OK) => {
                            guard.raw.push(m);
                            if guard.raw.len() >= batch {
                                break End::Full;
                            }
                        }
                        Some(StatusCode::IDLE_HEARTBEAT) => {}
                        Some(StatusCode::NOT_FOUND) => break End::Closed,
                        Some(StatusCode::TIMEOUT) => {
                            // "Request Timeout" when `expires` passed or after what was there;
                            // "Requests Pending" at once when others wait for it
                            let early = started.elapsed() + Duration::from_millis(20) < wait;
                            break if guard.raw.is_empty() && early { End::Busy } else { End::Closed };
                        }
                        Some(StatusCode::NO_RESPONDERS) => {
                            let consumer = &self.group.consumer;
                            break End::Gone(format!("consumer {consumer} does not exist"));
                        }
                        Some(status) if status.as_u16() == 400 => {
                            let text = m.description.unwrap_or_default();
                            break End::Lost(format!("NATS refused a pull request: {text}"));
                        }
                        Some(status) => {
                            let text = m.description.unwrap_or_default();
                            let consumer = &self.group.consumer;
                            if text.contains("Deleted") {
                                break End::Gone(format!("consumer {consumer}: {text}"));
                            }
                            debug!(%consumer, %status, %text, "pull request ended");
                            break if guard.raw.is_empty() { End::Busy } else { End::Closed };
                        }
                    }
                }
                () = tokio::time::sleep_until(give_up.min(heard + silence)) => {
                    break End::Silent;
                }
                () = until_disconnected(&mut connected) => {
                    break End::Lost("lost the connection to NATS".into());
                }
            }
        };
        let raw = guard.finish();
        if matches!(end, End::Silent) && raw.is_empty() {
            return Ok((raw, self.why_silent().await));
        }
        Ok((raw, end))
    }

    /// Why a pull request went unanswered. Its consumer may be gone (nats-server answers
    /// nothing then); or, before nats-server 2.10.14, a redelivery that came due just as the
    /// request expired made the server drop the request without a word (see the module docs):
    /// then it ended like an expired one. When the server does not answer the look-up either,
    /// it is not serving.
    async fn why_silent(&self) -> End {
        let info = self.consumer.cached_info();
        let (name, stream) = (info.name.clone(), info.stream_name.clone());
        let looked_up = tokio::time::timeout(
            self.inner.settings.send_timeout,
            self.inner.js.get_consumer_from_stream::<pull::Config, _, _>(&name, &stream),
        )
        .await;
        match looked_up {
            Ok(Ok(_)) => {
                debug!(consumer = %name, "a pull request ended without a word");
                End::Closed
            }
            Ok(Err(err)) => match err.kind() {
                ConsumerErrorKind::JetStream(e)
                    if e.error_code() == ErrorCode::CONSUMER_NOT_FOUND
                        || e.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    End::Gone(format!("consumer {name} does not exist"))
                }
                _ => End::Lost(format!("NATS did not answer a pull request: {err}")),
            },
            Err(_) => End::Lost("NATS did not answer a pull request".into()),
        }
    }

    /// Turns raw deliveries into leased ones: defers what is not due, dead-letters what has
    /// used its attempts.
    async fn accept(&mut self, raw: Vec<async_nats::Message>) -> Vec<Delivery> {
        let now = SystemTime::now();
        let max_attempts = self.inner.settings.max_delivery_attempts;
        let mut out = Vec::with_capacity(raw.len());
        let mut naks: Vec<(Subject, Duration)> = Vec::new();
        for m in raw {
            let Some(reply) = m.reply.clone() else { continue };
            let Some(info) = codec::parse_ack_subject(&reply) else {
                warn!(subject = %reply, "a delivery without a JetStream ack subject");
                continue;
            };
            let message = codec::decode(
                &self.key.topic.topic,
                &m.subject,
                m.headers.as_ref(),
                m.payload.clone(),
                &info,
            );
            let lease = NatsLease {
                group: self.group.clone(),
                reply: reply.clone(),
                stream_seq: info.stream_seq,
                delivery_seq: info.delivery_seq,
            };
            let not_due = message.deliver_at.and_then(|at| at.duration_since(now).ok());
            if let Some(left) = not_due.filter(|left| !left.is_zero()) {
                self.group.deferred(info.stream_seq, info.delivery_seq);
                naks.push((reply, left));
                continue;
            }
            let attempt = self.group.delivered(info.stream_seq, info.delivery_seq, info.delivered);
            if attempt > max_attempts && !self.key.topic.is_dead_letter() {
                self.dead_letter(&message, &lease).await;
                continue;
            }
            if self.invisible != self.ack_wait() {
                naks.push((reply, self.invisible));
            }
            out.push(Delivery {
                message: Arc::new(message),
                attempt,
                lease: Lease(LeaseInner::Nats(lease)),
            });
        }
        self.nak_all(naks).await;
        out
    }

    /// Nacks with a delay, unconfirmed (a lost one only means the ack wait applies).
    async fn nak_all(&self, naks: Vec<(Subject, Duration)>) {
        for (reply, delay) in naks {
            let nak = Bytes::from(AckKind::Nak((!delay.is_zero()).then_some(delay)));
            if let Err(err) = self.inner.client.publish(reply, nak).await {
                debug!(error = %err, "nack with delay failed");
            }
        }
    }

    /// Moves `message` to the dead-letter topic, then terminates it here. When the move fails,
    /// the message is tried again after [`DEAD_LETTER_RETRY`].
    async fn dead_letter(&self, message: &Message, lease: &NatsLease) {
        let dlq = self.key.topic.dead_letter();
        let move_id = format!("{}:{}", self.key.topic.topic, message.message_id);
        let deadline = Instant::now() + self.inner.settings.send_timeout;
        let copy = || {
            let headers = codec::encode_dead_letter(message, &move_id)?;
            let subject = Subject::from(naming::subject(&dlq, message.tag.as_deref()));
            Ok::<_, codec::EncodeError>((subject, message.body.clone(), headers))
        };
        let moved = match copy() {
            Ok(first) => {
                self.inner.publish_all(&dlq, vec![first], |_| copy().ok(), deadline).await.pop()
            }
            Err(err) => Some(SendOutcome::Unavailable(err.0)),
        };
        let moved = match moved {
            Some(SendOutcome::Stored { .. }) => Ok(()),
            Some(SendOutcome::RetryLater(why) | SendOutcome::Unavailable(why)) => Err(why),
            Some(SendOutcome::QuotaExceeded(refusal)) => Err(refusal.to_string()),
            None => Err("no outcome".to_owned()),
        };
        match moved {
            Ok(_) => {
                let term = self
                    .inner
                    .confirm_all(vec![(Lease(LeaseInner::Nats(lease.clone())), AckKind::Term)])
                    .await;
                match term.into_iter().next() {
                    Some(Ok(())) => MessagingStats::add(&self.inner.stats.dead_lettered, 1),
                    Some(Err(err)) => {
                        warn!(
                            topic = %self.key.topic, error = %err,
                            "dead letter moved but not ended here; it moves again, de-duplicated"
                        );
                    }
                    None => {}
                }
            }
            Err(err) => {
                warn!(
                    topic = %self.key.topic, dlq = %dlq, error = %err,
                    "could not dead-letter a message, trying again later"
                );
                self.nak_all(vec![(lease.reply.clone(), DEAD_LETTER_RETRY)]).await;
            }
        }
    }

    /// Hands out at most `max_bytes` (at least one delivery); the rest waits in the buffer.
    fn fit(&mut self, mut deliveries: Vec<Delivery>, max_bytes: usize) -> Vec<Delivery> {
        let mut bytes = 0usize;
        let mut keep = 0;
        for d in &deliveries {
            let w = d.message.weight();
            if keep > 0 && bytes.saturating_add(w) > max_bytes {
                break;
            }
            bytes = bytes.saturating_add(w);
            keep += 1;
        }
        for d in deliveries.drain(keep..) {
            let LeaseInner::Nats(lease) = &d.lease.0 else { continue };
            let lease = lease.clone();
            self.buffer.push_back((d, lease));
        }
        deliveries
    }

    /// Hands out buffered deliveries (limits as [`Pull::fetch`]), restarting their leases.
    async fn take_buffered(&mut self, max_messages: usize, max_bytes: usize) -> Vec<Delivery> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut naks = Vec::new();
        while out.len() < max_messages.max(1) {
            let Some((d, _)) = self.buffer.front() else { break };
            let w = d.message.weight();
            if !out.is_empty() && bytes.saturating_add(w) > max_bytes {
                break;
            }
            bytes = bytes.saturating_add(w);
            let Some((d, lease)) = self.buffer.pop_front() else { break };
            if lease.is_stale() {
                continue;
            }
            naks.push((lease.reply.clone(), self.invisible));
            out.push(d);
        }
        self.nak_all(naks).await;
        out
    }

    /// Re-creates the stream and the consumer after they vanished (nats.rs #1584).
    async fn recreate(&mut self) -> Result<(), BrokerError> {
        let deadline = Instant::now() + self.inner.settings.send_timeout;
        self.inner.forget_stream(&super::naming::stream_name(&self.key.topic));
        let stream =
            within(deadline, "re-creating the stream", self.inner.ensure_stream(&self.key.topic))
                .await?;
        self.consumer = within(
            deadline,
            "re-creating the group",
            self.inner.ensure_consumer(&stream, &self.key, self.invisible),
        )
        .await?;
        Ok(())
    }
}

/// Returns once the connection is lost after this call (the watch turns `false`).
async fn until_disconnected(rx: &mut watch::Receiver<bool>) {
    loop {
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        if !*rx.borrow_and_update() {
            return;
        }
    }
}

impl Pull for NatsPull {
    fn fetch(
        &mut self,
        max_messages: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> BoxFuture<'_, Result<Vec<Delivery>, BrokerError>> {
        self.fetch_inner(max_messages.max(1), max_bytes, wait).boxed()
    }
}

impl Drop for NatsPull {
    fn drop(&mut self) {
        // never handed out: back without counting as an attempt
        let leases: Vec<NatsLease> = self
            .buffer
            .drain(..)
            .map(|(_, lease)| {
                self.group.returned_unseen(lease.stream_seq);
                lease
            })
            .collect();
        self.inner.release_leases(leases);
    }
}
