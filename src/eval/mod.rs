//! Labelled scenarios scored against the incidents they produce.
//!
//! A scenario ([`crate::ingest::generator::Scenario`]) comes with labels: the
//! faults that must open an incident (with the rule that should catch each and
//! its expected root cause) and the quiet cases that must not. [`score`] matches
//! incidents to faults and reports recall, precision, root-cause accuracy and
//! time to detect, so changes to detection and localization are measured rather
//! than argued. `faultline gen` writes scenarios to disk, `faultline eval` scores
//! faultline (or, with `--naive`, the [`naive`] static-threshold baseline) on
//! one; `scenarios/README.md` says how they are used.
//!
//! # Matching
//!
//! An incident matches a fault when it has the fault's rule, it opened within
//! `[start, end + 5 min]` of the fault (event time), and any of its root causes
//! is compatible with any of the fault's expected elements (the same element,
//! or one lying within the other: a coarser or finer element still counts as
//! detecting the fault, but only the exact element counts for root-cause
//! accuracy; a BIN implies its prefixes; elements on unrelated dimensions,
//! such as a BIN and a provider x region, do not match). A
//! standard fault has one expected element, its dims; a family fault
//! ([`crate::ingest::families`]) may have several.
//!
//! **Element recall**: expected elements that appear exactly among the root
//! causes of the fault's matching incidents, over the expected elements of
//! detected faults. **Element precision**: root causes of matching incidents
//! equal to an expected element of a fault they match, over all root causes of
//! matching incidents.
//!
//! An incident matching no fault is a false positive. When it opened during a
//! quiet case (up to 5 min after its end) it is counted for that case: a case
//! about an element (a BIN, a merchant) claims incidents with a root cause
//! naming that element, a case about all traffic (`traffic_surge`, `diurnal`,
//! which spans the whole scenario, `failover`) claims any; the most specific
//! case wins.
//!
//! [`FamilySummary`] condenses a report into one row per scenario family with
//! a verdict against [`TARGETS`].

mod cli;
pub mod episode;
mod family;
pub mod naive;

pub use cli::{eval_command, gen_command, EvalArgs, FamilyChoice, GenArgs};
pub use family::{family_table, FamilySummary, Targets, TARGETS};

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::incident::Incident;
use crate::ingest::generator::{Family, FaultType, Labels, QuietType};

/// How long after a fault ends an incident opening still counts as detecting it.
pub const GRACE_MS: i64 = 5 * 60_000;

/// The scores of one run over one labelled scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// What produced the incidents: `faultline` or `naive`.
    pub detector: String,
    /// Faults in the labels.
    pub faults: usize,
    /// Faults with at least one matching incident.
    pub detected: usize,
    /// detected / faults (null without faults).
    pub recall: Option<f64>,
    /// Incidents scored.
    pub incidents: usize,
    /// Incidents matching some fault.
    pub matched_incidents: usize,
    /// matched incidents / incidents (null without incidents).
    pub precision: Option<f64>,
    /// Harmonic mean of recall and precision.
    pub f1: Option<f64>,
    /// Detected faults whose first matching incident's first root cause is
    /// exactly an expected element, over detected faults.
    pub root_cause_top1: Option<f64>,
    /// Expected elements named exactly by a root cause of a matching incident,
    /// over the expected elements of detected faults.
    #[serde(default)]
    pub element_recall: Option<f64>,
    /// Root causes of matching incidents equal to an expected element of a
    /// fault they match, over all root causes of matching incidents.
    #[serde(default)]
    pub element_precision: Option<f64>,
    /// Matching incidents per detected fault (1.0 is ideal: one incident per root cause).
    pub incidents_per_detected_fault: Option<f64>,
    /// Median of first matching incident's `opened_at` minus fault start, seconds
    /// of event time.
    pub median_ttd_s: Option<f64>,
    /// Unmatched incidents opened during a quiet case.
    pub quiet_incidents: usize,
    /// Those by quiet case type (every type in the labels, zeros included).
    pub quiet_by_type: BTreeMap<String, usize>,
    /// One row per fault.
    pub per_fault: Vec<FaultResult>,
    /// Incidents that match no fault.
    pub unmatched: Vec<UnmatchedIncident>,
    /// The scenario family scored (absent: `standard`).
    #[serde(default, skip_serializing_if = "Family::is_standard")]
    pub family: Family,
}

/// How one fault was detected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultResult {
    /// Fault id.
    pub id: String,
    /// Fault type.
    #[serde(rename = "type")]
    pub fault_type: FaultType,
    /// The rule that should catch it.
    pub rule: String,
    /// Expected root cause.
    pub expected: BTreeMap<String, String>,
    /// Fault start.
    pub start: DateTime<Utc>,
    /// At least one matching incident.
    pub detected: bool,
    /// Matching incidents.
    pub incidents: usize,
    /// Seconds from fault start to the first matching incident.
    pub ttd_s: Option<f64>,
    /// The first matching incident's first root cause.
    pub root_cause: Option<BTreeMap<String, String>>,
    /// `root_cause` equals an expected element.
    pub top1: bool,
    /// Every expected element (`expected` is the first).
    #[serde(default)]
    pub elements: Vec<BTreeMap<String, String>>,
    /// Expected elements named exactly by a root cause of a matching incident.
    #[serde(default)]
    pub elements_found: usize,
    /// The distinct root causes of the matching incidents, in order of opening.
    #[serde(default)]
    pub named: Vec<BTreeMap<String, String>>,
}

/// An incident that matches no fault (a false positive).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnmatchedIncident {
    /// Incident id.
    pub id: String,
    /// Its rule.
    pub rule: String,
    /// Its first root cause.
    pub dims: BTreeMap<String, String>,
    /// When it opened.
    pub opened_at: DateTime<Utc>,
    /// The quiet case it opened during, the most specific one when several apply.
    pub quiet: Option<QuietType>,
}

/// An element's dimensions with what they imply: a BIN fixes its prefixes
/// (`bin4` and the others).
fn with_implied(a: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut out = a.clone();
    if let Some(bin) = a.get("bin") {
        for n in 1..=5usize {
            if let Some(p) = bin.get(..n) {
                out.entry(format!("bin{n}"))
                    .or_insert_with(|| p.to_string());
            }
        }
    }
    out
}

/// One element lies within the other: the same, coarser (an ancestor, such
/// as the provider of a failing provider x region) or finer. Elements on
/// unrelated dimensions (a BIN and a provider x region) are not compatible,
/// even though no value contradicts the other.
fn compatible(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
    let within = |x: &BTreeMap<String, String>, y: &BTreeMap<String, String>| {
        let y = with_implied(y);
        x.iter().all(|(k, v)| y.get(k) == Some(v))
    };
    within(a, b) || within(b, a)
}

/// Any root cause of `i` compatible with any of `elements`.
fn matches_any(i: &Incident, elements: &[&BTreeMap<String, String>]) -> bool {
    i.root_causes
        .iter()
        .any(|rc| elements.iter().any(|e| compatible(&rc.dims, e)))
}

fn root_dims(i: &Incident) -> BTreeMap<String, String> {
    i.root_causes
        .first()
        .map(|r| r.dims.clone())
        .unwrap_or_default()
}

fn ratio(num: usize, den: usize) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Scores `incidents` (final states, any order) against a scenario's labels.
pub fn score(incidents: &[Incident], labels: &Labels) -> EvalReport {
    let grace = chrono::Duration::milliseconds(GRACE_MS);
    let dims: Vec<BTreeMap<String, String>> = incidents.iter().map(root_dims).collect();
    let mut matched = vec![false; incidents.len()];
    // Per incident: the expected elements of every fault it matches.
    let mut expected_of: Vec<Vec<&BTreeMap<String, String>>> = vec![Vec::new(); incidents.len()];
    let mut per_fault = Vec::with_capacity(labels.faults.len());
    let mut ttds = Vec::new();
    for f in &labels.faults {
        let elements = f.expected();
        let mut hits: Vec<usize> = (0..incidents.len())
            .filter(|&i| {
                let inc = &incidents[i];
                inc.rule == f.rule
                    && inc.opened_at >= f.start
                    && inc.opened_at <= f.end + grace
                    && matches_any(inc, &elements)
            })
            .collect();
        hits.sort_by_key(|&i| (incidents[i].opened_at, i));
        for &h in &hits {
            matched[h] = true;
            expected_of[h].extend(elements.iter().copied());
        }
        let mut named: Vec<BTreeMap<String, String>> = Vec::new();
        for &h in &hits {
            for rc in &incidents[h].root_causes {
                if !named.contains(&rc.dims) {
                    named.push(rc.dims.clone());
                }
            }
        }
        let elements_found = elements.iter().filter(|e| named.contains(**e)).count();
        let first = hits.first().copied();
        let ttd_s =
            first.map(|i| (incidents[i].opened_at - f.start).num_milliseconds() as f64 / 1000.0);
        if let Some(t) = ttd_s {
            ttds.push(t);
        }
        let root_cause = first.map(|i| dims[i].clone());
        per_fault.push(FaultResult {
            id: f.id.clone(),
            fault_type: f.fault_type,
            rule: f.rule.clone(),
            expected: f.dims.clone(),
            start: f.start,
            detected: first.is_some(),
            incidents: hits.len(),
            ttd_s,
            top1: root_cause.as_ref().is_some_and(|rc| elements.contains(&rc)),
            root_cause,
            elements: elements.into_iter().cloned().collect(),
            elements_found,
            named,
        });
    }
    let (mut exact_causes, mut all_causes) = (0usize, 0usize);
    for (inc, expected) in incidents.iter().zip(&expected_of) {
        if expected.is_empty() {
            continue;
        }
        all_causes += inc.root_causes.len();
        exact_causes += inc
            .root_causes
            .iter()
            .filter(|rc| expected.contains(&&rc.dims))
            .count();
    }

    let mut quiet_by_type: BTreeMap<String, usize> = labels
        .quiet
        .iter()
        .map(|q| (q.quiet_type.as_str().to_string(), 0))
        .collect();
    let mut unmatched = Vec::new();
    for (i, inc) in incidents.iter().enumerate() {
        if matched[i] {
            continue;
        }
        // A quiet case about an element claims incidents naming that element;
        // one about all traffic claims any. The most specific wins: most
        // dimensions, then the shortest.
        let names = |q: &&crate::ingest::generator::QuietLabel| {
            inc.root_causes
                .iter()
                .map(|rc| &rc.dims)
                .chain(inc.root_causes.is_empty().then_some(&dims[i]))
                .any(|d| q.dims.iter().all(|(k, v)| d.get(k) == Some(v)))
        };
        let quiet = labels
            .quiet
            .iter()
            .filter(|q| {
                inc.opened_at >= q.start
                    && inc.opened_at <= q.end + grace
                    && (names(q) || q.quiet_type.claims_any())
            })
            .max_by_key(|q| {
                let specific = if names(q) { q.dims.len() } else { 0 };
                (specific, std::cmp::Reverse(q.end - q.start))
            })
            .map(|q| q.quiet_type);
        if let Some(q) = quiet {
            *quiet_by_type.entry(q.as_str().to_string()).or_default() += 1;
        }
        unmatched.push(UnmatchedIncident {
            id: inc.id.clone(),
            rule: inc.rule.clone(),
            dims: dims[i].clone(),
            opened_at: inc.opened_at,
            quiet,
        });
    }
    unmatched.sort_by_key(|u| u.opened_at);

    let faults = labels.faults.len();
    let detected = per_fault.iter().filter(|f| f.detected).count();
    let (found, expected): (usize, usize) = per_fault
        .iter()
        .filter(|f| f.detected)
        .fold((0, 0), |(a, b), f| {
            (a + f.elements_found, b + f.elements.len())
        });
    let top1 = per_fault.iter().filter(|f| f.top1).count();
    let matched_incidents = matched.iter().filter(|m| **m).count();
    let recall = ratio(detected, faults);
    let precision = ratio(matched_incidents, incidents.len());
    let f1 = match (recall, precision) {
        (Some(r), Some(p)) if r + p > 0.0 => Some(2.0 * r * p / (r + p)),
        (Some(_), Some(_)) => Some(0.0),
        _ => None,
    };
    EvalReport {
        detector: "faultline".into(),
        faults,
        detected,
        recall,
        incidents: incidents.len(),
        matched_incidents,
        precision,
        f1,
        root_cause_top1: ratio(top1, detected),
        element_recall: ratio(found, expected),
        element_precision: ratio(exact_causes, all_causes),
        incidents_per_detected_fault: ratio(
            per_fault
                .iter()
                .filter(|f| f.detected)
                .map(|f| f.incidents)
                .sum(),
            detected,
        ),
        median_ttd_s: median(&mut ttds),
        quiet_incidents: unmatched.iter().filter(|u| u.quiet.is_some()).count(),
        quiet_by_type,
        per_fault,
        unmatched,
        family: labels.family,
    }
}

fn fmt_dims(d: &BTreeMap<String, String>) -> String {
    if d.is_empty() {
        return "-".into();
    }
    d.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "n/a".into(), |x| format!("{x:.decimals$}"))
}

impl EvalReport {
    /// A plain-text summary and per-fault table for humans.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "detector: {}", self.detector);
        let _ = writeln!(
            s,
            "recall {} ({}/{} faults)   precision {} ({}/{} incidents)   f1 {}",
            fmt_opt(self.recall, 2),
            self.detected,
            self.faults,
            fmt_opt(self.precision, 2),
            self.matched_incidents,
            self.incidents,
            fmt_opt(self.f1, 2),
        );
        let _ = writeln!(
            s,
            "root-cause top-1 {}   incidents per detected fault {}   median time to detect {} s",
            fmt_opt(self.root_cause_top1, 2),
            fmt_opt(self.incidents_per_detected_fault, 2),
            fmt_opt(self.median_ttd_s, 0),
        );
        let by_type: Vec<String> = self
            .quiet_by_type
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            s,
            "incidents during quiet cases {} ({})",
            self.quiet_incidents,
            by_type.join(", ")
        );

        let header = [
            "fault",
            "type",
            "rule",
            "expected",
            "det",
            "ttd_s",
            "inc",
            "top1",
            "root cause",
        ];
        let mut rows: Vec<[String; 9]> = vec![header.map(String::from)];
        for f in &self.per_fault {
            rows.push([
                f.id.clone(),
                f.fault_type.as_str().to_string(),
                f.rule.clone(),
                fmt_dims(&f.expected),
                if f.detected { "yes" } else { "NO" }.into(),
                fmt_opt(f.ttd_s, 0),
                f.incidents.to_string(),
                if f.top1 { "yes" } else { "no" }.into(),
                f.root_cause.as_ref().map_or_else(|| "-".into(), fmt_dims),
            ]);
        }
        s.push('\n');
        push_rows(&mut s, &rows);

        if !self.unmatched.is_empty() {
            let _ = writeln!(s, "\nunmatched incidents ({}):", self.unmatched.len());
            let mut rows: Vec<[String; 5]> =
                vec![
                    ["opened_at", "incident", "rule", "root cause", "quiet case"].map(String::from),
                ];
            for u in &self.unmatched {
                rows.push([
                    u.opened_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    u.id.clone(),
                    u.rule.clone(),
                    fmt_dims(&u.dims),
                    u.quiet.map_or("-", |q| q.as_str()).to_string(),
                ]);
            }
            push_rows(&mut s, &rows);
        }
        s
    }
}

/// Left-aligned columns separated by two spaces.
fn push_rows<const N: usize>(s: &mut String, rows: &[[String; N]]) {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in rows {
        let mut line = String::new();
        for (i, (c, w)) in r.iter().zip(widths).enumerate() {
            if i + 1 == N {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c:<w$}  ");
            }
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::{RootCause, Status, SummarySource, TimeRange};
    use crate::ingest::generator::Scenario;
    use crate::rules::Severity;

    fn incident(
        id: &str,
        rule: &str,
        dims: &BTreeMap<String, String>,
        at: DateTime<Utc>,
    ) -> Incident {
        Incident {
            id: id.into(),
            rule: rule.into(),
            kind: "auth".into(),
            severity: Severity::Critical,
            status: Status::Resolved,
            opened_at: at,
            updated_at: at,
            resolved_at: Some(at),
            root_causes: vec![RootCause {
                dims: dims.clone(),
                score: 1.0,
                events: 100,
                failures: 50,
                expected_failures: 1.0,
                failure_rate: 0.5,
                baseline_rate: 0.01,
                expected_events: None,
            }],
            window: TimeRange { start: at, end: at },
            title: String::new(),
            summary: String::new(),
            summary_source: SummarySource::Template,
            links: vec![],
            prompt_version: None,
            candidates: Vec::new(),
            episode: Default::default(),
        }
    }

    fn labels() -> Labels {
        Scenario::standard(3, 3 * 3_600_000, 200.0).labels()
    }

    fn perfect(labels: &Labels) -> Vec<Incident> {
        labels
            .faults
            .iter()
            .map(|f| {
                incident(
                    &format!("inc_{}", f.id),
                    &f.rule,
                    &f.dims,
                    f.start + chrono::Duration::seconds(60),
                )
            })
            .collect()
    }

    #[test]
    fn a_perfect_set_scores_one() {
        let labels = labels();
        assert_eq!(labels.faults.len(), 7);
        let r = score(&perfect(&labels), &labels);
        assert_eq!(r.recall, Some(1.0));
        assert_eq!(r.precision, Some(1.0));
        assert_eq!(r.f1, Some(1.0));
        assert_eq!(r.root_cause_top1, Some(1.0));
        assert_eq!(r.incidents_per_detected_fault, Some(1.0));
        assert_eq!(r.median_ttd_s, Some(60.0));
        assert_eq!(r.quiet_incidents, 0);
        assert!(r.unmatched.is_empty());
        let table = r.table();
        assert!(table.contains("recall 1.00"), "{table}");
        let json = serde_json::to_string(&r).unwrap();
        let back: EvalReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn no_incidents_means_no_recall_and_undefined_precision() {
        let labels = labels();
        let r = score(&[], &labels);
        assert_eq!(r.recall, Some(0.0));
        assert_eq!(r.precision, None);
        assert_eq!(r.root_cause_top1, None);
        assert!(r.table().contains("n/a"));
    }

    #[test]
    fn a_wrong_root_cause_lowers_top1_but_still_detects() {
        let labels = labels();
        let mut incs = perfect(&labels);
        // A finer element than expected: compatible, so detected, but not exact.
        let f = labels
            .faults
            .iter()
            .position(|f| f.fault_type == FaultType::ProviderRegionOutage)
            .unwrap();
        incs[f].root_causes[0]
            .dims
            .insert("bin".into(), "411111".into());
        let r = score(&incs, &labels);
        assert_eq!(r.recall, Some(1.0));
        assert_eq!(r.precision, Some(1.0));
        assert!((r.root_cause_top1.unwrap() - 6.0 / 7.0).abs() < 1e-9);
        assert!(!r.per_fault[f].top1);

        // A different value: not a match at all, and a false positive.
        let mut incs = perfect(&labels);
        let region = incs[f].root_causes[0].dims.get_mut("region").unwrap();
        *region = if region == "us-east-1" {
            "eu-west-1"
        } else {
            "us-east-1"
        }
        .into();
        let r = score(&incs, &labels);
        assert!((r.recall.unwrap() - 6.0 / 7.0).abs() < 1e-9);
        assert_eq!(r.unmatched.len(), 1);
        assert!(!r.per_fault[f].detected);
    }

    #[test]
    fn incidents_in_quiet_cases_lower_precision() {
        let labels = labels();
        let mut incs = perfect(&labels);
        let spike = labels
            .quiet
            .iter()
            .find(|q| q.quiet_type == QuietType::DeclineSpike)
            .unwrap();
        incs.push(incident(
            "inc_spike",
            "auth_technical_failures",
            &spike.dims,
            spike.start + chrono::Duration::seconds(90),
        ));
        let r = score(&incs, &labels);
        assert_eq!(r.recall, Some(1.0));
        assert!((r.precision.unwrap() - 7.0 / 8.0).abs() < 1e-9);
        assert_eq!(r.quiet_incidents, 1);
        assert_eq!(r.quiet_by_type["decline_spike"], 1);
        assert_eq!(r.unmatched[0].quiet, Some(QuietType::DeclineSpike));
        assert!(r.table().contains("inc_spike"));

        // A flaky merchant's incident during the decline spike is the merchant's.
        let flaky = labels
            .quiet
            .iter()
            .find(|q| q.quiet_type == QuietType::FlakyMerchant)
            .unwrap();
        let mut dims = flaky.dims.clone();
        dims.insert("provider".into(), "adyen".into());
        incs.push(incident(
            "inc_flaky",
            "webhook_delivery_failures",
            &dims,
            spike.start + chrono::Duration::seconds(120),
        ));
        let r = score(&incs, &labels);
        assert_eq!(r.quiet_by_type["flaky_merchant"], 1);
        assert_eq!(r.quiet_by_type["decline_spike"], 1);
        assert_eq!(r.quiet_incidents, 2);
    }

    fn dims(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// An incident with several root causes.
    fn multi(
        id: &str,
        rule: &str,
        causes: &[BTreeMap<String, String>],
        at: DateTime<Utc>,
    ) -> Incident {
        let mut inc = incident(id, rule, &causes[0], at);
        let rc = inc.root_causes[0].clone();
        inc.root_causes = causes
            .iter()
            .map(|d| RootCause {
                dims: d.clone(),
                ..rc.clone()
            })
            .collect();
        inc
    }

    #[test]
    fn elements_are_scored_one_by_one() {
        let labels = Scenario::family(Family::MultiSameParent, 1, 3 * 3_600_000, 200.0).labels();
        assert_eq!(labels.family, Family::MultiSameParent);
        let f = &labels.faults[0];
        let els = f.expected();
        assert!(els.len() >= 2, "{f:?}");
        let at = f.start + chrono::Duration::seconds(30);

        // One incident naming every element: perfect.
        let all: Vec<BTreeMap<String, String>> = els.iter().map(|e| (*e).clone()).collect();
        let r = score(&[multi("a", &f.rule, &all, at)], &labels);
        assert_eq!(r.per_fault[0].elements_found, els.len());
        assert_eq!(r.element_recall, Some(1.0));
        assert_eq!(r.element_precision, Some(1.0));
        assert_eq!(r.family, Family::MultiSameParent);

        // One incident per element, the second naming it second: all found, two incidents.
        let incs: Vec<Incident> = els
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let other = dims(&[("bin", "999999")]);
                let causes = if i == 0 {
                    vec![(*e).clone()]
                } else {
                    vec![other, (*e).clone()]
                };
                multi(&format!("i{i}"), &f.rule, &causes, at)
            })
            .collect();
        let r = score(&incs, &labels);
        assert_eq!(r.per_fault[0].incidents, els.len());
        assert_eq!(r.element_recall, Some(1.0));
        // The extra BIN root causes are no expected element.
        let total = 1 + 2 * (els.len() - 1);
        assert!((r.element_precision.unwrap() - els.len() as f64 / total as f64).abs() < 1e-9);
        assert_eq!(r.per_fault[0].named.len(), els.len() + 1);

        // The parent alone detects the fault but names no element.
        let parent = match (els[0].get("provider"), els[0].get("bin")) {
            (Some(p), _) => dims(&[("provider", p)]),
            (None, Some(b)) => dims(&[("bin4", &b[..4])]),
            _ => dims(&[("region", &els[0]["region"])]),
        };
        let r = score(&[incident("p", &f.rule, &parent, at)], &labels);
        assert_eq!(r.detected, 1);
        assert_eq!(r.element_recall, Some(0.0));
        assert_eq!(r.element_precision, Some(0.0));
        assert!(r.element_table().contains("!"), "{}", r.element_table());
    }

    #[test]
    fn family_rows_pass_and_fail_against_the_targets() {
        let labels = Scenario::family(Family::CauseBin, 2, 3 * 3_600_000, 200.0).labels();
        let mut incs = perfect(&labels);
        incs.iter_mut()
            .for_each(|i| i.opened_at -= chrono::Duration::seconds(30));
        let r = score(&incs, &labels);
        let row = FamilySummary::new(&r, 2, &TARGETS);
        assert!(row.pass, "{row:?}");
        assert_eq!(row.family, Family::CauseBin);
        // One fault missed, a storm on another.
        let mut incs = perfect(&labels);
        incs.remove(0);
        let f = &labels.faults[1];
        for i in 0..5 {
            incs.push(incident(
                &format!("s{i}"),
                &f.rule,
                &f.dims,
                f.start + chrono::Duration::seconds(90 + i),
            ));
        }
        let row = FamilySummary::new(&score(&incs, &labels), 2, &TARGETS);
        assert!(!row.pass);
        assert!(row.failed.contains(&"recall".to_string()), "{row:?}");
        assert!(
            row.failed.contains(&"incidents_per_fault".to_string()),
            "{row:?}"
        );
        assert!(
            !row.failed.contains(&"element_recall".to_string()),
            "{row:?}"
        );
        let table = family_table(std::slice::from_ref(&row), &TARGETS);
        assert!(table.contains("FAIL (recall"), "{table}");
        let back: FamilySummary =
            serde_json::from_str(&serde_json::to_string(&row).unwrap()).unwrap();
        assert_eq!(back, row);

        // Nothing detected: every metric fails, none passes as n/a.
        let row = FamilySummary::new(&score(&[], &labels), 2, &TARGETS);
        assert_eq!(row.failed.len(), 6, "{row:?}");

        // A quiet family: passes with no incident, fails with any, which its case claims.
        let quiet = Scenario::family(Family::Failover, 1, 3 * 3_600_000, 200.0).labels();
        assert!(quiet.faults.is_empty());
        let row = FamilySummary::new(&score(&[], &quiet), 1, &TARGETS);
        assert!(row.pass, "{row:?}");
        let case = quiet
            .quiet
            .iter()
            .find(|q| q.quiet_type == QuietType::Failover)
            .unwrap();
        let inc = incident(
            "vd",
            "settlement_volume_drop",
            &dims(&[("provider", "stripe"), ("region", "ap-southeast-1")]),
            case.start + chrono::Duration::seconds(60),
        );
        let r = score(&[inc], &quiet);
        assert_eq!(r.unmatched[0].quiet, Some(QuietType::Failover));
        let row = FamilySummary::new(&r, 1, &TARGETS);
        assert_eq!(
            row.failed,
            vec!["precision".to_string(), "quiet_incidents".to_string()]
        );
    }

    #[test]
    fn old_labels_and_reports_still_load() {
        // A standard labels file as written before families: no elements, no family.
        let labels = labels();
        let json = serde_json::to_string(&labels).unwrap();
        assert!(!json.contains("\"elements\"") && !json.contains("\"family\""));
        let back: Labels = serde_json::from_str(&json).unwrap();
        assert_eq!(back.family, Family::Standard);
        assert_eq!(back.faults[0].expected(), vec![&back.faults[0].dims]);
        let mut report = serde_json::to_value(score(&perfect(&labels), &labels)).unwrap();
        let obj = report.as_object_mut().unwrap();
        obj.remove("element_recall");
        obj.remove("element_precision");
        let back: EvalReport = serde_json::from_value(report).unwrap();
        assert_eq!(back.element_recall, None);
    }

    #[test]
    fn extra_incidents_and_late_openings() {
        let labels = labels();
        let mut incs = perfect(&labels);
        let f = &labels.faults[0];
        // A second incident for the same fault, opened in the grace period.
        incs.push(incident(
            "inc_again",
            &f.rule,
            &f.dims,
            f.end + chrono::Duration::seconds(240),
        ));
        // Opened too late: unmatched.
        incs.push(incident(
            "inc_late",
            &f.rule,
            &f.dims,
            f.end + chrono::Duration::seconds(400),
        ));
        let r = score(&incs, &labels);
        assert_eq!(r.per_fault[0].incidents, 2);
        assert!((r.incidents_per_detected_fault.unwrap() - 8.0 / 7.0).abs() < 1e-9);
        assert_eq!(r.unmatched.len(), 1);
        assert_eq!(r.unmatched[0].id, "inc_late");
    }
}
