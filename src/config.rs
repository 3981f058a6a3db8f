//! Settings: an optional TOML file, then every `FAULTLINE_*` variable of CONTRACT
//! section 4 on top.
//!
//! One struct tree with a default for every field, so an empty file (or none) is
//! the embedded setup: HTTP ingest, in-memory store, template summaries, stdout.
//! Every struct denies unknown fields, so a typo is an error that names the key
//! rather than a silently ignored setting. `faultline.example.toml` documents
//! every key; a test below keeps it true to this file.
//!
//! Secrets (`clickhouse.password`, `llm.api_key`, `slack.token`,
//! `slack.signing_secret`, API token secrets) are [`SecretString`]s: their `Debug`
//! prints `[REDACTED]`, and no error message here ever quotes their value.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::rules::Dur;

/// Errors loading settings. Each names the key (or variable) that is wrong and
/// never quotes a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file line {line}: {message}")]
    Syntax {
        /// 1-based line of the error.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A key (or the variable that set it) has an unusable value.
    #[error("config `{key}`: {message}")]
    Invalid {
        /// The dotted TOML key, or the `FAULTLINE_*` variable when the value came
        /// from the environment.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Every setting of the daemon.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// HTTP listen address, `host:port` (`FAULTLINE_LISTEN`).
    pub listen: String,
    /// Base URL people reach the pages at, e.g. `https://faultline.example.com`
    /// (`FAULTLINE_PUBLIC_URL`): each incident's `url` is its page under it,
    /// linked from Slack, stdout and the API. Unset: incidents carry no `url`.
    pub public_url: Option<String>,
    /// Rules folder (`FAULTLINE_RULES_DIR`); unset: `rules/` in the working
    /// directory when present, else the rules built into the binary.
    pub rules_dir: Option<PathBuf>,
    /// How often the rules folder is checked for changes (reloaded when its
    /// content changed); `0s` turns polling off (SIGHUP and `POST /rules/reload`
    /// still reload).
    pub rules_reload_interval: Dur,
    /// Log filter in `tracing` syntax, e.g. `info,faultline=debug` (`FAULTLINE_LOG`).
    pub log: String,
    /// NATS JetStream ingest.
    pub nats: NatsSettings,
    /// ClickHouse storage.
    pub clickhouse: ClickHouseSettings,
    /// LLM summaries.
    pub llm: LlmSettings,
    /// Slack notifications.
    pub slack: SlackSettings,
    /// The HTTP API.
    pub api: ApiSettings,
    /// The detection engine.
    pub engine: EngineSettings,
    /// The embedded in-memory store.
    pub store: StoreSettings,
    /// Several replicas on one stream.
    pub cluster: ClusterSettings,
    /// Attributes incidents are explained with beyond each rule's dimensions.
    pub explain: ExplainSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: "127.0.0.1:8080".into(),
            public_url: None,
            rules_dir: None,
            rules_reload_interval: Dur(Duration::from_secs(5)),
            log: "info".into(),
            nats: NatsSettings::default(),
            clickhouse: ClickHouseSettings::default(),
            llm: LlmSettings::default(),
            slack: SlackSettings::default(),
            api: ApiSettings::default(),
            engine: EngineSettings::default(),
            store: StoreSettings::default(),
            cluster: ClusterSettings::default(),
            explain: ExplainSettings::default(),
        }
    }
}

/// `[cluster]`: several `faultline run` replicas sharing one stream, each
/// counting a share of the events, one of them (elected with a lease in NATS
/// KV) detecting on everyone's counts. Off (one process counts and detects)
/// while `enabled` is false; needs `nats.url`. See `deploy/README.md`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// Run as one replica of a cluster.
    pub enabled: bool,
    /// This replica's name, unique in the cluster (`[A-Za-z0-9_-]`); unset:
    /// `$HOSTNAME` (the pod name on Kubernetes), else `faultline-<pid>`.
    pub node: Option<String>,
    /// JetStream stream of the replicas' pre-aggregated counts, created if
    /// missing with `nats.replicas` replicas.
    pub partials_stream: String,
    /// Subject prefix of the counts: each replica publishes on `<prefix>.<node>`.
    pub partials_subject: String,
    /// How long the partials stream keeps counts: at least the longest rule
    /// window plus warm-up, which a new detector replays.
    pub partials_max_age: Dur,
    /// How often a replica publishes what it counted (then acks those events).
    /// Keep it well below `engine.allowed_lateness`.
    pub flush_interval: Dur,
    /// How long the detector lease lasts without renewal: a standby takes over
    /// at most this long (plus one renewal period) after the detector dies.
    pub lease_ttl: Dur,
    /// How long the server waits for a replica's ack before it redelivers an
    /// event to another replica (a replica died before publishing its counts).
    pub ack_wait: Dur,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            enabled: false,
            node: None,
            partials_stream: "FAULTLINE_PARTIALS".into(),
            partials_subject: "faultline.partials".into(),
            partials_max_age: Dur(Duration::from_secs(6 * 3600)),
            flush_interval: Dur(Duration::from_millis(500)),
            lease_ttl: Dur(Duration::from_secs(6)),
            ack_wait: Dur(Duration::from_secs(10)),
        }
    }
}

impl ClusterSettings {
    /// This replica's name: `node`, else `$HOSTNAME`, else `faultline-<pid>`,
    /// with characters outside `[A-Za-z0-9_-]` replaced by `-`.
    pub fn node_name(&self) -> String {
        let raw = self
            .node
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| format!("faultline-{}", std::process::id()));
        raw.chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    }
}

/// `[nats]`: JetStream ingest. Off (HTTP ingest) while `url` is unset.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSettings {
    /// Server URL, e.g. `nats://127.0.0.1:4222` (`FAULTLINE_NATS_URL`).
    pub url: Option<String>,
    /// JetStream stream, created if missing (`FAULTLINE_NATS_STREAM`).
    pub stream: String,
    /// Subjects of the stream (`FAULTLINE_NATS_SUBJECTS`, comma-separated).
    pub subjects: Vec<String>,
    /// How long the stream keeps messages when faultline creates it. Restart
    /// rebuilds windows from the stream, so keep it above the longest rule
    /// window plus the baseline warm-up.
    pub max_age: Dur,
    /// Retention policy when faultline creates the stream: `limits` (keep
    /// messages until `max_age`; needed to rebuild windows on restart),
    /// `interest` or `workqueue` (acked messages are removed).
    pub retention: NatsRetention,
    /// Deliveries of one message before the server gives up on it, so a message
    /// that keeps failing cannot block the consumer.
    pub max_deliver: i64,
    /// Messages fetched per pull request.
    pub batch_size: usize,
    /// Replicas of the stream when faultline creates it: 1 on a single server,
    /// 3 on a production cluster (see `deploy/`).
    pub replicas: usize,
}

/// `nats.retention`: the JetStream retention policy of a stream faultline creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NatsRetention {
    /// Messages stay until the stream's limits (max age) remove them.
    Limits,
    /// Messages stay while a consumer has not acked them.
    Interest,
    /// A message is removed once acked.
    Workqueue,
}

impl Default for NatsSettings {
    fn default() -> Self {
        NatsSettings {
            url: None,
            stream: "PAYMENTS".into(),
            subjects: vec!["payments.>".into()],
            max_age: Dur(Duration::from_secs(24 * 3600)),
            retention: NatsRetention::Limits,
            max_deliver: 5,
            batch_size: 1000,
            replicas: 1,
        }
    }
}

impl NatsSettings {
    /// Whether NATS ingest is configured.
    pub fn enabled(&self) -> bool {
        self.url.is_some()
    }
}

// NATS URLs may carry credentials (`nats://user:pass@host`), so Debug masks them.
impl fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSettings")
            .field("url", &self.url.as_deref().map(mask_userinfo))
            .field("stream", &self.stream)
            .field("subjects", &self.subjects)
            .field("max_age", &self.max_age)
            .field("retention", &self.retention)
            .field("max_deliver", &self.max_deliver)
            .field("batch_size", &self.batch_size)
            .field("replicas", &self.replicas)
            .finish()
    }
}

/// `scheme://user:pass@host/...` with the user info replaced by `[REDACTED]@`.
pub fn mask_userinfo(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => format!("{}[REDACTED]{}", &url[..s + 3], &url[at..]),
        (None, Some(_)) => "[REDACTED]".into(),
        _ => url.to_string(),
    }
}

/// `[clickhouse]`: incident and event storage. Off (in-memory store) while `url`
/// is unset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseSettings {
    /// HTTP endpoint, e.g. `http://127.0.0.1:8123` (`FAULTLINE_CLICKHOUSE_URL`).
    /// Credentials go in `user` / `password`, not in the URL.
    pub url: Option<String>,
    /// Database, created if missing (`FAULTLINE_CLICKHOUSE_DATABASE`).
    pub database: String,
    /// User (`FAULTLINE_CLICKHOUSE_USER`).
    pub user: String,
    /// Password (`FAULTLINE_CLICKHOUSE_PASSWORD`).
    pub password: SecretString,
    /// Rows held per table while ClickHouse is slow or down; past it new rows
    /// are dropped and counted (`faultline_store_rows_dropped_total`).
    pub buffer_rows: usize,
    /// Most rows sent in one INSERT.
    pub batch_rows: usize,
    /// How often buffered rows are sent (sooner when a batch is full).
    pub flush_interval: Dur,
    /// Keep raw events (redacted, allow-listed fields) in the `events` table.
    pub store_events: bool,
    /// Keep 1 in N successful events (chosen by a hash of the id, so a replay
    /// keeps the same ones); each kept row carries weight N. 1 keeps all.
    pub success_sample: u32,
    /// Days kept per table, enforced by dropping daily partitions; 0 keeps forever.
    pub retention_days: ClickHouseRetention,
}

/// `[clickhouse.retention_days]`: days kept per table family (0: forever).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseRetention {
    /// Raw events (`events`).
    pub events: u32,
    /// Per-step cell aggregates (`cell_steps`).
    pub aggregates: u32,
    /// Incidents, their timelines and series, by opening / entry day.
    pub incidents: u32,
    /// LLM and Slack call audit rows.
    pub audit: u32,
}

impl Default for ClickHouseRetention {
    fn default() -> Self {
        ClickHouseRetention {
            events: 7,
            aggregates: 30,
            incidents: 365,
            audit: 90,
        }
    }
}

impl Default for ClickHouseSettings {
    fn default() -> Self {
        ClickHouseSettings {
            url: None,
            database: "faultline".into(),
            user: "default".into(),
            password: SecretString::default(),
            buffer_rows: 200_000,
            batch_rows: 20_000,
            flush_interval: Dur(Duration::from_secs(1)),
            store_events: true,
            success_sample: 1,
            retention_days: ClickHouseRetention::default(),
        }
    }
}

impl ClickHouseSettings {
    /// Whether ClickHouse is configured.
    pub fn enabled(&self) -> bool {
        self.url.is_some()
    }
}

/// `[llm]`: an OpenAI-compatible endpoint for summaries. Off (template
/// summaries) while `base_url` is unset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmSettings {
    /// Base URL ending in `/v1` (`FAULTLINE_LLM_BASE_URL`).
    pub base_url: Option<String>,
    /// API key, sent as a bearer token (`FAULTLINE_LLM_API_KEY`); optional for
    /// endpoints that need none.
    pub api_key: Option<SecretString>,
    /// Model name (`FAULTLINE_LLM_MODEL`); required with `base_url`.
    pub model: Option<String>,
    /// How long an incident waits for the LLM's summary before it is posted
    /// with the template's (then edited in place when the LLM's arrives).
    pub deadline: Dur,
    /// Sampling temperature, 0..2; low keeps summaries close to the facts.
    pub temperature: f32,
    /// Most completion tokens one answer may use.
    pub max_tokens: u32,
    /// Longest one HTTP request may take.
    pub request_timeout: Dur,
    /// Longest one summary may take in all (retries and backoff included);
    /// past it the template is used.
    pub total_timeout: Dur,
    /// Retries of a request that failed with 429, 5xx, a timeout or a refused
    /// connection (with backoff and jitter, honouring `Retry-After`).
    pub max_retries: u32,
    /// Consecutive endpoint failures that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker stops calling the endpoint.
    pub breaker_cooldown: Dur,
    /// Most LLM requests in flight at once.
    pub max_concurrent: usize,
    /// Most tokens (prompt plus completion) spent in any hour; past it, the
    /// template is used until the hour rolls on.
    pub tokens_per_hour: u64,
    /// Summaries kept for identical fact sets (never summarized twice).
    pub cache_entries: usize,
    /// Folder with prompt files overriding the embedded one: `summary.toml`,
    /// else the highest `summary.vN.toml`. Unset: the prompt built into the
    /// binary (`prompts/summary.v1.toml`).
    pub prompts_dir: Option<PathBuf>,
}

impl Default for LlmSettings {
    fn default() -> Self {
        LlmSettings {
            base_url: None,
            api_key: None,
            model: None,
            deadline: Dur(Duration::from_secs(8)),
            temperature: 0.1,
            max_tokens: 800,
            request_timeout: Dur(Duration::from_secs(10)),
            total_timeout: Dur(Duration::from_secs(30)),
            max_retries: 2,
            breaker_failures: 5,
            breaker_cooldown: Dur(Duration::from_secs(60)),
            max_concurrent: 4,
            tokens_per_hour: 200_000,
            cache_entries: 256,
            prompts_dir: None,
        }
    }
}

impl LlmSettings {
    /// Whether LLM summaries are configured.
    pub fn enabled(&self) -> bool {
        self.base_url.is_some()
    }
}

/// `[slack]`: incident posts. Off (stdout) while `token` is unset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlackSettings {
    /// Bot token, `xoxb-...` (`FAULTLINE_SLACK_TOKEN`).
    pub token: Option<SecretString>,
    /// Default channel for rules without `slack_channel`
    /// (`FAULTLINE_SLACK_CHANNEL`); required with `token`.
    pub channel: Option<String>,
    /// Web API base (`FAULTLINE_SLACK_API_URL`).
    pub api_url: String,
    /// Verifies interaction requests (`FAULTLINE_SLACK_SIGNING_SECRET`); unset:
    /// interactions are refused.
    pub signing_secret: Option<SecretString>,
    /// Channel per severity (`info`, `warning`, `critical`), overriding the
    /// rule's `slack_channel`, e.g. `critical = "#payments-pager"`.
    pub severity_channels: BTreeMap<String, String>,
    /// Least time between two messages to one channel (Slack allows about
    /// one per second).
    pub min_interval: Dur,
    /// Retries of a call Slack rate-limited (after `Retry-After`) or that
    /// failed on the network or with a 5xx (with exponential backoff).
    pub max_retries: u32,
    /// Longest one Web API call may take.
    pub request_timeout: Dur,
    /// Upload a chart of failure rate and baseline into each incident's thread.
    pub charts: bool,
}

impl Default for SlackSettings {
    fn default() -> Self {
        SlackSettings {
            token: None,
            channel: None,
            api_url: "https://slack.com/api".into(),
            signing_secret: None,
            severity_channels: BTreeMap::new(),
            min_interval: Dur(Duration::from_secs(1)),
            max_retries: 5,
            request_timeout: Dur(Duration::from_secs(10)),
            charts: true,
        }
    }
}

impl SlackSettings {
    /// Whether Slack posting is configured.
    pub fn enabled(&self) -> bool {
        self.token.is_some()
    }
}

/// What an API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read incidents and silences.
    Read,
    /// Acknowledge, resolve, silence; implies `read`.
    Write,
    /// Post events to `/v1/events`.
    Ingest,
}

impl Scope {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Ingest => "ingest",
        }
    }

    /// Whether a token with this scope may use a route that needs `required`.
    pub fn allows(self, required: Scope) -> bool {
        self == required || (self == Scope::Write && required == Scope::Read)
    }

    fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            "ingest" => Some(Scope::Ingest),
            _ => None,
        }
    }
}

/// One API bearer token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// The name recorded in audit entries and logs (`[A-Za-z0-9_.-]`, up to 64);
    /// unset: `tokenN`, N its 1-based position. Never derived from the secret, so
    /// no part of a secret reaches a log line or a stored timeline.
    #[serde(default)]
    pub name: String,
    /// The secret clients send as `Authorization: Bearer SECRET`.
    pub secret: SecretString,
    /// What it may do.
    pub scope: Scope,
}

/// `[api]`: the HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// Bearer tokens (`FAULTLINE_API_TOKENS`: comma-separated `SECRET:SCOPE` or
    /// `NAME=SECRET:SCOPE`, replacing this list). None: every route but
    /// `/healthz`, `/readyz` and `/metrics` answers 401.
    pub tokens: Vec<ApiToken>,
    /// Largest accepted request body, in bytes; bigger bodies get 413.
    pub body_limit_bytes: usize,
    /// Longest a request may take before it is answered 503.
    pub request_timeout: Dur,
    /// Longest the headers of one request may take to arrive; the connection
    /// is closed after that (slow clients cannot hold connections open).
    pub header_read_timeout: Dur,
    /// Most open HTTP connections; lowered at start to leave 64 file
    /// descriptors free under the process's open-file limit.
    pub max_connections: usize,
    /// Most open HTTP connections from one client IP address.
    pub max_connections_per_client: usize,
    /// Most `POST /v1/events` bodies read and parsed at once; others wait
    /// (within the request timeout), so memory stays near this many bodies.
    pub max_concurrent_ingest: usize,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            tokens: Vec::new(),
            body_limit_bytes: 10 * 1024 * 1024,
            request_timeout: Dur(Duration::from_secs(10)),
            header_read_timeout: Dur(Duration::from_secs(10)),
            max_connections: 1024,
            max_connections_per_client: 64,
            max_concurrent_ingest: 2,
        }
    }
}

/// `[engine]`: windows, dedupe and the channels between stages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// How far behind the newest event time an event may arrive and still count;
    /// later events are counted as `late` and dropped.
    pub allowed_lateness: Dur,
    /// How long an event id is remembered for dedupe (at least the longest rule
    /// window).
    pub dedupe_horizon: Dur,
    /// Most cells (dimension-value combinations) one rule keeps; past it, the
    /// least recently seen are evicted. Also bounds the entries of a rule's
    /// history (cells with counts per step over its last six windows), which
    /// an opening incident looks back on.
    pub max_cells_per_rule: usize,
    /// Capacity of the channel from ingest to the engine, in events. A full
    /// channel slows ingest down (backpressure) rather than dropping events.
    pub event_channel_capacity: usize,
    /// Capacity of the channel from the engine to summaries, notifiers and the
    /// store, in incident transitions.
    pub transition_channel_capacity: usize,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            allowed_lateness: Dur(Duration::from_secs(30)),
            dedupe_horizon: Dur(Duration::from_secs(15 * 60)),
            max_cells_per_rule: 2_000_000,
            event_channel_capacity: 8192,
            transition_channel_capacity: 1024,
        }
    }
}

/// `[explain]`: the event attributes every rate rule explains incidents with,
/// beyond its own `dimensions` (so a card network outage is named
/// `card_brand=amex` by a rule that counts `provider x region x bin`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ExplainSettings {
    /// Explain with the standard attributes: provider, region, bin, its issuer
    /// prefix, card_brand, merchant_id, and failures' error_code.
    pub standard: bool,
    /// Digits of the BIN prefix explained with (4: `bin4`), 0 for none.
    pub bin_prefix: u8,
    /// `attrs.NAME` keys to explain with (attributes are free-form, so none by
    /// default), at most [`MAX_EXPLAIN_ATTRS`].
    pub attrs: Vec<String>,
    /// Distinct values kept per attribute in `attrs` and per rule; later new
    /// values are not explained with (a high-cardinality attribute such as a
    /// request id cannot grow memory without bound).
    pub max_attr_values: usize,
}

/// Most `attrs.NAME` keys `[explain]` takes.
pub const MAX_EXPLAIN_ATTRS: usize = 4;

impl Default for ExplainSettings {
    fn default() -> Self {
        ExplainSettings {
            standard: true,
            bin_prefix: 4,
            attrs: Vec::new(),
            max_attr_values: 1000,
        }
    }
}

/// `[store]`: bounds of the embedded in-memory store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// Resolved incidents kept; past it, the longest-resolved are dropped. Open
    /// incidents are always kept.
    pub max_resolved_incidents: usize,
    /// Series points (evaluation steps) kept per incident, newest.
    pub max_series_points: usize,
    /// Timeline entries kept per incident: the first, then the newest.
    pub max_timeline_entries: usize,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            max_resolved_incidents: 10_000,
            max_series_points: 720,
            max_timeline_entries: 1_000,
        }
    }
}

impl Settings {
    /// Reads `path` when given (a missing file is an error), then applies the
    /// `FAULTLINE_*` environment.
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_path_buf(),
                source,
            })?,
            None => String::new(),
        };
        Settings::load_from(&text, |name| std::env::var(name).ok())
    }

    /// Parses `toml_text`, then applies the variables `env` returns. An empty
    /// variable counts as unset.
    pub fn load_from(
        toml_text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let mut settings = parse_toml(toml_text)?;
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let from_env = settings.apply_env(&env)?;
        settings
            .name_tokens()
            .map_err(|e| blame_env(e, &from_env))?;
        settings.validate().map_err(|e| blame_env(e, &from_env))?;
        Ok(settings)
    }

    /// Applies the environment; returns which keys it set, by variable.
    fn apply_env(
        &mut self,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<BTreeMap<&'static str, &'static str>, ConfigError> {
        let mut set = BTreeMap::new();
        let mut var = |name: &'static str, key: &'static str| {
            let v = env(name);
            if v.is_some() {
                set.insert(key, name);
            }
            v
        };
        if let Some(v) = var("FAULTLINE_LISTEN", "listen") {
            self.listen = v;
        }
        if let Some(v) = var("FAULTLINE_PUBLIC_URL", "public_url") {
            self.public_url = Some(v).filter(|v| !v.trim().is_empty());
        }
        if let Some(v) = var("FAULTLINE_RULES_DIR", "rules_dir") {
            self.rules_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = var("FAULTLINE_LOG", "log") {
            self.log = v;
        }
        if let Some(v) = var("FAULTLINE_NATS_URL", "nats.url") {
            self.nats.url = Some(v);
        }
        if let Some(v) = var("FAULTLINE_NATS_STREAM", "nats.stream") {
            self.nats.stream = v;
        }
        if let Some(v) = var("FAULTLINE_NATS_SUBJECTS", "nats.subjects") {
            self.nats.subjects = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(v) = var("FAULTLINE_CLICKHOUSE_URL", "clickhouse.url") {
            self.clickhouse.url = Some(v);
        }
        if let Some(v) = var("FAULTLINE_CLICKHOUSE_DATABASE", "clickhouse.database") {
            self.clickhouse.database = v;
        }
        if let Some(v) = var("FAULTLINE_CLICKHOUSE_USER", "clickhouse.user") {
            self.clickhouse.user = v;
        }
        if let Some(v) = var("FAULTLINE_CLICKHOUSE_PASSWORD", "clickhouse.password") {
            self.clickhouse.password = v.into();
        }
        if let Some(v) = var("FAULTLINE_LLM_BASE_URL", "llm.base_url") {
            self.llm.base_url = Some(v);
        }
        if let Some(v) = var("FAULTLINE_LLM_API_KEY", "llm.api_key") {
            self.llm.api_key = Some(v.into());
        }
        if let Some(v) = var("FAULTLINE_LLM_MODEL", "llm.model") {
            self.llm.model = Some(v);
        }
        if let Some(v) = var("FAULTLINE_SLACK_TOKEN", "slack.token") {
            self.slack.token = Some(v.into());
        }
        if let Some(v) = var("FAULTLINE_SLACK_CHANNEL", "slack.channel") {
            self.slack.channel = Some(v);
        }
        if let Some(v) = var("FAULTLINE_SLACK_API_URL", "slack.api_url") {
            self.slack.api_url = v;
        }
        if let Some(v) = var("FAULTLINE_SLACK_SIGNING_SECRET", "slack.signing_secret") {
            self.slack.signing_secret = Some(v.into());
        }
        if let Some(v) = var("FAULTLINE_API_TOKENS", "api.tokens") {
            self.api.tokens = parse_tokens(&v)?;
        }
        Ok(set)
    }

    /// Gives unnamed tokens their positional name and checks names.
    fn name_tokens(&mut self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for (i, t) in self.api.tokens.iter_mut().enumerate() {
            let key = format!("api.tokens[{i}]");
            if t.name.is_empty() {
                t.name = format!("token{}", i + 1);
            } else if !valid_token_name(&t.name) {
                return Err(ConfigError::invalid(
                    format!("{key}.name"),
                    "must be 1..64 characters of [A-Za-z0-9_.-]",
                ));
            }
            if t.secret.expose_secret().trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("{key}.secret"),
                    "must not be empty",
                ));
            }
            if !seen.insert(t.name.clone()) {
                return Err(ConfigError::invalid(
                    format!("{key}.name"),
                    format!("duplicate token name `{}`", t.name),
                ));
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !valid_listen(&self.listen) {
            return Err(ConfigError::invalid(
                "listen",
                format!("`{}` is not host:port", self.listen),
            ));
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(ConfigError::invalid(
                    "public_url",
                    format!("`{url}` is not an http(s) URL"),
                ));
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log) {
            return Err(ConfigError::invalid(
                "log",
                format!("not a log filter: {e}"),
            ));
        }
        if let Some(url) = &self.nats.url {
            if url.trim().is_empty() {
                return Err(ConfigError::invalid("nats.url", "must not be empty"));
            }
        }
        if self.nats.stream.is_empty()
            || !self
                .nats
                .stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(ConfigError::invalid(
                "nats.stream",
                "must be 1 or more characters of [A-Za-z0-9_-]",
            ));
        }
        if self.nats.subjects.is_empty() || self.nats.subjects.iter().any(|s| s.is_empty()) {
            return Err(ConfigError::invalid(
                "nats.subjects",
                "list at least one non-empty subject",
            ));
        }
        if self.nats.max_deliver < 1 {
            return Err(ConfigError::invalid(
                "nats.max_deliver",
                "must be at least 1",
            ));
        }
        if !(1..=5).contains(&self.nats.replicas) {
            return Err(ConfigError::invalid("nats.replicas", "must be 1..5"));
        }
        if !(1..=100_000).contains(&self.nats.batch_size) {
            return Err(ConfigError::invalid("nats.batch_size", "must be 1..100000"));
        }
        if let Some(url) = &self.clickhouse.url {
            http_url("clickhouse.url", url)?;
        }
        if self.clickhouse.database.is_empty()
            || !self
                .clickhouse
                .database
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(ConfigError::invalid(
                "clickhouse.database",
                "must be 1 or more characters of [A-Za-z0-9_]",
            ));
        }
        if let Some(url) = &self.llm.base_url {
            http_url("llm.base_url", url)?;
            if self.llm.model.as_deref().is_none_or(str::is_empty) {
                return Err(ConfigError::invalid(
                    "llm.model",
                    "required when llm.base_url is set",
                ));
            }
        }
        if !(0.0..=2.0).contains(&self.llm.temperature) {
            return Err(ConfigError::invalid("llm.temperature", "must be 0..2"));
        }
        for (key, v) in [
            ("api.max_connections", self.api.max_connections as u64),
            (
                "api.max_connections_per_client",
                self.api.max_connections_per_client as u64,
            ),
            (
                "api.max_concurrent_ingest",
                self.api.max_concurrent_ingest as u64,
            ),
            ("llm.max_tokens", u64::from(self.llm.max_tokens)),
            ("llm.max_concurrent", self.llm.max_concurrent as u64),
            ("llm.breaker_failures", u64::from(self.llm.breaker_failures)),
            ("llm.tokens_per_hour", self.llm.tokens_per_hour),
        ] {
            if v == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        for (key, d) in [
            ("api.header_read_timeout", self.api.header_read_timeout),
            ("llm.request_timeout", self.llm.request_timeout),
            ("llm.total_timeout", self.llm.total_timeout),
        ] {
            if d.0.is_zero() {
                return Err(ConfigError::invalid(key, "must be longer than 0s"));
            }
        }
        http_url("slack.api_url", &self.slack.api_url)?;
        if self.slack.token.is_some() && self.slack.channel.as_deref().is_none_or(str::is_empty) {
            return Err(ConfigError::invalid(
                "slack.channel",
                "required when slack.token is set",
            ));
        }
        for (sev, channel) in &self.slack.severity_channels {
            if !matches!(sev.as_str(), "info" | "warning" | "critical") || channel.trim().is_empty()
            {
                return Err(ConfigError::invalid(
                    format!("slack.severity_channels.{sev}"),
                    "keys must be info, warning or critical, values channel names or ids",
                ));
            }
        }
        if self.slack.request_timeout.0.is_zero() {
            return Err(ConfigError::invalid(
                "slack.request_timeout",
                "must be positive",
            ));
        }
        let positive = [
            ("api.body_limit_bytes", self.api.body_limit_bytes),
            ("engine.max_cells_per_rule", self.engine.max_cells_per_rule),
            (
                "engine.event_channel_capacity",
                self.engine.event_channel_capacity,
            ),
            (
                "engine.transition_channel_capacity",
                self.engine.transition_channel_capacity,
            ),
            ("store.max_series_points", self.store.max_series_points),
            ("clickhouse.buffer_rows", self.clickhouse.buffer_rows),
            ("clickhouse.batch_rows", self.clickhouse.batch_rows),
            (
                "clickhouse.success_sample",
                self.clickhouse.success_sample as usize,
            ),
            (
                "store.max_timeline_entries",
                self.store.max_timeline_entries,
            ),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if self.api.request_timeout.0.is_zero() {
            return Err(ConfigError::invalid(
                "api.request_timeout",
                "must be longer than 0s",
            ));
        }
        if self.clickhouse.flush_interval.0.is_zero() {
            return Err(ConfigError::invalid(
                "clickhouse.flush_interval",
                "must be longer than 0s",
            ));
        }
        if self.engine.dedupe_horizon.0.is_zero() {
            return Err(ConfigError::invalid(
                "engine.dedupe_horizon",
                "must be longer than 0s",
            ));
        }
        self.validate_explain()?;
        self.validate_cluster()
    }

    fn validate_explain(&self) -> Result<(), ConfigError> {
        let e = &self.explain;
        if e.bin_prefix > 5 {
            return Err(ConfigError::invalid(
                "explain.bin_prefix",
                "must be 0 (none) to 5 digits",
            ));
        }
        if e.attrs.len() > MAX_EXPLAIN_ATTRS {
            return Err(ConfigError::invalid(
                "explain.attrs",
                format!("at most {MAX_EXPLAIN_ATTRS} attributes"),
            ));
        }
        if let Some(bad) = e.attrs.iter().find(|a| !valid_attr_name(a)) {
            return Err(ConfigError::invalid(
                "explain.attrs",
                format!(
                    "`{}` is not an attribute name ([A-Za-z0-9_.-], 1 to 64 characters)",
                    crate::redact::redact_all(bad)
                ),
            ));
        }
        if e.max_attr_values == 0 {
            return Err(ConfigError::invalid(
                "explain.max_attr_values",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let c = &self.cluster;
        if !c.enabled {
            return Ok(());
        }
        if !self.nats.enabled() {
            return Err(ConfigError::invalid(
                "cluster.enabled",
                "replicas share a JetStream stream: set nats.url (FAULTLINE_NATS_URL)",
            ));
        }
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if let Some(node) = &c.node {
            if !name_ok(node) {
                return Err(ConfigError::invalid(
                    "cluster.node",
                    "must be 1 or more characters of [A-Za-z0-9_-]",
                ));
            }
        }
        if !name_ok(&c.partials_stream) || c.partials_stream == self.nats.stream {
            return Err(ConfigError::invalid(
                "cluster.partials_stream",
                "must be 1 or more characters of [A-Za-z0-9_-], not the events stream",
            ));
        }
        if c.partials_subject.is_empty()
            || c.partials_subject.contains(['*', '>', ' '])
            || c.partials_subject.starts_with('.')
            || c.partials_subject.ends_with('.')
        {
            return Err(ConfigError::invalid(
                "cluster.partials_subject",
                "must be a subject prefix without wildcards, e.g. faultline.partials",
            ));
        }
        if c.flush_interval.0.is_zero() || c.flush_interval.0 >= self.engine.allowed_lateness.0 {
            return Err(ConfigError::invalid(
                "cluster.flush_interval",
                "must be longer than 0s and shorter than engine.allowed_lateness \
                 (counts published later than that arrive late at the detector)",
            ));
        }
        if c.lease_ttl.0 < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "cluster.lease_ttl",
                "must be at least 1s",
            ));
        }
        if c.ack_wait.0 < Duration::from_secs(1) || c.partials_max_age.0 < Duration::from_secs(60) {
            return Err(ConfigError::invalid(
                "cluster.ack_wait",
                "ack_wait must be at least 1s and partials_max_age at least 60s",
            ));
        }
        Ok(())
    }
}

/// Replaces a TOML key by the variable that set it, so the message points at
/// what the operator actually wrote.
fn blame_env(e: ConfigError, from_env: &BTreeMap<&'static str, &'static str>) -> ConfigError {
    match e {
        ConfigError::Invalid { key, message } => {
            let var = from_env
                .iter()
                .find(|(k, _)| key == **k || key.starts_with(&format!("{k}[")))
                .map(|(_, v)| *v);
            match var {
                Some(var) => ConfigError::Invalid {
                    key: var.to_string(),
                    message,
                },
                None => ConfigError::Invalid { key, message },
            }
        }
        other => other,
    }
}

fn parse_toml(text: &str) -> Result<Settings, ConfigError> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.message().trim().replace('\n', "; ");
        let mut key = if path == "." { String::new() } else { path };
        // Depending on the deserializer, an unknown field is reported at the table
        // that holds it or at the field itself: name the field either way.
        if let Some(unknown) = message
            .strip_prefix("unknown field `")
            .and_then(|m| m.split('`').next())
            .filter(|u| !(key == *u || key.ends_with(&format!(".{u}"))))
        {
            key = if key.is_empty() {
                unknown.to_string()
            } else {
                format!("{key}.{unknown}")
            };
        }
        if key.is_empty() {
            let line = inner
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(1);
            // The full error text would quote the offending line, which may
            // hold a secret; the bare message does not.
            let message = if message.is_empty() {
                "invalid TOML (check quoting, `=` and brackets)".to_string()
            } else {
                message
            };
            return ConfigError::Syntax { line, message };
        }
        // A type error quotes the value it found; never quote a secret. (An
        // unknown-field error quotes only key names, which help.)
        let message = if is_secret_key(&key) && !message.starts_with("unknown field") {
            "invalid value (not shown: it is a secret)".to_string()
        } else {
            message
        };
        ConfigError::Invalid { key, message }
    })
}

fn is_secret_key(key: &str) -> bool {
    ["password", "api_key", "token", "secret"]
        .iter()
        .any(|s| key.contains(s))
}

/// Parses `FAULTLINE_API_TOKENS`: comma-separated `SECRET:SCOPE` or
/// `NAME=SECRET:SCOPE`. The scope follows the last `:`, so secrets may hold `:`.
/// A secret holding `=` (base64 padding is fine as is) needs the `NAME=` form.
fn parse_tokens(value: &str) -> Result<Vec<ApiToken>, ConfigError> {
    const VAR: &str = "FAULTLINE_API_TOKENS";
    let mut tokens = Vec::new();
    for (i, entry) in value
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .enumerate()
    {
        let n = i + 1;
        let (lhs, scope) = entry
            .rsplit_once(':')
            .ok_or_else(|| ConfigError::invalid(VAR, format!("entry {n} is not SECRET:SCOPE")))?;
        let scope = Scope::parse(scope.trim()).ok_or_else(|| {
            ConfigError::invalid(
                VAR,
                format!("entry {n}: scope must be read, write or ingest"),
            )
        })?;
        let (name, secret) = match lhs.split_once('=') {
            // `abc==` is a padded secret, not a name `abc` with secret `=`.
            Some((name, secret))
                if valid_token_name(name) && !secret.is_empty() && !secret.starts_with('=') =>
            {
                (name.to_string(), secret)
            }
            _ => (String::new(), lhs),
        };
        if secret.is_empty() {
            return Err(ConfigError::invalid(
                VAR,
                format!("entry {n}: empty secret"),
            ));
        }
        tokens.push(ApiToken {
            name,
            secret: secret.to_string().into(),
            scope,
        });
    }
    Ok(tokens)
}

fn valid_token_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// An `attrs` key as `[explain]` takes it.
pub fn valid_attr_name(a: &str) -> bool {
    (1..=64).contains(&a.len())
        && a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn valid_listen(addr: &str) -> bool {
    match addr.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    }
}

/// Checks an http(s) URL without quoting it (it might hold credentials).
fn http_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let Some(rest) = rest else {
        return Err(ConfigError::invalid(
            key,
            "must be an http:// or https:// URL",
        ));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() {
        return Err(ConfigError::invalid(key, "has no host"));
    }
    if authority.contains('@') {
        return Err(ConfigError::invalid(
            key,
            "must not carry credentials; use the dedicated user / password / key settings",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_are_the_embedded_setup() {
        let s = Settings::load_from("", env_of(&[])).unwrap();
        assert_eq!(s.listen, "127.0.0.1:8080");
        assert_eq!(s.log, "info");
        assert!(!s.nats.enabled());
        assert_eq!(s.nats.stream, "PAYMENTS");
        assert_eq!(s.nats.subjects, vec!["payments.>".to_string()]);
        assert!(!s.clickhouse.enabled());
        assert_eq!(s.clickhouse.database, "faultline");
        assert_eq!(s.clickhouse.user, "default");
        assert_eq!(s.clickhouse.password.expose_secret(), "");
        assert!(!s.llm.enabled());
        assert!(!s.slack.enabled());
        assert_eq!(s.slack.api_url, "https://slack.com/api");
        assert!(s.api.tokens.is_empty());
        assert_eq!(s.api.body_limit_bytes, 10 * 1024 * 1024);
        assert_eq!(s.api.request_timeout.0, Duration::from_secs(10));
        assert_eq!(s.engine.allowed_lateness.0, Duration::from_secs(30));
        assert_eq!(s.engine.dedupe_horizon.0, Duration::from_secs(900));
        assert_eq!(s.engine.max_cells_per_rule, 2_000_000);
        assert_eq!(s.store.max_series_points, 720);
    }

    #[test]
    fn every_contract_variable_overrides_the_file() {
        let file = r#"
            listen = "0.0.0.0:9000"
            [clickhouse]
            url = "http://file:8123"
            user = "file"
        "#;
        let env = env_of(&[
            ("FAULTLINE_NATS_URL", "nats://n:4222"),
            ("FAULTLINE_NATS_STREAM", "PAY"),
            ("FAULTLINE_NATS_SUBJECTS", "a.>, b.*"),
            ("FAULTLINE_CLICKHOUSE_URL", "http://ch:8123"),
            ("FAULTLINE_CLICKHOUSE_DATABASE", "fl"),
            ("FAULTLINE_CLICKHOUSE_USER", "u"),
            ("FAULTLINE_CLICKHOUSE_PASSWORD", "chpass"),
            ("FAULTLINE_LLM_BASE_URL", "http://llm/v1"),
            ("FAULTLINE_LLM_API_KEY", "sk-llm"),
            ("FAULTLINE_LLM_MODEL", "m1"),
            ("FAULTLINE_SLACK_TOKEN", "xoxb-1"),
            ("FAULTLINE_SLACK_CHANNEL", "#inc"),
            ("FAULTLINE_SLACK_API_URL", "http://slack.local/api"),
            ("FAULTLINE_SLACK_SIGNING_SECRET", "sign"),
            ("FAULTLINE_LISTEN", "127.0.0.1:0"),
            ("FAULTLINE_API_TOKENS", "r3ad:read, ci=in:ge:st:ingest,"),
            ("FAULTLINE_RULES_DIR", "/etc/rules"),
            ("FAULTLINE_LOG", "debug"),
        ]);
        let s = Settings::load_from(file, env).unwrap();
        assert_eq!(s.nats.url.as_deref(), Some("nats://n:4222"));
        assert_eq!(s.nats.stream, "PAY");
        assert_eq!(s.nats.subjects, vec!["a.>".to_string(), "b.*".to_string()]);
        assert_eq!(s.clickhouse.url.as_deref(), Some("http://ch:8123"));
        assert_eq!(s.clickhouse.database, "fl");
        assert_eq!(s.clickhouse.user, "u");
        assert_eq!(s.clickhouse.password.expose_secret(), "chpass");
        assert_eq!(s.llm.base_url.as_deref(), Some("http://llm/v1"));
        assert_eq!(s.llm.api_key.as_ref().unwrap().expose_secret(), "sk-llm");
        assert_eq!(s.llm.model.as_deref(), Some("m1"));
        assert_eq!(s.slack.token.as_ref().unwrap().expose_secret(), "xoxb-1");
        assert_eq!(s.slack.channel.as_deref(), Some("#inc"));
        assert_eq!(s.slack.api_url, "http://slack.local/api");
        assert_eq!(
            s.slack.signing_secret.as_ref().unwrap().expose_secret(),
            "sign"
        );
        assert_eq!(s.listen, "127.0.0.1:0");
        assert_eq!(s.rules_dir, Some(PathBuf::from("/etc/rules")));
        assert_eq!(s.log, "debug");
        assert_eq!(s.api.tokens.len(), 2);
        assert_eq!(s.api.tokens[0].name, "token1");
        assert_eq!(s.api.tokens[0].secret.expose_secret(), "r3ad");
        assert_eq!(s.api.tokens[0].scope, Scope::Read);
        assert_eq!(s.api.tokens[1].name, "ci");
        assert_eq!(s.api.tokens[1].secret.expose_secret(), "in:ge:st");
        assert_eq!(s.api.tokens[1].scope, Scope::Ingest);
    }

    #[test]
    fn a_cluster_needs_nats_and_sane_timings() {
        let load = |toml: &str, nats: bool| {
            let env: &[(&str, &str)] = if nats {
                &[("FAULTLINE_NATS_URL", "nats://a:4222,nats://b:4222")]
            } else {
                &[]
            };
            Settings::load_from(toml, env_of(env))
        };
        let ok = load("[cluster]\nenabled = true\nnode = \"r-1\"\n", true).unwrap();
        assert_eq!(ok.cluster.node_name(), "r-1");
        let no_nats = load("[cluster]\nenabled = true\n", false).unwrap_err();
        assert!(no_nats.to_string().contains("cluster.enabled"), "{no_nats}");
        let slow = load(
            "[cluster]\nenabled = true\nflush_interval = \"30s\"\n",
            true,
        )
        .unwrap_err();
        assert!(
            slow.to_string().contains("cluster.flush_interval"),
            "{slow}"
        );
        let bad_node = load("[cluster]\nenabled = true\nnode = \"a b\"\n", true).unwrap_err();
        assert!(bad_node.to_string().contains("cluster.node"), "{bad_node}");
        let same = load(
            "[cluster]\nenabled = true\npartials_stream = \"PAYMENTS\"\n",
            true,
        )
        .unwrap_err();
        assert!(same.to_string().contains("partials_stream"), "{same}");
        // Off, nothing is checked.
        assert!(load("[cluster]\nflush_interval = \"1h\"\n", false).is_ok());
        let unknown = load("[cluster]\nenabeld = true\n", true).unwrap_err();
        assert!(unknown.to_string().contains("enabeld"), "{unknown}");
    }

    #[test]
    fn padded_secrets_are_not_names() {
        let t = parse_tokens("abc==:read,abc=:write,n=x=y:ingest").unwrap();
        assert_eq!(t[0].secret.expose_secret(), "abc==");
        assert_eq!(t[1].secret.expose_secret(), "abc=");
        assert_eq!(t[2].name, "n");
        assert_eq!(t[2].secret.expose_secret(), "x=y");
    }

    #[test]
    fn errors_name_the_key_or_variable_and_hide_secrets() {
        let err = |toml: &str, env: &[(&str, &str)]| {
            Settings::load_from(toml, env_of(env))
                .unwrap_err()
                .to_string()
        };
        let e = err("[engine]\nallowed_latenes = \"30s\"\n", &[]);
        assert!(e.contains("engine.allowed_latenes"), "{e}");
        let e = err("[engine]\nallowed_lateness = \"soon\"\n", &[]);
        assert!(e.contains("engine.allowed_lateness"), "{e}");
        let e = err("[api]\nbody_limit_bytes = 0\n", &[]);
        assert!(e.contains("api.body_limit_bytes"), "{e}");
        let e = err("", &[("FAULTLINE_LISTEN", "nope")]);
        assert!(e.contains("FAULTLINE_LISTEN"), "{e}");
        let e = err("", &[("FAULTLINE_API_TOKENS", "hunter2hunter2:admin")]);
        assert!(
            e.contains("FAULTLINE_API_TOKENS") && !e.contains("hunter2"),
            "{e}"
        );
        let e = err("[clickhouse]\npassword = 123456789\n", &[]);
        assert!(
            e.contains("clickhouse.password") && !e.contains("123456789"),
            "{e}"
        );
        let e = err(
            "[[api.tokens]]\nsecret = \"s\"\nscope = \"read\"\nnmae = \"x\"\n",
            &[],
        );
        assert!(
            e.contains("`api.tokens[0].nmae`") && e.contains("unknown field"),
            "{e}"
        );
        let e = err(
            "[[api.tokens]]\nsecret = 987654321\nscope = \"read\"\n",
            &[],
        );
        assert!(
            e.contains("api.tokens[0].secret") && !e.contains("987654321"),
            "{e}"
        );
        let e = err(
            "",
            &[("FAULTLINE_CLICKHOUSE_URL", "http://u:pw123@ch:8123")],
        );
        assert!(
            e.contains("FAULTLINE_CLICKHOUSE_URL") && !e.contains("pw123"),
            "{e}"
        );
        let e = err("", &[("FAULTLINE_LLM_BASE_URL", "http://llm/v1")]);
        assert!(e.contains("llm.model"), "{e}");
        let e = err("", &[("FAULTLINE_SLACK_TOKEN", "xoxb-1")]);
        assert!(e.contains("slack.channel") && !e.contains("xoxb"), "{e}");
        let e = err("listen = ", &[]);
        assert!(e.contains("line 1"), "{e}");
        let e = err("", &[("FAULTLINE_LOG", "info,[[[")]);
        assert!(e.contains("FAULTLINE_LOG"), "{e}");
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let s = Settings::load_from("", env_of(&[("FAULTLINE_NATS_URL", "")])).unwrap();
        assert!(!s.nats.enabled());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let env = env_of(&[
            ("FAULTLINE_NATS_URL", "nats://natsuser:natspw@n:4222"),
            ("FAULTLINE_CLICKHOUSE_PASSWORD", "chpass-xyz"),
            ("FAULTLINE_LLM_BASE_URL", "http://llm/v1"),
            ("FAULTLINE_LLM_MODEL", "m"),
            ("FAULTLINE_LLM_API_KEY", "sk-llm-xyz"),
            ("FAULTLINE_SLACK_TOKEN", "xoxb-xyz"),
            ("FAULTLINE_SLACK_CHANNEL", "#c"),
            ("FAULTLINE_SLACK_SIGNING_SECRET", "sign-xyz"),
            ("FAULTLINE_API_TOKENS", "tok-xyz:read"),
        ]);
        let s = Settings::load_from("", env).unwrap();
        let dbg = format!("{s:?}");
        for secret in [
            "natspw",
            "chpass-xyz",
            "sk-llm-xyz",
            "xoxb-xyz",
            "sign-xyz",
            "tok-xyz",
        ] {
            assert!(!dbg.contains(secret), "{secret} in {dbg}");
        }
        assert!(dbg.contains("nats://[REDACTED]@n:4222"), "{dbg}");
    }

    #[test]
    fn toml_tokens_get_names() {
        let file = r#"
            [[api.tokens]]
            secret = "a"
            scope = "read"
            [[api.tokens]]
            name = "ops"
            secret = "b"
            scope = "write"
        "#;
        let s = Settings::load_from(file, env_of(&[])).unwrap();
        assert_eq!(s.api.tokens[0].name, "token1");
        assert_eq!(s.api.tokens[1].name, "ops");
        assert!(Scope::Write.allows(Scope::Read));
        assert!(!Scope::Read.allows(Scope::Write));
        assert!(!Scope::Write.allows(Scope::Ingest));
        assert!(!Scope::Ingest.allows(Scope::Read));
    }

    #[test]
    fn llm_guardrail_keys_are_checked() {
        let s = Settings::load_from(
            "[llm]\ntemperature = 0.5\nmax_retries = 0\nprompts_dir = \"prompts\"",
            env_of(&[]),
        )
        .unwrap();
        assert_eq!(s.llm.temperature, 0.5);
        assert_eq!(s.llm.max_retries, 0);
        assert_eq!(s.llm.prompts_dir, Some(PathBuf::from("prompts")));
        for (toml, key) in [
            ("[llm]\ntemperature = 3.0", "llm.temperature"),
            ("[llm]\nmax_tokens = 0", "llm.max_tokens"),
            ("[llm]\nmax_concurrent = 0", "llm.max_concurrent"),
            ("[llm]\ntokens_per_hour = 0", "llm.tokens_per_hour"),
            ("[llm]\nrequest_timeout = \"0s\"", "llm.request_timeout"),
        ] {
            let e = Settings::load_from(toml, env_of(&[]))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{toml}: {e}");
        }
    }

    const EXAMPLE: &str = include_str!("../faultline.example.toml");

    #[test]
    fn example_file_parses_and_states_the_defaults() {
        let s = Settings::load_from(EXAMPLE, env_of(&[])).unwrap();
        let d = Settings::default();
        assert_eq!(s.listen, d.listen);
        assert_eq!(s.log, d.log);
        assert_eq!(s.nats.stream, d.nats.stream);
        assert_eq!(s.nats.subjects, d.nats.subjects);
        assert_eq!(s.clickhouse.database, d.clickhouse.database);
        assert_eq!(s.clickhouse.user, d.clickhouse.user);
        assert_eq!(s.clickhouse.buffer_rows, d.clickhouse.buffer_rows);
        assert_eq!(s.clickhouse.batch_rows, d.clickhouse.batch_rows);
        assert_eq!(s.clickhouse.flush_interval, d.clickhouse.flush_interval);
        assert_eq!(s.clickhouse.success_sample, d.clickhouse.success_sample);
        assert_eq!(
            s.clickhouse.retention_days.events,
            d.clickhouse.retention_days.events
        );
        assert_eq!(s.slack.api_url, d.slack.api_url);
        assert_eq!(s.api.body_limit_bytes, d.api.body_limit_bytes);
        assert_eq!(s.api.request_timeout, d.api.request_timeout);
        assert_eq!(s.explain, d.explain);
        assert_eq!(s.engine.allowed_lateness, d.engine.allowed_lateness);
        assert_eq!(s.engine.dedupe_horizon, d.engine.dedupe_horizon);
        assert_eq!(s.engine.max_cells_per_rule, d.engine.max_cells_per_rule);
        assert_eq!(
            s.engine.event_channel_capacity,
            d.engine.event_channel_capacity
        );
        assert_eq!(
            s.engine.transition_channel_capacity,
            d.engine.transition_channel_capacity
        );
        assert_eq!(
            s.store.max_resolved_incidents,
            d.store.max_resolved_incidents
        );
        assert_eq!(s.store.max_series_points, d.store.max_series_points);
        assert_eq!(s.store.max_timeline_entries, d.store.max_timeline_entries);
        assert_eq!(s.llm.deadline, d.llm.deadline);
        assert_eq!(s.llm.temperature, d.llm.temperature);
        assert_eq!(s.llm.max_tokens, d.llm.max_tokens);
        assert_eq!(s.llm.request_timeout, d.llm.request_timeout);
        assert_eq!(s.llm.total_timeout, d.llm.total_timeout);
        assert_eq!(s.llm.max_retries, d.llm.max_retries);
        assert_eq!(s.llm.breaker_failures, d.llm.breaker_failures);
        assert_eq!(s.llm.breaker_cooldown, d.llm.breaker_cooldown);
        assert_eq!(s.llm.max_concurrent, d.llm.max_concurrent);
        assert_eq!(s.llm.tokens_per_hour, d.llm.tokens_per_hour);
        assert_eq!(s.llm.cache_entries, d.llm.cache_entries);
        assert!(!s.nats.enabled() && !s.clickhouse.enabled() && !s.llm.enabled());
        assert!(!s.slack.enabled() && s.api.tokens.is_empty());
    }

    /// Keys shown commented out (`#key = ...`, no space after `#`) must be real
    /// keys with usable values: uncommented, the file still loads.
    #[test]
    fn example_file_commented_keys_are_real() {
        let uncommented: String = EXAMPLE
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '[') => {
                    rest
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert_ne!(uncommented, EXAMPLE, "the example shows optional keys");
        let s = Settings::load_from(&uncommented, env_of(&[])).unwrap();
        assert!(s.nats.enabled() && s.clickhouse.enabled() && s.llm.enabled());
        assert!(s.slack.enabled() && !s.api.tokens.is_empty());
    }
}
