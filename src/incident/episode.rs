//! The episode's numbers (CONTRACT section 3): when it began, how it stands,
//! how bad it got, what it cost and which error codes failed.
//!
//! They are worked out from the counts the engine already keeps: each step
//! the engine hands over the step's own counts of the incident's root-cause
//! elements ([`StepCounts`]); when an incident is first told of, the counts
//! of every step of its window, from which [`began`] finds the step the
//! failures started to exceed the baseline. `current` and `peak` are windows
//! of the root causes' evidence; `impact` sums the steps from `began_at` on.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ts, RootCause, TimeRange};

/// One window's numbers of the incident's root causes together. Rate rules
/// carry failure fields, volume rules `expected_events` and `share`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reading {
    /// The window.
    pub window: TimeRange,
    /// Attempts (events) in the window.
    pub events: u64,
    /// Failures in the window (rate rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<u64>,
    /// failures / events (rate rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<f64>,
    /// The baseline failure rate (rate rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_rate: Option<f64>,
    /// Events expected from the learned volume (volume rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_events: Option<f64>,
    /// events / expected_events (volume rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<f64>,
}

/// Sums over the whole episode, from `began_at` to `resolved_at` or now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Impact {
    /// Attempts (events).
    pub events: u64,
    /// Failures (rate rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<u64>,
    /// Failures the baseline expected (rate rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_failures: Option<f64>,
    /// failures - expected_failures (rate rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excess_failures: Option<f64>,
    /// Events the learned volume expected (volume rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_events: Option<f64>,
    /// expected_events - events (volume rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_events: Option<f64>,
}

/// An error code behind the excess failures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CodeShare {
    /// The event's `error_code`.
    pub code: String,
    /// Failures with this code over the episode.
    pub failures: u64,
    /// Its share of the excess failures, 0..1.
    pub share: f64,
}

/// What the incident tells beyond its root causes. Every field may be absent
/// (an incident from before they existed, or a feature turned off).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Episode {
    /// Event time the root cause's failures started to exceed the baseline.
    #[serde(default)]
    pub began_at: Option<DateTime<Utc>>,
    /// The latest evaluated window.
    #[serde(default)]
    pub current: Option<Reading>,
    /// The worst window of the episode (volume rules: the lowest share).
    #[serde(default)]
    pub peak: Option<Reading>,
    /// Sums over the episode.
    #[serde(default)]
    pub impact: Option<Impact>,
    /// The codes behind the excess failures, most first.
    #[serde(default)]
    pub error_codes: Vec<CodeShare>,
    /// The incident's own page, when `FAULTLINE_PUBLIC_URL` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Per error code, failures and the failures its usual share of the
    /// baseline expected, over the episode (the sums `error_codes` is made
    /// from; kept in memory only).
    #[serde(skip)]
    code_sums: BTreeMap<String, (u64, f64)>,
    /// End of the last step counted (event time, ms): a step is counted once
    /// even when two changes of one step carry the incident.
    #[serde(skip)]
    counted_ms: i64,
    /// Unrounded sum behind `impact`'s expected failures or events.
    #[serde(skip)]
    expected_sum: f64,
}

/// Equal when what they tell is equal (the in-memory sums aside).
impl PartialEq for Episode {
    fn eq(&self, o: &Episode) -> bool {
        self.began_at == o.began_at
            && self.current == o.current
            && self.peak == o.peak
            && self.impact == o.impact
            && self.error_codes == o.error_codes
            && self.url == o.url
    }
}

/// One step's own counts of a set of elements, as the engine hands them over.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepCounts {
    /// Attempts (events).
    pub events: u64,
    /// Failures (rate rules).
    pub failures: u64,
    /// Failures the baseline expected (rate rules) or events the learned
    /// volume expected (volume rules).
    pub expected: f64,
    /// Per error code: failures and the failures its usual share expected.
    pub codes: Vec<(String, u64, f64)>,
}

impl StepCounts {
    /// Failures beyond the baseline (rate rules) or events missing (volume rules).
    fn excess(&self, volume: bool) -> f64 {
        if volume {
            self.expected - self.events as f64
        } else {
            self.failures as f64 - self.expected
        }
    }
}

/// Most error codes an incident lists.
const MAX_CODES: usize = 5;
/// Least share of the excess a code must hold to be listed.
const MIN_CODE_SHARE: f64 = 0.02;

/// Index in `steps` (oldest first) of the step the episode began with: the
/// start of the suffix whose excess beyond noise is largest. Each step is
/// charged about two standard deviations of its expectation (Poisson), so
/// steps of normal traffic lower a suffix's sum and steps of the outage
/// raise it; a cumulative-sum change point. The newest step when no step
/// stands out.
pub fn began(steps: &[StepCounts], volume: bool) -> usize {
    let mut best = (f64::MIN, steps.len().saturating_sub(1));
    let mut sum = 0.0;
    for (i, s) in steps.iter().enumerate().rev() {
        sum += s.excess(volume) - (2.0 * s.expected.max(0.0).sqrt() + 1.0);
        if sum > best.0 {
            best = (sum, i);
        }
    }
    best.1
}

fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

/// The root causes' window evidence together, as a reading of `window`.
pub fn reading(root_causes: &[RootCause], window: TimeRange, volume: bool) -> Reading {
    let events: u64 = root_causes.iter().map(|r| r.events).sum();
    if volume {
        let expected: f64 = root_causes
            .iter()
            .map(|r| r.expected_events.unwrap_or(0.0))
            .sum();
        return Reading {
            window,
            events,
            failures: None,
            failure_rate: None,
            baseline_rate: None,
            expected_events: Some(round(expected, 1)),
            share: Some(if expected > 0.0 {
                round(events as f64 / expected, 4)
            } else {
                0.0
            }),
        };
    }
    let failures: u64 = root_causes.iter().map(|r| r.failures).sum();
    let expected: f64 = root_causes.iter().map(|r| r.expected_failures).sum();
    let rate = |x: f64| {
        if events > 0 {
            round(x / events as f64, 4)
        } else {
            0.0
        }
    };
    Reading {
        window,
        events,
        failures: Some(failures),
        failure_rate: Some(rate(failures as f64)),
        baseline_rate: Some(rate(expected)),
        expected_events: None,
        share: None,
    }
}

/// Whether reading `a` is worse than `b` (higher failure rate, lower share).
fn worse(a: &Reading, b: &Reading) -> bool {
    match (a.failure_rate, b.failure_rate, a.share, b.share) {
        (Some(x), Some(y), _, _) => x > y,
        (_, _, Some(x), Some(y)) => x < y,
        _ => false,
    }
}

impl Episode {
    /// Whether the step ending at `end_ms` is already counted.
    pub fn counted(&self, end_ms: i64) -> bool {
        self.counted_ms >= end_ms && self.began_at.is_some()
    }

    /// Takes in the step ending at `end_ms`: `steps` are the own counts of
    /// the root-cause elements, oldest first (the whole window the first
    /// time, when `began_at` is still unknown; the step alone after), and
    /// `root_causes` their window evidence now.
    pub fn advance(
        &mut self,
        end_ms: i64,
        (step_ms, window_ms): (i64, i64),
        steps: &[StepCounts],
        root_causes: &[RootCause],
        volume: bool,
    ) {
        if self.counted(end_ms) {
            return;
        }
        let first = if self.began_at.is_none() {
            let i = began(steps, volume);
            let back = (steps.len() - i) as i64;
            self.began_at = Some(ts(end_ms - back * step_ms));
            i
        } else {
            0
        };
        let mut imp = self.impact.take().unwrap_or_default();
        let (mut failures, mut expected) = (imp.failures.unwrap_or(0), self.expected_sum);
        for s in steps.iter().skip(first) {
            imp.events += s.events;
            failures += s.failures;
            expected += s.expected;
            for (code, f, e) in &s.codes {
                let sum = self.code_sums.entry(code.clone()).or_default();
                sum.0 += f;
                sum.1 += e;
            }
        }
        if volume {
            imp.expected_events = Some(round(expected, 1));
            imp.missing_events = Some(round((expected - imp.events as f64).max(0.0), 1));
        } else {
            imp.failures = Some(failures);
            imp.expected_failures = Some(round(expected, 1));
            imp.excess_failures = Some(round((failures as f64 - expected).max(0.0), 1));
        }
        self.impact = Some(imp);
        self.expected_sum = expected;
        self.error_codes = code_shares(&self.code_sums);
        let window = TimeRange {
            start: ts(end_ms - window_ms),
            end: ts(end_ms),
        };
        let now = reading(root_causes, window, volume);
        if self.peak.as_ref().is_none_or(|p| worse(&now, p)) {
            self.peak = Some(now.clone());
        }
        self.current = Some(now);
        self.counted_ms = end_ms;
    }
}

/// The codes behind the excess: each code's failures beyond what its usual
/// share expected, as a share of all codes' excess, most first.
fn code_shares(sums: &BTreeMap<String, (u64, f64)>) -> Vec<CodeShare> {
    let excess: Vec<(&String, u64, f64)> = sums
        .iter()
        .map(|(c, (f, e))| (c, *f, (*f as f64 - e).max(0.0)))
        .filter(|x| x.2 > 0.0)
        .collect();
    let total: f64 = excess.iter().map(|x| x.2).sum();
    let mut out: Vec<CodeShare> = excess
        .into_iter()
        .map(|(c, f, x)| CodeShare {
            code: c.clone(),
            failures: f,
            share: round(x / total, 3),
        })
        .filter(|c| c.share >= MIN_CODE_SHARE)
        .collect();
    out.sort_by(|a, b| b.share.total_cmp(&a.share).then(a.code.cmp(&b.code)));
    out.truncate(MAX_CODES);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(events: u64, failures: u64, expected: f64) -> StepCounts {
        StepCounts {
            events,
            failures,
            expected,
            codes: Vec::new(),
        }
    }

    #[test]
    fn the_episode_begins_where_failures_leave_the_baseline() {
        // Four normal steps (1 % of 400), then four at 40 %.
        let mut steps: Vec<StepCounts> = [3, 5, 4, 4].iter().map(|f| step(400, *f, 4.0)).collect();
        steps.extend((0..4).map(|_| step(400, 160, 4.0)));
        assert_eq!(began(&steps, false), 4);
        // A volume drop: half the expected events from the third step.
        let vol: Vec<StepCounts> = [100, 98, 50, 45, 40]
            .iter()
            .map(|n| step(*n, 0, 100.0))
            .collect();
        assert_eq!(began(&vol, true), 2);
        // Nothing stands out: the newest step.
        let calm: Vec<StepCounts> = (0..5).map(|_| step(400, 4, 4.0)).collect();
        assert_eq!(began(&calm, false), 4);
    }

    fn cause(events: u64, failures: u64, expected: f64) -> RootCause {
        RootCause {
            dims: BTreeMap::new(),
            score: 1.0,
            events,
            failures,
            expected_failures: expected,
            failure_rate: failures as f64 / events as f64,
            baseline_rate: expected / events as f64,
            expected_events: None,
        }
    }

    #[test]
    fn impact_sums_the_episode_and_peak_keeps_the_worst_window() {
        let mut f = Episode::default();
        let mut window: Vec<StepCounts> = (0..4).map(|_| step(100, 1, 1.0)).collect();
        window.extend((0..2).map(|_| StepCounts {
            codes: vec![
                ("issuer_unavailable".into(), 45, 0.2),
                ("timeout".into(), 4, 0.8),
            ],
            ..step(100, 50, 1.0)
        }));
        f.advance(
            600_000,
            (15_000, 90_000),
            &window,
            &[cause(600, 104, 6.0)],
            false,
        );
        assert_eq!(f.began_at, Some(ts(600_000 - 30_000)));
        let imp = f.impact.clone().unwrap();
        assert_eq!((imp.events, imp.failures), (200, Some(100)));
        assert_eq!(imp.excess_failures, Some(98.0));
        // Worse, then better: the peak stays at the worst.
        f.advance(
            615_000,
            (15_000, 90_000),
            &[step(100, 80, 1.0)],
            &[cause(600, 300, 6.0)],
            false,
        );
        f.advance(
            630_000,
            (15_000, 90_000),
            &[step(100, 2, 1.0)],
            &[cause(600, 200, 6.0)],
            false,
        );
        // The same step again counts nothing.
        f.advance(
            630_000,
            (15_000, 90_000),
            &[step(100, 2, 1.0)],
            &[cause(600, 200, 6.0)],
            false,
        );
        let imp = f.impact.clone().unwrap();
        assert_eq!((imp.events, imp.failures), (400, Some(182)));
        assert_eq!(f.peak.as_ref().unwrap().failure_rate, Some(0.5));
        assert_eq!(f.peak.as_ref().unwrap().window.end, ts(615_000));
        assert_eq!(f.current.as_ref().unwrap().failure_rate, Some(0.3333));
        assert_eq!(f.error_codes[0].code, "issuer_unavailable");
        assert_eq!(f.error_codes[0].failures, 90);
        assert!(f.error_codes[0].share > 0.9);
    }
}
