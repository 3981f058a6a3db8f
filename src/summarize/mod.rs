//! Incident summaries: a title and a few lines a person can act on.
//!
//! A summary is written from [`Facts`]: numbers computed by the engine plus the
//! rule's own text, never raw event payloads. Dimension values did come from
//! events, so [`Facts::new`] passes them through [`crate::redact`] (and the
//! template does again before anything becomes text). The deterministic
//! [`template`] is always available; the [`llm`] summarizer, when configured,
//! falls back to it.

pub mod llm;
mod next;
mod template;

pub use next::next_step;

pub use template::template;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::incident::{Episode, Incident, Link, RootCause, Status, SummarySource, TimeRange};
use crate::redact;
use crate::rules::{Detector, Rule, Severity};

/// Everything a summary may say, computed, redacted and allow-listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Facts {
    /// The incident id.
    pub incident_id: String,
    /// The rule's name.
    pub rule: String,
    /// The rule's description (written by operators).
    pub description: String,
    /// The event kind the rule watches.
    pub kind: String,
    /// Severity.
    pub severity: Severity,
    /// Rate or volume-drop detection.
    pub detector: Detector,
    /// Lifecycle state.
    pub status: Status,
    /// Event time it opened.
    pub opened_at: DateTime<Utc>,
    /// Event time of the last change.
    pub updated_at: DateTime<Utc>,
    /// Event time it resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// The detection window of the latest evaluation.
    pub window: TimeRange,
    /// Root causes, best first: the first is the incident's element, the rest
    /// runners-up. Dimension values are redacted.
    pub root_causes: Vec<RootCause>,
    /// Dashboard links, from the rule.
    pub links: Vec<Link>,
    /// Runbook URL, from the rule.
    pub runbook: Option<String>,
    /// The episode's numbers: began, current, peak, impact, error codes
    /// (codes redacted; no page link, the outputs add it).
    pub episode: Episode,
    /// What to check next, from the cause's shape, its error codes and the
    /// rule's own text ([`next_step`]); never from a model.
    pub next_step: Option<String>,
}

impl Facts {
    /// The facts of an incident raised by `rule`.
    pub fn new(incident: &Incident, rule: &Rule) -> Facts {
        let root_causes = incident
            .root_causes
            .iter()
            .map(|c| {
                let mut c = c.clone();
                for v in c.dims.values_mut() {
                    if let std::borrow::Cow::Owned(r) = redact::redact_all(v) {
                        *v = r;
                    }
                }
                c
            })
            .collect();
        let facts = Facts {
            incident_id: incident.id.clone(),
            rule: incident.rule.clone(),
            description: redact::redact_all(&rule.description).into_owned(),
            kind: incident.kind.clone(),
            severity: incident.severity,
            detector: rule.detector,
            status: incident.status,
            opened_at: incident.opened_at,
            updated_at: incident.updated_at,
            resolved_at: incident.resolved_at,
            window: incident.window,
            root_causes,
            links: incident.links.clone(),
            runbook: rule.runbook.clone(),
            episode: Episode::default(),
            next_step: None,
        };
        let mut episode = incident.episode.clone();
        episode.url = None;
        for c in &mut episode.error_codes {
            if let std::borrow::Cow::Owned(r) = redact::redact_all(&c.code) {
                c.code = r;
            }
        }
        let mut facts = Facts { episode, ..facts };
        facts.next_step = next_step(&facts);
        facts
    }
}

/// A written summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// One line.
    pub title: String,
    /// A few lines.
    pub summary: String,
    /// Who wrote it.
    pub source: SummarySource,
    /// The prompt version, when an LLM wrote it.
    pub prompt_version: Option<String>,
    /// Why the template was used although an LLM is configured (timeout,
    /// invalid output, circuit open, ...): recorded in the incident's timeline.
    /// `None` when the summarizer did what it was configured to do.
    pub note: Option<String>,
}

impl Summary {
    /// Writes it into the incident's title, summary, source and prompt version.
    pub fn apply(self, incident: &mut Incident) {
        // `note` is the caller's to record; it is not part of the incident.
        incident.title = self.title;
        incident.summary = self.summary;
        incident.summary_source = self.source;
        incident.prompt_version = self.prompt_version;
    }
}

/// Writes summaries. Implementations never fail: a summarizer that cannot do
/// better returns [`template`].
#[async_trait]
pub trait Summarizer: Send + Sync {
    /// Summarizes the facts of one incident.
    async fn summarize(&self, facts: &Facts) -> Summary;
}

/// The deterministic template: the embedded summarizer.
#[derive(Debug, Clone, Copy, Default)]
pub struct TemplateSummarizer;

#[async_trait]
impl Summarizer for TemplateSummarizer {
    async fn summarize(&self, facts: &Facts) -> Summary {
        template(facts)
    }
}
