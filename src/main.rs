//! The `faultline` binary: parse the command line, load settings, run.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: replay parses on one thread and frees on another, and glibc's
/// malloc spent a quarter of replay's time on that pattern (perf, 2.6 M events).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use faultline::config::Settings;
use faultline::rules::RuleSet;

#[derive(Parser)]
#[command(
    name = "faultline",
    version,
    about = "Payment failure incidents, detected and localized"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The daemon: HTTP ingest, detection, incidents (integrations when configured).
    Run {
        /// TOML settings file (FAULTLINE_* variables override it).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Rules folder (default: ./rules, else the built-in rules).
        #[arg(long)]
        rules: Option<PathBuf>,
    },
    /// The whole pipeline on built-in realistic traffic with injected faults, in
    /// accelerated time; API and pages on 127.0.0.1:8080.
    Demo {
        /// Stop after this long (e.g. 2m); default: run until Ctrl-C.
        #[arg(long)]
        duration: Option<String>,
        /// Event-time seconds per wall-clock second once warm.
        #[arg(long, default_value_t = 60.0)]
        speed: f64,
        /// Traffic seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Mean events per second of event time.
        #[arg(long, default_value_t = 150.0)]
        rate: f64,
        /// TOML settings file (FAULTLINE_* variables override it).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Replays an NDJSON file through the rules in event time and prints the incidents.
    Replay {
        /// NDJSON events file, `-` for stdin.
        #[arg(long)]
        events: String,
        /// Rules folder (default: ./rules, else the built-in rules).
        #[arg(long, env = "FAULTLINE_RULES_DIR")]
        rules: Option<PathBuf>,
        /// `attrs.NAME` keys incidents may be explained with, comma-separated
        /// (as `[explain] attrs` in the config of `run`).
        #[arg(long, value_delimiter = ',')]
        explain_attrs: Vec<String>,
    },
    /// Root-cause localization of one CSV snapshot (`real`, `predict`, dimensions).
    Rca {
        /// The CSV file.
        file: PathBuf,
    },
    /// Writes a labelled scenario: events NDJSON plus the injected faults and quiet cases.
    Gen(faultline::eval::GenArgs),
    /// Publishes a generated, labelled scenario to the NATS stream (demos, load tests).
    Load(faultline::ingest::nats::LoadArgs),
    /// Replays a labelled scenario and scores the incidents (recall, precision, top-1, time to detect).
    Eval(faultline::eval::EvalArgs),
    /// What a rule set would have opened over recorded events; with --against, the diff.
    Backtest(faultline::backtest::BacktestArgs),
    /// Why an element did or did not fire at a time: counts, baseline, statistic, conditions.
    Explain(faultline::explain::ExplainArgs),
    /// Scores the LLM summarizer on golden incidents: schema validity, faithfulness, leakage, length.
    LlmEval(faultline::summarize::llm::eval::LlmEvalArgs),
    /// Rule files.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Validates rule files; errors name file, rule and field.
    Check {
        /// Rules folder (default: ./rules).
        dir: Option<PathBuf>,
    },
    /// Runs rule unit tests: input series and expected incidents (see rules/README.md).
    Test {
        /// Test files (YAML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// `--rules` if given, else `rules/` in the working directory; `None`: the built-in rules.
fn rules_dir(dir: Option<PathBuf>) -> Option<PathBuf> {
    dir.or_else(|| {
        let d = PathBuf::from("rules");
        d.is_dir().then_some(d)
    })
}

/// The rules of [`rules_dir`], else the built-in rules.
fn load_rules(dir: Option<PathBuf>) -> Result<RuleSet, String> {
    match rules_dir(dir) {
        Some(d) => RuleSet::load_dir(&d).map_err(|errs| {
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        }),
        None => Ok(RuleSet::embedded()),
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr: stdout carries incidents.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn load_settings(path: Option<&std::path::Path>) -> Result<Settings, ExitCode> {
    Settings::load(path).map_err(|e| {
        eprintln!("faultline: settings: {e}");
        ExitCode::from(2)
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, rules } => {
            let settings = match load_settings(config.as_deref()) {
                Ok(s) => s,
                Err(code) => return code,
            };
            init_logging(&settings.log);
            let dir = rules_dir(rules.or_else(|| settings.rules_dir.clone()));
            let rules = match load_rules(dir.clone()) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("faultline run: rules: {e}");
                    return ExitCode::from(2);
                }
            };
            runtime().block_on(async {
                match faultline::app::App::build(&settings, rules, faultline::pipeline::Clock::Wall)
                    .await
                {
                    Ok(app) => {
                        // Rules from a folder reload on SIGHUP, on change and on request.
                        let app = match dir {
                            Some(d) => app.watch_rules(d, settings.rules_reload_interval.0),
                            None => app,
                        };
                        tracing::info!(addr = %app.addr(), "listening");
                        match app.run_until(faultline::app::shutdown_signal()).await {
                            Ok(()) => ExitCode::SUCCESS,
                            Err(e) => {
                                eprintln!("faultline run: {e:#}");
                                ExitCode::FAILURE
                            }
                        }
                    }
                    Err(e) => {
                        eprintln!("faultline run: {e:#}");
                        ExitCode::from(2)
                    }
                }
            })
        }
        Command::Demo {
            duration,
            speed,
            seed,
            rate,
            config,
        } => {
            let settings = match load_settings(config.as_deref()) {
                Ok(s) => s,
                Err(code) => return code,
            };
            init_logging(&settings.log);
            let duration = match duration.as_deref().map(faultline::rules::parse_duration) {
                None => None,
                Some(Some(d)) => Some(d),
                Some(None) => {
                    eprintln!("faultline demo: --duration: use a duration like 90s or 2m");
                    return ExitCode::from(2);
                }
            };
            let opts = faultline::demo::DemoOptions {
                duration,
                speed,
                seed,
                events_per_sec: rate,
            };
            match runtime().block_on(faultline::demo::run(settings, opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("faultline demo: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Replay {
            events,
            rules,
            explain_attrs,
        } => replay(&events, rules, explain_attrs),
        Command::Rca { file } => match faultline::localize::rca::run_file(&file) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("faultline rca: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Backtest(args) => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            report_errors("backtest", faultline::backtest::command(&args, &mut w))
        }
        Command::Explain(args) => {
            let rules = match load_rules(args.rules.clone()) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("faultline explain: rules: {e}");
                    return ExitCode::from(2);
                }
            };
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            report_errors(
                "explain",
                faultline::explain::command(&args, &rules, &mut w),
            )
        }
        Command::Gen(args) => report_errors("gen", faultline::eval::gen_command(&args)),
        Command::Load(args) => {
            init_logging("warn");
            report_errors(
                "load",
                runtime().block_on(faultline::ingest::nats::load_command(&args)),
            )
        }
        Command::Eval(args) => report_errors("eval", faultline::eval::eval_command(&args)),
        Command::LlmEval(args) => {
            init_logging("warn");
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            report_errors(
                "llm-eval",
                faultline::summarize::llm::eval::command(&args, &mut w),
            )
        }
        Command::Rules {
            command: RulesCommand::Test { files },
        } => {
            let stdout = std::io::stdout();
            let code = faultline::ruletest::run_files(&files, &mut stdout.lock());
            ExitCode::from(code)
        }
        Command::Rules {
            command: RulesCommand::Check { dir },
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("rules"));
            match RuleSet::load_dir(&dir) {
                Ok(set) => {
                    println!("{}: {} rules OK", dir.display(), set.rules.len());
                    ExitCode::SUCCESS
                }
                Err(errs) => {
                    for e in &errs {
                        eprintln!("{e}");
                    }
                    eprintln!("{} error(s)", errs.len());
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn report_errors(what: &str, r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("faultline {what}: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn replay(events: &str, rules: Option<PathBuf>, attrs: Vec<String>) -> ExitCode {
    let rules = match load_rules(rules) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("faultline replay: rules: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(bad) = attrs
        .iter()
        .find(|a| !faultline::config::valid_attr_name(a))
    {
        eprintln!("faultline replay: --explain-attrs: `{bad}` is not an attribute name");
        return ExitCode::from(2);
    }
    let rules = rules.with_explain(&faultline::rules::Explain {
        attrs,
        ..Default::default()
    });
    let reader: Box<dyn BufRead + Send> = if events == "-" {
        Box::new(std::io::BufReader::with_capacity(1 << 20, std::io::stdin()))
    } else {
        match std::fs::File::open(events) {
            Ok(f) => Box::new(std::io::BufReader::with_capacity(1 << 20, f)),
            Err(e) => {
                eprintln!("faultline replay: cannot open {events}: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let out = faultline::pipeline::replay_reader(reader, &rules, &Default::default());
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    for inc in &out.incidents {
        match serde_json::to_string(inc) {
            Ok(s) => {
                let _ = writeln!(w, "{s}");
            }
            Err(e) => eprintln!("faultline replay: cannot encode incident: {e}"),
        }
    }
    let _ = w.flush();
    eprintln!("{}", serde_json::to_string(&out.report).unwrap_or_default());
    ExitCode::SUCCESS
}
