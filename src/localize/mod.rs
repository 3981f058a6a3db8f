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
//! 1. **Search, pruned.** The whole (when [`Limits::root`] is set) and every
//!    one-dimension element are scored. Only elements whose deviation is at
//!    least loosely significant are expanded by one more dimension, keeping the
//!    best few per layer. An anomalous element's ancestors all carry its
//!    excess, so the search reaches it from any of them.
//! 2. **Score.** The Poisson deviance `G` of the element's aggregate. For a
//!    homogeneous cause it prefers the right level by itself: an ancestor
//!    dilutes the excess with normal siblings (lower `G`), a descendant carries
//!    only part of it (lower `G`), and `G` adds up over children failing alike.
//! 3. **Select, greedily.** Take the element with the largest `G` that passes the
//!    rule's criteria at the Bonferroni threshold for everything examined, then
//!    **refine** it (parsimony): when some of its children along one dimension
//!    pass the criteria on their own, the rest of its children are healthy (they
//!    fit the baseline better than the failing children's lift) and the
//!    children's evidence beats the parent's by more than one threshold per
//!    extra element, the children are the causes (two failing regions of a
//!    provider are two causes, not the provider; a cause three dimensions deep
//!    is not reported as its parent). Refinement recurses into the children.
//!    Mark the causes' leaves explained, rescore the rest on the unexplained
//!    leaves only, and repeat until nothing significant is left.
//!
//! Pure and synchronous: the daemon calls it at every evaluation step and
//! `faultline rca` on a CSV snapshot.

pub mod cover;
pub mod rca;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::detect::{directed_llr, llr_threshold, Criteria, Direction};
use crate::window::{Key, MAX_DIMS, NONE_ID};

/// A set of dimensions, bit `d` for dimension `d`.
pub type Mask = u16;

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
    pub mask: Mask,
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
    /// Dimensions its leaves all share a value of without the element fixing
    /// them, among those that follow from others ([`Limits::follows`]): a
    /// BIN's prefix and card brand. Their values are in `key`. Only
    /// [`Element::overlaps`] reads them.
    pub implied: Mask,
}

impl Element {
    /// Whether a leaf key lies in this element.
    pub fn contains(&self, key: &Key) -> bool {
        (0..MAX_DIMS).all(|d| self.mask & (1 << d) == 0 || self.key[d] == key[d])
    }

    /// Whether `other` lies within this element: it fixes (or implies) every
    /// value this one fixes.
    pub fn encloses(&self, other: &Element) -> bool {
        let known = other.mask | other.implied;
        self.mask & known == self.mask
            && (0..MAX_DIMS).all(|d| self.mask & (1 << d) == 0 || self.key[d] == other.key[d])
    }

    /// Whether one element lies within the other (`bin=414720` lies within
    /// `bin4=4147` and within `card_brand=visa`, which it implies).
    pub fn overlaps(&self, other: &Element) -> bool {
        self.encloses(other) || other.encloses(self)
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

/// Totals of a set of leaves.
#[derive(Debug, Clone, Copy, Default)]
struct Sum {
    real: f64,
    predict: f64,
    volume: f64,
}

impl Sum {
    fn add(&mut self, l: &Leaf) {
        self.real += l.real;
        self.predict += l.predict;
        self.volume += l.volume;
    }

    fn merge(&mut self, o: &Sum) {
        self.real += o.real;
        self.predict += o.predict;
        self.volume += o.volume;
    }

    fn element(&self, mask: Mask, key: Key, dir: Direction) -> Element {
        Element {
            mask,
            key,
            real: self.real,
            predict: self.predict,
            volume: self.volume,
            llr: directed_llr(self.real, self.predict, dir),
            score: 0.0,
            implied: 0,
        }
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
    pub derived: Mask,
    /// Bit `d` set when the missing value of dimension `d` (id 0, the event
    /// lacks it) names no element: "events without a card brand" is not a
    /// cause anyone can act on.
    pub nameless: Mask,
    /// Whether the whole (no dimension fixed) is a candidate too: a failure
    /// across everything is one cause, not one per value of some dimension.
    pub root: bool,
    /// Bit `d` set when dimension `d` follows from another one (a BIN's
    /// prefix or card brand): where a reported element's leaves share one
    /// value of it, the element implies it ([`Element::implied`]).
    pub follows: Mask,
    /// Bit `d` set when dimension `d` is the one the `follows` dimensions
    /// follow from (`bin`): an element fixing it needs none of them.
    pub source: Mask,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            beam: 24,
            max_causes: 8,
            expand_llr: 9.0,
            derived: 0,
            nameless: 0,
            root: false,
            follows: 0,
            source: 0,
        }
    }
}

/// What localization found.
#[derive(Debug, Clone, Default)]
pub struct Localization {
    /// Chosen elements, best first: each passed the criteria.
    pub causes: Vec<Element>,
    /// Other elements examined that passed the floors, best first: pieces of
    /// the causes and alternatives to them.
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

/// Totals of leaves per value of dimension `d`: a dense vector when the ids
/// are few (they are interned densely), a map when the interner holds many
/// more values than there are leaves.
fn layer_one(leaves: &[Leaf], d: usize, max_id: u32) -> Vec<(u32, Sum)> {
    if (max_id as usize) <= 4 * leaves.len() + 1024 {
        let mut agg: Vec<Option<Sum>> = vec![None; max_id as usize + 1];
        for l in leaves {
            agg[l.key[d] as usize]
                .get_or_insert_with(Sum::default)
                .add(l);
        }
        agg.into_iter()
            .enumerate()
            .filter_map(|(v, s)| s.map(|s| (v as u32, s)))
            .collect()
    } else {
        let mut agg: FxHashMap<u32, Sum> = FxHashMap::default();
        for l in leaves {
            agg.entry(l.key[d]).or_default().add(l);
        }
        agg.into_iter().collect()
    }
}

/// Marks the dimensions of `follows` that all of the element's leaves `idx`
/// share one value of as implied.
fn imply(el: &mut Element, leaves: &[Leaf], idx: &[u32], follows: Mask, dims: usize) {
    for d in 0..dims {
        if follows & !el.mask & (1 << d) == 0 {
            continue;
        }
        let mut values = idx.iter().map(|&i| leaves[i as usize].key[d]);
        if let Some(first) = values.next() {
            if first != NONE_ID && values.all(|v| v == first) {
                el.implied |= 1 << d;
                el.key[d] = first;
            }
        }
    }
}

/// Whether value `v` of dimension `d` names an element.
fn nameable(limits: &Limits, d: usize, v: u32) -> bool {
    v != NONE_ID || limits.nameless & (1 << d) == 0
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
    let mut visited: FxHashSet<(Mask, Key)> = FxHashSet::default();

    if limits.root {
        let mut all = Sum::default();
        leaves.iter().for_each(|l| all.add(l));
        tested += 1;
        let el = all.element(0, [0; MAX_DIMS], dir);
        if el.llr >= limits.expand_llr {
            pool.push(Cand {
                el,
                leaves: (0..leaves.len() as u32).collect(),
            });
        }
    }

    // Layer 1: aggregate every single-dimension element.
    let mut layer: Vec<Cand> = Vec::new();
    let mut max_id = vec![0u32; dims];
    for l in leaves {
        for (d, m) in max_id.iter_mut().enumerate() {
            *m = (*m).max(l.key[d]);
        }
    }
    for d in 0..dims {
        let values = layer_one(leaves, d, max_id[d]);
        let mut scored: Vec<Element> = values
            .into_iter()
            .filter(|(v, _)| nameable(limits, d, *v))
            .filter_map(|(v, s)| {
                tested += 1;
                let mut key = [0u32; MAX_DIMS];
                key[d] = v;
                let el = s.element(1 << d, key, dir);
                (el.llr >= limits.expand_llr).then_some(el)
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
                let mut groups: FxHashMap<u32, (Sum, Vec<u32>)> = FxHashMap::default();
                for &li in &c.leaves {
                    let l = &leaves[li as usize];
                    let g = groups.entry(l.key[d]).or_default();
                    g.0.add(l);
                    g.1.push(li);
                }
                for (v, (s, ls)) in groups {
                    if !nameable(limits, d, v) {
                        continue;
                    }
                    let mut key = c.el.key;
                    key[d] = v;
                    let mask = c.el.mask | (1 << d);
                    if !visited.insert((mask, key)) {
                        continue;
                    }
                    tested += 1;
                    let el = s.element(mask, key, dir);
                    if el.llr >= limits.expand_llr {
                        next.push(Cand { el, leaves: ls });
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
        Direction::Up => sum_real - sum_predict,
        Direction::Down => sum_predict - sum_real,
    }
    .max(0.0);
    let share = |excess: f64| {
        if excess > 0.0 {
            excess / total_excess.max(excess)
        } else {
            0.0
        }
    };

    // Greedy selection on unexplained leaves, each pick refined.
    let search = Search {
        leaves,
        dims,
        criteria,
        threshold,
        limits,
    };
    let mut explained = vec![false; leaves.len()];
    let mut causes: Vec<Element> = Vec::new();
    let mut residual: Vec<Element> = pool.iter().map(|c| c.el.clone()).collect();
    let mut chosen = vec![false; pool.len()];
    let mut chosen_leaves: Vec<(Element, Vec<u32>)> = Vec::new();
    while causes.len() < limits.max_causes {
        let best = (0..pool.len())
            .filter(|&i| !chosen[i])
            .filter(|&i| {
                let e = &residual[i];
                criteria.passes(e.real, e.predict, e.volume, threshold)
            })
            .min_by(|&a, &b| preference(&residual[a], &residual[b], limits.derived));
        let Some(i) = best else { break };
        chosen[i] = true;
        let mine: Vec<u32> = pool[i]
            .leaves
            .iter()
            .copied()
            .filter(|&li| !explained[li as usize])
            .collect();
        for (mut el, ls) in search.refine(&residual[i], mine) {
            if causes.len() >= limits.max_causes {
                break;
            }
            imply(&mut el, leaves, &ls, limits.follows, dims);
            for &li in &ls {
                explained[li as usize] = true;
            }
            // The cause's whole leaf set (its residual ones may be fewer).
            let all = pool
                .iter()
                .find(|c| c.el.same_as(&el))
                .map_or_else(|| ls.clone(), |c| c.leaves.clone());
            chosen_leaves.push((el.clone(), all));
            for (j, c) in pool.iter().enumerate() {
                if c.el.same_as(&el) {
                    chosen[j] = true;
                }
            }
            el.score = share((el.real - el.predict).abs());
            causes.push(el);
        }
        // Rescore what is left on unexplained leaves.
        for (j, c) in pool.iter().enumerate() {
            if chosen[j] {
                continue;
            }
            let mut s = Sum::default();
            for &li in &c.leaves {
                if !explained[li as usize] {
                    s.add(&leaves[li as usize]);
                }
            }
            residual[j] = s.element(c.el.mask, c.el.key, dir);
        }
    }
    causes.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.llr.total_cmp(&a.llr))
            .then(a.key.cmp(&b.key))
    });

    // Pieces and alternatives: the original (not residual) numbers of the
    // elements examined that pass the floors and are not causes, nor another
    // name for a cause's or a better candidate's events (`bin4=4111` when
    // every event has BIN 411111; `region=X` when only provider P serves it).
    let mut order: Vec<usize> = (0..pool.len())
        .filter(|&i| !chosen_leaves.iter().any(|(k, _)| k.same_as(&pool[i].el)))
        .filter(|&i| {
            let e = &pool[i].el;
            criteria.passes_floors(e.real, e.predict, e.volume)
        })
        .collect();
    order.sort_by(|&a, &b| preference(&pool[a].el, &pool[b].el, limits.derived));
    let mut seen: Vec<&[u32]> = chosen_leaves.iter().map(|(_, l)| l.as_slice()).collect();
    let mut candidates: Vec<Element> = Vec::new();
    for i in order {
        let c = &pool[i];
        if candidates.len() >= MAX_CANDIDATES {
            break;
        }
        if seen.contains(&c.leaves.as_slice()) {
            continue;
        }
        seen.push(&c.leaves);
        let mut e = c.el.clone();
        e.score = share((e.real - e.predict).abs());
        imply(&mut e, leaves, &c.leaves, limits.follows, dims);
        candidates.push(e);
    }

    Localization {
        causes,
        candidates,
        tested,
        threshold,
    }
}

/// Most candidates reported beside the causes.
const MAX_CANDIDATES: usize = 16;

/// Which of two elements to report first: more evidence, then (on equal
/// evidence, as for two names of the same events) the simpler element, the
/// one naming underlying rather than derived dimensions, the one naming the
/// earlier dimension (`provider` before `region`), then a stable order. One
/// order everywhere, so the same events get the same name at every step.
fn preference(a: &Element, b: &Element, derived: Mask) -> std::cmp::Ordering {
    let close = (a.llr - b.llr).abs() <= 1e-9 * a.llr.abs().max(b.llr.abs()).max(1.0);
    let by_llr = if close {
        std::cmp::Ordering::Equal
    } else {
        b.llr.total_cmp(&a.llr)
    };
    let first_dim = |m: Mask, other: Mask| {
        let diff = m ^ other;
        // The element holding the lowest dimension the two differ on.
        if diff == 0 {
            0
        } else {
            (m & (diff & diff.wrapping_neg()) == 0) as u8
        }
    };
    by_llr
        .then(a.depth().cmp(&b.depth()))
        .then(
            (a.mask & derived)
                .count_ones()
                .cmp(&(b.mask & derived).count_ones()),
        )
        .then(first_dim(a.mask, b.mask).cmp(&first_dim(b.mask, a.mask)))
        .then(a.key.cmp(&b.key))
}

/// Log-odds by which the rest of an element's children must fit the
/// baseline better than its failing children's lift before those children
/// replace it (about 1000 to 1: a rest of a few events with no failures by
/// chance, out of every dimension tried at every step, must not refute it).
const HEALTHY_LLR: f64 = 7.0;

/// Whether the rest of an element (`rest_real` observed where `rest_predict`
/// was expected) fits the baseline better than the lift its failing part
/// shows (`bad_real` against `bad_predict`), by odds of at least
/// e^[`HEALTHY_LLR`]: the Poisson log-likelihood ratio of "lifted like the
/// failing part" over "as expected". A rest failing like the others, or too
/// small to tell either way, is not shown healthy.
pub fn rest_is_healthy(bad_real: f64, bad_predict: f64, rest_real: f64, rest_predict: f64) -> bool {
    if bad_real <= 0.0 || bad_predict <= 0.0 {
        return false;
    }
    let k = bad_real / bad_predict;
    rest_real.max(0.0) * k.ln() - (k - 1.0) * rest_predict.max(0.0) <= -HEALTHY_LLR
}

/// Elements with their leaves.
type Parts = Vec<(Element, Vec<u32>)>;

/// What refinement needs to know of the search.
struct Search<'a> {
    leaves: &'a [Leaf],
    dims: usize,
    criteria: &'a Criteria,
    threshold: f64,
    limits: &'a Limits,
}

impl Search<'_> {
    /// The causes an element picked by evidence stands for: itself, or (when
    /// only some of its children along one dimension fail, the others are
    /// healthy, and the children's evidence pays for the extra elements) those
    /// children, each refined again. `idx` are the element's leaves.
    fn refine(&self, el: &Element, idx: Vec<u32>) -> Parts {
        let t = self.threshold;
        let dir = self.criteria.direction;
        // The element passed every floor: a child carrying its failures is
        // judged by evidence and lift alone (a BIN too small for the volume
        // floor is still where its brand's failures are).
        let child = Criteria {
            min_volume: 0.0,
            min_real: 0.0,
            ..*self.criteria
        };
        let mut best: Option<(f64, Parts)> = None;
        for d in 0..self.dims {
            if el.mask & (1 << d) != 0 {
                continue;
            }
            let mut groups: FxHashMap<u32, (Sum, Vec<u32>)> = FxHashMap::default();
            for &li in &idx {
                let l = &self.leaves[li as usize];
                let g = groups.entry(l.key[d]).or_default();
                g.0.add(l);
                g.1.push(li);
            }
            if groups.len() < 2 {
                continue;
            }
            let mut failing: Parts = Vec::new();
            let (mut bad, mut rest) = (Sum::default(), Sum::default());
            // Fixing the BIN makes its range and brand redundant: `bin=414720`,
            // not `bin4=4147, bin=414720`.
            let drop = if self.limits.source & (1 << d) != 0 {
                el.mask & self.limits.follows
            } else {
                0
            };
            for (v, (s, ls)) in groups {
                if nameable(self.limits, d, v) && child.passes(s.real, s.predict, s.volume, t) {
                    let mut key = el.key;
                    key[d] = v;
                    for (k, slot) in key.iter_mut().enumerate() {
                        if drop & (1 << k) != 0 {
                            *slot = 0;
                        }
                    }
                    bad.merge(&s);
                    failing.push((s.element((el.mask & !drop) | (1 << d), key, dir), ls));
                } else {
                    rest.merge(&s);
                }
            }
            if failing.is_empty() || bad.predict <= 0.0 || bad.real <= 0.0 {
                continue;
            }
            // The rest of the children must be shown healthy: the baseline
            // fits them better than the failing children's lift does, by
            // odds of at least e^HEALTHY_LLR. A rest failing like the others
            // (children only too small to pass on their own), or too small to
            // tell either way, leaves the element itself as the cause.
            if !rest_is_healthy(bad.real, bad.predict, rest.real, rest.predict) {
                continue;
            }
            // A healthy rest refutes the element (it claims those children
            // fail too): its failing children are the causes, however many.
            // Of the dimensions that split it so, the best explaining wins.
            let gain: f64 = failing.iter().map(|(c, _)| c.llr - t).sum();
            // Ties (two names of the same children) go to the earlier dimension.
            if best
                .as_ref()
                .is_none_or(|b| gain > b.0 + 1e-9 * b.0.abs().max(1.0))
            {
                failing.sort_by(|a, b| b.0.llr.total_cmp(&a.0.llr).then(a.0.key.cmp(&b.0.key)));
                best = Some((gain, failing));
            }
        }
        match best {
            None => vec![(el.clone(), idx)],
            Some((_, children)) => children
                .into_iter()
                .flat_map(|(c, ls)| self.refine(&c, ls))
                .collect(),
        }
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
    fn a_small_child_spared_by_chance_does_not_split_its_parent() {
        // Provider 2 fails at 50 % on every brand; its sixth, small brand saw
        // 8 auths and no failure (0.4 % likely at 50 %). That is no evidence
        // the provider is healthy there: one cause, the provider, not five
        // brands.
        let mut leaves = grid(&[6, 6], &[(&[(0, 2)], 0.5)]);
        for l in &mut leaves {
            if l.key[0] == 2 && l.key[1] == 6 {
                l.volume = 8.0;
                l.predict = 0.08;
                l.real = 0.0;
            }
        }
        let loc = localize(2, &leaves, &criteria(), &Limits::default());
        let found: Vec<_> = loc.causes.iter().map(dims_of).collect();
        assert_eq!(found, vec![vec![(0, 2)]]);
        // A healthy brand of real size does refute the provider.
        for l in &mut leaves {
            if l.key[0] == 2 && l.key[1] == 6 {
                l.volume = 200.0;
                l.predict = 2.0;
                l.real = 2.0;
            }
        }
        let loc = localize(2, &leaves, &criteria(), &Limits::default());
        let found: Vec<_> = loc.causes.iter().map(dims_of).collect();
        assert_eq!(found.len(), 5, "{found:?}");
        assert!(
            found.iter().all(|f| f.len() == 2 && f[0] == (0, 2)),
            "{found:?}"
        );
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

    #[test]
    fn two_failing_children_beat_their_parent() {
        // Provider 2 fails in two of its six regions; its other regions are healthy.
        let leaves = grid(
            &[6, 6, 20],
            &[(&[(0, 2), (1, 3)], 0.5), (&[(0, 2), (1, 5)], 0.3)],
        );
        let loc = localize(3, &leaves, &criteria(), &Limits::default());
        let mut found: Vec<_> = loc.causes.iter().map(dims_of).collect();
        found.sort();
        assert_eq!(found, vec![vec![(0, 2), (1, 3)], vec![(0, 2), (1, 5)]]);
        // The parent is kept as a candidate, not a cause.
        assert!(loc.candidates.iter().any(|c| dims_of(c) == vec![(0, 2)]));
    }

    #[test]
    fn two_bins_of_a_range_are_named_by_bin_alone() {
        // Dimensions: provider (4), bin (20), bin4 (the range: 4 of 5 BINs each).
        let mut leaves = grid(&[4, 20], &[(&[(1, 1)], 0.6), (&[(1, 2)], 0.6)]);
        for l in &mut leaves {
            l.key[2] = (l.key[1] - 1) / 5 + 1;
        }
        let limits = Limits {
            derived: 0b100,
            follows: 0b100,
            source: 0b010,
            ..Limits::default()
        };
        let loc = localize(3, &leaves, &criteria(), &limits);
        let mut found: Vec<_> = loc.causes.iter().map(dims_of).collect();
        found.sort();
        assert_eq!(found, vec![vec![(1, 1)], vec![(1, 2)]], "{:?}", loc.causes);
        // Their range is implied, not named.
        assert!(loc
            .causes
            .iter()
            .all(|c| c.implied == 0b100 && c.key[2] == 1));
    }

    #[test]
    fn a_three_deep_cause_beats_its_parent() {
        let leaves = grid(&[4, 4, 5, 10], &[(&[(0, 1), (1, 2), (2, 3)], 0.4)]);
        let loc = localize(4, &leaves, &criteria(), &Limits::default());
        assert_eq!(loc.causes.len(), 1, "{:?}", loc.causes);
        assert_eq!(dims_of(&loc.causes[0]), vec![(0, 1), (1, 2), (2, 3)]);
    }

    #[test]
    fn children_failing_unevenly_everywhere_are_their_parent() {
        // Provider 2 fails in every region, at rates from 20% to 90%.
        let rates = [0.2, 0.9, 0.4, 0.6, 0.3, 0.8];
        let regions: Vec<[(usize, u32); 2]> = (1..=6).map(|r| [(0, 2), (1, r)]).collect();
        let faults: Vec<(&[(usize, u32)], f64)> = regions
            .iter()
            .zip(rates)
            .map(|(el, r)| (&el[..], r))
            .collect();
        let leaves = grid(&[6, 6, 20], &faults);
        let loc = localize(3, &leaves, &criteria(), &Limits::default());
        assert_eq!(loc.causes.len(), 1, "{:?}", loc.causes);
        assert_eq!(dims_of(&loc.causes[0]), vec![(0, 2)]);
    }

    #[test]
    fn a_failure_across_everything_is_the_whole_when_asked() {
        let leaves = grid(&[6, 5, 40], &[(&[], 0.3)]);
        let limits = Limits {
            root: true,
            ..Limits::default()
        };
        let loc = localize(3, &leaves, &criteria(), &limits);
        assert_eq!(loc.causes.len(), 1, "{:?}", loc.causes);
        assert_eq!(loc.causes[0].mask, 0);
        // Without the whole as a candidate it takes several values of a dimension.
        let loc = localize(3, &leaves, &criteria(), &Limits::default());
        assert!(loc.causes.len() > 1, "{:?}", loc.causes);
    }

    #[test]
    fn a_missing_value_names_no_cause_in_a_nameless_dimension() {
        // Dimension 2 is absent (id 0) on every leaf; dimension 0 value 3 fails.
        let mut leaves = grid(&[6, 5], &[(&[(0, 3)], 0.6)]);
        for l in &mut leaves {
            l.key[2] = NONE_ID;
        }
        let limits = Limits {
            nameless: 0b100,
            ..Limits::default()
        };
        let loc = localize(3, &leaves, &criteria(), &limits);
        assert_eq!(loc.causes.len(), 1, "{:?}", loc.causes);
        assert_eq!(dims_of(&loc.causes[0]), vec![(0, 3)]);
        assert!(loc
            .candidates
            .iter()
            .chain(&loc.causes)
            .all(|c| c.mask & 0b100 == 0));
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
