//! `faultline explain`: why an element did or did not fire at a time.
//!
//! Replays the events up to the step containing `--at` through the real engine,
//! asks it for [`Engine::explain`] just before that step is evaluated (so the
//! baselines are the ones the step was judged against), then evaluates the step
//! and reports whether an incident overlapping the element was open after it.
//! Events stamped after the step are not read; in a file whose events are far out
//! of order, replay may count as late some that explain counts.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use serde::Serialize;

use crate::engine::{Engine, EngineOptions, Explanation};
use crate::rules::RuleSet;

/// `faultline explain` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ExplainArgs {
    /// The rule.
    #[arg(long)]
    pub rule: String,
    /// A time (RFC 3339) inside the step to explain.
    #[arg(long)]
    pub at: String,
    /// The element, `k=v,k=v` over the rule's dimensions (e.g. `provider=stripe,region=eu`).
    #[arg(long)]
    pub dims: String,
    /// NDJSON events file.
    #[arg(long)]
    pub events: PathBuf,
    /// Rules folder (default: ./rules, else the built-in rules).
    #[arg(long, env = "FAULTLINE_RULES_DIR")]
    pub rules: Option<PathBuf>,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// An incident open after the step, overlapping the element.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OpenIncident {
    /// Its id.
    pub id: String,
    /// Its root cause's dimensions.
    pub dims: BTreeMap<String, String>,
    /// When it opened.
    pub opened_at: chrono::DateTime<chrono::Utc>,
}

/// What `faultline explain` prints.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Report {
    /// The numbers and conditions at the step.
    #[serde(flatten)]
    pub explanation: Explanation,
    /// Incidents of the rule overlapping the element (same, ancestor or
    /// descendant) open after the step.
    pub open_incidents: Vec<OpenIncident>,
}

/// Parses `k=v,k=v`.
pub fn parse_dims(s: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            bail!("--dims: `{part}` is not k=v");
        };
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    if out.is_empty() {
        bail!("--dims: give at least one k=v");
    }
    Ok(out)
}

/// Whether one dimension map fixes a subset of the other's values.
fn overlaps(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
    let sub = |x: &BTreeMap<String, String>, y: &BTreeMap<String, String>| {
        x.iter().all(|(k, v)| y.get(k) == Some(v))
    };
    sub(a, b) || sub(b, a)
}

/// Incidents of `rule` open in `engine` whose root cause overlaps `dims`
/// (same element, an ancestor or a descendant).
pub fn open_overlapping(
    engine: &Engine,
    rule: &str,
    dims: &BTreeMap<String, String>,
) -> Vec<OpenIncident> {
    engine
        .open_incidents()
        .filter(|i| i.rule == rule)
        .filter_map(|i| {
            let d = &i.root_causes.first()?.dims;
            overlaps(d, dims).then(|| OpenIncident {
                id: i.id.clone(),
                dims: d.clone(),
                opened_at: i.opened_at,
            })
        })
        .collect()
}

/// Replays `reader` and explains `dims` of `rule` at `at_ms`.
pub fn explain(
    reader: impl BufRead,
    rules: &RuleSet,
    rule: &str,
    dims: &BTreeMap<String, String>,
    at_ms: i64,
) -> anyhow::Result<Report> {
    let Some(r) = rules.get(rule) else {
        bail!("no rule named `{rule}`");
    };
    let opts = EngineOptions::default();
    let step_ms = r.step_ms();
    let step_start = at_ms.div_euclid(step_ms) * step_ms;
    let step_end = step_start + step_ms;
    let mut engine = Engine::new(rules, &opts);
    let mut changes = Vec::new();
    for line in crate::ingest::file::lines(reader) {
        let Ok(ev) = crate::event::parse(line.trim_ascii()) else {
            continue;
        };
        if ev.ts_ms >= step_end.saturating_add(opts.lateness_ms) {
            break;
        }
        if ev.ts_ms < step_end {
            // Duplicates and late events are skipped exactly as in replay.
            let _ = engine.ingest(&ev, &mut changes);
        }
    }
    // Every step before this one, not this one.
    engine.advance_to(step_start, &mut changes);
    let explanation = engine
        .explain(rule, dims, at_ms)
        .map_err(anyhow::Error::msg)?;
    engine.advance_to(step_end, &mut changes);
    let open_incidents = open_overlapping(&engine, rule, dims);
    Ok(Report {
        explanation,
        open_incidents,
    })
}

fn rfc(ms: i64) -> String {
    crate::incident::ts(ms)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The report as text.
pub fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let e = &r.explanation;
    let dims: Vec<String> = e.dims.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut o = String::new();
    let _ = writeln!(o, "rule {} element {{{}}}", e.rule, dims.join(","));
    let _ = writeln!(
        o,
        "step ending {} (window {} .. {})",
        rfc(e.step_end_ms),
        rfc(e.window_start_ms),
        rfc(e.step_end_ms)
    );
    if !e.warm {
        let _ = writeln!(
            o,
            "warm: no (the rule is still learning: nothing is tested)"
        );
    }
    let _ = writeln!(
        o,
        "attempts {:.0}  failures {:.0}  expected {:.3}  baseline rate {:.4}",
        e.attempts, e.failures, e.expected, e.baseline_rate
    );
    let _ = writeln!(
        o,
        "statistic (Poisson deviance) {:.3}  threshold {:.3} ({} elements tested)",
        e.statistic, e.threshold, e.tested
    );
    for c in &e.conditions {
        let _ = writeln!(
            o,
            "  {:<6}  {:<14} {:.4} (needs {})",
            if c.held { "held" } else { "FAILED" },
            c.name,
            c.actual,
            c.required
        );
    }
    let _ = writeln!(
        o,
        "chosen as a cause at this step: {}",
        if e.chosen { "yes" } else { "no" }
    );
    if r.open_incidents.is_empty() {
        let _ = writeln!(o, "incident open after this step: none");
    }
    for i in &r.open_incidents {
        let d: Vec<String> = i.dims.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(
            o,
            "incident open after this step: {} {{{}}} opened {}",
            i.id,
            d.join(","),
            i.opened_at.format("%Y-%m-%dT%H:%M:%SZ")
        );
    }
    o
}

/// Runs `faultline explain` with already loaded rules and writes its output.
pub fn command(
    args: &ExplainArgs,
    rules: &RuleSet,
    w: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let at = chrono::DateTime::parse_from_rfc3339(&args.at)
        .with_context(|| format!("--at: `{}` is not an RFC 3339 time", args.at))?
        .timestamp_millis();
    let dims = parse_dims(&args.dims)?;
    let f = std::fs::File::open(&args.events)
        .with_context(|| format!("cannot open {}", args.events.display()))?;
    let report = explain(
        std::io::BufReader::with_capacity(1 << 20, f),
        rules,
        &args.rule,
        &dims,
        at,
    )?;
    if args.json {
        writeln!(w, "{}", serde_json::to_string(&report)?)?;
    } else {
        write!(w, "{}", render(&report))?;
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dims_parse_and_overlap() {
        let d = parse_dims("provider=stripe, region=eu").unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d["region"], "eu");
        assert!(parse_dims("provider").is_err());
        assert!(parse_dims(" , ").is_err());
        let p = parse_dims("provider=stripe").unwrap();
        assert!(overlaps(&p, &d) && overlaps(&d, &p));
        assert!(!overlaps(&parse_dims("provider=adyen").unwrap(), &d));
        assert!(!overlaps(&parse_dims("bin=411111").unwrap(), &p));
    }
}
