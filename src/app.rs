//! Building and running the daemon: `faultline run` and `faultline demo`.
//!
//! [`App::build`] wires the stages from settings (each integration embedded
//! unless configured) and binds the listener, so tests can use port 0 and ask
//! [`App::port`]. [`App::run_until`] runs until a shutdown future completes, then
//! stops intake, lets the engine and outputs drain, and returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;

use crate::api::{self, AppState};
use crate::config::Settings;
use crate::engine::EngineOptions;
use crate::event::Event;
use crate::ingest::nats::NatsSource;
use crate::metrics::Metrics;
use crate::notify::{Notifier, SlackNotifier, StdoutNotifier};
use crate::pipeline::{self, CatchUp, Clock, EngineHandle, EngineLoop, Outputs};
use crate::reload::{LiveRules, Reloader};
use crate::rules::RuleSet;
use crate::store::clickhouse::ClickHouseStore;
use crate::store::{MemoryLimits, MemoryStore, Store};
use crate::summarize::llm::LlmSummarizer;
use crate::summarize::{Summarizer, TemplateSummarizer};

/// How long shutdown waits for the engine and outputs to drain.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// A built daemon, listener bound, not yet running.
pub struct App {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    state: AppState,
    events_rx: mpsc::Receiver<Event>,
    outputs: Outputs,
    engine_opts: EngineOptions,
    clock: Clock,
    transition_capacity: usize,
    /// JetStream ingest beside HTTP, when `nats.url` is set.
    nats: Option<NatsSource>,
    catch_up: Arc<CatchUp>,
    /// The ClickHouse store, when configured (also the store in `outputs`).
    clickhouse: Option<Arc<ClickHouseStore>>,
    /// Where LLM and Slack calls are audited.
    audit: Arc<dyn crate::audit::Audit>,
    /// Requests into the engine loop (reloads, live explanations).
    control: mpsc::Receiver<pipeline::Control>,
    engine: EngineHandle,
    /// Watches the rules folder, when the rules came from one.
    reloader: Option<(Arc<Reloader>, Duration)>,
    /// This replica's roles, when `cluster.enabled` (then `nats` is unset).
    cluster: Option<ClusterParts>,
}

/// A cluster replica's ingest and what its detector role needs.
struct ClusterParts {
    replica: crate::cluster::replica::Replica,
    lease: async_nats::jetstream::kv::Store,
    claims: async_nats::jetstream::kv::Store,
    partials: async_nats::jetstream::stream::Stream,
    node: String,
    holder: String,
    ttl: Duration,
    replay_span: Duration,
    counts_idle: Duration,
}

/// Connects to the cluster's NATS (retrying a server that is not up yet) and
/// creates what is missing: the partials stream, the lease and claims buckets,
/// the shared consumer.
async fn cluster_parts(
    settings: &Settings,
    span_ms: i64,
    rules: Arc<LiveRules>,
    metrics: Arc<Metrics>,
    tap: Option<Arc<dyn pipeline::EngineTap>>,
) -> anyhow::Result<ClusterParts> {
    let url = settings.nats.url.as_deref().unwrap_or_default();
    let c = &settings.cluster;
    let node = c.node_name();
    let boot = crate::cluster::boot_id();
    // NATS may be down at start (a deploy racing its pods), and a cluster just
    // started has no JetStream meta leader for a few seconds: the whole set-up
    // is retried with backoff for a minute.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut wait = Duration::from_millis(250);
    let replicas = settings.nats.replicas;
    let (partials, lease, claims, replica) = loop {
        let attempt = async {
            let client = crate::ingest::nats::connect(url, Some(metrics.clone())).await?;
            let js = async_nats::jetstream::new(client.clone());
            let partials = crate::cluster::detector::ensure_partials(
                &js,
                &c.partials_stream,
                &c.partials_subject,
                c.partials_max_age.0,
                replicas,
            )
            .await?;
            let lease = crate::cluster::lease::bucket(&js, c.lease_ttl.0, replicas).await?;
            let claims = crate::cluster::ledger::bucket(&js, replicas).await?;
            let replica = crate::cluster::replica::Replica::new(
                client,
                settings,
                &node,
                &boot,
                rules.clone(),
                metrics.clone(),
                tap.clone(),
            )
            .await?;
            Ok::<_, crate::cluster::ClusterError>((partials, lease, claims, replica))
        };
        match attempt.await {
            Ok(parts) => break parts,
            Err(e) if std::time::Instant::now() + wait < deadline => {
                tracing::warn!(error = %e, "NATS or JetStream not ready at start; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    };
    tracing::info!(%node, "cluster replica ready");
    Ok(ClusterParts {
        replica,
        lease,
        claims,
        partials,
        holder: format!("{node}/{boot}"),
        node,
        ttl: c.lease_ttl.0,
        replay_span: Duration::from_millis(span_ms.min(c.partials_max_age.ms()).max(0) as u64),
        // A silent replica's unacknowledged events come back to the others
        // after the ack wait and are counted at their next flush.
        counts_idle: c.ack_wait.0 + 2 * c.flush_interval.0,
    })
}

impl App {
    /// Wires the stages from `settings` and binds `settings.listen`.
    pub async fn build(settings: &Settings, rules: RuleSet, clock: Clock) -> anyhow::Result<App> {
        Self::build_inner(settings, rules, clock, None).await
    }

    /// [`App::build`] with a given notifier (tests capture what is posted).
    pub async fn build_with(
        settings: &Settings,
        rules: RuleSet,
        clock: Clock,
        notifier: Arc<dyn Notifier>,
    ) -> anyhow::Result<App> {
        Self::build_inner(settings, rules, clock, Some(notifier)).await
    }

    /// Wires the stages; without a given notifier, Slack when configured and
    /// stdout otherwise.
    async fn build_inner(
        settings: &Settings,
        rules: RuleSet,
        clock: Clock,
        notifier: Option<Arc<dyn Notifier>>,
    ) -> anyhow::Result<App> {
        let rules = rules.with_explain(&explain_of(settings));
        let metrics = Arc::new(Metrics::new());
        // ClickHouse when configured: an unreachable server at start is an
        // error (see `store::clickhouse`); outages later are ridden out.
        let clickhouse = if settings.clickhouse.enabled() {
            Some(
                ClickHouseStore::connect(
                    &settings.clickhouse,
                    MemoryLimits::from(&settings.store),
                    metrics.clone(),
                )
                .await
                .context("ClickHouse store (FAULTLINE_CLICKHOUSE_URL)")?,
            )
        } else {
            None
        };
        let store: Arc<dyn Store> = match &clickhouse {
            Some(ch) => ch.clone(),
            None => Arc::new(MemoryStore::new(MemoryLimits::from(&settings.store))),
        };
        // Every LLM and Slack call is audited: in ClickHouse when configured.
        let audit: Arc<dyn crate::audit::Audit> = match &clickhouse {
            Some(ch) => ch.audit(),
            None => Arc::new(crate::audit::MemoryAudit::default()),
        };
        let summarizer: Arc<dyn Summarizer> = if settings.llm.enabled() {
            let llm = LlmSummarizer::new(&settings.llm, audit.clone(), metrics.clone())
                .context("LLM summaries")?;
            tracing::info!(prompt_version = %llm.prompt_version(), "LLM summaries on");
            Arc::new(llm)
        } else {
            Arc::new(TemplateSummarizer)
        };
        let notifier: Arc<dyn Notifier> = match notifier {
            Some(n) => n,
            None if settings.slack.enabled() => Arc::new(
                SlackNotifier::new(
                    &settings.slack,
                    &rules,
                    store.clone(),
                    metrics.clone(),
                    audit.clone(),
                )
                .context("Slack notifier")?,
            ),
            None => Arc::new(StdoutNotifier::new()),
        };
        let (events_tx, events_rx) = mpsc::channel(settings.engine.event_channel_capacity.max(1));
        let (engine, control) = EngineHandle::channel();
        let rules = Arc::new(LiveRules::new(rules));
        let state = AppState::new(settings, store.clone(), events_tx, metrics.clone())
            .with_notifier(notifier.clone())
            .with_engine(engine.clone(), rules.clone());
        let listener = tokio::net::TcpListener::bind(&settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let addr = listener.local_addr()?;
        let engine_opts = EngineOptions {
            lateness_ms: settings.engine.allowed_lateness.ms(),
            dedupe_horizon_ms: settings.engine.dedupe_horizon.ms(),
            max_cells_per_rule: settings.engine.max_cells_per_rule,
        };
        // Windows are rebuilt from history over the longest rule window plus
        // the longest baseline warm-up.
        let span_ms = rules
            .get()
            .rules
            .iter()
            .map(|r| r.rule.window.ms() + r.rule.baseline.warmup.ms())
            .max()
            .unwrap_or(0);
        let cluster = if settings.cluster.enabled {
            // A new detector replays the (compact) counts over one baseline
            // horizon more than a restart replays events, so its baselines are
            // close to its predecessor's and open incidents come out the same.
            let counts_span_ms = rules
                .get()
                .rules
                .iter()
                .map(|r| {
                    r.rule.window.ms() + r.rule.baseline.warmup.ms() + r.rule.baseline.horizon.ms()
                })
                .max()
                .unwrap_or(0);
            Some(
                cluster_parts(
                    settings,
                    counts_span_ms,
                    rules.clone(),
                    metrics.clone(),
                    clickhouse.as_ref().map(|ch| ch.tap()),
                )
                .await
                .context("cluster replica (cluster.enabled)")?,
            )
        } else {
            None
        };
        let (nats, catch_up) = if settings.nats.enabled() && cluster.is_none() {
            // Capped by what the stream keeps.
            let span_ms = span_ms.min(settings.nats.max_age.ms()).max(0);
            let source = NatsSource::connect(
                &settings.nats,
                Duration::from_millis(span_ms as u64),
                engine_opts.lateness_ms,
                metrics.clone(),
            )
            .await?;
            (Some(source), Arc::new(CatchUp::replaying()))
        } else {
            (None, Arc::new(CatchUp::idle()))
        };
        Ok(App {
            listener,
            addr,
            state,
            events_rx,
            outputs: Outputs {
                store,
                notifier,
                summarizer,
                metrics,
                rules,
                summary_deadline: settings.llm.deadline.0,
                public_url: settings.public_url.clone(),
                claims: None,
            },
            engine_opts,
            clock,
            transition_capacity: settings.engine.transition_channel_capacity.max(1),
            nats,
            catch_up,
            clickhouse,
            audit,
            control,
            engine,
            reloader: None,
            cluster,
        })
    }

    /// Reloads the rules from `dir` (where they were loaded from) on SIGHUP,
    /// on `POST /rules/reload`, and when its files change (checked every
    /// `interval`; zero: no polling).
    pub fn watch_rules(mut self, dir: std::path::PathBuf, interval: Duration) -> App {
        let reloader = Arc::new(Reloader::new(
            dir,
            self.outputs.rules.clone(),
            self.engine.clone(),
            self.outputs.notifier.clone(),
            self.outputs.metrics.clone(),
        ));
        self.state = self.state.with_reloader(reloader.clone());
        self.reloader = Some((reloader, interval));
        self
    }

    /// Where LLM and Slack audit records go: the ClickHouse audit tables when
    /// configured, else an in-memory ring that logs each record.
    pub fn audit(&self) -> Arc<dyn crate::audit::Audit> {
        self.audit.clone()
    }

    /// The ClickHouse store, when configured.
    pub fn clickhouse(&self) -> Option<Arc<ClickHouseStore>> {
        self.clickhouse.clone()
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A sender into the engine, for sources other than HTTP (the demo generator).
    pub fn events(&self) -> mpsc::Sender<Event> {
        self.state.ingest.clone()
    }

    /// Counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.outputs.metrics.clone()
    }

    /// The store.
    pub fn store(&self) -> Arc<dyn Store> {
        self.outputs.store.clone()
    }

    /// Runs until `shutdown` completes, then drains with a deadline.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let App {
            listener,
            state,
            events_rx,
            outputs,
            engine_opts,
            clock,
            transition_capacity,
            nats,
            catch_up,
            clickhouse,
            control,
            reloader,
            cluster,
            ..
        } = self;
        if let Some(parts) = cluster {
            let detector = crate::cluster::detector::Detector {
                lease: parts.lease,
                claims: parts.claims,
                partials: parts.partials,
                node: parts.node,
                holder: parts.holder,
                ttl: parts.ttl,
                replay_span: parts.replay_span,
                counts_idle: parts.counts_idle,
                engine_opts,
                clock,
                outputs,
                tap: clickhouse.as_ref().map(|ch| ch.tap()),
                transition_capacity,
            };
            let served = run_replica(
                parts.replica,
                detector,
                listener,
                state,
                events_rx,
                control,
                reloader,
                shutdown,
            )
            .await;
            if let Some(ch) = clickhouse {
                ch.shutdown(SHUTDOWN_DEADLINE).await;
            }
            return served;
        }
        let (changes_tx, changes_rx) = mpsc::channel(transition_capacity);
        let engine = tokio::spawn(
            EngineLoop::new(
                outputs.rules.get(),
                engine_opts,
                clock,
                outputs.metrics.clone(),
            )
            .catch_up(catch_up.clone())
            .tap(clickhouse.as_ref().map(|ch| ch.tap()))
            .control(control)
            .run(events_rx, changes_tx),
        );
        let notifier = outputs.notifier.clone();
        let sinks = tokio::spawn(pipeline::run_outputs_with(
            changes_rx,
            outputs,
            catch_up.clone(),
        ));
        // One stop signal for every source: HTTP and NATS stop intake together.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        watch_rules(reloader, &stop_rx);
        let source = nats.map(|n| tokio::spawn(n.run(state.ingest.clone(), stop_rx, catch_up)));
        let shutdown = async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        };
        // The server and the NATS source own the last event senders once the
        // caller's are dropped: when both stop, the engine sees its channel close
        // and drains.
        let served = api::serve(listener, state, shutdown).await;
        if let Some(mut source) = source {
            // The source finishes its batch in flight and acks it.
            if tokio::time::timeout(SHUTDOWN_DEADLINE, &mut source)
                .await
                .is_err()
            {
                tracing::warn!("NATS ingest did not stop before the shutdown deadline");
                source.abort();
            }
        }
        served.context("HTTP server failed")?;
        let drained = tokio::time::timeout(SHUTDOWN_DEADLINE, async {
            let stats = engine.await;
            let _ = sinks.await;
            // Posts still queued (Slack paces itself) go out before the exit.
            notifier.flush().await;
            stats
        })
        .await;
        match drained {
            Ok(Ok(stats)) => tracing::info!(?stats, "stopped"),
            Ok(Err(e)) => tracing::error!(error = %e, "engine task failed"),
            Err(_) => tracing::warn!("shutdown deadline passed before outputs drained"),
        }
        if let Some(ch) = clickhouse {
            // Everything the pipeline produced goes out before the process ends.
            ch.shutdown(SHUTDOWN_DEADLINE).await;
        }
        Ok(())
    }
}

/// Reloads the rules on SIGHUP, request and file change when they came from a
/// folder; otherwise keeps SIGHUP from stopping the daemon. Until `stop`.
fn watch_rules(
    reloader: Option<(Arc<Reloader>, Duration)>,
    stop: &tokio::sync::watch::Receiver<bool>,
) {
    match reloader {
        Some((reloader, interval)) => {
            tokio::spawn(reloader.watch(interval, stop.clone()));
        }
        None => {
            tokio::spawn(crate::reload::ignore_hangup(stop.clone()));
        }
    }
}

/// Runs one cluster replica: its share of the ingest, the detector role
/// (standby until it holds the lease) and the API, until `shutdown`; or until
/// the detector lease is lost, which is an error (the process exits, and its
/// supervisor starts it again as a standby).
#[allow(clippy::too_many_arguments)]
async fn run_replica(
    replica: crate::cluster::replica::Replica,
    detector: crate::cluster::detector::Detector,
    listener: tokio::net::TcpListener,
    state: AppState,
    events_rx: mpsc::Receiver<Event>,
    control: mpsc::Receiver<pipeline::Control>,
    reloader: Option<(Arc<Reloader>, Duration)>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use crate::cluster::detector::Ended;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    watch_rules(reloader, &stop_rx);
    let ingest = tokio::spawn(replica.run(events_rx, stop_rx.clone()));
    let notifier = detector.outputs.notifier.clone();
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
    let role = tokio::spawn(async move {
        let ended = crate::cluster::detector::run(detector, control, stop_rx).await;
        let failed = !matches!(ended, Ok(Ended::Stopped));
        let _ = ended_tx.send(ended);
        failed
    });
    let (failed_tx, mut failed_rx) = tokio::sync::oneshot::channel::<String>();
    let stop = async move {
        tokio::select! {
            _ = shutdown => {}
            ended = ended_rx => {
                let why = match ended {
                    Ok(Ok(Ended::LeaseLost)) => "lost the detector lease".to_string(),
                    Ok(Err(e)) => format!("the detector role failed: {e}"),
                    _ => "the detector role stopped".to_string(),
                };
                let _ = failed_tx.send(why);
            }
        }
        let _ = stop_tx.send(true);
    };
    let served = api::serve(listener, state, stop).await;
    for (what, task) in [("ingest", ingest)] {
        if tokio::time::timeout(SHUTDOWN_DEADLINE, task).await.is_err() {
            tracing::warn!(
                what,
                "replica task did not stop before the shutdown deadline"
            );
        }
    }
    match tokio::time::timeout(SHUTDOWN_DEADLINE, role).await {
        Ok(Ok(_)) => {}
        _ => tracing::warn!("the detector role did not stop before the shutdown deadline"),
    }
    notifier.flush().await;
    served.context("HTTP server failed")?;
    if let Ok(why) = failed_rx.try_recv() {
        anyhow::bail!("{why}; exiting so the supervisor starts this replica again as a standby");
    }
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

/// The `[explain]` settings as the rules take them.
pub fn explain_of(settings: &Settings) -> crate::rules::Explain {
    let e = &settings.explain;
    crate::rules::Explain {
        standard: e.standard,
        bin_prefix: e.bin_prefix,
        attrs: e.attrs.clone(),
        max_attr_values: e.max_attr_values,
    }
}
