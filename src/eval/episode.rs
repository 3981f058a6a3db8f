//! Scores the episode numbers of incidents (`peak`, `impact`, `began_at`,
//! `error_codes`) against the truth, worked out from the events themselves
//! and the labels, never from the engine.
//!
//! For each detected fault (its first matching incident, as [`super::score`]
//! matches them) and the fault's expected element under the fault's rule:
//! - the true baseline is the element's failure rate (or events per step)
//!   over the 30 minutes before the fault;
//! - the true peak is the worst 2-minute window (15 s steps) inside the
//!   fault: the highest failure rate, for volume rules the lowest share of
//!   the baseline volume;
//! - the true excess is failures beyond the baseline rate over the fault
//!   (volume rules: events missing);
//! - the fault's error codes are those holding at least 20 % of the excess
//!   failures.
//!
//! A fault passes each check when the incident's `peak` is within 25 %
//! (relative) of the true peak, its impact within 30 % of the true excess,
//! `began_at` within 90 s of the fault's start, and its first error code is
//! one of the fault's (checked only when the fault's failures carry codes).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::event::Event;
use crate::incident::Incident;
use crate::ingest::generator::{FaultLabel, Labels};
use crate::rules::{CompiledRule, Detector, Dim, RuleSet};

/// Bucket of the truth's series.
const STEP_MS: i64 = 15_000;
/// Buckets in the 2-minute window the peak is taken over.
const PEAK_STEPS: usize = 8;
/// How far before the fault the baseline is learned.
const BASELINE_MS: i64 = 30 * 60_000;
/// Tolerances of the checks.
const PEAK_TOLERANCE: f64 = 0.25;
const EXCESS_TOLERANCE: f64 = 0.30;
const BEGAN_TOLERANCE_MS: i64 = 90_000;
/// Least share of the excess failures a code must hold to be the fault's.
const CODE_SHARE: f64 = 0.2;

/// One detected fault's numbers, true and told.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultFacts {
    /// Fault id.
    pub fault: String,
    /// The incident scored.
    pub incident: String,
    /// True peak (failure rate, or share of normal volume) and the incident's.
    pub peak: (f64, Option<f64>),
    /// True excess failures (or missing events) and the incident's.
    pub excess: (f64, Option<f64>),
    /// Seconds between the incident's `began_at` and the fault's start
    /// (negative: before).
    pub began_off_s: Option<f64>,
    /// The fault's error codes and the incident's first one.
    pub codes: (Vec<String>, Option<String>),
    /// Which checks pass: peak, excess, began, codes (`None`: no codes to check).
    pub ok: (bool, bool, bool, Option<bool>),
}

/// The checks over one scenario.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EpisodeReport {
    /// Detected faults scored.
    pub scored: usize,
    /// Faults whose peak is within tolerance.
    pub peak_ok: usize,
    /// Faults whose impact is within tolerance.
    pub excess_ok: usize,
    /// Faults whose `began_at` is within tolerance.
    pub began_ok: usize,
    /// Faults whose error codes could be checked, and of those the right ones.
    pub codes_checked: usize,
    /// Faults whose first error code is one of the fault's.
    pub codes_ok: usize,
    /// Per fault.
    pub faults: Vec<FaultFacts>,
}

/// Counts of one element in one bucket.
#[derive(Debug, Clone, Default)]
struct Bucket {
    n: u64,
    f: u64,
    codes: BTreeMap<String, u64>,
}

/// One fault's series: buckets from `BASELINE_MS` before its start to its end.
struct Series<'a> {
    label: &'a FaultLabel,
    rule: &'a CompiledRule,
    dims: Vec<(Dim, String)>,
    from_ms: i64,
    buckets: Vec<Bucket>,
}

impl Series<'_> {
    fn add(&mut self, e: &Event) {
        if e.ts_ms < self.from_ms
            || e.ts_ms >= self.label.end.timestamp_millis()
            || !self.rule.matches(e)
            || !self
                .dims
                .iter()
                .all(|(d, v)| d.value(e) == Some(v.as_str()))
        {
            return;
        }
        let i = ((e.ts_ms - self.from_ms) / STEP_MS) as usize;
        let Some(b) = self.buckets.get_mut(i) else {
            return;
        };
        b.n += 1;
        if self.rule.is_failure(e) {
            b.f += 1;
            if let Some(c) = &e.error_code {
                *b.codes.entry(c.clone()).or_default() += 1;
            }
        }
    }
}

fn relative(truth: f64, told: Option<f64>, tolerance: f64) -> bool {
    told.is_some_and(|t| truth.abs() > 0.0 && ((t - truth) / truth).abs() <= tolerance)
}

/// Scores the incidents' episode numbers over the scenario's events `lines`.
pub fn score_episodes<I, L>(
    lines: I,
    labels: &Labels,
    incidents: &[Incident],
    rules: &RuleSet,
) -> EpisodeReport
where
    I: IntoIterator<Item = L>,
    L: AsRef<[u8]>,
{
    // The first matching incident of each fault, as `score` matches them.
    let mut pairs: Vec<(&FaultLabel, &Incident)> = Vec::new();
    for f in &labels.faults {
        let refs = f.expected();
        let (start, end) = (f.start.timestamp_millis(), f.end.timestamp_millis());
        let first = incidents
            .iter()
            .filter(|i| {
                let at = i.opened_at.timestamp_millis();
                i.rule == f.rule
                    && at >= start
                    && at <= end + super::GRACE_MS
                    && super::matches_any(i, &refs)
            })
            .min_by_key(|i| i.opened_at);
        if let Some(i) = first {
            pairs.push((f, i));
        }
    }
    let mut series: Vec<Series> = pairs
        .iter()
        .filter_map(|(f, _)| {
            let rule = rules.get(&f.rule)?;
            // A cause named by its error code spans all traffic: its rate
            // is over every event, not over the code's own (all failures).
            let dims = f
                .dims
                .iter()
                .filter(|(k, _)| k.as_str() != "error_code")
                .map(|(k, v)| Some((Dim::parse(k)?, v.clone())))
                .collect::<Option<Vec<_>>>()?;
            let from_ms = f.start.timestamp_millis() - BASELINE_MS;
            let len = ((f.end.timestamp_millis() - from_ms) / STEP_MS + 1) as usize;
            Some(Series {
                label: f,
                rule,
                dims,
                from_ms,
                buckets: vec![Bucket::default(); len],
            })
        })
        .collect();
    for line in lines {
        let Ok(e) = crate::event::parse(line.as_ref()) else {
            continue;
        };
        for s in &mut series {
            s.add(&e);
        }
    }
    let mut report = EpisodeReport::default();
    for s in &series {
        let Some((_, inc)) = pairs.iter().find(|(f, _)| f.id == s.label.id) else {
            continue;
        };
        let ff = judge(s, inc);
        report.scored += 1;
        report.peak_ok += usize::from(ff.ok.0);
        report.excess_ok += usize::from(ff.ok.1);
        report.began_ok += usize::from(ff.ok.2);
        if let Some(ok) = ff.ok.3 {
            report.codes_checked += 1;
            report.codes_ok += usize::from(ok);
        }
        report.faults.push(ff);
    }
    report
}

/// The truth of one fault's series against its incident.
fn judge(s: &Series, inc: &Incident) -> FaultFacts {
    let volume = s.rule.rule.detector == Detector::VolumeDrop;
    let before = (BASELINE_MS / STEP_MS) as usize;
    let (base, during) = s.buckets.split_at(before.min(s.buckets.len()));
    let (bn, bf) = base
        .iter()
        .fold((0u64, 0u64), |(n, f), b| (n + b.n, f + b.f));
    let rate = if bn > 0 { bf as f64 / bn as f64 } else { 0.0 };
    let per_step = bn as f64 / base.len().max(1) as f64;
    let span = PEAK_STEPS.min(during.len()).max(1);
    let windows = during.windows(span).map(|w| {
        let (n, f) = w.iter().fold((0u64, 0u64), |(n, f), b| (n + b.n, f + b.f));
        (n, f)
    });
    let true_peak = if volume {
        windows
            .map(|(n, _)| n as f64 / (per_step * span as f64).max(1e-9))
            .fold(f64::INFINITY, f64::min)
    } else {
        windows
            .filter(|(n, _)| *n > 0)
            .map(|(n, f)| f as f64 / n as f64)
            .fold(0.0, f64::max)
    };
    let true_excess: f64 = during
        .iter()
        .map(|b| {
            if volume {
                per_step - b.n as f64
            } else {
                b.f as f64 - b.n as f64 * rate
            }
        })
        .sum();
    // Codes: excess failures per code over the fault against their share before.
    let mut before_codes: BTreeMap<&str, u64> = BTreeMap::new();
    for b in base {
        for (c, n) in &b.codes {
            *before_codes.entry(c).or_default() += n;
        }
    }
    let mut during_codes: BTreeMap<&str, u64> = BTreeMap::new();
    for b in during {
        for (c, n) in &b.codes {
            *during_codes.entry(c).or_default() += n;
        }
    }
    let dn: u64 = during.iter().map(|b| b.n).sum();
    let code_excess: Vec<(&str, f64)> = during_codes
        .iter()
        .map(|(c, n)| {
            let usual = if bn > 0 {
                before_codes.get(c).copied().unwrap_or(0) as f64 / bn as f64
            } else {
                0.0
            };
            (*c, (*n as f64 - usual * dn as f64).max(0.0))
        })
        .collect();
    let total: f64 = code_excess.iter().map(|x| x.1).sum();
    let codes: Vec<String> = code_excess
        .iter()
        .filter(|(_, x)| total > 0.0 && *x >= CODE_SHARE * total)
        .map(|(c, _)| c.to_string())
        .collect();
    let ep = &inc.episode;
    let told_peak = ep
        .peak
        .as_ref()
        .and_then(|p| if volume { p.share } else { p.failure_rate });
    let told_excess = ep.impact.as_ref().and_then(|i| {
        if volume {
            i.missing_events
        } else {
            i.excess_failures
        }
    });
    let began_off_s = ep
        .began_at
        .map(|b| (b - s.label.start).num_milliseconds() as f64 / 1000.0);
    let told_code = ep.error_codes.first().map(|c| c.code.clone());
    let code_ok = (!codes.is_empty() && !volume)
        .then(|| told_code.as_ref().is_some_and(|c| codes.contains(c)));
    let peak_ok = if volume {
        // A share near zero: compare the missing share instead.
        relative(1.0 - true_peak, told_peak.map(|p| 1.0 - p), PEAK_TOLERANCE)
    } else {
        relative(true_peak, told_peak, PEAK_TOLERANCE)
    };
    FaultFacts {
        fault: s.label.id.clone(),
        incident: inc.id.clone(),
        peak: (round(true_peak), told_peak),
        excess: (true_excess.round(), told_excess),
        began_off_s,
        ok: (
            peak_ok,
            relative(true_excess, told_excess, EXCESS_TOLERANCE),
            began_off_s.is_some_and(|o| o.abs() * 1000.0 <= BEGAN_TOLERANCE_MS as f64),
            code_ok,
        ),
        codes: (codes, told_code),
    }
}

fn round(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

impl EpisodeReport {
    /// `peak 5/6, impact 4/6, began 6/6, codes 3/3`.
    pub fn line(&self) -> String {
        format!(
            "peak {}/{}, impact {}/{}, began {}/{}, codes {}/{}",
            self.peak_ok,
            self.scored,
            self.excess_ok,
            self.scored,
            self.began_ok,
            self.scored,
            self.codes_ok,
            self.codes_checked
        )
    }

    /// One row per fault: true and told numbers.
    pub fn table(&self) -> String {
        let mut s = String::from(
            "fault  peak true/told        excess true/told     began off  codes true/told\n",
        );
        let opt = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x}"));
        for f in &self.faults {
            let mark = |ok: bool| if ok { "" } else { " !" };
            let _ = writeln!(
                s,
                "{:<6} {:.4}/{}{:<8} {}/{}{:<8} {}s{} {:?}/{}{}",
                f.fault,
                f.peak.0,
                opt(f.peak.1),
                mark(f.ok.0),
                f.excess.0,
                opt(f.excess.1),
                mark(f.ok.1),
                opt(f.began_off_s),
                mark(f.ok.2),
                f.codes.0,
                f.codes.1.as_deref().unwrap_or("-"),
                mark(f.ok.3.unwrap_or(true)),
            );
        }
        s
    }
}
