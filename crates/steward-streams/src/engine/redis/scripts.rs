//! The Lua scripts of the Redis engine: one per store operation, each atomic and touching the
//! keys of one stream only (one hash tag, so one Redis Cluster slot). `lua/common.lua` (meta,
//! Redis time, expiry of keys and history) is prepended to each; the headers of the `.lua` files
//! give their keys, arguments and answers. Sent with `EVALSHA`, loaded again after a Redis
//! restart (`redis::Script` answers `NOSCRIPT` by loading).

use std::sync::LazyLock;

use redis::Script;

macro_rules! script {
    ($file:literal) => {
        LazyLock::new(|| Script::new(concat!(include_str!("lua/common.lua"), include_str!($file))))
    };
}

/// Appends a publication (`lua/publish.lua`).
pub(super) static PUBLISH: LazyLock<Script> = script!("lua/publish.lua");
/// A subscriber's snapshot (`lua/snapshot.lua`).
pub(super) static SNAPSHOT: LazyLock<Script> = script!("lua/snapshot.lua");
/// A page of history (`lua/history.lua`).
pub(super) static HISTORY: LazyLock<Script> = script!("lua/history.lua");
/// Latest values (`lua/latest.lua`).
pub(super) static LATEST: LazyLock<Script> = script!("lua/latest.lua");
/// Removes a key's latest value (`lua/remove_key.lua`).
pub(super) static REMOVE_KEY: LazyLock<Script> = script!("lua/remove_key.lua");
/// What a stream holds (`lua/info.lua`).
pub(super) static INFO: LazyLock<Script> = script!("lua/info.lua");
