//! `GET /incidents`, `GET /incidents/{id}` (scope `read`) and
//! `POST /incidents/{id}/ack`, `POST /incidents/{id}/resolve` (scope `write`).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};

use super::auth::{Authorized, Read, Write};
use super::error::ErrorBody;
use super::{scrubbed, ApiError, AppState, Scrubbed};
use crate::store::{Action, IncidentPage, IncidentQuery, IncidentRecord};

/// Incidents matching the filters, newest first, one page.
#[utoipa::path(
    get,
    path = "/incidents",
    tag = "incidents",
    params(IncidentQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page, newest first", body = IncidentPage),
        (status = 400, description = "A filter, `limit` or `cursor` is invalid", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` scope", body = ErrorBody),
    )
)]
pub(super) async fn list(
    _auth: Authorized<Read>,
    State(state): State<AppState>,
    query: Result<Query<IncidentQuery>, QueryRejection>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    // serde's message names the parameter and never echoes a secret: queries hold none.
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let page = state.store.list(&query).await?;
    // The cursor is put back as it was: it is this process's own opaque hex,
    // whose digit runs a card-number scan would mask, breaking paging.
    let cursor = page.next_cursor.clone();
    let mut answer = scrubbed(&page)?;
    answer["next_cursor"] = cursor.into();
    Ok(axum::Json(answer))
}

/// One incident with its timeline and series.
#[utoipa::path(
    get,
    path = "/incidents/{id}",
    tag = "incidents",
    params(("id" = String, Path, description = "Incident id (`inc_...`)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The incident with `timeline` and `series`", body = IncidentRecord),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` scope", body = ErrorBody),
        (status = 404, description = "No such incident", body = ErrorBody),
    )
)]
pub(super) async fn get_one(
    _auth: Authorized<Read>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Scrubbed<IncidentRecord>, ApiError> {
    state
        .store
        .get(&id)
        .await?
        .map(Scrubbed)
        .ok_or(ApiError::NotFound("incident"))
}

/// Acknowledges an incident: someone is on it. Idempotent.
#[utoipa::path(
    post,
    path = "/incidents/{id}/ack",
    tag = "incidents",
    params(("id" = String, Path, description = "Incident id (`inc_...`)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated incident (`acknowledged`)", body = IncidentRecord),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `write` scope", body = ErrorBody),
        (status = 404, description = "No such incident", body = ErrorBody),
        (status = 409, description = "The incident is already resolved", body = ErrorBody),
    )
)]
pub(super) async fn ack(
    auth: Authorized<Write>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Scrubbed<IncidentRecord>, ApiError> {
    act(auth, state, id, Action::Acknowledge).await
}

/// Resolves an incident. Idempotent. If the engine still sees it firing, it
/// stays resolved and is no longer notified; the engine opens a new incident
/// for the same root cause only after this one has cleared on its own.
#[utoipa::path(
    post,
    path = "/incidents/{id}/resolve",
    tag = "incidents",
    params(("id" = String, Path, description = "Incident id (`inc_...`)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated incident (`resolved`)", body = IncidentRecord),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `write` scope", body = ErrorBody),
        (status = 404, description = "No such incident", body = ErrorBody),
    )
)]
pub(super) async fn resolve(
    auth: Authorized<Write>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Scrubbed<IncidentRecord>, ApiError> {
    act(auth, state, id, Action::Resolve).await
}

async fn act(
    auth: Authorized<Write>,
    state: AppState,
    id: String,
    action: Action,
) -> Result<Scrubbed<IncidentRecord>, ApiError> {
    let rec = state
        .store
        .act(&id, action, &auth.caller.name, chrono::Utc::now())
        .await?
        .ok_or(ApiError::NotFound("incident"))?;
    tracing::info!(incident_id = %rec.incident.id, token = %auth.caller.name, ?action, "api: incident changed by a person");
    if let Some(n) = &state.notifier {
        let what = match action {
            Action::Acknowledge => "acknowledged",
            Action::Resolve => "resolved",
        };
        if let Err(e) = n.acted(&rec.incident, what, &auth.caller.name).await {
            state.metrics.notify_failure();
            tracing::warn!(incident_id = %rec.incident.id, error = %e, "telling the notifier failed");
        }
    }
    Ok(Scrubbed(rec))
}
