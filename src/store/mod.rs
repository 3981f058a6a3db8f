//! Where incidents are kept: in memory (embedded default) or in ClickHouse
//! ([`clickhouse`], when `FAULTLINE_CLICKHOUSE_URL` is set).
//!
//! [`IncidentQuery`] is what `GET /incidents` receives; [`IncidentQuery::parse`]
//! validates it into an [`IncidentFilter`] once, so every store applies the same
//! rules and answers the same errors. Pages are ordered newest first by
//! `(opened_at, id)` and the [`Cursor`] names the last pair a page showed: the
//! next page starts strictly after it, so incidents inserted between two requests
//! never repeat an incident already shown.
//!
//! People change incidents too ([`Store::act`]: acknowledge, resolve), and the
//! store is where their word and the engine's meet. The rule, the same for every
//! store:
//!
//! - An engine update of an acknowledged incident keeps it `acknowledged`; the
//!   engine resolving it resolves it.
//! - A person resolving an incident the engine still sees firing wins: it stays
//!   `resolved` (evidence and series keep being recorded) and its later changes
//!   are not notified ([`Mute::ResolvedByPerson`]). The engine opens a new
//!   incident for the same fingerprint only once the old one has resolved on its
//!   own, so a resolve never triggers an immediate re-page.

pub mod clickhouse;
pub mod memory;
pub mod silence;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::incident::{Incident, SeriesPoint, Status, TimelineEntry};
use crate::rules::Severity;

pub use memory::{MemoryLimits, MemoryStore};
pub use silence::{Mute, Silence};

/// Page size when the query names none.
pub const DEFAULT_LIMIT: usize = 50;
/// Largest page size.
pub const MAX_LIMIT: usize = 500;

/// An incident with its history, as `GET /incidents/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IncidentRecord {
    /// The incident, latest state.
    #[serde(flatten)]
    pub incident: Incident,
    /// State changes and posts, oldest first.
    pub timeline: Vec<TimelineEntry>,
    /// Failure rate and baseline per step.
    pub series: Vec<SeriesPoint>,
}

/// Errors at the store boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed. The text is for logs, not for API clients.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A cursor that this store did not issue.
    #[error("invalid cursor")]
    BadCursor,
    /// A query parameter with an unusable value (the API answers 400).
    #[error("invalid `{param}`: {message}")]
    InvalidQuery {
        /// The parameter.
        param: &'static str,
        /// What is wrong, safe to show the client.
        message: String,
    },
    /// The change is not possible in the incident's state (acknowledging a
    /// resolved incident); the text is safe to show.
    #[error("conflict: {0}")]
    Conflict(&'static str),
}

/// What a person does to an incident through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Someone is on it: `open` becomes `acknowledged`.
    Acknowledge,
    /// It is over: `open` or `acknowledged` becomes `resolved`.
    Resolve,
}

/// Incidents held, by status (`faultline_incidents` on `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    /// Open.
    pub open: u64,
    /// Acknowledged.
    pub acknowledged: u64,
    /// Resolved (of those still held).
    pub resolved: u64,
}

/// Incident storage.
#[async_trait]
pub trait Store: Send + Sync {
    /// Inserts or replaces an incident, appending timeline entries and
    /// series points (oldest first).
    async fn upsert(
        &self,
        incident: &Incident,
        timeline: &[TimelineEntry],
        points: &[SeriesPoint],
    ) -> Result<(), StoreError>;
    /// Appends timeline entries (a Slack post, a late summary) to an incident
    /// without changing it; false when there is no such incident.
    async fn append_timeline(
        &self,
        id: &str,
        entries: &[TimelineEntry],
    ) -> Result<bool, StoreError>;
    /// Incidents matching a query, newest first.
    async fn list(&self, query: &IncidentQuery) -> Result<IncidentPage, StoreError>;
    /// One incident with its timeline and series.
    async fn get(&self, id: &str) -> Result<Option<IncidentRecord>, StoreError>;
    /// Applies a person's action at wall time `at`, recording it in the timeline
    /// with `by` (the API token's name). Idempotent: repeating it changes
    /// nothing. `None` when there is no such incident; [`StoreError::Conflict`]
    /// when acknowledging a resolved incident.
    async fn act(
        &self,
        id: &str,
        action: Action,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<IncidentRecord>, StoreError>;
    /// Why a change of `incident` must not be notified at wall time `now`, if
    /// it must not: an active matching silence, or a person resolved it.
    async fn mute(
        &self,
        incident: &Incident,
        now: DateTime<Utc>,
    ) -> Result<Option<Mute>, StoreError>;
    /// Keeps a new silence.
    async fn add_silence(&self, silence: Silence) -> Result<(), StoreError>;
    /// Silences not yet ended at `now` (active or future), soonest-ending first.
    async fn silences(&self, now: DateTime<Utc>) -> Result<Vec<Silence>, StoreError>;
    /// Removes a silence; false when there is none with that id.
    async fn delete_silence(&self, id: &str) -> Result<bool, StoreError>;
    /// Incidents held now, by status.
    async fn status_counts(&self) -> Result<StatusCounts, StoreError>;
    /// Whether the backend answers (`GET /readyz`). The embedded store always does.
    async fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Filters of `GET /incidents` (CONTRACT section 5), as received.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IncidentQuery {
    /// `open`, `acknowledged`, `resolved`.
    pub status: Option<String>,
    /// Rule name.
    pub rule: Option<String>,
    /// Severity.
    pub severity: Option<String>,
    /// Event kind.
    pub kind: Option<String>,
    /// Root-cause provider.
    pub provider: Option<String>,
    /// Root-cause region.
    pub region: Option<String>,
    /// Root-cause BIN.
    pub bin: Option<String>,
    /// Root-cause merchant.
    pub merchant_id: Option<String>,
    /// Opened at or after (RFC 3339).
    pub since: Option<String>,
    /// Opened before (RFC 3339).
    pub until: Option<String>,
    /// Page size, 1..500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// Opaque cursor from a previous page.
    pub cursor: Option<String>,
}

/// A validated [`IncidentQuery`].
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentFilter {
    /// Only this status.
    pub status: Option<Status>,
    /// Only this rule.
    pub rule: Option<String>,
    /// Only this severity.
    pub severity: Option<Severity>,
    /// Only this event kind.
    pub kind: Option<String>,
    /// Dimension values the first root cause must hold: (`provider`, `stripe`), ...
    pub dims: Vec<(&'static str, String)>,
    /// Opened at or after.
    pub since: Option<DateTime<Utc>>,
    /// Opened strictly before.
    pub until: Option<DateTime<Utc>>,
    /// Page size, 1..=[`MAX_LIMIT`].
    pub limit: usize,
    /// Start strictly after this position (older).
    pub after: Option<Cursor>,
}

impl IncidentQuery {
    /// Validates every parameter; errors name the parameter.
    pub fn parse(&self) -> Result<IncidentFilter, StoreError> {
        let status = match self.status.as_deref() {
            None => None,
            Some("open") => Some(Status::Open),
            Some("acknowledged") => Some(Status::Acknowledged),
            Some("resolved") => Some(Status::Resolved),
            Some(_) => return Err(invalid("status", "must be open, acknowledged or resolved")),
        };
        let severity = match self.severity.as_deref() {
            None => None,
            Some("info") => Some(Severity::Info),
            Some("warning") => Some(Severity::Warning),
            Some("critical") => Some(Severity::Critical),
            Some(_) => return Err(invalid("severity", "must be info, warning or critical")),
        };
        let time = |param: &'static str, v: &Option<String>| {
            v.as_deref()
                .map(|s| {
                    DateTime::parse_from_rfc3339(s)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(|_| invalid(param, "must be an RFC 3339 time with offset"))
                })
                .transpose()
        };
        let since = time("since", &self.since)?;
        let until = time("until", &self.until)?;
        let limit = match self.limit {
            None => DEFAULT_LIMIT,
            Some(n) if (1..=MAX_LIMIT as u32).contains(&n) => n as usize,
            Some(_) => return Err(invalid("limit", format!("must be 1..{MAX_LIMIT}"))),
        };
        let after = self.cursor.as_deref().map(Cursor::decode).transpose()?;
        let dims = [
            ("provider", &self.provider),
            ("region", &self.region),
            ("bin", &self.bin),
            ("merchant_id", &self.merchant_id),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect();
        Ok(IncidentFilter {
            status,
            rule: self.rule.clone(),
            severity,
            kind: self.kind.clone(),
            dims,
            since,
            until,
            limit,
            after,
        })
    }
}

fn invalid(param: &'static str, message: impl Into<String>) -> StoreError {
    StoreError::InvalidQuery {
        param,
        message: message.into(),
    }
}

impl IncidentFilter {
    /// Whether the incident passes every filter (limit and cursor aside).
    pub fn matches(&self, inc: &Incident) -> bool {
        let cause = inc.root_causes.first().map(|c| &c.dims);
        self.status.is_none_or(|s| inc.status == s)
            && self.severity.is_none_or(|s| inc.severity == s)
            && self.rule.as_ref().is_none_or(|r| &inc.rule == r)
            && self.kind.as_ref().is_none_or(|k| &inc.kind == k)
            && self.since.is_none_or(|t| inc.opened_at >= t)
            && self.until.is_none_or(|t| inc.opened_at < t)
            && self
                .dims
                .iter()
                .all(|(k, v)| cause.and_then(|d| d.get(*k)) == Some(v))
    }
}

/// A position in the newest-first order: the last incident a page showed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    /// Its opening time.
    pub opened_at: DateTime<Utc>,
    /// Its id (ties on `opened_at` are ordered by id).
    pub id: String,
}

impl Cursor {
    /// The position of an incident.
    pub fn of(inc: &Incident) -> Cursor {
        Cursor {
            opened_at: inc.opened_at,
            id: inc.id.clone(),
        }
    }

    /// Opaque text: hex of `1.SECONDS.NANOS.ID`.
    pub fn encode(&self) -> String {
        let plain = format!(
            "1.{}.{}.{}",
            self.opened_at.timestamp(),
            self.opened_at.timestamp_subsec_nanos(),
            self.id
        );
        let mut out = String::with_capacity(plain.len() * 2);
        for b in plain.bytes() {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        out
    }

    /// Reads [`Cursor::encode`]'s text; anything else is [`StoreError::BadCursor`].
    pub fn decode(text: &str) -> Result<Cursor, StoreError> {
        let bytes = text.as_bytes();
        if bytes.is_empty() || bytes.len() % 2 != 0 || bytes.len() > 1024 {
            return Err(StoreError::BadCursor);
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let plain: Vec<u8> = bytes
            .chunks(2)
            .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
            .collect::<Option<_>>()
            .ok_or(StoreError::BadCursor)?;
        let plain = String::from_utf8(plain).map_err(|_| StoreError::BadCursor)?;
        let mut parts = plain.splitn(4, '.');
        let (Some("1"), Some(secs), Some(nanos), Some(id)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(StoreError::BadCursor);
        };
        let secs: i64 = secs.parse().map_err(|_| StoreError::BadCursor)?;
        let nanos: u32 = nanos.parse().map_err(|_| StoreError::BadCursor)?;
        let opened_at = DateTime::from_timestamp(secs, nanos).ok_or(StoreError::BadCursor)?;
        if id.is_empty() {
            return Err(StoreError::BadCursor);
        }
        Ok(Cursor {
            opened_at,
            id: id.to_string(),
        })
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// One page of incidents.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IncidentPage {
    /// Newest first.
    pub incidents: Vec<Incident>,
    /// Cursor of the next page, null at the end.
    pub next_cursor: Option<String>,
}

impl IncidentPage {
    /// A page of `incidents`; `more` says whether the store holds more past the last one,
    /// in which case the next page's cursor points after it.
    pub fn new(incidents: Vec<Incident>, more: bool) -> IncidentPage {
        let next_cursor = if more {
            incidents.last().map(|i| Cursor::of(i).encode())
        } else {
            None
        };
        IncidentPage {
            incidents,
            next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_forgeries() {
        let c = Cursor {
            opened_at: DateTime::from_timestamp(1_772_410_841, 123).unwrap(),
            id: "inc_a.b".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        for bad in ["", "zz", "abc", "312e", &"31".repeat(600)] {
            assert!(
                matches!(Cursor::decode(bad), Err(StoreError::BadCursor)),
                "{bad}"
            );
        }
    }

    #[test]
    fn query_errors_name_the_parameter() {
        let q = |f: fn(&mut IncidentQuery)| {
            let mut q = IncidentQuery::default();
            f(&mut q);
            q.parse()
        };
        assert_eq!(q(|_| {}).unwrap().limit, DEFAULT_LIMIT);
        assert!(matches!(
            q(|q| q.limit = Some(0)),
            Err(StoreError::InvalidQuery { param: "limit", .. })
        ));
        assert!(matches!(
            q(|q| q.limit = Some(501)),
            Err(StoreError::InvalidQuery { param: "limit", .. })
        ));
        assert_eq!(q(|q| q.limit = Some(500)).unwrap().limit, 500);
        assert!(matches!(
            q(|q| q.since = Some("yesterday".into())),
            Err(StoreError::InvalidQuery { param: "since", .. })
        ));
        assert!(matches!(
            q(|q| q.status = Some("closed".into())),
            Err(StoreError::InvalidQuery {
                param: "status",
                ..
            })
        ));
        assert!(matches!(
            q(|q| q.severity = Some("high".into())),
            Err(StoreError::InvalidQuery {
                param: "severity",
                ..
            })
        ));
        assert!(matches!(
            q(|q| q.cursor = Some("nope".into())),
            Err(StoreError::BadCursor)
        ));
    }
}
