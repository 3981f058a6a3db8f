//! Silences: "do not notify incidents whose root cause is X until T".
//!
//! A silence never hides an incident: the incident is opened, updated and
//! stored as usual, only the notifier does not hear of it. Matching is on the
//! first (best) root cause's dimension values, which is what the incident's
//! fingerprint is made of, so a silence on `provider=stripe` mutes every
//! incident rooted at stripe (alone or with more dimensions) and nothing else.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::incident::Incident;

/// A silence as stored and as `GET /silences` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Silence {
    /// `sil_` followed by a random hex id.
    pub id: String,
    /// Dimension name to value; an incident matches when its first root cause
    /// holds every one of them.
    #[schema(example = json!({"provider": "stripe"}))]
    pub matchers: BTreeMap<String, String>,
    /// From when it mutes (wall time).
    pub starts_at: DateTime<Utc>,
    /// Until when it mutes (wall time, exclusive).
    pub ends_at: DateTime<Utc>,
    /// Why, free text from its creator.
    pub comment: String,
    /// The name of the API token that created it.
    pub created_by: String,
    /// When it was created (wall time).
    pub created_at: DateTime<Utc>,
}

impl Silence {
    /// Whether it mutes at `now`.
    pub fn active_at(&self, now: DateTime<Utc>) -> bool {
        self.starts_at <= now && now < self.ends_at
    }

    /// Whether the incident's first root cause holds every matcher.
    pub fn matches(&self, incident: &Incident) -> bool {
        let Some(cause) = incident.root_causes.first() else {
            return false;
        };
        !self.matchers.is_empty()
            && self
                .matchers
                .iter()
                .all(|(k, v)| cause.dims.get(k) == Some(v))
    }
}

/// Why a change is stored but not notified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mute {
    /// An active silence matches it (its id).
    Silenced(String),
    /// A person resolved it while the engine still saw it firing: its later
    /// changes are recorded, not announced.
    ResolvedByPerson,
}

impl std::fmt::Display for Mute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mute::Silenced(id) => write!(f, "silenced by {id}"),
            Mute::ResolvedByPerson => f.write_str("resolved by a person"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::ts;
    use crate::store::memory::fixtures::incident;

    fn silence(matchers: &[(&str, &str)]) -> Silence {
        Silence {
            id: "sil_1".into(),
            matchers: matchers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            starts_at: ts(1000),
            ends_at: ts(2000),
            comment: String::new(),
            created_by: "w".into(),
            created_at: ts(1000),
        }
    }

    #[test]
    fn matches_every_matcher_within_its_time() {
        let inc = incident("inc_1", 5000);
        assert!(silence(&[("provider", "stripe")]).matches(&inc));
        assert!(silence(&[("provider", "stripe"), ("region", "us-west-2")]).matches(&inc));
        assert!(!silence(&[("provider", "stripe"), ("region", "eu")]).matches(&inc));
        assert!(!silence(&[("bin", "414720")]).matches(&inc));
        assert!(!silence(&[]).matches(&inc));
        let s = silence(&[("provider", "stripe")]);
        assert!(!s.active_at(ts(999)));
        assert!(s.active_at(ts(1000)));
        assert!(!s.active_at(ts(2000)));
    }
}
