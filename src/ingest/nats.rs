//! NATS JetStream ingest (CONTRACT sections 4 and 6).
//!
//! At start, [`NatsSource::connect`] creates the stream if it is missing and the
//! durable pull consumer [`DURABLE`]. [`NatsSource::run`] then:
//!
//! 1. **Rebuilds the windows** from history: an ephemeral consumer replays the
//!    stream from `now - replay_span` (the longest rule window plus the longest
//!    baseline warm-up, capped by what the stream retains) up to its last message
//!    at start. While it replays, the engine's wall-clock timer is held
//!    ([`CatchUp`]), so history is not turned late. Incident changes whose event
//!    time is at or before what the previous run had counted (the newest event
//!    time at or below the durable consumer's ack floor, minus the allowed
//!    lateness) are stored but not notified again: incident ids are a hash of
//!    rule, root cause and opening time, so a replayed incident has the id the
//!    previous run notified.
//! 2. **Consumes live** with the durable consumer, in batches: each message is
//!    validated with [`crate::event::parse`]; a valid event is handed to the
//!    engine channel, a rejected one is re-published to [`DEADLETTER_SUBJECT`]
//!    with the reason in the [`REASON_HEADER`] header; then the message is acked.
//!
//! # Delivery guarantee
//!
//! At least once into the engine, counted once: a message is acked only after
//! its event was handed to the engine channel (or dead-lettered), so a crash
//! before the ack redelivers it, and the engine drops the second copy by event
//! id. A crash after the ack but before the engine counted it loses nothing
//! either, as long as the stream keeps messages (`limits` retention): the next
//! start replays them. Notifications are exactly once for changes at or before
//! the previous run's acked event time, at least once after it (a change the
//! previous run notified from events it had not yet acked is notified again).
//!
//! A message that cannot be handled (the dead-letter publish fails) is not
//! acked, so it is redelivered; after `max_deliver` deliveries the server stops
//! delivering it, and its last delivery is acked whatever happens, so a poison
//! message cannot block the consumer.
//!
//! Publishers may set `Nats-Msg-Id`: the stream drops a repeat within its
//! duplicate window, before faultline sees it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures_util::{FutureExt as _, StreamExt};
use tokio::sync::{mpsc, watch};

use crate::config::{mask_userinfo, NatsRetention, NatsSettings};
use crate::event::{self, Event, Rejection, MAX_EVENT_BYTES};
use crate::metrics::Metrics;
use crate::pipeline::CatchUp;

/// The durable pull consumer's name.
pub const DURABLE: &str = "faultline";
/// Where rejected messages are re-published.
pub const DEADLETTER_SUBJECT: &str = "faultline.deadletter";
/// Header carrying the rejection reason ([`Rejection::reason`]) on dead letters.
pub const REASON_HEADER: &str = "Faultline-Reason";
/// Header carrying the original subject on dead letters.
pub const SUBJECT_HEADER: &str = "Faultline-Subject";
/// Header carrying the original stream sequence on dead letters.
pub const SEQUENCE_HEADER: &str = "Faultline-Stream-Seq";

/// How long one pull request waits for messages.
const FETCH_EXPIRES: Duration = Duration::from_secs(1);
/// How often the consumer lag is measured.
const LAG_EVERY: Duration = Duration::from_secs(1);
/// How long the end of the replay waits for the engine to take the replayed events.
const DRAIN_WAIT: Duration = Duration::from_secs(60);
/// How long the daemon keeps trying to reach NATS at start.
const START_RETRY_FOR: Duration = Duration::from_secs(30);

/// Errors at the NATS boundary. None quotes credentials: URLs are masked.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The server could not be reached.
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect {
        /// The URL, user info masked.
        url: String,
        /// Why.
        message: String,
    },
    /// The stream could not be created or read.
    #[error("JetStream stream `{stream}`: {message}")]
    Stream {
        /// The stream.
        stream: String,
        /// Why.
        message: String,
    },
    /// The consumer could not be created or read.
    #[error("JetStream consumer `{consumer}`: {message}")]
    Consumer {
        /// The consumer.
        consumer: String,
        /// Why.
        message: String,
    },
    /// A publish failed.
    #[error("publishing to `{subject}`: {message}")]
    Publish {
        /// The subject.
        subject: String,
        /// Why.
        message: String,
    },
}

/// Connects to `url` (one server, or a cluster's servers separated by commas),
/// reporting connection state into `metrics` when given.
pub async fn connect(
    url: &str,
    metrics: Option<Arc<Metrics>>,
) -> Result<async_nats::Client, NatsError> {
    let mut opts = async_nats::ConnectOptions::new()
        .name("faultline")
        .connection_timeout(Duration::from_secs(5));
    if let Some(m) = metrics.clone() {
        opts = opts.event_callback(move |ev| {
            let m = m.clone();
            async move {
                match ev {
                    async_nats::Event::Connected => {
                        tracing::info!("NATS connected");
                        m.set_nats_connected(true);
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!("NATS disconnected; reconnecting");
                        m.set_nats_connected(false);
                    }
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            }
        });
    }
    // A cluster is given as a comma-separated list of its servers.
    let servers: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let client = opts
        .connect(servers)
        .await
        .map_err(|e| NatsError::Connect {
            url: mask_userinfo(url),
            message: e.to_string(),
        })?;
    if let Some(m) = metrics {
        m.set_nats_connected(true);
    }
    Ok(client)
}

/// The stream configuration faultline creates when the stream is missing.
pub fn stream_config(settings: &NatsSettings) -> stream::Config {
    stream::Config {
        name: settings.stream.clone(),
        subjects: settings.subjects.clone(),
        max_age: settings.max_age.0,
        retention: match settings.retention {
            NatsRetention::Limits => stream::RetentionPolicy::Limits,
            NatsRetention::Interest => stream::RetentionPolicy::Interest,
            NatsRetention::Workqueue => stream::RetentionPolicy::WorkQueue,
        },
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        ..Default::default()
    }
}

/// Creates the stream when missing and returns it.
pub async fn ensure_stream(
    js: &jetstream::Context,
    settings: &NatsSettings,
) -> Result<stream::Stream, NatsError> {
    js.get_or_create_stream(stream_config(settings))
        .await
        .map_err(|e| NatsError::Stream {
            stream: settings.stream.clone(),
            message: e.to_string(),
        })
}

/// The JetStream source: stream and durable consumer ready, not yet consuming.
pub struct NatsSource {
    client: async_nats::Client,
    stream: stream::Stream,
    consumer: consumer::PullConsumer,
    settings: NatsSettings,
    replay_span: Duration,
    lateness_ms: i64,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for NatsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSource")
            .field("settings", &self.settings)
            .field("replay_span", &self.replay_span)
            .finish_non_exhaustive()
    }
}

impl NatsSource {
    /// Connects, creates the stream if missing and the durable consumer.
    /// `replay_span` is how far back the windows are rebuilt at start.
    pub async fn connect(
        settings: &NatsSettings,
        replay_span: Duration,
        lateness_ms: i64,
        metrics: Arc<Metrics>,
    ) -> Result<NatsSource, NatsError> {
        let url = settings.url.as_deref().ok_or_else(|| NatsError::Connect {
            url: String::new(),
            message: "nats.url is not set".into(),
        })?;
        // A server that is down at start (a deploy racing the NATS pods) is
        // retried with backoff for a while before the daemon gives up.
        let deadline = Instant::now() + START_RETRY_FOR;
        let mut wait = Duration::from_millis(250);
        let (client, stream) = loop {
            let attempt = async {
                let client = connect(url, Some(metrics.clone())).await?;
                let js = jetstream::new(client.clone());
                let stream = ensure_stream(&js, settings).await?;
                Ok::<_, NatsError>((client, stream))
            };
            match attempt.await {
                Ok(ok) => break ok,
                Err(e) if Instant::now() + wait < deadline => {
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "NATS not ready at start; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        };
        let batch = settings.batch_size as i64;
        let consumer = stream
            .get_or_create_consumer(
                DURABLE,
                consumer::pull::Config {
                    durable_name: Some(DURABLE.into()),
                    description: Some("faultline incident detection".into()),
                    // Only consulted when the consumer is created: a first start
                    // on a stream with history counts what the windows need, not
                    // the whole history (which would page about long-past faults).
                    deliver_policy: if replay_span.is_zero() {
                        consumer::DeliverPolicy::All
                    } else {
                        consumer::DeliverPolicy::ByStartTime {
                            start_time: chrono::Utc::now()
                                .checked_sub_signed(
                                    chrono::Duration::from_std(replay_span)
                                        .unwrap_or(chrono::Duration::MAX),
                                )
                                .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC),
                        }
                    },
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(30),
                    max_deliver: settings.max_deliver,
                    max_ack_pending: (batch * 4).max(1000),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| NatsError::Consumer {
                consumer: DURABLE.into(),
                message: e.to_string(),
            })?;
        Ok(NatsSource {
            client,
            stream,
            consumer,
            settings: settings.clone(),
            replay_span,
            lateness_ms,
            metrics,
        })
    }

    /// Rebuilds the windows from the stream, then consumes live until `stop`
    /// turns true; the batch in flight is finished and acked before it returns.
    pub async fn run(
        mut self,
        events: mpsc::Sender<Event>,
        mut stop: watch::Receiver<bool>,
        catch_up: Arc<CatchUp>,
    ) {
        // The replay covers what the durable consumer had delivered before
        // (acked or in flight); the backlog after it comes from the durable
        // consumer itself, still in event time, so each message is read once.
        // Catch-up ends when the durable consumer reaches the stream's last
        // message at start, or finds nothing pending.
        let backlog_end = match self.replay(&events, &catch_up).await {
            Ok(end) => end,
            Err(e) => {
                tracing::error!(error = %e, "rebuilding windows from the stream failed; continuing live");
                None
            }
        };
        let mut catching_up = backlog_end.is_some();
        if !catching_up {
            wait_taken(&events).await;
            catch_up.finish();
        }

        let mut last_lag = Instant::now() - LAG_EVERY;
        // A continuous pull: the client asks for the next batch while this one
        // is being counted, so the bus and the engine overlap.
        let mut messages: Option<consumer::pull::Stream> = None;
        // A message pulled past a full batch, first in the next one.
        let mut deferred = None;
        loop {
            if *stop.borrow() {
                break;
            }
            let live = match messages.as_mut() {
                Some(m) => m,
                None => {
                    let opened = self
                        .consumer
                        .stream()
                        .max_messages_per_batch(self.settings.batch_size)
                        .expires(FETCH_EXPIRES * 5)
                        .heartbeat(FETCH_EXPIRES * 2)
                        .messages()
                        .await;
                    match opened {
                        Ok(m) => messages.insert(m),
                        Err(e) => {
                            tracing::warn!(error = %e, "NATS pull failed; retrying");
                            tokio::select! {
                                _ = stop.changed() => break,
                                _ = tokio::time::sleep(Duration::from_millis(500)) => {},
                            }
                            continue;
                        }
                    }
                }
            };
            let next = match deferred.take() {
                Some(n) => Ok(n),
                None => tokio::select! {
                    _ = stop.changed() => break,
                    n = tokio::time::timeout(FETCH_EXPIRES, live.next()) => n.map_err(|_| ()),
                },
            };
            // `Err`: nothing arrived for a while (the backlog, if any, is done).
            let mut idle = next.is_err();
            // Messages the client already holds join this one: they are parsed,
            // handed to the engine with one reservation and acked together,
            // which saves a wake-up of the engine per message.
            let mut batch = Vec::new();
            let mut next = next;
            while let Ok(Some(Ok(msg))) = next {
                batch.push(msg);
                next = match live.next().now_or_never() {
                    Some(n) if batch.len() < self.settings.batch_size => Ok(n),
                    Some(n) => {
                        // Full: keep the extra message for the next batch.
                        deferred = Some(n);
                        Err(())
                    }
                    None => Err(()),
                };
            }
            if !batch.is_empty() {
                // A message delivered is handed over and acked even when a
                // stop arrives meanwhile.
                let Some(seq) = self.handle_batch(batch, &events).await else {
                    return;
                };
                idle = backlog_end.is_some_and(|end| seq >= end);
            }
            match next {
                Ok(Some(Ok(_))) | Err(_) => {}
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e, "NATS pull interrupted; pulling again");
                    if matches!(
                        e.kind(),
                        consumer::pull::MessagesErrorKind::ConsumerDeleted
                            | consumer::pull::MessagesErrorKind::RequestLimitExceeded
                    ) {
                        messages = None;
                    }
                }
                Ok(None) => messages = None,
            }
            if catching_up && idle {
                catching_up = false;
                wait_taken(&events).await;
                catch_up.finish();
                tracing::info!("caught up with the stream; the wall clock drives the watermark");
            }
            if last_lag.elapsed() >= LAG_EVERY {
                last_lag = Instant::now();
                match self.consumer.info().await {
                    Ok(info) => self.metrics.set_nats_pending(info.num_pending),
                    Err(e) => tracing::debug!(error = %e, "NATS consumer info failed"),
                }
            }
        }
        tracing::info!("NATS ingest stopped");
    }

    /// Live messages, in stream order: valid events handed to the engine,
    /// rejections dead-lettered, then each acked (or, when dead-lettering
    /// failed, nak'ed for redelivery until `max_deliver`). Returns the last
    /// stream sequence, or `None` when the engine channel closed (the messages
    /// stay unacked and are redelivered).
    async fn handle_batch(
        &self,
        msgs: Vec<jetstream::Message>,
        events: &mpsc::Sender<Event>,
    ) -> Option<u64> {
        let mut parsed = Vec::with_capacity(msgs.len());
        let mut nak = vec![false; msgs.len()];
        let mut last = 0;
        for (i, msg) in msgs.iter().enumerate() {
            self.metrics.event_received();
            let (seq, delivered) = match msg.info() {
                Ok(info) => (info.stream_sequence, info.delivered),
                Err(_) => (0, 1),
            };
            last = last.max(seq);
            match event::parse(&msg.payload) {
                Ok(ev) => parsed.push(ev),
                Err(rej) => {
                    let reason = rej.reason();
                    self.metrics.event_rejected(&reason);
                    if let Err(e) = self.dead_letter(msg, rej, seq).await {
                        tracing::warn!(error = %e, seq, "dead-lettering failed");
                        if delivered < self.settings.max_deliver {
                            nak[i] = true;
                        } else {
                            tracing::error!(seq, reason = %reason, "giving up on a message after max_deliver deliveries");
                        }
                    }
                }
            }
        }
        // One reservation per channel-full of events, not a send per event.
        let mut parsed = parsed.into_iter();
        loop {
            let n = parsed.len().min(events.max_capacity());
            if n == 0 {
                break;
            }
            let permits = events.reserve_many(n).await.ok()?;
            for (permit, ev) in permits.zip(parsed.by_ref()) {
                permit.send(ev);
            }
        }
        for (msg, nak) in msgs.iter().zip(nak) {
            let acked = if nak {
                msg.ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(1))))
                    .await
            } else {
                msg.ack().await
            };
            if let Err(e) = acked {
                tracing::warn!(error = %e, "NATS ack failed; the message will be redelivered");
            }
        }
        Some(last)
    }

    async fn dead_letter(
        &self,
        msg: &jetstream::Message,
        rej: Rejection,
        seq: u64,
    ) -> Result<(), NatsError> {
        dead_letter(&self.client, &self.settings.stream, msg, rej, seq).await
    }

    /// Replays `now - replay_span` .. the last message the durable consumer had
    /// delivered (acked or in flight when the previous run stopped) into the
    /// engine, marking what the previous run had acked as already notified.
    ///
    /// Returns the stream's last sequence at start when there is a backlog
    /// after that for the durable consumer to deliver (the caller stays in
    /// catch-up until it gets there), `None` when there is none.
    async fn replay(
        &mut self,
        events: &mpsc::Sender<Event>,
        catch_up: &CatchUp,
    ) -> Result<Option<u64>, NatsError> {
        let stream_err = |e: &dyn std::fmt::Display| NatsError::Stream {
            stream: self.settings.stream.clone(),
            message: e.to_string(),
        };
        let info = self.stream.get_info().await.map_err(|e| stream_err(&e))?;
        let last = info.state.last_sequence;
        if last == 0 || info.state.messages == 0 {
            return Ok(None);
        }
        let consumer = self
            .consumer
            .info()
            .await
            .map_err(|e| NatsError::Consumer {
                consumer: DURABLE.into(),
                message: e.to_string(),
            })?;
        let acked = consumer.ack_floor.stream_sequence;
        let delivered = consumer.delivered.stream_sequence.min(last);
        let backlog = (consumer.num_pending > 0).then_some(last);
        let end = delivered;
        if end == 0 || self.replay_span.is_zero() {
            return Ok(backlog);
        }
        let span = chrono::Duration::from_std(self.replay_span).unwrap_or(chrono::Duration::MAX);
        let start_time = chrono::Utc::now()
            .checked_sub_signed(span)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
        let replayer = self
            .stream
            .create_consumer(consumer::pull::Config {
                deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time },
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(60),
                ..Default::default()
            })
            .await
            .map_err(|e| NatsError::Consumer {
                consumer: "replay".into(),
                message: e.to_string(),
            })?;
        let started = Instant::now();
        let (mut replayed, mut quiet) = (0u64, 0u64);
        'outer: loop {
            let mut batch = replayer
                .fetch()
                .max_messages(self.settings.batch_size)
                .expires(FETCH_EXPIRES)
                .messages()
                .await
                .map_err(|e| stream_err(&e))?;
            let mut got = 0usize;
            while let Some(msg) = batch.next().await {
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "replay fetch interrupted");
                        break;
                    }
                };
                got += 1;
                let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
                if seq > end {
                    break 'outer;
                }
                // Rejections were dead-lettered when first consumed (or will be
                // by the durable consumer): nothing to do for them here.
                if let Ok(ev) = event::parse(&msg.payload) {
                    if seq <= acked {
                        // Set before the event is handed over, so the changes it
                        // causes are already known to be quiet.
                        catch_up.quiet_until(ev.ts_ms.saturating_sub(self.lateness_ms));
                        quiet += 1;
                    }
                    replayed += 1;
                    if events.send(ev).await.is_err() {
                        break 'outer;
                    }
                }
                if seq >= end {
                    break 'outer;
                }
            }
            if got == 0 {
                break;
            }
        }
        let _ = self
            .stream
            .delete_consumer(replayer.cached_info().name.as_str())
            .await;
        tracing::info!(
            replayed,
            already_counted = quiet,
            seconds = started.elapsed().as_secs_f64(),
            "windows rebuilt from the stream"
        );
        Ok(backlog)
    }
}

/// Re-publishes a rejected message with its reason. The payload is never the
/// raw bytes (CONTRACT: card data never reaches NATS, and raw JSON can hide a
/// card number in escapes the scanner would have to guess at): it is
/// [`dead_letter_body`], built from the parsed, redacted message. The subject
/// header is redacted too; the original stays in `stream` at the sequence given.
pub(crate) async fn dead_letter(
    client: &async_nats::Client,
    stream: &str,
    msg: &jetstream::Message,
    rej: Rejection,
    seq: u64,
) -> Result<(), NatsError> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(REASON_HEADER, rej.reason().as_ref());
    headers.insert(
        SUBJECT_HEADER,
        crate::redact::redact_all(msg.subject.as_str()).as_ref(),
    );
    headers.insert(SEQUENCE_HEADER, seq.to_string().as_str());
    headers.insert("Faultline-Stream", stream);
    let payload = dead_letter_body(&msg.payload, rej);
    client
        .publish_with_headers(DEADLETTER_SUBJECT, headers, payload.into())
        .await
        .map_err(|e| NatsError::Publish {
            subject: DEADLETTER_SUBJECT.into(),
            message: e.to_string(),
        })
}

/// A dead letter's body: `{"reason": "...", "event": ...}`, where `event` is
/// the message parsed as JSON with every string, key and number redacted
/// ([`crate::redact::scrub_json`]) and every value holding a run of 13 or more
/// digits withheld; `null` when the message is oversized or not JSON. The
/// parse is what decodes `\u00a0` and its kin, so the redaction sees the text
/// a consumer of the dead letter would see.
pub fn dead_letter_body(payload: &[u8], rej: Rejection) -> Vec<u8> {
    let event = if payload.len() > MAX_EVENT_BYTES {
        serde_json::Value::Null
    } else {
        serde_json::from_slice::<serde_json::Value>(payload)
            .map(|mut v| {
                // Whatever `bin` held is never shown when it was refused.
                if matches!(
                    rej,
                    Rejection::CardNumberInBin | Rejection::Invalid(event::Field::Bin)
                ) {
                    if let Some(map) = v.as_object_mut() {
                        map.remove("bin");
                    }
                }
                withhold_long_digit_runs(&mut v);
                crate::redact::scrub_json(&mut v);
                v
            })
            .unwrap_or(serde_json::Value::Null)
    };
    let body = serde_json::json!({"reason": rej.reason(), "event": event});
    body.to_string().into_bytes()
}

/// Replaces every string holding a run of 13 or more digits (a `bin` of 16
/// digits failing Luhn is still a card number by the contract) and every such
/// number with [`crate::redact::ALL_MASK`].
fn withhold_long_digit_runs(v: &mut serde_json::Value) {
    use serde_json::Value;
    let long = match v {
        Value::String(s) => crate::redact::has_long_digit_run(s),
        Value::Number(n) => crate::redact::has_long_digit_run(&n.to_string()),
        Value::Array(items) => {
            items.iter_mut().for_each(withhold_long_digit_runs);
            false
        }
        Value::Object(map) => {
            map.retain(|k, _| !crate::redact::has_long_digit_run(k));
            map.values_mut().for_each(withhold_long_digit_runs);
            false
        }
        Value::Null | Value::Bool(_) => false,
    };
    if long {
        *v = Value::String(crate::redact::ALL_MASK.into());
    }
}

/// Waits (bounded) until the engine took every event sent so far: once the
/// channel is empty, the engine holds the last of them in the batch it is
/// counting, which it finishes before its timer can fire again.
async fn wait_taken(events: &mpsc::Sender<Event>) {
    let deadline = Instant::now() + DRAIN_WAIT;
    while events.capacity() < events.max_capacity() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `faultline load`: publishes a generated, labelled scenario to the stream,
/// for demos and load tests.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// NATS server.
    #[arg(long, env = "FAULTLINE_NATS_URL")]
    pub nats: String,
    /// Stream, created with the default subjects (`payments.>`) if missing.
    #[arg(long, env = "FAULTLINE_NATS_STREAM", default_value = "PAYMENTS")]
    pub stream: String,
    /// Subject to publish on (must be one of the stream's).
    #[arg(long, default_value = "payments.events")]
    pub subject: String,
    /// Scenario seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Scenario length in event time, e.g. `3h`, `55m`.
    #[arg(long, default_value = "1h")]
    pub duration: String,
    /// Mean events per second of event time in the scenario.
    #[arg(long, default_value_t = 200.0)]
    pub events_per_sec: f64,
    /// Event time of the first event, RFC 3339, or `now` for a scenario that
    /// ends now (what `faultline run` on the wall clock expects).
    #[arg(long, default_value = "now")]
    pub start: String,
    /// Messages per second to publish at most; 0: as fast as the server acks.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Live traffic: the scenario starts now and each event is published when
    /// its arrival time comes (wall clock), for soak tests and live demos.
    #[arg(long, conflicts_with_all = ["start", "rate"])]
    pub live: bool,
}

/// Runs `faultline load`; prints a one-line JSON report to stderr.
pub async fn load_command(args: &LoadArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let duration = crate::rules::parse_duration(&args.duration)
        .context("--duration: use a duration like 55m or 3h")?;
    let duration_ms = i64::try_from(duration.as_millis()).context("--duration too long")?;
    let start_ms = if args.live {
        chrono::Utc::now().timestamp_millis()
    } else if args.start == "now" {
        chrono::Utc::now().timestamp_millis() - duration_ms
    } else {
        chrono::DateTime::parse_from_rfc3339(&args.start)
            .context("--start: RFC 3339 or `now`")?
            .timestamp_millis()
    };
    let scenario =
        crate::ingest::generator::Scenario::standard(args.seed, duration_ms, args.events_per_sec)
            .starting_at(start_ms);
    let generator = crate::ingest::generator::Generator::new(&scenario)?;
    let client = connect(&args.nats, None).await?;
    let js = jetstream::new(client);
    let settings = NatsSettings {
        url: Some(args.nats.clone()),
        stream: args.stream.clone(),
        ..NatsSettings::default()
    };
    ensure_stream(&js, &settings).await?;
    let started = Instant::now();
    let per_msg = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    let mut sent = 0u64;
    let mut acks = Vec::with_capacity(1000);
    for line in generator {
        if args.live {
            let due = Duration::from_millis(line.arrival_ms.saturating_sub(start_ms).max(0) as u64);
            tokio::time::sleep_until((started + due).into()).await;
        } else if let Some(d) = per_msg {
            tokio::time::sleep_until((started + d.mul_f64(sent as f64)).into()).await;
        }
        let ack = js
            .publish(args.subject.clone(), line.text.into_bytes().into())
            .await
            .context("publish")?;
        acks.push(ack);
        sent += 1;
        if acks.len() == 1000 {
            for a in acks.drain(..) {
                a.await.context("publish ack")?;
            }
        }
    }
    for a in acks.drain(..) {
        a.await.context("publish ack")?;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{}",
        serde_json::json!({
            "published": sent,
            "seconds": secs,
            "per_second": sent as f64 / secs.max(1e-9),
            "faults": scenario.labels().faults.len(),
        })
    );
    Ok(())
}
