//! Streams (foundation; the full crate docs come with the actor).

pub mod engine;
mod error;
pub mod model;

pub use error::{Error, Result};
