//! One evaluation of one rule at one step: leaves, localization, incidents,
//! learning.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use super::state::{base_key, Base, Factors, RuleState};
use super::{CellStep, EngineStats};
use crate::detect::season::Season;
use crate::detect::{directed_llr, Direction};
use crate::incident::{Change, Finding, RootCause};
use crate::localize::{localize, Element, Leaf};
use crate::window::{Bucket, CellRef, Interner, Key, NONE_ID};

/// Steps a cell's worked-out factor product is reused before it is worked out
/// again: factors move on the scale of the baseline horizon.
const FACTOR_REUSE_STEPS: i64 = 4;

/// Share of an incident's excess failures one error code must hold to name
/// a cause that spans everything the rule watches.
const CODE_NAMES_ROOT: f64 = 0.6;

/// What a cell's leaf at one step depends on beyond the cell itself.
pub(super) struct LeafShape {
    volume_rule: bool,
    /// Evaluation step and window length, in steps.
    s: i64,
    nb: usize,
    step_ms: i64,
    prior_rate: f64,
    prior_events: f64,
    season: Option<Season>,
    /// Slots of the rule's own dimensions.
    base: usize,
}

impl LeafShape {
    pub fn of(rs: &RuleState, s: i64) -> LeafShape {
        LeafShape {
            volume_rule: rs.volume_rule(),
            s,
            nb: rs.cells.window_steps,
            step_ms: rs.step_ms,
            prior_rate: rs.overall.rate(0.0, 0.0),
            prior_events: rs.rule.rule.baseline.prior_events,
            season: rs.season,
            base: rs.rule.cells.base,
        }
    }

    /// The failure rate a base expects (plain, before seasonality).
    fn base_rate(&self, base: Option<&Base>) -> f64 {
        base.map_or(self.prior_rate, |b| {
            b.ewma.rate(self.prior_rate, self.prior_events)
        })
    }
}

/// A cell's base rate and factor product: the cached ones while fresh
/// (`Some` when worked out anew, to be cached).
pub(super) fn rates(
    sh: &LeafShape,
    key: &Key,
    cell: CellRef<'_>,
    bases: &FxHashMap<Key, Base>,
    factors: &Factors,
) -> ((f64, f64), bool) {
    // A rate of zero is not reused: nothing can be judged against it, and the
    // next step's baseline may already know better.
    if cell.expect_step != i64::MIN
        && sh.s - cell.expect_step < FACTOR_REUSE_STEPS
        && cell.expect > 0.0
    {
        ((cell.expect, cell.factor), false)
    } else {
        let p = sh.base_rate(bases.get(&base_key(key, sh.base)));
        ((p, factors.product(key)), true)
    }
}

/// A cell's localizer leaf for the window `w` ending at the step: observed
/// against expected failures (rate rules, cells with events) or events (volume
/// rules, cells with a mature volume baseline). `base` is the cell's base
/// (needed by volume rules and seasonality), `(p, fp)` its base rate and
/// factor product (rate rules). The one definition `evaluate` and `explain`
/// share.
pub(super) fn leaf(
    sh: &LeafShape,
    key: &Key,
    cell: CellRef<'_>,
    w: Bucket,
    base: Option<&Base>,
    (p, fp): (f64, f64),
) -> Option<Leaf> {
    let (s, nb) = (sh.s, sh.nb);
    if sh.volume_rule {
        let base = base?;
        let mean = base.ewma.mean_volume();
        let mature = base.ewma.weight >= (nb as f64).max(4.0);
        if !mature || mean <= 0.0 {
            return None;
        }
        // With seasonality, each step of the window expects its slot's share.
        let expected = match &sh.season {
            Some(se) => se.expected(
                base.season.as_deref(),
                mean,
                (s, nb, sh.step_ms),
                nb as f64,
                |_| 1.0,
            ),
            None => mean * nb as f64,
        };
        Some(Leaf {
            key: *key,
            real: w.n as f64,
            predict: expected,
            volume: expected,
        })
    } else if w.n > 0 {
        // With seasonality, each step's attempts at its slot's rate.
        let predict = match (&sh.season, base) {
            (Some(se), Some(b)) => se.expected(
                b.season.as_deref(),
                p,
                (s, nb, sh.step_ms),
                w.n as f64,
                |t| f64::from(cell.bucket(t).n),
            ),
            _ => w.n as f64 * p,
        };
        Some(Leaf {
            key: *key,
            real: w.f as f64,
            predict: (predict * fp).min(w.n as f64),
            volume: w.n as f64,
        })
    } else {
        None
    }
}

/// Builds the step's leaves, evicting cells that no longer matter.
fn leaves(
    rs: &mut RuleState,
    s: i64,
    stats: &mut EngineStats,
    max_cells: usize,
    mut out: Vec<Leaf>,
) -> Vec<Leaf> {
    let nb = rs.cells.window_steps;
    let volume_rule = rs.volume_rule();
    let horizon_steps = (rs.rule.rule.baseline.horizon.ms() / rs.step_ms).max(1);
    let shape = LeafShape::of(rs, s);
    let RuleState {
        cells,
        codes,
        bases,
        factors,
        ..
    } = rs;
    out.clear();
    let mut evicted = 0u64;
    let mut gone: Vec<Key> = Vec::new();
    cells.retain(|key, cell| {
        let w = cell.window_at(s, nb);
        let idle = s - cell.head();
        if volume_rule {
            let expected = bases.get(key).map_or(0.0, |b| b.ewma.mean_volume()) * nb as f64;
            // A flow that used to matter is kept while its absence is news.
            if w.n == 0 && (expected < 1.0 || idle > 4 * horizon_steps) && idle > nb as i64 {
                evicted += 1;
                gone.push(*key);
                return false;
            }
        } else if w.n == 0 && idle > nb as i64 + 1 {
            evicted += 1;
            return false;
        }
        if volume_rule {
            out.extend(leaf(
                &shape,
                key,
                cell.as_ref(),
                w,
                bases.get(key),
                (0.0, 1.0),
            ));
            return true;
        }
        if w.n == 0 {
            return true;
        }
        let (r, fresh) = rates(&shape, key, cell.as_ref(), bases, factors);
        if fresh {
            (cell.expect, cell.factor, cell.expect_step) = (r.0, r.1, s);
        }
        // Only seasonal rules need the base itself each step.
        let base = shape
            .season
            .and_then(|_| bases.get(&base_key(key, shape.base)));
        out.extend(leaf(&shape, key, cell.as_ref(), w, base, r));
        true
    });
    codes.retain(|_, cell| s - cell.head() <= nb as i64 + 1);
    for k in &gone {
        bases.remove(k);
    }
    stats.evicted += evicted;
    if cells.len() > max_cells {
        // Over budget: drop the idlest cells (oldest head) first.
        let mut heads: Vec<i64> = cells.iter().map(|(_, c)| c.head()).collect();
        let excess = cells.len() - max_cells;
        heads.select_nth_unstable(excess);
        let cutoff = heads[excess];
        let mut dropped = 0usize;
        cells.retain(|_, c| {
            if c.head() < cutoff && dropped < excess {
                dropped += 1;
                false
            } else {
                true
            }
        });
        stats.evicted += dropped as u64;
    }
    out
}

/// One evaluation of one rule at step `s` (the window ends with step `s`).
pub(super) fn evaluate(
    rs: &mut RuleState,
    s: i64,
    interner: &Interner,
    max_cells: usize,
    stats: &mut EngineStats,
    out: &mut Vec<Change>,
) {
    stats.evaluations += 1;
    let warm = rs.first_step.is_some_and(|f| s - f >= rs.warmup_steps);

    // 1. Leaves, with eviction of cells that no longer matter.
    let buf = std::mem::take(&mut rs.leaf_buf);
    let leaves = leaves(rs, s, stats, max_cells, buf);

    // 2. Localize, once the baseline has warmed up.
    let loc = if warm && !leaves.is_empty() {
        localize(
            rs.rule.cells.search,
            &leaves,
            &rs.criteria,
            &rs.rule.localize_limits(),
        )
    } else {
        Default::default()
    };
    let mut loc = loc;
    if rs.volume_rule() {
        let before = loc.causes.len();
        loc.causes.retain(|el| !moved(el, &leaves));
        stats.shifts += (before - loc.causes.len()) as u64;
    }
    let codes = CodeMix::of(rs, s);
    let to_finding = |el: &Element| Finding {
        element: el.clone(),
        cause: root_cause(rs, el, interner, &codes),
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
            (root_cause(rs_ref, &e, interner, &codes), passes)
        });
        let mut changes = changes;
        manager.record_episode(&rs_ref.rule, end_ms, &mut changes, |els, steps| {
            super::episode::step_counts(rs_ref, &leaves, interner, &codes.share, (s, steps), els)
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
    learn(rs, s, &anomalous);
    rs.leaf_buf = leaves;
}

/// Share of a volume drop that must reappear on the element's siblings (the
/// rest of a parent) for the drop to be a traffic shift.
const SHIFT_SHARE: f64 = 0.5;

/// Whether a volume drop on `el` is traffic moving, not traffic lost: along
/// one of its dimensions, its siblings gained at least [`SHIFT_SHARE`] of
/// what it lost (a region failing over to another, its provider's total
/// holding).
fn moved(el: &Element, leaves: &[Leaf]) -> bool {
    let lost = el.predict - el.real;
    if lost <= 0.0 {
        return false;
    }
    (0..crate::window::MAX_DIMS)
        .filter(|d| el.mask & (1 << d) != 0)
        .any(|d| {
            let parent = Element {
                mask: el.mask & !(1 << d),
                ..el.clone()
            };
            let gained: f64 = leaves
                .iter()
                .filter(|l| parent.contains(&l.key) && !el.contains(&l.key))
                .map(|l| l.real - l.predict)
                .sum();
            gained >= SHIFT_SHARE * lost
        })
}

/// Every cell's step teaches its base (and, rate rules, the factors of its
/// values) unless it lies in something anomalous.
fn learn(rs: &mut RuleState, s: i64, anomalous: &[Element]) {
    let volume_rule = rs.volume_rule();
    let nb = rs.cells.window_steps;
    let prior = (
        rs.overall.rate(0.0, 0.0),
        rs.rule.rule.baseline.prior_events,
    );
    let mature_weight = (nb as f64).max(4.0);
    let base_len = rs.rule.cells.base;
    let RuleState {
        cells,
        codes,
        bases,
        factors,
        code_base,
        decay,
        overall,
        season,
        step_ms,
        step_buf,
        ..
    } = rs;
    let in_anomaly = |key: &Key| anomalous.iter().any(|el| el.contains(key));
    let (mut tot_n, mut tot_f) = (0.0, 0.0);

    if volume_rule {
        // One base per cell; every cell learns every step (a step without
        // events is part of a flow's volume).
        for (key, cell) in cells.iter() {
            let b = cell.bucket(s);
            let base = bases.entry(*key).or_default();
            let anomalous = in_anomaly(key);
            let g = season.as_ref().map_or(1.0, |se| {
                learn_season(
                    se,
                    base,
                    s,
                    *step_ms,
                    anomalous,
                    true,
                    prior,
                    mature_weight,
                    b,
                )
            });
            if anomalous {
                base.ewma.skip(s, decay);
            } else {
                base.ewma
                    .update_weighted(s, b.n as f64, b.f as f64, g, decay);
                tot_n += b.n as f64;
                tot_f += b.f as f64;
            }
        }
        overall.update(s, tot_n, tot_f, decay);
        return;
    }

    // Rate rules: a base learns the sum of its clean cells' step. Factors
    // learn once the rule has a rate to compare with (before, every base
    // expects nothing and every value would look failing).
    let factors_learn = overall.n >= prior.1.max(1.0);
    // Per base: the step's counts of all its cells, and of its clean ones.
    let mut steps = std::mem::take(step_buf);
    steps.clear();
    for key in cells.touched(s) {
        let Some(cell) = cells.get(key) else { continue };
        let b = cell.bucket(s);
        if b.n == 0 {
            continue;
        }
        let (all, clean) = steps.entry(base_key(key, base_len)).or_default();
        all.n += b.n;
        all.f += b.f;
        if in_anomaly(key) {
            continue;
        }
        clean.n += b.n;
        clean.f += b.f;
        if factors_learn {
            factors.learn(key, s, f64::from(b.n), f64::from(b.f), cell.expect, decay);
        }
    }
    for (key, (all, clean)) in steps.drain() {
        let base = bases.entry(key).or_default();
        // The seasonal slot learns everything while it is untrusted (a
        // recurring window is anomalous until it is learned).
        let g = season.as_ref().map_or(1.0, |se| {
            let anomalous = clean.n < all.n;
            learn_season(
                se,
                base,
                s,
                *step_ms,
                anomalous,
                false,
                prior,
                mature_weight,
                all,
            )
        });
        if clean.n == 0 {
            base.ewma.skip(s, decay);
            continue;
        }
        base.ewma
            .update(s, clean.n as f64, clean.f as f64 / g, decay);
        tot_n += clean.n as f64;
        tot_f += clean.f as f64 / g;
    }
    *step_buf = steps;
    overall.update(s, tot_n, tot_f, decay);
    for (key, cell) in codes.iter() {
        let b = cell.bucket(s);
        if b.f > 0 && !in_anomaly(key) {
            let code = key[rs.rule.cells.search];
            code_base
                .entry(code)
                .or_default()
                .update(s, 0.0, f64::from(b.f), decay);
        }
    }
    // What has been idle for several horizons has decayed to the prior anyway.
    let idle = 4 * (rs.rule.rule.baseline.horizon.ms() / rs.step_ms).max(1);
    if s % 16 == 0 {
        rs.bases.retain(|_, b| s - b.ewma.step <= idle);
        rs.factors.evict(s, idle);
        rs.code_base.retain(|_, e| s - e.step <= idle);
    }
}

/// The step's own counts per combination of the rule's own dimensions (what
/// dashboards chart), with the baseline as it stands before the step teaches it.
pub(super) fn record_steps(rs: &RuleState, s: i64, interner: &Interner, out: &mut Vec<CellStep>) {
    let volume_rule = rs.volume_rule();
    let sh = LeafShape::of(rs, s);
    let rule: std::sync::Arc<str> = rs.rule.rule.name.as_str().into();
    let kind: std::sync::Arc<str> = rs.rule.rule.kind.as_str().into();
    let mut steps: BTreeMap<Key, Bucket> = BTreeMap::new();
    for (key, cell) in rs.cells.iter() {
        let b = cell.bucket(s);
        if b.n == 0 && !volume_rule {
            continue;
        }
        let e = steps.entry(base_key(key, sh.base)).or_default();
        e.n += b.n;
        e.f += b.f;
    }
    for (key, b) in steps {
        let base = rs.bases.get(&key);
        // With seasonality, the level the step's slot expects.
        let (expected, baseline) = if volume_rule {
            let v = season_level(rs, base, s, base.map_or(0.0, |b| b.ewma.mean_volume()));
            if b.n == 0 && v <= 0.0 {
                continue;
            }
            (v, v)
        } else {
            let p = season_level(rs, base, s, sh.base_rate(base));
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

/// The level (rate, or events per step) a base expects at step `s` given its
/// plain baseline `level`: `level` itself when the rule has no seasonality or
/// the base's profile does not trust the step's slot yet.
fn season_level(rs: &RuleState, base: Option<&Base>, s: i64, level: f64) -> f64 {
    match (&rs.season, base.and_then(|b| b.season.as_deref())) {
        (Some(se), Some(p)) => p.expect(se, se.visit(s, rs.step_ms), level),
        _ => level,
    }
}

/// Seasonal learning for one base at step `s` (`b` its step's counts), before
/// its plain baseline learns: closes the previous slot visit when `s` starts a
/// new one, adds the step to the visit (every step while the slot is
/// untrusted, else only when the base is not anomalous) and returns the factor
/// the step was judged with, by which the plain baseline deseasonalizes what
/// it learns.
#[allow(clippy::too_many_arguments)]
fn learn_season(
    se: &Season,
    base: &mut Base,
    s: i64,
    step_ms: i64,
    anomalous: bool,
    volume_rule: bool,
    prior: (f64, f64),
    mature_weight: f64,
    b: Bucket,
) -> f64 {
    let visit = se.visit(s, step_ms);
    let level = if volume_rule {
        base.ewma.mean_volume()
    } else {
        base.ewma.rate(prior.0, prior.1)
    };
    // A volume visit needs a baseline to shrink toward; a rate one has the prior.
    let usable = !volume_rule || base.ewma.weight >= mature_weight;
    let profile = base.season.get_or_insert_with(|| se.new_profile());
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

/// The error codes of the window's failures against their usual mix.
struct CodeMix {
    /// Failures in the window per cell with a code (`key` with its code slot).
    cells: Vec<(Key, u32)>,
    /// Usual share of each code among failures.
    share: FxHashMap<u32, f64>,
    /// The code slot.
    slot: usize,
}

impl CodeMix {
    fn of(rs: &RuleState, s: i64) -> CodeMix {
        let nb = rs.codes.window_steps;
        let cells = rs
            .codes
            .iter()
            .map(|(k, c)| (*k, c.window(s, nb).f))
            .filter(|(_, f)| *f > 0)
            .collect();
        let decayed: Vec<(u32, f64)> = rs
            .code_base
            .iter()
            .map(|(c, e)| (*c, e.f * rs.decay.pow(s - e.step)))
            .collect();
        let total: f64 = decayed.iter().map(|x| x.1).sum();
        let share = decayed
            .into_iter()
            .map(|(c, f)| (c, if total > 0.0 { f / total } else { 0.0 }))
            .collect();
        CodeMix {
            cells,
            share,
            slot: rs.rule.cells.search,
        }
    }

    /// The code holding at least [`CODE_NAMES_ROOT`] of the element's excess
    /// failures, if one does.
    fn dominant(&self, el: &Element) -> Option<u32> {
        let mut by_code: FxHashMap<u32, f64> = FxHashMap::default();
        for (k, f) in &self.cells {
            if el.contains(k) {
                *by_code.entry(k[self.slot]).or_default() += f64::from(*f);
            }
        }
        let excess = |c: u32, f: f64| f - el.predict * self.share.get(&c).copied().unwrap_or(0.0);
        let total: f64 = by_code.iter().map(|(c, f)| excess(*c, *f).max(0.0)).sum();
        let (code, top) = by_code
            .iter()
            .map(|(c, f)| (*c, excess(*c, *f)))
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))?;
        (total > 0.0 && top >= CODE_NAMES_ROOT * total && code != NONE_ID).then_some(code)
    }
}

fn dims_map(rs: &RuleState, el: &Element, interner: &Interner) -> BTreeMap<String, String> {
    rs.rule
        .cells
        .dims
        .iter()
        .take(rs.rule.cells.search)
        .enumerate()
        .filter(|(d, _)| el.mask & (1 << d) != 0)
        .map(|(d, dim)| (dim.name(), interner.value(el.key[d]).to_string()))
        .collect()
}

fn root_cause(rs: &RuleState, el: &Element, interner: &Interner, codes: &CodeMix) -> RootCause {
    let mut dims = dims_map(rs, el, interner);
    // A cause across everything the rule watches is named by the error code
    // behind it, when one code holds most of the excess.
    if dims.is_empty() && rs.rule.cells.code && rs.criteria.direction == Direction::Up {
        if let Some(code) = codes.dominant(el) {
            dims.insert("error_code".into(), interner.value(code).to_string());
        }
    }
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
