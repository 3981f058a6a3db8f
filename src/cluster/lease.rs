//! The detector lease: one key in a NATS KV bucket whose entries expire after
//! `cluster.lease_ttl`.
//!
//! A replica becomes the detector by creating the key (compare-and-set against
//! "absent") and stays it by updating the key with the revision it last wrote
//! (compare-and-set against its own write) every third of the TTL. When it dies
//! its key expires and the next standby's create succeeds. A detector that
//! cannot renew stops acting as one before the server expires its key
//! ([`Lease::renew`] says `Lost` once 80% of the TTL passed since its last
//! successful write), so two detectors never act at once on the same clock;
//! notifications are claimed in the [`super::ledger`] as well, for clocks that
//! disagree.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};

use super::ClusterError;

/// The lease bucket.
pub const BUCKET: &str = "faultline_lease";
/// The key of the detector lease.
pub const KEY: &str = "detector";

/// Creates the lease bucket if missing: history 1, entries expiring after `ttl`.
pub async fn bucket(
    js: &jetstream::Context,
    ttl: Duration,
    replicas: usize,
) -> Result<kv::Store, ClusterError> {
    super::kv_bucket(
        js,
        BUCKET,
        "faultline: which replica is the detector",
        ttl,
        replicas,
    )
    .await
}

/// Who holds the lease now (`node/boot`), if anyone.
pub async fn holder(store: &kv::Store) -> Option<String> {
    let entry = store.entry(KEY).await.ok()??;
    (entry.operation == kv::Operation::Put)
        .then(|| String::from_utf8_lossy(&entry.value).into_owned())
}

/// A held lease.
#[derive(Debug)]
pub struct Lease {
    store: kv::Store,
    holder: String,
    revision: u64,
    ttl: Duration,
    written: Instant,
    epoch: u64,
}

/// Why a renewal failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Renewal {
    /// Renewed.
    Held,
    /// Not renewed this time (the server did not answer); still ours for now.
    Unsure,
    /// Someone else holds it, or too long passed without a renewal: stop acting
    /// as the detector.
    Lost,
}

impl Lease {
    /// Takes the lease when nobody holds it; `holder` names this replica
    /// (`node/boot`).
    pub async fn try_acquire(
        store: &kv::Store,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, ClusterError> {
        let started = Instant::now();
        match store.create(KEY, holder.to_string().into()).await {
            Ok(revision) => Ok(Some(Lease {
                store: store.clone(),
                holder: holder.to_string(),
                revision,
                ttl,
                written: started,
                epoch: revision,
            })),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(ClusterError::Kv {
                bucket: BUCKET.into(),
                message: e.to_string(),
            }),
        }
    }

    /// The revision the lease was taken at: grows with every takeover, so it
    /// names this detector's term.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// How often to renew.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// Extends the lease by one TTL.
    pub async fn renew(&mut self) -> Renewal {
        if self.written.elapsed() > self.ttl.mul_f64(0.8) {
            return Renewal::Lost;
        }
        let started = Instant::now();
        let attempt = tokio::time::timeout(
            self.ttl / 4,
            self.store
                .update(KEY, self.holder.clone().into(), self.revision),
        )
        .await;
        match attempt {
            Ok(Ok(revision)) => {
                self.revision = revision;
                self.written = started;
                Renewal::Held
            }
            Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Renewal::Lost,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "renewing the detector lease failed; retrying");
                self.check_time()
            }
            Err(_) => {
                tracing::warn!("renewing the detector lease timed out; retrying");
                self.check_time()
            }
        }
    }

    fn check_time(&self) -> Renewal {
        if self.written.elapsed() > self.ttl.mul_f64(0.8) {
            Renewal::Lost
        } else {
            Renewal::Unsure
        }
    }

    /// Gives the lease up (a clean shutdown), so a standby takes over at once.
    pub async fn release(self) {
        if let Err(e) = self
            .store
            .delete_expect_revision(KEY, Some(self.revision))
            .await
        {
            tracing::warn!(error = %e, "releasing the detector lease failed; it expires on its own");
        }
    }
}
