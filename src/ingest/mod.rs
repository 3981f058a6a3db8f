//! TODO-module ingest
pub mod dedupe;
pub mod file;
pub mod generator;
pub mod nats;
