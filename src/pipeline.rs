//! The async wiring of the stages for `run`, `demo` and `replay`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::engine::{Engine, EngineOptions, EngineStats, ReloadSummary, Skip};
use crate::event::{self, Event};
use crate::incident::{Change, Incident, SummarySource, TimelineEntry, Transition};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::rules::{CompiledRule, RuleSet};
use crate::store::Store;
use crate::summarize::{Summarizer, Summary};

/// The one-line JSON run report `faultline replay` prints to stderr.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RunReport {
    /// Lines read.
    pub events_read: u64,
    /// Valid, new, on-time events counted by the rules.
    pub accepted: u64,
    /// Rejections by reason (including `duplicate` and `late`).
    pub rejected: std::collections::BTreeMap<String, u64>,
    /// Incidents opened.
    pub incidents: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Result of a replay: every incident in its final state, ordered by `opened_at`.
#[derive(Debug, Clone, Default)]
pub struct ReplayOutput {
    /// Incidents, final state.
    pub incidents: Vec<Incident>,
    /// Counts.
    pub report: RunReport,
}

/// Runs the pipeline in event time over NDJSON lines, as fast as it can.
///
/// Blank lines are skipped; bad lines are counted by reason, never fatal.
pub fn replay_lines<I, L>(lines: I, rules: &RuleSet) -> ReplayOutput
where
    I: IntoIterator<Item = L>,
    L: AsRef<[u8]>,
{
    replay_with(lines, rules, &EngineOptions::default())
}

/// [`replay_lines`] with engine options.
pub fn replay_with<I, L>(lines: I, rules: &RuleSet, opts: &EngineOptions) -> ReplayOutput
where
    I: IntoIterator<Item = L>,
    L: AsRef<[u8]>,
{
    let parsed = lines.into_iter().filter_map(|line| {
        let bytes = trim_line(line.as_ref());
        (!bytes.is_empty()).then(|| event::parse(bytes))
    });
    replay_parsed(parsed, rules, opts)
}

/// Replays a reader of NDJSON, parsing on a second thread while the engine
/// counts on this one: parsing and validation are about half the work, and the
/// engine must stay single-threaded to keep event order.
pub fn replay_reader<R>(reader: R, rules: &RuleSet, opts: &EngineOptions) -> ReplayOutput
where
    R: std::io::BufRead + Send + 'static,
{
    const BATCH: usize = 4096;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Result<Event, event::Rejection>>>(8);
    let parser = std::thread::spawn(move || {
        let mut batch = Vec::with_capacity(BATCH);
        for line in crate::ingest::file::lines(reader) {
            let bytes = trim_line(&line);
            if bytes.is_empty() {
                continue;
            }
            batch.push(event::parse(bytes));
            if batch.len() == BATCH
                && tx
                    .send(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))
                    .is_err()
            {
                return;
            }
        }
        let _ = tx.send(batch);
    });
    let out = replay_parsed(rx.into_iter().flatten(), rules, opts);
    let _ = parser.join();
    out
}

/// Replays already validated events (from a store), in the order given.
pub fn replay_events(
    events: impl Iterator<Item = Event>,
    rules: &RuleSet,
    opts: &EngineOptions,
) -> ReplayOutput {
    replay_parsed(events.map(Ok), rules, opts)
}

fn replay_parsed(
    parsed: impl Iterator<Item = Result<Event, event::Rejection>>,
    rules: &RuleSet,
    opts: &EngineOptions,
) -> ReplayOutput {
    let started = std::time::Instant::now();
    let mut engine = Engine::new(rules, opts);
    let mut report = RunReport::default();
    let mut latest: BTreeMap<String, Incident> = BTreeMap::new();
    let mut changes = Vec::new();
    let absorb = |changes: &mut Vec<Change>, latest: &mut BTreeMap<String, Incident>| {
        for c in changes.drain(..) {
            let inc = c.transition.incident();
            latest.insert(inc.id.clone(), inc.clone());
        }
    };
    for parsed in parsed {
        report.events_read += 1;
        match parsed {
            Ok(ev) => match engine.ingest(&ev, &mut changes) {
                Ok(()) => report.accepted += 1,
                Err(skip) => {
                    *report
                        .rejected
                        .entry(skip.reason().to_string())
                        .or_default() += 1
                }
            },
            Err(rej) => {
                *report
                    .rejected
                    .entry(rej.reason().into_owned())
                    .or_default() += 1
            }
        }
        if !changes.is_empty() {
            absorb(&mut changes, &mut latest);
        }
    }
    engine.finish(&mut changes);
    absorb(&mut changes, &mut latest);
    let mut incidents: Vec<Incident> = latest
        .into_values()
        .map(|mut inc| {
            if let Some(rule) = rules.get(&inc.rule) {
                summarize_template(&mut inc, rule);
            }
            inc
        })
        .collect();
    incidents.sort_by(|a, b| a.opened_at.cmp(&b.opened_at).then(a.id.cmp(&b.id)));
    report.incidents = incidents.len() as u64;
    report.seconds = started.elapsed().as_secs_f64();
    ReplayOutput { incidents, report }
}

/// Fills title and summary from the deterministic template.
pub fn summarize_template(inc: &mut Incident, rule: &CompiledRule) {
    crate::summarize::template(&crate::summarize::Facts::new(inc, &rule.rule)).apply(inc);
}

fn trim_line(b: &[u8]) -> &[u8] {
    let mut b = b;
    while let [rest @ .., last] = b {
        if last.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    while let [first, rest @ ..] = b {
        if first.is_ascii_whitespace() {
            b = rest;
        } else {
            break;
        }
    }
    b
}

/// The sinks of incident changes in the live pipeline.
#[derive(Clone)]
pub struct Outputs {
    /// Where incidents are kept.
    pub store: Arc<dyn Store>,
    /// Who hears of them.
    pub notifier: Arc<dyn Notifier>,
    /// Who writes their summaries.
    pub summarizer: Arc<dyn Summarizer>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The rules in force, for summaries (swapped on reload).
    pub rules: Arc<crate::reload::LiveRules>,
    /// How long an incident waits for its summary before it goes out with the
    /// template's; a summary arriving later is applied in place
    /// ([`Notifier::summary_updated`](crate::notify::Notifier::summary_updated)).
    pub summary_deadline: Duration,
    /// Base URL of the pages (`FAULTLINE_PUBLIC_URL`): incidents get their
    /// page's `url` under it.
    pub public_url: Option<String>,
    /// On a cluster's detector: every notification is claimed here first, so
    /// a takeover never repeats one ([`crate::cluster::ledger`]).
    pub claims: Option<Arc<crate::cluster::ledger::Ledger>>,
}

/// How far ahead of the wall clock an event may be stamped (clock skew) in
/// [`Clock::Wall`] mode; later ones are rejected as `future_ts`.
pub const MAX_FUTURE_MS: i64 = 5 * 60_000;

/// How the live engine learns that time passed when no events arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Event time is close to wall time (production): once a second the watermark
    /// moves to `now - lateness` even without events, so a silent stream is seen.
    Wall,
    /// Event time only (demo, where time is accelerated).
    EventTime,
}

/// What a source that rebuilds the windows from history at start (NATS) shares
/// with the engine and the outputs.
///
/// While replaying, the wall-clock timer must not move the watermark (the
/// history would turn late). Changes whose event time is at or before
/// `quiet_until` were already notified by the previous run: they are stored,
/// not notified again.
#[derive(Debug)]
pub struct CatchUp {
    replaying: std::sync::atomic::AtomicBool,
    quiet_until_ms: std::sync::atomic::AtomicI64,
    clock_limit_ms: std::sync::atomic::AtomicI64,
}

impl CatchUp {
    /// No replay: the timer runs and every change is notified.
    pub fn idle() -> CatchUp {
        CatchUp {
            replaying: false.into(),
            quiet_until_ms: i64::MIN.into(),
            clock_limit_ms: i64::MAX.into(),
        }
    }

    /// A replay is coming: the timer waits for [`CatchUp::finish`].
    pub fn replaying() -> CatchUp {
        CatchUp {
            replaying: true.into(),
            quiet_until_ms: i64::MIN.into(),
            clock_limit_ms: i64::MAX.into(),
        }
    }

    /// Whether the replay is still going.
    pub fn is_replaying(&self) -> bool {
        self.replaying.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The replay is over (every replayed event was taken by the engine).
    pub fn finish(&self) {
        self.replaying
            .store(false, std::sync::atomic::Ordering::Release);
    }

    /// The wall-clock timer may not move time past `now_ms` (the cluster
    /// detector's clock is its replicas' flushes: [`crate::cluster::clock`]).
    pub fn limit_clock(&self, now_ms: i64) {
        self.clock_limit_ms
            .store(now_ms, std::sync::atomic::Ordering::Release);
    }

    /// The latest time the wall-clock timer may move to.
    pub fn clock_limit(&self) -> i64 {
        self.clock_limit_ms
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Changes at or before `event_ms` were notified before: keep them quiet.
    pub fn quiet_until(&self, event_ms: i64) {
        self.quiet_until_ms
            .fetch_max(event_ms, std::sync::atomic::Ordering::AcqRel);
    }

    /// Whether a change at `event_ms` is one the previous run already notified.
    pub fn is_quiet(&self, event_ms: i64) -> bool {
        event_ms
            <= self
                .quiet_until_ms
                .load(std::sync::atomic::Ordering::Acquire)
    }
}

/// What a store that keeps raw events and per-step aggregates (ClickHouse)
/// hears from the engine loop. Both calls must return at once (hand off to a
/// bounded buffer, drop and count when it is full): the engine never waits.
pub trait EngineTap: Send + Sync {
    /// Events the engine counted (not duplicates, not late), one batch at a time.
    fn events(&self, events: &[Event], replaying: bool);
    /// Cell counts of the evaluation steps just run; take what is needed.
    fn cell_steps(&self, steps: &mut Vec<crate::engine::CellStep>);
}

/// Requests to the engine loop from outside it (reloads, explanations),
/// served between two batches of events.
#[derive(Debug)]
pub enum Control {
    /// Swap in a validated rule set ([`Engine::reload`]).
    Reload {
        /// The new rules.
        rules: Arc<RuleSet>,
        /// What the engine did.
        reply: oneshot::Sender<ReloadSummary>,
    },
    /// Explain an element at the last step its rule evaluated.
    Explain {
        /// The rule.
        rule: String,
        /// The element.
        dims: BTreeMap<String, String>,
        /// The report, or why there is none.
        reply: oneshot::Sender<Result<crate::explain::Report, String>>,
    },
}

/// A handle on a running engine loop.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Control>,
}

impl EngineHandle {
    /// A handle and the receiver to give [`EngineLoop::control`].
    pub fn channel() -> (EngineHandle, mpsc::Receiver<Control>) {
        let (tx, rx) = mpsc::channel(8);
        (EngineHandle { tx }, rx)
    }

    /// Swaps in `rules`; `None` when the engine has stopped.
    pub async fn reload(&self, rules: Arc<RuleSet>) -> Option<ReloadSummary> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Control::Reload { rules, reply }).await.ok()?;
        rx.await.ok()
    }

    /// Explains `dims` of `rule` at the last step it evaluated, from the live
    /// windows and baselines.
    pub async fn explain(
        &self,
        rule: String,
        dims: BTreeMap<String, String>,
    ) -> Result<crate::explain::Report, String> {
        let (reply, rx) = oneshot::channel();
        let stopped = || "the engine has stopped".to_string();
        self.tx
            .send(Control::Explain { rule, dims, reply })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// The live engine loop and what it is wired to.
pub struct EngineLoop {
    rules: Arc<RuleSet>,
    opts: EngineOptions,
    clock: Clock,
    metrics: Arc<Metrics>,
    catch_up: Arc<CatchUp>,
    tap: Option<Arc<dyn EngineTap>>,
    control: Option<mpsc::Receiver<Control>>,
}

impl EngineLoop {
    /// A loop over `rules` with no replay gate, no tap and no control channel.
    pub fn new(
        rules: Arc<RuleSet>,
        opts: EngineOptions,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> EngineLoop {
        EngineLoop {
            rules,
            opts,
            clock,
            metrics,
            catch_up: Arc::new(CatchUp::idle()),
            tap: None,
            control: None,
        }
    }

    /// Gates the wall-clock timer on a replay of history ([`CatchUp`]).
    pub fn catch_up(mut self, catch_up: Arc<CatchUp>) -> EngineLoop {
        self.catch_up = catch_up;
        self
    }

    /// Tells `tap` of every counted event and every cell step.
    pub fn tap(mut self, tap: Option<Arc<dyn EngineTap>>) -> EngineLoop {
        self.tap = tap;
        self
    }

    /// Serves reloads and explanations from `control` ([`EngineHandle`]).
    pub fn control(mut self, control: mpsc::Receiver<Control>) -> EngineLoop {
        self.control = Some(control);
        self
    }

    /// Runs until `events` closes, sending every change to `changes`.
    /// Returns the engine's counters. `events` are validated events, or the
    /// replicas' pre-aggregated counts on a cluster's detector
    /// ([`crate::cluster::partial::Partial`]).
    pub async fn run<T: Feed>(
        self,
        mut events: mpsc::Receiver<T>,
        changes: mpsc::Sender<Change>,
    ) -> EngineStats {
        let EngineLoop {
            rules,
            opts,
            clock,
            metrics,
            catch_up,
            tap,
            mut control,
        } = self;
        let mut engine = Engine::new(&rules, &opts);
        engine.record_cell_steps(tap.is_some());
        let mut steps = Vec::new();
        let mut counted = Vec::new();
        let lateness = opts.lateness_ms;
        let mut buf = Vec::with_capacity(1024);
        let mut out = Vec::new();
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                n = events.recv_many(&mut buf, 1024) => {
                    if n == 0 {
                        break;
                    }
                    let now = chrono::Utc::now().timestamp_millis();
                    let ctx = FeedCtx {
                        clock,
                        now,
                        metrics: &metrics,
                        keep: tap.is_some(),
                    };
                    for item in buf.drain(..) {
                        item.feed(&mut engine, &ctx, &mut out, &mut counted);
                    }
                }
                _ = tick.tick(), if clock == Clock::Wall => {
                    if !catch_up.is_replaying() {
                        let now = chrono::Utc::now()
                            .timestamp_millis()
                            .min(catch_up.clock_limit());
                        engine.advance_to(now - lateness, &mut out);
                    }
                }
                Some(c) = recv_control(&mut control) => serve_control(&mut engine, c, &mut out),
            }
            metrics.set_active_cells(engine.active_cells() as u64);
            if let Some(tap) = &tap {
                if !counted.is_empty() {
                    tap.events(&counted, catch_up.is_replaying());
                    counted.clear();
                }
                engine.take_cell_steps(&mut steps);
                if !steps.is_empty() {
                    tap.cell_steps(&mut steps);
                    steps.clear();
                }
            }
            for c in out.drain(..) {
                if changes.send(c).await.is_err() {
                    tracing::warn!("incident outputs closed; engine stopping");
                    return engine.stats().clone();
                }
            }
        }
        engine.stats().clone()
    }
}

/// What the engine loop passes to each [`Feed`] item.
pub struct FeedCtx<'a> {
    /// The loop's clock.
    pub clock: Clock,
    /// Wall time of the batch, epoch ms.
    pub now: i64,
    /// Counters.
    pub metrics: &'a Metrics,
    /// Whether counted events are kept for the tap.
    pub keep: bool,
}

/// What the engine loop consumes: events, or pre-aggregated counts.
pub trait Feed: Send + 'static {
    /// Counts `self` into `engine`; counted events go to `counted` when
    /// `ctx.keep`.
    fn feed(
        self,
        engine: &mut Engine,
        ctx: &FeedCtx<'_>,
        out: &mut Vec<Change>,
        counted: &mut Vec<Event>,
    );
}

impl Feed for Event {
    fn feed(
        self,
        engine: &mut Engine,
        ctx: &FeedCtx<'_>,
        out: &mut Vec<Change>,
        counted: &mut Vec<Event>,
    ) {
        // On the wall clock, one event stamped far in the future would
        // drag the watermark along and make every later event late.
        if ctx.clock == Clock::Wall && self.ts_ms > ctx.now + MAX_FUTURE_MS {
            ctx.metrics.event_rejected("future_ts");
            return;
        }
        match engine.ingest(&self, out) {
            Ok(()) => {
                ctx.metrics.event_accepted();
                if ctx.keep {
                    counted.push(self);
                }
            }
            Err(Skip::Duplicate) => ctx.metrics.event_duplicate(),
            Err(Skip::Late) => ctx.metrics.event_late(),
        }
    }
}

impl Feed for crate::cluster::partial::Partial {
    fn feed(
        mut self,
        engine: &mut Engine,
        ctx: &FeedCtx<'_>,
        out: &mut Vec<Change>,
        _: &mut Vec<Event>,
    ) {
        // Counts stamped far ahead would drag the watermark as a future event
        // does (replicas reject such events; this guards the detector too).
        if ctx.clock == Clock::Wall {
            let limit = ctx.now + MAX_FUTURE_MS;
            if self.max_ts.is_some_and(|t| t > limit) {
                ctx.metrics.event_rejected("future_ts");
                self.max_ts = None;
            }
            for part in &mut self.rules {
                let step_ms = part.step_ms.max(1);
                part.cells.retain(|c| c.0.saturating_mul(step_ms) <= limit);
            }
        }
        let fed = self.count_into(engine, out);
        ctx.metrics
            .partial_fed(fed.accepted, fed.late, fed.mismatched);
    }
}

/// The next control request; pending forever without a channel or once it closed.
async fn recv_control(control: &mut Option<mpsc::Receiver<Control>>) -> Option<Control> {
    match control {
        Some(rx) => match rx.recv().await {
            Some(c) => Some(c),
            None => {
                *control = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

fn serve_control(engine: &mut Engine, c: Control, out: &mut Vec<Change>) {
    match c {
        Control::Reload { rules, reply } => {
            let summary = engine.reload(&rules, out);
            let _ = reply.send(summary);
        }
        Control::Explain { rule, dims, reply } => {
            let report = match engine.last_step_end(&rule) {
                Some(end) => engine.explain(&rule, &dims, end - 1).map(|explanation| {
                    crate::explain::Report {
                        explanation,
                        open_incidents: crate::explain::open_overlapping(&*engine, &rule, &dims),
                    }
                }),
                None if engine.has_rule(&rule) => Err(format!(
                    "rule `{rule}` has not evaluated a step yet (no matching events so far)"
                )),
                None => Err(format!("no rule named `{rule}`")),
            };
            let _ = reply.send(report);
        }
    }
}

/// Summarizes, stores and notifies every change until the channel closes.
pub async fn run_outputs(changes: mpsc::Receiver<Change>, outputs: Outputs) {
    run_outputs_with(changes, outputs, Arc::new(CatchUp::idle())).await
}

/// [`run_outputs`], keeping quiet the changes [`CatchUp::is_quiet`] names.
pub async fn run_outputs_with(
    mut changes: mpsc::Receiver<Change>,
    outputs: Outputs,
    catch_up: Arc<CatchUp>,
) {
    // Summaries that missed their deadline come back here when they finish.
    let (late_tx, mut late_rx) = mpsc::channel::<(String, Summary)>(64);
    let mut open = true;
    loop {
        tokio::select! {
            change = changes.recv(), if open => match change {
                Some(change) => {
                    let at = change.transition.incident().updated_at.timestamp_millis();
                    let quiet = change.notify && catch_up.is_quiet(at);
                    handle_change(change, &outputs, quiet, &late_tx).await;
                }
                None => open = false,
            },
            Some((id, summary)) = late_rx.recv() => apply_late_summary(&id, summary, &outputs).await,
            else => break,
        }
        if !open && late_tx.strong_count() == 1 && late_rx.is_empty() {
            // Intake ended and no summary is still being written.
            break;
        }
    }
}

/// Summarizes `facts` within the deadline. On time: the summary. Late: the
/// template now, and the summarizer's answer sent to `late` when it comes.
async fn summarize_within(
    o: &Outputs,
    facts: crate::summarize::Facts,
    late: &mpsc::Sender<(String, Summary)>,
) -> Summary {
    let summarizer = o.summarizer.clone();
    let id = facts.incident_id.clone();
    let fallback = crate::summarize::template(&facts);
    let mut task = tokio::spawn(async move { summarizer.summarize(&facts).await });
    match tokio::time::timeout(o.summary_deadline, &mut task).await {
        Ok(Ok(summary)) => summary,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "summarizer task failed; using the template");
            Summary {
                note: Some("summarizer failed".into()),
                ..fallback
            }
        }
        Err(_) => {
            o.metrics.summary_late();
            let late = late.clone();
            tokio::spawn(async move {
                if let Ok(summary) = task.await {
                    let _ = late.send((id, summary)).await;
                }
            });
            Summary {
                note: Some(format!(
                    "summary not ready within {} ms; posted with the template",
                    o.summary_deadline.as_millis()
                )),
                ..fallback
            }
        }
    }
}

/// A summary that missed its deadline arrived: keep it and tell the notifier,
/// unless it is no better than what the incident already shows.
async fn apply_late_summary(id: &str, summary: Summary, o: &Outputs) {
    if summary.source != SummarySource::Llm {
        return;
    }
    let Ok(Some(rec)) = o.store.get(id).await else {
        return;
    };
    let mut incident = rec.incident;
    if incident.summary_source == SummarySource::Llm {
        return;
    }
    let entry = TimelineEntry {
        at: incident.updated_at,
        what: "summary_updated".into(),
        by: "faultline".into(),
        detail: format!(
            "LLM summary arrived after the deadline (prompt {})",
            summary.prompt_version.as_deref().unwrap_or("?")
        ),
    };
    summary.apply(&mut incident);
    if let Err(e) = o.store.upsert(&incident, &[entry], None).await {
        tracing::error!(incident_id = %id, error = %e, "storing the late summary failed");
        return;
    }
    if o.store
        .mute(&incident, chrono::Utc::now())
        .await
        .ok()
        .flatten()
        .is_none()
    {
        if let Err(e) = o.notifier.summary_updated(&incident).await {
            o.metrics.notify_failure();
            tracing::error!(incident_id = %id, error = %e, "notifying the late summary failed");
        }
    }
}

/// The incident's page under the public base URL.
pub fn page_url(base: &str, id: &str) -> String {
    format!("{}/ui/incidents/{id}", base.trim_end_matches('/'))
}

/// When a resolved incident ended, event time.
fn resolved_ms(i: &Incident) -> i64 {
    i.resolved_at.unwrap_or(i.updated_at).timestamp_millis()
}

/// `quiet`: a change the previous run notified; summarized and stored, not
/// notified again.
async fn handle_change(
    change: Change,
    o: &Outputs,
    quiet: bool,
    late: &mpsc::Sender<(String, Summary)>,
) {
    let Change {
        transition,
        notify,
        mut timeline,
        point,
    } = change;
    // On a cluster, an incident re-derived after a takeover keeps the id it
    // was posted with, and a change another detector term already notified
    // is quiet.
    let (transition, told) = match &o.claims {
        Some(claims) => claims.adopt(transition).await,
        None => (transition, false),
    };
    // A former detector told this outage's end: nothing of it is news.
    let mut quiet = quiet || told;
    let mut claimed = None;
    if let (true, false, Some(claims)) = (notify, quiet, &o.claims) {
        let key = crate::cluster::ledger::key_of(&transition);
        match claims.claim(&key).await {
            crate::cluster::ledger::Claim::Notify { key, revision } => {
                claimed = Some((claims.clone(), key, revision));
            }
            crate::cluster::ledger::Claim::Unclaimed => {}
            crate::cluster::ledger::Claim::Quiet => {
                quiet = true;
                if let Transition::Resolved(i) = &transition {
                    // Notified by a former term, which may have died before
                    // ending the episode.
                    claims.end_episode(&i.id, resolved_ms(i)).await;
                }
            }
        }
    }
    let mut incident = transition.incident().clone();
    incident.episode.url = o
        .public_url
        .as_deref()
        .map(|base| page_url(base, &incident.id));
    let span = tracing::info_span!("incident", incident_id = %incident.id, rule = %incident.rule);
    let _enter = span.enter();
    let rules = o.rules.get();
    let rule = rules.get(&incident.rule);
    // A rule removed by a reload resolves its incidents with no definition to
    // summarize from, and news of an open incident (thread updates) is not
    // summarized again: both keep the summary they were posted with.
    let summarize = matches!(transition, Transition::Opened(_) | Transition::Resolved(_));
    let prev = if notify && !quiet && rule.is_some() && summarize {
        None
    } else {
        o.store.get(&incident.id).await.ok().flatten()
    };
    if let (true, None) = (notify, &prev) {
        if let Some(rule) = rule {
            let facts = crate::summarize::Facts::new(&incident, &rule.rule);
            let summary = summarize_within(o, facts, late).await;
            if let Some(note) = &summary.note {
                timeline.push(TimelineEntry {
                    at: incident.updated_at,
                    what: "summary_fallback".into(),
                    by: "faultline".into(),
                    detail: note.clone(),
                });
            }
            summary.apply(&mut incident);
        }
    } else if let (Some(rule), true) = (
        rule,
        prev.as_ref()
            .is_some_and(|p| p.incident.summary_source == SummarySource::Template),
    ) {
        // Routine refresh of a template summary: rewritten from the numbers
        // now (deterministic and cheap), so it never goes stale.
        summarize_template(&mut incident, rule);
    } else if let Some(prev) = prev {
        // Routine refresh: keep the (model's) summary written when it was
        // last notified.
        incident.title = prev.incident.title;
        incident.summary = prev.incident.summary;
        incident.summary_source = prev.incident.summary_source;
        incident.prompt_version = prev.incident.prompt_version;
    }
    let transition = match transition {
        Transition::Opened(_) => {
            o.metrics.incident_opened();
            Transition::Opened(incident.clone())
        }
        Transition::Updated(_) => Transition::Updated(incident.clone()),
        Transition::Resolved(_) => {
            o.metrics.incident_resolved();
            Transition::Resolved(incident.clone())
        }
    };
    // A silence (or a person's resolve) mutes the notification, never the record.
    // Silences are set by people in wall time, so they are checked against it.
    let mute = if notify && !quiet {
        o.store
            .mute(&incident, chrono::Utc::now())
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "checking silences failed; notifying");
                None
            })
    } else {
        None
    };
    if let Some(why) = &mute {
        o.metrics.notification_muted();
        tracing::info!(%why, "not notified");
        timeline.push(TimelineEntry {
            at: incident.updated_at,
            what: "not_notified".into(),
            by: "faultline".into(),
            detail: why.to_string(),
        });
    }
    let started = std::time::Instant::now();
    if let Err(e) = o.store.upsert(&incident, &timeline, point).await {
        tracing::error!(error = %e, "storing the incident failed");
    }
    o.metrics.store_write(started.elapsed());
    if notify && !quiet {
        o.metrics.detection();
        if mute.is_some() {
            // Recorded above; nobody is paged.
        } else if let Err(e) = o.notifier.notify(&transition).await {
            o.metrics.notify_failure();
            tracing::error!(error = %e, "notifying failed");
        }
    }
    if let Some((claims, key, revision)) = claimed {
        // Done once the notifier delivered it (Slack queues): a detector that
        // dies before leaves the claim pending for the next one to take over.
        let notifier = o.notifier.clone();
        let ended = matches!(transition, Transition::Resolved(_))
            .then(|| (incident.id.clone(), resolved_ms(&incident)));
        tokio::spawn(async move {
            notifier.flush().await;
            claims.done(&key, revision).await;
            if let Some((id, at)) = ended {
                claims.end_episode(&id, at).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::notify::NotifyError;
    use crate::store::memory::fixtures;
    use crate::store::MemoryStore;
    use crate::summarize::Facts;

    /// Answers with an LLM summary after `delay`.
    struct Slow {
        delay: Duration,
    }

    #[async_trait]
    impl Summarizer for Slow {
        async fn summarize(&self, facts: &Facts) -> Summary {
            tokio::time::sleep(self.delay).await;
            Summary {
                title: format!("LLM title for {}", facts.incident_id),
                summary: "LLM summary".into(),
                source: SummarySource::Llm,
                prompt_version: Some("p1".into()),
                note: None,
            }
        }
    }

    #[derive(Default)]
    struct Heard(Mutex<Vec<String>>);

    #[async_trait]
    impl Notifier for Heard {
        async fn notify(&self, t: &Transition) -> Result<(), NotifyError> {
            let i = t.incident();
            self.0
                .lock()
                .unwrap()
                .push(format!("notify:{}:{:?}", i.title, i.summary_source));
            Ok(())
        }
        async fn summary_updated(&self, i: &Incident) -> Result<(), NotifyError> {
            self.0.lock().unwrap().push(format!(
                "summary_updated:{}:{:?}",
                i.title, i.summary_source
            ));
            Ok(())
        }
    }

    async fn run(delay_ms: u64, deadline_ms: u64) -> (Arc<MemoryStore>, Vec<String>) {
        let store = Arc::new(MemoryStore::default());
        let heard = Arc::new(Heard::default());
        let outputs = Outputs {
            store: store.clone(),
            notifier: heard.clone(),
            summarizer: Arc::new(Slow {
                delay: Duration::from_millis(delay_ms),
            }),
            metrics: Arc::new(Metrics::new()),
            rules: Arc::new(crate::reload::LiveRules::new(RuleSet::embedded())),
            summary_deadline: Duration::from_millis(deadline_ms),
            public_url: Some("https://faultline.example.com/".into()),
            claims: None,
        };
        let (tx, rx) = mpsc::channel(4);
        tx.send(Change {
            transition: Transition::Opened(fixtures::incident("inc_1", 1_000_000)),
            notify: true,
            timeline: Vec::new(),
            point: None,
        })
        .await
        .unwrap();
        drop(tx);
        // Returns only once the late summary, if any, has been applied.
        run_outputs(rx, outputs).await;
        let heard = heard.0.lock().unwrap().clone();
        (store, heard)
    }

    #[tokio::test]
    async fn a_summary_on_time_goes_out_with_the_incident() {
        let (store, heard) = run(0, 5_000).await;
        assert_eq!(heard, vec!["notify:LLM title for inc_1:Llm"]);
        let rec = store.get("inc_1").await.unwrap().unwrap();
        assert_eq!(rec.incident.summary_source, SummarySource::Llm);
        assert!(rec.timeline.iter().all(|e| e.what != "summary_fallback"));
        // The page under FAULTLINE_PUBLIC_URL, one slash between.
        assert_eq!(
            rec.incident.episode.url.as_deref(),
            Some("https://faultline.example.com/ui/incidents/inc_1")
        );
    }

    #[tokio::test]
    async fn a_late_summary_does_not_delay_the_post_and_is_applied_when_it_comes() {
        let (store, heard) = run(300, 20).await;
        assert_eq!(heard.len(), 2, "{heard:?}");
        assert!(
            heard[0].starts_with("notify:") && heard[0].ends_with(":Template"),
            "{heard:?}"
        );
        assert_eq!(heard[1], "summary_updated:LLM title for inc_1:Llm");
        let rec = store.get("inc_1").await.unwrap().unwrap();
        assert_eq!(rec.incident.summary_source, SummarySource::Llm);
        assert_eq!(rec.incident.prompt_version.as_deref(), Some("p1"));
        let whats: Vec<&str> = rec.timeline.iter().map(|e| e.what.as_str()).collect();
        assert!(whats.contains(&"summary_fallback"), "{whats:?}");
        assert!(whats.contains(&"summary_updated"), "{whats:?}");
    }
}
