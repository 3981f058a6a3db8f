//! `GET /rules` and `GET /explain` (scope `read`), `POST /rules/reload` (scope
//! `write`): the rules in force, why an element did or did not fire at the last
//! step, and a reload without a restart.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{Authorized, Read, Write};
use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::engine::ReloadSummary;
use crate::explain::Report;
use crate::reload::{ReloadError, ReloadStatus};

/// Longest `dims` parameter, in characters.
const MAX_DIMS_CHARS: usize = 1024;

/// One rule in force, in brief (the file holds the rest).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RuleBrief {
    /// Name.
    pub name: String,
    /// Event kind it watches.
    pub kind: String,
    /// `rate` or `volume_drop`.
    pub detector: String,
    /// Dimensions it localizes over.
    pub dimensions: Vec<String>,
    /// Window, e.g. `2m`.
    pub window: String,
    /// Evaluation step, e.g. `15s`.
    pub step: String,
    /// Severity of its incidents.
    pub severity: String,
    /// File it came from.
    pub source: String,
}

/// `GET /rules` answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RulesView {
    /// The rules in force, in file then definition order.
    pub rules: Vec<RuleBrief>,
    /// Reload state; `dir` is null for the rules built into the binary.
    pub reload: ReloadStatus,
}

/// The rules in force and the state of reloads.
#[utoipa::path(
    get,
    path = "/rules",
    tag = "rules",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The rules in force", body = RulesView),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` scope", body = ErrorBody),
    )
)]
pub(super) async fn list(
    _auth: Authorized<Read>,
    State(state): State<AppState>,
) -> Result<Json<RulesView>, ApiError> {
    let Some(rules) = state.rules.as_ref().map(|live| live.get()) else {
        return Err(ApiError::NotFound("rule set (no engine runs here)"));
    };
    let brief = rules
        .rules
        .iter()
        .map(|r| RuleBrief {
            name: r.rule.name.clone(),
            kind: r.rule.kind.clone(),
            detector: serde_plain(&r.rule.detector),
            dimensions: r.rule.dimensions.clone(),
            window: r.rule.window.to_string(),
            step: r.rule.step.to_string(),
            severity: r.rule.severity.as_str().to_string(),
            source: r.source.clone(),
        })
        .collect();
    let reload = state
        .reloader
        .as_ref()
        .map(|r| r.status())
        .unwrap_or_default();
    Ok(Json(RulesView {
        rules: brief,
        reload,
    }))
}

fn serde_plain<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// Reads the rules folder again and applies it: unchanged rules keep
/// everything, retuned ones (thresholds, hysteresis, severity, routing, links)
/// keep their windows, baselines and open incidents, rules that count
/// differently restart, removed rules resolve their incidents. A folder with any
/// error is refused and the rules in force are kept.
#[utoipa::path(
    post,
    path = "/rules/reload",
    tag = "rules",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Reloaded: what happened to each rule", body = ReloadSummary),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `write` scope", body = ErrorBody),
        (status = 409, description = "The rules are built into the binary (no folder to reload)", body = ErrorBody),
        (status = 422, description = "The folder has errors (each named); the rules in force are kept", body = ErrorBody),
        (status = 503, description = "The engine has stopped", body = ErrorBody),
    )
)]
pub(super) async fn reload(
    _auth: Authorized<Write>,
    State(state): State<AppState>,
) -> Result<Json<ReloadSummary>, ApiError> {
    let Some(reloader) = &state.reloader else {
        return Err(ApiError::Conflict(
            "the rules are built into the binary; start with a rules folder to reload",
        ));
    };
    match reloader.reload("API").await {
        Ok(summary) => Ok(Json(summary)),
        Err(ReloadError::Invalid(errors)) => Err(ApiError::Unprocessable {
            code: "invalid_rules",
            message: format!(
                "rules not reloaded, the rules in force are kept: {}",
                errors.join("; ")
            ),
        }),
        Err(ReloadError::Stopped) => Err(ApiError::Unavailable("engine stopped".into())),
    }
}

/// `GET /explain` parameters.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExplainQuery {
    /// The rule.
    pub rule: String,
    /// The element: `k=v,k=v` over the rule's dimensions, e.g. `provider=stripe,region=eu`.
    pub dims: String,
}

/// Why an element of a rule did or did not fire at the last step the rule
/// evaluated: counts over the window, baseline, test statistic, threshold and
/// every condition, from the daemon's live windows (for any past time, use
/// `faultline explain --events` over recorded events).
#[utoipa::path(
    get,
    path = "/explain",
    tag = "rules",
    params(ExplainQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The explanation, with the incidents open on the element", body = Report),
        (status = 400, description = "`dims` is malformed or names a dimension the rule does not use", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` scope", body = ErrorBody),
        (status = 404, description = "No such rule", body = ErrorBody),
        (status = 409, description = "The rule has not evaluated a step yet, or the value was never seen", body = ErrorBody),
        (status = 503, description = "The engine has stopped", body = ErrorBody),
    )
)]
pub(super) async fn explain(
    _auth: Authorized<Read>,
    State(state): State<AppState>,
    query: Result<Query<ExplainQuery>, QueryRejection>,
) -> Result<Json<Report>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let Some(engine) = &state.engine else {
        return Err(ApiError::NotFound("engine (none runs here)"));
    };
    if q.dims.chars().count() > MAX_DIMS_CHARS || q.dims.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!(
                "`dims` must be at most {MAX_DIMS_CHARS} characters without control characters"
            ),
        ));
    }
    let dims: BTreeMap<String, String> = crate::explain::parse_dims(&q.dims).map_err(|e| {
        ApiError::bad_request("invalid_query", e.to_string().replace("--dims", "`dims`"))
    })?;
    let known = state.rules.as_ref().map(|r| r.get());
    let rule = known.as_ref().and_then(|r| r.get(&q.rule));
    let Some(rule) = rule else {
        return Err(ApiError::NotFound("rule"));
    };
    let searched = &rule.cells.dims[..rule.cells.search];
    if let Some(bad) = dims
        .keys()
        .find(|k| !searched.iter().any(|d| d.name() == **k))
    {
        let names: Vec<String> = searched.iter().map(|d| d.name()).collect();
        return Err(ApiError::bad_request(
            "invalid_query",
            format!(
                "rule `{}` does not localize over `{}`; it localizes over: {}",
                rule.rule.name,
                crate::redact::redact_all(bad),
                names.join(", ")
            ),
        ));
    }
    match engine.explain(q.rule.clone(), dims).await {
        Ok(report) => Ok(Json(report)),
        Err(e) if e.contains("stopped") => Err(ApiError::Unavailable(e)),
        Err(_) => Err(ApiError::Conflict(
            "the rule has not evaluated a step yet, or no event so far has that value",
        )),
    }
}
