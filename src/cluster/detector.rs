//! The detector role: wait for the lease, then rebuild the windows from the
//! partials stream and run the one engine on every replica's counts.
//!
//! While standby, a replica answers reloads (its counting follows the live
//! rules; the engine is built from them at takeover) and refuses explanations
//! (there are no windows here). On taking the lease it:
//!
//! 1. reads the partials stream from `now - replay span` (the longest rule
//!    window plus warm-up) with an ordered consumer, the wall-clock timer held
//!    until it reaches the stream's end at takeover, so the engine rebuilds the
//!    windows, baselines and open incidents of the former detector from the
//!    same counts (incident ids are a hash of rule, root cause and opening time,
//!    so they come out the same);
//! 2. goes on reading live; every notification is claimed in the
//!    [`super::ledger`] first, so what the former detector notified stays quiet;
//! 3. renews the lease every third of its TTL. A lease it cannot renew ends the
//!    term: [`run`] returns [`Ended::LeaseLost`] and the process exits, for its
//!    supervisor to start it again as a standby (fencing by exit: no state of
//!    the lost term survives).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

use super::lease::{Lease, Renewal};
use super::ledger::Ledger;
use super::partial::Partial;
use super::ClusterError;
use crate::engine::EngineOptions;
use crate::pipeline::{self, CatchUp, Clock, Control, EngineLoop, EngineTap, Outputs};

/// How a detector run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Asked to stop (the process is shutting down); the lease was released.
    Stopped,
    /// The lease was lost while detecting: stop acting as the detector.
    LeaseLost,
}

/// What the detector role needs.
pub struct Detector {
    /// The lease bucket.
    pub lease: kv::Store,
    /// The claims bucket.
    pub claims: kv::Store,
    /// The partials stream.
    pub partials: stream::Stream,
    /// This replica's name.
    pub node: String,
    /// `node/boot`, the lease holder's value.
    pub holder: String,
    /// Lease TTL.
    pub ttl: Duration,
    /// How far back a new detector reads the counts.
    pub replay_span: Duration,
    /// Engine settings.
    pub engine_opts: EngineOptions,
    /// Wall clock in production.
    pub clock: Clock,
    /// Where incidents go (claims added per term).
    pub outputs: Outputs,
    /// Cell steps for ClickHouse.
    pub tap: Option<Arc<dyn EngineTap>>,
    /// Capacity of the channel to the outputs.
    pub transition_capacity: usize,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("node", &self.node)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Standby until the lease is ours, then detect until `stop` or the lease is lost.
pub async fn run(
    d: Detector,
    mut control: mpsc::Receiver<Control>,
    mut stop: watch::Receiver<bool>,
) -> Result<Ended, ClusterError> {
    let metrics = d.outputs.metrics.clone();
    metrics.set_cluster_leader(false);
    let mut tick = tokio::time::interval(d.ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lease = loop {
        tokio::select! {
            _ = stop.changed() => return Ok(Ended::Stopped),
            Some(c) = control.recv() => serve_standby(c, &d.node),
            _ = tick.tick() => match Lease::try_acquire(&d.lease, &d.holder, d.ttl).await {
                Ok(Some(lease)) => break lease,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "trying the detector lease failed"),
            },
        }
        if *stop.borrow() {
            return Ok(Ended::Stopped);
        }
    };
    let term = lease.epoch();
    tracing::info!(term, node = %d.node, "took the detector lease; rebuilding windows from the counts");
    metrics.set_cluster_leader(true);

    let mut outputs = d.outputs.clone();
    outputs.claims = Some(Arc::new(Ledger::new(
        d.claims.clone(),
        term,
        &d.node,
        metrics.clone(),
    )));
    let catch_up = Arc::new(CatchUp::replaying());
    let (tx, rx) = mpsc::channel::<Partial>(1024);
    let (changes_tx, changes_rx) = mpsc::channel(d.transition_capacity);
    let engine = tokio::spawn(
        EngineLoop::new(
            outputs.rules.get(),
            d.engine_opts.clone(),
            d.clock,
            metrics.clone(),
        )
        .catch_up(catch_up.clone())
        .tap(d.tap.clone())
        .control(control)
        .run(rx, changes_tx),
    );
    let notifier = outputs.notifier.clone();
    let sinks = tokio::spawn(pipeline::run_outputs_with(
        changes_rx,
        outputs,
        Arc::new(CatchUp::idle()),
    ));

    let ended = follow(&d, &tx, &catch_up, &mut lease, &mut stop).await;
    drop(tx);
    match ended {
        Ok(Ended::Stopped) => {
            // Everything counted so far is evaluated and notified, then the
            // lease goes, so a standby takes over at once.
            let _ = engine.await;
            let _ = sinks.await;
            notifier.flush().await;
            lease.release().await;
            metrics.set_cluster_leader(false);
            Ok(Ended::Stopped)
        }
        other => {
            // Lost (or failed): nothing more may come from this term.
            engine.abort();
            sinks.abort();
            metrics.set_cluster_leader(false);
            other
        }
    }
}

fn serve_standby(c: Control, node: &str) {
    match c {
        // The engine is built from the live rules when this replica takes
        // over; counting follows them at the next flush.
        Control::Reload { reply, .. } => {
            let _ = reply.send(Default::default());
        }
        Control::Explain { reply, .. } => {
            let _ = reply.send(Err(format!(
                "replica `{node}` is a standby and holds no windows; ask the detector \
                 (the replica whose faultline_cluster_leader is 1)"
            )));
        }
    }
}

/// Reads the counts into the engine: the replay, then live, renewing the lease.
async fn follow(
    d: &Detector,
    tx: &mpsc::Sender<Partial>,
    catch_up: &CatchUp,
    lease: &mut Lease,
    stop: &mut watch::Receiver<bool>,
) -> Result<Ended, ClusterError> {
    let nats_err = |what: &str, e: &dyn std::fmt::Display| {
        ClusterError::Nats(crate::ingest::nats::NatsError::Stream {
            stream: what.to_string(),
            message: e.to_string(),
        })
    };
    let mut info = d.partials.clone();
    let end = info
        .info()
        .await
        .map_err(|e| nats_err("partials", &e))?
        .state
        .last_sequence;
    let span = chrono::Duration::from_std(d.replay_span).unwrap_or(chrono::Duration::MAX);
    let start_time = chrono::Utc::now()
        .checked_sub_signed(span)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    let mut messages =
        Some(open_reader(d, consumer::DeliverPolicy::ByStartTime { start_time }).await?);
    let mut catching_up = true;
    if end == 0 {
        catching_up = false;
        catch_up.finish();
    }
    let mut renew = tokio::time::interval(lease.renew_every());
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    renew.tick().await;
    let (mut replayed, started) = (0u64, std::time::Instant::now());
    // The last stream sequence read: a reader that stalls (its server went
    // down) is replaced by one starting after it.
    let mut last_seq = 0u64;
    let mut silent_since = std::time::Instant::now();
    loop {
        let reader = async {
            match messages.as_mut() {
                Some(m) => tokio::time::timeout(Duration::from_secs(1), m.next())
                    .await
                    .ok(),
                None => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    None
                }
            }
        };
        tokio::select! {
            _ = stop.changed() => return Ok(Ended::Stopped),
            _ = renew.tick() => match lease.renew().await {
                Renewal::Lost => {
                    tracing::error!("lost the detector lease; this replica stops detecting");
                    return Ok(Ended::LeaseLost);
                }
                Renewal::Held | Renewal::Unsure => {}
            },
            next = reader => {
                let msg = match next {
                    Some(Some(Ok(msg))) => msg,
                    Some(Some(Err(e))) => {
                        tracing::warn!(error = %e, "reading the counts interrupted");
                        messages = None;
                        continue;
                    }
                    Some(None) => {
                        messages = None;
                        continue;
                    }
                    None => {
                        // Nothing for a while: whatever the replay had is in.
                        if catching_up {
                            catching_up = false;
                            finish_catch_up(tx, catch_up, replayed, started).await;
                        }
                        // Replicas publish every flush interval while events
                        // flow: a long silence may be a reader left on a dead
                        // server. A new one resumes after the last count read.
                        if messages.is_none() || silent_since.elapsed() > READER_SILENCE {
                            silent_since = std::time::Instant::now();
                            let policy = if last_seq == 0 {
                                consumer::DeliverPolicy::ByStartTime { start_time }
                            } else {
                                consumer::DeliverPolicy::ByStartSequence { start_sequence: last_seq + 1 }
                            };
                            match open_reader(d, policy).await {
                                Ok(m) => messages = Some(m),
                                Err(e) => {
                                    tracing::warn!(error = %e, "reopening the counts reader failed; retrying");
                                    messages = None;
                                }
                            }
                        }
                        continue;
                    }
                };
                silent_since = std::time::Instant::now();
                let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
                if seq != 0 && seq <= last_seq {
                    continue;
                }
                last_seq = last_seq.max(seq);
                match serde_json::from_slice::<Partial>(&msg.payload) {
                    Ok(p) if p.v == super::partial::VERSION => {
                        if tx.send(p).await.is_err() {
                            return Err(nats_err("engine", &"the engine stopped"));
                        }
                        replayed += catching_up as u64;
                    }
                    Ok(p) => tracing::warn!(version = p.v, "counts of another wire version skipped"),
                    Err(e) => tracing::warn!(error = %e, seq, "unreadable counts skipped"),
                }
                if catching_up && seq >= end {
                    catching_up = false;
                    finish_catch_up(tx, catch_up, replayed, started).await;
                }
            }
        }
    }
}

/// How long the counts may stay silent before the reader is replaced.
const READER_SILENCE: Duration = Duration::from_secs(5);

/// An ordered reader of the partials stream from `policy`.
async fn open_reader(
    d: &Detector,
    policy: consumer::DeliverPolicy,
) -> Result<consumer::pull::Ordered, ClusterError> {
    let err = |e: &dyn std::fmt::Display| {
        ClusterError::Nats(crate::ingest::nats::NatsError::Consumer {
            consumer: "partials reader".into(),
            message: e.to_string(),
        })
    };
    let reader = d
        .partials
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: policy,
            ..Default::default()
        })
        .await
        .map_err(|e| err(&e))?;
    reader.messages().await.map_err(|e| err(&e))
}

async fn finish_catch_up(
    tx: &mpsc::Sender<Partial>,
    catch_up: &CatchUp,
    replayed: u64,
    started: std::time::Instant,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while tx.capacity() < tx.max_capacity() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    catch_up.finish();
    tracing::info!(
        messages = replayed,
        ms = started.elapsed().as_millis() as u64,
        "detector caught up with the counts; the wall clock drives the watermark"
    );
}

/// Creates the partials stream if missing.
pub async fn ensure_partials(
    js: &jetstream::Context,
    name: &str,
    subject: &str,
    max_age: Duration,
    replicas: usize,
) -> Result<stream::Stream, ClusterError> {
    js.get_or_create_stream(stream::Config {
        name: name.to_string(),
        subjects: vec![format!("{subject}.>")],
        max_age,
        storage: stream::StorageType::File,
        num_replicas: replicas.max(1),
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(|e| {
        ClusterError::Nats(crate::ingest::nats::NatsError::Stream {
            stream: name.to_string(),
            message: e.to_string(),
        })
    })
}
