//! Load tool: events/s of a faultline cluster draining a JetStream backlog with
//! 1, 2 and 3 replicas, on a local 3-node NATS cluster.
//!
//! ```text
//! cargo build --release && cargo run --release --example cluster_bench -- [EVENTS] [REPLICAS...]
//! ```
//!
//! Starts three routed `nats-server -js` processes (as the tests do:
//! `NATS_SERVER_BIN`, else `target/tools/nats/bin/nats-server`), then for each
//! replica count (default 1 2 3): publishes EVENTS (default 1 million) generated
//! scenario events to a fresh stream, binds the replicas' shared durable
//! consumer to the whole backlog, starts that many `target/release/faultline
//! run` processes with `cluster.enabled` (one of them takes the detector lease
//! and merges everyone's counts), and times them from start until the durable
//! consumer has every message acked (each acked only after the replica's counts
//! were published and stored in the partials stream). Prints one JSON line per
//! replica count: seconds, events/s, CPU seconds per process and in all, and
//! the NATS servers' CPU seconds over the same time.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};

#[path = "../tests/common/nats_server.rs"]
#[allow(dead_code)]
mod nats_server;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let events: u64 = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let counts: Vec<usize> = if args.len() > 2 {
        args[2..].iter().filter_map(|s| s.parse().ok()).collect()
    } else {
        vec![1, 2, 3]
    };
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
    let servers = nats_server::NatsServer::cluster(3);
    let urls: Vec<String> = servers.iter().map(|s| s.url()).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let nats_pids: Vec<u32> = nats_pids(&servers);
    for (run, &k) in counts.iter().enumerate() {
        let stream = format!("BENCH{run}");
        // JetStream needs its meta leader first: retry the publish.
        let load = faultline::ingest::nats::LoadArgs {
            nats: urls[0].clone(),
            stream: stream.clone(),
            // The stream takes `payments.>` (deleted after each run).
            subject: "payments.events".into(),
            seed: 7,
            duration: "1h".into(),
            events_per_sec: events as f64 * 1.03 / 3600.0,
            start: "now".into(),
            rate: 0.0,
            live: false,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match rt.block_on(faultline::ingest::nats::load_command(&load)) {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("publish not ready ({e:#}); retrying");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
        let published = rt.block_on(prepare(&urls[0], &stream))?;
        eprintln!("{k} replica(s): {published} events in {stream}");
        let mut children: Vec<Child> = Vec::new();
        let nats_before = cpu_of(&nats_pids);
        let started = Instant::now();
        for i in 0..k {
            let config = dir.path().join(format!("r{run}-{i}.toml"));
            std::fs::write(
                &config,
                format!(
                    "[nats]\nstream = \"{stream}\"\n\
                     [cluster]\nenabled = true\nnode = \"bench{run}-{i}\"\n\
                     partials_stream = \"PARTIALS{run}\"\npartials_subject = \"partials{run}\"\n"
                ),
            )?;
            let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
            let mut list = urls.clone();
            let n = list.len();
            list.rotate_left(i % n);
            children.push(
                Command::new(&bin)
                    .args(["run", "--config"])
                    .arg(&config)
                    .env("FAULTLINE_NATS_URL", list.join(","))
                    .env("FAULTLINE_LISTEN", listen.to_string())
                    .env("FAULTLINE_LOG", "warn")
                    .env(
                        "FAULTLINE_RULES_DIR",
                        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules"),
                    )
                    .stdout(Stdio::null())
                    .spawn()?,
            );
        }
        let mut last: Vec<f64> = vec![0.0; k];
        let mut peak_rss: Vec<f64> = vec![0.0; k];
        let deadline = Instant::now() + Duration::from_secs(900);
        loop {
            for (i, c) in children.iter().enumerate() {
                if let Some(cpu) = cpu_secs(c.id()) {
                    last[i] = cpu;
                }
                if let Some(rss) = peak_rss_mib(c.id()) {
                    peak_rss[i] = rss;
                }
            }
            if rt.block_on(drained(&urls[0], &stream, published))? {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "did not drain within 15 minutes");
            std::thread::sleep(Duration::from_millis(50));
        }
        let secs = started.elapsed().as_secs_f64();
        let nats_cpu = cpu_of(&nats_pids) - nats_before;
        for c in &mut children {
            // SIGTERM: the detector releases its lease for the next run.
            let _ = Command::new("kill").arg(c.id().to_string()).status();
        }
        for c in &mut children {
            let _ = c.wait();
        }
        println!(
            "{}",
            serde_json::json!({
                "replicas": k,
                "events": published,
                "seconds": (secs * 1000.0).round() / 1000.0,
                "events_per_second": (published as f64 / secs).round(),
                "replica_cpu_seconds": last.iter().map(|c| (c * 100.0).round() / 100.0).collect::<Vec<_>>(),
                "replicas_cpu_seconds": (last.iter().sum::<f64>() * 100.0).round() / 100.0,
                "nats_cpu_seconds": (nats_cpu * 100.0).round() / 100.0,
                "replica_peak_rss_mib": peak_rss.iter().map(|r| r.round()).collect::<Vec<_>>(),
            })
        );
        rt.block_on(async {
            let js = jetstream::new(async_nats::connect(urls.clone()).await?);
            let _ = js.delete_stream(&stream).await;
            let _ = js.delete_stream(format!("PARTIALS{run}")).await;
            anyhow::Ok(())
        })?;
        std::thread::sleep(Duration::from_secs(2));
    }
    drop(servers);
    Ok(())
}

/// Binds the replicas' durable consumer to the whole backlog (a cluster
/// started fresh would only take new events); returns the message count.
async fn prepare(url: &str, stream: &str) -> anyhow::Result<u64> {
    let js = jetstream::new(async_nats::connect(url).await?);
    let mut s = js.get_stream(stream).await?;
    let n = s.info().await?.state.messages;
    s.get_or_create_consumer(
        faultline::cluster::replica::DURABLE,
        consumer::pull::Config {
            durable_name: Some(faultline::cluster::replica::DURABLE.into()),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(10),
            max_deliver: 5,
            max_ack_pending: 200_000,
            ..Default::default()
        },
    )
    .await?;
    Ok(n)
}

async fn drained(url: &str, stream: &str, n: u64) -> anyhow::Result<bool> {
    let js = jetstream::new(async_nats::connect(url).await?);
    let s = js.get_stream(stream).await?;
    let mut c = s
        .get_consumer::<consumer::pull::Config>(faultline::cluster::replica::DURABLE)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let info = c.info().await?;
    Ok(info.ack_floor.stream_sequence >= n && info.num_ack_pending == 0)
}

fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|p| cpu_secs(*p)).sum()
}

/// The nats-server processes' pids (children of this process, by command line).
fn nats_pids(servers: &[nats_server::NatsServer]) -> Vec<u32> {
    let ports: Vec<String> = servers
        .iter()
        .map(|s| s.url().rsplit(':').next().unwrap_or_default().to_string())
        .collect();
    let mut pids = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("nats-server") && ports.iter().any(|p| cmd.contains(&format!(" {p} ")))
            {
                pids.push(pid);
            }
        }
    }
    pids
}
