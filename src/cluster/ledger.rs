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
    ids: std::sync::Mutex<std::collections::HashMap<String, (String, String)>>,
}

/// An open episode of a fingerprint: the incident id people know it by.
#[derive(Debug, Serialize, Deserialize)]
struct Episode {
    id: String,
    opened_ms: i64,
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

    /// Gives `t` the id its outage is known by. A detector that took over
    /// re-derives open incidents from the counts; when it opens one at a
    /// slightly different step than its predecessor did (a shorter history
    /// behind its baselines), the incident id (a hash of the opening time)
    /// differs. The episode key (`open.<hash of rule and root cause>`) holds
    /// the first id: a later opening of the same fingerprint while the episode
    /// is open adopts it, so its updates and resolution reach the same Slack
    /// thread and store row.
    pub async fn adopt(&self, mut t: Transition) -> Transition {
        let engine_id = t.incident().id.clone();
        let known = self
            .ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&engine_id)
            .cloned();
        let id = match (known, &t) {
            (Some((id, _)), _) => id,
            (None, Transition::Opened(inc)) => {
                let key = episode_key(&inc.fingerprint());
                let id = self.episode(&key, inc).await;
                self.ids
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(engine_id.clone(), (id.clone(), key));
                id
            }
            (None, _) => engine_id.clone(),
        };
        if id != engine_id {
            match &mut t {
                Transition::Opened(i) | Transition::Updated(i) | Transition::Resolved(i) => {
                    i.id = id;
                }
            }
        }
        t
    }

    /// The episode's id: ours when we open it, the first opener's otherwise.
    async fn episode(&self, key: &str, inc: &crate::incident::Incident) -> String {
        let opened_ms = inc.opened_at.timestamp_millis();
        let mine = serde_json::to_vec(&Episode {
            id: inc.id.clone(),
            opened_ms,
        })
        .unwrap_or_default();
        for _ in 0..3 {
            match self.store.create(key, mine.clone().into()).await {
                Ok(_) => return inc.id.clone(),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => {
                    tracing::warn!(error = %e, "episode lookup failed; keeping the engine's id");
                    return inc.id.clone();
                }
            }
            let Ok(Some(entry)) = self.store.entry(key).await else {
                continue;
            };
            match serde_json::from_slice::<Episode>(&entry.value) {
                Ok(ep) if (ep.opened_ms - opened_ms).abs() <= SAME_EPISODE_MS => {
                    if ep.id != inc.id {
                        tracing::info!(engine_id = %inc.id, id = %ep.id, "incident re-derived after a takeover; keeping its first id");
                        self.metrics.cluster_claim("adopted");
                    }
                    return ep.id;
                }
                // A stale episode (its resolution never cleared it): replace it.
                _ => match self
                    .store
                    .update(key, mine.clone().into(), entry.revision)
                    .await
                {
                    Ok(_) => return inc.id.clone(),
                    Err(_) => continue,
                },
            }
        }
        inc.id.clone()
    }

    /// The incident `id` (as adopted) resolved and was notified: its episode
    /// ends, so the next outage of the fingerprint is a new incident.
    pub async fn end_episode(&self, id: &str) {
        let key = {
            let ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
            ids.values()
                .find(|(known, _)| known == id)
                .map(|(_, k)| k.clone())
        };
        if let Some(key) = key {
            if let Err(e) = self.store.purge(&key).await {
                tracing::warn!(error = %e, "ending an episode failed; it expires as stale");
            }
            self.ids
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, (known, _)| known != id);
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
            Some(v) if v.state == "done" || v.term == self.term => Ok(Claim::Quiet),
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
