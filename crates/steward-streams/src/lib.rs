//! Streams: a last-value cache with history and recovery (seed 003; Centrifugo's history and
//! recovery is the reference).
//!
//! It owns the [`stream`] resource (one actor per tenant and stream name, kind `stream`, a
//! temporary child of the `streams` dynamic supervisor): its store (the latest value per key,
//! the history ring, key TTLs, one timer at the earliest deadline), its subscribers and its
//! metrics, emitted synchronously from the actor; the [`engine`]s behind one trait (`memory`,
//! the default, and `redis` for more than one node); the [`Streams`] façade the edges call; and
//! the rendering of the WebSocket frames ([`frames`]).
//!
//! Seed 003's cache emitted its metrics from deferred callbacks that ran after the service was
//! destroyed. Here nothing a stream schedules outlives it: its one timer and any engine call in
//! flight belong to the actor's context and go with it, and its counters are plain atomics
//! updated in the actor's own turn.
//!
//! It must not know gRPC, actix-web or the socket crate: the edges hand it a [`Subscriber`] (a
//! socket's outbound queue, a `Watch` stream) and get a [`Subscription`] guard back.

pub mod engine;
mod error;
pub mod frames;
pub mod model;
mod service;
pub mod stats;
pub mod stream;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::{Error, Result};
pub use service::{Admit, AdmitGuard, Streams};
pub use stream::{Delivery, Subscriber, Subscription};
