//! Incidents: the output shape (CONTRACT section 3) and their lifecycle.
//!
//! An incident's fingerprint is its rule plus its root cause's dimensions. While
//! an incident with a fingerprint is open, detections of that element (or of an
//! element overlapping it, when localization shifts a level between steps)
//! update it; nothing opens a second one.

mod episode;
mod lifecycle;

pub use episode::{CodeShare, Episode, Impact, Reading, StepCounts};
pub use lifecycle::{Change, Finding, IncidentManager, Transition};

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::rules::Severity;

/// Where an incident stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Firing, nobody has acknowledged it.
    Open,
    /// Firing, someone is on it.
    Acknowledged,
    /// Over.
    Resolved,
}

impl Status {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Acknowledged => "acknowledged",
            Status::Resolved => "resolved",
        }
    }
}

/// Who wrote the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SummarySource {
    /// The language model, validated.
    Llm,
    /// The deterministic template.
    Template,
}

/// One root-cause element and its evidence over the incident window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RootCause {
    /// The element: dimension name to value, exactly the element's dimensions.
    pub dims: BTreeMap<String, String>,
    /// Share of the rule's excess this element explains, 0..1.
    pub score: f64,
    /// Attempts (events) in the window.
    pub events: u64,
    /// Failures in the window (rate rules; 0 for volume rules).
    pub failures: u64,
    /// Failures expected from attempts x baseline rate.
    pub expected_failures: f64,
    /// failures / events.
    pub failure_rate: f64,
    /// The learned baseline failure rate.
    pub baseline_rate: f64,
    /// Volume rules: events expected in the window from the learned volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_events: Option<f64>,
}

/// A time range in event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TimeRange {
    /// Inclusive start.
    pub start: DateTime<Utc>,
    /// Exclusive end.
    pub end: DateTime<Utc>,
}

/// A link button.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Link {
    /// Text.
    pub title: String,
    /// Target.
    pub url: String,
}

/// The incident as every output shows it (CONTRACT section 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Incident {
    /// `inc_` followed by a stable hash of fingerprint and opening time.
    pub id: String,
    /// The rule that fired.
    pub rule: String,
    /// The event kind the rule watches.
    pub kind: String,
    /// Severity from the rule.
    pub severity: Severity,
    /// Lifecycle state.
    pub status: Status,
    /// Event time it opened.
    pub opened_at: DateTime<Utc>,
    /// Event time of the last change.
    pub updated_at: DateTime<Utc>,
    /// Event time it resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// Root causes, best first; the first is the incident's element.
    pub root_causes: Vec<RootCause>,
    /// The detection window of the latest evaluation.
    pub window: TimeRange,
    /// One-line title.
    pub title: String,
    /// Summary text.
    pub summary: String,
    /// Who wrote the summary.
    pub summary_source: SummarySource,
    /// Dashboard and runbook links, from the rule.
    pub links: Vec<Link>,
    /// The prompt version used, when an LLM wrote the summary.
    pub prompt_version: Option<String>,
    /// Pieces of the root causes and alternatives to them, best first (same
    /// shape as `root_causes`; not causes themselves).
    #[serde(default)]
    pub candidates: Vec<RootCause>,
    /// The episode's numbers and the incident's page (`began_at`, `current`,
    /// `peak`, `impact`, `error_codes`, `url`), top-level fields in JSON.
    #[serde(flatten)]
    pub episode: Episode,
}

impl Incident {
    /// The fingerprint: rule plus the root cause's dimensions.
    pub fn fingerprint(&self) -> String {
        fingerprint(
            &self.rule,
            self.root_causes
                .first()
                .map(|r| &r.dims)
                .unwrap_or(&BTreeMap::new()),
        )
    }
}

/// `rule{k=v,k=v}` with keys sorted.
pub fn fingerprint(rule: &str, dims: &BTreeMap<String, String>) -> String {
    let mut s = String::with_capacity(rule.len() + 32);
    s.push_str(rule);
    s.push('{');
    for (i, (k, v)) in dims.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(k);
        s.push('=');
        s.push_str(v);
    }
    s.push('}');
    s
}

/// One entry of an incident's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    /// When (event time for detections, wall time for people's actions).
    pub at: DateTime<Utc>,
    /// `opened`, `updated`, `severity_changed`, `acknowledged`, `resolved`, `posted`, ...
    pub what: String,
    /// Who: `faultline` or the API token's name.
    pub by: String,
    /// Details, free text from faultline (never from events).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// Failure rate (or volume) and its baseline at one evaluation step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SeriesPoint {
    /// Step end, event time.
    pub at: DateTime<Utc>,
    /// Attempts in the window.
    pub events: u64,
    /// Failures in the window.
    pub failures: u64,
    /// Observed failure rate (rate rules) or observed events (volume rules).
    pub value: f64,
    /// Baseline rate, or expected events.
    pub baseline: f64,
}

/// Epoch milliseconds to a UTC time (clamped to the representable range).
pub fn ts(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}
