//! The HTTP API (CONTRACT section 5), on axum.
//!
//! [`router`] builds every route over an [`AppState`], so tests drive it with
//! `tower::ServiceExt::oneshot` and no socket; [`serve`] runs it on a listener
//! until a shutdown future completes, finishing requests in flight.
//!
//! - `GET /healthz`, `GET /readyz`, `GET /metrics`: no token.
//! - `POST /v1/events` (scope `ingest`): NDJSON or a JSON array of events.
//! - `GET /incidents`, `GET /incidents/{id}` (scope `read`).
//!
//! Every error is `{"error":{"code":"...","message":"..."}}` ([`ApiError`]).

pub mod auth;
mod error;
mod events;
mod incidents;
#[cfg(test)]
mod tests;

pub use auth::{Authorized, Caller, TokenSet};
pub use error::ApiError;
pub use events::IngestReport;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{BoxError, Json, Router};
use serde_json::json;
use tokio::sync::mpsc;
use tower::ServiceBuilder;
use tower_http::trace::TraceLayer;

use crate::config::Settings;
use crate::event::Event;
use crate::metrics::Metrics;
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
    /// Largest request body, bytes.
    pub body_limit: usize,
    /// Longest a request may take.
    pub request_timeout: Duration,
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
            body_limit: settings.api.body_limit_bytes,
            request_timeout: settings.api.request_timeout.0,
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

/// Every route, with the body limit, request timeout and tracing layers.
pub fn router(state: AppState) -> Router {
    let timeout = state.request_timeout;
    let body_limit = state.body_limit;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/events", post(events::post_events))
        .route("/incidents", get(incidents::list))
        .route("/incidents/{id}", get(incidents::get_one))
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // axum's limit (rather than tower-http's) so an oversized body surfaces
        // as an extractor rejection the handler turns into a JSON 413.
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(
            ServiceBuilder::new()
                .layer(TraceLayer::new_for_http())
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

/// Serves `router(state)` on `listener` until `shutdown` completes, then lets
/// requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// 200 when every integration answers, 503 otherwise; the body says which.
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
        } else if *name == "ingest" && *mode == "http" && state.ingest.is_closed() {
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

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
