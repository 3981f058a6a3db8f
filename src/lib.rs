//! faultline: streaming detection and root-cause localization of payment failures.
//!
//! # Layout
//!
//! The modules follow the order data flows through the daemon:
//!
//! - [`config`]: settings from a TOML file layered under `FAULTLINE_*` variables.
//! - [`event`]: the schema v1 event, its validation and the named rejection reasons.
//! - [`redact`]: the card-data boundary; every stage that lets text out goes through it.
//! - [`rules`]: rule files (YAML), their validation and the rules shipped in the binary.
//! - [`ruletest`]: `faultline rules test`, rule unit tests over synthetic series.
//! - [`ingest`]: sources of events: HTTP, NDJSON files (replay) and the demo generator.
//! - [`window`]: event-time cells of bucketed counters, the watermark and eviction.
//! - [`detect`]: baselines, statistical tests, false-alarm control and hysteresis.
//! - [`localize`]: multi-dimensional root-cause localization (also `faultline rca`).
//! - [`engine`]: ties window, detect and localize together per rule; pure and synchronous.
//! - [`incident`]: incident lifecycle: fingerprints, open / update / resolve.
//! - [`summarize`]: incident summaries: the deterministic template, and the guarded LLM.
//! - [`notify`]: where incidents go: stdout.
//! - [`store`]: where incidents are kept: memory, or ClickHouse (with events, aggregates, audit).
//! - [`api`]: the HTTP API (axum).
//! - [`app`]: building and running the daemon (`run`, `demo`).
//! - [`metrics`]: counters and gauges, rendered for Prometheus.
//! - [`pipeline`]: the async wiring of the stages for `run`, `demo` and `replay`.
//! - [`demo`]: `faultline demo`, the pipeline on generated traffic in accelerated time.
//! - [`eval`]: labelled scenarios scored against the incidents they produce.
//! - [`backtest`]: a rule set over recorded events, and the diff between two rule sets.
//! - [`cluster`]: replicas sharing a stream: pre-aggregated counts, the leased detector,
//!   notification claims.
//! - [`explain`]: why an element did or did not fire at one step (`faultline explain`).
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod audit;
pub mod backtest;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod detect;
pub mod engine;
pub mod eval;
pub mod event;
pub mod explain;
pub mod incident;
pub mod ingest;
pub mod localize;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod redact;
pub mod reload;
pub mod rules;
pub mod ruletest;
pub mod store;
pub mod summarize;
pub mod window;
