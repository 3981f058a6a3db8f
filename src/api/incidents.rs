//! `GET /incidents` and `GET /incidents/{id}` (scope `read`).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;

use super::auth::{Authorized, Read};
use super::{ApiError, AppState};
use crate::store::{IncidentPage, IncidentQuery, IncidentRecord};

/// Incidents matching the filters, newest first, one page.
pub(super) async fn list(
    _auth: Authorized<Read>,
    State(state): State<AppState>,
    query: Result<Query<IncidentQuery>, QueryRejection>,
) -> Result<Json<IncidentPage>, ApiError> {
    // serde's message names the parameter and never echoes a secret: queries hold none.
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    Ok(Json(state.store.list(&query).await?))
}

/// One incident with its timeline and series.
pub(super) async fn get_one(
    _auth: Authorized<Read>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<IncidentRecord>, ApiError> {
    state
        .store
        .get(&id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("incident"))
}
