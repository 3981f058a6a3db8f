//! Load tool: how fast `faultline run` drains a JetStream backlog, compared in
//! the same run with a bare async-nats pull consumer that only acks.
//!
//! ```text
//! cargo build --release && cargo run --release --example nats_bench -- [EVENTS]
//! ```
//!
//! Starts a real `nats-server -js` (as the tests do: `NATS_SERVER_BIN`, else
//! `target/tools/nats/bin/nats-server`, else PATH), publishes EVENTS (default 2
//! million) generated scenario events stamped over the last hour, then drains the
//! stream twice, each in its own process so CPU and peak RSS are its own:
//!
//! 1. the bare consumer: this example re-run as `--bare URL N`, a durable pull
//!    pull consumer (continuous pull, batches of 1000) acking every message, as
//!    the daemon does, and nothing else;
//! 2. the daemon: `target/release/faultline run` (or `FAULTLINE_BIN`) with
//!    `FAULTLINE_NATS_URL` set, from process start until its durable consumer has
//!    every message acked (parse, validate, dedupe, count in every rule's windows,
//!    detect, localize, summarize, store).
//!
//! Prints one JSON line per consumer (seconds, messages/s, CPU seconds, peak RSS)
//! and the ratio daemon / bare.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;

#[path = "../tests/common/nats_server.rs"]
#[allow(dead_code)]
mod nats_server;

const STREAM: &str = "PAYMENTS";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--bare") {
        let url = args.get(2).cloned().unwrap_or_default();
        let n: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
        return runtime().block_on(bare(&url, n));
    }
    let events: u64 = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let server = nats_server::NatsServer::start();
    let url = server.url();

    // One hour of scenario at the rate that yields `events`.
    let load = faultline::ingest::nats::LoadArgs {
        nats: url.clone(),
        stream: STREAM.into(),
        subject: "payments.events".into(),
        seed: 7,
        duration: "1h".into(),
        // The generator draws Poisson counts: aim a little high, report the real count.
        events_per_sec: events as f64 * 1.03 / 3600.0,
        start: "now".into(),
        rate: 0.0,
        live: false,
    };
    let rt = runtime();
    rt.block_on(faultline::ingest::nats::load_command(&load))?;
    let published = rt.block_on(stream_messages(&url))?;
    eprintln!("published {published} messages");

    let me = std::env::current_exe()?;
    let mut bare_child = Command::new(me)
        .args(["--bare", &url, &published.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let bare_report = watch_child(&mut bare_child, || Ok(false))?;
    let bare_out = bare_child.wait_with_output()?;
    let bare_secs: f64 = String::from_utf8_lossy(&bare_out.stdout).trim().parse()?;
    report("bare_consumer", published, bare_secs, &bare_report);

    let bin = std::env::var_os("FAULTLINE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/faultline")
        });
    anyhow::ensure!(
        bin.is_file(),
        "{} is missing: run `cargo build --release` first",
        bin.display()
    );
    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let started = Instant::now();
    let mut daemon = Command::new(bin)
        .arg("run")
        .env("FAULTLINE_NATS_URL", &url)
        .env("FAULTLINE_LISTEN", listen.to_string())
        .env("FAULTLINE_LOG", "warn")
        .env(
            "FAULTLINE_RULES_DIR",
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules"),
        )
        .stdout(Stdio::null())
        .spawn()?;
    let url2 = url.clone();
    let probe = runtime();
    let daemon_report = watch_child(&mut daemon, || {
        probe.block_on(drained(&url2, faultline::ingest::nats::DURABLE, published))
    })?;
    let daemon_secs = started.elapsed().as_secs_f64();
    let _ = Command::new("kill").arg(daemon.id().to_string()).status();
    let _ = daemon.wait();
    report("faultline_run", published, daemon_secs, &daemon_report);
    println!(
        "{}",
        serde_json::json!({
            "ratio_daemon_to_bare": bare_secs / daemon_secs,
            "events": published,
        })
    );
    drop(server);
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// CPU seconds and peak RSS of a child process, read from /proc while it runs.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    cpu_secs: f64,
    peak_rss_mib: f64,
}

fn usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line, in clock ticks (100 per second).
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm_kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())?;
    Some(Usage {
        cpu_secs: ticks / 100.0,
        peak_rss_mib: hwm_kib / 1024.0,
    })
}

/// Polls the child every 50 ms until it exits or `done` says so; returns its
/// last usage reading.
fn watch_child(
    child: &mut Child,
    mut done: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<Usage> {
    let mut last = Usage::default();
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        if let Some(u) = usage(child.id()) {
            last = u;
        }
        if child.try_wait()?.is_some() || done()? {
            return Ok(last);
        }
        anyhow::ensure!(Instant::now() < deadline, "did not drain within 15 minutes");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn report(name: &str, n: u64, secs: f64, u: &Usage) {
    println!(
        "{}",
        serde_json::json!({
            "consumer": name,
            "messages": n,
            "seconds": (secs * 1000.0).round() / 1000.0,
            "per_second": (n as f64 / secs).round(),
            "cpu_seconds": u.cpu_secs,
            "cpu_share_of_one_core": (u.cpu_secs / secs * 100.0).round() / 100.0,
            "peak_rss_mib": (u.peak_rss_mib * 10.0).round() / 10.0,
        })
    );
}

async fn stream_messages(url: &str) -> anyhow::Result<u64> {
    let js = jetstream::new(async_nats::connect(url).await?);
    let mut stream = js.get_stream(STREAM).await?;
    Ok(stream.info().await?.state.messages)
}

/// Whether `durable` has acked every one of the `n` messages.
async fn drained(url: &str, durable: &str, n: u64) -> anyhow::Result<bool> {
    let js = jetstream::new(async_nats::connect(url).await?);
    let stream = js.get_stream(STREAM).await?;
    let Ok(mut c) = stream.get_consumer::<consumer::pull::Config>(durable).await else {
        return Ok(false);
    };
    let info = c.info().await?;
    Ok(info.ack_floor.stream_sequence >= n && info.num_ack_pending == 0)
}

/// The bare consumer: fetch and ack, nothing else. Prints its seconds.
async fn bare(url: &str, n: u64) -> anyhow::Result<()> {
    let js = jetstream::new(async_nats::connect(url).await?);
    let stream = js.get_stream(STREAM).await?;
    let c = stream
        .get_or_create_consumer(
            "bare",
            consumer::pull::Config {
                durable_name: Some("bare".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                max_ack_pending: 4000,
                ..Default::default()
            },
        )
        .await?;
    let started = Instant::now();
    let mut got = 0u64;
    // The same continuous pull the daemon uses.
    let mut messages = c.stream().max_messages_per_batch(1000).messages().await?;
    while got < n {
        let m = messages
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("the pull ended"))?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        m.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        got += 1;
    }
    println!("{}", started.elapsed().as_secs_f64());
    Ok(())
}
