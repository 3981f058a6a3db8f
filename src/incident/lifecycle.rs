//! Open / update / resolve, with hysteresis.
//!
//! Per rule, each evaluation step brings the localizer's causes. A cause that
//! overlaps an open incident's element (the same element, an ancestor or a
//! descendant) keeps that incident firing; localization may move a level between
//! steps and that must not open a second incident. Other causes are pending
//! until they have held for `open_after` consecutive steps. An open incident
//! resolves after `resolve_after` consecutive steps in which neither its own
//! element passes the rule's criteria nor any cause overlaps it.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use super::{
    fingerprint, ts, Incident, Link, RootCause, SeriesPoint, Status, SummarySource, TimeRange,
    TimelineEntry,
};
use crate::localize::Element;
use crate::rules::{fill_link, CompiledRule};

/// What happened to an incident at one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// A new incident.
    Opened(Incident),
    /// An open incident changed (evidence, severity, candidates).
    Updated(Incident),
    /// It ended.
    Resolved(Incident),
}

impl Transition {
    /// The incident, whatever happened.
    pub fn incident(&self) -> &Incident {
        match self {
            Transition::Opened(i) | Transition::Updated(i) | Transition::Resolved(i) => i,
        }
    }
}

/// One output of a step: a transition, whether people should hear of it, and what
/// the store should append.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// What happened.
    pub transition: Transition,
    /// False for routine evidence refreshes (stored, not posted).
    pub notify: bool,
    /// Timeline entries to append.
    pub timeline: Vec<TimelineEntry>,
    /// This step's series point.
    pub point: Option<SeriesPoint>,
}

/// A localized element with its evidence, as the engine hands it over.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The element (interned ids).
    pub element: Element,
    /// Its evidence in incident terms.
    pub cause: RootCause,
}

#[derive(Debug)]
struct Open {
    element: Element,
    incident: Incident,
    clean: u32,
    /// Root-cause and candidate elements people have been told of.
    told: Vec<BTreeMap<String, String>>,
    /// Failure rate of the root cause when people were last told.
    told_rate: f64,
    /// When people were last told of a change in evidence.
    told_ms: i64,
}

/// Failure rate, relative to the one last announced, that makes an open
/// incident worth a thread update ("worsening"), with [`WORSE_BY`] points at least.
const WORSE_RATIO: f64 = 1.5;
/// Least absolute rise in failure rate for a "worsening" update.
const WORSE_BY: f64 = 0.05;

#[derive(Debug)]
struct Pending {
    element: Element,
    count: u32,
}

/// Open and pending incidents of one rule.
#[derive(Debug, Default)]
pub struct IncidentManager {
    open: Vec<Open>,
    pending: Vec<Pending>,
}

/// How far a dashboard link reaches around the incident.
fn link_range(rule: &CompiledRule, opened: i64, last: i64) -> (i64, i64) {
    let w = rule.rule.window.ms();
    (opened - 3 * w, last + w)
}

fn links(
    rule: &CompiledRule,
    dims: &BTreeMap<String, String>,
    opened: i64,
    last: i64,
) -> Vec<Link> {
    let (from, to) = link_range(rule, opened, last);
    let mut out: Vec<Link> = rule
        .rule
        .dashboards
        .iter()
        .map(|t| Link {
            title: t.title.clone(),
            url: fill_link(&t.url, &rule.rule.name, dims, from, to),
        })
        .collect();
    if let Some(rb) = &rule.rule.runbook {
        out.push(Link {
            title: "Runbook".into(),
            url: rb.clone(),
        });
    }
    out
}

fn incident_id(fp: &str, opened_ms: i64) -> String {
    let mut h = DefaultHasher::new();
    fp.hash(&mut h);
    opened_ms.hash(&mut h);
    format!("inc_{:016x}", h.finish())
}

fn point(at_ms: i64, c: &RootCause, volume_rule: bool) -> SeriesPoint {
    match (volume_rule, c.expected_events) {
        (true, Some(exp)) => SeriesPoint {
            at: ts(at_ms),
            events: c.events,
            failures: c.failures,
            value: c.events as f64,
            baseline: exp,
        },
        _ => SeriesPoint {
            at: ts(at_ms),
            events: c.events,
            failures: c.failures,
            value: c.failure_rate,
            baseline: c.baseline_rate,
        },
    }
}

/// `k=v, k=v`.
fn dims_text(dims: &BTreeMap<String, String>) -> String {
    dims.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn entry(at_ms: i64, what: &str, detail: String) -> TimelineEntry {
    TimelineEntry {
        at: ts(at_ms),
        what: what.into(),
        by: "faultline".into(),
        detail,
    }
}

impl IncidentManager {
    /// Open incidents' elements (their cells do not teach the baseline).
    pub fn open_elements(&self) -> impl Iterator<Item = &Element> {
        self.open.iter().map(|o| &o.element)
    }

    /// Number of open incidents.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// One evaluation step ending at `end_ms`.
    ///
    /// `evaluate` gives an element's current evidence and whether it still passes
    /// the rule's criteria.
    pub fn step(
        &mut self,
        rule: &CompiledRule,
        end_ms: i64,
        causes: &[Finding],
        candidates: &[Finding],
        mut evaluate: impl FnMut(&Element) -> (RootCause, bool),
    ) -> Vec<Change> {
        let mut out = Vec::new();
        let window_ms = rule.rule.window.ms();
        let volume_rule = rule.rule.detector == crate::rules::Detector::VolumeDrop;
        let mut claimed = vec![false; causes.len()];

        // Open incidents: still firing, or one clean step closer to resolving.
        let mut still_open = Vec::with_capacity(self.open.len());
        for mut o in std::mem::take(&mut self.open) {
            let (mut evidence, passes) = evaluate(&o.element);
            let mut firing = passes;
            for (i, c) in causes.iter().enumerate() {
                if c.element.overlaps(&o.element) {
                    claimed[i] = true;
                    firing = true;
                }
            }
            let p = point(end_ms, &evidence, volume_rule);
            if firing {
                o.clean = 0;
                evidence.score = causes
                    .iter()
                    .find(|c| c.element.same_as(&o.element))
                    .map(|c| c.cause.score)
                    .unwrap_or(o.incident.root_causes[0].score);
                let runners: Vec<RootCause> = candidates
                    .iter()
                    .chain(causes.iter())
                    .filter(|c| !c.element.same_as(&o.element) && c.element.overlaps(&o.element))
                    .take(3)
                    .map(|c| c.cause.clone())
                    .collect();
                let inc = &mut o.incident;
                inc.root_causes = std::iter::once(evidence).chain(runners).collect();
                inc.updated_at = ts(end_ms);
                inc.window = TimeRange {
                    start: ts(end_ms - window_ms),
                    end: ts(end_ms),
                };
                inc.links = links(
                    rule,
                    &inc.root_causes[0].dims,
                    inc.opened_at.timestamp_millis(),
                    end_ms,
                );
                // Runner-up order shifts from step to step; that is evidence,
                // refreshed in the incident, not news. News (told in the thread):
                // the rule's severity changed (a reload), a candidate nobody was
                // told of, or a much higher failure rate; evidence news at most
                // once per window.
                let mut news = Vec::new();
                if inc.severity != rule.rule.severity {
                    news.push(format!(
                        "severity {} -> {}",
                        inc.severity.as_str(),
                        rule.rule.severity.as_str()
                    ));
                    inc.severity = rule.rule.severity;
                }
                // The window fills up over one window after opening (and after
                // news of a rise): that ramp is not news again.
                if end_ms - o.told_ms <= window_ms {
                    o.told_rate = o.told_rate.max(inc.root_causes[0].failure_rate);
                }
                if end_ms - o.told_ms >= window_ms {
                    // A finer element inside the root cause is expected while
                    // it fails; one reaching beyond it (an ancestor, a
                    // neighbour) widens the scope, and that is news.
                    let root = &inc.root_causes[0].dims;
                    let inside = |d: &BTreeMap<String, String>| {
                        root.iter().all(|(k, v)| d.get(k) == Some(v))
                    };
                    let fresh: Vec<String> = inc
                        .root_causes
                        .iter()
                        .filter(|r| !inside(&r.dims) && !o.told.contains(&r.dims))
                        .map(|r| format!("new candidate {}", dims_text(&r.dims)))
                        .collect();
                    let rate = inc.root_causes[0].failure_rate;
                    if !volume_rule
                        && rate >= o.told_rate * WORSE_RATIO
                        && rate - o.told_rate >= WORSE_BY
                    {
                        news.push(format!(
                            "failure rate up to {:.1}% from {:.1}%",
                            rate * 100.0,
                            o.told_rate * 100.0
                        ));
                    }
                    news.extend(fresh);
                }
                let notify = !news.is_empty();
                if notify {
                    o.told_ms = end_ms;
                    o.told_rate = inc.root_causes[0].failure_rate;
                    for r in &inc.root_causes {
                        if !o.told.contains(&r.dims) {
                            o.told.push(r.dims.clone());
                        }
                    }
                }
                out.push(Change {
                    transition: Transition::Updated(inc.clone()),
                    notify,
                    timeline: if notify {
                        vec![entry(end_ms, "updated", news.join("; "))]
                    } else {
                        Vec::new()
                    },
                    point: Some(p),
                });
                still_open.push(o);
            } else {
                o.clean += 1;
                if o.clean >= rule.rule.resolve_after {
                    let inc = &mut o.incident;
                    inc.status = Status::Resolved;
                    inc.resolved_at = Some(ts(end_ms));
                    inc.updated_at = ts(end_ms);
                    inc.links = links(
                        rule,
                        &inc.root_causes[0].dims,
                        inc.opened_at.timestamp_millis(),
                        end_ms,
                    );
                    let detail = format!("clean for {} steps", o.clean);
                    out.push(Change {
                        transition: Transition::Resolved(inc.clone()),
                        notify: true,
                        timeline: vec![entry(end_ms, "resolved", detail)],
                        point: Some(p),
                    });
                } else {
                    out.push(Change {
                        transition: Transition::Updated(o.incident.clone()),
                        notify: false,
                        timeline: Vec::new(),
                        point: Some(p),
                    });
                    still_open.push(o);
                }
            }
        }
        self.open = still_open;

        // New causes: pending until they hold for open_after steps.
        let mut next_pending: Vec<Pending> = Vec::new();
        for (i, c) in causes.iter().enumerate() {
            if claimed[i] || next_pending.iter().any(|p| p.element.overlaps(&c.element)) {
                continue;
            }
            let count = self
                .pending
                .iter()
                .filter(|p| p.element.overlaps(&c.element))
                .map(|p| p.count)
                .max()
                .unwrap_or(0)
                + 1;
            if count >= rule.rule.open_after {
                let dims = c.cause.dims.clone();
                let fp = fingerprint(&rule.rule.name, &dims);
                let runners: Vec<RootCause> = candidates
                    .iter()
                    .filter(|x| !x.element.same_as(&c.element) && x.element.overlaps(&c.element))
                    .take(3)
                    .map(|x| x.cause.clone())
                    .collect();
                let incident = Incident {
                    id: incident_id(&fp, end_ms),
                    rule: rule.rule.name.clone(),
                    kind: rule.rule.kind.clone(),
                    severity: rule.rule.severity,
                    status: Status::Open,
                    opened_at: ts(end_ms),
                    updated_at: ts(end_ms),
                    resolved_at: None,
                    root_causes: std::iter::once(c.cause.clone())
                        .chain(runners.iter().cloned())
                        .collect(),
                    window: TimeRange {
                        start: ts(end_ms - window_ms),
                        end: ts(end_ms),
                    },
                    title: String::new(),
                    summary: String::new(),
                    summary_source: SummarySource::Template,
                    links: links(rule, &dims, end_ms, end_ms),
                    prompt_version: None,
                };
                out.push(Change {
                    transition: Transition::Opened(incident.clone()),
                    notify: true,
                    timeline: vec![entry(
                        end_ms,
                        "opened",
                        format!("anomalous for {count} steps"),
                    )],
                    point: Some(point(end_ms, &c.cause, volume_rule)),
                });
                self.open.push(Open {
                    element: c.element.clone(),
                    told: incident
                        .root_causes
                        .iter()
                        .map(|r| r.dims.clone())
                        .collect(),
                    told_rate: c.cause.failure_rate,
                    told_ms: end_ms,
                    incident,
                    clean: 0,
                });
            } else {
                next_pending.push(Pending {
                    element: c.element.clone(),
                    count,
                });
            }
        }
        self.pending = next_pending;
        out
    }

    /// Resolves every open incident (the rule was removed or the run ended).
    pub fn close_all(&mut self, end_ms: i64, why: &str) -> Vec<Change> {
        self.pending.clear();
        std::mem::take(&mut self.open)
            .into_iter()
            .map(|mut o| {
                o.incident.status = Status::Resolved;
                o.incident.resolved_at = Some(ts(end_ms));
                o.incident.updated_at = ts(end_ms);
                Change {
                    transition: Transition::Resolved(o.incident),
                    notify: true,
                    timeline: vec![entry(end_ms, "resolved", why.to_string())],
                    point: None,
                }
            })
            .collect()
    }

    /// The open incidents, latest state.
    pub fn open_incidents(&self) -> impl Iterator<Item = &Incident> {
        self.open.iter().map(|o| &o.incident)
    }
}
