//! The own counts of an incident's elements, step by step, for its episode
//! numbers (`began_at`, `impact`, `error_codes`: see [`crate::incident::Episode`]).

use rustc_hash::FxHashMap;

use super::state::RuleState;
use crate::incident::StepCounts;
use crate::localize::{Element, Leaf};
use crate::window::Interner;

/// The own counts of the `steps` steps ending with step `s` (oldest first)
/// of the cells within any of `elements`. A cell's expectation is its
/// window's (the leaf's rate, or its expected events spread evenly over the
/// window's steps); `share` is the usual share of each error code among
/// failures, by which a code's expected failures are the step's.
pub(super) fn step_counts(
    rs: &RuleState,
    leaves: &[Leaf],
    interner: &Interner,
    share: &FxHashMap<u32, f64>,
    (s, steps): (i64, usize),
    elements: &[Element],
) -> Vec<StepCounts> {
    let volume = rs.volume_rule();
    let nb = rs.cells.window_steps.max(1) as f64;
    let within = |key: &crate::window::Key| elements.iter().any(|e| e.contains(key));
    let first = s - steps as i64 + 1;
    let mut out = vec![StepCounts::default(); steps];
    for l in leaves.iter().filter(|l| within(&l.key)) {
        let Some(cell) = rs.cells.get(&l.key) else {
            continue;
        };
        let rate = if l.volume > 0.0 {
            l.predict / l.volume
        } else {
            0.0
        };
        for (i, o) in out.iter_mut().enumerate() {
            let b = cell.bucket(first + i as i64);
            o.events += u64::from(b.n);
            if volume {
                o.expected += l.predict / nb;
            } else {
                o.failures += u64::from(b.f);
                o.expected += f64::from(b.n) * rate;
            }
        }
    }
    if volume || !rs.rule.cells.code {
        return out;
    }
    let slot = rs.rule.cells.search;
    let mut by_code: Vec<FxHashMap<u32, u64>> = vec![FxHashMap::default(); steps];
    for (key, cell) in rs.codes.iter().filter(|(k, _)| within(k)) {
        for (i, m) in by_code.iter_mut().enumerate() {
            let f = cell.bucket(first + i as i64).f;
            if f > 0 {
                *m.entry(key[slot]).or_default() += u64::from(f);
            }
        }
    }
    for (o, m) in out.iter_mut().zip(by_code) {
        let mut codes: Vec<(String, u64, f64)> = m
            .into_iter()
            .map(|(c, f)| {
                let expected = o.expected * share.get(&c).copied().unwrap_or(0.0);
                (interner.value(c).to_string(), f, expected)
            })
            .collect();
        codes.sort_by(|a, b| a.0.cmp(&b.0));
        o.codes = codes;
    }
    out
}
