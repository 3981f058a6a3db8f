//! The detection engine: windows, baselines, localization and incident lifecycle
//! for every rule, driven by event time alone.
//!
//! The engine is pure and synchronous: events go in ([`Engine::ingest`]), time
//! advances with them (the watermark is the newest event time minus the allowed
//! lateness) or explicitly ([`Engine::advance_to`], for a wall-clock timer or the
//! end of a replay), and incident changes come out. The same engine serves
//! `replay`, `run` and `demo`, so they agree on what fires.
//!
//! Per rule and evaluation step:
//! 1. every cell's window counts and its expectation (attempts x learned rate, or
//!    learned volume) become a localizer leaf;
//! 2. the localizer finds the elements that explain the excess, at the rule's
//!    false-alarm rate;
//! 3. the incident manager applies hysteresis and emits changes;
//! 4. cells outside anything anomalous teach the baseline this step's counts.

mod episode;
mod evaluate;
mod explain;
mod state;
#[cfg(test)]
mod tests;

pub use explain::{Condition, Explanation};

use crate::event::Event;
use crate::incident::Change;
use crate::ingest::dedupe::Dedupe;
use crate::rules::RuleSet;
use crate::window::{Interner, Key, MAX_DIMS};
use evaluate::{evaluate, record_steps};
use state::{criteria_of, same_counting, RuleState};

/// Engine settings that are not per rule.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How far out of order events may arrive and still count.
    pub lateness_ms: i64,
    /// How long an event id is remembered for dedupe (at least the longest window).
    pub dedupe_horizon_ms: i64,
    /// Cells kept per rule at most; past it the idlest are evicted first.
    pub max_cells_per_rule: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lateness_ms: 30_000,
            dedupe_horizon_ms: 15 * 60_000,
            max_cells_per_rule: 2_000_000,
        }
    }
}

/// Why the engine did not count an otherwise valid event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Its id was seen within the dedupe horizon.
    Duplicate,
    /// It arrived behind the watermark.
    Late,
}

impl Skip {
    /// Reason string, as in run reports and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Skip::Duplicate => "duplicate",
            Skip::Late => "late",
        }
    }
}

/// What [`Engine::reload`] did, rule names per outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ReloadSummary {
    /// Unchanged.
    pub kept: Vec<String>,
    /// Tuning changed; windows, baselines and open incidents kept.
    pub retuned: Vec<String>,
    /// What the rule counts changed; started fresh.
    pub restarted: Vec<String>,
    /// New rules.
    pub added: Vec<String>,
    /// Rules no longer present; their incidents resolved.
    pub removed: Vec<String>,
}

/// One cell's counts at one evaluation step, recorded when
/// [`Engine::record_cell_steps`] is on (the ClickHouse store keeps them for
/// dashboards). Attempts and failures are the step's own bucket, not the window,
/// so steps add up over time.
#[derive(Debug, Clone, PartialEq)]
pub struct CellStep {
    /// The rule.
    pub rule: std::sync::Arc<str>,
    /// The event kind the rule watches.
    pub kind: std::sync::Arc<str>,
    /// Step end, epoch ms (event time).
    pub step_end_ms: i64,
    /// Step length, ms.
    pub step_ms: i64,
    /// The cell's dimension values, in the rule's dimension order.
    pub dims: Vec<(String, String)>,
    /// Attempts in the step.
    pub attempts: u64,
    /// Failures in the step (0 for volume rules).
    pub failures: u64,
    /// Failures expected from attempts x baseline rate (rate rules), or events
    /// expected from the learned volume (volume rules).
    pub expected: f64,
    /// The cell's baseline rate (rate rules) or expected events per step (volume
    /// rules), seasonal when the rule has `baseline.seasonality`.
    pub baseline: f64,
}

/// Counters of what the engine did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Events counted.
    pub accepted: u64,
    /// Duplicates skipped.
    pub duplicates: u64,
    /// Late events skipped.
    pub late: u64,
    /// Evaluation steps run (all rules).
    pub evaluations: u64,
    /// Cells evicted.
    pub evicted: u64,
    /// Times counts held ahead of the evaluation filled their budget and
    /// moved the evaluation on ([`Engine::ingest_counts`]).
    pub forced: u64,
    /// Volume drops not reported because the traffic moved to a sibling
    /// (failover), per evaluation step and element.
    pub shifts: u64,
}

/// The detection engine for a rule set.
pub struct Engine {
    rules: Vec<RuleState>,
    interner: Interner,
    dedupe: Dedupe,
    lateness_ms: i64,
    max_cells: usize,
    max_ts: i64,
    /// Earliest step end any rule is waiting for.
    next_due_ms: i64,
    stats: EngineStats,
    /// Per-cell step counts, when recording is on.
    cell_steps: Option<Vec<CellStep>>,
}

impl Engine {
    /// An engine for `rules`.
    pub fn new(rules: &RuleSet, opts: &EngineOptions) -> Engine {
        let longest = rules
            .rules
            .iter()
            .map(|r| r.rule.window.ms())
            .max()
            .unwrap_or(0);
        Engine {
            rules: rules
                .rules
                .iter()
                .cloned()
                .map(|r| RuleState::new(r, opts.lateness_ms))
                .collect(),
            interner: Interner::default(),
            dedupe: Dedupe::new(opts.dedupe_horizon_ms.max(longest + opts.lateness_ms)),
            lateness_ms: opts.lateness_ms,
            max_cells: opts.max_cells_per_rule.max(1),
            max_ts: i64::MIN,
            next_due_ms: i64::MAX,
            stats: EngineStats::default(),
            cell_steps: None,
        }
    }

    /// Turns on recording of [`CellStep`]s at every evaluation; collect them
    /// with [`Engine::take_cell_steps`]. Off by default: it costs a string per
    /// dimension per active cell per step.
    pub fn record_cell_steps(&mut self, on: bool) {
        self.cell_steps = on.then(Vec::new);
    }

    /// Moves the recorded cell steps into `out`.
    pub fn take_cell_steps(&mut self, out: &mut Vec<CellStep>) {
        if let Some(v) = &mut self.cell_steps {
            out.append(v);
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// The watermark: newest event time minus the allowed lateness.
    pub fn watermark(&self) -> i64 {
        self.max_ts.saturating_sub(self.lateness_ms)
    }

    /// Cells held across rules.
    pub fn active_cells(&self) -> usize {
        self.rules.iter().map(|r| r.cells.len()).sum()
    }

    /// Incidents open now, across rules.
    pub fn open_incidents(&self) -> impl Iterator<Item = &crate::incident::Incident> {
        self.rules.iter().flat_map(|r| r.incidents.open_incidents())
    }

    /// Counts one validated event, then evaluates every step the watermark passed.
    pub fn ingest(&mut self, e: &Event, out: &mut Vec<Change>) -> Result<(), Skip> {
        if e.ts_ms < self.watermark() {
            self.stats.late += 1;
            return Err(Skip::Late);
        }
        if self.dedupe.check(&e.id, e.ts_ms) {
            self.stats.duplicates += 1;
            return Err(Skip::Duplicate);
        }
        self.stats.accepted += 1;
        for rs in &mut self.rules {
            if !rs.rule.matches(e) {
                continue;
            }
            let failure = rs.rule.is_failure(e);
            let mut key: Key = [0; MAX_DIMS];
            for (slot, v) in key.iter_mut().zip(rs.rule.cells.values(e, failure)) {
                *slot = self.interner.intern(v);
            }
            rs.cap_attrs(&mut key);
            let step = e.ts_ms.div_euclid(rs.step_ms);
            rs.count(key, step, 1, u32::from(failure));
            if rs.first_step.is_none() {
                rs.first_step = Some(step);
                rs.next_step = Some(step);
                self.next_due_ms = self.next_due_ms.min((step + 1) * rs.step_ms);
            }
        }
        if e.ts_ms > self.max_ts {
            self.max_ts = e.ts_ms;
            if self.watermark() >= self.next_due_ms {
                self.evaluate_due(self.watermark(), out);
            }
        }
        Ok(())
    }

    /// The position of rule `name` in the engine, for [`Engine::ingest_counts`].
    pub fn rule_index(&self, name: &str) -> Option<usize> {
        self.rules.iter().position(|r| r.rule.rule.name == name)
    }

    /// The step length and cell dimension count (every slot of its
    /// [`crate::rules::CellDims`]) of the rule at `index`.
    pub fn rule_shape(&self, index: usize) -> Option<(i64, usize)> {
        self.rules
            .get(index)
            .map(|r| (r.step_ms, r.rule.cells.dims.len()))
    }

    /// Counts one cell's pre-aggregated step (a replica's share, see
    /// [`crate::cluster::partial`]): `attempts` and `failures` of rule `index`
    /// at `step` (epoch ms / the rule's step) for the cell of `values`, one per
    /// slot of the rule's [`crate::rules::CellDims`]. Counts for a step already evaluated are late.
    /// Time does not move: call [`Engine::observe`] with the sender's newest
    /// event time once the batch is counted. Counts far ahead of the
    /// evaluation are held for their step; past `max_cells_per_rule` held
    /// entries the evaluation is moved on to make room (the slowest sender's
    /// counts for the steps it passes are then late), into `out`.
    pub fn ingest_counts(
        &mut self,
        index: usize,
        values: &[Option<&str>],
        step: i64,
        attempts: u32,
        failures: u32,
        out: &mut Vec<Change>,
    ) -> Result<(), Skip> {
        let Some(rs) = self.rules.get_mut(index) else {
            return Err(Skip::Late);
        };
        if rs.next_step.is_some_and(|next| step < next) {
            self.stats.late += u64::from(attempts);
            return Err(Skip::Late);
        }
        let mut key: Key = [0; MAX_DIMS];
        for (slot, v) in key
            .iter_mut()
            .zip(values.iter().take(rs.rule.cells.dims.len()))
        {
            *slot = self.interner.intern(*v);
        }
        rs.cap_attrs(&mut key);
        rs.count(key, step, attempts, failures.min(attempts));
        if rs.first_step.is_none() {
            rs.first_step = Some(step);
            rs.next_step = Some(step);
            self.next_due_ms = self.next_due_ms.min((step + 1) * rs.step_ms);
        }
        self.stats.accepted += u64::from(attempts);
        if rs.held_len > self.max_cells {
            // Evaluate up to where the earliest held step fits.
            let earliest = rs.held.keys().next().copied().unwrap_or(step);
            let watermark = (earliest - rs.cells.steps_ahead()) * rs.step_ms;
            self.stats.forced += 1;
            self.advance_to(watermark, out);
        }
        Ok(())
    }

    /// A sender's newest event time: moves the watermark as an event stamped
    /// `ts_ms` would, evaluating every step it passes.
    pub fn observe(&mut self, ts_ms: i64, out: &mut Vec<Change>) {
        if ts_ms > self.max_ts {
            self.max_ts = ts_ms;
            if self.watermark() >= self.next_due_ms {
                self.evaluate_due(self.watermark(), out);
            }
        }
    }

    /// Moves the watermark to `watermark_ms` even without events (a silent stream
    /// still has time passing), evaluating every step it passes.
    pub fn advance_to(&mut self, watermark_ms: i64, out: &mut Vec<Change>) {
        let target = watermark_ms.saturating_add(self.lateness_ms);
        if target > self.max_ts {
            self.max_ts = target;
        }
        if self.watermark() >= self.next_due_ms {
            self.evaluate_due(self.watermark(), out);
        }
    }

    /// Evaluates what is left at the end of a replay: every step up to the newest event.
    pub fn finish(&mut self, out: &mut Vec<Change>) {
        if self.max_ts != i64::MIN {
            self.advance_to(self.max_ts, out);
        }
    }

    /// Swaps in a new rule set without losing what the engine learned.
    ///
    /// Per rule, by name:
    /// - unchanged: kept as is;
    /// - only tuning changed (thresholds, hysteresis, severity, routing, links,
    ///   description): the new definition takes over at the next step with the
    ///   windows, baselines and open incidents kept, so nothing is re-learned and
    ///   nothing is opened twice;
    /// - what it counts changed (kind, detector, failures, filter, dimensions,
    ///   window, step, baseline): it starts fresh, its open incidents resolved as
    ///   "rule changed";
    /// - removed: its open incidents resolved as "rule removed";
    /// - added: starts fresh (it warms up from its first event).
    ///
    /// Resolutions go to `out`, stamped at the watermark.
    pub fn reload(&mut self, rules: &RuleSet, out: &mut Vec<Change>) -> ReloadSummary {
        let end_ms = self.watermark().max(0);
        let mut old: Vec<Option<RuleState>> = std::mem::take(&mut self.rules)
            .into_iter()
            .map(Some)
            .collect();
        let mut summary = ReloadSummary::default();
        for new in &rules.rules {
            let name = &new.rule.name;
            let prev = old
                .iter_mut()
                .find(|o| o.as_ref().is_some_and(|o| o.rule.rule.name == *name))
                .and_then(Option::take);
            let state = match prev {
                Some(rs) if rs.rule == *new => {
                    summary.kept.push(name.clone());
                    rs
                }
                Some(mut rs) if same_counting(&rs.rule, new) => {
                    rs.criteria = criteria_of(new);
                    rs.rule = new.clone();
                    summary.retuned.push(name.clone());
                    rs
                }
                Some(mut rs) => {
                    out.extend(rs.incidents.close_all(
                        end_ms,
                        "rule changed: what it counts changed, so it restarted from scratch",
                    ));
                    summary.restarted.push(name.clone());
                    RuleState::new(new.clone(), self.lateness_ms)
                }
                None => {
                    summary.added.push(name.clone());
                    RuleState::new(new.clone(), self.lateness_ms)
                }
            };
            self.rules.push(state);
        }
        for mut rs in old.into_iter().flatten() {
            out.extend(rs.incidents.close_all(end_ms, "rule removed"));
            summary.removed.push(rs.rule.rule.name.clone());
        }
        self.next_due_ms = self
            .rules
            .iter()
            .filter_map(|rs| rs.next_step.map(|s| (s + 1) * rs.step_ms))
            .min()
            .unwrap_or(i64::MAX);
        summary
    }

    /// Whether the engine runs a rule named `rule`.
    pub fn has_rule(&self, rule: &str) -> bool {
        self.rules.iter().any(|r| r.rule.rule.name == rule)
    }

    /// End (epoch ms) of the last step `rule` evaluated, if any.
    pub fn last_step_end(&self, rule: &str) -> Option<i64> {
        let rs = self.rules.iter().find(|r| r.rule.rule.name == rule)?;
        rs.next_step.map(|s| s * rs.step_ms)
    }

    fn evaluate_due(&mut self, watermark: i64, out: &mut Vec<Change>) {
        let mut next_due = i64::MAX;
        for rs in &mut self.rules {
            let Some(mut s) = rs.next_step else { continue };
            let last = watermark.div_euclid(rs.step_ms) - 1;
            // A jump of many steps (a long silence) needs only enough steps to
            // resolve or open incidents; the rest are empty.
            let keep =
                (rs.cells.window_steps as i64 + rs.rule.rule.resolve_after as i64 + 4).max(16);
            if last - s > 4 * keep {
                // Not past counts held for a step (they are not a silence).
                let held = rs.held.keys().next().map_or(i64::MAX, |h| h - keep);
                s = s.max((last - keep).min(held));
            }
            while s <= last {
                rs.release_held(s);
                if let Some(steps) = &mut self.cell_steps {
                    record_steps(rs, s, &self.interner, steps);
                }
                evaluate(rs, s, &self.interner, self.max_cells, &mut self.stats, out);
                s += 1;
            }
            rs.release_held(s);
            rs.next_step = Some(s);
            next_due = next_due.min((s + 1) * rs.step_ms);
        }
        self.next_due_ms = next_due;
    }
}
