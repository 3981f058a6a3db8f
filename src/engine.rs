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

use std::collections::BTreeMap;

use crate::detect::season::Season;
use crate::detect::{directed_llr, Criteria, Decay, Direction, Ewma};
use crate::event::Event;
use crate::incident::{Change, Finding, IncidentManager, RootCause};
use crate::ingest::dedupe::Dedupe;
use crate::localize::{localize, Element, Leaf};
use crate::rules::{CompiledRule, Detector, RuleSet};
use crate::window::{Bucket, Cell, Cells, Interner, Key, MAX_DIMS};

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

struct RuleState {
    rule: CompiledRule,
    cells: Cells,
    step_ms: i64,
    decay: Decay,
    /// Rule-wide rate baseline, the prior for cells with little history.
    overall: Ewma,
    first_step: Option<i64>,
    next_step: Option<i64>,
    warmup_steps: i64,
    criteria: Criteria,
    incidents: IncidentManager,
    /// Seasonal settings, when `baseline.seasonality` is on.
    season: Option<Season>,
    /// Counts for steps further ahead of `next_step` than the cells' rings
    /// hold without overwriting the window still to evaluate, by step
    /// ([`RuleState::count`]); `held_len` entries in all.
    held: BTreeMap<i64, Vec<(Key, u32, u32)>>,
    held_len: usize,
}

impl RuleState {
    fn new(rule: CompiledRule, lateness_ms: i64) -> RuleState {
        let step_ms = rule.step_ms();
        let lookahead = (lateness_ms / step_ms) as usize + 2;
        let criteria = criteria_of(&rule);
        RuleState {
            cells: Cells::new(rule.window_steps(), lookahead),
            decay: Decay::new(rule.rule.baseline.horizon.ms() as f64 / step_ms as f64),
            warmup_steps: rule.rule.baseline.warmup.ms() / step_ms,
            season: Season::from_baseline(
                &rule.rule.baseline,
                rule.rule.detector == Detector::VolumeDrop,
            ),
            step_ms,
            overall: Ewma::default(),
            first_step: None,
            next_step: None,
            criteria,
            incidents: IncidentManager::default(),
            held: BTreeMap::new(),
            held_len: 0,
            rule,
        }
    }

    fn volume_rule(&self) -> bool {
        self.rule.rule.detector == Detector::VolumeDrop
    }

    /// Counts `attempts` (`failures` among them) of cell `key` at `step`.
    ///
    /// A cell's ring holds the window plus the allowed lateness. An event
    /// lands further ahead only after a gap in event time, and is released at
    /// once (its ingest moves the watermark and evaluates up to it); but a
    /// cluster detector's clock is its slowest replica's, and a fast
    /// replica's counts (its backlog, flushed once NATS is back) can be many
    /// steps ahead: written into the ring they would overwrite steps not yet
    /// evaluated, and the baseline would learn the broken windows. Those are
    /// held until the evaluation reaches them ([`RuleState::release_held`]).
    fn count(&mut self, key: Key, step: i64, attempts: u32, failures: u32) {
        match self.next_step {
            Some(next) if step > next + self.cells.steps_ahead() => {
                self.held
                    .entry(step)
                    .or_default()
                    .push((key, attempts, failures));
                self.held_len += 1;
            }
            _ => {
                self.cells.add_counts(key, step, attempts, failures);
            }
        }
    }

    /// Moves the held counts the rings can take now that `next` is the next
    /// step to evaluate.
    fn release_held(&mut self, next: i64) {
        let reach = next + self.cells.steps_ahead();
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() > reach {
                break;
            }
            let (step, counts) = entry.remove_entry();
            self.held_len -= counts.len();
            for (key, attempts, failures) in counts {
                self.cells.add_counts(key, step, attempts, failures);
            }
        }
    }
}

/// The detection criteria a rule's thresholds set.
fn criteria_of(rule: &CompiledRule) -> Criteria {
    let t = &rule.rule.thresholds;
    match rule.rule.detector {
        Detector::Rate => Criteria {
            direction: Direction::Up,
            min_volume: t.min_events,
            min_real: t.min_failures,
            ratio: t.min_lift,
            min_rate_delta: t.min_rate_increase,
            alpha: t.false_alarm_rate,
        },
        Detector::VolumeDrop => Criteria {
            direction: Direction::Down,
            min_volume: t.min_events,
            min_real: 0.0,
            ratio: t.max_volume_ratio,
            min_rate_delta: 0.0,
            alpha: t.false_alarm_rate,
        },
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

/// Whether two definitions of a rule count the same thing the same way, so its
/// windows and baselines remain valid under the new one.
fn same_counting(a: &CompiledRule, b: &CompiledRule) -> bool {
    let (x, y) = (&a.rule, &b.rule);
    x.kind == y.kind
        && x.detector == y.detector
        && x.failures == y.failures
        && x.filter == y.filter
        && x.dimensions == y.dimensions
        && x.window == y.window
        && x.step == y.step
        && x.baseline == y.baseline
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
            let mut key: Key = [0; MAX_DIMS];
            for (i, d) in rs.rule.dims.iter().enumerate() {
                key[i] = self.interner.intern(d.value(e));
            }
            let step = e.ts_ms.div_euclid(rs.step_ms);
            let failure = rs.rule.is_failure(e);
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

    /// The step length and dimension count of the rule at `index`.
    pub fn rule_shape(&self, index: usize) -> Option<(i64, usize)> {
        self.rules
            .get(index)
            .map(|r| (r.step_ms, r.rule.dims.len()))
    }

    /// Counts one cell's pre-aggregated step (a replica's share, see
    /// [`crate::cluster::partial`]): `attempts` and `failures` of rule `index`
    /// at `step` (epoch ms / the rule's step) for the cell of `values`, in the
    /// rule's dimension order. Counts for a step already evaluated are late.
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
        for (slot, v) in key.iter_mut().zip(values.iter().take(rs.rule.dims.len())) {
            *slot = self.interner.intern(*v);
        }
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

/// The step's own counts of every cell that saw events in it, with the
/// baseline as it stands before the step teaches it.
fn record_steps(rs: &RuleState, s: i64, interner: &Interner, out: &mut Vec<CellStep>) {
    let volume_rule = rs.volume_rule();
    let prior_rate = rs.overall.rate(0.0, 0.0);
    let prior_events = rs.rule.rule.baseline.prior_events;
    let rule: std::sync::Arc<str> = rs.rule.rule.name.as_str().into();
    let kind: std::sync::Arc<str> = rs.rule.rule.kind.as_str().into();
    for (key, cell) in rs.cells.iter() {
        let b = cell.bucket(s);
        if b.n == 0 && !volume_rule {
            continue;
        }
        // With seasonality, the level the step's slot expects.
        let (expected, baseline) = if volume_rule {
            let v = season_level(rs, cell, s, cell.base.mean_volume());
            if b.n == 0 && v <= 0.0 {
                continue;
            }
            (v, v)
        } else {
            let p = season_level(rs, cell, s, cell.base.rate(prior_rate, prior_events));
            (f64::from(b.n) * p, p)
        };
        out.push(CellStep {
            rule: rule.clone(),
            kind: kind.clone(),
            step_end_ms: (s + 1) * rs.step_ms,
            step_ms: rs.step_ms,
            dims: rs
                .rule
                .dims
                .iter()
                .enumerate()
                .map(|(d, dim)| (dim.name(), interner.value(key[d]).to_string()))
                .collect(),
            attempts: u64::from(b.n),
            failures: if volume_rule { 0 } else { u64::from(b.f) },
            expected,
            baseline,
        });
    }
}

/// The level (rate, or events per step) one cell expects at step `s` given its
/// plain baseline `level`: `level` itself when the rule has no seasonality or
/// the cell's profile does not trust the step's slot yet.
fn season_level(rs: &RuleState, cell: &Cell, s: i64, level: f64) -> f64 {
    match (&rs.season, &cell.season) {
        (Some(se), Some(p)) => p.expect(se, se.visit(s, rs.step_ms), level),
        _ => level,
    }
}

/// Seasonal learning for one cell at step `s`, before its plain baseline
/// learns: closes the previous slot visit when `s` starts a new one, adds the
/// step to the visit (every step while the slot is untrusted, else only when
/// the cell is not anomalous) and returns the factor the step was judged with,
/// by which the plain baseline deseasonalizes what it learns.
#[allow(clippy::too_many_arguments)]
fn learn_season(
    se: &Season,
    cell: &mut Cell,
    s: i64,
    step_ms: i64,
    anomalous: bool,
    volume_rule: bool,
    prior: (f64, f64),
    mature_weight: f64,
) -> f64 {
    let visit = se.visit(s, step_ms);
    let b = cell.bucket(s);
    let level = if volume_rule {
        cell.base.mean_volume()
    } else {
        cell.base.rate(prior.0, prior.1)
    };
    // A volume visit needs a baseline to shrink toward; a rate one has the prior.
    let usable = !volume_rule || cell.base.weight >= mature_weight;
    let profile = cell.season.get_or_insert_with(|| se.new_profile());
    profile.roll(se, visit, if usable { level } else { 0.0 });
    if !anomalous || !profile.trusted(se, visit) {
        if volume_rule {
            profile.learn(f64::from(b.n), 1.0);
        } else {
            profile.learn(f64::from(b.f), f64::from(b.n));
        }
    }
    profile.factor(se, visit, level)
}

fn dims_map(rs: &RuleState, el: &Element, interner: &Interner) -> BTreeMap<String, String> {
    rs.rule
        .dims
        .iter()
        .enumerate()
        .filter(|(d, _)| el.mask & (1 << d) != 0)
        .map(|(d, dim)| (dim.name(), interner.value(el.key[d]).to_string()))
        .collect()
}

fn root_cause(rs: &RuleState, el: &Element, interner: &Interner) -> RootCause {
    let dims = dims_map(rs, el, interner);
    if rs.volume_rule() {
        RootCause {
            dims,
            score: round3(el.score),
            events: el.real.round() as u64,
            failures: 0,
            expected_failures: 0.0,
            failure_rate: 0.0,
            baseline_rate: 0.0,
            expected_events: Some(round3(el.predict)),
        }
    } else {
        let rate = |x: f64| if el.volume > 0.0 { x / el.volume } else { 0.0 };
        RootCause {
            dims,
            score: round3(el.score),
            events: el.volume.round() as u64,
            failures: el.real.round() as u64,
            expected_failures: round3(el.predict),
            failure_rate: round4(rate(el.real)),
            baseline_rate: round4(rate(el.predict)),
            expected_events: None,
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
fn round4(x: f64) -> f64 {
    (x * 10000.0).round() / 10000.0
}

/// What a cell's leaf at one step depends on beyond the cell itself.
struct LeafShape {
    volume_rule: bool,
    /// Evaluation step and window length, in steps.
    s: i64,
    nb: usize,
    step_ms: i64,
    prior_rate: f64,
    prior_events: f64,
    season: Option<Season>,
}

impl LeafShape {
    fn of(rs: &RuleState, s: i64) -> LeafShape {
        LeafShape {
            volume_rule: rs.volume_rule(),
            s,
            nb: rs.cells.window_steps,
            step_ms: rs.step_ms,
            prior_rate: rs.overall.rate(0.0, 0.0),
            prior_events: rs.rule.rule.baseline.prior_events,
            season: rs.season,
        }
    }
}

/// A cell's localizer leaf for the window `w` ending at the step: observed
/// against expected failures (rate rules, cells with events) or events (volume
/// rules, cells with a mature volume baseline). The one definition `evaluate`
/// and `explain` share.
fn leaf(sh: &LeafShape, key: &Key, cell: &Cell, w: Bucket) -> Option<Leaf> {
    let (s, nb) = (sh.s, sh.nb);
    if sh.volume_rule {
        let expected = cell.base.mean_volume() * nb as f64;
        let mature = cell.base.weight >= (nb as f64).max(4.0);
        if !mature || expected <= 0.0 {
            return None;
        }
        // With seasonality, each step of the window expects its slot's share.
        let expected = match &sh.season {
            Some(se) => se.expected(
                cell.season.as_deref(),
                cell.base.mean_volume(),
                (s, nb, sh.step_ms),
                nb as f64,
                |_| 1.0,
            ),
            None => expected,
        };
        Some(Leaf {
            key: *key,
            real: w.n as f64,
            predict: expected,
            volume: expected,
        })
    } else if w.n > 0 {
        let p = cell.base.rate(sh.prior_rate, sh.prior_events);
        // With seasonality, each step's attempts at its slot's rate.
        let predict = match &sh.season {
            Some(se) => se.expected(
                cell.season.as_deref(),
                p,
                (s, nb, sh.step_ms),
                w.n as f64,
                |t| f64::from(cell.bucket(t).n),
            ),
            None => w.n as f64 * p,
        };
        Some(Leaf {
            key: *key,
            real: w.f as f64,
            predict,
            volume: w.n as f64,
        })
    } else {
        None
    }
}

/// One evaluation of one rule at step `s` (the window ends with step `s`).
fn evaluate(
    rs: &mut RuleState,
    s: i64,
    interner: &Interner,
    max_cells: usize,
    stats: &mut EngineStats,
    out: &mut Vec<Change>,
) {
    stats.evaluations += 1;
    let nb = rs.cells.window_steps;
    let volume_rule = rs.volume_rule();
    let prior_rate = rs.overall.rate(0.0, 0.0);
    let prior_events = rs.rule.rule.baseline.prior_events;
    let warm = rs.first_step.is_some_and(|f| s - f >= rs.warmup_steps);

    // 1. Leaves, with eviction of cells that no longer matter.
    let mut leaves: Vec<Leaf> = Vec::with_capacity(rs.cells.len());
    let horizon_steps = (rs.rule.rule.baseline.horizon.ms() / rs.step_ms).max(1);
    let mut evicted = 0u64;
    let shape = LeafShape::of(rs, s);
    rs.cells.retain(|key, cell| {
        let w = cell.window_at(s, nb);
        let idle = s - cell.head();
        if volume_rule {
            let expected = cell.base.mean_volume() * nb as f64;
            // A flow that used to matter is kept while its absence is news.
            if w.n == 0 && (expected < 1.0 || idle > 4 * horizon_steps) && idle > nb as i64 {
                evicted += 1;
                return false;
            }
        } else if w.n == 0 && idle > nb as i64 + 1 {
            evicted += 1;
            return false;
        }
        leaves.extend(leaf(&shape, key, cell, w));
        true
    });
    stats.evicted += evicted;
    if rs.cells.len() > max_cells {
        // Over budget: drop the idlest cells (oldest head) first.
        let mut heads: Vec<i64> = rs.cells.iter().map(|(_, c)| c.head()).collect();
        let excess = rs.cells.len() - max_cells;
        heads.select_nth_unstable(excess);
        let cutoff = heads[excess];
        let mut dropped = 0usize;
        rs.cells.retain(|_, c| {
            if c.head() < cutoff && dropped < excess {
                dropped += 1;
                false
            } else {
                true
            }
        });
        stats.evicted += dropped as u64;
    }

    // 2. Localize, once the baseline has warmed up.
    let ndims = rs.rule.dims.len();
    let loc = if warm && !leaves.is_empty() {
        localize(ndims, &leaves, &rs.criteria, &rs.rule.localize_limits())
    } else {
        Default::default()
    };
    let to_finding = |el: &Element| Finding {
        element: el.clone(),
        cause: root_cause(rs, el, interner),
    };
    let causes: Vec<Finding> = loc.causes.iter().map(to_finding).collect();
    let candidates: Vec<Finding> = loc.candidates.iter().map(to_finding).collect();

    // 3. Incidents.
    let end_ms = (s + 1) * rs.step_ms;
    if warm {
        let criteria = rs.criteria;
        let threshold = loc
            .threshold
            .max(crate::detect::llr_threshold(criteria.alpha, 1));
        // The manager lives in the rule state that the closure reads: take it out
        // for the call and put it back.
        let mut manager = std::mem::take(&mut rs.incidents);
        let rs_ref: &RuleState = rs;
        let changes = manager.step(&rs_ref.rule, end_ms, &causes, &candidates, |el| {
            let (mut r, mut p, mut v) = (0.0, 0.0, 0.0);
            for l in leaves.iter().filter(|l| el.contains(&l.key)) {
                r += l.real;
                p += l.predict;
                v += l.volume;
            }
            let e = Element {
                real: r,
                predict: p,
                volume: v,
                llr: directed_llr(r, p, criteria.direction),
                ..el.clone()
            };
            let passes = criteria.passes(r, p, v, threshold);
            (root_cause(rs_ref, &e, interner), passes)
        });
        rs.incidents = manager;
        out.extend(changes);
    }

    // 4. Baselines learn from this step, except where something is anomalous.
    let anomalous: Vec<Element> = loc
        .causes
        .iter()
        .cloned()
        .chain(rs.incidents.open_elements().cloned())
        .collect();
    let decay = rs.decay.clone();
    let (mut tot_n, mut tot_f) = (0.0, 0.0);
    let season = rs.season.as_ref();
    let mature_weight = (nb as f64).max(4.0);
    rs.cells.retain(|key, cell| {
        let in_anomaly = anomalous.iter().any(|el| el.contains(key));
        // Seasonal rules learn the slot first, then the plain baseline learns
        // deseasonalized counts (g = 1 without seasonality: unchanged).
        let g = match season {
            Some(se) => learn_season(
                se,
                cell,
                s,
                rs.step_ms,
                in_anomaly,
                volume_rule,
                (prior_rate, prior_events),
                mature_weight,
            ),
            None => 1.0,
        };
        if in_anomaly {
            cell.base.skip(s, &decay);
        } else {
            let b = cell.bucket(s);
            if volume_rule {
                cell.base
                    .update_weighted(s, b.n as f64, b.f as f64, g, &decay);
            } else {
                cell.base.update(s, b.n as f64, b.f as f64 / g, &decay);
            }
            tot_n += b.n as f64;
            tot_f += if volume_rule {
                b.f as f64
            } else {
                b.f as f64 / g
            };
        }
        true
    });
    rs.overall.update(s, tot_n, tot_f, &decay);
}

/// One condition of a rule, as [`Engine::explain`] reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Condition {
    /// `volume_floor`, `min_failures`, `lift`, `rate_increase`, `volume_ratio` or `significance`.
    pub name: &'static str,
    /// What the rule requires, e.g. `>= 40`.
    pub required: String,
    /// The element's value at the step.
    pub actual: f64,
    /// Whether it held.
    pub held: bool,
}

/// Why an element did or did not fire at one evaluation step (`faultline explain`).
///
/// Numbers are the element's totals over the window ending with the step, with
/// the baselines as they stood before the step taught them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Explanation {
    /// The rule.
    pub rule: String,
    /// The element's dimensions.
    pub dims: BTreeMap<String, String>,
    /// Start of the window, epoch ms.
    pub window_start_ms: i64,
    /// End of the step (and of the window), epoch ms.
    pub step_end_ms: i64,
    /// Whether the rule had its warm-up of history (nothing is tested before).
    pub warm: bool,
    /// Attempts in the window (rate rules) or expected events (volume rules).
    pub attempts: f64,
    /// Failures in the window (rate rules) or observed events (volume rules).
    pub failures: f64,
    /// Expected failures (attempts x baseline) or expected events.
    pub expected: f64,
    /// Expected / attempts (rate rules; 0 for volume rules).
    pub baseline_rate: f64,
    /// The directed Poisson deviance of observed vs expected.
    pub statistic: f64,
    /// The deviance needed at this step (Bonferroni over `tested`).
    pub threshold: f64,
    /// Elements the localizer examined at this step.
    pub tested: usize,
    /// Each condition, held or failed.
    pub conditions: Vec<Condition>,
    /// Whether the localizer chose this element as a cause at this step.
    pub chosen: bool,
}

impl Engine {
    /// Explains `dims` of rule `rule` at the step containing `at_ms`, from the
    /// engine's current state: call it once every step before that one has been
    /// evaluated (e.g. after [`Engine::advance_to`] the step's start minus one ms)
    /// and before the step itself is. Pure: the engine is not changed.
    pub fn explain(
        &self,
        rule: &str,
        dims: &BTreeMap<String, String>,
        at_ms: i64,
    ) -> Result<Explanation, String> {
        let rs = self
            .rules
            .iter()
            .find(|r| r.rule.rule.name == rule)
            .ok_or_else(|| format!("no rule named `{rule}`"))?;
        let mut el = Element {
            mask: 0,
            key: [0; MAX_DIMS],
            real: 0.0,
            predict: 0.0,
            volume: 0.0,
            llr: 0.0,
            score: 0.0,
        };
        for (k, v) in dims {
            let d = rs
                .rule
                .dims
                .iter()
                .position(|d| d.name() == *k)
                .ok_or_else(|| format!("rule `{rule}` does not localize over `{k}`"))?;
            // Ids are dense; a linear scan keeps the interner untouched.
            let id = (1..=self.interner.len() as u32)
                .find(|&id| self.interner.value(id) == v)
                .ok_or_else(|| format!("no event before that time has {k}={v}"))?;
            el.mask |= 1 << d;
            el.key[d] = id;
        }
        let s = at_ms.div_euclid(rs.step_ms);
        let nb = rs.cells.window_steps;
        // The leaves exactly as `evaluate` builds them.
        let shape = LeafShape::of(rs, s);
        let leaves: Vec<Leaf> = rs
            .cells
            .iter()
            .filter_map(|(key, cell)| leaf(&shape, key, cell, cell.window(s, nb)))
            .collect();
        let c = rs.criteria;
        let loc = localize(rs.rule.dims.len(), &leaves, &c, &rs.rule.localize_limits());
        let (mut real, mut predict, mut volume) = (0.0, 0.0, 0.0);
        for l in leaves.iter().filter(|l| el.contains(&l.key)) {
            real += l.real;
            predict += l.predict;
            volume += l.volume;
        }
        (el.real, el.predict, el.volume) = (real, predict, volume);
        let statistic = directed_llr(el.real, el.predict, c.direction);
        let threshold = if loc.tested > 0 {
            loc.threshold
        } else {
            crate::detect::llr_threshold(c.alpha, 1)
        };
        let cond = |name, required: String, actual: f64, held: bool| Condition {
            name,
            required,
            actual,
            held,
        };
        let ratio = if el.predict > 0.0 {
            el.real / el.predict
        } else {
            f64::INFINITY
        };
        let mut conditions = vec![cond(
            "volume_floor",
            format!(">= {}", c.min_volume),
            el.volume,
            el.volume >= c.min_volume,
        )];
        if rs.volume_rule() {
            conditions.push(cond(
                "volume_ratio",
                format!("<= {}", c.ratio),
                ratio,
                el.predict > 0.0 && el.real <= c.ratio * el.predict,
            ));
        } else {
            let increase = if el.volume > 0.0 {
                (el.real - el.predict) / el.volume
            } else {
                0.0
            };
            conditions.push(cond(
                "min_failures",
                format!(">= {}", c.min_real),
                el.real,
                el.real >= c.min_real,
            ));
            conditions.push(cond(
                "lift",
                format!(">= {}", c.ratio),
                ratio,
                el.real >= c.ratio * el.predict.max(f64::MIN_POSITIVE),
            ));
            conditions.push(cond(
                "rate_increase",
                format!(">= {}", c.min_rate_delta),
                increase,
                el.volume > 0.0 && increase >= c.min_rate_delta,
            ));
        }
        conditions.push(cond(
            "significance",
            format!(">= {threshold:.3}"),
            statistic,
            statistic >= threshold,
        ));
        let baseline_rate = if !rs.volume_rule() && el.volume > 0.0 {
            el.predict / el.volume
        } else {
            0.0
        };
        Ok(Explanation {
            rule: rule.to_string(),
            dims: dims.clone(),
            window_start_ms: (s + 1 - nb as i64) * rs.step_ms,
            step_end_ms: (s + 1) * rs.step_ms,
            warm: rs.first_step.is_some_and(|f| s - f >= rs.warmup_steps),
            attempts: el.volume,
            failures: el.real,
            expected: el.predict,
            baseline_rate,
            statistic,
            threshold,
            tested: loc.tested,
            conditions,
            chosen: loc.causes.iter().any(|x| x.same_as(&el)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Outcome;
    use crate::incident::{Status, Transition};
    use crate::rules::Rule;
    use rand::{Rng, SeedableRng};

    fn ev(id: u64, ts_ms: i64, provider: &str, region: &str, bin: &str, failed: bool) -> Event {
        Event {
            id: format!("e{id}"),
            ts_ms,
            kind: "auth".into(),
            outcome: if failed {
                Outcome::Failure
            } else {
                Outcome::Success
            },
            provider: provider.into(),
            region: region.into(),
            bin: Some(bin.into()),
            merchant_id: None,
            card_brand: None,
            error_code: None,
            latency_ms: None,
            message: None,
            attrs: Default::default(),
        }
    }

    /// 40 events/s over 4 providers x 3 regions x 20 BINs at 1% failures, with
    /// `fault(ts, provider, region, bin) -> Option<failure rate>` applied.
    fn run(minutes: i64, fault: impl Fn(i64, usize, usize, usize) -> Option<f64>) -> Vec<Change> {
        run_rules(
            &RuleSet::embedded(),
            minutes,
            |b| format!("4000{b:02}"),
            fault,
        )
    }

    /// [`run`] with given rules and BIN names.
    fn run_rules(
        rules: &RuleSet,
        minutes: i64,
        bin_name: impl Fn(usize) -> String,
        fault: impl Fn(i64, usize, usize, usize) -> Option<f64>,
    ) -> Vec<Change> {
        let mut engine = Engine::new(rules, &EngineOptions::default());
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut out = Vec::new();
        let mut id = 0;
        for ms in (0..minutes * 60_000).step_by(25) {
            id += 1;
            let (p, r, b) = (
                rng.gen_range(0..4),
                rng.gen_range(0..3),
                rng.gen_range(0..20),
            );
            let rate = fault(ms, p, r, b).unwrap_or(0.01);
            let e = ev(
                id,
                ms,
                &format!("p{p}"),
                &format!("r{r}"),
                &bin_name(b),
                rng.gen_bool(rate),
            );
            let _ = engine.ingest(&e, &mut out);
        }
        engine.finish(&mut out);
        out
    }

    fn opened(changes: &[Change]) -> Vec<&crate::incident::Incident> {
        changes
            .iter()
            .filter_map(|c| match &c.transition {
                Transition::Opened(i) => Some(i),
                _ => None,
            })
            .collect()
    }

    /// The shipped rules with the auth rule edited by `edit`.
    fn auth_edited(edit: impl Fn(&mut Rule)) -> RuleSet {
        let mut rules = RuleSet::embedded();
        let auth = rules
            .rules
            .iter_mut()
            .find(|r| r.rule.name == "auth_technical_failures")
            .expect("the shipped auth rule");
        edit(&mut auth.rule);
        rules
    }

    /// Like [`run`] with a p2/r1 outage from minute 40 to 50, reloading to
    /// `new_rules` at minute 45 (the incident open). Returns the changes before,
    /// at and after the reload.
    fn run_reloading(
        new_rules: &RuleSet,
    ) -> (Vec<Change>, ReloadSummary, Vec<Change>, Vec<Change>) {
        let mut engine = Engine::new(&RuleSet::embedded(), &EngineOptions::default());
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let (mut before, mut at, mut after) = (Vec::new(), Vec::new(), Vec::new());
        let mut summary = None;
        for (id, ms) in (0..70 * 60_000).step_by(25).enumerate() {
            if ms == 45 * 60_000 {
                summary = Some(engine.reload(new_rules, &mut at));
            }
            let (p, r, b) = (
                rng.gen_range(0..4),
                rng.gen_range(0..3),
                rng.gen_range(0..20),
            );
            let outage = (40 * 60_000..50 * 60_000).contains(&ms) && p == 2 && r == 1;
            let rate = if outage { 0.7 } else { 0.01 };
            let e = ev(
                id as u64,
                ms,
                &format!("p{p}"),
                &format!("r{r}"),
                &format!("4000{b:02}"),
                rng.gen_bool(rate),
            );
            let out = if summary.is_some() {
                &mut after
            } else {
                &mut before
            };
            let _ = engine.ingest(&e, out);
        }
        engine.finish(&mut after);
        (before, summary.expect("reloaded"), at, after)
    }

    fn auth_opened(changes: &[Change]) -> Vec<&crate::incident::Incident> {
        opened(changes)
            .into_iter()
            .filter(|i| i.rule == "auth_technical_failures")
            .collect()
    }

    #[test]
    fn reloading_a_new_threshold_keeps_windows_baselines_and_the_open_incident() {
        let rules = auth_edited(|r| r.thresholds.min_lift = 3.0);
        let (before, summary, at, after) = run_reloading(&rules);
        assert_eq!(summary.retuned, vec!["auth_technical_failures"]);
        assert!(summary.restarted.is_empty() && summary.removed.is_empty());
        assert_eq!(auth_opened(&before).len(), 1, "open before the reload");
        assert!(
            at.is_empty(),
            "nothing resolved by a threshold change: {at:#?}"
        );
        assert!(
            auth_opened(&after).is_empty(),
            "the open incident must not be opened again: {:#?}",
            auth_opened(&after)
        );
        let id = &auth_opened(&before)[0].id;
        let resolved = after
            .iter()
            .any(|c| matches!(&c.transition, Transition::Resolved(i) if &i.id == id));
        assert!(resolved, "the same incident resolves when the outage ends");
    }

    #[test]
    fn a_retuned_threshold_takes_effect_at_the_next_step() {
        // A lift no outage reaches: the open incident stops being anomalous and
        // resolves while the outage still runs (it ends at minute 50).
        let rules = auth_edited(|r| r.thresholds.min_lift = 1000.0);
        let (before, _, _, after) = run_reloading(&rules);
        let id = &auth_opened(&before)[0].id;
        let resolved_at = after.iter().find_map(|c| match &c.transition {
            Transition::Resolved(i) if &i.id == id => i.resolved_at,
            _ => None,
        });
        let at = resolved_at.expect("resolved").timestamp_millis();
        assert!(at < 50 * 60_000, "resolved at {at} ms, after the outage");
    }

    #[test]
    fn reloading_unchanged_rules_changes_nothing() {
        let (_, summary, at, after) = run_reloading(&RuleSet::embedded());
        assert_eq!(summary.kept.len(), RuleSet::embedded().rules.len());
        assert!(at.is_empty() && auth_opened(&after).is_empty());
    }

    #[test]
    fn a_rule_counting_differently_restarts_and_a_removed_rule_resolves() {
        let wider =
            auth_edited(|r| r.window = crate::rules::Dur(std::time::Duration::from_secs(180)));
        let (_, summary, at, after) = run_reloading(&wider);
        assert_eq!(summary.restarted, vec!["auth_technical_failures"]);
        let why: Vec<_> = at
            .iter()
            .flat_map(|c| &c.timeline)
            .map(|t| t.detail.as_str())
            .collect();
        assert_eq!(at.len(), 1, "{at:#?}");
        assert!(why[0].starts_with("rule changed"), "{why:?}");
        // Fresh: it has no baseline, so it warms up again and stays quiet.
        assert!(auth_opened(&after).is_empty());

        let mut without = RuleSet::embedded();
        without
            .rules
            .retain(|r| r.rule.name != "auth_technical_failures");
        let (_, summary, at, _) = run_reloading(&without);
        assert_eq!(summary.removed, vec!["auth_technical_failures"]);
        assert_eq!(at.len(), 1);
        assert!(
            matches!(&at[0].transition, Transition::Resolved(i) if i.status == Status::Resolved)
        );
        assert_eq!(at[0].timeline[0].detail, "rule removed");
    }

    fn notified_updates(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .filter(|c| c.notify && matches!(c.transition, Transition::Updated(_)))
            .flat_map(|c| c.timeline.iter().map(|t| t.detail.clone()))
            .collect()
    }

    #[test]
    fn a_worsening_outage_is_news_and_a_steady_one_is_not() {
        let steady = run(70, |t, p, r, _| {
            ((40 * 60_000..50 * 60_000).contains(&t) && p == 2 && r == 1).then_some(0.5)
        });
        assert_eq!(opened(&steady).len(), 1);
        let news = notified_updates(&steady);
        assert!(
            news.iter().all(|n| !n.contains("failure rate")),
            "a steady outage is not worsening: {news:?}"
        );
        let worse = run(70, |t, p, r, _| {
            let on = p == 2 && r == 1;
            if on && (40 * 60_000..44 * 60_000).contains(&t) {
                Some(0.2)
            } else if on && (44 * 60_000..50 * 60_000).contains(&t) {
                Some(0.9)
            } else {
                None
            }
        });
        assert_eq!(opened(&worse).len(), 1, "still one incident");
        let news = notified_updates(&worse);
        assert_eq!(
            news.iter()
                .filter(|n| n.contains("failure rate up"))
                .count(),
            1,
            "told once that it got worse: {news:?}"
        );
    }

    #[test]
    fn a_traffic_surge_at_the_usual_failure_rate_is_not_blamed() {
        // p2 gets five times its traffic from minute 40 to 50 (a flash sale),
        // failing at the usual 1%: more failures, but no excess given attempts.
        let mut engine = Engine::new(&RuleSet::embedded(), &EngineOptions::default());
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut out = Vec::new();
        let mut id = 0u64;
        for ms in (0..70 * 60_000).step_by(25) {
            let surge = (40 * 60_000..50 * 60_000).contains(&ms);
            for copy in 0..if surge { 5 } else { 1 } {
                let p = if copy > 0 { 2 } else { rng.gen_range(0..4) };
                let (r, b) = (rng.gen_range(0..3), rng.gen_range(0..20));
                id += 1;
                let e = ev(
                    id,
                    ms,
                    &format!("p{p}"),
                    &format!("r{r}"),
                    &format!("4000{b:02}"),
                    rng.gen_bool(0.01),
                );
                let _ = engine.ingest(&e, &mut out);
            }
        }
        engine.finish(&mut out);
        assert!(
            auth_opened(&out).is_empty(),
            "a volume rise alone opened {:#?}",
            auth_opened(&out)
        );
    }

    #[test]
    fn provider_region_outage_is_one_incident_with_its_root_cause() {
        let start = 40 * 60_000;
        let end = 50 * 60_000;
        let changes = run(70, |t, p, r, _| {
            (t >= start && t < end && p == 2 && r == 1).then_some(0.7)
        });
        let inc = opened(&changes);
        assert_eq!(inc.len(), 1, "{inc:#?}");
        let dims: Vec<_> = inc[0].root_causes[0].dims.iter().collect();
        assert_eq!(
            dims,
            vec![
                (&"provider".to_string(), &"p2".to_string()),
                (&"region".to_string(), &"r1".to_string())
            ]
        );
        let ttd = inc[0].opened_at.timestamp_millis() - start;
        assert!(ttd <= 60_000, "detected after {ttd} ms");
        let resolved = changes.iter().any(|c| matches!(&c.transition, Transition::Resolved(i) if i.id == inc[0].id && i.status == Status::Resolved));
        assert!(resolved);
    }

    #[test]
    fn bin_outage_across_providers_is_the_bin() {
        let start = 40 * 60_000;
        let end = 50 * 60_000;
        let changes = run(60, |t, _, _, b| {
            (t >= start && t < end && b == 7).then_some(0.9)
        });
        let inc = opened(&changes);
        assert_eq!(inc.len(), 1, "{inc:#?}");
        assert_eq!(
            inc[0].root_causes[0].dims.get("bin").map(String::as_str),
            Some("400007")
        );
        assert_eq!(inc[0].root_causes[0].dims.len(), 1);
    }

    /// The shipped auth rule with the issuer range `bin4` beside `bin`.
    fn rules_with_bin4() -> RuleSet {
        let auth = include_str!("../rules/auth.yaml").replace(
            "dimensions: [provider, region, bin]",
            "dimensions: [provider, region, bin4, bin]",
        );
        assert!(auth.contains("bin4"), "the shipped auth rule changed shape");
        RuleSet::from_sources(&[("auth.yaml".into(), auth)]).expect("valid rules")
    }

    /// BINs 0..10 are one issuer range (4147xx), 10..20 another (5100xx).
    fn two_ranges(b: usize) -> String {
        if b < 10 {
            format!("4147{b:02}")
        } else {
            format!("5100{b:02}")
        }
    }

    #[test]
    fn an_issuer_range_failing_is_one_incident_on_its_prefix() {
        let (start, end) = (40 * 60_000, 50 * 60_000);
        let changes = run_rules(&rules_with_bin4(), 60, two_ranges, |t, _, _, b| {
            (t >= start && t < end && b < 10).then_some(0.8)
        });
        let inc = opened(&changes);
        assert_eq!(inc.len(), 1, "{inc:#?}");
        let dims = &inc[0].root_causes[0].dims;
        assert_eq!(dims.len(), 1, "{dims:?}");
        assert_eq!(dims.get("bin4").map(String::as_str), Some("4147"));
    }

    #[test]
    fn one_bin_of_a_range_failing_is_still_the_bin() {
        let (start, end) = (40 * 60_000, 50 * 60_000);
        let changes = run_rules(&rules_with_bin4(), 60, two_ranges, |t, _, _, b| {
            (t >= start && t < end && b == 3).then_some(0.9)
        });
        let inc = opened(&changes);
        assert_eq!(inc.len(), 1, "{inc:#?}");
        let dims = &inc[0].root_causes[0].dims;
        assert_eq!(dims.len(), 1, "{dims:?}");
        assert_eq!(dims.get("bin").map(String::as_str), Some("414703"));
    }

    #[test]
    fn steady_traffic_and_duplicates_open_nothing() {
        let changes = run(60, |_, _, _, _| None);
        assert!(opened(&changes).is_empty());
    }

    /// A cluster detector's clock is its slowest replica's, so a fast
    /// replica's counts can arrive many steps ahead of the step evaluated
    /// (its backlog flushed after NATS came back, or the others' waited for).
    /// They must be held, not written over the steps still to evaluate: the
    /// outcome is the same as counts arriving in step order.
    #[test]
    fn counts_far_ahead_of_the_clock_are_held_until_their_step() {
        let rule = r#"
rules:
  - name: auth_failures
    kind: auth
    failures: [failure]
    dimensions: [provider, region]
    window: 10s
    step: 2s
    baseline: { horizon: 2m, warmup: 20s, prior_events: 50 }
    thresholds: { min_events: 20, min_failures: 8, min_lift: 2.0, min_rate_increase: 0.05, false_alarm_rate: 0.0001 }
    open_after: 2
    resolve_after: 3
    severity: critical
"#;
        let rules = RuleSet::from_sources(&[("auth.yaml".into(), rule.into())]).unwrap();
        let opts = EngineOptions {
            lateness_ms: 5_000,
            ..EngineOptions::default()
        };
        let providers = ["alpha", "bravo", "charlie", "delta", "echo"];
        // One replica's share of step `s` for every cell: 20 attempts, one
        // failing; charlie fails 10 of 20 from step 60 on.
        let share = |engine: &mut Engine, out: &mut Vec<Change>, s: i64| {
            for p in providers {
                let f = if p == "charlie" && s >= 60 { 10 } else { 1 };
                engine
                    .ingest_counts(0, &[Some(p), Some("us-east-1")], s, 20, f, out)
                    .unwrap();
            }
        };
        let feed = |ahead: i64| {
            let mut engine = Engine::new(&rules, &opts);
            let mut out = Vec::new();
            for s in 0..ahead {
                share(&mut engine, &mut out, s);
            }
            for s in 0..100 {
                // The fast replica's counts `ahead` steps early, the slow
                // one's on time; the clock is the slow one's.
                share(&mut engine, &mut out, s + ahead);
                share(&mut engine, &mut out, s);
                engine.observe((s + 1) * 2_000, &mut out);
            }
            let dims = [("provider", "charlie"), ("region", "us-east-1")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let at = engine.last_step_end("auth_failures").unwrap() - 1;
            let why = engine.explain("auth_failures", &dims, at).unwrap();
            (
                opened(&out).into_iter().cloned().collect::<Vec<_>>(),
                why.attempts,
                why.failures,
                why.baseline_rate,
            )
        };
        let in_order = feed(0);
        assert_eq!(
            in_order.0.len(),
            1,
            "the outage opens in order: {:#?}",
            in_order.0
        );
        for ahead in [4, 8, 30] {
            let skewed = feed(ahead);
            assert_eq!(
                (skewed.1, skewed.2, skewed.3),
                (in_order.1, in_order.2, in_order.3),
                "{ahead} steps ahead: the windows and baselines differ"
            );
            assert_eq!(
                skewed.0, in_order.0,
                "{ahead} steps ahead: the incidents differ"
            );
        }
    }

    /// Held counts are bounded: past `max_cells_per_rule` entries the
    /// evaluation moves on, and what the slowest sender sends for the steps
    /// it passed is late.
    #[test]
    fn counts_held_ahead_are_bounded() {
        let rules = RuleSet::embedded();
        let opts = EngineOptions {
            max_cells_per_rule: 8,
            ..EngineOptions::default()
        };
        let mut engine = Engine::new(&rules, &opts);
        let index = engine
            .rule_index("auth_technical_failures")
            .expect("the shipped auth rule");
        let (_, dims) = engine.rule_shape(index).unwrap();
        let values = vec![Some("p"); dims];
        let mut out = Vec::new();
        engine
            .ingest_counts(index, &values, 1_000, 10, 1, &mut out)
            .unwrap();
        for s in 1_100..1_120 {
            engine
                .ingest_counts(index, &values, s, 10, 1, &mut out)
                .unwrap();
        }
        let rs = &engine.rules[index];
        assert!(rs.held_len <= 8, "held {}", rs.held_len);
        assert!(engine.stats().forced > 0);
        let next = rs.next_step.unwrap();
        assert!(next > 1_000 && next < 1_120, "moved on to {next}");
        assert_eq!(
            engine.ingest_counts(index, &values, next - 1, 10, 1, &mut out),
            Err(Skip::Late)
        );
    }

    #[test]
    fn duplicates_and_late_events_are_skipped() {
        let rules = RuleSet::embedded();
        let mut engine = Engine::new(&rules, &EngineOptions::default());
        let mut out = Vec::new();
        assert_eq!(
            engine.ingest(&ev(1, 100_000, "p", "r", "400000", false), &mut out),
            Ok(())
        );
        assert_eq!(
            engine.ingest(&ev(1, 100_001, "p", "r", "400000", false), &mut out),
            Err(Skip::Duplicate)
        );
        assert_eq!(
            engine.ingest(&ev(2, 69_999, "p", "r", "400000", false), &mut out),
            Err(Skip::Late)
        );
        assert_eq!(
            engine.ingest(&ev(3, 70_000, "p", "r", "400000", false), &mut out),
            Ok(())
        );
    }
}
