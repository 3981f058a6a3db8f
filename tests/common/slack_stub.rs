//! A stand-in for the Slack Web API (axum on port 0, its own thread and
//! runtime so it outlives the daemons of a restart test). It records every
//! call and answers as Slack does: `{"ok":true,...}` or
//! `{"ok":false,"error":"..."}`, and HTTP 429 with `Retry-After` when a test
//! scripts it. Messages are kept per channel so `conversations.history`
//! (with `include_all_metadata`) and `chat.update` behave like the real API.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// The token the stub accepts.
pub const TOKEN: &str = "xoxb-stub-token-0000";

/// Channels the workspace has: (name, id).
pub const CHANNELS: &[(&str, &str)] = &[
    ("payments-incidents", "C0PAYINC01"),
    ("payments-pager", "C0PAGER001"),
    ("faultline-default", "C0DEFAULT1"),
    ("payments-settlement", "C0SETTLE01"),
    ("payments-webhooks", "C0WEBHOOK1"),
];

/// One recorded call.
#[derive(Debug, Clone)]
pub struct Call {
    /// `chat.postMessage`, ..., or `upload` for the upload URL.
    pub method: String,
    /// The arguments: the JSON body, or the form as a JSON object of strings.
    pub args: Value,
    /// Whether the bearer token was the right one.
    pub authorized: bool,
    /// What the stub answered (`ok`, `rate_limited`, `error:<code>`).
    pub outcome: String,
}

/// One message as the stub keeps it.
#[derive(Debug, Clone)]
pub struct Msg {
    /// Channel id.
    pub channel: String,
    /// Its ts.
    pub ts: String,
    /// The parent's ts for a thread reply.
    pub thread_ts: Option<String>,
    /// The latest body (after updates).
    pub body: Value,
    /// Updates applied.
    pub updates: u32,
}

/// A scripted answer for the next call of a method.
#[derive(Debug, Clone)]
pub enum Scripted {
    /// HTTP 429 with `Retry-After: secs`.
    RateLimited(u64),
    /// `{"ok":false,"error":code}`.
    Error(String),
    /// The call takes effect, then the answer is lost: HTTP 500 (what a
    /// timeout after Slack accepted a post looks like to the client).
    AppliedThen500,
}

#[derive(Default)]
struct StubState {
    calls: Vec<Call>,
    messages: Vec<Msg>,
    uploads: HashMap<String, Vec<u8>>,
    script: VecDeque<(String, Scripted)>,
    counter: u64,
    base: String,
}

/// The running stub.
pub struct SlackStub {
    /// The Web API base, e.g. `http://127.0.0.1:4711/api`.
    pub api_url: String,
    state: Arc<Mutex<StubState>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SlackStub {
    /// Starts it on a free port.
    pub fn start() -> SlackStub {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let base = format!("http://127.0.0.1:{port}");
        let state = Arc::new(Mutex::new(StubState {
            base: base.clone(),
            ..StubState::default()
        }));
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = Router::new()
                    .route("/api/{method}", post(api))
                    .route("/upload/{file}", post(upload))
                    .with_state(st);
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop_rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        SlackStub {
            api_url: format!("{base}/api"),
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Answers the next call of `method` with `answer`.
    pub fn script(&self, method: &str, answer: Scripted) {
        self.lock().script.push_back((method.to_string(), answer));
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Every message (top-level and replies), latest bodies.
    pub fn messages(&self) -> Vec<Msg> {
        self.lock().messages.clone()
    }

    /// Uploaded file bytes by file id.
    pub fn uploads(&self) -> HashMap<String, Vec<u8>> {
        self.lock().uploads.clone()
    }

    /// Waits (bounded) until `cond` holds over the calls and messages.
    pub fn wait_for(&self, what: &str, timeout: Duration, cond: impl Fn(&[Call], &[Msg]) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let s = self.lock();
                if cond(&s.calls, &s.messages) {
                    return;
                }
            }
            if Instant::now() > deadline {
                let s = self.lock();
                let methods: Vec<String> = s
                    .calls
                    .iter()
                    .map(|c| format!("{} {}", c.method, c.outcome))
                    .collect();
                panic!("timed out waiting for {what}; calls: {methods:#?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for SlackStub {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Shared = Arc<Mutex<StubState>>;

fn parse_args(headers: &HeaderMap, body: &[u8]) -> Value {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.starts_with("application/json") {
        serde_json::from_slice(body).unwrap_or(Value::Null)
    } else {
        let map: BTreeMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
        serde_json::to_value(map).unwrap()
    }
}

fn channel_id(name_or_id: &str) -> Option<&'static str> {
    let n = name_or_id.trim_start_matches('#');
    CHANNELS
        .iter()
        .find(|(name, id)| *name == n || *id == n)
        .map(|(_, id)| *id)
}

fn err(code: &str) -> Value {
    json!({"ok": false, "error": code})
}

async fn api(
    State(st): State<Shared>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let args = parse_args(&headers, &body);
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"));
    let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
    let record = |s: &mut StubState, outcome: &str| {
        s.calls.push(Call {
            method: method.clone(),
            args: args.clone(),
            authorized,
            outcome: outcome.to_string(),
        })
    };
    if !authorized {
        record(&mut s, "error:not_authed");
        return Json(err("not_authed")).into_response();
    }
    if let Some(pos) = s.script.iter().position(|(m, _)| *m == method) {
        let (_, answer) = s.script.remove(pos).unwrap();
        return match answer {
            Scripted::RateLimited(secs) => {
                record(&mut s, "rate_limited");
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", secs.to_string())],
                    Json(err("ratelimited")),
                )
                    .into_response()
            }
            Scripted::Error(code) => {
                record(&mut s, &format!("error:{code}"));
                Json(err(&code)).into_response()
            }
            Scripted::AppliedThen500 => {
                let _ = handle(&mut s, &method, &args);
                record(&mut s, "applied_then_500");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        };
    }
    let answer = handle(&mut s, &method, &args);
    let outcome = if answer["ok"] == true {
        "ok".to_string()
    } else {
        format!("error:{}", answer["error"].as_str().unwrap_or("?"))
    };
    record(&mut s, &outcome);
    Json(answer).into_response()
}

fn handle(s: &mut StubState, method: &str, a: &Value) -> Value {
    match method {
        "chat.postMessage" => {
            let Some(ch) = a["channel"].as_str().and_then(channel_id) else {
                return err("channel_not_found");
            };
            if a["text"].as_str().is_none_or(str::is_empty) && !a["blocks"].is_array() {
                return err("no_text");
            }
            let thread_ts = a["thread_ts"].as_str().map(str::to_string);
            if let Some(t) = &thread_ts {
                if !s.messages.iter().any(|m| m.channel == ch && &m.ts == t) {
                    return err("thread_not_found");
                }
            }
            s.counter += 1;
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let ts = format!("{secs}.{:06}", s.counter);
            s.messages.push(Msg {
                channel: ch.to_string(),
                ts: ts.clone(),
                thread_ts,
                body: a.clone(),
                updates: 0,
            });
            json!({"ok": true, "channel": ch, "ts": ts, "message": {"text": a["text"], "ts": ts}})
        }
        "chat.update" => {
            let ch = a["channel"].as_str().unwrap_or("");
            let ts = a["ts"].as_str().unwrap_or("");
            if channel_id(ch) != Some(ch) {
                // Slack wants the id here.
                return err("channel_not_found");
            }
            match s
                .messages
                .iter_mut()
                .find(|m| m.channel == ch && m.ts == ts)
            {
                Some(m) => {
                    m.body = a.clone();
                    m.updates += 1;
                    json!({"ok": true, "channel": ch, "ts": ts})
                }
                None => err("message_not_found"),
            }
        }
        "conversations.list" => {
            let channels: Vec<Value> = CHANNELS
                .iter()
                .map(|(name, id)| json!({"id": id, "name": name, "is_channel": true}))
                .collect();
            json!({"ok": true, "channels": channels, "response_metadata": {"next_cursor": ""}})
        }
        "conversations.history" => {
            let ch = a["channel"].as_str().unwrap_or("");
            if channel_id(ch) != Some(ch) {
                return err("channel_not_found");
            }
            let oldest: f64 = a["oldest"]
                .as_str()
                .and_then(|o| o.parse().ok())
                .unwrap_or(0.0);
            let with_md = a["include_all_metadata"].as_str() == Some("true");
            let mut msgs: Vec<Value> = s
                .messages
                .iter()
                .filter(|m| m.channel == ch && m.thread_ts.is_none())
                .filter(|m| m.ts.parse::<f64>().unwrap_or(0.0) > oldest)
                .map(|m| {
                    let mut v = json!({"type": "message", "ts": m.ts, "text": m.body["text"]});
                    if with_md && m.body["metadata"].is_object() {
                        v["metadata"] = m.body["metadata"].clone();
                    }
                    v
                })
                .collect();
            msgs.reverse();
            json!({"ok": true, "messages": msgs, "has_more": false, "response_metadata": {"next_cursor": ""}})
        }
        "files.getUploadURLExternal" => {
            let len: usize = a["length"]
                .as_str()
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            if len == 0 || a["filename"].as_str().is_none_or(str::is_empty) {
                return err("invalid_arguments");
            }
            s.counter += 1;
            let id = format!("F{:08}", s.counter);
            json!({"ok": true, "upload_url": format!("{}/upload/{id}", s.base), "file_id": id})
        }
        "files.completeUploadExternal" => {
            let Some(id) = a["files"][0]["id"].as_str() else {
                return err("invalid_arguments");
            };
            if !s.uploads.contains_key(id) {
                return err("file_not_found");
            }
            let ch = a["channel_id"].as_str().unwrap_or("");
            if channel_id(ch) != Some(ch) {
                return err("channel_not_found");
            }
            json!({"ok": true, "files": [{"id": id, "title": a["files"][0]["title"]}]})
        }
        _ => err("unknown_method"),
    }
}

async fn upload(State(st): State<Shared>, Path(file): Path<String>, body: Bytes) -> Response {
    let mut s = st.lock().unwrap_or_else(|p| p.into_inner());
    s.calls.push(Call {
        method: "upload".into(),
        args: json!({"file": file, "bytes": body.len()}),
        authorized: false,
        outcome: "ok".into(),
    });
    s.uploads.insert(file, body.to_vec());
    (StatusCode::OK, format!("OK - {}", body.len())).into_response()
}
