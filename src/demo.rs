//! `faultline demo`: the whole pipeline on built-in traffic with injected faults.
//!
//! The generator's scenario starts 30 minutes of event time in the past: that
//! warm-up (the rules learn their baselines) is fed as fast as the engine takes
//! it, then event time runs at `speed` times the wall clock, so the injected
//! faults (one every 15 to 25 minutes of event time) turn into incidents every
//! few seconds to a minute of wall time. Each fault is announced when it starts,
//! so what faultline prints can be checked against what was injected.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use secrecy::SecretString;

use crate::app::{shutdown_signal, App};
use crate::config::{ApiToken, Scope, Settings};
use crate::event;
use crate::ingest::generator::{Generator, Scenario};
use crate::metrics::Metrics;
use crate::pipeline::Clock;
use crate::rules::RuleSet;

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Stop on its own after this long (wall clock).
    pub duration: Option<Duration>,
    /// Event-time seconds per wall second after the warm-up.
    pub speed: f64,
    /// Traffic seed.
    pub seed: u64,
    /// Mean events per second of event time.
    pub events_per_sec: f64,
}

const WARMUP_MS: i64 = 30 * 60_000;

/// Runs the demo until Ctrl-C or the duration.
pub async fn run(mut settings: Settings, opts: DemoOptions) -> anyhow::Result<()> {
    let token = if settings.api.tokens.is_empty() {
        let secret: String = rand::thread_rng()
            .sample_iter(rand::distributions::Alphanumeric)
            .take(24)
            .map(char::from)
            .collect();
        settings.api.tokens.push(ApiToken {
            name: "demo".into(),
            secret: SecretString::from(secret.clone()),
            scope: Scope::Write,
        });
        Some(secret)
    } else {
        None
    };
    let app = App::build(&settings, RuleSet::embedded(), Clock::EventTime).await?;
    let addr = app.addr();
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "faultline demo: realistic payment traffic with injected faults, {}x time after a 30-minute warm-up", opts.speed);
        let _ = writeln!(
            out,
            "API and pages on http://{addr} (GET /incidents, /ui/incidents)"
        );
        if let Some(t) = &token {
            let _ = writeln!(out, "API token for this demo (scope write): {t}");
            let _ = writeln!(
                out,
                "  curl -s -H 'Authorization: Bearer {t}' http://{addr}/incidents"
            );
        }
        let _ = writeln!(out, "Ctrl-C to stop.\n");
    }
    let now = chrono::Utc::now().timestamp_millis();
    let scenario = Scenario::standard(opts.seed, 24 * 3_600_000, opts.events_per_sec)
        .starting_at(now - WARMUP_MS);
    let events = app.events();
    let metrics = app.metrics();
    let feeder = tokio::spawn(feed(scenario, events, metrics, opts.speed));
    let stop = async move {
        match opts.duration {
            Some(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {},
                    _ = shutdown_signal() => {},
                }
            }
            None => shutdown_signal().await,
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stop_rx.await;
    }));
    stop.await;
    feeder.abort();
    let _ = feeder.await;
    let _ = stop_tx.send(());
    server.await??;
    Ok(())
}

/// Feeds the scenario's lines through validation into the engine, paced.
async fn feed(
    scenario: Scenario,
    events: tokio::sync::mpsc::Sender<event::Event>,
    metrics: Arc<Metrics>,
    speed: f64,
) {
    let labels = scenario.labels();
    let mut faults: Vec<_> = labels.faults.iter().collect();
    faults.sort_by_key(|f| f.start);
    let mut next_fault = 0;
    let generator = match Generator::new(&scenario) {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(error = %e.message, "demo scenario invalid");
            return;
        }
    };
    let live_from = scenario.start_ms + WARMUP_MS;
    // Set when the warm-up is over: pacing starts there.
    let mut wall_start: Option<tokio::time::Instant> = None;
    let speed = speed.max(0.1);
    for (i, line) in generator.enumerate() {
        while next_fault < faults.len()
            && faults[next_fault].start.timestamp_millis() <= line.arrival_ms
        {
            let f = faults[next_fault];
            let dims: Vec<String> = f.dims.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!(
                "-- {} injecting {} at {} ({}) for {} min",
                f.start.format("%H:%M:%S"),
                f.fault_type.as_str(),
                dims.join(","),
                f.rule,
                (f.end - f.start).num_minutes()
            );
            next_fault += 1;
        }
        if line.arrival_ms > live_from && i % 64 == 0 {
            let start = *wall_start.get_or_insert_with(tokio::time::Instant::now);
            let due =
                Duration::from_secs_f64((line.arrival_ms - live_from) as f64 / 1000.0 / speed);
            tokio::time::sleep_until(start + due).await;
        }
        metrics.event_received();
        match event::parse(line.text.as_bytes()) {
            Ok(ev) => {
                if events.send(ev).await.is_err() {
                    return;
                }
            }
            Err(rej) => metrics.event_rejected(&rej.reason()),
        }
    }
}
