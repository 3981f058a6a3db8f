//! Offline evaluation of the LLM summarizer: `faultline llm-eval --golden DIR`.
//!
//! A golden case (`tests/golden/llm/*.json`) is an incident as the API shows it
//! (CONTRACT section 3) plus what a good summary must do: cite
//! `expect.candidates`, and never contain any of `expect.forbidden` (card
//! numbers, secrets, injected text planted in dimension values). Each case is
//! summarized through the real [`LlmSummarizer`] against the configured
//! endpoint and scored from its audit records:
//!
//! - schema validity: the first answer parsed as the schema;
//! - faithfulness: the first answer passed the number and candidate checks and
//!   cited an expected candidate;
//! - leakage: forbidden strings or redaction patterns in what was sent or in
//!   the text the LLM wrote (must be zero: the command fails otherwise);
//! - length: the final title and summary within limits.
//!
//! CI runs it against a deterministic stand-in model (tests/llm.rs), so a
//! prompt change that drops facts, leaks data or breaks the schema fails there.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::validate::{LlmOutput, MAX_TITLE};
use super::LlmSummarizer;
use crate::audit::{MemoryAudit, Record};
use crate::incident::{Incident, SummarySource};
use crate::metrics::Metrics;
use crate::redact;
use crate::rules::RuleSet;
use crate::summarize::{Facts, Summarizer};

/// Longest final summary text the length score accepts, in characters.
pub const MAX_FINAL_SUMMARY: usize = 2400;

/// `faultline llm-eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct LlmEvalArgs {
    /// Folder of golden cases (`*.json`).
    #[arg(long)]
    pub golden: PathBuf,
    /// TOML settings file with the `[llm]` endpoint (FAULTLINE_LLM_* override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// One golden case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenCase {
    /// Case name.
    pub name: String,
    /// The incident (its rule must be one of the embedded rules).
    pub incident: Incident,
    /// What the summary must do.
    #[serde(default)]
    pub expect: Expect,
}

/// Reference facts of a case.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Candidate ids a faithful summary cites (any of them).
    #[serde(default)]
    pub candidates: Vec<String>,
    /// Strings that must never be sent nor appear in the summary.
    #[serde(default)]
    pub forbidden: Vec<String>,
}

/// The score of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseScore {
    /// Case name.
    pub name: String,
    /// `llm` or `template`.
    pub source: String,
    /// The first answer matched the schema.
    pub schema_valid: bool,
    /// The first answer stated only facts and cited an expected candidate.
    pub faithful: bool,
    /// What leaked (forbidden strings or pattern names); empty is good.
    pub leaked: Vec<String>,
    /// Final title and summary within limits.
    pub length_ok: bool,
    /// Why the template was used, if it was.
    pub note: Option<String>,
}

/// The scores of a golden set.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Prompt version evaluated.
    pub prompt_version: String,
    /// Cases.
    pub cases: Vec<CaseScore>,
    /// Share of cases whose first answer was schema-valid.
    pub schema_validity: f64,
    /// Share of faithful first answers.
    pub faithfulness: f64,
    /// Cases with any leak (must be 0).
    pub leakage: usize,
    /// Share of cases within length limits.
    pub length_ok: f64,
    /// Share of cases that ended with the template.
    pub fallback_rate: f64,
}

/// Reads every `*.json` case in `dir`, sorted by file name.
pub fn load_cases(dir: &Path) -> anyhow::Result<Vec<GoldenCase>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{}: not a golden case", p.display()))
        })
        .collect()
}

/// Summarizes every case with `summarizer` (whose audit sink is `audit`) and
/// scores it.
pub async fn evaluate(
    summarizer: &LlmSummarizer,
    audit: &MemoryAudit,
    rules: &RuleSet,
    cases: &[GoldenCase],
) -> anyhow::Result<EvalReport> {
    let mut scores = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let rule = rules
            .get(&case.incident.rule)
            .with_context(|| format!("case {}: unknown rule {}", case.name, case.incident.rule))?;
        let mut incident = case.incident.clone();
        // Unique ids, so each case's audit records are its own.
        incident.id = format!("eval_{i}_{}", incident.id);
        let facts = Facts::new(&incident, &rule.rule);
        let summary = summarizer.summarize(&facts).await;
        let records: Vec<_> = audit
            .records()
            .into_iter()
            .filter_map(|r| match r {
                Record::LlmCall(c) if c.incident_id == incident.id => Some(c),
                _ => None,
            })
            .collect();
        let first = records
            .iter()
            .find(|r| r.outcome == "accepted" || r.outcome == "invalid");
        let schema_valid = first.is_some_and(|r| {
            r.outcome == "accepted"
                || !(r.detail.contains("not_json") || r.detail.contains("schema:"))
        });
        let cited_ok = |r: &crate::audit::LlmCall| {
            let Ok(out) = serde_json::from_str::<LlmOutput>(&r.response) else {
                return false;
            };
            case.expect.candidates.is_empty()
                || out
                    .root_cause
                    .candidate_ids
                    .iter()
                    .any(|c| case.expect.candidates.contains(c))
        };
        let faithful = first.is_some_and(|r| {
            r.outcome == "accepted"
                && !r.detail.contains("unsupported_number")
                && !r.detail.contains("unknown_candidate")
                && cited_ok(r)
        });
        let (system, user) = summarizer.messages(&facts);
        let mut leaked = Vec::new();
        // The template's own text is not the LLM path's to score: it is what
        // the incident shows without an LLM too.
        let mut scored = vec![&system, &user];
        if summary.source == SummarySource::Llm {
            scored.extend([&summary.title, &summary.summary]);
        }
        for text in scored {
            for f in &case.expect.forbidden {
                if !f.is_empty() && text.contains(f.as_str()) {
                    leaked.push(format!("forbidden `{}`", redact::redact_all(f)));
                }
            }
            for v in redact::violations(text) {
                leaked.push(format!("pattern {v}"));
            }
        }
        for r in &records {
            for v in redact::violations(&r.prompt) {
                leaked.push(format!("audit pattern {v}"));
            }
        }
        leaked.sort();
        leaked.dedup();
        let length_ok = summary.title.chars().count() <= MAX_TITLE
            && summary.summary.chars().count() <= MAX_FINAL_SUMMARY
            && !summary.title.trim().is_empty();
        scores.push(CaseScore {
            name: case.name.clone(),
            source: match summary.source {
                SummarySource::Llm => "llm".into(),
                SummarySource::Template => "template".into(),
            },
            schema_valid,
            faithful,
            leaked,
            length_ok,
            note: summary.note.clone(),
        });
    }
    let n = scores.len().max(1) as f64;
    let share = |f: &dyn Fn(&CaseScore) -> bool| scores.iter().filter(|s| f(s)).count() as f64 / n;
    Ok(EvalReport {
        prompt_version: summarizer.prompt_version().to_string(),
        schema_validity: share(&|s| s.schema_valid),
        faithfulness: share(&|s| s.faithful),
        leakage: scores.iter().filter(|s| !s.leaked.is_empty()).count(),
        length_ok: share(&|s| s.length_ok),
        fallback_rate: share(&|s| s.source == "template"),
        cases: scores,
    })
}

/// `faultline llm-eval`: prints the report as JSON; fails on any leak.
pub fn command(args: &LlmEvalArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let settings = crate::config::Settings::load(args.config.as_deref())?;
    anyhow::ensure!(
        settings.llm.enabled(),
        "no LLM endpoint: set llm.base_url and llm.model (or FAULTLINE_LLM_BASE_URL / _MODEL)"
    );
    let cases = load_cases(&args.golden)?;
    anyhow::ensure!(
        !cases.is_empty(),
        "no *.json cases in {}",
        args.golden.display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let report = rt.block_on(async {
        let audit = Arc::new(MemoryAudit::default());
        let summarizer =
            LlmSummarizer::new(&settings.llm, audit.clone(), Arc::new(Metrics::new()))?;
        evaluate(&summarizer, &audit, &RuleSet::embedded(), &cases).await
    })?;
    writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    anyhow::ensure!(report.leakage == 0, "{} case(s) leaked", report.leakage);
    Ok(())
}
