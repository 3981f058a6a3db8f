//! Relative-deviation localization for forecast snapshots (`faultline rca`).
//!
//! The daemon localizes *counts* (failures against attempts times a baseline), where
//! Poisson deviance is the right evidence. A forecast snapshot is different: `real`
//! and `predict` are additive measures with forecast noise proportional to the value,
//! so the deviance of a large aggregate explodes on noise alone and ranks big,
//! diluted ancestors above the true cause. Here the evidence is relative:
//!
//! 1. **Classify leaves.** Each leaf's relative deviation `(real - predict) / predict`
//!    is compared with a threshold `t` estimated from the data. A robust start, `6 x`
//!    the first quartile of `|dev|` over the leaves still considered normal, iterated
//!    so that a large anomaly does not inflate its own threshold; then, for a steadier
//!    estimate, `3 x` the mean of `|dev|` over the leaves inside the threshold, iterated
//!    likewise (floor 0.05). For uniform noise of width n both give 1.5 n (the mean
//!    form 2.3 sigma for Gaussian noise). The denominator has a
//!    floor (`max`) at the 5th percentile of the forecasts, so leaves below the data's
//!    resolution cannot look infinitely deviant. Leaves are normal, up, down, or
//!    neutral (`predict = real = 0`, or a combination absent from the input).
//! 2. **Pure elements, shallowest first.** An element is a cause candidate when at
//!    least `purity` of its non-neutral leaves deviate in the same direction. Layers are
//!    scanned from one dimension down to all of them; a pure element closes its leaves,
//!    so its descendants (pure too, but redundant) are never reported and deeper
//!    layers only look at leaves nothing explains yet. Only elements holding at least
//!    one unexplained abnormal leaf are examined, and each stops counting as soon as it
//!    has seen enough normal leaves to be impure: the search prunes rather than
//!    enumerates, which is what keeps 24 million leaves within seconds.
//! 3. **Small pure elements must stand out of the noise's tail.** An element whose few
//!    leaves all crossed `t` is pure, and Gaussian noise puts a few leaves in every
//!    hundred there. When the unexplained leaves show such a tail (`Tail`), a pure
//!    element's weakest leaf must pass the point beyond which noise would make fewer
//!    than `tail_false` such elements in its layer. Bounded noise shows no tail, and
//!    nothing is cut.
//! 4. **Cutoff.** At most `max_causes` elements, largest absolute deviation first.
//!
//! Leaves live in a dense grid (the product of the dimension sizes, absent
//! combinations neutral), so an element's leaves are enumerated by index arithmetic
//! with no per-element lists.

use rustc_hash::FxHashMap;

use super::Element;
use crate::window::MAX_DIMS;

/// Tuning of the relative-deviation search.
#[derive(Debug, Clone, Copy)]
pub struct CoverOptions {
    /// Share of an element's non-neutral leaves that must deviate the same way.
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
    /// Elements per layer that noise may be expected to make pure beyond the cut a
    /// small element must pass, when the unexplained leaves show a tail (see `Tail`).
    pub tail_false: f64,
    /// Lowest leaf threshold (relative deviation), whatever the noise.
    pub min_threshold: f64,
    /// Most elements reported.
    pub max_causes: usize,
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
            tail_false: 0.5,
            min_threshold: 0.05,
            max_causes: 5,
            predict_floor_quantile: 0.05,
        }
    }
}

/// Leaf classes.
const NEUTRAL: u8 = 0;
const NORMAL: u8 = 1;
const UP: u8 = 2;
const DOWN: u8 = 3;

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

/// Relative deviation of a leaf, `None` for a neutral one (`real = predict = 0`).
/// The denominator has a floor: leaves below the data's resolution (a forecast of
/// 0.004 written as 0.00) must not look infinitely deviant.
fn rel_dev(grid: &Grid, floor: f64, i: usize) -> Option<f64> {
    let (r, p) = (grid.real[i], grid.predict[i]);
    if p > 0.0 || r != 0.0 {
        // max, not sum: leaves above the floor keep their plain relative
        // deviation, so the noise estimate is not shrunk by the floor.
        let den = p.max(floor);
        Some(if den > 0.0 {
            (r - p) / den
        } else {
            f64::INFINITY.copysign(r)
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
    let cls = (0..n)
        .map(|i| match dev(i) {
            None => NEUTRAL,
            Some(x) if x > t => UP,
            Some(x) if x < -t => DOWN,
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
                Some(x) if x.is_finite() && x > 0.0 => up.push(x - t),
                Some(x) if x.is_finite() && x < 0.0 => down.push(-x - t),
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

    /// The excess over `t` that the weakest of `abnormal` leaves (all one way) must
    /// pass for an element among `elements` in its layer: beyond it, noise is expected
    /// to make `tail_false` such elements. Each leaf is past `t` with chance `rate`,
    /// and past `t + y` with `rate x exp(-y / scale)`, so the expected count is
    /// `2 x elements x (rate x exp(-y / scale))^abnormal`. Zero when noise would
    /// hardly make one at all.
    fn cut(&self, abnormal: usize, elements: usize, tail_false: f64) -> f64 {
        let a = abnormal.max(1) as f64;
        let ln_expected = (2.0 * elements as f64).ln() + a * self.rate.ln() - tail_false.ln();
        if ln_expected <= 0.0 {
            0.0
        } else {
            self.scale * ln_expected / a
        }
    }
}

/// Localizes the deviation in a grid; elements carry value ids in `key`.
pub fn localize_grid(grid: &Grid, opts: &CoverOptions) -> Vec<Element> {
    let dims = grid.sizes.len().min(MAX_DIMS);
    if dims == 0 || grid.real.is_empty() {
        return Vec::new();
    }
    let strides = grid.strides();
    let (cls, t, floor) = classify(grid, opts);
    let mut open: Vec<u32> = (0..cls.len() as u32)
        .filter(|&i| cls[i as usize] >= UP)
        .collect();
    let mut closed = vec![false; cls.len()];
    let mut found: Vec<Element> = Vec::new();

    let mut masks: Vec<u8> = (1u8..(1u8 << dims)).collect();
    masks.sort_by_key(|m| (m.count_ones(), *m));
    let mut depth = 0;
    let mut layer_closed: Vec<(usize, Vec<(usize, u32)>)> = Vec::new();
    // The noise's tail, measured per layer when the first pure element comes up
    // (from the leaves still unexplained then).
    let mut layer_tail: Option<Option<Tail>> = None;
    let leaves = cls.iter().filter(|&&c| c != NEUTRAL).count();
    for mask in masks {
        if mask.count_ones() != depth {
            // New layer: close the leaves of what the previous one found.
            for (base, free) in layer_closed.drain(..) {
                for_each_cell(base, &free, |i| {
                    closed[i] = true;
                    true
                });
            }
            open.retain(|&i| !closed[i as usize]);
            depth = mask.count_ones();
            layer_tail = None;
        }
        if open.is_empty() {
            break;
        }
        let fixed: Vec<usize> = (0..dims).filter(|d| mask & (1 << d) != 0).collect();
        let free: Vec<(usize, u32)> = (0..dims)
            .filter(|d| mask & (1 << d) == 0)
            .map(|d| (strides[d], grid.sizes[d]))
            .collect();
        let cells: usize = free.iter().map(|&(_, s)| s as usize).product();
        let layer_elements: usize = fixed.iter().map(|&d| grid.sizes[d] as usize).product();
        // Elements holding unexplained abnormal leaves, by their base cell.
        let mut elems: FxHashMap<usize, u32> = FxHashMap::default();
        for &i in &open {
            let i = i as usize;
            let base: usize = fixed
                .iter()
                .map(|&d| (i / strides[d]) % grid.sizes[d] as usize * strides[d])
                .sum();
            *elems.entry(base).or_default() += 1;
        }
        let mut bases: Vec<usize> = elems.into_keys().collect();
        bases.sort_unstable();
        let max_normal = ((1.0 - opts.purity) * cells as f64).floor() as usize;
        for base in bases {
            let (mut normal, mut up, mut down) = (0usize, 0usize, 0usize);
            let (mut real, mut predict) = (0.0, 0.0);
            for_each_cell(base, &free, |i| {
                match cls[i] {
                    NORMAL => normal += 1,
                    UP => up += 1,
                    DOWN => down += 1,
                    _ => {}
                }
                real += grid.real[i];
                predict += grid.predict[i];
                normal <= max_normal
            });
            let nz = normal + up + down;
            if normal > max_normal || nz == 0 {
                continue;
            }
            let purity = up.max(down) as f64 / nz as f64;
            if purity < opts.purity {
                continue;
            }
            // Noise with long tails makes pure elements of a few leaves too: unless
            // the layer is too small for that, the weakest leaf must stand out of
            // the tail (see `Tail`).
            let tail = *layer_tail.get_or_insert_with(|| {
                Tail::measure(grid, floor, t, &open, leaves, opts.max_causes)
            });
            if let Some(tail) = tail {
                let abnormal = up.max(down);
                let cut = tail.cut(abnormal, layer_elements, opts.tail_false);
                if cut > 0.0 {
                    let want = if up >= down { UP } else { DOWN };
                    let mut weakest = f64::INFINITY;
                    for_each_cell(base, &free, |i| {
                        if cls[i] == want {
                            if let Some(x) = rel_dev(grid, floor, i) {
                                weakest = weakest.min(x.abs() - t);
                            }
                        }
                        true
                    });
                    if weakest <= cut {
                        continue;
                    }
                }
            }
            let mut key = [0u32; MAX_DIMS];
            for &d in &fixed {
                key[d] = ((base / strides[d]) % grid.sizes[d] as usize) as u32;
            }
            found.push(Element {
                implied: 0,
                mask: super::Mask::from(mask),
                key,
                real,
                predict,
                volume: predict,
                llr: purity,
                score: 0.0,
            });
            layer_closed.push((base, free.clone()));
        }
    }
    let total: f64 = found.iter().map(|e| (e.real - e.predict).abs()).sum();
    for e in &mut found {
        e.score = if total > 0.0 {
            (e.real - e.predict).abs() / total
        } else {
            0.0
        };
    }
    found.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.mask.cmp(&b.mask))
            .then(a.key.cmp(&b.key))
    });
    found.truncate(opts.max_causes);
    found
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
        assert!(cls[90..].iter().all(|&c| c == NORMAL));
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
    fn quiet_grid_has_no_cause() {
        let g = grid(&[5, 6, 7], &[], 1.0);
        assert!(localize_grid(&g, &CoverOptions::default()).is_empty());
    }
}
