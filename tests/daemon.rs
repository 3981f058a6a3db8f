//! The daemon for real: `App` on port 0 over a socket, and the `demo` binary.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use faultline::ingest::generator::{Generator, Scenario};

mod common;
use common::http::http;
use common::server::{Server, INGEST, READ};

#[test]
fn http_ingest_detects_and_serves_incidents() {
    let mut srv = Server::start(10 << 20);
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
    assert!(!one["series"].as_array().unwrap().is_empty());
    assert_eq!(
        http(port, "GET", "/incidents/inc_nope", Some(READ), b"").0,
        404
    );

    srv.stop().unwrap();
    let card = srv.printed();
    assert!(card.contains("OPENED"), "{card}");
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
