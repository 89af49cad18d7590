//! The page operations, as plain async functions over a chromiumoxide [`Page`]: each runs under
//! its deadline ([`timed`]) and checks its result against `[browser] max_result`.

use std::time::Duration;

use base64::Engine as _;
use chromiumoxide::Page;
use chromiumoxide::cdp::browser_protocol::emulation::{
    SetDeviceMetricsOverrideParams, SetLocaleOverrideParams, SetTimezoneOverrideParams,
    SetUserAgentOverrideParams,
};
use chromiumoxide::cdp::browser_protocol::page::{
    CaptureScreenshotFormat, CaptureScreenshotParams, EventLifecycleEvent, NavigateParams,
    PrintToPdfParams, Viewport,
};
use chromiumoxide::cdp::js_protocol::runtime::EvaluateParams;
use chromiumoxide::error::CdpError;
use futures_util::StreamExt as _;
use steward_config::BrowserConfig;

use crate::cdp::{bounded, from_cdp, timed};
use crate::egress::Refusals;
use crate::policy::UrlPolicy;
use crate::stats::{BrowserStats, Op};
use crate::{
    Error, EvaluateRequest, ImageFormat, NavigateRequest, NavigateResult, PdfRequest, Result,
    ScreenshotRequest, SessionOptions, WaitUntil,
};

/// Viewport of a session that asks for none (browserless's default is 800×600; 1280×720 is
/// Puppeteer's and Playwright's common desktop choice).
pub(crate) const DEFAULT_WIDTH: u32 = 1280;
/// See [`DEFAULT_WIDTH`].
pub(crate) const DEFAULT_HEIGHT: u32 = 720;

/// The final URL, the main document's status (from its Navigation Timing entry,
/// `responseStatus`, Chromium 109+; 0 when there was none) and the title, in one round trip.
const LANDED_JS: &str = "(() => { const e = performance.getEntriesByType('navigation')[0]; \
    return { url: location.href, status: e && e.responseStatus ? e.responseStatus : 0, \
    title: document.title }; })()";

/// Applies a new page's emulation: viewport, user agent, locale and time zone. A locale or time
/// zone Chromium refuses is the caller's mistake, named as such.
pub(crate) async fn emulate(
    page: &Page,
    o: &SessionOptions,
    stats: &BrowserStats,
    t: Duration,
) -> Result<()> {
    let width = if o.width == 0 { DEFAULT_WIDTH } else { o.width };
    let height = if o.height == 0 { DEFAULT_HEIGHT } else { o.height };
    let scale = if o.scale_percent == 0 { 1.0 } else { f64::from(o.scale_percent) / 100.0 };
    let metrics =
        SetDeviceMetricsOverrideParams::new(i64::from(width), i64::from(height), scale, false);
    timed(stats, Op::Emulate, t, page.execute(metrics)).await?;
    if !o.user_agent.is_empty() {
        let ua = SetUserAgentOverrideParams::new(o.user_agent.clone());
        timed(stats, Op::Emulate, t, page.execute(ua)).await?;
    }
    if !o.locale.is_empty() {
        let locale = SetLocaleOverrideParams { locale: Some(o.locale.clone()) };
        timed(stats, Op::Emulate, t, page.execute(locale))
            .await
            .map_err(|e| refused("locale", e))?;
    }
    if !o.timezone.is_empty() {
        let tz = SetTimezoneOverrideParams::new(o.timezone.clone());
        timed(stats, Op::Emulate, t, page.execute(tz)).await.map_err(|e| refused("timezone", e))?;
    }
    Ok(())
}

fn refused(field: &str, e: Error) -> Error {
    match e {
        Error::Protocol(text) => Error::invalid(field, format!("chromium refused it: {text}")),
        other => other,
    }
}

fn stage(w: WaitUntil) -> &'static str {
    match w {
        WaitUntil::Load => "navigate (waiting for load)",
        WaitUntil::DomContentLoaded => "navigate (waiting for domcontentloaded)",
        WaitUntil::NetworkIdle => "navigate (waiting for networkidle)",
    }
}

/// Navigates and waits for `wait_until` (a `Page.lifecycleEvent` of the main frame for
/// `domcontentloaded` and `networkidle`; chromiumoxide's navigation tracking for `load`). The
/// final URL (after redirects) is checked against `policy` too: a refused one leaves the page
/// on `about:blank`. A navigation whose host the session's egress proxy refused meanwhile
/// (`refusals`) answers that refusal, whatever Chromium made of it.
pub(crate) async fn navigate(
    page: &Page,
    req: &NavigateRequest,
    policy: &UrlPolicy,
    refusals: Option<&Refusals>,
    stats: &BrowserStats,
    config: &BrowserConfig,
) -> Result<NavigateResult> {
    let after = crate::Browsers::deadline(req.timeout, config.navigate_timeout);
    let started = std::time::Instant::now();
    let host = url::Url::parse(&req.url).ok().and_then(|u| {
        u.host_str().map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
    });
    let refused = || {
        let r = refusals?.of(host.as_deref()?, started)?;
        Some(Error::PermissionDenied(format!("refused by the egress proxy: {}", r.message)))
    };
    // a permitted host the proxy could not reach: Chromium's own error, as without a proxy
    let unreachable = || {
        let error = refusals?.unreachable(host.as_deref()?, started)?;
        Some(Error::NavigationFailed(error.to_owned()))
    };
    let run = async {
        let main = page.mainframe().await?;
        let mut lifecycle = page.event_listener::<EventLifecycleEvent>().await?;
        let goto = page.goto(NavigateParams::new(req.url.clone()));
        tokio::pin!(goto);
        let wanted = match req.wait_until {
            WaitUntil::Load => None,
            WaitUntil::DomContentLoaded => Some("DOMContentLoaded"),
            WaitUntil::NetworkIdle => Some("networkIdle"),
        };
        let mut loaded = false;
        let mut seen = false;
        loop {
            tokio::select! {
                r = &mut goto, if !loaded => {
                    r?;
                    loaded = true;
                    if wanted.is_none() || seen { break; }
                }
                ev = lifecycle.next() => {
                    let Some(ev) = ev else { break };
                    let is_main = main.as_ref().is_none_or(|m| *m == ev.frame_id);
                    if is_main && Some(ev.name.as_str()) == wanted {
                        seen = true;
                        if loaded || req.wait_until == WaitUntil::DomContentLoaded { break; }
                    }
                }
            }
        }
        Ok::<_, CdpError>(())
    };
    let out = tokio::time::timeout(after, run).await;
    stats.cdp(Op::Navigate, started.elapsed(), out.is_err());
    let t = config.command_timeout;
    if let Some(e) = refused() {
        let _ = bounded(Op::Navigate, t, page.goto(NavigateParams::new("about:blank"))).await;
        return Err(e);
    }
    match out {
        Err(_) => return Err(Error::DeadlineExceeded { stage: stage(req.wait_until), after }),
        Ok(Err(e)) => return Err(unreachable().unwrap_or_else(|| from_cdp(Op::Navigate, e))),
        Ok(Ok(())) => {}
    }
    let landed = bounded(Op::Navigate, t, page.evaluate_expression(LANDED_JS)).await?;
    let field = |k: &str| landed.value().and_then(|v| v.get(k)).cloned();
    let url = field("url").and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    if let Err(e @ Error::PermissionDenied(_)) = policy.check(&url).await {
        let _ = bounded(Op::Navigate, t, page.goto(NavigateParams::new("about:blank"))).await;
        return Err(e);
    }
    let status =
        field("status").and_then(|v| v.as_u64()).and_then(|s| u32::try_from(s).ok()).unwrap_or(0);
    if matches!(status, 502 | 504)
        && let Some(e) = unreachable()
    {
        return Err(e);
    }
    let title = field("title").and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    Ok(NavigateResult { status, url, title })
}

/// The URL of Chromium's own error page (a failed navigation shows it).
const ERROR_PAGE: &str = "chrome-error://chromewebdata/";

/// Refuses to read a page that is somewhere `policy` forbids: a page may move by itself
/// (a script, a meta refresh, a timer) after `Navigate` checked where it went. Chromium's own
/// error page passes.
///
/// # Errors
/// [`Error::PermissionDenied`] naming where it is; [`Error::DeadlineExceeded`] (`content`).
pub(crate) async fn check_current(
    page: &Page,
    policy: &UrlPolicy,
    config: &BrowserConfig,
) -> Result<()> {
    let url = bounded(Op::Content, config.command_timeout, page.url()).await?;
    match url {
        Some(url) if url != ERROR_PAGE => policy.check(&url).await.map(|_| ()),
        _ => Ok(()),
    }
}

/// A screenshot: the viewport, a clip, or the whole page (`captureBeyondViewport`, without
/// chromiumoxide's device-metrics change, which it never undoes).
pub(crate) async fn screenshot(
    page: &Page,
    req: &ScreenshotRequest,
    stats: &BrowserStats,
    config: &BrowserConfig,
) -> Result<Vec<u8>> {
    let after = crate::Browsers::deadline(req.timeout, config.screenshot_timeout);
    let max_height = f64::from(config.max_screenshot_height);
    let run = async {
        let mut clip = req.clip.map(|c| Viewport {
            x: c.x,
            y: c.y,
            width: c.width,
            height: c.height,
            scale: 1.0,
        });
        if req.full_page && clip.is_none() {
            let metrics = page.layout_metrics().await?;
            let size = metrics.css_content_size;
            if size.height > max_height {
                return Ok(Err(Error::OutOfRange(format!(
                    "the page is {:.0}px tall; max_screenshot_height is {max_height:.0}px",
                    size.height
                ))));
            }
            clip = Some(Viewport {
                x: 0.0,
                y: 0.0,
                width: size.width,
                height: size.height,
                scale: 1.0,
            });
        }
        let (format, quality) = match req.format {
            ImageFormat::Png => (CaptureScreenshotFormat::Png, None),
            ImageFormat::Jpeg => (
                CaptureScreenshotFormat::Jpeg,
                Some(if req.quality == 0 { 80 } else { i64::from(req.quality) }),
            ),
        };
        let params = CaptureScreenshotParams {
            format: Some(format),
            quality,
            capture_beyond_viewport: Some(clip.is_some()),
            clip,
            ..CaptureScreenshotParams::default()
        };
        let shot = page.execute(params).await?;
        Ok(Ok(shot.result.data))
    };
    let data = timed(stats, Op::Screenshot, after, run).await??;
    decode(data.as_ref(), config)
}

/// A PDF of the page (`Page.printToPDF`).
pub(crate) async fn pdf(
    page: &Page,
    req: &PdfRequest,
    stats: &BrowserStats,
    config: &BrowserConfig,
) -> Result<Vec<u8>> {
    let after = crate::Browsers::deadline(req.timeout, config.screenshot_timeout);
    let params = PrintToPdfParams {
        landscape: Some(req.landscape),
        print_background: Some(req.print_background),
        ..PrintToPdfParams::default()
    };
    let out = timed(stats, Op::Pdf, after, page.execute(params)).await?;
    decode(out.result.data.as_ref(), config)
}

fn decode(b64: &[u8], config: &BrowserConfig) -> Result<Vec<u8>> {
    // base64 is 4/3 of the bytes: refuse before decoding what would be too big anyway
    let max = config.max_result.as_u64();
    if (b64.len() as u64) / 4 * 3 > max + 3 {
        return Err(too_large(max));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| Error::Protocol(format!("undecodable capture: {e}")))?;
    check_size(bytes.len(), config)?;
    Ok(bytes)
}

fn too_large(max: u64) -> Error {
    Error::OutOfRange(format!("the result is larger than max_result ({max} bytes)"))
}

fn check_size(len: usize, config: &BrowserConfig) -> Result<()> {
    let max = config.max_result.as_u64();
    if len as u64 > max { Err(too_large(max)) } else { Ok(()) }
}

/// Evaluates an expression (by value); the result as JSON text, `null` for `undefined`.
pub(crate) async fn evaluate(
    page: &Page,
    req: &EvaluateRequest,
    stats: &BrowserStats,
    config: &BrowserConfig,
) -> Result<String> {
    let after = crate::Browsers::deadline(req.timeout, config.evaluate_timeout);
    let params = EvaluateParams {
        expression: req.expression.clone(),
        await_promise: Some(req.await_promise),
        return_by_value: Some(true),
        user_gesture: Some(true),
        ..EvaluateParams::new(String::new())
    };
    let result = timed(stats, Op::Evaluate, after, page.evaluate_expression(params)).await?;
    let json = result.value().map_or_else(|| "null".to_owned(), serde_json::Value::to_string);
    check_size(json.len(), config)?;
    Ok(json)
}

/// The page's serialised HTML.
pub(crate) async fn content(
    page: &Page,
    stats: &BrowserStats,
    config: &BrowserConfig,
) -> Result<String> {
    let html = timed(stats, Op::Content, config.command_timeout, page.content()).await?;
    check_size(html.len(), config)?;
    Ok(html)
}
