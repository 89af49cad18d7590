//! The broker's publish task: every send's messages go through one task that writes them to the
//! client back to back and routes the JetStream publish acks back to the sends.
//!
//! async-nats's JetStream publish ([`jetstream::Context::send_publish`]) is a request per
//! message: a fresh inbox subject, a oneshot, a timeout, a semaphore permit and a map entry keyed
//! by the inbox token in the client's connection task. Measured with `perf`, that was about a
//! quarter of Steward's CPU per message. Here instead:
//!
//! - A send reserves room in a bounded window ([`WINDOW`] messages waiting for their acks, over
//!   all sends, at most [`TENANT_SHARE`] of one tenant's, so a tenant that sends as fast as it
//!   can does not starve the others); what does not fit is refused at once with
//!   [`SendOutcome::RetryLater`], so memory never grows with the load.
//! - It hands its messages to the task as one job over a channel. The task takes every job that
//!   is waiting, publishes their messages back to back (core publishes, each with the reply
//!   subject `<inbox>.<n>`; async-nats writes what is queued in one go) and keeps each job
//!   under its first reply number `n`.
//! - One wildcard subscription (`<inbox>.*`) receives every ack; the task finds the job by the
//!   number, parses the ack (`{"stream":…,"seq":…,"duplicate":…}` or `{"error":{…}}`) and, once
//!   a job's last message is answered, answers the send.
//! - A job still waiting at its deadline is answered there: what was acked keeps its outcome,
//!   the rest is [`SendOutcome::Unavailable`] (timed out), and its reply numbers are forgotten
//!   (a late ack is dropped). A send that is cancelled (its future dropped) withdraws its job at
//!   once. Losing the connection answers every waiting message `Unavailable`: an ack that was
//!   on its way is lost with the connection.
//!
//! The window also keeps the subscription's channel (async-nats: 65 536 messages, beyond which
//! it drops them) from filling: at most [`WINDOW`] acks are ever expected at once.

use std::collections::{BTreeMap, BinaryHeap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, ErrorCode};
use async_nats::{Client, HeaderMap, StatusCode, Subject};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::debug;

use super::{lock, sleep_until_opt};
use crate::broker::SendOutcome;

/// Most messages waiting for their publish acks at once, over every send of the broker.
pub(super) const WINDOW: usize = 16_384;
/// Most of the window one tenant may hold: a tenant that sends as fast as it can fills its
/// share and is answered RETRY_LATER, while the other tenants' sends still find room.
pub(super) const TENANT_SHARE: usize = WINDOW / 4;

/// The window: messages handed to the task and not answered yet, in all and per tenant. Room is
/// taken before a job is handed over and given back, message by message, as acks, deadlines,
/// withdrawals or the task's end answer them.
pub(super) struct Window {
    state: Mutex<WindowState>,
    /// Most messages waiting at once ([`WINDOW`] outside tests).
    size: usize,
    /// Most of them one tenant may hold ([`TENANT_SHARE`] outside tests).
    share: usize,
}

#[derive(Default)]
struct WindowState {
    waiting: usize,
    by_tenant: std::collections::HashMap<Arc<str>, usize>,
}

impl Window {
    /// Takes room for up to `n` of `tenant`'s messages; answers how many it took.
    fn reserve(&self, tenant: &Arc<str>, n: usize) -> usize {
        let mut state = lock(&self.state);
        let held = state.by_tenant.get(tenant).copied().unwrap_or(0);
        let taken =
            n.min(self.size.saturating_sub(state.waiting)).min(self.share.saturating_sub(held));
        if taken > 0 {
            state.waiting += taken;
            *state.by_tenant.entry(tenant.clone()).or_default() += taken;
        }
        taken
    }

    /// Gives back room for `n` of `tenant`'s messages.
    fn give_back(&self, tenant: &str, n: usize) {
        if n == 0 {
            return;
        }
        let mut state = lock(&self.state);
        state.waiting = state.waiting.saturating_sub(n);
        if let Some(held) = state.by_tenant.get_mut(tenant) {
            *held = held.saturating_sub(n);
            if *held == 0 {
                state.by_tenant.remove(tenant);
            }
        }
    }
}
/// How long a send waits past its deadline for the task's answer before it gives up on the task
/// (which answers at the deadline itself; the margin covers its scheduling).
const ANSWER_GRACE: Duration = Duration::from_millis(50);

/// One message to publish: subject, body, headers.
pub(super) type Outgoing = (Subject, Bytes, HeaderMap);

/// What became of one published message.
#[derive(Debug, Clone)]
pub(super) enum Published {
    /// The broker's answer (stored, or refused).
    Done(SendOutcome),
    /// No stream takes the subject (deleted behind our back): re-create it and publish again.
    StreamNotFound,
}

/// The send side of the publish task, held by the broker. Dropping it (or [`close`]) ends the
/// task, which answers what is still waiting `Unavailable`.
///
/// [`close`]: Publisher::close
pub(super) struct Publisher {
    /// Jobs and withdrawals for the task; `None` once closed.
    tx: Mutex<Option<mpsc::UnboundedSender<Command>>>,
    /// Messages handed to the task and not answered yet (reserved before handing over).
    window: Arc<Window>,
    /// The next reply number: each job takes as many as it has messages.
    next: AtomicU64,
    /// Fires when the task ended.
    done: Mutex<Option<oneshot::Receiver<()>>>,
}

/// What the task is asked.
enum Command {
    /// Publish these messages.
    Publish(Job),
    /// The send whose job starts at this reply number is gone: forget it.
    Withdraw(u64),
}

struct Job {
    /// Whose messages (their room in the window is the tenant's).
    tenant: Arc<str>,
    /// Reply number of the first message; the others follow.
    first: u64,
    messages: Vec<Outgoing>,
    deadline: Instant,
    answer: oneshot::Sender<Vec<Published>>,
}

impl Publisher {
    /// Creates the publisher, with room for `window` messages waiting for their acks (at most
    /// `share` of them one tenant's), and its task; the caller starts the task (through the
    /// broker's spawner). The task ends when the publisher is closed or dropped.
    pub(super) fn new(
        client: Client,
        connected: watch::Receiver<bool>,
        window: usize,
        share: usize,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = oneshot::channel();
        let window =
            Arc::new(Window { state: Mutex::default(), size: window, share: share.min(window) });
        let task = publish_task(client, rx, connected, window.clone(), done_tx);
        let publisher = Self {
            tx: Mutex::new(Some(tx)),
            window,
            next: AtomicU64::new(0),
            done: Mutex::new(Some(done_rx)),
        };
        (publisher, task)
    }

    /// Messages waiting for their acks right now (each one's routing entry included).
    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        lock(&self.window.state).waiting
    }

    /// `tenant`'s messages waiting for their acks right now.
    #[cfg(test)]
    pub(super) fn waiting_of(&self, tenant: &str) -> usize {
        lock(&self.window.state).by_tenant.get(tenant).copied().unwrap_or(0)
    }

    /// Publishes `tenant`'s `messages` and waits for their acks until `deadline`; answers one
    /// outcome per message, in order. Past the room left in the window, or in the tenant's share
    /// of it, the tail of the batch is refused at once ([`SendOutcome::RetryLater`]: the head may
    /// be stored, so a retry of the tail keeps the order).
    ///
    /// # Cancel safety
    /// Dropping the future withdraws the job from the task at once (the messages may have been
    /// published; their acks are dropped).
    pub(super) async fn publish(
        &self,
        tenant: Arc<str>,
        mut messages: Vec<Outgoing>,
        deadline: Instant,
    ) -> Vec<Published> {
        let wanted = messages.len();
        let taken = self.window.reserve(&tenant, wanted);
        let (size, share) = (self.window.size, self.window.share);
        let full = || {
            Published::Done(SendOutcome::RetryLater(format!(
                "too many messages wait for NATS to store them (at most {size}, {share} of one \
                 tenant's); send again later"
            )))
        };
        if taken == 0 {
            return (0..wanted).map(|_| full()).collect();
        }
        let refused = messages.split_off(taken);
        let first = self.next.fetch_add(taken as u64, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        let job = Job { tenant: tenant.clone(), first, messages, deadline, answer };
        let handed =
            lock(&self.tx).as_ref().is_some_and(|tx| tx.send(Command::Publish(job)).is_ok());
        let mut out = if handed {
            let mut withdraw = Withdraw { publisher: self, first, armed: true };
            let got = tokio::time::timeout_at(deadline + ANSWER_GRACE, answered).await;
            withdraw.armed = !matches!(got, Ok(Ok(_)));
            match got {
                Ok(Ok(out)) => out,
                // the task ended (closed) or did not answer in time
                Ok(Err(_)) => unavailable(taken, "the NATS broker is closed"),
                Err(_) => unavailable(taken, TIMED_OUT),
            }
        } else {
            self.window.give_back(&tenant, taken);
            unavailable(taken, "the NATS broker is closed")
        };
        out.extend(refused.iter().map(|_| full()));
        out
    }

    /// Ends the task (it answers what waits `Unavailable`) and waits for it, at most `wait`.
    pub(super) async fn close(&self, wait: Duration) {
        lock(&self.tx).take();
        let done = lock(&self.done).take();
        if let Some(done) = done {
            let _ = tokio::time::timeout(wait, done).await;
        }
    }
}

/// Withdraws a job whose send went away before its answer came.
struct Withdraw<'a> {
    publisher: &'a Publisher,
    first: u64,
    armed: bool,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        if self.armed
            && let Some(tx) = lock(&self.publisher.tx).as_ref()
        {
            let _ = tx.send(Command::Withdraw(self.first));
        }
    }
}

const TIMED_OUT: &str = "publishing: NATS did not answer within send_timeout";

fn unavailable(n: usize, why: &str) -> Vec<Published> {
    (0..n).map(|_| Published::Done(SendOutcome::Unavailable(why.to_owned()))).collect()
}

/// A job the task published and waits on.
struct Pending {
    /// Whose messages.
    tenant: Arc<str>,
    /// Outcome per message (`None`: no ack yet).
    outcomes: Vec<Option<Published>>,
    /// Messages without an outcome.
    left: usize,
    deadline: Instant,
    answer: oneshot::Sender<Vec<Published>>,
}

/// The task's table of jobs waiting for acks, by first reply number. Every message without an
/// outcome counts in the [`Window`]; whatever removes a job (answered, expired, withdrawn, the
/// task ending) gives its count back.
struct Table {
    jobs: BTreeMap<u64, Pending>,
    /// Deadlines, earliest first (stale entries of jobs already gone are skipped).
    deadlines: BinaryHeap<std::cmp::Reverse<(Instant, u64)>>,
    window: Arc<Window>,
}

impl Table {
    fn insert(&mut self, job_first: u64, pending: Pending) {
        self.deadlines.push(std::cmp::Reverse((pending.deadline, job_first)));
        self.jobs.insert(job_first, pending);
    }

    /// Records `outcome` for reply number `n`, answering its job when it was the last.
    fn resolve(&mut self, n: u64, outcome: Published) {
        let Some((&first, job)) = self.jobs.range_mut(..=n).next_back() else { return };
        let Some(slot) = usize::try_from(n - first).ok().and_then(|i| job.outcomes.get_mut(i))
        else {
            return;
        };
        if slot.is_some() {
            return;
        }
        *slot = Some(outcome);
        job.left -= 1;
        self.window.give_back(&job.tenant, 1);
        if job.left == 0 {
            self.finish(first, TIMED_OUT);
        }
    }

    /// Removes the job at `first` and answers it; messages without an outcome get `why`.
    fn finish(&mut self, first: u64, why: &str) {
        let Some(job) = self.jobs.remove(&first) else { return };
        self.window.give_back(&job.tenant, job.left);
        let out = job
            .outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Published::Done(SendOutcome::Unavailable(why.into()))))
            .collect();
        let _ = job.answer.send(out);
    }

    /// Forgets the job at `first` without answering (its send is gone).
    fn withdraw(&mut self, first: u64) {
        if let Some(job) = self.jobs.remove(&first) {
            self.window.give_back(&job.tenant, job.left);
        }
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(std::cmp::Reverse((at, first))) = self.deadlines.peek().copied() {
            if self.jobs.get(&first).is_some_and(|j| j.deadline == at) {
                return Some(at);
            }
            self.deadlines.pop();
        }
        None
    }

    /// Answers the jobs whose deadline passed.
    fn expire(&mut self, now: Instant) {
        while let Some(at) = self.next_deadline() {
            if at > now {
                break;
            }
            let std::cmp::Reverse((_, first)) =
                self.deadlines.pop().expect("a deadline was peeked");
            self.finish(first, TIMED_OUT);
        }
    }

    /// Answers every job: messages without an outcome get `why`.
    fn fail_all(&mut self, why: &str) {
        let firsts: Vec<u64> = self.jobs.keys().copied().collect();
        for first in firsts {
            self.finish(first, why);
        }
        self.deadlines.clear();
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // the task ends (or was aborted by its owner): nothing waits any more
        for job in self.jobs.values() {
            self.window.give_back(&job.tenant, job.left);
        }
    }
}

/// Most jobs taken from the channel before their messages are written.
const MAX_COALESCED: usize = 256;

async fn publish_task(
    client: Client,
    mut rx: mpsc::UnboundedReceiver<Command>,
    mut connected: watch::Receiver<bool>,
    window: Arc<Window>,
    done: oneshot::Sender<()>,
) {
    let inbox = client.new_inbox();
    let mut table = Table { jobs: BTreeMap::new(), deadlines: BinaryHeap::new(), window };
    let mut sub = match client.subscribe(format!("{inbox}.*")).await {
        Ok(sub) => Some(sub),
        Err(err) => {
            debug!(error = %err, "subscribing to the publish acks");
            None
        }
    };
    let prefix = format!("{inbox}.");
    let mut commands = Vec::with_capacity(MAX_COALESCED);
    loop {
        let wake = table.next_deadline();
        tokio::select! {
            biased;
            ack = next_ack(&mut sub) => match ack {
                Some(ack) => {
                    route(&mut table, &prefix, &ack);
                    // the acks that are there already, without a trip through the select
                    for _ in 0..MAX_COALESCED {
                        let Some(Some(ack)) = sub.as_mut().and_then(|s| s.next().now_or_never())
                        else {
                            break;
                        };
                        route(&mut table, &prefix, &ack);
                    }
                }
                None => {
                    // the client was closed (drained): no ack comes any more
                    sub = None;
                    table.fail_all("the NATS connection was closed");
                }
            },
            got = rx.recv_many(&mut commands, MAX_COALESCED) => {
                if got == 0 {
                    break;
                }
                write(&client, &mut table, &prefix, sub.is_some(), commands.drain(..)).await;
            }
            Ok(()) = connected.changed() => {
                if !*connected.borrow_and_update() {
                    table.fail_all(
                        "lost the NATS connection before the publish ack (it may have been stored)",
                    );
                }
            }
            () = sleep_until_opt(wake) => table.expire(Instant::now()),
        }
    }
    table.fail_all("the NATS broker is closed");
    drop(table);
    let _ = done.send(());
}

async fn next_ack(sub: &mut Option<async_nats::Subscriber>) -> Option<async_nats::Message> {
    match sub {
        Some(sub) => sub.next().await,
        None => std::future::pending().await,
    }
}

/// Publishes the messages of the jobs among `commands` back to back and records the jobs.
async fn write(
    client: &Client,
    table: &mut Table,
    prefix: &str,
    subscribed: bool,
    commands: impl Iterator<Item = Command>,
) {
    let now = Instant::now();
    for command in commands {
        let job = match command {
            Command::Publish(job) => job,
            Command::Withdraw(first) => {
                table.withdraw(first);
                continue;
            }
        };
        let Job { tenant, first, messages, deadline, answer } = job;
        let n = messages.len();
        table.insert(first, Pending { tenant, outcomes: vec![None; n], left: n, deadline, answer });
        if !subscribed {
            table.finish(first, "cannot receive publish acks from NATS");
            continue;
        }
        if deadline <= now {
            table.finish(first, TIMED_OUT);
            continue;
        }
        for (i, (subject, body, headers)) in messages.into_iter().enumerate() {
            let number = first + i as u64;
            let reply = Subject::from(format!("{prefix}{number}"));
            let sent = tokio::time::timeout_at(
                deadline,
                client.publish_with_reply_and_headers(subject, reply, headers, body),
            )
            .await;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(err)) => table.resolve(number, Published::Done(not_sent(&err))),
                Err(_) => {
                    // the client's queue stayed full until the deadline (NATS down): the rest
                    // of this job is not sent
                    table.finish(first, TIMED_OUT);
                    break;
                }
            }
        }
    }
}

/// What a publish the client refused to send means for the producer.
fn not_sent(err: &async_nats::PublishError) -> SendOutcome {
    match err.kind() {
        async_nats::client::PublishErrorKind::MaxPayloadExceeded => {
            SendOutcome::Unavailable(format!("larger than the NATS server accepts: {err}"))
        }
        _ => SendOutcome::Unavailable(format!("publishing to NATS: {err}")),
    }
}

/// A JetStream publish ack: `{"stream":…,"seq":…,"duplicate":…}` or `{"error":{…}}`.
#[derive(Deserialize)]
struct AckReply {
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    duplicate: bool,
    #[serde(default)]
    error: Option<jetstream::Error>,
}

/// Routes one message of the ack subscription to its job.
fn route(table: &mut Table, prefix: &str, ack: &async_nats::Message) {
    let Some(n) = ack.subject.strip_prefix(prefix).and_then(|n| n.parse::<u64>().ok()) else {
        return;
    };
    table.resolve(n, parse_ack(ack.status, &ack.payload));
}

/// What a publish ack (status and payload) says.
pub(super) fn parse_ack(status: Option<StatusCode>, payload: &[u8]) -> Published {
    if status == Some(StatusCode::NO_RESPONDERS) {
        return Published::StreamNotFound;
    }
    match serde_json::from_slice::<AckReply>(payload) {
        Ok(AckReply { error: Some(error), .. }) => {
            if error.error_code() == ErrorCode::STREAM_NOT_FOUND {
                Published::StreamNotFound
            } else {
                Published::Done(super::refused(&error))
            }
        }
        Ok(AckReply { seq: Some(seq), duplicate, .. }) => {
            Published::Done(SendOutcome::Stored { message_id: seq.to_string(), duplicate })
        }
        Ok(_) => Published::Done(SendOutcome::Unavailable("NATS answered an empty ack".into())),
        Err(err) => Published::Done(SendOutcome::Unavailable(format!(
            "NATS answered an ack that is not JSON: {err}"
        ))),
    }
}
