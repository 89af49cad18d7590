//! The Redis engine (stub until the real one lands).

use std::time::Duration;

use super::{Engine, StreamLimits, StreamStore};
use crate::model::StreamRef;
use crate::{Error, Result};

/// The Redis engine.
#[derive(Debug)]
pub struct RedisEngine;

impl RedisEngine {
    /// Not built yet.
    ///
    /// # Errors
    /// Always.
    pub fn new(_url: &str, _timeout: Duration) -> Result<Self> {
        Err(Error::Unavailable("the redis engine is not built yet".into()))
    }
}

impl Engine for RedisEngine {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn open(&self, _stream: &StreamRef, limits: StreamLimits) -> Box<dyn StreamStore> {
        Box::new(super::memory::MemoryStore::new(limits))
    }
}
