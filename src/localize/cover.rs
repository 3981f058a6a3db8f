//! Relative-deviation localization for forecast snapshots (`faultline rca`).
//!
//! The daemon localizes *counts* (failures against attempts times a baseline), where
//! Poisson deviance is the right evidence. A forecast snapshot is different: `real`
//! and `predict` are additive measures with forecast noise proportional to the value,
//! so the deviance of a large aggregate explodes on noise alone and ranks big,
//! diluted ancestors above the true cause. Here the evidence is relative:
//!
//! 1. **Classify leaves.** Each leaf's relative deviation `(real - predict) / mean`
//!    (over the mean of the two, so that swapping them only flips the sign) is
//!    compared with a threshold `t` estimated from the data. A robust start, `6 x`
//!    the first quartile of `|dev|` over the leaves still considered normal, iterated
//!    so that a large anomaly does not inflate its own threshold; then, for a steadier
//!    estimate, `3 x` the mean of `|dev|` over the leaves inside the threshold, iterated
//!    likewise (floor 0.05). For uniform noise of width n both give 1.5 n (the mean
//!    form 2.3 sigma for Gaussian noise). The denominator has a floor at the 5th
//!    percentile of the forecasts, so leaves below the data's resolution cannot look
//!    deviant. Leaves are normal, leaning (beyond `t / 3`) up or down, abnormal
//!    (beyond `t`) up or down, or neutral (`predict = real = 0`, or absent).
//! 2. **Elements that lean one way, shallowest first.** An element is a candidate when
//!    at least `purity` of its non-neutral leaves lean the same way. Layers are
//!    scanned from one dimension down to all of them; a chosen element closes its
//!    leaves, so its descendants (redundant) are never reported and deeper layers only
//!    look at elements holding leaves nothing explains yet, judged on those leaves
//!    alone (a found cause's leaves are no evidence for an element overlapping it). Each stops counting once it
//!    has seen enough other leaves to fail: the search prunes rather than enumerates.
//! 3. **It must stand out of the noise.** Its `k` strongest leaves (`k` from
//!    `purity x n` to all that lean) all beyond the `k`-th one's deviation `x` must be
//!    rarer than `tail_false` among all elements of all cuboids: `2 M C(n, k)
//!    rate(x)^k`, with `rate(x)` the share of the unexplained leaves at `x` or beyond
//!    in that direction (within `t`), or beyond `t` a Gaussian fitted to the leaves
//!    between `0.9 t` and `t` (or the exponential `Tail`, when larger). Weak causes
//!    whose leaves all lean but stay within `t` pass by their number; a few noise
//!    leaves beyond `t` do not; bounded noise never reaches `0.9 t`, and then
//!    whatever is beyond `t` is not noise.
//! 4. **Pieces and candidates.** Found elements of one direction that share an
//!    ancestor leaning their way on `merge_purity` of its leaves (other found
//!    elements' leaves left out) are pieces of it: the
//!    ancestor becomes the cause, they become candidates. Then the causes are ordered
//!    by their share of the absolute deviation; past `max_causes` or below
//!    `min_share` they are candidates too.
//!
//! Leaves live in a dense grid (the product of the dimension sizes, absent
//! combinations neutral), so an element's leaves are enumerated by index arithmetic
//! with no per-element lists.

use super::{Element, Mask};
use crate::window::MAX_DIMS;

/// Tuning of the relative-deviation search.
#[derive(Debug, Clone, Copy)]
pub struct CoverOptions {
    /// Share of an element's non-neutral leaves that must lean the same way.
    pub purity: f64,
    /// The leaf threshold is this multiple of a low quantile of the absolute
    /// relative deviations (see `deviation_quantile`).
    pub deviation_multiple: f64,
    /// Quantile of the absolute relative deviations that measures the noise; low, so
    /// that causes covering up to three quarters of the leaves do not inflate it.
    pub deviation_quantile: f64,
    /// The threshold is then refined to this multiple of the mean absolute
    /// relative deviation of the leaves inside it.
    pub mean_multiple: f64,
    /// Elements, over all cuboids, that noise may be expected to make stand out
    /// (see `stands_out`).
    pub tail_false: f64,
    /// Lowest leaf threshold (relative deviation), whatever the noise.
    pub min_threshold: f64,
    /// Most elements reported as causes (the rest become candidates).
    pub max_causes: usize,
    /// A leaf leans when its deviation passes this fraction of the leaf threshold;
    /// an element is a cause when `purity` of its leaves lean one way and they stand
    /// out of the noise together.
    pub low_fraction: f64,
    /// Share of the leaves of a common ancestor of found elements that must lean
    /// their way for it to replace them as the cause.
    pub merge_purity: f64,
    /// Smallest share of the found elements' total absolute deviation a cause
    /// explains; smaller ones are candidates.
    pub min_share: f64,
    /// Quantile of the positive forecasts added to every denominator.
    pub predict_floor_quantile: f64,
}

impl Default for CoverOptions {
    fn default() -> Self {
        CoverOptions {
            purity: 0.9,
            deviation_multiple: 6.0,
            deviation_quantile: 0.25,
            mean_multiple: 3.0,
            tail_false: 0.02,
            min_threshold: 0.05,
            max_causes: 10,
            low_fraction: 1.0 / 3.0,
            merge_purity: 0.75,
            min_share: 0.0,
            predict_floor_quantile: 0.05,
        }
    }
}

/// A tail needs more leaves than this beyond the threshold in the minority direction:
/// a few are causes leaning the other way.
const TAIL_MIN_LEAVES: usize = 5;

/// Leaf classes.
const NEUTRAL: u8 = 0;
const NORMAL: u8 = 1;
/// Beyond `t x low_fraction` but within `t`.
const LEAN_UP: u8 = 2;
const LEAN_DOWN: u8 = 3;
/// Beyond `t`.
const UP: u8 = 4;
const DOWN: u8 = 5;

/// A snapshot as a dense grid over the dimension sizes.
#[derive(Debug, Clone)]
pub struct Grid {
    /// Values per dimension (value ids run `0..size`).
    pub sizes: Vec<u32>,
    /// Observed value per cell, row-major (last dimension fastest).
    pub real: Vec<f64>,
    /// Expected value per cell.
    pub predict: Vec<f64>,
}

/// Cells a grid may have at most, relative to the leaves given: sparser inputs go to
/// the daemon's list-based search instead.
pub fn grid_fits(sizes: &[u32], leaves: usize) -> bool {
    let cells = sizes.iter().map(|&s| s as u128).product::<u128>();
    !sizes.is_empty()
        && sizes.len() <= MAX_DIMS
        && cells <= (8 * leaves as u128).max(1 << 16)
        && cells <= u32::MAX as u128
}

impl Grid {
    /// An empty grid (every cell neutral).
    pub fn new(sizes: &[u32]) -> Grid {
        let cells = sizes.iter().map(|&s| s as usize).product::<usize>();
        Grid {
            sizes: sizes.to_vec(),
            real: vec![0.0; cells],
            predict: vec![0.0; cells],
        }
    }

    /// Row-major strides.
    fn strides(&self) -> Vec<usize> {
        let mut s = vec![1usize; self.sizes.len()];
        for d in (0..self.sizes.len().saturating_sub(1)).rev() {
            s[d] = s[d + 1] * self.sizes[d + 1] as usize;
        }
        s
    }

    /// Cell index of a key (value ids per dimension).
    pub fn index(&self, key: &[u32]) -> usize {
        let st = self.strides();
        key.iter().zip(&st).map(|(&v, &s)| v as usize * s).sum()
    }

    /// Adds a leaf (duplicates add up: the measures are additive).
    pub fn add(&mut self, key: &[u32], real: f64, predict: f64) {
        let i = self.index(key);
        self.real[i] += real;
        self.predict[i] += predict;
    }
}

/// Relative deviation of a leaf, `None` for a neutral one (`real = predict = 0`):
/// `(real - predict)` over their mean, so that swapping the two only flips the sign
/// (a forecast 30% too high and one 30% too low are equally far off; over `predict`
/// alone, noise that lowers the forecast reaches further than noise that raises it,
/// and its tail looks like causes). It runs from -2 to 2. The denominator has a
/// floor: leaves below the data's resolution (a forecast of 0.004 written as 0.00)
/// must not look deviant.
fn rel_dev(grid: &Grid, floor: f64, i: usize) -> Option<f64> {
    let (r, p) = (grid.real[i], grid.predict[i]);
    if p != 0.0 || r != 0.0 {
        // max, not sum: leaves above the floor keep their plain relative
        // deviation, so the noise estimate is not shrunk by the floor.
        let den = (0.5 * (r.abs() + p.abs())).max(floor);
        Some(if den > 0.0 {
            (r - p) / den
        } else {
            f64::INFINITY.copysign(r - p)
        })
    } else {
        None
    }
}

/// The `q` quantile of `xs` (reordered), `None` when empty.
fn quantile(xs: &mut [f64], q: f64) -> Option<f64> {
    let k = ((xs.len() as f64 * q) as usize).min(xs.len().checked_sub(1)?);
    Some(*xs.select_nth_unstable_by(k, f64::total_cmp).1)
}

/// Iterates `t = next(t)` from `t` until it stops moving, `next` gives up, or
/// `rounds` have passed.
fn settle(mut t: f64, rounds: usize, mut next: impl FnMut(f64) -> Option<f64>) -> f64 {
    for _ in 0..rounds {
        match next(t) {
            Some(n) if (n - t).abs() >= 1e-9 => t = n,
            _ => break,
        }
    }
    t
}

/// Leaf classes, the threshold `t` and the denominator's floor.
fn classify(grid: &Grid, opts: &CoverOptions) -> (Vec<u8>, f64, f64) {
    let n = grid.real.len();
    // A sample is enough for quantiles; a fixed stride keeps it deterministic.
    let step = (n / 400_000).max(1);
    // The floor is a low quantile of the positive forecasts.
    let mut small: Vec<f64> = (0..n)
        .step_by(step)
        .map(|i| grid.predict[i])
        .filter(|&p| p > 0.0)
        .collect();
    let floor = quantile(&mut small, opts.predict_floor_quantile).unwrap_or(0.0);
    let dev = |i: usize| rel_dev(grid, floor, i);
    let sample: Vec<f64> = (0..n).step_by(step).filter_map(dev).map(f64::abs).collect();
    let t = settle(f64::INFINITY, 8, |t| {
        let mut inside: Vec<f64> = sample.iter().copied().filter(|&x| x < t).collect();
        let q = quantile(&mut inside, opts.deviation_quantile)?;
        Some((opts.deviation_multiple * q).max(opts.min_threshold))
    });
    // Refine with the mean of the leaves inside the threshold. A low quantile is
    // robust to causes but, from a few hundred leaves, varies so much that a sample
    // whose low end happens to be thin puts the threshold inside the noise band
    // (seen: 6 x Q1 = 0.086 for uniform noise of width 0.1). The mean of the inliers
    // varies a third as much, and `t = 3 x mean` has the same design point (1.5 n for
    // uniform noise, 2.3 sigma for Gaussian) with the fixed point above the band: a
    // threshold too low truncates the noise, and 3 x the mean of noise cut at t is
    // 1.5 t, so the iteration climbs back out.
    let t = if t.is_finite() {
        settle(t, 16, |t| {
            let (sum, count) = sample
                .iter()
                .filter(|&&x| x < t)
                .fold((0.0, 0usize), |(s, c), &x| (s + x, c + 1));
            (count > 0).then(|| (opts.mean_multiple * sum / count as f64).max(opts.min_threshold))
        })
    } else {
        t
    };
    let t = if t.is_finite() { t } else { opts.min_threshold };
    let low = t * opts.low_fraction;
    let cls = (0..n)
        .map(|i| match dev(i) {
            None => NEUTRAL,
            Some(x) if x > t => UP,
            Some(x) if x < -t => DOWN,
            Some(x) if x > low => LEAN_UP,
            Some(x) if x < -low => LEAN_DOWN,
            Some(_) => NORMAL,
        })
        .collect();
    (cls, t, floor)
}

/// Walks the cells of one element: `fixed` holds (stride, value) per fixed dimension,
/// `free` (stride, size) per free one. Stops when `f` returns false.
fn for_each_cell(base: usize, free: &[(usize, u32)], mut f: impl FnMut(usize) -> bool) {
    let mut ctr = vec![0u32; free.len()];
    let mut idx = base;
    loop {
        if !f(idx) {
            return;
        }
        // Odometer over the free dimensions, last fastest.
        let mut d = free.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            let (s, size) = free[d];
            ctr[d] += 1;
            idx += s;
            if ctr[d] < size {
                break;
            }
            idx -= s * size as usize;
            ctr[d] = 0;
        }
    }
}

/// The tail of the noise beyond the leaf threshold `t`, as far as the leaves still
/// unexplained show it.
///
/// Under noise with unbounded tails (Gaussian forecast errors) a few leaves in every
/// hundred cross `t`, and an element whose few leaves all crossed it is pure: single
/// leaves by the hundred, and with millions of leaves elements of three or four. The
/// unexplained leaves hold that tail, but also the remnants of weak causes no element
/// covered purely. Noise is taken as symmetric and remnants lean one way, so the tail
/// is measured on the minority direction, which is almost all noise. When it holds
/// at most `max_causes` leaves there is no tail to speak of (bounded noise) and
/// nothing is cut; otherwise its excesses over `t` are fitted with an exponential
/// (scale from the median, so a few true causes among them do not stretch it). The
/// exponential's tail is heavier than the Gaussian's, so the cuts err high.
#[derive(Debug, Clone, Copy)]
struct Tail {
    /// Share of the non-neutral leaves beyond `t` in one direction.
    rate: f64,
    /// Mean excess over `t` of the exponential fit.
    scale: f64,
}

impl Tail {
    fn measure(
        grid: &Grid,
        floor: f64,
        t: f64,
        open: &[u32],
        leaves: usize,
        max_causes: usize,
    ) -> Option<Tail> {
        let (mut up, mut down): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
        for &i in open {
            match rel_dev(grid, floor, i as usize) {
                Some(x) if x.is_finite() && x > t => up.push(x - t),
                Some(x) if x.is_finite() && x < -t => down.push(-x - t),
                _ => {}
            }
        }
        let mut minority = if up.len() < down.len() { up } else { down };
        if minority.len() <= max_causes || leaves == 0 {
            return None;
        }
        let median = quantile(&mut minority, 0.5)?;
        Some(Tail {
            rate: minority.len() as f64 / leaves as f64,
            scale: median.max(0.0) / std::f64::consts::LN_2,
        })
    }
}

/// What the search found: the causes, best first, and the candidates (pieces of a
/// cause, and elements too weak to report as causes), best first.
#[derive(Debug, Clone, Default)]
pub struct Localized {
    /// Elements that explain the deviation.
    pub causes: Vec<Element>,
    /// Pieces of a cause (elements within it that were found first) and weaker
    /// alternatives (below `min_share`, or past `max_causes`).
    pub candidates: Vec<Element>,
}

/// Localizes the deviation in a grid; elements carry value ids in `key`.
pub fn localize_grid(grid: &Grid, opts: &CoverOptions) -> Vec<Element> {
    localize_grid_all(grid, opts).causes
}

/// The noise's share of leaves beyond a deviation `x`, per direction, measured on the
/// leaves still unexplained at a layer (a sample of them), so that found causes no
/// longer count. Up to the leaf threshold `t` it is the leaves' own share (what is
/// left of causes makes it larger, so the test errs strict); beyond `t` leaves are too
/// few to count, and a Gaussian fitted where the leaves still are (at `0.9 t`) gives
/// the share, or the exponential `Tail` when that is larger. Noise that never gets
/// near `t` (bounded) has no leaves at `0.9 t`: then nothing beyond `t` is noise.
#[derive(Debug, Default)]
struct Noise {
    /// Magnitudes of the unexplained leaves' deviations, ascending, per direction
    /// (0 up, 1 down).
    mags: [Vec<f64>; 2],
    /// Non-neutral leaves the sample stands for.
    leaves: f64,
    /// Gaussian scale fitted at `0.9 t`, per direction.
    sigma: [Option<f64>; 2],
}

impl Noise {
    fn measure(grid: &Grid, floor: f64, t: f64, open: &[u32], leaves: usize) -> Noise {
        use statrs::distribution::{ContinuousCDF, Normal};
        let step = (open.len() / 400_000).max(1);
        let mut noise = Noise {
            leaves: leaves as f64 / step as f64,
            ..Noise::default()
        };
        for &i in open.iter().step_by(step) {
            match rel_dev(grid, floor, i as usize) {
                Some(x) if x > 0.0 => noise.mags[0].push(x),
                Some(x) if x < 0.0 => noise.mags[1].push(-x),
                _ => {}
            }
        }
        for d in 0..2 {
            noise.mags[d].sort_unstable_by(f64::total_cmp);
            // The Gaussian whose share between 0.9 t and t is the leaves' share there
            // (leaves beyond t are left out: they may be causes). That share grows
            // with the scale up to 0.95 t, so bisection finds it.
            let band = noise.share(d, 0.9 * t) - noise.share(d, t);
            let in_band = |s: f64| {
                let std = Normal::new(0.0, s).ok();
                std.map_or(0.0, |n| n.cdf(t) - n.cdf(0.9 * t))
            };
            if band > 0.0 {
                let (mut lo, mut hi) = (t / 40.0, 0.95 * t);
                if in_band(hi) <= band {
                    lo = hi;
                }
                for _ in 0..40 {
                    let mid = 0.5 * (lo + hi);
                    if in_band(mid) < band {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                noise.sigma[d] = Some(lo);
            }
        }
        noise
    }

    /// Share of the leaves at `x` or beyond, in direction `d` (the leaf being judged
    /// counts itself: the strongest of them is as common as one leaf).
    fn share(&self, d: usize, x: f64) -> f64 {
        let v = &self.mags[d];
        let above = v.len() - v.partition_point(|&m| m < x);
        if self.leaves > 0.0 {
            above as f64 / self.leaves
        } else {
            0.0
        }
    }

    /// `ln` of the share of leaves that noise puts beyond `x` in direction `d`.
    fn ln_rate(&self, d: usize, x: f64, t: f64, tail: Option<Tail>) -> f64 {
        if x <= t {
            return self.share(d, x).ln();
        }
        let exp = tail.map_or(f64::NEG_INFINITY, |tail| {
            tail.rate.ln() - (x - t) / tail.scale.max(f64::MIN_POSITIVE)
        });
        let gauss = self.sigma[d].map_or(f64::NEG_INFINITY, |s| ln_normal_tail(x / s));
        exp.max(gauss)
    }
}

/// `ln P(Z > z)` for a standard normal `Z`, with the asymptotic form far out.
fn ln_normal_tail(z: f64) -> f64 {
    let p = 0.5 * statrs::function::erf::erfc(z / std::f64::consts::SQRT_2);
    if p > 1e-300 {
        p.ln()
    } else {
        -0.5 * z * z - (z * (2.0 * std::f64::consts::PI).sqrt()).ln()
    }
}

/// `ln` of the binomial coefficient.
fn ln_choose(n: usize, k: usize) -> f64 {
    use statrs::function::gamma::ln_gamma;
    ln_gamma(n as f64 + 1.0) - ln_gamma(k as f64 + 1.0) - ln_gamma((n - k) as f64 + 1.0)
}

/// One element's leaves as the search sees them: those no element found so far
/// explains.
struct Tally {
    /// Non-neutral leaves.
    leaves: usize,
    /// Leaning leaves.
    fresh: usize,
    /// Leaves leaning up (beyond `t x low_fraction`) and down.
    up: usize,
    down: usize,
    real: f64,
    predict: f64,
}

/// Counts an element's leaves that no found element explains; stops early (`None`)
/// once neither direction can reach `purity` of them.
fn tally(
    grid: &Grid,
    cls: &[u8],
    closed: &[bool],
    base: usize,
    free: &[(usize, u32)],
    max_off: usize,
) -> Option<Tally> {
    let mut t = Tally {
        leaves: 0,
        fresh: 0,
        up: 0,
        down: 0,
        real: 0.0,
        predict: 0.0,
    };
    let mut ok = true;
    for_each_cell(base, free, |i| {
        // Leaves a found element explains are no evidence for this one: counting
        // them would let a few noise leaves beside a cause look like a cause of
        // their own (a cause on one value of a 5-valued dimension fills 1/5 of every
        // deeper element's leaves with strongly leaning ones).
        if closed[i] {
            return true;
        }
        let c = cls[i];
        if c != NEUTRAL {
            t.leaves += 1;
            t.fresh += usize::from(c >= LEAN_UP);
            t.up += usize::from(c == UP || c == LEAN_UP);
            t.down += usize::from(c == DOWN || c == LEAN_DOWN);
        }
        t.real += grid.real[i];
        t.predict += grid.predict[i];
        ok = t.leaves - t.up <= max_off || t.leaves - t.down <= max_off;
        ok
    });
    ok.then_some(t)
}

/// Whether an element's leaning leaves stand out of the noise: for the `k` strongest
/// of its `n` leaves (`k` from `purity x n` up to all that lean), all beyond the
/// `k`-th one's deviation `x`, noise is expected to make `2 M C(n, k) rate(x)^k` such
/// elements among the `M` of its cuboid. The element stands out when, for some `k`,
/// that is below `tail_false`.
#[allow(clippy::too_many_arguments)]
fn stands_out(
    grid: &Grid,
    closed: &[bool],
    floor: f64,
    t: f64,
    base: usize,
    free: &[(usize, u32)],
    up: bool,
    leaves: usize,
    ln_m: f64,
    noise: &Noise,
    tail: Option<Tail>,
    opts: &CoverOptions,
) -> bool {
    let t_low = t * opts.low_fraction;
    let mut mags = Vec::new();
    for_each_cell(base, free, |i| {
        if closed[i] {
            return true;
        }
        if let Some(x) = rel_dev(grid, floor, i) {
            let m = if up { x } else { -x };
            if m > t_low {
                mags.push(m);
            }
        }
        true
    });
    mags.sort_unstable_by(|a, b| b.total_cmp(a));
    let k_min = ((opts.purity * leaves as f64).ceil() as usize).max(1);
    (k_min..=mags.len()).any(|k| {
        let x = mags[k - 1];
        ln_m + ln_choose(leaves, k) + k as f64 * noise.ln_rate(usize::from(!up), x, t, tail) < 0.0
    })
}

/// Localizes the deviation in a grid: causes and candidates, value ids in `key`.
pub fn localize_grid_all(grid: &Grid, opts: &CoverOptions) -> Localized {
    let dims = grid.sizes.len().min(MAX_DIMS);
    if dims == 0 || grid.real.is_empty() {
        return Localized::default();
    }
    let strides = grid.strides();
    let (cls, t, floor) = classify(grid, opts);
    let mut open: Vec<u32> = (0..cls.len() as u32)
        .filter(|&i| cls[i as usize] >= LEAN_UP)
        .collect();
    let mut closed = vec![false; cls.len()];
    let mut found: Vec<Element> = Vec::new();

    let mut masks: Vec<Mask> = (1..(1 << dims)).collect();
    masks.sort_by_key(|m| (m.count_ones(), *m));
    let mut depth = 0;
    let mut layer_closed: Vec<(usize, Vec<(usize, u32)>)> = Vec::new();

    let leaves = cls.iter().filter(|&&c| c != NEUTRAL).count();
    let mut unexplained = leaves;
    // Every element of every cuboid is a test: noise should make `tail_false` false
    // causes in all of them together.
    let all_elements: usize = grid.sizes[..dims]
        .iter()
        .map(|&s| s as usize + 1)
        .product::<usize>()
        - 1;
    let ln_m = (2.0 * all_elements as f64).ln() - opts.tail_false.ln();
    let mut noise = Noise::default();
    let mut tail = None;
    // Fewest leaves an element needs to stand out with leaves that only lean.
    let mut lean_needs = 0usize;
    for mask in masks {
        if mask.count_ones() != depth {
            // New layer: close the leaves of what the previous one found, and measure
            // the noise on what is left.
            for (base, free) in layer_closed.drain(..) {
                for_each_cell(base, &free, |i| {
                    // Shares of the noise are over the leaves still unexplained.
                    if !closed[i] && cls[i] != NEUTRAL {
                        unexplained -= 1;
                    }
                    closed[i] = true;
                    true
                });
            }
            open.retain(|&i| !closed[i as usize]);
            depth = mask.count_ones();
            if open.is_empty() {
                break;
            }
            tail = Tail::measure(grid, floor, t, &open, unexplained, TAIL_MIN_LEAVES);
            noise = Noise::measure(grid, floor, t, &open, unexplained);
            // A leaf within t is at least as common as the share at t (or one leaf),
            // so fewer than this many cannot stand out without leaves beyond t.
            let one = 1.0 / noise.leaves.max(1.0);
            lean_needs = (0..2)
                .map(|d| {
                    let ln_share = noise.share(d, t).max(one).min(1.0).ln();
                    if ln_share < 0.0 {
                        (ln_m / -ln_share).ceil() as usize
                    } else {
                        usize::MAX
                    }
                })
                .min()
                .unwrap_or(0);
        }
        let fixed: Vec<usize> = (0..dims).filter(|d| mask & (1 << d) != 0).collect();
        let free: Vec<(usize, u32)> = (0..dims)
            .filter(|d| mask & (1 << d) == 0)
            .map(|d| (strides[d], grid.sizes[d]))
            .collect();
        let cells: usize = free.iter().map(|&(_, s)| s as usize).product();
        let elements: usize = fixed.iter().map(|&d| grid.sizes[d] as usize).product();
        // The elements to examine, by their base cell: those holding an unexplained
        // leaf beyond t when too small to stand out by leaning leaves alone; else
        // those holding an unexplained leaning leaf, taken from the leaves or, when
        // the cuboid has fewer elements than there are such leaves, all of them (each
        // stops at its first cells when impure; unexplained ones are checked below).
        let base_of = |i: u32| -> usize {
            let i = i as usize;
            fixed
                .iter()
                .map(|&d| (i / strides[d]) % grid.sizes[d] as usize * strides[d])
                .sum()
        };
        let bases: Vec<usize> = if cells < lean_needs {
            let mut b: Vec<usize> = open
                .iter()
                .filter(|&&i| cls[i as usize] >= UP)
                .map(|&i| base_of(i))
                .collect();
            b.sort_unstable();
            b.dedup();
            b
        } else if elements <= open.len() {
            let radix: Vec<(usize, u32)> =
                fixed.iter().map(|&d| (strides[d], grid.sizes[d])).collect();
            let mut b = Vec::with_capacity(elements);
            for_each_cell(0, &radix, |base| {
                b.push(base);
                true
            });
            b
        } else {
            let mut b: Vec<usize> = open.iter().map(|&i| base_of(i)).collect();
            b.sort_unstable();
            b.dedup();
            b
        };
        let max_off = ((1.0 - opts.purity) * cells as f64).floor() as usize;
        for base in bases {
            let Some(tl) = tally(grid, &cls, &closed, base, &free, max_off) else {
                continue;
            };
            let up = tl.up >= tl.down;
            let leaning = tl.up.max(tl.down);
            if tl.fresh == 0 || (leaning as f64) < opts.purity * tl.leaves as f64 {
                continue;
            }
            if !stands_out(
                grid, &closed, floor, t, base, &free, up, tl.leaves, ln_m, &noise, tail, opts,
            ) {
                continue;
            }
            let mut key = [0u32; MAX_DIMS];
            for &d in &fixed {
                key[d] = ((base / strides[d]) % grid.sizes[d] as usize) as u32;
            }
            found.push(Element {
                implied: 0,
                mask,
                key,
                real: tl.real,
                predict: tl.predict,
                volume: tl.predict,
                llr: leaning as f64 / tl.leaves as f64,
                score: 0.0,
            });
            layer_closed.push((base, free.clone()));
        }
    }
    let pieces = merge_pieces(grid, &cls, &mut found, opts);
    rank(found, pieces, opts)
}

/// Found elements `merge_pieces` pairs up, strongest first.
const MERGE_CONSIDERED: usize = 32;

/// The element both `a` and `b` hold (their values together), if they agree where
/// both fix a dimension.
fn intersection(a: &Element, b: &Element) -> Option<(Mask, [u32; MAX_DIMS])> {
    let mut key = a.key;
    for (d, k) in key.iter_mut().enumerate() {
        let (in_a, in_b) = (a.mask & (1 << d) != 0, b.mask & (1 << d) != 0);
        if in_a && in_b && a.key[d] != b.key[d] {
            return None;
        }
        if in_b {
            *k = b.key[d];
        } else if !in_a {
            *k = 0;
        }
    }
    Some((a.mask | b.mask, key))
}

/// Cell base and free dimensions of an element.
fn cells_of(grid: &Grid, mask: Mask, key: &[u32; MAX_DIMS]) -> (usize, Vec<(usize, u32)>) {
    let strides = grid.strides();
    let dims = grid.sizes.len().min(MAX_DIMS);
    let base = (0..dims)
        .filter(|d| mask & (1 << d) != 0)
        .map(|d| key[d] as usize * strides[d])
        .sum();
    let free = (0..dims)
        .filter(|d| mask & (1 << d) == 0)
        .map(|d| (strides[d], grid.sizes[d]))
        .collect();
    (base, free)
}

/// Pieces of one cause: when two found elements of the same direction share an
/// ancestor (the values they both fix) whose leaves lean that way at least
/// `merge_purity`, the ancestor is the cause and the found elements within it are its
/// pieces. The cause was missed whole because some of its leaves lean too little
/// (real data: the deviation is uneven across a cause). Returns the pieces;
/// `found` keeps the rest and gains the ancestors.
fn merge_pieces(
    grid: &Grid,
    cls: &[u8],
    found: &mut Vec<Element>,
    opts: &CoverOptions,
) -> Vec<Element> {
    let up = |e: &Element| e.real >= e.predict;
    // The strongest found elements only: pieces of a cause carry much of the deviation,
    // and the pairs grow with the square.
    let mut strongest: Vec<&Element> = found.iter().collect();
    strongest.sort_by(|a, b| {
        (b.real - b.predict)
            .abs()
            .total_cmp(&(a.real - a.predict).abs())
    });
    strongest.truncate(MERGE_CONSIDERED);
    let mut parents: Vec<(Mask, [u32; MAX_DIMS], bool)> = Vec::new();
    for (i, &a) in strongest.iter().enumerate() {
        for &b in &strongest[i + 1..] {
            if up(a) != up(b) {
                continue;
            }
            let mut mask = a.mask & b.mask;
            for d in 0..MAX_DIMS {
                if mask & (1 << d) != 0 && a.key[d] != b.key[d] {
                    mask &= !(1 << d);
                }
            }
            if mask == 0 || mask == a.mask || mask == b.mask {
                continue;
            }
            let mut key = [0u32; MAX_DIMS];
            for (d, k) in key.iter_mut().enumerate() {
                if mask & (1 << d) != 0 {
                    *k = a.key[d];
                }
            }
            if !parents.contains(&(mask, key, up(a))) {
                parents.push((mask, key, up(a)));
            }
        }
    }
    // Shallowest ancestors first.
    parents.sort_by_key(|p| (p.0.count_ones(), p.0, p.1));
    let mut pieces = Vec::new();
    // Cells of other found elements within the ancestor being judged (allocated
    // when first needed).
    let mut taken: Vec<bool> = Vec::new();
    for (mask, key, dir_up) in parents {
        let probe = Element {
            implied: 0,
            mask,
            key,
            real: 0.0,
            predict: 0.0,
            volume: 0.0,
            llr: 0.0,
            score: 0.0,
        };
        let inside: Vec<usize> = (0..found.len())
            .filter(|&j| found[j].mask != mask && probe.overlaps(&found[j]))
            .filter(|&j| found[j].mask & mask == mask && up(&found[j]) == dir_up)
            .collect();
        if inside.len() < 2 {
            continue;
        }
        // Leaves of other found elements within the ancestor are theirs, not
        // evidence that the ancestor leans.
        let others: Vec<(usize, Vec<(usize, u32)>)> = (0..found.len())
            .filter(|j| !inside.contains(j))
            .filter_map(|j| intersection(&probe, &found[j]))
            .map(|(m, k)| cells_of(grid, m, &k))
            .collect();
        if !others.is_empty() && taken.is_empty() {
            taken = vec![false; cls.len()];
        }
        let mark = |taken: &mut [bool], on: bool| {
            for (base, free) in &others {
                for_each_cell(*base, free, |i| {
                    taken[i] = on;
                    true
                });
            }
        };
        mark(&mut taken, true);
        let (base, free) = cells_of(grid, mask, &key);
        let (mut n, mut leaning, mut real, mut predict) = (0usize, 0usize, 0.0, 0.0);
        let want = if dir_up {
            [UP, LEAN_UP]
        } else {
            [DOWN, LEAN_DOWN]
        };
        for_each_cell(base, &free, |i| {
            if taken.get(i).copied().unwrap_or(false) {
                return true;
            }
            if cls[i] != NEUTRAL {
                n += 1;
                leaning += usize::from(want.contains(&cls[i]));
            }
            real += grid.real[i];
            predict += grid.predict[i];
            true
        });
        mark(&mut taken, false);
        if n == 0 || (leaning as f64) < opts.merge_purity * n as f64 {
            continue;
        }
        let mut keep = Vec::new();
        for (j, e) in found.drain(..).enumerate() {
            if inside.contains(&j) {
                pieces.push(e);
            } else {
                keep.push(e);
            }
        }
        *found = keep;
        found.push(Element {
            implied: 0,
            mask,
            key,
            real,
            predict,
            volume: predict,
            llr: leaning as f64 / n as f64,
            score: 0.0,
        });
    }
    pieces
}

/// Scores (share of the found elements' total absolute deviation), orders best first
/// and splits causes from candidates.
fn rank(found: Vec<Element>, pieces: Vec<Element>, opts: &CoverOptions) -> Localized {
    let total: f64 = found.iter().map(|e| (e.real - e.predict).abs()).sum();
    let share = |e: &Element| {
        if total > 0.0 {
            (e.real - e.predict).abs() / total
        } else {
            0.0
        }
    };
    let order = |v: &mut Vec<Element>| {
        for e in v.iter_mut() {
            e.score = share(e);
        }
        v.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(a.mask.cmp(&b.mask))
                .then(a.key.cmp(&b.key))
        });
    };
    let mut found = found;
    let mut pieces = pieces;
    order(&mut found);
    order(&mut pieces);
    let (mut causes, mut candidates): (Vec<Element>, Vec<Element>) =
        found.into_iter().partition(|e| e.score >= opts.min_share);
    if causes.len() > opts.max_causes {
        candidates.extend(causes.drain(opts.max_causes..));
    }
    candidates.extend(pieces);
    candidates.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.mask.cmp(&b.mask))
            .then(a.key.cmp(&b.key))
    });
    Localized { causes, candidates }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(sizes: &[u32], cause: &[(usize, u32)], factor: f64) -> Grid {
        let mut g = Grid::new(sizes);
        let n = g.real.len();
        for i in 0..n {
            let mut rest = i;
            let mut key = vec![0u32; sizes.len()];
            for d in (0..sizes.len()).rev() {
                key[d] = (rest % sizes[d] as usize) as u32;
                rest /= sizes[d] as usize;
            }
            let p = 10.0 + (i % 7) as f64;
            let hit = cause.iter().all(|&(d, v)| key[d] == v);
            g.real[i] = if hit { p * factor } else { p };
            g.predict[i] = p;
        }
        g
    }

    #[test]
    fn finds_a_two_dimension_drop() {
        let g = grid(&[5, 6, 7], &[(0, 2), (2, 3)], 0.3);
        let out = localize_grid(&g, &CoverOptions::default());
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].mask, 0b101);
        assert_eq!((out[0].key[0], out[0].key[2]), (2, 3));
    }

    #[test]
    fn finds_a_full_depth_rise() {
        let g = grid(&[5, 6, 7], &[(0, 4), (1, 0), (2, 6)], 3.0);
        let out = localize_grid(&g, &CoverOptions::default());
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].mask, 0b111);
    }

    #[test]
    fn a_thin_low_end_does_not_pull_the_threshold_into_the_noise() {
        // 270 noise leaves within +-0.1 whose low end is thin (a quarter below 0.016,
        // as in a real random draw that failed), and 90 leaves of a cause at -0.8.
        // 6 x Q1 alone spiralled to 0.086 here and called noise leaves abnormal.
        let mut g = Grid::new(&[4, 90]);
        for i in 0..270 {
            let mag = if i < 67 {
                0.016 * i as f64 / 67.0
            } else {
                0.016 + 0.084 * (i - 67) as f64 / 202.0
            };
            let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
            g.predict[90 + i] = 5.0;
            g.real[90 + i] = 5.0 * (1.0 + sign * mag);
        }
        for i in 0..90 {
            g.predict[i] = 5.0;
            g.real[i] = 1.0;
        }
        let (cls, t, _) = classify(&g, &CoverOptions::default());
        assert!(t > 0.1 && t < 0.2, "threshold {t}");
        assert!(cls[90..].iter().all(|&c| c < UP));
        assert!(cls[..90].iter().all(|&c| c == DOWN));
        let out = localize_grid(&g, &CoverOptions::default());
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!((out[0].mask, out[0].key[0]), (0b01, 0));
    }

    #[test]
    fn gaussian_tails_do_not_make_single_leaves_causes() {
        use statrs::distribution::{ContinuousCDF, Normal};
        // 6,000 leaves with Gaussian noise (sigma 0.05, exact quantiles in a fixed
        // order): ~2% of them cross the leaf threshold, each a pure single leaf.
        // The causes are d0 = 3 (down 70%) and the single leaf (7, 4, 11) (up 90%).
        let sizes = [10u32, 20, 30];
        let mut g = Grid::new(&sizes);
        let n = g.real.len();
        let normal = Normal::new(0.0, 0.05).unwrap();
        for i in 0..n {
            let q = (i * 7919) % n;
            let e = normal.inverse_cdf((q as f64 + 0.5) / n as f64);
            let p = 10.0 + (i % 13) as f64;
            let d0 = i / 600;
            let f = if d0 == 3 {
                0.3
            } else if i == g.index(&[7, 4, 11]) {
                1.9
            } else {
                1.0
            };
            g.predict[i] = p;
            g.real[i] = p * f * (1.0 + e);
        }
        let (cls, t, _) = classify(&g, &CoverOptions::default());
        let stray = (0..n).filter(|&i| i / 600 != 3 && cls[i] >= UP).count();
        assert!(
            stray > 50,
            "{stray} noise leaves over t = {t}: the test needs tails"
        );
        let out = localize_grid(&g, &CoverOptions::default());
        let got: Vec<(crate::localize::Mask, [u32; 3])> = out
            .iter()
            .map(|e| (e.mask, [e.key[0], e.key[1], e.key[2]]))
            .collect();
        assert_eq!(
            got,
            vec![(0b001, [3, 0, 0]), (0b111, [7, 4, 11])],
            "{out:?}"
        );
    }

    #[test]
    fn pieces_of_an_uneven_cause_become_candidates() {
        // a = 1 rises 3x on 17 of its 20 leaves (three leaves of b = 3 stay flat), so
        // a = 1 is not pure and its pure pieces, (a1, b0..b2) and (a1, c0), (a1, c1),
        // come up first; together they make a = 1 the cause.
        let sizes = [3u32, 4, 5];
        let mut g = Grid::new(&sizes);
        for a in 0..3u32 {
            for b in 0..4u32 {
                for c in 0..5u32 {
                    let i = g.index(&[a, b, c]);
                    let p = 10.0 + f64::from(c);
                    let up = a == 1 && (b < 3 || c < 2);
                    g.predict[i] = p;
                    g.real[i] = if up { 3.0 * p } else { p };
                }
            }
        }
        let out = localize_grid_all(&g, &CoverOptions::default());
        let got: Vec<(Mask, u32)> = out.causes.iter().map(|e| (e.mask, e.key[0])).collect();
        assert_eq!(got, vec![(0b001, 1)], "{out:?}");
        assert_eq!(out.candidates.len(), 5, "{out:?}");
        assert!(out
            .candidates
            .iter()
            .all(|e| e.mask & 0b001 != 0 && e.key[0] == 1 && e.mask != 0b001));
        assert!(out.candidates.iter().all(|e| e.score < out.causes[0].score));
    }

    #[test]
    fn weak_and_surplus_elements_are_candidates() {
        let el = |k: u32, dev: f64| Element {
            implied: 0,
            mask: 0b1,
            key: {
                let mut key = [0; MAX_DIMS];
                key[0] = k;
                key
            },
            real: 100.0 + dev,
            predict: 100.0,
            volume: 100.0,
            llr: 1.0,
            score: 0.0,
        };
        let opts = CoverOptions {
            max_causes: 2,
            min_share: 0.05,
            ..CoverOptions::default()
        };
        let found = vec![el(0, 10.0), el(1, 50.0), el(2, 1.0), el(3, 30.0)];
        let out = rank(found, vec![el(4, 5.0)], &opts);
        let keys = |v: &[Element]| v.iter().map(|e| e.key[0]).collect::<Vec<_>>();
        // Shares 50/91, 30/91, 10/91, 1/91: two causes, the third past max_causes, the
        // fourth below min_share, and the piece: all candidates, best first.
        assert_eq!(keys(&out.causes), vec![1, 3]);
        assert_eq!(keys(&out.candidates), vec![0, 4, 2]);
    }

    #[test]
    fn quiet_grid_has_no_cause() {
        let g = grid(&[5, 6, 7], &[], 1.0);
        assert!(localize_grid(&g, &CoverOptions::default()).is_empty());
    }
}
