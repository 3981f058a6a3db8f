//! Soak: `faultline run` as a process under a steady live event rate over NATS,
//! with its memory, open file descriptors and consumer lag sampled. After the
//! warm-up (windows and the dedupe horizon filled) none of them may grow.
//!
//! `FAULTLINE_SOAK_SECS` (default 180) and `FAULTLINE_SOAK_RATE` (events/s,
//! default 1000) lengthen it for a manual run; the summary is printed as one
//! JSON line on stderr. The rules are the shipped ones with 1-minute windows and
//! a 1-minute dedupe horizon, so the state a long run reaches after about 10
//! minutes is reached here in about 90 seconds.
//!
//! A module of the `cluster` test binary, so it runs beside the cluster fault
//! test (both mostly wait on wall-clock time) instead of after it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::http::metric;
use crate::common::nats_server::NatsServer;

fn env_or(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// VmRSS of `pid`, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn soak_rules(dir: &Path) {
    for f in ["auth.yaml", "settlement.yaml", "webhook.yaml"] {
        let text = std::fs::read_to_string(format!("rules/{f}"))
            .unwrap()
            .replace("window: 2m", "window: 1m")
            .replace("window: 3m", "window: 1m");
        std::fs::write(dir.join(f), text).unwrap();
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at_s: f64,
    rss_kib: u64,
    fds: usize,
    pending: f64,
}

#[test]
fn steady_load_grows_neither_memory_nor_descriptors_nor_lag() {
    let secs = env_or("FAULTLINE_SOAK_SECS", 180.0).max(60.0);
    let rate = env_or("FAULTLINE_SOAK_RATE", 1000.0).max(10.0);
    let warm = (secs * 0.6).min(secs - 30.0);
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    soak_rules(dir.path());
    let config = dir.path().join("faultline.toml");
    std::fs::write(&config, "[engine]\ndedupe_horizon = \"1m\"\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let daemon = Killed(
        Command::new(env!("CARGO_BIN_EXE_faultline"))
            .args(["run", "--rules"])
            .arg(dir.path())
            .arg("--config")
            .arg(&config)
            .env("FAULTLINE_NATS_URL", server.url())
            .env("FAULTLINE_LISTEN", format!("127.0.0.1:{port}"))
            .env("FAULTLINE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = daemon.0.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(port, "faultline_nats_connected") != Some(1.0) {
        assert!(Instant::now() < deadline, "the daemon did not connect");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut load = Killed(
        Command::new(env!("CARGO_BIN_EXE_faultline"))
            .args(["load", "--live", "--seed", "3", "--nats", &server.url()])
            .args(["--duration", &format!("{}s", secs as u64)])
            .args(["--events-per-sec", &rate.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );

    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed().as_secs_f64() < secs {
        std::thread::sleep(Duration::from_secs(2));
        assert!(
            load.0.try_wait().unwrap().is_none() || started.elapsed().as_secs_f64() > secs - 5.0,
            "the load generator stopped early"
        );
        samples.push(Sample {
            at_s: started.elapsed().as_secs_f64(),
            rss_kib: rss_kib(pid),
            fds: open_fds(pid),
            pending: metric(port, "faultline_nats_consumer_pending").unwrap_or(f64::NAN),
        });
    }
    // The scenario's stragglers (late and redelivered events) would keep it
    // going for minutes more: stop it.
    drop(load);
    // The backlog drains once the load stops.
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(port, "faultline_nats_consumer_pending") != Some(0.0) {
        assert!(Instant::now() < deadline, "the consumer did not catch up");
        std::thread::sleep(Duration::from_millis(500));
    }
    let received = metric(port, "faultline_events_received_total").unwrap_or(0.0);

    let steady: Vec<&Sample> = samples.iter().filter(|s| s.at_s >= warm).collect();
    assert!(steady.len() >= 10, "{samples:?}");
    let half = steady.len() / 2;
    let mean = |xs: &[&Sample]| xs.iter().map(|s| s.rss_kib as f64).sum::<f64>() / xs.len() as f64;
    let (early, late) = (mean(&steady[..half]), mean(&steady[half..]));
    let fds_min = steady.iter().map(|s| s.fds).min().unwrap();
    let fds_max = steady.iter().map(|s| s.fds).max().unwrap();
    let pending_max = steady.iter().map(|s| s.pending).fold(0.0, f64::max);
    eprintln!(
        "{}",
        serde_json::json!({
            "seconds": secs, "rate": rate, "events_received": received,
            "rss_mib_after_warmup_first_half": early / 1024.0,
            "rss_mib_after_warmup_second_half": late / 1024.0,
            "rss_mib_max": samples.iter().map(|s| s.rss_kib).max().unwrap() as f64 / 1024.0,
            "fds_min": fds_min, "fds_max": fds_max,
            "pending_max_after_warmup": pending_max,
            "rss_mib_every_30s": samples.iter().step_by(15).map(|s| s.rss_kib / 1024).collect::<Vec<_>>(),
        })
    );
    assert!(
        received >= rate * secs * 0.8,
        "{received} events for {rate}/s over {secs} s"
    );
    // No growth: the second half of the steady phase holds no more memory than
    // the first, beyond allocator noise.
    assert!(
        late <= early * 1.05 + 4096.0,
        "RSS grew from {early:.0} to {late:.0} KiB after warm-up: {samples:?}"
    );
    assert!(
        fds_max - fds_min <= 2,
        "open descriptors moved: {samples:?}"
    );
    // Lag stays within a couple of seconds of traffic (a sample may land
    // mid-batch), never accumulating.
    assert!(
        pending_max <= rate * 2.0,
        "lag reached {pending_max} messages: {samples:?}"
    );
    drop(daemon);
}
