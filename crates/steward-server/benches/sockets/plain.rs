//! The plain actix-web + actix-ws server the bench measures beside Steward: the subset of
//! Steward's WebSocket protocol (`docs/protocol/websocket.md`) the bench's client uses, written
//! the way the actix-ws examples write a server, with nothing of Steward's (no actors, quotas,
//! rate limits or outbound queue).
//!
//! - `GET /v1/ws` with `Authorization: Bearer <token>` or `?token=<token>`: any non-empty token
//!   is accepted, a missing one answers 401. One tokio task per socket (`actix_ws::handle` and
//!   `actix_web::rt::spawn`) reads the client and sends a protocol Ping every 30 s.
//! - `{"type":"ping"}` → `pong`, `{"type":"subscribe","job":…}` → `subscribed` with a snapshot
//!   (the job's last update), anything else → `error` `bad_request`; replies echo `"id"`.
//! - `POST /bench/update` with `{"job","status","progress"}`: a `job` frame to every subscriber
//!   of the job, one `Session::text` after the other; 204 once all are queued.
//!
//! The bench runs it by re-executing itself with `BENCH_ROLE=plain-ws` ([`ROLE`]); it listens on
//! a loopback port the OS chooses, prints `{"listening":"127.0.0.1:<port>"}` on stdout, and exits
//! when its stdin ends, so that it cannot outlive the bench.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, rt, web};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, Session};
use serde_json::{Value, json};

/// `BENCH_ROLE` value that makes the bench executable this server.
pub(crate) const ROLE: &str = "plain-ws";
/// Protocol Ping interval (Steward's `socket.ping_interval`).
const PING: Duration = Duration::from_secs(30);
/// Largest frame and message read (Steward's `socket.max_frame` and `socket.max_message`).
const MAX_FRAME: usize = 64 * 1024;
const MAX_MESSAGE: usize = 1024 * 1024;

/// Who is subscribed to what.
#[derive(Default)]
struct Hub {
    /// The id of the next socket.
    next: AtomicU64,
    /// By job id: its last state (`null` until an update) and its subscribers by socket id.
    jobs: Mutex<HashMap<String, Job>>,
}

#[derive(Default)]
struct Job {
    state: Value,
    subscribers: HashMap<u64, Session>,
}

/// Runs the server until stdin ends (or it is killed).
pub(crate) fn serve() {
    #[allow(clippy::disallowed_methods)] // ends the whole process; nothing to join
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        std::process::exit(0);
    });
    let served = rt::System::new().block_on(async {
        let hub = web::Data::new(Hub::default());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(hub.clone())
                .route("/v1/ws", web::get().to(upgrade))
                .route("/bench/update", web::post().to(update))
        })
        .disable_signals()
        .bind(("127.0.0.1", 0))?;
        let addr = server.addrs().first().copied().expect("a bound address");
        println!("{}", json!({ "listening": addr.to_string() }));
        server.run().await
    });
    served.expect("plain actix-ws server");
}

/// The bearer of `Authorization: Bearer <token>` or of `?token=`.
fn token(req: &HttpRequest) -> Option<&str> {
    let header = req.headers().get("authorization").and_then(|v| v.to_str().ok());
    let bearer = header.and_then(|v| v.strip_prefix("Bearer "));
    let query = || req.query_string().split('&').find_map(|kv| kv.strip_prefix("token="));
    bearer.or_else(query).filter(|t| !t.is_empty())
}

async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    hub: web::Data<Hub>,
) -> actix_web::Result<HttpResponse> {
    if token(&req).is_none() {
        let error = json!({"error": {"code": "unauthenticated", "message": "no bearer token"}});
        return Ok(HttpResponse::Unauthorized().json(error));
    }
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    let stream = stream
        .max_frame_size(MAX_FRAME)
        .aggregate_continuations()
        .max_continuation_size(MAX_MESSAGE);
    #[allow(clippy::disallowed_methods)] // the plain server's one task per socket, by design
    rt::spawn(socket(hub.into_inner(), session, stream));
    Ok(response)
}

/// One socket's task: answers requests, pings every [`PING`], leaves its jobs when it ends.
async fn socket(hub: Arc<Hub>, mut session: Session, mut stream: AggregatedMessageStream) {
    let id = hub.next.fetch_add(1, Ordering::Relaxed);
    let mut ping = rt::time::interval_at(rt::time::Instant::now() + PING, PING);
    let mut jobs: Vec<String> = Vec::new();
    let reason = loop {
        tokio::select! {
            _ = ping.tick() => {
                if session.ping(b"").await.is_err() {
                    break None;
                }
            }
            msg = stream.recv() => match msg {
                Some(Ok(AggregatedMessage::Text(text))) => {
                    let reply = hub.request(id, &session, &text, &mut jobs);
                    if session.text(reply.to_string()).await.is_err() {
                        break None;
                    }
                }
                Some(Ok(AggregatedMessage::Ping(bytes))) => {
                    if session.pong(&bytes).await.is_err() {
                        break None;
                    }
                }
                Some(Ok(AggregatedMessage::Close(reason))) => break reason,
                Some(Ok(AggregatedMessage::Binary(_) | AggregatedMessage::Pong(_))) => {}
                Some(Err(_)) | None => break None,
            }
        }
    };
    hub.leave(id, &jobs);
    let _ = session.close(reason).await;
}

impl Hub {
    /// The reply to one text frame of socket `id`.
    fn request(&self, id: u64, session: &Session, text: &str, jobs: &mut Vec<String>) -> Value {
        let request: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let mut reply = match request["type"].as_str() {
            Some("ping") => json!({"type": "pong"}),
            Some("subscribe") => match request["job"].as_str() {
                Some(job) if job.len() == 32 && job.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    self.subscribe(id, session, job, jobs)
                }
                _ => error("bad_request", "a job id is 32 hex digits"),
            },
            _ => error("bad_request", "expected a ping or a subscribe"),
        };
        if let Some(rid) = request.get("id").filter(|v| v.is_string() || v.is_number()) {
            reply["id"] = rid.clone();
        }
        reply
    }

    fn subscribe(&self, id: u64, session: &Session, job: &str, jobs: &mut Vec<String>) -> Value {
        if jobs.iter().any(|j| j == job) {
            return error("already_subscribed", "already subscribed to this job");
        }
        let mut all = self.jobs.lock().expect("hub lock");
        let entry = all.entry(job.to_owned()).or_default();
        entry.subscribers.insert(id, session.clone());
        jobs.push(job.to_owned());
        let mut snapshot = json!({"id": job, "status": "pending", "progress": 0});
        if let (Some(s), Some(state)) = (snapshot.as_object_mut(), entry.state.as_object()) {
            s.extend(state.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        json!({"type": "subscribed", "job": job, "snapshot": snapshot})
    }

    fn leave(&self, id: u64, jobs: &[String]) {
        let mut all = self.jobs.lock().expect("hub lock");
        for job in jobs {
            if let Some(entry) = all.get_mut(job) {
                entry.subscribers.remove(&id);
            }
        }
    }
}

fn error(code: &str, message: &str) -> Value {
    json!({"type": "error", "code": code, "message": message})
}

/// `POST /bench/update`: the job's new state, sent to each subscriber in turn.
async fn update(body: web::Json<Value>, hub: web::Data<Hub>) -> HttpResponse {
    let Some(job) = body["job"].as_str() else {
        return HttpResponse::BadRequest().finish();
    };
    let state = json!({"status": body["status"], "progress": body["progress"]});
    let at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let frame = json!({"type": "job", "job": job, "status": body["status"],
                       "progress": body["progress"], "at": at})
    .to_string();
    let mut sessions: Vec<Session> = {
        let mut all = hub.jobs.lock().expect("hub lock");
        let entry = all.entry(job.to_owned()).or_default();
        entry.state = state;
        entry.subscribers.values().cloned().collect()
    };
    for session in &mut sessions {
        // a closed session is removed by its own task
        let _ = session.text(frame.clone()).await;
    }
    HttpResponse::NoContent().finish()
}
