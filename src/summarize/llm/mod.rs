//! The LLM summarizer: an OpenAI-compatible chat-completions endpoint writes
//! the summary, under guardrails, and the template takes over whenever they
//! say no.
//!
//! # The path of one summary
//!
//! 1. [`prompt::PromptFacts`] takes the allow-listed facts (numbers, dimension
//!    values, the rule's description), each through [`crate::redact::redact_all`]
//!    and truncated; the versioned [`prompt::Prompt`] wraps them as a JSON
//!    block the system prompt declares to be data.
//! 2. Policy: the whole request text is checked with
//!    [`crate::redact::violations`]; any match refuses the call
//!    (`refused_by_policy`) and nothing leaves.
//! 3. Cache: a summary already written for the same prompt (a hash of prompt
//!    version, model and facts) is reused, so identical fact sets cost once.
//! 4. Cost and health: the circuit breaker ([`guard::Breaker`]), the hourly
//!    token budget ([`guard::TokenBudget`]) and a semaphore on concurrent
//!    requests each may say no (`circuit_open`, `budget_exhausted`,
//!    `concurrency_limit`).
//! 5. The request ([`client::ChatClient`]): JSON-schema response format, a
//!    per-request timeout, retries on 429 / 5xx / timeouts / refused
//!    connections with exponential backoff, full jitter and `Retry-After`, all
//!    within `total_timeout`: a wait that would pass it is not started.
//! 6. Validation ([`validate::validate`]): schema, candidates, numbers, links,
//!    sensitive data, lengths. An invalid answer is retried once with the
//!    errors; a second invalid answer falls back (`invalid_output`).
//!
//! Every request (and every refusal before one) is an audit record
//! ([`crate::audit::Record::LlmCall`]) and a `metrics.llm_call`; every
//! fallback is a `metrics.summary_fallback(reason)` and the [`Summary::note`]
//! the pipeline writes into the incident's timeline. The pipeline's own
//! deadline (`llm.deadline`) keeps all of this off the critical path.

pub mod client;
pub mod eval;
pub mod guard;
pub mod prompt;
pub mod validate;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestAssistantMessageContent,
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestUserMessage,
};
use async_trait::async_trait;
use rand::Rng;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tracing::Instrument;

use self::client::{CallError, ChatClient, ChatOptions, Reply};
use self::guard::{Breaker, Cache, TokenBudget};
use self::prompt::{Prompt, PromptError, PromptFacts};
use self::validate::{LlmOutput, Rejection};
use super::{template, Facts, Summarizer, Summary};
use crate::audit::{Audit, LlmCall, Record};
use crate::config::LlmSettings;
use crate::incident::SummarySource;
use crate::metrics::Metrics;
use crate::redact;

/// First backoff step; doubles per retry, with full jitter.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Longest backoff between two retries (a longer `Retry-After` still counts,
/// within the total timeout).
const BACKOFF_MAX: Duration = Duration::from_secs(4);

/// The LLM summarizer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// `llm.base_url` or `llm.model` missing.
    #[error("llm.{0} is required")]
    Missing(&'static str),
    /// The prompt file.
    #[error(transparent)]
    Prompt(#[from] PromptError),
    /// The HTTP client.
    #[error(transparent)]
    Client(#[from] client::BuildError),
}

/// Why the template was used: a reason name (metrics label, note prefix) and
/// what happened.
#[derive(Debug, Clone, PartialEq)]
struct Fallback {
    reason: &'static str,
    detail: String,
}

impl Fallback {
    fn new(reason: &'static str, detail: impl Into<String>) -> Fallback {
        Fallback {
            reason,
            detail: detail.into(),
        }
    }
}

/// What an accepted answer leaves in the cache.
#[derive(Debug, Clone)]
struct Cached {
    title: String,
    summary: String,
}

/// The guarded LLM summarizer.
pub struct LlmSummarizer {
    client: ChatClient,
    prompt: Prompt,
    audit: Arc<dyn Audit>,
    metrics: Arc<Metrics>,
    breaker: Breaker,
    budget: TokenBudget,
    cache: Cache<Cached>,
    permits: Semaphore,
    max_tokens: u32,
    total_timeout: Duration,
    max_retries: u32,
}

impl std::fmt::Debug for LlmSummarizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmSummarizer")
            .field("client", &self.client)
            .field("prompt_version", &self.prompt.version)
            .finish_non_exhaustive()
    }
}

impl LlmSummarizer {
    /// From settings: the endpoint, the prompt (from `llm.prompts_dir` or the
    /// embedded one) and the guardrails. Records go to `audit`.
    pub fn new(
        settings: &LlmSettings,
        audit: Arc<dyn Audit>,
        metrics: Arc<Metrics>,
    ) -> Result<LlmSummarizer, LlmError> {
        let prompt = match &settings.prompts_dir {
            Some(dir) => Prompt::load_dir(dir)?,
            None => Prompt::embedded(),
        };
        Self::with_prompt(settings, prompt, audit, metrics)
    }

    /// [`LlmSummarizer::new`] with a given prompt.
    pub fn with_prompt(
        settings: &LlmSettings,
        prompt: Prompt,
        audit: Arc<dyn Audit>,
        metrics: Arc<Metrics>,
    ) -> Result<LlmSummarizer, LlmError> {
        let base_url = settings
            .base_url
            .clone()
            .ok_or(LlmError::Missing("base_url"))?;
        let model = settings.model.clone().ok_or(LlmError::Missing("model"))?;
        let client = ChatClient::new(ChatOptions {
            base_url,
            api_key: settings
                .api_key
                .clone()
                .unwrap_or_else(|| SecretString::from(String::new())),
            model,
            temperature: settings.temperature,
            max_tokens: settings.max_tokens,
            request_timeout: settings.request_timeout.0,
        })?;
        Ok(LlmSummarizer {
            client,
            prompt,
            audit,
            metrics,
            breaker: Breaker::new(settings.breaker_failures, settings.breaker_cooldown.0),
            budget: TokenBudget::new(settings.tokens_per_hour),
            cache: Cache::new(settings.cache_entries),
            permits: Semaphore::new(settings.max_concurrent.max(1)),
            max_tokens: settings.max_tokens,
            total_timeout: settings.total_timeout.0,
            max_retries: settings.max_retries,
        })
    }

    /// The version id of the prompt in use.
    pub fn prompt_version(&self) -> &str {
        &self.prompt.version
    }

    /// The system and user messages for `facts`, as they would be sent.
    pub fn messages(&self, facts: &Facts) -> (String, String) {
        let pf = PromptFacts::from_facts(facts);
        (self.prompt.system.clone(), self.prompt.user_message(&pf))
    }

    async fn run(&self, facts: &Facts, started: Instant) -> Result<Summary, Fallback> {
        let deadline = started + self.total_timeout;
        let pf = PromptFacts::from_facts(facts);
        let user = self.prompt.user_message(&pf);
        let system = self.prompt.system.clone();
        let mut messages = vec![
            ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage::from(
                system.as_str(),
            )),
            ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage::from(
                user.as_str(),
            )),
        ];
        let mut call = CallRecord::new(self, facts);

        // The PCI boundary: nothing that still matches a pattern leaves.
        let found = policy_violations(&[&system, &user]);
        if !found.is_empty() {
            let detail = format!("request matches {}", found.join(", "));
            call.refused(&messages, "refused_by_policy", &detail);
            return Err(Fallback::new("refused_by_policy", detail));
        }

        let key = cache_key(&self.prompt.version, self.client.model(), &user);
        if let Some(hit) = self.cache.get(&key) {
            tracing::debug!("identical facts summarized before; reusing the summary");
            return Ok(self.llm_summary(hit));
        }

        let now = Instant::now();
        if !self.breaker.allow(now) {
            call.refused(&messages, "circuit_open", "endpoint failing; cooling down");
            return Err(Fallback::new(
                "circuit_open",
                "endpoint failing; cooling down",
            ));
        }
        let estimate = ((system.len() + user.len()) / 4) as u64 + u64::from(self.max_tokens);
        if !self.budget.allows(now, estimate) {
            call.refused(&messages, "budget_exhausted", "hourly token budget spent");
            return Err(Fallback::new(
                "budget_exhausted",
                "hourly token budget spent",
            ));
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        let _permit = match tokio::time::timeout(wait, self.permits.acquire()).await {
            Ok(Ok(p)) => p,
            _ => {
                call.refused(&messages, "concurrency_limit", "no request slot in time");
                return Err(Fallback::new(
                    "concurrency_limit",
                    "no request slot in time",
                ));
            }
        };

        for round in 1..=2 {
            let reply = self
                .call_with_retries(&messages, &mut call, deadline, estimate)
                .await
                .map_err(|e| {
                    let reason = match e {
                        CallError::RateLimited { .. } => "rate_limited",
                        _ => e.outcome(),
                    };
                    Fallback::new(reason, e.to_string())
                })?;
            match validate::validate(&reply.content, facts, &pf) {
                Ok(out) => {
                    call.answered(&messages, &reply, "accepted", "");
                    let cached = self.render(&out, &pf);
                    self.cache.put(key, cached.clone());
                    return Ok(self.llm_summary(cached));
                }
                Err(errs) => {
                    let list: Vec<String> = errs.iter().map(Rejection::to_string).collect();
                    let detail = list.join("; ");
                    call.answered(&messages, &reply, "invalid", &detail);
                    if round == 2 {
                        return Err(Fallback::new("invalid_output", detail));
                    }
                    // The answer goes back redacted; the errors name only
                    // reasons, ids and numbers.
                    messages.push(ChatCompletionRequestMessage::Assistant(
                        ChatCompletionRequestAssistantMessage {
                            content: Some(ChatCompletionRequestAssistantMessageContent::Text(
                                redact::redact_all(&reply.content).into_owned(),
                            )),
                            ..Default::default()
                        },
                    ));
                    let retry = self.prompt.retry_message(&list);
                    messages.push(ChatCompletionRequestMessage::User(
                        ChatCompletionRequestUserMessage::from(retry.as_str()),
                    ));
                    let again = policy_violations(&[&system, &user, &retry]);
                    if !again.is_empty() {
                        let detail = format!("retry request matches {}", again.join(", "));
                        call.refused(&messages, "refused_by_policy", &detail);
                        return Err(Fallback::new("refused_by_policy", detail));
                    }
                }
            }
        }
        Err(Fallback::new("invalid_output", "no valid answer"))
    }

    /// Sends `messages`, retrying transient failures within `deadline`.
    async fn call_with_retries(
        &self,
        messages: &[ChatCompletionRequestMessage],
        call: &mut CallRecord<'_>,
        deadline: Instant,
        estimate: u64,
    ) -> Result<Reply, CallError> {
        let mut retry = 0u32;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CallError::Timeout);
            }
            if !self.budget.allows(Instant::now(), estimate) {
                call.refused(messages, "budget_exhausted", "hourly token budget spent");
                return Err(CallError::Budget);
            }
            let request = self.client.request(messages.to_vec());
            let sent = Instant::now();
            let result = match tokio::time::timeout(left, self.client.send(request)).await {
                Ok(r) => r,
                Err(_) => Err(CallError::Timeout),
            };
            call.latency = sent.elapsed();
            match result {
                Ok(reply) => {
                    self.breaker.success();
                    let used = u64::from(reply.prompt_tokens) + u64::from(reply.completion_tokens);
                    self.budget
                        .spend(Instant::now(), if used > 0 { used } else { estimate });
                    return Ok(reply);
                }
                Err(e) => {
                    call.failed(messages, &e);
                    if e.retryable() {
                        self.breaker.failure(Instant::now());
                    }
                    if matches!(e, CallError::Timeout) {
                        // The endpoint may have spent the prompt anyway.
                        self.budget.spend(Instant::now(), estimate);
                    }
                    if !e.retryable() || retry >= self.max_retries {
                        return Err(e);
                    }
                    let delay = backoff(retry, e.retry_after());
                    let left = deadline.saturating_duration_since(Instant::now());
                    if delay >= left {
                        tracing::debug!(?delay, "retry would pass the total timeout; giving up");
                        return Err(e);
                    }
                    if !self.breaker.allow(Instant::now()) {
                        return Err(e);
                    }
                    tokio::time::sleep(delay).await;
                    retry += 1;
                }
            }
        }
    }

    /// The incident text from a validated answer. Cited candidates are named
    /// by their (redacted) dimension values.
    fn render(&self, out: &LlmOutput, pf: &PromptFacts) -> Cached {
        let cited: Vec<String> = out
            .root_cause
            .candidate_ids
            .iter()
            .filter_map(|id| pf.candidates.iter().find(|c| &c.id == id))
            .map(|c| {
                let kv: Vec<String> = c.dims.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{}: {}", c.id, kv.join(", "))
            })
            .collect();
        let confidence = match out.root_cause.confidence {
            validate::Confidence::Low => "low",
            validate::Confidence::Medium => "medium",
            validate::Confidence::High => "high",
        };
        let mut s = format!(
            "{}\nImpact: {}\nRoot cause ({confidence} confidence): {}",
            out.summary.trim(),
            out.impact.trim(),
            out.root_cause.assessment.trim()
        );
        if !cited.is_empty() {
            s.push_str(&format!(" [{}]", cited.join("; ")));
        }
        // The next step is faultline's, from the facts: the model's own
        // suggestions are not shown (they could be invented).
        if let Some(n) = &pf.next_step {
            s.push_str("\nCheck next: ");
            s.push_str(n);
        }
        Cached {
            title: redact::redact_all(out.title.trim()).into_owned(),
            summary: redact::redact_all(&s).into_owned(),
        }
    }

    fn llm_summary(&self, c: Cached) -> Summary {
        Summary {
            title: c.title,
            summary: c.summary,
            source: SummarySource::Llm,
            prompt_version: Some(self.prompt.version.clone()),
            note: None,
        }
    }

    fn fallback(&self, facts: &Facts, fb: Fallback) -> Summary {
        self.metrics.summary_fallback(fb.reason);
        tracing::warn!(reason = fb.reason, detail = %fb.detail, "LLM summary not used; template instead");
        Summary {
            note: Some(format!(
                "LLM summary not used ({}): {}",
                fb.reason,
                short(&fb.detail, 400)
            )),
            ..template(facts)
        }
    }
}

#[async_trait]
impl Summarizer for LlmSummarizer {
    async fn summarize(&self, facts: &Facts) -> Summary {
        let span = tracing::info_span!(
            "llm_summary",
            incident_id = %facts.incident_id,
            rule = %facts.rule,
            prompt_version = %self.prompt.version
        );
        async {
            let started = Instant::now();
            // `run` keeps within the total timeout itself; this bounds the
            // bookkeeping around it too.
            let bound = self.total_timeout + Duration::from_secs(1);
            match tokio::time::timeout(bound, self.run(facts, started)).await {
                Ok(Ok(s)) => s,
                Ok(Err(fb)) => self.fallback(facts, fb),
                Err(_) => self.fallback(facts, Fallback::new("timeout", "total timeout")),
            }
        }
        .instrument(span)
        .await
    }
}

/// Audit and metrics for the requests of one summary.
struct CallRecord<'a> {
    s: &'a LlmSummarizer,
    incident_id: String,
    attempt: AtomicU32,
    latency: Duration,
}

impl<'a> CallRecord<'a> {
    fn new(s: &'a LlmSummarizer, facts: &Facts) -> CallRecord<'a> {
        CallRecord {
            s,
            incident_id: facts.incident_id.clone(),
            attempt: AtomicU32::new(0),
            latency: Duration::ZERO,
        }
    }

    fn record(
        &self,
        messages: &[ChatCompletionRequestMessage],
        response: &str,
        outcome: &str,
        detail: &str,
        tokens: (u32, u32),
    ) {
        let attempt = self.attempt.fetch_add(1, Ordering::Relaxed) + 1;
        let prompt = serde_json::to_string(messages).unwrap_or_default();
        self.s.audit.record(Record::LlmCall(LlmCall {
            at: chrono::Utc::now(),
            incident_id: self.incident_id.clone(),
            prompt_version: self.s.prompt.version.clone(),
            model: self.s.client.model().to_string(),
            attempt,
            // Already redacted; redacted again so the record can never hold
            // what the policy check would refuse.
            prompt: redact::redact_all(&prompt).into_owned(),
            response: redact::redact_all(&short(response, 8000)).into_owned(),
            outcome: outcome.to_string(),
            detail: short(detail, 1000),
            latency_ms: self.latency.as_millis() as u64,
            prompt_tokens: tokens.0,
            completion_tokens: tokens.1,
        }));
    }

    /// No request was sent.
    fn refused(&self, messages: &[ChatCompletionRequestMessage], outcome: &str, detail: &str) {
        tracing::info!(outcome, detail, "LLM request not sent");
        self.record(messages, "", outcome, detail, (0, 0));
    }

    /// A request failed.
    fn failed(&self, messages: &[ChatCompletionRequestMessage], e: &CallError) {
        tracing::info!(outcome = e.outcome(), error = %e, latency_ms = self.latency.as_millis() as u64, "LLM request failed");
        self.s.metrics.llm_call(e.outcome(), self.latency, 0, 0);
        self.record(messages, "", e.outcome(), &e.to_string(), (0, 0));
    }

    /// A request was answered; `outcome` is `accepted` or `invalid`.
    fn answered(
        &self,
        messages: &[ChatCompletionRequestMessage],
        reply: &Reply,
        outcome: &str,
        detail: &str,
    ) {
        tracing::info!(
            outcome,
            latency_ms = self.latency.as_millis() as u64,
            "LLM request answered"
        );
        self.s.metrics.llm_call(
            outcome,
            self.latency,
            u64::from(reply.prompt_tokens),
            u64::from(reply.completion_tokens),
        );
        self.record(
            messages,
            &reply.content,
            outcome,
            detail,
            (reply.prompt_tokens, reply.completion_tokens),
        );
    }
}

/// Pattern names any of `texts` still matches.
pub fn policy_violations(texts: &[&str]) -> Vec<&'static str> {
    let mut all: Vec<&'static str> = texts.iter().flat_map(|t| redact::violations(t)).collect();
    all.sort();
    all.dedup();
    all
}

fn cache_key(version: &str, model: &str, user: &str) -> String {
    let mut h = Sha256::new();
    for part in [version, model, user] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Exponential backoff with full jitter, at least what the endpoint asked for.
fn backoff(retry: u32, retry_after: Option<Duration>) -> Duration {
    let cap = BACKOFF_BASE
        .saturating_mul(1u32 << retry.min(10))
        .min(BACKOFF_MAX);
    let jitter = rand::thread_rng().gen_range(0..=cap.as_millis() as u64);
    let computed = Duration::from_millis(jitter);
    match retry_after {
        Some(ra) => ra.max(computed),
        None => computed,
    }
}

fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push('…');
    out
}

#[cfg(test)]
pub(crate) mod testing {
    //! Facts and answers shared by the unit tests.

    use crate::incident::{ts, Incident, Link, RootCause, Status, SummarySource, TimeRange};
    use crate::rules::RuleSet;
    use crate::summarize::Facts;

    const T0: i64 = 1_772_410_841_000; // 2026-03-02T00:20:41Z

    /// One rate incident (auth_technical_failures) on `dims`: 1,702 of 4,210
    /// failed (40.4%) against a 0.51% baseline, over 5 minutes.
    pub fn facts_with(dims: &[(&str, &str)]) -> Facts {
        let rules = RuleSet::embedded();
        let compiled = rules.get("auth_technical_failures").unwrap();
        let inc = Incident {
            id: "inc_1".into(),
            rule: "auth_technical_failures".into(),
            kind: compiled.rule.kind.clone(),
            severity: compiled.rule.severity,
            status: Status::Open,
            opened_at: ts(T0),
            updated_at: ts(T0),
            resolved_at: None,
            root_causes: vec![RootCause {
                dims: dims
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                score: 0.94,
                events: 4210,
                failures: 1702,
                expected_failures: 4210.0 * 0.0051,
                failure_rate: 0.404,
                baseline_rate: 0.0051,
                expected_events: None,
            }],
            window: TimeRange {
                start: ts(T0 - 300_000),
                end: ts(T0),
            },
            title: String::new(),
            summary: String::new(),
            summary_source: SummarySource::Template,
            links: vec![Link {
                title: "Dash".into(),
                url: "https://g.example.com/d/auth".into(),
            }],
            prompt_version: None,
            candidates: Vec::new(),
            episode: Default::default(),
        };
        Facts::new(&inc, &compiled.rule)
    }

    /// A faithful answer for [`facts_with`].
    pub fn good_answer() -> serde_json::Value {
        serde_json::json!({
            "title": "stripe in us-west-2: auth failures 40.4% vs 0.51% baseline",
            "summary": "Technical authorization failures for stripe in us-west-2 reached 40.4% against a 0.51% baseline, about 79x normal, over the last 5 minutes.",
            "impact": "1,702 of 4,210 authorizations failed, 1,681 more than expected.",
            "root_cause": {
                "candidate_ids": ["c1"],
                "assessment": "c1 explains 94% of the excess failures.",
                "confidence": "high"
            },
            "next_checks": ["Check the stripe status for us-west-2", "Compare error codes of c1 with the baseline"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_honours_retry_after() {
        for retry in 0..8 {
            let d = backoff(retry, None);
            assert!(d <= BACKOFF_MAX, "{d:?}");
        }
        assert!(backoff(0, None) <= BACKOFF_BASE);
        assert!(backoff(0, Some(Duration::from_secs(3))) >= Duration::from_secs(3));
    }

    #[test]
    fn policy_names_what_would_leak() {
        assert!(policy_violations(&["stripe 40.4%", "{\"a\": 1}"]).is_empty());
        let v = policy_violations(&["ok", "card 4111 1111 1111 1111 and jane@example.com"]);
        assert_eq!(v, vec!["email", "pan"]);
    }

    #[test]
    fn cache_keys_differ_by_version_model_and_facts() {
        let a = cache_key("v1", "m", "facts");
        assert_eq!(a, cache_key("v1", "m", "facts"));
        assert_ne!(a, cache_key("v2", "m", "facts"));
        assert_ne!(a, cache_key("v1", "n", "facts"));
        assert_ne!(a, cache_key("v1", "m", "facts2"));
    }
}
