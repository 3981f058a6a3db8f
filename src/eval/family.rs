//! One row per scenario family: the report's headline metrics and a verdict
//! against the targets.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{fmt_dims, fmt_opt, push_rows, EvalReport};
use crate::ingest::generator::Family;

/// What a family must reach to pass.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Targets {
    /// Least recall.
    pub recall: f64,
    /// Least precision.
    pub precision: f64,
    /// Least element recall.
    pub element_recall: f64,
    /// Least element precision.
    pub element_precision: f64,
    /// Most matching incidents per detected fault.
    pub incidents_per_fault: f64,
    /// Longest median time to detect, seconds.
    pub median_ttd_s: f64,
    /// Most incidents in quiet cases.
    pub quiet_incidents: usize,
}

/// The targets every family is held to.
pub const TARGETS: Targets = Targets {
    recall: 0.95,
    precision: 0.95,
    element_recall: 0.9,
    element_precision: 0.9,
    incidents_per_fault: 1.2,
    median_ttd_s: 45.0,
    quiet_incidents: 0,
};

/// The headline of one family's report, with its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FamilySummary {
    /// The family.
    pub family: Family,
    /// `faultline` or `naive`.
    pub detector: String,
    /// The scenario's seed.
    pub seed: u64,
    /// Faults (0 in the quiet families).
    pub faults: usize,
    /// Faults with a matching incident.
    pub detected: usize,
    /// detected / faults.
    pub recall: Option<f64>,
    /// Incidents opened.
    pub incidents: usize,
    /// Incidents matching a fault.
    pub matched_incidents: usize,
    /// matched incidents / incidents.
    pub precision: Option<f64>,
    /// See [`EvalReport::element_recall`].
    pub element_recall: Option<f64>,
    /// See [`EvalReport::element_precision`].
    pub element_precision: Option<f64>,
    /// Matching incidents per detected fault.
    pub incidents_per_fault: Option<f64>,
    /// Median seconds from fault start to its first matching incident.
    pub median_ttd_s: Option<f64>,
    /// Unmatched incidents opened during a quiet case (the daily swing spans
    /// the whole scenario, so: every false positive).
    pub quiet_incidents: usize,
    /// The checks that failed (empty: PASS).
    pub failed: Vec<String>,
    /// No check failed.
    pub pass: bool,
}

impl FamilySummary {
    /// The summary of `report`, checked against `targets`. With faults, every
    /// metric must be defined and on target; without (the quiet families),
    /// there must be no incident at all.
    pub fn new(report: &EvalReport, seed: u64, targets: &Targets) -> FamilySummary {
        let mut failed = Vec::new();
        let mut check = |name: &str, value: Option<f64>, ok: &dyn Fn(f64) -> bool| {
            if !value.is_some_and(ok) {
                failed.push(name.to_string());
            }
        };
        if report.faults > 0 {
            check("recall", report.recall, &|x| x >= targets.recall);
            check("precision", report.precision, &|x| x >= targets.precision);
            check("element_recall", report.element_recall, &|x| {
                x >= targets.element_recall
            });
            check("element_precision", report.element_precision, &|x| {
                x >= targets.element_precision
            });
            check(
                "incidents_per_fault",
                report.incidents_per_detected_fault,
                &|x| x <= targets.incidents_per_fault,
            );
            check("median_ttd", report.median_ttd_s, &|x| {
                x <= targets.median_ttd_s
            });
        } else if report.incidents > 0 {
            failed.push("precision".into());
        }
        if report.quiet_incidents > targets.quiet_incidents {
            failed.push("quiet_incidents".into());
        }
        FamilySummary {
            family: report.family,
            detector: report.detector.clone(),
            seed,
            faults: report.faults,
            detected: report.detected,
            recall: report.recall,
            incidents: report.incidents,
            matched_incidents: report.matched_incidents,
            precision: report.precision,
            element_recall: report.element_recall,
            element_precision: report.element_precision,
            incidents_per_fault: report.incidents_per_detected_fault,
            median_ttd_s: report.median_ttd_s,
            quiet_incidents: report.quiet_incidents,
            pass: failed.is_empty(),
            failed,
        }
    }
}

/// One row per family, PASS or FAIL with the failed checks; a line with the
/// targets first.
pub fn family_table(rows: &[FamilySummary], targets: &Targets) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "targets: recall >= {}, precision >= {}, element recall >= {}, element precision >= {}, incidents/fault <= {}, median ttd <= {} s, quiet incidents <= {}",
        targets.recall,
        targets.precision,
        targets.element_recall,
        targets.element_precision,
        targets.incidents_per_fault,
        targets.median_ttd_s,
        targets.quiet_incidents
    );
    let mut table: Vec<[String; 11]> = vec![[
        "family", "faults", "recall", "prec", "el_rec", "el_prec", "inc/f", "ttd_s", "incid",
        "quiet", "verdict",
    ]
    .map(String::from)];
    for r in rows {
        table.push([
            r.family.as_str().to_string(),
            r.faults.to_string(),
            fmt_opt(r.recall, 2),
            fmt_opt(r.precision, 2),
            fmt_opt(r.element_recall, 2),
            fmt_opt(r.element_precision, 2),
            fmt_opt(r.incidents_per_fault, 2),
            fmt_opt(r.median_ttd_s, 0),
            r.incidents.to_string(),
            r.quiet_incidents.to_string(),
            if r.pass {
                "PASS".to_string()
            } else {
                format!("FAIL ({})", r.failed.join(", "))
            },
        ]);
    }
    push_rows(&mut s, &table);
    s
}

impl EvalReport {
    /// Per fault: every expected element, how many a matching incident named,
    /// and every root cause the matching incidents named (`!` marks one that is
    /// no expected element); then the unmatched incidents.
    pub fn element_table(&self) -> String {
        let mut s = String::new();
        let mut rows: Vec<[String; 8]> = vec![[
            "fault",
            "rule",
            "expected elements",
            "det",
            "ttd_s",
            "inc",
            "found",
            "named",
        ]
        .map(String::from)];
        for f in &self.per_fault {
            let elements: Vec<String> = f.elements.iter().map(fmt_dims).collect();
            let named: Vec<String> = f
                .named
                .iter()
                .map(|d| {
                    let mark = if f.elements.contains(d) { "" } else { "!" };
                    format!("{mark}{}", fmt_dims(d))
                })
                .collect();
            rows.push([
                f.id.clone(),
                f.rule.clone(),
                elements.join(" ; "),
                if f.detected { "yes" } else { "NO" }.into(),
                fmt_opt(f.ttd_s, 0),
                f.incidents.to_string(),
                format!("{}/{}", f.elements_found, f.elements.len()),
                if named.is_empty() {
                    "-".into()
                } else {
                    named.join(" ; ")
                },
            ]);
        }
        push_rows(&mut s, &rows);
        if !self.unmatched.is_empty() {
            let mut by: BTreeMap<(String, String), usize> = BTreeMap::new();
            for u in &self.unmatched {
                *by.entry((u.rule.clone(), fmt_dims(&u.dims))).or_default() += 1;
            }
            let _ = writeln!(
                s,
                "unmatched incidents: {} ({} distinct rule x root cause)",
                self.unmatched.len(),
                by.len()
            );
            let mut rows: Vec<[String; 4]> =
                vec![["opened_at", "rule", "root cause", "quiet case"].map(String::from)];
            for u in &self.unmatched {
                rows.push([
                    u.opened_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
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
