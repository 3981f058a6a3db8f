//! Why an element did or did not fire at one step (`faultline explain`).

use std::collections::BTreeMap;

use super::evaluate::{leaf, rates, LeafShape};
use super::state::base_key;
use super::Engine;
use crate::detect::directed_llr;
use crate::localize::{localize, Element, Leaf};
use crate::window::MAX_DIMS;

/// One condition of a rule, as [`Engine::explain`] reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Condition {
    /// `volume_floor`, `min_failures`, `lift`, `rate_increase`, `beyond_edge`,
    /// `volume_ratio` or `significance`.
    pub name: &'static str,
    /// What the rule requires, e.g. `>= 40`.
    pub required: String,
    /// The element's value at the step.
    pub actual: f64,
    /// Whether it held.
    pub held: bool,
}

/// Why an element did or did not fire at one evaluation step (`faultline explain`).
///
/// Numbers are the element's totals over the window ending with the step, with
/// the baselines as they stood before the step taught them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Explanation {
    /// The rule.
    pub rule: String,
    /// The element's dimensions.
    pub dims: BTreeMap<String, String>,
    /// Start of the window, epoch ms.
    pub window_start_ms: i64,
    /// End of the step (and of the window), epoch ms.
    pub step_end_ms: i64,
    /// Whether the rule had its warm-up of history (nothing is tested before).
    pub warm: bool,
    /// Attempts in the window (rate rules) or expected events (volume rules).
    pub attempts: f64,
    /// Failures in the window (rate rules) or observed events (volume rules).
    pub failures: f64,
    /// Expected failures (attempts x baseline) or expected events.
    pub expected: f64,
    /// Expected / attempts (rate rules; 0 for volume rules).
    pub baseline_rate: f64,
    /// The directed Poisson deviance of observed vs expected.
    pub statistic: f64,
    /// The deviance needed at this step (Bonferroni over `tested`).
    pub threshold: f64,
    /// Elements the localizer examined at this step.
    pub tested: usize,
    /// Each condition, held or failed.
    pub conditions: Vec<Condition>,
    /// Whether the localizer chose this element as a cause at this step.
    pub chosen: bool,
}

impl Engine {
    /// Explains `dims` of rule `rule` at the step containing `at_ms`, from the
    /// engine's current state: call it once every step before that one has been
    /// evaluated (e.g. after [`Engine::advance_to`] the step's start minus one ms)
    /// and before the step itself is. Pure: the engine is not changed.
    pub fn explain(
        &self,
        rule: &str,
        dims: &BTreeMap<String, String>,
        at_ms: i64,
    ) -> Result<Explanation, String> {
        let rs = self
            .rules
            .iter()
            .find(|r| r.rule.rule.name == rule)
            .ok_or_else(|| format!("no rule named `{rule}`"))?;
        let mut el = Element {
            mask: 0,
            key: [0; MAX_DIMS],
            real: 0.0,
            predict: 0.0,
            volume: 0.0,
            llr: 0.0,
            score: 0.0,
            implied: 0,
        };
        for (k, v) in dims {
            let d = rs
                .rule
                .cells
                .dims
                .iter()
                .take(rs.rule.cells.search)
                .position(|d| d.name() == *k)
                .ok_or_else(|| format!("rule `{rule}` does not localize over `{k}`"))?;
            // Ids are dense; a linear scan keeps the interner untouched.
            let id = (1..=self.interner.len() as u32)
                .find(|&id| self.interner.value(id) == v)
                .ok_or_else(|| format!("no event before that time has {k}={v}"))?;
            el.mask |= 1 << d;
            el.key[d] = id;
        }
        let s = at_ms.div_euclid(rs.step_ms);
        let nb = rs.cells.window_steps;
        // The leaves exactly as `evaluate` builds them.
        let shape = LeafShape::of(rs, s);
        let leaves: Vec<Leaf> = rs
            .cells
            .iter()
            .filter_map(|(key, cell)| {
                if rs.volume_rule() {
                    return leaf(
                        &shape,
                        key,
                        cell,
                        cell.window(s, nb),
                        rs.bases.get(key),
                        (0.0, 1.0),
                    );
                }
                let (r, _) = rates(&shape, key, cell, &rs.bases, &rs.factors);
                let base = rs.bases.get(&base_key(key, rs.rule.cells.base));
                leaf(&shape, key, cell, cell.window(s, nb), base, r)
            })
            .collect();
        let c = rs.criteria;
        let loc = localize(
            rs.rule.cells.search,
            &leaves,
            &c,
            &rs.rule.localize_limits(),
        );
        let (mut real, mut predict, mut volume) = (0.0, 0.0, 0.0);
        for l in leaves.iter().filter(|l| el.contains(&l.key)) {
            real += l.real;
            predict += l.predict;
            volume += l.volume;
        }
        (el.real, el.predict, el.volume) = (real, predict, volume);
        let statistic = directed_llr(el.real, el.predict, c.direction);
        let threshold = if loc.tested > 0 {
            loc.threshold
        } else {
            crate::detect::llr_threshold(c.alpha, 1)
        };
        let cond = |name, required: String, actual: f64, held: bool| Condition {
            name,
            required,
            actual,
            held,
        };
        let ratio = if el.predict > 0.0 {
            el.real / el.predict
        } else {
            f64::INFINITY
        };
        let mut conditions = vec![cond(
            "volume_floor",
            format!(">= {}", c.min_volume),
            el.volume,
            el.volume >= c.min_volume,
        )];
        if rs.volume_rule() {
            conditions.push(cond(
                "volume_ratio",
                format!("<= {}", c.ratio),
                ratio,
                el.predict > 0.0 && el.real <= c.ratio * el.predict,
            ));
        } else {
            let increase = if el.volume > 0.0 {
                (el.real - el.predict) / el.volume
            } else {
                0.0
            };
            conditions.push(cond(
                "min_failures",
                format!(">= {}", c.min_real),
                el.real,
                el.real >= c.min_real,
            ));
            conditions.push(cond(
                "lift",
                format!(">= {}", c.ratio),
                ratio,
                el.real >= c.ratio * el.predict.max(f64::MIN_POSITIVE),
            ));
            conditions.push(cond(
                "rate_increase",
                format!(">= {}", c.min_rate_delta),
                increase,
                el.volume > 0.0 && increase >= c.min_rate_delta,
            ));
            let edge = c.edge_deviance(el.real, el.predict, el.volume);
            conditions.push(cond(
                "beyond_edge",
                format!(">= {:.3}", crate::detect::EDGE_DEVIANCE),
                edge,
                c.beyond_the_edge(el.real, el.predict, el.volume),
            ));
        }
        conditions.push(cond(
            "significance",
            format!(">= {threshold:.3}"),
            statistic,
            statistic >= threshold,
        ));
        let baseline_rate = if !rs.volume_rule() && el.volume > 0.0 {
            el.predict / el.volume
        } else {
            0.0
        };
        Ok(Explanation {
            rule: rule.to_string(),
            dims: dims.clone(),
            window_start_ms: (s + 1 - nb as i64) * rs.step_ms,
            step_end_ms: (s + 1) * rs.step_ms,
            warm: rs.first_step.is_some_and(|f| s - f >= rs.warmup_steps),
            attempts: el.volume,
            failures: el.real,
            expected: el.predict,
            baseline_rate,
            statistic,
            threshold,
            tested: loc.tested,
            conditions,
            chosen: loc.causes.iter().any(|x| x.same_as(&el)),
        })
    }
}
