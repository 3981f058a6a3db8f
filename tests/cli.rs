//! CLI integration tests: the real binary on generated scenarios and files.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use faultline::incident::Incident;
use faultline::ingest::generator::{Generator, Scenario};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_faultline"))
}

fn write_scenario(
    dir: &std::path::Path,
    seed: u64,
    hours: f64,
    rate: f64,
) -> (std::path::PathBuf, Scenario) {
    let sc = Scenario::standard(seed, (hours * 3_600_000.0) as i64, rate);
    let path = dir.join("events.ndjson");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for line in Generator::new(&sc).unwrap() {
        f.write_all(line.text.as_bytes()).unwrap();
        f.write_all(b"\n").unwrap();
    }
    f.flush().unwrap();
    (path, sc)
}

fn replay(path: &std::path::Path, extra: &[&str]) -> (Vec<Incident>, serde_json::Value, i32) {
    let out = bin()
        .args(["replay", "--events"])
        .arg(path)
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let incidents = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad incident line {l}: {e}")))
        .collect();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let report = stderr
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or(serde_json::Value::Null);
    (incidents, report, out.status.code().unwrap_or(-1))
}

#[test]
fn replay_finds_every_injected_fault_with_its_root_cause_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let (path, sc) = write_scenario(dir.path(), 11, 1.6, 80.0);
    let labels = sc.labels();
    assert!(
        labels.faults.len() >= 3,
        "scenario too short: {:?}",
        labels.faults
    );
    let (incidents, report, code) = replay(&path, &[]);
    assert_eq!(code, 0);
    assert!(
        report["events_read"].as_u64().unwrap() > 100_000,
        "{report}"
    );
    assert!(
        report["rejected"]["duplicate"].as_u64().unwrap() > 0,
        "{report}"
    );
    for f in &labels.faults {
        let hit = incidents.iter().find(|i| {
            i.rule == f.rule
                && i.opened_at >= f.start
                && i.opened_at <= f.end + chrono::Duration::minutes(5)
        });
        let hit =
            hit.unwrap_or_else(|| panic!("fault {f:?} not detected; incidents: {incidents:#?}"));
        assert_eq!(
            hit.root_causes[0].dims, f.dims,
            "fault {} localized wrong",
            f.id
        );
        assert!(!hit.title.is_empty() && !hit.summary.is_empty());
        assert!(hit.links.iter().all(|l| l.url.starts_with("https://")));
    }
    assert_eq!(
        incidents.len(),
        labels.faults.len(),
        "extra incidents: {incidents:#?}"
    );
}

#[test]
fn replay_reads_stdin_and_counts_bad_lines() {
    let mut child = bin()
        .args(["replay", "--events", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = "{\"id\":\"a\",\"ts\":\"2026-03-02T00:00:00Z\",\"kind\":\"auth\",\"outcome\":\"success\",\"provider\":\"p\",\"region\":\"r\"}\nnot json\n{\"id\":\"a\",\"ts\":\"2026-03-02T00:00:01Z\",\"kind\":\"auth\",\"outcome\":\"success\",\"provider\":\"p\",\"region\":\"r\"}\n\n";
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let report: serde_json::Value = serde_json::from_slice(out.stderr.trim_ascii()).unwrap();
    assert_eq!(report["events_read"], 3);
    assert_eq!(report["accepted"], 1);
    assert_eq!(report["rejected"]["invalid_json"], 1);
    assert_eq!(report["rejected"]["duplicate"], 1);
}

#[test]
fn replay_with_unusable_rules_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), "rules:\n  - name: x\n").unwrap();
    let events = dir.path().join("e.ndjson");
    std::fs::write(&events, "").unwrap();
    let out = bin()
        .args(["replay", "--events"])
        .arg(&events)
        .arg("--rules")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let missing = bin()
        .args(["replay", "--events", "/nonexistent/file.ndjson"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn rules_check_names_file_rule_and_field() {
    let ok = bin()
        .args(["rules", "check"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("team.yaml"),
        "rules:\n  - name: team_auth\n    kind: auth\n    dimensions: [provider]\n    window: 5m\n    step: 30s\n    severity: critical\n    treshold: 3\n",
    )
    .unwrap();
    let out = bin()
        .args(["rules", "check"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("team.yaml") && err.contains("team_auth") && err.contains("treshold"),
        "{err}"
    );
}

#[test]
fn rca_prints_the_root_cause_set() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("a,b,c,real,predict\n");
    for a in 1..=4 {
        for b in 1..=5 {
            for c in 1..=3 {
                let real = if a == 3 { 250.0 } else { 100.0 };
                csv.push_str(&format!("a{a},b{b},c{c},{real},100\n"));
            }
        }
    }
    let path = dir.path().join("case.csv");
    std::fs::write(&path, csv).unwrap();
    let out = bin().arg("rca").arg(&path).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first: BTreeMap<String, String> =
        serde_json::from_value(v["root_causes"][0]["dims"].clone()).unwrap();
    assert_eq!(first, BTreeMap::from([("a".to_string(), "a3".to_string())]));
    assert_eq!(v["root_causes"].as_array().unwrap().len(), 1);
}

#[test]
fn gen_family_writes_labels_with_every_element() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["gen", "--family", "multi_same_parent", "--seed", "4"])
        .args(["--duration", "80m", "--rate", "10", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let labels: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("labels.json")).unwrap())
            .unwrap();
    assert_eq!(labels["family"], "multi_same_parent");
    let faults = labels["faults"].as_array().unwrap();
    assert!(!faults.is_empty());
    for f in faults {
        assert_eq!(f["type"], "multi_same_parent");
        assert!(f["elements"].as_array().unwrap().len() >= 2, "{f}");
        assert_eq!(f["elements"][0], f["dims"]);
    }
    let unknown = bin()
        .args(["eval", "--family", "cause_planet"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
}

#[test]
fn eval_family_prints_a_verdict_and_a_json_line_per_family() {
    let out = bin()
        .args(["eval", "--family", "cause_bin", "--seed", "3"])
        .args(["--duration", "1h", "--rate", "30", "--details"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("expected elements"), "{stdout}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with("cause_bin "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(row.contains("PASS") || row.contains("FAIL"), "{row}");
    let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(json["family"], "cause_bin");
    assert_eq!(json["faults"], 1);
    assert!(json["pass"].is_boolean());
}
