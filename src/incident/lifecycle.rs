//! Open / update / resolve, with hysteresis.
//!
//! Per rule, each evaluation step brings the localizer's causes. An incident
//! holds one or more root-cause elements. A cause that overlaps one of an open
//! incident's elements (the same element, an ancestor or a descendant) keeps
//! that incident firing; localization may move a level between steps and that
//! must not open a second incident. Other causes are pending until they have
//! held for `open_after` consecutive steps; then they open one incident
//! together (elements failing from the same step share a cause: one
//! incident, several root causes), join an incident that opened moments ago
//! or that one of their values already names (a provider failing in a second
//! region), or reopen an incident of theirs that resolved within the rule's
//! `reopen_within`. An open incident resolves after `resolve_after`
//! consecutive steps in which none of its elements passes the rule's criteria
//! and no cause overlaps them.

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
    /// Series points of the steps before, from a window before the episode
    /// began up to this step, oldest first (only when the incident opens:
    /// the "before" its chart compares with).
    pub before: Vec<SeriesPoint>,
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
    /// The root-cause elements, in the order of `incident.root_causes`.
    elements: Vec<Element>,
    incident: Incident,
    clean: u32,
    /// Root-cause and candidate elements people have been told of.
    told: Vec<BTreeMap<String, String>>,
    /// Failure rate of the root cause when people were last told.
    told_rate: f64,
    /// When people were last told of a change in evidence.
    told_ms: i64,
    /// Event time it resolved (incidents kept for reopening).
    resolved_ms: i64,
    /// The most excess each root-cause element has been seen with: how well
    /// established the incident's current description is.
    peaks: Vec<(Element, f64)>,
}

impl Open {
    /// The most excess `el` has been seen with as a root cause (0 when never).
    fn peak(&self, el: &Element) -> f64 {
        self.peaks
            .iter()
            .find(|(e, _)| e.same_as(el))
            .map_or(0.0, |p| p.1)
    }

    /// Records the root causes' excess now; forgets elements no longer root causes.
    fn record_peaks(&mut self) {
        let mut peaks = Vec::with_capacity(self.elements.len());
        for (e, r) in self.elements.iter().zip(&self.incident.root_causes) {
            peaks.push((e.clone(), self.peak(e).max(excess(r))));
        }
        self.peaks = peaks;
    }

    /// Renames the incident's root causes (`pairs`, with their evidence now)
    /// when this step's `causes` describe the same failures better.
    ///
    /// Narrowing: causes strictly inside one element carry nearly all of its
    /// excess, now and of the most it was seen with (the first windows of an
    /// outage show its parent; two BINs of a range are those two BINs).
    /// Widening: a cause enclosing some elements carries clearly more excess
    /// than they carry now (the outage grew: a provider's second region became
    /// the whole provider) or at least as much as they were ever seen with
    /// (the first windows named pieces of it). As an outage fades its last
    /// failures can look like a parent's or a child's, with little evidence:
    /// no renaming then.
    fn revise(
        &self,
        pairs: &mut Vec<(Element, RootCause)>,
        causes: &[Finding],
        evaluate: &mut impl FnMut(&Element) -> (RootCause, bool),
    ) {
        let strictly = |outer: &Element, inner: &Element| {
            outer.encloses(inner) && !outer.same_as(inner) && !inner.encloses(outer)
        };
        let mut added: Vec<&Finding> = Vec::new();
        pairs.retain(|(e, r)| {
            let inner: Vec<&Finding> = causes.iter().filter(|c| strictly(e, &c.element)).collect();
            let carried: f64 = inner.iter().map(|c| excess(&c.cause).max(0.0)).sum();
            let narrow = !inner.is_empty()
                && carried >= NARROW_SHARE * excess(r)
                && carried >= NARROW_SHARE * self.peak(e)
                && rest_shown_healthy(r, &inner);
            if narrow {
                added.extend(inner);
            }
            !narrow
        });
        for c in causes {
            let inside = |e: &Element| strictly(&c.element, e);
            let (now, peak) =
                pairs
                    .iter()
                    .filter(|(e, _)| inside(e))
                    .fold((0.0, 0.0), |(n, p), (e, r)| {
                        let x = excess(r).max(0.0);
                        (n + x, p + self.peak(e).max(x))
                    });
            let gain = excess(&c.cause);
            if now > 0.0 && (gain >= WIDEN_GAIN * now || gain >= peak) {
                pairs.retain(|(e, _)| !inside(e));
                added.retain(|a| !inside(&a.element));
                added.push(c);
            }
        }
        for c in added {
            if pairs.iter().any(|(e, _)| e.same_as(&c.element)) {
                continue;
            }
            let (mut evidence, _) = evaluate(&c.element);
            evidence.score = c.cause.score;
            pairs.push((c.element.clone(), evidence));
        }
    }

    fn overlaps(&self, el: &Element) -> bool {
        self.elements.iter().any(|e| e.overlaps(el))
    }

    /// Whether `el` fixes a value one of the incident's elements also fixes
    /// (a second region of the same provider).
    fn shares_a_value(&self, el: &Element) -> bool {
        self.elements.iter().any(|e| {
            let common = e.mask & el.mask;
            common != 0
                && (0..crate::window::MAX_DIMS)
                    .any(|d| common & (1 << d) != 0 && e.key[d] == el.key[d])
        })
    }
}

/// Failure rate, relative to the one last announced, that makes an open
/// incident worth a thread update ("worsening"), with [`WORSE_BY`] points at least.
const WORSE_RATIO: f64 = 1.5;
/// Least absolute rise in failure rate for a "worsening" update.
const WORSE_BY: f64 = 0.05;
/// Share of a root cause's excess a cause inside it must carry to replace it.
const NARROW_SHARE: f64 = 0.85;
/// How much more excess than the root causes it encloses a cause must carry
/// to replace them (the outage widened).
const WIDEN_GAIN: f64 = 1.25;

/// A root cause's excess over its expectation (failures, or missing events).
fn excess(r: &RootCause) -> f64 {
    match r.expected_events {
        Some(e) => e - r.events as f64,
        None => r.failures as f64 - r.expected_failures,
    }
}

/// Observed and expected counts the localizer tests: failures for rate
/// rules, events for volume rules.
fn counts(r: &RootCause) -> (f64, f64) {
    match r.expected_events {
        Some(e) => (r.events as f64, e),
        None => (r.failures as f64, r.expected_failures),
    }
}

/// Whether what `outer` holds beyond the causes inside it is shown healthy,
/// the localizer's own test: causes that together are all of `outer` (every
/// card brand of a failing provider in a region) are `outer` by other names,
/// not a narrower cause. Overlapping causes subtract twice and leave a rest
/// too small to show healthy, which keeps `outer`.
fn rest_shown_healthy(outer: &RootCause, inner: &[&Finding]) -> bool {
    let (mut bad_real, mut bad_predict) = (0.0, 0.0);
    for c in inner {
        let (real, predict) = counts(&c.cause);
        bad_real += real;
        bad_predict += predict;
    }
    let (real, predict) = counts(outer);
    crate::localize::rest_is_healthy(
        bad_real,
        bad_predict,
        real - bad_real,
        predict - bad_predict,
    )
}

/// Most candidates an incident lists.
const MAX_CANDIDATES: usize = 5;
/// Steps after an incident opens during which a cause reaching `open_after`
/// joins it (beyond `open_after`): causes that fail from the same moment
/// share a cause, whatever their detection delay.
const JOIN_STEPS: i64 = 2;

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
    /// Resolved within the rule's `reopen_within`, newest last.
    recent: Vec<Open>,
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

/// The incident's id: a hash of its fingerprint and opening time, in hex. A
/// hex hash holds 13 or more decimal digits in a row about once in a hundred
/// ids, and a tenth of those pass the Luhn check: redaction would mask such an
/// id wherever it is written. Those hash again with a salt (deterministically,
/// so replicas and restarts agree), so no id can look like a card number.
fn incident_id(fp: &str, opened_ms: i64) -> String {
    let mut salt = 0u32;
    loop {
        let id = format!("inc_{:016x}", id_hash(fp, opened_ms, salt));
        if !crate::redact::has_long_digit_run(&id) || salt >= 64 {
            return id;
        }
        salt += 1;
    }
}

fn id_hash(fp: &str, opened_ms: i64, salt: u32) -> u64 {
    let mut h = DefaultHasher::new();
    fp.hash(&mut h);
    opened_ms.hash(&mut h);
    if salt > 0 {
        salt.hash(&mut h);
    }
    h.finish()
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

/// Candidates of an incident: the step's other elements overlapping one of
/// its root causes (pieces of them, alternatives to them), strongest first.
fn candidates_of(elements: &[Element], found: &[&Finding]) -> Vec<RootCause> {
    let mut out: Vec<RootCause> = Vec::new();
    for f in found {
        if f.element.mask == 0
            || elements.iter().any(|e| e.same_as(&f.element))
            || !elements.iter().any(|e| e.overlaps(&f.element))
            || out.iter().any(|c| c.dims == f.cause.dims)
        {
            continue;
        }
        out.push(f.cause.clone());
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out.truncate(MAX_CANDIDATES);
    out
}

/// Root causes best first: by score, then by excess.
fn order(pairs: &mut [(Element, RootCause)]) {
    pairs.sort_by(|a, b| {
        b.1.score
            .total_cmp(&a.1.score)
            .then(b.0.llr.total_cmp(&a.0.llr))
            .then(a.0.key.cmp(&b.0.key))
    });
}

impl IncidentManager {
    /// Open incidents' elements (their cells do not teach the baseline).
    pub fn open_elements(&self) -> impl Iterator<Item = &Element> {
        self.open.iter().flat_map(|o| o.elements.iter())
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
        let volume_rule = rule.rule.detector == crate::rules::Detector::VolumeDrop;
        let step_ms = rule.step_ms();
        let mut claimed = vec![false; causes.len()];
        let found: Vec<&Finding> = causes.iter().chain(candidates.iter()).collect();
        if tracing::enabled!(tracing::Level::TRACE) {
            let open: Vec<Vec<&BTreeMap<String, String>>> = self
                .open
                .iter()
                .map(|o| o.incident.root_causes.iter().map(|r| &r.dims).collect())
                .collect();
            let causes: Vec<&BTreeMap<String, String>> =
                causes.iter().map(|c| &c.cause.dims).collect();
            tracing::trace!(rule = %rule.rule.name, at = %ts(end_ms), ?causes, ?open, "lifecycle step");
        }

        // New causes first: pending until they hold for open_after steps, then
        // joining, reopening or opening an incident.
        let mut next_pending: Vec<Pending> = Vec::new();
        let mut ready: Vec<usize> = Vec::new();
        for (i, c) in causes.iter().enumerate() {
            if self.open.iter().any(|o| o.overlaps(&c.element)) {
                claimed[i] = true;
                continue;
            }
            if next_pending.iter().any(|p| p.element.overlaps(&c.element)) {
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
                ready.push(i);
            } else {
                next_pending.push(Pending {
                    element: c.element.clone(),
                    count,
                });
            }
        }
        self.pending = next_pending;
        let reopen_ms = rule.rule.reopen_within.ms();
        self.recent.retain(|o| end_ms - o.resolved_ms <= reopen_ms);
        let mut fresh: Option<usize> = None;
        for i in ready {
            let c = &causes[i];
            claimed[i] = true;
            let young = |o: &Open| {
                end_ms - o.incident.opened_at.timestamp_millis()
                    <= (i64::from(rule.rule.open_after) + JOIN_STEPS) * step_ms
            };
            if let Some(j) = self.recent.iter().rposition(|o| o.overlaps(&c.element)) {
                let mut o = self.recent.remove(j);
                o.clean = 0;
                o.told_ms = end_ms;
                let inc = &mut o.incident;
                let was = inc
                    .resolved_at
                    .map(|t| t.timestamp_millis())
                    .unwrap_or(end_ms);
                inc.status = Status::Open;
                inc.resolved_at = None;
                inc.updated_at = ts(end_ms);
                let detail = format!(
                    "reopened: {} failing again {} s after it resolved",
                    dims_text(&c.cause.dims),
                    (end_ms - was) / 1000
                );
                out.push(Change {
                    transition: Transition::Updated(inc.clone()),
                    notify: true,
                    timeline: vec![entry(end_ms, "reopened", detail)],
                    point: Some(point(end_ms, &c.cause, volume_rule)),
                    before: Vec::new(),
                });
                self.open.push(o);
            } else if let Some(j) = self
                .open
                .iter()
                .position(|o| young(o) || o.shares_a_value(&c.element))
            {
                // One more root cause of an incident just opened, or of one
                // whose values it shares: told in the next update.
                let o = &mut self.open[j];
                o.elements.push(c.element.clone());
                o.incident.root_causes.push(c.cause.clone());
                if fresh == Some(j) {
                    o.told.push(c.cause.dims.clone());
                }
            } else {
                fresh = Some(self.open.len());
                self.open.push(self.opened(rule, end_ms, c, &found));
            }
        }

        // Open incidents: still firing, or one clean step closer to resolving.
        let mut still_open = Vec::with_capacity(self.open.len());
        for (j, mut o) in std::mem::take(&mut self.open).into_iter().enumerate() {
            let mut firing = false;
            let mut pairs: Vec<(Element, RootCause)> = Vec::with_capacity(o.elements.len());
            for el in &o.elements {
                let (mut evidence, passes) = evaluate(el);
                firing |= passes;
                let now = causes.iter().find(|c| c.element.same_as(el));
                let before = o
                    .incident
                    .root_causes
                    .iter()
                    .find(|r| r.dims == evidence.dims);
                evidence.score = now
                    .map(|c| c.cause.score)
                    .or(before.map(|r| r.score))
                    .unwrap_or(0.0);
                pairs.push((el.clone(), evidence));
            }
            for (i, c) in causes.iter().enumerate() {
                if o.overlaps(&c.element) {
                    claimed[i] = true;
                    firing = true;
                }
            }
            if fresh != Some(j) {
                o.revise(&mut pairs, causes, &mut evaluate);
            }
            order(&mut pairs);
            let p = point(end_ms, &pairs[0].1, volume_rule);
            if fresh == Some(j) {
                // Opened this step: told as it is.
                (o.elements, o.incident.root_causes) = pairs.into_iter().unzip();
                o.record_peaks();
                o.incident.candidates = candidates_of(&o.elements, &found);
                o.told = o
                    .incident
                    .root_causes
                    .iter()
                    .map(|r| r.dims.clone())
                    .collect();
                out.push(Change {
                    transition: Transition::Opened(o.incident.clone()),
                    notify: true,
                    timeline: vec![entry(
                        end_ms,
                        "opened",
                        format!("anomalous for {} steps", rule.rule.open_after),
                    )],
                    point: Some(p),
                    before: Vec::new(),
                });
                still_open.push(o);
                continue;
            }
            if firing {
                o.clean = 0;
                (o.elements, o.incident.root_causes) = pairs.into_iter().unzip();
                o.record_peaks();
                let window_ms = rule.rule.window.ms();
                let inc = &mut o.incident;
                inc.candidates = candidates_of(&o.elements, &found);
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
                let news = news(rule, &mut o, end_ms, volume_rule);
                let notify = !news.is_empty();
                out.push(Change {
                    transition: Transition::Updated(o.incident.clone()),
                    notify,
                    timeline: if notify {
                        vec![entry(end_ms, "updated", news.join("; "))]
                    } else {
                        Vec::new()
                    },
                    point: Some(p),
                    before: Vec::new(),
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
                        before: Vec::new(),
                    });
                    o.resolved_ms = end_ms;
                    if reopen_ms > 0 {
                        self.recent.push(o);
                    }
                } else {
                    out.push(Change {
                        transition: Transition::Updated(o.incident.clone()),
                        notify: false,
                        timeline: Vec::new(),
                        point: Some(p),
                        before: Vec::new(),
                    });
                    still_open.push(o);
                }
            }
        }
        self.open = still_open;
        out
    }

    /// A new incident for cause `c` (more root causes may join it this step).
    fn opened(&self, rule: &CompiledRule, end_ms: i64, c: &Finding, found: &[&Finding]) -> Open {
        let window_ms = rule.rule.window.ms();
        let dims = c.cause.dims.clone();
        let fp = fingerprint(&rule.rule.name, &dims);
        let elements = vec![c.element.clone()];
        let candidates = candidates_of(&elements, found);
        let incident = Incident {
            id: incident_id(&fp, end_ms),
            rule: rule.rule.name.clone(),
            kind: rule.rule.kind.clone(),
            severity: rule.rule.severity,
            status: Status::Open,
            opened_at: ts(end_ms),
            updated_at: ts(end_ms),
            resolved_at: None,
            root_causes: vec![c.cause.clone()],
            window: TimeRange {
                start: ts(end_ms - window_ms),
                end: ts(end_ms),
            },
            title: String::new(),
            summary: String::new(),
            summary_source: SummarySource::Template,
            links: links(rule, &dims, end_ms, end_ms),
            prompt_version: None,
            candidates,
            episode: Default::default(),
        };
        Open {
            told: std::iter::once(dims).collect(),
            told_rate: c.cause.failure_rate,
            told_ms: end_ms,
            elements,
            incident,
            clean: 0,
            resolved_ms: 0,
            peaks: Vec::new(),
        }
    }

    /// Resolves every open incident (the rule was removed or the run ended).
    pub fn close_all(&mut self, end_ms: i64, why: &str) -> Vec<Change> {
        self.pending.clear();
        self.recent.clear();
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
                    before: Vec::new(),
                }
            })
            .collect()
    }

    /// The open incidents, latest state.
    pub fn open_incidents(&self) -> impl Iterator<Item = &Incident> {
        self.open.iter().map(|o| &o.incident)
    }
}

/// What people should hear of an open incident's step: the rule's severity
/// changed (a reload), a root cause or candidate nobody was told of, or a
/// much higher failure rate; evidence news at most once per window. Runner-up
/// order shifts from step to step; that is evidence, refreshed in the
/// incident, not news.
fn news(rule: &CompiledRule, o: &mut Open, end_ms: i64, volume_rule: bool) -> Vec<String> {
    let window_ms = rule.rule.window.ms();
    let inc = &mut o.incident;
    let mut news = Vec::new();
    if inc.severity != rule.rule.severity {
        news.push(format!(
            "severity {} -> {}",
            inc.severity.as_str(),
            rule.rule.severity.as_str()
        ));
        inc.severity = rule.rule.severity;
    }
    // A root cause that joined (or that the outage widened to) is news at once.
    for r in &inc.root_causes {
        if !o.told.contains(&r.dims) {
            news.push(format!("root cause now includes {}", dims_text(&r.dims)));
        }
    }
    // The window fills up over one window after opening (and after news of
    // a rise): that ramp is not news again.
    if end_ms - o.told_ms <= window_ms {
        o.told_rate = o.told_rate.max(inc.root_causes[0].failure_rate);
    }
    if end_ms - o.told_ms >= window_ms {
        let rate = inc.root_causes[0].failure_rate;
        if !volume_rule && rate >= o.told_rate * WORSE_RATIO && rate - o.told_rate >= WORSE_BY {
            news.push(format!(
                "failure rate up to {:.1}% from {:.1}%",
                rate * 100.0,
                o.told_rate * 100.0
            ));
        }
    }
    if !news.is_empty() {
        o.told_ms = end_ms;
        o.told_rate = inc.root_causes[0].failure_rate;
        for r in &inc.root_causes {
            if !o.told.contains(&r.dims) {
                o.told.push(r.dims.clone());
            }
        }
    }
    news
}

impl IncidentManager {
    /// Brings the episode's numbers (CONTRACT section 3: `began_at`, `current`, `peak`,
    /// `impact`, `error_codes`) of the incidents in this step's `changes` up
    /// to the step ending at `end_ms`, in the changes and in the incidents
    /// kept. `counts(elements, steps)` gives the own counts of the last
    /// `steps` steps (oldest first) of the cells within any of `elements`.
    pub fn record_episode(
        &mut self,
        rule: &CompiledRule,
        end_ms: i64,
        changes: &mut [Change],
        mut counts: impl FnMut(&[Element], usize) -> Vec<super::StepCounts>,
    ) {
        let volume = rule.rule.detector == crate::rules::Detector::VolumeDrop;
        let shape = (rule.step_ms(), rule.rule.window.ms());
        for ch in changes.iter_mut() {
            let inc = match &mut ch.transition {
                Transition::Opened(i) | Transition::Updated(i) | Transition::Resolved(i) => i,
            };
            let kept = self
                .open
                .iter_mut()
                .chain(self.recent.iter_mut())
                .find(|o| o.incident.id == inc.id);
            let elements = match &kept {
                Some(o) => o.elements.clone(),
                None => Vec::new(),
            };
            let mut ep = kept
                .as_ref()
                .map_or_else(|| inc.episode.clone(), |o| o.incident.episode.clone());
            if !ep.counted(end_ms) && !elements.is_empty() {
                let opening = ep.began_at.is_none();
                let steps = if opening { rule.history_steps() } else { 1 };
                let c = counts(&elements, steps);
                ep.advance(end_ms, shape, &c, &inc.root_causes, volume);
                if opening {
                    // The chart's "before": the first root cause's, as its
                    // later points are.
                    let first = if elements.len() > 1 {
                        counts(&elements[..1], steps)
                    } else {
                        c
                    };
                    let began_ms = ep.began_at.map_or(end_ms, |b| b.timestamp_millis());
                    ch.before = super::episode::before(
                        &first,
                        end_ms,
                        (rule.step_ms(), rule.window_steps()),
                        began_ms,
                        volume,
                    );
                }
            }
            if let Some(o) = kept {
                o.incident.episode = ep.clone();
            }
            inc.episode = ep;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incident_ids_never_hold_a_run_of_card_number_length() {
        let mut salted = 0;
        for k in 0..20_000i64 {
            let fp = format!("rule|provider=p{k}");
            let at = 1_772_410_841_000 + k;
            let id = incident_id(&fp, at);
            assert!(!crate::redact::has_long_digit_run(&id), "{id}");
            assert_eq!(id, incident_id(&fp, at), "stable");
            salted += usize::from(id != format!("inc_{:016x}", id_hash(&fp, at, 0)));
        }
        // The salt is the exception (about 1 in 100), not the rule.
        assert!((1..1000).contains(&salted), "{salted}");
    }
}
