//! Slack: one message per incident, its changes in the thread, buttons people
//! act on.
//!
//! # What is posted
//!
//! - **Opened**: `chat.postMessage` (Block Kit, [`blocks::incident_message`]):
//!   severity and title in the header, the summary, fields (rule, root cause,
//!   failure rate now vs baseline, volume, start, status), root-cause
//!   candidates with their numbers, link buttons (dashboards, runbook) and
//!   action buttons (Acknowledge, Resolve, Silence 1h); then a chart of
//!   failure rate and baseline ([`chart`]) uploaded into the thread with the
//!   external upload flow (`files.getUploadURLExternal`, POST the bytes,
//!   `files.completeUploadExternal` with `channel_id` and `thread_ts`).
//! - **Updated** (severity changed, new candidates), a late LLM summary, and
//!   people's actions: replies in the thread, and the first message edited in
//!   place with `chat.update` (status, colour, buttons).
//! - **Resolved**: `chat.update` of the first message (green, no action
//!   buttons) and a reply with the duration.
//!
//! Routing: `slack.severity_channels[severity]`, else the rule's
//! `slack_channel`, else `slack.channel`.
//!
//! # Delivery
//!
//! [`SlackNotifier`] hands each notification to one worker task through a
//! bounded queue and returns: the pipeline never waits on Slack's pacing
//! (about one message per second per channel, `Retry-After` on 429) and one
//! worker keeps an incident's calls in order without locks. The queue's bound
//! pushes back on the pipeline only if Slack falls far behind.
//!
//! # Never twice
//!
//! Before posting an incident's first message the worker looks for one
//! already posted, in three places, cheapest first:
//!
//! 1. its memory (incident id to channel and `ts`);
//! 2. the incident's timeline in the store: each post is recorded there as
//!    `what = "posted"`, `by = "slack"`, `detail = "channel=C.. ts=.."`;
//! 3. Slack itself, the source of truth that survives a restart with the
//!    in-memory store: every first message carries message `metadata`
//!    (`event_type = "faultline_incident"`, `event_payload.incident_id`), and
//!    `conversations.history` with `include_all_metadata` since shortly
//!    before the incident opened finds it.
//!
//! A `chat.postMessage` that fails ambiguously (network error, 5xx: it may
//! have landed) is not blindly retried: the worker looks in the channel
//! history first. Channel names are resolved to ids with
//! `conversations.list` (history needs an id); configuring channel ids
//! avoids that call.
//!
//! Every text passes [`crate::redact`]; every call is audited
//! ([`crate::audit::Record::SlackPost`]) and counted (`slack_call(status)`);
//! the token appears only in the `Authorization` header.

pub mod blocks;
pub mod chart;
pub mod client;
pub mod signature;

pub use client::{SlackClient, SlackError};
pub use signature::{sign, SlackVerifier, VerifyError};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::Instrument;

use self::blocks::{Acted, Message};
use self::client::{Args, CallCtx};
use super::{Notifier, NotifyError};
use crate::audit::Audit;
use crate::config::SlackSettings;
use crate::incident::{Incident, TimelineEntry, Transition};
use crate::metrics::Metrics;
use crate::rules::{RuleSet, Severity};
use crate::store::Store;

/// Notifications waiting for the worker.
const QUEUE: usize = 1024;
/// Pages of `conversations.history` / `conversations.list` read at most.
const MAX_PAGES: usize = 10;
/// How far before the incident opened the history search starts, seconds.
const HISTORY_SLACK_SECS: i64 = 600;
/// Incidents remembered before resolved ones are forgotten (they stay findable
/// in the store and in Slack).
const MAX_REMEMBERED: usize = 10_000;

/// Work for the worker.
#[derive(Debug)]
enum Job {
    Notify(Transition),
    Summary(Incident),
    Acted {
        incident: Incident,
        what: String,
        by: String,
    },
    /// Answered once every job before it is done.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Posts incidents to Slack (see the module docs).
pub struct SlackNotifier {
    tx: mpsc::Sender<Job>,
    /// The worker's routing by rule, swapped on reload.
    by_rule: Arc<std::sync::RwLock<HashMap<String, String>>>,
}

impl std::fmt::Debug for SlackNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackNotifier").finish_non_exhaustive()
    }
}

/// Where an incident is posted.
#[derive(Debug, Clone, Default)]
struct Routing {
    default: String,
    by_severity: HashMap<Severity, String>,
    /// Swapped when the rules are reloaded.
    by_rule: Arc<std::sync::RwLock<HashMap<String, String>>>,
}

impl Routing {
    fn channel(&self, inc: &Incident) -> String {
        let by_rule = self.by_rule.read().unwrap_or_else(|e| e.into_inner());
        self.by_severity
            .get(&inc.severity)
            .or_else(|| by_rule.get(&inc.rule))
            .unwrap_or(&self.default)
            .clone()
    }
}

/// Rule name to the Slack channel it names, for rules that name one.
fn channels_by_rule(rules: &RuleSet) -> HashMap<String, String> {
    rules
        .rules
        .iter()
        .filter_map(|r| {
            r.rule
                .slack_channel
                .clone()
                .filter(|c| !c.trim().is_empty())
                .map(|c| (r.rule.name.clone(), c))
        })
        .collect()
}

/// An incident's first message, as the worker knows it.
#[derive(Debug, Clone, Default)]
struct Post {
    /// Channel id.
    channel: String,
    ts: String,
    /// Severity last shown; `None` when found after a restart.
    severity: Option<Severity>,
    /// Candidates last shown; `None` when found after a restart.
    candidates: Option<Vec<BTreeMap<String, String>>>,
    acted: Option<Acted>,
    /// Replies already made (`resolved`, `acknowledged`, ...).
    announced: HashSet<String>,
    resolved: bool,
    /// The episode's peak failure rate last told in the thread (or at the
    /// opening); `None` when found after a restart.
    peak: Option<f64>,
}

/// How much the episode's peak must grow over the one last told for a
/// thread reply: by half again and five points at least (a material rise,
/// not every step's wobble).
fn peak_grew(told: f64, now: f64) -> bool {
    now >= told * 1.5 && now - told >= 0.05
}

impl SlackNotifier {
    /// A notifier for `settings` (token required), routing by `rules`,
    /// recording posts in `store`. Spawns its worker: call within a Tokio runtime.
    pub fn new(
        settings: &SlackSettings,
        rules: &RuleSet,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        audit: Arc<dyn Audit>,
    ) -> Result<SlackNotifier, SlackError> {
        let token = settings
            .token
            .clone()
            .ok_or_else(|| SlackError::Api("not_configured".into()))?;
        let client = SlackClient::new(
            &settings.api_url,
            token,
            settings.request_timeout.0,
            settings.min_interval.0,
            settings.max_retries,
            audit,
            metrics.clone(),
        )?;
        let routing = Routing {
            default: settings.channel.clone().unwrap_or_default(),
            by_severity: settings
                .severity_channels
                .iter()
                .filter_map(|(k, v)| {
                    let sev = match k.as_str() {
                        "info" => Severity::Info,
                        "warning" => Severity::Warning,
                        "critical" => Severity::Critical,
                        _ => return None,
                    };
                    Some((sev, v.clone()))
                })
                .collect(),
            by_rule: Arc::new(std::sync::RwLock::new(channels_by_rule(rules))),
        };
        let worker = Worker {
            client,
            store,
            metrics,
            routing,
            charts: settings.charts,
            max_retries: settings.max_retries,
            posts: HashMap::new(),
            channel_ids: HashMap::new(),
        };
        let by_rule = worker.routing.by_rule.clone();
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(worker.run(rx));
        Ok(SlackNotifier { tx, by_rule })
    }

    async fn enqueue(&self, job: Job) -> Result<(), NotifyError> {
        self.tx
            .send(job)
            .await
            .map_err(|_| NotifyError::Unavailable("the Slack worker has stopped".into()))
    }
}

#[async_trait]
impl Notifier for SlackNotifier {
    async fn notify(&self, t: &Transition) -> Result<(), NotifyError> {
        self.enqueue(Job::Notify(t.clone())).await
    }

    async fn summary_updated(&self, incident: &Incident) -> Result<(), NotifyError> {
        self.enqueue(Job::Summary(incident.clone())).await
    }

    async fn acted(&self, incident: &Incident, what: &str, by: &str) -> Result<(), NotifyError> {
        self.enqueue(Job::Acted {
            incident: incident.clone(),
            what: what.to_string(),
            by: by.to_string(),
        })
        .await
    }

    async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Job::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    fn rules_reloaded(&self, rules: &RuleSet) {
        *self.by_rule.write().unwrap_or_else(|e| e.into_inner()) = channels_by_rule(rules);
    }
}

/// The one task that talks to Slack.
struct Worker {
    client: SlackClient,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    routing: Routing,
    charts: bool,
    max_retries: u32,
    posts: HashMap<String, Post>,
    /// Channel name (as configured) to id.
    channel_ids: HashMap<String, String>,
}

/// `channel=C123 ts=1700000000.000100`: a `posted` timeline entry's detail.
fn posted_detail(channel: &str, ts: &str) -> String {
    format!("channel={channel} ts={ts}")
}

fn parse_posted(e: &TimelineEntry) -> Option<(String, String)> {
    if e.what != "posted" || e.by != "slack" {
        return None;
    }
    let mut channel = None;
    let mut ts = None;
    for part in e.detail.split_whitespace() {
        if let Some(c) = part.strip_prefix("channel=") {
            channel = Some(c.to_string());
        } else if let Some(t) = part.strip_prefix("ts=") {
            ts = Some(t.to_string());
        }
    }
    Some((channel?, ts?))
}

/// Slack channel ids: `C`, `G` or `D` and upper-case letters and digits.
fn looks_like_id(channel: &str) -> bool {
    channel.len() >= 9
        && channel.starts_with(['C', 'G', 'D'])
        && channel
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

fn candidate_dims(inc: &Incident) -> Vec<BTreeMap<String, String>> {
    inc.root_causes.iter().map(|c| c.dims.clone()).collect()
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(job) = rx.recv().await {
            let (id, rule) = match &job {
                Job::Flush(_) => (String::new(), String::new()),
                Job::Notify(t) => (t.incident().id.clone(), t.incident().rule.clone()),
                Job::Summary(i) | Job::Acted { incident: i, .. } => (i.id.clone(), i.rule.clone()),
            };
            let span = tracing::info_span!("slack", incident_id = %id, rule = %rule);
            let res = self.handle(job).instrument(span).await;
            if let Err(e) = res {
                self.metrics.notify_failure();
                tracing::warn!(incident_id = %id, error = %e, "slack notification failed");
            }
            self.forget_old();
        }
    }

    async fn handle(&mut self, job: Job) -> Result<(), SlackError> {
        match job {
            Job::Notify(Transition::Opened(inc)) => self.opened(&inc).await,
            Job::Notify(Transition::Updated(inc)) => self.updated(&inc).await,
            Job::Notify(Transition::Resolved(inc)) => self.resolved(&inc).await,
            Job::Summary(inc) => self.summary(&inc).await,
            Job::Acted { incident, what, by } => self.acted(&incident, &what, &by).await,
            Job::Flush(done) => {
                let _ = done.send(());
                Ok(())
            }
        }
    }

    fn forget_old(&mut self) {
        if self.posts.len() > MAX_REMEMBERED {
            self.posts.retain(|_, p| !p.resolved);
        }
    }

    fn ctx<'a>(inc: &'a Incident, channel: &'a str) -> CallCtx<'a> {
        CallCtx {
            incident_id: &inc.id,
            channel,
            retry_ambiguous: true,
        }
    }

    async fn opened(&mut self, inc: &Incident) -> Result<(), SlackError> {
        if let Some(mut post) = self.find(inc).await {
            // Posted before (a restart, or the engine re-announcing it):
            // refresh the message in place, never post a second one.
            tracing::info!(ts = %post.ts, "incident already posted; updating it in place");
            post.severity.get_or_insert(inc.severity);
            post.candidates.get_or_insert_with(|| candidate_dims(inc));
            self.update_root(inc, &post).await?;
            self.posts.insert(inc.id.clone(), post);
            return Ok(());
        }
        let post = self.post_root(inc).await?;
        self.posts.insert(inc.id.clone(), post.clone());
        if self.charts {
            if let Err(e) = self.upload_chart(inc, &post).await {
                tracing::warn!(error = %e, "chart upload failed");
            }
        }
        Ok(())
    }

    async fn updated(&mut self, inc: &Incident) -> Result<(), SlackError> {
        let Some(mut post) = self.find(inc).await else {
            return Ok(());
        };
        let mut changed = false;
        if post.resolved && inc.status == crate::incident::Status::Open {
            // Reopened: say so in the thread, and tell its next resolve too.
            self.reply(inc, &post, blocks::reopened_reply(inc)).await?;
            post.resolved = false;
            post.announced.remove("resolved");
            changed = true;
        }
        if let Some(prev) = post.severity.filter(|s| *s != inc.severity) {
            self.reply(inc, &post, blocks::severity_reply(prev, inc.severity))
                .await?;
            changed = true;
        }
        if let Some(known) = &post.candidates {
            let new: Vec<_> = inc
                .root_causes
                .iter()
                .filter(|c| !known.contains(&c.dims))
                .collect();
            if !new.is_empty() {
                self.reply(inc, &post, blocks::candidates_reply(&new))
                    .await?;
                changed = true;
            }
        }
        let peak = inc.episode.peak.as_ref().and_then(|p| p.failure_rate);
        if let (Some(told), Some(now)) = (post.peak, peak) {
            if peak_grew(told, now) {
                self.reply(inc, &post, blocks::peak_reply(inc, told))
                    .await?;
                post.peak = Some(now);
                changed = true;
            }
        } else {
            post.peak = peak;
        }
        if changed || post.severity.is_none() {
            self.update_root(inc, &post).await?;
        }
        post.severity = Some(inc.severity);
        post.candidates = Some(candidate_dims(inc));
        self.posts.insert(inc.id.clone(), post);
        Ok(())
    }

    async fn resolved(&mut self, inc: &Incident) -> Result<(), SlackError> {
        let mut post = match self.find(inc).await {
            Some(p) => p,
            // Never announced (its opening post failed): post it now, resolved.
            None => self.post_root(inc).await?,
        };
        self.update_root(inc, &post).await?;
        if post.announced.insert("resolved".into()) {
            self.reply(inc, &post, blocks::resolved_reply(inc)).await?;
        }
        post.resolved = true;
        self.posts.insert(inc.id.clone(), post);
        Ok(())
    }

    async fn summary(&mut self, inc: &Incident) -> Result<(), SlackError> {
        let Some(post) = self.find(inc).await else {
            return Ok(());
        };
        self.update_root(inc, &post).await?;
        self.reply(inc, &post, blocks::summary_reply(inc)).await?;
        self.posts.insert(inc.id.clone(), post);
        Ok(())
    }

    async fn acted(&mut self, inc: &Incident, what: &str, by: &str) -> Result<(), SlackError> {
        let Some(mut post) = self.find(inc).await else {
            tracing::info!(what, "acted on an incident never posted to Slack");
            return Ok(());
        };
        post.acted = Some(Acted {
            what: what.to_string(),
            by: by.to_string(),
        });
        // The edit is idempotent; the reply is made once per kind of action.
        self.update_root(inc, &post).await?;
        if post.announced.insert(what.to_string()) {
            self.reply(inc, &post, blocks::acted_reply(inc, what, by))
                .await?;
        }
        post.resolved = inc.status == crate::incident::Status::Resolved;
        self.posts.insert(inc.id.clone(), post);
        Ok(())
    }

    /// The incident's first message, if it was posted: memory, then the
    /// store's timeline, then the channel's history (see the module docs).
    async fn find(&mut self, inc: &Incident) -> Option<Post> {
        if let Some(p) = self.posts.get(&inc.id) {
            return Some(p.clone());
        }
        match self.store.get(&inc.id).await {
            Ok(Some(rec)) => {
                if let Some((channel, ts)) = rec.timeline.iter().rev().find_map(parse_posted) {
                    let p = Post {
                        channel,
                        ts,
                        ..Post::default()
                    };
                    self.posts.insert(inc.id.clone(), p.clone());
                    return Some(p);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "store lookup of the Slack post failed"),
        }
        let channel = self.routing.channel(inc);
        let cid = self.channel_id(&channel, inc).await?;
        match self.history_lookup(&cid, inc).await {
            Ok(Some(ts)) => {
                tracing::info!(%ts, "found the incident's post in the channel history");
                let p = Post {
                    channel: cid.clone(),
                    ts: ts.clone(),
                    ..Post::default()
                };
                self.record_post(inc, &cid, &ts, "found in channel history")
                    .await;
                self.posts.insert(inc.id.clone(), p.clone());
                Some(p)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "channel history lookup failed; posting may duplicate after a restart");
                None
            }
        }
    }

    /// The id of a configured channel (names are looked up once).
    async fn channel_id(&mut self, channel: &str, inc: &Incident) -> Option<String> {
        if looks_like_id(channel) {
            return Some(channel.to_string());
        }
        if let Some(id) = self.channel_ids.get(channel) {
            return Some(id.clone());
        }
        let name = channel.trim_start_matches('#');
        let mut cursor = String::new();
        for _ in 0..MAX_PAGES {
            let mut args = vec![
                (
                    "types".to_string(),
                    "public_channel,private_channel".to_string(),
                ),
                ("exclude_archived".to_string(), "true".to_string()),
                ("limit".to_string(), "1000".to_string()),
            ];
            if !cursor.is_empty() {
                args.push(("cursor".into(), cursor.clone()));
            }
            let v = match self
                .client
                .call(
                    "conversations.list",
                    &Args::Form(args),
                    Self::ctx(inc, channel),
                )
                .await
            {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, channel, "cannot resolve the channel name (scope channels:read?); configure its id to avoid this lookup");
                    return None;
                }
            };
            let found = v
                .get("channels")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
                .and_then(|c| c.get("id").and_then(Value::as_str))
                .map(str::to_string);
            if let Some(id) = found {
                self.channel_ids.insert(channel.to_string(), id.clone());
                return Some(id);
            }
            cursor = next_cursor(&v);
            if cursor.is_empty() {
                break;
            }
        }
        None
    }

    /// The `ts` of the message in `channel` whose metadata names `inc`.
    async fn history_lookup(
        &self,
        channel: &str,
        inc: &Incident,
    ) -> Result<Option<String>, SlackError> {
        let oldest = (inc.opened_at.timestamp() - HISTORY_SLACK_SECS).max(0);
        let mut cursor = String::new();
        for _ in 0..MAX_PAGES {
            let mut args = vec![
                ("channel".to_string(), channel.to_string()),
                ("oldest".to_string(), oldest.to_string()),
                ("limit".to_string(), "200".to_string()),
                ("include_all_metadata".to_string(), "true".to_string()),
            ];
            if !cursor.is_empty() {
                args.push(("cursor".into(), cursor.clone()));
            }
            let v = self
                .client
                .call(
                    "conversations.history",
                    &Args::Form(args),
                    Self::ctx(inc, channel),
                )
                .await?;
            let hit = v
                .get("messages")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|m| {
                    let md = &m["metadata"];
                    md["event_type"] == blocks::METADATA_EVENT
                        && md["event_payload"]["incident_id"] == inc.id.as_str()
                })
                .and_then(|m| m.get("ts").and_then(Value::as_str))
                .map(str::to_string);
            if hit.is_some() {
                return Ok(hit);
            }
            cursor = next_cursor(&v);
            if cursor.is_empty() {
                break;
            }
        }
        Ok(None)
    }

    fn metadata(inc: &Incident) -> Value {
        json!({
            "event_type": blocks::METADATA_EVENT,
            "event_payload": {"incident_id": inc.id, "rule": inc.rule},
        })
    }

    /// Posts the first message. An ambiguous failure is looked up in the
    /// channel history before the post is tried again.
    async fn post_root(&mut self, inc: &Incident) -> Result<Post, SlackError> {
        let channel = self.routing.channel(inc);
        if channel.is_empty() {
            return Err(SlackError::Api("no_channel_configured".into()));
        }
        let mut body = serde_json::Map::new();
        body.insert("channel".into(), json!(channel));
        body.insert("unfurl_links".into(), json!(false));
        body.insert("unfurl_media".into(), json!(false));
        body.insert("metadata".into(), Self::metadata(inc));
        blocks::incident_message(inc, None).into_fields(&mut body);
        let args = Args::Json(Value::Object(body));
        let mut tries = 0u32;
        let v = loop {
            let ctx = CallCtx {
                retry_ambiguous: false,
                ..Self::ctx(inc, &channel)
            };
            match self.client.call("chat.postMessage", &args, ctx).await {
                Ok(v) => break v,
                Err(SlackError::Unavailable(e)) if tries < self.max_retries => {
                    tries += 1;
                    tracing::warn!(error = %e, "posting may have failed; checking the channel before retrying");
                    tokio::time::sleep(client::backoff(tries)).await;
                    if let Some(cid) = self.channel_id(&channel, inc).await {
                        if let Ok(Some(ts)) = self.history_lookup(&cid, inc).await {
                            self.record_post(inc, &cid, &ts, "found after a failed post")
                                .await;
                            return Ok(self.new_post(inc, cid, ts));
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        };
        let ts = v
            .get("ts")
            .and_then(Value::as_str)
            .ok_or_else(|| SlackError::Protocol("chat.postMessage answered no ts".into()))?
            .to_string();
        let cid = v
            .get("channel")
            .and_then(Value::as_str)
            .unwrap_or(&channel)
            .to_string();
        if cid != channel {
            self.channel_ids.insert(channel.clone(), cid.clone());
        }
        self.record_post(inc, &cid, &ts, "").await;
        Ok(self.new_post(inc, cid, ts))
    }

    fn new_post(&self, inc: &Incident, channel: String, ts: String) -> Post {
        Post {
            channel,
            ts,
            severity: Some(inc.severity),
            candidates: Some(candidate_dims(inc)),
            ..Post::default()
        }
    }

    /// Records the post in the incident's timeline (the contract: the
    /// timeline holds posts).
    async fn record_post(&self, inc: &Incident, channel: &str, ts: &str, note: &str) {
        let mut detail = posted_detail(channel, ts);
        if !note.is_empty() {
            detail.push_str(" (");
            detail.push_str(note);
            detail.push(')');
        }
        let entry = TimelineEntry {
            at: Utc::now(),
            what: "posted".into(),
            by: "slack".into(),
            detail,
        };
        match self.store.append_timeline(&inc.id, &[entry]).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("incident not in the store; its Slack post is not recorded")
            }
            Err(e) => tracing::warn!(error = %e, "recording the Slack post failed"),
        }
    }

    async fn update_root(&self, inc: &Incident, post: &Post) -> Result<(), SlackError> {
        let mut body = serde_json::Map::new();
        body.insert("channel".into(), json!(post.channel));
        body.insert("ts".into(), json!(post.ts));
        body.insert("metadata".into(), Self::metadata(inc));
        blocks::incident_message(inc, post.acted.as_ref()).into_fields(&mut body);
        self.client
            .call(
                "chat.update",
                &Args::Json(Value::Object(body)),
                Self::ctx(inc, &post.channel),
            )
            .await
            .map(|_| ())
    }

    async fn reply(&self, inc: &Incident, post: &Post, msg: Message) -> Result<(), SlackError> {
        let mut body = serde_json::Map::new();
        body.insert("channel".into(), json!(post.channel));
        body.insert("thread_ts".into(), json!(post.ts));
        body.insert("unfurl_links".into(), json!(false));
        msg.into_fields(&mut body);
        self.client
            .call(
                "chat.postMessage",
                &Args::Json(Value::Object(body)),
                Self::ctx(inc, &post.channel),
            )
            .await
            .map(|_| ())
    }

    /// Renders the chart from the store's series and uploads it into the thread.
    async fn upload_chart(&self, inc: &Incident, post: &Post) -> Result<(), NotifyError> {
        let series = match self.store.get(&inc.id).await {
            Ok(Some(rec)) => rec.series,
            Ok(None) => Vec::new(),
            Err(e) => return Err(NotifyError::Unavailable(e.to_string())),
        };
        let png = chart::render(inc, &series)
            .map_err(|e| NotifyError::Rejected(format!("chart: {e}")))?;
        let ctx = Self::ctx(inc, &post.channel);
        let filename = format!("{}-failure-rate.png", inc.id);
        let v = self
            .client
            .call(
                "files.getUploadURLExternal",
                &Args::Form(vec![
                    ("filename".into(), filename.clone()),
                    ("length".into(), png.len().to_string()),
                ]),
                ctx,
            )
            .await?;
        let (Some(url), Some(file_id)) = (
            v.get("upload_url").and_then(Value::as_str),
            v.get("file_id").and_then(Value::as_str),
        ) else {
            return Err(SlackError::Protocol(
                "files.getUploadURLExternal answered no upload_url or file_id".into(),
            )
            .into());
        };
        self.client.upload(url, png, ctx).await?;
        let title = blocks::truncate(
            &blocks::plain(&format!("Failure rate vs baseline: {}", inc.rule)),
            200,
        );
        self.client
            .call(
                "files.completeUploadExternal",
                &Args::Json(json!({
                    "files": [{"id": file_id, "title": title}],
                    "channel_id": post.channel,
                    "thread_ts": post.ts,
                })),
                ctx,
            )
            .await?;
        Ok(())
    }
}

/// `response_metadata.next_cursor`, empty at the end.
fn next_cursor(v: &Value) -> String {
    v["response_metadata"]["next_cursor"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posted_entries_round_trip() {
        let e = TimelineEntry {
            at: Utc::now(),
            what: "posted".into(),
            by: "slack".into(),
            detail: format!(
                "{} (found in channel history)",
                posted_detail("C0123ABCD", "1700000000.000100")
            ),
        };
        assert_eq!(
            parse_posted(&e),
            Some(("C0123ABCD".into(), "1700000000.000100".into()))
        );
        let other = TimelineEntry {
            by: "faultline".into(),
            ..e
        };
        assert_eq!(parse_posted(&other), None);
    }

    #[test]
    fn channel_ids_and_names() {
        assert!(looks_like_id("C0123ABCDE"));
        assert!(looks_like_id("G8PSS9T3V"));
        assert!(!looks_like_id("#payments-incidents"));
        assert!(!looks_like_id("general"));
    }

    #[test]
    fn routing_prefers_severity_then_rule_then_default() {
        let r = Routing {
            default: "#default".into(),
            by_severity: HashMap::from([(Severity::Critical, "#pager".into())]),
            by_rule: Arc::new(std::sync::RwLock::new(HashMap::from([(
                "auth_technical_failures".into(),
                "#auth".into(),
            )]))),
        };
        let mut inc = crate::store::memory::fixtures::incident("inc_1", 1_772_410_841_000);
        inc.rule = "auth_technical_failures".into();
        inc.severity = Severity::Critical;
        assert_eq!(r.channel(&inc), "#pager");
        inc.severity = Severity::Warning;
        assert_eq!(r.channel(&inc), "#auth");
        inc.rule = "other".into();
        assert_eq!(r.channel(&inc), "#default");
    }
}
