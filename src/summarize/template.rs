//! The deterministic template: same facts, same text, no clock and no I/O.
//!
//! Written for someone paged at 3 a.m.: the title says what and where with the
//! numbers; the summary has one labelled line per question (what, where, since
//! when, how bad, how much, what else, what to do).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::{Facts, Summary};
use crate::incident::{RootCause, Status, SummarySource};
use crate::redact;
use crate::rules::Detector;

/// Runners-up shown in a summary.
const MAX_CANDIDATES: usize = 3;

/// The template summary of `facts`.
pub fn template(facts: &Facts) -> Summary {
    let (title, summary) = match facts.detector {
        Detector::Rate => rate(facts),
        Detector::VolumeDrop => volume(facts),
    };
    // The values were redacted one by one; this pass is the last line of defence
    // for anything that reached the text another way.
    Summary {
        title: redact::redact_all(&title).into_owned(),
        summary: redact::redact_all(&summary).into_owned(),
        source: SummarySource::Template,
        prompt_version: None,
        note: None,
    }
}

fn rate(f: &Facts) -> (String, String) {
    let rule = rule_label(&f.rule);
    let cause = f.root_causes.first();
    let ep = &f.episode;
    let told = match (cause, &ep.current, &ep.peak, &ep.impact) {
        (Some(c), Some(cur), Some(peak), Some(imp)) => Some((c, cur, peak, imp)),
        _ => None,
    };
    let title = match (told, cause) {
        (Some((c, cur, peak, imp)), _) => {
            let excess = approx(imp.excess_failures.unwrap_or(0.0));
            if f.status == Status::Resolved {
                format!(
                    "{}: {rule} peaked at {} (baseline {}), {excess} failed beyond normal over {}",
                    element(&c.dims),
                    pct(rate_of(peak)),
                    pct(peak.baseline_rate.unwrap_or(0.0)),
                    dur(lasted(f))
                )
            } else {
                format!(
                    "{}: {rule} {} failing (peak {} at {}, baseline {}), since {}, {excess} failed beyond normal",
                    element(&c.dims),
                    pct(rate_of(cur)),
                    pct(rate_of(peak)),
                    clock(peak.window.end),
                    pct(cur.baseline_rate.unwrap_or(0.0)),
                    clock(began(f))
                )
            }
        }
        (None, Some(c)) => format!(
            "{}: {rule} {} (baseline {})",
            element(&c.dims),
            pct(c.failure_rate),
            pct(c.baseline_rate)
        ),
        (None, None) => format!("{rule} above baseline"),
    };
    let mut s = String::new();
    what_line(&mut s, f);
    if let Some(c) = cause {
        where_line(&mut s, c, "failures");
    }
    since_lines(&mut s, f);
    match told {
        Some((_, cur, peak, imp)) => {
            if f.status != Status::Resolved {
                let lift = fold(rate_of(cur), cur.baseline_rate.unwrap_or(0.0))
                    .map(|x| format!(" ({x} normal)"))
                    .unwrap_or_default();
                let _ = writeln!(
                    s,
                    "Now: {} failing vs {} baseline{lift}, {} of {} in the latest window.",
                    pct(rate_of(cur)),
                    pct(cur.baseline_rate.unwrap_or(0.0)),
                    count(cur.failures.unwrap_or(0)),
                    count(cur.events)
                );
            }
            let _ = writeln!(
                s,
                "Peak: {} at {} ({} of {} in the window {}).",
                pct(rate_of(peak)),
                clock(peak.window.end),
                count(peak.failures.unwrap_or(0)),
                count(peak.events),
                range(peak.window.start, peak.window.end)
            );
            let _ = writeln!(
                s,
                "Impact: {} events, {} failures, {} beyond the {} expected.",
                count(imp.events),
                count(imp.failures.unwrap_or(0)),
                approx(imp.excess_failures.unwrap_or(0.0)),
                approx(imp.expected_failures.unwrap_or(0.0))
            );
            if f.status == Status::Resolved {
                let _ = writeln!(
                    s,
                    "Ended: {} failing in the last window (baseline {}).",
                    pct(rate_of(cur)),
                    pct(cur.baseline_rate.unwrap_or(0.0))
                );
            }
        }
        None => {
            if let Some(c) = cause {
                legacy_rate_lines(&mut s, c);
            }
        }
    }
    codes_line(&mut s, f);
    let others: Vec<String> = f
        .root_causes
        .iter()
        .skip(1)
        .take(MAX_CANDIDATES)
        .map(|c| {
            format!(
                "{} {} vs {} ({} of {} failed)",
                element(&c.dims),
                pct(c.failure_rate),
                pct(c.baseline_rate),
                count(c.failures),
                count(c.events)
            )
        })
        .collect();
    candidates_line(&mut s, &others);
    next_line(&mut s, f);
    runbook_line(&mut s, f);
    (title, s.trim_end().to_string())
}

/// The rate lines of an incident without episode numbers (one stored before
/// they existed): the latest window's evidence.
fn legacy_rate_lines(s: &mut String, c: &RootCause) {
    let lift = fold(c.failure_rate, c.baseline_rate)
        .map(|x| format!(" ({x} normal)"))
        .unwrap_or_default();
    let _ = writeln!(
        s,
        "Rate: {} failing in the latest window vs {} baseline{lift}.",
        pct(c.failure_rate),
        pct(c.baseline_rate)
    );
    let excess = (c.failures as f64 - c.expected_failures).max(0.0);
    let _ = writeln!(
        s,
        "Volume: {} events, {} failures, {} more than the {} expected.",
        count(c.events),
        count(c.failures),
        approx(excess),
        approx(c.expected_failures)
    );
}

fn rate_of(r: &crate::incident::Reading) -> f64 {
    r.failure_rate.unwrap_or(0.0)
}

fn share_of(r: &crate::incident::Reading) -> f64 {
    r.share.unwrap_or(0.0)
}

/// When the episode began: `began_at`, else the opening.
fn began(f: &Facts) -> DateTime<Utc> {
    f.episode.began_at.unwrap_or(f.opened_at)
}

/// Seconds from the episode's beginning to its resolution (or last update).
fn lasted(f: &Facts) -> i64 {
    f.resolved_at
        .unwrap_or(f.updated_at)
        .signed_duration_since(began(f))
        .num_seconds()
}

fn volume(f: &Facts) -> (String, String) {
    let cause = f.root_causes.first();
    let ep = &f.episode;
    let window = dur(f
        .window
        .end
        .signed_duration_since(f.window.start)
        .num_seconds());
    let from = |c: &RootCause| {
        if c.dims.is_empty() {
            String::new()
        } else {
            format!(" from {}", element(&c.dims))
        }
    };
    let drop = |c: &RootCause| {
        format!(
            "{} events{} dropped to {} in the last {window} (expected {})",
            f.kind,
            from(c),
            count(c.events),
            approx(expected_events(c))
        )
    };
    let told = match (cause, &ep.current, &ep.peak, &ep.impact) {
        (Some(c), Some(cur), Some(peak), Some(imp)) => Some((c, cur, peak, imp)),
        _ => None,
    };
    let title = match (told, cause) {
        (Some((c, cur, peak, imp)), _) => {
            let missing = approx(imp.missing_events.unwrap_or(0.0));
            if f.status == Status::Resolved {
                format!(
                    "{} events{} fell to {} of normal, {missing} missing over {}",
                    f.kind,
                    from(c),
                    pct(share_of(peak)),
                    dur(lasted(f))
                )
            } else {
                format!(
                    "{} events{} at {} of normal (lowest {} at {}), since {}, {missing} missing",
                    f.kind,
                    from(c),
                    pct(share_of(cur)),
                    pct(share_of(peak)),
                    clock(peak.window.end),
                    clock(began(f))
                )
            }
        }
        (None, Some(c)) => drop(c),
        (None, None) => format!("{} events dropped below normal", f.kind),
    };
    let mut s = String::new();
    what_line(&mut s, f);
    if let Some(c) = cause {
        where_line(&mut s, c, "missing events");
    }
    since_lines(&mut s, f);
    match told {
        Some((_, cur, peak, imp)) => {
            if f.status != Status::Resolved {
                let _ = writeln!(
                    s,
                    "Now: {} events in the latest {window}, {} expected, {} of normal.",
                    count(cur.events),
                    approx(cur.expected_events.unwrap_or(0.0)),
                    pct(share_of(cur))
                );
            }
            let _ = writeln!(
                s,
                "Lowest: {} of normal at {} ({} events, {} expected).",
                pct(share_of(peak)),
                clock(peak.window.end),
                count(peak.events),
                approx(peak.expected_events.unwrap_or(0.0))
            );
            let _ = writeln!(
                s,
                "Impact: {} events, {} expected, {} missing.",
                count(imp.events),
                approx(imp.expected_events.unwrap_or(0.0)),
                approx(imp.missing_events.unwrap_or(0.0))
            );
            if f.status == Status::Resolved {
                let _ = writeln!(
                    s,
                    "Ended: {} of normal in the last window.",
                    pct(share_of(cur))
                );
            }
        }
        None => {
            if let Some(c) = cause {
                let expected = expected_events(c);
                let share = if expected > 0.0 {
                    format!(", {} of normal", pct(c.events as f64 / expected))
                } else {
                    String::new()
                };
                let _ = writeln!(
                    s,
                    "Volume: {} events in the last {window}, {} expected{share}.",
                    count(c.events),
                    approx(expected)
                );
            }
        }
    }
    let others: Vec<String> = f
        .root_causes
        .iter()
        .skip(1)
        .take(MAX_CANDIDATES)
        .map(|c| {
            format!(
                "{} {} events (expected {})",
                element(&c.dims),
                count(c.events),
                approx(expected_events(c))
            )
        })
        .collect();
    candidates_line(&mut s, &others);
    next_line(&mut s, f);
    runbook_line(&mut s, f);
    (title, s.trim_end().to_string())
}

fn codes_line(s: &mut String, f: &Facts) {
    let codes: Vec<String> = f
        .episode
        .error_codes
        .iter()
        .take(3)
        .map(|c| format!("{} {}", redact::redact_all(&c.code), pct(c.share)))
        .collect();
    if !codes.is_empty() {
        let _ = writeln!(s, "Error codes: {}.", codes.join(", "));
    }
}

fn next_line(s: &mut String, f: &Facts) {
    if let Some(n) = &f.next_step {
        let _ = writeln!(s, "Check next: {n}");
    }
}

fn expected_events(c: &RootCause) -> f64 {
    c.expected_events.unwrap_or(0.0)
}

fn what_line(s: &mut String, f: &Facts) {
    let what = if f.description.trim().is_empty() {
        rule_label(&f.rule)
    } else {
        redact::redact_all(f.description.trim()).into_owned()
    };
    let _ = writeln!(
        s,
        "What: {what} [rule {}, {}, {}]",
        f.rule,
        f.severity.as_str(),
        f.status.as_str()
    );
}

fn where_line(s: &mut String, c: &RootCause, of_what: &str) {
    let dims = if c.dims.is_empty() {
        String::new()
    } else {
        let kv: Vec<String> = c
            .dims
            .iter()
            .map(|(k, v)| format!("{k}={}", redact::redact_all(v)))
            .collect();
        format!(" ({})", kv.join(", "))
    };
    let _ = writeln!(
        s,
        "Where: {}{dims}, {} of the excess {of_what}.",
        element(&c.dims),
        pct(c.score)
    );
}

fn since_lines(s: &mut String, f: &Facts) {
    let secs = f
        .window
        .end
        .signed_duration_since(f.window.start)
        .num_seconds();
    match f.episode.began_at {
        Some(b) => {
            let _ = writeln!(s, "Began: {} (opened {}).", time(b), time(f.opened_at));
        }
        None => {
            let _ = writeln!(
                s,
                "Since: {} (latest window {}, {}).",
                time(f.opened_at),
                range(f.window.start, f.window.end),
                dur(secs)
            );
        }
    }
    if f.status == Status::Resolved {
        if let Some(at) = f.resolved_at {
            let _ = writeln!(s, "Resolved: {} after {}.", time(at), dur(lasted(f)));
        }
    }
}

fn candidates_line(s: &mut String, others: &[String]) {
    if !others.is_empty() {
        let _ = writeln!(s, "Also failing: {}.", others.join("; "));
    }
}

fn runbook_line(s: &mut String, f: &Facts) {
    if let Some(rb) = &f.runbook {
        let _ = writeln!(s, "Runbook: {rb}");
    }
}

/// `auth_technical_failures` -> `auth technical failures`.
fn rule_label(rule: &str) -> String {
    rule.replace('_', " ")
}

/// The element in words: `stripe in us-west-2, BIN 414720`. Values are redacted.
fn element(dims: &BTreeMap<String, String>) -> String {
    if dims.is_empty() {
        return "all traffic".into();
    }
    let v = |k: &str| dims.get(k).map(|v| redact::redact_all(v).into_owned());
    let mut parts = Vec::new();
    let provider = v("provider");
    let region = v("region");
    match (provider, region) {
        (Some(p), Some(r)) => parts.push(format!("{p} in {r}")),
        (Some(p), None) => parts.push(p),
        (None, Some(r)) => parts.push(format!("region {r}")),
        (None, None) => {}
    }
    for (key, label) in [
        ("bin", "BIN"),
        ("merchant_id", "merchant"),
        ("card_brand", "brand"),
        ("error_code", "error"),
    ] {
        if let Some(x) = v(key) {
            parts.push(format!("{label} {x}"));
        }
    }
    for (k, x) in dims {
        let known = matches!(
            k.as_str(),
            "provider" | "region" | "bin" | "merchant_id" | "card_brand" | "error_code"
        );
        if !known {
            let name = k.strip_prefix("attrs.").unwrap_or(k);
            parts.push(format!(
                "{}={}",
                redact::redact_all(name),
                redact::redact_all(x)
            ));
        }
    }
    parts.join(", ")
}

/// A rate as a percentage with three significant digits: `40.4%`, `0.51%`.
fn pct(rate: f64) -> String {
    if !rate.is_finite() {
        return "n/a".into();
    }
    let v = rate * 100.0;
    if v == 0.0 {
        return "0%".into();
    }
    if v.abs() < 0.001 {
        return "<0.001%".into();
    }
    let magnitude = v.abs().log10().floor() as i32;
    let decimals = (2 - magnitude).clamp(0, 4) as usize;
    format!("{}%", trim(format!("{v:.decimals$}")))
}

/// How many times the baseline: `79x`, `2.4x`; none without a baseline.
fn fold(rate: f64, baseline: f64) -> Option<String> {
    if !(baseline > 0.0 && rate.is_finite() && baseline.is_finite()) {
        return None;
    }
    let x = rate / baseline;
    Some(if x >= 10.0 {
        format!("{x:.0}x")
    } else {
        format!("{}x", trim(format!("{x:.1}")))
    })
}

/// `4210` -> `4,210`.
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An expected (fractional) count: one decimal below 10, whole above.
fn approx(x: f64) -> String {
    if !x.is_finite() || x < 0.0 {
        return "n/a".into();
    }
    if x < 10.0 {
        trim(format!("{x:.1}"))
    } else {
        count(x.round() as u64)
    }
}

fn trim(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Seconds as `45s`, `5m`, `1h30m`, `2d`.
fn dur(secs: i64) -> String {
    if secs <= 0 {
        return "0s".into();
    }
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    let mut out = String::new();
    for (n, unit) in [(d, "d"), (h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            let _ = write!(out, "{n}{unit}");
        }
    }
    out
}

/// `00:24` (UTC).
fn clock(t: DateTime<Utc>) -> String {
    t.format("%H:%M").to_string()
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn range(start: DateTime<Utc>, end: DateTime<Utc>) -> String {
    if start.date_naive() == end.date_naive() {
        format!(
            "{} to {} UTC",
            start.format("%H:%M:%S"),
            end.format("%H:%M:%S")
        )
    } else {
        format!("{} to {}", time(start), time(end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::{ts, Incident, Link, RootCause, TimeRange};
    use crate::rules::RuleSet;

    const T0: i64 = 1_772_410_841_000; // 2026-03-02T00:20:41Z

    fn cause(dims: &[(&str, &str)], events: u64, failures: u64, rate: f64, base: f64) -> RootCause {
        RootCause {
            dims: dims
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            score: 0.94,
            events,
            failures,
            expected_failures: events as f64 * base,
            failure_rate: rate,
            baseline_rate: base,
            expected_events: None,
        }
    }

    fn facts(rule: &str, causes: Vec<RootCause>, window_ms: i64) -> Facts {
        let rules = RuleSet::embedded();
        let compiled = rules.get(rule).unwrap();
        let inc = Incident {
            id: "inc_1".into(),
            rule: rule.into(),
            kind: compiled.rule.kind.clone(),
            severity: compiled.rule.severity,
            status: Status::Open,
            opened_at: ts(T0),
            updated_at: ts(T0),
            resolved_at: None,
            root_causes: causes,
            window: TimeRange {
                start: ts(T0 - window_ms),
                end: ts(T0),
            },
            title: String::new(),
            summary: String::new(),
            summary_source: SummarySource::Template,
            links: vec![Link {
                title: "Dash".into(),
                url: "https://g.example.com".into(),
            }],
            prompt_version: None,
            candidates: Vec::new(),
            episode: Default::default(),
        };
        Facts::new(&inc, &compiled.rule)
    }

    #[test]
    fn rate_title_and_summary() {
        let f = facts(
            "auth_technical_failures",
            vec![
                cause(
                    &[("provider", "stripe"), ("region", "us-west-2")],
                    4210,
                    1702,
                    0.404,
                    0.0051,
                ),
                cause(
                    &[("provider", "stripe"), ("bin", "414720")],
                    900,
                    310,
                    0.344,
                    0.005,
                ),
            ],
            300_000,
        );
        let s = template(&f);
        assert_eq!(
            s.title,
            "stripe in us-west-2: auth technical failures 40.4% (baseline 0.51%)"
        );
        assert_eq!(s.source, SummarySource::Template);
        assert_eq!(s.prompt_version, None);
        let text = &s.summary;
        assert!(
            text.starts_with("What: Technical authorization failures"),
            "{text}"
        );
        assert!(
            text.contains("[rule auth_technical_failures, critical, open]"),
            "{text}"
        );
        assert!(
            text.contains("Where: stripe in us-west-2 (provider=stripe, region=us-west-2), 94% of the excess failures."),
            "{text}"
        );
        assert!(
            text.contains(
                "Since: 2026-03-02 00:20:41 UTC (latest window 00:15:41 to 00:20:41 UTC, 5m)."
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "Rate: 40.4% failing in the latest window vs 0.51% baseline (79x normal)."
            ),
            "{text}"
        );
        assert!(
            text.contains("Volume: 4,210 events, 1,702 failures, 1,681 more than the 21 expected."),
            "{text}"
        );
        assert!(
            text.contains("Also failing: stripe, BIN 414720 34.4% vs 0.5% (310 of 900 failed)."),
            "{text}"
        );
        assert!(
            text.ends_with(
                "Runbook: https://runbooks.example.com/payments/auth-technical-failures"
            ),
            "{text}"
        );
        // Deterministic.
        assert_eq!(template(&f), s);
    }

    #[test]
    fn volume_drop_title() {
        let mut c = cause(&[("provider", "adyen")], 3, 0, 0.0, 0.0);
        c.expected_events = Some(240.0);
        let f = facts("settlement_volume_drop", vec![c], 60_000);
        let s = template(&f);
        assert_eq!(
            s.title,
            "settlement events from adyen dropped to 3 in the last 1m (expected 240)"
        );
        assert!(
            s.summary
                .contains("Volume: 3 events in the last 1m, 240 expected, 1.25% of normal."),
            "{}",
            s.summary
        );
        assert!(
            s.summary.contains("94% of the excess missing events"),
            "{}",
            s.summary
        );
    }

    /// An auth outage of stripe in us-west-2 told by the engine's episode
    /// numbers at three moments: when it opened, one update later (worse),
    /// and once it resolved.
    fn episode_stages() -> Vec<(&'static str, Facts)> {
        use crate::incident::{Episode, StepCounts};
        let step = |events: u64, failures: u64, code: u64| StepCounts {
            events,
            failures,
            expected: events as f64 * 0.005,
            codes: vec![
                ("provider_5xx".into(), code, 0.0),
                ("timeout".into(), failures - code, events as f64 * 0.005),
            ],
        };
        let rules = RuleSet::embedded();
        let rule = &rules.get("auth_technical_failures").unwrap().rule;
        let stripe = [("provider", "stripe"), ("region", "us-west-2")];
        let shape = (15_000, 120_000);
        let mut ep = Episode::default();
        // The window at opening: four quiet steps, then four failing.
        let mut window: Vec<StepCounts> = (0..4).map(|_| step(520, 3, 0)).collect();
        window.extend((0..4).map(|_| step(525, 212, 190)));
        let opened = vec![cause(&stripe, 4180, 860, 0.2057, 0.005)];
        ep.advance(T0, shape, &window, &opened, false);
        let mut out = Vec::new();
        let mut f = facts("auth_technical_failures", opened, 120_000);
        f.episode = ep.clone();
        f.next_step = super::super::next_step(&f);
        out.push(("open", f));
        // Four steps later the window is full of the outage, and worse.
        let worse = vec![cause(&stripe, 4240, 1917, 0.4521, 0.005)];
        for k in 1..=4 {
            ep.advance(
                T0 + k * 15_000,
                shape,
                &[step(530, 240, 214)],
                &worse,
                false,
            );
        }
        let mut inc_facts = facts("auth_technical_failures", worse, 120_000);
        inc_facts.updated_at = ts(T0 + 60_000);
        inc_facts.window = TimeRange {
            start: ts(T0 + 60_000 - 120_000),
            end: ts(T0 + 60_000),
        };
        inc_facts.episode = ep.clone();
        inc_facts.next_step = super::super::next_step(&inc_facts);
        out.push(("updated", inc_facts));
        // It ends: failures back to the baseline; resolved eight steps on.
        let calm = vec![cause(&stripe, 4200, 25, 0.006, 0.005)];
        for k in 5..=20 {
            let fails = if k <= 12 { 200 } else { 3 };
            ep.advance(
                T0 + k * 15_000,
                shape,
                &[step(525, fails, fails.min(180))],
                &calm,
                false,
            );
        }
        let mut done = facts("auth_technical_failures", calm, 120_000);
        done.status = Status::Resolved;
        done.updated_at = ts(T0 + 300_000);
        done.resolved_at = Some(ts(T0 + 300_000));
        done.episode = ep;
        done.next_step = super::super::next_step(&done);
        let _ = rule;
        out.push(("resolved", done));
        out
    }

    /// Golden files of the open, updated and resolved summaries
    /// (`tests/golden/summary/*.txt`); `UPDATE_GOLDEN=1` rewrites them.
    #[test]
    fn golden_summaries_open_updated_resolved() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/summary");
        for (name, f) in episode_stages() {
            let s = template(&f);
            let text = format!("{}\n\n{}\n", s.title, s.summary);
            let path = dir.join(format!("{name}.txt"));
            if std::env::var_os("UPDATE_GOLDEN").is_some() {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &text).unwrap();
            }
            let want = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
            assert_eq!(text, want, "{name} summary differs from {}", path.display());
        }
    }

    /// Every number in a title or summary is one of the incident's fields:
    /// the LLM validator's faithfulness check accepts the template's text.
    #[test]
    fn every_number_of_the_episode_summaries_traces_to_a_field() {
        use crate::summarize::llm::{prompt::PromptFacts, validate};
        for (name, f) in episode_stages() {
            let s = template(&f);
            let pf = PromptFacts::from_facts(&f);
            let answer = serde_json::json!({
                "title": s.title.chars().take(validate::MAX_TITLE).collect::<String>(),
                "summary": s
                    .summary
                    .lines()
                    .filter(|l| !["Check next", "What:", "Runbook:"].iter().any(|p| l.starts_with(p)))
                    .collect::<Vec<_>>()
                    .join(" ")
                    .chars()
                    .take(validate::MAX_SUMMARY)
                    .collect::<String>(),
                "impact": "See the counts above.",
                "root_cause": {"candidate_ids": ["c1"], "assessment": "c1 holds the failures.", "confidence": "high"},
                "next_checks": []
            });
            let r = validate::validate(&answer.to_string(), &f, &pf);
            assert!(r.is_ok(), "{name}: {r:?}\n{}\n{}", s.title, s.summary);
            // A peak or an impact the facts do not hold is refused.
            for invented in [
                "It peaked at 97.3% at 00:24.",
                "It cost 51,234 failed payments.",
            ] {
                let mut bad = answer.clone();
                bad["impact"] = serde_json::json!(invented);
                let r = validate::validate(&bad.to_string(), &f, &pf);
                assert!(r.is_err(), "{name}: `{invented}` passed");
            }
        }
    }

    #[test]
    fn a_resolved_summary_never_says_now() {
        let (_, f) = episode_stages().pop().unwrap();
        let s = template(&f);
        let text = format!("{} {}", s.title, s.summary).to_lowercase();
        assert!(!text.contains("now"), "{text}");
        assert!(s.title.contains("peaked at"), "{}", s.title);
    }

    #[test]
    fn resolved_says_how_long_it_lasted() {
        let mut f = facts(
            "auth_technical_failures",
            vec![cause(&[("region", "eu-west-1")], 100, 50, 0.5, 0.01)],
            120_000,
        );
        f.status = Status::Resolved;
        f.resolved_at = Some(ts(T0 + 750_000));
        let s = template(&f);
        assert!(s.title.starts_with("region eu-west-1: "), "{}", s.title);
        assert!(
            s.summary
                .contains("Resolved: 2026-03-02 00:33:11 UTC after 12m30s."),
            "{}",
            s.summary
        );
    }

    #[test]
    fn card_numbers_never_reach_the_text() {
        let f = facts(
            "auth_technical_failures",
            vec![cause(
                &[
                    ("merchant_id", "m-4111111111111111"),
                    ("attrs.note", "4111 1111 1111 1111"),
                ],
                100,
                50,
                0.5,
                0.01,
            )],
            120_000,
        );
        assert!(!f.root_causes[0]
            .dims
            .values()
            .any(|v| v.contains("41111111")));
        let s = template(&f);
        for text in [&s.title, &s.summary] {
            assert!(!text.contains("4111111111111111"), "{text}");
            assert!(!text.contains("4111 1111 1111 1111"), "{text}");
            assert!(text.contains(redact::PAN_MASK), "{text}");
        }
    }

    #[test]
    fn no_root_cause_still_reads() {
        let f = facts("auth_technical_failures", vec![], 120_000);
        let s = template(&f);
        assert_eq!(s.title, "auth technical failures above baseline");
        assert!(s.summary.contains("Since:"));
    }

    #[test]
    fn number_formats() {
        assert_eq!(pct(0.404), "40.4%");
        assert_eq!(pct(0.0051), "0.51%");
        assert_eq!(pct(1.0), "100%");
        assert_eq!(pct(0.0), "0%");
        assert_eq!(pct(0.000_000_1), "<0.001%");
        assert_eq!(pct(f64::NAN), "n/a");
        assert_eq!(fold(0.404, 0.0051).as_deref(), Some("79x"));
        assert_eq!(fold(0.024, 0.01).as_deref(), Some("2.4x"));
        assert_eq!(fold(0.02, 0.01).as_deref(), Some("2x"));
        assert_eq!(fold(0.5, 0.0), None);
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(approx(21.4), "21");
        assert_eq!(approx(2.35), "2.4");
        assert_eq!(dur(60), "1m");
        assert_eq!(dur(5400), "1h30m");
        assert_eq!(dur(45), "45s");
    }
}
