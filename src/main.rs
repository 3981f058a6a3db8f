//! The `faultline` binary: parse the command line, load settings, run.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use faultline::rules::RuleSet;

#[derive(Parser)]
#[command(name = "faultline", version, about = "Payment failure incidents, detected and localized")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replays an NDJSON file through the rules in event time and prints the incidents.
    Replay {
        /// NDJSON events file, `-` for stdin.
        #[arg(long)]
        events: String,
        /// Rules folder (default: ./rules, else the built-in rules).
        #[arg(long, env = "FAULTLINE_RULES_DIR")]
        rules: Option<PathBuf>,
    },
    /// Root-cause localization of one CSV snapshot (`real`, `predict`, dimensions).
    Rca {
        /// The CSV file.
        file: PathBuf,
    },
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
}

/// `--rules` if given, else `rules/` in the working directory, else the built-in rules.
fn load_rules(dir: Option<PathBuf>) -> Result<RuleSet, String> {
    let dir = dir.or_else(|| {
        let d = PathBuf::from("rules");
        d.is_dir().then_some(d)
    });
    match dir {
        Some(d) => RuleSet::load_dir(&d).map_err(|errs| {
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        }),
        None => Ok(RuleSet::embedded()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Replay { events, rules } => replay(&events, rules),
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
        Command::Rules { command: RulesCommand::Check { dir } } => {
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

fn replay(events: &str, rules: Option<PathBuf>) -> ExitCode {
    let rules = match load_rules(rules) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("faultline replay: rules: {e}");
            return ExitCode::from(2);
        }
    };
    let reader: Box<dyn BufRead> = if events == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        match std::fs::File::open(events) {
            Ok(f) => Box::new(std::io::BufReader::with_capacity(1 << 20, f)),
            Err(e) => {
                eprintln!("faultline replay: cannot open {events}: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let out = faultline::pipeline::replay_lines(faultline::ingest::file::lines(reader), &rules);
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
