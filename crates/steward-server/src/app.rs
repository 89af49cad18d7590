//! Wiring: the registry, the services' root supervisor, the listeners, the shutdown coordinator.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::FutureExt;
use steward_config::Config;
use steward_core::shutdown::{Phase, Readiness, ShutdownCoordinator, ShutdownTrigger};
use steward_core::supervisor::Supervisor;
use steward_core::watchdog::WatchdogHandle;
use steward_core::{Registry, Strategy, SupervisorSpec};
use steward_grpc::GrpcSpec;
use steward_http::{AdminState, ListenerSpec, admin_app_config, public_app_config};
use steward_messaging::Messaging;
use steward_socket::SocketService;
use steward_socket::jobs::JobHubHandle;
use steward_socket::monitor::MonitorHandle;
use steward_tenancy::{AuthFailures, DoorStats, Tenancy};
use tokio_util::sync::CancellationToken;

/// How long tonic's runtime gets to wind down after the actix system stopped, at most (and never
/// past `[shutdown] grace`, counted from the signal).
const RUNTIME_STOP: Duration = Duration::from_secs(1);

/// Runs the server until it has shut down; returns the process exit status.
pub(crate) fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let threads = match config.grpc.worker_threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let grpc_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("steward-grpc")
        .enable_all()
        .build()
        .context("cannot start tonic's runtime")?;
    let system = actix_rt::System::new();
    let grace = config.shutdown.grace;
    let mut shutdown_began = None;
    let result = system.block_on(run(config, grpc_runtime.handle().clone(), &mut shutdown_began));
    actix_rt::System::current().stop();
    let left = shutdown_began.map_or(RUNTIME_STOP, |began: std::time::Instant| {
        grace.saturating_sub(began.elapsed()).min(RUNTIME_STOP)
    });
    grpc_runtime.shutdown_timeout(left);
    result
}

async fn run(
    config: Config,
    grpc_runtime: tokio::runtime::Handle,
    shutdown_began: &mut Option<std::time::Instant>,
) -> anyhow::Result<ExitCode> {
    let token = admin_token(&config)?;
    if !config.admin.listen.ip().is_loopback() {
        tracing::warn!(addr = %config.admin.listen, "the admin listener is bound beyond loopback; protect it");
    }
    let registry = Registry::new(config.registry.clone(), &config.idle);
    let tenancy = Tenancy::open(
        &config.store,
        &config.tenancy,
        registry.clone(),
        config.supervisor.child_shutdown,
    )
    .await
    .with_context(|| format!("cannot open the store {}", store_location(&config)))?;
    tracing::info!(
        backend = tenancy.store().backend().as_str(),
        location = %store_location(&config),
        "store opened"
    );
    let readiness = Readiness::new();
    let trigger = ShutdownTrigger::new();
    let coordinator = Arc::new(ShutdownCoordinator::new(
        registry.clone(),
        readiness.clone(),
        config.shutdown.clone(),
    ));
    let watchdog = WatchdogHandle::new();
    let streams = CancellationToken::new();
    let jobs = JobHubHandle::new();
    let sockets = SocketService::new(config.socket.clone(), jobs.clone());
    let monitor = MonitorHandle::new();
    // the NATS client's socket I/O runs on tonic's multi-thread runtime, not the actors' arbiter
    let messaging = Messaging::with_io_runtime(
        config.messaging.clone(),
        registry.clone(),
        grpc_runtime.clone(),
    );
    // so do the browsers' CDP connections (the chromiumoxide handlers)
    let browsers = steward_browser::Browsers::with_io_runtime(
        config.browser.clone(),
        registry.clone(),
        grpc_runtime.clone(),
    );
    let stream_cache = steward_streams::Streams::new(config.streams.clone(), registry.clone())
        .context("cannot set up the streams ([streams])")?;
    match config.streams.engine {
        steward_config::StreamEngineKind::Memory => tracing::warn!(
            engine = "memory",
            "streams keep their history and latest values in memory: they are lost on restart \
             and not shared with other nodes ([streams] engine = \"redis\" shares them)"
        ),
        steward_config::StreamEngineKind::Redis => tracing::info!(
            engine = "redis",
            url = %steward_config::redact_url(&config.streams.url),
            "streams on redis"
        ),
    }
    // the peers' webrtc-rs drivers and forwarding tasks run on tonic's runtime too
    let rtc = steward_rtc::Rtc::new(config.rtc.clone(), registry.clone(), grpc_runtime.clone());
    let listener_grace = config.supervisor.child_shutdown;
    let doors = DoorStats::new(
        AuthFailures::new(
            "admin",
            config.admin.max_auth_failures_per_ip,
            config.admin.auth_failure_window,
        ),
        tenancy.auth_failures().clone(),
    );

    // [tls]: one reloading certificate for the public HTTP and both gRPC listeners (the admin
    // HTTP listener stays plain on loopback); None = plain TCP, the default behind a proxy
    let tls = steward_tls::Tls::from_config(&config.tls).context("cannot set up TLS ([tls])")?;
    let admin = ListenerSpec::new(
        "admin",
        config.admin.listen,
        config.http.workers,
        listener_grace,
        admin_app_config(AdminState {
            registry: registry.clone(),
            readiness: readiness.clone(),
            trigger: trigger.clone(),
            watchdog: watchdog.clone(),
            coordinator: coordinator.clone(),
            token: token.clone(),
            doors: doors.clone(),
            tls: tls.clone(),
            tenancy: tenancy.clone(),
            sockets: sockets.clone(),
            monitor: monitor.clone(),
            messaging: messaging.clone(),
            browsers: browsers.clone(),
            streams: stream_cache.clone(),
            rtc: rtc.clone(),
        }),
    )
    .on_bound(wall_off(&browsers, "admin"));
    let public = ListenerSpec::new(
        "public",
        config.http.listen,
        config.http.workers,
        listener_grace,
        public_app_config(
            tenancy.clone(),
            sockets.clone(),
            registry.clone(),
            stream_cache.clone(),
            rtc.clone(),
        ),
    )
    .on_bound(wall_off(&browsers, "public"))
    .tls(tls.clone())
    .send_buffer(match config.socket.send_buffer.as_u64() {
        0 => None,
        n => usize::try_from(n).ok(),
    })
    // a WebSocket's response body ends after the closing handshake (or `close_timeout`): shut
    // the connection down then, without actix-http's 1 s linger (RFC 6455 §7.1.1)
    .linger(Some(std::time::Duration::ZERO));
    let grpc = GrpcSpec {
        config: config.grpc.clone(),
        runtime: grpc_runtime,
        registry: registry.clone(),
        readiness: readiness.clone(),
        token,
        doors: doors.clone(),
        streams: streams.clone(),
        tenancy: tenancy.clone(),
        jobs: jobs.clone(),
        watch_buffer: config.jobs.watch_buffer as usize,
        messaging: messaging.clone(),
        browsers: browsers.clone(),
        stream_cache: stream_cache.clone(),
        rtc: rtc.clone(),
        tls: tls.clone(),
    };
    let root_spec = SupervisorSpec::from_config("steward", Strategy::OneForOne, &config.supervisor)
        .child(watchdog.child_spec(config.watchdog.clone()))
        .child(tenancy.purge_spec())
        .child(jobs.child_spec(config.jobs.clone()))
        .child(sockets.supervisor_spec(&config.supervisor))
        .child(monitor.child_spec(
            config.socket.monitor.clone(),
            jobs.clone(),
            sockets.counters().clone(),
        ))
        .children(messaging.child_specs(&config.supervisor))
        .children(browsers.child_specs(&config.supervisor))
        .children(stream_cache.child_specs(&config.supervisor))
        .children(rtc.child_specs(&config.supervisor))
        .children(tls.as_ref().map(steward_tls::Tls::child_spec))
        .child(admin.child_spec())
        .child(public.clone().child_spec())
        .children(grpc.child_specs());

    {
        let public = public.clone();
        coordinator.on(
            Phase::StopAccepting,
            "pause public http",
            Arc::new(move || public.pause().boxed()),
        );
    }
    {
        let (sockets, registry) = (sockets.clone(), registry.clone());
        let deadline = config.shutdown.deadlines.notify_clients;
        coordinator.on(
            Phase::NotifyClients,
            "close sockets 1001",
            Arc::new(move || {
                let (sockets, registry) = (sockets.clone(), registry.clone());
                async move {
                    let asked =
                        sockets.close_all(&registry, std::time::Instant::now() + deadline).await;
                    tracing::info!(sockets = asked, "sockets told 1001 server shutting down");
                }
                .boxed()
            }),
        );
    }
    {
        let messaging = messaging.clone();
        coordinator.after(
            Phase::DrainMessaging,
            "return in-flight messages to the broker",
            Arc::new(move || {
                let messaging = messaging.clone();
                async move { messaging.returned().await }.boxed()
            }),
        );
    }
    coordinator.on(
        Phase::NotifyClients,
        "end grpc streams",
        Arc::new(move || {
            streams.cancel();
            std::future::ready(()).boxed()
        }),
    );

    {
        let tenancy = tenancy.clone();
        coordinator.on(
            Phase::Flush,
            "close the store",
            Arc::new(move || {
                let tenancy = tenancy.clone();
                async move { tenancy.close().await }.boxed()
            }),
        );
    }

    #[allow(clippy::disallowed_methods)] // lives as long as the process: the signal watcher
    actix_rt::spawn({
        let trigger = trigger.clone();
        async move {
            if let Err(e) = crate::signals::watch(trigger).await {
                tracing::error!(error = %e, "cannot watch signals");
            }
        }
    });

    let root = Supervisor::start_root(&registry, root_spec)
        .await
        .context("cannot start steward's services")?;
    readiness.set_ready();
    tracing::info!(services = registry.len(), "steward ready");

    let mut exited = root.exited;
    let code = tokio::select! {
        source = trigger.triggered() => {
            tracing::info!(source, grace_ms = config.shutdown.grace.as_millis() as u64, "shutting down");
            ExitCode::SUCCESS
        }
        reason = &mut exited => {
            let reason = reason.map_or_else(|_| "unknown".to_owned(), |r| r.to_string());
            tracing::error!(exit_reason = %reason, "steward's root supervisor gave up; shutting down");
            ExitCode::FAILURE
        }
    };
    *shutdown_began = Some(std::time::Instant::now());
    let report = coordinator.run(Some(&root.handle)).await;
    tracing::info!(
        closed = report.closed(),
        forced = report.forced(),
        total_ms = report.total.as_millis() as u64,
        "shutdown complete: {report}"
    );
    Ok(code)
}

/// Tells the browsers where the listener `name` is bound, so no tenant's page reaches it
/// through its egress proxy.
fn wall_off(
    browsers: &steward_browser::Browsers,
    name: &'static str,
) -> impl Fn(&[std::net::SocketAddr]) + Send + Sync + 'static {
    let browsers = browsers.clone();
    move |addrs| browsers.wall_off_listener(name, addrs)
}

/// Where the store is, for logs: the SQLite file, or the PostgreSQL URL without its password.
fn store_location(config: &Config) -> String {
    if config.store.url.is_empty() {
        return config.store.data_dir.join("steward.db").display().to_string();
    }
    match url::Url::parse(&config.store.url) {
        Ok(mut url) => {
            let _ = url.set_password(None);
            url.set_query(None);
            url.to_string()
        }
        Err(_) => "(unparsable store.url)".to_owned(),
    }
}

/// The configured admin token (config validation refused one shorter than 32 characters), or a
/// fresh random one (256 bits, hex) written to `<data_dir>/admin-token` with mode 0600 in a
/// 0700 directory. The log says where it is, never what it is.
fn admin_token(config: &Config) -> anyhow::Result<Arc<str>> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    if !config.admin.token.is_empty() {
        return Ok(config.admin.token.as_str().into());
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot generate an admin token: {e}"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let dir = &config.store.data_dir;
    steward_tenancy::private_dir(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    let path = dir.join("admin-token");
    // a fresh file: a stale one (another owner, wider mode) is replaced, not reused
    let tmp = dir.join(".admin-token.new");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(token.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("cannot write {}", path.display()))?;
    tracing::warn!(
        path = %path.display(),
        "no admin token configured ([admin] token / STEWARD__ADMIN__TOKEN); generated one for this run and wrote it to this file (mode 0600)"
    );
    Ok(token.into())
}
