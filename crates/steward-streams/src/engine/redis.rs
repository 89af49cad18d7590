//! The Redis engine (being written).
