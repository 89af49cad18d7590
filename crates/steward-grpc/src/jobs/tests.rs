//! `steward.jobs.v1.Jobs` over a real job hub (a supervised actor under an actix system) and a
//! real [`Tenancy`] (SQLite under a temporary directory), served by tonic on a loopback port
//! chosen by the OS on the same runtime and driven by the generated client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use steward_config::{Config, JobsConfig};
use steward_core::supervisor::{RootSupervisor, Supervisor};
use steward_core::{
    ExitReason, LifecycleState, Registry, ResourceFilter, ResourceKind, Strategy, SupervisorSpec,
};
use steward_proto::jobs::v1 as pb;
use steward_proto::jobs::v1::jobs_client::JobsClient;
use steward_proto::jobs::v1::jobs_server::JobsServer;
use steward_socket::jobs::{JobHubHandle, JobPatch, JobStatus};
use steward_tenancy::{NewTenant, NewToken, Tenancy, TenantId};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status, Streaming};
use tower::Layer as _;

use super::JobsService;
use crate::{TenantAuth, TenantAuthLayer, status_from_jobs};

/// How long a test waits for anything before it fails.
const WITHIN: Duration = Duration::from_secs(10);
const UNAUTHENTICATED: &str = "unauthenticated: missing or invalid bearer token";

/// A job hub under a root supervisor, a tenancy over a fresh SQLite store, and a tonic server
/// serving [`JobsService`] behind [`TenantAuth`]; all go with it.
struct Fixture {
    registry: Registry,
    tenancy: Tenancy,
    hub: JobHubHandle,
    service: JobsService,
    streams: CancellationToken,
    addr: SocketAddr,
    server: JoinHandle<()>,
    _root: RootSupervisor,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Fixture {
    /// The defaults of `[jobs]`, changed by `configure`, with `watch_buffer` from them.
    async fn start(configure: impl FnOnce(&mut JobsConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::defaults();
        let mut store = config.store;
        store.data_dir = dir.path().join("data");
        let registry = Registry::with_defaults();
        let tenancy =
            Tenancy::open(&store, &config.tenancy, registry.clone(), Duration::from_secs(5))
                .await
                .unwrap();

        let mut jobs = config.jobs;
        configure(&mut jobs);
        let watch_buffer = jobs.watch_buffer as usize;
        let hub = JobHubHandle::new();
        let root = Supervisor::start_root(
            &registry,
            SupervisorSpec::from_config("root", Strategy::OneForOne, &config.supervisor)
                .child(hub.child_spec(jobs)),
        )
        .await
        .unwrap();

        let streams = CancellationToken::new();
        let service = JobsService::new(hub.clone(), streams.clone(), watch_buffer);
        let api = TenantAuthLayer::new(tenancy.clone()).layer(JobsServer::new(service.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tonic::transport::Server::builder()
            .add_service(api)
            .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)));
        #[allow(clippy::disallowed_methods)] // test scaffolding: aborted when the fixture drops
        let server = tokio::spawn(async move { server.await.unwrap() });
        Self { registry, tenancy, hub, service, streams, addr, server, _root: root, _dir: dir }
    }

    async fn defaults() -> Self {
        Self::start(|_| {}).await
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::from_shared(format!("http://{}", self.addr)).unwrap()
    }

    async fn client(&self) -> JobsClient<Channel> {
        JobsClient::new(self.endpoint().connect().await.unwrap())
    }

    /// Creates tenant `id` and returns a client calling as it.
    async fn tenant(&self, id: &str) -> Caller {
        let new = NewTenant {
            id: id.into(),
            display_name: None,
            quotas: steward_tenancy::QuotaOverrides::default(),
            browser_endpoint: None,
            browser_allow: Vec::new(),
            labels: std::collections::BTreeMap::default(),
        };
        self.tenancy.create_tenant(new).await.unwrap();
        self.token(id).await
    }

    /// A client calling as existing tenant `id`, with a token of its own.
    async fn token(&self, id: &str) -> Caller {
        let tenant = TenantId::new(id).unwrap();
        let new = NewToken { name: "ci".into(), expires_in: None };
        let bearer = self.tenancy.issue_token(&tenant, new).await.unwrap().bearer;
        Caller { client: self.client().await, auth: format!("Bearer {bearer}") }
    }

    /// Waits until the hub counts `n` live subscriptions.
    async fn subscriptions_become(&self, n: u64) {
        eventually(&format!("{n} subscriptions"), || self.hub.stats().subscriptions == n).await;
    }
}

/// Polls `cond` every 5 ms until it holds; fails the test after [`WITHIN`].
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WITHIN;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "waited {WITHIN:?} for {what}");
        tick.tick().await;
    }
}

/// A jobs client with a tenant's token.
struct Caller {
    client: JobsClient<Channel>,
    auth: String,
}

impl Caller {
    fn req<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        req.metadata_mut().insert("authorization", self.auth.parse().unwrap());
        req
    }

    async fn create(&mut self, kind: &str, data: Option<&str>) -> Result<pb::Job, Status> {
        let msg = pb::CreateJobRequest { kind: kind.into(), data: data.map(Into::into) };
        let req = self.req(msg);
        self.client.create_job(req).await.map(tonic::Response::into_inner)
    }

    async fn update(&mut self, msg: pb::UpdateJobRequest) -> Result<pb::Job, Status> {
        let req = self.req(msg);
        self.client.update_job(req).await.map(tonic::Response::into_inner)
    }

    /// Sets status (and progress) of job `id`.
    async fn report(
        &mut self,
        id: &str,
        status: pb::JobStatus,
        progress: Option<u32>,
    ) -> Result<pb::Job, Status> {
        let msg = pb::UpdateJobRequest {
            id: id.into(),
            status: Some(status.into()),
            progress,
            data: None,
        };
        self.update(msg).await
    }

    async fn get(&mut self, id: &str) -> Result<pb::Job, Status> {
        let req = self.req(pb::GetJobRequest { id: id.into() });
        self.client.get_job(req).await.map(tonic::Response::into_inner)
    }

    async fn cancel(&mut self, id: &str) -> Result<pb::Job, Status> {
        let req = self.req(pb::CancelJobRequest { id: id.into() });
        self.client.cancel_job(req).await.map(tonic::Response::into_inner)
    }

    async fn watch(&mut self, id: &str) -> Result<Streaming<pb::Job>, Status> {
        let req = self.req(pb::WatchJobRequest { id: id.into() });
        self.client.watch_job(req).await.map(tonic::Response::into_inner)
    }
}

/// The next message of a watch: `Ok(None)` when it ended `OK`.
async fn next(stream: &mut Streaming<pb::Job>) -> Result<Option<pb::Job>, Status> {
    tokio::time::timeout(WITHIN, stream.message()).await.expect("a message or the end in time")
}

fn status_of(job: &pb::Job) -> pb::JobStatus {
    pb::JobStatus::try_from(job.status).expect("a known status")
}

fn assert_code(status: &Status, code: Code, prefix: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().starts_with(prefix), "{status:?} does not start with {prefix:?}");
}

fn assert_invalid(status: &Status, field: &str) {
    assert_code(status, Code::InvalidArgument, &format!("bad_request: invalid `{field}`: "));
}

#[test]
fn tenant_auth_keeps_the_service_name() {
    assert_eq!(<TenantAuth<JobsServer<JobsService>> as NamedService>::NAME, "steward.jobs.v1.Jobs");
}

#[actix::test]
async fn create_get_update_cancel_round_trip() {
    let fx = Fixture::defaults().await;
    let mut acme = fx.tenant("acme").await;

    let created = acme.create("render", Some(r#"{ "pages": 3 }"#)).await.unwrap();
    assert_eq!(created.id.len(), 32, "{created:?}");
    assert!(created.id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert_eq!(created.kind, "render");
    assert_eq!(status_of(&created), pb::JobStatus::Queued);
    assert_eq!(created.progress, 0);
    assert_eq!(created.data, r#"{"pages":3}"#, "compact JSON text");
    assert_eq!(created.created_at, created.updated_at);
    assert!(created.created_at.is_some());
    assert_eq!(created.finished_at, None);
    assert_eq!(acme.get(&created.id).await.unwrap(), created);
    assert_eq!(acme.get(&created.id.to_uppercase()).await.unwrap(), created, "either case");

    let running = acme
        .update(pb::UpdateJobRequest {
            id: created.id.clone(),
            status: Some(pb::JobStatus::Running.into()),
            progress: Some(40),
            data: Some(r#"{"page":2}"#.into()),
        })
        .await
        .unwrap();
    assert_eq!(status_of(&running), pb::JobStatus::Running);
    assert_eq!(running.progress, 40);
    assert_eq!(running.data, r#"{"page":2}"#, "replaced, not merged");
    assert_eq!((running.kind.as_str(), running.created_at), ("render", created.created_at));
    assert_eq!(running.finished_at, None);
    assert_eq!(acme.get(&created.id).await.unwrap(), running);

    // unset fields keep their value
    let progressed = acme
        .update(pb::UpdateJobRequest {
            id: created.id.clone(),
            progress: Some(60),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(status_of(&progressed), pb::JobStatus::Running);
    assert_eq!((progressed.progress, progressed.data.as_str()), (60, r#"{"page":2}"#));

    let cancelled = acme.cancel(&created.id).await.unwrap();
    assert_eq!(status_of(&cancelled), pb::JobStatus::Cancelled);
    assert_eq!(cancelled.progress, 60);
    assert!(cancelled.finished_at.is_some());
    assert_eq!(cancelled.finished_at, cancelled.updated_at);
    assert_eq!(acme.get(&created.id).await.unwrap(), cancelled);

    // no data is `{}`; completing without a progress of its own is 100
    let other = acme.create("export", None).await.unwrap();
    assert_eq!(other.data, "{}");
    assert_eq!(acme.create("export", Some("")).await.unwrap().data, "{}");
    let done = acme.report(&other.id, pb::JobStatus::Completed, None).await.unwrap();
    assert_eq!((status_of(&done), done.progress), (pb::JobStatus::Completed, 100));
    assert!(done.finished_at.is_some());
    let failed = acme.create("export", None).await.unwrap();
    let failed = acme.report(&failed.id, pb::JobStatus::Failed, Some(7)).await.unwrap();
    assert_eq!((status_of(&failed), failed.progress), (pb::JobStatus::Failed, 7));
}

#[actix::test]
async fn invalid_arguments_name_the_field() {
    let fx = Fixture::defaults().await;
    let mut acme = fx.tenant("acme").await;

    assert_invalid(&acme.create("", None).await.unwrap_err(), "kind");
    assert_invalid(&acme.create("  ", None).await.unwrap_err(), "kind");
    assert_invalid(&acme.create(&"k".repeat(129), None).await.unwrap_err(), "kind");
    for data in ["[1, 2]", "\"text\"", "not json", "{\"a\":"] {
        assert_invalid(&acme.create("render", Some(data)).await.unwrap_err(), "data");
    }
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(16 * 1024));
    assert_invalid(&acme.create("render", Some(&big)).await.unwrap_err(), "data");

    let job = acme.create("render", None).await.unwrap();
    let update = |f: fn(&mut pb::UpdateJobRequest)| {
        let mut req = pb::UpdateJobRequest { id: job.id.clone(), ..Default::default() };
        f(&mut req);
        req
    };
    for (req, field) in [
        (update(|r| r.status = Some(pb::JobStatus::Unspecified.into())), "status"),
        (update(|r| r.status = Some(99)), "status"),
        (update(|r| r.status = Some(-1)), "status"),
        (update(|r| r.progress = Some(101)), "progress"),
        (update(|r| r.data = Some("[]".into())), "data"),
        (update(|r| r.data = Some("nope".into())), "data"),
        (update(|r| r.id = "xyz".into()), "id"),
        (update(|r| r.id = String::new()), "id"),
        (update(|r| r.id = "g".repeat(32)), "id"),
    ] {
        let status = acme.update(req.clone()).await.unwrap_err();
        assert_invalid(&status, field);
    }
    let status = acme.update(update(|r| r.status = Some(0))).await.unwrap_err();
    assert!(status.message().contains("JOB_STATUS_UNSPECIFIED"), "{status:?}");

    // a refused report changes nothing
    let unchanged = acme.get(&job.id).await.unwrap();
    assert_eq!(unchanged, job);

    assert_invalid(&acme.get("xyz").await.unwrap_err(), "id");
    assert_invalid(&acme.cancel("xyz").await.unwrap_err(), "id");
    assert_invalid(&acme.watch("xyz").await.unwrap_err(), "id");
}

#[actix::test]
async fn finished_jobs_and_forbidden_moves_are_failed_precondition() {
    let fx = Fixture::defaults().await;
    let mut acme = fx.tenant("acme").await;

    let job = acme.create("render", None).await.unwrap();
    acme.report(&job.id, pb::JobStatus::Running, Some(10)).await.unwrap();
    let back = acme.report(&job.id, pb::JobStatus::Queued, None).await.unwrap_err();
    assert_code(&back, Code::FailedPrecondition, "invalid_transition: ");
    assert!(back.message().contains("from running to queued"), "{back:?}");
    let done = acme.report(&job.id, pb::JobStatus::Completed, None).await.unwrap();

    for status in [pb::JobStatus::Running, pb::JobStatus::Failed, pb::JobStatus::Completed] {
        let refused = acme.report(&job.id, status, None).await.unwrap_err();
        assert_code(&refused, Code::FailedPrecondition, "finished: ");
        assert!(refused.message().contains("completed"), "{refused:?}");
    }
    let refused = acme
        .update(pb::UpdateJobRequest {
            id: job.id.clone(),
            progress: Some(5),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_code(&refused, Code::FailedPrecondition, "finished: ");
    assert_code(&acme.cancel(&job.id).await.unwrap_err(), Code::FailedPrecondition, "finished: ");
    assert_eq!(acme.get(&job.id).await.unwrap(), done, "nothing changed");

    let cancelled = acme.create("render", None).await.unwrap();
    acme.cancel(&cancelled.id).await.unwrap();
    let again = acme.cancel(&cancelled.id).await.unwrap_err();
    assert_code(&again, Code::FailedPrecondition, "finished: ");
}

#[actix::test]
async fn another_tenants_job_is_not_found() {
    let fx = Fixture::defaults().await;
    let mut acme = fx.tenant("acme").await;
    let mut globex = fx.tenant("globex").await;

    let job = acme.create("render", None).await.unwrap();
    let not_found = format!("not_found: job {} not found", job.id);
    let check = |status: Status| {
        assert_eq!((status.code(), status.message()), (Code::NotFound, not_found.as_str()));
    };
    check(globex.get(&job.id).await.unwrap_err());
    check(globex.report(&job.id, pb::JobStatus::Running, None).await.unwrap_err());
    check(globex.cancel(&job.id).await.unwrap_err());
    check(globex.watch(&job.id).await.unwrap_err());
    assert_eq!(acme.get(&job.id).await.unwrap(), job, "untouched");

    // the same answer as for an id that never existed
    let unknown = "0".repeat(32);
    let status = acme.get(&unknown).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::NotFound, format!("not_found: job {unknown} not found").as_str())
    );
}

#[actix::test]
async fn creations_beyond_max_jobs_are_resource_exhausted() {
    let fx = Fixture::start(|jobs| jobs.max_jobs = 2).await;
    let mut acme = fx.tenant("acme").await;
    let mut globex = fx.tenant("globex").await;

    let first = acme.create("render", None).await.unwrap();
    globex.create("render", None).await.unwrap();
    let refused = acme.create("render", None).await.unwrap_err();
    assert_eq!(
        (refused.code(), refused.message()),
        (Code::ResourceExhausted, "limit_reached: jobs limit of 2 reached")
    );
    // at the cap a finished job is evicted early to make room for a live one
    acme.cancel(&first.id).await.unwrap();
    globex.create("render", None).await.expect("room made by evicting the finished job");
    let gone = acme.get(&first.id).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    assert_eq!((fx.hub.stats().refused_cap, fx.hub.stats().evicted), (1, 1));
}

#[actix::test]
async fn watch_sends_the_snapshot_then_each_update_and_ends_after_the_final_one() {
    let fx = Fixture::defaults().await;
    let mut acme = fx.tenant("acme").await;
    let mut worker = fx.token("acme").await;
    let mut globex = fx.tenant("globex").await;

    let job = acme.create("render", Some(r#"{"step":0}"#)).await.unwrap();
    let mut watch = acme.watch(&job.id).await.unwrap();
    let snapshot = next(&mut watch).await.unwrap().expect("the snapshot");
    assert_eq!(snapshot, job);
    fx.subscriptions_become(1).await;

    let mut sent = Vec::new();
    for (status, progress) in [
        (pb::JobStatus::Running, 10),
        (pb::JobStatus::Running, 50),
        (pb::JobStatus::Running, 90),
        (pb::JobStatus::Completed, 100),
    ] {
        let msg = pb::UpdateJobRequest {
            id: job.id.clone(),
            status: Some(status.into()),
            progress: Some(progress),
            data: Some(format!(r#"{{"step":{progress}}}"#)),
        };
        sent.push(worker.update(msg).await.unwrap());
    }
    let mut seen = Vec::new();
    while let Some(update) = next(&mut watch).await.expect("ends OK") {
        seen.push(update);
    }
    assert_eq!(seen, sent, "every update, in order, then the end");
    assert_eq!(status_of(seen.last().unwrap()), pb::JobStatus::Completed);
    assert_eq!(fx.hub.stats().subscriptions, 0);

    // an already finished job: its state, then the end
    let mut watch = acme.watch(&job.id).await.unwrap();
    assert_eq!(next(&mut watch).await.unwrap(), Some(sent[3].clone()));
    assert_eq!(next(&mut watch).await.unwrap(), None);

    // another tenant cannot report on it; cancelling ends a watch too
    let job = acme.create("render", None).await.unwrap();
    let mut watch = acme.watch(&job.id).await.unwrap();
    assert_eq!(next(&mut watch).await.unwrap(), Some(job.clone()));
    let refused = globex.report(&job.id, pb::JobStatus::Running, None).await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    let cancelled = acme.cancel(&job.id).await.unwrap();
    assert_eq!(next(&mut watch).await.unwrap(), Some(cancelled));
    assert_eq!(next(&mut watch).await.unwrap(), None);
    fx.subscriptions_become(0).await;
}

#[actix::test]
async fn a_watcher_that_goes_away_is_unsubscribed() {
    let fx = Fixture::defaults().await;
    let mut acme = fx.tenant("acme").await;
    let job = acme.create("render", None).await.unwrap();

    let mut watches = Vec::new();
    for _ in 0..3 {
        let mut watch = acme.watch(&job.id).await.unwrap();
        next(&mut watch).await.unwrap().expect("the snapshot");
        watches.push(watch);
    }
    fx.subscriptions_become(3).await;
    drop(watches);
    fx.subscriptions_become(0).await;
    let job = acme.report(&job.id, pb::JobStatus::Running, Some(1)).await.unwrap();
    assert_eq!(status_of(&job), pb::JobStatus::Running);
}

#[actix::test]
async fn a_watcher_that_never_reads_ends_resource_exhausted() {
    // without tonic in between: nothing reads the channel
    let fx = Fixture::start(|jobs| jobs.watch_buffer = 2).await;
    let tenant: Arc<str> = "acme".into();
    let job = fx.hub.create(tenant.clone(), "render".into(), None).await.unwrap();
    let stream = fx.service.watch(tenant.clone(), job.id.clone()).await.unwrap().into_stream();
    assert_eq!(fx.hub.stats().subscriptions, 1);
    for progress in [1, 2] {
        let patch = JobPatch { progress: Some(progress), ..JobPatch::default() };
        fx.hub.update(tenant.clone(), job.id.clone(), patch).await.unwrap();
    }
    let stats = fx.hub.stats();
    assert_eq!((stats.watcher_overflows, stats.subscriptions), (1, 0), "dropped by the hub");
    // the hub went on without waiting for it
    let patch = JobPatch { status: Some(JobStatus::Running), ..JobPatch::default() };
    fx.hub.update(tenant.clone(), job.id.clone(), patch).await.unwrap();

    let items: Vec<_> = stream.collect().await;
    let [Err(status)] = items.as_slice() else { panic!("one error: {items:?}") };
    assert_code(status, Code::ResourceExhausted, "slow_consumer: slow consumer");

    // over the wire: a client that never reads while the worker keeps reporting
    let mut acme = fx.tenant("globex").await;
    let job = acme.create("render", None).await.unwrap();
    let mut watch = acme.watch(&job.id).await.unwrap();
    assert_eq!(next(&mut watch).await.unwrap(), Some(job.clone()));
    let pad = "x".repeat(12 * 1024);
    let mut reports = 0;
    let deadline = tokio::time::Instant::now() + WITHIN;
    while fx.hub.stats().watcher_overflows < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no overflow after {reports} reports");
        let msg = pb::UpdateJobRequest {
            id: job.id.clone(),
            data: Some(format!(r#"{{"n":{reports},"pad":"{pad}"}}"#)),
            ..Default::default()
        };
        acme.update(msg).await.unwrap();
        reports += 1;
    }
    assert_eq!(fx.hub.stats().subscriptions, 0);
    let mut delivered = 0;
    let status = loop {
        match next(&mut watch).await {
            Ok(Some(_)) => delivered += 1,
            Ok(None) => panic!("ended OK after {delivered} of {reports} reports"),
            Err(status) => break status,
        }
    };
    assert!(delivered < reports, "{delivered} of {reports} reports delivered");
    assert_code(&status, Code::ResourceExhausted, "slow_consumer: ");
}

#[actix::test]
async fn watches_end_unavailable_at_shutdown() {
    let fx = Fixture::defaults().await;
    let mut acme = fx.tenant("acme").await;
    let job = acme.create("render", None).await.unwrap();
    let mut watch = acme.watch(&job.id).await.unwrap();
    assert_eq!(next(&mut watch).await.unwrap(), Some(job.clone()));
    fx.subscriptions_become(1).await;

    fx.streams.cancel();
    let status = next(&mut watch).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unavailable, "shutting_down: server shutting down")
    );
    fx.subscriptions_become(0).await;
    let refused = acme.watch(&job.id).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    // unary calls still work until the listener stops
    acme.report(&job.id, pb::JobStatus::Running, None).await.unwrap();
}

#[actix::test]
async fn calls_without_a_valid_token_are_unauthenticated() {
    let fx = Fixture::defaults().await;
    let mut acme = fx.tenant("acme").await;
    let job = acme.create("render", None).await.unwrap();
    let mut client = fx.client().await;

    let check = |result: Result<(), Status>, case: &str| {
        let status = result.expect_err(case);
        assert_eq!((status.code(), status.message()), (Code::Unauthenticated, UNAUTHENTICATED));
    };
    let create = pb::CreateJobRequest { kind: "render".into(), data: None };
    check(client.create_job(create.clone()).await.map(drop), "create without a token");
    check(client.get_job(pb::GetJobRequest { id: job.id.clone() }).await.map(drop), "get");
    check(client.cancel_job(pb::CancelJobRequest { id: job.id.clone() }).await.map(drop), "cancel");
    check(client.watch_job(pb::WatchJobRequest { id: job.id.clone() }).await.map(drop), "watch");
    let mut wrong = Request::new(create);
    wrong.metadata_mut().insert("authorization", "Bearer stw_nope".parse().unwrap());
    check(client.create_job(wrong).await.map(drop), "a malformed token");
    assert_eq!(fx.hub.stats().created, 1, "only acme's job");
}

#[test]
fn job_hub_errors_map_to_codes_and_messages() {
    use steward_socket::Error as E;
    let id = "0123456789abcdef0123456789abcdef";
    let cases = [
        (
            E::invalid("progress", "must be 0..=100"),
            Code::InvalidArgument,
            "bad_request: invalid `progress`: must be 0..=100".to_owned(),
        ),
        (E::NotFound(id.into()), Code::NotFound, format!("not_found: job {id} not found")),
        (
            E::Finished { job: id.into(), status: "completed" },
            Code::FailedPrecondition,
            format!("finished: job {id} is completed: a finished job cannot change"),
        ),
        (
            E::Transition { job: id.into(), from: "running", to: "queued" },
            Code::FailedPrecondition,
            format!("invalid_transition: job {id} cannot go from running to queued"),
        ),
        (
            E::LimitReached { what: "jobs", limit: 2 },
            Code::ResourceExhausted,
            "limit_reached: jobs limit of 2 reached".to_owned(),
        ),
        (
            E::Unavailable("not running"),
            Code::Unavailable,
            "unavailable: the job hub is unavailable: not running".to_owned(),
        ),
    ];
    for (error, code, message) in cases {
        let status = status_from_jobs(&error);
        assert_eq!((status.code(), status.message()), (code, message.as_str()), "{error:?}");
    }
}

#[actix::test]
async fn watches_of_removed_jobs_end_unavailable_and_a_stopped_hub_is_unavailable() {
    let fx = Fixture::defaults().await;
    let mut acme = fx.tenant("acme").await;
    let job = acme.create("render", None).await.unwrap();
    let mut watch = acme.watch(&job.id).await.unwrap();
    assert_eq!(next(&mut watch).await.unwrap(), Some(job.clone()));

    // the tenant was deleted: the hub drops its jobs and their watchers
    assert_eq!(fx.hub.remove_tenant("acme".into()).await.unwrap(), 1);
    let status = next(&mut watch).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::Unavailable,
            format!(
                "unavailable: the job hub stopped watching job {} before it finished; watch again",
                job.id
            )
            .as_str()
        )
    );
    assert_eq!(acme.get(&job.id).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(acme.watch(&job.id).await.unwrap_err().code(), Code::NotFound);

    let filter = ResourceFilter { kind: Some(ResourceKind::Service), ..ResourceFilter::default() };
    let (services, _) = fx.registry.list(&filter, None, 100);
    let hub = services.iter().find(|s| &*s.name == "job-hub").expect("the job hub").id;
    steward_core::Control::new(fx.registry.clone()).stop(hub, ExitReason::Shutdown).unwrap();
    eventually("the hub to stop", || {
        fx.registry.get(hub).is_none_or(|info| info.state == LifecycleState::Stopped)
    })
    .await;
    let status = acme.create("render", None).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unavailable, "unavailable: the job hub is unavailable: not running")
    );
}
