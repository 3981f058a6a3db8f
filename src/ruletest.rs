//! `faultline rules test`: rule unit tests, in the spirit of `promtool test rules`.
//!
//! A test file names the rule files to load and holds test groups. Each group
//! describes traffic per cell as series in a compact expanding notation, runs it
//! through the real [`Engine`] over the real [`RuleSet`] (so a test exercises
//! exactly what production runs), and compares the incidents it opens with the
//! expected ones. The format is documented in `rules/README.md`.
//!
//! Series notation, one value per step, separated by spaces:
//! `V` one value; `VxN` the value `V` for `N` steps; `A+BxN` / `A-BxN` `N` steps
//! starting at `A` and moving by `B` each step; `_` a step without events.
//! Unlike promtool, `VxN` is exactly `N` values, not `N + 1`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::engine::{Engine, EngineOptions};
use crate::event::{Event, Outcome};
use crate::incident::{Change, Incident};
use crate::rules::{parse_duration, RuleSet};

/// Default start of the synthetic series (aligned to every step length).
pub const DEFAULT_START: &str = "2026-01-01T00:00:00Z";

/// One test file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// Rule files to load, relative to the test file's folder.
    pub rule_files: Vec<String>,
    /// Step of the input series (default: the shortest rule step).
    #[serde(default)]
    pub interval: Option<String>,
    /// RFC 3339 time of the first step (default [`DEFAULT_START`]); offsets count from it.
    #[serde(default)]
    pub start: Option<String>,
    /// The test groups.
    pub tests: Vec<TestGroup>,
}

/// One test group: input series and what must (not) fire.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestGroup {
    /// Shown in the output.
    #[serde(default)]
    pub name: String,
    /// Step of this group's series (overrides the file's).
    #[serde(default)]
    pub interval: Option<String>,
    /// How long to evaluate (default: the longest series).
    #[serde(default)]
    pub evaluate_for: Option<String>,
    /// Traffic per cell. A later series for the same cell replaces an earlier one,
    /// so a background grid can be followed by the faulty cell.
    pub input_series: Vec<Series>,
    /// Incidents that must open, exactly these for every rule named here.
    #[serde(default)]
    pub expect_incidents: Vec<ExpectedIncident>,
    /// Rules that must open no incident at all.
    #[serde(default)]
    pub expect_no_incidents_for: Vec<String>,
}

/// A dimension value or a list of them (a list expands to one cell per value).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One value.
    One(String),
    /// Several values: the series applies to each.
    Many(Vec<String>),
}

impl OneOrMany {
    fn values(&self) -> Vec<String> {
        match self {
            OneOrMany::One(v) => vec![v.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// Traffic of one cell (or of every cell in the product of listed values).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Series {
    /// Event kind (`auth`, `settlement`, `webhook`, ...).
    pub kind: String,
    /// Dimension values, keyed as in rules (`provider`, `bin`, `attrs.NAME`, ...).
    /// `provider` and `region` default to `none` (events require them).
    pub dims: BTreeMap<String, OneOrMany>,
    /// Attempts per step, expanding notation.
    pub attempts: String,
    /// Technical failures (`failure`) per step, part of the attempts (default 0).
    #[serde(default)]
    pub failures: Option<String>,
    /// Business declines (`decline`) per step, part of the attempts (default 0).
    #[serde(default)]
    pub declines: Option<String>,
}

/// An incident the group must open.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedIncident {
    /// The rule.
    pub rule: String,
    /// The first root cause's dimensions, exactly.
    pub dims: BTreeMap<String, String>,
    /// Offset from the start when it opens (the end of the step that opened it).
    pub opened_at: String,
    /// Offset when it resolves, or `never` (still open at the end); unchecked when absent.
    #[serde(default)]
    pub resolved_at: Option<String>,
}

/// Outcome of one test group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupResult {
    /// Group name.
    pub name: String,
    /// True when every expectation held.
    pub passed: bool,
    /// The diff, empty on success.
    pub diff: String,
}

/// Outcome of one test file.
#[derive(Debug, Clone)]
pub enum FileResult {
    /// It ran; one result per group.
    Ran(Vec<GroupResult>),
    /// It could not be used (parse error, missing rule file, bad notation).
    Unusable(String),
}

/// An incident reduced to what tests compare.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    rule: String,
    opened_ms: i64,
    dims: BTreeMap<String, String>,
    resolved_ms: Option<i64>,
}

/// Expands the series notation into one value per step.
pub fn expand(notation: &str) -> Result<Vec<Option<u32>>, String> {
    let mut out = Vec::new();
    for tok in notation.split_whitespace() {
        if tok == "_" {
            out.push(None);
            continue;
        }
        let bad = || format!("`{tok}`: expected V, VxN, A+BxN, A-BxN or _");
        let (head, times) = match tok.split_once('x') {
            Some((h, n)) => (h, n.parse::<u32>().map_err(|_| bad())?),
            None => (tok, 1),
        };
        if times == 0 || times > 100_000 {
            return Err(format!("`{tok}`: repeat count must be 1..100000"));
        }
        let (start, delta) = if let Some((a, b)) = head.split_once('+') {
            (a, b.parse::<i64>().map_err(|_| bad())?)
        } else if let Some((a, b)) = head.split_once('-') {
            (a, -b.parse::<i64>().map_err(|_| bad())?)
        } else {
            (head, 0)
        };
        let start: i64 = start.parse().map_err(|_| bad())?;
        for i in 0..times as i64 {
            let v = start + delta * i;
            let v = u32::try_from(v)
                .ok()
                .filter(|v| *v <= 1_000_000)
                .ok_or_else(|| format!("`{tok}`: value {v} outside 0..1000000"))?;
            out.push(Some(v));
        }
    }
    if out.is_empty() {
        return Err("empty series".into());
    }
    Ok(out)
}

fn duration_ms(s: &str, what: &str) -> Result<i64, String> {
    parse_duration(s)
        .map(|d| d.as_millis() as i64)
        .ok_or_else(|| format!("{what}: `{s}` is not a duration like 30s, 5m, 1h30m"))
}

/// Formats an offset as the shortest duration (`32m15s`, `0s`).
pub fn fmt_offset(ms: i64) -> String {
    if ms < 0 {
        return format!("-{}", fmt_offset(-ms));
    }
    let mut out = String::new();
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, msr) = (rest / 1000, rest % 1000);
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if m > 0 {
        let _ = write!(out, "{m}m");
    }
    if s > 0 {
        let _ = write!(out, "{s}s");
    }
    if msr > 0 {
        let _ = write!(out, "{msr}ms");
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

/// Runs every test file and prints promtool-style output to `w`. Returns the exit
/// code: 0 when all pass, 1 on any failure, 2 when a file is unusable.
pub fn run_files(paths: &[PathBuf], w: &mut impl std::io::Write) -> u8 {
    let (mut passed, mut failed, mut unusable) = (0, 0, 0);
    for path in paths {
        let shown = path.display();
        let _ = writeln!(w, "Unit testing: {shown}");
        match run_file(path) {
            FileResult::Unusable(e) => {
                unusable += 1;
                let _ = writeln!(w, "  ERROR {e}");
            }
            FileResult::Ran(groups) => {
                for g in groups {
                    if g.passed {
                        passed += 1;
                        let _ = writeln!(w, "  PASS  {}", g.name);
                    } else {
                        failed += 1;
                        let _ = writeln!(w, "  FAIL  {}", g.name);
                        let _ = write!(w, "{}", g.diff);
                    }
                }
            }
        }
    }
    let _ = writeln!(
        w,
        "{passed} passed, {failed} failed, {unusable} unusable file(s)"
    );
    if unusable > 0 {
        2
    } else if failed > 0 {
        1
    } else {
        0
    }
}

/// Runs one test file.
pub fn run_file(path: &Path) -> FileResult {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return FileResult::Unusable(format!("cannot read: {e}")),
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    match parse_and_run(&text, dir) {
        Ok(groups) => FileResult::Ran(groups),
        Err(e) => FileResult::Unusable(e),
    }
}

/// Parses a test file's text (rule files resolved against `dir`) and runs it.
pub fn parse_and_run(text: &str, dir: &Path) -> Result<Vec<GroupResult>, String> {
    let de = serde_norway::Deserializer::from_str(text);
    let file: TestFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        format!("field {path}: {}", e.into_inner())
    })?;
    if file.rule_files.is_empty() {
        return Err("rule_files: name at least one rule file".into());
    }
    let mut sources = Vec::new();
    for f in &file.rule_files {
        let p = dir.join(f);
        let t = std::fs::read_to_string(&p)
            .map_err(|e| format!("rule_files: cannot read {}: {e}", p.display()))?;
        sources.push((p.display().to_string(), t));
    }
    let rules = RuleSet::from_sources(&sources).map_err(|errs| {
        errs.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let start_text = file.start.as_deref().unwrap_or(DEFAULT_START);
    let start_ms = chrono::DateTime::parse_from_rfc3339(start_text)
        .map_err(|e| format!("start: `{start_text}`: {e}"))?
        .timestamp_millis();
    let mut out = Vec::new();
    for (i, g) in file.tests.iter().enumerate() {
        let name = if g.name.is_empty() {
            format!("#{}", i + 1)
        } else {
            g.name.clone()
        };
        let interval = g.interval.as_ref().or(file.interval.as_ref());
        let result = run_group(g, &name, &rules, start_ms, interval)
            .map_err(|e| format!("test {name}: {e}"))?;
        out.push(result);
    }
    if out.is_empty() {
        return Err("tests: no test groups".into());
    }
    Ok(out)
}

/// A cell's series, expanded.
struct Cell {
    kind: String,
    dims: BTreeMap<String, String>,
    attempts: Vec<Option<u32>>,
    failures: Vec<Option<u32>>,
    declines: Vec<Option<u32>>,
}

fn expand_cells(g: &TestGroup) -> Result<Vec<Cell>, String> {
    let mut cells: Vec<Cell> = Vec::new();
    for (i, s) in g.input_series.iter().enumerate() {
        let at = |e: String| format!("input_series[{i}]: {e}");
        let attempts = expand(&s.attempts).map_err(|e| at(format!("attempts: {e}")))?;
        let opt = |n: &Option<String>, what: &str| match n {
            Some(n) => expand(n).map_err(|e| at(format!("{what}: {e}"))),
            None => Ok(Vec::new()),
        };
        let failures = opt(&s.failures, "failures")?;
        let declines = opt(&s.declines, "declines")?;
        for (step, a) in attempts.iter().enumerate() {
            let a = a.unwrap_or(0);
            let f = failures.get(step).copied().flatten().unwrap_or(0);
            let d = declines.get(step).copied().flatten().unwrap_or(0);
            if f + d > a {
                return Err(at(format!(
                    "step {step}: {f} failures + {d} declines exceed {a} attempts"
                )));
            }
        }
        if failures.len() > attempts.len() || declines.len() > attempts.len() {
            return Err(at("failures or declines longer than attempts".into()));
        }
        // The cartesian product of listed values.
        let mut combos: Vec<BTreeMap<String, String>> = vec![BTreeMap::new()];
        for (k, v) in &s.dims {
            if crate::rules::Dim::parse(k).is_none() {
                return Err(at(format!("dims: unknown dimension `{k}`")));
            }
            let values = v.values();
            if values.is_empty() {
                return Err(at(format!("dims.{k}: empty list")));
            }
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.insert(k.clone(), v.clone());
                        c
                    })
                })
                .collect();
        }
        for dims in combos {
            let cell = Cell {
                kind: s.kind.clone(),
                dims,
                attempts: attempts.clone(),
                failures: failures.clone(),
                declines: declines.clone(),
            };
            // Production would reject what validation rejects: so do tests.
            check_event(&cell).map_err(at)?;
            match cells
                .iter_mut()
                .find(|c| c.kind == cell.kind && c.dims == cell.dims)
            {
                Some(old) => *old = cell,
                None => cells.push(cell),
            }
        }
    }
    Ok(cells)
}

/// Builds an event for a cell at a time; values are validated by [`check_event`].
fn event(cell: &Cell, id: String, ts_ms: i64, outcome: Outcome) -> Event {
    let get = |k: &str| cell.dims.get(k).cloned();
    Event {
        id,
        ts_ms,
        kind: cell.kind.clone(),
        outcome,
        provider: get("provider").unwrap_or_else(|| "none".into()),
        region: get("region").unwrap_or_else(|| "none".into()),
        bin: get("bin"),
        merchant_id: get("merchant_id"),
        card_brand: get("card_brand"),
        error_code: get("error_code"),
        latency_ms: None,
        message: None,
        attrs: cell
            .dims
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("attrs.")?.to_string(), v.clone())))
            .collect(),
    }
}

/// Runs one sample event of the cell through schema validation.
fn check_event(cell: &Cell) -> Result<(), String> {
    let e = event(cell, "check".into(), 0, Outcome::Success);
    let mut v = serde_json::json!({
        "id": e.id, "ts": "2026-01-01T00:00:00Z", "kind": e.kind, "outcome": "success",
        "provider": e.provider, "region": e.region,
    });
    for (k, val) in [
        ("bin", &e.bin),
        ("merchant_id", &e.merchant_id),
        ("card_brand", &e.card_brand),
        ("error_code", &e.error_code),
    ] {
        if let Some(val) = val {
            v[k] = serde_json::Value::String(val.clone());
        }
    }
    if !e.attrs.is_empty() {
        v["attrs"] = serde_json::json!(e.attrs);
    }
    crate::event::from_value(v)
        .map(|_| ())
        .map_err(|r| format!("dims {:?}: not a valid event: {}", cell.dims, r.reason()))
}

fn run_group(
    g: &TestGroup,
    name: &str,
    rules: &RuleSet,
    start_ms: i64,
    interval: Option<&String>,
) -> Result<GroupResult, String> {
    let step_ms = match interval {
        Some(i) => duration_ms(i, "interval")?,
        None => rules
            .rules
            .iter()
            .map(|r| r.step_ms())
            .min()
            .unwrap_or(60_000),
    };
    if step_ms < 1000 {
        return Err("interval: at least 1s".into());
    }
    for r in g
        .expect_incidents
        .iter()
        .map(|e| &e.rule)
        .chain(&g.expect_no_incidents_for)
    {
        if rules.get(r).is_none() {
            return Err(format!("no rule named `{r}` in rule_files"));
        }
    }
    if g.expect_incidents.is_empty() && g.expect_no_incidents_for.is_empty() {
        return Err("expects nothing: add expect_incidents or expect_no_incidents_for".into());
    }
    let mut expected = Vec::new();
    for (i, e) in g.expect_incidents.iter().enumerate() {
        let at = format!("expect_incidents[{i}]");
        let resolved_ms = match e.resolved_at.as_deref() {
            None => None,
            Some("never") => Some(None),
            Some(t) => Some(Some(
                start_ms + duration_ms(t, &format!("{at}.resolved_at"))?,
            )),
        };
        expected.push((
            Seen {
                rule: e.rule.clone(),
                opened_ms: start_ms + duration_ms(&e.opened_at, &format!("{at}.opened_at"))?,
                dims: e.dims.clone(),
                resolved_ms: resolved_ms.flatten(),
            },
            resolved_ms.is_some(),
        ));
    }
    let cells = expand_cells(g)?;
    let steps = cells.iter().map(|c| c.attempts.len()).max().unwrap_or(0) as i64;
    let end_ms = match &g.evaluate_for {
        Some(d) => start_ms + duration_ms(d, "evaluate_for")?,
        None => start_ms + steps * step_ms,
    };

    let got = simulate(rules, &cells, start_ms, step_ms, end_ms);
    let checked: std::collections::BTreeSet<&String> = g
        .expect_incidents
        .iter()
        .map(|e| &e.rule)
        .chain(&g.expect_no_incidents_for)
        .collect();
    let got: Vec<Seen> = got
        .into_iter()
        .filter(|s| checked.contains(&s.rule))
        .collect();
    let diff = diff(&expected, &got, start_ms);
    Ok(GroupResult {
        name: name.to_string(),
        passed: diff.is_empty(),
        diff,
    })
}

/// Feeds the cells' events, step by step and in time order, through a fresh engine.
fn simulate(
    rules: &RuleSet,
    cells: &[Cell],
    start_ms: i64,
    step_ms: i64,
    end_ms: i64,
) -> Vec<Seen> {
    let mut engine = Engine::new(rules, &EngineOptions::default());
    let mut latest: BTreeMap<String, Incident> = BTreeMap::new();
    let mut changes: Vec<Change> = Vec::new();
    let steps = cells.iter().map(|c| c.attempts.len()).max().unwrap_or(0);
    let mut batch: Vec<Event> = Vec::new();
    for s in 0..steps {
        let t0 = start_ms + s as i64 * step_ms;
        if t0 >= end_ms {
            break;
        }
        batch.clear();
        for (ci, c) in cells.iter().enumerate() {
            let n = c.attempts.get(s).copied().flatten().unwrap_or(0);
            let f = c.failures.get(s).copied().flatten().unwrap_or(0);
            let d = c.declines.get(s).copied().flatten().unwrap_or(0);
            for i in 0..n {
                // Spread evenly over the step; failures and declines interleaved
                // with successes rather than bunched at the start.
                let ts = t0 + (i as i64 * step_ms) / n as i64;
                let slot = (i as u64 * 7919) % n as u64;
                let outcome = if slot < f as u64 {
                    Outcome::Failure
                } else if slot < (f + d) as u64 {
                    Outcome::Decline
                } else {
                    Outcome::Success
                };
                batch.push(event(c, format!("c{ci}-s{s}-e{i}"), ts, outcome));
            }
        }
        batch.sort_by_key(|e| e.ts_ms);
        for e in &batch {
            // Every synthetic event is on time and unique: nothing is skipped.
            let _ = engine.ingest(e, &mut changes);
        }
        for c in changes.drain(..) {
            let inc = c.transition.incident();
            latest.insert(inc.id.clone(), inc.clone());
        }
    }
    engine.advance_to(end_ms, &mut changes);
    for c in changes.drain(..) {
        let inc = c.transition.incident();
        latest.insert(inc.id.clone(), inc.clone());
    }
    let mut seen: Vec<Seen> = latest
        .into_values()
        .map(|i| Seen {
            rule: i.rule,
            opened_ms: i.opened_at.timestamp_millis(),
            dims: i
                .root_causes
                .first()
                .map(|r| r.dims.clone())
                .unwrap_or_default(),
            resolved_ms: i.resolved_at.map(|t| t.timestamp_millis()),
        })
        .collect();
    seen.sort();
    seen
}

fn show(s: &Seen, start_ms: i64, with_resolved: bool) -> String {
    let dims = s
        .dims
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut line = format!(
        "rule={} dims={{{dims}}} opened_at={}",
        s.rule,
        fmt_offset(s.opened_ms - start_ms)
    );
    if with_resolved {
        match s.resolved_ms {
            Some(r) => {
                let _ = write!(line, " resolved_at={}", fmt_offset(r - start_ms));
            }
            None => line.push_str(" resolved_at=never"),
        }
    }
    line
}

/// Expected (with whether resolved_at is checked) vs got; empty when they match.
fn diff(expected: &[(Seen, bool)], got: &[Seen], start_ms: i64) -> String {
    let mut used = vec![false; got.len()];
    let mut missing = Vec::new();
    for (e, check_resolved) in expected {
        let hit = got.iter().enumerate().position(|(i, g)| {
            !used[i]
                && g.rule == e.rule
                && g.dims == e.dims
                && g.opened_ms == e.opened_ms
                && (!check_resolved || g.resolved_ms == e.resolved_ms)
        });
        match hit {
            Some(i) => used[i] = true,
            None => missing.push((e, *check_resolved)),
        }
    }
    let extra: Vec<&Seen> = got
        .iter()
        .enumerate()
        .filter(|(i, _)| !used[*i])
        .map(|(_, g)| g)
        .collect();
    if missing.is_empty() && extra.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    let _ = writeln!(out, "    expected:");
    if expected.is_empty() {
        let _ = writeln!(out, "        (no incidents)");
    }
    for (e, check) in expected {
        let mark = if missing.iter().any(|(m, _)| std::ptr::eq(*m, e)) {
            "-"
        } else {
            " "
        };
        let _ = writeln!(out, "      {mark} {}", show(e, start_ms, *check));
    }
    let _ = writeln!(out, "    got:");
    if got.is_empty() {
        let _ = writeln!(out, "        (no incidents)");
    }
    for (i, g) in got.iter().enumerate() {
        let mark = if used[i] { " " } else { "+" };
        let _ = writeln!(out, "      {mark} {}", show(g, start_ms, true));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expanding_notation() {
        let v = |s: &str| expand(s).unwrap();
        assert_eq!(v("5"), vec![Some(5)]);
        assert_eq!(v("2x3 _ 1"), vec![Some(2), Some(2), Some(2), None, Some(1)]);
        assert_eq!(v("10+5x3"), vec![Some(10), Some(15), Some(20)]);
        assert_eq!(v("10-5x3"), vec![Some(10), Some(5), Some(0)]);
        assert!(expand("10-5x4").is_err(), "negative counts are refused");
        assert!(expand("abc").is_err());
        assert!(expand("3x0").is_err());
        assert!(expand("").is_err());
    }

    #[test]
    fn offsets_print_compactly() {
        assert_eq!(fmt_offset(0), "0s");
        assert_eq!(fmt_offset(32 * 60_000 + 15_000), "32m15s");
        assert_eq!(fmt_offset(3_600_000 + 500), "1h500ms");
    }

    const RULE: &str = "rules:\n  - name: r\n    kind: auth\n    dimensions: [provider, region]\n    window: 1m\n    step: 15s\n    baseline: {warmup: 5m}\n    thresholds: {min_events: 20, min_failures: 5}\n    open_after: 2\n    resolve_after: 4\n    severity: critical\n";

    fn run(test: &str) -> Result<Vec<GroupResult>, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("r.yaml"), RULE).unwrap();
        parse_and_run(test, dir.path())
    }

    const GROUP: &str = "rule_files: [r.yaml]\ntests:\n  - name: outage\n    input_series:\n      - kind: auth\n        dims: {provider: [a, b, c], region: [x, y]}\n        attempts: 50x60\n        failures: 1x60\n      - kind: auth\n        dims: {provider: b, region: y}\n        attempts: 50x60\n        failures: 1x30 30x10 1x20\n";

    #[test]
    fn a_fault_opens_one_incident_on_its_cell_and_a_wrong_expectation_fails() {
        // Find what fires, then check that the right expectation passes and a wrong
        // one fails with both sides shown.
        let probe = format!("{GROUP}    expect_no_incidents_for: [r]\n");
        let r = run(&probe).unwrap();
        assert!(!r[0].passed);
        assert!(
            r[0].diff.contains("+ rule=r dims={provider=b, region=y}"),
            "{}",
            r[0].diff
        );
        let good = format!("{GROUP}    expect_incidents:\n      - {{rule: r, dims: {{provider: b, region: y}}, opened_at: 8m, resolved_at: 11m45s}}\n");
        let r = run(&good).unwrap();
        assert!(r[0].passed, "{}", r[0].diff);
        let wrong = good.replace("opened_at: 8m", "opened_at: 9m");
        let r = run(&wrong).unwrap();
        assert!(!r[0].passed);
        assert!(
            r[0].diff
                .contains("- rule=r dims={provider=b, region=y} opened_at=9m"),
            "{}",
            r[0].diff
        );
        assert!(
            r[0].diff
                .contains("+ rule=r dims={provider=b, region=y} opened_at=8m resolved_at=11m45s"),
            "{}",
            r[0].diff
        );
    }

    #[test]
    fn unusable_files_are_errors() {
        let typo = GROUP.replace("attempts: 50x60\n        failures: 1x60", "atempts: 50x60");
        assert!(run(&typo).unwrap_err().contains("atempts"));
        let no_rule = format!("{GROUP}    expect_no_incidents_for: [nope]\n");
        assert!(run(&no_rule).unwrap_err().contains("nope"));
        let nothing = GROUP.to_string();
        assert!(run(&nothing).unwrap_err().contains("expects nothing"));
        let card = GROUP.replace(
            "region: [x, y]}",
            "region: [x, y], bin: \"4111111111111111\"}",
        );
        let card = format!("{card}    expect_no_incidents_for: [r]\n");
        assert!(run(&card).unwrap_err().contains("not a valid event"));
    }
}
