//! A thin client of the Slack Web API over reqwest: one `POST {api_url}/{method}`
//! per call, paced per channel, retried with backoff, audited and counted.
//!
//! Why not slack-morphism: its hyper connector brings its own TLS stack and
//! crypto provider (the tree already builds rustls on ring for NATS and the
//! LLM client), and the handful of methods faultline needs (`chat.postMessage`,
//! `chat.update`, `conversations.history`, `conversations.list` and the
//! external upload pair) are plain JSON or form posts. Owning the loop also
//! lets every attempt be audited and counted with the status Slack gave it,
//! and lets the notifier decide what an ambiguous failure means (a post that
//! may have landed is looked up before it is sent again).
//!
//! The token goes only into the `Authorization` header of calls to `api_url`,
//! marked sensitive; it is never logged, never in an error, and never sent to
//! the upload URL Slack hands back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::audit::{Audit, Record, SlackPost};
use crate::metrics::Metrics;
use crate::notify::NotifyError;

/// Longest wait a `Retry-After` may ask for before faultline gives up the call.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
/// First backoff after a network error or a 5xx; doubled per retry.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest backoff between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Errors of one Web API call. None carries the token.
#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    /// Slack could not be reached, timed out or answered 5xx: the call may
    /// or may not have taken effect.
    #[error("slack unavailable: {0}")]
    Unavailable(String),
    /// Slack answered `{"ok":false,"error":CODE}` (or a 4xx).
    #[error("slack refused the call: {0}")]
    Api(String),
    /// Still rate limited after every retry.
    #[error("slack rate limit persisted after {0} retries")]
    RateLimited(u32),
    /// Slack answered something that is not its JSON envelope.
    #[error("unexpected answer from slack: {0}")]
    Protocol(String),
}

impl From<SlackError> for NotifyError {
    fn from(e: SlackError) -> Self {
        match e {
            SlackError::Api(_) | SlackError::Protocol(_) => NotifyError::Rejected(e.to_string()),
            SlackError::Unavailable(_) | SlackError::RateLimited(_) => {
                NotifyError::Unavailable(e.to_string())
            }
        }
    }
}

/// The arguments of a call: JSON for most methods, a form for
/// `files.getUploadURLExternal` and the read methods.
#[derive(Debug, Clone)]
pub enum Args {
    /// `application/json` body.
    Json(Value),
    /// `application/x-www-form-urlencoded` body.
    Form(Vec<(String, String)>),
}

/// What a call is about, for pacing and the audit record.
#[derive(Debug, Clone, Copy)]
pub struct CallCtx<'a> {
    /// The incident the call is about.
    pub incident_id: &'a str,
    /// The channel (id or name) it writes to or reads.
    pub channel: &'a str,
    /// Retry network errors and 5xx too. Off for a post that must not land
    /// twice: the caller looks it up before trying again.
    pub retry_ambiguous: bool,
}

/// One attempt's end.
enum Attempt {
    Done(Value),
    Retry { after: Duration, err: SlackError },
    Fail(SlackError),
}

/// The Web API client. One per notifier.
pub struct SlackClient {
    http: reqwest::Client,
    base: String,
    token: SecretString,
    min_interval: Duration,
    max_retries: u32,
    // A std Mutex: held only to read and stamp one entry, never across an await.
    last_message: Mutex<HashMap<String, Instant>>,
    audit: Arc<dyn Audit>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for SlackClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackClient")
            .field("base", &self.base)
            .field("token", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

/// Methods that write a message to a channel: paced to `min_interval`.
fn is_message(method: &str) -> bool {
    matches!(
        method,
        "chat.postMessage" | "chat.update" | "files.completeUploadExternal"
    )
}

impl SlackClient {
    /// A client of the Web API at `base` (`https://slack.com/api`).
    pub fn new(
        base: &str,
        token: SecretString,
        timeout: Duration,
        min_interval: Duration,
        max_retries: u32,
        audit: Arc<dyn Audit>,
        metrics: Arc<Metrics>,
    ) -> Result<SlackClient, SlackError> {
        // reqwest is built without a bundled crypto provider; ring is the one
        // the rest of the tree uses. Installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| SlackError::Unavailable(format!("cannot build the HTTP client: {e}")))?;
        Ok(SlackClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
            min_interval,
            max_retries,
            last_message: Mutex::new(HashMap::new()),
            audit,
            metrics,
        })
    }

    /// Calls `method` and returns Slack's JSON answer (with `"ok":true`).
    pub async fn call(
        &self,
        method: &str,
        args: &Args,
        ctx: CallCtx<'_>,
    ) -> Result<Value, SlackError> {
        let mut retries = 0u32;
        loop {
            if is_message(method) {
                self.pace(ctx.channel).await;
            }
            let started = Instant::now();
            let attempt = self.attempt(method, args, ctx.retry_ambiguous).await;
            let (status, ts) = match &attempt {
                Attempt::Done(v) => ("ok".to_string(), message_ts(v)),
                Attempt::Retry { err, .. } | Attempt::Fail(err) => (status_of(err), None),
            };
            self.record(method, ctx, &status, ts, started.elapsed());
            match attempt {
                Attempt::Done(v) => return Ok(v),
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry { after, err } => {
                    if retries >= self.max_retries {
                        return Err(match err {
                            SlackError::RateLimited(_) => SlackError::RateLimited(retries),
                            other => other,
                        });
                    }
                    retries += 1;
                    tracing::debug!(method, retries, wait_ms = after.as_millis() as u64, error = %err, "slack call retried");
                    tokio::time::sleep(after).await;
                }
            }
        }
    }

    /// Posts `bytes` to an upload URL from `files.getUploadURLExternal`
    /// (no token: the URL itself is the credential).
    pub async fn upload(
        &self,
        url: &str,
        bytes: Vec<u8>,
        ctx: CallCtx<'_>,
    ) -> Result<(), SlackError> {
        let mut retries = 0u32;
        loop {
            let started = Instant::now();
            let res = self
                .http
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(bytes.clone())
                .send()
                .await;
            let outcome = match res {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => Err((
                    true,
                    SlackError::Unavailable(format!("upload answered {}", r.status())),
                )),
                Ok(r) => Err((
                    false,
                    SlackError::Api(format!("upload answered {}", r.status())),
                )),
                Err(e) => Err((true, SlackError::Unavailable(transport(&e)))),
            };
            let status = match &outcome {
                Ok(()) => "ok".to_string(),
                Err((_, e)) => status_of(e),
            };
            self.record("upload", ctx, &status, None, started.elapsed());
            match outcome {
                Ok(()) => return Ok(()),
                Err((true, _)) if retries < self.max_retries => {
                    tokio::time::sleep(backoff(retries)).await;
                    retries += 1;
                }
                Err((_, e)) => return Err(e),
            }
        }
    }

    /// Waits until `channel` may receive another message, then stamps it.
    async fn pace(&self, channel: &str) {
        let wait = {
            let mut last = self.last_message.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let next = last
                .get(channel)
                .map(|t| *t + self.min_interval)
                .unwrap_or(now)
                .max(now);
            last.insert(channel.to_string(), next);
            next - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(&self, method: &str, args: &Args, retry_ambiguous: bool) -> Attempt {
        let url = format!("{}/{}", self.base, method);
        let req = self.http.post(url).bearer_auth(self.token.expose_secret());
        let req = match args {
            Args::Json(v) => req
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/json; charset=utf-8",
                )
                .body(serde_json::to_vec(v).unwrap_or_default()),
            Args::Form(pairs) => req
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(
                    form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(pairs.iter())
                        .finish(),
                ),
        };
        let ambiguous = |err: SlackError, retries_hint: Duration| {
            if retry_ambiguous {
                Attempt::Retry {
                    after: retries_hint,
                    err,
                }
            } else {
                Attempt::Fail(err)
            }
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return ambiguous(SlackError::Unavailable(transport(&e)), FIRST_BACKOFF),
        };
        let status = resp.status();
        if status.as_u16() == 429 {
            // Rate limited: the call did not take effect, always safe to retry.
            let after = retry_after(resp.headers()).unwrap_or(Duration::from_secs(1));
            if after > MAX_RETRY_AFTER {
                return Attempt::Fail(SlackError::RateLimited(0));
            }
            return Attempt::Retry {
                after,
                err: SlackError::RateLimited(0),
            };
        }
        if status.is_server_error() {
            return ambiguous(
                SlackError::Unavailable(format!("HTTP {}", status.as_u16())),
                FIRST_BACKOFF,
            );
        }
        if !status.is_success() {
            return Attempt::Fail(SlackError::Api(format!("http_{}", status.as_u16())));
        }
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return ambiguous(SlackError::Unavailable(transport(&e)), FIRST_BACKOFF),
        };
        let v: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => {
                return Attempt::Fail(SlackError::Protocol(format!(
                    "{method} answered {} bytes that are not JSON",
                    body.len()
                )))
            }
        };
        match v.get("ok").and_then(Value::as_bool) {
            Some(true) => Attempt::Done(v),
            Some(false) => {
                let code = v
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .take(64)
                    .collect::<String>();
                if code == "ratelimited" || code == "rate_limited" {
                    Attempt::Retry {
                        after: Duration::from_secs(1),
                        err: SlackError::RateLimited(0),
                    }
                } else {
                    Attempt::Fail(SlackError::Api(code))
                }
            }
            None => Attempt::Fail(SlackError::Protocol(format!(
                "{method} answered without `ok`"
            ))),
        }
    }

    fn record(
        &self,
        method: &str,
        ctx: CallCtx<'_>,
        status: &str,
        ts: Option<String>,
        latency: Duration,
    ) {
        self.metrics.slack_call(status);
        self.audit.record(Record::SlackPost(SlackPost {
            at: Utc::now(),
            incident_id: ctx.incident_id.to_string(),
            method: method.to_string(),
            channel: ctx.channel.to_string(),
            ts,
            status: status.to_string(),
            latency_ms: latency.as_millis().min(u128::from(u64::MAX)) as u64,
        }));
    }
}

/// The audit status of a failed attempt.
fn status_of(e: &SlackError) -> String {
    match e {
        SlackError::Api(code) => format!("error:{code}"),
        SlackError::RateLimited(_) => "rate_limited".into(),
        SlackError::Unavailable(_) | SlackError::Protocol(_) => "unavailable".into(),
    }
}

/// The `ts` a message call answered.
fn message_ts(v: &Value) -> Option<String> {
    v.get("ts").and_then(Value::as_str).map(str::to_string)
}

/// A transport error's text without the URL (it holds no secret, but the
/// message stays short and stable).
fn transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        "request failed".into()
    }
}

/// `Retry-After` in seconds.
fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    h.get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Exponential backoff for the `n`-th retry (0-based).
pub(crate) fn backoff(n: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1u32 << n.min(10))
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(250));
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(3), Duration::from_secs(2));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }

    #[test]
    fn debug_hides_the_token() {
        let c = SlackClient::new(
            "http://127.0.0.1:9/api/",
            SecretString::from("xoxb-secret-token".to_string()),
            Duration::from_secs(1),
            Duration::from_secs(1),
            1,
            Arc::new(crate::audit::MemoryAudit::default()),
            Arc::new(Metrics::new()),
        )
        .unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains("xoxb-secret"), "{d}");
        assert!(d.contains("http://127.0.0.1:9/api"), "{d}");
    }
}
