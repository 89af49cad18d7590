//! The names Steward gives JetStream things, all derived from validated names
//! ([`crate::names`]: tenant ids `[a-z0-9-]`, topics and groups `[A-Za-z0-9_-]` segments joined by
//! dots, tags `[A-Za-z0-9_-]`).
//!
//! Stream and consumer names may not contain `.`, `*`, `>` or whitespace (nats-server
//! `isValidName`), and a topic must be one subject token, so every `.` of a topic or group becomes
//! `~`, a character no Steward name contains: the mapping is deterministic and collision-free.
//!
//! | thing | shape | example (tenant `acme`, topic `orders.eu`, group `billing`) |
//! |---|---|---|
//! | stream | `steward_<tenant>_<topic~>` | `steward_acme_orders~eu` |
//! | subject | `steward.<tenant>.<topic~>.<tag or ~>` | `steward.acme.orders~eu.priority` |
//! | stream subjects | `steward.<tenant>.<topic~>.*` | |
//! | durable consumer | `<group~>` (per stream) | `billing` |
//!
//! The tenant ends at the first `_` after `steward_` (tenant ids have none), so two
//! (tenant, topic) pairs never share a stream. Names are case-sensitive, as in Steward; the
//! JetStream file store puts each stream in a directory of its name, so the store must live on a
//! case-sensitive file system (any Linux one). The longest stream name is
//! `8 + 63 + 1 + 128 = 200` bytes, under the 255-byte file-name limit.

use crate::broker::{TagFilter, TopicKey};

/// First token of every subject Steward publishes to.
const SUBJECT_ROOT: &str = "steward";
/// The subject token of a message without a tag (tags cannot contain `~`).
pub(super) const NO_TAG: &str = "~";

fn undot(name: &str) -> String {
    name.replace('.', "~")
}

/// The stream holding `topic`.
pub(super) fn stream_name(topic: &TopicKey) -> String {
    format!("{}{}", tenant_stream_prefix(&topic.tenant), undot(&topic.topic))
}

/// The tenant of a Steward stream name (`steward_<tenant>_…`); `None` for other streams.
pub(super) fn tenant_of_stream(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(SUBJECT_ROOT)?.strip_prefix('_')?;
    let (tenant, _) = rest.split_once('_')?;
    (!tenant.is_empty()).then_some(tenant)
}

/// What a dead-letter stream's name ends with (the topic suffix, undotted).
pub(super) fn dead_letter_suffix() -> String {
    undot(crate::broker::DEAD_LETTER_SUFFIX)
}

/// What every stream name of `tenant` starts with.
pub(super) fn tenant_stream_prefix(tenant: &str) -> String {
    debug_assert!(!tenant.contains(['_', '.', '*', '>', ' ']), "tenant ids are [a-z0-9-]");
    format!("{SUBJECT_ROOT}_{tenant}_")
}

fn subject_base(topic: &TopicKey) -> String {
    format!("{SUBJECT_ROOT}.{}.{}", topic.tenant, undot(&topic.topic))
}

/// The one subject filter of `topic`'s stream.
pub(super) fn stream_subjects(topic: &TopicKey) -> String {
    format!("{}.*", subject_base(topic))
}

/// The subject a message of `topic` with `tag` is published to.
pub(super) fn subject(topic: &TopicKey, tag: Option<&str>) -> String {
    format!("{}.{}", subject_base(topic), tag.unwrap_or(NO_TAG))
}

/// The consumer filter subject of a group with `filter` on `topic`.
pub(super) fn filter_subject(topic: &TopicKey, filter: &TagFilter) -> String {
    match filter {
        TagFilter::All => stream_subjects(topic),
        TagFilter::Tag(tag) => subject(topic, Some(tag)),
    }
}

/// The durable consumer of `group` (consumers are per stream, so the group name alone is unique).
pub(super) fn consumer_name(group: &str) -> String {
    undot(group)
}

/// The tag carried by a message's `subject` (its last token).
pub(super) fn tag_of_subject(subject: &str) -> Option<String> {
    match subject.rsplit('.').next() {
        None | Some(NO_TAG) => None,
        Some(tag) => Some(tag.to_owned()),
    }
}
