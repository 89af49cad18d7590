//! The edge's own part of `steward.browser.v1.Browser`: wire ↔ pool conversions and their
//! validation, the status mapping of the pool's errors, the ledger's refusals, the capture-job
//! reports (over a real job hub under an actix system), tonic's request size limit, and the
//! refusals a call meets before it reaches the pool (over a real [`Tenancy`], SQLite under a
//! temporary directory). The pool itself (sessions on Chromium) is tested end to end through
//! the binary.

use std::sync::Arc;
use std::sync::atomic::AtomicU8;
use std::time::{Duration, UNIX_EPOCH};

use prost_types::FileDescriptorSet;
use steward_browser::{Browsers, Error, ImageFormat, JobReport, SessionInfo, WaitUntil};
use steward_config::Config;
use steward_core::supervisor::{RootSupervisor, Supervisor};
use steward_core::{Registry, Strategy, SupervisorSpec};
use steward_proto::browser::v1 as pb;
use steward_proto::browser::v1::browser_client::BrowserClient;
use steward_proto::browser::v1::browser_server::BrowserServer;
use steward_proto::prost::Message as _;
use steward_socket::jobs::{JobHubHandle, JobPatch, JobStatus};
use steward_tenancy::{NewTenant, NewToken, QuotaKind, Tenancy, TenantId};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;
use tonic::server::NamedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tower::Layer as _;

use super::{
    ACCEPTED, Answering, BrowserService, CaptureJanitor, CaptureJob, CaptureReport, Orphan,
    SUBMITTING, completed, failed, ledger_refusal, navigate_request, pdf_request, scale_percent,
    scope, screenshot_request, session_closed, session_options, session_to_pb,
};
use crate::{TenantAuth, TenantAuthLayer, status_from_browser};

/// How long a test waits for anything before it fails.
const WITHIN: Duration = Duration::from_secs(10);

fn pb_duration(seconds: i64, nanos: i32) -> prost_types::Duration {
    prost_types::Duration { seconds, nanos }
}

/// The field an `InvalidArgument` names.
fn invalid_field(e: &Error) -> &str {
    match e {
        Error::InvalidArgument { field, .. } => field,
        other => panic!("not InvalidArgument: {other:?}"),
    }
}

fn assert_code(status: &Status, code: Code, prefix: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().starts_with(prefix), "{status:?} does not start with {prefix:?}");
}

#[test]
fn descriptor_set_has_the_browser_service() {
    let set = FileDescriptorSet::decode(steward_proto::FILE_DESCRIPTOR_SET).unwrap();
    let file = set
        .file
        .iter()
        .find(|f| f.package() == "steward.browser.v1")
        .expect("the steward.browser.v1 package");
    let service = file.service.iter().find(|s| s.name() == "Browser").expect("Browser");
    let mut methods: Vec<&str> =
        service.method.iter().map(prost_types::MethodDescriptorProto::name).collect();
    methods.sort_unstable();
    assert_eq!(
        methods,
        [
            "ClosePage",
            "CloseSession",
            "Content",
            "CreateSession",
            "Evaluate",
            "GetSession",
            "KeepAlive",
            "ListSessions",
            "Navigate",
            "NewPage",
            "Pdf",
            "Screenshot",
            "TakeJobResult",
        ]
    );
    assert!(
        service.method.iter().all(|m| !m.client_streaming() && !m.server_streaming()),
        "every call is unary"
    );
}

#[test]
fn tenant_auth_keeps_the_service_name() {
    assert_eq!(
        <TenantAuth<BrowserServer<BrowserService>> as NamedService>::NAME,
        "steward.browser.v1.Browser"
    );
}

#[test]
fn browser_errors_map_to_codes_and_messages() {
    let cases = [
        (
            Error::InvalidArgument {
                field: "viewport.width".into(),
                reason: "must be at most 3840".into(),
            },
            Code::InvalidArgument,
            "bad_request: invalid `viewport.width`: must be at most 3840",
        ),
        (Error::NotFound("session s1".into()), Code::NotFound, "not_found: session s1 not found"),
        (
            Error::PermissionDenied("http://10.0.0.1/: a private address".into()),
            Code::PermissionDenied,
            "url_not_allowed: url refused: http://10.0.0.1/: a private address",
        ),
        (
            Error::DeadlineExceeded { stage: "navigate", after: Duration::from_secs(30) },
            Code::DeadlineExceeded,
            "deadline_exceeded: navigate did not finish within 30000ms",
        ),
        (
            Error::NavigationFailed("net::ERR_NAME_NOT_RESOLVED".into()),
            Code::Unavailable,
            "navigation_failed: navigation failed: net::ERR_NAME_NOT_RESOLVED",
        ),
        (
            Error::BrowserUnavailable("no browser is ready".into()),
            Code::Unavailable,
            "browser_unavailable: browser unavailable: no browser is ready",
        ),
        (Error::ShuttingDown, Code::Unavailable, "shutting_down: server shutting down"),
        (
            Error::SessionClosed("page_crashed"),
            Code::Aborted,
            "page_crashed: session closed: page_crashed",
        ),
        (Error::SessionClosed("idle"), Code::Aborted, "idle: session closed: idle"),
        (
            Error::EvaluationFailed("ReferenceError: x is not defined".into()),
            Code::InvalidArgument,
            "evaluation_failed: evaluation failed: ReferenceError: x is not defined",
        ),
        (
            Error::OutOfRange("the result is 20971520 bytes, above max_result".into()),
            Code::OutOfRange,
            "result_too_large: the result is 20971520 bytes, above max_result",
        ),
        (
            Error::Protocol("Target closed".into()),
            Code::Internal,
            "protocol_error: devtools protocol error: Target closed",
        ),
    ];
    for (error, code, message) in cases {
        let status = status_from_browser(&error);
        assert_eq!((status.code(), status.message()), (code, message), "{error:?}");
        assert!(status.metadata().get("retry-after").is_none(), "{error:?}");
    }
}

#[test]
fn resource_exhausted_carries_retry_after_in_whole_seconds() {
    let exhausted = |quota, retry_after| Error::ResourceExhausted { quota, retry_after };
    let status = status_from_browser(&exhausted("sessions", Some(Duration::from_millis(1500))));
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.message(), "resource_exhausted: sessions limit reached, retry after 1500ms");
    assert_eq!(status.metadata().get("retry-after").unwrap(), "2", "rounded up");
    let status = status_from_browser(&exhausted("queue_full", Some(Duration::from_secs(3))));
    assert_eq!(status.metadata().get("retry-after").unwrap(), "3");
    let status = status_from_browser(&exhausted("session_rate", Some(Duration::from_millis(10))));
    assert_eq!(status.metadata().get("retry-after").unwrap(), "1", "at least 1");
    let status = status_from_browser(&exhausted("session_rate", Some(Duration::ZERO)));
    assert_eq!(status.metadata().get("retry-after").unwrap(), "1", "at least 1");
    let status = status_from_browser(&exhausted("pages_per_session", None));
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.message(), "resource_exhausted: pages_per_session limit reached");
    assert!(status.metadata().get("retry-after").is_none(), "waiting cannot help");
}

#[test]
fn the_device_scale_factor_is_in_hundredths_within_its_range() {
    assert_eq!(scale_percent(0.0).unwrap(), 0, "the default");
    assert_eq!(scale_percent(1.0).unwrap(), 100);
    assert_eq!(scale_percent(2.5).unwrap(), 250);
    assert_eq!(scale_percent(1.234).unwrap(), 123, "rounded");
    assert_eq!(scale_percent(1.235_1).unwrap(), 124, "rounded");
    assert_eq!(scale_percent(0.01).unwrap(), 1);
    assert_eq!(scale_percent(0.005).unwrap(), 1, "rounds to 0.01");
    assert_eq!(scale_percent(4.0).unwrap(), 400);
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.5, 4.001, 0.004, 1e300] {
        let e = scale_percent(bad).expect_err(&format!("{bad} is refused"));
        assert_eq!(invalid_field(&e), "viewport.device_scale_factor", "{bad}");
    }
}

#[test]
fn session_options_convert_and_name_their_fields() {
    let options = session_options(pb::CreateSessionRequest::default()).unwrap();
    assert_eq!(options, steward_browser::SessionOptions::default(), "unset means the defaults");

    let options = session_options(pb::CreateSessionRequest {
        viewport: Some(pb::Viewport { width: 800, height: 600, device_scale_factor: 2.0 }),
        user_agent: "ua/1".into(),
        locale: "de-DE".into(),
        timezone: "Europe/Berlin".into(),
        idle_ttl: Some(pb_duration(60, 0)),
        max_lifetime: Some(pb_duration(600, 500_000_000)),
    })
    .unwrap();
    assert_eq!((options.width, options.height, options.scale_percent), (800, 600, 200));
    assert_eq!(
        (options.user_agent.as_str(), options.locale.as_str(), options.timezone.as_str()),
        ("ua/1", "de-DE", "Europe/Berlin")
    );
    assert_eq!(options.idle_ttl, Some(Duration::from_secs(60)));
    assert_eq!(options.max_lifetime, Some(Duration::from_millis(600_500)));

    let zero = session_options(pb::CreateSessionRequest {
        idle_ttl: Some(pb_duration(0, 0)),
        max_lifetime: Some(pb_duration(0, 0)),
        ..Default::default()
    })
    .unwrap();
    assert_eq!((zero.idle_ttl, zero.max_lifetime), (None, None), "0 means the default");

    let negative = session_options(pb::CreateSessionRequest {
        idle_ttl: Some(pb_duration(-1, 0)),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(invalid_field(&negative), "idle_ttl");
    let malformed = session_options(pb::CreateSessionRequest {
        max_lifetime: Some(pb_duration(1, -1)),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(invalid_field(&malformed), "max_lifetime");
    let nan = session_options(pb::CreateSessionRequest {
        viewport: Some(pb::Viewport { device_scale_factor: f64::NAN, ..Default::default() }),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(invalid_field(&nan), "viewport.device_scale_factor");
}

#[test]
fn sessions_go_on_the_wire_with_their_timestamps() {
    let at = |s| UNIX_EPOCH + Duration::from_secs(s);
    let session = session_to_pb(SessionInfo {
        id: "s1".into(),
        created_at: at(1_700_000_000),
        expires_at: at(1_700_000_300),
        max_lifetime_at: at(1_700_001_800),
        pages: vec!["p1".into(), "p2".into()],
        browser: "b1".into(),
    });
    let ts = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
    assert_eq!(
        session,
        pb::Session {
            id: "s1".into(),
            created_at: ts(1_700_000_000),
            expires_at: ts(1_700_000_300),
            max_lifetime_at: ts(1_700_001_800),
            pages: vec!["p1".into(), "p2".into()],
        }
    );
}

#[test]
fn navigate_requests_convert_and_name_their_fields() {
    let (session, req) = navigate_request(pb::NavigateRequest {
        session_id: "s1".into(),
        page_id: String::new(),
        url: "https://example.com/".into(),
        wait_until: pb::WaitUntil::Unspecified.into(),
        timeout: None,
    })
    .unwrap();
    assert_eq!(session, "s1");
    assert_eq!(req.url, "https://example.com/");
    assert_eq!((req.wait_until, req.timeout, req.page), (WaitUntil::Load, None, None));

    let (_, req) = navigate_request(pb::NavigateRequest {
        session_id: "s1".into(),
        page_id: "p2".into(),
        wait_until: pb::WaitUntil::NetworkIdle.into(),
        timeout: Some(pb_duration(5, 0)),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(req.wait_until, WaitUntil::NetworkIdle);
    assert_eq!(req.timeout, Some(Duration::from_secs(5)));
    assert_eq!(req.page.as_deref(), Some("p2"));
    for (value, expected) in [
        (pb::WaitUntil::Load, WaitUntil::Load),
        (pb::WaitUntil::DomContentLoaded, WaitUntil::DomContentLoaded),
    ] {
        let req = pb::NavigateRequest {
            session_id: "s1".into(),
            wait_until: value.into(),
            ..Default::default()
        };
        assert_eq!(navigate_request(req).unwrap().1.wait_until, expected);
    }

    let cases = [
        (pb::NavigateRequest::default(), "session_id"),
        (
            pb::NavigateRequest { session_id: "s1".into(), wait_until: 9, ..Default::default() },
            "wait_until",
        ),
        (
            pb::NavigateRequest {
                session_id: "s1".into(),
                timeout: Some(pb_duration(-5, 0)),
                ..Default::default()
            },
            "timeout",
        ),
    ];
    for (req, field) in cases {
        assert_eq!(invalid_field(&navigate_request(req).unwrap_err()), field);
    }
}

#[test]
fn capture_requests_convert_and_name_their_fields() {
    let (session, shot, as_job) = screenshot_request(pb::ScreenshotRequest {
        session_id: "s1".into(),
        format: pb::ImageFormat::Jpeg.into(),
        quality: 60,
        full_page: true,
        clip: Some(pb::Clip { x: 1.0, y: 2.0, width: 300.0, height: 200.0 }),
        timeout: Some(pb_duration(3, 0)),
        as_job: true,
        ..Default::default()
    })
    .unwrap();
    assert_eq!((session.as_str(), as_job), ("s1", true));
    assert_eq!((shot.format, shot.quality, shot.full_page), (ImageFormat::Jpeg, 60, true));
    let clip = shot.clip.unwrap();
    assert_eq!((clip.x, clip.y, clip.width, clip.height), (1.0, 2.0, 300.0, 200.0));
    assert_eq!((shot.timeout, shot.page), (Some(Duration::from_secs(3)), None));

    let (_, shot, as_job) =
        screenshot_request(pb::ScreenshotRequest { session_id: "s1".into(), ..Default::default() })
            .unwrap();
    assert_eq!((shot.format, shot.clip.is_none(), as_job), (ImageFormat::Png, true, false));

    let bad = |req: pb::ScreenshotRequest| screenshot_request(req).unwrap_err();
    let s1 = || pb::ScreenshotRequest { session_id: "s1".into(), ..Default::default() };
    assert_eq!(invalid_field(&bad(pb::ScreenshotRequest::default())), "session_id");
    assert_eq!(invalid_field(&bad(pb::ScreenshotRequest { format: 7, ..s1() })), "format");

    let (session, pdf, as_job) = pdf_request(pb::PdfRequest {
        session_id: "s1".into(),
        page_id: "p1".into(),
        landscape: true,
        print_background: true,
        timeout: None,
        as_job: false,
    })
    .unwrap();
    assert_eq!((session.as_str(), as_job), ("s1", false));
    assert_eq!(
        (pdf.landscape, pdf.print_background, pdf.page.as_deref()),
        (true, true, Some("p1"))
    );
    let e = pdf_request(pb::PdfRequest {
        session_id: "s1".into(),
        timeout: Some(pb_duration(315_576_000_001, 0)),
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(invalid_field(&e), "timeout");
}

#[test]
fn ledger_refusals_become_exhausted_limits_or_statuses() {
    use steward_tenancy::Error as E;

    let exceeded = |quota, retry_after| E::QuotaExceeded {
        tenant: "acme".into(),
        quota,
        limit: 30,
        retry_after,
    };
    let after = Some(Duration::from_millis(2100));
    match ledger_refusal(&exceeded(QuotaKind::SessionRate, after)).unwrap() {
        Error::ResourceExhausted { quota, retry_after } => {
            assert_eq!((quota, retry_after), ("session_rate", after));
        }
        other => panic!("{other:?}"),
    }
    match ledger_refusal(&exceeded(QuotaKind::Sessions, None)).unwrap() {
        Error::ResourceExhausted { quota, retry_after } => {
            assert_eq!((quota, retry_after), ("sessions", None), "a quota of 0: no advice");
        }
        other => panic!("{other:?}"),
    }
    let deleting = ledger_refusal(&E::NotFound("tenant acme".into())).unwrap_err();
    assert_code(&deleting, Code::FailedPrecondition, "failed_precondition: ");
    let internal = ledger_refusal(&E::Internal("boom".into())).unwrap_err();
    assert_code(&internal, Code::Internal, "internal: ");
}

fn data(patch: &JobPatch) -> serde_json::Value {
    serde_json::from_str(patch.data.as_deref().expect("data")).unwrap()
}

#[test]
fn job_reports_carry_the_session_and_the_outcome() {
    let done = completed("s1", 1234, "image/png");
    assert_eq!((done.status, done.progress), (Some(JobStatus::Completed), Some(100)));
    assert_eq!(
        data(&done),
        serde_json::json!({"session_id": "s1", "bytes": 1234, "content_type": "image/png"})
    );

    let e = Error::DeadlineExceeded { stage: "screenshot", after: Duration::from_secs(15) };
    let fail = failed("s1", &e);
    assert_eq!((fail.status, fail.progress), (Some(JobStatus::Failed), None));
    assert_eq!(
        data(&fail),
        serde_json::json!({"session_id": "s1", "error": {
            "code": "deadline_exceeded",
            "message": "screenshot did not finish within 15000ms",
        }})
    );

    let closed = session_closed("s1");
    assert_eq!(closed.status, Some(JobStatus::Failed));
    assert_eq!(data(&closed)["error"]["code"], "session_closed");
    assert_eq!(data(&closed)["session_id"], "s1");
}

/// A capture job of tenant `acme` over `jobs` (the hub need not run), its orphans in `rx`.
fn capture_job(
    jobs: JobHubHandle,
    id: steward_socket::jobs::JobId,
) -> (Arc<CaptureJob>, mpsc::Receiver<Orphan>) {
    let (orphans, rx) = mpsc::channel(4);
    let job = Arc::new(CaptureJob {
        jobs,
        tenant: "acme".into(),
        id,
        session: "s1".into(),
        content_type: "image/png",
        state: AtomicU8::new(SUBMITTING),
        orphans,
    });
    (job, rx)
}

fn random_job() -> (Arc<CaptureJob>, mpsc::Receiver<Orphan>) {
    capture_job(JobHubHandle::new(), steward_socket::jobs::JobId::random())
}

#[test]
fn a_reporter_dropped_after_acceptance_is_the_janitors() {
    let (job, mut rx) = random_job();
    let report = CaptureReport::new(job.clone());
    assert!(job.accepted());
    drop(report);
    let orphan = rx.try_recv().expect("queued for the janitor");
    assert_eq!((&*orphan.tenant, orphan.session.as_str()), ("acme", "s1"));
    assert_eq!(orphan.id, job.id);
}

#[test]
fn a_reporter_dropped_before_acceptance_is_the_submitting_calls() {
    let (job, mut rx) = random_job();
    drop(CaptureReport::new(job.clone()));
    assert!(!job.accepted(), "the call learns the session dropped it, and marks the job");
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
}

#[test]
fn a_refused_capture_is_marked_by_the_call_alone() {
    let (job, mut rx) = random_job();
    let report = CaptureReport::new(job.clone());
    job.refused();
    drop(report);
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
}

#[test]
fn a_call_that_went_away_while_submitting_leaves_the_job_to_its_reporter() {
    let (job, mut rx) = random_job();
    let report = CaptureReport::new(job.clone());
    drop(Answering(Some(job.clone())));
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty, "the capture may still run");
    drop(report);
    assert!(rx.try_recv().is_ok(), "dropped unreported: queued for the janitor");
}

#[test]
fn a_call_that_went_away_after_its_reporter_did_queues_the_job() {
    let (job, mut rx) = random_job();
    drop(CaptureReport::new(job.clone()));
    drop(Answering(Some(job.clone())));
    assert!(rx.try_recv().is_ok(), "queued for the janitor");
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty, "once");
}

#[test]
fn a_call_that_went_away_while_reporting_a_refusal_queues_the_job() {
    let (job, mut rx) = random_job();
    drop(CaptureReport::new(job.clone()));
    job.refused();
    drop(Answering(Some(job.clone())));
    assert!(rx.try_recv().is_ok(), "queued for the janitor");
}

#[test]
fn a_call_that_answered_leaves_nothing_behind() {
    let (job, mut rx) = random_job();
    let report = CaptureReport::new(job.clone());
    let answering = Answering(Some(job.clone()));
    assert!(job.accepted());
    answering.disarm();
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
    drop(report);
    assert!(rx.try_recv().is_ok(), "the reporter's own drop still counts");
}

#[tokio::test]
async fn a_reporter_that_finished_leaves_nothing_to_the_janitor() {
    let (job, mut rx) = random_job();
    let mut report = Box::new(CaptureReport::new(job.clone()));
    assert!(job.accepted());
    // the hub is not running: the reports fail (logged) but are done
    report.running().await;
    report.finished(Ok(10)).await;
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
    assert_eq!(job.state.load(std::sync::atomic::Ordering::Acquire), ACCEPTED);
}

#[tokio::test]
async fn a_finished_report_dropped_before_it_ran_is_the_janitors() {
    let (job, mut rx) = random_job();
    let report = Box::new(CaptureReport::new(job.clone()));
    assert!(job.accepted());
    drop(report.finished(Ok(10)));
    assert!(rx.try_recv().is_ok(), "queued for the janitor");
}

/// A job hub under a root supervisor; both go with it.
struct Hub {
    hub: JobHubHandle,
    _root: RootSupervisor,
}

impl Hub {
    async fn start() -> Self {
        let config = Config::defaults();
        let registry = Registry::with_defaults();
        let hub = JobHubHandle::new();
        let root = Supervisor::start_root(
            &registry,
            SupervisorSpec::from_config("root", Strategy::OneForOne, &config.supervisor)
                .child(hub.child_spec(config.jobs)),
        )
        .await
        .unwrap();
        Self { hub, _root: root }
    }

    async fn job(&self) -> steward_socket::jobs::JobId {
        let data = Some(r#"{"session_id":"s1"}"#.to_owned());
        let job = self.hub.create("acme".into(), "browser.screenshot".into(), data).await.unwrap();
        assert_eq!(job.status, JobStatus::Queued);
        job.id
    }

    async fn get(&self, id: &steward_socket::jobs::JobId) -> steward_socket::jobs::Job {
        self.hub.get("acme".into(), id.clone()).await.unwrap()
    }
}

fn job_data(job: &steward_socket::jobs::Job) -> serde_json::Value {
    serde_json::from_str(job.data.get()).unwrap()
}

#[actix::test]
async fn a_capture_job_runs_then_completes_with_its_size_and_type() {
    let hub = Hub::start().await;
    let (job, mut rx) = capture_job(hub.hub.clone(), hub.job().await);
    let mut report = Box::new(CaptureReport::new(job.clone()));
    assert!(job.accepted());

    report.running().await;
    assert_eq!(hub.get(&job.id).await.status, JobStatus::Running);
    report.finished(Ok(4096)).await;
    let done = hub.get(&job.id).await;
    assert_eq!((done.status, done.progress), (JobStatus::Completed, 100));
    assert_eq!(
        job_data(&done),
        serde_json::json!({"session_id": "s1", "bytes": 4096, "content_type": "image/png"})
    );
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty, "nothing for the janitor");
}

#[actix::test]
async fn a_capture_job_that_fails_says_why() {
    let hub = Hub::start().await;
    let (job, _rx) = capture_job(hub.hub.clone(), hub.job().await);
    let report = Box::new(CaptureReport::new(job.clone()));
    assert!(job.accepted());

    report.finished(Err(Error::SessionClosed("page_crashed"))).await;
    let failed = hub.get(&job.id).await;
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(job_data(&failed)["error"]["code"], "page_crashed");
}

#[actix::test]
async fn the_janitor_fails_the_jobs_of_sessions_that_stopped() {
    let hub = Hub::start().await;
    let (job, rx) = capture_job(hub.hub.clone(), hub.job().await);
    let mut report = Box::new(CaptureReport::new(job.clone()));
    assert!(job.accepted());
    report.running().await;
    // the session stops: its future, holding the reporter, is dropped
    drop(report);
    let id = job.id.clone();
    drop(job);

    let janitor = CaptureJanitor { jobs: hub.hub.clone(), orphans: rx };
    tokio::time::timeout(WITHIN, janitor.run()).await.expect("ends once every sender is gone");
    let failed = hub.get(&id).await;
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(
        job_data(&failed),
        serde_json::json!({"session_id": "s1", "error": {
            "code": "session_closed",
            "message": "the session closed before the capture finished",
        }})
    );
}

/// A tenancy over a fresh SQLite store, a browser pool over the default `[browser]` config
/// (never asked: every call here is refused before it reaches the pool), and a tonic server
/// serving [`BrowserService`] behind [`TenantAuth`]; all go with it.
struct Fixture {
    tenancy: Tenancy,
    service: BrowserService,
    addr: std::net::SocketAddr,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Fixture {
    async fn start(configure: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::defaults();
        config.store.data_dir = dir.path().join("data");
        configure(&mut config);
        let registry = Registry::with_defaults();
        let tenancy =
            Tenancy::open(&config.store, &config.tenancy, registry.clone(), Duration::from_secs(5))
                .await
                .unwrap();
        let browsers = Browsers::new(config.browser.clone(), registry);
        let (service, _janitor) =
            BrowserService::new(browsers, tenancy.clone(), JobHubHandle::new());
        let api = TenantAuthLayer::new(tenancy.clone()).layer(service.clone().into_server());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tonic::transport::Server::builder()
            .add_service(api)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
        #[allow(clippy::disallowed_methods)] // test scaffolding: aborted when the fixture drops
        let server = tokio::spawn(async move { server.await.unwrap() });
        Self { tenancy, service, addr, server, _dir: dir }
    }

    async fn client(&self) -> BrowserClient<Channel> {
        BrowserClient::connect(format!("http://{}", self.addr)).await.unwrap()
    }

    /// Creates tenant `id` from its JSON registration (`POST /v1/tenants`) and returns a
    /// bearer token of it.
    async fn tenant(&self, registration: serde_json::Value) -> String {
        let new: NewTenant = serde_json::from_value(registration).unwrap();
        let id = TenantId::new(&new.id).unwrap();
        self.tenancy.create_tenant(new).await.unwrap();
        let new = NewToken { name: "ci".into(), expires_in: None };
        self.tenancy.issue_token(&id, new).await.unwrap().bearer
    }
}

fn as_tenant<T>(msg: T, bearer: &str) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert("authorization", format!("Bearer {bearer}").parse().unwrap());
    req
}

#[tokio::test]
async fn message_limits_come_from_the_browser_config() {
    let fx = Fixture::start(|c| {
        c.browser.max_request = "1KiB".parse().unwrap();
        c.browser.max_result = "1MiB".parse().unwrap();
    })
    .await;
    assert_eq!(fx.service.max_request(), 1024);
    assert_eq!(fx.service.max_response(), 1024 * 1024 + 64 * 1024);

    let mut client = fx.client().await;
    let token = fx.tenant(serde_json::json!({"id": "acme"})).await;
    let evaluate =
        |size: usize| pb::EvaluateRequest { expression: "x".repeat(size), ..Default::default() };
    let status = client.evaluate(as_tenant(evaluate(2048), &token)).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    // within the limit, it reaches the handler, which wants a session id
    let status = client.evaluate(as_tenant(evaluate(16), &token)).await.unwrap_err();
    assert_code(&status, Code::InvalidArgument, "bad_request: invalid `session_id`: ");
}

#[tokio::test]
async fn calls_are_refused_before_the_pool_when_they_must_be() {
    let fx = Fixture::start(|_| {}).await;
    let mut client = fx.client().await;

    let status = client.list_sessions(pb::ListSessionsRequest {}).await.unwrap_err();
    assert_code(&status, Code::Unauthenticated, "unauthenticated: ");

    let token = fx.tenant(serde_json::json!({"id": "acme"})).await;
    let nan = pb::CreateSessionRequest {
        viewport: Some(pb::Viewport { device_scale_factor: f64::NAN, ..Default::default() }),
        ..Default::default()
    };
    let status = client.create_session(as_tenant(nan, &token)).await.unwrap_err();
    assert_code(
        &status,
        Code::InvalidArgument,
        "bad_request: invalid `viewport.device_scale_factor`: ",
    );
    let ttl = pb::CreateSessionRequest { idle_ttl: Some(pb_duration(-1, 0)), ..Default::default() };
    let status = client.create_session(as_tenant(ttl, &token)).await.unwrap_err();
    assert_code(&status, Code::InvalidArgument, "bad_request: invalid `idle_ttl`: ");

    let shot = pb::ScreenshotRequest { as_job: true, ..Default::default() };
    let status = client.screenshot(as_tenant(shot, &token)).await.unwrap_err();
    assert_code(&status, Code::InvalidArgument, "bad_request: invalid `session_id`: ");
    let close = pb::ClosePageRequest { session_id: "s1".into(), page_id: String::new() };
    let status = client.close_page(as_tenant(close, &token)).await.unwrap_err();
    assert_code(&status, Code::InvalidArgument, "bad_request: invalid `page_id`: ");
    let take = pb::TakeJobResultRequest { session_id: "s1".into(), job_id: String::new() };
    let status = client.take_job_result(as_tenant(take, &token)).await.unwrap_err();
    assert_code(&status, Code::InvalidArgument, "bad_request: invalid `job_id`: ");
}

#[tokio::test]
async fn a_session_rate_of_zero_refuses_without_retry_advice() {
    let fx = Fixture::start(|_| {}).await;
    let mut client = fx.client().await;
    let token = fx.tenant(serde_json::json!({"id": "norate", "quotas": {"session_rate": 0}})).await;
    let status = client
        .create_session(as_tenant(pb::CreateSessionRequest::default(), &token))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.message(), "resource_exhausted: session_rate limit reached");
    assert!(status.metadata().get("retry-after").is_none(), "waiting cannot help");
}

#[tokio::test]
async fn the_scope_is_the_tenants_id_endpoint_and_page_quota() {
    let fx = Fixture::start(|_| {}).await;
    let token = fx
        .tenant(serde_json::json!({
            "id": "acme",
            "quotas": {"pages_per_session": 3},
            "browser_endpoint": "ws://10.0.0.5:9222/devtools/browser/x",
        }))
        .await;
    let ctx = fx.tenancy.authenticate(&token).await.unwrap();
    let scope = scope(&ctx);
    assert_eq!(&*scope.tenant, "acme");
    assert_eq!(scope.endpoint.as_deref(), Some("ws://10.0.0.5:9222/devtools/browser/x"));
    assert_eq!(scope.pages_per_session, 3);
    assert!(scope.policy.is_empty(), "no browser_allow: only the public internet");

    let token = fx.tenant(serde_json::json!({"id": "globex"})).await;
    let scope = super::scope(&fx.tenancy.authenticate(&token).await.unwrap());
    assert_eq!((&*scope.tenant, scope.endpoint.as_deref()), ("globex", None));
    assert_eq!(scope.pages_per_session, 5, "[tenancy.default_quotas] pages_per_session");
}
