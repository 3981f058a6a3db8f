//! Event-time sliding windows of bucketed counters per cell.
//!
//! A cell is one full combination of a rule's cell dimension values (a leaf).
//! Each cell holds a ring of per-step buckets (attempts, failures) long enough
//! for the window plus the steps still open to late events. What a rule learns
//! (baselines) lives with the engine, per combination of the rule's own
//! dimensions, not here. Cells are keyed by interned value ids, so a cell costs
//! about a hundred and fifty bytes whatever its strings; idle cells are evicted
//! when their window is empty.
//!
//! Time is event time only: buckets are indexed by `ts / step`, and the caller
//! says which step is being evaluated. Nothing here reads a clock.

use rustc_hash::FxHashMap;

/// Most dimensions a rule lists (`dimensions` in its file).
pub const MAX_RULE_DIMS: usize = 6;

/// Most dimensions a cell key holds: the rule's own, the event attributes it
/// explains with beyond them, and the error code of failures (see
/// [`crate::rules::CellDims`]).
pub const MAX_DIMS: usize = 10;

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

/// One cell's state beside its ring of buckets.
#[derive(Debug, Clone)]
pub struct Cell {
    key: Key,
    /// Newest step with a bucket in the ring.
    head: i64,
    /// Window sums as of `win_step` (kept incrementally by [`CellMut::window_at`]).
    win: Bucket,
    win_step: i64,
    /// The failure rate the cell's base expects, as the engine last worked it
    /// out (a cache: baselines move slowly, the lookups behind them do not).
    pub expect: f64,
    /// The product of the cell's factors, likewise.
    pub factor: f64,
    /// The step both were worked out at (`i64::MIN`: never).
    pub expect_step: i64,
}

impl Cell {
    fn new(key: Key, step: i64) -> Cell {
        Cell {
            key,
            head: step,
            win: Bucket::default(),
            win_step: i64::MIN,
            expect: 0.0,
            factor: 1.0,
            expect_step: i64::MIN,
        }
    }
}

/// The bucket of one step in a ring whose newest step is `head`.
fn bucket_of(ring: &[Bucket], head: i64, step: i64) -> Bucket {
    let len = ring.len() as i64;
    if step > head || step <= head - len {
        return Bucket::default();
    }
    ring[step.rem_euclid(len) as usize]
}

fn window_of(ring: &[Bucket], head: i64, last: i64, steps: usize) -> Bucket {
    let mut sum = Bucket::default();
    for s in (last - steps as i64 + 1)..=last {
        let b = bucket_of(ring, head, s);
        sum.n += b.n;
        sum.f += b.f;
    }
    sum
}

/// A cell, to read.
#[derive(Debug, Clone, Copy)]
pub struct CellRef<'a> {
    cell: &'a Cell,
    ring: &'a [Bucket],
}

impl std::ops::Deref for CellRef<'_> {
    type Target = Cell;
    fn deref(&self) -> &Cell {
        self.cell
    }
}

impl CellRef<'_> {
    /// The bucket of one step (zero when it has left the ring or is in the future).
    pub fn bucket(&self, step: i64) -> Bucket {
        bucket_of(self.ring, self.cell.head, step)
    }

    /// Sums over the `steps` steps ending at `last` (inclusive).
    pub fn window(&self, last: i64, steps: usize) -> Bucket {
        window_of(self.ring, self.cell.head, last, steps)
    }

    /// Newest step that has seen an event (or the step it was created at).
    pub fn head(&self) -> i64 {
        self.cell.head
    }
}

/// A cell, to change.
#[derive(Debug)]
pub struct CellMut<'a> {
    cell: &'a mut Cell,
    ring: &'a mut [Bucket],
}

impl std::ops::Deref for CellMut<'_> {
    type Target = Cell;
    fn deref(&self) -> &Cell {
        self.cell
    }
}

impl std::ops::DerefMut for CellMut<'_> {
    fn deref_mut(&mut self) -> &mut Cell {
        self.cell
    }
}

impl CellMut<'_> {
    /// The same cell, to read.
    pub fn as_ref(&self) -> CellRef<'_> {
        CellRef {
            cell: self.cell,
            ring: self.ring,
        }
    }

    fn roll_to(&mut self, step: i64) {
        if step <= self.cell.head {
            return;
        }
        let len = self.ring.len() as i64;
        let clear = (step - self.cell.head).min(len);
        for s in (step - clear + 1)..=step {
            self.ring[s.rem_euclid(len) as usize] = Bucket::default();
        }
        self.cell.head = step;
    }

    /// Adds `attempts` and `failures` at `step` (one event, or a replica's
    /// pre-aggregated share). `None` when the step is outside the ring (too
    /// old), else whether the step's bucket was empty before.
    pub fn add_counts(&mut self, step: i64, attempts: u32, failures: u32) -> Option<bool> {
        self.roll_to(step);
        let len = self.ring.len() as i64;
        if step <= self.cell.head - len {
            return None;
        }
        let b = &mut self.ring[step.rem_euclid(len) as usize];
        let first = b.n == 0;
        b.n = b.n.saturating_add(attempts);
        b.f = b.f.saturating_add(failures);
        Some(first)
    }

    /// The bucket of one step (zero when it has left the ring or is in the future).
    pub fn bucket(&self, step: i64) -> Bucket {
        bucket_of(self.ring, self.cell.head, step)
    }

    /// Sums over the `steps` steps ending at `last`, updated incrementally when
    /// called for consecutive steps (the engine's evaluation order), which turns
    /// a loop over the window into one add and one subtract. Correct because no
    /// event is ever added to a step that has already been evaluated: those are
    /// behind the watermark.
    pub fn window_at(&mut self, last: i64, steps: usize) -> Bucket {
        let c = &mut *self.cell;
        if c.win_step != i64::MIN && last == c.win_step + 1 {
            let add = bucket_of(self.ring, c.head, last);
            let drop = bucket_of(self.ring, c.head, last - steps as i64);
            c.win.n = c.win.n + add.n - drop.n;
            c.win.f = c.win.f + add.f - drop.f;
        } else if last != c.win_step {
            c.win = window_of(self.ring, c.head, last, steps);
        }
        c.win_step = last;
        c.win
    }

    /// Newest step that has seen an event (or the step it was created at).
    pub fn head(&self) -> i64 {
        self.cell.head
    }
}

/// The cells of one rule, in a slab: cell `i`'s state in `cells[i]`, its ring
/// in `rings[i * ring_len..]`. Cells come and go by the thousand per minute
/// (a wide key is close to one cell per event), so they are neither
/// allocated one by one nor scattered over the heap: a step's pass over
/// them reads memory in order, and a freed slot is reused.
#[derive(Debug)]
pub struct Cells {
    index: FxHashMap<Key, u32>,
    cells: Vec<Cell>,
    rings: Vec<Bucket>,
    /// Whether slot `i` holds a cell.
    live: Vec<bool>,
    free: Vec<u32>,
    ring_len: usize,
    /// Steps in the window.
    pub window_steps: usize,
    /// Per step still in the rings (slot `step % ring_len`), the cells that
    /// have counts in it: what a step teaches is read from those alone, not
    /// from every cell.
    touched: Vec<(i64, Vec<Key>)>,
}

impl Cells {
    /// Cells for a window of `window_steps`, accepting events up to `lookahead`
    /// steps past the step being evaluated (the allowed lateness).
    pub fn new(window_steps: usize, lookahead: usize) -> Cells {
        let ring_len = window_steps + lookahead + 1;
        Cells {
            index: FxHashMap::default(),
            cells: Vec::new(),
            rings: Vec::new(),
            live: Vec::new(),
            free: Vec::new(),
            ring_len,
            window_steps,
            touched: vec![(i64::MIN, Vec::new()); ring_len],
        }
    }

    /// How many steps past the next one to evaluate the rings hold without
    /// overwriting that step's window or the step leaving it (which
    /// [`CellMut::window_at`] subtracts).
    pub fn steps_ahead(&self) -> i64 {
        (self.ring_len - self.window_steps) as i64 - 1
    }

    fn slot_mut(&mut self, i: usize) -> CellMut<'_> {
        let r = i * self.ring_len;
        CellMut {
            cell: &mut self.cells[i],
            ring: &mut self.rings[r..r + self.ring_len],
        }
    }

    fn slot(&self, i: usize) -> CellRef<'_> {
        let r = i * self.ring_len;
        CellRef {
            cell: &self.cells[i],
            ring: &self.rings[r..r + self.ring_len],
        }
    }

    /// Counts `attempts` of cell `key` at `step`, `failures` among them. False
    /// when the step is outside the ring (too old).
    pub fn add_counts(&mut self, key: Key, step: i64, attempts: u32, failures: u32) -> bool {
        let i = match self.index.get(&key) {
            Some(&i) => i as usize,
            None => {
                let i = match self.free.pop() {
                    Some(i) => {
                        let i = i as usize;
                        self.cells[i] = Cell::new(key, step);
                        let r = i * self.ring_len;
                        self.rings[r..r + self.ring_len].fill(Bucket::default());
                        self.live[i] = true;
                        i
                    }
                    None => {
                        self.cells.push(Cell::new(key, step));
                        self.rings
                            .resize(self.rings.len() + self.ring_len, Bucket::default());
                        self.live.push(true);
                        self.cells.len() - 1
                    }
                };
                self.index.insert(key, i as u32);
                i
            }
        };
        let added = self.slot_mut(i).add_counts(step, attempts, failures);
        if added == Some(true) && attempts > 0 {
            let ring_len = self.ring_len as i64;
            let slot = &mut self.touched[step.rem_euclid(ring_len) as usize];
            if slot.0 != step {
                slot.0 = step;
                slot.1.clear();
            }
            slot.1.push(key);
        }
        added.is_some()
    }

    /// The cells with counts at `step`, while it is in the rings.
    pub fn touched(&self, step: i64) -> &[Key] {
        match &self.touched[step.rem_euclid(self.ring_len as i64) as usize] {
            (s, keys) if *s == step => keys,
            _ => &[],
        }
    }

    /// Active cells.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when there are no cells.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Visits every cell, in slot order; the closure returns false to evict it.
    pub fn retain(&mut self, mut f: impl FnMut(&Key, &mut CellMut<'_>) -> bool) {
        for i in 0..self.cells.len() {
            if !self.live[i] {
                continue;
            }
            let key = self.cells[i].key;
            let keep = f(&key, &mut self.slot_mut(i));
            if !keep {
                self.live[i] = false;
                self.index.remove(&key);
                self.free.push(i as u32);
            }
        }
        // Many free slots at the end (a burst of cells gone): give the memory back.
        while self.live.last() == Some(&false) && self.free.len() > self.cells.len() / 2 {
            let i = self.cells.len() - 1;
            self.cells.pop();
            self.live.pop();
            self.rings.truncate(i * self.ring_len);
            self.free.retain(|&f| f as usize != i);
        }
    }

    /// One cell.
    pub fn get(&self, key: &Key) -> Option<CellRef<'_>> {
        self.index.get(key).map(|&i| self.slot(i as usize))
    }

    /// Every cell, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, CellRef<'_>)> {
        (0..self.cells.len())
            .filter(|&i| self.live[i])
            .map(|i| (&self.cells[i].key, self.slot(i)))
    }

    /// Approximate heap bytes per cell (for sizing reports): its state, its
    /// ring, its index entry.
    pub fn bytes_per_cell(&self) -> usize {
        std::mem::size_of::<Cell>()
            + self.ring_len * std::mem::size_of::<Bucket>()
            + 1
            + std::mem::size_of::<(Key, u32)>()
            + 8
    }
}

/// The final buckets of the last evaluated steps, per cell with counts in
/// them: what an incident looks back on to find when its failures began and
/// to draw the traffic before it, further back than the rings reach. A step
/// is recorded once evaluated (no event reaches it after that, see
/// [`CellMut::window_at`]). Bounded twice: at most `len` steps, and at most
/// `cap` entries, past which the oldest steps go first (the look-back
/// shortens, the newest step is always kept).
#[derive(Debug)]
pub struct History {
    steps: std::collections::VecDeque<(i64, Vec<(Key, Bucket)>)>,
    len: usize,
    cap: usize,
    entries: usize,
}

impl History {
    /// Room for `len` steps and `cap` entries in all.
    pub fn new(len: usize, cap: usize) -> History {
        History {
            steps: std::collections::VecDeque::new(),
            len: len.max(1),
            cap: cap.max(1),
            entries: 0,
        }
    }

    /// Records the buckets of `step` of the cells touched in it; steps not
    /// after the newest recorded one are ignored.
    pub fn record(&mut self, cells: &Cells, step: i64) {
        if self.steps.back().is_some_and(|(s, _)| *s >= step) {
            return;
        }
        let keys = cells.touched(step);
        while !self.steps.is_empty()
            && (self.steps.len() >= self.len || self.entries + keys.len() > self.cap)
        {
            if let Some((_, old)) = self.steps.pop_front() {
                self.entries -= old.len();
            }
        }
        let mut row: Vec<(Key, Bucket)> = Vec::with_capacity(keys.len());
        row.extend(keys.iter().filter_map(|k| {
            let b = cells.get(k)?.bucket(step);
            (b.n > 0).then_some((*k, b))
        }));
        self.entries += row.len();
        self.steps.push_back((step, row));
    }

    /// The recorded buckets of `step` (empty when not recorded or gone).
    pub fn step(&self, step: i64) -> &[(Key, Bucket)] {
        // Steps are recorded in order, not always every one (a gap in
        // event time is skipped).
        self.steps
            .binary_search_by_key(&step, |(s, _)| *s)
            .map_or(&[], |i| self.steps[i].1.as_slice())
    }

    /// Entries held, over every step.
    pub fn entries(&self) -> usize {
        self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn window_sums_only_its_steps() {
        let mut c = Cells::new(4, 2);
        let k = [1, 2, 0, 0, 0, 0, 0, 0, 0, 0];
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
        let k: Key = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        for s in 0..40i64 {
            // Events arrive up to 3 steps ahead of the evaluated step.
            for a in 0..=(s % 3) {
                c.add_counts(k, s + 3, 1, u32::from(a == 0));
            }
            let full = c.get(&k).unwrap().window(s, 4);
            let mut incremental = None;
            c.retain(|_, cell| {
                incremental = Some(cell.window_at(s, 4));
                true
            });
            assert_eq!(incremental, Some(full), "step {s}");
        }
    }

    #[test]
    fn evicted_slots_are_reused_and_start_empty() {
        let mut c = Cells::new(2, 1);
        let a: Key = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let b: Key = [2, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        c.add_counts(a, 5, 3, 1);
        c.retain(|_, _| false);
        assert!(c.is_empty() && c.get(&a).is_none());
        c.add_counts(b, 6, 1, 0);
        let cell = c.get(&b).unwrap();
        assert_eq!(cell.window(6, 2), Bucket { n: 1, f: 0 });
        assert_eq!(c.touched(6), &[b]);
        assert_eq!(c.iter().count(), 1);
    }

    #[test]
    fn too_old_events_are_refused() {
        let mut c = Cells::new(2, 1);
        let k: Key = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
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
            let k: Key = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
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

    #[test]
    fn history_keeps_the_last_steps_within_its_bounds() {
        let mut cells = Cells::new(2, 1);
        let mut h = History::new(3, 5);
        let k = |i: u32| -> Key {
            let mut k = [0; MAX_DIMS];
            k[0] = i;
            k
        };
        for s in 0..6i64 {
            // Step s touches s % 3 + 1 cells.
            for i in 0..(s % 3 + 1) as u32 {
                cells.add_counts(k(i), s, 2, 1);
            }
            h.record(&cells, s);
        }
        // Steps 3, 4, 5 hold 1 + 2 + 3 = 6 entries, over the cap of 5: step 3 went.
        assert!(h.step(3).is_empty());
        assert_eq!(h.step(4).len(), 2);
        assert_eq!(h.step(5).len(), 3);
        assert_eq!(h.step(5)[0].1, Bucket { n: 2, f: 1 });
        assert_eq!(h.entries(), 5);
        // Past the ring of the cells, still there; recording a step twice counts once.
        cells.add_counts(k(0), 9, 1, 0);
        h.record(&cells, 9);
        h.record(&cells, 9);
        assert_eq!(h.step(5).len(), 3);
        assert_eq!(h.step(9), &[(k(0), Bucket { n: 1, f: 0 })]);
        assert!(h.step(7).is_empty());
    }
}
