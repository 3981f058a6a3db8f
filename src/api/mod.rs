//! The HTTP API (CONTRACT section 5), on axum.
//!
//! [`router`] builds every route over an [`AppState`], so tests drive it with
//! `tower::ServiceExt::oneshot` and no socket; [`serve`] runs it on a listener
//! until a shutdown future completes, finishing requests in flight.
//!
//! - `GET /healthz`, `GET /readyz`, `GET /metrics`: no token.
//! - `POST /v1/events` (scope `ingest`): NDJSON or a JSON array of events.
//! - `GET /openapi.json`: the OpenAPI 3 description, generated from the code.
//! - `POST /v1/events` (scope `ingest`): NDJSON or a JSON array of events.
//! - `GET /incidents`, `GET /incidents/{id}` (scope `read`).
//! - `POST /incidents/{id}/ack`, `POST /incidents/{id}/resolve` (scope `write`).
//! - `GET /rules`, `GET /explain` (scope `read`), `POST /rules/reload` (scope
//!   `write`): the rules in force, why an element did or did not fire, reload.
//! - `GET /silences` (scope `read`), `POST /silences`, `DELETE /silences/{id}`
//!   (scope `write`).
//! - `POST /slack/interactions`: Slack's buttons, authenticated by Slack's
//!   signature instead of a token ([`slack`]).
//! - `GET /ui/incidents`, `GET /ui/incidents/{id}`: HTML shells that ask for a
//!   token and fetch the JSON routes ([`pages`]).
//!
//! Every error is `{"error":{"code":"...","message":"..."}}` ([`ApiError`]).

pub mod auth;
mod error;
mod events;
mod incidents;
pub mod openapi;
pub mod pages;
mod rules;
mod serve;
mod silences;
mod slack;
#[cfg(test)]
mod tests;

pub use auth::{Authorized, Caller, TokenSet};
pub use error::{ApiError, ErrorBody};
pub use events::IngestReport;
pub use serve::{serve, ConnLimits};
pub use silences::{NewSilence, SilenceList};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, MethodRouter};
use axum::{BoxError, Json, Router};
use serde_json::json;
use tokio::sync::mpsc;
use tower::ServiceBuilder;
use tower_http::trace::TraceLayer;

use crate::config::Settings;
use crate::event::Event;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::store::Store;

/// What every handler shares. Cheap to clone (handles and `Arc`s).
#[derive(Clone)]
pub struct AppState {
    /// Incidents.
    pub store: Arc<dyn Store>,
    /// Where accepted events go; `send().await` applies backpressure.
    pub ingest: mpsc::Sender<Event>,
    /// Process metrics.
    pub metrics: Arc<Metrics>,
    /// API tokens.
    pub tokens: TokenSet,
    /// Which implementation backs each integration, as `/readyz` reports it.
    pub integrations: Arc<BTreeMap<&'static str, &'static str>>,
    /// Told when a person acknowledges, resolves or silences an incident
    /// (Slack edits its post); `None` in tests that need no notifier.
    pub notifier: Option<Arc<dyn Notifier>>,
    /// Verifies `POST /slack/interactions` (refuses all without a signing secret).
    pub slack: Arc<crate::notify::slack::SlackVerifier>,
    /// The live engine, for `GET /explain`; `None` in tests without one.
    pub engine: Option<crate::pipeline::EngineHandle>,
    /// The rules in force, for `GET /rules`.
    pub rules: Option<Arc<crate::reload::LiveRules>>,
    /// Reloads the rules (`POST /rules/reload`, `GET /rules`); `None` when the
    /// rules are the ones built into the binary.
    pub reloader: Option<Arc<crate::reload::Reloader>>,
    /// Largest request body, bytes.
    pub body_limit: usize,
    /// Longest a request may take.
    pub request_timeout: Duration,
    /// Connection caps and the header-read timeout, for [`serve`].
    pub conn_limits: ConnLimits,
    /// Bodies of `POST /v1/events` being read at once.
    pub ingest_permits: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("tokens", &self.tokens)
            .field("integrations", &self.integrations)
            .field("body_limit", &self.body_limit)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// The same state, telling `notifier` of people's actions.
    pub fn with_notifier(mut self, notifier: Arc<dyn Notifier>) -> AppState {
        self.notifier = Some(notifier);
        self
    }

    /// The same state, explaining from `engine`, which runs `rules`.
    pub fn with_engine(
        mut self,
        engine: crate::pipeline::EngineHandle,
        rules: Arc<crate::reload::LiveRules>,
    ) -> AppState {
        self.engine = Some(engine);
        self.rules = Some(rules);
        self
    }

    /// The same state, reloading rules through `reloader`.
    pub fn with_reloader(mut self, reloader: Arc<crate::reload::Reloader>) -> AppState {
        self.reloader = Some(reloader);
        self
    }

    /// State for `settings`: tokens, limits and integration names from it.
    pub fn new(
        settings: &Settings,
        store: Arc<dyn Store>,
        ingest: mpsc::Sender<Event>,
        metrics: Arc<Metrics>,
    ) -> AppState {
        AppState {
            store,
            ingest,
            metrics,
            tokens: TokenSet::new(settings.api.tokens.clone()),
            integrations: Arc::new(integrations(settings)),
            notifier: None,
            engine: None,
            rules: None,
            reloader: None,
            slack: Arc::new(crate::notify::slack::SlackVerifier::new(
                settings.slack.signing_secret.clone(),
            )),
            body_limit: settings.api.body_limit_bytes,
            request_timeout: settings.api.request_timeout.0,
            conn_limits: ConnLimits {
                total: settings.api.max_connections,
                per_client: settings.api.max_connections_per_client,
                header_read_timeout: settings.api.header_read_timeout.0,
            },
            ingest_permits: Arc::new(tokio::sync::Semaphore::new(
                settings.api.max_concurrent_ingest.max(1),
            )),
        }
    }
}

/// Integration name to the implementation in use, embedded or configured.
pub fn integrations(settings: &Settings) -> BTreeMap<&'static str, &'static str> {
    let pick = |on: bool, real, embedded| if on { real } else { embedded };
    BTreeMap::from([
        ("ingest", pick(settings.nats.enabled(), "nats", "http")),
        (
            "store",
            pick(settings.clickhouse.enabled(), "clickhouse", "memory"),
        ),
        (
            "summarizer",
            pick(settings.llm.enabled(), "llm", "template"),
        ),
        (
            "notifier",
            pick(settings.slack.enabled(), "slack", "stdout"),
        ),
    ])
}

/// Every route as (method, path, handler): the one list [`router`] is built
/// from and the OpenAPI test checks against the description.
pub fn routes() -> Vec<(&'static str, &'static str, MethodRouter<AppState>)> {
    vec![
        ("GET", "/healthz", get(healthz)),
        ("GET", "/readyz", get(readyz)),
        ("GET", "/metrics", get(metrics)),
        ("GET", "/openapi.json", get(openapi_json)),
        ("POST", "/v1/events", post(events::post_events)),
        ("GET", "/incidents", get(incidents::list)),
        ("GET", "/incidents/{id}", get(incidents::get_one)),
        ("POST", "/incidents/{id}/ack", post(incidents::ack)),
        ("POST", "/incidents/{id}/resolve", post(incidents::resolve)),
        ("GET", "/rules", get(rules::list)),
        ("POST", "/rules/reload", post(rules::reload)),
        ("GET", "/explain", get(rules::explain)),
        ("GET", "/silences", get(silences::list)),
        ("POST", "/silences", post(silences::create)),
        ("DELETE", "/silences/{id}", delete(silences::delete)),
        ("POST", "/slack/interactions", post(slack::interactions)),
        ("GET", "/ui/incidents", get(pages::list_page)),
        ("GET", "/ui/incidents/{id}", get(pages::incident_page)),
    ]
}

/// Every route, with the body limit, request timeout and tracing layers.
pub fn router(state: AppState) -> Router {
    let timeout = state.request_timeout;
    let body_limit = state.body_limit;
    // Routes sharing a path merge their method routers.
    let mut r = Router::new();
    for (_, path, handler) in routes() {
        r = r.route(path, handler);
    }
    r.fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // axum's limit (rather than tower-http's) so an oversized body surfaces
        // as an extractor rejection the handler turns into a JSON 413.
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(
            ServiceBuilder::new()
                // The span names the path, redacted, and never the query:
                // `/explain?dims=...` and ids in paths are client text.
                .layer(TraceLayer::new_for_http().make_span_with(
                    |req: &axum::http::Request<axum::body::Body>| {
                        tracing::debug_span!(
                            "request",
                            method = %req.method(),
                            path = %crate::redact::redact_all(req.uri().path()),
                        )
                    },
                ))
                .layer(HandleErrorLayer::new(|e: BoxError| async move {
                    if e.is::<tower::timeout::error::Elapsed>() {
                        ApiError::Timeout
                    } else {
                        ApiError::Internal(e.to_string())
                    }
                }))
                .timeout(timeout),
        )
        .with_state(state)
}

/// A JSON answer passed through [`crate::redact::scrub_json`] on its way out:
/// whatever a stored incident or silence holds (rows written before a
/// redaction rule existed, a store shared with other writers), no card data
/// or secret leaves in an API answer.
pub(crate) struct Scrubbed<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Scrubbed<T> {
    fn into_response(self) -> axum::response::Response {
        match scrubbed(&self.0) {
            Ok(v) => Json(v).into_response(),
            Err(e) => e.into_response(),
        }
    }
}

/// `value` as JSON passed through [`crate::redact::scrub_json`].
pub(crate) fn scrubbed<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, ApiError> {
    let mut v = serde_json::to_value(value)
        .map_err(|e| ApiError::Internal(format!("serializing an answer: {e}")))?;
    crate::redact::scrub_json(&mut v);
    Ok(v)
}

/// Reads a streamed body up to `limit` bytes, or the JSON 413 / 400 it
/// deserves: the bytes past the limit are never read.
pub(crate) async fn read_limited(body: axum::body::Body, limit: usize) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(_) => Err(ApiError::bad_request(
            "invalid_body",
            "the body could not be read",
        )),
    }
}

/// A request body, or the JSON 413 / 400 it deserves.
pub(crate) fn read_body(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Bytes, ApiError> {
    body.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge { limit }
        } else {
            ApiError::bad_request("invalid_body", "the body could not be read")
        }
    })
}

/// 200 while the process serves.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "ops",
    responses((status = 200, description = "Alive", body = openapi::Health))
)]
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// The OpenAPI 3 description of every route.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "ops",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json"))
)]
async fn openapi_json() -> impl IntoResponse {
    Json(openapi::spec())
}

/// 200 when every integration answers, 503 otherwise; the body says which.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    responses(
        (status = 200, description = "Every integration answers", body = openapi::Readiness),
        (status = 503, description = "Some integration does not answer", body = openapi::Readiness),
    )
)]
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let mut checks = serde_json::Map::new();
    let mut ready = true;
    for (name, mode) in state.integrations.iter() {
        let status = if *name == "store" {
            match state.store.health().await {
                Ok(()) => "ok",
                Err(e) => {
                    tracing::warn!(error = %e, "readyz: store unavailable");
                    ready = false;
                    "unavailable"
                }
            }
        } else if (*name == "ingest" && *mode == "http" && state.ingest.is_closed())
            || (*name == "ingest" && *mode == "nats" && !state.metrics.nats_connected())
        {
            ready = false;
            "unavailable"
        } else {
            "ok"
        };
        checks.insert(name.to_string(), json!({"mode": mode, "status": status}));
    }
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({"status": if ready { "ready" } else { "not_ready" }, "integrations": checks});
    (code, Json(body))
}

/// Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain"))
)]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // Incidents by state come from the store, asked at scrape time: the store
    // is where people's acks and resolves land, so it alone knows them.
    match state.store.status_counts().await {
        Ok(c) => state
            .metrics
            .set_incidents_by_status(c.open, c.acknowledged, c.resolved),
        Err(e) => tracing::warn!(error = %e, "metrics: store counts unavailable"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
