//! The daemon for real: `App` on port 0 over a socket, and the `demo` binary.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use faultline::ingest::generator::{Generator, Scenario};

mod common;
use common::http::http;
use common::server::{Server, INGEST, READ};

/// Also: with a public URL, the incident's `url` is in the API and on the
/// printed card, and its series (the chart's) starts a window or more
/// before the episode began.
#[test]
fn http_ingest_detects_and_serves_incidents() {
    let mut settings = faultline::config::Settings::default();
    settings.api.body_limit_bytes = 10 << 20;
    settings.public_url = Some("https://faultline.example.com".into());
    let mut srv = Server::start_with(settings);
    let port = srv.port;

    // A scenario with its first fault, pushed in NDJSON chunks.
    let sc = Scenario::standard(5, 55 * 60_000, 60.0);
    let labels = sc.labels();
    let first = labels.faults.first().expect("one fault").clone();
    let lines: Vec<String> = Generator::new(&sc).unwrap().map(|l| l.text).collect();
    assert_eq!(http(port, "POST", "/v1/events", Some(READ), b"{}").0, 403);
    assert_eq!(http(port, "POST", "/v1/events", None, b"{}").0, 401);
    let mut accepted = 0u64;
    for chunk in lines.chunks(5000) {
        let body = chunk.join("\n");
        let (status, resp) = http(port, "POST", "/v1/events", Some(INGEST), body.as_bytes());
        assert_eq!(status, 200, "{resp}");
        let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
        accepted += v["accepted"].as_u64().unwrap();
    }
    assert!(accepted > 150_000, "{accepted}");

    // Wait (bounded) for the incident to reach the store.
    let deadline = Instant::now() + Duration::from_secs(60);
    let incidents = loop {
        let (status, body) = http(
            port,
            "GET",
            &format!("/incidents?rule={}", first.rule),
            Some(READ),
            b"",
        );
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let list = v["incidents"].as_array().cloned().unwrap_or_default();
        if !list.is_empty() || Instant::now() > deadline {
            break list;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(incidents.len(), 1, "{incidents:#?}");
    let dims: std::collections::BTreeMap<String, String> =
        serde_json::from_value(incidents[0]["root_causes"][0]["dims"].clone()).unwrap();
    assert_eq!(dims, first.dims);
    let id = incidents[0]["id"].as_str().unwrap();
    let (status, body) = http(port, "GET", &format!("/incidents/{id}"), Some(READ), b"");
    assert_eq!(status, 200);
    let one: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(!one["timeline"].as_array().unwrap().is_empty());
    let url = format!("https://faultline.example.com/ui/incidents/{id}");
    assert_eq!(one["url"], url.as_str());
    assert_eq!(incidents[0]["url"], url.as_str());
    // The series reaches back a window (this rule's: 2 minutes) before the
    // episode began, and on past the opening.
    let at = |v: &serde_json::Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    let series = one["series"].as_array().unwrap();
    let began = at(&one["began_at"]);
    let opened = at(&one["opened_at"]);
    let first = at(&series[0]["at"]);
    assert!(first <= began - 120_000, "{first} {began}");
    assert!(series.iter().any(|p| at(&p["at"]) > opened));
    assert!(series.windows(2).all(|w| at(&w[0]["at"]) < at(&w[1]["at"])));
    assert_eq!(
        http(port, "GET", "/incidents/inc_nope", Some(READ), b"").0,
        404
    );

    srv.stop().unwrap();
    let card = srv.printed();
    assert!(card.contains("OPENED"), "{card}");
    assert!(card.contains(&url), "{card}");
}

#[test]
fn demo_prints_an_injected_fault_and_its_incident() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args([
            "demo",
            "--duration",
            "120s",
            "--speed",
            "120",
            "--rate",
            "80",
        ])
        .env("FAULTLINE_LISTEN", "127.0.0.1:0")
        .env("FAULTLINE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(110);
    let (mut injected, mut opened) = (None, None);
    while Instant::now() < deadline && opened.is_none() {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) if line.starts_with("-- ") && injected.is_none() => injected = Some(line),
            Ok(line) if line.contains("OPENED") => opened = Some(line),
            _ => {}
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(injected.is_some(), "no fault was announced");
    assert!(opened.is_some(), "no incident opened after {injected:?}");
}

/// `faultline run --rules DIR` as a process with polling off: on SIGHUP a
/// broken edit is refused with the old rules kept and a good one is applied;
/// `GET /rules` shows both.
#[test]
fn the_binary_reloads_its_rules_on_sighup_and_refuses_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["auth.yaml", "settlement.yaml", "webhook.yaml"] {
        std::fs::copy(format!("rules/{f}"), dir.path().join(f)).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("faultline.toml");
    std::fs::write(&config, "rules_reload_interval = \"0s\"\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["run", "--rules"])
        .arg(dir.path())
        .arg("--config")
        .arg(&config)
        .env("FAULTLINE_LISTEN", format!("127.0.0.1:{port}"))
        .env("FAULTLINE_API_TOKENS", "r3ad:read")
        .env("FAULTLINE_LOG", "info")
        .env_remove("FAULTLINE_NATS_URL")
        .env_remove("FAULTLINE_CLICKHOUSE_URL")
        .env_remove("FAULTLINE_SLACK_BOT_TOKEN")
        .env_remove("FAULTLINE_LLM_BASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rules = || {
        let (s, body) = http(port, "GET", "/rules", Some("r3ad"), b"");
        assert_eq!(s, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let wait = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait("the daemon listening", &|| {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let v = rules();
    let n = v["rules"].as_array().unwrap().len();
    assert_eq!(v["reload"]["reloads"], 0);

    let hup = || {
        let status = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    // A broken edit: refused, the rules in force kept.
    let auth = dir.path().join("auth.yaml");
    let good = std::fs::read_to_string(&auth).unwrap();
    std::fs::write(&auth, good.replace("window: 2m", "window: 7s")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        rules()["reload"]["last_error"].is_null(),
        "no polling: nothing yet"
    );
    hup();
    wait("the broken file refused", &|| {
        !rules()["reload"]["last_error"].is_null()
    });
    let v = rules();
    let err = v["reload"]["last_error"].to_string();
    assert!(
        err.contains("auth_technical_failures"),
        "names the rule: {err}"
    );
    assert_eq!(v["rules"].as_array().unwrap().len(), n);
    assert_eq!(v["reload"]["reloads"], 0);

    // A good edit: one new rule.
    let extra = good.replace("name: auth_technical_failures", "name: auth_failures_copy");
    std::fs::write(&auth, good).unwrap();
    std::fs::write(dir.path().join("extra.yaml"), extra).unwrap();
    hup();
    wait("the new rule in force", &|| {
        rules()["rules"].as_array().unwrap().len() == n + 1
    });
    let v = rules();
    assert!(v["reload"]["last_error"].is_null(), "{v}");
    assert!(
        v["reload"]["last_reload"]["added"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "auth_failures_copy"),
        "{v}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP must not stop it"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// With the built-in rules there is nothing to reload: SIGHUP is logged, and
/// the daemon keeps running (the signal's default action would stop it).
#[test]
fn sighup_does_not_stop_a_daemon_on_built_in_rules() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .arg("run")
        .current_dir(dir.path())
        .env("FAULTLINE_LISTEN", format!("127.0.0.1:{port}"))
        .env_remove("FAULTLINE_RULES_DIR")
        .env_remove("FAULTLINE_NATS_URL")
        .env_remove("FAULTLINE_CLICKHOUSE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "SIGHUP stopped it");
    assert_eq!(http(port, "GET", "/healthz", None, b"").0, 200);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}
