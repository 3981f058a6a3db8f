//! The in-memory store: the embedded default when ClickHouse is not configured.
//!
//! Memory is bounded: open incidents are always kept (their number is bounded by
//! the rules), resolved ones up to [`MemoryLimits::max_resolved`], dropping the
//! longest-resolved first; each incident keeps its newest series points and its
//! first plus newest timeline entries.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{Cursor, IncidentPage, IncidentQuery, IncidentRecord, Store, StoreError};
use crate::config::StoreSettings;
use crate::incident::{Incident, SeriesPoint, Status, TimelineEntry};

/// Bounds of a [`MemoryStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimits {
    /// Resolved incidents kept.
    pub max_resolved: usize,
    /// Series points kept per incident (newest).
    pub max_series_points: usize,
    /// Timeline entries kept per incident (the first, then the newest).
    pub max_timeline_entries: usize,
}

impl Default for MemoryLimits {
    fn default() -> Self {
        MemoryLimits::from(&StoreSettings::default())
    }
}

impl From<&StoreSettings> for MemoryLimits {
    fn from(s: &StoreSettings) -> Self {
        MemoryLimits {
            max_resolved: s.max_resolved_incidents,
            max_series_points: s.max_series_points,
            max_timeline_entries: s.max_timeline_entries,
        }
    }
}

/// Incidents in memory, behind one lock.
///
/// A std `Mutex` rather than tokio's: the lock is never held across an `.await`
/// and every operation under it is short (a page is at most 500 clones).
#[derive(Debug, Default)]
pub struct MemoryStore {
    limits: MemoryLimits,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    records: HashMap<String, IncidentRecord>,
    /// Every incident by (opened_at, id): the listing order.
    by_opened: BTreeSet<(DateTime<Utc>, String)>,
    /// Resolved incidents by (resolved_at, id): the eviction order.
    resolved: BTreeSet<(DateTime<Utc>, String)>,
}

fn resolved_key(inc: &Incident) -> Option<(DateTime<Utc>, String)> {
    (inc.status == Status::Resolved)
        .then(|| (inc.resolved_at.unwrap_or(inc.updated_at), inc.id.clone()))
}

impl MemoryStore {
    /// An empty store with these bounds.
    pub fn new(limits: MemoryLimits) -> MemoryStore {
        MemoryStore {
            limits,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Incidents held now.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether it holds no incident.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (each update is
        // applied before the indexes are touched), so keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    fn upsert(
        &mut self,
        limits: &MemoryLimits,
        incident: &Incident,
        timeline: &[TimelineEntry],
        point: Option<SeriesPoint>,
    ) {
        if let Some(old) = self.records.get(&incident.id) {
            let old = &old.incident;
            self.by_opened.remove(&(old.opened_at, old.id.clone()));
            if let Some(k) = resolved_key(old) {
                self.resolved.remove(&k);
            }
        }
        let rec = self
            .records
            .entry(incident.id.clone())
            .or_insert_with(|| IncidentRecord {
                incident: incident.clone(),
                timeline: Vec::new(),
                series: Vec::new(),
            });
        rec.incident = incident.clone();
        rec.timeline.extend_from_slice(timeline);
        let max_tl = limits.max_timeline_entries.max(1);
        if rec.timeline.len() > max_tl {
            // Keep the first entry (how it opened) and the newest.
            let excess = rec.timeline.len() - max_tl;
            rec.timeline.drain(1..1 + excess);
        }
        if let Some(p) = point {
            rec.series.push(p);
            let max_points = limits.max_series_points.max(1);
            if rec.series.len() > max_points {
                let excess = rec.series.len() - max_points;
                rec.series.drain(..excess);
            }
        }
        self.by_opened
            .insert((incident.opened_at, incident.id.clone()));
        if let Some(k) = resolved_key(incident) {
            self.resolved.insert(k);
        }
        while self.resolved.len() > limits.max_resolved {
            let Some((_, id)) = self.resolved.pop_first() else {
                break;
            };
            if let Some(rec) = self.records.remove(&id) {
                self.by_opened.remove(&(rec.incident.opened_at, id));
            }
        }
    }

    fn list(&self, query: &IncidentQuery) -> Result<IncidentPage, StoreError> {
        let filter = query.parse()?;
        let newest_first: Box<dyn Iterator<Item = &(DateTime<Utc>, String)>> = match &filter.after {
            Some(c) => Box::new(self.by_opened.range(..(c.opened_at, c.id.clone())).rev()),
            None => Box::new(self.by_opened.iter().rev()),
        };
        let mut incidents = Vec::with_capacity(filter.limit.min(64));
        let mut more = false;
        for (_, id) in newest_first {
            let Some(rec) = self.records.get(id) else {
                continue;
            };
            if !filter.matches(&rec.incident) {
                continue;
            }
            if incidents.len() == filter.limit {
                more = true;
                break;
            }
            incidents.push(rec.incident.clone());
        }
        let next_cursor = if more {
            incidents.last().map(|i| Cursor::of(i).encode())
        } else {
            None
        };
        Ok(IncidentPage {
            incidents,
            next_cursor,
        })
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn upsert(
        &self,
        incident: &Incident,
        timeline: &[TimelineEntry],
        point: Option<SeriesPoint>,
    ) -> Result<(), StoreError> {
        self.lock().upsert(&self.limits, incident, timeline, point);
        Ok(())
    }

    async fn list(&self, query: &IncidentQuery) -> Result<IncidentPage, StoreError> {
        self.lock().list(query)
    }

    async fn get(&self, id: &str) -> Result<Option<IncidentRecord>, StoreError> {
        Ok(self.lock().records.get(id).cloned())
    }
}

/// Incidents for tests of this store and of the API.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::collections::BTreeMap;

    use crate::incident::{ts, Incident, Link, RootCause, Status, SummarySource, TimeRange};
    use crate::rules::Severity;

    /// An open `auth_technical_failures` incident on stripe / us-west-2.
    pub fn incident(id: &str, opened_ms: i64) -> Incident {
        let dims: BTreeMap<String, String> = [("provider", "stripe"), ("region", "us-west-2")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Incident {
            id: id.to_string(),
            rule: "auth_technical_failures".into(),
            kind: "auth".into(),
            severity: Severity::Critical,
            status: Status::Open,
            opened_at: ts(opened_ms),
            updated_at: ts(opened_ms),
            resolved_at: None,
            root_causes: vec![RootCause {
                dims,
                score: 0.94,
                events: 4210,
                failures: 1702,
                expected_failures: 21.4,
                failure_rate: 0.404,
                baseline_rate: 0.0051,
                expected_events: None,
            }],
            window: TimeRange {
                start: ts(opened_ms - 300_000),
                end: ts(opened_ms),
            },
            title: "t".into(),
            summary: "s".into(),
            summary_source: SummarySource::Template,
            links: vec![Link {
                title: "Auth".into(),
                url: "https://grafana.example.com/d/x".into(),
            }],
            prompt_version: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::incident;
    use super::*;
    use crate::incident::ts;
    use crate::rules::Severity;

    const T0: i64 = 1_772_410_841_000;

    fn entry(what: &str, at: i64) -> TimelineEntry {
        TimelineEntry {
            at: ts(at),
            what: what.into(),
            by: "faultline".into(),
            detail: String::new(),
        }
    }

    fn point(at: i64) -> SeriesPoint {
        SeriesPoint {
            at: ts(at),
            events: 10,
            failures: 1,
            value: 0.1,
            baseline: 0.01,
        }
    }

    fn ids(page: &IncidentPage) -> Vec<&str> {
        page.incidents.iter().map(|i| i.id.as_str()).collect()
    }

    #[tokio::test]
    async fn upsert_replaces_and_appends() {
        let s = MemoryStore::default();
        let mut inc = incident("inc_1", T0);
        s.upsert(&inc, &[entry("opened", T0)], Some(point(T0)))
            .await
            .unwrap();
        inc.title = "newer".into();
        s.upsert(
            &inc,
            &[entry("updated", T0 + 15_000)],
            Some(point(T0 + 15_000)),
        )
        .await
        .unwrap();
        let rec = s.get("inc_1").await.unwrap().unwrap();
        assert_eq!(rec.incident.title, "newer");
        assert_eq!(rec.timeline.len(), 2);
        assert_eq!(rec.series.len(), 2);
        assert_eq!(s.len(), 1);
        assert!(s.get("nope").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn lists_newest_first_with_filters() {
        let s = MemoryStore::default();
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            let mut inc = incident(id, T0 + i as i64 * 1000);
            if *id == "b" {
                inc.status = Status::Resolved;
                inc.resolved_at = Some(ts(T0 + 5000));
                inc.severity = Severity::Warning;
                inc.root_causes[0]
                    .dims
                    .insert("bin".into(), "414720".into());
            }
            if *id == "c" {
                inc.rule = "settlement_volume_drop".into();
                inc.kind = "settlement".into();
                inc.root_causes[0]
                    .dims
                    .insert("provider".into(), "adyen".into());
            }
            s.upsert(&inc, &[], None).await.unwrap();
        }
        let list = |f: fn(&mut IncidentQuery)| {
            let mut q = IncidentQuery::default();
            f(&mut q);
            let page = s.lock().list(&q).unwrap();
            ids(&page).into_iter().map(String::from).collect::<Vec<_>>()
        };
        assert_eq!(list(|_| {}), ["d", "c", "b", "a"]);
        assert_eq!(list(|q| q.status = Some("resolved".into())), ["b"]);
        assert_eq!(list(|q| q.status = Some("open".into())), ["d", "c", "a"]);
        assert_eq!(list(|q| q.severity = Some("warning".into())), ["b"]);
        assert_eq!(
            list(|q| q.rule = Some("settlement_volume_drop".into())),
            ["c"]
        );
        assert_eq!(list(|q| q.kind = Some("auth".into())), ["d", "b", "a"]);
        assert_eq!(list(|q| q.provider = Some("adyen".into())), ["c"]);
        assert_eq!(list(|q| q.region = Some("us-west-2".into())).len(), 4);
        assert_eq!(list(|q| q.bin = Some("414720".into())), ["b"]);
        assert!(list(|q| q.merchant_id = Some("m1".into())).is_empty());
        assert_eq!(
            list(|q| {
                q.since = Some("2026-03-02T00:20:42Z".into());
                q.until = Some("2026-03-02T00:20:44Z".into());
            }),
            ["c", "b"]
        );
    }

    #[tokio::test]
    async fn pages_do_not_repeat_under_concurrent_inserts() {
        let s = MemoryStore::default();
        for i in 0..7 {
            // Two share an opening time: ties are ordered by id.
            let at = T0 + (i / 2) * 1000;
            s.upsert(&incident(&format!("inc_{i}"), at), &[], None)
                .await
                .unwrap();
        }
        let mut seen = Vec::new();
        let mut cursor = None;
        let mut newer = 100;
        loop {
            let q = IncidentQuery {
                limit: Some(2),
                cursor: cursor.clone(),
                ..Default::default()
            };
            let page = s.list(&q).await.unwrap();
            seen.extend(page.incidents.iter().map(|i| i.id.clone()));
            // Newer incidents arrive between requests.
            newer += 1;
            s.upsert(
                &incident(&format!("inc_{newer}"), T0 + newer * 1000),
                &[],
                None,
            )
            .await
            .unwrap();
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let mut expected: Vec<String> = (0..7).map(|i| format!("inc_{i}")).collect();
        expected.reverse();
        assert_eq!(seen, expected);
    }

    #[tokio::test]
    async fn keeps_memory_bounded() {
        let s = MemoryStore::new(MemoryLimits {
            max_resolved: 2,
            max_series_points: 3,
            max_timeline_entries: 3,
        });
        let mut open = incident("open", T0);
        for i in 0..10 {
            s.upsert(
                &open,
                &[entry(&format!("e{i}"), T0 + i)],
                Some(point(T0 + i)),
            )
            .await
            .unwrap();
        }
        let rec = s.get("open").await.unwrap().unwrap();
        let whats: Vec<_> = rec.timeline.iter().map(|e| e.what.as_str()).collect();
        assert_eq!(whats, ["e0", "e8", "e9"]);
        assert_eq!(rec.series.len(), 3);
        assert_eq!(rec.series[0].at, ts(T0 + 7));

        for i in 0..4 {
            let mut inc = incident(&format!("r{i}"), T0 + i);
            inc.status = Status::Resolved;
            inc.resolved_at = Some(ts(T0 + 1000 + i));
            s.upsert(&inc, &[], None).await.unwrap();
        }
        // The open one stays; the two resolved longest ago are gone.
        assert_eq!(s.len(), 3);
        assert!(s.get("r0").await.unwrap().is_none());
        assert!(s.get("r1").await.unwrap().is_none());
        assert!(s.get("r3").await.unwrap().is_some());
        let page = s.list(&IncidentQuery::default()).await.unwrap();
        assert_eq!(ids(&page), ["r3", "r2", "open"]);

        // Resolving the open one evicts the oldest resolved.
        open.status = Status::Resolved;
        open.resolved_at = Some(ts(T0 + 5000));
        s.upsert(&open, &[], None).await.unwrap();
        assert_eq!(s.len(), 2);
        assert!(s.get("r2").await.unwrap().is_none());
    }
}
