//! Messages a browser actor receives.

use std::sync::Arc;

use actix::{Message, Recipient};
use chromiumoxide::Browser as Cdp;
use steward_core::ResourceId;

use crate::Result;

/// Waits until the browser is up (answered at once when it is). The CDP client on success.
#[derive(Message)]
#[rtype(result = "Result<Arc<Cdp>>")]
pub(crate) struct AwaitReady;

/// Answered once the browser's pool entry exists: actix runs `started` (which publishes it)
/// before any message. Placement waits for it under its lock, so that the next placement counts
/// a browser that was just started.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Published;

/// Chromium's own list of contexts and targets.
#[derive(Message)]
#[rtype(result = "Result<crate::stats::ChromiumView>")]
pub(crate) struct ListTargets;

/// Creates an incognito browser context for a session, after verifying the browser is live.
/// Answers the context id and the CDP client.
#[derive(Message)]
#[rtype(result = "Result<(String, Arc<Cdp>)>")]
pub(crate) struct CreateContext {
    pub(crate) session: ResourceId,
    pub(crate) lost: Recipient<BrowserLost>,
    /// The session's page target ids, read by the reconciler.
    pub(crate) pages: crate::shared::Pages,
    /// The session's egress proxy (`http://127.0.0.1:<port>`): every connection of the
    /// context goes through it, loopback included. `None` on a remote browser.
    pub(crate) proxy: Option<String>,
}

/// Disposes a session's context and verifies it is gone from Chromium's list.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub(crate) struct DisposeContext {
    pub(crate) context: String,
}

/// The one disconnect watch fired: the CDP connection's first error, its end, or a missed
/// heartbeat.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Disconnected {
    pub(crate) why: String,
}

/// Told to every session of a browser that disconnected or stopped.
#[derive(Message, Clone, Copy)]
#[rtype(result = "()")]
pub(crate) struct BrowserLost;
