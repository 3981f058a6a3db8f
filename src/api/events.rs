//! `POST /v1/events`: NDJSON or a JSON array of schema v1 events.
//!
//! Every line (or element) is validated on its own; a bad one is counted by
//! reason and never fails the request. Valid events are sent to the pipeline with
//! `send().await`, so a full channel slows the client down rather than dropping
//! events. "Accepted" here means valid and handed over: dedupe and lateness are
//! decided downstream, and a client retrying after a timeout is safe because
//! event ids are deduplicated.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::{Authorized, Ingest};
use super::{ApiError, AppState};
use crate::event::{self, Event, Rejection};

/// The answer: how many events were accepted, and rejections by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IngestReport {
    /// Valid events handed to the pipeline.
    pub accepted: u64,
    /// Rejections by reason (`invalid_ts`, `missing_id`, ...).
    pub rejected: BTreeMap<String, u64>,
}

/// Events in: NDJSON or a JSON array; answers counts.
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "ingest",
    request_body(
        description = "NDJSON (one event per line) or a JSON array of events",
        content(
            (Vec<super::openapi::EventV1> = "application/json"),
            (String = "application/x-ndjson"),
        )
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Accepted and rejected counts", body = IngestReport),
        (status = 400, description = "The body is empty or neither NDJSON nor a JSON array", body = super::error::ErrorBody),
        (status = 401, description = "Missing or wrong token", body = super::error::ErrorBody),
        (status = 403, description = "The token lacks the `ingest` scope", body = super::error::ErrorBody),
        (status = 413, description = "The body is too large", body = super::error::ErrorBody),
        (status = 503, description = "The pipeline is not taking events", body = super::error::ErrorBody),
    )
)]
pub(super) async fn post_events(
    _auth: Authorized<Ingest>,
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<IngestReport>, ApiError> {
    let body = super::read_body(body, state.body_limit)?;
    let batch = Batch::split(&body)?;
    let mut report = IngestReport::default();
    for (n, parsed) in batch.into_events().enumerate() {
        state.metrics.event_received();
        match parsed {
            Ok(ev) => {
                state
                    .ingest
                    .send(ev)
                    .await
                    .map_err(|_| ApiError::Unavailable("ingest channel closed".into()))?;
                report.accepted += 1;
            }
            Err(r) => {
                // The reason only: payloads may hold card data.
                tracing::debug!(item = n + 1, reason = %r, "api: event rejected");
                state.metrics.event_rejected(&r.reason());
                *report.rejected.entry(r.reason().into_owned()).or_insert(0) += 1;
            }
        }
    }
    Ok(Json(report))
}

/// A body split into items, each validated when iterated.
enum Batch<'a> {
    /// NDJSON lines (blank lines skipped).
    Lines(Vec<&'a [u8]>),
    /// Elements of a JSON array (or one pretty-printed object).
    Values(Vec<serde_json::Value>),
}

impl<'a> Batch<'a> {
    /// A body starting with `[` is a JSON array; otherwise it is NDJSON, and
    /// must have at least one line that looks like an object. A multi-line body
    /// that is exactly one JSON object is one (pretty-printed) event.
    fn split(body: &'a [u8]) -> Result<Batch<'a>, ApiError> {
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        match first {
            None => Err(ApiError::bad_request(
                "empty_body",
                "the body holds no events",
            )),
            Some(b'[') => serde_json::from_slice::<Vec<serde_json::Value>>(body)
                .map(Batch::Values)
                .map_err(|_| {
                    ApiError::bad_request(
                        "invalid_body",
                        "a body starting with `[` must be a JSON array of events",
                    )
                }),
            Some(_) => {
                let lines: Vec<&[u8]> = body
                    .split(|b| *b == b'\n')
                    .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                    .filter(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
                    .collect();
                let looks_like_object =
                    |l: &&[u8]| l.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
                if !lines.iter().any(looks_like_object) {
                    return Err(ApiError::bad_request(
                        "invalid_body",
                        "expected NDJSON (one JSON event object per line) or a JSON array of events",
                    ));
                }
                if lines.len() > 1 {
                    if let Ok(v @ serde_json::Value::Object(_)) =
                        serde_json::from_slice::<serde_json::Value>(body)
                    {
                        return Ok(Batch::Values(vec![v]));
                    }
                }
                Ok(Batch::Lines(lines))
            }
        }
    }

    fn into_events(self) -> Box<dyn Iterator<Item = Result<Event, Rejection>> + Send + 'a> {
        match self {
            Batch::Lines(lines) => Box::new(lines.into_iter().map(event::parse)),
            Batch::Values(values) => Box::new(values.into_iter().map(event::from_value)),
        }
    }
}
