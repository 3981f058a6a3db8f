//! Load tool: ClickHouse insert throughput (events and cell aggregates) and
//! the live pipeline's events/s with the ClickHouse store on, against the
//! in-memory store, in the same run.
//!
//! ```text
//! cargo run --release --example clickhouse_bench -- [MINUTES] [EVENTS_PER_SEC]
//! ```
//!
//! Starts a real `clickhouse-server` in a temporary folder (as the tests do:
//! `CLICKHOUSE_SERVER_BIN`, else `/usr/sbin/clickhouse-server`), generates
//! MINUTES (default 60) of the standard scenario at EVENTS_PER_SEC (default
//! 300), then measures, printing one JSON line each:
//!
//! 1. `events_insert`: every event through the store's buffer into `events`
//!    (batched RowBinary INSERTs), from the first push until nothing is buffered;
//! 2. `aggregates_insert`: the cell steps the engine records over the scenario
//!    into `cell_steps`, the same way;
//! 3. `pipeline_memory` and `pipeline_clickhouse`: the live engine and outputs
//!    (`run_engine_tapped` + `run_outputs`) over a channel of parsed events,
//!    with the in-memory store, then with the ClickHouse store tapping events
//!    and aggregates; for ClickHouse also the time until its buffers drained.

use std::sync::Arc;
use std::time::{Duration, Instant};

use faultline::config::ClickHouseSettings;
use faultline::engine::{Engine, EngineOptions};
use faultline::event::Event;
use faultline::ingest::generator::{Generator, Scenario};
use faultline::metrics::Metrics;
use faultline::notify::StdoutNotifier;
use faultline::pipeline::{self, Clock, EngineTap, Outputs};
use faultline::rules::RuleSet;
use faultline::store::clickhouse::ClickHouseStore;
use faultline::store::{MemoryLimits, MemoryStore, Store};
use faultline::summarize::TemplateSummarizer;

#[path = "../tests/common/clickhouse_server.rs"]
#[allow(dead_code)]
mod clickhouse_server;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let minutes: i64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(60);
    let rate: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(300.0);
    let Some(server) = clickhouse_server::ClickHouseServer::start() else {
        anyhow::bail!("no clickhouse-server to benchmark against");
    };
    let sc = Scenario::standard(7, minutes * 60_000, rate);
    let events: Vec<Event> = Generator::new(&sc)?
        .filter_map(|l| faultline::event::parse_str(&l.text).ok())
        .collect();
    eprintln!("{} events generated", events.len());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(&server.url(), events))
}

fn settings(url: &str, db: &str) -> ClickHouseSettings {
    ClickHouseSettings {
        url: Some(url.into()),
        database: db.into(),
        buffer_rows: 10_000_000,
        batch_rows: 100_000,
        ..ClickHouseSettings::default()
    }
}

async fn connect(url: &str, db: &str) -> anyhow::Result<Arc<ClickHouseStore>> {
    Ok(ClickHouseStore::connect(
        &settings(url, db),
        MemoryLimits::default(),
        Arc::new(Metrics::new()),
    )
    .await?)
}

fn line(what: &str, rows: usize, secs: f64, extra: &str) {
    println!(
        "{{\"bench\":\"{what}\",\"rows\":{rows},\"seconds\":{secs:.3},\"rows_per_sec\":{:.0}{extra}}}",
        rows as f64 / secs.max(1e-9)
    );
}

async fn run(url: &str, events: Vec<Event>) -> anyhow::Result<()> {
    let rules = Arc::new(RuleSet::embedded());

    // 1. Events straight into the events table.
    let store = connect(url, "bench_events").await?;
    let tap = store.tap();
    let started = Instant::now();
    for chunk in events.chunks(1024) {
        tap.events(chunk, false);
    }
    anyhow::ensure!(
        store.flush(Duration::from_secs(600)).await,
        "events did not drain"
    );
    line(
        "events_insert",
        events.len(),
        started.elapsed().as_secs_f64(),
        "",
    );

    // 2. The engine's cell steps over the scenario, then into cell_steps.
    let mut engine = Engine::new(&rules, &EngineOptions::default());
    engine.record_cell_steps(true);
    let mut out = Vec::new();
    let mut steps = Vec::new();
    for e in &events {
        let _ = engine.ingest(e, &mut out);
        out.clear();
        engine.take_cell_steps(&mut steps);
    }
    engine.finish(&mut out);
    engine.take_cell_steps(&mut steps);
    let n_steps = steps.len();
    let store = connect(url, "bench_steps").await?;
    let started = Instant::now();
    store.tap().cell_steps(&mut steps);
    anyhow::ensure!(
        store.flush(Duration::from_secs(600)).await,
        "steps did not drain"
    );
    line(
        "aggregates_insert",
        n_steps,
        started.elapsed().as_secs_f64(),
        "",
    );

    // 3. The live pipeline, memory then ClickHouse.
    let memory: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let secs = pipeline_run(rules.clone(), events.clone(), memory, None).await;
    line("pipeline_memory", events.len(), secs, "");
    let ch = connect(url, "bench_pipeline").await?;
    let secs = pipeline_run(rules.clone(), events.clone(), ch.clone(), Some(ch.tap())).await;
    let drain = Instant::now();
    anyhow::ensure!(
        ch.flush(Duration::from_secs(600)).await,
        "pipeline rows did not drain"
    );
    line(
        "pipeline_clickhouse",
        events.len(),
        secs,
        &format!(
            ",\"drain_seconds\":{:.3},\"events_per_sec_incl_drain\":{:.0}",
            drain.elapsed().as_secs_f64(),
            events.len() as f64 / (secs + drain.elapsed().as_secs_f64())
        ),
    );
    Ok(())
}

/// Seconds for the engine and outputs to take every event and stop.
async fn pipeline_run(
    rules: Arc<RuleSet>,
    events: Vec<Event>,
    store: Arc<dyn Store>,
    tap: Option<Arc<dyn EngineTap>>,
) -> f64 {
    let metrics = Arc::new(Metrics::new());
    let (tx, rx) = tokio::sync::mpsc::channel(8192);
    let (ctx, crx) = tokio::sync::mpsc::channel(1024);
    let outputs = Outputs {
        store,
        notifier: Arc::new(StdoutNotifier::with_writer(std::io::sink())),
        summarizer: Arc::new(TemplateSummarizer),
        metrics: metrics.clone(),
        rules: Arc::new(faultline::reload::LiveRules::new((*rules).clone())),
        summary_deadline: Duration::from_secs(5),
        public_url: None,
        claims: None,
    };
    let started = Instant::now();
    let engine = tokio::spawn(
        pipeline::EngineLoop::new(rules, EngineOptions::default(), Clock::EventTime, metrics)
            .tap(tap)
            .run(rx, ctx),
    );
    let sinks = tokio::spawn(pipeline::run_outputs(crx, outputs));
    for e in events {
        if tx.send(e).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = engine.await;
    let _ = sinks.await;
    started.elapsed().as_secs_f64()
}
