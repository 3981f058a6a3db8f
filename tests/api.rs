//! The HTTP API through a real listening server (`App` on port 0): token and
//! scope checks on every protected route, hostile bodies and filter values,
//! people's actions, and silences muting notifications end to end.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use faultline::incident::{Incident, RootCause, Status, SummarySource, TimeRange};
use faultline::ingest::generator::{Generator, Scenario};
use faultline::rules::Severity;
use serde_json::Value;

mod common;
use common::http::{assert_filters_match_exactly, http, http_full, q};
use common::server::{Server, INGEST, READ, WRITE};

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"))
}

fn error_code(body: &str) -> String {
    json(body)["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn incident(id: &str, provider: &str) -> Incident {
    let t = chrono::DateTime::parse_from_rfc3339("2026-03-02T00:20:41Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    Incident {
        id: id.into(),
        rule: "auth_technical_failures".into(),
        kind: "auth".into(),
        severity: Severity::Critical,
        status: Status::Open,
        opened_at: t,
        updated_at: t,
        resolved_at: None,
        root_causes: vec![RootCause {
            dims: BTreeMap::from([
                ("provider".to_string(), provider.to_string()),
                ("region".to_string(), "us-west-2".to_string()),
            ]),
            score: 0.9,
            events: 100,
            failures: 40,
            expected_failures: 1.0,
            failure_rate: 0.4,
            baseline_rate: 0.01,
            expected_events: None,
        }],
        window: TimeRange { start: t, end: t },
        title: "<script>alert(1)</script>".into(),
        summary: "s".into(),
        summary_source: SummarySource::Template,
        links: vec![],
        prompt_version: None,
        candidates: Vec::new(),
        episode: Default::default(),
    }
}

fn silence_body(matchers: &str) -> String {
    let ends = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    format!(r#"{{"matchers":{matchers},"ends_at":"{ends}","comment":"planned maintenance"}}"#)
}

#[test]
fn every_protected_route_checks_token_and_scope() {
    let srv = Server::start(1 << 20);
    srv.insert(&incident("inc_a", "stripe"));
    let sil = silence_body(r#"{"provider":"stripe"}"#);
    // (method, path, body, a token that works, a token with too narrow a scope)
    let routes: Vec<(&str, &str, String, &str, &str)> = vec![
        ("POST", "/v1/events", "[]".into(), INGEST, READ),
        ("GET", "/incidents", String::new(), READ, INGEST),
        ("GET", "/incidents/inc_a", String::new(), WRITE, INGEST),
        ("POST", "/incidents/inc_a/ack", String::new(), WRITE, READ),
        (
            "POST",
            "/incidents/inc_a/resolve",
            String::new(),
            WRITE,
            INGEST,
        ),
        ("GET", "/silences", String::new(), READ, INGEST),
        ("POST", "/silences", sil.clone(), WRITE, READ),
        ("DELETE", "/silences/sil_nope", String::new(), WRITE, READ),
        ("GET", "/rules", String::new(), READ, INGEST),
        ("POST", "/rules/reload", String::new(), WRITE, READ),
        (
            "GET",
            "/explain?rule=auth_technical_failures&dims=provider=stripe",
            String::new(),
            READ,
            INGEST,
        ),
    ];
    for (method, path, body, good, narrow) in &routes {
        let b = body.as_bytes();
        let (s, h, r) = http_full(srv.port, method, path, None, b);
        assert_eq!(
            (s, error_code(&r).as_str()),
            (401, "unauthorized"),
            "{method} {path}"
        );
        assert!(h.contains("www-authenticate: bearer"), "{h}");
        let (s, r) = http(srv.port, method, path, Some("wrong-secret"), b);
        assert_eq!(
            (s, error_code(&r).as_str()),
            (401, "unauthorized"),
            "{method} {path}"
        );
        let (s, r) = http(srv.port, method, path, Some(narrow), b);
        assert_eq!(
            (s, error_code(&r).as_str()),
            (403, "forbidden"),
            "{method} {path}"
        );
        let (s, r) = http(srv.port, method, path, Some(good), b);
        // `[]` is an empty batch; the unknown silence is a 404; built-in rules
        // cannot be reloaded and nothing is evaluated yet (409): all past auth.
        assert!(
            [200, 201, 400, 404, 409].contains(&s),
            "{method} {path} with a good token: {s} {r}"
        );
        for secret in [READ, WRITE, INGEST] {
            assert!(!r.contains(secret));
        }
    }
    // The public routes need no token; the pages are shells without data.
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/ui/incidents",
        "/ui/incidents/inc_a",
    ] {
        let (s, body) = http(srv.port, "GET", path, None, b"");
        assert_eq!(s, 200, "{path}");
        assert!(!body.contains("<script>alert(1)"), "{path}");
    }
}

#[test]
fn oversized_and_malformed_bodies_are_json_errors() {
    let srv = Server::start(4096);
    let big = vec![b'x'; 64 * 1024];
    for (path, token) in [("/v1/events", INGEST), ("/silences", WRITE)] {
        let (s, r) = http(srv.port, "POST", path, Some(token), &big);
        assert_eq!(s, 413, "{path}: {r}");
        assert_eq!(error_code(&r), "payload_too_large");
    }
    for body in [
        &b"{"[..],
        b"\xff\xfe\x00",
        b"null",
        b"[1,2",
        b"{\"matchers\":{\"provider\":[\"x\"]}}",
    ] {
        let (s, r) = http(srv.port, "POST", "/silences", Some(WRITE), body);
        assert_eq!((s, error_code(&r).as_str()), (400, "invalid_body"), "{r}");
    }
    let (s, r) = http(srv.port, "POST", "/v1/events", Some(INGEST), b"[1,2");
    assert_eq!((s, error_code(&r).as_str()), (400, "invalid_body"));
    let (s, r) = http(srv.port, "POST", "/v1/events", Some(INGEST), b"   ");
    assert_eq!((s, error_code(&r).as_str()), (400, "empty_body"));
}

#[test]
fn sql_ish_and_script_ish_filter_values_are_just_values() {
    let srv = Server::start(1 << 20);
    srv.insert(&incident("inc_a", "stripe"));
    srv.insert(&incident("inc_b", "' OR '1'='1"));
    let hostile_values = [
        "' OR '1'='1",
        "stripe' --",
        "1; DROP TABLE incidents",
        "<script>alert(1)</script>",
        "\"><img src=x onerror=alert(1)>",
    ];
    // Only an exact match: the SQL-ish provider matches its own incident.
    assert_filters_match_exactly(srv.port, READ, &hostile_values);
    for hostile in hostile_values {
        for param in ["status", "severity", "since", "limit", "cursor"] {
            let (s, body) = http(
                srv.port,
                "GET",
                &format!("/incidents?{param}={}", q(hostile)),
                Some(READ),
                b"",
            );
            assert_eq!((s, error_code(&body).as_str()).0, 400, "{param}: {body}");
            assert!(
                !body.contains("<script>") && !body.contains("<img"),
                "{body}"
            );
        }
    }
    // The hostile title is stored as text and served as JSON, never as a page.
    let (_, body) = http(srv.port, "GET", "/incidents/inc_a", Some(READ), b"");
    assert_eq!(json(&body)["title"], "<script>alert(1)</script>");
    let (_, page) = http(
        srv.port,
        "GET",
        &format!("/ui/incidents/{}", q("<script>alert(1)</script>")),
        None,
        b"",
    );
    assert!(!page.contains("<script>alert(1)"));
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
}

#[test]
fn ack_and_resolve_are_idempotent_and_name_the_token() {
    let srv = Server::start(1 << 20);
    srv.insert(&incident("inc_a", "stripe"));
    let mut last = Value::Null;
    for _ in 0..3 {
        let (s, body) = http(srv.port, "POST", "/incidents/inc_a/ack", Some(WRITE), b"");
        assert_eq!(s, 200, "{body}");
        let v = json(&body);
        if !last.is_null() {
            assert_eq!(v, last, "a repeated ack changes nothing");
        }
        last = v;
    }
    assert_eq!(last["status"], "acknowledged");
    let tl = last["timeline"].as_array().unwrap();
    assert_eq!(tl.len(), 1);
    assert_eq!(tl[0]["what"], "acknowledged");
    assert_eq!(tl[0]["by"], "writer");
    for _ in 0..2 {
        let (s, body) = http(
            srv.port,
            "POST",
            "/incidents/inc_a/resolve",
            Some(WRITE),
            b"",
        );
        assert_eq!(s, 200);
        let v = json(&body);
        assert_eq!(v["status"], "resolved");
        assert_eq!(v["timeline"].as_array().unwrap().len(), 2);
    }
    let (s, body) = http(srv.port, "POST", "/incidents/inc_a/ack", Some(WRITE), b"");
    assert_eq!((s, error_code(&body).as_str()), (409, "conflict"));
    let (s, _) = http(srv.port, "POST", "/incidents/inc_zzz/ack", Some(WRITE), b"");
    assert_eq!(s, 404);
    let (_, metrics) = http(srv.port, "GET", "/metrics", None, b"");
    assert!(
        metrics.contains("faultline_incidents{status=\"resolved\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_silence_keeps_the_incident_but_mutes_its_notification() {
    let srv = Server::start(10 << 20);
    let sc = Scenario::standard(5, 55 * 60_000, 60.0);
    let first = sc.labels().faults.first().expect("one fault").clone();
    let matchers = serde_json::to_string(&first.dims).unwrap();
    let (s, body) = http(
        srv.port,
        "POST",
        "/silences",
        Some(WRITE),
        silence_body(&matchers).as_bytes(),
    );
    assert_eq!(s, 201, "{body}");
    let silence_id = json(&body)["id"].as_str().unwrap().to_string();

    let lines: Vec<String> = Generator::new(&sc).unwrap().map(|l| l.text).collect();
    for chunk in lines.chunks(5000) {
        let (s, r) = http(
            srv.port,
            "POST",
            "/v1/events",
            Some(INGEST),
            chunk.join("\n").as_bytes(),
        );
        assert_eq!(s, 200, "{r}");
    }
    // Wait (bounded) for the incident to reach the store.
    let deadline = Instant::now() + Duration::from_secs(60);
    let found = loop {
        let (_, body) = http(
            srv.port,
            "GET",
            &format!("/incidents?rule={}", first.rule),
            Some(READ),
            b"",
        );
        let list = json(&body)["incidents"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !list.is_empty() || Instant::now() > deadline {
            break list;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(found.len(), 1, "the silenced incident is still stored");
    let id = found[0]["id"].as_str().unwrap();
    let (_, body) = http(
        srv.port,
        "GET",
        &format!("/incidents/{id}"),
        Some(READ),
        b"",
    );
    let rec = json(&body);
    let muted = rec["timeline"].as_array().unwrap().iter().any(|e| {
        e["what"] == "not_notified" && e["detail"].as_str().unwrap_or("").contains(&silence_id)
    });
    assert!(muted, "{rec:#}");
    let printed = srv.printed();
    assert!(
        !printed.contains(id),
        "a silenced incident was printed:\n{printed}"
    );
    let (_, metrics) = http(srv.port, "GET", "/metrics", None, b"");
    assert!(
        !metrics.contains("faultline_notifications_muted_total 0\n"),
        "{metrics}"
    );
}

#[test]
fn rules_and_live_explanations_are_served() {
    let srv = Server::start(10 << 20);
    let port = srv.port;
    let (s, body) = http(port, "GET", "/rules", Some(READ), b"");
    assert_eq!(s, 200, "{body}");
    let v = json(&body);
    let names: Vec<&str> = v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"auth_technical_failures"), "{names:?}");
    assert_eq!(v["rules"][0]["window"], "2m", "{body}");
    assert!(v["reload"]["dir"].is_null(), "built-in rules: {body}");
    let (s, body) = http(port, "POST", "/rules/reload", Some(WRITE), b"");
    assert_eq!((s, error_code(&body).as_str()), (409, "conflict"), "{body}");

    let explain = |q: &str| http(port, "GET", &format!("/explain?{q}"), Some(READ), b"");
    let (s, body) = explain("rule=auth_technical_failures&dims=provider=stripe");
    assert_eq!(s, 409, "nothing evaluated yet: {body}");
    for (q, status) in [
        ("rule=nope&dims=provider=stripe", 404),
        ("rule=auth_technical_failures&dims=colour=red", 400),
        ("rule=auth_technical_failures&dims=provider", 400),
        ("rule=auth_technical_failures", 400),
        ("rule=auth_technical_failures&dims=provider=stripe&x=1", 400),
    ] {
        let (s, body) = explain(q);
        assert_eq!(s, status, "{q}: {body}");
        assert!(json(&body)["error"]["message"].is_string(), "{body}");
    }

    // Ten minutes of traffic: the rule evaluates steps (still warming up).
    let sc = Scenario::standard(5, 10 * 60_000, 60.0);
    let lines: Vec<String> = Generator::new(&sc).unwrap().map(|l| l.text).collect();
    let provider = lines
        .iter()
        .find_map(|l| {
            let v = json(l);
            (v["kind"] == "auth").then(|| v["provider"].as_str().unwrap().to_string())
        })
        .expect("an auth event");
    for chunk in lines.chunks(5000) {
        let (s, r) = http(
            port,
            "POST",
            "/v1/events",
            Some(INGEST),
            chunk.join("\n").as_bytes(),
        );
        assert_eq!(s, 200, "{r}");
    }
    let q = format!("rule=auth_technical_failures&dims=provider={provider}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (s, body) = explain(&q);
        if s == 200 || Instant::now() > deadline {
            assert_eq!(s, 200, "{body}");
            break body;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let v = json(&body);
    assert_eq!(v["rule"], "auth_technical_failures");
    assert_eq!(v["dims"]["provider"], provider.as_str());
    assert_eq!(
        v["warm"], false,
        "ten minutes is inside the 20-minute warm-up: {body}"
    );
    assert!(v["attempts"].as_f64().unwrap() > 0.0, "{body}");
    let conditions: Vec<&str> = v["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(conditions.contains(&"volume_floor"), "{conditions:?}");
    assert!(v["open_incidents"].as_array().unwrap().is_empty());
}
