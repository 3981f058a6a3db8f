//! The ClickHouse store: incidents, their history, silences, raw events,
//! per-step cell aggregates and audit rows, kept in ClickHouse.
//!
//! # Design
//!
//! - **Writes never wait for ClickHouse.** Every row goes to a bounded
//!   per-table [`buffer`] that a flusher task sends in batches (RowBinary over
//!   HTTP, LZ4). When ClickHouse is slow or down the pipeline keeps detecting
//!   and notifying; rows wait, are retried with backoff, and past
//!   `clickhouse.buffer_rows` per table new rows are dropped and counted
//!   (`faultline_store_rows_dropped_total`).
//! - **A write-through cache decides.** The rules that merge a person's word
//!   with the engine's (see [`crate::store`]) are the [`MemoryStore`]'s: this
//!   store applies every change to an embedded `MemoryStore` first, then writes
//!   the resulting state as rows. So it behaves exactly like the memory store,
//!   reads of recent incidents (`get`, `mute`, silences, counts) are answered
//!   at once and stay answered while ClickHouse is down, and the pipeline reads
//!   its own writes. At start the cache is loaded from ClickHouse (open
//!   incidents, the newest resolved ones with their timelines and series,
//!   people's acks and resolves, silences), so all of that survives a restart.
//! - **Listing reads ClickHouse.** `GET /incidents` runs its filters and
//!   cursor in SQL over `incidents FINAL`, so it sees every incident kept, not
//!   only the cached ones; rows still buffered show up within
//!   `clickhouse.flush_interval`. When ClickHouse does not answer, the listing
//!   is served from the cache (recent incidents only) and a warning is logged,
//!   rather than failing the API. `get` of an incident not in the cache reads
//!   ClickHouse and answers [`StoreError::Unavailable`] (503) when it is down.
//! - **Updates are inserts.** `incidents` and `silences` are
//!   `ReplacingMergeTree(version)` read with `FINAL`: an ack or resolve is a new
//!   row with a higher version. Timeline and series rows carry a sequence
//!   number in their sorting key, so a retried INSERT collapses too.
//! - **Replays.** With NATS, a restart replays the stream to rebuild the
//!   windows: the same events reach the engine again. While the replay runs,
//!   events at or before the newest event time already stored are not written
//!   again; and `events` is a `ReplacingMergeTree` keyed on the id, so any
//!   that slip through collapse on merge. The engine's cell aggregates and
//!   incident rows of a replay replace the earlier ones the same way.
//! - **Start.** The database, `schema_version` and the tables are created when
//!   missing and migrated forward ([`schema`]). An unreachable server at start
//!   is an error naming the problem (the daemon does not start half
//!   persistent); once running, outages are ridden out as above.
//! - **Retention** drops daily partitions older than
//!   `clickhouse.retention_days.*` once at start and then hourly: no `TTL`, so
//!   it works on 18.16 and current releases alike.
//! - **Card data** never reaches a row: events are redacted on arrival and
//!   their free text is scanned again here; every other free-text column passes
//!   [`crate::redact::redact_all`].

mod buffer;
mod rows;
pub mod schema;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, Utc};
use clickhouse::Client;
use secrecy::ExposeSecret;

use self::buffer::{flush_loop, Buffer, Depth};
use self::rows::{
    secs, CellStepRow, EventRow, IncidentRow, LlmCallRow, SeriesRow, SilenceRow, SlackCallRow,
    TimelineRow,
};
use super::{
    Action, IncidentPage, IncidentQuery, IncidentRecord, MemoryLimits, MemoryStore, Mute, Silence,
    StatusCounts, Store, StoreError,
};
use crate::audit::{Audit, Record};
use crate::config::ClickHouseSettings;
use crate::engine::CellStep;
use crate::event::{Event, Outcome};
use crate::incident::{Incident, SeriesPoint, TimelineEntry};
use crate::metrics::Metrics;
use crate::pipeline::EngineTap;

/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Strictly increasing numbers from the wall clock (microseconds): versions of
/// replacing rows and the order of timeline and series rows, across restarts.
#[derive(Debug, Default)]
struct Seq(AtomicU64);

impl Seq {
    fn next(&self) -> u64 {
        let now = Utc::now().timestamp_micros().max(0) as u64;
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let want = now.max(cur + 1);
            match self
                .0
                .compare_exchange_weak(cur, want, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return want,
                Err(seen) => cur = seen,
            }
        }
    }
}

struct Buffers {
    incidents: Arc<Buffer<IncidentRow>>,
    timeline: Arc<Buffer<TimelineRow>>,
    series: Arc<Buffer<SeriesRow>>,
    silences: Arc<Buffer<SilenceRow>>,
    events: Arc<Buffer<EventRow>>,
    steps: Arc<Buffer<CellStepRow>>,
    llm: Arc<Buffer<LlmCallRow>>,
    slack: Arc<Buffer<SlackCallRow>>,
}

impl Buffers {
    fn wake_all(&self) {
        self.incidents.wake();
        self.timeline.wake();
        self.series.wake();
        self.silences.wake();
        self.events.wake();
        self.steps.wake();
        self.llm.wake();
        self.slack.wake();
    }
}

/// Incidents, events and audit rows in ClickHouse; see the module docs.
pub struct ClickHouseStore {
    client: Client,
    db: String,
    cache: MemoryStore,
    seq: Seq,
    bufs: Buffers,
    depth: Arc<Depth>,
    store_events: bool,
    success_sample: u32,
    /// Replayed events at or before this event time were stored by an earlier run.
    stored_until_ms: i64,
    retention: Vec<(&'static str, u32)>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    schema_version: u32,
}

fn unavailable(what: &str, e: clickhouse::error::Error) -> StoreError {
    StoreError::Unavailable(format!("ClickHouse {what}: {e}"))
}

/// A client for `settings`, without a database (it may not exist yet).
/// Validation is off: 18.16 does not know what the crate would ask it.
fn root_client(settings: &ClickHouseSettings) -> Client {
    Client::default()
        .with_url(settings.url.clone().unwrap_or_default())
        .with_user(settings.user.clone())
        .with_password(settings.password.expose_secret().to_string())
        .with_validation(false)
}

/// Reads the events recorded with event time in `[from_ms, to_ms)`, in event
/// time order, handing them to `sink` in batches until it returns false
/// (`faultline backtest --clickhouse`). A sampled success comes back as the
/// events it stood for ([`EventRow::into_events`]). Returns the events read.
pub async fn read_events(
    settings: &ClickHouseSettings,
    from_ms: i64,
    to_ms: i64,
    mut sink: impl FnMut(Vec<Event>) -> bool,
) -> Result<u64, StoreError> {
    const BATCH: usize = 4096;
    let client = root_client(settings).with_database(settings.database.clone());
    // `ts` (seconds) narrows the partitions and the primary key; `ts_ms` is exact.
    let mut cursor = client
        .query(
            "SELECT ?fields FROM events \
             WHERE ts >= toDateTime(?) AND ts <= toDateTime(?) AND ts_ms >= ? AND ts_ms < ? \
             ORDER BY ts_ms, id",
        )
        .bind(secs(from_ms))
        .bind(secs(to_ms))
        .bind(from_ms)
        .bind(to_ms)
        .fetch::<EventRow>()
        .map_err(|e| unavailable("reading events", e))?;
    let mut batch = Vec::with_capacity(BATCH);
    let mut read = 0u64;
    while let Some(row) = cursor
        .next()
        .await
        .map_err(|e| unavailable("reading events", e))?
    {
        let Some(events) = row.into_events() else {
            continue;
        };
        for e in events {
            read += 1;
            batch.push(e);
        }
        if batch.len() >= BATCH && !sink(std::mem::replace(&mut batch, Vec::with_capacity(BATCH))) {
            return Ok(read);
        }
    }
    if !batch.is_empty() {
        sink(batch);
    }
    Ok(read)
}

impl ClickHouseStore {
    /// Connects, creates or migrates the schema, loads the cache and starts the
    /// flushers and retention. Must run inside a tokio runtime.
    pub async fn connect(
        settings: &ClickHouseSettings,
        limits: MemoryLimits,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<ClickHouseStore>, StoreError> {
        let db = settings.database.clone();
        let root = root_client(settings);
        let schema_version = schema::migrate(&root, &db).await?;
        let client = root.with_database(db.clone());
        let depth = Arc::new(Depth::default());
        let (bound, batch) = (settings.buffer_rows, settings.batch_rows);
        macro_rules! buf {
            ($t:literal) => {
                Arc::new(Buffer::new(
                    $t,
                    bound,
                    batch,
                    depth.clone(),
                    metrics.clone(),
                ))
            };
        }
        let bufs = Buffers {
            incidents: buf!("incidents"),
            timeline: buf!("incident_timeline"),
            series: buf!("incident_series"),
            silences: buf!("silences"),
            events: buf!("events"),
            steps: buf!("cell_steps"),
            llm: buf!("audit_llm_calls"),
            slack: buf!("audit_slack_calls"),
        };
        let stored_until_ms = client
            .query("SELECT max(ts_ms) FROM events")
            .fetch_one::<i64>()
            .await
            .map_err(|e| unavailable("reading events", e))?;
        let r = &settings.retention_days;
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let store = Arc::new(ClickHouseStore {
            client: client.clone(),
            db,
            cache: MemoryStore::new(limits),
            seq: Seq::default(),
            bufs,
            depth,
            store_events: settings.store_events,
            success_sample: settings.success_sample.max(1),
            stored_until_ms,
            retention: vec![
                ("events", r.events),
                ("aggregates", r.aggregates),
                ("incidents", r.incidents),
                ("audit", r.audit),
            ],
            stop,
            tasks: Mutex::new(Vec::new()),
            schema_version,
        });
        store.load(limits).await?;
        let interval = settings.flush_interval.0;
        let mut tasks = Vec::new();
        macro_rules! flusher {
            ($b:ident) => {
                tasks.push(tokio::spawn(flush_loop(
                    store.bufs.$b.clone(),
                    client.clone(),
                    interval,
                    stop_rx.clone(),
                )))
            };
        }
        flusher!(incidents);
        flusher!(timeline);
        flusher!(series);
        flusher!(silences);
        flusher!(events);
        flusher!(steps);
        flusher!(llm);
        flusher!(slack);
        let weak = Arc::downgrade(&store);
        let mut stop_ret = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(s) = weak.upgrade() else { return };
                if let Err(e) = s.apply_retention(Utc::now()).await {
                    tracing::warn!(error = %e, "ClickHouse retention failed; retrying later");
                }
                drop(s);
                tokio::select! {
                    _ = tokio::time::sleep(RETENTION_EVERY) => {}
                    _ = stop_ret.changed() => return,
                }
            }
        }));
        *store.tasks.lock().unwrap_or_else(|p| p.into_inner()) = tasks;
        tracing::info!(
            database = %store.db,
            schema_version,
            "ClickHouse store ready"
        );
        Ok(store)
    }

    /// The schema version in place.
    pub fn schema_version(&self) -> u32 {
        self.schema_version
    }

    /// Rows buffered now, across tables.
    pub fn buffered(&self) -> u64 {
        self.depth.get()
    }

    /// Rows dropped so far because a buffer was full, by table.
    pub fn dropped(&self) -> HashMap<&'static str, u64> {
        let b = &self.bufs;
        [
            (b.incidents.table, b.incidents.dropped()),
            (b.timeline.table, b.timeline.dropped()),
            (b.series.table, b.series.dropped()),
            (b.silences.table, b.silences.dropped()),
            (b.events.table, b.events.dropped()),
            (b.steps.table, b.steps.dropped()),
            (b.llm.table, b.llm.dropped()),
            (b.slack.table, b.slack.dropped()),
        ]
        .into_iter()
        .collect()
    }

    /// Asks every flusher to send now and waits until nothing is buffered;
    /// false when `timeout` passed first.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.depth.get() == 0 {
                return true;
            }
            self.bufs.wake_all();
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Flushes what is buffered (within `timeout`) and stops the tasks. Rows
    /// still buffered at the deadline are lost and logged.
    pub async fn shutdown(&self, timeout: Duration) {
        let flushed = self.flush(timeout).await;
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            t.abort();
        }
        if !flushed {
            tracing::error!(
                rows = self.depth.get(),
                "ClickHouse did not take every buffered row before shutdown"
            );
        }
    }

    /// This store as the sink of LLM and Slack audit records.
    pub fn audit(self: &Arc<Self>) -> Arc<dyn Audit> {
        self.clone()
    }

    /// This store as the engine's tap for events and cell aggregates.
    pub fn tap(self: &Arc<Self>) -> Arc<dyn EngineTap> {
        self.clone()
    }

    /// The client, bound to the store's database (tests, benchmarks).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Drops daily partitions older than each table's retention at `now`;
    /// returns how many were dropped.
    pub async fn apply_retention(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut dropped = 0;
        for (family, days) in &self.retention {
            if *days == 0 {
                continue;
            }
            let cutoff = now - chrono::Duration::days(i64::from(*days));
            let cutoff = cutoff.year() as u32 * 10_000 + cutoff.month() * 100 + cutoff.day();
            let tables = schema::RETENTION_FAMILIES
                .iter()
                .find(|(f, _)| f == family)
                .map(|(_, t)| *t)
                .unwrap_or(&[]);
            for table in tables {
                let parts: Vec<String> = self
                    .client
                    .query(
                        "SELECT DISTINCT partition FROM system.parts \
                         WHERE database = ? AND table = ? AND active",
                    )
                    .bind(&self.db)
                    .bind(*table)
                    .fetch_all()
                    .await
                    .map_err(|e| unavailable("listing partitions", e))?;
                for p in parts {
                    // Partitions are toYYYYMMDD numbers; anything else is not ours.
                    let Ok(day) = p.trim_matches('\'').parse::<u32>() else {
                        continue;
                    };
                    if day < cutoff {
                        self.client
                            .query(&format!(
                                "ALTER TABLE {}.{table} DROP PARTITION {day}",
                                self.db
                            ))
                            .execute()
                            .await
                            .map_err(|e| unavailable("dropping a partition", e))?;
                        tracing::info!(table, partition = day, "retention: partition dropped");
                        dropped += 1;
                    }
                }
            }
        }
        Ok(dropped)
    }

    /// Loads open incidents, the newest resolved ones (as many as the cache
    /// keeps) with their history, and live silences.
    async fn load(&self, limits: MemoryLimits) -> Result<(), StoreError> {
        let sql = format!(
            "SELECT ?fields FROM incidents FINAL WHERE status != 'resolved' \
             UNION ALL \
             SELECT ?fields FROM (SELECT * FROM incidents FINAL WHERE status = 'resolved' \
             ORDER BY updated_at_ms DESC LIMIT {})",
            limits.max_resolved
        );
        let rows: Vec<IncidentRow> = self
            .client
            .query(&sql)
            .with_setting("optimize_move_to_prewhere", "0")
            .fetch_all()
            .await
            .map_err(|e| unavailable("loading incidents", e))?;
        if !rows.is_empty() {
            let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
            let mut timelines: HashMap<String, Vec<TimelineEntry>> = HashMap::new();
            let tl: Vec<TimelineRow> = self
                .client
                .query(
                    "SELECT ?fields FROM incident_timeline FINAL \
                     WHERE has(?, incident_id) ORDER BY incident_id, seq",
                )
                .bind(&ids)
                .fetch_all()
                .await
                .map_err(|e| unavailable("loading timelines", e))?;
            for r in tl {
                timelines
                    .entry(r.incident_id.clone())
                    .or_default()
                    .push(r.into_entry());
            }
            let mut series: HashMap<String, Vec<SeriesPoint>> = HashMap::new();
            let sr: Vec<SeriesRow> = self
                .client
                .query(
                    "SELECT ?fields FROM incident_series FINAL \
                     WHERE has(?, incident_id) ORDER BY incident_id, seq",
                )
                .bind(&ids)
                .fetch_all()
                .await
                .map_err(|e| unavailable("loading series", e))?;
            for r in sr {
                series
                    .entry(r.incident_id.clone())
                    .or_default()
                    .push(r.into_point());
            }
            // Oldest first, so the cache's eviction keeps the newest.
            let mut incidents: Vec<_> = rows.into_iter().map(IncidentRow::into_incident).collect();
            incidents.sort_by_key(|(i, _)| (i.resolved_at.is_none(), i.updated_at));
            let n = incidents.len();
            for (inc, human) in incidents {
                let id = inc.id.clone();
                self.cache.restore(
                    IncidentRecord {
                        incident: inc,
                        timeline: timelines.remove(&id).unwrap_or_default(),
                        series: series.remove(&id).unwrap_or_default(),
                    },
                    human,
                );
            }
            tracing::info!(incidents = n, "incidents loaded from ClickHouse");
        }
        let now = Utc::now().timestamp_millis();
        let sil: Vec<SilenceRow> = self
            .client
            .query("SELECT ?fields FROM silences FINAL WHERE deleted = 0 AND ends_at_ms > ?")
            .with_setting("optimize_move_to_prewhere", "0")
            .bind(now)
            .fetch_all()
            .await
            .map_err(|e| unavailable("loading silences", e))?;
        for s in sil.into_iter().filter_map(SilenceRow::into_silence) {
            // Bounded like the memory store's; an excess is logged, not fatal.
            if let Err(e) = self.cache.add_silence(s).await {
                tracing::warn!(error = %e, "silence not loaded");
            }
        }
        Ok(())
    }

    /// Queues the current cached state of `id` as a new incident row.
    fn write_incident(&self, id: &str) {
        if let Some(inc) = self.cache.incident(id) {
            let human = self.cache.human_status(id);
            self.bufs
                .incidents
                .push(IncidentRow::new(&inc, human, self.seq.next()));
        }
    }

    fn write_timeline(&self, id: &str, entries: &[TimelineEntry]) {
        if !entries.is_empty() {
            self.bufs.timeline.push_all(
                entries
                    .iter()
                    .map(|e| TimelineRow::new(id, e, self.seq.next())),
            );
        }
    }

    async fn get_from_clickhouse(&self, id: &str) -> Result<Option<IncidentRecord>, StoreError> {
        let row: Option<IncidentRow> = self
            .client
            .query("SELECT ?fields FROM incidents FINAL WHERE id = ?")
            .bind(id)
            .fetch_optional()
            .await
            .map_err(|e| unavailable("reading an incident", e))?;
        let Some(row) = row else { return Ok(None) };
        let (incident, human) = row.into_incident();
        let timeline: Vec<TimelineRow> = self
            .client
            .query("SELECT ?fields FROM incident_timeline FINAL WHERE incident_id = ? ORDER BY seq")
            .bind(id)
            .fetch_all()
            .await
            .map_err(|e| unavailable("reading a timeline", e))?;
        let series: Vec<SeriesRow> = self
            .client
            .query("SELECT ?fields FROM incident_series FINAL WHERE incident_id = ? ORDER BY seq")
            .bind(id)
            .fetch_all()
            .await
            .map_err(|e| unavailable("reading a series", e))?;
        let rec = IncidentRecord {
            incident,
            timeline: timeline.into_iter().map(TimelineRow::into_entry).collect(),
            series: series.into_iter().map(SeriesRow::into_point).collect(),
        };
        // Keep it: a person acting on it next works on the full record.
        self.cache.restore(rec.clone(), human);
        Ok(Some(rec))
    }

    async fn list_from_clickhouse(
        &self,
        query: &IncidentQuery,
    ) -> Result<IncidentPage, StoreError> {
        let f = query.parse()?;
        let mut sql = String::from("SELECT ?fields FROM incidents FINAL WHERE 1");
        if f.status.is_some() {
            sql.push_str(" AND status = ?");
        }
        if f.rule.is_some() {
            sql.push_str(" AND rule = ?");
        }
        if f.severity.is_some() {
            sql.push_str(" AND severity = ?");
        }
        if f.kind.is_some() {
            sql.push_str(" AND kind = ?");
        }
        for _ in &f.dims {
            sql.push_str(" AND has(cause_dims, ?)");
        }
        if f.since.is_some() {
            sql.push_str(" AND opened_at_ms >= ?");
        }
        if f.until.is_some() {
            sql.push_str(" AND opened_at_ms < ?");
        }
        if f.after.is_some() {
            sql.push_str(" AND (opened_at_ms < ? OR (opened_at_ms = ? AND id < ?))");
        }
        sql.push_str(&format!(
            " ORDER BY opened_at_ms DESC, id DESC LIMIT {}",
            f.limit + 1
        ));
        let mut q = self
            .client
            .query(&sql)
            .with_setting("optimize_move_to_prewhere", "0");
        if let Some(s) = f.status {
            q = q.bind(s.as_str());
        }
        if let Some(r) = &f.rule {
            q = q.bind(r.as_str());
        }
        if let Some(s) = f.severity {
            q = q.bind(rows_name(&s));
        }
        if let Some(k) = &f.kind {
            q = q.bind(k.as_str());
        }
        for (k, v) in &f.dims {
            q = q.bind(format!("{k}={v}"));
        }
        if let Some(t) = f.since {
            q = q.bind(ceil_ms(t));
        }
        if let Some(t) = f.until {
            q = q.bind(ceil_ms(t));
        }
        if let Some(c) = &f.after {
            // (opened, id) < (c.opened, c.id) with opened in whole ms.
            let exact = c.opened_at.timestamp_subsec_nanos() % 1_000_000 == 0;
            let ms = ceil_ms(c.opened_at);
            q = q
                .bind(ms)
                .bind(if exact { ms } else { i64::MIN })
                .bind(c.id.as_str());
        }
        let rows: Vec<IncidentRow> = q
            .fetch_all()
            .await
            .map_err(|e| unavailable("listing incidents", e))?;
        let more = rows.len() > f.limit;
        let incidents: Vec<Incident> = rows
            .into_iter()
            .take(f.limit)
            .map(|r| r.into_incident().0)
            .collect();
        Ok(IncidentPage::new(incidents, more))
    }
}

/// The smallest whole millisecond at or after `t`.
fn ceil_ms(t: DateTime<Utc>) -> i64 {
    let ms = t.timestamp_millis();
    if t.timestamp_subsec_nanos() % 1_000_000 == 0 {
        ms
    } else {
        ms + 1
    }
}

fn rows_name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

#[async_trait]
impl Store for ClickHouseStore {
    async fn upsert(
        &self,
        incident: &Incident,
        timeline: &[TimelineEntry],
        points: &[SeriesPoint],
    ) -> Result<(), StoreError> {
        self.cache.upsert(incident, timeline, points).await?;
        self.write_incident(&incident.id);
        self.write_timeline(&incident.id, timeline);
        for p in points {
            self.bufs
                .series
                .push(SeriesRow::new(&incident.id, p, self.seq.next()));
        }
        Ok(())
    }

    async fn append_timeline(
        &self,
        id: &str,
        entries: &[TimelineEntry],
    ) -> Result<bool, StoreError> {
        if !self.cache.append_timeline(id, entries).await? {
            return Ok(false);
        }
        self.write_timeline(id, entries);
        Ok(true)
    }

    async fn list(&self, query: &IncidentQuery) -> Result<IncidentPage, StoreError> {
        match self.list_from_clickhouse(query).await {
            Ok(page) => Ok(page),
            Err(StoreError::Unavailable(e)) => {
                tracing::warn!(error = %e, "listing from the cache of recent incidents");
                self.cache.list(query).await
            }
            Err(e) => Err(e),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<IncidentRecord>, StoreError> {
        if let Some(rec) = self.cache.get(id).await? {
            return Ok(Some(rec));
        }
        self.get_from_clickhouse(id).await
    }

    async fn act(
        &self,
        id: &str,
        action: Action,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<IncidentRecord>, StoreError> {
        if self.cache.incident(id).is_none() && self.get_from_clickhouse(id).await?.is_none() {
            return Ok(None);
        }
        let before = self.cache.incident(id).map(|i| i.status);
        let rec = self.cache.act(id, action, by, at).await?;
        if let Some(rec) = &rec {
            // A repeated action changes nothing and writes nothing.
            if before != Some(rec.incident.status) {
                self.write_incident(id);
                if let Some(e) = rec.timeline.last() {
                    self.write_timeline(id, std::slice::from_ref(e));
                }
            }
        }
        Ok(rec)
    }

    async fn mute(
        &self,
        incident: &Incident,
        now: DateTime<Utc>,
    ) -> Result<Option<Mute>, StoreError> {
        self.cache.mute(incident, now).await
    }

    async fn add_silence(&self, silence: Silence) -> Result<(), StoreError> {
        let row = SilenceRow::new(&silence, false, self.seq.next());
        self.cache.add_silence(silence).await?;
        self.bufs.silences.push(row);
        Ok(())
    }

    async fn silences(&self, now: DateTime<Utc>) -> Result<Vec<Silence>, StoreError> {
        self.cache.silences(now).await
    }

    async fn delete_silence(&self, id: &str) -> Result<bool, StoreError> {
        let held = self
            .cache
            .silences(DateTime::<Utc>::MIN_UTC)
            .await?
            .into_iter()
            .find(|s| s.id == id);
        if !self.cache.delete_silence(id).await? {
            return Ok(false);
        }
        if let Some(s) = held {
            self.bufs
                .silences
                .push(SilenceRow::new(&s, true, self.seq.next()));
        }
        Ok(true)
    }

    async fn status_counts(&self) -> Result<StatusCounts, StoreError> {
        self.cache.status_counts().await
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.client
            .query("SELECT 1")
            .fetch_one::<u8>()
            .await
            .map(|_| ())
            .map_err(|e| unavailable("health check", e))
    }
}

impl Audit for ClickHouseStore {
    fn record(&self, record: Record) {
        match &record {
            Record::LlmCall(c) => self.bufs.llm.push(LlmCallRow::from(c)),
            Record::SlackPost(p) => self.bufs.slack.push(SlackCallRow::from(p)),
        }
    }
}

/// FNV-1a: a stable hash of the id, so sampling keeps the same events on replay.
fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl EngineTap for ClickHouseStore {
    fn events(&self, events: &[Event], replaying: bool) {
        if !self.store_events {
            return;
        }
        let now = rows::secs(Utc::now().timestamp_millis());
        let sample = u64::from(self.success_sample);
        let rows = events.iter().filter_map(|e| {
            if replaying && e.ts_ms <= self.stored_until_ms {
                return None;
            }
            let mut weight = 1;
            if sample > 1 && e.outcome == Outcome::Success {
                if stable_hash(&e.id) % sample != 0 {
                    return None;
                }
                weight = self.success_sample;
            }
            Some(EventRow::new(e, weight, now))
        });
        // Rows are built before the buffer's lock is taken.
        let rows: Vec<EventRow> = rows.collect();
        self.bufs.events.push_all(rows);
    }

    fn cell_steps(&self, steps: &mut Vec<CellStep>) {
        let now = rows::secs(Utc::now().timestamp_millis());
        self.bufs
            .steps
            .push_all(steps.drain(..).map(|s| CellStepRow::new(&s, now)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_only_grows() {
        let s = Seq::default();
        let mut last = 0;
        for _ in 0..1000 {
            let n = s.next();
            assert!(n > last);
            last = n;
        }
    }

    #[test]
    fn ceil_ms_rounds_up_partial_milliseconds() {
        let t = DateTime::from_timestamp(10, 1).unwrap();
        assert_eq!(ceil_ms(t), 10_001);
        let t = DateTime::from_timestamp(10, 2_000_000).unwrap();
        assert_eq!(ceil_ms(t), 10_002);
    }

    #[test]
    fn sampling_is_stable() {
        assert_eq!(stable_hash("evt_1"), stable_hash("evt_1"));
        assert_ne!(stable_hash("evt_1"), stable_hash("evt_2"));
    }
}
