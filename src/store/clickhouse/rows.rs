//! Row types of the ClickHouse tables, and conversions from and to the
//! crate's types.
//!
//! Times are kept twice where they are read by people and by code: a
//! `DateTime` column (seconds, for partitions and Grafana) and an `Int64` epoch
//! milliseconds column (exact, for the API). 18.16 has no `DateTime64`.
//! Every free-text field goes through [`crate::redact`] on its way in.

use std::collections::BTreeMap;

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use crate::audit::{LlmCall, SlackPost};
use crate::engine::CellStep;
use crate::event::{Event, Outcome};
use crate::incident::{
    ts, Incident, Link, RootCause, SeriesPoint, Status, SummarySource, TimeRange, TimelineEntry,
};
use crate::redact;
use crate::rules::Severity;
use crate::store::Silence;

/// Epoch ms to a `DateTime` column value (seconds, clamped to its range).
pub(crate) fn secs(ms: i64) -> u32 {
    ms.div_euclid(1000).clamp(0, i64::from(u32::MAX)) as u32
}

fn clean(s: &str) -> String {
    redact::redact_all(s).into_owned()
}

/// Incident titles and summaries are written in-process (the template, or LLM
/// output that passed validation) and must read back exactly as the API shows
/// them: only card numbers are masked here, which they never hold.
fn clean_pan(s: &str) -> String {
    redact::redact(s).into_owned()
}

/// `events`: one counted event, allow-listed fields only.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(crate) struct EventRow {
    pub ts: u32,
    pub ts_ms: i64,
    pub id: String,
    pub kind: String,
    pub outcome: String,
    pub provider: String,
    pub region: String,
    pub bin: String,
    pub merchant_id: String,
    pub card_brand: String,
    pub error_code: String,
    pub latency_ms: Option<f64>,
    pub message: String,
    pub attr_keys: Vec<String>,
    pub attr_values: Vec<String>,
    /// How many events this row stands for (success sampling).
    pub weight: u32,
    pub inserted_at: u32,
}

impl EventRow {
    /// The row of an already validated and redacted event. The card-number
    /// scanner runs once more over the free text: cheap, and the boundary is
    /// this module's to keep.
    pub fn new(e: &Event, weight: u32, now_s: u32) -> EventRow {
        EventRow {
            ts: secs(e.ts_ms),
            ts_ms: e.ts_ms,
            id: e.id.clone(),
            kind: e.kind.clone(),
            outcome: e.outcome.as_str().to_string(),
            provider: e.provider.clone(),
            region: e.region.clone(),
            bin: e.bin.clone().unwrap_or_default(),
            merchant_id: e.merchant_id.clone().unwrap_or_default(),
            card_brand: e.card_brand.clone().unwrap_or_default(),
            error_code: e.error_code.clone().unwrap_or_default(),
            latency_ms: e.latency_ms,
            message: e
                .message
                .as_deref()
                .map(|m| redact::redact(m).into_owned())
                .unwrap_or_default(),
            attr_keys: e.attrs.keys().cloned().collect(),
            attr_values: e.attrs.values().cloned().collect(),
            weight,
            inserted_at: now_s,
        }
    }
}

impl EventRow {
    /// The events this row stands for: itself, and for a sampled success of
    /// weight w, w - 1 copies with derived ids (`ID#2` .. `ID#w`), so counts
    /// replayed from history equal the counts the engine saw. `None` for an
    /// outcome this version does not know.
    pub fn into_events(self) -> Option<impl Iterator<Item = Event>> {
        let outcome = match self.outcome.as_str() {
            "success" => Outcome::Success,
            "decline" => Outcome::Decline,
            "failure" => Outcome::Failure,
            _ => return None,
        };
        let opt = |s: String| (!s.is_empty()).then_some(s);
        let event = Event {
            id: self.id,
            ts_ms: self.ts_ms,
            kind: self.kind,
            outcome,
            provider: self.provider,
            region: self.region,
            bin: opt(self.bin),
            merchant_id: opt(self.merchant_id),
            card_brand: opt(self.card_brand),
            error_code: opt(self.error_code),
            latency_ms: self.latency_ms,
            message: opt(self.message),
            attrs: self.attr_keys.into_iter().zip(self.attr_values).collect(),
        };
        let weight = self.weight.max(1);
        Some((1..=weight).map(move |k| {
            let mut e = event.clone();
            if k > 1 {
                e.id = format!("{}#{k}", e.id);
            }
            e
        }))
    }
}

/// `cell_steps`: one cell's counts at one evaluation step of a rule.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(crate) struct CellStepRow {
    pub ts: u32,
    pub step_s: u32,
    pub rule: String,
    pub kind: String,
    pub provider: String,
    pub region: String,
    pub bin: String,
    pub merchant_id: String,
    /// `k=v,k=v` over every dimension of the rule: the cell's identity.
    pub cell: String,
    pub dim_keys: Vec<String>,
    pub dim_values: Vec<String>,
    pub attempts: u64,
    pub failures: u64,
    pub expected: f64,
    pub baseline: f64,
    pub inserted_at: u32,
}

impl CellStepRow {
    pub fn new(s: &CellStep, now_s: u32) -> CellStepRow {
        let get = |name: &str| {
            s.dims
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let mut cell = String::new();
        for (i, (k, v)) in s.dims.iter().enumerate() {
            if i > 0 {
                cell.push(',');
            }
            cell.push_str(k);
            cell.push('=');
            cell.push_str(v);
        }
        CellStepRow {
            ts: secs(s.step_end_ms),
            step_s: (s.step_ms / 1000).clamp(0, i64::from(u32::MAX)) as u32,
            rule: s.rule.to_string(),
            kind: s.kind.to_string(),
            provider: get("provider"),
            region: get("region"),
            bin: get("bin"),
            merchant_id: get("merchant_id"),
            cell,
            dim_keys: s.dims.iter().map(|(k, _)| k.clone()).collect(),
            dim_values: s.dims.iter().map(|(_, v)| v.clone()).collect(),
            attempts: s.attempts,
            failures: s.failures,
            expected: finite(s.expected),
            baseline: finite(s.baseline),
            inserted_at: now_s,
        }
    }
}

fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

/// `incidents`: the latest state of an incident is its row with the highest
/// `version` (`ReplacingMergeTree(version)`, read with `FINAL`).
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(crate) struct IncidentRow {
    pub id: String,
    pub version: u64,
    pub rule: String,
    pub kind: String,
    pub severity: String,
    pub status: String,
    /// The status a person set (`acknowledged`, `resolved`), empty when none:
    /// what engine updates must keep, also after a restart.
    pub human_status: String,
    pub opened_at: u32,
    pub opened_at_ms: i64,
    pub updated_at_ms: i64,
    pub resolved_at_ms: Option<i64>,
    pub provider: String,
    pub region: String,
    pub bin: String,
    pub merchant_id: String,
    /// `k=v` of every dimension of the first root cause (the API's filters).
    pub cause_dims: Vec<String>,
    /// JSON array of root causes.
    pub root_causes: String,
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    pub title: String,
    pub summary: String,
    pub summary_source: String,
    /// JSON array of links.
    pub links: String,
    pub prompt_version: Option<String>,
    /// JSON array of candidates (schema version 2).
    pub candidates: String,
    /// JSON object of the episode's numbers: `began_at`, `current`, `peak`,
    /// `impact`, `error_codes`, `url` (schema version 3).
    pub episode: String,
}

fn name_of<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

fn parse_name<T: serde::de::DeserializeOwned>(s: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
}

impl IncidentRow {
    pub fn new(inc: &Incident, human: Option<Status>, version: u64) -> IncidentRow {
        let cause = inc.root_causes.first().map(|c| &c.dims);
        let dim = |k: &str| cause.and_then(|d| d.get(k)).cloned().unwrap_or_default();
        let cause_dims = cause
            .map(|d| d.iter().map(|(k, v)| format!("{k}={v}")).collect())
            .unwrap_or_default();
        IncidentRow {
            id: inc.id.clone(),
            version,
            rule: inc.rule.clone(),
            kind: inc.kind.clone(),
            severity: name_of(&inc.severity),
            status: inc.status.as_str().to_string(),
            human_status: human.map(|s| s.as_str().to_string()).unwrap_or_default(),
            opened_at: secs(inc.opened_at.timestamp_millis()),
            opened_at_ms: inc.opened_at.timestamp_millis(),
            updated_at_ms: inc.updated_at.timestamp_millis(),
            resolved_at_ms: inc.resolved_at.map(|t| t.timestamp_millis()),
            provider: dim("provider"),
            region: dim("region"),
            bin: dim("bin"),
            merchant_id: dim("merchant_id"),
            cause_dims,
            root_causes: serde_json::to_string(&inc.root_causes).unwrap_or_else(|_| "[]".into()),
            window_start_ms: inc.window.start.timestamp_millis(),
            window_end_ms: inc.window.end.timestamp_millis(),
            title: clean_pan(&inc.title),
            summary: clean_pan(&inc.summary),
            summary_source: name_of(&inc.summary_source),
            links: serde_json::to_string(&inc.links).unwrap_or_else(|_| "[]".into()),
            prompt_version: inc.prompt_version.clone(),
            candidates: serde_json::to_string(&inc.candidates).unwrap_or_else(|_| "[]".into()),
            episode: clean_pan(
                &serde_json::to_string(&inc.episode).unwrap_or_else(|_| "{}".into()),
            ),
        }
    }

    /// The incident and the person's status. Unreadable stored values fall
    /// back to safe defaults (and are logged) rather than failing the read.
    pub fn into_incident(self) -> (Incident, Option<Status>) {
        let root_causes: Vec<RootCause> =
            serde_json::from_str(&self.root_causes).unwrap_or_else(|_| {
                tracing::warn!(incident_id = %self.id, "unreadable root_causes in ClickHouse");
                Vec::new()
            });
        let links: Vec<Link> = serde_json::from_str(&self.links).unwrap_or_default();
        let human = parse_name::<Status>(&self.human_status);
        let inc = Incident {
            id: self.id,
            rule: self.rule,
            kind: self.kind,
            severity: parse_name(&self.severity).unwrap_or(Severity::Warning),
            status: parse_name(&self.status).unwrap_or(Status::Open),
            opened_at: ts(self.opened_at_ms),
            updated_at: ts(self.updated_at_ms),
            resolved_at: self.resolved_at_ms.map(ts),
            root_causes,
            window: TimeRange {
                start: ts(self.window_start_ms),
                end: ts(self.window_end_ms),
            },
            title: self.title,
            summary: self.summary,
            summary_source: parse_name(&self.summary_source).unwrap_or(SummarySource::Template),
            links,
            prompt_version: self.prompt_version,
            candidates: serde_json::from_str(&self.candidates).unwrap_or_default(),
            episode: serde_json::from_str(&self.episode).unwrap_or_default(),
        };
        (inc, human)
    }
}

/// `incident_timeline`: one entry; `seq` orders them as they were written.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(crate) struct TimelineRow {
    pub incident_id: String,
    pub seq: u64,
    pub at: u32,
    pub at_ms: i64,
    pub what: String,
    pub by: String,
    pub detail: String,
}

impl TimelineRow {
    pub fn new(id: &str, e: &TimelineEntry, seq: u64) -> TimelineRow {
        TimelineRow {
            incident_id: id.to_string(),
            seq,
            at: secs(e.at.timestamp_millis()),
            at_ms: e.at.timestamp_millis(),
            what: clean(&e.what),
            by: clean(&e.by),
            detail: clean(&e.detail),
        }
    }

    pub fn into_entry(self) -> TimelineEntry {
        TimelineEntry {
            at: ts(self.at_ms),
            what: self.what,
            by: self.by,
            detail: self.detail,
        }
    }
}

/// `incident_series`: one evaluation step of an incident.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(crate) struct SeriesRow {
    pub incident_id: String,
    pub seq: u64,
    pub at: u32,
    pub at_ms: i64,
    pub events: u64,
    pub failures: u64,
    pub value: f64,
    pub baseline: f64,
}

impl SeriesRow {
    pub fn new(id: &str, p: &SeriesPoint, seq: u64) -> SeriesRow {
        SeriesRow {
            incident_id: id.to_string(),
            seq,
            at: secs(p.at.timestamp_millis()),
            at_ms: p.at.timestamp_millis(),
            events: p.events,
            failures: p.failures,
            value: finite(p.value),
            baseline: finite(p.baseline),
        }
    }

    pub fn into_point(self) -> SeriesPoint {
        SeriesPoint {
            at: ts(self.at_ms),
            events: self.events,
            failures: self.failures,
            value: self.value,
            baseline: self.baseline,
        }
    }
}

/// `silences`: latest `version` wins; a deletion is a row with `deleted = 1`.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(crate) struct SilenceRow {
    pub id: String,
    pub version: u64,
    pub deleted: u8,
    /// JSON object of matchers.
    pub matchers: String,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub comment: String,
    pub created_by: String,
    pub created_at: u32,
    pub created_at_ms: i64,
}

impl SilenceRow {
    pub fn new(s: &Silence, deleted: bool, version: u64) -> SilenceRow {
        SilenceRow {
            id: s.id.clone(),
            version,
            deleted: u8::from(deleted),
            matchers: serde_json::to_string(&s.matchers).unwrap_or_else(|_| "{}".into()),
            starts_at_ms: s.starts_at.timestamp_millis(),
            ends_at_ms: s.ends_at.timestamp_millis(),
            comment: clean(&s.comment),
            created_by: clean(&s.created_by),
            created_at: secs(s.created_at.timestamp_millis()),
            created_at_ms: s.created_at.timestamp_millis(),
        }
    }

    pub fn into_silence(self) -> Option<Silence> {
        let matchers: BTreeMap<String, String> = serde_json::from_str(&self.matchers).ok()?;
        Some(Silence {
            id: self.id,
            matchers,
            starts_at: ts(self.starts_at_ms),
            ends_at: ts(self.ends_at_ms),
            comment: self.comment,
            created_by: self.created_by,
            created_at: ts(self.created_at_ms),
        })
    }
}

/// `audit_llm_calls`.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(crate) struct LlmCallRow {
    pub at: u32,
    pub at_ms: i64,
    pub incident_id: String,
    pub prompt_version: String,
    pub model: String,
    pub attempt: u32,
    pub prompt: String,
    pub response: String,
    pub outcome: String,
    pub detail: String,
    pub latency_ms: u64,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

impl From<&LlmCall> for LlmCallRow {
    fn from(c: &LlmCall) -> Self {
        LlmCallRow {
            at: secs(c.at.timestamp_millis()),
            at_ms: c.at.timestamp_millis(),
            incident_id: c.incident_id.clone(),
            prompt_version: clean(&c.prompt_version),
            model: clean(&c.model),
            attempt: c.attempt,
            prompt: clean(&c.prompt),
            response: clean(&c.response),
            outcome: clean(&c.outcome),
            detail: clean(&c.detail),
            latency_ms: c.latency_ms,
            prompt_tokens: c.prompt_tokens,
            completion_tokens: c.completion_tokens,
        }
    }
}

/// `audit_slack_calls`.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub(crate) struct SlackCallRow {
    pub at: u32,
    pub at_ms: i64,
    pub incident_id: String,
    pub method: String,
    pub channel: String,
    pub ts: Option<String>,
    pub status: String,
    pub latency_ms: u64,
}

impl From<&SlackPost> for SlackCallRow {
    fn from(p: &SlackPost) -> Self {
        SlackCallRow {
            at: secs(p.at.timestamp_millis()),
            at_ms: p.at.timestamp_millis(),
            incident_id: p.incident_id.clone(),
            method: clean(&p.method),
            channel: clean(&p.channel),
            ts: p.ts.as_deref().map(clean),
            status: clean(&p.status),
            latency_ms: p.latency_ms,
        }
    }
}
