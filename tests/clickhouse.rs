//! The ClickHouse store against a real `clickhouse-server` (18.16 from Debian):
//! schema creation and migration, a scenario replayed through the daemon and
//! read back equal to the in-memory run, people's actions and silences across
//! a restart, ClickHouse killed mid-run, retention, and every dashboard query.
//!
//! Each test starts its own server in a temporary folder (see
//! `common/clickhouse_server.rs`); without a server binary they are skipped
//! with a note, except under `CI=true`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use faultline::config::{ClickHouseSettings, Settings};
use faultline::event::Event;
use faultline::incident::{Incident, SeriesPoint, TimelineEntry};
use faultline::ingest::generator::{Generator, Scenario};
use faultline::metrics::Metrics;
use faultline::store::clickhouse::{schema, ClickHouseStore};
use faultline::store::{IncidentQuery, MemoryLimits, Store};

mod common;
use common::clickhouse_server::ClickHouseServer;
use common::http::{assert_filters_match_exactly, http};
use common::server::{Server, INGEST, READ, WRITE};

fn settings_for(ch: &ClickHouseServer, db: &str) -> ClickHouseSettings {
    ClickHouseSettings {
        url: Some(ch.url()),
        database: db.into(),
        flush_interval: faultline::rules::Dur(Duration::from_millis(100)),
        ..ClickHouseSettings::default()
    }
}

/// Daemon settings with the ClickHouse store on database `db`.
fn daemon_settings(ch: &ClickHouseServer, db: &str) -> Settings {
    Settings {
        clickhouse: settings_for(ch, db),
        ..Settings::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A store on `settings`, schema created or migrated.
fn connect(
    rt: &tokio::runtime::Runtime,
    settings: &ClickHouseSettings,
    metrics: Arc<Metrics>,
) -> Arc<ClickHouseStore> {
    rt.block_on(ClickHouseStore::connect(
        settings,
        MemoryLimits::default(),
        metrics,
    ))
    .unwrap()
}

fn count(ch: &ClickHouseServer, sql: &str) -> u64 {
    ch.sql(sql)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{sql}"))
}

fn incident(id: &str, opened_ms: i64, provider: &str) -> Incident {
    let v = serde_json::json!({
        "id": id, "rule": "auth_technical_failures", "kind": "auth",
        "severity": "critical", "status": "open",
        "opened_at": faultline::incident::ts(opened_ms), "updated_at": faultline::incident::ts(opened_ms),
        "resolved_at": null,
        "root_causes": [{"dims": {"provider": provider, "region": "us-west-2"}, "score": 0.94,
            "events": 4210, "failures": 1702, "expected_failures": 21.4,
            "failure_rate": 0.404, "baseline_rate": 0.0051}],
        "window": {"start": faultline::incident::ts(opened_ms - 300_000), "end": faultline::incident::ts(opened_ms)},
        "title": "Auth failures", "summary": "card 4111 1111 1111 1111 failed",
        "summary_source": "template",
        "links": [{"title": "Auth", "url": "https://grafana.example.com/d/x"}],
        "prompt_version": null
    });
    serde_json::from_value(v).unwrap()
}

const T0: i64 = 1_772_410_841_000;

#[test]
fn schema_is_created_once_and_migrates_forward_idempotently() {
    let Some(ch) = ClickHouseServer::start() else {
        return;
    };
    let rt = rt();
    let metrics = Arc::new(Metrics::new());
    let s = settings_for(&ch, "fl_schema");
    let store = connect(&rt, &s, metrics.clone());
    assert_eq!(store.schema_version(), schema::latest_version());
    let tables = ch.sql(
        "SELECT name FROM system.tables WHERE database = 'fl_schema' ORDER BY name FORMAT TSV",
    );
    let tables: Vec<&str> = tables.lines().collect();
    for t in [
        "audit_llm_calls",
        "audit_slack_calls",
        "cell_steps",
        "events",
        "incident_series",
        "incident_timeline",
        "incidents",
        "schema_version",
        "silences",
    ] {
        assert!(tables.contains(&t), "{t} missing from {tables:?}");
    }
    let applied = count(&ch, "SELECT count() FROM fl_schema.schema_version");
    assert_eq!(applied, schema::MIGRATIONS.len() as u64);
    rt.block_on(store.shutdown(Duration::from_secs(5)));
    drop(store);

    // Again on the existing schema: nothing re-applied, nothing lost.
    ch.sql("INSERT INTO fl_schema.incident_series VALUES ('inc_x', 1, now(), 1, 1, 0, 0.1, 0.01)");
    let again = connect(&rt, &s, metrics);
    assert_eq!(again.schema_version(), schema::latest_version());
    assert_eq!(
        count(&ch, "SELECT count() FROM fl_schema.schema_version"),
        applied
    );
    assert_eq!(
        count(&ch, "SELECT count() FROM fl_schema.incident_series"),
        1
    );

    // A database that exists with an older schema (version 0: only the version
    // table) is migrated forward.
    ch.sql("CREATE DATABASE fl_old");
    ch.sql(
        "CREATE TABLE fl_old.schema_version (version UInt32, description String, \
         applied_at DateTime) ENGINE = MergeTree ORDER BY version",
    );
    let old = connect(&rt, &settings_for(&ch, "fl_old"), Arc::new(Metrics::new()));
    assert_eq!(old.schema_version(), schema::latest_version());
    assert_eq!(
        count(
            &ch,
            "SELECT count() FROM system.tables WHERE database = 'fl_old' AND name = 'incidents'"
        ),
        1
    );

    // A version-1 database, an incident in it: the incidents table gains
    // `candidates` and `episode` (18.16 has no ADD COLUMN IF NOT EXISTS), the
    // old row reads with none, and what is written from then on comes back.
    ch.sql("CREATE DATABASE fl_v1");
    for sql in schema::MIGRATIONS[0].statements {
        ch.sql(&sql.replace("{db}", "fl_v1"));
    }
    ch.sql(
        "CREATE TABLE fl_v1.schema_version (version UInt32, description String, \
         applied_at DateTime) ENGINE = MergeTree ORDER BY version",
    );
    ch.sql("INSERT INTO fl_v1.schema_version VALUES (1, 'v1', now())");
    ch.sql(&format!(
        "INSERT INTO fl_v1.incidents (id, version, rule, kind, severity, status, opened_at, \
         opened_at_ms, updated_at_ms, root_causes, title, summary, summary_source, links) \
         VALUES ('inc_old', 1, 'auth_technical_failures', 'auth', 'critical', 'open', now(), \
         {T0}, {T0}, '[]', 'old', 'old', 'template', '[]')"
    ));
    let v1s = settings_for(&ch, "fl_v1");
    let v1 = connect(&rt, &v1s, Arc::new(Metrics::new()));
    assert_eq!(v1.schema_version(), schema::latest_version());
    let has_candidates = "SELECT count() FROM system.columns \
         WHERE database = 'fl_v1' AND table = 'incidents' AND name = 'candidates'";
    assert_eq!(count(&ch, has_candidates), 1);
    let has_episode = "SELECT count() FROM system.columns \
         WHERE database = 'fl_v1' AND table = 'incidents' AND name = 'episode'";
    assert_eq!(count(&ch, has_episode), 1);
    let dyn_v1: Arc<dyn Store> = v1.clone();
    let old = rt
        .block_on(dyn_v1.get("inc_old"))
        .unwrap()
        .expect("the old incident");
    assert_eq!(old.incident.title, "old");
    assert!(old.incident.candidates.is_empty());
    assert_eq!(
        old.incident.episode,
        faultline::incident::Episode::default()
    );
    let mut inc = incident("inc_new", T0, "stripe");
    inc.episode.began_at = Some(inc.opened_at - chrono::Duration::seconds(45));
    inc.episode.impact = Some(faultline::incident::Impact {
        events: 4000,
        failures: Some(1700),
        expected_failures: Some(20.5),
        excess_failures: Some(1679.5),
        ..Default::default()
    });
    inc.episode.error_codes = vec![faultline::incident::CodeShare {
        code: "provider_5xx".into(),
        failures: 1650,
        share: 0.98,
    }];
    inc.episode.url = Some("https://faultline.example.com/ui/incidents/inc_new".into());
    let mut piece = inc.root_causes[0].clone();
    piece.dims.insert("bin".into(), "411111".into());
    inc.candidates = vec![piece];
    rt.block_on(dyn_v1.upsert(&inc, &[], None)).unwrap();
    assert!(rt.block_on(v1.flush(Duration::from_secs(30))));
    rt.block_on(v1.shutdown(Duration::from_secs(5)));
    drop((v1, dyn_v1));
    let fresh: Arc<dyn Store> = connect(&rt, &v1s, Arc::new(Metrics::new()));
    let back = rt.block_on(fresh.get("inc_new")).unwrap().expect("stored");
    assert_eq!(back.incident.candidates, inc.candidates);
    assert_eq!(back.incident.episode, inc.episode);
    assert_eq!(count(&ch, has_candidates), 1, "migrated once");
    assert_eq!(count(&ch, has_episode), 1, "migrated once");
}

/// The standard scenario's lines (with its first fault) and that fault's rule.
fn scenario() -> (Vec<String>, String) {
    let sc = Scenario::standard(5, 55 * 60_000, 60.0);
    let first = sc.labels().faults.first().expect("one fault").rule.clone();
    let lines = Generator::new(&sc).unwrap().map(|l| l.text).collect();
    (lines, first)
}

fn post_all(port: u16, lines: &[String]) {
    for chunk in lines.chunks(5000) {
        let body = chunk.join("\n");
        let (status, resp) = http(port, "POST", "/v1/events", Some(INGEST), body.as_bytes());
        assert_eq!(status, 200, "{resp}");
    }
}

fn list_all(store: &Arc<dyn Store>, rt: &tokio::runtime::Runtime) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let q = IncidentQuery {
            limit: Some(2),
            cursor: cursor.clone(),
            ..Default::default()
        };
        let page = rt.block_on(store.list(&q)).unwrap();
        out.extend(
            page.incidents
                .iter()
                .map(|i| serde_json::to_value(i).unwrap()),
        );
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

fn get_json(port: u16, path: &str) -> serde_json::Value {
    let (status, body) = http(port, "GET", path, Some(READ), b"");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn a_scenario_through_the_daemon_reads_back_equal_to_the_memory_run() {
    let Some(ch) = ClickHouseServer::start() else {
        return;
    };
    let (lines, rule) = scenario();

    let mut mem = Server::start(10 << 20);
    post_all(mem.port, &lines);
    mem.stop().unwrap();
    let probe = tokio::runtime::Runtime::new().unwrap();
    let expected = list_all(&mem.store, &probe);
    assert!(
        expected.iter().any(|i| i["rule"] == rule.as_str()),
        "{expected:#?}"
    );

    let settings = daemon_settings(&ch, "fl_scenario");
    let mut srv = Server::start_with(settings.clone());
    post_all(srv.port, &lines);
    srv.stop().unwrap();
    // Listing reads ClickHouse: the whole run, paged two at a time.
    let got = list_all(&srv.store, &probe);
    assert_eq!(got, expected);
    drop(srv);

    // Events and aggregates reached their tables, with the scenario's counts.
    let accepted = lines.len() as u64;
    let stored = count(
        &ch,
        "SELECT sum(weight) FROM (SELECT id, any(weight) AS weight FROM fl_scenario.events GROUP BY id)",
    );
    assert!(
        stored <= accepted && stored > accepted * 9 / 10,
        "{stored} of {accepted}"
    );
    assert!(
        count(
            &ch,
            "SELECT count() FROM fl_scenario.cell_steps WHERE failures > 0"
        ) > 0
    );
    // Every counted auth event is in exactly one cell step of the auth rule
    // (all but the last, unevaluated step).
    let auth_events = count(
        &ch,
        "SELECT sum(weight) FROM fl_scenario.events FINAL WHERE kind = 'auth'",
    );
    let auth_attempts = count(
        &ch,
        "SELECT sum(attempts) FROM fl_scenario.cell_steps FINAL \
         WHERE rule = 'auth_technical_failures'",
    );
    assert!(
        auth_attempts <= auth_events && auth_attempts * 100 >= auth_events * 99,
        "{auth_attempts} attempts in cell steps, {auth_events} auth events"
    );
    let pans = count(
        &ch,
        "SELECT count() FROM fl_scenario.incidents WHERE match(summary, '4111')",
    );
    assert_eq!(pans, 0);

    // The history backtests from ClickHouse to exactly what a replay of the
    // file opens (the stored events are the counted ones).
    let times: Vec<chrono::DateTime<chrono::FixedOffset>> = lines
        .iter()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            chrono::DateTime::parse_from_rfc3339(v["ts"].as_str()?).ok()
        })
        .collect();
    let span = |t: &chrono::DateTime<chrono::FixedOffset>, secs: i64| {
        (*t + chrono::Duration::seconds(secs)).to_rfc3339()
    };
    let (first_ts, last_ts) = (times.iter().min().unwrap(), times.iter().max().unwrap());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args([
            "backtest",
            "--json",
            "--rules",
            "rules",
            "--clickhouse",
            "--from",
        ])
        .arg(span(first_ts, -1))
        .arg("--to")
        .arg(span(last_ts, 1))
        .env("FAULTLINE_CLICKHOUSE_URL", ch.url())
        .env("FAULTLINE_CLICKHOUSE_DATABASE", "fl_scenario")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = |i: &serde_json::Value| {
        format!(
            "{} {} {} {}",
            i["rule"], i["root_causes"][0]["dims"], i["opened_at"], i["resolved_at"]
        )
    };
    let backtested: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| key(&serde_json::from_str(l).unwrap()))
        .collect();
    let replayed: Vec<String> = faultline::pipeline::replay_lines(
        lines.iter(),
        &faultline::rules::RuleSet::load_dir(std::path::Path::new("rules")).unwrap(),
    )
    .incidents
    .iter()
    .map(|i| key(&serde_json::to_value(i).unwrap()))
    .collect();
    assert!(!replayed.is_empty());
    assert_eq!(backtested, replayed);

    // A fresh daemon over the same database serves the same incidents over
    // HTTP, with timeline and series read back.
    let srv = Server::start_with(settings);
    let v = get_json(srv.port, "/incidents?limit=500");
    assert_eq!(v["incidents"].as_array().unwrap(), &expected);
    let id = expected[0]["id"].as_str().unwrap();
    let one = get_json(srv.port, &format!("/incidents/{id}"));
    assert!(!one["timeline"].as_array().unwrap().is_empty(), "{one}");
    assert!(!one["series"].as_array().unwrap().is_empty(), "{one}");
    let filtered = get_json(srv.port, &format!("/incidents?rule={rule}&status=resolved"));
    let want: Vec<_> = expected
        .iter()
        .filter(|i| i["rule"] == rule.as_str() && i["status"] == "resolved")
        .cloned()
        .collect();
    assert_eq!(filtered["incidents"].as_array().unwrap(), &want);
}

#[test]
fn acks_resolves_and_silences_survive_a_restart() {
    let Some(ch) = ClickHouseServer::start() else {
        return;
    };
    let settings = daemon_settings(&ch, "fl_restart");
    let mut srv = Server::start_with(settings.clone());
    for (id, at, p) in [
        ("inc_a", T0, "stripe"),
        ("inc_b", T0 + 1000, "adyen"),
        ("inc_c", T0 + 2000, "stripe"),
    ] {
        srv.insert(&incident(id, at, p));
    }
    let post = |port, path: &str, body: &str| {
        let (status, resp) = http(port, "POST", path, Some(WRITE), body.as_bytes());
        assert!(status == 200 || status == 201, "{path}: {status} {resp}");
        serde_json::from_str::<serde_json::Value>(&resp).unwrap()
    };
    post(srv.port, "/incidents/inc_a/ack", "");
    post(srv.port, "/incidents/inc_b/resolve", "");
    let ends = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let sil = post(
        srv.port,
        "/silences",
        &format!(
            r#"{{"matchers":{{"provider":"stripe"}},"ends_at":"{ends}","comment":"maintenance"}}"#
        ),
    );
    let gone = post(
        srv.port,
        "/silences",
        &format!(r#"{{"matchers":{{"provider":"adyen"}},"ends_at":"{ends}","comment":"short"}}"#),
    );
    let (status, _) = http(
        srv.port,
        "DELETE",
        &format!("/silences/{}", gone["id"].as_str().unwrap()),
        Some(WRITE),
        b"",
    );
    assert_eq!(status, 204);
    srv.stop().unwrap();
    drop(srv);

    let srv = Server::start_with(settings);
    let a = get_json(srv.port, "/incidents/inc_a");
    assert_eq!(a["status"], "acknowledged");
    let whats: Vec<_> = a["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["what"].as_str().unwrap().to_string(),
                e["by"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(whats, [("acknowledged".to_string(), "writer".to_string())]);
    assert_eq!(get_json(srv.port, "/incidents/inc_b")["status"], "resolved");
    // Listing filters on the latest state of each incident.
    let acked = get_json(srv.port, "/incidents?status=acknowledged");
    let ids: Vec<_> = acked["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["inc_a"]);
    let open = get_json(srv.port, "/incidents?status=open&provider=stripe");
    assert_eq!(open["incidents"][0]["id"], "inc_c");
    assert_eq!(open["incidents"].as_array().unwrap().len(), 1);
    let silences = get_json(srv.port, "/silences");
    let sids: Vec<_> = silences["silences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].clone())
        .collect();
    assert_eq!(sids, [sil["id"].clone()]);

    // The engine's next update of the acknowledged incident keeps the person's word.
    srv.insert(&incident("inc_a", T0, "stripe"));
    assert_eq!(
        get_json(srv.port, "/incidents/inc_a")["status"],
        "acknowledged"
    );
    // A silence loaded from ClickHouse still mutes.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mute = rt
        .block_on(
            srv.store
                .mute(&incident("inc_c", T0, "stripe"), chrono::Utc::now()),
        )
        .unwrap();
    assert!(mute.is_some());
}

fn event(i: u64, ts_ms: i64) -> Event {
    Event {
        id: format!("evt_{i}"),
        ts_ms,
        kind: "auth".into(),
        outcome: faultline::event::Outcome::Failure,
        provider: "stripe".into(),
        region: "us-west-2".into(),
        bin: Some("414720".into()),
        merchant_id: Some("m1".into()),
        card_brand: None,
        error_code: Some("timeout".into()),
        latency_ms: Some(12.0),
        message: None,
        attrs: BTreeMap::new(),
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn clickhouse_down_mid_run_loses_nothing_within_the_bound_and_counts_the_rest() {
    let Some(mut ch) = ClickHouseServer::start() else {
        return;
    };
    let rt = rt();
    let metrics = Arc::new(Metrics::new());
    let mut s = settings_for(&ch, "fl_faults");
    s.buffer_rows = 1000;
    s.batch_rows = 100;
    let store = connect(&rt, &s, metrics.clone());
    let tap = store.tap();
    let dyn_store: Arc<dyn Store> = store.clone();
    let now = chrono::Utc::now().timestamp_millis();
    for i in 0..300 {
        tap.events(&[event(i, now + i as i64)], false);
    }
    rt.block_on(dyn_store.upsert(&incident("inc_1", now, "stripe"), &[], None))
        .unwrap();
    assert!(rt.block_on(store.flush(Duration::from_secs(30))));
    assert_eq!(count(&ch, "SELECT count() FROM fl_faults.events"), 300);

    ch.kill();
    assert!(rt.block_on(dyn_store.health()).is_err());
    // While it is down: writes are buffered, reads of recent incidents still answer.
    // Exactly the bound (1000 event rows) is held while it is down.
    for i in 300..1300 {
        tap.events(&[event(i, now + i as i64)], false);
    }
    let entry = TimelineEntry {
        at: faultline::incident::ts(now + 15_000),
        what: "updated".into(),
        by: "faultline".into(),
        detail: String::new(),
    };
    let point = SeriesPoint {
        at: faultline::incident::ts(now + 15_000),
        events: 10,
        failures: 5,
        value: 0.5,
        baseline: 0.01,
    };
    let mut inc = incident("inc_1", now, "stripe");
    inc.title = "updated while down".into();
    rt.block_on(dyn_store.upsert(&inc, &[entry], Some(point)))
        .unwrap();
    let page = rt
        .block_on(dyn_store.list(&IncidentQuery::default()))
        .unwrap();
    assert_eq!(page.incidents.len(), 1);
    assert_eq!(page.incidents[0].title, "updated while down");
    assert!(rt.block_on(dyn_store.get("inc_1")).unwrap().is_some());
    // Past the bound, rows are dropped and counted.
    for i in 1300..1350 {
        tap.events(&[event(i, now + i as i64)], false);
    }
    assert_eq!(store.dropped()["events"], 50);
    assert_eq!(metrics.store_dropped().get("events"), Some(&50));
    assert!(metrics
        .render()
        .contains("faultline_store_rows_dropped_total"));

    ch.restart();
    wait_for("the buffer to drain", || {
        rt.block_on(store.flush(Duration::from_millis(500)))
    });
    assert!(rt.block_on(dyn_store.health()).is_ok());
    assert_eq!(
        count(&ch, "SELECT count(DISTINCT id) FROM fl_faults.events"),
        1300
    );
    assert_eq!(
        count(
            &ch,
            "SELECT count() FROM fl_faults.events WHERE id = 'evt_1300'"
        ),
        0
    );
    let title = ch.sql("SELECT title FROM fl_faults.incidents FINAL WHERE id = 'inc_1'");
    assert_eq!(title.trim(), "updated while down");
    assert_eq!(
        count(
            &ch,
            "SELECT count() FROM fl_faults.incident_series WHERE incident_id = 'inc_1'"
        ),
        1
    );
    assert_eq!(store.buffered(), 0);
}

#[test]
fn retention_drops_old_partitions_only() {
    let Some(ch) = ClickHouseServer::start() else {
        return;
    };
    let rt = rt();
    let store = connect(
        &rt,
        &settings_for(&ch, "fl_retention"),
        Arc::new(Metrics::new()),
    );
    let tap = store.tap();
    let now = chrono::Utc::now().timestamp_millis();
    let day = 86_400_000;
    for (i, age_days) in [(0, 0), (1, 1), (2, 10), (3, 40)] {
        tap.events(&[event(i, now - age_days * day)], false);
    }
    assert!(rt.block_on(store.flush(Duration::from_secs(30))));
    assert_eq!(count(&ch, "SELECT count() FROM fl_retention.events"), 4);
    // Default retention: events 7 days.
    let dropped = rt
        .block_on(store.apply_retention(chrono::Utc::now()))
        .unwrap();
    assert_eq!(dropped, 2);
    let left = ch.sql("SELECT id FROM fl_retention.events ORDER BY id FORMAT TSV");
    assert_eq!(left.lines().collect::<Vec<_>>(), ["evt_0", "evt_1"]);
}

#[test]
fn audit_records_reach_their_tables_redacted() {
    let Some(ch) = ClickHouseServer::start() else {
        return;
    };
    let rt = rt();
    let store = connect(
        &rt,
        &settings_for(&ch, "fl_audit"),
        Arc::new(Metrics::new()),
    );
    let audit = store.audit();
    let at = chrono::Utc::now();
    audit.record(faultline::audit::Record::LlmCall(
        faultline::audit::LlmCall {
            at,
            incident_id: "inc_1".into(),
            prompt_version: "p1".into(),
            model: "m".into(),
            attempt: 1,
            prompt: "card 4111 1111 1111 1111".into(),
            response: "{}".into(),
            outcome: "accepted".into(),
            detail: String::new(),
            latency_ms: 12,
            prompt_tokens: 10,
            completion_tokens: 5,
        },
    ));
    audit.record(faultline::audit::Record::SlackPost(
        faultline::audit::SlackPost {
            at,
            incident_id: "inc_1".into(),
            method: "chat.postMessage".into(),
            channel: "C1".into(),
            ts: Some("1.2".into()),
            status: "ok".into(),
            latency_ms: 3,
        },
    ));
    assert!(rt.block_on(store.flush(Duration::from_secs(30))));
    let prompt = ch.sql("SELECT prompt FROM fl_audit.audit_llm_calls");
    assert!(!prompt.contains("4111"), "{prompt}");
    assert_eq!(
        count(&ch, "SELECT count() FROM fl_audit.audit_slack_calls"),
        1
    );
}

/// The scenario's time range in the events table, epoch seconds.
fn data_range(ch: &ClickHouseServer, db: &str) -> (u64, u64) {
    let out = ch.sql(&format!(
        "SELECT toUInt32(min(ts)), toUInt32(max(ts)) FROM {db}.events FORMAT TSV"
    ));
    let mut it = out.split_whitespace().map(|v| v.parse::<u64>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

/// How template variables are filled.
#[derive(Clone, Copy, Debug)]
enum Fill<'a> {
    /// Grafana's "All" (the dashboards' `allValue`).
    All,
    /// What a rule link leaves for a dimension the incident lacks.
    Empty,
    /// One value per variable.
    Values(&'a BTreeMap<String, String>),
}

/// Grafana's macros and variables, as Grafana and the ClickHouse plugin expand them.
fn expand(sql: &str, db: &str, from: u64, to: u64, fill: Fill<'_>) -> String {
    let time_filter = regex::Regex::new(r"\$__timeFilter\(([^)]+)\)").unwrap();
    let mut s = time_filter
        .replace_all(sql, |c: &regex::Captures<'_>| {
            format!(
                "{0} >= toDateTime({from}) AND {0} <= toDateTime({to})",
                &c[1]
            )
        })
        .into_owned();
    s = s
        .replace("$__fromTime", &format!("toDateTime({from})"))
        .replace("$__toTime", &format!("toDateTime({to})"))
        .replace("$__interval_s", "60")
        .replace("${database}", db);
    for d in ["provider", "region", "bin", "merchant_id"] {
        let v = match fill {
            Fill::All => "'__all'".to_string(),
            Fill::Empty => "''".to_string(),
            Fill::Values(m) => format!("'{}'", m.get(d).map(String::as_str).unwrap_or("__all")),
        };
        s = s.replace(&format!("${{{d}:singlequote}}"), &v);
    }
    assert!(!s.contains('$'), "unexpanded macro in {s}");
    s
}

#[test]
fn every_dashboard_query_runs_and_returns_rows_for_the_scenario() {
    let Some(ch) = ClickHouseServer::start() else {
        return;
    };
    let db = "fl_dash";
    let (lines, _) = scenario();
    let settings = daemon_settings(&ch, db);
    let mut srv = Server::start_with(settings);
    post_all(srv.port, &lines);
    // The scenario's fault opens one incident, of one kind: give every kind an
    // incident inside the scenario's time range, so each incident panel has rows.
    let (from, _) = data_range(&ch, db);
    for (kind, rule, dims) in [
        (
            "auth",
            "auth_technical_failures",
            r#"{"provider":"adyen","region":"eu-west-1"}"#,
        ),
        (
            "settlement",
            "settlement_failures",
            r#"{"provider":"adyen","region":"eu-west-1"}"#,
        ),
        (
            "webhook",
            "webhook_delivery_failures",
            r#"{"merchant_id":"m_1","provider":"adyen"}"#,
        ),
    ] {
        let mut inc = incident(&format!("inc_{kind}"), (from as i64 + 600) * 1000, "adyen");
        inc.kind = kind.into();
        inc.rule = rule.into();
        inc.root_causes[0].dims = serde_json::from_str(dims).unwrap();
        srv.insert(&inc);
    }
    srv.stop().unwrap();
    let (from, to) = data_range(&ch, db);

    let mut files: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 4, "{files:?}");
    let mut uids = BTreeMap::new();
    let mut checked = 0;
    for path in &files {
        let d: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let vars: Vec<&serde_json::Value> =
            d["templating"]["list"].as_array().unwrap().iter().collect();
        let var_names: Vec<String> = vars
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect();
        for dim in ["provider", "region", "bin", "merchant_id"] {
            assert!(
                var_names.iter().any(|v| v == dim),
                "{name}: no variable {dim}"
            );
        }
        uids.insert(d["uid"].as_str().unwrap().to_string(), var_names);

        // Each variable's own query, and the first value it offers.
        let mut values = BTreeMap::new();
        for v in vars.iter().filter(|v| v["type"] == "query") {
            let sql = expand(v["query"].as_str().unwrap(), db, from, to, Fill::All);
            let out = ch.sql(&format!("{sql} FORMAT TSV"));
            let var = v["name"].as_str().unwrap().to_string();
            // Some kinds lack a dimension (settlements carry no BIN); every
            // kind has providers and regions.
            match out.lines().next() {
                Some(first) => {
                    values.insert(var, first.to_string());
                }
                None => assert!(
                    var != "provider" && var != "region",
                    "{name}: variable {var} has no values"
                ),
            }
            checked += 1;
        }
        for panel in d["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let raw = target["rawSql"].as_str().unwrap();
                let title = panel["title"].as_str().unwrap();
                for fill in [Fill::All, Fill::Empty] {
                    let sql = expand(raw, db, from, to, fill);
                    let out = ch
                        .try_sql(&format!("{sql} FORMAT TSV"))
                        .unwrap_or_else(|e| panic!("{name} / {title} ({fill:?}): {e}\n{sql}"));
                    assert!(
                        !out.trim().is_empty(),
                        "{name} / {title} ({fill:?}): no rows\n{sql}"
                    );
                }
                // One value per variable: runs (rows depend on the combination).
                let sql = expand(raw, db, from, to, Fill::Values(&values));
                ch.try_sql(&format!("{sql} FORMAT TSV"))
                    .unwrap_or_else(|e| panic!("{name} / {title} (values): {e}\n{sql}"));
                checked += 1;
            }
        }
    }
    assert!(checked >= 27, "{checked}");

    // Every shipped rule link points at one of these dashboards, with only
    // variables that dashboard has.
    let link = regex::Regex::new(r#"url: "https?://[^/]+/d/([^/]+)/[^?"]*\?([^"]*)""#).unwrap();
    let mut links = 0;
    for rules in ["auth.yaml", "settlement.yaml", "webhook.yaml"] {
        let text = std::fs::read_to_string(format!("{}/rules/{rules}", env!("CARGO_MANIFEST_DIR")))
            .unwrap();
        for c in link.captures_iter(&text) {
            let vars = uids
                .get(&c[1])
                .unwrap_or_else(|| panic!("{rules}: link to unknown dashboard {}", &c[1]));
            for pair in c[2].split('&') {
                if let Some(v) = pair.split('=').next().and_then(|k| k.strip_prefix("var-")) {
                    assert!(
                        vars.iter().any(|n| n == v),
                        "{rules}: {} has no variable {v}",
                        &c[1]
                    );
                }
                assert!(
                    !pair.starts_with("from=") || pair == "from={from_ms}",
                    "{pair}"
                );
            }
            links += 1;
        }
    }
    assert!(links >= 4, "{links}");
}

#[test]
fn successes_are_sampled_with_weights_and_replayed_events_are_not_written_twice() {
    let Some(ch) = ClickHouseServer::start() else {
        return;
    };
    let rt = rt();
    let mut s = settings_for(&ch, "fl_sample");
    s.success_sample = 4;
    let store = connect(&rt, &s, Arc::new(Metrics::new()));
    let now = chrono::Utc::now().timestamp_millis();
    let mut events: Vec<Event> = (0..400).map(|i| event(i, now + i as i64)).collect();
    for e in &mut events[..200] {
        e.outcome = faultline::event::Outcome::Success;
    }
    store.tap().events(&events, false);
    assert!(rt.block_on(store.flush(Duration::from_secs(30))));
    let kept = count(
        &ch,
        "SELECT count() FROM fl_sample.events WHERE outcome = 'success'",
    );
    assert!((20..=80).contains(&kept), "{kept} of 200 kept at 1 in 4");
    assert_eq!(
        count(
            &ch,
            "SELECT count() FROM fl_sample.events WHERE outcome = 'success' AND weight != 4"
        ),
        0
    );
    assert_eq!(
        count(
            &ch,
            "SELECT sum(weight) FROM fl_sample.events WHERE outcome = 'failure'"
        ),
        200
    );
    rt.block_on(store.shutdown(Duration::from_secs(5)));

    // A restart replays the same events (and one newer): only the newer is written.
    let again = connect(&rt, &s, Arc::new(Metrics::new()));
    let newer = event(1000, now + 10_000);
    events.push(newer);
    again.tap().events(&events, true);
    assert!(rt.block_on(again.flush(Duration::from_secs(30))));
    assert_eq!(
        count(
            &ch,
            "SELECT count() FROM fl_sample.events WHERE outcome = 'failure'"
        ),
        201
    );
    assert_eq!(
        count(
            &ch,
            "SELECT count() FROM fl_sample.events WHERE outcome = 'success'"
        ),
        kept
    );
}

#[test]
fn the_daemon_keeps_detecting_and_notifying_while_clickhouse_is_down() {
    let Some(mut ch) = ClickHouseServer::start() else {
        return;
    };
    let (lines, rule) = scenario();
    let mut settings = daemon_settings(&ch, "fl_down");
    // Below the scenario's event count: the excess is dropped and counted.
    settings.clickhouse.buffer_rows = 150_000;
    let mut srv = Server::start_with(settings);
    assert_eq!(http(srv.port, "GET", "/readyz", None, b"").0, 200);
    ch.kill();
    let (status, body) = http(srv.port, "GET", "/readyz", None, b"");
    assert_eq!(status, 503, "{body}");

    let mut accepted = 0;
    for chunk in lines.chunks(5000) {
        let body = chunk.join("\n");
        let (status, resp) = http(
            srv.port,
            "POST",
            "/v1/events",
            Some(INGEST),
            body.as_bytes(),
        );
        assert_eq!(status, 200, "{resp}");
        let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
        accepted += v["accepted"].as_u64().unwrap();
    }
    // Detection and notification do not wait for ClickHouse.
    wait_for("the incident to be notified", || {
        srv.printed().contains("OPENED")
    });
    // Listing falls back to the cache of recent incidents.
    let listed = get_json(srv.port, &format!("/incidents?rule={rule}"));
    assert!(
        !listed["incidents"].as_array().unwrap().is_empty(),
        "{listed}"
    );

    assert!(accepted > 150_000, "{accepted}");
    // The engine takes the accepted events in the background (skipping
    // duplicates and late ones): wait until it took them all.
    let metric = |name: &str, label: &str| {
        let (_, metrics) = http(srv.port, "GET", "/metrics", None, b"");
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains(label))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let counted = || metric("faultline_events_accepted_total ", "");
    wait_for("the engine to take every event", || {
        counted()
            + metric("faultline_events_duplicate_total ", "")
            + metric("faultline_events_late_total ", "")
            == accepted
    });
    let counted = counted();
    assert!(counted > 150_000, "{counted}");
    let dropped = metric("faultline_store_rows_dropped_total", "\"events\"");
    assert_eq!(dropped, counted - 150_000);

    // Back up: every buffered row reaches it (the shutdown flushes).
    ch.restart();
    srv.stop().unwrap();
    assert_eq!(
        count(&ch, "SELECT count(DISTINCT id) FROM fl_down.events"),
        150_000
    );
    let stored = count(
        &ch,
        &format!("SELECT count() FROM fl_down.incidents FINAL WHERE rule = '{rule}'"),
    );
    assert_eq!(
        stored as usize,
        listed["incidents"].as_array().unwrap().len()
    );
    assert!(count(&ch, "SELECT count() FROM fl_down.incident_series") > 0);
}

/// Filter values reach ClickHouse as bound parameters: SQL-ish values match
/// only an incident whose value is exactly that text, and nothing is dropped.
#[test]
fn sql_ish_filter_values_are_bound_not_spliced_into_clickhouse_queries() {
    let Some(ch) = ClickHouseServer::start() else {
        return;
    };
    let srv = Server::start_with(daemon_settings(&ch, "fl_hostile"));
    srv.insert(&incident("inc_a", T0, "stripe"));
    srv.insert(&incident("inc_b", T0 + 1000, "' OR '1'='1"));
    wait_for("both incidents in ClickHouse", || {
        ch.try_sql("SELECT count() FROM fl_hostile.incidents FINAL")
            .is_ok_and(|n| n.trim() == "2")
    });
    assert_filters_match_exactly(
        srv.port,
        READ,
        &[
            "' OR '1'='1",
            "stripe' --",
            "stripe\\' OR 1=1 --",
            "1; DROP TABLE fl_hostile.incidents",
            "x') UNION ALL SELECT * FROM system.tables --",
            "{provider:String}",
        ],
    );
    assert_eq!(
        count(&ch, "SELECT count() FROM fl_hostile.incidents FINAL"),
        2,
        "nothing dropped or added"
    );
    let (s, body) = http(
        srv.port,
        "GET",
        "/incidents?provider=stripe",
        Some(READ),
        b"",
    );
    assert_eq!(s, 200);
    assert!(body.contains("inc_a") && !body.contains("inc_b"), "{body}");
}
