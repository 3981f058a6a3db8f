//! A local OpenAI-compatible stand-in: `POST /v1/chat/completions` with the
//! real request and response JSON (including `usage`), scriptable per request.
//!
//! The default answer is a deterministic "model" that reads the facts block
//! (between `BEGIN FACTS` and `END FACTS`) from the user message and writes a
//! faithful summary of it, so it doubles as the prompt regression model: a
//! prompt that stops carrying the facts gets malformed answers back. Every
//! request body is kept for leakage assertions.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// What the stand-in does with one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Behavior {
    /// A faithful answer built from the facts in the prompt.
    Good,
    /// Content that is not JSON.
    Malformed,
    /// JSON, wrong schema.
    WrongSchema,
    /// A faithful answer plus a number no fact holds.
    InventedNumbers,
    /// Cites a candidate that does not exist.
    InventedCandidates,
    /// Puts a link in the next checks.
    Url,
    /// Waits, then answers well.
    Slow(Duration),
    /// 429 with `Retry-After` seconds.
    RateLimited(u64),
    /// 500.
    ServerError,
    /// 200 with a body that is not a chat completion.
    GarbageBody,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The raw body.
    pub body: String,
    /// When it arrived.
    pub at: Instant,
    /// Its `Authorization` header.
    pub authorization: Option<String>,
}

#[derive(Default)]
struct Shared {
    script: Mutex<VecDeque<Behavior>>,
    default: Mutex<Option<Behavior>>,
    received: Mutex<Vec<Received>>,
}

/// The running stand-in, on its own runtime; stopped when dropped.
pub struct Stub {
    /// `http://127.0.0.1:PORT/v1`.
    pub base_url: String,
    shared: Arc<Shared>,
    _rt: tokio::runtime::Runtime,
}

impl Stub {
    /// Starts it; requests past the script get `default`.
    pub fn start(default: Behavior) -> Stub {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let shared = Arc::new(Shared::default());
        *shared.default.lock().unwrap() = Some(default);
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(shared.clone());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Stub {
            base_url: format!("http://127.0.0.1:{port}/v1"),
            shared,
            _rt: rt,
        }
    }

    /// The next requests get these behaviours, in order.
    pub fn script(&self, behaviors: &[Behavior]) {
        self.shared
            .script
            .lock()
            .unwrap()
            .extend(behaviors.iter().cloned());
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Every request body so far.
    pub fn bodies(&self) -> Vec<String> {
        self.received().into_iter().map(|r| r.body).collect()
    }
}

/// A base URL nobody listens on (a port bound, then closed).
pub fn dead_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}/v1")
}

async fn completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    shared.received.lock().unwrap().push(Received {
        body: body.clone(),
        at: Instant::now(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(String::from),
    });
    let behavior = {
        let next = shared.script.lock().unwrap().pop_front();
        next.unwrap_or_else(|| {
            shared
                .default
                .lock()
                .unwrap()
                .clone()
                .unwrap_or(Behavior::Good)
        })
    };
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let facts = facts_of(&request);
    let prompt_tokens = (body.len() / 4) as u64;
    let content = match &behavior {
        Behavior::RateLimited(secs) => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", secs.to_string())],
                Json(json!({"error": {"message": "Rate limit reached", "type": "rate_limit_error", "param": null, "code": "rate_limit_exceeded"}})),
            )
                .into_response();
        }
        Behavior::ServerError => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response();
        }
        Behavior::GarbageBody => return (StatusCode::OK, "<html>oops</html>").into_response(),
        Behavior::Slow(d) => {
            tokio::time::sleep(*d).await;
            faithful(facts.as_ref())
        }
        Behavior::Good => faithful(facts.as_ref()),
        Behavior::Malformed => Some("Sure! Here is the summary: {title: oops".to_string()),
        Behavior::WrongSchema => {
            Some(json!({"headline": "Something broke", "body": "Auth failing"}).to_string())
        }
        Behavior::InventedNumbers => faithful(facts.as_ref()).map(|c| {
            let mut v: Value = serde_json::from_str(&c).unwrap();
            v["impact"] = json!("About 97.3% of all payments failed, costing $52,000.");
            v.to_string()
        }),
        Behavior::InventedCandidates => faithful(facts.as_ref()).map(|c| {
            let mut v: Value = serde_json::from_str(&c).unwrap();
            v["root_cause"]["candidate_ids"] = json!(["c1", "c42"]);
            v.to_string()
        }),
        Behavior::Url => faithful(facts.as_ref()).map(|c| {
            let mut v: Value = serde_json::from_str(&c).unwrap();
            v["next_checks"] = json!(["Open https://status.evil.example.com/incident for details"]);
            v.to_string()
        }),
    };
    let content = content.unwrap_or_else(|| "I could not find any facts.".to_string());
    let completion_tokens = (content.len() / 4) as u64;
    Json(json!({
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 1_772_410_841u32,
        "model": request["model"].as_str().unwrap_or("stub"),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": null},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens
        }
    }))
    .into_response()
}

/// The facts JSON of the first user message, when it has one.
pub fn facts_of(request: &Value) -> Option<Value> {
    let user = request["messages"]
        .as_array()?
        .iter()
        .find(|m| m["role"] == "user")?;
    let text = user["content"].as_str()?;
    let start = text.find("BEGIN FACTS")? + "BEGIN FACTS".len();
    let end = text.find("END FACTS")?;
    serde_json::from_str(text.get(start..end)?.trim()).ok()
}

/// What a careful model would write: only numbers and ids from the facts.
fn faithful(facts: Option<&Value>) -> Option<String> {
    let f = facts?;
    let c = f["candidates"].as_array()?.first()?;
    let dims: Vec<String> = c["dims"]
        .as_object()?
        .iter()
        .map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or("?")))
        .collect();
    let element = dims.join(", ");
    let num = |k: &str| c[k].as_f64();
    let (title, summary, impact) = if f["detector"] == "rate" {
        let rate = num("failure_rate_pct")?;
        let base = num("baseline_rate_pct")?;
        let title = format!("Auth failures at {rate}% (baseline {base}%)");
        let summary = format!(
            "The {} rule fired: {element} is failing at {rate}% against a {base}% baseline over the last {} minutes.",
            f["rule"].as_str()?,
            f["window_minutes"]
        );
        let impact = format!(
            "{} of {} attempts failed, {} more than expected.",
            c["failures"], c["events"], c["excess_failures"]
        );
        (title, summary, impact)
    } else {
        let title = format!("{} events dropped to {}", f["kind"].as_str()?, c["events"]);
        let summary = format!(
            "{element} sent {} events where {} were expected.",
            c["events"], c["expected_events"]
        );
        let impact = format!("Volume is at {}% of normal.", c["volume_pct_of_expected"]);
        (title, summary, impact)
    };
    Some(
        json!({
            "title": title,
            "summary": summary,
            "impact": impact,
            "root_cause": {
                "candidate_ids": [c["id"]],
                "assessment": format!("c1 explains {}% of the excess.", c["share_of_excess_pct"]),
                "confidence": "high"
            },
            "next_checks": ["Check the provider status page", "Compare error codes with the baseline"]
        })
        .to_string(),
    )
}
