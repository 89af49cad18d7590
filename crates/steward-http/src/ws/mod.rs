//! `GET /v1/ws`: the WebSocket front door (protocol: `docs/protocol/websocket.md`).
//!
//! Admission happens before the upgrade, in this order: not shutting down (else 503), a valid
//! tenant token (401), a WebSocket handshake (400), the client IP's cap (429), the node's cap
//! (503), the tenant's `sockets` quota (429). Then actix-http answers the upgrade, and the
//! connection is handed to a socket actor under the `sockets` supervisor: its outbound frames
//! through the [`wire`] into the response body, its inbound frames ([`reader`]) through a pump
//! on this worker that ends as soon as the actor's receiver is gone. The frames are actix-http's
//! WebSocket codec's; no channel or task of actix-ws's per connection (decisions 0006, 0011). The
//! closing handshake is completed on the wire as RFC 6455 §7.1 asks ([`wire`]).

mod reader;
mod wire;

use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use std::sync::Arc;
use steward_core::tracker::CountedTask;
use steward_core::{Registry, ResourceKind};

use steward_socket::SocketService;
use steward_socket::port::Protocol;
use steward_socket::socket::InboundTx;
use steward_socket::stats::Rejection;
use steward_tenancy::Tenancy;

use crate::conn::ConnFd;
use crate::{ApiError, Tenant};

/// What a door hands the socket once the tenant is admitted: its protocol, and what the
/// socket's child spec holds (released when the socket is gone).
type Opened = (Protocol, Box<dyn std::any::Any + Send + Sync>);

/// `GET /v1/ws`: the jobs and streams protocol; the tenant's `sockets` quota.
pub(crate) async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    sockets: web::Data<SocketService>,
    tenancy: web::Data<Tenancy>,
    registry: web::Data<Registry>,
    streams: web::Data<steward_streams::Streams>,
) -> Result<HttpResponse, ApiError> {
    let door = Door { kind: ResourceKind::Socket, node_cap: None };
    let streams = streams.get_ref().clone();
    let tenancy2 = tenancy.get_ref().clone();
    accept(req, body, &sockets, &tenancy, &registry, door, move |tenant, reservation| async move {
        let port: Arc<dyn steward_socket::port::StreamPort> =
            Arc::new(crate::streams_port::TenantStreams { streams, tenancy: tenancy2, tenant });
        let hold: Box<dyn std::any::Any + Send + Sync> = Box::new(reservation);
        Ok((Protocol::Jobs(Some(port)), hold))
    })
    .await
}

/// `GET /v1/rtc`: a WebRTC peer's signaling (`docs/protocol/rtc.md`); the tenant's `peers`
/// quota (held by the peer) and the node's `[rtc] max_peers`.
pub(crate) async fn upgrade_rtc(
    req: HttpRequest,
    body: web::Payload,
    sockets: web::Data<SocketService>,
    tenancy: web::Data<Tenancy>,
    registry: web::Data<Registry>,
    rtc: web::Data<steward_rtc::Rtc>,
) -> Result<HttpResponse, ApiError> {
    let max_peers = rtc.config().max_peers;
    let door = Door { kind: ResourceKind::Peer, node_cap: Some((ResourceKind::Peer, max_peers)) };
    let rtc = rtc.get_ref().clone();
    accept(req, body, &sockets, &tenancy, &registry, door, move |tenant, reservation| async move {
        let tenant_id: Arc<str> = tenant.tenant_id().as_str().into();
        // the tenant's rooms on this node are capped at its `peers` quota
        let max_rooms = tenant.quotas().peers;
        let link = rtc.open_peer(tenant_id, max_rooms, reservation).await.map_err(rtc_refusal)?;
        let port: Arc<dyn steward_socket::port::RtcPort> =
            Arc::new(crate::rtc_port::PeerPort::new(link));
        let hold: Box<dyn std::any::Any + Send + Sync> = Box::new(());
        Ok((Protocol::Rtc(port), hold))
    })
    .await
}

fn rtc_refusal(e: steward_rtc::Error) -> ApiError {
    match e {
        steward_rtc::Error::NodeFull { what, max } => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "node_full",
            format!("this node holds its maximum of {max} {what}"),
        ),
        steward_rtc::Error::ShuttingDown => shutting_down(1),
        e => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string()),
    }
}

/// Which resource a door admits: the tenant quota's kind, and a node cap of its own beyond
/// `[socket] max_connections`.
struct Door {
    kind: ResourceKind,
    node_cap: Option<(ResourceKind, u32)>,
}

/// Admission and the upgrade, for both doors.
async fn accept<F, Fut>(
    req: HttpRequest,
    body: web::Payload,
    sockets: &SocketService,
    tenancy: &Tenancy,
    registry: &Registry,
    door: Door,
    open: F,
) -> Result<HttpResponse, ApiError>
where
    F: FnOnce(steward_tenancy::TenantContext, steward_tenancy::Reservation) -> Fut,
    Fut: std::future::Future<Output = Result<Opened, ApiError>>,
{
    let stats = sockets.counters().clone();
    let config = sockets.config();
    let retry_after = config.retry_after.as_secs().max(1);
    let refuse = |why: Rejection, e: ApiError| {
        stats.rejected(why);
        e
    };
    if registry.is_shutting_down() {
        return Err(refuse(Rejection::ShuttingDown, shutting_down(retry_after)));
    }
    // the cheap walls first (per-IP cap, node caps), then the token: a client over its cap
    // costs no token lookup
    let peer = req.peer_addr().map_or(std::net::Ipv4Addr::LOCALHOST.into(), |a| a.ip());
    let forwarded = req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let ip = sockets.client_ip(peer, forwarded);
    let Some(ip_slot) = sockets.admit_ip(ip) else {
        return Err(refuse(
            Rejection::PerIp,
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_connections",
                format!("{ip} holds the maximum of {} sockets", config.max_per_ip),
            )
            .retry_after(retry_after),
        ));
    };
    if registry.count_of(&[ResourceKind::Socket]) >= u64::from(config.max_connections) {
        return Err(refuse(
            Rejection::NodeCap,
            node_full(config.max_connections as usize, "sockets", retry_after),
        ));
    }
    if let Some((kind, max)) = door.node_cap
        && registry.count_of(&[kind]) >= u64::from(max)
    {
        return Err(refuse(Rejection::NodeCap, node_full(max as usize, "peers", retry_after)));
    }
    let Tenant(tenant) =
        Tenant::authenticate(&req, ip).await.map_err(|e| refuse(Rejection::Unauthenticated, e))?;
    let mut handshake = actix_http::ws::handshake(req.head()).map_err(|e| {
        refuse(
            Rejection::BadRequest,
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("not a WebSocket upgrade: {e}"),
            ),
        )
    })?;
    let reservation = tenancy
        .admit(&tenant, door.kind)
        .map_err(|e| refuse(Rejection::Quota, ApiError::from(e)))?;
    let tenant_id: Arc<str> = tenant.tenant_id().as_str().into();
    let (protocol, hold) = open(tenant, reservation).await?;
    let (peer_closed, peer) = tokio::sync::oneshot::channel();
    let (wire, response_body, watch) = wire::pair(peer, config.close_timeout);
    let wire = Box::new(wire);
    let (id, tx) = match sockets.open(tenant_id, ip, wire, protocol, (ip_slot, hold)).await {
        Ok(opened) => opened,
        Err(steward_socket::OpenError::NodeCap(max)) => {
            return Err(refuse(Rejection::NodeCap, node_full(max, "sockets", retry_after)));
        }
        Err(steward_socket::OpenError::ShuttingDown) => {
            return Err(refuse(Rejection::ShuttingDown, shutting_down(retry_after)));
        }
        Err(e @ steward_socket::OpenError::Unavailable(_)) => {
            tracing::error!(error = %e, "cannot open a socket");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            )
            .retry_after(retry_after));
        }
    };
    let reader = reader::Reader::new(
        body.into_inner(),
        byte_limit(config.max_frame.as_u64()),
        byte_limit(config.max_message.as_u64()),
    );
    let counted = steward_core::tracker::CountedTask::for_owner(registry, id);
    // the builder holds no error: the handshake set only valid headers
    let response = handshake
        .message_body(response_body.boxed())
        .map_or_else(HttpResponse::from_error, HttpResponse::from);
    let pump = Pump {
        tx,
        counted,
        peer_closed,
        close_timeout: config.close_timeout,
        body: watch,
        // the socket's own bound on its closing (its Close after what is queued), then the body
        // ends at once if actix-http can still poll it
        body_bound: config.close_timeout * 2 + config.write_timeout,
        fd: req.conn_data::<ConnFd>().copied(),
    };
    #[allow(clippy::disallowed_methods)]
    // the pump must run on this worker (the payload is !Send); it ends when the socket's
    // receiver is dropped (after reading the client's answer to the socket's Close, for at most
    // `close_timeout`, then waiting at most `body_bound` for the response to end), and is
    // counted as the socket's task while the socket lives
    actix_web::rt::spawn(pump.run(reader));
    Ok(response)
}

fn byte_limit(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn shutting_down(retry_after: u64) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is shutting down")
        .retry_after(retry_after)
}

fn node_full(max: usize, what: &str, retry_after: u64) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "node_full",
        format!("this node holds its maximum of {max} {what}"),
    )
    .retry_after(retry_after)
}

/// What the pump holds: the way to the socket actor, its count as the socket's task, and the
/// hold on the response body's end.
struct Pump {
    tx: InboundTx,
    counted: Option<CountedTask>,
    /// Dropped once the client's Close was read or the connection ended: the body may end.
    peer_closed: wire::PeerClosed,
    close_timeout: Duration,
    /// Whether actix-http is done with the response body (and so with the connection).
    body: wire::BodyWatch,
    /// How long the body may take to end once reading is over, before the connection is aborted.
    body_bound: Duration,
    /// The connection's descriptor, to abort it (`None` if the listener did not record it).
    fd: Option<ConnFd>,
}

impl Pump {
    /// Reads the connection and hands each message to the socket actor; stops reading when the
    /// connection ends or after a terminal frame (Close, too big, protocol error). Once the
    /// actor's receiver is gone (the socket stopped, after sending its Close), it reads on for
    /// the client's Close, discarding the rest, for at most `close_timeout`, uncounted: the
    /// connection is then shut down with nothing left unread.
    ///
    /// Then the response body may end. actix-http ends it at once if it can still poll it; a
    /// client that reads nothing keeps actix-http's write buffer full, and then nothing polls
    /// it: after `body_bound` the connection is aborted (`crate::conn`), so it cannot outlive
    /// its socket and its caps.
    async fn run(self, mut reader: reader::Reader) {
        let Self { tx, counted, peer_closed, close_timeout, body, body_bound, fd } = self;
        // the pump waits in `forward` for most of its life: what comes after is boxed, so the
        // idle task does not carry its deadlines
        if forward(tx, &mut reader).await {
            Box::pin(Self::closing(
                counted,
                reader,
                peer_closed,
                close_timeout,
                body,
                body_bound,
                fd,
            ))
            .await;
        } else {
            drop(counted);
            Box::pin(Self::closing(
                None,
                reader,
                peer_closed,
                Duration::ZERO,
                body,
                body_bound,
                fd,
            ))
            .await;
        }
    }

    /// After reading: with the socket gone, the client's answer to its Close is awaited (at
    /// most `close_timeout`, uncounted); then the body may end, or the connection is aborted
    /// after `body_bound`.
    async fn closing(
        counted: Option<CountedTask>,
        mut reader: reader::Reader,
        peer_closed: wire::PeerClosed,
        close_timeout: Duration,
        body: wire::BodyWatch,
        body_bound: Duration,
        fd: Option<ConnFd>,
    ) {
        drop(counted);
        if !close_timeout.is_zero() {
            let answer = async {
                while let Some(message) = reader.next().await {
                    if message.is_terminal() {
                        return;
                    }
                }
            };
            let _ = tokio::time::timeout(close_timeout, answer).await;
        }
        drop(reader);
        drop(peer_closed);
        if tokio::time::timeout(body_bound, body.gone()).await.is_err()
            && let Some(fd) = fd
            && !body.is_gone()
        {
            tracing::debug!(
                "a WebSocket's response cannot end (the client reads nothing): aborting the connection"
            );
            fd.abort();
        }
    }
}

/// Hands each message to the socket until the connection ends or sends a terminal frame
/// (`false`), or the socket is gone (`true`: the client's answer to its Close is still to read).
async fn forward(mut tx: InboundTx, reader: &mut reader::Reader) -> bool {
    loop {
        let next = tokio::select! {
            biased;
            () = tx.closed() => return true,
            next = reader.next() => next,
        };
        // the connection ended without a Close: dropping `tx` tells the socket
        let Some(inbound) = next else { return false };
        let terminal = inbound.is_terminal();
        // boxed: a message's delivery is short, the wait for the next one long
        let delivered = Box::pin(tx.send(inbound)).await.is_ok();
        if terminal {
            return false;
        }
        if !delivered {
            return true;
        }
    }
}
