//! `faultline backtest`: what a rule set would have opened over recorded events,
//! and, against a second rule set, what a rule change adds, removes or changes.
//!
//! It is `replay` (the same [`crate::pipeline::replay_reader`]) plus a comparison,
//! so a backtest shows exactly what the daemon would have fired.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use crate::event::Event;
use crate::incident::Incident;
use crate::rules::RuleSet;

/// How an incident differs between the baseline rule set and the candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiffKind {
    /// Only the candidate opens it.
    Added,
    /// Only the baseline opens it.
    Removed,
    /// Both open it (same rule, overlapping time, the same root cause or one
    /// lying within the other) but it opens or resolves at a different time,
    /// with another severity, or names another root cause (a stricter rule
    /// may name only the piece of an outage that still passes its floors).
    Changed,
}

/// One line of a rule-set diff.
#[derive(Debug, Clone, Serialize)]
pub struct DiffEntry {
    /// What kind of difference.
    pub change: DiffKind,
    /// The rule.
    pub rule: String,
    /// The root cause's dimensions.
    pub dims: BTreeMap<String, String>,
    /// The baseline's incident (`--against`), when it has one.
    pub before: Option<Incident>,
    /// The candidate's incident (`--rules`), when it has one.
    pub after: Option<Incident>,
}

fn dims(i: &Incident) -> BTreeMap<String, String> {
    i.root_causes
        .first()
        .map(|r| r.dims.clone())
        .unwrap_or_default()
}

/// Whether two incidents' lifetimes overlap; an unresolved one lasts forever.
fn overlaps(a: &Incident, b: &Incident) -> bool {
    let end = |i: &Incident| {
        i.resolved_at
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
    };
    a.opened_at <= end(b) && b.opened_at <= end(a)
}

/// Whether one set of dimension values lies within the other (`{region: X}`
/// and `{card_brand: visa, region: X}`).
fn within(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
    let sub = |x: &BTreeMap<String, String>, y: &BTreeMap<String, String>| {
        x.iter().all(|(k, v)| y.get(k) == Some(v))
    };
    sub(a, b) || sub(b, a)
}

/// How a pass of [`diff`] pairs two incidents' root causes.
type Matcher = dyn Fn(&Incident, &Incident) -> bool;

/// Whether two incidents name related root causes: one of either's lies
/// within one of the other's.
fn related(a: &Incident, b: &Incident) -> bool {
    a.root_causes
        .iter()
        .any(|x| b.root_causes.iter().any(|y| within(&x.dims, &y.dims)))
}

/// Matches incidents by rule, overlapping time and root cause: the same root
/// cause first, then related ones (one within the other).
/// `before` is the baseline (`--against`), `after` the candidate (`--rules`).
pub fn diff(before: &[Incident], after: &[Incident]) -> Vec<DiffEntry> {
    let mut used = vec![false; after.len()];
    let mut matched: Vec<Option<usize>> = vec![None; before.len()];
    let same_cause = |a: &Incident, b: &Incident| dims(a) == dims(b);
    let passes: [&Matcher; 2] = [&same_cause, &related];
    for same in passes {
        for (j, b) in before.iter().enumerate() {
            if matched[j].is_some() {
                continue;
            }
            let hit = after
                .iter()
                .enumerate()
                .position(|(i, a)| !used[i] && a.rule == b.rule && overlaps(a, b) && same(a, b));
            if let Some(i) = hit {
                used[i] = true;
                matched[j] = Some(i);
            }
        }
    }
    let mut out = Vec::new();
    for (b, hit) in before.iter().zip(matched) {
        let bd = dims(b);
        match hit {
            Some(i) => {
                let a = &after[i];
                if a.opened_at != b.opened_at
                    || a.resolved_at != b.resolved_at
                    || a.severity != b.severity
                    || dims(a) != bd
                {
                    out.push(DiffEntry {
                        change: DiffKind::Changed,
                        rule: b.rule.clone(),
                        dims: bd,
                        before: Some(b.clone()),
                        after: Some(a.clone()),
                    });
                }
            }
            None => out.push(DiffEntry {
                change: DiffKind::Removed,
                rule: b.rule.clone(),
                dims: bd,
                before: Some(b.clone()),
                after: None,
            }),
        }
    }
    for (i, a) in after.iter().enumerate() {
        if !used[i] {
            out.push(DiffEntry {
                change: DiffKind::Added,
                rule: a.rule.clone(),
                dims: dims(a),
                before: None,
                after: Some(a.clone()),
            });
        }
    }
    let first = |e: &DiffEntry| e.before.as_ref().or(e.after.as_ref()).map(|i| i.opened_at);
    out.sort_by(|x, y| first(x).cmp(&first(y)).then(x.rule.cmp(&y.rule)));
    out
}

/// `faultline backtest` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct BacktestArgs {
    /// The rule set to try (a rules folder).
    #[arg(long)]
    pub rules: PathBuf,
    /// A baseline rule set to compare with: prints what `--rules` adds, removes or changes.
    #[arg(long)]
    pub against: Option<PathBuf>,
    /// NDJSON events file.
    #[arg(
        long,
        required_unless_present = "clickhouse",
        conflicts_with = "clickhouse"
    )]
    pub events: Option<PathBuf>,
    /// Read the events from ClickHouse (FAULTLINE_CLICKHOUSE_* or `--config`)
    /// between `--from` and `--to` instead of a file.
    #[arg(long, requires_all = ["from", "to"])]
    pub clickhouse: bool,
    /// Start of the history (RFC 3339), with `--clickhouse`.
    #[arg(long)]
    pub from: Option<String>,
    /// End of the history (RFC 3339, exclusive), with `--clickhouse`.
    #[arg(long)]
    pub to: Option<String>,
    /// Settings file for `--clickhouse` (FAULTLINE_* variables override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// JSON lines instead of a table: one incident per line, or one diff entry
    /// (`change`, `rule`, `dims`, `before`, `after`) per line with `--against`.
    #[arg(long)]
    pub json: bool,
}

fn load(dir: &Path) -> anyhow::Result<RuleSet> {
    RuleSet::load_dir(dir).map_err(|errs| {
        let msg: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        anyhow::anyhow!("rules {}: {}", dir.display(), msg.join("; "))
    })
}

/// Where the history comes from.
enum History {
    File(PathBuf),
    ClickHouse {
        settings: Box<crate::config::ClickHouseSettings>,
        from_ms: i64,
        to_ms: i64,
    },
}

impl History {
    fn of(args: &BacktestArgs) -> anyhow::Result<History> {
        if !args.clickhouse {
            let Some(events) = &args.events else {
                anyhow::bail!("give --events FILE or --clickhouse --from T --to T");
            };
            return Ok(History::File(events.clone()));
        }
        let time = |name: &str, v: &Option<String>| -> anyhow::Result<i64> {
            let v = v.as_deref().unwrap_or_default();
            chrono::DateTime::parse_from_rfc3339(v)
                .map(|t| t.timestamp_millis())
                .map_err(|e| anyhow::anyhow!("--{name} `{v}` is not an RFC 3339 time: {e}"))
        };
        let (from_ms, to_ms) = (time("from", &args.from)?, time("to", &args.to)?);
        if from_ms >= to_ms {
            anyhow::bail!("--from must be before --to");
        }
        let settings = crate::config::Settings::load(args.config.as_deref())
            .map_err(|e| anyhow::anyhow!("settings: {e}"))?;
        if !settings.clickhouse.enabled() {
            anyhow::bail!(
                "--clickhouse needs FAULTLINE_CLICKHOUSE_URL (or [clickhouse] url in --config)"
            );
        }
        Ok(History::ClickHouse {
            settings: Box::new(settings.clickhouse),
            from_ms,
            to_ms,
        })
    }

    fn replay(&self, rules: &RuleSet) -> anyhow::Result<Vec<Incident>> {
        match self {
            History::File(events) => {
                let f = std::fs::File::open(events)
                    .with_context(|| format!("cannot open {}", events.display()))?;
                let reader = std::io::BufReader::with_capacity(1 << 20, f);
                Ok(crate::pipeline::replay_reader(reader, rules, &Default::default()).incidents)
            }
            History::ClickHouse {
                settings,
                from_ms,
                to_ms,
            } => {
                // Rows stream from ClickHouse on a runtime thread while the
                // engine counts here, a bounded channel between them.
                let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Event>>(8);
                let (settings, from_ms, to_ms) = (settings.clone(), *from_ms, *to_ms);
                let reader = std::thread::spawn(move || -> anyhow::Result<u64> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    let read = rt.block_on(crate::store::clickhouse::read_events(
                        &settings,
                        from_ms,
                        to_ms,
                        |batch| tx.send(batch).is_ok(),
                    ))?;
                    Ok(read)
                });
                let out = crate::pipeline::replay_events(
                    rx.into_iter().flatten(),
                    rules,
                    &Default::default(),
                );
                let read = reader
                    .join()
                    .map_err(|_| anyhow::anyhow!("the ClickHouse reader panicked"))?
                    .context("reading events from ClickHouse")?;
                tracing::info!(events = read, "history read from ClickHouse");
                Ok(out.incidents)
            }
        }
    }
}

/// Runs the backtest and writes its output. Errors are unusable arguments or rules.
pub fn command(args: &BacktestArgs, w: &mut impl std::io::Write) -> anyhow::Result<()> {
    let candidate = load(&args.rules)?;
    let baseline = args.against.as_deref().map(load).transpose()?;
    let history = History::of(args)?;
    let after = history.replay(&candidate)?;
    match baseline {
        None if args.json => {
            for i in &after {
                writeln!(w, "{}", serde_json::to_string(i)?)?;
            }
        }
        None => write!(w, "{}", table(&after))?,
        Some(baseline) => {
            let before = history.replay(&baseline)?;
            let d = diff(&before, &after);
            if args.json {
                for e in &d {
                    writeln!(w, "{}", serde_json::to_string(e)?)?;
                }
            } else {
                write!(w, "{}", diff_table(&d))?;
            }
        }
    }
    w.flush()?;
    Ok(())
}

fn fmt_dims(d: &BTreeMap<String, String>) -> String {
    let s: Vec<String> = d.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", s.join(","))
}

fn fmt_time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".into())
}

/// A compact table of incidents: opened, resolved, rule, severity, root cause.
pub fn table(incidents: &[Incident]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20}  {:<20}  {:<28}  {:<8}  root cause",
        "opened_at", "resolved_at", "rule", "severity"
    );
    for i in incidents {
        let _ = writeln!(
            out,
            "{:<20}  {:<20}  {:<28}  {:<8}  {}",
            fmt_time(Some(i.opened_at)),
            fmt_time(i.resolved_at),
            i.rule,
            i.severity.as_str(),
            fmt_dims(&dims(i))
        );
    }
    let _ = writeln!(out, "{} incident(s)", incidents.len());
    out
}

/// A compact table of a diff: `+` added, `-` removed, `~` changed (before -> after).
pub fn diff_table(entries: &[DiffEntry]) -> String {
    let mut out = String::new();
    let count = |k: DiffKind| entries.iter().filter(|e| e.change == k).count();
    for e in entries {
        let span = |i: &Option<Incident>| match i {
            Some(i) => format!(
                "{} .. {}",
                fmt_time(Some(i.opened_at)),
                fmt_time(i.resolved_at)
            ),
            None => String::new(),
        };
        let line = match e.change {
            DiffKind::Added => format!("+ {} {}  {}", e.rule, fmt_dims(&e.dims), span(&e.after)),
            DiffKind::Removed => {
                format!("- {} {}  {}", e.rule, fmt_dims(&e.dims), span(&e.before))
            }
            DiffKind::Changed => {
                // A renamed root cause shows its new name after the arrow.
                let renamed = e
                    .after
                    .as_ref()
                    .map(dims)
                    .filter(|d| *d != e.dims)
                    .map(|d| format!("{} ", fmt_dims(&d)))
                    .unwrap_or_default();
                format!(
                    "~ {} {}  {}  ->  {renamed}{}",
                    e.rule,
                    fmt_dims(&e.dims),
                    span(&e.before),
                    span(&e.after)
                )
            }
        };
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "{} added, {} removed, {} changed",
        count(DiffKind::Added),
        count(DiffKind::Removed),
        count(DiffKind::Changed)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::{ts, RootCause, Status, SummarySource, TimeRange};
    use crate::rules::Severity;

    fn inc(rule: &str, provider: &str, open_min: i64, resolve_min: Option<i64>) -> Incident {
        let m = |x: i64| ts(x * 60_000);
        Incident {
            id: format!("inc_{rule}_{provider}_{open_min}"),
            rule: rule.into(),
            kind: "auth".into(),
            severity: Severity::Critical,
            status: Status::Open,
            opened_at: m(open_min),
            updated_at: m(open_min),
            resolved_at: resolve_min.map(m),
            root_causes: vec![RootCause {
                dims: BTreeMap::from([("provider".to_string(), provider.to_string())]),
                score: 1.0,
                events: 0,
                failures: 0,
                expected_failures: 0.0,
                failure_rate: 0.0,
                baseline_rate: 0.0,
                expected_events: None,
            }],
            window: TimeRange {
                start: m(open_min),
                end: m(open_min),
            },
            title: String::new(),
            summary: String::new(),
            summary_source: SummarySource::Template,
            links: Vec::new(),
            prompt_version: None,
            candidates: Vec::new(),
            episode: Default::default(),
        }
    }

    #[test]
    fn diff_matches_by_rule_dims_and_overlap() {
        let before = vec![
            inc("r", "a", 10, Some(20)),
            inc("r", "b", 30, Some(40)),
            inc("r", "c", 50, Some(60)),
        ];
        let after = vec![
            inc("r", "a", 10, Some(20)), // same: not in the diff
            inc("r", "b", 32, Some(40)), // overlaps, opens later: changed
            inc("r", "c", 70, Some(80)), // no overlap with c@50: added, and c@50 removed
            inc("q", "a", 10, Some(20)), // another rule: added
        ];
        let d = diff(&before, &after);
        let kinds: Vec<(DiffKind, &str, String)> = d
            .iter()
            .map(|e| (e.change, e.rule.as_str(), e.dims["provider"].clone()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (DiffKind::Added, "q", "a".to_string()),
                (DiffKind::Changed, "r", "b".to_string()),
                (DiffKind::Removed, "r", "c".to_string()),
                (DiffKind::Added, "r", "c".to_string()),
            ]
        );
        let t = diff_table(&d);
        assert!(t.contains("2 added, 1 removed, 1 changed"), "{t}");
    }

    #[test]
    fn a_root_cause_renamed_to_a_piece_of_it_is_a_change() {
        let before = vec![inc("r", "a", 10, Some(20))];
        let mut piece = inc("r", "a", 12, Some(20));
        piece.root_causes[0]
            .dims
            .insert("region".into(), "us-west-2".into());
        let unrelated = inc("r", "z", 12, Some(20));
        let d = diff(&before, &[piece, unrelated]);
        let kinds: Vec<DiffKind> = d.iter().map(|e| e.change).collect();
        assert_eq!(kinds, vec![DiffKind::Changed, DiffKind::Added], "{d:#?}");
        let t = diff_table(&d);
        assert!(t.contains("->  {provider=a,region=us-west-2} "), "{t}");
    }
}
