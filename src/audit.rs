//! Audit records of every call that leaves the process for a remote service:
//! each LLM request and each Slack API call.
//!
//! Producers (the LLM summarizer, the Slack notifier) hand records to an
//! [`Audit`] sink and never wait on it: `record` must not block. The ClickHouse
//! store keeps them in audit tables; without it, [`MemoryAudit`] keeps the most
//! recent ones (for tests and `/metrics`-style inspection) and logs each one.
//! Everything in a record has already passed [`crate::redact`]: prompts and
//! responses are stored as sent and received, which is after redaction.

use std::collections::VecDeque;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// One chat-completions request and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LlmCall {
    /// Wall time the request was sent.
    pub at: DateTime<Utc>,
    /// The incident summarized.
    pub incident_id: String,
    /// Version id of the prompt used.
    pub prompt_version: String,
    /// Model name.
    pub model: String,
    /// Attempt number for this incident, 1-based (a retry with validation errors is 2).
    pub attempt: u32,
    /// The request's messages as sent (redacted), JSON.
    pub prompt: String,
    /// The response content as received (redacted), empty when none.
    pub response: String,
    /// `accepted`, `invalid`, `timeout`, `http_429`, `http_5xx`, `unavailable`,
    /// `refused_by_policy`, `circuit_open`, `budget_exhausted`, ...
    pub outcome: String,
    /// Why, for anything but `accepted` (validation errors, status), safe to store.
    pub detail: String,
    /// Time to the answer (or the failure).
    pub latency_ms: u64,
    /// Prompt tokens the endpoint reported (0 when unknown).
    pub prompt_tokens: u32,
    /// Completion tokens the endpoint reported (0 when unknown).
    pub completion_tokens: u32,
}

/// One Slack Web API call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlackPost {
    /// Wall time of the call.
    pub at: DateTime<Utc>,
    /// The incident it was about.
    pub incident_id: String,
    /// `chat.postMessage`, `chat.update`, `files.completeUploadExternal`, ...
    pub method: String,
    /// Channel id or name.
    pub channel: String,
    /// The message `ts` Slack answered (or the one updated), when any.
    pub ts: Option<String>,
    /// `ok`, `rate_limited`, `error:<slack error code>`, `unavailable`.
    pub status: String,
    /// Time to the answer.
    pub latency_ms: u64,
}

/// Any audit record.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// An LLM request.
    LlmCall(LlmCall),
    /// A Slack API call.
    SlackPost(SlackPost),
}

/// Where audit records go. `record` never blocks: a backend buffers.
pub trait Audit: Send + Sync {
    /// Keeps one record.
    fn record(&self, record: Record);
}

/// The embedded audit sink: logs every record (at debug) and keeps the newest
/// `capacity` in memory.
#[derive(Debug)]
pub struct MemoryAudit {
    capacity: usize,
    records: Mutex<VecDeque<Record>>,
}

impl MemoryAudit {
    /// Keeps the newest `capacity` records.
    pub fn new(capacity: usize) -> MemoryAudit {
        MemoryAudit {
            capacity: capacity.max(1),
            records: Mutex::new(VecDeque::new()),
        }
    }

    /// The records held, oldest first.
    pub fn records(&self) -> Vec<Record> {
        self.lock().iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Record>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for MemoryAudit {
    fn default() -> Self {
        MemoryAudit::new(10_000)
    }
}

impl Audit for MemoryAudit {
    fn record(&self, record: Record) {
        match &record {
            Record::LlmCall(c) => tracing::debug!(
                incident_id = %c.incident_id, outcome = %c.outcome, latency_ms = c.latency_ms,
                prompt_version = %c.prompt_version, "audit: llm call"
            ),
            Record::SlackPost(p) => tracing::debug!(
                incident_id = %p.incident_id, method = %p.method, status = %p.status,
                "audit: slack call"
            ),
        }
        let mut q = self.lock();
        if q.len() == self.capacity {
            q.pop_front();
        }
        q.push_back(record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(n: u32) -> Record {
        Record::SlackPost(SlackPost {
            at: DateTime::from_timestamp(n as i64, 0).unwrap(),
            incident_id: format!("inc_{n}"),
            method: "chat.postMessage".into(),
            channel: "C1".into(),
            ts: None,
            status: "ok".into(),
            latency_ms: 1,
        })
    }

    #[test]
    fn memory_audit_keeps_the_newest() {
        let a = MemoryAudit::new(2);
        for n in 0..3 {
            a.record(post(n));
        }
        assert_eq!(a.records(), vec![post(1), post(2)]);
    }
}
