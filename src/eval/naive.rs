//! The naive baseline `faultline eval --naive` compares faultline against: a
//! static threshold per leaf cell, the alert most teams start with.
//!
//! For every rule, every leaf cell (a full combination of the rule's dimension
//! values) is evaluated every 30 s of event time over the last 5 minutes:
//!
//! - rate rules: an incident while the cell's failure ratio is above 5% with at
//!   least 20 events;
//! - volume-drop rules: an incident while the cell's 5-minute count is below 30%
//!   of its previous 5-minute count (which had at least 20 events).
//!
//! No baselines, no localization: the root cause is always the full cell. This
//! is for evaluation, not the product; it favours clarity over speed.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use rustc_hash::{FxHashMap, FxHashSet, FxHasher};

use crate::incident::{ts, Incident, RootCause, Status, SummarySource, TimeRange};
use crate::rules::{CompiledRule, Detector, RuleSet};

/// Evaluation step, event time.
pub const STEP_MS: i64 = 30_000;
/// Window, event time.
pub const WINDOW_MS: i64 = 5 * 60_000;
/// How late an event may arrive (behind the newest event time) and still count.
pub const LATENESS_MS: i64 = 30_000;
/// Fewest events in the window (or, for volume rules, the previous window).
pub const MIN_EVENTS: u64 = 20;
/// Failure ratio above which a cell is an incident.
pub const MAX_FAILURE_RATIO: f64 = 0.05;
/// Volume rules: current / previous count below which a cell is an incident.
pub const MIN_VOLUME_RATIO: f64 = 0.3;
/// Event ids are remembered for at least this long (event time) for dedupe.
const DEDUPE_MS: i64 = 15 * 60_000;

const SLOTS: i64 = WINDOW_MS / STEP_MS;

struct RuleCells<'r> {
    rule: &'r CompiledRule,
    ids: FxHashMap<String, u32>,
    /// Dimension values of each cell id.
    values: Vec<BTreeMap<String, String>>,
    /// Step index -> cell -> (events, failures).
    slots: BTreeMap<i64, FxHashMap<u32, (u64, u64)>>,
    /// Open cell -> index into the incidents.
    open: FxHashMap<u32, usize>,
}

struct Naive<'r> {
    rules: Vec<RuleCells<'r>>,
    seen: FxHashSet<u64>,
    seen_before: FxHashSet<u64>,
    seen_epoch: i64,
    max_ts: i64,
    /// The next step end to evaluate; events before the last evaluated one are late.
    next_eval: Option<i64>,
    incidents: Vec<Incident>,
    key: String,
}

/// Runs the baseline over NDJSON lines (bad, duplicate and late lines are
/// skipped) and returns its incidents, final state, ordered by `opened_at`.
pub fn run<I, L>(lines: I, rules: &RuleSet) -> Vec<Incident>
where
    I: IntoIterator<Item = L>,
    L: AsRef<[u8]>,
{
    let mut n = Naive {
        rules: rules
            .rules
            .iter()
            .map(|rule| RuleCells {
                rule,
                ids: FxHashMap::default(),
                values: Vec::new(),
                slots: BTreeMap::new(),
                open: FxHashMap::default(),
            })
            .collect(),
        seen: FxHashSet::default(),
        seen_before: FxHashSet::default(),
        seen_epoch: i64::MIN,
        max_ts: i64::MIN,
        next_eval: None,
        incidents: Vec::new(),
        key: String::new(),
    };
    for line in lines {
        n.line(line.as_ref());
    }
    // End of input: evaluate every step the last event reached.
    if n.max_ts > i64::MIN {
        n.advance(n.max_ts.saturating_add(STEP_MS));
    }
    let mut out = n.incidents;
    out.sort_by(|a, b| a.opened_at.cmp(&b.opened_at).then_with(|| a.id.cmp(&b.id)));
    out
}

impl Naive<'_> {
    fn line(&mut self, bytes: &[u8]) {
        let Ok(e) = crate::event::parse(bytes) else {
            return;
        };
        // Dedupe over two generations of ids, rotated every DEDUPE_MS of event time.
        let epoch = e.ts_ms.max(self.max_ts).div_euclid(DEDUPE_MS);
        if epoch > self.seen_epoch {
            self.seen_before = std::mem::take(&mut self.seen);
            self.seen_epoch = epoch;
        }
        let mut h = FxHasher::default();
        e.id.hash(&mut h);
        let id = h.finish();
        if self.seen_before.contains(&id) || !self.seen.insert(id) {
            return;
        }
        let next_eval = *self
            .next_eval
            .get_or_insert((e.ts_ms.div_euclid(STEP_MS) + 1) * STEP_MS);
        if e.ts_ms < next_eval - STEP_MS {
            return; // late: its step was evaluated already
        }
        self.max_ts = self.max_ts.max(e.ts_ms);
        let slot = e.ts_ms.div_euclid(STEP_MS);
        for rc in &mut self.rules {
            if !rc.rule.matches(&e) {
                continue;
            }
            self.key.clear();
            let mut complete = true;
            for d in &rc.rule.dims {
                match d.value(&e) {
                    Some(v) => {
                        self.key.push_str(v);
                        self.key.push('\u{1f}');
                    }
                    None => complete = false,
                }
            }
            if !complete {
                continue;
            }
            let cell = match rc.ids.get(self.key.as_str()) {
                Some(&c) => c,
                None => {
                    let c = rc.values.len() as u32;
                    rc.ids.insert(self.key.clone(), c);
                    rc.values.push(
                        rc.rule
                            .dims
                            .iter()
                            .map(|d| (d.name(), d.value(&e).unwrap_or_default().to_string()))
                            .collect(),
                    );
                    c
                }
            };
            let failure = rc.rule.rule.detector == Detector::Rate && rc.rule.is_failure(&e);
            let counts = rc.slots.entry(slot).or_default().entry(cell).or_default();
            counts.0 += 1;
            counts.1 += u64::from(failure);
        }
        self.advance(self.max_ts - LATENESS_MS);
    }

    /// Evaluates every step ending at or before `watermark`.
    fn advance(&mut self, watermark: i64) {
        while let Some(b) = self.next_eval.filter(|&b| b <= watermark) {
            for i in 0..self.rules.len() {
                self.evaluate(i, b);
            }
            self.next_eval = Some(b + STEP_MS);
        }
    }

    fn evaluate(&mut self, rule: usize, b: i64) {
        let rc = &mut self.rules[rule];
        let hi = b / STEP_MS;
        let sum = |from: i64, to: i64| {
            let mut m: FxHashMap<u32, (u64, u64)> = FxHashMap::default();
            for (_, slot) in rc.slots.range(from..to) {
                for (&c, &(e, f)) in slot {
                    let x = m.entry(c).or_default();
                    x.0 += e;
                    x.1 += f;
                }
            }
            m
        };
        let current = sum(hi - SLOTS, hi);
        // (cell, events, failures, previous events)
        let mut firing: Vec<(u32, u64, u64, Option<u64>)> = Vec::new();
        if rc.rule.rule.detector == Detector::VolumeDrop {
            for (c, (prev, _)) in sum(hi - 2 * SLOTS, hi - SLOTS) {
                let now = current.get(&c).map_or(0, |x| x.0);
                if prev >= MIN_EVENTS && (now as f64) < MIN_VOLUME_RATIO * prev as f64 {
                    firing.push((c, now, 0, Some(prev)));
                }
            }
        } else {
            for (&c, &(e, f)) in &current {
                if e >= MIN_EVENTS && f as f64 > MAX_FAILURE_RATIO * e as f64 {
                    firing.push((c, e, f, None));
                }
            }
        }
        firing.sort_unstable_by_key(|x| x.0);

        let at = ts(b);
        let window = TimeRange {
            start: ts(b - WINDOW_MS),
            end: at,
        };
        let mut still: FxHashSet<u32> = FxHashSet::default();
        for (c, events, failures, prev) in firing {
            still.insert(c);
            let cause = RootCause {
                dims: rc.values[c as usize].clone(),
                score: 1.0,
                events,
                failures,
                expected_failures: events as f64 * MAX_FAILURE_RATIO,
                failure_rate: if events > 0 {
                    failures as f64 / events as f64
                } else {
                    0.0
                },
                baseline_rate: MAX_FAILURE_RATIO,
                expected_events: prev.map(|p| p as f64),
            };
            match rc.open.get(&c) {
                Some(&i) => {
                    let inc = &mut self.incidents[i];
                    inc.updated_at = at;
                    inc.window = window;
                    inc.root_causes = vec![cause];
                }
                None => {
                    let r = &rc.rule.rule;
                    let title = format!(
                        "{}: {} crossed the static threshold",
                        r.name,
                        cause
                            .dims
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(",")
                    );
                    rc.open.insert(c, self.incidents.len());
                    self.incidents.push(Incident {
                        id: format!("naive_{:05}", self.incidents.len() + 1),
                        rule: r.name.clone(),
                        kind: r.kind.clone(),
                        severity: r.severity,
                        status: Status::Open,
                        opened_at: at,
                        updated_at: at,
                        resolved_at: None,
                        root_causes: vec![cause],
                        window,
                        title,
                        summary: "naive static-threshold baseline".into(),
                        summary_source: SummarySource::Template,
                        links: Vec::new(),
                        prompt_version: None,
                        candidates: Vec::new(),
                        episode: Default::default(),
                    });
                }
            }
        }
        rc.open.retain(|c, &mut i| {
            if still.contains(c) {
                return true;
            }
            let inc = &mut self.incidents[i];
            inc.status = Status::Resolved;
            inc.resolved_at = Some(at);
            inc.updated_at = at;
            false
        });
        // Keep what the next evaluation's previous window needs.
        let keep_from = hi + 1 - 2 * SLOTS;
        while rc
            .slots
            .first_key_value()
            .is_some_and(|(&s, _)| s < keep_from)
        {
            rc.slots.pop_first();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::score;
    use crate::ingest::generator::{FaultSpec, FaultType, Generator, Scenario, DEFAULT_START_MS};

    const MIN: i64 = 60_000;

    fn scenario(fault: FaultType, dims: &[(&str, &str)], intensity: f64) -> Scenario {
        Scenario {
            seed: 11,
            start_ms: DEFAULT_START_MS,
            duration_ms: 40 * MIN,
            events_per_sec: 150.0,
            faults: vec![FaultSpec {
                id: "f01".into(),
                fault_type: fault,
                start_ms: DEFAULT_START_MS + 20 * MIN,
                end_ms: DEFAULT_START_MS + 30 * MIN,
                dims: dims
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                intensity,
                injections: vec![],
                elements: vec![],
                description: String::new(),
            }],
            quiet: vec![],
            duplicate_rate: 0.005,
            late_rate: 0.002,
            bad_line_rate: 0.0001,
            family: Default::default(),
            attrs: false,
        }
    }

    #[test]
    fn fires_on_an_injected_outage() {
        let sc = scenario(
            FaultType::ProviderRegionOutage,
            &[("provider", "stripe"), ("region", "us-east-1")],
            0.8,
        );
        let lines = Generator::new(&sc).unwrap().map(|l| l.text);
        let incidents = run(lines, &RuleSet::embedded());
        let report = score(&incidents, &sc.labels());
        assert_eq!(report.recall, Some(1.0), "{}", report.table());
        // Per leaf cell: one incident per busy BIN of the pair, none exact.
        assert!(report.per_fault[0].incidents > 1, "{}", report.table());
        assert_eq!(report.root_cause_top1, Some(0.0));
        let ttd = report.per_fault[0].ttd_s.unwrap();
        assert!((0.0..180.0).contains(&ttd), "{}", report.table());
    }

    #[test]
    fn fires_on_a_settlement_stop() {
        let sc = scenario(
            FaultType::SettlementVolumeStop,
            &[("provider", "stripe")],
            1.0,
        );
        let lines = Generator::new(&sc).unwrap().map(|l| l.text);
        let incidents = run(lines, &RuleSet::embedded());
        let report = score(&incidents, &sc.labels());
        assert_eq!(report.recall, Some(1.0), "{}", report.table());
        // One per region, and they resolve.
        assert_eq!(report.per_fault[0].incidents, 5, "{}", report.table());
        assert!(incidents
            .iter()
            .filter(|i| i.rule == "settlement_volume_drop")
            .all(|i| i.status == Status::Resolved));
    }

    #[test]
    fn skips_bad_duplicate_and_late_lines() {
        let good = |id: &str, ts: &str, outcome: &str| {
            format!(
                r#"{{"id":"{id}","ts":"{ts}","kind":"settlement","outcome":"{outcome}","provider":"p","region":"r"}}"#
            )
        };
        let mut lines = Vec::new();
        for i in 0..30 {
            lines.push(good(&format!("a{i}"), "2026-03-02T00:00:10Z", "failure"));
            lines.push(good(&format!("a{i}"), "2026-03-02T00:00:10Z", "failure"));
        }
        lines.push("{\"id\":".into());
        lines.push(good("b", "2026-03-02T00:10:00Z", "success"));
        // Behind the evaluated steps by now.
        lines.push(good("late", "2026-03-02T00:00:20Z", "failure"));
        let incidents = run(&lines, &RuleSet::embedded());
        let fail: Vec<_> = incidents
            .iter()
            .filter(|i| i.rule == "settlement_failures")
            .collect();
        assert_eq!(fail.len(), 1);
        assert_eq!(fail[0].root_causes[0].events, 30);
        assert_eq!(fail[0].root_causes[0].failures, 30);
    }
}
