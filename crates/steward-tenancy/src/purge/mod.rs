//! The token purge: a supervised `service` resource that deletes expired tokens from the store.
//!
//! Its deadline queue holds the earliest expiries, ordered (earliest first): loaded from the
//! store's `expires_at` index (`tenancy.purge_batch` at a time) and fed as tokens are issued on
//! this node. One actor timer is armed at the head of the queue (at most
//! `tenancy.purge_max_sleep` away, so tokens issued on other nodes sharing the store are picked
//! up). It never scans all tokens. Authentication refuses an expired token by itself; the purge
//! only removes the row.

mod actor;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use actix::WeakAddr;
use actix::prelude::*;
use steward_core::{ChildSpec, ResourceCtx, ResourceKind};

use crate::auth::TokenCache;
use crate::model::TokenId;
use crate::store::Store;

/// Tells the purge about a token issued on this node with an expiry.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct TokenIssued {
    pub(crate) id: TokenId,
    pub(crate) expires_at: SystemTime,
}

/// Where the running purge can be reached (a weak address, set when it starts), and its count
/// of purged tokens. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct PurgeLink {
    addr: Arc<Mutex<Option<WeakAddr<TokenPurge>>>>,
    purged: Arc<AtomicU64>,
}

impl PurgeLink {
    /// Hands a new expiry to the running purge without waiting (`try_send`); if it is not
    /// running or its mailbox is full, the next load from the store finds the token.
    pub(crate) fn issued(&self, id: TokenId, expires_at: SystemTime) {
        let addr = self.addr.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(addr) = addr.and_then(|a| a.upgrade()) {
            let _ = addr.try_send(TokenIssued { id, expires_at });
        }
    }

    /// Tokens purged since boot.
    pub(crate) fn purged(&self) -> u64 {
        self.purged.load(Ordering::Relaxed)
    }
}

/// What the purge's child spec builds each incarnation from.
#[derive(Clone)]
pub(crate) struct PurgeSpec {
    pub(crate) store: Store,
    pub(crate) cache: TokenCache,
    pub(crate) link: PurgeLink,
    pub(crate) batch: u32,
    pub(crate) max_sleep: Duration,
}

impl PurgeSpec {
    /// A permanent `service` child named `token-purge`.
    pub(crate) fn child_spec(self) -> ChildSpec {
        ChildSpec::new("token-purge", ResourceKind::Service, move |rcx| {
            Ok::<_, std::convert::Infallible>(TokenPurge {
                rcx,
                spec: self.clone(),
                queue: BTreeSet::new(),
                timer: None,
                busy: false,
            })
        })
    }
}

/// The purge actor.
pub(crate) struct TokenPurge {
    rcx: ResourceCtx,
    spec: PurgeSpec,
    /// The deadline queue: (expiry, token), earliest first; at most `2 * batch` entries.
    queue: BTreeSet<(SystemTime, TokenId)>,
    /// The one armed timer.
    timer: Option<SpawnHandle>,
    /// A store round trip is in flight (the timer is re-armed when it ends).
    busy: bool,
}
