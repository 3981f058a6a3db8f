//! Pre-aggregated counts: what a replica publishes instead of its events.
//!
//! A replica maps each event it consumes to the cells of every rule that
//! matches it (the same mapping [`Engine::ingest`] makes) and adds it to a
//! per-step count: rule, step, the cell's dimension values, attempts and
//! failures. Every flush it publishes what it counted as one [`Partial`] and
//! starts over, so a partial holds one entry per cell and step touched since the
//! last flush, whatever the event rate. The detector adds the partials of every
//! replica into one engine ([`Partial::count_into`]), which then runs exactly as it
//! does on events.
//!
//! On the wire a partial is compact JSON: cells are arrays
//! `[step, attempts, failures, [value or null, ...]]`.

use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::engine::{Engine, Skip};
use crate::event::Event;
use crate::incident::Change;
use crate::ingest::dedupe::Dedupe;
use crate::rules::RuleSet;
use crate::window::{Bucket, Interner, Key, MAX_DIMS, NONE_ID};

/// The wire version this build writes and reads.
pub const VERSION: u32 = 1;

/// Cells per published message at most; a flush with more is split.
pub const MAX_CELLS_PER_MESSAGE: usize = 4_000;

/// One replica's counts since its last flush.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partial {
    /// Wire version ([`VERSION`]).
    pub v: u32,
    /// The replica that counted them.
    pub node: String,
    /// The replica's flush number (with `node` and its boot time, the
    /// message's `Nats-Msg-Id`).
    pub seq: u64,
    /// Newest event time the replica has counted, epoch ms; `None` before its
    /// first event. Moves the detector's watermark when `at` is absent.
    pub max_ts: Option<i64>,
    /// The replica's wall clock when it flushed, epoch ms: it had published
    /// everything it received before then. The detector's clock is the
    /// earliest of the live replicas' ([`CountsClock`]); absent from builds
    /// before it (their `max_ts` moves time instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<i64>,
    /// The replica's last flush (it is stopping): the detector's clock does
    /// not wait for it any more.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub last: bool,
    /// Counts per rule.
    pub rules: Vec<RulePart>,
}

/// One rule's cells in a [`Partial`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RulePart {
    /// The rule's name.
    pub rule: String,
    /// Its step, ms: the detector skips a part whose step differs from its own
    /// definition of the rule (replicas mid-reload).
    pub step_ms: i64,
    /// The cells.
    pub cells: Vec<CellCount>,
}

/// `[step, attempts, failures, values]`: one cell's counts in one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellCount(pub i64, pub u32, pub u32, pub Vec<Option<String>>);

/// What [`Partial::count_into`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fed {
    /// Events counted (attempts summed).
    pub accepted: u64,
    /// Events in steps the detector had already evaluated.
    pub late: u64,
    /// Cells of rule parts the detector does not know or defines differently.
    pub mismatched: u64,
}

impl Partial {
    /// Adds every cell to `engine`, then moves its watermark to `max_ts`.
    pub fn count_into(&self, engine: &mut Engine, out: &mut Vec<Change>) -> Fed {
        let mut fed = Fed::default();
        let mut values: Vec<Option<&str>> = Vec::with_capacity(MAX_DIMS);
        for part in &self.rules {
            let shape = engine
                .rule_index(&part.rule)
                .and_then(|i| Some((i, engine.rule_shape(i)?)));
            let Some((index, (step_ms, dims))) = shape else {
                fed.mismatched += part.cells.len() as u64;
                continue;
            };
            if step_ms != part.step_ms {
                fed.mismatched += part.cells.len() as u64;
                continue;
            }
            for CellCount(step, n, f, vals) in &part.cells {
                if vals.len() != dims {
                    fed.mismatched += 1;
                    continue;
                }
                values.clear();
                values.extend(vals.iter().map(|v| v.as_deref()));
                match engine.ingest_counts(index, &values, *step, *n, *f, out) {
                    Ok(()) => fed.accepted += u64::from(*n),
                    Err(_) => fed.late += u64::from(*n),
                }
            }
        }
        if let Some(ts) = self.max_ts {
            engine.observe(ts, out);
        }
        fed
    }

    /// Cells held, across rules.
    pub fn cells(&self) -> usize {
        self.rules.iter().map(|r| r.cells.len()).sum()
    }

    /// Splits into messages of at most `max_cells` cells each (at least one
    /// message, so a heartbeat with no cells still carries `max_ts`).
    pub fn split(self, max_cells: usize) -> Vec<Partial> {
        let max_cells = max_cells.max(1);
        if self.cells() <= max_cells {
            return vec![self];
        }
        let Partial {
            v,
            node,
            seq,
            max_ts,
            at,
            last,
            rules,
        } = self;
        let mut out: Vec<Partial> = Vec::new();
        let mut room = 0;
        for part in rules {
            let mut cells = part.cells.into_iter().peekable();
            while cells.peek().is_some() {
                if room == 0 {
                    out.push(Partial {
                        v,
                        node: node.clone(),
                        seq,
                        max_ts: None,
                        at: None,
                        last: false,
                        rules: Vec::new(),
                    });
                    room = max_cells;
                }
                let chunk: Vec<CellCount> = cells.by_ref().take(room).collect();
                room -= chunk.len();
                out.last_mut().expect("pushed above").rules.push(RulePart {
                    rule: part.rule.clone(),
                    step_ms: part.step_ms,
                    cells: chunk,
                });
            }
        }
        // Time moves only once every chunk is counted.
        if let Some(last_part) = out.last_mut() {
            last_part.max_ts = max_ts;
            last_part.at = at;
            last_part.last = last;
        }
        out
    }
}

/// A replica's running counts: events in, [`Partial`]s out.
pub struct PreAggregator {
    rules: Arc<RuleSet>,
    interner: Interner,
    counts: FxHashMap<(u16, i64, Key), Bucket>,
    dedupe: Dedupe,
    max_ts: Option<i64>,
    seq: u64,
    node: String,
}

impl std::fmt::Debug for PreAggregator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreAggregator")
            .field("node", &self.node)
            .field("cells", &self.counts.len())
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl PreAggregator {
    /// Counts for `rules`, as replica `node`; event ids are remembered for
    /// `dedupe_horizon_ms` of event time.
    pub fn new(rules: Arc<RuleSet>, node: &str, dedupe_horizon_ms: i64) -> PreAggregator {
        PreAggregator {
            rules,
            interner: Interner::default(),
            counts: FxHashMap::default(),
            dedupe: Dedupe::new(dedupe_horizon_ms),
            max_ts: None,
            seq: 0,
            node: node.to_string(),
        }
    }

    /// Counts one validated event; a repeat of an id seen within the horizon
    /// (on this replica) is skipped.
    pub fn add(&mut self, e: &Event) -> Result<(), Skip> {
        if self.dedupe.check(&e.id, e.ts_ms) {
            return Err(Skip::Duplicate);
        }
        for (i, rule) in self.rules.rules.iter().enumerate() {
            if !rule.matches(e) {
                continue;
            }
            let failure = rule.is_failure(e);
            let mut key: Key = [NONE_ID; MAX_DIMS];
            for (slot, v) in key.iter_mut().zip(rule.cells.values(e, failure)) {
                *slot = self.interner.intern(v);
            }
            let step = e.ts_ms.div_euclid(rule.step_ms());
            let b = self.counts.entry((i as u16, step, key)).or_default();
            b.n = b.n.saturating_add(1);
            b.f = b.f.saturating_add(failure as u32);
        }
        self.max_ts = Some(self.max_ts.map_or(e.ts_ms, |m| m.max(e.ts_ms)));
        Ok(())
    }

    /// True when nothing was counted since the last take.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Counts with `rules` from now on (call right after a take, so no cell
    /// is counted under one definition and sent under another).
    pub fn set_rules(&mut self, rules: Arc<RuleSet>) {
        self.rules = rules;
    }

    /// The rules counted with.
    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// Everything counted since the last take, as one partial (empty of cells
    /// when nothing came: a heartbeat that still moves time), and starts over.
    pub fn take(&mut self) -> Partial {
        self.seq += 1;
        let mut by_rule: Vec<Vec<CellCount>> = vec![Vec::new(); self.rules.rules.len()];
        for ((rule, step, key), b) in self.counts.drain() {
            let dims = self.rules.rules[rule as usize].cells.dims.len();
            let values = key[..dims]
                .iter()
                .map(|&id| (id != NONE_ID).then(|| self.interner.value(id).to_string()))
                .collect();
            by_rule[rule as usize].push(CellCount(step, b.n, b.f, values));
        }
        // Values are looked up per flush: the table never outgrows one flush.
        self.interner = Interner::default();
        let rules = self
            .rules
            .rules
            .iter()
            .zip(by_rule)
            .filter(|(_, cells)| !cells.is_empty())
            .map(|(r, mut cells)| {
                cells.sort_unstable_by_key(|c| c.0);
                RulePart {
                    rule: r.rule.name.clone(),
                    step_ms: r.step_ms(),
                    cells,
                }
            })
            .collect();
        Partial {
            v: VERSION,
            node: self.node.clone(),
            seq: self.seq,
            max_ts: self.max_ts,
            at: None,
            last: false,
            rules,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineOptions;
    use crate::ingest::generator::{Generator, Scenario};

    fn events(seed: u64) -> Vec<Event> {
        let scenario = Scenario::standard(seed, 3 * 3600 * 1000, 20.0);
        Generator::new(&scenario)
            .expect("a valid scenario")
            .filter_map(|line| crate::event::parse(line.text.as_bytes()).ok())
            .collect()
    }

    /// Incidents as (rule, root cause, opened, resolved) from a run.
    fn summary(changes: &[Change]) -> Vec<String> {
        let mut v: Vec<String> = changes
            .iter()
            .map(|c| {
                let i = c.transition.incident();
                let kind = match &c.transition {
                    crate::incident::Transition::Opened(_) => "opened",
                    crate::incident::Transition::Updated(_) => "updated",
                    crate::incident::Transition::Resolved(_) => "resolved",
                };
                format!("{kind} {} {} {}", i.id, i.rule, i.updated_at)
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn three_replicas_partials_give_the_incidents_of_one_engine_on_the_events() {
        let rules = Arc::new(RuleSet::embedded());
        let opts = EngineOptions::default();
        let evs = events(5);
        assert!(evs.len() > 100_000);

        let mut direct = Engine::new(&rules, &opts);
        let mut want = Vec::new();
        for e in &evs {
            let _ = direct.ingest(e, &mut want);
        }
        direct.finish(&mut want);
        assert!(!want.is_empty(), "the scenario has faults");

        // Events dealt to three replicas by a hash of their id (so a repeated
        // event meets the replica that saw it first, as JetStream's
        // `Nats-Msg-Id` window does for the shared consumer), each flushing
        // every 150 events (7.5 s of traffic, well within the allowed lateness);
        // the detector takes their partials in flush order.
        let mut replicas: Vec<PreAggregator> = (0..3)
            .map(|i| PreAggregator::new(rules.clone(), &format!("r{i}"), opts.dedupe_horizon_ms))
            .collect();
        let mut merged = Engine::new(&rules, &opts);
        let mut got = Vec::new();
        let mut fed = Fed::default();
        for (n, e) in evs.iter().enumerate() {
            let r =
                e.id.bytes()
                    .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
            let _ = replicas[r % 3].add(e);
            if n % 150 == 149 {
                for r in &mut replicas {
                    for p in r.take().split(MAX_CELLS_PER_MESSAGE) {
                        let wire = serde_json::to_vec(&p).unwrap();
                        let back: Partial = serde_json::from_slice(&wire).unwrap();
                        let f = back.count_into(&mut merged, &mut got);
                        fed.accepted += f.accepted;
                        fed.late += f.late;
                        fed.mismatched += f.mismatched;
                    }
                }
            }
        }
        for r in &mut replicas {
            r.take().count_into(&mut merged, &mut got);
        }
        merged.finish(&mut got);
        assert_eq!(fed.mismatched, 0);
        let (got, want) = (summary(&got), summary(&want));
        let only_got: Vec<_> = got.iter().filter(|g| !want.contains(g)).collect();
        let only_want: Vec<_> = want.iter().filter(|w| !got.contains(w)).collect();
        assert!(
            only_got.is_empty() && only_want.is_empty() && got.len() == want.len(),
            "only merged: {only_got:?}\nonly direct: {only_want:?}\n{} vs {}",
            got.len(),
            want.len()
        );
    }

    #[test]
    fn a_replica_drops_repeats_and_counts_per_cell_and_step() {
        let rules = Arc::new(RuleSet::embedded());
        let evs = events(1);
        let mut seen = std::collections::HashSet::new();
        let evs: Vec<Event> = evs
            .into_iter()
            .filter(|e| seen.insert(e.id.clone()))
            .collect();
        let mut agg = PreAggregator::new(rules.clone(), "r", 60_000);
        for e in evs.iter().take(1000) {
            agg.add(e).unwrap();
        }
        assert_eq!(agg.add(&evs[10]), Err(Skip::Duplicate));
        let p = agg.take();
        let counted: u64 = p
            .rules
            .iter()
            .flat_map(|r| &r.cells)
            .map(|c| u64::from(c.1))
            .sum();
        let matching: u64 = evs
            .iter()
            .take(1000)
            .map(|e| rules.rules.iter().filter(|r| r.matches(e)).count() as u64)
            .sum();
        assert_eq!(counted, matching);
        assert_eq!(p.max_ts, evs.iter().take(1000).map(|e| e.ts_ms).max());
        assert!(agg.is_empty());
        // A heartbeat after nothing new still carries time.
        let beat = agg.take();
        assert_eq!(beat.cells(), 0);
        assert_eq!(beat.max_ts, p.max_ts);
        assert_eq!(beat.seq, p.seq + 1);
    }

    #[test]
    fn splitting_keeps_every_cell_and_moves_time_last() {
        let p = Partial {
            v: VERSION,
            node: "r".into(),
            seq: 7,
            max_ts: Some(99),
            at: Some(120),
            last: true,
            rules: vec![
                RulePart {
                    rule: "a".into(),
                    step_ms: 1000,
                    cells: (0..5).map(|i| CellCount(i, 1, 0, vec![None])).collect(),
                },
                RulePart {
                    rule: "b".into(),
                    step_ms: 1000,
                    cells: (0..4).map(|i| CellCount(i, 2, 1, vec![])).collect(),
                },
            ],
        };
        let parts = p.clone().split(3);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|q| q.cells() <= 3));
        assert_eq!(parts.iter().map(Partial::cells).sum::<usize>(), 9);
        assert_eq!(
            (parts[2].max_ts, parts[2].at, parts[2].last),
            (Some(99), Some(120), true)
        );
        assert!(parts[..2]
            .iter()
            .all(|q| q.max_ts.is_none() && q.at.is_none() && !q.last));
        assert_eq!(p.clone().split(100), vec![p]);
    }

    #[test]
    fn unknown_rules_and_wrong_shapes_are_not_counted() {
        let rules = RuleSet::embedded();
        let mut engine = Engine::new(&rules, &EngineOptions::default());
        let rule = &rules.rules[0];
        let p = Partial {
            v: VERSION,
            node: "r".into(),
            seq: 1,
            max_ts: None,
            at: None,
            last: false,
            rules: vec![
                RulePart {
                    rule: "no_such_rule".into(),
                    step_ms: rule.step_ms(),
                    cells: vec![CellCount(1, 5, 1, vec![])],
                },
                RulePart {
                    rule: rule.rule.name.clone(),
                    step_ms: rule.step_ms() * 2,
                    cells: vec![CellCount(1, 5, 1, vec![None; rule.cells.dims.len()])],
                },
                RulePart {
                    rule: rule.rule.name.clone(),
                    step_ms: rule.step_ms(),
                    cells: vec![
                        CellCount(1, 5, 1, vec![None; rule.cells.dims.len() + 1]),
                        CellCount(1, 5, 1, vec![None; rule.cells.dims.len()]),
                    ],
                },
            ],
        };
        let fed = p.count_into(&mut engine, &mut Vec::new());
        assert_eq!(fed.mismatched, 3);
        assert_eq!(fed.accepted, 5);
    }
}
