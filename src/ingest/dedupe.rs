//! Bounded, event-time dedupe of event ids.
//!
//! The contract counts an id seen again "within the dedupe horizon" once. An
//! exact set of every id ever seen would grow without bound, so ids are kept in
//! two generations, each covering one horizon of event time: `current` for the
//! generation the stream's event time (the largest `ts` seen) is in, `previous`
//! for the one before. When event time enters a new generation, `previous` is
//! dropped and `current` takes its place. Memory is therefore the ids of at most
//! two horizons of traffic, whatever the stream's length.
//!
//! Guarantee: an id is caught when it comes back while the stream's event time
//! has advanced by at most one horizon since it was last seen. An id that comes
//! back later than two horizons is always forgotten; in between it may or may
//! not be, depending on where the generation boundary fell.
//!
//! The sets hold 64-bit SipHash values of the ids, not the ids: 8 bytes per id
//! whatever its length (ids may be 128 characters). The hasher is keyed at
//! random per instance, so nobody can craft two ids that collide and make one
//! hide the other; an accidental collision needs around four billion ids in
//! memory at once to become likely.
//!
//! A cap on ids per generation bounds memory even when event time stalls (a
//! flood of unique ids within one horizon, or one event far in the future that
//! freezes the generation clock): past the cap, the generations rotate early and
//! the horizon effectively shrinks instead of memory growing.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use rustc_hash::FxHashSet;

/// Default most ids per generation: about 36 MB per generation in the sets.
pub const DEFAULT_MAX_IDS_PER_GENERATION: usize = 4_000_000;

/// A bounded set of recently seen event ids. See the module docs.
#[derive(Debug)]
pub struct Dedupe {
    horizon_ms: i64,
    max_ids: usize,
    hasher: RandomState,
    /// Generation number (`max_ts / horizon`) of `current`; `None` before the
    /// first event.
    generation: Option<i64>,
    /// Largest event time seen.
    max_ts: i64,
    /// Ids seen in the current generation. The values are already uniform keyed
    /// hashes, so hashing them again with Fx (a multiply) is enough.
    current: FxHashSet<u64>,
    /// Ids seen in the generation before.
    previous: FxHashSet<u64>,
}

impl Dedupe {
    /// A dedupe set remembering ids for at least `horizon_ms` of event time
    /// (clamped to at least 1 ms), with [`DEFAULT_MAX_IDS_PER_GENERATION`].
    pub fn new(horizon_ms: i64) -> Self {
        Self::with_max_ids(horizon_ms, DEFAULT_MAX_IDS_PER_GENERATION)
    }

    /// Like [`Dedupe::new`] with a cap on ids per generation (at least 1):
    /// memory stays below about `2 * max_ids * 9` bytes.
    pub fn with_max_ids(horizon_ms: i64, max_ids: usize) -> Self {
        Self {
            horizon_ms: horizon_ms.max(1),
            max_ids: max_ids.max(1),
            hasher: RandomState::new(),
            generation: None,
            max_ts: i64::MIN,
            current: FxHashSet::default(),
            previous: FxHashSet::default(),
        }
    }

    /// Records `id` seen at event time `ts_ms`; true when it was already seen
    /// within the horizon, i.e. this event is a duplicate.
    pub fn check(&mut self, id: &str, ts_ms: i64) -> bool {
        self.advance(ts_ms);
        let h = self.hasher.hash_one(id);
        if self.current.contains(&h) {
            return true;
        }
        let duplicate = self.previous.contains(&h);
        // Also a duplicate seen in `previous` moves to `current`: it was seen
        // again, so its horizon starts again.
        if self.current.len() >= self.max_ids {
            self.rotate();
        }
        self.current.insert(h);
        duplicate
    }

    /// Number of id hashes held (an id in both generations counts twice).
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// True when no id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The horizon in milliseconds.
    pub fn horizon_ms(&self) -> i64 {
        self.horizon_ms
    }

    /// Moves event time forward to `ts_ms` (never back) and rotates generations.
    fn advance(&mut self, ts_ms: i64) {
        if ts_ms <= self.max_ts && self.generation.is_some() {
            return;
        }
        self.max_ts = self.max_ts.max(ts_ms);
        let generation = self.max_ts.div_euclid(self.horizon_ms);
        match self.generation {
            None => self.generation = Some(generation),
            Some(g) if generation == g => {}
            Some(g) if generation == g.saturating_add(1) => {
                self.rotate();
                self.generation = Some(generation);
            }
            Some(_) => {
                // Two or more horizons with no events: everything is stale.
                self.previous.clear();
                self.current.clear();
                self.shrink();
                self.generation = Some(generation);
            }
        }
    }

    /// `current` becomes `previous`, `previous` is dropped.
    fn rotate(&mut self) {
        std::mem::swap(&mut self.current, &mut self.previous);
        self.current.clear();
        self.shrink();
    }

    /// After a burst, give the memory back: `clear` keeps the capacity.
    fn shrink(&mut self) {
        let keep = self.previous.len().max(1024);
        if self.current.capacity() > 4 * keep {
            self.current.shrink_to(keep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: i64 = 60_000;

    #[test]
    fn catches_a_repeat_within_the_horizon() {
        let mut d = Dedupe::new(H);
        assert!(!d.check("a", 1_000));
        assert!(d.check("a", 1_500));
        assert!(!d.check("b", 1_500));
        // Out of order, still within the horizon.
        assert!(d.check("b", 900));
        assert_eq!(d.len(), 2);
        assert!(!d.is_empty());
    }

    #[test]
    fn catches_a_repeat_across_a_generation_boundary() {
        let mut d = Dedupe::new(H);
        assert!(!d.check("a", H - 1));
        assert!(!d.check("x", 2 * H - 2));
        assert!(d.check("a", 2 * H - 1));
    }

    #[test]
    fn forgets_after_two_horizons() {
        let mut d = Dedupe::new(H);
        assert!(!d.check("a", 0));
        assert!(!d.check("x", 2 * H));
        assert!(!d.check("a", 2 * H + 1));
    }

    #[test]
    fn a_long_gap_clears_everything() {
        let mut d = Dedupe::new(H);
        for i in 0..100 {
            d.check(&format!("id-{i}"), i);
        }
        assert_eq!(d.len(), 100);
        d.check("late", 10 * H);
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        let mut d = Dedupe::new(i64::MAX);
        assert!(!d.check("a", 0));
        assert!(!d.check("b", i64::MAX));
        assert!(d.check("a", 0));
        // From the smallest time to the largest is more than two horizons.
        let mut d = Dedupe::new(i64::MAX);
        assert!(!d.check("c", i64::MIN));
        assert!(!d.check("c", i64::MAX));
        // Event time is the stream's: a very late event still counts as seen now.
        assert!(!d.check("e", i64::MIN));
        assert!(d.check("e", i64::MAX));
        let mut d = Dedupe::new(0);
        assert_eq!(d.horizon_ms(), 1);
        assert!(!d.check("a", i64::MIN));
        assert!(!d.check("a", i64::MAX));
        assert!(d.check("a", i64::MAX));
    }

    #[test]
    fn the_cap_bounds_memory_when_time_stalls() {
        let mut d = Dedupe::with_max_ids(H, 1_000);
        // One event far in the future, then a flood at the same event time.
        d.check("future", i64::MAX / 2);
        for i in 0..50_000 {
            assert!(!d.check(&format!("id-{i}"), 0));
        }
        assert!(d.len() <= 2_000, "{}", d.len());
        // The most recent ids are still caught.
        assert!(d.check("id-49999", 0));
    }

    proptest! {
        #[test]
        fn a_repeat_within_the_horizon_is_always_caught(
            start in -1_000_000_000i64..1_000_000_000,
            gaps in proptest::collection::vec(0i64..20_000, 1..200),
            horizon in 1i64..100_000,
            pick in any::<proptest::sample::Index>(),
        ) {
            let mut d = Dedupe::new(horizon);
            let mut ts = start;
            let mut seen = Vec::new();
            for (i, gap) in gaps.iter().enumerate() {
                ts += gap;
                let id = format!("evt-{i}");
                prop_assert!(!d.check(&id, ts), "fresh id {} reported as duplicate", id);
                seen.push((id, ts));
            }
            // Any id whose last sighting is within one horizon of the stream's
            // event time is caught.
            let (id, first) = pick.get(&seen).clone();
            let max_ts = ts;
            if max_ts - first <= horizon {
                prop_assert!(d.check(&id, max_ts));
            }
        }

        #[test]
        fn a_repeat_out_of_order_is_caught(
            ts in proptest::collection::vec(0i64..60_000, 1..300),
        ) {
            // All events within one horizon of each other: every repeat is caught.
            let mut d = Dedupe::new(60_000);
            let ids: Vec<String> = (0..ts.len()).map(|i| format!("e{i}")).collect();
            for (id, t) in ids.iter().zip(&ts) {
                prop_assert!(!d.check(id, *t));
            }
            for (id, t) in ids.iter().zip(&ts).rev() {
                prop_assert!(d.check(id, *t));
            }
        }

        #[test]
        fn memory_stays_bounded_over_many_horizons(
            rate in 1i64..50,
            horizons in 5i64..40,
        ) {
            // `rate` unique ids per second for `horizons` horizons of 10 s.
            let horizon = 10_000;
            let mut d = Dedupe::new(horizon);
            let step = 1_000 / rate;
            let mut peak = 0;
            let mut n = 0u64;
            let mut ts = 0;
            while ts < horizons * horizon {
                let id = format!("u{n}");
                prop_assert!(!d.check(&id, ts));
                n += 1;
                ts += step;
                peak = peak.max(d.len());
            }
            // Two generations of at most one horizon's ids each.
            let per_horizon = (horizon / step + 1) as usize;
            prop_assert!(peak <= 2 * per_horizon, "peak {} > 2 * {}", peak, per_horizon);
            prop_assert!(n as usize > 2 * per_horizon);
        }
    }
}
