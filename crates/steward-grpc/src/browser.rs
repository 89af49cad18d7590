//! `steward.browser.v1.Browser` ([`BrowserService`]): the browser pool's gRPC face, called with
//! tenant API tokens (protocol: `docs/protocol/browser.md`). It turns the caller's
//! [`TenantContext`] into the [`TenantScope`] the pool knows (tenant id, remote endpoint,
//! `pages_per_session`, URL policy from the tenant's `browser_allow` list), takes one from the
//! tenant's `session_rate` and hands the pool an [`Admit`] closure that reserves a `sessions`
//! slot, converts wire types into the pool's ([`SessionOptions`], [`NavigateRequest`], …) and
//! back, and runs captures `as_job` through the job hub.
//!
//! Rules of its own: the wire's well-known types ([`crate::wkt`]), the viewport's
//! `device_scale_factor` (a finite 0.01–4.0, or 0), known enum values and required ids; every
//! other rule is [`Browsers`]'s.
//!
//! A capture job's outcome is reported by the session that runs it ([`JobReport`]). When the
//! session stops before reporting (it closed, crashed, or was stopped), the reporter is dropped
//! in synchronous code that cannot await the job hub: its `Drop` queues the job on a bounded
//! channel that the [`CaptureJanitor`] — a task owned by the gRPC listener's tracker — drains,
//! marking each job `failed` with code `session_closed`.
//!
//! [`Admit`]: steward_browser::Admit

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::json;
use steward_browser::policy::UrlPolicy;
use steward_browser::{
    AdmitGuard, Browsers, Capture, Clip, Error, EvaluateRequest, ImageFormat, JobReport,
    NavigateRequest, PdfRequest, ScreenshotRequest, SessionInfo, SessionOptions, TenantScope,
    WaitUntil,
};
use steward_core::ResourceKind;
use steward_proto::browser::v1 as pb;
use steward_proto::browser::v1::browser_server::{Browser as BrowserRpc, BrowserServer};
use steward_proto::prost::bytes::Bytes;
use steward_socket::jobs::{JobHubHandle, JobId, JobPatch, JobStatus};
use steward_tenancy::{Tenancy, TenantContext};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::error::{status_from_browser, status_from_jobs};
use crate::tenant_of;
use crate::wkt;

/// Job kind of a screenshot run `as_job`.
pub const SCREENSHOT_JOB_KIND: &str = "browser.screenshot";

/// Job kind of a PDF run `as_job`.
pub const PDF_JOB_KIND: &str = "browser.pdf";

/// What a response may hold beyond `[browser] max_result`: the `CaptureResponse` fields around
/// the bytes, with room to spare.
const RESPONSE_OVERHEAD: usize = 64 * 1024;

/// Capture jobs whose reporter was dropped that may wait for the [`CaptureJanitor`]. A session
/// holds at most 4 jobs, so this covers 256 sessions stopping at once; beyond, a job stays
/// `running` until the hub restarts (logged).
const ORPHAN_BUFFER: usize = 1024;

/// The largest `device_scale_factor`: the pool's limit (`SessionOptions::scale_percent` ≤ 400),
/// checked here on the wire's `double` so that a NaN or an infinity never reaches the rounding.
const MAX_SCALE: f64 = 4.0;

/// `steward.browser.v1.Browser`: the calling tenant's browser sessions, through the
/// [`Browsers`] handle. Serve it behind [`TenantAuth`](crate::TenantAuth), which supplies the
/// caller, with the message size limits of [`BrowserService::into_server`], and run its
/// [`CaptureJanitor`] beside it.
#[derive(Clone)]
pub struct BrowserService {
    browsers: Browsers,
    tenancy: Tenancy,
    jobs: JobHubHandle,
    orphans: mpsc::Sender<Orphan>,
}

impl BrowserService {
    /// One slot of the caller's `jobs` quota, for a capture job (held until it finishes).
    ///
    /// # Errors
    /// `RESOURCE_EXHAUSTED` naming the quota.
    fn job_slot(&self, ctx: &TenantContext) -> Result<steward_socket::jobs::JobHold, Status> {
        let slot = self.tenancy.reserve(ctx, steward_tenancy::QuotaKind::Jobs);
        Ok(Box::new(slot.map_err(|e| crate::error::status_from_tenancy(&e))?))
    }

    /// A service over the pool `browsers`; `tenancy` takes session-rate tokens and admits
    /// sessions against the caller's quotas; `jobs` holds the jobs of captures run `as_job`.
    /// The returned [`CaptureJanitor`] must run for as long as the service serves (the listener
    /// spawns it on its tracker); without it, jobs whose session stopped stay `running`.
    #[must_use]
    pub fn new(browsers: Browsers, tenancy: Tenancy, jobs: JobHubHandle) -> (Self, CaptureJanitor) {
        let (orphans, rx) = mpsc::channel(ORPHAN_BUFFER);
        let janitor = CaptureJanitor { jobs: jobs.clone(), orphans: rx };
        (Self { browsers, tenancy, jobs, orphans }, janitor)
    }

    /// Largest encoded request, in bytes: `[browser] max_request`.
    #[must_use]
    pub fn max_request(&self) -> usize {
        byte_limit(self.browsers.config().max_request.as_u64())
    }

    /// Largest encoded response, in bytes: `[browser] max_result` plus 64 KiB for the fields
    /// around a capture.
    #[must_use]
    pub fn max_response(&self) -> usize {
        byte_limit(self.browsers.config().max_result.as_u64()).saturating_add(RESPONSE_OVERHEAD)
    }

    /// The tonic server of this service, decoding requests of at most
    /// [`BrowserService::max_request`] bytes (a bigger one fails with `OUT_OF_RANGE` before a
    /// handler runs: tonic's decoder refuses it) and encoding responses of at most
    /// [`BrowserService::max_response`].
    #[must_use]
    pub fn into_server(self) -> BrowserServer<Self> {
        let (request, response) = (self.max_request(), self.max_response());
        BrowserServer::new(self)
            .max_decoding_message_size(request)
            .max_encoding_message_size(response)
    }
}

fn byte_limit(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the pool needs to know of the caller: its id, remote endpoint, `pages_per_session` and
/// URL policy. An allow-list that does not parse (it is validated when set, so only a stored
/// value from an older rule can fail) counts as empty — only the public internet — and is
/// logged.
pub(crate) fn scope(ctx: &TenantContext) -> TenantScope {
    let tenant = ctx.tenant();
    let policy = UrlPolicy::new(&tenant.browser_allow).unwrap_or_else(|e| {
        tracing::warn!(
            tenant = %tenant.id,
            error = %e,
            "the tenant's browser_allow list does not parse; using an empty one"
        );
        UrlPolicy::default()
    });
    TenantScope {
        tenant: ctx.tenant_id().as_arc().clone(),
        endpoint: tenant.browser_endpoint.clone(),
        pages_per_session: u32::try_from(ctx.quotas().pages_per_session).unwrap_or(u32::MAX),
        policy: Arc::new(policy),
    }
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::InvalidArgument { field: field.into(), reason: reason.into() }
}

fn bad_field(e: wkt::BadField) -> Error {
    invalid(e.field, e.reason)
}

/// `id` of request field `field`, which must not be empty.
fn required(field: &str, id: String) -> Result<String, Error> {
    if id.is_empty() { Err(invalid(field, "is required")) } else { Ok(id) }
}

/// The page of a request: `None` (the default page) for the empty string.
fn page(page_id: String) -> Option<String> {
    (!page_id.is_empty()).then_some(page_id)
}

/// An optional `google.protobuf.Duration` of request field `field`: unset and zero are `None`
/// (the configured value).
fn optional_duration(
    field: &str,
    d: Option<&prost_types::Duration>,
) -> Result<Option<Duration>, Error> {
    let d = d.map(|d| wkt::duration_from_pb(field, d)).transpose().map_err(bad_field)?;
    Ok(d.filter(|d| !d.is_zero()))
}

/// `viewport.device_scale_factor` in hundredths (100 = 1.0), rounded; 0 is the default.
///
/// Refused: NaN, infinities, negatives, above 4.0, and positives that round to 0 (below 0.005,
/// which would silently mean the default).
pub(crate) fn scale_percent(factor: f64) -> Result<u32, Error> {
    const FIELD: &str = "viewport.device_scale_factor";
    if !factor.is_finite() {
        return Err(invalid(FIELD, "must be a finite number"));
    }
    if factor < 0.0 {
        return Err(invalid(FIELD, "must not be negative"));
    }
    if factor > MAX_SCALE {
        return Err(invalid(FIELD, format!("must be at most {MAX_SCALE}")));
    }
    // 0 ≤ factor × 100 ≤ 400: the cast is exact after rounding
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let percent = (factor * 100.0).round() as u32;
    if percent == 0 && factor > 0.0 {
        return Err(invalid(FIELD, "must be at least 0.01, or 0 for the default (1.0)"));
    }
    Ok(percent)
}

/// The options of a `CreateSession` request.
///
/// # Errors
/// `InvalidArgument` naming `viewport.device_scale_factor`, `idle_ttl` or `max_lifetime`.
pub(crate) fn session_options(req: pb::CreateSessionRequest) -> Result<SessionOptions, Error> {
    let viewport = req.viewport.unwrap_or_default();
    Ok(SessionOptions {
        width: viewport.width,
        height: viewport.height,
        scale_percent: scale_percent(viewport.device_scale_factor)?,
        user_agent: req.user_agent,
        locale: req.locale,
        timezone: req.timezone,
        idle_ttl: optional_duration("idle_ttl", req.idle_ttl.as_ref())?,
        max_lifetime: optional_duration("max_lifetime", req.max_lifetime.as_ref())?,
    })
}

/// A session on the wire.
pub(crate) fn session_to_pb(info: SessionInfo) -> pb::Session {
    pb::Session {
        id: info.id,
        created_at: Some(info.created_at.into()),
        expires_at: Some(info.expires_at.into()),
        max_lifetime_at: Some(info.max_lifetime_at.into()),
        pages: info.pages,
    }
}

fn wait_until(value: i32) -> Result<WaitUntil, Error> {
    match pb::WaitUntil::try_from(value) {
        Ok(pb::WaitUntil::Unspecified | pb::WaitUntil::Load) => Ok(WaitUntil::Load),
        Ok(pb::WaitUntil::DomContentLoaded) => Ok(WaitUntil::DomContentLoaded),
        Ok(pb::WaitUntil::NetworkIdle) => Ok(WaitUntil::NetworkIdle),
        Err(_) => Err(invalid("wait_until", format!("{value} is not a known WaitUntil"))),
    }
}

fn image_format(value: i32) -> Result<ImageFormat, Error> {
    match pb::ImageFormat::try_from(value) {
        Ok(pb::ImageFormat::Unspecified | pb::ImageFormat::Png) => Ok(ImageFormat::Png),
        Ok(pb::ImageFormat::Jpeg) => Ok(ImageFormat::Jpeg),
        Err(_) => Err(invalid("format", format!("{value} is not a known ImageFormat"))),
    }
}

/// The `Content-Type` of a screenshot in `format`.
fn image_content_type(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "image/png",
        ImageFormat::Jpeg => "image/jpeg",
    }
}

const PDF_CONTENT_TYPE: &str = "application/pdf";

/// A clip (its rules are the pool's).
fn clip(c: pb::Clip) -> Clip {
    Clip { x: c.x, y: c.y, width: c.width, height: c.height }
}

/// The session and request of a `Navigate` call.
pub(crate) fn navigate_request(
    req: pb::NavigateRequest,
) -> Result<(String, NavigateRequest), Error> {
    let session = required("session_id", req.session_id)?;
    Ok((
        session,
        NavigateRequest {
            url: req.url,
            wait_until: wait_until(req.wait_until)?,
            timeout: optional_duration("timeout", req.timeout.as_ref())?,
            page: page(req.page_id),
        },
    ))
}

/// The session and request of a `Screenshot` call, and whether to run it as a job.
pub(crate) fn screenshot_request(
    req: pb::ScreenshotRequest,
) -> Result<(String, ScreenshotRequest, bool), Error> {
    let session = required("session_id", req.session_id)?;
    Ok((
        session,
        ScreenshotRequest {
            format: image_format(req.format)?,
            quality: req.quality,
            full_page: req.full_page,
            clip: req.clip.map(clip),
            timeout: optional_duration("timeout", req.timeout.as_ref())?,
            page: page(req.page_id),
        },
        req.as_job,
    ))
}

/// The session and request of a `Pdf` call, and whether to run it as a job.
pub(crate) fn pdf_request(req: pb::PdfRequest) -> Result<(String, PdfRequest, bool), Error> {
    let session = required("session_id", req.session_id)?;
    Ok((
        session,
        PdfRequest {
            landscape: req.landscape,
            print_background: req.print_background,
            timeout: optional_duration("timeout", req.timeout.as_ref())?,
            page: page(req.page_id),
        },
        req.as_job,
    ))
}

/// The session and request of an `Evaluate` call.
pub(crate) fn evaluate_request(
    req: pb::EvaluateRequest,
) -> Result<(String, EvaluateRequest), Error> {
    let session = required("session_id", req.session_id)?;
    Ok((
        session,
        EvaluateRequest {
            expression: req.expression,
            await_promise: req.await_promise,
            timeout: optional_duration("timeout", req.timeout.as_ref())?,
            page: page(req.page_id),
        },
    ))
}

/// What a refusal of the tenant's ledger is to the browser front door: a quota refusal is the
/// pool's [`Error::ResourceExhausted`] naming the quota (`sessions`, `session_rate`) with the
/// ledger's retry advice (none when the quota is 0); anything else is a status of its own —
/// `FAILED_PRECONDITION` while the tenant is being deleted (retrying cannot help), `INTERNAL`
/// otherwise (the ledger fails in no other way).
pub(crate) fn ledger_refusal(e: &steward_tenancy::Error) -> Result<Error, Status> {
    use steward_tenancy::Error as E;
    match e {
        E::QuotaExceeded { quota, retry_after, .. } => {
            Ok(Error::ResourceExhausted { quota: quota.as_str(), retry_after: *retry_after })
        }
        E::NotFound(_) => {
            Err(Status::failed_precondition("failed_precondition: the tenant is being deleted"))
        }
        other => {
            tracing::error!(error = %other, "quota admission of a browser session failed");
            Err(Status::internal(format!("internal: quota admission failed: {other}")))
        }
    }
}

fn ledger_status(e: &steward_tenancy::Error) -> Status {
    ledger_refusal(e).map_or_else(|status| status, |e| status_from_browser(&e))
}

fn status(e: &Error) -> Status {
    status_from_browser(e)
}

fn capture_response(data: Vec<u8>, content_type: &str, job_id: String) -> pb::CaptureResponse {
    pb::CaptureResponse { data: Bytes::from(data), content_type: content_type.to_owned(), job_id }
}

#[tonic::async_trait]
impl BrowserRpc for BrowserService {
    async fn create_session(
        &self,
        req: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let ctx = tenant_of(&req)?.clone();
        // a malformed request costs no rate token
        let options = session_options(req.into_inner()).map_err(|e| status(&e))?;
        self.tenancy
            .ledger()
            .take_session_rate(ctx.tenant_id(), ctx.quotas())
            .map_err(|e| ledger_status(&e))?;
        let scope = scope(&ctx);
        // a refusal the pool's errors cannot say (the tenant is being deleted) ends the call
        // with its own status, kept here
        let refused: Mutex<Option<Status>> = Mutex::new(None);
        let admit = || match self.tenancy.admit(&ctx, ResourceKind::Session) {
            Ok(reservation) => Ok(Box::new(reservation) as AdmitGuard),
            Err(e) => match ledger_refusal(&e) {
                Ok(exhausted) => Err(exhausted),
                Err(status) => {
                    *lock(&refused) = Some(status);
                    Err(invalid("tenant", "refused by the quota ledger"))
                }
            },
        };
        match self.browsers.create_session(&scope, options, &admit).await {
            Ok(info) => Ok(Response::new(session_to_pb(info))),
            Err(e) => Err(lock(&refused).take().unwrap_or_else(|| status(&e))),
        }
    }

    async fn get_session(
        &self,
        req: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let tenant = tenant_of(&req)?.tenant_id().clone();
        let id = required("session_id", req.into_inner().session_id).map_err(|e| status(&e))?;
        let info = self.browsers.session(tenant.as_str(), &id).await.map_err(|e| status(&e))?;
        Ok(Response::new(session_to_pb(info)))
    }

    async fn list_sessions(
        &self,
        req: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let tenant = tenant_of(&req)?.tenant_id().clone();
        let sessions = self.browsers.sessions(tenant.as_str()).await;
        let sessions = sessions.into_iter().map(session_to_pb).collect();
        Ok(Response::new(pb::ListSessionsResponse { sessions }))
    }

    async fn close_session(
        &self,
        req: Request<pb::CloseSessionRequest>,
    ) -> Result<Response<pb::CloseSessionResponse>, Status> {
        let tenant = tenant_of(&req)?.tenant_id().clone();
        let id = required("session_id", req.into_inner().session_id).map_err(|e| status(&e))?;
        self.browsers.close_session(tenant.as_str(), &id).await.map_err(|e| status(&e))?;
        Ok(Response::new(pb::CloseSessionResponse {}))
    }

    async fn keep_alive(
        &self,
        req: Request<pb::KeepAliveRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let tenant = tenant_of(&req)?.tenant_id().clone();
        let id = required("session_id", req.into_inner().session_id).map_err(|e| status(&e))?;
        let info = self.browsers.keep_alive(tenant.as_str(), &id).await.map_err(|e| status(&e))?;
        Ok(Response::new(session_to_pb(info)))
    }

    async fn new_page(
        &self,
        req: Request<pb::NewPageRequest>,
    ) -> Result<Response<pb::Page>, Status> {
        let scope = scope(tenant_of(&req)?);
        let id = required("session_id", req.into_inner().session_id).map_err(|e| status(&e))?;
        let page_id = self.browsers.new_page(&scope, &id).await.map_err(|e| status(&e))?;
        Ok(Response::new(pb::Page { page_id }))
    }

    async fn close_page(
        &self,
        req: Request<pb::ClosePageRequest>,
    ) -> Result<Response<pb::ClosePageResponse>, Status> {
        let tenant = tenant_of(&req)?.tenant_id().clone();
        let pb::ClosePageRequest { session_id, page_id } = req.into_inner();
        let id = required("session_id", session_id).map_err(|e| status(&e))?;
        let page = required("page_id", page_id).map_err(|e| status(&e))?;
        self.browsers.close_page(tenant.as_str(), &id, &page).await.map_err(|e| status(&e))?;
        Ok(Response::new(pb::ClosePageResponse {}))
    }

    async fn navigate(
        &self,
        req: Request<pb::NavigateRequest>,
    ) -> Result<Response<pb::NavigateResponse>, Status> {
        let scope = scope(tenant_of(&req)?);
        let (id, navigate) = navigate_request(req.into_inner()).map_err(|e| status(&e))?;
        let result = self.browsers.navigate(&scope, &id, navigate).await.map_err(|e| status(&e))?;
        Ok(Response::new(pb::NavigateResponse {
            status: result.status,
            url: result.url,
            title: result.title,
        }))
    }

    async fn screenshot(
        &self,
        req: Request<pb::ScreenshotRequest>,
    ) -> Result<Response<pb::CaptureResponse>, Status> {
        let ctx = tenant_of(&req)?.clone();
        let scope = scope(&ctx);
        let (id, shot, as_job) = screenshot_request(req.into_inner()).map_err(|e| status(&e))?;
        let content_type = image_content_type(shot.format);
        if as_job {
            let capture = Capture::Screenshot(shot);
            let hold = self.job_slot(&ctx)?;
            let job =
                self.submit(&scope, id, capture, SCREENSHOT_JOB_KIND, content_type, hold).await?;
            return Ok(Response::new(job));
        }
        let data = self.browsers.screenshot(&scope, &id, shot).await.map_err(|e| status(&e))?;
        Ok(Response::new(capture_response(data, content_type, String::new())))
    }

    async fn pdf(
        &self,
        req: Request<pb::PdfRequest>,
    ) -> Result<Response<pb::CaptureResponse>, Status> {
        let ctx = tenant_of(&req)?.clone();
        let scope = scope(&ctx);
        let (id, pdf, as_job) = pdf_request(req.into_inner()).map_err(|e| status(&e))?;
        if as_job {
            let capture = Capture::Pdf(pdf);
            let hold = self.job_slot(&ctx)?;
            let job =
                self.submit(&scope, id, capture, PDF_JOB_KIND, PDF_CONTENT_TYPE, hold).await?;
            return Ok(Response::new(job));
        }
        let data = self.browsers.pdf(&scope, &id, pdf).await.map_err(|e| status(&e))?;
        Ok(Response::new(capture_response(data, PDF_CONTENT_TYPE, String::new())))
    }

    async fn evaluate(
        &self,
        req: Request<pb::EvaluateRequest>,
    ) -> Result<Response<pb::EvaluateResponse>, Status> {
        let scope = scope(tenant_of(&req)?);
        let (id, evaluate) = evaluate_request(req.into_inner()).map_err(|e| status(&e))?;
        let json = self.browsers.evaluate(&scope, &id, evaluate).await.map_err(|e| status(&e))?;
        Ok(Response::new(pb::EvaluateResponse { json }))
    }

    async fn content(
        &self,
        req: Request<pb::ContentRequest>,
    ) -> Result<Response<pb::ContentResponse>, Status> {
        let scope = scope(tenant_of(&req)?);
        let pb::ContentRequest { session_id, page_id } = req.into_inner();
        let id = required("session_id", session_id).map_err(|e| status(&e))?;
        let html =
            self.browsers.content(&scope, &id, page(page_id)).await.map_err(|e| status(&e))?;
        Ok(Response::new(pb::ContentResponse { html }))
    }

    async fn take_job_result(
        &self,
        req: Request<pb::TakeJobResultRequest>,
    ) -> Result<Response<pb::CaptureResponse>, Status> {
        let tenant = tenant_of(&req)?.tenant_id().clone();
        let pb::TakeJobResultRequest { session_id, job_id } = req.into_inner();
        let id = required("session_id", session_id).map_err(|e| status(&e))?;
        let job = required("job_id", job_id).map_err(|e| status(&e))?;
        let (data, content_type) =
            self.browsers.take_result(tenant.as_str(), &id, &job).await.map_err(|e| status(&e))?;
        Ok(Response::new(capture_response(data, content_type, job)))
    }
}

impl BrowserService {
    /// Runs `capture` of session `session` as a job of `kind`: creates the job (`queued`, data
    /// `{"session_id"}`), submits the capture with a [`CaptureReport`], and answers the job's
    /// id. A capture the session refuses marks the job `failed` and answers the refusal; one
    /// whose session stopped before this call saw it accepted marks it `failed`
    /// (`session_closed`) and still answers the id. A call dropped before it answered (its
    /// client went away) leaves the job to the reporter or the janitor, never `queued` or
    /// `running` for good.
    #[allow(clippy::too_many_arguments)] // one call site per capture kind; all are needed
    async fn submit(
        &self,
        scope: &TenantScope,
        session: String,
        capture: Capture,
        kind: &str,
        content_type: &'static str,
        hold: steward_socket::jobs::JobHold,
    ) -> Result<pb::CaptureResponse, Status> {
        let tenant = &scope.tenant;
        let data = json!({ "session_id": session }).to_string();
        let created =
            self.jobs.create_held(tenant.clone(), kind.to_owned(), Some(data), hold).await;
        let job_id = created.map_err(|e| status_from_jobs(&e))?.id;
        let job = Arc::new(CaptureJob {
            jobs: self.jobs.clone(),
            tenant: tenant.clone(),
            id: job_id.clone(),
            session: session.clone(),
            content_type,
            state: AtomicU8::new(SUBMITTING),
            orphans: self.orphans.clone(),
        });
        let report = Box::new(CaptureReport::new(job.clone()));
        let answering = Answering(Some(job.clone()));
        let submitted = self
            .browsers
            .submit_capture(scope, &session, job_id.to_string(), capture, report)
            .await;
        let answer = match submitted {
            Ok(()) => {
                if !job.accepted() {
                    job.report(session_closed(&session)).await;
                }
                Ok(pb::CaptureResponse { job_id: job_id.to_string(), ..Default::default() })
            }
            Err(e) => {
                job.refused();
                job.report(failed(&session, &e)).await;
                Err(status(&e))
            }
        };
        answering.disarm();
        answer
    }
}

/// [`CaptureJob::state`]: `submit_capture` has not answered yet.
///
/// Who marks a job whose outcome the session never reports (its reporter dropped unreported):
/// the submitting call while it runs (`SUBMITTING` → `DROPPED`, or `REFUSED`), the
/// [`CaptureJanitor`] once the call has seen the capture accepted (`ACCEPTED`) or has gone away
/// ([`CaptureJob::abandoned`]). Exactly one of them does, whatever the interleaving: each
/// transition is one atomic operation on `state`.
const SUBMITTING: u8 = 0;
/// The session took the capture and the edge knows it: a reporter dropped unreported is the
/// [`CaptureJanitor`]'s to mark.
const ACCEPTED: u8 = 1;
/// The session refused the capture: the edge marks the job.
const REFUSED: u8 = 2;
/// The reporter was dropped unreported before the edge knew the capture was accepted: the edge
/// marks the job.
const DROPPED: u8 = 3;

/// One capture job, shared by its reporter and the call that submitted it.
pub(crate) struct CaptureJob {
    jobs: JobHubHandle,
    tenant: Arc<str>,
    id: JobId,
    /// The session running it.
    session: String,
    /// `Content-Type` of its result.
    content_type: &'static str,
    /// [`SUBMITTING`], [`ACCEPTED`], [`REFUSED`] or [`DROPPED`]: who marks the job when its
    /// reporter is dropped unreported.
    state: AtomicU8,
    orphans: mpsc::Sender<Orphan>,
}

impl CaptureJob {
    /// The submitting call saw the capture accepted; `false` when the reporter was dropped
    /// before (the call then marks the job).
    fn accepted(&self) -> bool {
        self.state
            .compare_exchange(SUBMITTING, ACCEPTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The session refused the capture: the submitting call marks the job.
    fn refused(&self) {
        self.state.store(REFUSED, Ordering::Release);
    }

    /// The reporter is gone without having reported an outcome: the job is marked `failed`
    /// (`session_closed`) by the submitting call if it has not answered yet, by the
    /// [`CaptureJanitor`] if it has, by nobody if the capture was refused (the call marks it).
    /// Never blocks.
    fn orphaned(&self) {
        let was =
            self.state.compare_exchange(SUBMITTING, DROPPED, Ordering::AcqRel, Ordering::Acquire);
        // SUBMITTING (now DROPPED) or REFUSED: the submitting call marks the job
        if was == Err(ACCEPTED) {
            self.queue_orphan();
        }
    }

    /// Queues the job for the [`CaptureJanitor`], which marks it `failed` (`session_closed`).
    fn queue_orphan(&self) {
        let orphan = Orphan {
            tenant: self.tenant.clone(),
            id: self.id.clone(),
            session: self.session.clone(),
        };
        if let Err(e) = self.orphans.try_send(orphan) {
            let why = match e {
                mpsc::error::TrySendError::Full(_) => "the janitor's queue is full",
                mpsc::error::TrySendError::Closed(_) => "the janitor is not running",
            };
            tracing::warn!(
                tenant = %self.tenant,
                job = %self.id,
                reason = why,
                "cannot mark a capture job of a closed session failed; it stays running"
            );
        }
    }

    /// The submitting call was dropped before it answered: if the capture's fate is still the
    /// session's (`submit_capture` had not answered), its reporter reports or is queued for the
    /// janitor as after an acceptance; otherwise (the reporter is gone, or the call was
    /// reporting a refusal) the job goes to the janitor now. Never blocks.
    fn abandoned(&self) {
        match self.state.swap(ACCEPTED, Ordering::AcqRel) {
            SUBMITTING | ACCEPTED => {}
            _ => self.queue_orphan(),
        }
    }

    /// Applies `patch` to the job; a job that cannot take it (cancelled by its tenant, evicted,
    /// the hub restarted) is left as it is.
    async fn report(&self, patch: JobPatch) {
        report(&self.jobs, self.tenant.clone(), self.id.clone(), patch).await;
    }
}

/// Applies `patch` to job `id` of `tenant`, logging what the hub refuses.
async fn report(jobs: &JobHubHandle, tenant: Arc<str>, id: JobId, patch: JobPatch) {
    use steward_socket::Error as E;
    let status = patch.status;
    if let Err(e) = jobs.update(tenant.clone(), id.clone(), patch).await {
        match e {
            // its tenant cancelled it, it was evicted or its tenant deleted: nothing to do
            E::Finished { .. } | E::Transition { .. } | E::NotFound(_) => tracing::debug!(
                tenant = %tenant, job = %id, error = %e, "capture job not updated"
            ),
            _ => tracing::warn!(
                tenant = %tenant,
                job = %id,
                status = ?status,
                error = %e,
                "cannot report a capture job's status"
            ),
        }
    }
}

/// `running`.
fn running() -> JobPatch {
    JobPatch { status: Some(JobStatus::Running), ..JobPatch::default() }
}

/// `completed`, with the result's size and type.
pub(crate) fn completed(session: &str, bytes: usize, content_type: &str) -> JobPatch {
    let data = json!({ "session_id": session, "bytes": bytes, "content_type": content_type });
    JobPatch {
        status: Some(JobStatus::Completed),
        progress: Some(100),
        data: Some(data.to_string()),
    }
}

/// `failed` with the pool's error code and message.
pub(crate) fn failed(session: &str, e: &Error) -> JobPatch {
    failed_with(session, e.code(), &e.to_string())
}

/// `failed` with code `session_closed`: the session stopped before the capture finished.
pub(crate) fn session_closed(session: &str) -> JobPatch {
    failed_with(session, "session_closed", "the session closed before the capture finished")
}

fn failed_with(session: &str, code: &str, message: &str) -> JobPatch {
    let data = json!({ "session_id": session, "error": { "code": code, "message": message } });
    JobPatch { status: Some(JobStatus::Failed), progress: None, data: Some(data.to_string()) }
}

/// The [`JobReport`] of one capture job: `running`, then `completed` or `failed`. Dropped
/// without `finished`, or with its `finished` future dropped before the hub took the update,
/// it has the job marked `failed` (`session_closed`) without blocking ([`CaptureJob::orphaned`]).
pub(crate) struct CaptureReport {
    job: Arc<CaptureJob>,
    unreported: Unreported,
}

impl CaptureReport {
    pub(crate) fn new(job: Arc<CaptureJob>) -> Self {
        Self { unreported: Unreported(Some(job.clone())), job }
    }
}

impl JobReport for CaptureReport {
    fn running(&mut self) -> BoxFuture<'static, ()> {
        let job = self.job.clone();
        Box::pin(async move { job.report(running()).await })
    }

    fn finished(self: Box<Self>, result: steward_browser::Result<usize>) -> BoxFuture<'static, ()> {
        let Self { job, unreported } = *self;
        let patch = match result {
            Ok(bytes) => completed(&job.session, bytes, job.content_type),
            Err(e) => failed(&job.session, &e),
        };
        Box::pin(async move {
            job.report(patch).await;
            unreported.disarm();
        })
    }
}

/// Marks its job abandoned when dropped armed: the submitting call went away before answering.
struct Answering(Option<Arc<CaptureJob>>);

impl Answering {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        if let Some(job) = self.0.take() {
            job.abandoned();
        }
    }
}

/// Marks its job orphaned when dropped armed.
struct Unreported(Option<Arc<CaptureJob>>);

impl Unreported {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Unreported {
    fn drop(&mut self) {
        if let Some(job) = self.0.take() {
            job.orphaned();
        }
    }
}

/// A capture job whose session stopped before reporting its outcome.
#[derive(Debug)]
pub(crate) struct Orphan {
    tenant: Arc<str>,
    id: JobId,
    session: String,
}

/// Marks `failed` (code `session_closed`) the capture jobs whose session stopped before
/// reporting their outcome, as their reporters' `Drop` queues them (it cannot await the job
/// hub). Run [`CaptureJanitor::run`] for as long as its [`BrowserService`] serves, on a tracked
/// task: the gRPC listener does, on tonic's runtime.
pub struct CaptureJanitor {
    jobs: JobHubHandle,
    orphans: mpsc::Receiver<Orphan>,
}

impl CaptureJanitor {
    /// Marks each queued job, one at a time; returns when the service and every reporter are
    /// gone.
    pub async fn run(mut self) {
        while let Some(orphan) = self.orphans.recv().await {
            let Orphan { tenant, id, session } = orphan;
            report(&self.jobs, tenant, id, session_closed(&session)).await;
        }
    }
}

impl std::fmt::Debug for CaptureJanitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureJanitor").field("queued", &self.orphans.len()).finish()
    }
}

#[cfg(test)]
mod tests;
