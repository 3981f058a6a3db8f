//! `POST /v1/events`: NDJSON or a JSON array of schema v1 events.
//!
//! Every line (or element) is validated on its own; a bad one is counted by
//! reason and never fails the request. Valid events are sent to the pipeline with
//! `send().await`, so a full channel slows the client down rather than dropping
//! events. "Accepted" here means valid and handed over: dedupe and lateness are
//! decided downstream, and a client retrying after a timeout is safe because
//! event ids are deduplicated.

use std::collections::BTreeMap;
use std::sync::Arc;

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
    body: axum::body::Body,
) -> Result<Json<IngestReport>, ApiError> {
    // At most `max_concurrent_ingest` bodies are held and parsed at once: a
    // burst of large bodies waits here (within the request timeout) instead
    // of multiplying memory.
    let _permit = Arc::clone(&state.ingest_permits)
        .acquire_owned()
        .await
        .map_err(|_| ApiError::Unavailable("ingest permits closed".into()))?;
    let body = super::read_limited(body, state.body_limit).await?;
    let mut report = IngestReport::default();
    let mut events = Vec::new();
    for_each_item(&body, |parsed| {
        state.metrics.event_received();
        match parsed {
            Ok(ev) => events.push(ev),
            Err(r) => *report.rejected.entry(r.reason().into_owned()).or_insert(0) += 1,
        }
    })?;
    drop(body);
    for (reason, n) in &report.rejected {
        state.metrics.events_rejected(reason, *n);
    }
    if !report.rejected.is_empty() {
        // One line per request, counts only: payloads may hold card data, and
        // a line per item let one junk body write gigabytes of log.
        tracing::debug!(rejected = ?report.rejected, "api: events rejected");
    }
    for ev in events {
        state
            .ingest
            .send(ev)
            .await
            .map_err(|_| ApiError::Unavailable("ingest channel closed".into()))?;
        report.accepted += 1;
    }
    Ok(Json(report))
}

/// Validates every item of a body and hands each result to `f`, holding at
/// most one item's JSON at a time: a body starting with `[` is a JSON array,
/// read element by element; otherwise it is NDJSON, and must have at least
/// one line that looks like an object. A multi-line body that is exactly one
/// JSON object is one (pretty-printed) event. A malformed array is a 400
/// before `f` has seen anything worth keeping: callers hand nothing on until
/// this returns.
fn for_each_item(body: &[u8], mut f: impl FnMut(Result<Event, Rejection>)) -> Result<(), ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => Err(ApiError::bad_request(
            "empty_body",
            "the body holds no events",
        )),
        Some(b'[') => {
            let mut de = serde_json::Deserializer::from_slice(body);
            serde::Deserializer::deserialize_seq(&mut de, EachElement(&mut f))
                .and_then(|()| de.end())
                .map_err(|_| {
                    ApiError::bad_request(
                        "invalid_body",
                        "a body starting with `[` must be a JSON array of events",
                    )
                })
        }
        Some(_) => {
            let lines = || {
                body.split(|b| *b == b'\n')
                    .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                    .filter(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
            };
            let looks_like_object =
                |l: &[u8]| l.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
            if !lines().any(looks_like_object) {
                return Err(ApiError::bad_request(
                    "invalid_body",
                    "expected NDJSON (one JSON event object per line) or a JSON array of events",
                ));
            }
            // One pretty-printed object: checked without building it.
            if lines().nth(1).is_some()
                && first == Some(&b'{')
                && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
            {
                f(event::parse(body));
                return Ok(());
            }
            lines().for_each(|l| f(event::parse(l)));
            Ok(())
        }
    }
}

/// Visits a JSON array one element at a time.
struct EachElement<'f, F>(&'f mut F);

impl<'de, F: FnMut(Result<Event, Rejection>)> serde::de::Visitor<'de> for EachElement<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array of events")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // Borrowed raw text: an element is never built as a `Value`, so a
        // 10 MiB element costs its size check, not 20 times its size.
        while let Some(raw) = seq.next_element::<&'de serde_json::value::RawValue>()? {
            (self.0)(event::parse(raw.get().as_bytes()));
        }
        Ok(())
    }
}
