//! Seasonal baselines: per cell, what each time-of-day (or time-of-week) slot
//! normally looks like, for slots that regularly differ from the cell's
//! learned baseline (a provider's nightly maintenance window).
//!
//! A rule with `baseline.seasonality` keeps, per cell, two numbers per slot of
//! the period (`season_slot` long, UTC-aligned): the slot's level (failure rate
//! for rate rules, events per step for volume rules) on each of its last two
//! learned visits. A visit is one pass through the slot (02:00-03:00 of one
//! day). Its level is shrunk toward the cell's plain baseline as it stood when
//! the visit began (the Gamma-Poisson posterior mean), so a slot with little
//! traffic stays near the plain baseline:
//!
//! - rate: `(failures + m p0) / (attempts + m)`, `p0` the baseline rate and `m`
//!   the rule's `prior_events` pseudo-attempts;
//! - volume: `(events + v0) / (steps + 1)`, `v0` the baseline events per step:
//!   one pseudo-step at the baseline (a visit of a few steps is weak evidence,
//!   an hour without events is not).
//!
//! A slot is trusted once two visits of it were learned (at least one full
//! period of history), and the expectation is the *less surprising* of the two
//! against the plain baseline `L` now: for rate rules `max(L, min(a, b))`, so a
//! bump must recur on both visits to be expected and a slot never looks
//! healthier than the plain baseline; for volume rules `min(L, max(a, b))`,
//! symmetrically. A one-off outage therefore never becomes "normal". Untrusted
//! slots expect the plain baseline. The plain baseline itself learns
//! deseasonalized counts (failures / `g`, or each step counting `g` steps of
//! volume, `g` = expectation / `L`), so a trusted slot does not drag it along.
//!
//! A slot learns every step while it is untrusted (so a recurring window that
//! paged on its first visits can become expected) and, once trusted, only
//! from steps where the cell is not part of something anomalous, as the plain
//! baseline does. A visit that taught nothing leaves the slot as it was.
//!
//! Memory: 8 bytes per slot per cell plus about 64 bytes, allocated only for
//! rules with seasonality (daily with 1h slots: about 260 bytes a cell;
//! weekly: about 1.4 KB).

use crate::rules::{Baseline, MAX_SEASON_SLOTS};

/// Smallest stored level: 0 marks "no visit yet".
const MIN_LEVEL: f64 = 1e-9;

/// A rule's seasonal settings, derived from its `baseline`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Season {
    slot_ms: i64,
    slots: usize,
    prior: f64,
    volume: bool,
}

impl Season {
    /// The settings of a validated baseline; `None` when seasonality is off.
    /// `volume` is true for volume-drop rules.
    pub fn from_baseline(b: &Baseline, volume: bool) -> Option<Season> {
        let period = b.seasonality.period_ms()?;
        let slot_ms = b.season_slot.ms();
        if slot_ms <= 0 || period % slot_ms != 0 || period / slot_ms > MAX_SEASON_SLOTS {
            return None;
        }
        Some(Season {
            slot_ms,
            slots: (period / slot_ms) as usize,
            prior: b.prior_events.max(0.0),
            volume,
        })
    }

    /// Slots per period.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The visit a step belongs to: the slot's absolute number since the epoch.
    pub fn visit(&self, step: i64, step_ms: i64) -> i64 {
        step.saturating_mul(step_ms).div_euclid(self.slot_ms)
    }

    fn slot(&self, visit: i64) -> usize {
        visit.rem_euclid(self.slots as i64) as usize
    }

    /// An empty profile for one cell.
    pub fn new_profile(&self) -> Box<Profile> {
        Box::new(Profile {
            levels: vec![[0.0; 2]; self.slots].into_boxed_slice(),
            visit: i64::MIN,
            level: 0.0,
            obs: 0.0,
            vol: 0.0,
        })
    }

    /// Bytes of one cell's profile.
    pub fn bytes_per_profile(&self) -> usize {
        std::mem::size_of::<Profile>() + 8 + self.slots * std::mem::size_of::<[f32; 2]>()
    }

    /// The level a finished visit showed, shrunk toward the baseline `level`
    /// it began with; `None` when it taught nothing.
    fn finish(&self, obs: f64, vol: f64, level: f64) -> Option<f64> {
        if !(vol > 0.0 && vol.is_finite() && obs.is_finite() && obs >= 0.0) {
            return None;
        }
        let est = if self.volume {
            if !(level > 0.0 && level.is_finite()) {
                return None;
            }
            (obs + level) / (vol + 1.0)
        } else {
            (obs + self.prior * level) / (vol + self.prior)
        };
        est.is_finite().then(|| est.max(MIN_LEVEL))
    }

    /// The sum over a window's steps of `count(s)` times the level expected at
    /// step `s`, given the plain baseline `level`: `total * level` when the
    /// profile trusts none of their slots. `total` is the sum of `count` over
    /// the window (attempts for rate rules, steps for volume rules).
    pub fn expected(
        &self,
        profile: Option<&Profile>,
        level: f64,
        (last, steps, step_ms): (i64, usize, i64),
        total: f64,
        count: impl Fn(i64) -> f64,
    ) -> f64 {
        let Some(p) = profile else {
            return total * level;
        };
        let first = last - steps as i64 + 1;
        let (v0, v1) = (self.visit(first, step_ms), self.visit(last, step_ms));
        if v0 == v1 {
            return total * p.expect(self, v1, level);
        }
        (first..=last)
            .map(|s| count(s) * p.expect(self, self.visit(s, step_ms), level))
            .sum()
    }
}

/// One cell's seasonal profile.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Per slot, the levels of its last two learned visits, newest first
    /// (0 = no such visit yet).
    levels: Box<[[f32; 2]]>,
    /// The visit being learned: the plain baseline as it stood when it began,
    /// observed failures (or events) and attempts (or steps) so far.
    visit: i64,
    level: f64,
    obs: f64,
    vol: f64,
}

impl Profile {
    /// Moves to `visit`. When it is a new one, the visit learned so far
    /// becomes its slot's newest level (if it taught anything), and `level`,
    /// the plain baseline now (0 for a volume baseline not usable yet), is
    /// what the new visit shrinks toward. Taking it at the start of the visit
    /// keeps a bump the plain baseline partly learns before it is flagged from
    /// hiding itself.
    pub fn roll(&mut self, season: &Season, visit: i64, level: f64) {
        if visit == self.visit {
            return;
        }
        if self.visit != i64::MIN {
            if let Some(est) = season.finish(self.obs, self.vol, self.level) {
                let l = &mut self.levels[season.slot(self.visit)];
                *l = [est as f32, l[0]];
            }
        }
        self.visit = visit;
        self.level = if level.is_finite() {
            level.max(0.0)
        } else {
            0.0
        };
        (self.obs, self.vol) = (0.0, 0.0);
    }

    /// Learns one step of the current visit: `obs` failures (or events) over
    /// `vol` attempts (or 1 step).
    pub fn learn(&mut self, obs: f64, vol: f64) {
        self.obs += obs;
        self.vol += vol;
    }

    /// Whether `visit`'s slot is trusted (two visits of it learned).
    pub fn trusted(&self, season: &Season, visit: i64) -> bool {
        self.levels[season.slot(visit)][1] != 0.0
    }

    /// The level expected at `visit` given the plain baseline `level` now.
    pub fn expect(&self, season: &Season, visit: i64, level: f64) -> f64 {
        let [a, b] = self.levels[season.slot(visit)];
        if b == 0.0 {
            return level;
        }
        let (a, b) = (f64::from(a), f64::from(b));
        if season.volume {
            a.max(b).min(level)
        } else {
            a.min(b).max(level)
        }
    }

    /// `expect / level`: how much the slot of `visit` departs from the plain
    /// baseline (1 when untrusted or without a baseline).
    pub fn factor(&self, season: &Season, visit: i64, level: f64) -> f64 {
        if level > 0.0 && level.is_finite() {
            self.expect(season, visit, level) / level
        } else {
            1.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Dur, Seasonality};
    use std::time::Duration;

    fn daily(volume: bool) -> Season {
        let b = Baseline {
            seasonality: Seasonality::Daily,
            ..Baseline::default()
        };
        Season::from_baseline(&b, volume).unwrap()
    }

    const STEP: i64 = 15_000;
    const HOUR_STEPS: i64 = 240;

    /// One hour-long visit to slot `hour` of day `day`: per step `obs`
    /// failures (or events) over `vol` attempts (or 1 step), against a plain
    /// baseline `level`.
    fn visit(pr: &mut Profile, se: &Season, day: i64, hour: i64, obs: f64, vol: f64, level: f64) {
        let first = (day * 24 + hour) * HOUR_STEPS;
        for s in first..first + HOUR_STEPS {
            pr.roll(se, se.visit(s, STEP), level);
            pr.learn(obs, vol);
        }
        // Leave the slot so the visit is recorded.
        pr.roll(se, se.visit(first + HOUR_STEPS, STEP), level);
    }

    fn at(se: &Season, hour: i64) -> i64 {
        se.visit(hour * HOUR_STEPS, STEP)
    }

    #[test]
    fn season_off_is_none_and_slots_follow_the_period() {
        assert!(Season::from_baseline(&Baseline::default(), false).is_none());
        assert_eq!(daily(false).slots(), 24);
        let weekly = Baseline {
            seasonality: Seasonality::Weekly,
            season_slot: Dur(Duration::from_secs(1800)),
            ..Baseline::default()
        };
        assert_eq!(Season::from_baseline(&weekly, false).unwrap().slots(), 336);
        assert!(daily(false).bytes_per_profile() < 300);
    }

    #[test]
    fn season_needs_two_visits_and_a_one_off_is_not_learned() {
        let se = daily(false);
        let mut pr = se.new_profile();
        // Day 0: 20% failures at 02:00 against a 1% baseline.
        visit(&mut pr, &se, 0, 2, 2.0, 10.0, 0.01);
        assert!(!pr.trusted(&se, at(&se, 2)));
        assert_eq!(
            pr.expect(&se, at(&se, 2), 0.01),
            0.01,
            "one visit is not enough"
        );
        // Day 1: the same.
        visit(&mut pr, &se, 1, 2, 2.0, 10.0, 0.01);
        assert!(pr.trusted(&se, at(&se, 2)));
        let e = pr.expect(&se, at(&se, 2), 0.01);
        assert!(e > 0.18 && e < 0.2, "{e}");
        assert!((pr.factor(&se, at(&se, 2), 0.01) - e / 0.01).abs() < 1e-9);
        // A one-off at 14:00 on day 0 only: day 1 is normal.
        visit(&mut pr, &se, 0, 14, 2.0, 10.0, 0.01);
        visit(&mut pr, &se, 1, 14, 0.1, 10.0, 0.01);
        assert_eq!(
            pr.expect(&se, at(&se, 14), 0.01),
            0.01,
            "a bump seen once is not expected"
        );
        // Another slot is untouched.
        assert_eq!(pr.expect(&se, at(&se, 9), 0.01), 0.01);
    }

    #[test]
    fn season_shrinks_a_thin_slot_toward_the_baseline() {
        let se = daily(false);
        let mut pr = se.new_profile();
        // One attempt in the hour, failing, twice: weak evidence.
        for day in 0..2 {
            let s = (day * 24 + 2) * HOUR_STEPS;
            pr.roll(&se, se.visit(s, STEP), 0.01);
            pr.learn(1.0, 1.0);
            pr.roll(&se, se.visit(s + HOUR_STEPS, STEP), 0.01);
        }
        let e = pr.expect(&se, at(&se, 2), 0.01);
        assert!(e < 0.016, "{e}");
    }

    #[test]
    fn season_volume_expects_a_quiet_slot_but_never_more_than_the_baseline() {
        let se = daily(true);
        let mut pr = se.new_profile();
        for day in 0..2 {
            // The night brings a tenth of the usual 100 events per step, noon 30% more.
            visit(&mut pr, &se, day, 3, 10.0, 1.0, 100.0);
            visit(&mut pr, &se, day, 12, 130.0, 1.0, 100.0);
        }
        let e = pr.expect(&se, at(&se, 3), 100.0);
        assert!(e > 10.0 && e < 12.0, "{e}");
        assert_eq!(pr.expect(&se, at(&se, 12), 100.0), 100.0);
        // A visit without a usable baseline teaches nothing.
        let mut pr = se.new_profile();
        for day in 0..2 {
            visit(&mut pr, &se, day, 3, 10.0, 1.0, 0.0);
        }
        assert!(!pr.trusted(&se, at(&se, 3)));
    }

    #[test]
    fn season_window_expectation_uses_each_steps_slot() {
        let se = daily(false);
        let mut pr = se.new_profile();
        for day in 0..2 {
            visit(&mut pr, &se, day, 2, 1.0, 10.0, 0.01);
        }
        let e = pr.expect(&se, at(&se, 2), 0.01);
        // A 4-step window: 2 steps before 02:00, 2 in the 02:00 slot, 10 attempts each.
        let last = 2 * HOUR_STEPS + 1;
        let w = se.expected(Some(&pr), 0.01, (last, 4, STEP), 40.0, |_| 10.0);
        assert!((w - (20.0 * 0.01 + 20.0 * e)).abs() < 1e-9, "{w}");
        assert_eq!(
            se.expected(None, 0.01, (last, 4, STEP), 40.0, |_| 10.0),
            40.0 * 0.01
        );
    }
}

/// The engine with a seasonal rule, on days of traffic with a nightly
/// maintenance window.
#[cfg(test)]
mod engine_tests {
    use crate::engine::{Engine, EngineOptions};
    use crate::event::{Event, Outcome};
    use crate::incident::{Change, Transition};
    use crate::rules::RuleSet;
    use rand::{Rng, SeedableRng};

    const DAY: i64 = 86_400_000;
    const HOUR: i64 = 3_600_000;
    /// 2026-03-02T00:00:00Z, a UTC midnight.
    const T0: i64 = 1_772_409_600_000;

    fn rules(seasonality: &str, detector: &str, thresholds: &str) -> RuleSet {
        let text = format!(
            "rules:\n  - name: nightly\n    kind: auth\n    detector: {detector}\n    dimensions: [provider, region]\n    window: 10m\n    step: 1m\n    baseline: {{horizon: 1h, warmup: 30m, seasonality: {seasonality}}}\n    thresholds: {thresholds}\n    open_after: 2\n    resolve_after: 5\n    severity: critical\n"
        );
        RuleSet::from_sources(&[("nightly.yaml".into(), text)]).expect("valid rule")
    }

    fn rate_rules(seasonality: &str) -> RuleSet {
        rules(
            seasonality,
            "rate",
            "{min_events: 40, min_failures: 10, min_lift: 2.0, min_rate_increase: 0.02}",
        )
    }

    /// Opened incidents as (offset from T0 in ms, provider) over `days` of 2
    /// events/s across 4 providers x 2 regions at 1% failures, `rate(t, provider)`
    /// overriding the failure rate and `keep(t, provider)` dropping events.
    fn run(
        rules: &RuleSet,
        days_ms: i64,
        rate: impl Fn(i64, usize) -> Option<f64>,
        keep: impl Fn(i64, usize) -> bool,
    ) -> Vec<(i64, String)> {
        let mut engine = Engine::new(rules, &EngineOptions::default());
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let mut out: Vec<Change> = Vec::new();
        for (id, t) in (0..days_ms).step_by(500).enumerate() {
            let (p, r) = (rng.gen_range(0..4usize), rng.gen_range(0..2));
            let failed = rng.gen_bool(rate(t, p).unwrap_or(0.01));
            if !keep(t, p) {
                continue;
            }
            let e = Event {
                id: format!("e{id}"),
                ts_ms: T0 + t,
                kind: "auth".into(),
                outcome: if failed {
                    Outcome::Failure
                } else {
                    Outcome::Success
                },
                provider: format!("p{p}"),
                region: format!("r{r}"),
                bin: None,
                merchant_id: None,
                card_brand: None,
                error_code: None,
                latency_ms: None,
                message: None,
                attrs: Default::default(),
            };
            let _ = engine.ingest(&e, &mut out);
        }
        engine.finish(&mut out);
        out.iter()
            .filter_map(|c| match &c.transition {
                Transition::Opened(i) => Some((
                    i.opened_at.timestamp_millis() - T0,
                    i.root_causes
                        .first()
                        .and_then(|rc| rc.dims.get("provider").cloned())
                        .unwrap_or_default(),
                )),
                _ => None,
            })
            .collect()
    }

    /// Provider p1 fails 15% of the time every night 02:00-03:00 UTC; on the
    /// last day (day 4) it also fails 15% at 14:00-15:00, off schedule.
    fn maintenance(t: i64, p: usize) -> Option<f64> {
        let (day, hour) = (t / DAY, (t % DAY) / HOUR);
        (p == 1 && (hour == 2 || (day == 4 && hour == 14))).then_some(0.15)
    }

    /// Incidents opened during (or just after) night `day`'s window.
    fn in_night(opened: &[(i64, String)], day: i64) -> usize {
        let start = day * DAY + 2 * HOUR;
        opened
            .iter()
            .filter(|(t, _)| *t >= start && *t < start + HOUR + 10 * 60_000)
            .count()
    }

    #[test]
    fn season_daily_maintenance_window_stops_paging_but_an_outage_still_pages() {
        let days = 4 * DAY + 16 * HOUR;
        let plain = run(&rate_rules("none"), days, maintenance, |_, _| true);
        let seasonal = run(&rate_rules("daily"), days, maintenance, |_, _| true);
        let nights = |o: &[(i64, String)]| (0..5).map(|d| in_night(o, d)).collect::<Vec<_>>();
        eprintln!("plain: {plain:?}\nseasonal: {seasonal:?}");
        eprintln!(
            "per night: plain {:?} seasonal {:?}",
            nights(&plain),
            nights(&seasonal)
        );

        // Without seasonality every night pages, on p1.
        for day in 0..5 {
            assert_eq!(in_night(&plain, day), 1, "night {day}: {plain:?}");
        }
        assert!(plain.iter().all(|(_, p)| p == "p1"), "{plain:?}");

        // With it, the first two nights page (the slot is learning) and none after.
        assert_eq!(in_night(&seasonal, 0), 1, "{seasonal:?}");
        assert_eq!(in_night(&seasonal, 1), 1, "{seasonal:?}");
        for day in 2..5 {
            assert_eq!(in_night(&seasonal, day), 0, "night {day}: {seasonal:?}");
        }
        // The same failure rate at 14:00 on the last day still pages, promptly.
        let outage = 4 * DAY + 14 * HOUR;
        let hits: Vec<_> = seasonal
            .iter()
            .filter(|(t, _)| *t >= outage && *t < outage + HOUR)
            .collect();
        assert_eq!(hits.len(), 1, "{seasonal:?}");
        assert_eq!(hits[0].1, "p1");
        // No slower than without seasonality.
        let plain_hit = plain
            .iter()
            .find(|(t, _)| *t >= outage && *t < outage + HOUR)
            .map(|h| h.0);
        assert!(plain_hit.is_some_and(|t| hits[0].0 <= t), "{plain:?}");
        assert!(hits[0].0 - outage <= 10 * 60_000, "{hits:?}");
        // And nothing else: 2 learning nights + the outage.
        assert_eq!(seasonal.len(), 3, "{seasonal:?}");
    }

    #[test]
    fn season_a_bigger_outage_inside_the_window_still_pages() {
        // On day 3 the maintenance window is a real outage: 60% instead of 15%.
        let days = 3 * DAY + 4 * HOUR;
        let worse = |t: i64, p: usize| {
            let (day, hour) = (t / DAY, (t % DAY) / HOUR);
            match (p, hour, day) {
                (1, 2, 3) => Some(0.6),
                (1, 2, _) => Some(0.15),
                _ => None,
            }
        };
        let seasonal = run(&rate_rules("daily"), days, worse, |_, _| true);
        assert_eq!(in_night(&seasonal, 2), 0, "{seasonal:?}");
        assert_eq!(in_night(&seasonal, 3), 1, "{seasonal:?}");
    }

    #[test]
    fn season_daily_volume_rule_expects_a_quiet_night() {
        // Provider p2 sends nothing 02:00-03:00 every night (a batch cut-over).
        let volume = rules(
            "daily",
            "volume_drop",
            "{min_events: 40, max_volume_ratio: 0.3}",
        );
        let plain_rules = rules(
            "none",
            "volume_drop",
            "{min_events: 40, max_volume_ratio: 0.3}",
        );
        let quiet = |t: i64, p: usize| !(p == 2 && (t % DAY) / HOUR == 2);
        // ... and on day 3 also at 14:00-15:00, off schedule.
        let quiet_and_outage =
            |t: i64, p: usize| quiet(t, p) && !(p == 2 && t / DAY == 3 && (t % DAY) / HOUR == 14);
        let days = 3 * DAY + 16 * HOUR;
        let plain = run(&plain_rules, days, |_, _| None, quiet_and_outage);
        let seasonal = run(&volume, days, |_, _| None, quiet_and_outage);
        eprintln!("plain: {plain:?}\nseasonal: {seasonal:?}");
        for day in 2..4 {
            assert!(in_night(&plain, day) >= 1, "night {day}: {plain:?}");
            assert_eq!(in_night(&seasonal, day), 0, "night {day}: {seasonal:?}");
        }
        let outage = 3 * DAY + 14 * HOUR;
        assert!(
            seasonal
                .iter()
                .any(|(t, p)| *t >= outage && *t < outage + HOUR && p == "p2"),
            "{seasonal:?}"
        );
    }
}
