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
use crate::metrics::Metrics;
use crate::notify::{Notifier, StdoutNotifier};
use crate::pipeline::{self, Clock, Outputs};
use crate::rules::RuleSet;
use crate::store::{MemoryLimits, MemoryStore, Store};
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
}

impl App {
    /// Wires the stages from `settings` and binds `settings.listen`.
    pub async fn build(settings: &Settings, rules: RuleSet, clock: Clock) -> anyhow::Result<App> {
        Self::build_with(settings, rules, clock, Arc::new(StdoutNotifier::new())).await
    }

    /// [`App::build`] with a given notifier (tests capture what is posted).
    pub async fn build_with(
        settings: &Settings,
        rules: RuleSet,
        clock: Clock,
        notifier: Arc<dyn Notifier>,
    ) -> anyhow::Result<App> {
        for (name, on) in [
            ("NATS", settings.nats.enabled()),
            ("ClickHouse", settings.clickhouse.enabled()),
            ("LLM", settings.llm.enabled()),
            ("Slack", settings.slack.enabled()),
        ] {
            if on {
                tracing::warn!("{name} is configured but not supported by this build yet; using the embedded default");
            }
        }
        let metrics = Arc::new(Metrics::new());
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(MemoryLimits::from(&settings.store)));
        let summarizer: Arc<dyn Summarizer> = Arc::new(TemplateSummarizer);
        let (events_tx, events_rx) = mpsc::channel(settings.engine.event_channel_capacity.max(1));
        let state = AppState::new(settings, store.clone(), events_tx, metrics.clone());
        let listener = tokio::net::TcpListener::bind(&settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let addr = listener.local_addr()?;
        let engine_opts = EngineOptions {
            lateness_ms: settings.engine.allowed_lateness.ms(),
            dedupe_horizon_ms: settings.engine.dedupe_horizon.ms(),
            max_cells_per_rule: settings.engine.max_cells_per_rule,
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
                rules: Arc::new(rules),
            },
            engine_opts,
            clock,
            transition_capacity: settings.engine.transition_channel_capacity.max(1),
        })
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
            ..
        } = self;
        let (changes_tx, changes_rx) = mpsc::channel(transition_capacity);
        let engine = tokio::spawn(pipeline::run_engine(
            events_rx,
            outputs.rules.clone(),
            engine_opts,
            clock,
            changes_tx,
            outputs.metrics.clone(),
        ));
        let sinks = tokio::spawn(pipeline::run_outputs(changes_rx, outputs));
        // The server owns the last event senders once the caller's are dropped:
        // when it stops, the engine sees its channel close and drains.
        api::serve(listener, state, shutdown)
            .await
            .context("HTTP server failed")?;
        let drained = tokio::time::timeout(SHUTDOWN_DEADLINE, async {
            let stats = engine.await;
            let _ = sinks.await;
            stats
        })
        .await;
        match drained {
            Ok(Ok(stats)) => tracing::info!(?stats, "stopped"),
            Ok(Err(e)) => tracing::error!(error = %e, "engine task failed"),
            Err(_) => tracing::warn!("shutdown deadline passed before outputs drained"),
        }
        Ok(())
    }
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
