//! What the socket does with each inbound frame and request.

use std::time::Instant;

use actix::prelude::*;
use serde_json::Value;

use super::close::{CloseCode, CloseFrame};
use super::outbound::Outgoing;
use super::protocol::{self, Request};
use super::{Inbound, Socket};
use crate::Error;
use crate::jobs::{JobId, JobSink, Offer};
use crate::port::{FrameSink, StreamRequest};

impl Handler<Inbound> for Socket {
    type Result = ();

    fn handle(&mut self, frame: Inbound, ctx: &mut Context<Self>) {
        if self.rcx.is_stopping() {
            return;
        }
        self.last_received = Instant::now();
        match frame {
            Inbound::Text(text) => {
                self.stats.received(text.len());
                if self.admit_event(ctx) {
                    self.rcx.touch();
                    if let Some(rtc) = &self.rtc {
                        // the peer parses and answers its own protocol
                        if let Err(e) = rtc.signal(text) {
                            self.reply(protocol::error(e.code, &e.message, None, None));
                        }
                    } else {
                        self.request(&text, ctx);
                    }
                }
            }
            Inbound::Binary(len) => {
                self.stats.received(len);
                if self.admit_event(ctx) {
                    self.reply(protocol::error(
                        "bad_request",
                        "binary frames are not part of the protocol; send JSON text",
                        None,
                        None,
                    ));
                }
            }
            Inbound::Ping(payload) => {
                self.reply_frame(Outgoing::Pong(payload));
            }
            // a call may go minutes without signaling: on a signaling socket the client's
            // answers to pings are its activity
            Inbound::Pong if self.rtc.is_some() => self.rcx.touch(),
            Inbound::Pong => {}
            Inbound::Close(_) => {
                self.close_with(CloseFrame::new(CloseCode::Normal), ctx);
            }
            Inbound::TooBig => self.close_with(CloseFrame::new(CloseCode::TooBig), ctx),
            Inbound::Protocol(error) => {
                tracing::debug!(%error, "websocket protocol error");
                self.close_with(CloseFrame::new(CloseCode::Protocol), ctx);
            }
            // the connection ended without a Close frame: it is gone
            Inbound::Lost => self.connection_lost(ctx),
        }
    }
}

impl Handler<crate::port::CloseSocket> for Socket {
    type Result = ();

    /// The peer behind this signaling socket ended (it has sent its `closing`).
    fn handle(&mut self, _: crate::port::CloseSocket, ctx: &mut Context<Self>) {
        let frame = if self.rcx.registry().is_shutting_down() {
            CloseFrame::new(CloseCode::GoingAway)
        } else {
            CloseFrame { code: CloseCode::Normal, reason: "call ended" }
        };
        self.close_with(frame, ctx);
    }
}

impl Socket {
    /// Takes one token from the bucket. Without one, the event is answered `rate_limited`, and
    /// more than `abuse_limit` refusals within `abuse_window` close the socket with 1008.
    fn admit_event(&mut self, ctx: &mut Context<Self>) -> bool {
        if self.bucket.check().is_ok() {
            return true;
        }
        self.stats.rate_limited();
        let now = Instant::now();
        if now.duration_since(self.abuse.0) > self.config.abuse_window {
            self.abuse = (now, 0);
        }
        self.abuse.1 += 1;
        if self.abuse.1 > self.config.abuse_limit {
            self.close_with(CloseFrame::new(CloseCode::Policy), ctx);
        } else {
            self.reply(protocol::error(
                "rate_limited",
                &format!("more than {} events per second; slow down", self.config.rate_limit),
                None,
                None,
            ));
        }
        false
    }

    fn request(&mut self, text: &str, ctx: &mut Context<Self>) {
        match protocol::parse(text) {
            Ok(Request::Ping { id }) => self.reply(protocol::pong(id.as_ref())),
            Ok(Request::Subscribe { job, id }) => self.subscribe(job, id, ctx),
            Ok(Request::SubscribeStream(request)) => self.subscribe_stream(request, ctx),
            Ok(Request::UnsubscribeStream { stream, id }) => {
                if self.stream_subs.remove(&stream).is_some() {
                    self.reply(protocol::stream_unsubscribed(&stream, id.as_ref()));
                } else {
                    self.reply(protocol::stream_error(
                        "not_found",
                        "not subscribed to this stream",
                        &stream,
                        id.as_ref(),
                    ));
                }
            }
            Ok(Request::Unsubscribe { job, id }) => {
                if self.subs.remove(&job).is_some() {
                    self.reply(protocol::unsubscribed(&job, id.as_ref()));
                } else {
                    self.reply(protocol::error(
                        "not_found",
                        "not subscribed to this job",
                        Some(&job),
                        id.as_ref(),
                    ));
                }
            }
            Err(bad) => {
                self.reply(protocol::error("bad_request", &bad.message, None, bad.id.as_ref()));
            }
        }
    }

    fn subscribe(&mut self, job: JobId, id: Option<Value>, ctx: &mut Context<Self>) {
        // subscriptions whose job finished, was evicted or overflowed no longer count
        self.subs.retain(|_, s| s.is_active());
        if self.subs.contains_key(&job) || self.pending.contains(&job) {
            self.reply(protocol::error(
                "already_subscribed",
                "already subscribed to this job",
                Some(&job),
                id.as_ref(),
            ));
            return;
        }
        let max = self.config.max_subscriptions as usize;
        if self.subscriptions() >= max {
            self.reply(protocol::error(
                "too_many_subscriptions",
                &format!("at most {max} subscriptions per socket"),
                Some(&job),
                id.as_ref(),
            ));
            return;
        }
        self.pending.insert(job.clone());
        let sink: std::sync::Arc<dyn JobSink> = self.out.clone();
        let ask = self.jobs.clone();
        let tenant = self.tenant.clone();
        let (job2, id2) = (job.clone(), id.clone());
        ctx.spawn(
            async move { ask.subscribe(tenant, job2, sink, id2).await }.into_actor(self).map(
                move |result, act, _ctx| {
                    act.pending.remove(&job);
                    match result {
                        Ok(Some(sub)) if !act.rcx.is_stopping() => {
                            act.subs.insert(job, sub);
                        }
                        // the job is final (its snapshot was all there is) or we are closing
                        Ok(_) => {}
                        Err(Error::NotFound(_)) => act.reply(protocol::error(
                            "not_found",
                            "no such job",
                            Some(&job),
                            id.as_ref(),
                        )),
                        Err(e) => act.reply(protocol::error(
                            "unavailable",
                            &e.to_string(),
                            Some(&job),
                            id.as_ref(),
                        )),
                    }
                },
            ),
        );
    }

    /// Subscriptions held or asked for, jobs and streams together (`max_subscriptions`).
    fn subscriptions(&mut self) -> usize {
        self.stream_subs.retain(|_, s| s.is_active());
        self.subs.len() + self.pending.len() + self.stream_subs.len() + self.stream_pending.len()
    }

    fn subscribe_stream(&mut self, request: StreamRequest, ctx: &mut Context<Self>) {
        let (stream, id) = (request.stream.clone(), request.id.clone());
        let refuse = |act: &mut Self, code: &str, message: &str| {
            act.reply(protocol::stream_error(code, message, &stream, id.as_ref()));
        };
        let Some(port) = self.streams.clone() else {
            refuse(self, "unavailable", "streams are not available on this connection");
            return;
        };
        self.stream_subs.retain(|_, s| s.is_active());
        if self.stream_subs.contains_key(&stream) || self.stream_pending.contains(&stream) {
            refuse(self, "already_subscribed", "already subscribed to this stream");
            return;
        }
        let max = self.config.max_subscriptions as usize;
        if self.subscriptions() >= max {
            refuse(
                self,
                "too_many_subscriptions",
                &format!("at most {max} subscriptions per socket"),
            );
            return;
        }
        self.stream_pending.insert(stream.clone());
        let sink: std::sync::Arc<dyn FrameSink> = self.out.clone();
        ctx.spawn(port.subscribe(request, sink).into_actor(self).map(move |result, act, _ctx| {
            act.stream_pending.remove(&stream);
            match result {
                Ok(guard) if !act.rcx.is_stopping() => {
                    act.stream_subs.insert(stream, guard);
                }
                Ok(_) => {}
                Err(e) => {
                    act.reply(protocol::stream_error(e.code, &e.message, &stream, id.as_ref()));
                }
            }
        }));
    }

    fn reply(&mut self, text: bytestring::ByteString) {
        self.reply_frame(Outgoing::Text(text));
    }

    /// Queues a reply; a full queue is the writer's business (it closes with 4008).
    fn reply_frame(&mut self, frame: Outgoing) {
        if matches!(self.out.push(frame), Offer::Overflow | Offer::Closed) {
            tracing::debug!("reply dropped: the socket is closing");
        }
    }
}
