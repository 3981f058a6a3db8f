//! `GET /silences` (scope `read`), `POST /silences` and `DELETE /silences/{id}`
//! (scope `write`).
//!
//! Input is validated strictly: unknown fields, unknown dimension names, empty
//! or oversized values, and time ranges that are empty, already over or longer
//! than [`MAX_SILENCE_DAYS`] are all 400s naming the field.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{Authorized, Read, Write};
use super::error::ErrorBody;
use super::{read_body, ApiError, AppState};
use crate::rules::Dim;
use crate::store::Silence;

/// Longest a silence may last.
pub const MAX_SILENCE_DAYS: i64 = 90;
/// Most matchers in one silence.
pub const MAX_MATCHERS: usize = 8;
/// Longest matcher value, in characters.
pub const MAX_VALUE_CHARS: usize = 128;
/// Longest comment, in characters.
pub const MAX_COMMENT_CHARS: usize = 1024;

/// `POST /silences` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    /// Dimension name (`provider`, `region`, `bin`, `merchant_id`, `card_brand`,
    /// `error_code`, `attrs.NAME`) to value; 1 to 8 of them. An incident is
    /// silenced when its first root cause holds every one.
    #[schema(example = json!({"provider": "stripe"}))]
    pub matchers: BTreeMap<String, String>,
    /// From when (RFC 3339); now when absent.
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    /// Until when (RFC 3339), after `starts_at` and now, at most 90 days after `starts_at`.
    pub ends_at: DateTime<Utc>,
    /// Why (1 to 1024 characters).
    pub comment: String,
}

/// `GET /silences` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SilenceList {
    /// Silences not yet ended (active or future), soonest-ending first.
    pub silences: Vec<Silence>,
}

impl NewSilence {
    /// Checks every field (the error names it) and makes the silence.
    fn validate(self, now: DateTime<Utc>, created_by: &str) -> Result<Silence, ApiError> {
        let bad = |m: String| ApiError::bad_request("invalid_body", m);
        if self.matchers.is_empty() || self.matchers.len() > MAX_MATCHERS {
            return Err(bad(format!(
                "`matchers` must hold 1 to {MAX_MATCHERS} dimension values"
            )));
        }
        for (k, v) in &self.matchers {
            if Dim::parse(k).is_none() || k.chars().any(char::is_control) {
                return Err(bad(
                    "`matchers` keys must be dimensions: provider, region, bin, merchant_id, card_brand, error_code or attrs.NAME".into(),
                ));
            }
            let n = v.chars().count();
            if n == 0 || n > MAX_VALUE_CHARS || v.chars().any(char::is_control) {
                return Err(bad(format!(
                    "`matchers` values must be 1 to {MAX_VALUE_CHARS} characters without control characters"
                )));
            }
            // Root-cause values are redacted on arrival, so a value holding card
            // data or a secret could never match; storing it would only keep
            // what must not be kept.
            if !crate::redact::violations(v).is_empty() || crate::redact::has_long_digit_run(v) {
                return Err(bad(format!(
                    "the `matchers` value of `{k}` holds card data or a secret; it is not stored"
                )));
            }
        }
        let starts_at = self.starts_at.unwrap_or(now);
        if self.ends_at <= starts_at {
            return Err(bad("`ends_at` must be after `starts_at`".into()));
        }
        if self.ends_at <= now {
            return Err(bad("`ends_at` must be in the future".into()));
        }
        if self.ends_at - starts_at > chrono::Duration::days(MAX_SILENCE_DAYS) {
            return Err(bad(format!(
                "a silence may last at most {MAX_SILENCE_DAYS} days"
            )));
        }
        let n = self.comment.chars().count();
        if self.comment.trim().is_empty() || n > MAX_COMMENT_CHARS {
            return Err(bad(format!(
                "`comment` must be 1 to {MAX_COMMENT_CHARS} characters"
            )));
        }
        Ok(Silence {
            id: crate::api::silences::new_silence_id(),
            matchers: self.matchers,
            starts_at,
            ends_at: self.ends_at,
            comment: crate::redact::redact_all(&self.comment).into_owned(),
            created_by: created_by.to_string(),
            created_at: now,
        })
    }
}

/// Silences not yet ended.
#[utoipa::path(
    get,
    path = "/silences",
    tag = "silences",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Active and future silences", body = SilenceList),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `read` scope", body = ErrorBody),
    )
)]
pub(super) async fn list(
    _auth: Authorized<Read>,
    State(state): State<AppState>,
) -> Result<super::Scrubbed<SilenceList>, ApiError> {
    let silences = state.store.silences(Utc::now()).await?;
    Ok(super::Scrubbed(SilenceList { silences }))
}

/// Creates a silence; its creator is the token's name.
#[utoipa::path(
    post,
    path = "/silences",
    tag = "silences",
    request_body(content = NewSilence, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The silence", body = Silence),
        (status = 400, description = "The body is not a valid silence", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `write` scope", body = ErrorBody),
        (status = 409, description = "Too many silences", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
    )
)]
pub(super) async fn create(
    auth: Authorized<Write>,
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, super::Scrubbed<Silence>), ApiError> {
    let body = read_body(body, state.body_limit)?;
    let mut de = serde_json::Deserializer::from_slice(&body);
    let new: NewSilence = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        // The path and serde's category only: never the value, which may be anything.
        let path = e.path().to_string();
        let what = match e.inner().classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "is not valid JSON"
            }
            _ => "has a missing, unknown or mistyped field",
        };
        ApiError::bad_request("invalid_body", format!("the silence {what} (at `{path}`)"))
    })?;
    de.end()
        .map_err(|_| ApiError::bad_request("invalid_body", "trailing data after the silence"))?;
    let silence = new.validate(Utc::now(), &auth.caller.name)?;
    state.store.add_silence(silence.clone()).await?;
    tracing::info!(silence_id = %silence.id, token = %auth.caller.name, "api: silence created");
    Ok((StatusCode::CREATED, super::Scrubbed(silence)))
}

/// Removes a silence.
#[utoipa::path(
    delete,
    path = "/silences/{id}",
    tag = "silences",
    params(("id" = String, Path, description = "Silence id (`sil_...`)")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The token lacks the `write` scope", body = ErrorBody),
        (status = 404, description = "No such silence", body = ErrorBody),
    )
)]
pub(super) async fn delete(
    auth: Authorized<Write>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.store.delete_silence(&id).await? {
        tracing::info!(silence_id = %id, token = %auth.caller.name, "api: silence deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("silence"))
    }
}

/// A fresh silence id: random hex, drawn again when its digits could read as a
/// card number (redaction would mask it in every answer).
pub(crate) fn new_silence_id() -> String {
    loop {
        let id = format!("sil_{:016x}", rand::random::<u64>());
        if !crate::redact::has_long_digit_run(&id) {
            return id;
        }
    }
}
