//! Helpers shared by integration tests. Each test binary that declares
//! `mod common;` uses only part of them, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod clickhouse_server;
pub mod hostile;
pub mod http;
pub mod llm_stub;
pub mod nats_server;
pub mod server;
pub mod slack_stub;
