//! Several `faultline run` replicas on one stream (`[cluster]`, deploy/README.md).
//!
//! - Every replica consumes a share of the events through one shared durable
//!   JetStream consumer (each event is delivered to one replica), counts its
//!   share into per-step cell counts ([`partial`]) and publishes them on the
//!   partials stream before it acks the events.
//! - One replica at a time is the detector: it holds a lease in a NATS KV bucket
//!   ([`lease`]), rebuilds its windows from the partials stream and feeds every
//!   replica's counts into one engine. A standby takes the lease when it
//!   expires and rebuilds the same state from the same partials.
//! - Every notification is claimed in a NATS KV bucket with compare-and-set
//!   first ([`ledger`]), so two detectors (a takeover, a split brain) never post
//!   the same change twice.

pub mod clock;
pub mod detector;
pub mod lease;
pub mod ledger;
pub mod partial;
pub mod replica;

/// Errors of the cluster roles.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A stream, consumer or connection.
    #[error(transparent)]
    Nats(#[from] crate::ingest::nats::NatsError),
    /// A KV bucket.
    #[error("NATS KV bucket `{bucket}`: {message}")]
    Kv {
        /// The bucket.
        bucket: String,
        /// Why.
        message: String,
    },
}

/// `call` within `limit`, its error or the timeout as text.
pub(crate) async fn bounded<T, E: std::fmt::Display>(
    limit: std::time::Duration,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// A short random name for this process's life (with the node name, the lease
/// holder and the prefix of message ids).
pub fn boot_id() -> String {
    use rand::Rng as _;
    let n: u64 = rand::thread_rng().gen();
    format!("{n:016x}")
}

/// A KV bucket, created when missing with history 1.
pub(crate) async fn kv_bucket(
    js: &async_nats::jetstream::Context,
    name: &str,
    description: &str,
    max_age: std::time::Duration,
    replicas: usize,
) -> Result<async_nats::jetstream::kv::Store, ClusterError> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    js.create_key_value(async_nats::jetstream::kv::Config {
        bucket: name.into(),
        description: description.into(),
        history: 1,
        max_age,
        num_replicas: replicas.max(1),
        ..Default::default()
    })
    .await
    .map_err(|e| ClusterError::Kv {
        bucket: name.into(),
        message: e.to_string(),
    })
}
