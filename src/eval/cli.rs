//! `faultline gen` and `faultline eval`: scenario files and their scores.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};

use crate::engine::EngineOptions;
use crate::incident::Incident;
use crate::ingest::generator::{Family, Generator, Labels, Scenario, MAX_DURATION_MS};
use crate::rules::RuleSet;

/// Scenario file names inside a scenario folder.
const EVENTS_FILE: &str = "events.ndjson";
const LABELS_FILE: &str = "labels.json";

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    match crate::rules::parse_duration(s) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(format!("`{s}` is not a duration like 90m, 3h, 1h30m")),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 10_000_000.0 => Ok(r),
        _ => Err(format!(
            "`{s}` is not an event rate (events per second, > 0)"
        )),
    }
}

fn parse_rfc3339(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("`{s}` is not an RFC 3339 time: {e}"))
}

fn duration_ms(d: Duration) -> anyhow::Result<i64> {
    match i64::try_from(d.as_millis()) {
        Ok(ms) if ms <= MAX_DURATION_MS => Ok(ms),
        _ => bail!("duration too long (at most 366d)"),
    }
}

fn parse_family(s: &str) -> Result<Family, String> {
    s.parse()
}

/// `--family`: one family, or every one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyChoice {
    /// One family.
    One(Family),
    /// Every family, the standard one first.
    All,
}

fn parse_family_choice(s: &str) -> Result<FamilyChoice, String> {
    if s == "all" {
        Ok(FamilyChoice::All)
    } else {
        s.parse().map(FamilyChoice::One)
    }
}

/// `faultline gen`: writes a labelled scenario to a folder.
#[derive(Debug, Clone, clap::Args)]
pub struct GenArgs {
    /// Scenario family (scenarios/README.md): `standard`, `cause_provider`, ...
    #[arg(long, default_value = "standard", value_parser = parse_family)]
    pub family: Family,
    /// Seed: the same seed, duration and rate give the same lines and labels.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Length in event time, e.g. `3h`, `90m`.
    #[arg(long, default_value = "3h", value_parser = parse_duration_arg)]
    pub duration: Duration,
    /// Mean events per second of event time, all kinds together.
    #[arg(long, default_value_t = 200.0, value_parser = parse_rate)]
    pub rate: f64,
    /// Event time of the first event, RFC 3339.
    #[arg(long, default_value = "2026-03-02T00:00:00Z", value_parser = parse_rfc3339)]
    pub start: DateTime<Utc>,
    /// Output folder (created if missing): `events.ndjson` and `labels.json`.
    #[arg(long)]
    pub out: PathBuf,
}

/// Writes `OUT/events.ndjson` (lines in arrival order) and `OUT/labels.json`.
pub fn gen_command(args: &GenArgs) -> anyhow::Result<()> {
    let scenario = Scenario::family(
        args.family,
        args.seed,
        duration_ms(args.duration)?,
        args.rate,
    )
    .starting_at(args.start.timestamp_millis());
    let mut generator = Generator::new(&scenario)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let started = Instant::now();

    let events_path = args.out.join(EVENTS_FILE);
    let file = File::create(&events_path)
        .with_context(|| format!("cannot create {}", events_path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut lines = 0u64;
    for line in generator.by_ref() {
        out.write_all(line.text.as_bytes())
            .and_then(|_| out.write_all(b"\n"))
            .with_context(|| format!("cannot write {}", events_path.display()))?;
        lines += 1;
    }
    out.flush()
        .with_context(|| format!("cannot write {}", events_path.display()))?;

    let labels = scenario.labels();
    let labels_path = args.out.join(LABELS_FILE);
    let mut text = serde_json::to_string_pretty(&labels)?;
    text.push('\n');
    std::fs::write(&labels_path, text)
        .with_context(|| format!("cannot write {}", labels_path.display()))?;

    let stats = generator.stats();
    eprintln!(
        "wrote {lines} lines ({} events, {} duplicates, {} late, {} bad) to {} in {:.1} s; {} faults and {} quiet cases to {}",
        stats.events,
        stats.duplicates,
        stats.late,
        stats.bad,
        events_path.display(),
        started.elapsed().as_secs_f64(),
        labels.faults.len(),
        labels.quiet.len(),
        labels_path.display(),
    );
    Ok(())
}

/// `faultline eval`: scores faultline (or the naive baseline) on a labelled scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Scenario folder written by `faultline gen` (events.ndjson + labels.json).
    #[arg(long, conflicts_with_all = ["seed", "duration", "rate"])]
    pub scenario: Option<PathBuf>,
    /// Without --scenario: generate the standard scenario of this seed in memory [default: 1].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Without --scenario: its length in event time [default: 3h].
    #[arg(long, value_parser = parse_duration_arg)]
    pub duration: Option<Duration>,
    /// Without --scenario: its mean events per second [default: 200].
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Rules folder [default: `rules/` when it exists, else the rules built into the binary].
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Score the naive static-threshold baseline (5% per leaf cell) instead of faultline.
    #[arg(long)]
    pub naive: bool,
    /// Without --scenario: generate this scenario family (or `all` of them, one
    /// after the other) in memory and print one PASS/FAIL row per family, then
    /// one JSON line per family.
    #[arg(long, conflicts_with = "scenario", value_parser = parse_family_choice)]
    pub family: Option<FamilyChoice>,
    /// With --family: also print, per family, every fault's expected elements
    /// and the root causes its incidents named, and the unmatched incidents.
    #[arg(long, requires = "family")]
    pub details: bool,
    /// `attrs.NAME` keys incidents may be explained with, comma-separated (as
    /// `[explain] attrs` in the config) [default: the attributes the scenario
    /// generator writes, `channel,app_version`].
    #[arg(long, value_delimiter = ',')]
    pub explain_attrs: Option<Vec<String>>,
}

/// The attributes generated scenarios carry (`cause_attr`).
const GENERATED_ATTRS: [&str; 2] = ["channel", "app_version"];

/// NDJSON lines of a file, stopping at (and keeping) the first read error.
struct FileLines {
    inner: std::io::Split<BufReader<File>>,
    error: Option<std::io::Error>,
}

impl Iterator for FileLines {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        match self.inner.next()? {
            Ok(line) => Some(line),
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }
}

fn load_rules(dir: Option<&Path>) -> anyhow::Result<(RuleSet, String)> {
    let default = Path::new("rules");
    let dir = match dir {
        Some(d) => d,
        None if default.is_dir() => default,
        None => return Ok((RuleSet::embedded(), "built-in".into())),
    };
    match RuleSet::load_dir(dir) {
        Ok(set) => Ok((set, dir.display().to_string())),
        Err(errors) => {
            let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            bail!("invalid rules:\n{}", list.join("\n"))
        }
    }
}

/// What eval scores.
#[derive(Debug, Clone)]
enum Detector {
    /// faultline's engine, built with these options.
    Faultline(EngineOptions),
    /// The naive baseline.
    Naive,
}

impl Detector {
    /// The detector `args` ask for. Engine options for eval are set here and
    /// nowhere else.
    fn of(args: &EvalArgs) -> Detector {
        if args.naive {
            Detector::Naive
        } else {
            Detector::Faultline(EngineOptions::default())
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Detector::Faultline(_) => "faultline",
            Detector::Naive => "naive",
        }
    }
}

/// Every eval run goes through here: the only place eval builds an engine.
fn run_detector<I, L>(lines: I, rules: &RuleSet, detector: &Detector) -> Vec<Incident>
where
    I: IntoIterator<Item = L>,
    L: AsRef<[u8]>,
{
    match detector {
        Detector::Naive => super::naive::run(lines, rules),
        Detector::Faultline(opts) => {
            let out = crate::pipeline::replay_with(lines, rules, opts);
            if let Ok(report) = serde_json::to_string(&out.report) {
                eprintln!("{report}");
            }
            out.incidents
        }
    }
}

/// Runs the detector over the scenario and prints the table, then the report as
/// one line of JSON, to stdout.
pub fn eval_command(args: &EvalArgs) -> anyhow::Result<()> {
    let (rules, rules_from) = load_rules(args.rules.as_deref())?;
    let attrs = match &args.explain_attrs {
        Some(a) => a.clone(),
        None => GENERATED_ATTRS.iter().map(|a| a.to_string()).collect(),
    };
    if let Some(bad) = attrs.iter().find(|a| !crate::config::valid_attr_name(a)) {
        bail!("--explain-attrs: `{bad}` is not an attribute name");
    }
    let rules = rules.with_explain(&crate::rules::Explain {
        attrs,
        ..Default::default()
    });
    eprintln!(
        "rules: {rules_from} ({} rules, explaining with attrs {:?})",
        rules.rules.len(),
        rules.explain.attrs
    );
    let detector = Detector::of(args);
    if let Some(choice) = args.family {
        return eval_families(args, choice, &rules, &detector);
    }
    let started = Instant::now();
    let (incidents, labels): (_, Labels) = match &args.scenario {
        Some(dir) => {
            let labels_path = dir.join(LABELS_FILE);
            let text = std::fs::read_to_string(&labels_path)
                .with_context(|| format!("cannot read {}", labels_path.display()))?;
            let labels: Labels = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a labels file", labels_path.display()))?;
            let events_path = dir.join(EVENTS_FILE);
            let file = File::open(&events_path)
                .with_context(|| format!("cannot read {}", events_path.display()))?;
            let mut lines = FileLines {
                inner: BufReader::with_capacity(1 << 20, file).split(b'\n'),
                error: None,
            };
            let incidents = run_detector(lines.by_ref(), &rules, &detector);
            if let Some(e) = lines.error {
                return Err(e).with_context(|| format!("cannot read {}", events_path.display()));
            }
            (incidents, labels)
        }
        None => {
            let duration = args.duration.unwrap_or(Duration::from_secs(3 * 3600));
            let scenario = Scenario::standard(
                args.seed.unwrap_or(1),
                duration_ms(duration)?,
                args.rate.unwrap_or(200.0),
            );
            let generator = Generator::new(&scenario)?;
            let incidents = run_detector(generator.map(|l| l.text), &rules, &detector);
            (incidents, scenario.labels())
        }
    };
    let mut report = super::score(&incidents, &labels);
    report.detector = detector.name().into();
    eprintln!(
        "scored seed {} in {:.1} s",
        labels.seed,
        started.elapsed().as_secs_f64()
    );
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(report.table().as_bytes())?;
    writeln!(stdout)?;
    serde_json::to_writer(&mut stdout, &report)?;
    writeln!(stdout)?;
    Ok(())
}

/// `eval --family`: each family's scenario generated in memory and scored; a
/// PASS/FAIL table, then one JSON line per family, to stdout.
fn eval_families(
    args: &EvalArgs,
    choice: FamilyChoice,
    rules: &RuleSet,
    detector: &Detector,
) -> anyhow::Result<()> {
    let families: Vec<Family> = match choice {
        FamilyChoice::All => Family::ALL.to_vec(),
        FamilyChoice::One(f) => vec![f],
    };
    let seed = args.seed.unwrap_or(1);
    let duration = duration_ms(args.duration.unwrap_or(Duration::from_secs(3 * 3600)))?;
    let rate = args.rate.unwrap_or(200.0);
    let targets = super::TARGETS;
    let mut stdout = std::io::stdout().lock();
    let mut rows = Vec::with_capacity(families.len());
    for family in families {
        let started = Instant::now();
        let scenario = Scenario::family(family, seed, duration, rate);
        let generator = Generator::new(&scenario)?;
        let incidents = run_detector(generator.map(|l| l.text), rules, detector);
        let mut report = super::score(&incidents, &scenario.labels());
        report.detector = detector.name().into();
        let row = super::FamilySummary::new(&report, seed, &targets);
        // The episode numbers against the truth, read from the events again.
        let episodes = match detector {
            Detector::Faultline(_) => Some(super::episode::score_episodes(
                Generator::new(&scenario)?.map(|l| l.text),
                &scenario.labels(),
                &incidents,
                rules,
            )),
            Detector::Naive => None,
        };
        eprintln!(
            "{family}: seed {seed}, {} faults, {} incidents, {} in {:.1} s",
            row.faults,
            row.incidents,
            if row.pass { "PASS" } else { "FAIL" },
            started.elapsed().as_secs_f64()
        );
        if let Some(ep) = &episodes {
            eprintln!("{family}: episode numbers: {}", ep.line());
        }
        if args.details {
            writeln!(stdout, "== {family} (seed {seed})")?;
            stdout.write_all(report.element_table().as_bytes())?;
            writeln!(stdout)?;
            if let Some(ep) = &episodes {
                stdout.write_all(ep.table().as_bytes())?;
                writeln!(stdout)?;
            }
        }
        rows.push(row);
    }
    stdout.write_all(super::family_table(&rows, &targets).as_bytes())?;
    writeln!(stdout)?;
    for row in &rows {
        serde_json::to_writer(&mut stdout, row)?;
        writeln!(stdout)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Cmd {
        Gen(GenArgs),
        Eval(EvalArgs),
    }

    #[test]
    fn args_parse() {
        let cli =
            Cli::try_parse_from(["f", "gen", "--seed", "7", "--duration", "90m", "--out", "x"])
                .unwrap();
        let Cmd::Gen(g) = cli.cmd else { panic!() };
        assert_eq!(g.seed, 7);
        assert_eq!(g.duration, Duration::from_secs(5400));
        assert_eq!(g.rate, 200.0);
        assert_eq!(
            g.start.timestamp_millis(),
            crate::ingest::generator::DEFAULT_START_MS
        );

        assert!(Cli::try_parse_from(["f", "gen", "--duration", "3x", "--out", "x"]).is_err());
        assert!(Cli::try_parse_from(["f", "gen", "--rate", "-1", "--out", "x"]).is_err());
        assert!(Cli::try_parse_from(["f", "eval", "--scenario", "s", "--seed", "2"]).is_err());
        let cli = Cli::try_parse_from(["f", "eval", "--seed", "2", "--naive"]).unwrap();
        let Cmd::Eval(e) = cli.cmd else { panic!() };
        assert_eq!(e.seed, Some(2));
        assert!(e.naive);
    }

    #[test]
    fn gen_writes_events_and_labels_that_eval_reads() {
        let dir = tempfile::tempdir().unwrap();
        let args = GenArgs {
            family: Family::Standard,
            seed: 5,
            duration: Duration::from_secs(45 * 60),
            rate: 20.0,
            start: parse_rfc3339("2026-04-01T12:00:00Z").unwrap(),
            out: dir.path().to_path_buf(),
        };
        gen_command(&args).unwrap();
        let labels: Labels =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(LABELS_FILE)).unwrap())
                .unwrap();
        assert_eq!(labels.start, args.start);
        assert!(!labels.faults.is_empty());
        let text = std::fs::read_to_string(dir.path().join(EVENTS_FILE)).unwrap();
        assert!(text.lines().count() > 40_000);
        assert!(text.starts_with("{\"id\":\"evt_5_"));
        assert!(text.contains("2026-04-01T12:"));

        let eval = EvalArgs {
            scenario: Some(dir.path().to_path_buf()),
            seed: None,
            duration: None,
            rate: None,
            rules: None,
            naive: true,
            family: None,
            details: false,
            explain_attrs: None,
        };
        eval_command(&eval).unwrap();
    }
}
