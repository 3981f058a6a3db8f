//! `POST /slack/interactions`: the buttons of faultline's Slack messages.
//!
//! No bearer token: the request is authenticated by Slack's signature
//! ([`crate::notify::slack::SlackVerifier`]: HMAC of timestamp and raw body,
//! five minutes of tolerance, replays refused). The body is form-encoded with
//! one field, `payload`, holding the interaction JSON; only `block_actions`
//! from faultline's own buttons do anything:
//!
//! - `faultline_ack` / `faultline_resolve`: [`Store::act`](crate::store::Store::act)
//!   as the Slack user;
//! - `faultline_silence_1h`: a one-hour silence matching the incident's
//!   root-cause dimensions.
//!
//! The notifier is then told ([`Notifier::acted`](crate::notify::Notifier::acted)),
//! which edits the message and replies in its thread. Slack wants an answer
//! within three seconds: the notifier only queues the work, so this handler
//! answers as soon as the store has the change. Link buttons (dashboards,
//! runbook) also report here; they are acknowledged and ignored.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use chrono::{Duration, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::incident::{Incident, TimelineEntry};
use crate::notify::slack::blocks::{ACTION_ACK, ACTION_RESOLVE, ACTION_SILENCE};
use crate::notify::slack::VerifyError;
use crate::store::{Action, Silence, StoreError};

/// Longest Slack user name kept as `by`.
const MAX_USER_CHARS: usize = 64;
/// Largest interaction body read (Slack's `block_actions` payloads are a few
/// KiB); checked before the signature.
pub const SLACK_BODY_LIMIT: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
struct Interaction {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    user: Option<SlackUser>,
    #[serde(default)]
    actions: Vec<ActionItem>,
}

#[derive(Debug, Deserialize)]
struct SlackUser {
    #[serde(default)]
    id: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ActionItem {
    #[serde(default)]
    action_id: String,
    #[serde(default)]
    value: Option<String>,
}

/// Applies a Slack button press.
#[utoipa::path(
    post,
    path = "/slack/interactions",
    tag = "slack",
    request_body(
        content = String,
        content_type = "application/x-www-form-urlencoded",
        description = "`payload=` followed by the URL-encoded interaction JSON (`block_actions`), \
                       signed by Slack with `X-Slack-Signature` and `X-Slack-Request-Timestamp`"
    ),
    params(
        ("X-Slack-Signature" = String, Header, description = "`v0=` HMAC-SHA256 of `v0:{timestamp}:{body}` with the signing secret"),
        ("X-Slack-Request-Timestamp" = String, Header, description = "Unix seconds; refused when more than 5 minutes from now"),
    ),
    responses(
        (status = 200, description = "Handled (or ignored: not one of faultline's buttons)"),
        (status = 400, description = "The body is not a Slack interaction", body = ErrorBody),
        (status = 401, description = "Bad, stale or replayed signature, or no signing secret configured", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
    )
)]
pub(super) async fn interactions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<Value>, ApiError> {
    // Read no more than a Slack interaction can be before the signature is
    // checked: an unauthenticated client gets no say over our memory.
    let body = super::read_limited(body, SLACK_BODY_LIMIT.min(state.body_limit)).await?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    state
        .slack
        .verify(
            header("x-slack-request-timestamp"),
            header("x-slack-signature"),
            &body,
            Utc::now().timestamp(),
        )
        .map_err(|e| {
            tracing::warn!(reason = %e, "slack interaction refused");
            ApiError::Unauthorized(match e {
                VerifyError::NotConfigured => "slack interactions are not configured",
                VerifyError::Malformed => "missing or malformed slack signature",
                VerifyError::Stale => "stale slack request",
                VerifyError::BadSignature => "bad slack signature",
                VerifyError::Replayed => "replayed slack request",
            })
        })?;
    let payload = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| ApiError::bad_request("invalid_body", "no `payload` field"))?;
    let interaction: Interaction = serde_json::from_str(&payload)
        .map_err(|_| ApiError::bad_request("invalid_body", "`payload` is not an interaction"))?;
    if interaction.kind != "block_actions" {
        return Ok(Json(json!({"ok": true, "ignored": interaction.kind})));
    }
    let by = interaction
        .user
        .as_ref()
        .map(user_name)
        .unwrap_or_else(|| "slack:unknown".into());
    let mut applied = Vec::new();
    for action in &interaction.actions {
        let Some(id) = action.value.as_deref().filter(|v| valid_id(v)) else {
            continue;
        };
        let what = match action.action_id.as_str() {
            ACTION_ACK => act(&state, id, Action::Acknowledge, &by).await?,
            ACTION_RESOLVE => act(&state, id, Action::Resolve, &by).await?,
            ACTION_SILENCE => silence(&state, id, &by).await?,
            _ => None,
        };
        if let Some(w) = what {
            applied.push(json!({"incident_id": id, "action": w}));
        }
    }
    Ok(Json(json!({"ok": true, "applied": applied})))
}

/// `slack:` and the user's name (or id), printable and bounded.
fn user_name(u: &SlackUser) -> String {
    let raw = u
        .username
        .as_deref()
        .or(u.name.as_deref())
        .filter(|s| !s.trim().is_empty())
        .unwrap_or(&u.id);
    let clean: String = raw
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_USER_CHARS)
        .collect();
    format!("slack:{}", crate::redact::redact(&clean))
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

async fn tell(state: &AppState, incident: &Incident, what: &str, by: &str) {
    if let Some(n) = &state.notifier {
        if let Err(e) = n.acted(incident, what, by).await {
            state.metrics.notify_failure();
            tracing::warn!(incident_id = %incident.id, error = %e, "telling the notifier failed");
        }
    }
}

async fn act(
    state: &AppState,
    id: &str,
    action: Action,
    by: &str,
) -> Result<Option<&'static str>, ApiError> {
    let what = match action {
        Action::Acknowledge => "acknowledged",
        Action::Resolve => "resolved",
    };
    match state.store.act(id, action, by, Utc::now()).await {
        Ok(Some(rec)) => {
            tracing::info!(incident_id = %id, %by, ?action, "slack: incident changed by a person");
            tell(state, &rec.incident, what, by).await;
            Ok(Some(what))
        }
        Ok(None) => Ok(None),
        // Acknowledging a resolved incident: nothing to do, the message
        // already shows it resolved.
        Err(StoreError::Conflict(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn silence(state: &AppState, id: &str, by: &str) -> Result<Option<&'static str>, ApiError> {
    let Some(rec) = state.store.get(id).await? else {
        return Ok(None);
    };
    let matchers: BTreeMap<String, String> = rec
        .incident
        .root_causes
        .first()
        .map(|c| c.dims.clone())
        .unwrap_or_default()
        .into_iter()
        .take(super::silences::MAX_MATCHERS)
        .collect();
    if matchers.is_empty() {
        // Silencing "all traffic" of every rule is too broad for one button.
        return Ok(None);
    }
    let now = Utc::now();
    // A second press (or a retried request) within the hour adds nothing.
    let existing = state.store.silences(now).await?;
    let covered = existing.iter().any(|s| {
        s.matchers == matchers && s.starts_at <= now && s.ends_at >= now + Duration::minutes(50)
    });
    if !covered {
        let silence = Silence {
            id: crate::api::silences::new_silence_id(),
            matchers,
            starts_at: now,
            ends_at: now + Duration::hours(1),
            comment: format!("Silenced for 1h from Slack (incident {id})"),
            created_by: by.to_string(),
            created_at: now,
        };
        let detail = format!("silence {} for 1h", silence.id);
        state.store.add_silence(silence).await?;
        let entry = TimelineEntry {
            at: now,
            what: "silenced".into(),
            by: by.to_string(),
            detail,
        };
        state.store.append_timeline(id, &[entry]).await?;
        tracing::info!(incident_id = %id, %by, "slack: silenced for 1h");
    }
    tell(state, &rec.incident, "silenced", by).await;
    Ok(Some("silenced"))
}
