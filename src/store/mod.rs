//! Where incidents are kept: in memory (embedded default).

pub mod memory;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::incident::{Incident, SeriesPoint, TimelineEntry};

/// An incident with its history, as `GET /incidents/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The backend failed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A cursor that this store did not issue.
    #[error("invalid cursor")]
    BadCursor,
}

/// Incident storage.
#[async_trait]
pub trait Store: Send + Sync {
    /// Inserts or replaces an incident, appending timeline entries and a series point.
    async fn upsert(
        &self,
        incident: &Incident,
        timeline: &[TimelineEntry],
        point: Option<SeriesPoint>,
    ) -> Result<(), StoreError>;
    /// Incidents matching a query, newest first.
    async fn list(&self, query: &IncidentQuery) -> Result<IncidentPage, StoreError>;
    /// One incident with its timeline and series.
    async fn get(&self, id: &str) -> Result<Option<IncidentRecord>, StoreError>;
}

/// Filters of `GET /incidents` (CONTRACT section 5).
#[derive(Debug, Clone, Default, Deserialize)]
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
    /// Page size, 1..500.
    pub limit: Option<u32>,
    /// Opaque cursor from a previous page.
    pub cursor: Option<String>,
}

/// One page of incidents.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IncidentPage {
    /// Newest first.
    pub incidents: Vec<Incident>,
    /// Cursor of the next page, null at the end.
    pub next_cursor: Option<String>,
}
