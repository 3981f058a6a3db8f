//! One rule's state: its cells, what it has learned, its incidents.
//!
//! Cells are keyed by every slot of the rule's [`CellDims`]: the rule's own
//! dimensions, then the attributes incidents are explained with, then (apart,
//! in `codes`) the error code of failures. What the rule learns is kept at
//! two levels, because the wide cells are far too sparse to learn from one by
//! one (a merchant's traffic spreads over thousands of BIN x provider x
//! region combinations):
//!
//! - a [`Base`] per combination of the rule's own dimensions (the cells it was
//!   written to count), shrunk toward the rule-wide rate when it has little
//!   history: what a `provider x region x bin` normally fails at;
//! - a [`Factors`] table per attribute explained with: how much more or less
//!   often than its base predicts each value fails (a merchant whose normal is
//!   3 % where its BINs' is 1 %), so normal differences on attributes the rule
//!   does not list are not anomalies.
//!
//! A wide cell expects `base rate x the factors of its values`.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use crate::detect::season::{Profile, Season};
use crate::detect::{Criteria, Decay, Direction, Ewma};
use crate::incident::IncidentManager;
use crate::rules::{CompiledRule, Detector};
use crate::window::{Cells, History, Key, NONE_ID};

/// What a rule learns per combination of its own dimensions.
#[derive(Debug, Clone, Default)]
pub(super) struct Base {
    /// Per-step counts, exponentially weighted.
    pub ewma: Ewma,
    /// Seasonal profile, when the rule has `baseline.seasonality`.
    pub season: Option<Box<Profile>>,
}

/// Pseudo-failures a value's factor is shrunk with toward 1 (no difference):
/// a handful of failures does not make a value different.
const FACTOR_PRIOR: f64 = 5.0;

/// How often each value of each attribute explained with fails, relative to
/// what its cells' bases predict, and relative to the other values of its
/// attribute: `(observed + K) / (expected + K)` failures for the value over
/// the same for all values, exponentially weighted like the baselines,
/// learned where nothing is anomalous.
///
/// The bases set the level; a factor only says how a value differs from its
/// attribute's others. Without that (dividing by the attribute's own ratio)
/// a value every cell shares, such as the missing region of events without
/// one, would be a second intercept and learn whatever the bases have not
/// caught up with yet, for everything at once. Each factor is learned against
/// the bases alone, not against the other factors: fitting them against each
/// other (backfitting) is unstable when attributes are collinear, which they
/// often are (a card brand moves with its BINs). The price is some double
/// counting where two attributes carry the same difference. The missing
/// value has no factor.
#[derive(Debug, Default)]
pub(super) struct Factors {
    /// Per slot `base..search` of the cell key: per value id, and over all
    /// values, `f` observed failures and `n` expected ones.
    slots: Vec<(FxHashMap<u32, Ewma>, Ewma)>,
    /// The first slot.
    first: usize,
}

impl Factors {
    fn new(first: usize, end: usize) -> Factors {
        Factors {
            slots: (first..end)
                .map(|_| (FxHashMap::default(), Ewma::default()))
                .collect(),
            first,
        }
    }

    fn ratio(e: &Ewma) -> f64 {
        (e.f + FACTOR_PRIOR) / (e.n + FACTOR_PRIOR)
    }

    /// The product of the factors of a cell's values.
    pub fn product(&self, key: &Key) -> f64 {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, (m, all))| {
                let e = m.get(&key[self.first + i])?;
                Some(Factors::ratio(e) / Factors::ratio(all))
            })
            .product()
    }

    /// Learns from one cell's step: `n` attempts, `f` failures, where its
    /// base expected a failure rate of `rate`.
    pub fn learn(&mut self, key: &Key, step: i64, n: f64, f: f64, rate: f64, decay: &Decay) {
        for (i, (m, all)) in self.slots.iter_mut().enumerate() {
            let v = key[self.first + i];
            if v != NONE_ID {
                m.entry(v).or_default().update(step, n * rate, f, decay);
                all.update(step, n * rate, f, decay);
            }
        }
    }

    /// Forgets values not seen for `idle` steps (their factor has decayed
    /// toward 1 anyway).
    pub fn evict(&mut self, step: i64, idle: i64) {
        for (m, _) in &mut self.slots {
            m.retain(|_, e| step - e.step <= idle);
        }
    }
}

/// The base key of a cell: its slots past the rule's own dimensions cleared.
pub(super) fn base_key(key: &Key, base: usize) -> Key {
    let mut k = *key;
    k[base..].iter_mut().for_each(|v| *v = NONE_ID);
    k
}

pub(super) struct RuleState {
    pub rule: CompiledRule,
    /// Attempts and failures per cell (the code slot cleared).
    pub cells: Cells,
    /// Failures per cell and error code (rate rules explaining with codes).
    pub codes: Cells,
    /// The evaluated steps of `cells` and `codes`, further back than their
    /// rings, for an opening incident's episode.
    pub history: History,
    pub code_history: History,
    /// What the rule learned per combination of its own dimensions.
    pub bases: FxHashMap<Key, Base>,
    /// What it learned per value of the attributes it explains with.
    pub factors: Factors,
    /// Failures per error code where nothing was anomalous (`f`), for the
    /// codes behind an incident.
    pub code_base: FxHashMap<u32, Ewma>,
    pub step_ms: i64,
    pub decay: Decay,
    /// Rule-wide rate baseline, the prior for bases with little history.
    pub overall: Ewma,
    pub first_step: Option<i64>,
    pub next_step: Option<i64>,
    pub warmup_steps: i64,
    pub criteria: Criteria,
    pub incidents: IncidentManager,
    /// Seasonal settings, when `baseline.seasonality` is on.
    pub season: Option<Season>,
    /// Counts for steps further ahead of `next_step` than the cells' rings
    /// hold without overwriting the window still to evaluate, by step
    /// ([`RuleState::count`]); `held_len` entries in all.
    pub held: BTreeMap<i64, Vec<(Key, u32, u32)>>,
    pub held_len: usize,
    /// Per `attrs.NAME` slot, the values seen (at most the rule's attribute
    /// cap; later new values count as missing).
    pub attr_seen: Vec<(usize, rustc_hash::FxHashSet<u32>)>,
    /// Buffers kept from step to step (a step's leaves; its counts per base).
    pub leaf_buf: Vec<crate::localize::Leaf>,
    pub step_buf: FxHashMap<Key, (crate::window::Bucket, crate::window::Bucket)>,
}

impl RuleState {
    /// `history_cap` bounds the entries of each history (cells with counts
    /// in a step, over its steps).
    pub fn new(rule: CompiledRule, lateness_ms: i64, history_cap: usize) -> RuleState {
        let step_ms = rule.step_ms();
        let history_steps = rule.history_steps();
        let lookahead = (lateness_ms / step_ms) as usize + 2;
        let criteria = criteria_of(&rule);
        RuleState {
            cells: Cells::new(rule.window_steps(), lookahead),
            codes: Cells::new(rule.window_steps(), lookahead),
            history: History::new(history_steps, history_cap),
            code_history: History::new(history_steps, history_cap),
            bases: FxHashMap::default(),
            factors: Factors::new(rule.cells.base, rule.cells.search),
            code_base: FxHashMap::default(),
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
            leaf_buf: Vec::new(),
            step_buf: FxHashMap::default(),
            attr_seen: rule
                .cells
                .dims
                .iter()
                .enumerate()
                .filter(|(_, d)| matches!(d, crate::rules::Dim::Attr(_)))
                .map(|(i, _)| (i, Default::default()))
                .collect(),
            rule,
        }
    }

    /// Bounds the values of free-form attributes: past the rule's cap, a new
    /// value of an `attrs.NAME` slot counts as missing (it names nothing).
    pub fn cap_attrs(&mut self, key: &mut Key) {
        let cap = self.rule.cells.attr_cap;
        for (slot, seen) in &mut self.attr_seen {
            let v = key[*slot];
            if v != NONE_ID && !seen.contains(&v) {
                if seen.len() >= cap {
                    key[*slot] = NONE_ID;
                } else {
                    seen.insert(v);
                }
            }
        }
    }

    pub fn volume_rule(&self) -> bool {
        self.rule.rule.detector == Detector::VolumeDrop
    }

    /// Counts `attempts` (`failures` among them) of the cell `key` (every
    /// slot, the error code included) at `step`.
    ///
    /// A cell's ring holds the window plus the allowed lateness. An event
    /// lands further ahead only after a gap in event time, and is released at
    /// once (its ingest moves the watermark and evaluates up to it); but a
    /// cluster detector's clock is its slowest replica's, and a fast
    /// replica's counts (its backlog, flushed once NATS is back) can be many
    /// steps ahead: written into the ring they would overwrite steps not yet
    /// evaluated, and the baseline would learn the broken windows. Those are
    /// held until the evaluation reaches them ([`RuleState::release_held`]).
    pub fn count(&mut self, key: Key, step: i64, attempts: u32, failures: u32) {
        match self.next_step {
            Some(next) if step > next + self.cells.steps_ahead() => {
                self.held
                    .entry(step)
                    .or_default()
                    .push((key, attempts, failures));
                self.held_len += 1;
            }
            _ => self.add(key, step, attempts, failures),
        }
    }

    /// Adds counts to the rings: attempts and failures to the cell without
    /// its code, the failures also to the cell of their code.
    fn add(&mut self, mut key: Key, step: i64, attempts: u32, failures: u32) {
        let cd = &self.rule.cells;
        let code = if cd.code {
            std::mem::replace(&mut key[cd.search], NONE_ID)
        } else {
            NONE_ID
        };
        self.cells.add_counts(key, step, attempts, failures);
        if code != NONE_ID && failures > 0 {
            key[cd.search] = code;
            self.codes.add_counts(key, step, failures, failures);
        }
    }

    /// Moves the held counts the rings can take now that `next` is the next
    /// step to evaluate.
    pub fn release_held(&mut self, next: i64) {
        let reach = next + self.cells.steps_ahead();
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() > reach {
                break;
            }
            let (step, counts) = entry.remove_entry();
            self.held_len -= counts.len();
            for (key, attempts, failures) in counts {
                self.add(key, step, attempts, failures);
            }
        }
    }
}

/// The detection criteria a rule's thresholds set.
pub(super) fn criteria_of(rule: &CompiledRule) -> Criteria {
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

/// Whether two definitions of a rule count the same thing the same way, so its
/// windows and baselines remain valid under the new one.
pub(super) fn same_counting(a: &CompiledRule, b: &CompiledRule) -> bool {
    let (x, y) = (&a.rule, &b.rule);
    x.kind == y.kind
        && x.detector == y.detector
        && x.failures == y.failures
        && x.filter == y.filter
        && x.dimensions == y.dimensions
        && x.window == y.window
        && x.step == y.step
        && x.baseline == y.baseline
        && a.cells == b.cells
}
