//! The in-memory store: the embedded default when ClickHouse is not configured.
//!
//! Memory is bounded: open incidents are always kept (their number is bounded by
//! the rules), resolved ones up to [`MemoryLimits::max_resolved`], dropping the
//! longest-resolved first; each incident keeps its newest series points and its
//! first plus newest timeline entries. Silences are bounded too: ended ones are
//! dropped as new ones arrive, and at most [`MAX_SILENCES`] are kept.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    Action, IncidentPage, IncidentQuery, IncidentRecord, Mute, Silence, StatusCounts, Store,
    StoreError,
};
use crate::config::StoreSettings;
use crate::incident::{Incident, SeriesPoint, Status, TimelineEntry};

/// Most silences kept at once (active or future); more is a sign of a script
/// gone wrong, and every notification checks them all.
pub const MAX_SILENCES: usize = 1000;

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
    /// The status a person set, by incident id: what engine updates must keep.
    human: HashMap<String, Status>,
    /// Silences, in creation order.
    silences: Vec<Silence>,
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

    /// The status a person set on an incident, if any (what engine updates keep).
    pub fn human_status(&self, id: &str) -> Option<Status> {
        self.lock().human.get(id).copied()
    }

    /// The latest state of one incident, without its history.
    pub fn incident(&self, id: &str) -> Option<Incident> {
        self.lock().records.get(id).map(|r| r.incident.clone())
    }

    /// Puts back a record kept elsewhere (a persistent store loading its recent
    /// incidents at start), with the status a person had set.
    pub fn restore(&self, record: IncidentRecord, human: Option<Status>) {
        let mut inner = self.lock();
        let id = record.incident.id.clone();
        inner.human.remove(&id);
        inner.upsert(&self.limits, &record.incident, &[], None);
        if let Some(rec) = inner.records.get_mut(&id) {
            rec.timeline = record.timeline;
            rec.series = record.series;
            let max_tl = self.limits.max_timeline_entries.max(1);
            if rec.timeline.len() > max_tl {
                let excess = rec.timeline.len() - max_tl;
                rec.timeline.drain(1..1 + excess);
            }
            let max_points = self.limits.max_series_points.max(1);
            if rec.series.len() > max_points {
                let excess = rec.series.len() - max_points;
                rec.series.drain(..excess);
            }
            if let Some(h) = human {
                inner.human.insert(id, h);
            }
        }
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
        let mut incident = incident.clone();
        if let Some(old) = self.records.get(&incident.id) {
            let old = &old.incident;
            // A person's word outlives the engine's routine updates (see the
            // module docs of `store`).
            match (self.human.get(&incident.id), incident.status) {
                (Some(Status::Acknowledged), Status::Open) => {
                    incident.status = Status::Acknowledged;
                }
                (Some(Status::Resolved), _) => {
                    incident.status = Status::Resolved;
                    incident.resolved_at = old.resolved_at;
                }
                _ => {}
            }
            self.by_opened.remove(&(old.opened_at, old.id.clone()));
            if let Some(k) = resolved_key(old) {
                self.resolved.remove(&k);
            }
        }
        let incident = &incident;
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
                self.human.remove(&id);
                self.by_opened.remove(&(rec.incident.opened_at, id));
            }
        }
    }

    fn act(
        &mut self,
        limits: &MemoryLimits,
        id: &str,
        action: Action,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<IncidentRecord>, StoreError> {
        let Some(rec) = self.records.get(id) else {
            return Ok(None);
        };
        let mut inc = rec.incident.clone();
        let (what, status) = match (action, inc.status) {
            (Action::Acknowledge, Status::Acknowledged) | (Action::Resolve, Status::Resolved) => {
                return Ok(Some(rec.clone()));
            }
            (Action::Acknowledge, Status::Resolved) => {
                return Err(StoreError::Conflict("the incident is already resolved"));
            }
            (Action::Acknowledge, Status::Open) => ("acknowledged", Status::Acknowledged),
            (Action::Resolve, _) => ("resolved", Status::Resolved),
        };
        inc.status = status;
        if status == Status::Resolved {
            inc.resolved_at = Some(at);
        }
        let entry = TimelineEntry {
            at,
            what: what.into(),
            by: by.to_string(),
            detail: String::new(),
        };
        // The human mark goes in after the upsert: upsert keeps a mark already
        // there, and this change is the person's own.
        self.human.remove(id);
        self.upsert(limits, &inc, &[entry], None);
        if self.records.contains_key(id) {
            self.human.insert(id.to_string(), status);
        }
        Ok(self.records.get(id).cloned())
    }

    fn mute(&self, incident: &Incident, now: DateTime<Utc>) -> Option<Mute> {
        if self.human.get(&incident.id) == Some(&Status::Resolved) {
            return Some(Mute::ResolvedByPerson);
        }
        self.silences
            .iter()
            .find(|s| s.active_at(now) && s.matches(incident))
            .map(|s| Mute::Silenced(s.id.clone()))
    }

    fn add_silence(&mut self, silence: Silence) -> Result<(), StoreError> {
        let now = Utc::now();
        self.silences.retain(|s| s.ends_at > now);
        if self.silences.len() >= MAX_SILENCES {
            return Err(StoreError::Conflict("too many silences; delete some first"));
        }
        self.silences.push(silence);
        Ok(())
    }

    fn status_counts(&self) -> StatusCounts {
        let mut c = StatusCounts::default();
        for rec in self.records.values() {
            match rec.incident.status {
                Status::Open => c.open += 1,
                Status::Acknowledged => c.acknowledged += 1,
                Status::Resolved => c.resolved += 1,
            }
        }
        c
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
        Ok(IncidentPage::new(incidents, more))
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

    async fn append_timeline(
        &self,
        id: &str,
        entries: &[TimelineEntry],
    ) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let Some(rec) = inner.records.get(id) else {
            return Ok(false);
        };
        let incident = rec.incident.clone();
        inner.upsert(&self.limits, &incident, entries, None);
        Ok(true)
    }

    async fn list(&self, query: &IncidentQuery) -> Result<IncidentPage, StoreError> {
        self.lock().list(query)
    }

    async fn get(&self, id: &str) -> Result<Option<IncidentRecord>, StoreError> {
        Ok(self.lock().records.get(id).cloned())
    }

    async fn act(
        &self,
        id: &str,
        action: Action,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<IncidentRecord>, StoreError> {
        self.lock().act(&self.limits, id, action, by, at)
    }

    async fn mute(
        &self,
        incident: &Incident,
        now: DateTime<Utc>,
    ) -> Result<Option<Mute>, StoreError> {
        Ok(self.lock().mute(incident, now))
    }

    async fn add_silence(&self, silence: Silence) -> Result<(), StoreError> {
        self.lock().add_silence(silence)
    }

    async fn silences(&self, now: DateTime<Utc>) -> Result<Vec<Silence>, StoreError> {
        let mut out: Vec<Silence> = self
            .lock()
            .silences
            .iter()
            .filter(|s| s.ends_at > now)
            .cloned()
            .collect();
        out.sort_by(|a, b| a.ends_at.cmp(&b.ends_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    async fn delete_silence(&self, id: &str) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let before = inner.silences.len();
        inner.silences.retain(|s| s.id != id);
        Ok(inner.silences.len() != before)
    }

    async fn status_counts(&self) -> Result<StatusCounts, StoreError> {
        Ok(self.lock().status_counts())
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
            candidates: Vec::new(),
            episode: Default::default(),
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
    async fn people_ack_and_resolve_and_the_engine_keeps_their_word() {
        let s = MemoryStore::default();
        let mut inc = incident("inc_1", T0);
        s.upsert(&inc, &[entry("opened", T0)], None).await.unwrap();
        let now = ts(T0 + 60_000);
        assert!(s
            .act("nope", Action::Acknowledge, "alice", now)
            .await
            .unwrap()
            .is_none());
        let rec = s
            .act("inc_1", Action::Acknowledge, "alice", now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rec.incident.status, Status::Acknowledged);
        assert_eq!(rec.timeline.last().unwrap().by, "alice");
        // Idempotent: no second entry.
        let again = s
            .act("inc_1", Action::Acknowledge, "bob", now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again, rec);
        // The engine's routine update says `open`: it stays acknowledged.
        inc.updated_at = ts(T0 + 15_000);
        s.upsert(&inc, &[], Some(point(T0 + 15_000))).await.unwrap();
        let rec = s.get("inc_1").await.unwrap().unwrap();
        assert_eq!(rec.incident.status, Status::Acknowledged);
        assert_eq!(rec.incident.updated_at, ts(T0 + 15_000));
        assert_eq!(s.mute(&inc, now).await.unwrap(), None);

        // A person resolves while the engine still fires: it stays resolved and muted.
        let rec = s
            .act("inc_1", Action::Resolve, "bob", now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rec.incident.status, Status::Resolved);
        assert_eq!(rec.incident.resolved_at, Some(now));
        s.upsert(&inc, &[], Some(point(T0 + 30_000))).await.unwrap();
        let rec = s.get("inc_1").await.unwrap().unwrap();
        assert_eq!(rec.incident.status, Status::Resolved);
        assert_eq!(rec.incident.resolved_at, Some(now));
        assert_eq!(rec.series.len(), 2);
        assert_eq!(
            s.mute(&inc, now).await.unwrap(),
            Some(Mute::ResolvedByPerson)
        );
        let whats: Vec<_> = rec
            .timeline
            .iter()
            .map(|e| (e.what.as_str(), e.by.as_str()))
            .collect();
        assert_eq!(
            whats,
            [
                ("opened", "faultline"),
                ("acknowledged", "alice"),
                ("resolved", "bob")
            ]
        );
        assert!(matches!(
            s.act("inc_1", Action::Acknowledge, "carol", now).await,
            Err(StoreError::Conflict(_))
        ));
        let counts = s.status_counts().await.unwrap();
        assert_eq!(
            (counts.open, counts.acknowledged, counts.resolved),
            (0, 0, 1)
        );
    }

    #[tokio::test]
    async fn the_engine_resolving_an_acknowledged_incident_resolves_it() {
        let s = MemoryStore::default();
        let mut inc = incident("inc_1", T0);
        s.upsert(&inc, &[], None).await.unwrap();
        s.act("inc_1", Action::Acknowledge, "alice", ts(T0))
            .await
            .unwrap();
        inc.status = Status::Resolved;
        inc.resolved_at = Some(ts(T0 + 90_000));
        s.upsert(&inc, &[entry("resolved", T0 + 90_000)], None)
            .await
            .unwrap();
        let rec = s.get("inc_1").await.unwrap().unwrap();
        assert_eq!(rec.incident.status, Status::Resolved);
        assert_eq!(rec.incident.resolved_at, Some(ts(T0 + 90_000)));
        assert_eq!(s.mute(&inc, ts(T0)).await.unwrap(), None);
    }

    #[tokio::test]
    async fn silences_mute_matching_incidents_while_active() {
        let s = MemoryStore::default();
        let now = Utc::now();
        let sil = |id: &str, provider: &str, start: i64, end: i64| Silence {
            id: id.into(),
            matchers: [("provider".to_string(), provider.to_string())].into(),
            starts_at: now + chrono::Duration::seconds(start),
            ends_at: now + chrono::Duration::seconds(end),
            comment: "maintenance".into(),
            created_by: "w".into(),
            created_at: now,
        };
        s.add_silence(sil("sil_a", "adyen", -10, 3600))
            .await
            .unwrap();
        s.add_silence(sil("sil_b", "stripe", 60, 120))
            .await
            .unwrap();
        let inc = incident("inc_1", T0);
        assert_eq!(s.mute(&inc, now).await.unwrap(), None);
        assert_eq!(
            s.mute(&inc, now + chrono::Duration::seconds(90))
                .await
                .unwrap(),
            Some(Mute::Silenced("sil_b".into()))
        );
        let ids: Vec<_> = s
            .silences(now)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, ["sil_b", "sil_a"]);
        assert!(s.delete_silence("sil_b").await.unwrap());
        assert!(!s.delete_silence("sil_b").await.unwrap());
        assert_eq!(s.silences(now).await.unwrap().len(), 1);
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
