//! The async wiring of the stages for `run`, `demo` and `replay`.

use std::collections::BTreeMap;

use crate::engine::{Engine, EngineOptions};
use crate::event;
use crate::incident::{Change, Incident};
use crate::rules::{CompiledRule, RuleSet};

/// The one-line JSON run report `faultline replay` prints to stderr.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RunReport {
    /// Lines read.
    pub events_read: u64,
    /// Valid, new, on-time events counted by the rules.
    pub accepted: u64,
    /// Rejections by reason (including `duplicate` and `late`).
    pub rejected: std::collections::BTreeMap<String, u64>,
    /// Incidents opened.
    pub incidents: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Result of a replay: every incident in its final state, ordered by `opened_at`.
#[derive(Debug, Clone, Default)]
pub struct ReplayOutput {
    /// Incidents, final state.
    pub incidents: Vec<Incident>,
    /// Counts.
    pub report: RunReport,
}

/// Runs the pipeline in event time over NDJSON lines, as fast as it can.
///
/// Blank lines are skipped; bad lines are counted by reason, never fatal.
pub fn replay_lines<I, L>(lines: I, rules: &RuleSet) -> ReplayOutput
where
    I: IntoIterator<Item = L>,
    L: AsRef<[u8]>,
{
    replay_with(lines, rules, &EngineOptions::default())
}

/// [`replay_lines`] with engine options.
pub fn replay_with<I, L>(lines: I, rules: &RuleSet, opts: &EngineOptions) -> ReplayOutput
where
    I: IntoIterator<Item = L>,
    L: AsRef<[u8]>,
{
    let started = std::time::Instant::now();
    let mut engine = Engine::new(rules, opts);
    let mut report = RunReport::default();
    let mut latest: BTreeMap<String, Incident> = BTreeMap::new();
    let mut changes = Vec::new();
    let absorb = |changes: &mut Vec<Change>, latest: &mut BTreeMap<String, Incident>| {
        for c in changes.drain(..) {
            let inc = c.transition.incident();
            latest.insert(inc.id.clone(), inc.clone());
        }
    };
    for line in lines {
        let bytes = trim_line(line.as_ref());
        if bytes.is_empty() {
            continue;
        }
        report.events_read += 1;
        match event::parse(bytes) {
            Ok(ev) => match engine.ingest(&ev, &mut changes) {
                Ok(()) => report.accepted += 1,
                Err(skip) => *report.rejected.entry(skip.reason().to_string()).or_default() += 1,
            },
            Err(rej) => *report.rejected.entry(rej.reason().into_owned()).or_default() += 1,
        }
        if !changes.is_empty() {
            absorb(&mut changes, &mut latest);
        }
    }
    engine.finish(&mut changes);
    absorb(&mut changes, &mut latest);
    let mut incidents: Vec<Incident> = latest
        .into_values()
        .map(|mut inc| {
            if let Some(rule) = rules.get(&inc.rule) {
                summarize_template(&mut inc, rule);
            }
            inc
        })
        .collect();
    incidents.sort_by(|a, b| a.opened_at.cmp(&b.opened_at).then(a.id.cmp(&b.id)));
    report.incidents = incidents.len() as u64;
    report.seconds = started.elapsed().as_secs_f64();
    ReplayOutput { incidents, report }
}

/// Fills title and summary from the deterministic template.
pub fn summarize_template(inc: &mut Incident, rule: &CompiledRule) {
    // Wired to the template summarizer once it lands.
    inc.title = format!("{}: {:?}", rule.rule.name, inc.root_causes.first().map(|r| &r.dims));
}

fn trim_line(b: &[u8]) -> &[u8] {
    let mut b = b;
    while let [rest @ .., last] = b {
        if last.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    while let [first, rest @ ..] = b {
        if first.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    b
}
