//! Fault tolerance of a faultline cluster: a 3-node NATS JetStream cluster on
//! loopback (three `nats-server` processes with routes, every stream and bucket
//! at 3 replicas), three `faultline run` replicas with `cluster.enabled`, a
//! real ClickHouse and the Slack stand-in. Live auth traffic flows at about 200
//! events/s; four outages are injected one after the other, each with a
//! different fault during it:
//!
//! 1. kill -9 the active detector once the incident is posted (a standby takes
//!    over, rebuilds the windows from the counts, and resolves it in the thread);
//! 2. kill -9 a replica that is not the detector (its unacked events go to the
//!    others);
//! 3. kill -9 a NATS node (clients move to the other two);
//! 4. kill -9 ClickHouse (detection and Slack go on without the store);
//! 5. kill -9 the detector as the outage starts, before anything is posted.
//!
//! Every outage must end as exactly one incident with exactly one Slack post
//! (its root message), resolved in place, and nothing else may be posted.
//!
//! The soak test (`ops/soak.rs`) and the lease and claims tests against a lone
//! server run in this binary too, in parallel with it.

mod common;
#[path = "ops/soak.rs"]
mod soak;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::clickhouse_server::ClickHouseServer;
use common::http::{http, metric, q};
use common::nats_server::NatsServer;
use common::slack_stub::{Msg, SlackStub};

const RULE: &str = r#"
rules:
  - name: auth_failures
    description: Authorization failures above their learned baseline.
    kind: auth
    failures: [failure]
    dimensions: [provider, region]
    window: 10s
    step: 2s
    baseline:
      horizon: 2m
      warmup: 20s
      prior_events: 50
    thresholds:
      min_events: 20
      min_failures: 8
      min_lift: 2.0
      min_rate_increase: 0.05
      false_alarm_rate: 0.0001
    open_after: 2
    resolve_after: 3
    severity: critical
"#;

const PROVIDERS: [&str; 5] = ["alpha", "bravo", "charlie", "delta", "echo"];
const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Replica {
    node: String,
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Replica {
    /// Running, and its HTTP port answers.
    fn answers(&self) -> bool {
        self.child.is_some() && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    nats: Vec<NatsServer>,
    clickhouse: ClickHouseServer,
    slack: SlackStub,
    replicas: Vec<Replica>,
    /// The cell of the outage going on: its explanation goes in failure reports.
    probe: Option<(String, String)>,
}

impl Cluster {
    /// The index of the NATS node leading `stream` (names are `n1`..`n3`).
    fn stream_leader(&self, stream: &str) -> Option<usize> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async {
            let client = async_nats::connect(self.nats_urls()).await.ok()?;
            let js = async_nats::jetstream::new(client);
            let mut s = js.get_stream(stream).await.ok()?;
            let leader = s.info().await.ok()?.cluster.as_ref()?.leader.clone()?;
            leader
                .strip_prefix('n')?
                .parse::<usize>()
                .ok()?
                .checked_sub(1)
        })
    }

    fn nats_urls(&self) -> String {
        self.nats
            .iter()
            .map(|n| n.url())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) {
        let r = &mut self.replicas[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&r.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_faultline"))
            .args(["run", "--rules"])
            .arg(self.dir.path().join("rules"))
            .arg("--config")
            .arg(self.dir.path().join(format!("{}.toml", r.node)))
            .env("FAULTLINE_NATS_URL", {
                // Each replica prefers a different node first.
                let mut urls: Vec<String> = self.nats.iter().map(|n| n.url()).collect();
                let n = urls.len();
                urls.rotate_left(i % n);
                urls.join(",")
            })
            .env("FAULTLINE_LISTEN", format!("127.0.0.1:{}", r.port))
            .env("FAULTLINE_CLICKHOUSE_URL", self.clickhouse.url())
            .env("FAULTLINE_SLACK_TOKEN", common::slack_stub::TOKEN)
            .env("FAULTLINE_SLACK_CHANNEL", "#faultline-default")
            .env("FAULTLINE_SLACK_API_URL", &self.slack.api_url)
            .env(
                "FAULTLINE_LOG",
                "info,async_nats=warn,faultline::cluster::detector=debug",
            )
            .env("FAULTLINE_API_TOKENS", "r3ad:read")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        r.child = Some(child);
    }

    /// Starts again the replicas that exited on their own (a detector that
    /// lost its lease exits, for its supervisor to restart it as a standby),
    /// as Kubernetes or systemd would.
    fn supervise(&mut self) {
        for i in 0..self.replicas.len() {
            let exited = self.replicas[i]
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                eprintln!(
                    "  {} exited ({status}); its supervisor starts it again",
                    self.replicas[i].node
                );
                // On a new port: the one picked at start may have been
                // taken since (an exit status 2 is "cannot listen").
                self.replicas[i].port = free_port();
                self.spawn(i);
            }
        }
    }

    /// The replica holding the detector lease (by its metrics).
    fn leader(&self) -> Option<usize> {
        self.replicas.iter().position(|r| {
            r.child.is_some() && metric(r.port, "faultline_cluster_leader") == Some(1.0)
        })
    }

    fn wait_leader(&mut self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            self.supervise();
            if let Some(i) = self.leader() {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "no replica became the detector within {within:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for Slack's messages to satisfy `cond`; on timeout, fails with
    /// the messages and the replicas' logs.
    fn wait_msgs(&mut self, what: &str, within: Duration, cond: impl Fn(&[Msg]) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            self.supervise();
            let msgs = self.slack.messages();
            if cond(&msgs) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; messages: {msgs:#?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The replicas' log sizes, to print what a case logged ([`Self::logs_since`]).
    fn log_marks(&self) -> Vec<usize> {
        self.replicas
            .iter()
            .map(|r| std::fs::metadata(&r.log).map_or(0, |m| m.len() as usize))
            .collect()
    }

    /// What the replicas logged (not DEBUG) since `marks`.
    fn logs_since(&self, marks: &[usize]) -> String {
        self.replicas
            .iter()
            .zip(marks)
            .map(|(r, &from)| {
                let text = std::fs::read(&r.log).unwrap_or_default();
                let text = String::from_utf8_lossy(text.get(from..).unwrap_or_default());
                let lines: Vec<&str> = text.lines().filter(|l| !l.contains("DEBUG")).collect();
                format!("--- {} ---\n{}", r.node, lines.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn logs(&self) -> String {
        self.replicas
            .iter()
            .map(|r| {
                let text = std::fs::read_to_string(&r.log).unwrap_or_default();
                let tail: Vec<&str> = text
                    .lines()
                    .filter(|l| !l.contains("DEBUG") || l.contains("cluster::detector"))
                    .rev()
                    .take(80)
                    .collect();
                // Where the counts stopped: events in, counts out, counts in.
                let metrics = if r.answers() {
                    let (_, body) = http(r.port, "GET", "/metrics", None, b"");
                    body.lines()
                        .filter(|l| {
                            !l.starts_with('#')
                                && (l.starts_with("faultline_cluster")
                                    || l.starts_with("faultline_events")
                                    || l.starts_with("faultline_nats"))
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                } else {
                    "(not running)".to_string()
                };
                format!(
                    "--- {} ---\n{}\n{metrics}",
                    r.node,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
            + &self.summary()
    }

    /// A few lines on where each replica stands, last in a failure report
    /// (CI shows a failure's tail): its role, counts in and out, the
    /// detector's view of the outage's cell (the conditions it failed) and
    /// open incidents, its last cluster log lines.
    fn summary(&self) -> String {
        let mut out = String::from("=== summary ===\n");
        for r in &self.replicas {
            let up = r.answers();
            let m = |name: &str| metric(r.port, name).map_or("-".to_string(), |v| v.to_string());
            if up {
                out += &format!(
                    "{}: leader={} terms={} fed={} gap={} lag={}s accepted={} published={}\n",
                    r.node,
                    m("faultline_cluster_leader"),
                    m("faultline_cluster_leaderships_total"),
                    m("faultline_cluster_counts_read_total{what=\"fed\"}"),
                    m("faultline_cluster_counts_read_total{what=\"gap\"}"),
                    m("faultline_cluster_counts_lag_seconds"),
                    m("faultline_events_accepted_total"),
                    m("faultline_cluster_partials_published_total"),
                );
            } else {
                out += &format!("{}: not running\n", r.node);
            }
            if let (true, Some((provider, region))) = (
                up && metric(r.port, "faultline_cluster_leader") == Some(1.0),
                &self.probe,
            ) {
                let dims = format!("provider={provider},region={region}");
                let (_, body) = http(
                    r.port,
                    "GET",
                    &format!("/explain?rule=auth_failures&dims={}", q(&dims)),
                    Some("r3ad"),
                    b"",
                );
                let e = serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default();
                let f = |k: &str| e.get(k).map_or("?".to_string(), |v| v.to_string());
                let failed: Vec<String> = e["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|c| c["held"] == false)
                    .map(|c| format!("{}={}", c["name"].as_str().unwrap_or("?"), c["actual"]))
                    .collect();
                let (_, incidents) = http(r.port, "GET", "/incidents", Some("r3ad"), b"");
                let open = incidents.matches("\"status\":\"open\"").count();
                out += &format!(
                    "  explain {provider}/{region}: warm={} n={} f={} baseline={} stat={} threshold={} failed=[{}] step_end={}; open incidents: {open}\n",
                    f("warm"),
                    f("attempts"),
                    f("failures"),
                    f("baseline_rate"),
                    f("statistic"),
                    f("threshold"),
                    failed.join(" "),
                    f("step_end_ms"),
                );
            }
            let text = std::fs::read_to_string(&r.log).unwrap_or_default();
            let last: Vec<String> = text
                .lines()
                .filter(|l| !l.contains("DEBUG") && l.contains("faultline::cluster"))
                .rev()
                .take(3)
                .map(|l| strip_ansi(l).chars().take(200).collect())
                .collect();
            for l in last.into_iter().rev() {
                out += &format!("  {l}\n");
            }
        }
        // The outage cell's steps as the detectors evaluated them (seconds
        // into the hour, attempts/failures/baseline): where a baseline
        // learned what it should have flagged.
        if let Some((provider, region)) = &self.probe {
            let rows = self
                .clickhouse
                .try_sql(&format!(
                    "SELECT toUnixTimestamp(ts) % 3600, attempts, failures, round(baseline, 3) \
                     FROM faultline.cell_steps WHERE provider = '{provider}' \
                     AND region = '{region}' ORDER BY ts, inserted_at FORMAT TSV"
                ))
                .unwrap_or_else(|e| e);
            let steps: Vec<String> = rows
                .lines()
                .map(|l| l.split('\t').collect::<Vec<_>>().join("/"))
                .collect();
            let from = steps.len().saturating_sub(60);
            out += &format!(
                "steps of {provider}/{region}: {}\n",
                steps[from..].join(" ")
            );
        }
        out
    }
}

/// `line` without its terminal colour codes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Up to and including the final letter of the sequence.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn write_config(dir: &Path, node: &str) {
    std::fs::write(
        dir.join(format!("{node}.toml")),
        format!(
            r#"
[engine]
allowed_lateness = "5s"

[nats]
replicas = 3
max_age = "1h"

[cluster]
enabled = true
node = "{node}"
flush_interval = "500ms"
lease_ttl = "3s"
ack_wait = "3s"
partials_max_age = "10m"

[slack]
min_interval = "50ms"
charts = false
"#
        ),
    )
    .unwrap();
}

/// Publishes live auth traffic until `stop`: every 100 ms, 2 events per
/// provider and region, 2% failing, 90% for the cells in `faults`.
fn traffic(
    urls: String,
    faults: Arc<Mutex<Vec<(String, String)>>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let client = loop {
                let servers: Vec<&str> = urls.split(',').collect();
                match async_nats::connect(servers).await {
                    Ok(c) => break c,
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            };
            let js = async_nats::jetstream::new(client);
            let mut n: u64 = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut ticks: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                ticks += 1;
                let now = chrono::Utc::now();
                let faulted = faults.lock().unwrap().clone();
                let mut acks = Vec::new();
                for p in PROVIDERS {
                    for r in REGIONS {
                        let bad = faulted.iter().any(|(fp, fr)| fp == p && fr == r);
                        for j in 0..2 {
                            n += 1;
                            // Counted per cell (the tick's k-th of the cell):
                            // a global count steps by 20 a tick and gave some
                            // cells 0% and others 10% failing.
                            let k = ticks * 2 + j;
                            let fail = if bad { k % 10 != 0 } else { k % 50 == 0 };
                            let body = serde_json::json!({
                                "id": format!("ev-{n}"),
                                "ts": now.to_rfc3339(),
                                "kind": "auth",
                                "outcome": if fail { "failure" } else { "success" },
                                "provider": p,
                                "region": r,
                            })
                            .to_string();
                            let mut headers = async_nats::HeaderMap::new();
                            headers.insert("Nats-Msg-Id", format!("ev-{n}").as_str());
                            if let Ok(ack) = js
                                .publish_with_headers("payments.auth", headers, body.into())
                                .await
                            {
                                acks.push(ack);
                            }
                        }
                    }
                }
                // A node going down loses a few in-flight publishes; the
                // traffic goes on (as a payment service's would). One bound
                // for the tick's acks together: awaited one by one, 20 acks
                // timing out while a stream elects its leader stalled the
                // traffic for 40 s, and the outage looked undetected.
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    futures_util::future::join_all(
                        acks.into_iter().map(std::future::IntoFuture::into_future),
                    ),
                )
                .await;
            }
            n
        })
    })
}

/// Root messages (not thread replies) that mention `provider`.
fn roots<'a>(msgs: &'a [Msg], provider: &str) -> Vec<&'a Msg> {
    msgs.iter()
        .filter(|m| m.thread_ts.is_none() && m.body.to_string().contains(provider))
        .collect()
}

fn resolved(m: &Msg) -> bool {
    m.body.to_string().contains("Resolved")
}

#[test]
fn every_fault_ends_as_exactly_one_incident_and_one_slack_post() {
    let Some(clickhouse) = ClickHouseServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/auth.yaml"), RULE).unwrap();
    let mut cluster = Cluster {
        nats: NatsServer::cluster(3),
        clickhouse,
        slack: SlackStub::start(),
        replicas: Vec::new(),
        dir,
        probe: None,
    };
    for i in 0..3 {
        let node = format!("replica-{}", i + 1);
        write_config(cluster.dir.path(), &node);
        cluster.replicas.push(Replica {
            log: cluster.dir.path().join(format!("{node}.log")),
            node,
            port: free_port(),
            child: None,
        });
    }
    for i in 0..3 {
        cluster.spawn(i);
    }
    let first = cluster.wait_leader(Duration::from_secs(90));
    eprintln!("detector: {}", cluster.replicas[first].node);

    let faults: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = traffic(cluster.nats_urls(), faults.clone(), stop.clone());
    // Baselines learn (warm-up 20 s) on clean traffic.
    std::thread::sleep(Duration::from_secs(26));
    assert!(
        roots(&cluster.slack.messages(), "").is_empty(),
        "clean traffic posted something: {:?}",
        cluster.slack.messages()
    );

    let mut outcomes: HashMap<&str, String> = HashMap::new();
    let cases: [(&str, &str, &str); 5] = [
        ("detector killed after the post", "alpha", "us-east-1"),
        ("replica killed", "bravo", "eu-west-1"),
        ("NATS node killed", "charlie", "us-east-1"),
        ("ClickHouse killed", "delta", "eu-west-1"),
        ("detector killed before the post", "echo", "us-east-1"),
    ];
    // `FAULTLINE_CLUSTER_CASES=5` (or `1,3`) runs some of them, for debugging.
    let only: Option<Vec<usize>> = std::env::var("FAULTLINE_CLUSTER_CASES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect());
    let cases: Vec<(&str, &str, &str)> = cases
        .into_iter()
        .enumerate()
        .filter(|(i, _)| only.as_ref().is_none_or(|o| o.contains(&(i + 1))))
        .map(|(_, c)| c)
        .collect();
    for &(case, provider, region) in &cases {
        eprintln!("case: {case}");
        let started = Instant::now();
        let marks = cluster.log_marks();
        cluster.probe = Some((provider.to_string(), region.to_string()));
        faults
            .lock()
            .unwrap()
            .push((provider.to_string(), region.to_string()));
        let mut killed_replica = None;
        let mut killed_nats = None;
        let mut killed_clickhouse = false;
        match case {
            "detector killed before the post" => {
                let l = cluster.wait_leader(Duration::from_secs(30));
                cluster.replicas[l].kill();
                killed_replica = Some(l);
            }
            "NATS node killed" => {
                // The node leading the lease bucket: the hardest one to lose,
                // as the detector cannot renew and steps down mid-outage, and
                // a standby takes over while the cluster elects new leaders.
                let node = cluster.stream_leader("KV_faultline_lease").unwrap_or(1);
                eprintln!("  killing NATS node n{}", node + 1);
                cluster.nats[node].kill();
                killed_nats = Some(node);
            }
            "ClickHouse killed" => {
                cluster.clickhouse.kill();
                killed_clickhouse = true;
            }
            _ => {}
        }
        cluster.wait_msgs(
            &format!("{case}: the incident posted"),
            Duration::from_secs(60),
            |msgs| !roots(msgs, provider).is_empty(),
        );
        eprintln!("  posted after {:?}", started.elapsed());
        match case {
            "detector killed after the post" => {
                let l = cluster.wait_leader(Duration::from_secs(30));
                cluster.replicas[l].kill();
                killed_replica = Some(l);
            }
            "replica killed" => {
                let l = cluster.wait_leader(Duration::from_secs(30));
                let other = (l + 1) % 3;
                cluster.replicas[other].kill();
                killed_replica = Some(other);
            }
            _ => {}
        }
        // The outage goes on a while through the fault, then ends.
        std::thread::sleep(Duration::from_secs(5));
        faults.lock().unwrap().clear();
        cluster.wait_msgs(
            &format!("{case}: the incident resolved"),
            Duration::from_secs(90),
            |msgs| roots(msgs, provider).iter().any(|m| resolved(m)),
        );
        eprintln!("  resolved after {:?}", started.elapsed());
        // Shown with --nocapture (or when the test fails): how the fault went.
        eprintln!("{}", cluster.logs_since(&marks));
        let msgs = cluster.slack.messages();
        let posted = roots(&msgs, provider);
        outcomes.insert(case, format!("{} post(s)", posted.len()));
        assert_eq!(
            posted.len(),
            1,
            "{case}: one post for the outage, got {}:\n{posted:#?}\n{}",
            posted.len(),
            cluster.logs()
        );
        // Back to full strength before the next fault.
        if let Some(i) = killed_replica {
            cluster.spawn(i);
        }
        if let Some(i) = killed_nats {
            cluster.nats[i].start_again();
        }
        if killed_clickhouse {
            cluster.clickhouse.restart();
        }
        let leader = cluster.wait_leader(Duration::from_secs(30));
        if case == "detector killed after the post" {
            // The new detector re-derived the posted incident from the counts
            // and kept quiet through its claim (not only through Slack's history).
            let quiet = metric(
                cluster.replicas[leader].port,
                "faultline_cluster_claims_total{result=\"quiet\"}",
            )
            .unwrap_or(0.0);
            assert!(
                quiet >= 1.0,
                "the takeover claimed nothing quietly\n{}",
                cluster.logs()
            );
        }
        // The windows move past the outage before the next one starts.
        std::thread::sleep(Duration::from_secs(6));
    }
    stop.store(true, Ordering::Relaxed);
    let published = publisher.join().unwrap();
    let msgs = cluster.slack.messages();
    let all_roots = roots(&msgs, "");
    eprintln!("published {published} events; outcomes {outcomes:?}");
    assert_eq!(
        all_roots.len(),
        cases.len(),
        "exactly one post per outage and none besides: {all_roots:#?}"
    );
    // Claims show the takeovers kept quiet what the former detector posted.
    let quiet: f64 = cluster
        .replicas
        .iter()
        .filter_map(|r| metric(r.port, "faultline_cluster_claims_total{result=\"quiet\"}"))
        .sum();
    eprintln!("quiet claims on the live replicas: {quiet}");
}

/// An open incident of `rule` on `provider`, opened at `opened_ms`.
fn incident(id: &str, provider: &str, opened_ms: i64) -> faultline::incident::Incident {
    use faultline::incident::{ts, Incident, RootCause, Status, SummarySource, TimeRange};
    Incident {
        id: id.to_string(),
        rule: "auth_failures".into(),
        kind: "auth".into(),
        severity: faultline::rules::Severity::Critical,
        status: Status::Open,
        opened_at: ts(opened_ms),
        updated_at: ts(opened_ms),
        resolved_at: None,
        root_causes: vec![RootCause {
            dims: [("provider".to_string(), provider.to_string())].into(),
            score: 0.9,
            events: 400,
            failures: 300,
            expected_failures: 8.0,
            failure_rate: 0.75,
            baseline_rate: 0.02,
            expected_events: None,
        }],
        window: TimeRange {
            start: ts(opened_ms - 10_000),
            end: ts(opened_ms),
        },
        title: "t".into(),
        summary: "s".into(),
        summary_source: SummarySource::Template,
        links: Vec::new(),
        prompt_version: None,
        candidates: Vec::new(),
        episode: Default::default(),
    }
}

/// The lease: one holder at a time, renewal by compare-and-set, takeover once
/// it expires, and a lost lease is known as lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_has_one_holder_and_passes_on_when_it_expires() {
    use faultline::cluster::lease::{self, Lease, Renewal};
    let server = NatsServer::start();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let ttl = Duration::from_secs(1);
    let store = lease::bucket(&js, ttl, 1).await.unwrap();
    let mut a = Lease::try_acquire(&store, "a/1", ttl)
        .await
        .unwrap()
        .expect("free");
    assert!(Lease::try_acquire(&store, "b/1", ttl)
        .await
        .unwrap()
        .is_none());
    assert_eq!(a.renew().await, Renewal::Held);
    assert_eq!(lease::holder(&store).await.as_deref(), Some("a/1"));
    // A clean release hands it over at once.
    a.release().await;
    let b = Lease::try_acquire(&store, "b/1", ttl)
        .await
        .unwrap()
        .expect("released");
    assert!(b.epoch() > 0);
    // Not renewed: it expires and the next one takes it; the old holder's
    // renewal then fails.
    let mut b = b;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let c = Lease::try_acquire(&store, "c/1", ttl).await.unwrap();
    assert!(c.is_some(), "an expired lease is free");
    assert_eq!(b.renew().await, Renewal::Lost);
    assert!(c.unwrap().epoch() > b.epoch(), "terms grow");
}

/// Claims: the first claim notifies, a repeat stays quiet, a claim left
/// pending by a former term is taken over once, a done claim stays quiet; an
/// incident re-derived with another id adopts its episode's first id until
/// the episode ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_and_episodes_keep_a_takeover_from_notifying_twice() {
    use faultline::cluster::ledger::{self, Claim, Ledger};
    use faultline::incident::Transition;
    let server = NatsServer::start();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let store = ledger::bucket(&js, 1).await.unwrap();
    let metrics = Arc::new(faultline::metrics::Metrics::new());
    let t1 = Ledger::new(store.clone(), 1, "a", metrics.clone());
    let t2 = Ledger::new(store.clone(), 2, "b", metrics.clone());
    let t3 = Ledger::new(store.clone(), 3, "c", metrics.clone());

    let Claim::Notify { key, revision: _ } = t1.claim("inc_1.opened").await else {
        panic!("the first claim notifies");
    };
    assert_eq!(key, "inc_1.opened");
    assert_eq!(
        t1.claim("inc_1.opened").await,
        Claim::Quiet,
        "ours, in flight"
    );
    // Term 1 died before delivering: term 2 takes it over, once.
    let Claim::Notify { revision, .. } = t2.claim("inc_1.opened").await else {
        panic!("a pending claim of a dead term is taken over");
    };
    assert_eq!(
        t1.claim("inc_1.opened").await,
        Claim::Quiet,
        "a stale term never takes a later term's claim"
    );
    t2.done("inc_1.opened", revision).await;
    assert_eq!(t3.claim("inc_1.opened").await, Claim::Quiet, "delivered");
    assert_eq!(metrics.cluster_claims().get("taken_over"), Some(&1));

    // Episodes: term 2 re-derives the outage term 1 opened, 6 s later.
    let opened = 1_700_000_000_000;
    let (first, told) = t1
        .adopt(Transition::Opened(incident("inc_a", "alpha", opened)))
        .await;
    assert_eq!((first.incident().id.as_str(), told), ("inc_a", false));
    let (again, told) = t2
        .adopt(Transition::Opened(incident(
            "inc_b",
            "alpha",
            opened + 6_000,
        )))
        .await;
    assert_eq!(
        (again.incident().id.as_str(), told),
        ("inc_a", false),
        "adopts the first id"
    );
    let mut resolved = incident("inc_b", "alpha", opened + 6_000);
    resolved.status = faultline::incident::Status::Resolved;
    let (done, _) = t2.adopt(Transition::Resolved(resolved)).await;
    assert_eq!(done.incident().id, "inc_a", "its resolution too");
    assert_eq!(ledger::key_of(&done), "inc_a.resolved");
    // Another fingerprint is its own episode.
    let (other, _) = t2
        .adopt(Transition::Opened(incident("inc_x", "bravo", opened)))
        .await;
    assert_eq!(other.incident().id, "inc_x");
    // The end is told at +40 s. A later term re-deriving the same outage
    // (opening before that end) adopts the id and knows it is over...
    t2.end_episode("inc_a", opened + 40_000).await;
    let (rederived, told) = t3
        .adopt(Transition::Opened(incident(
            "inc_d",
            "alpha",
            opened + 8_000,
        )))
        .await;
    assert_eq!((rederived.incident().id.as_str(), told), ("inc_a", true));
    // ...while an outage opening after the end is a new incident.
    let t4 = Ledger::new(store.clone(), 4, "d", metrics.clone());
    let (next, told) = t4
        .adopt(Transition::Opened(incident(
            "inc_c",
            "alpha",
            opened + 60_000,
        )))
        .await;
    assert_eq!((next.incident().id.as_str(), told), ("inc_c", false));
}
