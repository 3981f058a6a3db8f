//! Multi-dimensional root-cause localization.
//!
//! Input: leaves, each a full combination of dimension values with an observed
//! count (`real`), an expected one (`predict`) and a size (`volume`). Output: the
//! smallest set of elements (partial combinations such as `{provider=stripe,
//! region=us-west-2}`) that explains the deviation.
//!
//! The method is an expectation-based scan over the lattice of elements, in the
//! spirit of HotSpot / Squeeze / RiskLoc but scored by likelihood:
//!
//! 1. **Search, pruned.** Every one-dimension element is scored. Only elements whose
//!    deviation is at least loosely significant are expanded by one more
//!    dimension, keeping the best few per layer. An anomalous element's ancestors
//!    all carry its excess, so the search reaches it from any of them.
//! 2. **Score.** The Poisson deviance `G` of the element's aggregate. It prefers
//!    the right level by itself: an ancestor dilutes the excess with normal
//!    siblings (lower `G`), a descendant carries only part of it (lower `G`).
//! 3. **Select, greedily.** Take the element with the largest `G` that passes the
//!    rule's criteria at the Bonferroni threshold for everything examined, mark
//!    its leaves explained, rescore the rest on the unexplained leaves only, and
//!    repeat until nothing significant is left. Several simultaneous causes come
//!    out as several elements; an ancestor of a chosen element loses its excess
//!    and is not chosen too.
//!
//! Pure and synchronous: the daemon calls it at every evaluation step and
//! `faultline rca` on a CSV snapshot.

pub mod cover;
pub mod rca;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::detect::{directed_llr, llr_threshold, Criteria};
use crate::window::{Key, MAX_DIMS};

/// One leaf: a full combination of dimension values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Leaf {
    /// Value ids, one per dimension (slots past the dimension count are 0).
    pub key: Key,
    /// Observed count (failures, or events for volume rules).
    pub real: f64,
    /// Expected count.
    pub predict: f64,
    /// Size: attempts (rate rules) or expected events (volume rules).
    pub volume: f64,
}

/// An element: values fixed on the dimensions in `mask`.
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    /// Bit `d` set when dimension `d` is fixed.
    pub mask: u8,
    /// Values on the fixed dimensions (others 0).
    pub key: Key,
    /// Observed total over its leaves.
    pub real: f64,
    /// Expected total.
    pub predict: f64,
    /// Volume total.
    pub volume: f64,
    /// Directed Poisson deviance of the totals.
    pub llr: f64,
    /// Share of the total excess it explains, 0..1 (set for chosen elements).
    pub score: f64,
}

impl Element {
    /// Whether a leaf key lies in this element.
    pub fn contains(&self, key: &Key) -> bool {
        (0..MAX_DIMS).all(|d| self.mask & (1 << d) == 0 || self.key[d] == key[d])
    }

    /// Whether one element lies within the other (they share the values they both fix
    /// and one fixes a superset of the other's dimensions).
    pub fn overlaps(&self, other: &Element) -> bool {
        let common = self.mask & other.mask;
        let agree = (0..MAX_DIMS).all(|d| common & (1 << d) == 0 || self.key[d] == other.key[d]);
        agree && (common == self.mask || common == other.mask)
    }

    /// Whether both fix the same dimensions to the same values (whatever their numbers).
    pub fn same_as(&self, other: &Element) -> bool {
        self.mask == other.mask && self.key == other.key
    }

    /// Number of fixed dimensions.
    pub fn depth(&self) -> u32 {
        self.mask.count_ones()
    }
}

/// Search limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Elements kept for expansion per layer.
    pub beam: usize,
    /// Most elements reported.
    pub max_causes: usize,
    /// Deviance an element needs to be expanded (loose; not a detection).
    pub expand_llr: f64,
    /// Bit `d` set when dimension `d` is derived from another (a BIN prefix
    /// beside `bin`): on equal evidence an element fixing fewer derived
    /// dimensions is reported (`bin=414720` rather than `bin4=4147` when the
    /// range has only that BIN).
    pub derived: u8,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            beam: 24,
            max_causes: 5,
            expand_llr: 9.0,
            derived: 0,
        }
    }
}

/// What localization found.
#[derive(Debug, Clone, Default)]
pub struct Localization {
    /// Chosen elements, best first: each passed the criteria.
    pub causes: Vec<Element>,
    /// Other elements examined that passed the floors, best first (runners-up).
    pub candidates: Vec<Element>,
    /// Elements examined (the multiple-testing count).
    pub tested: usize,
    /// Deviance needed at this step.
    pub threshold: f64,
}

struct Cand {
    el: Element,
    leaves: Vec<u32>,
}

/// Localizes over `dims` dimensions.
pub fn localize(
    dims: usize,
    leaves: &[Leaf],
    criteria: &Criteria,
    limits: &Limits,
) -> Localization {
    let dims = dims.min(MAX_DIMS);
    if leaves.is_empty() || dims == 0 {
        return Localization::default();
    }
    let dir = criteria.direction;
    let mut tested = 0usize;
    let mut pool: Vec<Cand> = Vec::new();
    let mut visited: FxHashSet<(u8, Key)> = FxHashSet::default();

    // Layer 1: aggregate every single-dimension element.
    let mut layer: Vec<Cand> = Vec::new();
    // Value ids are dense (interned), so one-dimension totals go in plain vectors.
    let mut max_id = vec![0u32; dims];
    for l in leaves {
        for (d, m) in max_id.iter_mut().enumerate() {
            *m = (*m).max(l.key[d]);
        }
    }
    for d in 0..dims {
        let mut agg: Vec<(f64, f64, f64)> = vec![(0.0, 0.0, 0.0); max_id[d] as usize + 1];
        let mut present = vec![false; max_id[d] as usize + 1];
        for l in leaves {
            let i = l.key[d] as usize;
            let a = &mut agg[i];
            a.0 += l.real;
            a.1 += l.predict;
            a.2 += l.volume;
            present[i] = true;
        }
        tested += present.iter().filter(|p| **p).count();
        let mut scored: Vec<Element> = agg
            .into_iter()
            .enumerate()
            .filter(|(v, _)| present[*v])
            .filter_map(|(v, (r, p, vol))| {
                let llr = directed_llr(r, p, dir);
                (llr >= limits.expand_llr).then(|| {
                    let mut key = [0u32; MAX_DIMS];
                    key[d] = v as u32;
                    Element {
                        mask: 1 << d,
                        key,
                        real: r,
                        predict: p,
                        volume: vol,
                        llr,
                        score: 0.0,
                    }
                })
            })
            .collect();
        scored.sort_by(|a, b| b.llr.total_cmp(&a.llr).then(a.key.cmp(&b.key)));
        scored.truncate(limits.beam);
        for el in scored {
            visited.insert((el.mask, el.key));
            layer.push(Cand {
                el,
                leaves: Vec::new(),
            });
        }
    }
    // Leaf lists for the layer-1 survivors.
    if !layer.is_empty() {
        let mut index: FxHashMap<(u8, u32), usize> = FxHashMap::default();
        for (i, c) in layer.iter().enumerate() {
            let d = c.el.mask.trailing_zeros() as usize;
            index.insert((d as u8, c.el.key[d]), i);
        }
        for (li, l) in leaves.iter().enumerate() {
            for d in 0..dims {
                if let Some(&i) = index.get(&(d as u8, l.key[d])) {
                    layer[i].leaves.push(li as u32);
                }
            }
        }
    }

    // Deeper layers: expand the best elements by one more dimension.
    for _depth in 2..=dims {
        if layer.is_empty() {
            break;
        }
        let mut next: Vec<Cand> = Vec::new();
        for c in &layer {
            for d in 0..dims {
                if c.el.mask & (1 << d) != 0 {
                    continue;
                }
                let mut groups: FxHashMap<u32, (f64, f64, f64, Vec<u32>)> = FxHashMap::default();
                for &li in &c.leaves {
                    let l = &leaves[li as usize];
                    let g = groups.entry(l.key[d]).or_default();
                    g.0 += l.real;
                    g.1 += l.predict;
                    g.2 += l.volume;
                    g.3.push(li);
                }
                for (v, (r, p, vol, ls)) in groups {
                    let mut key = c.el.key;
                    key[d] = v;
                    let mask = c.el.mask | (1 << d);
                    if !visited.insert((mask, key)) {
                        continue;
                    }
                    tested += 1;
                    let llr = directed_llr(r, p, dir);
                    if llr >= limits.expand_llr {
                        next.push(Cand {
                            el: Element {
                                mask,
                                key,
                                real: r,
                                predict: p,
                                volume: vol,
                                llr,
                                score: 0.0,
                            },
                            leaves: ls,
                        });
                    }
                }
            }
        }
        next.sort_by(|a, b| b.el.llr.total_cmp(&a.el.llr).then(a.el.key.cmp(&b.el.key)));
        next.truncate(limits.beam * 2);
        pool.append(&mut layer);
        layer = next;
    }
    pool.append(&mut layer);

    let threshold = llr_threshold(criteria.alpha, tested);
    // The net deviation of everything: summing only the leaves that deviate the
    // right way would count the noise of thousands of sparse leaves (one failure
    // where 0.05 were expected) and make a clean outage look like a small share.
    let (sum_real, sum_predict) = leaves
        .iter()
        .fold((0.0, 0.0), |(r, p), l| (r + l.real, p + l.predict));
    let total_excess = match dir {
        crate::detect::Direction::Up => sum_real - sum_predict,
        crate::detect::Direction::Down => sum_predict - sum_real,
    }
    .max(0.0);
    let share = |excess: f64| {
        if excess > 0.0 {
            excess / total_excess.max(excess)
        } else {
            0.0
        }
    };

    // Greedy selection on unexplained leaves.
    let mut explained = vec![false; leaves.len()];
    let mut causes: Vec<Element> = Vec::new();
    let mut residual: Vec<Element> = pool.iter().map(|c| c.el.clone()).collect();
    let mut chosen = vec![false; pool.len()];
    while causes.len() < limits.max_causes {
        let best = (0..pool.len())
            .filter(|&i| !chosen[i])
            .filter(|&i| {
                let e = &residual[i];
                criteria.passes(e.real, e.predict, e.volume, threshold)
            })
            .max_by(|&a, &b| {
                residual[a]
                    .llr
                    .total_cmp(&residual[b].llr)
                    // Equal evidence: prefer the simpler element, then the one
                    // naming underlying dimensions, then a stable order.
                    .then(residual[b].depth().cmp(&residual[a].depth()))
                    .then(
                        (residual[b].mask & limits.derived)
                            .count_ones()
                            .cmp(&(residual[a].mask & limits.derived).count_ones()),
                    )
                    .then(residual[b].key.cmp(&residual[a].key))
            });
        let Some(i) = best else { break };
        chosen[i] = true;
        let mut el = residual[i].clone();
        let excess = (el.real - el.predict).abs();
        el.score = share(excess);
        for &li in &pool[i].leaves {
            explained[li as usize] = true;
        }
        causes.push(el);
        // Rescore what is left on unexplained leaves.
        for (j, c) in pool.iter().enumerate() {
            if chosen[j] {
                continue;
            }
            let (mut r, mut p, mut v) = (0.0, 0.0, 0.0);
            for &li in &c.leaves {
                if !explained[li as usize] {
                    let l = &leaves[li as usize];
                    r += l.real;
                    p += l.predict;
                    v += l.volume;
                }
            }
            let e = &mut residual[j];
            e.real = r;
            e.predict = p;
            e.volume = v;
            e.llr = directed_llr(r, p, dir);
        }
    }

    // Runners-up: the original (not residual) numbers of elements passing the floors.
    let mut candidates: Vec<Element> = pool
        .iter()
        .enumerate()
        .filter(|(i, c)| {
            !chosen[*i] && criteria.passes_floors(c.el.real, c.el.predict, c.el.volume)
        })
        .map(|(_, c)| {
            let mut e = c.el.clone();
            let excess = (e.real - e.predict).abs();
            e.score = share(excess);
            e
        })
        .collect();
    candidates.sort_by(|a, b| b.llr.total_cmp(&a.llr).then(a.key.cmp(&b.key)));
    candidates.truncate(16);

    Localization {
        causes,
        candidates,
        tested,
        threshold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Direction;
    use proptest::prelude::*;

    fn criteria() -> Criteria {
        Criteria {
            direction: Direction::Up,
            min_volume: 10.0,
            min_real: 5.0,
            ratio: 2.0,
            min_rate_delta: 0.01,
            alpha: 1e-4,
        }
    }

    /// A grid of leaves over dims with sizes, baseline rate 1%, and faults:
    /// (element as (dim, value) pairs, failure rate inside).
    fn grid(sizes: &[u32], faults: &[(&[(usize, u32)], f64)]) -> Vec<Leaf> {
        let mut leaves = Vec::new();
        let total: u32 = sizes.iter().product();
        for mut i in 0..total {
            let mut key = [0u32; MAX_DIMS];
            for (d, &s) in sizes.iter().enumerate() {
                key[d] = i % s + 1;
                i /= s;
            }
            let n = 200.0;
            let mut rate = 0.01;
            for (el, r) in faults {
                if el.iter().all(|&(d, v)| key[d] == v) {
                    rate = *r;
                }
            }
            leaves.push(Leaf {
                key,
                real: (n * rate).round(),
                predict: n * 0.01,
                volume: n,
            });
        }
        leaves
    }

    fn dims_of(e: &Element) -> Vec<(usize, u32)> {
        (0..MAX_DIMS)
            .filter(|d| e.mask & (1 << d) != 0)
            .map(|d| (d, e.key[d]))
            .collect()
    }

    #[test]
    fn finds_a_two_dimension_cause() {
        let leaves = grid(&[6, 5, 40], &[(&[(0, 2), (1, 3)], 0.5)]);
        let loc = localize(3, &leaves, &criteria(), &Limits::default());
        assert_eq!(loc.causes.len(), 1, "{:?}", loc.causes);
        assert_eq!(dims_of(&loc.causes[0]), vec![(0, 2), (1, 3)]);
        assert!(loc.causes[0].score > 0.9);
    }

    #[test]
    fn finds_a_single_value_across_everything() {
        let leaves = grid(&[6, 5, 40], &[(&[(2, 17)], 0.8)]);
        let loc = localize(3, &leaves, &criteria(), &Limits::default());
        assert_eq!(loc.causes.len(), 1, "{:?}", loc.causes);
        assert_eq!(dims_of(&loc.causes[0]), vec![(2, 17)]);
    }

    #[test]
    fn finds_two_causes_in_different_cuboids() {
        let leaves = grid(&[6, 5, 40], &[(&[(0, 1)], 0.2), (&[(1, 4), (2, 9)], 0.9)]);
        let loc = localize(3, &leaves, &criteria(), &Limits::default());
        let found: Vec<_> = loc.causes.iter().map(dims_of).collect();
        assert!(found.contains(&vec![(0, 1)]), "{found:?}");
        assert!(found.contains(&vec![(1, 4), (2, 9)]), "{found:?}");
        assert_eq!(found.len(), 2, "{found:?}");
    }

    #[test]
    fn quiet_data_has_no_cause() {
        let leaves = grid(&[6, 5, 40], &[]);
        let loc = localize(3, &leaves, &criteria(), &Limits::default());
        assert!(loc.causes.is_empty());
    }

    #[test]
    fn volume_drop_is_found_downward() {
        let mut leaves = grid(&[6, 5], &[]);
        for l in &mut leaves {
            l.real = l.volume;
            l.predict = l.volume;
            if l.key[0] == 3 {
                l.real = 0.0;
            }
        }
        let c = Criteria {
            direction: Direction::Down,
            ratio: 0.3,
            ..criteria()
        };
        let loc = localize(2, &leaves, &c, &Limits::default());
        assert_eq!(loc.causes.len(), 1, "{:?}", loc.causes);
        assert_eq!(dims_of(&loc.causes[0]), vec![(0, 3)]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// A single large anomaly with no noise is always found exactly, and the
        /// answer does not depend on the order of the leaves.
        #[test]
        fn single_injected_element_is_found(
            mask in 1u8..8,
            vals in proptest::array::uniform3(1u32..5),
            seed in any::<u64>(),
        ) {
            let fault: Vec<(usize, u32)> = (0..3).filter(|d| mask & (1 << d) != 0).map(|d| (d, vals[d])).collect();
            let mut leaves = grid(&[4, 4, 4], &[(&fault, 0.6)]);
            let loc = localize(3, &leaves, &criteria(), &Limits::default());
            prop_assert_eq!(loc.causes.len(), 1);
            prop_assert_eq!(dims_of(&loc.causes[0]), fault.clone());
            // Permute.
            let n = leaves.len();
            let mut s = seed;
            for i in (1..n).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                leaves.swap(i, (s >> 33) as usize % (i + 1));
            }
            let again = localize(3, &leaves, &criteria(), &Limits::default());
            prop_assert_eq!(dims_of(&again.causes[0]), fault);
        }
    }
}
