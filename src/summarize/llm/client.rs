//! One chat-completions request to an OpenAI-compatible endpoint, through
//! async-openai, with every failure classified.
//!
//! async-openai's default executor retries on its own; faultline replaces it
//! (the `middleware` feature's `with_http_service`) by a plain reqwest call
//! that turns any non-2xx answer into a [`HttpStatus`] error carrying the
//! status and `Retry-After`, so retries, backoff and the circuit breaker are
//! decided in one place ([`super::LlmSummarizer`]) and bounded by its budget.

use std::time::Duration;

use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use async_openai::types::chat::{
    ChatCompletionRequestMessage, CreateChatCompletionRequest, ResponseFormat,
    ResponseFormatJsonSchema,
};
use async_openai::Client;
use secrecy::{ExposeSecret, SecretString};

/// A non-2xx answer, as the transport saw it.
#[derive(Debug, thiserror::Error)]
#[error("HTTP {status}")]
pub struct HttpStatus {
    /// The status code.
    pub status: u16,
    /// `Retry-After`, in seconds or as an HTTP date, when given.
    pub retry_after: Option<Duration>,
}

/// Why a request produced no content. Messages never carry the API key or
/// the response body.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// No answer within the request timeout.
    #[error("timeout")]
    Timeout,
    /// 429.
    #[error("rate limited (HTTP 429)")]
    RateLimited {
        /// What the endpoint asked for.
        retry_after: Option<Duration>,
    },
    /// 5xx.
    #[error("server error (HTTP {status})")]
    Server {
        /// The status.
        status: u16,
        /// What the endpoint asked for.
        retry_after: Option<Duration>,
    },
    /// Any other non-2xx (bad request, bad key): not retried.
    #[error("refused (HTTP {0})")]
    Client(u16),
    /// Connection refused, DNS, TLS: the endpoint cannot be reached.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// 2xx, but not a chat completion (or no content in it).
    #[error("malformed response: {0}")]
    Malformed(String),
    /// Not sent: the hourly token budget would be passed (a retry or second
    /// round after other summaries spent it).
    #[error("hourly token budget spent")]
    Budget,
}

impl CallError {
    /// The audit and metrics outcome name.
    pub fn outcome(&self) -> &'static str {
        match self {
            CallError::Timeout => "timeout",
            CallError::RateLimited { .. } => "http_429",
            CallError::Server { .. } => "http_5xx",
            CallError::Client(_) => "http_4xx",
            CallError::Unavailable(_) => "unavailable",
            CallError::Malformed(_) => "malformed_response",
            CallError::Budget => "budget_exhausted",
        }
    }

    /// Whether trying again may help.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            CallError::Timeout
                | CallError::RateLimited { .. }
                | CallError::Server { .. }
                | CallError::Unavailable(_)
        )
    }

    /// What the endpoint asked to wait.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::RateLimited { retry_after } | CallError::Server { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }
}

/// The content of one answer and the tokens it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The message content.
    pub content: String,
    /// Prompt tokens reported (0 when not).
    pub prompt_tokens: u32,
    /// Completion tokens reported (0 when not).
    pub completion_tokens: u32,
}

/// Request settings.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    /// Base URL ending in `/v1`.
    pub base_url: String,
    /// Bearer key; empty for none.
    pub api_key: SecretString,
    /// Model.
    pub model: String,
    /// Temperature.
    pub temperature: f32,
    /// Completion token cap.
    pub max_tokens: u32,
    /// Per-request timeout.
    pub request_timeout: Duration,
}

/// A chat-completions client.
#[derive(Clone)]
pub struct ChatClient {
    client: Client<OpenAIConfig>,
    opts: ChatOptions,
}

impl std::fmt::Debug for ChatClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatClient")
            .field("base_url", &self.opts.base_url)
            .field("model", &self.opts.model)
            .finish_non_exhaustive()
    }
}

/// A client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the LLM HTTP client: {0}")]
pub struct BuildError(String);

impl ChatClient {
    /// A client for `opts`.
    pub fn new(opts: ChatOptions) -> Result<ChatClient, BuildError> {
        // reqwest is built without a bundled crypto provider (ring is already
        // in the build for NATS); install it unless someone else did.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(opts.request_timeout)
            .connect_timeout(opts.request_timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| BuildError(e.to_string()))?;
        let service = tower::service_fn(move |factory: HttpRequestFactory| {
            let http = http.clone();
            async move {
                let request = factory.build().await?;
                let response = http.execute(request).await.map_err(OpenAIError::Reqwest)?;
                let status = response.status();
                if status.is_success() {
                    return Ok(response);
                }
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                Err(OpenAIError::Boxed(Box::new(HttpStatus {
                    status: status.as_u16(),
                    retry_after,
                })))
            }
        });
        // Every field set explicitly: OpenAIConfig's defaults read OPENAI_*
        // variables, which must not leak a key meant for something else.
        let config = OpenAIConfig::new()
            .with_api_base(opts.base_url.trim_end_matches('/'))
            .with_api_key(opts.api_key.expose_secret())
            .with_org_id("")
            .with_project_id("");
        let client = Client::with_config(config).with_http_service(service);
        Ok(ChatClient { client, opts })
    }

    /// The model name.
    pub fn model(&self) -> &str {
        &self.opts.model
    }

    /// The request body for `messages`, as sent.
    pub fn request(
        &self,
        messages: Vec<ChatCompletionRequestMessage>,
    ) -> CreateChatCompletionRequest {
        CreateChatCompletionRequest {
            model: self.opts.model.clone(),
            messages,
            temperature: Some(self.opts.temperature),
            max_completion_tokens: Some(self.opts.max_tokens),
            response_format: Some(ResponseFormat::JsonSchema {
                json_schema: ResponseFormatJsonSchema {
                    description: Some("An incident summary.".into()),
                    name: "incident_summary".into(),
                    schema: super::validate::schema(),
                    strict: Some(true),
                },
            }),
            ..Default::default()
        }
    }

    /// Sends one request.
    pub async fn send(&self, request: CreateChatCompletionRequest) -> Result<Reply, CallError> {
        // The reqwest timeout covers the request; this one also covers
        // anything async-openai does around it.
        let chat = self.client.chat();
        let call = chat.create(request);
        let response = match tokio::time::timeout(self.opts.request_timeout, call).await {
            Err(_) => return Err(CallError::Timeout),
            Ok(Err(e)) => return Err(classify(e)),
            Ok(Ok(r)) => r,
        };
        let usage = response.usage.as_ref();
        let content = response
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content.or(c.message.refusal))
            .ok_or_else(|| CallError::Malformed("no choice with content".into()))?;
        Ok(Reply {
            content,
            prompt_tokens: usage.map_or(0, |u| u.prompt_tokens),
            completion_tokens: usage.map_or(0, |u| u.completion_tokens),
        })
    }
}

fn classify(e: OpenAIError) -> CallError {
    match e {
        OpenAIError::Boxed(b) => match b.downcast::<HttpStatus>() {
            Ok(s) => match s.status {
                429 => CallError::RateLimited {
                    retry_after: s.retry_after,
                },
                500..=599 => CallError::Server {
                    status: s.status,
                    retry_after: s.retry_after,
                },
                other => CallError::Client(other),
            },
            Err(other) => CallError::Unavailable(short(&other.to_string())),
        },
        OpenAIError::Reqwest(e) if e.is_timeout() => CallError::Timeout,
        OpenAIError::Reqwest(e) if e.is_decode() || e.is_body() => {
            CallError::Malformed(short(&e.to_string()))
        }
        // reqwest's messages name the URL, never the key.
        OpenAIError::Reqwest(e) => CallError::Unavailable(short(&e.to_string())),
        OpenAIError::ApiError(a) => match a.status_code.as_u16() {
            429 => CallError::RateLimited { retry_after: None },
            s @ 500..=599 => CallError::Server {
                status: s,
                retry_after: None,
            },
            s => CallError::Client(s),
        },
        // The body is not quoted: it is the endpoint's, unredacted.
        OpenAIError::JSONDeserialize(e, _) => CallError::Malformed(short(&e.to_string())),
        other => CallError::Malformed(short(&other.to_string())),
    }
}

fn short(s: &str) -> String {
    let s: String = s.chars().take(160).collect();
    crate::redact::redact_all(&s).into_owned()
}

/// `Retry-After` as seconds (`"3"`, `"1.5"`) or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(86_400.0)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let ms = at
        .with_timezone(&chrono::Utc)
        .signed_duration_since(chrono::Utc::now())
        .num_milliseconds();
    Some(Duration::from_millis(ms.max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn outcomes_and_retryability() {
        assert!(CallError::Timeout.retryable());
        assert!(CallError::RateLimited { retry_after: None }.retryable());
        assert!(!CallError::Client(400).retryable());
        assert!(!CallError::Malformed("x".into()).retryable());
        assert_eq!(CallError::Client(401).outcome(), "http_4xx");
        assert_eq!(
            CallError::Server {
                status: 503,
                retry_after: Some(Duration::from_secs(2))
            }
            .retry_after(),
            Some(Duration::from_secs(2))
        );
    }
}
