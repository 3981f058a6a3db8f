//! Process metrics, served as Prometheus text on `GET /metrics`.
//!
//! Counters are plain atomics so the hot path (every event) pays one relaxed
//! increment. Rejections are counted by reason in a small map behind a std
//! `Mutex`: they are rare, the set of reasons is small and fixed, and the lock is
//! never held across an `.await`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Most distinct rejection reasons tracked; further ones count as `other`, so a
/// caller passing unexpected strings cannot grow the label set without bound.
const MAX_REASONS: usize = 64;

/// The daemon's counters and gauges. Share it as `Arc<Metrics>`.
#[derive(Debug, Default)]
pub struct Metrics {
    events_received: AtomicU64,
    events_accepted: AtomicU64,
    events_duplicate: AtomicU64,
    http_connections_refused: AtomicU64,
    events_late: AtomicU64,
    rejected: Mutex<BTreeMap<String, u64>>,
    active_cells: AtomicU64,
    detections: AtomicU64,
    incidents_opened: AtomicU64,
    incidents_resolved: AtomicU64,
    open_incidents: AtomicU64,
    notify_failures: AtomicU64,
    notifications_muted: AtomicU64,
    incidents_by_status: [AtomicU64; 3],
    store_writes: Histogram,
    nats_pending: AtomicU64,
    nats_connected: AtomicU64,
    summaries_late: AtomicU64,
    llm_calls: Labeled,
    llm_latency: Histogram,
    llm_tokens: Labeled,
    summary_fallbacks: Labeled,
    slack_calls: Labeled,
    store_rows: Labeled,
    store_rows_dropped: Labeled,
    store_buffer_depth: AtomicU64,
    rules_reloads: Labeled,
    rules_loaded: AtomicU64,
    cluster_partials_published: AtomicU64,
    cluster_partial_events: Labeled,
    cluster_leader: AtomicU64,
    cluster_leaderships: AtomicU64,
    cluster_claims: Labeled,
    cluster_counts_read: Labeled,
    cluster_counts_lag_ms: AtomicU64,
}

/// A counter with one label, bounded to [`MAX_REASONS`] values (further values
/// count as `other`).
#[derive(Debug, Default)]
struct Labeled(Mutex<BTreeMap<String, u64>>);

impl Labeled {
    fn add(&self, label: &str, n: u64) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = map.get_mut(label) {
            *v += n;
        } else if map.len() < MAX_REASONS {
            map.insert(label.to_string(), n);
        } else {
            *map.entry("other".to_string()).or_insert(0) += n;
        }
    }

    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn render(&self, out: &mut String, name: &str, label: &str, help: &str) {
        header(out, name, help, "counter");
        for (v, n) in self.snapshot() {
            let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {n}", escape_label(&v));
        }
    }
}

/// Upper bounds of the store write latency buckets, seconds.
const WRITE_BUCKETS: [f64; 10] = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// A fixed-bucket latency histogram of atomics (cumulative on render).
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; WRITE_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = WRITE_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        header(out, name, help, "histogram");
        let mut cumulative = 0;
        for (b, n) in WRITE_BUCKETS.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

impl Metrics {
    /// A zeroed set.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// One event (line, element or message) arrived, before validation.
    pub fn event_received(&self) {
        self.events_received.fetch_add(1, Ordering::Relaxed);
    }

    /// One event passed validation, dedupe and lateness and was counted by the rules.
    pub fn event_accepted(&self) {
        self.events_accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// One event failed validation; `reason` is a stable
    /// [`crate::event::Rejection::reason`].
    pub fn event_rejected(&self, reason: &str) {
        // Recover from poisoning: a counter map is still meaningful after a panic elsewhere.
        let mut map = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(reason) {
            *n += 1;
        } else if map.len() < MAX_REASONS {
            map.insert(reason.to_string(), 1);
        } else {
            *map.entry("other".to_string()).or_insert(0) += 1;
        }
    }

    /// One HTTP connection was closed on accept: its client or the server was
    /// at its connection cap.
    pub fn http_connection_refused(&self) {
        self.http_connections_refused
            .fetch_add(1, Ordering::Relaxed);
    }

    /// `n` events failed validation for `reason` (see [`Metrics::event_rejected`]).
    pub fn events_rejected(&self, reason: &str, n: u64) {
        let mut map = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get_mut(reason) {
            *c += n;
        } else if map.len() < MAX_REASONS {
            map.insert(reason.to_string(), n);
        } else {
            *map.entry("other".to_string()).or_insert(0) += n;
        }
    }

    /// One event id was seen again within the dedupe horizon.
    pub fn event_duplicate(&self) {
        self.events_duplicate.fetch_add(1, Ordering::Relaxed);
    }

    /// One event arrived later than the allowed lateness.
    pub fn event_late(&self) {
        self.events_late.fetch_add(1, Ordering::Relaxed);
    }

    /// Cells held by every rule's window, now.
    pub fn set_active_cells(&self, n: u64) {
        self.active_cells.store(n, Ordering::Relaxed);
    }

    /// One anomalous element found at an evaluation step.
    pub fn detection(&self) {
        self.detections.fetch_add(1, Ordering::Relaxed);
    }

    /// One incident opened.
    pub fn incident_opened(&self) {
        self.incidents_opened.fetch_add(1, Ordering::Relaxed);
    }

    /// One incident resolved.
    pub fn incident_resolved(&self) {
        self.incidents_resolved.fetch_add(1, Ordering::Relaxed);
    }

    /// Incidents open (or acknowledged) now.
    pub fn set_open_incidents(&self, n: u64) {
        self.open_incidents.store(n, Ordering::Relaxed);
    }

    /// One notifier call failed.
    pub fn notify_failure(&self) {
        self.notify_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// One change that would have been notified was not: a silence matched, or
    /// a person had resolved the incident.
    pub fn notification_muted(&self) {
        self.notifications_muted.fetch_add(1, Ordering::Relaxed);
    }

    /// Incidents the store holds, by status; also sets the open-incidents gauge
    /// (open plus acknowledged).
    pub fn set_incidents_by_status(&self, open: u64, acknowledged: u64, resolved: u64) {
        for (slot, n) in self
            .incidents_by_status
            .iter()
            .zip([open, acknowledged, resolved])
        {
            slot.store(n, Ordering::Relaxed);
        }
        self.set_open_incidents(open + acknowledged);
    }

    /// One store write took `d`.
    pub fn store_write(&self, d: std::time::Duration) {
        self.store_writes.observe(d);
    }

    /// Messages on the NATS stream not yet delivered to faultline's consumer (lag).
    pub fn set_nats_pending(&self, n: u64) {
        self.nats_pending.store(n, Ordering::Relaxed);
    }

    /// Whether the NATS connection is up now.
    pub fn set_nats_connected(&self, up: bool) {
        self.nats_connected.store(up as u64, Ordering::Relaxed);
    }

    /// Whether the NATS connection was up at the last report.
    pub fn nats_connected(&self) -> bool {
        self.nats_connected.load(Ordering::Relaxed) == 1
    }

    /// A summary missed its deadline; the incident went out with the template.
    pub fn summary_late(&self) {
        self.summaries_late.fetch_add(1, Ordering::Relaxed);
    }

    /// One LLM request ended with `outcome` (`accepted`, `invalid`, `timeout`,
    /// `http_429`, ...) after `latency`, using the tokens the endpoint reported.
    pub fn llm_call(
        &self,
        outcome: &str,
        latency: std::time::Duration,
        prompt_tokens: u64,
        completion_tokens: u64,
    ) {
        self.llm_calls.add(outcome, 1);
        self.llm_latency.observe(latency);
        self.llm_tokens.add("prompt", prompt_tokens);
        self.llm_tokens.add("completion", completion_tokens);
    }

    /// A summary fell back to the template although an LLM is configured,
    /// for `reason` (`timeout`, `invalid`, `circuit_open`, ...).
    pub fn summary_fallback(&self, reason: &str) {
        self.summary_fallbacks.add(reason, 1);
    }

    /// One Slack Web API call ended with `status` (`ok`, `rate_limited`,
    /// `error`, `unavailable`).
    pub fn slack_call(&self, status: &str) {
        self.slack_calls.add(status, 1);
    }

    /// `n` rows were written to the store's `table`.
    pub fn store_rows(&self, table: &str, n: u64) {
        self.store_rows.add(table, n);
    }

    /// `n` rows for `table` were dropped because the write buffer was full.
    pub fn store_rows_dropped(&self, table: &str, n: u64) {
        self.store_rows_dropped.add(table, n);
    }

    /// Rows waiting in the store's write buffer now.
    pub fn set_store_buffer_depth(&self, n: u64) {
        self.store_buffer_depth.store(n, Ordering::Relaxed);
    }

    /// A rules reload ended with `result` (`ok` or `error`).
    pub fn rules_reload(&self, result: &str) {
        self.rules_reloads.add(result, 1);
    }

    /// Rules reloads so far, by result.
    pub fn rules_reloads(&self) -> BTreeMap<String, u64> {
        self.rules_reloads.snapshot()
    }

    /// Rules in force now.
    pub fn set_rules_loaded(&self, n: u64) {
        self.rules_loaded.store(n, Ordering::Relaxed);
    }

    /// A replica published one partial message.
    pub fn partial_published(&self) {
        self.cluster_partials_published
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The detector counted replicas' partials: events counted, events in
    /// steps already evaluated, cells of rules it defines differently.
    pub fn partial_fed(&self, accepted: u64, late: u64, mismatched: u64) {
        for (what, n) in [
            ("counted", accepted),
            ("late", late),
            ("mismatched_cells", mismatched),
        ] {
            if n > 0 {
                self.cluster_partial_events.add(what, n);
            }
        }
    }

    /// On the detector: one counts message read, by what became of it
    /// (`fed`, `repeat`, `gap`, `other_version`, `unreadable`).
    pub fn counts_read(&self, what: &str) {
        self.cluster_counts_read.add(what, 1);
    }

    /// On the detector: how far its clock (the slowest live replica's last
    /// flush) is behind the wall clock.
    pub fn set_counts_lag(&self, lag: std::time::Duration) {
        self.cluster_counts_lag_ms
            .store(lag.as_millis() as u64, Ordering::Relaxed);
    }

    /// Whether this replica holds the detector lease now.
    pub fn set_cluster_leader(&self, leader: bool) {
        self.cluster_leader.store(leader as u64, Ordering::Relaxed);
        if leader {
            self.cluster_leaderships.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One notification claim, by result: `won`, `quiet` (told or being
    /// told by another term), `taken_over`, `adopted`, `unavailable`.
    pub fn cluster_claim(&self, result: &str) {
        self.cluster_claims.add(result, 1);
    }

    /// Notification claims so far, by result.
    pub fn cluster_claims(&self) -> BTreeMap<String, u64> {
        self.cluster_claims.snapshot()
    }

    /// LLM requests so far, by outcome.
    pub fn llm_calls(&self) -> BTreeMap<String, u64> {
        self.llm_calls.snapshot()
    }

    /// Template fallbacks so far, by reason.
    pub fn summary_fallbacks(&self) -> BTreeMap<String, u64> {
        self.summary_fallbacks.snapshot()
    }

    /// Slack calls so far, by status.
    pub fn slack_calls(&self) -> BTreeMap<String, u64> {
        self.slack_calls.snapshot()
    }

    /// Rows dropped by the store so far, by table.
    pub fn store_dropped(&self) -> BTreeMap<String, u64> {
        self.store_rows_dropped.snapshot()
    }

    /// Events received so far.
    pub fn received(&self) -> u64 {
        self.events_received.load(Ordering::Relaxed)
    }

    /// Events accepted so far.
    pub fn accepted(&self) -> u64 {
        self.events_accepted.load(Ordering::Relaxed)
    }

    /// Rejections so far, by reason.
    pub fn rejections(&self) -> BTreeMap<String, u64> {
        self.rejected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Everything in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut out,
            "faultline_events_received_total",
            "Events received, before validation.",
            get(&self.events_received),
        );
        counter(
            &mut out,
            "faultline_http_connections_refused_total",
            "HTTP connections closed on accept because a connection cap (total or per client) was reached.",
            get(&self.http_connections_refused),
        );
        counter(
            &mut out,
            "faultline_events_accepted_total",
            "Events that passed validation, dedupe and lateness and were counted by the rules.",
            get(&self.events_accepted),
        );
        header(
            &mut out,
            "faultline_events_rejected_total",
            "Events that failed validation, by reason.",
            "counter",
        );
        for (reason, n) in self.rejections() {
            let _ = writeln!(
                out,
                "faultline_events_rejected_total{{reason=\"{}\"}} {n}",
                escape_label(&reason)
            );
        }
        counter(
            &mut out,
            "faultline_events_duplicate_total",
            "Events whose id was seen again within the dedupe horizon.",
            get(&self.events_duplicate),
        );
        counter(
            &mut out,
            "faultline_events_late_total",
            "Events that arrived later than the allowed lateness.",
            get(&self.events_late),
        );
        gauge(
            &mut out,
            "faultline_active_cells",
            "Window cells held across every rule.",
            get(&self.active_cells),
        );
        counter(
            &mut out,
            "faultline_detections_total",
            "Anomalous elements found at evaluation steps.",
            get(&self.detections),
        );
        counter(
            &mut out,
            "faultline_incidents_opened_total",
            "Incidents opened.",
            get(&self.incidents_opened),
        );
        counter(
            &mut out,
            "faultline_incidents_resolved_total",
            "Incidents resolved.",
            get(&self.incidents_resolved),
        );
        gauge(
            &mut out,
            "faultline_open_incidents",
            "Incidents open or acknowledged now.",
            get(&self.open_incidents),
        );
        counter(
            &mut out,
            "faultline_notify_failures_total",
            "Notifier calls that failed.",
            get(&self.notify_failures),
        );
        counter(
            &mut out,
            "faultline_notifications_muted_total",
            "Changes not notified because a silence matched or a person had resolved the incident.",
            get(&self.notifications_muted),
        );
        header(
            &mut out,
            "faultline_incidents",
            "Incidents held by the store, by status (as of the scrape).",
            "gauge",
        );
        for (status, n) in ["open", "acknowledged", "resolved"]
            .iter()
            .zip(&self.incidents_by_status)
        {
            let _ = writeln!(out, "faultline_incidents{{status=\"{status}\"}} {}", get(n));
        }
        self.store_writes.render(
            &mut out,
            "faultline_store_write_seconds",
            "Latency of incident writes to the store.",
        );
        gauge(
            &mut out,
            "faultline_nats_consumer_pending",
            "Messages on the NATS stream not yet delivered to the faultline consumer.",
            get(&self.nats_pending),
        );
        gauge(
            &mut out,
            "faultline_nats_connected",
            "1 while the NATS connection is up.",
            get(&self.nats_connected),
        );
        counter(
            &mut out,
            "faultline_summaries_late_total",
            "Incidents posted with the template because the summarizer missed its deadline.",
            get(&self.summaries_late),
        );
        self.llm_calls.render(
            &mut out,
            "faultline_llm_calls_total",
            "outcome",
            "LLM requests, by outcome.",
        );
        self.llm_latency.render(
            &mut out,
            "faultline_llm_call_seconds",
            "Latency of LLM requests.",
        );
        self.llm_tokens.render(
            &mut out,
            "faultline_llm_tokens_total",
            "kind",
            "Tokens the LLM endpoint reported, prompt and completion.",
        );
        self.summary_fallbacks.render(
            &mut out,
            "faultline_summary_fallbacks_total",
            "reason",
            "Summaries written by the template although an LLM is configured, by reason.",
        );
        self.slack_calls.render(
            &mut out,
            "faultline_slack_calls_total",
            "status",
            "Slack Web API calls, by status.",
        );
        self.store_rows.render(
            &mut out,
            "faultline_store_rows_total",
            "table",
            "Rows written to the store, by table.",
        );
        self.store_rows_dropped.render(
            &mut out,
            "faultline_store_rows_dropped_total",
            "table",
            "Rows dropped because the store's write buffer was full, by table.",
        );
        gauge(
            &mut out,
            "faultline_store_buffer_rows",
            "Rows waiting in the store's write buffer.",
            get(&self.store_buffer_depth),
        );
        self.rules_reloads.render(
            &mut out,
            "faultline_rules_reloads_total",
            "result",
            "Rules reloads (SIGHUP, file change, API), by result: ok, or error (old rules kept).",
        );
        gauge(
            &mut out,
            "faultline_rules_loaded",
            "Rules in force.",
            get(&self.rules_loaded),
        );
        counter(
            &mut out,
            "faultline_cluster_partials_published_total",
            "Partial-count messages this replica published on the partials stream.",
            get(&self.cluster_partials_published),
        );
        self.cluster_partial_events.render(
            &mut out,
            "faultline_cluster_partial_events_total",
            "what",
            "On the detector: events in replicas' partials, by what became of them.",
        );
        gauge(
            &mut out,
            "faultline_cluster_leader",
            "1 while this replica holds the detector lease.",
            get(&self.cluster_leader),
        );
        counter(
            &mut out,
            "faultline_cluster_leaderships_total",
            "Times this replica took the detector lease.",
            get(&self.cluster_leaderships),
        );
        self.cluster_claims.render(
            &mut out,
            "faultline_cluster_claims_total",
            "result",
            "Notification claims in the KV ledger, by result.",
        );
        self.cluster_counts_read.render(
            &mut out,
            "faultline_cluster_counts_read_total",
            "what",
            "On the detector: counts messages read from the partials stream, by what became of them.",
        );
        header(
            &mut out,
            "faultline_cluster_counts_lag_seconds",
            "On the detector: how far the slowest live replica's last flush is behind the wall clock.",
            "gauge",
        );
        let _ = writeln!(
            out,
            "faultline_cluster_counts_lag_seconds {}",
            get(&self.cluster_counts_lag_ms) as f64 / 1000.0
        );
        out
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, help, "counter");
    let _ = writeln!(out, "{name} {value}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, help, "gauge");
    let _ = writeln!(out, "{name} {value}");
}

/// Label values escape backslash, double quote and newline.
fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.event_received();
        m.event_received();
        m.event_accepted();
        m.event_rejected("invalid_ts");
        m.event_rejected("invalid_ts");
        m.event_rejected("missing_id");
        m.set_active_cells(42);
        m.set_open_incidents(3);
        m.incident_opened();
        m.notify_failure();
        m.notification_muted();
        m.set_incidents_by_status(1, 2, 5);
        m.store_write(std::time::Duration::from_micros(300));
        let text = m.render();

        assert!(text.contains(
            "# TYPE faultline_events_received_total counter\nfaultline_events_received_total 2\n"
        ));
        assert!(text.contains("faultline_events_accepted_total 1\n"));
        assert!(text.contains("faultline_events_rejected_total{reason=\"invalid_ts\"} 2\n"));
        assert!(text.contains("faultline_events_rejected_total{reason=\"missing_id\"} 1\n"));
        assert!(text.contains("# TYPE faultline_active_cells gauge\nfaultline_active_cells 42\n"));
        assert!(text.contains("faultline_open_incidents 3\n"));
        assert!(text.contains("faultline_incidents{status=\"acknowledged\"} 2\n"));
        assert!(text.contains("faultline_incidents{status=\"resolved\"} 5\n"));
        assert!(text.contains("faultline_notifications_muted_total 1\n"));
        assert!(text.contains("faultline_store_write_seconds_bucket{le=\"0.0001\"} 0\n"));
        assert!(text.contains("faultline_store_write_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("faultline_store_write_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(text.contains("faultline_store_write_seconds_count 1\n"));
        assert!(text.contains("faultline_incidents_opened_total 1\n"));
        assert!(text.contains("faultline_notify_failures_total 1\n"));

        // Every family has HELP then TYPE, every sample line belongs to the
        // family announced last, and every name carries the prefix.
        let mut family = String::new();
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                family = rest.split(' ').next().unwrap().to_string();
                assert!(family.starts_with("faultline_"), "{line}");
                let next = lines.next().unwrap();
                assert!(next.starts_with(&format!("# TYPE {family} ")), "{next}");
                let kind = next.rsplit(' ').next().unwrap();
                assert!(
                    kind == "counter" || kind == "gauge" || kind == "histogram",
                    "{next}"
                );
                if kind == "counter" {
                    assert!(family.ends_with("_total"), "{family}");
                }
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|b| *b == family))
                    .unwrap_or(name);
                assert_eq!(base, family, "{line}");
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok(), "{line}");
            }
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn reasons_are_bounded_and_escaped() {
        let m = Metrics::new();
        for i in 0..100 {
            m.event_rejected(&format!("r{i}"));
        }
        m.event_rejected("a\"b");
        let r = m.rejections();
        assert_eq!(r.len(), MAX_REASONS + 1);
        assert_eq!(r["other"], 100 - MAX_REASONS as u64 + 1);
        assert_eq!(escape_label("a\"b\\c\n"), "a\\\"b\\\\c\\n");
    }
}
