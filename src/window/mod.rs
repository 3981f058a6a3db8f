//! Event-time sliding windows of bucketed counters per cell.
//!
//! A cell is one full combination of a rule's dimension values (a leaf). Each
//! cell holds a ring of per-step buckets (attempts, failures) long enough for
//! the window plus the steps still open to late events, and its learned
//! baseline. Cells are keyed by interned value ids, so a cell costs a few hundred
//! bytes whatever its strings; idle cells are evicted when their window is empty
//! and their baseline no longer matters.
//!
//! Time is event time only: buckets are indexed by `ts / step`, and the caller
//! says which step is being evaluated. Nothing here reads a clock.

use rustc_hash::FxHashMap;

use crate::detect::season::Profile;
use crate::detect::Ewma;

/// Most dimensions a rule can localize over.
pub const MAX_DIMS: usize = 6;

/// A cell key: one interned value id per dimension (unused slots 0).
pub type Key = [u32; MAX_DIMS];

/// Id of "no value" (the event lacks the dimension).
pub const NONE_ID: u32 = 0;

/// Interns dimension values to dense ids. Id 0 is the missing value.
#[derive(Debug)]
pub struct Interner {
    ids: FxHashMap<Box<str>, u32>,
    values: Vec<Box<str>>,
}

impl Default for Interner {
    fn default() -> Self {
        Interner {
            ids: FxHashMap::default(),
            values: vec!["".into()],
        }
    }
}

impl Interner {
    /// The id of `value`, adding it when new.
    pub fn intern(&mut self, value: Option<&str>) -> u32 {
        let Some(v) = value else { return NONE_ID };
        if let Some(&id) = self.ids.get(v) {
            return id;
        }
        let id = self.values.len() as u32;
        self.values.push(v.into());
        self.ids.insert(v.into(), id);
        id
    }

    /// The value of an id (`""` for the missing value).
    pub fn value(&self, id: u32) -> &str {
        self.values.get(id as usize).map(|v| &**v).unwrap_or("")
    }

    /// Distinct values held.
    pub fn len(&self) -> usize {
        self.values.len() - 1
    }

    /// True when nothing was interned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Counts of one step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Attempts.
    pub n: u32,
    /// Failures.
    pub f: u32,
}

/// One cell's buckets and baseline.
#[derive(Debug, Clone)]
pub struct Cell {
    ring: Box<[Bucket]>,
    /// Newest step with a bucket in the ring.
    head: i64,
    /// Window sums as of `win_step` (kept incrementally by [`Cell::window_at`]).
    win: Bucket,
    win_step: i64,
    /// Learned baseline (per-step counts, exponentially weighted).
    pub base: Ewma,
    /// First step the cell was seen.
    pub born: i64,
    /// Seasonal profile, for rules with `baseline.seasonality` (made by the engine).
    pub season: Option<Box<Profile>>,
}

impl Cell {
    fn new(ring_len: usize, step: i64) -> Cell {
        Cell {
            ring: vec![Bucket::default(); ring_len].into_boxed_slice(),
            head: step,
            win: Bucket::default(),
            win_step: i64::MIN,
            base: Ewma {
                step,
                ..Ewma::default()
            },
            born: step,
            season: None,
        }
    }

    fn roll_to(&mut self, step: i64) {
        if step <= self.head {
            return;
        }
        let len = self.ring.len() as i64;
        let clear = (step - self.head).min(len);
        for s in (step - clear + 1)..=step {
            self.ring[s.rem_euclid(len) as usize] = Bucket::default();
        }
        self.head = step;
    }

    /// Adds `attempts` and `failures` at `step` (one event, or a replica's
    /// pre-aggregated share). False when the step is outside the ring (too old).
    pub fn add_counts(&mut self, step: i64, attempts: u32, failures: u32) -> bool {
        self.roll_to(step);
        let len = self.ring.len() as i64;
        if step <= self.head - len {
            return false;
        }
        let b = &mut self.ring[step.rem_euclid(len) as usize];
        b.n = b.n.saturating_add(attempts);
        b.f = b.f.saturating_add(failures);
        true
    }

    /// The bucket of one step (zero when it has left the ring or is in the future).
    pub fn bucket(&self, step: i64) -> Bucket {
        let len = self.ring.len() as i64;
        if step > self.head || step <= self.head - len {
            return Bucket::default();
        }
        self.ring[step.rem_euclid(len) as usize]
    }

    /// Sums over the `steps` steps ending at `last` (inclusive).
    pub fn window(&self, last: i64, steps: usize) -> Bucket {
        let mut sum = Bucket::default();
        for s in (last - steps as i64 + 1)..=last {
            let b = self.bucket(s);
            sum.n += b.n;
            sum.f += b.f;
        }
        sum
    }

    /// Sums over the `steps` steps ending at `last`, updated incrementally when
    /// called for consecutive steps (the engine's evaluation order), which turns
    /// a loop over the window into one add and one subtract. Correct because no
    /// event is ever added to a step that has already been evaluated: those are
    /// behind the watermark.
    pub fn window_at(&mut self, last: i64, steps: usize) -> Bucket {
        if self.win_step != i64::MIN && last == self.win_step + 1 {
            let add = self.bucket(last);
            let drop = self.bucket(last - steps as i64);
            self.win.n = self.win.n + add.n - drop.n;
            self.win.f = self.win.f + add.f - drop.f;
        } else if last != self.win_step {
            self.win = self.window(last, steps);
        }
        self.win_step = last;
        self.win
    }

    /// Newest step that has seen an event (or the step it was created at).
    pub fn head(&self) -> i64 {
        self.head
    }
}

/// The cells of one rule.
#[derive(Debug)]
pub struct Cells {
    map: FxHashMap<Key, Cell>,
    ring_len: usize,
    /// Steps in the window.
    pub window_steps: usize,
}

impl Cells {
    /// Cells for a window of `window_steps`, accepting events up to `lookahead`
    /// steps past the step being evaluated (the allowed lateness).
    pub fn new(window_steps: usize, lookahead: usize) -> Cells {
        Cells {
            map: FxHashMap::default(),
            ring_len: window_steps + lookahead + 1,
            window_steps,
        }
    }

    /// How many steps past the next one to evaluate the rings hold without
    /// overwriting that step's window or the step leaving it (which
    /// [`Cell::window_at`] subtracts).
    pub fn steps_ahead(&self) -> i64 {
        (self.ring_len - self.window_steps) as i64 - 1
    }

    /// Counts `attempts` of cell `key` at `step`, `failures` among them. False
    /// when the step is outside the ring (too old).
    pub fn add_counts(&mut self, key: Key, step: i64, attempts: u32, failures: u32) -> bool {
        let ring_len = self.ring_len;
        self.map
            .entry(key)
            .or_insert_with(|| Cell::new(ring_len, step))
            .add_counts(step, attempts, failures)
    }

    /// Active cells.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when there are no cells.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Visits every cell; the closure returns false to evict it.
    pub fn retain(&mut self, mut f: impl FnMut(&Key, &mut Cell) -> bool) {
        self.map.retain(|k, c| f(k, c));
    }

    /// One cell.
    pub fn get(&self, key: &Key) -> Option<&Cell> {
        self.map.get(key)
    }

    /// Every cell.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Cell)> {
        self.map.iter()
    }

    /// Approximate heap bytes per cell (for sizing reports).
    pub fn bytes_per_cell(&self) -> usize {
        std::mem::size_of::<(Key, Cell)>() + 8 + self.ring_len * std::mem::size_of::<Bucket>() + 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn window_sums_only_its_steps() {
        let mut c = Cells::new(4, 2);
        let k = [1, 2, 0, 0, 0, 0];
        for s in 0..10 {
            c.add_counts(k, s, 1, u32::from(s % 2 == 0));
        }
        let cell = c.get(&k).unwrap();
        assert_eq!(cell.window(7, 4), Bucket { n: 4, f: 2 });
        // Steps 8 and 9 are in the ring (lookahead) but not in a window ending at 7.
        assert_eq!(cell.window(9, 4), Bucket { n: 4, f: 2 });
        assert_eq!(cell.window(12, 4), Bucket { n: 1, f: 0 });
    }

    #[test]
    fn incremental_window_matches_the_full_sum() {
        let mut c = Cells::new(4, 3);
        let k = [1, 0, 0, 0, 0, 0];
        for s in 0..40i64 {
            // Events arrive up to 3 steps ahead of the evaluated step.
            for a in 0..=(s % 3) {
                c.add_counts(k, s + 3, 1, u32::from(a == 0));
            }
            let cell = c.map.get_mut(&k).unwrap();
            let full = cell.window(s, 4);
            assert_eq!(cell.window_at(s, 4), full, "step {s}");
        }
    }

    #[test]
    fn too_old_events_are_refused() {
        let mut c = Cells::new(2, 1);
        let k = [1, 0, 0, 0, 0, 0];
        assert!(c.add_counts(k, 10, 1, 0));
        // The ring holds window + lookahead + 1 = 4 steps: 7..=10.
        assert!(c.add_counts(k, 7, 1, 0));
        assert!(!c.add_counts(k, 6, 1, 0));
    }

    #[test]
    fn cell_is_small() {
        let c = Cells::new(8, 3);
        assert!(c.bytes_per_cell() < 1024, "{}", c.bytes_per_cell());
    }

    proptest! {
        /// Whatever the arrival order within the ring, window sums equal a direct count.
        #[test]
        fn window_equals_direct_count(events in proptest::collection::vec((0i64..40, any::<bool>()), 1..300), last in 0i64..45) {
            let mut sorted = events.clone();
            sorted.sort_by_key(|e| e.0);
            let mut c = Cells::new(6, 40);
            let k = [1, 0, 0, 0, 0, 0];
            for (s, f) in &events {
                c.add_counts(k, *s, 1, u32::from(*f));
            }
            let cell = c.get(&k).unwrap();
            let w = cell.window(last, 6);
            let direct_n = events.iter().filter(|(s, _)| *s > last - 6 && *s <= last).count() as u32;
            let direct_f = events.iter().filter(|(s, f)| *f && *s > last - 6 && *s <= last).count() as u32;
            prop_assert_eq!(w, Bucket { n: direct_n, f: direct_f });
        }
    }
}
