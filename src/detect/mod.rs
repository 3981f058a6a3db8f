//! Statistics: learned baselines, the excess test and its false-alarm control.
//!
//! Detection works on counts, not ratios: a cell with `n` attempts and a learned
//! baseline failure rate `p` expects `n * p` failures. Observed failures far above
//! that, in a way a Poisson model of the baseline cannot explain, are evidence.
//! The test statistic is the Poisson log-likelihood ratio (deviance)
//! `G = 2 (x ln(x/e) - (x - e))`, whose signed root is approximately standard
//! normal under the baseline. It is the same statistic the localizer maximizes,
//! so "which element is anomalous" and "is it anomalous" agree.
//!
//! False alarms are controlled per evaluation step across every element the
//! localizer examined (Bonferroni over the count tested): with `m` elements and a
//! rule's `false_alarm_rate` alpha, an element needs `G >= z(alpha / m)^2`.
//! On top of significance, floors keep tiny or uninteresting cells quiet: volume,
//! failure count, lift over baseline and absolute rate increase.

use statrs::distribution::{ContinuousCDF, Normal};

pub mod season;

/// Which way counts must deviate to matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// More than expected (failures).
    Up,
    /// Fewer than expected (volume drops).
    Down,
}

/// Poisson deviance of observing `x` when `e` was expected: `2 (x ln(x/e) - (x - e))`.
/// Zero when `e <= 0` (nothing can be judged without an expectation).
pub fn poisson_llr(x: f64, e: f64) -> f64 {
    if e <= 0.0 || !e.is_finite() || !x.is_finite() {
        return 0.0;
    }
    let x = x.max(0.0);
    let g = if x == 0.0 {
        2.0 * e
    } else {
        2.0 * (x * (x / e).ln() - (x - e))
    };
    g.max(0.0)
}

/// The deviance counted only in the given direction (0 when the deviation goes the other way).
pub fn directed_llr(x: f64, e: f64, dir: Direction) -> f64 {
    let right_way = match dir {
        Direction::Up => x > e,
        Direction::Down => x < e,
    };
    if right_way {
        poisson_llr(x, e)
    } else {
        0.0
    }
}

/// Deviance by which failures must exceed a rule's edge of normal (one-sided
/// 95 %, z = 1.645): the floors are then a boundary the counts must clear,
/// not one they may touch by chance.
pub const EDGE_DEVIANCE: f64 = 1.645 * 1.645;

/// The deviance an element needs for a one-sided false-alarm probability `alpha`
/// shared among `tests` elements (Bonferroni): `z(1 - alpha/tests)^2`.
pub fn llr_threshold(alpha: f64, tests: usize) -> f64 {
    let tests = tests.max(1) as f64;
    let p = (alpha / tests).clamp(1e-300, 0.5);
    // statrs' inverse CDF is accurate far into the tail; fall back to a bound.
    let z = Normal::standard().inverse_cdf(1.0 - p);
    let z = if z.is_finite() {
        z
    } else {
        (-2.0 * p.ln()).sqrt()
    };
    z * z
}

/// Thresholds an element must pass, in the localizer's generic terms:
/// `real` observed, `predict` expected, `volume` the size of the element.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Criteria {
    /// Which way is anomalous.
    pub direction: Direction,
    /// Volume floor (attempts, or expected events for volume rules).
    pub min_volume: f64,
    /// Up: fewest observed (failures). Down: unused.
    pub min_real: f64,
    /// Up: `real / predict` at least this (lift). Down: `real / predict` at most this.
    pub ratio: f64,
    /// Up: `(real - predict) / volume` at least this (absolute rate increase).
    pub min_rate_delta: f64,
    /// False-alarm probability per evaluation across all elements tested.
    pub alpha: f64,
}

impl Criteria {
    /// Floors only (volume, count, lift, rate), without significance.
    pub fn passes_floors(&self, real: f64, predict: f64, volume: f64) -> bool {
        if volume < self.min_volume || predict <= 0.0 && self.direction == Direction::Down {
            return false;
        }
        match self.direction {
            Direction::Up => {
                real >= self.min_real
                    && real >= self.ratio * predict.max(f64::MIN_POSITIVE)
                    && volume > 0.0
                    && (real - predict) / volume >= self.min_rate_delta
            }
            Direction::Down => real <= self.ratio * predict,
        }
    }

    /// Floors and significance against a threshold from [`llr_threshold`].
    pub fn passes(&self, real: f64, predict: f64, volume: f64, threshold: f64) -> bool {
        self.passes_floors(real, predict, volume)
            && directed_llr(real, predict, self.direction) >= threshold
            && self.beyond_the_edge(real, predict, volume)
    }

    /// Up: whether the failures are significantly above the most the rule
    /// still calls normal (`ratio` times the baseline, or `min_rate_delta`
    /// above it), not only above the baseline. A merchant whose webhooks fail
    /// in bursts near its rule's edge crosses it by chance in small windows
    /// (12 of 31 failing where 9 is the edge); a real outage clears it by far.
    /// Down: the ratio is the edge and the significance test already holds.
    pub fn beyond_the_edge(&self, real: f64, predict: f64, volume: f64) -> bool {
        self.edge_deviance(real, predict, volume) >= EDGE_DEVIANCE
    }

    /// Up: the deviance of the failures above the rule's edge of normal
    /// (infinite when the edge is zero). Down: infinite (no edge test).
    pub fn edge_deviance(&self, real: f64, predict: f64, volume: f64) -> f64 {
        match self.direction {
            Direction::Up => {
                let edge = (self.ratio * predict).max(predict + self.min_rate_delta * volume);
                if edge <= 0.0 {
                    f64::INFINITY
                } else {
                    directed_llr(real, edge, Direction::Up)
                }
            }
            Direction::Down => f64::INFINITY,
        }
    }
}

/// An exponentially weighted baseline of per-step counts, decayed lazily so idle
/// cells cost nothing. `weight` is the sum of decay factors over the steps seen,
/// which corrects the warm-up bias of a plain EWMA.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ewma {
    /// Decayed sum of attempts.
    pub n: f64,
    /// Decayed sum of failures.
    pub f: f64,
    /// Decayed count of steps observed.
    pub weight: f64,
    /// Last step folded in.
    pub step: i64,
}

impl Ewma {
    /// Decays to `step` (exclusive of its own counts), then adds them.
    pub fn update(&mut self, step: i64, n: f64, f: f64, decay: &Decay) {
        self.decay_to(step, decay);
        self.n += n;
        self.f += f;
        self.weight += 1.0;
        self.step = step;
    }

    /// [`Ewma::update`] with the step counting `weight` steps instead of one: a
    /// seasonal slot expected to bring `weight` times the usual volume, so the
    /// mean volume learns the deseasonalized level.
    pub fn update_weighted(&mut self, step: i64, n: f64, f: f64, weight: f64, decay: &Decay) {
        self.decay_to(step, decay);
        self.n += n;
        self.f += f;
        self.weight += weight;
        self.step = step;
    }

    /// Skips a step without learning from it (the cell was anomalous) while time moves.
    pub fn skip(&mut self, step: i64, decay: &Decay) {
        self.decay_to(step, decay);
        self.step = step;
    }

    fn decay_to(&mut self, step: i64, decay: &Decay) {
        if self.weight == 0.0 {
            return;
        }
        let gap = step - self.step;
        if gap > 0 {
            let k = decay.pow(gap);
            self.n *= k;
            self.f *= k;
            self.weight *= k;
        }
    }

    /// Mean attempts per step observed.
    pub fn mean_volume(&self) -> f64 {
        if self.weight > 0.0 {
            self.n / self.weight
        } else {
            0.0
        }
    }

    /// Failure rate shrunk toward `prior_rate` with `prior_events` pseudo-attempts.
    pub fn rate(&self, prior_rate: f64, prior_events: f64) -> f64 {
        let denom = self.n + prior_events;
        if denom <= 0.0 {
            prior_rate
        } else {
            (self.f + prior_events * prior_rate) / denom
        }
    }
}

/// Per-step decay factor for a half-life, with a small table for common gaps.
#[derive(Debug, Clone)]
pub struct Decay {
    per_step: f64,
    table: [f64; 16],
}

impl Decay {
    /// Decay with a half-life of `half_life_steps`.
    pub fn new(half_life_steps: f64) -> Decay {
        let per_step = 0.5f64.powf(1.0 / half_life_steps.max(1e-9));
        let mut table = [1.0; 16];
        for (i, t) in table.iter_mut().enumerate() {
            *t = per_step.powi(i as i32);
        }
        Decay { per_step, table }
    }

    /// Factor for `gap` steps.
    pub fn pow(&self, gap: i64) -> f64 {
        if (0..16).contains(&gap) {
            self.table[gap as usize]
        } else {
            self.per_step.powf(gap as f64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn llr_is_zero_at_expectation_and_grows_away() {
        assert!(poisson_llr(10.0, 10.0).abs() < 1e-12);
        assert!(poisson_llr(20.0, 10.0) > poisson_llr(15.0, 10.0));
        assert!(poisson_llr(0.0, 10.0) > poisson_llr(5.0, 10.0));
        assert_eq!(directed_llr(5.0, 10.0, Direction::Up), 0.0);
        assert_eq!(directed_llr(15.0, 10.0, Direction::Down), 0.0);
    }

    #[test]
    fn threshold_matches_normal_quantiles() {
        // z(0.975) = 1.95996
        let t = llr_threshold(0.05, 2);
        assert!((t.sqrt() - 1.959964).abs() < 1e-4, "{t}");
        assert!(llr_threshold(1e-4, 1000) > llr_threshold(1e-4, 10));
    }

    #[test]
    fn ewma_warms_up_without_bias_and_decays() {
        let d = Decay::new(10.0);
        let mut e = Ewma::default();
        for s in 0..5 {
            e.update(s, 100.0, 2.0, &d);
        }
        assert!((e.mean_volume() - 100.0).abs() < 1e-9);
        assert!((e.rate(0.5, 0.0) - 0.02).abs() < 1e-12);
        e.skip(15, &d);
        assert!(
            (e.mean_volume() - 100.0).abs() < 1e-9,
            "skip keeps the mean"
        );
        assert!(e.n < 500.0 * 0.51);
    }

    #[test]
    fn simulated_false_alarm_rate_is_controlled() {
        // Under the null (Poisson counts at the expectation), the Bonferroni
        // threshold should fire in roughly alpha of the steps or fewer.
        use rand::SeedableRng;
        use rand_distr::{Distribution, Poisson};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let tests = 50;
        let alpha = 0.01;
        let t = llr_threshold(alpha, tests);
        let pois = Poisson::new(20.0).unwrap();
        let steps = 4000;
        let mut fired = 0;
        for _ in 0..steps {
            let any =
                (0..tests).any(|_| directed_llr(pois.sample(&mut rng), 20.0, Direction::Up) >= t);
            fired += any as u32;
        }
        let rate = fired as f64 / steps as f64;
        assert!(rate <= 2.0 * alpha, "false alarm rate {rate}");
    }

    proptest! {
        #[test]
        fn llr_is_non_negative_and_finite(x in 0.0f64..1e7, e in 0.0f64..1e7) {
            let g = poisson_llr(x, e);
            prop_assert!(g >= 0.0 && g.is_finite());
        }

        #[test]
        fn llr_is_monotone_in_excess(e in 0.1f64..1e4, a in 0.0f64..1e4, b in 0.0f64..1e4) {
            let (lo, hi) = if a < b { (a, b) } else { (b, a) };
            prop_assert!(directed_llr(e + hi, e, Direction::Up) >= directed_llr(e + lo, e, Direction::Up) - 1e-9);
        }
    }
}
