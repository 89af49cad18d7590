//! Messages a session actor receives.

use std::sync::Arc;

use actix::Message;

use crate::policy::UrlPolicy;
use crate::service::{Capture, JobReport};
use crate::{
    EvaluateRequest, NavigateRequest, NavigateResult, PdfRequest, Result, ScreenshotRequest,
    SessionInfo,
};

/// Answers once the session's context and first page are open (or why they could not be).
#[derive(Message)]
#[rtype(result = "Result<SessionInfo>")]
pub(crate) struct AwaitReady;

/// Its info; `touch` also extends the idle deadline (`KeepAlive`).
#[derive(Message)]
#[rtype(result = "Result<SessionInfo>")]
pub(crate) struct GetInfo {
    pub(crate) touch: bool,
}

/// `CloseSession`: stops the session (reason `client`).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Close;

/// Opens a page, within `limit` pages.
#[derive(Message)]
#[rtype(result = "Result<String>")]
pub(crate) struct NewPage {
    pub(crate) limit: u32,
}

/// Closes a page (not the last).
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub(crate) struct ClosePage {
    pub(crate) page: String,
}

/// One page operation.
pub(crate) enum PageOp {
    Navigate(NavigateRequest),
    Screenshot(ScreenshotRequest),
    Pdf(PdfRequest),
    Evaluate(EvaluateRequest),
    Content,
}

/// What a page operation returns.
pub(crate) enum PageOutput {
    Navigated(NavigateResult),
    Bytes(Vec<u8>),
    Text(String),
}

/// Runs a page operation on `page` (`None` = the default page), owned by the session: it is
/// dropped (cancelled) if the session stops first.
#[derive(Message)]
#[rtype(result = "Result<PageOutput>")]
pub(crate) struct RunOp {
    pub(crate) page: Option<String>,
    pub(crate) op: PageOp,
    /// The tenant's URL policy now: the session's egress decides with it from now on, and a
    /// read (content, evaluate, captures) is refused while the page is somewhere it forbids.
    pub(crate) policy: Arc<UrlPolicy>,
}

/// Runs a capture as a job owned by the session.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub(crate) struct SubmitJob {
    pub(crate) job: String,
    pub(crate) capture: Capture,
    pub(crate) report: Box<dyn JobReport>,
    /// As [`RunOp::policy`].
    pub(crate) policy: Arc<UrlPolicy>,
}

/// Takes a finished job's bytes.
#[derive(Message)]
#[rtype(result = "Result<(Vec<u8>, &'static str)>")]
pub(crate) struct TakeResult {
    pub(crate) job: String,
}

/// A page's renderer crashed (`Inspector.targetCrashed`).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PageCrashed;
