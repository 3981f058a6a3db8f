//! NATS JetStream ingest against a real `nats-server -js` started per test.
//!
//! The engine runs in event time (`Clock::EventTime`) so a generated scenario
//! fires the same incidents whenever the test runs.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_trait::async_trait;
use common::nats_server::NatsServer;
use faultline::app::App;
use faultline::config::Settings;
use faultline::incident::Transition;
use faultline::ingest::generator::{Generator, Scenario};
use faultline::ingest::nats::{DEADLETTER_SUBJECT, DURABLE, REASON_HEADER};
use faultline::notify::{Notifier, NotifyError};
use faultline::pipeline::Clock;
use faultline::rules::RuleSet;
use futures_util::StreamExt;

/// One notification: (transition kind, incident id, rule).
type Notified = (&'static str, String, String);

/// Records what was notified.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Notified>>>);

#[async_trait]
impl Notifier for Recorder {
    async fn notify(&self, t: &Transition) -> Result<(), NotifyError> {
        let kind = match t {
            Transition::Opened(_) => "opened",
            Transition::Updated(_) => "updated",
            Transition::Resolved(_) => "resolved",
        };
        let inc = t.incident();
        self.0
            .lock()
            .unwrap()
            .push((kind, inc.id.clone(), inc.rule.clone()));
        Ok(())
    }
}

impl Recorder {
    fn opened(&self, rule: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _, r)| *k == "opened" && r == rule)
            .map(|(_, id, _)| id.clone())
            .collect()
    }
}

fn settings(url: &str, stream: &str) -> Settings {
    let mut s = Settings {
        listen: "127.0.0.1:0".into(),
        ..Settings::default()
    };
    s.nats.url = Some(url.into());
    s.nats.stream = stream.into();
    s.nats.subjects = vec![format!("{}.>", stream.to_lowercase())];
    s
}

/// Waits (bounded) for `cond`, checking every 50 ms.
async fn wait_for(what: &str, limit: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes lines to `subject`, awaiting the stream's acks in chunks.
async fn publish(js: &jetstream::Context, subject: &str, lines: &[String]) {
    for chunk in lines.chunks(1000) {
        let mut acks = Vec::with_capacity(chunk.len());
        for l in chunk {
            acks.push(
                js.publish(subject.to_string(), l.clone().into())
                    .await
                    .expect("publish"),
            );
        }
        for a in acks {
            a.await.expect("publish ack");
        }
    }
}

/// Consumer state seen by an outside client: (pending, ack pending).
async fn consumer_state(js: &jetstream::Context, stream: &str) -> (u64, usize) {
    let mut c: jetstream::consumer::PullConsumer = js
        .get_consumer_from_stream(DURABLE, stream)
        .await
        .expect("durable consumer");
    let info = c.info().await.expect("consumer info");
    (info.num_pending, info.num_ack_pending)
}

/// A scenario with its first fault; returns (lines, rule, root cause dims).
fn scenario() -> (Vec<String>, Scenario) {
    let sc = Scenario::standard(5, 55 * 60_000, 60.0);
    let lines = Generator::new(&sc).unwrap().map(|l| l.text).collect();
    (lines, sc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumes_a_scenario_and_detects_its_fault() {
    let server = NatsServer::start();
    let (lines, sc) = scenario();
    let first = sc.labels().faults.first().expect("a fault").clone();
    let settings = settings(&server.url(), "PAYTEST");
    let rec = Recorder::default();
    let app = App::build_with(
        &settings,
        RuleSet::embedded(),
        Clock::EventTime,
        Arc::new(rec.clone()),
    )
    .await
    .expect("app builds against NATS");
    let metrics = app.metrics();
    let store = app.store();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async move {
        let _ = stop_rx.await;
    }));

    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    publish(&js, "paytest.auth", &lines).await;

    wait_for(
        "every message received",
        Duration::from_secs(120),
        async || metrics.received() >= lines.len() as u64,
    )
    .await;
    wait_for(
        "the fault's incident",
        Duration::from_secs(60),
        async || !rec.opened(&first.rule).is_empty(),
    )
    .await;
    let ids = rec.opened(&first.rule);
    assert_eq!(ids.len(), 1, "{ids:?}");
    let stored = store.get(&ids[0]).await.unwrap().expect("stored");
    assert_eq!(stored.incident.root_causes[0].dims, first.dims);
    wait_for("every message acked", Duration::from_secs(30), async || {
        consumer_state(&js, "PAYTEST").await == (0, 0)
    })
    .await;
    // The lag is measured once a second.
    wait_for("the lag gauge at 0", Duration::from_secs(30), async || {
        metrics
            .render()
            .contains("faultline_nats_consumer_pending 0\n")
    })
    .await;

    let _ = stop_tx.send(());
    running.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_messages_are_dead_lettered_with_their_reason() {
    let server = NatsServer::start();
    let settings = settings(&server.url(), "DLTEST");
    let app = App::build_with(
        &settings,
        RuleSet::embedded(),
        Clock::EventTime,
        Arc::new(Recorder::default()),
    )
    .await
    .unwrap();
    let metrics = app.metrics();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async move {
        let _ = stop_rx.await;
    }));

    let client = async_nats::connect(server.url()).await.unwrap();
    let mut dead = client.subscribe(DEADLETTER_SUBJECT).await.unwrap();
    client.flush().await.unwrap();
    let js = jetstream::new(client.clone());
    let pan = "4111111111111111";
    let valid = r#"{"id":"ok1","ts":"2026-03-02T00:00:00Z","kind":"auth","outcome":"success","provider":"p","region":"r"}"#;
    let card = format!(
        r#"{{"id":"c1","ts":"2026-03-02T00:00:00Z","kind":"auth","outcome":"success","provider":"p","region":"r","bin":"{pan}"}}"#
    );
    let oversized = format!(r#"{{"id":"big","message":"{}"}}"#, "x".repeat(70_000));
    let lines = vec!["{not json".to_string(), valid.to_string(), card, oversized];
    publish(&js, "dltest.auth", &lines).await;

    let mut reasons = Vec::new();
    while reasons.len() < 3 {
        let msg = tokio::time::timeout(Duration::from_secs(30), dead.next())
            .await
            .expect("a dead letter within 30 s")
            .expect("subscription open");
        let reason = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(REASON_HEADER))
            .map(|v| v.as_str().to_string())
            .expect("a reason header");
        let body = String::from_utf8_lossy(&msg.payload);
        assert!(!body.contains(pan), "card number dead-lettered: {body}");
        // The body is built from the parsed, redacted message, never its bytes.
        let dl: serde_json::Value = serde_json::from_slice(&msg.payload).expect("a JSON body");
        assert_eq!(dl["reason"], reason.as_str(), "{body}");
        if reason != "card_number_in_bin" {
            assert!(dl["event"].is_null(), "{body}");
        }
        reasons.push(reason);
    }
    reasons.sort();
    assert_eq!(
        reasons,
        vec!["card_number_in_bin", "invalid_json", "oversized"]
    );
    wait_for("every message acked", Duration::from_secs(30), async || {
        consumer_state(&js, "DLTEST").await == (0, 0)
    })
    .await;
    assert_eq!(metrics.received(), 4);
    wait_for(
        "the valid event counted",
        Duration::from_secs(30),
        async || metrics.accepted() == 1,
    )
    .await;

    let _ = stop_tx.send(());
    running.await.unwrap().unwrap();
}

/// Builds and runs an app on its own runtime, so dropping the runtime kills
/// every task of it at once, as kill -9 would.
fn start_app(settings: &Settings, rec: Recorder) -> (tokio::runtime::Runtime, App2) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = rt
        .block_on(App::build_with(
            settings,
            RuleSet::embedded(),
            Clock::EventTime,
            Arc::new(rec),
        ))
        .unwrap();
    let handles = App2 {
        metrics: app.metrics(),
        store: app.store(),
    };
    rt.spawn(app.run_until(std::future::pending()));
    (rt, handles)
}

struct App2 {
    metrics: Arc<faultline::metrics::Metrics>,
    store: Arc<dyn faultline::store::Store>,
}

#[test]
fn restart_mid_stream_neither_loses_nor_repeats_an_incident() {
    let server = NatsServer::start();
    let (lines, sc) = scenario();
    let first = sc.labels().faults.first().expect("a fault").clone();
    let settings = settings(&server.url(), "RESTART");
    let client_rt = tokio::runtime::Runtime::new().unwrap();
    let js = client_rt
        .block_on(async { jetstream::new(async_nats::connect(server.url()).await.unwrap()) });
    // First run: everything up to a few minutes into the fault.
    let cut_ms = first.start.timestamp_millis() + 4 * 60_000;
    let cut = Generator::new(&sc)
        .unwrap()
        .take_while(|l| l.arrival_ms < cut_ms)
        .count();
    let (a_rec, b_rec) = (Recorder::default(), Recorder::default());
    let (a_rt, a) = start_app(&settings, a_rec.clone());
    client_rt.block_on(async {
        publish(&js, "restart.auth", &lines[..cut]).await;
        wait_for(
            "the first run opens the incident",
            Duration::from_secs(120),
            async || !a_rec.opened(&first.rule).is_empty(),
        )
        .await;
        wait_for(
            "the first run acks everything",
            Duration::from_secs(60),
            async || consumer_state(&js, "RESTART").await == (0, 0),
        )
        .await;
    });
    let a_ids = a_rec.opened(&first.rule);
    assert_eq!(a_ids.len(), 1, "{a_ids:?}");
    assert!(a.metrics.received() >= cut as u64);
    // Kill it: every task stops where it is.
    a_rt.shutdown_background();

    // The rest arrives while it is down; the second run catches up.
    client_rt.block_on(publish(&js, "restart.auth", &lines[cut..]));
    let (_b_rt, b) = start_app(&settings, b_rec.clone());
    client_rt.block_on(async {
        wait_for(
            "the second run acks everything",
            Duration::from_secs(120),
            async || consumer_state(&js, "RESTART").await == (0, 0),
        )
        .await;
        wait_for(
            "the incident rebuilt in the second run",
            Duration::from_secs(60),
            async || matches!(b.store.get(&a_ids[0]).await, Ok(Some(_))),
        )
        .await;
    });
    assert!(
        b_rec.opened(&first.rule).is_empty(),
        "re-notified after restart: {:?}",
        b_rec.0.lock().unwrap()
    );
    // Only the messages after the cut are new to the durable consumer.
    assert_eq!(b.metrics.received(), (lines.len() - cut) as u64);
}

#[test]
fn server_restart_mid_stream_reconnects_and_keeps_consuming() {
    let mut server = NatsServer::start();
    let (lines, sc) = scenario();
    let first = sc.labels().faults.first().expect("a fault").clone();
    let settings = settings(&server.url(), "RECONN");
    let rec = Recorder::default();
    let (_rt, app) = start_app(&settings, rec.clone());
    let client_rt = tokio::runtime::Runtime::new().unwrap();
    let half = lines.len() / 2;
    client_rt.block_on(async {
        let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
        publish(&js, "reconn.auth", &lines[..half]).await;
        wait_for(
            "the first half consumed",
            Duration::from_secs(120),
            async || app.metrics.received() >= half as u64,
        )
        .await;
    });
    server.restart();
    client_rt.block_on(async {
        let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
        publish(&js, "reconn.auth", &lines[half..]).await;
        wait_for(
            "the second half consumed",
            Duration::from_secs(120),
            async || consumer_state(&js, "RECONN").await == (0, 0),
        )
        .await;
        wait_for(
            "the fault's incident",
            Duration::from_secs(60),
            async || !rec.opened(&first.rule).is_empty(),
        )
        .await;
    });
    assert!(app.metrics.received() >= lines.len() as u64);
    assert!(app
        .metrics
        .render()
        .contains("faultline_nats_connected 1\n"));
}

/// A volume rule small enough to learn in a few minutes of event time.
const SILENCE_RULE: &str = r#"
rules:
  - name: auth_volume_drop
    description: Auth events stopped arriving.
    kind: auth
    detector: volume_drop
    dimensions: [provider]
    window: 20s
    step: 5s
    baseline:
      horizon: 2m
      warmup: 1m
    thresholds:
      min_events: 20
      max_volume_ratio: 0.25
      false_alarm_rate: 0.001
    open_after: 2
    resolve_after: 4
    severity: critical
"#;

/// The wall clock moves the watermark when nothing arrives at all: a stream
/// that goes silent after a steady flow opens a volume-drop incident with no
/// further event to drive it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_goes_silent_is_detected_on_the_wall_clock() {
    let server = NatsServer::start();
    let mut settings = settings(&server.url(), "SILENT");
    settings.engine.allowed_lateness = faultline::rules::Dur(Duration::from_secs(2));
    let rules = RuleSet::from_sources(&[("silence.yaml".into(), SILENCE_RULE.into())])
        .expect("the test rule is valid");
    // Three minutes of steady auth traffic ending now, 10 events/s per provider.
    let now = chrono::Utc::now().timestamp_millis();
    let mut lines = Vec::new();
    for i in 0..1800i64 {
        let at = now - 180_000 + i * 100;
        for provider in ["adyen", "stripe"] {
            let ts = chrono::DateTime::from_timestamp_millis(at).unwrap();
            lines.push(
                serde_json::json!({
                    "id": format!("{provider}-{i}"),
                    "ts": ts.to_rfc3339(),
                    "kind": "auth",
                    "outcome": "success",
                    "provider": provider,
                    "region": "eu-west-1",
                })
                .to_string(),
            );
        }
    }
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    // The stream exists before the daemon so the history is published first.
    js.get_or_create_stream(jetstream::stream::Config {
        name: "SILENT".into(),
        subjects: vec!["silent.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    publish(&js, "silent.auth", &lines).await;

    let rec = Recorder::default();
    let app = App::build_with(&settings, rules, Clock::Wall, Arc::new(rec.clone()))
        .await
        .expect("app builds against NATS");
    let metrics = app.metrics();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async move {
        let _ = stop_rx.await;
    }));
    wait_for("the history counted", Duration::from_secs(60), async || {
        metrics.accepted() >= lines.len() as u64
    })
    .await;
    // Nothing more is published: only the wall clock can reveal the silence.
    wait_for(
        "a volume-drop incident",
        Duration::from_secs(120),
        async || !rec.opened("auth_volume_drop").is_empty(),
    )
    .await;
    assert_eq!(
        metrics.accepted(),
        lines.len() as u64,
        "no event arrived after the history"
    );
    let _ = stop_tx.send(());
    running.await.unwrap().unwrap();
}

/// A server that is down when the daemon starts is retried: the daemon comes
/// up once it appears and consumes what is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_waits_for_a_server_that_starts_after_it() {
    let mut server = NatsServer::not_started();
    let settings = settings(&server.url(), "LATE");
    let building = tokio::spawn(async move {
        App::build_with(
            &settings,
            RuleSet::embedded(),
            Clock::EventTime,
            Arc::new(Recorder::default()),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !building.is_finished(),
        "the build should still be retrying"
    );
    server.restart();
    let app = building
        .await
        .unwrap()
        .expect("the daemon connects once the server is up");
    let metrics = app.metrics();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async move {
        let _ = stop_rx.await;
    }));
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    let (lines, _) = scenario();
    publish(&js, "late.auth", &lines[..500]).await;
    wait_for("the events consumed", Duration::from_secs(60), async || {
        metrics.received() >= 500
    })
    .await;
    let _ = stop_tx.send(());
    running.await.unwrap().unwrap();
}

/// Copies the shipped rules into a fresh folder the test may edit.
fn rules_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["auth.yaml", "settlement.yaml", "webhook.yaml"] {
        std::fs::copy(format!("rules/{f}"), dir.path().join(f)).unwrap();
    }
    dir
}

/// (rule, root-cause dims) of every incident opened, sorted.
fn opened_elements(incidents: &[faultline::incident::Incident]) -> Vec<String> {
    let mut v: Vec<String> = incidents
        .iter()
        .map(|i| format!("{} {:?}", i.rule, i.root_causes[0].dims))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_retunes_without_losing_a_window_or_repeating_an_incident() {
    use faultline::config::{ApiToken, Scope};
    let server = NatsServer::start();
    let (lines, sc) = scenario();
    let first = sc.labels().faults.first().expect("a fault").clone();
    let dir = rules_copy();
    let mut settings = settings(&server.url(), "RELOAD");
    settings.api.tokens = vec![ApiToken {
        name: "sre".into(),
        secret: secrecy::SecretString::from("sre-secret".to_string()),
        scope: Scope::Write,
    }];
    let rules = RuleSet::load_dir(dir.path()).unwrap();
    let rec = Recorder::default();
    let app = App::build_with(
        &settings,
        rules.clone(),
        Clock::EventTime,
        Arc::new(rec.clone()),
    )
    .await
    .unwrap()
    .watch_rules(dir.path().to_path_buf(), Duration::from_millis(100));
    let (port, metrics, store) = (app.port(), app.metrics(), app.store());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async move {
        let _ = stop_rx.await;
    }));
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());

    // Up to a few minutes into the first fault: its incident is open.
    let cut_ms = first.start.timestamp_millis() + 4 * 60_000;
    let cut = Generator::new(&sc)
        .unwrap()
        .take_while(|l| l.arrival_ms < cut_ms)
        .count();
    publish(&js, "reload.auth", &lines[..cut]).await;
    wait_for(
        "the first fault's incident",
        Duration::from_secs(120),
        async || !rec.opened(&first.rule).is_empty(),
    )
    .await;

    // The rest flows while the rules change twice.
    let rest = lines[cut..].to_vec();
    let publisher = {
        let js = js.clone();
        tokio::spawn(async move { publish(&js, "reload.auth", &rest).await })
    };
    let reloads = |result: &str| metrics.rules_reloads().get(result).copied().unwrap_or(0);
    // 1. A broken file is refused; the rules in force stay.
    let auth = dir.path().join("auth.yaml");
    let good = std::fs::read_to_string(&auth).unwrap();
    std::fs::write(
        &auth,
        good.replace("min_lift: 2.0", "min_lift: 2.0\n      min_lfit: 3"),
    )
    .unwrap();
    wait_for(
        "the broken file refused",
        Duration::from_secs(30),
        async || reloads("error") == 1,
    )
    .await;
    let (status, _, body) = tokio::task::spawn_blocking(move || {
        common::http::http_full(port, "GET", "/rules", Some("sre-secret"), b"")
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("min_lfit"),
        "the error names the field: {body}"
    );
    assert!(body.contains("\"auth_technical_failures\""), "{body}");
    // 2. Every rule's false-alarm rate retuned: applied, windows kept.
    for f in ["auth.yaml", "settlement.yaml", "webhook.yaml"] {
        let p = dir.path().join(f);
        let text = if f == "auth.yaml" {
            good.clone()
        } else {
            std::fs::read_to_string(&p).unwrap()
        };
        std::fs::write(
            &p,
            text.replace("false_alarm_rate: 0.0001", "false_alarm_rate: 0.00009"),
        )
        .unwrap();
    }
    wait_for("the retune applied", Duration::from_secs(30), async || {
        reloads("ok") >= 1
    })
    .await;
    publisher.await.unwrap();

    wait_for(
        "every message acked",
        Duration::from_secs(120),
        async || consumer_state(&js, "RELOAD").await == (0, 0),
    )
    .await;
    let _ = stop_tx.send(());
    running.await.unwrap().unwrap();

    // The same incidents as a replay of the same events with no reload: a
    // restarted rule would have re-learned its baseline for 20 minutes and
    // missed the faults that follow.
    let expected = faultline::pipeline::replay_lines(lines.iter(), &rules).incidents;
    let page = store
        .list(&faultline::store::IncidentQuery {
            limit: Some(500),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(opened_elements(&page.incidents), opened_elements(&expected));
    // The incident open across the reload kept its window: it resolves when
    // the replay's does, not when the rule changed.
    let of_first = |list: &[faultline::incident::Incident]| {
        list.iter()
            .find(|i| i.rule == first.rule && i.root_causes[0].dims == first.dims)
            .map(|i| (i.id.clone(), i.opened_at, i.resolved_at))
            .expect("the first fault's incident")
    };
    assert_eq!(of_first(&page.incidents), of_first(&expected));
    assert!(
        of_first(&expected).2.is_some(),
        "the first fault ends in the scenario"
    );
    // Each opened once, none resolved as "rule changed".
    let opened: Vec<_> = rec
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|n| n.0 == "opened")
        .cloned()
        .collect();
    assert_eq!(opened.len(), expected.len(), "{opened:?}");
    for inc in &page.incidents {
        let rec = store.get(&inc.id).await.unwrap().unwrap();
        assert!(
            rec.timeline.iter().all(|t| !t.detail.starts_with("rule")),
            "{:?}",
            rec.timeline
        );
    }
}
