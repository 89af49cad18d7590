//! Producers.
