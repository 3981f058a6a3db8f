//! TODO-module ingest
pub mod dedupe;
pub mod families;
pub mod file;
pub mod generator;
pub mod inject;
pub mod nats;
