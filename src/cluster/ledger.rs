//! Notification claims: a NATS KV bucket where every notification is claimed
//! with compare-and-set before it is sent, so a takeover (a new detector
//! rebuilding the same incidents from the same counts) or two detectors at
//! once never notify the same change twice.
//!
//! A claim's key is the incident id and the change (`inc_...opened`,
//! `inc_...resolved`, `inc_....updated.<ms>`); its value says which detector term
//! claimed it and whether the notification was handed over (`done`) or not yet
//! (`pending`). Claiming:
//!
//! - no key: create it `pending` (fails if another detector just did) and notify;
//! - `done`: somebody notified it; stay quiet;
//! - `pending` by this term: it is on its way; stay quiet;
//! - `pending` by an earlier term: that detector died between claim and
//!   delivery; take the claim over (compare-and-set on its revision) and
//!   notify. Slack itself then finds a post that did go out (its history
//!   lookup), so the worst case is an edit in place, not a second post.
//!
//! When the bucket cannot be reached for [`CLAIM_PATIENCE`], the notification
//! goes out unclaimed: a missed page is worse than a duplicate.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};

use super::ClusterError;
use crate::incident::Transition;
use crate::metrics::Metrics;

/// The claims bucket.
pub const BUCKET: &str = "faultline_notified";
/// How long claims are kept.
const KEEP: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a claim waits for the bucket before notifying unclaimed.
pub const CLAIM_PATIENCE: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, Deserialize)]
struct Value {
    /// The detector term (lease epoch) that claimed it.
    term: u64,
    /// The replica.
    node: String,
    /// `pending` or `done`.
    state: String,
}

/// What a claim decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Notify, then [`Ledger::done`] with this.
    Notify {
        /// The key.
        key: String,
        /// The revision of our pending claim.
        revision: u64,
    },
    /// Notify: the bucket could not be reached (nothing to mark done).
    Unclaimed,
    /// Somebody notified or is notifying it: stay quiet.
    Quiet,
}

/// The claims of one detector term.
#[derive(Debug)]
pub struct Ledger {
    store: kv::Store,
    term: u64,
    node: String,
    metrics: std::sync::Arc<Metrics>,
    /// Engine incident id to the id it is known by (its episode's first id)
    /// and its episode key.
    ids: std::sync::Mutex<std::collections::HashMap<String, Known>>,
}

/// What a detector term knows of an engine incident id.
#[derive(Debug, Clone)]
struct Known {
    /// The id people know the outage by.
    id: String,
    /// Its episode key.
    key: String,
    /// A former detector told its resolution.
    closed: bool,
}

/// An outage of a fingerprint: the incident id people know it by.
#[derive(Debug, Serialize, Deserialize)]
struct Episode {
    id: String,
    opened_ms: i64,
    /// When its resolution was told (event time).
    #[serde(default)]
    resolved_ms: Option<i64>,
}

/// How far apart two openings of one fingerprint may be and still be one
/// episode (a takeover re-deriving it from a shorter history).
const SAME_EPISODE_MS: i64 = 3600 * 1000;

/// The claim key of a transition.
pub fn key_of(t: &Transition) -> String {
    let i = t.incident();
    let id: String =
        i.id.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
    match t {
        Transition::Opened(_) => format!("{id}.opened"),
        Transition::Resolved(_) => format!("{id}.resolved"),
        Transition::Updated(i) => format!("{id}.updated.{}", i.updated_at.timestamp_millis()),
    }
}

/// `open.<hash>`: the KV key of a fingerprint's open episode.
pub fn episode_key(fingerprint: &str) -> String {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(fingerprint.as_bytes());
    let hex: String = h[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("open.{hex}")
}

/// Creates the claims bucket if missing.
pub async fn bucket(js: &jetstream::Context, replicas: usize) -> Result<kv::Store, ClusterError> {
    super::kv_bucket(
        js,
        BUCKET,
        "faultline: notifications claimed by a detector",
        KEEP,
        replicas,
    )
    .await
}

impl Ledger {
    /// Claims for detector term `term` of replica `node`.
    pub fn new(
        store: kv::Store,
        term: u64,
        node: &str,
        metrics: std::sync::Arc<Metrics>,
    ) -> Ledger {
        Ledger {
            store,
            term,
            node: node.to_string(),
            metrics,
            ids: Default::default(),
        }
    }

    /// Gives `t` the id its outage is known by, and says whether a former
    /// detector already told its end (then all of it stays quiet).
    ///
    /// A detector that took over re-derives recent incidents from the counts;
    /// when it opens one at a slightly different step than its predecessor did
    /// (a shorter history behind its baselines), the incident id (a hash of the
    /// opening time) differs. The episode key (`open.<hash of rule and root
    /// cause>`) holds the first id and, once told, the resolution time: an
    /// opening of the same fingerprint while the episode is open, or before its
    /// recorded resolution, is the same outage and adopts that id, so its
    /// updates and resolution reach the same Slack thread and store row. An
    /// opening after the recorded resolution is a new outage.
    pub async fn adopt(&self, mut t: Transition) -> (Transition, bool) {
        let engine_id = t.incident().id.clone();
        let known = self
            .ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&engine_id)
            .cloned();
        let (id, closed) = match (known, &t) {
            (Some(k), _) => (k.id, k.closed),
            (None, Transition::Opened(inc)) => {
                let key = episode_key(&inc.fingerprint());
                let (id, closed) = self.episode(&key, inc).await;
                self.ids.lock().unwrap_or_else(|p| p.into_inner()).insert(
                    engine_id.clone(),
                    Known {
                        id: id.clone(),
                        key,
                        closed,
                    },
                );
                (id, closed)
            }
            (None, _) => (engine_id.clone(), false),
        };
        if id != engine_id {
            match &mut t {
                Transition::Opened(i) | Transition::Updated(i) | Transition::Resolved(i) => {
                    i.id = id;
                }
            }
        }
        (t, closed)
    }

    /// The episode's id (ours when we open it, the first opener's otherwise)
    /// and whether its resolution was already told.
    async fn episode(&self, key: &str, inc: &crate::incident::Incident) -> (String, bool) {
        let opened_ms = inc.opened_at.timestamp_millis();
        let mine = serde_json::to_vec(&Episode {
            id: inc.id.clone(),
            opened_ms,
            resolved_ms: None,
        })
        .unwrap_or_default();
        for _ in 0..3 {
            match self.store.create(key, mine.clone().into()).await {
                Ok(_) => return (inc.id.clone(), false),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => {
                    tracing::warn!(error = %e, "episode lookup failed; keeping the engine's id");
                    return (inc.id.clone(), false);
                }
            }
            let Ok(Some(entry)) = self.store.entry(key).await else {
                continue;
            };
            let same = match serde_json::from_slice::<Episode>(&entry.value) {
                Ok(ep) => match ep.resolved_ms {
                    None if (ep.opened_ms - opened_ms).abs() <= SAME_EPISODE_MS => {
                        Some((ep.id, false))
                    }
                    Some(r) if opened_ms <= r && opened_ms + SAME_EPISODE_MS >= ep.opened_ms => {
                        Some((ep.id, true))
                    }
                    _ => None,
                },
                Err(_) => None,
            };
            if let Some((id, closed)) = same {
                if id != inc.id {
                    tracing::info!(engine_id = %inc.id, %id, closed, "incident re-derived after a takeover; keeping its first id");
                    self.metrics.cluster_claim("adopted");
                }
                return (id, closed);
            }
            // A new outage after the last one ended (or a stale record).
            if self
                .store
                .update(key, mine.clone().into(), entry.revision)
                .await
                .is_ok()
            {
                return (inc.id.clone(), false);
            }
        }
        (inc.id.clone(), false)
    }

    /// The incident `id` (as adopted) was told resolved at `resolved_ms`
    /// (event time): its episode ends there, so an opening of its fingerprint
    /// after it is a new incident, and one before it (a takeover re-deriving
    /// it) the same.
    pub async fn end_episode(&self, id: &str, resolved_ms: i64) {
        let found = {
            let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
            let key = ids.values().find(|k| k.id == id).map(|k| k.key.clone());
            ids.retain(|_, k| k.id != id);
            key
        };
        let Some(key) = found else { return };
        for _ in 0..3 {
            let Ok(Some(entry)) = self.store.entry(&key).await else {
                return;
            };
            let Ok(mut ep) = serde_json::from_slice::<Episode>(&entry.value) else {
                return;
            };
            if ep.id != id || ep.resolved_ms.is_some() {
                return;
            }
            ep.resolved_ms = Some(resolved_ms);
            let value = serde_json::to_vec(&ep).unwrap_or_default();
            match self.store.update(&key, value.into(), entry.revision).await {
                Ok(_) => return,
                Err(e) => tracing::warn!(error = %e, "ending an episode failed; retrying"),
            }
        }
    }

    fn value(&self, state: &str) -> Vec<u8> {
        serde_json::to_vec(&Value {
            term: self.term,
            node: self.node.clone(),
            state: state.into(),
        })
        .unwrap_or_default()
    }

    /// Claims `key` (see the module docs), retrying an unreachable bucket for
    /// [`CLAIM_PATIENCE`].
    pub async fn claim(&self, key: &str) -> Claim {
        let deadline = tokio::time::Instant::now() + CLAIM_PATIENCE;
        let mut wait = Duration::from_millis(100);
        loop {
            match self.try_claim(key).await {
                Ok(claim) => {
                    let result = match &claim {
                        Claim::Notify { .. } => "won",
                        Claim::Quiet => "quiet",
                        Claim::Unclaimed => "unavailable",
                    };
                    self.metrics.cluster_claim(result);
                    return claim;
                }
                Err(e) if tokio::time::Instant::now() + wait < deadline => {
                    tracing::warn!(error = %e, key, "claiming a notification failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::error!(error = %e, key, "claims bucket unreachable; notifying unclaimed");
                    self.metrics.cluster_claim("unavailable");
                    return Claim::Unclaimed;
                }
            }
        }
    }

    async fn try_claim(&self, key: &str) -> Result<Claim, String> {
        let timeout = Duration::from_secs(3);
        let created = tokio::time::timeout(
            timeout,
            self.store.create(key, self.value("pending").into()),
        )
        .await
        .map_err(|_| "timed out".to_string())?;
        match created {
            Ok(revision) => {
                return Ok(Claim::Notify {
                    key: key.to_string(),
                    revision,
                })
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.to_string()),
        }
        let entry = tokio::time::timeout(timeout, self.store.entry(key))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let Some(entry) = entry else {
            // Expired between the two calls: try again.
            return Err("claim vanished".into());
        };
        let held: Option<Value> = serde_json::from_slice(&entry.value).ok();
        match held {
            // Delivered, ours, or claimed by a later term (we are the stale one).
            Some(v) if v.state == "done" || v.term >= self.term => Ok(Claim::Quiet),
            _ => {
                // Pending by an earlier term (or unreadable): take it over.
                match tokio::time::timeout(
                    timeout,
                    self.store
                        .update(key, self.value("pending").into(), entry.revision),
                )
                .await
                .map_err(|_| "timed out".to_string())?
                {
                    Ok(revision) => {
                        self.metrics.cluster_claim("taken_over");
                        tracing::info!(key, "taking over a claim a former detector left pending");
                        Ok(Claim::Notify {
                            key: key.to_string(),
                            revision,
                        })
                    }
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        Ok(Claim::Quiet)
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    }

    /// The notification claimed as `key` at `revision` was handed over.
    pub async fn done(&self, key: &str, revision: u64) {
        let mut wait = Duration::from_millis(100);
        for _ in 0..6 {
            match self
                .store
                .update(key, self.value("done").into(), revision)
                .await
            {
                Ok(_) => return,
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => return,
                Err(e) => {
                    tracing::warn!(error = %e, key, "marking a notification done failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        }
    }
}
