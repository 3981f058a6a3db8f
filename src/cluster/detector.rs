//! The detector role: wait for the lease, then rebuild the windows from the
//! partials stream and run the one engine on every replica's counts.
//!
//! While standby, a replica answers reloads (its counting follows the live
//! rules; the engine is built from them at takeover) and refuses explanations
//! (there are no windows here). On taking the lease it:
//!
//! 1. reads the partials stream from `now - replay span` (the longest rule
//!    window plus warm-up) in batches from an ephemeral consumer, the timer
//!    held until it reaches the stream's end at takeover, so the engine
//!    rebuilds the windows, baselines and open incidents of the former
//!    detector from the same counts (incident ids are a hash of rule, root
//!    cause and opening time, so they come out the same);
//! 2. goes on reading live, time moved by the replicas' flushes
//!    ([`super::clock`]). Every NATS call is bounded; a reader that fails,
//!    skips a sequence or stays silent is replaced by one starting after the
//!    last count read. Every notification is claimed in the [`super::ledger`]
//!    first, so what the former detector notified stays quiet;
//! 3. renews the lease every third of its TTL. A lease it cannot renew ends the
//!    term: [`run`] returns [`Ended::LeaseLost`] and the process exits, for its
//!    supervisor to start it again as a standby (fencing by exit: no state of
//!    the lost term survives).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

use super::clock::CountsClock;
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
    /// How long the clock waits for a silent replica ([`CountsClock`]).
    pub counts_idle: Duration,
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
    // Every NATS call here is bounded well inside the lease's TTL: renewals
    // wait for them, and a stream electing its leader takes seconds.
    let bound = (d.ttl / 3).max(Duration::from_secs(1));
    let mut info = d.partials.clone();
    // Where the replay ends; unknown (the stream did not answer in time),
    // it ends at the first silence of a live reader.
    let end = within(bound, info.info(), "asking where the partials stream ends")
        .await
        .map(|i| i.state.last_sequence);
    let span = chrono::Duration::from_std(d.replay_span).unwrap_or(chrono::Duration::MAX);
    let start_time = chrono::Utc::now()
        .checked_sub_signed(span)
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    let mut reader = open_reader_within(
        d,
        consumer::DeliverPolicy::ByStartTime { start_time },
        bound,
    )
    .await;
    let mut catching_up = true;
    if end == Some(0) {
        catching_up = false;
        catch_up.finish();
    }
    let mut renew = tokio::time::interval(lease.renew_every());
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    renew.tick().await;
    let (mut replayed, started) = (0u64, std::time::Instant::now());
    // The last stream sequence read: a reader that fails, skips or stalls
    // (its server went down) is replaced by one starting after it.
    let mut last_seq = 0u64;
    // A new reader's first message may be anywhere (nothing older is left).
    let mut fresh = true;
    let mut silent_since = std::time::Instant::now();
    let metrics = &d.outputs.metrics;
    let mut clock = CountsClock::new(d.counts_idle);
    let mut lag = LagWatch::default();
    // The batch being fetched: kept across lease renewals, so none is lost.
    let mut in_flight: Option<Fetch> = None;
    let mut reopen_at = tokio::time::Instant::now() + REOPEN_WAIT;
    loop {
        if let Some(now) = clock.now() {
            lag.check(now, !catching_up, d.counts_idle, metrics);
        }
        if in_flight.is_none() {
            in_flight = reader.as_ref().map(|r| fetch(r.clone(), FETCH_WAIT));
        }
        // Without a reader, wait until the next try. A deadline, not a fresh
        // sleep per turn: the renewal timer ends a turn every third of the
        // TTL, and a one-second sleep restarted at each turn never ended with
        // a 3 s TTL (the reader was never reopened; the counts stopped).
        let fetched = async {
            match in_flight.as_mut() {
                Some(f) => f.await,
                None => {
                    tokio::time::sleep_until(reopen_at).await;
                    (Vec::new(), None)
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
            (got, failed) = fetched => {
                in_flight = None;
                if got.is_empty() {
                    tracing::debug!(
                        failed = failed.as_deref().unwrap_or(""),
                        reader = reader.is_some(),
                        last_seq,
                        "no counts fetched"
                    );
                }
                let mut read = 0usize;
                for msg in got {
                    let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
                    if seq != 0 && seq <= last_seq {
                        metrics.counts_read("repeat");
                        continue;
                    }
                    if seq > last_seq + 1 && last_seq != 0 && !fresh {
                        // A batch lost on the way (its server died): read again
                        // from the first missing count.
                        metrics.counts_read("gap");
                        tracing::warn!(after = last_seq, next = seq, "counts skipped on the way; reading them again");
                        reader = None;
                        break;
                    }
                    fresh = false;
                    read += 1;
                    last_seq = last_seq.max(seq);
                    if let Some(p) = decode(&msg.payload, seq, &mut clock, metrics) {
                        if let Some(now) = p.at.and(p.max_ts) {
                            catch_up.limit_clock(now);
                        }
                        if tx.send(p).await.is_err() {
                            return Err(nats_err("engine", &"the engine stopped"));
                        }
                        replayed += catching_up as u64;
                    }
                    if catching_up && end.is_some_and(|end| seq >= end) {
                        catching_up = false;
                        finish_catch_up(tx, catch_up, replayed, started).await;
                    }
                }
                if let Some(e) = failed {
                    tracing::warn!(error = %e, after = last_seq, "reading the counts failed; reading them with a new reader");
                    reader = None;
                }
                if read > 0 {
                    silent_since = std::time::Instant::now();
                    if reader.is_some() {
                        continue;
                    }
                }
                if reader.is_none() && tokio::time::Instant::now() < reopen_at {
                    continue;
                }
                // A live reader with nothing more: whatever the replay had is
                // in. (Without a reader the replay has not started, and the
                // clock stays stopped.)
                if catching_up && reader.is_some() {
                    catching_up = false;
                    finish_catch_up(tx, catch_up, replayed, started).await;
                }
                // Replicas flush every interval, heartbeats included: a long
                // silence is a reader left on a dead server.
                if reader.is_none() || silent_since.elapsed() > READER_SILENCE {
                    if reader.is_some() {
                        tracing::info!(after = last_seq, "counts silent; reading them with a new reader");
                    }
                    silent_since = std::time::Instant::now();
                    let policy = if last_seq == 0 {
                        consumer::DeliverPolicy::ByStartTime { start_time }
                    } else {
                        consumer::DeliverPolicy::ByStartSequence { start_sequence: last_seq + 1 }
                    };
                    reader = open_reader_within(d, policy, bound).await;
                    reopen_at = tokio::time::Instant::now() + REOPEN_WAIT;
                    tracing::debug!(opened = reader.is_some(), after = last_seq, "counts reader opened");
                    fresh = true;
                }
            }
        }
    }
}

/// One counts message, counted by what became of it, its time the replicas'
/// clock ([`CountsClock`]), which it moves: the slowest live replica's flush
/// is what moves the watermark. `None` (warned) when it is not for this build.
fn decode(
    payload: &[u8],
    seq: u64,
    clock: &mut CountsClock,
    metrics: &crate::metrics::Metrics,
) -> Option<Partial> {
    let mut p = match serde_json::from_slice::<Partial>(payload) {
        Ok(p) if p.v == super::partial::VERSION => p,
        Ok(p) => {
            metrics.counts_read("other_version");
            tracing::warn!(version = p.v, "counts of another wire version skipped");
            return None;
        }
        Err(e) => {
            metrics.counts_read("unreadable");
            tracing::warn!(error = %e, seq, "unreadable counts skipped");
            return None;
        }
    };
    if let Some(at) = p.at {
        let heard = std::time::Instant::now();
        p.max_ts = Some(if p.last {
            clock.leave(&p.node, at, heard)
        } else {
            clock.note(&p.node, at, heard)
        });
    }
    metrics.counts_read("fed");
    Some(p)
}

/// How far the detector's clock is behind the wall clock: the metric, and a
/// log line when it falls more than three waits behind and when it is back.
#[derive(Default)]
struct LagWatch {
    told: bool,
}

impl LagWatch {
    /// `now` is the clock; `live` once the replay is done (a replay is behind
    /// by design).
    fn check(&mut self, now: i64, live: bool, idle: Duration, metrics: &crate::metrics::Metrics) {
        let behind = chrono::Utc::now().timestamp_millis().saturating_sub(now);
        let behind = Duration::from_millis(behind.max(0) as u64);
        metrics.set_counts_lag(behind);
        if live && !self.told && behind > 3 * idle {
            self.told = true;
            tracing::warn!(
                behind_ms = behind.as_millis() as u64,
                "the replicas' counts are late; detection waits for them"
            );
        } else if self.told && behind < idle {
            self.told = false;
            tracing::info!("the replicas' counts are on time again");
        }
    }
}

/// How long the counts may stay silent before the reader is replaced.
const READER_SILENCE: Duration = Duration::from_secs(5);
/// The pause between tries at opening a reader.
const REOPEN_WAIT: Duration = Duration::from_millis(500);
/// How long one fetch waits for counts (replicas flush every 500 ms).
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// Counts messages per fetch at most.
const FETCH_MAX: usize = 512;

/// One fetch of counts: what came, and the error that ended it early.
type Fetch = std::pin::Pin<
    Box<dyn std::future::Future<Output = (Vec<jetstream::Message>, Option<String>)> + Send>,
>;

/// Fetches up to [`FETCH_MAX`] counts messages, waiting up to `wait` for
/// them; bounded even when the reader's server is gone.
fn fetch(reader: consumer::PullConsumer, wait: Duration) -> Fetch {
    Box::pin(async move {
        let mut got = Vec::new();
        let run = async {
            let mut batch = reader
                .batch()
                .max_messages(FETCH_MAX)
                .expires(wait)
                .messages()
                .await
                .map_err(|e| e.to_string())?;
            while let Some(m) = batch.next().await {
                got.push(m.map_err(|e| e.to_string())?);
            }
            Ok::<(), String>(())
        };
        let failed = super::bounded(wait + Duration::from_secs(1), run)
            .await
            .err();
        (got, failed)
    })
}

/// [`open_reader`] within `bound`; `None` (warned) when it failed.
async fn open_reader_within(
    d: &Detector,
    policy: consumer::DeliverPolicy,
    bound: Duration,
) -> Option<consumer::PullConsumer> {
    within(bound, open_reader(d, policy), "opening the counts reader").await
}

/// A NATS call bounded by `bound`; `None` (warned, naming `what`) when it
/// failed or took longer.
async fn within<T, E: std::fmt::Display>(
    bound: Duration,
    call: impl std::future::Future<Output = Result<T, E>>,
    what: &str,
) -> Option<T> {
    super::bounded(bound, call)
        .await
        .map_err(|e| tracing::warn!(error = %e, "{what} failed"))
        .ok()
}

/// A reader of the partials stream from `policy`: an ephemeral pull consumer
/// in memory, without acks (the detector tracks the stream sequence itself),
/// that the server drops once unused.
async fn open_reader(
    d: &Detector,
    policy: consumer::DeliverPolicy,
) -> Result<consumer::PullConsumer, ClusterError> {
    d.partials
        .create_consumer(consumer::pull::Config {
            deliver_policy: policy,
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            num_replicas: 1,
            memory_storage: true,
            description: Some(format!("faultline detector {}", d.holder)),
            ..Default::default()
        })
        .await
        .map_err(|e| {
            ClusterError::Nats(crate::ingest::nats::NatsError::Consumer {
                consumer: "partials reader".into(),
                message: e.to_string(),
            })
        })
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
        "detector caught up with the counts; the replicas' clock drives the watermark"
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
