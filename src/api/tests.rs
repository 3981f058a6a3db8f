//! Every route through `oneshot`: no token, wrong token, wrong scope, good token.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tower::ServiceExt;

use super::*;
use crate::config::Settings;
use crate::store::memory::fixtures::incident;
use crate::store::{IncidentQuery, MemoryStore};

const TOKENS: &str =
    "reader=read-secret:read,writer=write-secret:write,ingester=ingest-secret:ingest";
const T0: i64 = 1_772_410_841_000;

struct App {
    router: Router,
    events: mpsc::Receiver<Event>,
    store: Arc<MemoryStore>,
    metrics: Arc<Metrics>,
}

fn app_with(toml: &str, tokens: &str, capacity: usize) -> App {
    let tokens = tokens.to_string();
    let settings = Settings::load_from(toml, move |k| {
        (k == "FAULTLINE_API_TOKENS").then(|| tokens.clone())
    })
    .unwrap();
    let store = Arc::new(MemoryStore::default());
    let metrics = Arc::new(Metrics::new());
    let (tx, rx) = mpsc::channel(capacity);
    let state = AppState::new(&settings, store.clone(), tx, metrics.clone());
    App {
        router: router(state),
        events: rx,
        store,
        metrics,
    }
}

fn app() -> App {
    app_with("", TOKENS, 1024)
}

async fn call(
    router: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: &str,
) -> Response {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req.body(Body::from(body.to_string())).unwrap();
    router.clone().oneshot(req).await.unwrap()
}

async fn json_of(resp: Response) -> Value {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {bytes:?}"))
}

async fn text_of(resp: Response) -> String {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

async fn expect_error(resp: Response, status: StatusCode, code: &str) {
    assert_eq!(resp.status(), status);
    if status == StatusCode::UNAUTHORIZED {
        let www = resp.headers().get(header::WWW_AUTHENTICATE).unwrap();
        assert!(www.to_str().unwrap().starts_with("Bearer"));
    }
    let body = json_of(resp).await;
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

fn ev(id: &str) -> String {
    format!(
        r#"{{"id":"{id}","ts":"2026-03-02T00:20:41Z","kind":"auth","outcome":"failure","provider":"stripe","region":"us-west-2"}}"#
    )
}

#[tokio::test]
async fn open_routes_need_no_token() {
    let a = app();
    let r = call(&a.router, Method::GET, "/healthz", None, "").await;
    assert_eq!(r.status(), StatusCode::OK);

    let r = call(&a.router, Method::GET, "/readyz", None, "").await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = json_of(r).await;
    assert_eq!(body["status"], "ready");
    assert_eq!(body["integrations"]["store"]["mode"], "memory");
    assert_eq!(body["integrations"]["ingest"]["mode"], "http");
    assert_eq!(body["integrations"]["summarizer"]["status"], "ok");

    a.metrics.event_rejected("invalid_ts");
    let r = call(&a.router, Method::GET, "/metrics", None, "").await;
    assert_eq!(r.status(), StatusCode::OK);
    let ct = r
        .headers()
        .get(header::CONTENT_TYPE)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = text_of(r).await;
    assert!(
        text.contains("faultline_events_rejected_total{reason=\"invalid_ts\"} 1"),
        "{text}"
    );
    for secret in ["read-secret", "write-secret", "ingest-secret"] {
        assert!(!text.contains(secret));
    }
}

#[tokio::test]
async fn protected_routes_check_token_and_scope() {
    let mut a = app();
    a.store
        .upsert(&incident("inc_1", T0), &[], &[])
        .await
        .unwrap();
    let routes: [(Method, &str, &str, &str); 3] = [
        (Method::POST, "/v1/events", "ingest-secret", "read-secret"),
        (Method::GET, "/incidents", "read-secret", "ingest-secret"),
        (
            Method::GET,
            "/incidents/inc_1",
            "write-secret",
            "ingest-secret",
        ),
    ];
    for (method, uri, good, wrong_scope) in routes {
        let body = ev("e1");
        let r = call(&a.router, method.clone(), uri, None, &body).await;
        expect_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let r = call(&a.router, method.clone(), uri, Some("nope"), &body).await;
        expect_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let r = call(&a.router, method.clone(), uri, Some(wrong_scope), &body).await;
        expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
        let r = call(&a.router, method.clone(), uri, Some(good), &body).await;
        assert_eq!(r.status(), StatusCode::OK, "{method} {uri}");
    }
    // Only the authorized POST reached the pipeline.
    assert_eq!(a.events.try_recv().unwrap().id, "e1");
    assert!(a.events.try_recv().is_err());
}

#[tokio::test]
async fn no_tokens_configured_refuses_all_but_open_routes() {
    let a = app_with("", "", 16);
    for uri in ["/incidents", "/incidents/x"] {
        let r = call(&a.router, Method::GET, uri, Some("anything"), "").await;
        expect_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    }
    let r = call(
        &a.router,
        Method::POST,
        "/v1/events",
        Some("anything"),
        &ev("e"),
    )
    .await;
    expect_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    for uri in ["/healthz", "/readyz", "/metrics"] {
        let r = call(&a.router, Method::GET, uri, None, "").await;
        assert_eq!(r.status(), StatusCode::OK, "{uri}");
    }
}

#[tokio::test]
async fn ndjson_with_good_and_bad_lines() {
    let mut a = app();
    let body = format!(
        "{}\r\n\n{{\"id\":\"x\"}}\nnot json\n{}\n{{\"id\":\"c\",\"ts\":\"2026-03-02T00:20:41Z\",\"kind\":\"auth\",\"outcome\":\"failure\",\"provider\":\"p\",\"region\":\"r\",\"bin\":\"4111111111111111\"}}\n",
        ev("a"),
        ev("b")
    );
    let r = call(
        &a.router,
        Method::POST,
        "/v1/events",
        Some("ingest-secret"),
        &body,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let report: IngestReport = serde_json::from_value(json_of(r).await).unwrap();
    assert_eq!(report.accepted, 2);
    let expected: BTreeMap<String, u64> = [
        ("missing_ts".to_string(), 1),
        ("invalid_json".to_string(), 1),
        ("card_number_in_bin".to_string(), 1),
    ]
    .into();
    assert_eq!(report.rejected, expected);
    assert_eq!(a.events.try_recv().unwrap().id, "a");
    assert_eq!(a.events.try_recv().unwrap().id, "b");
    assert_eq!(a.metrics.received(), 5);
    assert_eq!(a.metrics.rejections()["card_number_in_bin"], 1);
}

#[tokio::test]
async fn json_array_and_pretty_object() {
    let mut a = app();
    let body = format!("[{}, 42, {{\"id\":\"y\"}}, {}]", ev("a"), ev("b"));
    let r = call(
        &a.router,
        Method::POST,
        "/v1/events",
        Some("ingest-secret"),
        &body,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = json_of(r).await;
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["rejected"]["not_an_object"], 1);
    assert_eq!(body["rejected"]["missing_ts"], 1);
    assert_eq!(a.events.try_recv().unwrap().id, "a");
    assert_eq!(a.events.try_recv().unwrap().id, "b");

    let pretty =
        serde_json::to_string_pretty(&serde_json::from_str::<Value>(&ev("p")).unwrap()).unwrap();
    let r = call(
        &a.router,
        Method::POST,
        "/v1/events",
        Some("ingest-secret"),
        &pretty,
    )
    .await;
    assert_eq!(json_of(r).await["accepted"], 1);
    assert_eq!(a.events.try_recv().unwrap().id, "p");

    let r = call(
        &a.router,
        Method::POST,
        "/v1/events",
        Some("ingest-secret"),
        "[]",
    )
    .await;
    assert_eq!(json_of(r).await["accepted"], 0);
}

#[tokio::test]
async fn unusable_bodies_are_400() {
    let a = app();
    for (body, code) in [
        ("", "empty_body"),
        ("  \n\n ", "empty_body"),
        ("hello world\nbye", "invalid_body"),
        ("[{\"id\":", "invalid_body"),
        ("\"just a string\"", "invalid_body"),
    ] {
        let r = call(
            &a.router,
            Method::POST,
            "/v1/events",
            Some("ingest-secret"),
            body,
        )
        .await;
        expect_error(r, StatusCode::BAD_REQUEST, code).await;
    }
}

#[tokio::test]
async fn oversized_body_is_413_json() {
    let a = app_with("[api]\nbody_limit_bytes = 1024\n", TOKENS, 16);
    let body = ev("a").repeat(100);
    let r = call(
        &a.router,
        Method::POST,
        "/v1/events",
        Some("ingest-secret"),
        &body,
    )
    .await;
    expect_error(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    // The limit does not run before authentication.
    let r = call(&a.router, Method::POST, "/v1/events", None, &body).await;
    expect_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn a_full_pipeline_times_out_as_json_503() {
    // Nobody drains a channel of one: the handler waits on backpressure until
    // the request timeout answers for it.
    let a = app_with("[api]\nrequest_timeout = \"200ms\"\n", TOKENS, 1);
    let body = format!("{}\n{}\n{}\n", ev("a"), ev("b"), ev("c"));
    let r = call(
        &a.router,
        Method::POST,
        "/v1/events",
        Some("ingest-secret"),
        &body,
    )
    .await;
    expect_error(r, StatusCode::SERVICE_UNAVAILABLE, "timeout").await;
}

#[tokio::test]
async fn closed_pipeline_is_503() {
    let a = app();
    drop(a.events);
    let r = call(
        &a.router,
        Method::POST,
        "/v1/events",
        Some("ingest-secret"),
        &ev("a"),
    )
    .await;
    expect_error(r, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    let r = call(&a.router, Method::GET, "/readyz", None, "").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn get_incident_with_history_or_404() {
    let a = app();
    let inc = incident("inc_1", T0);
    let entry = crate::incident::TimelineEntry {
        at: inc.opened_at,
        what: "opened".into(),
        by: "faultline".into(),
        detail: String::new(),
    };
    let point = crate::incident::SeriesPoint {
        at: inc.opened_at,
        events: 4210,
        failures: 1702,
        value: 0.404,
        baseline: 0.0051,
    };
    a.store.upsert(&inc, &[entry], &[point]).await.unwrap();
    let r = call(
        &a.router,
        Method::GET,
        "/incidents/inc_1",
        Some("read-secret"),
        "",
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let body = json_of(r).await;
    assert_eq!(body["id"], "inc_1");
    assert_eq!(body["status"], "open");
    assert_eq!(body["root_causes"][0]["dims"]["provider"], "stripe");
    assert_eq!(body["timeline"][0]["what"], "opened");
    assert_eq!(body["series"][0]["failures"], 1702);

    let r = call(
        &a.router,
        Method::GET,
        "/incidents/inc_nope",
        Some("read-secret"),
        "",
    )
    .await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn list_filters_and_rejects_bad_parameters() {
    let a = app();
    let mut other = incident("inc_2", T0 + 1000);
    other.root_causes[0]
        .dims
        .insert("provider".into(), "adyen".into());
    a.store
        .upsert(&incident("inc_1", T0), &[], &[])
        .await
        .unwrap();
    a.store.upsert(&other, &[], &[]).await.unwrap();

    let ids = |v: &Value| -> Vec<String> {
        v["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect()
    };
    let r = call(
        &a.router,
        Method::GET,
        "/incidents",
        Some("read-secret"),
        "",
    )
    .await;
    let body = json_of(r).await;
    assert_eq!(ids(&body), ["inc_2", "inc_1"]);
    assert!(body["next_cursor"].is_null());

    let r = call(
        &a.router,
        Method::GET,
        "/incidents?provider=adyen&status=open",
        Some("read-secret"),
        "",
    )
    .await;
    assert_eq!(ids(&json_of(r).await), ["inc_2"]);
    let r = call(
        &a.router,
        Method::GET,
        "/incidents?since=2026-03-02T00:20:42Z",
        Some("read-secret"),
        "",
    )
    .await;
    assert_eq!(ids(&json_of(r).await), ["inc_2"]);

    for (query, code) in [
        ("limit=0", "invalid_query"),
        ("limit=501", "invalid_query"),
        ("limit=abc", "invalid_query"),
        ("since=yesterday", "invalid_query"),
        ("until=2026-03-02", "invalid_query"),
        ("status=closed", "invalid_query"),
        ("cursor=zzzz", "invalid_cursor"),
    ] {
        let r = call(
            &a.router,
            Method::GET,
            &format!("/incidents?{query}"),
            Some("read-secret"),
            "",
        )
        .await;
        expect_error(r, StatusCode::BAD_REQUEST, code).await;
    }
}

#[tokio::test]
async fn pagination_survives_inserts_without_duplicates() {
    let a = app();
    for i in 0..9 {
        a.store
            .upsert(
                &incident(&format!("inc_{i}"), T0 + (i / 3) * 1000),
                &[],
                &[],
            )
            .await
            .unwrap();
    }
    let mut seen: Vec<String> = Vec::new();
    let mut uri = "/incidents?limit=4".to_string();
    for round in 0.. {
        let r = call(&a.router, Method::GET, &uri, Some("read-secret"), "").await;
        assert_eq!(r.status(), StatusCode::OK);
        let body = json_of(r).await;
        for i in body["incidents"].as_array().unwrap() {
            seen.push(i["id"].as_str().unwrap().to_string());
        }
        // A newer incident arrives between pages.
        a.store
            .upsert(
                &incident(&format!("new_{round}"), T0 + 60_000 + round),
                &[],
                &[],
            )
            .await
            .unwrap();
        match body["next_cursor"].as_str() {
            Some(c) => uri = format!("/incidents?limit=4&cursor={c}"),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "duplicates in {seen:?}");
    for i in 0..9 {
        assert!(
            seen.contains(&format!("inc_{i}")),
            "inc_{i} missing from {seen:?}"
        );
    }
    // Newest first throughout.
    let page = a
        .store
        .list(&IncidentQuery {
            limit: Some(500),
            ..Default::default()
        })
        .await
        .unwrap();
    let order: Vec<&str> = page.incidents.iter().map(|i| i.id.as_str()).collect();
    let seen_order: Vec<&str> = order
        .iter()
        .copied()
        .filter(|id| seen.iter().any(|s| s == id))
        .collect();
    assert_eq!(seen, seen_order);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let a = app();
    let r = call(&a.router, Method::GET, "/nope", None, "").await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = call(&a.router, Method::DELETE, "/healthz", None, "").await;
    expect_error(r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}

#[tokio::test]
async fn serve_answers_and_shuts_down() {
    let a = app();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let settings = Settings::default();
    let (tx, _rx) = mpsc::channel(1);
    let state = AppState::new(&settings, a.store.clone(), tx, a.metrics.clone());
    let server = tokio::spawn(serve(listener, state, async {
        let _ = stop_rx.await;
    }));
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    stream.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    stop_tx.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("server stops")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn openapi_describes_every_route() {
    let a = app();
    let r = call(&a.router, Method::GET, "/openapi.json", None, "").await;
    assert_eq!(r.status(), StatusCode::OK);
    let spec = json_of(r).await;
    assert!(
        spec["openapi"].as_str().unwrap().starts_with("3."),
        "{spec}"
    );
    let paths = spec["paths"].as_object().unwrap();
    for (method, path, _) in routes() {
        let op = &paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} missing from the spec"))[method.to_lowercase()];
        assert!(op.is_object(), "{method} {path} missing from the spec");
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path} has no responses"
        );
    }
    // And nothing described that the router does not serve.
    let served: Vec<(String, String)> = routes()
        .into_iter()
        .map(|(m, p, _)| (m.to_lowercase(), p.to_string()))
        .collect();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            assert!(
                served.contains(&(method.clone(), path.clone())),
                "{method} {path} described but not served"
            );
        }
    }
    // Protected routes name the bearer scheme; schemas exist for the shapes.
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for schema in [
        "Incident",
        "IncidentRecord",
        "IncidentPage",
        "Silence",
        "NewSilence",
        "ErrorBody",
    ] {
        assert!(
            spec["components"]["schemas"][schema].is_object(),
            "{schema}"
        );
    }
    assert!(paths["/incidents"]["get"]["security"].is_array());
}

#[tokio::test]
async fn ack_and_resolve_are_idempotent_and_audited() {
    let a = app();
    a.store
        .upsert(&incident("inc_1", T0), &[], &[])
        .await
        .unwrap();
    for (uri, bad) in [
        ("/incidents/inc_1/ack", "read-secret"),
        ("/incidents/inc_1/resolve", "ingest-secret"),
    ] {
        let r = call(&a.router, Method::POST, uri, None, "").await;
        expect_error(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let r = call(&a.router, Method::POST, uri, Some(bad), "").await;
        expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    }
    for _ in 0..2 {
        let r = call(
            &a.router,
            Method::POST,
            "/incidents/inc_1/ack",
            Some("write-secret"),
            "",
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        let body = json_of(r).await;
        assert_eq!(body["status"], "acknowledged");
        assert_eq!(body["timeline"].as_array().unwrap().len(), 1);
        assert_eq!(body["timeline"][0]["by"], "writer");
    }
    let r = call(
        &a.router,
        Method::POST,
        "/incidents/inc_1/resolve",
        Some("write-secret"),
        "",
    )
    .await;
    let body = json_of(r).await;
    assert_eq!(body["status"], "resolved");
    assert!(body["resolved_at"].is_string());
    let r = call(
        &a.router,
        Method::POST,
        "/incidents/inc_1/ack",
        Some("write-secret"),
        "",
    )
    .await;
    expect_error(r, StatusCode::CONFLICT, "conflict").await;
    let r = call(
        &a.router,
        Method::POST,
        "/incidents/nope/resolve",
        Some("write-secret"),
        "",
    )
    .await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn silences_are_validated_listed_and_deleted() {
    let a = app();
    let later = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let past = (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
    let far = (chrono::Utc::now() + chrono::Duration::days(400)).to_rfc3339();
    let good = format!(
        r#"{{"matchers":{{"provider":"stripe"}},"ends_at":"{later}","comment":"maintenance"}}"#
    );
    let r = call(
        &a.router,
        Method::POST,
        "/silences",
        Some("read-secret"),
        &good,
    )
    .await;
    expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    for bad in [
        String::new(),
        "not json".into(),
        "[]".into(),
        format!(r#"{{"matchers":{{}},"ends_at":"{later}","comment":"c"}}"#),
        format!(r#"{{"matchers":{{"nope":"x"}},"ends_at":"{later}","comment":"c"}}"#),
        format!(r#"{{"matchers":{{"provider":""}},"ends_at":"{later}","comment":"c"}}"#),
        format!(r#"{{"matchers":{{"provider":"x"}},"ends_at":"{past}","comment":"c"}}"#),
        format!(r#"{{"matchers":{{"provider":"x"}},"ends_at":"{far}","comment":"c"}}"#),
        format!(r#"{{"matchers":{{"provider":"x"}},"ends_at":"{later}","comment":""}}"#),
        r#"{"matchers":{"provider":"x"},"ends_at":"tomorrow","comment":"c"}"#.into(),
        format!(r#"{{"matchers":{{"provider":"x"}},"ends_at":"{later}","comment":"c","extra":1}}"#),
        format!(r#"{{"matchers":{{"provider":"x"}},"ends_at":"{later}","comment":"c"}} trailing"#),
    ] {
        let r = call(
            &a.router,
            Method::POST,
            "/silences",
            Some("write-secret"),
            &bad,
        )
        .await;
        expect_error(r, StatusCode::BAD_REQUEST, "invalid_body").await;
    }
    let r = call(
        &a.router,
        Method::POST,
        "/silences",
        Some("write-secret"),
        &good,
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created = json_of(r).await;
    assert_eq!(created["created_by"], "writer");
    let id = created["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("sil_"));

    let r = call(&a.router, Method::GET, "/silences", Some("read-secret"), "").await;
    let list = json_of(r).await;
    assert_eq!(list["silences"][0]["id"], id.as_str());
    assert_eq!(list["silences"][0]["matchers"]["provider"], "stripe");

    let uri = format!("/silences/{id}");
    let r = call(&a.router, Method::DELETE, &uri, Some("read-secret"), "").await;
    expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = call(&a.router, Method::DELETE, &uri, Some("write-secret"), "").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = call(&a.router, Method::DELETE, &uri, Some("write-secret"), "").await;
    expect_error(r, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn pages_are_public_shells_that_escape_the_path() {
    let a = app();
    let r = call(&a.router, Method::GET, "/ui/incidents", None, "").await;
    assert_eq!(r.status(), StatusCode::OK);
    let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'nonce-"));
    let html = text_of(r).await;
    assert!(html.contains("data-page=\"list\""));
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .unwrap();
    assert!(html.contains(&format!("<script nonce=\"{nonce}\">")));
    // No external assets.
    for external in ["src=\"http", "href=\"http", "@import", "url("] {
        assert!(!html.contains(external), "{external}");
    }

    let r = call(
        &a.router,
        Method::GET,
        "/ui/incidents/%3Cscript%3Ealert(1)%3C%2Fscript%3E%22%20onload%3D%22x",
        None,
        "",
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = text_of(r).await;
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(!html.contains("\" onload=\""), "{html}");
    assert!(html.contains(
        "data-incident-id=\"&lt;script&gt;alert(1)&lt;/script&gt;&quot; onload=&quot;x\""
    ));
}

#[tokio::test]
async fn metrics_count_incidents_by_status() {
    let a = app();
    a.store
        .upsert(&incident("inc_1", T0), &[], &[])
        .await
        .unwrap();
    a.store
        .upsert(&incident("inc_2", T0 + 1), &[], &[])
        .await
        .unwrap();
    a.store
        .act(
            "inc_2",
            crate::store::Action::Acknowledge,
            "w",
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    let r = call(&a.router, Method::GET, "/metrics", None, "").await;
    let text = text_of(r).await;
    assert!(
        text.contains("faultline_incidents{status=\"open\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("faultline_incidents{status=\"acknowledged\"} 1\n"));
    assert!(text.contains("faultline_open_incidents 2\n"));
}
