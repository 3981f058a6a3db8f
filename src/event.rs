//! The schema v1 event (CONTRACT section 1), its validation and rejection reasons.
//!
//! Parsing is strict about the fields it knows and ignores unknown top-level
//! fields. Every free-text field passes through [`crate::redact`] on arrival, so
//! nothing downstream ever holds a card number; a card number in `bin` rejects
//! the whole event and the value is dropped without being logged.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use chrono::DateTime;
use serde::Deserialize;

use crate::redact;

/// Largest accepted event, in bytes of JSON. Bigger input is rejected before parsing.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;
/// Largest `message`, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Most `attrs` entries.
pub const MAX_ATTRS: usize = 16;

/// What happened to the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It worked.
    Success,
    /// A business decline by the issuer (insufficient funds, do not honor).
    Decline,
    /// A technical failure (timeout, 5xx, issuer unavailable, webhook not delivered).
    Failure,
}

impl Outcome {
    /// The name used in events and rules.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Decline => "decline",
            Outcome::Failure => "failure",
        }
    }
}

/// A validated, redacted event. Times are epoch milliseconds (event time).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Unique id, used for dedupe.
    pub id: String,
    /// Event time, epoch milliseconds UTC.
    pub ts_ms: i64,
    /// Event family (`auth`, `settlement`, `webhook`, ...).
    pub kind: String,
    /// Outcome of the attempt.
    pub outcome: Outcome,
    /// Payment provider / acquirer / PSP.
    pub provider: String,
    /// Processing region.
    pub region: String,
    /// Card BIN, 6 to 8 digits.
    pub bin: Option<String>,
    /// Merchant.
    pub merchant_id: Option<String>,
    /// Card brand.
    pub card_brand: Option<String>,
    /// Decline or failure code.
    pub error_code: Option<String>,
    /// Latency of the attempt.
    pub latency_ms: Option<f64>,
    /// Upstream free text, already redacted.
    pub message: Option<String>,
    /// Extra dimensions (`attrs.NAME` in rules).
    pub attrs: BTreeMap<String, String>,
}

/// Why an event was rejected. The [`Rejection::reason`] strings are stable: they
/// appear in metrics, run reports and dead-letter headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rejection {
    /// More than [`MAX_EVENT_BYTES`].
    Oversized,
    /// Not UTF-8.
    InvalidUtf8,
    /// Not JSON, or truncated JSON.
    InvalidJson,
    /// Valid JSON, but not an object.
    NotAnObject,
    /// A required field is absent (or null).
    Missing(Field),
    /// A field has the wrong JSON type or an invalid value.
    Invalid(Field),
    /// `bin` holds a full card number. The value is never stored or shown.
    CardNumberInBin,
}

/// The event fields, for naming rejections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum Field {
    Id,
    Ts,
    Kind,
    Outcome,
    Provider,
    Region,
    Bin,
    MerchantId,
    CardBrand,
    ErrorCode,
    LatencyMs,
    Message,
    Attrs,
}

impl Field {
    /// The JSON name of the field.
    pub fn name(self) -> &'static str {
        match self {
            Field::Id => "id",
            Field::Ts => "ts",
            Field::Kind => "kind",
            Field::Outcome => "outcome",
            Field::Provider => "provider",
            Field::Region => "region",
            Field::Bin => "bin",
            Field::MerchantId => "merchant_id",
            Field::CardBrand => "card_brand",
            Field::ErrorCode => "error_code",
            Field::LatencyMs => "latency_ms",
            Field::Message => "message",
            Field::Attrs => "attrs",
        }
    }

    fn from_name(name: &str) -> Option<Field> {
        Some(match name {
            "id" => Field::Id,
            "ts" => Field::Ts,
            "kind" => Field::Kind,
            "outcome" => Field::Outcome,
            "provider" => Field::Provider,
            "region" => Field::Region,
            "bin" => Field::Bin,
            "merchant_id" => Field::MerchantId,
            "card_brand" => Field::CardBrand,
            "error_code" => Field::ErrorCode,
            "latency_ms" => Field::LatencyMs,
            "message" => Field::Message,
            "attrs" => Field::Attrs,
            _ => return None,
        })
    }
}

impl Rejection {
    /// Stable snake_case reason, e.g. `missing_id`, `invalid_ts`, `card_number_in_bin`.
    pub fn reason(self) -> Cow<'static, str> {
        match self {
            Rejection::Oversized => "oversized".into(),
            Rejection::InvalidUtf8 => "invalid_utf8".into(),
            Rejection::InvalidJson => "invalid_json".into(),
            Rejection::NotAnObject => "not_an_object".into(),
            Rejection::CardNumberInBin => "card_number_in_bin".into(),
            Rejection::Missing(f) => format!("missing_{}", f.name()).into(),
            Rejection::Invalid(f) => format!("invalid_{}", f.name()).into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason())
    }
}

impl std::error::Error for Rejection {}

/// The wire shape. Strings borrow from the input when they hold no escapes.
#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    ts: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    outcome: Option<Outcome>,
    #[serde(borrow, default)]
    provider: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    region: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    bin: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    merchant_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    card_brand: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    error_code: Option<Cow<'a, str>>,
    #[serde(default)]
    latency_ms: Option<f64>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    #[serde(default)]
    attrs: Option<BTreeMap<String, String>>,
}

/// Parses and validates one event from raw bytes.
pub fn parse(bytes: &[u8]) -> Result<Event, Rejection> {
    if bytes.len() > MAX_EVENT_BYTES {
        return Err(Rejection::Oversized);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| Rejection::InvalidUtf8)?;
    parse_str(text)
}

/// Parses and validates one event from a JSON text.
pub fn parse_str(text: &str) -> Result<Event, Rejection> {
    if text.len() > MAX_EVENT_BYTES {
        return Err(Rejection::Oversized);
    }
    match serde_json::from_str::<Raw>(text) {
        Ok(raw) => validate(raw),
        Err(_) => Err(diagnose(text)),
    }
}

/// Parses an already-decoded JSON value (one element of an `/v1/events` array).
pub fn from_value(value: serde_json::Value) -> Result<Event, Rejection> {
    // Re-serializing keeps one validation path; values here are at most a few KiB.
    let text = serde_json::to_string(&value).map_err(|_| Rejection::InvalidJson)?;
    parse_str(&text)
}

/// Names the cause when the typed parse failed: syntax, shape, or which field.
fn diagnose(text: &str) -> Rejection {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => return Rejection::InvalidJson,
    };
    if !value.is_object() {
        return Rejection::NotAnObject;
    }
    let mut de = serde_json::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, Raw>(&mut de) {
        Ok(_) => Rejection::InvalidJson,
        Err(e) => {
            let path = e.path().to_string();
            let head = path.split(['.', '[']).next().unwrap_or("");
            match Field::from_name(head) {
                Some(field) => Rejection::Invalid(field),
                None => Rejection::InvalidJson,
            }
        }
    }
}

fn required<'a>(v: Option<Cow<'a, str>>, field: Field) -> Result<Cow<'a, str>, Rejection> {
    v.ok_or(Rejection::Missing(field))
}

/// Checks length in characters and control characters, then redacts card numbers.
fn text(v: Cow<'_, str>, field: Field, max_chars: usize) -> Result<String, Rejection> {
    let n = v.chars().count();
    if n == 0 || n > max_chars || v.chars().any(char::is_control) {
        return Err(Rejection::Invalid(field));
    }
    Ok(redact::redact(&v).into_owned())
}

fn optional(
    v: Option<Cow<'_, str>>,
    field: Field,
    max_chars: usize,
) -> Result<Option<String>, Rejection> {
    v.map(|v| text(v, field, max_chars)).transpose()
}

fn validate(raw: Raw<'_>) -> Result<Event, Rejection> {
    let id = required(raw.id, Field::Id)?;
    let id = text(id, Field::Id, 128)?;

    let ts = required(raw.ts, Field::Ts)?;
    let ts_ms = DateTime::parse_from_rfc3339(&ts)
        .map_err(|_| Rejection::Invalid(Field::Ts))?
        .timestamp_millis();

    let kind = required(raw.kind, Field::Kind)?;
    if kind.is_empty() || kind.len() > 32 || !kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    {
        return Err(Rejection::Invalid(Field::Kind));
    }
    let kind = kind.into_owned();

    let outcome = raw.outcome.ok_or(Rejection::Missing(Field::Outcome))?;
    let provider = text(required(raw.provider, Field::Provider)?, Field::Provider, 64)?;
    let region = text(required(raw.region, Field::Region)?, Field::Region, 64)?;

    let bin = match raw.bin {
        None => None,
        Some(b) => {
            if redact::contains_card_number(&b) {
                return Err(Rejection::CardNumberInBin);
            }
            if !(6..=8).contains(&b.len()) || !b.bytes().all(|c| c.is_ascii_digit()) {
                // A long digit run that fails Luhn is still never echoed anywhere.
                return Err(Rejection::Invalid(Field::Bin));
            }
            Some(b.into_owned())
        }
    };

    let merchant_id = optional(raw.merchant_id, Field::MerchantId, 64)?;
    let card_brand = optional(raw.card_brand, Field::CardBrand, 32)?;
    let error_code = optional(raw.error_code, Field::ErrorCode, 64)?;

    let latency_ms = match raw.latency_ms {
        Some(l) if !(l.is_finite() && l >= 0.0) => return Err(Rejection::Invalid(Field::LatencyMs)),
        other => other,
    };

    let message = match raw.message {
        None => None,
        Some(m) if m.len() > MAX_MESSAGE_BYTES => return Err(Rejection::Invalid(Field::Message)),
        // Messages may hold newlines and tabs; other control characters are dropped.
        Some(m) => {
            let cleaned: String = m
                .chars()
                .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
                .collect();
            Some(redact::redact(&cleaned).into_owned())
        }
    };

    let mut attrs = BTreeMap::new();
    if let Some(raw_attrs) = raw.attrs {
        if raw_attrs.len() > MAX_ATTRS {
            return Err(Rejection::Invalid(Field::Attrs));
        }
        for (k, v) in raw_attrs {
            let k = text(Cow::Owned(k), Field::Attrs, 64)?;
            let v = text(Cow::Owned(v), Field::Attrs, 256)?;
            attrs.insert(k, v);
        }
    }

    Ok(Event {
        id,
        ts_ms,
        kind,
        outcome,
        provider,
        region,
        bin,
        merchant_id,
        card_brand,
        error_code,
        latency_ms,
        message,
        attrs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"id":"e1","ts":"2026-03-02T00:20:41Z","kind":"auth","outcome":"failure","provider":"stripe","region":"us-west-2","bin":"414720","error_code":"timeout","latency_ms":1200,"message":"issuer timeout","attrs":{"acquirer":"a1"},"extra":true}"#;

    #[test]
    fn parses_a_good_event_and_ignores_unknown_fields() {
        let e = parse(GOOD.as_bytes()).unwrap();
        assert_eq!(e.id, "e1");
        assert_eq!(e.kind, "auth");
        assert_eq!(e.outcome, Outcome::Failure);
        assert_eq!(e.bin.as_deref(), Some("414720"));
        assert_eq!(e.attrs.get("acquirer").map(String::as_str), Some("a1"));
        assert_eq!(e.ts_ms, 1_772_410_841_000);
    }

    #[test]
    fn names_the_reason() {
        let cases = [
            ("{", "invalid_json"),
            ("[1]", "not_an_object"),
            (r#"{"ts":"2026-03-02T00:20:41Z"}"#, "missing_id"),
            (r#"{"id":1}"#, "invalid_id"),
            (
                r#"{"id":"x","ts":"yesterday","kind":"auth","outcome":"success","provider":"p","region":"r"}"#,
                "invalid_ts",
            ),
            (
                r#"{"id":"x","ts":"2026-03-02T00:20:41","kind":"auth","outcome":"success","provider":"p","region":"r"}"#,
                "invalid_ts",
            ),
            (
                r#"{"id":"x","ts":"2026-03-02T00:20:41Z","kind":"Auth","outcome":"success","provider":"p","region":"r"}"#,
                "invalid_kind",
            ),
            (
                r#"{"id":"x","ts":"2026-03-02T00:20:41Z","kind":"auth","outcome":"ok","provider":"p","region":"r"}"#,
                "invalid_outcome",
            ),
            (
                r#"{"id":"x","ts":"2026-03-02T00:20:41Z","kind":"auth","outcome":"success","region":"r"}"#,
                "missing_provider",
            ),
            (
                r#"{"id":"x","ts":"2026-03-02T00:20:41Z","kind":"auth","outcome":"success","provider":"p","region":"r","bin":"4111111111111111"}"#,
                "card_number_in_bin",
            ),
            (
                r#"{"id":"x","ts":"2026-03-02T00:20:41Z","kind":"auth","outcome":"success","provider":"p","region":"r","bin":"41a111"}"#,
                "invalid_bin",
            ),
            (
                r#"{"id":"x","ts":"2026-03-02T00:20:41Z","kind":"auth","outcome":"success","provider":"p","region":"r","latency_ms":-1}"#,
                "invalid_latency_ms",
            ),
        ];
        for (input, reason) in cases {
            assert_eq!(parse(input.as_bytes()).unwrap_err().reason(), reason, "{input}");
        }
    }

    #[test]
    fn redacts_card_numbers_in_text() {
        let line = r#"{"id":"x","ts":"2026-03-02T00:20:41Z","kind":"auth","outcome":"failure","provider":"p","region":"r","message":"card 4111 1111 1111 1111 declined","merchant_id":"m-4111111111111111"}"#;
        let e = parse(line.as_bytes()).unwrap();
        let msg = e.message.unwrap();
        assert!(!msg.contains("4111 1111 1111 1111"), "{msg}");
        assert!(!e.merchant_id.unwrap().contains("4111111111111111"));
    }
}
