//! A replica's share of the ingest: the shared durable consumer, counting, and
//! publishing the counts before acking the events.
//!
//! Every replica pulls from the same durable consumer ([`DURABLE`]), so the
//! server hands each event to one of them. A replica validates and counts its
//! events ([`PreAggregator`]), holds their acks, and every
//! `cluster.flush_interval` publishes what it counted on
//! `<partials_subject>.<node>` (JetStream, with a `Nats-Msg-Id`, awaiting the
//! stream's ack) and only then acks the events it covered. So:
//!
//! - a replica killed before it published: its events were never acked and the
//!   server redelivers them (after `cluster.ack_wait`) to the replicas left;
//! - a replica killed after it published but before every ack went out: those
//!   events are redelivered and counted a second time (the window between
//!   publish and acks is one round trip; counted, not lost);
//! - a publish that fails (the stream is electing a leader): the counts wait
//!   in an outbox and go out, in order and with the same message ids, at the
//!   next flushes; their events stay held (marked in progress) until then;
//! - a replica stopping with counts still in its outbox: their events were
//!   never acked and are counted elsewhere.
//!
//! Events posted over HTTP to a replica are counted the same way (no ack to hold).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures_util::{FutureExt as _, StreamExt};
use tokio::sync::{mpsc, watch};

use super::partial::{PreAggregator, MAX_CELLS_PER_MESSAGE};
use super::ClusterError;
use crate::config::Settings;
use crate::event::{self, Event};
use crate::metrics::Metrics;
use crate::pipeline::EngineTap;
use crate::reload::LiveRules;

/// The durable consumer every replica shares.
pub const DURABLE: &str = "faultline-replicas";
/// Counts messages kept for retry at most (at a 500 ms flush, minutes of a
/// stream without a leader); beyond, the oldest are dropped.
const MAX_OUTBOX: usize = 1_000;
/// How long one try waits for the stream's ack.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// One replica's ingest.
pub struct Replica {
    client: async_nats::Client,
    js: jetstream::Context,
    consumer: consumer::PullConsumer,
    stream: String,
    subject: String,
    flush_every: Duration,
    batch_size: usize,
    max_deliver: i64,
    agg: PreAggregator,
    rules: Arc<LiveRules>,
    metrics: Arc<Metrics>,
    tap: Option<Arc<dyn EngineTap>>,
    /// `node-boot`: with the flush number, the `Nats-Msg-Id` of each message.
    msg_id_prefix: String,
    /// Encoded counts not yet stored in the stream, with their message ids.
    outbox: std::collections::VecDeque<(String, bytes::Bytes)>,
    /// Since when publishing fails (counts waiting in the outbox).
    failing_since: Option<Instant>,
    /// When the held events were last marked in progress.
    last_progress: Option<Instant>,
    ack_wait: Duration,
    /// Stopping: the last flush tells the detector not to wait for more.
    leaving: bool,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("subject", &self.subject)
            .field("agg", &self.agg)
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// Binds the shared durable consumer on the events stream (created if
    /// missing).
    pub async fn new(
        client: async_nats::Client,
        settings: &Settings,
        node: &str,
        boot: &str,
        rules: Arc<LiveRules>,
        metrics: Arc<Metrics>,
        tap: Option<Arc<dyn EngineTap>>,
    ) -> Result<Replica, ClusterError> {
        let js = jetstream::new(client.clone());
        let stream = crate::ingest::nats::ensure_stream(&js, &settings.nats).await?;
        let c = &settings.cluster;
        let flush_events = (settings.nats.batch_size as i64).max(1000);
        let consumer = stream
            .get_or_create_consumer(
                DURABLE,
                consumer::pull::Config {
                    durable_name: Some(DURABLE.into()),
                    description: Some("faultline replicas, each counting a share".into()),
                    // A new cluster starts with what is published from now on
                    // (no replica rebuilds windows from events: the detector
                    // rebuilds from the counts).
                    deliver_policy: consumer::DeliverPolicy::New,
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: c.ack_wait.0,
                    max_deliver: settings.nats.max_deliver,
                    // Acks are held for a flush interval: room for a few
                    // intervals at a high rate on every replica.
                    max_ack_pending: (flush_events * 200).max(200_000),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| {
                ClusterError::Nats(crate::ingest::nats::NatsError::Consumer {
                    consumer: DURABLE.into(),
                    message: e.to_string(),
                })
            })?;
        let live = rules.get();
        Ok(Replica {
            client,
            js,
            consumer,
            stream: settings.nats.stream.clone(),
            subject: format!("{}.{node}", c.partials_subject),
            flush_every: c.flush_interval.0,
            batch_size: settings.nats.batch_size.max(1),
            max_deliver: settings.nats.max_deliver,
            agg: PreAggregator::new(live, node, settings.engine.dedupe_horizon.ms()),
            rules,
            metrics,
            tap,
            msg_id_prefix: format!("{node}-{boot}"),
            outbox: Default::default(),
            failing_since: None,
            last_progress: None,
            ack_wait: c.ack_wait.0,
            leaving: false,
        })
    }

    /// Counts events from the stream and from `http` until `stop`, publishing
    /// every flush interval; publishes once more before it returns.
    pub async fn run(mut self, mut http: mpsc::Receiver<Event>, mut stop: watch::Receiver<bool>) {
        let mut held: Vec<jetstream::Message> = Vec::new();
        let mut flush = tokio::time::interval(self.flush_every);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut messages: Option<consumer::pull::Stream> = None;
        let mut last_lag = Instant::now();
        let mut http_open = true;
        let mut parsed = Vec::new();
        loop {
            if *stop.borrow() {
                break;
            }
            let live = match messages.as_mut() {
                Some(m) => m,
                None => match self
                    .consumer
                    .stream()
                    .max_messages_per_batch(self.batch_size)
                    .expires(Duration::from_secs(5))
                    .heartbeat(Duration::from_secs(2))
                    .messages()
                    .await
                {
                    Ok(m) => messages.insert(m),
                    Err(e) => {
                        tracing::warn!(error = %e, "NATS pull failed; retrying");
                        tokio::select! {
                            _ = stop.changed() => break,
                            _ = tokio::time::sleep(Duration::from_millis(500)) => {},
                        }
                        continue;
                    }
                },
            };
            tokio::select! {
                _ = stop.changed() => break,
                _ = flush.tick() => {
                    self.flush(&mut held).await;
                    if last_lag.elapsed() >= Duration::from_secs(1) {
                        last_lag = Instant::now();
                        if let Ok(info) = self.consumer.info().await {
                            self.metrics.set_nats_pending(info.num_pending);
                        }
                    }
                }
                ev = http.recv(), if http_open => match ev {
                    Some(ev) => self.count(ev, now_ms(), &mut parsed),
                    None => http_open = false,
                },
                next = live.next() => {
                    let mut next = next;
                    let mut n = 0;
                    // One clock read per batch, not per event.
                    let now = now_ms();
                    // Messages the client already holds join this one.
                    loop {
                        match next {
                            Some(Ok(msg)) => {
                                self.take_message(msg, now, &mut held, &mut parsed).await;
                                n += 1;
                            }
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "NATS pull interrupted; pulling again");
                                if matches!(
                                    e.kind(),
                                    consumer::pull::MessagesErrorKind::ConsumerDeleted
                                        | consumer::pull::MessagesErrorKind::RequestLimitExceeded
                                ) {
                                    messages = None;
                                }
                                break;
                            }
                            None => {
                                messages = None;
                                break;
                            }
                        }
                        if n >= self.batch_size {
                            break;
                        }
                        let Some(live) = messages.as_mut() else { break };
                        match live.next().now_or_never() {
                            Some(m) => next = m,
                            None => break,
                        }
                    }
                    if let Some(tap) = &self.tap {
                        if !parsed.is_empty() {
                            tap.events(&parsed, false);
                        }
                    }
                    parsed.clear();
                }
            }
        }
        // What was counted goes out (and its events are acked) before the exit.
        let now = now_ms();
        while let Ok(ev) = http.try_recv() {
            self.count(ev, now, &mut parsed);
        }
        self.leaving = true;
        self.flush(&mut held).await;
        tracing::info!("replica ingest stopped");
    }

    /// Counts one event; `now` is the wall clock of its batch, epoch ms.
    fn count(&mut self, ev: Event, now: i64, parsed: &mut Vec<Event>) {
        // As the single-process engine loop does on the wall clock: one event
        // stamped far ahead would drag the detector's watermark along.
        if ev.ts_ms > now + crate::pipeline::MAX_FUTURE_MS {
            self.metrics.event_rejected("future_ts");
            return;
        }
        match self.agg.add(&ev) {
            Ok(()) => {
                if self.tap.is_some() {
                    parsed.push(ev);
                }
            }
            Err(_) => self.metrics.event_duplicate(),
        }
    }

    async fn take_message(
        &mut self,
        msg: jetstream::Message,
        now: i64,
        held: &mut Vec<jetstream::Message>,
        parsed: &mut Vec<Event>,
    ) {
        self.metrics.event_received();
        match event::parse(&msg.payload) {
            Ok(ev) => {
                self.count(ev, now, parsed);
                held.push(msg);
            }
            Err(rej) => {
                let reason = rej.reason();
                self.metrics.event_rejected(&reason);
                let (seq, delivered) = match msg.info() {
                    Ok(info) => (info.stream_sequence, info.delivered),
                    Err(_) => (0, 1),
                };
                let acked = match crate::ingest::nats::dead_letter(
                    &self.client,
                    &self.stream,
                    &msg,
                    rej,
                    seq,
                )
                .await
                {
                    Ok(()) => msg.ack().await,
                    Err(e) if delivered < self.max_deliver => {
                        tracing::warn!(error = %e, seq, "dead-lettering failed");
                        msg.ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(1))))
                            .await
                    }
                    Err(e) => {
                        tracing::error!(error = %e, seq, "giving up on a message after max_deliver deliveries");
                        msg.ack().await
                    }
                };
                if let Err(e) = acked {
                    tracing::warn!(error = %e, "NATS ack failed; the message will be redelivered");
                }
            }
        }
    }

    /// Publishes what was counted, then acks the events it covers.
    ///
    /// Counts that cannot be stored (the stream has no leader for a few
    /// seconds while a NATS node dies) stay in the outbox, oldest first, and
    /// are retried at the next flush with the same message ids; their events
    /// stay held, the server told they are in progress so it does not hand
    /// them to another replica meanwhile. Dropping the counts instead would
    /// lose them: a redelivered event comes back to this replica's dedupe.
    async fn flush(&mut self, held: &mut Vec<jetstream::Message>) {
        let live = self.rules.get();
        let rules_changed = !Arc::ptr_eq(&live, self.agg.rules());
        // Every flush goes out, a heartbeat when nothing was counted: its
        // time moves the detector's clock (`super::clock`).
        let mut partial = self.agg.take();
        partial.at = Some(now_ms());
        partial.last = self.leaving;
        let seq = partial.seq;
        for (i, part) in partial.split(MAX_CELLS_PER_MESSAGE).into_iter().enumerate() {
            match serde_json::to_vec(&part) {
                Ok(body) => self.outbox.push_back((
                    format!("{}-{seq}-{i}", self.msg_id_prefix),
                    bytes::Bytes::from(body),
                )),
                Err(e) => tracing::error!(error = %e, "encoding counts failed"),
            }
        }
        if rules_changed {
            self.agg.set_rules(live);
        }
        if self.outbox.len() > MAX_OUTBOX {
            let dropped = self.outbox.len() - MAX_OUTBOX;
            self.outbox.drain(..dropped);
            tracing::error!(
                messages = dropped,
                "the partials stream refused counts for too long; the oldest are dropped"
            );
        }
        while let Some((id, body)) = self.outbox.front() {
            match self.publish(id, body.clone()).await {
                Ok(()) => {
                    self.metrics.partial_published();
                    self.outbox.pop_front();
                }
                Err(e) => {
                    if self.failing_since.is_none() {
                        self.failing_since = Some(Instant::now());
                        tracing::warn!(error = %e, "publishing counts failed; retrying them at every flush");
                    }
                    break;
                }
            }
        }
        if let Some(since) = self.failing_since {
            if !self.outbox.is_empty() {
                // Keep the server from redelivering the held events elsewhere.
                let due = self
                    .last_progress
                    .is_none_or(|t| t.elapsed() >= self.ack_wait / 3);
                if due {
                    self.last_progress = Some(Instant::now());
                    for msg in held.iter() {
                        let _ = msg.ack_with(jetstream::AckKind::Progress).await;
                    }
                }
                return;
            }
            tracing::info!(
                after_ms = since.elapsed().as_millis() as u64,
                "counts published again"
            );
            self.failing_since = None;
            self.last_progress = None;
        }
        for msg in held.drain(..) {
            self.metrics.event_accepted();
            if let Err(e) = msg.ack().await {
                tracing::warn!(error = %e, "NATS ack failed; the event will be redelivered");
            }
        }
    }

    /// One try at storing a counts message, awaiting the stream's ack. Retries
    /// reuse the id: the stream keeps one copy whichever try landed.
    async fn publish(&self, id: &str, body: bytes::Bytes) -> Result<(), String> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        let sent = async {
            self.js
                .publish_with_headers(self.subject.clone(), headers, body)
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        };
        super::bounded(PUBLISH_TIMEOUT, sent).await.map(drop)
    }
}
