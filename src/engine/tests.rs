//! Engine tests: events in, incidents out.

use super::*;
use crate::event::Outcome;
use crate::incident::{Status, Transition};
use crate::rules::Rule;
use rand::{Rng, SeedableRng};

fn ev(id: u64, ts_ms: i64, provider: &str, region: &str, bin: &str, failed: bool) -> Event {
    Event {
        id: format!("e{id}"),
        ts_ms,
        kind: "auth".into(),
        outcome: if failed {
            Outcome::Failure
        } else {
            Outcome::Success
        },
        provider: provider.into(),
        region: region.into(),
        bin: Some(bin.into()),
        merchant_id: None,
        card_brand: None,
        error_code: None,
        latency_ms: None,
        message: None,
        attrs: Default::default(),
    }
}

/// 40 events/s over 4 providers x 3 regions x 20 BINs at 1% failures, with
/// `fault(ts, provider, region, bin) -> Option<failure rate>` applied.
fn run(minutes: i64, fault: impl Fn(i64, usize, usize, usize) -> Option<f64>) -> Vec<Change> {
    run_rules(
        &RuleSet::embedded(),
        minutes,
        |b| format!("4000{b:02}"),
        fault,
    )
}

/// [`run`] with given rules and BIN names.
fn run_rules(
    rules: &RuleSet,
    minutes: i64,
    bin_name: impl Fn(usize) -> String,
    fault: impl Fn(i64, usize, usize, usize) -> Option<f64>,
) -> Vec<Change> {
    let mut engine = Engine::new(rules, &EngineOptions::default());
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut out = Vec::new();
    let mut id = 0;
    for ms in (0..minutes * 60_000).step_by(25) {
        id += 1;
        let (p, r, b) = (
            rng.gen_range(0..4),
            rng.gen_range(0..3),
            rng.gen_range(0..20),
        );
        let rate = fault(ms, p, r, b).unwrap_or(0.01);
        let e = ev(
            id,
            ms,
            &format!("p{p}"),
            &format!("r{r}"),
            &bin_name(b),
            rng.gen_bool(rate),
        );
        let _ = engine.ingest(&e, &mut out);
    }
    engine.finish(&mut out);
    out
}

fn opened(changes: &[Change]) -> Vec<&crate::incident::Incident> {
    changes
        .iter()
        .filter_map(|c| match &c.transition {
            Transition::Opened(i) => Some(i),
            _ => None,
        })
        .collect()
}

/// The shipped rules with the auth rule edited by `edit`.
fn auth_edited(edit: impl Fn(&mut Rule)) -> RuleSet {
    let mut rules = RuleSet::embedded();
    let auth = rules
        .rules
        .iter_mut()
        .find(|r| r.rule.name == "auth_technical_failures")
        .expect("the shipped auth rule");
    edit(&mut auth.rule);
    rules
}

/// Like [`run`] with a p2/r1 outage from minute 40 to 50, reloading to
/// `new_rules` at minute 45 (the incident open). Returns the changes before,
/// at and after the reload.
fn run_reloading(new_rules: &RuleSet) -> (Vec<Change>, ReloadSummary, Vec<Change>, Vec<Change>) {
    let mut engine = Engine::new(&RuleSet::embedded(), &EngineOptions::default());
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let (mut before, mut at, mut after) = (Vec::new(), Vec::new(), Vec::new());
    let mut summary = None;
    for (id, ms) in (0..70 * 60_000).step_by(25).enumerate() {
        if ms == 45 * 60_000 {
            summary = Some(engine.reload(new_rules, &mut at));
        }
        let (p, r, b) = (
            rng.gen_range(0..4),
            rng.gen_range(0..3),
            rng.gen_range(0..20),
        );
        let outage = (40 * 60_000..50 * 60_000).contains(&ms) && p == 2 && r == 1;
        let rate = if outage { 0.7 } else { 0.01 };
        let e = ev(
            id as u64,
            ms,
            &format!("p{p}"),
            &format!("r{r}"),
            &format!("4000{b:02}"),
            rng.gen_bool(rate),
        );
        let out = if summary.is_some() {
            &mut after
        } else {
            &mut before
        };
        let _ = engine.ingest(&e, out);
    }
    engine.finish(&mut after);
    (before, summary.expect("reloaded"), at, after)
}

fn auth_opened(changes: &[Change]) -> Vec<&crate::incident::Incident> {
    opened(changes)
        .into_iter()
        .filter(|i| i.rule == "auth_technical_failures")
        .collect()
}

#[test]
fn reloading_a_new_threshold_keeps_windows_baselines_and_the_open_incident() {
    let rules = auth_edited(|r| r.thresholds.min_lift = 3.0);
    let (before, summary, at, after) = run_reloading(&rules);
    assert_eq!(summary.retuned, vec!["auth_technical_failures"]);
    assert!(summary.restarted.is_empty() && summary.removed.is_empty());
    assert_eq!(auth_opened(&before).len(), 1, "open before the reload");
    assert!(
        at.is_empty(),
        "nothing resolved by a threshold change: {at:#?}"
    );
    assert!(
        auth_opened(&after).is_empty(),
        "the open incident must not be opened again: {:#?}",
        auth_opened(&after)
    );
    let id = &auth_opened(&before)[0].id;
    let resolved = after
        .iter()
        .any(|c| matches!(&c.transition, Transition::Resolved(i) if &i.id == id));
    assert!(resolved, "the same incident resolves when the outage ends");
}

#[test]
fn a_retuned_threshold_takes_effect_at_the_next_step() {
    // A lift no outage reaches: the open incident stops being anomalous and
    // resolves while the outage still runs (it ends at minute 50).
    let rules = auth_edited(|r| r.thresholds.min_lift = 1000.0);
    let (before, _, _, after) = run_reloading(&rules);
    let id = &auth_opened(&before)[0].id;
    let resolved_at = after.iter().find_map(|c| match &c.transition {
        Transition::Resolved(i) if &i.id == id => i.resolved_at,
        _ => None,
    });
    let at = resolved_at.expect("resolved").timestamp_millis();
    assert!(at < 50 * 60_000, "resolved at {at} ms, after the outage");
}

#[test]
fn reloading_unchanged_rules_changes_nothing() {
    let (_, summary, at, after) = run_reloading(&RuleSet::embedded());
    assert_eq!(summary.kept.len(), RuleSet::embedded().rules.len());
    assert!(at.is_empty() && auth_opened(&after).is_empty());
}

#[test]
fn a_rule_counting_differently_restarts_and_a_removed_rule_resolves() {
    let wider = auth_edited(|r| r.window = crate::rules::Dur(std::time::Duration::from_secs(180)));
    let (_, summary, at, after) = run_reloading(&wider);
    assert_eq!(summary.restarted, vec!["auth_technical_failures"]);
    let why: Vec<_> = at
        .iter()
        .flat_map(|c| &c.timeline)
        .map(|t| t.detail.as_str())
        .collect();
    assert_eq!(at.len(), 1, "{at:#?}");
    assert!(why[0].starts_with("rule changed"), "{why:?}");
    // Fresh: it has no baseline, so it warms up again and stays quiet.
    assert!(auth_opened(&after).is_empty());

    let mut without = RuleSet::embedded();
    without
        .rules
        .retain(|r| r.rule.name != "auth_technical_failures");
    let (_, summary, at, _) = run_reloading(&without);
    assert_eq!(summary.removed, vec!["auth_technical_failures"]);
    assert_eq!(at.len(), 1);
    assert!(matches!(&at[0].transition, Transition::Resolved(i) if i.status == Status::Resolved));
    assert_eq!(at[0].timeline[0].detail, "rule removed");
}

fn notified_updates(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .filter(|c| c.notify && matches!(c.transition, Transition::Updated(_)))
        .flat_map(|c| c.timeline.iter().map(|t| t.detail.clone()))
        .collect()
}

#[test]
fn a_worsening_outage_is_news_and_a_steady_one_is_not() {
    let steady = run(70, |t, p, r, _| {
        ((40 * 60_000..50 * 60_000).contains(&t) && p == 2 && r == 1).then_some(0.5)
    });
    assert_eq!(opened(&steady).len(), 1);
    let news = notified_updates(&steady);
    assert!(
        news.iter().all(|n| !n.contains("failure rate")),
        "a steady outage is not worsening: {news:?}"
    );
    let worse = run(70, |t, p, r, _| {
        let on = p == 2 && r == 1;
        if on && (40 * 60_000..44 * 60_000).contains(&t) {
            Some(0.2)
        } else if on && (44 * 60_000..50 * 60_000).contains(&t) {
            Some(0.9)
        } else {
            None
        }
    });
    assert_eq!(opened(&worse).len(), 1, "still one incident");
    let news = notified_updates(&worse);
    assert_eq!(
        news.iter()
            .filter(|n| n.contains("failure rate up"))
            .count(),
        1,
        "told once that it got worse: {news:?}"
    );
}

#[test]
fn a_traffic_surge_at_the_usual_failure_rate_is_not_blamed() {
    // p2 gets five times its traffic from minute 40 to 50 (a flash sale),
    // failing at the usual 1%: more failures, but no excess given attempts.
    let mut engine = Engine::new(&RuleSet::embedded(), &EngineOptions::default());
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut out = Vec::new();
    let mut id = 0u64;
    for ms in (0..70 * 60_000).step_by(25) {
        let surge = (40 * 60_000..50 * 60_000).contains(&ms);
        for copy in 0..if surge { 5 } else { 1 } {
            let p = if copy > 0 { 2 } else { rng.gen_range(0..4) };
            let (r, b) = (rng.gen_range(0..3), rng.gen_range(0..20));
            id += 1;
            let e = ev(
                id,
                ms,
                &format!("p{p}"),
                &format!("r{r}"),
                &format!("4000{b:02}"),
                rng.gen_bool(0.01),
            );
            let _ = engine.ingest(&e, &mut out);
        }
    }
    engine.finish(&mut out);
    assert!(
        auth_opened(&out).is_empty(),
        "a volume rise alone opened {:#?}",
        auth_opened(&out)
    );
}

#[test]
fn provider_region_outage_is_one_incident_with_its_root_cause() {
    let start = 40 * 60_000;
    let end = 50 * 60_000;
    let changes = run(70, |t, p, r, _| {
        (t >= start && t < end && p == 2 && r == 1).then_some(0.7)
    });
    let inc = opened(&changes);
    assert_eq!(inc.len(), 1, "{inc:#?}");
    let dims: Vec<_> = inc[0].root_causes[0].dims.iter().collect();
    assert_eq!(
        dims,
        vec![
            (&"provider".to_string(), &"p2".to_string()),
            (&"region".to_string(), &"r1".to_string())
        ]
    );
    let ttd = inc[0].opened_at.timestamp_millis() - start;
    assert!(ttd <= 60_000, "detected after {ttd} ms");
    let resolved = changes.iter().any(|c| matches!(&c.transition, Transition::Resolved(i) if i.id == inc[0].id && i.status == Status::Resolved));
    assert!(resolved);
}

#[test]
fn bin_outage_across_providers_is_the_bin() {
    let start = 40 * 60_000;
    let end = 50 * 60_000;
    let changes = run(60, |t, _, _, b| {
        (t >= start && t < end && b == 7).then_some(0.9)
    });
    let inc = opened(&changes);
    assert_eq!(inc.len(), 1, "{inc:#?}");
    assert_eq!(
        inc[0].root_causes[0].dims.get("bin").map(String::as_str),
        Some("400007")
    );
    assert_eq!(inc[0].root_causes[0].dims.len(), 1);
}

/// The shipped auth rule with the issuer range `bin4` beside `bin`.
fn rules_with_bin4() -> RuleSet {
    let auth = include_str!("../../rules/auth.yaml").replace(
        "dimensions: [provider, region, bin]",
        "dimensions: [provider, region, bin4, bin]",
    );
    assert!(auth.contains("bin4"), "the shipped auth rule changed shape");
    RuleSet::from_sources(&[("auth.yaml".into(), auth)]).expect("valid rules")
}

/// BINs 0..10 are one issuer range (4147xx), 10..20 another (5100xx).
fn two_ranges(b: usize) -> String {
    if b < 10 {
        format!("4147{b:02}")
    } else {
        format!("5100{b:02}")
    }
}

#[test]
fn an_issuer_range_failing_is_one_incident_on_its_prefix() {
    let (start, end) = (40 * 60_000, 50 * 60_000);
    let changes = run_rules(&rules_with_bin4(), 60, two_ranges, |t, _, _, b| {
        (t >= start && t < end && b < 10).then_some(0.8)
    });
    let inc = opened(&changes);
    assert_eq!(inc.len(), 1, "{inc:#?}");
    let dims = &inc[0].root_causes[0].dims;
    assert_eq!(dims.len(), 1, "{dims:?}");
    assert_eq!(dims.get("bin4").map(String::as_str), Some("4147"));
}

#[test]
fn one_bin_of_a_range_failing_is_still_the_bin() {
    let (start, end) = (40 * 60_000, 50 * 60_000);
    let changes = run_rules(&rules_with_bin4(), 60, two_ranges, |t, _, _, b| {
        (t >= start && t < end && b == 3).then_some(0.9)
    });
    let inc = opened(&changes);
    assert_eq!(inc.len(), 1, "{inc:#?}");
    let dims = &inc[0].root_causes[0].dims;
    assert_eq!(dims.len(), 1, "{dims:?}");
    assert_eq!(dims.get("bin").map(String::as_str), Some("414703"));
}

#[test]
fn steady_traffic_and_duplicates_open_nothing() {
    let changes = run(60, |_, _, _, _| None);
    let o = opened(&changes);
    assert!(
        o.is_empty(),
        "{:#?}",
        o.iter()
            .map(|i| (&i.root_causes, &i.opened_at))
            .collect::<Vec<_>>()
    );
}

/// A cluster detector's clock is its slowest replica's, so a fast
/// replica's counts can arrive many steps ahead of the step evaluated
/// (its backlog flushed after NATS came back, or the others' waited for).
/// They must be held, not written over the steps still to evaluate: the
/// outcome is the same as counts arriving in step order.
#[test]
fn counts_far_ahead_of_the_clock_are_held_until_their_step() {
    let rule = r#"
rules:
  - name: auth_failures
    kind: auth
    failures: [failure]
    dimensions: [provider, region]
    window: 10s
    step: 2s
    baseline: { horizon: 2m, warmup: 20s, prior_events: 50 }
    thresholds: { min_events: 20, min_failures: 8, min_lift: 2.0, min_rate_increase: 0.05, false_alarm_rate: 0.0001 }
    open_after: 2
    resolve_after: 3
    severity: critical
"#;
    let rules = RuleSet::from_sources(&[("auth.yaml".into(), rule.into())]).unwrap();
    let opts = EngineOptions {
        lateness_ms: 5_000,
        ..EngineOptions::default()
    };
    let providers = ["alpha", "bravo", "charlie", "delta", "echo"];
    // One replica's share of step `s` for every cell: 20 attempts, one
    // failing; charlie fails 10 of 20 from step 60 on.
    let share = |engine: &mut Engine, out: &mut Vec<Change>, s: i64| {
        for p in providers {
            let f = if p == "charlie" && s >= 60 { 10 } else { 1 };
            engine
                .ingest_counts(0, &[Some(p), Some("us-east-1")], s, 20, f, out)
                .unwrap();
        }
    };
    let feed = |ahead: i64| {
        let mut engine = Engine::new(&rules, &opts);
        let mut out = Vec::new();
        for s in 0..ahead {
            share(&mut engine, &mut out, s);
        }
        for s in 0..100 {
            // The fast replica's counts `ahead` steps early, the slow
            // one's on time; the clock is the slow one's.
            share(&mut engine, &mut out, s + ahead);
            share(&mut engine, &mut out, s);
            engine.observe((s + 1) * 2_000, &mut out);
        }
        let dims = [("provider", "charlie"), ("region", "us-east-1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let at = engine.last_step_end("auth_failures").unwrap() - 1;
        let why = engine.explain("auth_failures", &dims, at).unwrap();
        (
            opened(&out).into_iter().cloned().collect::<Vec<_>>(),
            why.attempts,
            why.failures,
            why.baseline_rate,
        )
    };
    let in_order = feed(0);
    assert_eq!(
        in_order.0.len(),
        1,
        "the outage opens in order: {:#?}",
        in_order.0
    );
    for ahead in [4, 8, 30] {
        let skewed = feed(ahead);
        assert_eq!(
            (skewed.1, skewed.2, skewed.3),
            (in_order.1, in_order.2, in_order.3),
            "{ahead} steps ahead: the windows and baselines differ"
        );
        assert_eq!(
            skewed.0, in_order.0,
            "{ahead} steps ahead: the incidents differ"
        );
    }
}

/// Held counts are bounded: past `max_cells_per_rule` entries the
/// evaluation moves on, and what the slowest sender sends for the steps
/// it passed is late.
#[test]
fn counts_held_ahead_are_bounded() {
    let rules = RuleSet::embedded();
    let opts = EngineOptions {
        max_cells_per_rule: 8,
        ..EngineOptions::default()
    };
    let mut engine = Engine::new(&rules, &opts);
    let index = engine
        .rule_index("auth_technical_failures")
        .expect("the shipped auth rule");
    let (_, dims) = engine.rule_shape(index).unwrap();
    let values = vec![Some("p"); dims];
    let mut out = Vec::new();
    engine
        .ingest_counts(index, &values, 1_000, 10, 1, &mut out)
        .unwrap();
    for s in 1_100..1_120 {
        engine
            .ingest_counts(index, &values, s, 10, 1, &mut out)
            .unwrap();
    }
    let rs = &engine.rules[index];
    assert!(rs.held_len <= 8, "held {}", rs.held_len);
    assert!(engine.stats().forced > 0);
    let next = rs.next_step.unwrap();
    assert!(next > 1_000 && next < 1_120, "moved on to {next}");
    assert_eq!(
        engine.ingest_counts(index, &values, next - 1, 10, 1, &mut out),
        Err(Skip::Late)
    );
}

#[test]
fn duplicates_and_late_events_are_skipped() {
    let rules = RuleSet::embedded();
    let mut engine = Engine::new(&rules, &EngineOptions::default());
    let mut out = Vec::new();
    assert_eq!(
        engine.ingest(&ev(1, 100_000, "p", "r", "400000", false), &mut out),
        Ok(())
    );
    assert_eq!(
        engine.ingest(&ev(1, 100_001, "p", "r", "400000", false), &mut out),
        Err(Skip::Duplicate)
    );
    assert_eq!(
        engine.ingest(&ev(2, 69_999, "p", "r", "400000", false), &mut out),
        Err(Skip::Late)
    );
    assert_eq!(
        engine.ingest(&ev(3, 70_000, "p", "r", "400000", false), &mut out),
        Ok(())
    );
}

/// Two BINs of one range fail, one of them carrying most of the range's
/// traffic. As the outage fades its last failures sit in the big BIN with the
/// range's small rest too thin to look healthy: the incident keeps naming the
/// two BINs, from its opening to its resolve, never the whole range.
#[test]
fn a_fading_outage_keeps_its_root_causes() {
    let rules = rules_with_bin4();
    let mut engine = Engine::new(&rules, &EngineOptions::default());
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (start, end) = (40 * 60_000, 46 * 60_000 + 30_000);
    let mut out = Vec::new();
    let mut id = 0;
    // Per 50 ms: BIN 414700 most of the time, 414701 now and then, the
    // range's other BINs rarely, another range for the rest.
    for ms in (0..60 * 60_000).step_by(50) {
        id += 1;
        let x: f64 = rng.gen();
        let bin = if x < 0.55 {
            "414700".to_string()
        } else if x < 0.58 {
            "414701".to_string()
        } else if x < 0.60 {
            format!("41470{}", rng.gen_range(2..10))
        } else {
            format!("5100{:02}", rng.gen_range(0..10))
        };
        let p = rng.gen_range(0..3);
        let failing = ms >= start && ms < end && (bin == "414700" || bin == "414701");
        let rate = if failing { 0.85 } else { 0.01 };
        let e = ev(id, ms, &format!("p{p}"), "r0", &bin, rng.gen_bool(rate));
        let _ = engine.ingest(&e, &mut out);
    }
    engine.finish(&mut out);
    let inc = opened(&out);
    assert_eq!(inc.len(), 1, "{inc:#?}");
    let id = &inc[0].id;
    let mut seen = 0;
    for c in &out {
        let i = c.transition.incident();
        if &i.id != id {
            continue;
        }
        seen += 1;
        let bins: Vec<Option<&str>> = i
            .root_causes
            .iter()
            .map(|r| r.dims.get("bin").map(String::as_str))
            .collect();
        assert!(
            bins.iter().all(|b| b.is_some()),
            "{:?}: {:#?}",
            c.transition,
            i.root_causes
        );
    }
    let last = out
        .iter()
        .rev()
        .find(|c| &c.transition.incident().id == id)
        .unwrap()
        .transition
        .incident();
    assert_eq!(last.status, Status::Resolved);
    assert!(seen >= 2);
}

/// A slow rise passes the test minutes after it left normal: the incident
/// looks back past its window for when it began, and its opening carries the
/// series from a window before that.
#[test]
fn a_slow_rise_began_before_its_window_and_opens_with_a_before() {
    let start = 40 * 60_000;
    // p0 in r0: from 1 % to 3.5 %, held: too little to pass the test at once.
    let changes = run(56, |ms, p, r, _| {
        (p == 0 && r == 0 && ms >= start).then_some(0.035)
    });
    let open = changes
        .iter()
        .find(|c| matches!(c.transition, Transition::Opened(_)))
        .expect("the rise opens an incident");
    let inc = open.transition.incident();
    let began = inc.episode.began_at.expect("began_at").timestamp_millis();
    let opened = inc.opened_at.timestamp_millis();
    eprintln!(
        "began {} s after the start, opened {} s after",
        (began - start) / 1000,
        (opened - start) / 1000
    );
    // Further back than the 2-minute window the test passed on, and not
    // before the rise.
    assert!(opened - began > 2 * 60_000, "{began} {opened}");
    assert!(began >= start - 30_000 && began - start <= 150_000);
    // The before: from a window before it began, in order, up to the opening.
    let first = open.before.first().expect("points before the opening");
    assert!(first.at.timestamp_millis() <= began - 2 * 60_000);
    assert!(open.before.windows(2).all(|w| w[0].at < w[1].at));
    assert!(open.before.last().unwrap().at < inc.opened_at);
    // Normal at first, failing by the opening.
    assert!(first.value < 0.05, "{}", first.value);
    assert!(open.point.unwrap().value > 0.02);
}
