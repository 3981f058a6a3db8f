//! The own counts of an incident's elements, step by step, for its episode
//! numbers (`began_at`, `impact`, `error_codes`: see [`crate::incident::Episode`]).

use rustc_hash::FxHashMap;

use super::state::RuleState;
use crate::incident::StepCounts;
use crate::localize::{Element, Leaf};
use crate::window::Interner;

/// The own counts of the `steps` steps ending with step `s` (oldest first)
/// of the cells within any of `elements`, from the rule's history (steps it
/// no longer holds count nothing). A cell's expectation is its leaf's rate
/// now, or for a cell with nothing in the window the elements' rate
/// together; volume rules expect the elements' window's expected events
/// spread evenly over its steps. `share` is the usual share of each error
/// code among failures, by which a code's expected failures are the step's.
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
    let mut rate: FxHashMap<&crate::window::Key, f64> = FxHashMap::default();
    let (mut predict, mut attempts) = (0.0, 0.0);
    for l in leaves.iter().filter(|l| within(&l.key)) {
        predict += l.predict;
        attempts += l.volume;
        if l.volume > 0.0 {
            rate.insert(&l.key, l.predict / l.volume);
        }
    }
    let overall = if attempts > 0.0 {
        predict / attempts
    } else {
        0.0
    };
    let mut out = vec![StepCounts::default(); steps];
    for (i, o) in out.iter_mut().enumerate() {
        for (key, b) in rs.history.step(first + i as i64) {
            if !within(key) {
                continue;
            }
            o.events += u64::from(b.n);
            if !volume {
                o.failures += u64::from(b.f);
                o.expected += f64::from(b.n) * rate.get(key).copied().unwrap_or(overall);
            }
        }
        if volume {
            o.expected = predict / nb;
        }
    }
    if volume || !rs.rule.cells.code {
        return out;
    }
    let slot = rs.rule.cells.search;
    for (i, o) in out.iter_mut().enumerate() {
        let mut by_code: FxHashMap<u32, u64> = FxHashMap::default();
        for (key, b) in rs.code_history.step(first + i as i64) {
            if b.f > 0 && within(key) {
                *by_code.entry(key[slot]).or_default() += u64::from(b.f);
            }
        }
        let mut codes: Vec<(String, u64, f64)> = by_code
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
