//! Probes of the outside audit (issue 19) against a real daemon on loopback:
//! card numbers in every written form, CVVs, secrets and emails never leave
//! the process (dead letters read back from a real nats-server included), and
//! an unauthenticated client cannot make the Slack route read a large body.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use common::hostile::leaked_pan;
use common::http::http;
use common::nats_server::NatsServer;
use common::server::{Server, READ};
use faultline::app::App;
use faultline::config::Settings;
use faultline::incident::Incident;
use faultline::ingest::nats::{DEADLETTER_SUBJECT, REASON_HEADER};
use faultline::notify::StdoutNotifier;
use faultline::pipeline::Clock;
use faultline::rules::RuleSet;
use futures_util::StreamExt;

/// The card numbers the probes hide (all pass the Luhn check).
const PANS: [&str; 3] = ["4111111111111111", "5500000000000004", "4012888888881881"];

/// Other data that must never be shown: a CVV, an API key, a bearer token and
/// an email address.
const SECRETS: [&str; 4] = [
    "cvv=123",
    "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "Bearer abcdef0123456789abcdef",
    "jane.doe@example.com",
];

fn pans() -> Vec<String> {
    PANS.iter().map(|p| p.to_string()).collect()
}

/// Panics when `text` shows a card number in any form or one of [`SECRETS`].
/// Besides [`leaked_pan`]'s forms, the separators of CONTRACT section 6 that
/// it keeps (dots, slashes, underscores, commas, `%20`) are removed first.
fn assert_clean(what: &str, text: &str) {
    let separated: String = text
        .replace("%20", "")
        .chars()
        .filter(|c| !matches!(c, '.' | '/' | '_' | ','))
        .collect();
    for shown in [text, &separated] {
        if let Some(pan) = leaked_pan(shown, &pans()) {
            panic!("{what} leaks {pan}: {text}");
        }
    }
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} leaks {secret:?}: {text}");
    }
}

/// H2: rejected messages whose card numbers are written with no-break spaces
/// (as JSON escapes), full-width digits, dots or percent-encoding, published
/// on a subject that itself holds a card number, come back on
/// `faultline.deadletter` with a reason and no card number or secret in their
/// body or headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_read_back_from_nats_hold_no_card_data() {
    let server = NatsServer::start();
    let mut settings = Settings {
        listen: "127.0.0.1:0".into(),
        ..Settings::default()
    };
    settings.nats.url = Some(server.url());
    settings.nats.stream = "SECTEST".into();
    settings.nats.subjects = vec!["sectest.>".into()];
    let app = App::build_with(
        &settings,
        RuleSet::embedded(),
        Clock::EventTime,
        Arc::new(StdoutNotifier::with_writer(std::io::sink())),
    )
    .await
    .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async move {
        let _ = stop_rx.await;
    }));

    let client = async_nats::connect(server.url()).await.unwrap();
    let mut dead = client.subscribe(DEADLETTER_SUBJECT).await.unwrap();
    client.flush().await.unwrap();
    let js = jetstream::new(client.clone());
    let event = |extra: &str| {
        format!(
            r#"{{"id":"e1","ts":"2026-03-02T00:00:00Z","kind":"auth","outcome":"failure","provider":"p","region":"r","message":"cvv=123 jane.doe@example.com",{extra}}}"#
        )
    };
    let lines = [
        event(r#""bin":"4111\u00a01111\u00a01111\u00a01111""#),
        event(r#""bin":"５５０００００００００００００４""#),
        event(r#""merchant_id":"4012.8888.8888.1881""#),
        event(r#""error_code":"4111%201111%201111%201111""#),
        event(r#""provider":"994111111111111111""#),
        r#"{"id":"x","message":"4111 1111 1111 1111 cvv=123" "#.to_string(),
    ];
    let subject = "sectest.4111111111111111";
    for line in &lines {
        js.publish(subject, line.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let mut reasons = Vec::new();
    while reasons.len() < lines.len() {
        let msg = tokio::time::timeout(Duration::from_secs(30), dead.next())
            .await
            .expect("a dead letter within 30 s")
            .expect("subscription open");
        let headers = msg.headers.clone().expect("dead letters carry headers");
        let reason = headers
            .get(REASON_HEADER)
            .map(|v| v.as_str().to_string())
            .expect("a reason header");
        let shown_headers: Vec<String> = headers
            .iter()
            .map(|(k, vs)| {
                let vs: Vec<&str> = vs.iter().map(|v| v.as_str()).collect();
                format!("{k}: {}", vs.join(","))
            })
            .collect();
        assert_clean("dead-letter headers", &shown_headers.join("\n"));
        let body = String::from_utf8_lossy(&msg.payload).to_string();
        assert_clean("dead-letter body", &body);
        // Decoded as well: a JSON escape must not spell a number once read.
        let dl: serde_json::Value = serde_json::from_slice(&msg.payload).expect("a JSON body");
        assert_clean("decoded dead letter", &format!("{dl:?}"));
        assert_eq!(dl["reason"], reason.as_str(), "{body}");
        reasons.push(reason);
    }
    reasons.sort();
    assert!(reasons.contains(&"invalid_json".to_string()), "{reasons:?}");
    assert!(
        reasons.contains(&"invalid_merchant_id".to_string()),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"invalid_error_code".to_string()),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"invalid_provider".to_string()),
        "{reasons:?}"
    );

    let _ = stop_tx.send(());
    running.await.unwrap().unwrap();
}

/// An incident as a store shared with other writers (or written before a
/// redaction rule existed) may hold it: every form of card number of M4 in
/// the title and summary, and a CVV, secret and email (M5) in root-cause
/// dimensions. Built on the golden set's hostile incident.
fn dirty_incident(id: &str) -> Incident {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/llm/03_hostile_dims.json"
    );
    let case: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut inc: Incident = serde_json::from_value(case["incident"].clone()).unwrap();
    let forms = "4111.1111.1111.1111 5500/0000/0000/0004 4111_1111_1111_1111 \
                 4012,8888,8888,1881 4111%201111%201111%201111 994111111111111111";
    inc.id = id.into();
    inc.title = format!("declines for {forms}");
    inc.summary = format!("Bearer abcdef0123456789abcdef saw {forms}");
    inc.root_causes[0].dims = BTreeMap::from([
        ("error_code".to_string(), "cvv=123".to_string()),
        (
            "provider".to_string(),
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc".to_string(),
        ),
        (
            "merchant_id".to_string(),
            "jane.doe@example.com".to_string(),
        ),
        ("region".to_string(), "4012-8888-8888-1881".to_string()),
    ]);
    inc
}

/// M4/M5: `/incidents` and `/incidents/{id}` show none of the forms, and the
/// incident is still there to be read (masked, not dropped).
#[test]
fn incidents_answers_mask_every_form_of_card_data_and_secrets() {
    let srv = Server::start(1 << 20);
    srv.insert(&dirty_incident("inc_dirty"));
    let (status, body) = http(srv.port, "GET", "/incidents", Some(READ), b"");
    assert_eq!(status, 200, "{body}");
    assert_clean("/incidents", &body);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["incidents"][0]["id"], "inc_dirty", "{body}");
    assert!(
        v["incidents"][0]["title"]
            .as_str()
            .unwrap()
            .starts_with("declines for "),
        "{body}"
    );
    let (status, body) = http(srv.port, "GET", "/incidents/inc_dirty", Some(READ), b"");
    assert_eq!(status, 200, "{body}");
    assert_clean("/incidents/inc_dirty", &body);
    // A filter naming a card number is not echoed back in the error or answer.
    let (_, body) = http(
        srv.port,
        "GET",
        "/incidents?limit=4111111111111111",
        Some(READ),
        b"",
    );
    assert_clean("an invalid query's error", &body);
}

/// L3: `/slack/interactions` refuses a body over 64 KiB before checking the
/// signature, although the API's own body limit is far larger; a smaller
/// unsigned body is read and refused for its signature.
#[test]
fn slack_interactions_read_at_most_64_kib_before_the_signature() {
    let srv = Server::start(10 << 20);
    let big = vec![b'a'; 1 << 20];
    let (status, body) = http(srv.port, "POST", "/slack/interactions", None, &big);
    assert_eq!(status, 413, "{body}");
    let small = vec![b'a'; 60 * 1024];
    let (status, body) = http(srv.port, "POST", "/slack/interactions", None, &small);
    assert_eq!(status, 401, "{body}");
}

/// Kills the daemon it holds when dropped, so a failed assertion leaves no
/// process behind.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// H1: the release binary under a 512-descriptor limit, 600 sockets from
/// another client address each holding a partial request header (the
/// header-read timeout set far beyond the test, so only the connection caps
/// can protect): `/healthz` still answers from this address, and the sockets
/// past the per-client cap are refused and counted.
#[test]
fn healthz_answers_while_600_slow_sockets_hold_under_512_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("faultline.toml");
    std::fs::write(&config, "[api]\nheader_read_timeout = \"600s\"\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _daemon = Daemon(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(r#"ulimit -n 512 && exec "$0" run --config "$1""#)
            .arg(env!("CARGO_BIN_EXE_faultline"))
            .arg(&config)
            .env("FAULTLINE_LISTEN", format!("127.0.0.1:{port}"))
            .env("FAULTLINE_LOG", "warn")
            .env_remove("FAULTLINE_NATS_URL")
            .env_remove("FAULTLINE_CLICKHOUSE_URL")
            .env_remove("FAULTLINE_SLACK_TOKEN")
            .env_remove("FAULTLINE_LLM_BASE_URL")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon never answered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    let slow: Vec<tokio::net::TcpStream> = rt.block_on(async {
        use tokio::io::AsyncWriteExt;
        let mut held = Vec::new();
        for _ in 0..600 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            // Another loopback address: the attacker is a different client.
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            let mut s = socket
                .connect(([127, 0, 0, 1], port).into())
                .await
                .expect("the kernel accepts the connection");
            // A refused socket may already be closed: the write may fail.
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
            held.push(s);
        }
        held
    });
    assert_eq!(slow.len(), 600);

    let (status, body) = http(port, "GET", "/healthz", None, b"");
    assert_eq!(status, 200, "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let refused = common::http::metric(port, "faultline_http_connections_refused_total");
        if refused.is_some_and(|n| n >= 500.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sockets past the per-client cap were not refused: {refused:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, body) = http(port, "GET", "/healthz", None, b"");
    assert_eq!(status, 200, "{body}");
    drop(slow);
}
