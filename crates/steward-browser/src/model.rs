//! The shapes of session calls, as the edges hand them in and get them back. Limits are checked
//! by [`Browsers`](crate::Browsers) against `[browser]` config; units are CSS pixels and
//! [`Duration`]s.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::policy::UrlPolicy;

/// Who is asking, as far as this crate needs to know (it knows no tenancy; the edge resolves the
/// token): the tenant id, its limits and its URL allow-list.
#[derive(Debug, Clone)]
pub struct TenantScope {
    /// The tenant's id.
    pub tenant: Arc<str>,
    /// Its remote CDP endpoint (`ws://…` or `http://…`), if it registered one: its sessions go
    /// there instead of to a local Chromium.
    pub endpoint: Option<String>,
    /// Its `pages_per_session` quota.
    pub pages_per_session: u32,
    /// Its URL policy (the blocked ranges minus its allow-list).
    pub policy: Arc<UrlPolicy>,
}

/// `CreateSession`'s options. Zero values mean the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionOptions {
    /// Viewport width in CSS pixels; 0 = 1280. At most `[browser] max_viewport_width`.
    pub width: u32,
    /// Viewport height in CSS pixels; 0 = 720. At most `[browser] max_viewport_height`.
    pub height: u32,
    /// Device scale factor in hundredths (100 = 1.0); 0 = 100. At most 400.
    pub scale_percent: u32,
    /// User-agent override; empty = Chromium's own. At most 512 bytes.
    pub user_agent: String,
    /// Locale (ICU, `en-US`); empty = Chromium's. At most 35 bytes.
    pub locale: String,
    /// IANA time zone (`Europe/Berlin`); empty = the host's. At most 64 bytes.
    pub timezone: String,
    /// Idle TTL; `None` = `[browser] session_idle_ttl`. At most `session_max_lifetime`.
    pub idle_ttl: Option<Duration>,
    /// Longest life; `None` = `[browser] session_max_lifetime`, which is also its ceiling.
    pub max_lifetime: Option<Duration>,
}

/// One session as its tenant sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Its id (the registry's resource id of the session actor).
    pub id: String,
    /// When it was created.
    pub created_at: SystemTime,
    /// When it expires if nothing else happens: the earlier of its idle deadline and the end
    /// of its max lifetime.
    pub expires_at: SystemTime,
    /// When its max lifetime ends.
    pub max_lifetime_at: SystemTime,
    /// Open pages, the first being the session's default page.
    pub pages: Vec<String>,
    /// Id of the browser it lives on.
    pub browser: String,
}

/// When `Navigate` returns, as Puppeteer's `waitUntil`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WaitUntil {
    /// The `load` event (default).
    #[default]
    Load,
    /// `DOMContentLoaded`.
    DomContentLoaded,
    /// Chromium's `networkIdle` lifecycle event (no network activity for 500 ms), after load.
    NetworkIdle,
}

impl WaitUntil {
    /// Its name as a stage and in docs: `load`, `domcontentloaded`, `networkidle`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Load => "load",
            Self::DomContentLoaded => "domcontentloaded",
            Self::NetworkIdle => "networkidle",
        }
    }
}

/// `Navigate`'s request.
#[derive(Debug, Clone, Default)]
pub struct NavigateRequest {
    /// Absolute URL; checked against the tenant's [`UrlPolicy`].
    pub url: String,
    /// When to return.
    pub wait_until: WaitUntil,
    /// Deadline; `None` or above `[browser] navigate_timeout` = that.
    pub timeout: Option<Duration>,
    /// Page to use; `None` = the session's default page.
    pub page: Option<String>,
}

/// `Navigate`'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NavigateResult {
    /// HTTP status of the main document (0 when there was none, as for `about:blank`; Chromium
    /// reports 200 for a `data:` URL).
    pub status: u32,
    /// The URL after redirects.
    pub url: String,
    /// The document's title.
    pub title: String,
}

/// Screenshot image format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ImageFormat {
    /// PNG (default).
    #[default]
    Png,
    /// JPEG with `quality`.
    Jpeg,
}

/// A rectangle of the page, in CSS pixels.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Clip {
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width, > 0.
    pub width: f64,
    /// Height, > 0 and at most `[browser] max_screenshot_height`.
    pub height: f64,
}

/// `Screenshot`'s request.
#[derive(Debug, Clone, Default)]
pub struct ScreenshotRequest {
    /// Format.
    pub format: ImageFormat,
    /// JPEG quality 1–100; 0 = 80. Ignored for PNG.
    pub quality: u32,
    /// The whole scrollable page instead of the viewport (at most
    /// `[browser] max_screenshot_height` tall).
    pub full_page: bool,
    /// Only this rectangle.
    pub clip: Option<Clip>,
    /// Deadline; `None` or above `[browser] screenshot_timeout` = that.
    pub timeout: Option<Duration>,
    /// Page; `None` = the default page.
    pub page: Option<String>,
}

/// `Pdf`'s request.
#[derive(Debug, Clone, Default)]
pub struct PdfRequest {
    /// Landscape orientation.
    pub landscape: bool,
    /// Print background graphics.
    pub print_background: bool,
    /// Deadline; `None` or above `[browser] screenshot_timeout` = that.
    pub timeout: Option<Duration>,
    /// Page; `None` = the default page.
    pub page: Option<String>,
}

/// `Evaluate`'s request.
#[derive(Debug, Clone, Default)]
pub struct EvaluateRequest {
    /// A JavaScript expression, evaluated in the page's main world.
    pub expression: String,
    /// Wait for a returned promise to settle.
    pub await_promise: bool,
    /// Deadline; `None` or above `[browser] evaluate_timeout` = that.
    pub timeout: Option<Duration>,
    /// Page; `None` = the default page.
    pub page: Option<String>,
}

/// Why a session ended; the label of `steward_browser_sessions_closed_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// `CloseSession`.
    Client,
    /// Its idle TTL passed.
    Idle,
    /// Its max lifetime passed.
    MaxLifetime,
    /// Its browser disconnected or stopped.
    BrowserUnavailable,
    /// Its page crashed.
    PageCrashed,
    /// Stopped by an operator, tenant deletion or the system shutdown.
    Shutdown,
    /// It failed to start or hit an error.
    Error,
}

impl CloseReason {
    /// Every reason, in metric order.
    pub const ALL: [Self; 7] = [
        Self::Client,
        Self::Idle,
        Self::MaxLifetime,
        Self::BrowserUnavailable,
        Self::PageCrashed,
        Self::Shutdown,
        Self::Error,
    ];

    /// snake_case name, as a metric label and an error code.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Idle => "idle",
            Self::MaxLifetime => "max_lifetime",
            Self::BrowserUnavailable => "browser_unavailable",
            Self::PageCrashed => "page_crashed",
            Self::Shutdown => "shutdown",
            Self::Error => "error",
        }
    }
}
