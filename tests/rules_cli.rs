//! `faultline rules test`, `backtest` and `explain` through the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_faultline"))
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn shipped_tests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("rules/tests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn rules_test(files: &[PathBuf]) -> Output {
    bin()
        .args(["rules", "test"])
        .args(files)
        .current_dir(root())
        .output()
        .unwrap()
}

#[test]
fn shipped_rules_pass_their_own_tests_and_every_rule_is_tested() {
    let files = shipped_tests();
    let out = rules_test(&files);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    // Every shipped rule has a test that expects it to fire and one that expects quiet.
    let all: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    for rule in faultline::rules::RuleSet::embedded().rules {
        let name = &rule.rule.name;
        assert!(
            all.contains(&format!("rule: {name}")),
            "no firing test for {name}"
        );
        let quiet = all
            .lines()
            .filter(|l| l.contains("expect_no_incidents_for"))
            .any(|l| l.contains(name.as_str()));
        assert!(quiet, "no quiet test for {name}");
    }
}

#[test]
fn a_broken_expectation_fails_with_a_readable_diff() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(root().join("rules/tests/auth.yaml")).unwrap();
    // Point at the shipped rule file from the temporary folder, and expect the
    // outage on the wrong region.
    let rules = root().join("rules/auth.yaml");
    let broken = shipped
        .replace("[../auth.yaml]", &format!("[\"{}\"]", rules.display()))
        .replacen(
            "dims: {provider: stripe, region: eu-west-1}\n        opened_at",
            "dims: {provider: stripe, region: us-east-1}\n        opened_at",
            1,
        );
    assert_ne!(broken, shipped);
    let file = dir.path().join("broken.yaml");
    std::fs::write(&file, broken).unwrap();
    let out = rules_test(&[file]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  a provider down in one region"),
        "{stdout}"
    );
    assert!(stdout.contains("PASS  an issuer outage"), "{stdout}");
    assert!(
        stdout.contains("- rule=auth_technical_failures dims={provider=stripe, region=us-east-1} opened_at=25m30s"),
        "{stdout}"
    );
    assert!(
        stdout.contains("+ rule=auth_technical_failures dims={provider=stripe, region=eu-west-1} opened_at=25m30s resolved_at=33m45s"),
        "{stdout}"
    );
    assert!(stdout.contains("1 failed"), "{stdout}");
}

#[test]
fn unusable_test_files_exit_2_and_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.yaml");
    std::fs::write(
        &typo,
        "rule_files: [x.yaml]\ntests:\n  - name: t\n    input_serie: []\n",
    )
    .unwrap();
    let out = rules_test(&[typo]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("input_serie"), "{stdout}");

    let missing = dir.path().join("missing.yaml");
    std::fs::write(
        &missing,
        "rule_files: [nope.yaml]\ntests:\n  - input_series: []\n    expect_no_incidents_for: [x]\n",
    )
    .unwrap();
    let out = rules_test(&[missing]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stdout).contains("nope.yaml"));
}

/// A generated scenario (the standard faults) written as NDJSON.
fn scenario(dir: &Path) -> PathBuf {
    use faultline::ingest::generator::{Generator, Scenario};
    use std::io::Write;
    // A generated day: 1.4 M events, 42 injected faults, 24 quiet cases.
    let sc = Scenario::standard(5, 24 * 3_600_000, 15.0);
    let path = dir.join("events.ndjson");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for line in Generator::new(&sc).unwrap() {
        f.write_all(line.text.as_bytes()).unwrap();
        f.write_all(b"\n").unwrap();
    }
    f.flush().unwrap();
    path
}

fn incidents(stdout: &[u8]) -> Vec<serde_json::Value> {
    text(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}")))
        .collect()
}

#[test]
fn backtest_of_a_day_matches_replay_and_a_stricter_copy_removes_incidents() {
    let dir = tempfile::tempdir().unwrap();
    let events = scenario(dir.path());
    let rules = root().join("rules");

    let replay = bin()
        .args(["replay", "--rules"])
        .arg(&rules)
        .arg("--events")
        .arg(&events)
        .output()
        .unwrap();
    assert!(replay.status.success());
    let backtest = bin()
        .args(["backtest", "--json", "--rules"])
        .arg(&rules)
        .arg("--events")
        .arg(&events)
        .output()
        .unwrap();
    assert!(backtest.status.success(), "{}", text(&backtest.stderr));
    let replayed = incidents(&replay.stdout);
    assert!(replayed.len() >= 20, "scenario too quiet: {replayed:?}");
    assert_eq!(incidents(&backtest.stdout), replayed);

    let table = bin()
        .args(["backtest", "--rules"])
        .arg(&rules)
        .arg("--events")
        .arg(&events)
        .output()
        .unwrap();
    let table = text(&table.stdout);
    assert!(
        table.contains(&format!("{} incident(s)", replayed.len())),
        "{table}"
    );

    // A much stricter copy of the shipped rules: lift 50 and a tiny false-alarm rate.
    let strict = dir.path().join("strict");
    std::fs::create_dir(&strict).unwrap();
    for f in ["auth.yaml", "settlement.yaml", "webhook.yaml"] {
        let t = std::fs::read_to_string(rules.join(f)).unwrap();
        let t = t
            .replace(
                "false_alarm_rate: 0.0001",
                "false_alarm_rate: 0.000000000001",
            )
            .replace("min_lift: 2.0", "min_lift: 50.0")
            .replace("min_lift: 3.0", "min_lift: 50.0");
        std::fs::write(strict.join(f), t).unwrap();
    }
    let diff = bin()
        .args(["backtest", "--json", "--rules"])
        .arg(&strict)
        .arg("--against")
        .arg(&rules)
        .arg("--events")
        .arg(&events)
        .output()
        .unwrap();
    assert!(diff.status.success(), "{}", text(&diff.stderr));
    let entries = incidents(&diff.stdout);
    let removed: Vec<_> = entries
        .iter()
        .filter(|e| e["change"] == "removed")
        .collect();
    assert!(!removed.is_empty(), "{entries:?}");
    assert!(
        entries.iter().all(|e| e["change"] != "added"),
        "stricter rules added incidents: {entries:?}"
    );
    for r in &removed {
        assert!(r["after"].is_null());
        assert_eq!(r["before"]["rule"], r["rule"]);
    }
    // The human table says the same.
    let human = bin()
        .args(["backtest", "--rules"])
        .arg(&strict)
        .arg("--against")
        .arg(&rules)
        .arg("--events")
        .arg(&events)
        .output()
        .unwrap();
    let human = text(&human.stdout);
    assert!(
        human.contains(&format!("0 added, {} removed", removed.len())),
        "{human}"
    );
    assert!(human.lines().any(|l| l.starts_with("- ")), "{human}");
}

#[test]
fn backtest_with_unusable_rules_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), "rules:\n  - name: x\n").unwrap();
    let events = dir.path().join("e.ndjson");
    std::fs::write(&events, "").unwrap();
    let out = bin()
        .args(["backtest", "--rules"])
        .arg(dir.path())
        .arg("--events")
        .arg(&events)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("bad.yaml"));
}

#[test]
fn explain_shows_why_an_incident_opened_and_why_a_quiet_step_did_not_fire() {
    let dir = tempfile::tempdir().unwrap();
    let events = scenario(dir.path());
    let replay = bin()
        .args(["replay", "--events"])
        .arg(&events)
        .current_dir(root())
        .output()
        .unwrap();
    let incidents = incidents(&replay.stdout);
    let inc = incidents
        .iter()
        .find(|i| i["rule"] == "auth_technical_failures")
        .expect("the scenario has an auth incident");
    let dims: Vec<String> = inc["root_causes"][0]["dims"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
        .collect();
    let explain = |at: &str| {
        let out = bin()
            .args([
                "explain",
                "--json",
                "--rule",
                "auth_technical_failures",
                "--at",
                at,
            ])
            .arg("--dims")
            .arg(dims.join(","))
            .arg("--events")
            .arg(&events)
            .current_dir(root())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    // The step that opened it ends at opened_at: a time just before is inside it.
    let opened = chrono::DateTime::parse_from_rfc3339(inc["opened_at"].as_str().unwrap()).unwrap();
    let at = (opened - chrono::Duration::seconds(1)).to_rfc3339();
    let e = explain(&at);
    assert_eq!(e["warm"], true, "{e}");
    assert_eq!(e["chosen"], true, "{e}");
    for c in e["conditions"].as_array().unwrap() {
        assert_eq!(c["held"], true, "{e}");
    }
    assert!(e["statistic"].as_f64().unwrap() >= e["threshold"].as_f64().unwrap());
    assert_eq!(e["open_incidents"][0]["id"], inc["id"], "{e}");

    // Ten minutes before it opened (and after the warm-up), nothing was wrong.
    let quiet = (opened - chrono::Duration::minutes(10)).to_rfc3339();
    let e = explain(&quiet);
    assert_eq!(e["chosen"], false, "{e}");
    let sig = e["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "significance")
        .unwrap();
    assert_eq!(sig["held"], false, "{e}");
    assert!(e["open_incidents"].as_array().unwrap().is_empty(), "{e}");

    // An element the rule cannot have is an error, exit 2.
    let out = bin()
        .args([
            "explain",
            "--rule",
            "auth_technical_failures",
            "--at",
            &at,
            "--dims",
            "merchant_id=m1",
            "--events",
        ])
        .arg(&events)
        .current_dir(root())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("merchant_id"));
}

/// A provider that fails 20% every night 02:00-03:00 UTC (its maintenance
/// window) and once, on the last day, at 14:00-15:00: a rule test with and
/// without `baseline.seasonality: daily`.
fn nightly_maintenance_test(dir: &Path, seasonality: &str) -> PathBuf {
    let name = if seasonality.is_empty() {
        "plain"
    } else {
        "seasonal"
    };
    std::fs::write(
        dir.join(format!("{name}.yaml")),
        format!(
            "rules:\n  - name: nightly\n    kind: auth\n    dimensions: [provider, region]\n    window: 10m\n    step: 1m\n    baseline: {{horizon: 1h, warmup: 30m{seasonality}}}\n    thresholds: {{min_events: 40, min_failures: 10, min_lift: 2.0, min_rate_increase: 0.02}}\n    open_after: 2\n    resolve_after: 5\n    severity: critical\n"
        ),
    )
    .unwrap();
    let night = "1x120 8x60 1x1260";
    let failures = format!("{night} {night} {night} {night} 1x120 8x60 1x660 8x60 1x60");
    let opened: &[&str] = if seasonality.is_empty() {
        &["2h4m", "26h4m", "50h4m", "74h4m", "98h4m", "110h4m"]
    } else {
        // The first two nights teach the slot; then only the outage pages.
        // (Opening takes a third step: the failures must clear the rule's
        // edge of normal significantly, not only the baseline.)
        &["2h4m", "26h4m", "110h4m"]
    };
    let expect: String = opened
        .iter()
        .map(|t| {
            format!(
                "      - rule: nightly\n        dims: {{provider: b}}\n        opened_at: {t}\n"
            )
        })
        .collect();
    let file = dir.join(format!("{name}_test.yaml"));
    std::fs::write(
        &file,
        format!(
            "rule_files: [{name}.yaml]\ninterval: 1m\nstart: 2026-03-02T00:00:00Z\ntests:\n  - name: {name} nightly maintenance\n    input_series:\n      - kind: auth\n        dims: {{provider: [a, b], region: [r1, r2]}}\n        attempts: 40x6720\n      - kind: auth\n        dims: {{provider: b, region: [r1, r2]}}\n        attempts: 40x6720\n        failures: {failures}\n    expect_incidents:\n{expect}"
        ),
    )
    .unwrap();
    file
}

#[test]
fn a_daily_season_stops_a_nightly_maintenance_window_paging_but_not_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let plain = nightly_maintenance_test(dir.path(), "");
    let seasonal = nightly_maintenance_test(dir.path(), ", seasonality: daily");
    let out = rules_test(&[plain, seasonal]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("2 passed"), "{stdout}");
}
