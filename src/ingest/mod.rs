//! TODO-module ingest
pub mod dedupe;
pub mod generator;
pub mod file;
