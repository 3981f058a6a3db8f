//! Bounded row buffers, one per table, each emptied by a flusher task.
//!
//! Producers (the engine loop, the outputs, the audit sinks) call
//! [`Buffer::push`], which takes a short lock and never waits on ClickHouse.
//! The flusher sends up to `batch_rows` rows per INSERT every
//! `flush_interval` (sooner when a batch is full). A failed INSERT puts its
//! rows back at the front and is retried with backoff, so rows keep their
//! order and nothing buffered is lost while ClickHouse is down, up to the
//! bound: rows in flight count toward it, and past it new rows are dropped,
//! counted (`faultline_store_rows_dropped_total{table}`) and logged.
//!
//! A retried INSERT that in fact reached the server writes its rows twice;
//! every table that must not double count is a `ReplacingMergeTree` keyed on
//! the row's identity and read with `FINAL` (or summed knowing merges collapse
//! duplicates), so that is harmless.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clickhouse::{Client, Row, RowWrite};
use serde::Serialize;
use tokio::sync::Notify;

use crate::metrics::Metrics;

/// Shared by every buffer of a store: the gauge of rows held.
#[derive(Debug, Default)]
pub(crate) struct Depth(AtomicU64);

impl Depth {
    // Buffers add under their lock before rows can be taken, so a buffer's subtract
    // never overtakes its add. The arithmetic still wraps rather than panics: a
    // gauge must not take the daemon down, and the atomic itself wraps anyway.
    fn add(&self, n: u64, metrics: &Metrics) {
        let v = self.0.fetch_add(n, Ordering::AcqRel).wrapping_add(n);
        metrics.set_store_buffer_depth(v);
    }
    fn sub(&self, n: u64, metrics: &Metrics) {
        let v = self.0.fetch_sub(n, Ordering::AcqRel).wrapping_sub(n);
        metrics.set_store_buffer_depth(v);
    }
    /// Rows held now, across tables (in flight included).
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

struct State<R> {
    rows: VecDeque<R>,
    /// Rows taken by the flusher and not yet confirmed.
    inflight: usize,
}

/// The rows waiting for one table.
pub(crate) struct Buffer<R> {
    pub table: &'static str,
    bound: usize,
    batch: usize,
    state: Mutex<State<R>>,
    wake: Notify,
    dropped: AtomicU64,
    depth: Arc<Depth>,
    metrics: Arc<Metrics>,
}

impl<R> Buffer<R> {
    pub fn new(
        table: &'static str,
        bound: usize,
        batch: usize,
        depth: Arc<Depth>,
        metrics: Arc<Metrics>,
    ) -> Buffer<R> {
        Buffer {
            table,
            bound: bound.max(1),
            batch: batch.max(1),
            state: Mutex::new(State {
                rows: VecDeque::new(),
                inflight: 0,
            }),
            wake: Notify::new(),
            dropped: AtomicU64::new(0),
            depth,
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<R>> {
        // Rows are plain data: a panic elsewhere leaves them usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds rows; those past the bound are dropped and counted. Never waits.
    pub fn push_all(&self, rows: impl IntoIterator<Item = R>) {
        let (dropped, full_batch) = {
            let mut st = self.lock();
            let (mut kept, mut dropped) = (0u64, 0u64);
            for r in rows {
                if st.rows.len() + st.inflight >= self.bound {
                    dropped += 1;
                } else {
                    st.rows.push_back(r);
                    kept += 1;
                }
            }
            // Counted before the lock is released: once it is, the flusher may
            // take, send and confirm these rows, and its subtract must not come
            // first (it wrapped the gauge and overflowed the add: seen in CI).
            if kept > 0 {
                self.depth.add(kept, &self.metrics);
            }
            (dropped, st.rows.len() >= self.batch)
        };
        if dropped > 0 {
            self.metrics.store_rows_dropped(self.table, dropped);
            let before = self.dropped.fetch_add(dropped, Ordering::Relaxed);
            // Log the first drop and then every power of two, not every row.
            let after = before + dropped;
            if before == 0 || (before.leading_zeros() != after.leading_zeros()) {
                tracing::warn!(
                    table = self.table,
                    dropped_total = after,
                    bound = self.bound,
                    "ClickHouse buffer full; rows dropped"
                );
            }
        }
        if full_batch {
            self.wake.notify_one();
        }
    }

    /// Adds one row.
    pub fn push(&self, row: R) {
        self.push_all(std::iter::once(row));
    }

    /// Rows dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Rows held (in flight included).
    pub fn len(&self) -> usize {
        let st = self.lock();
        st.rows.len() + st.inflight
    }

    /// Asks the flusher to send now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn take(&self) -> Vec<R> {
        let mut st = self.lock();
        let n = st.rows.len().min(self.batch);
        st.inflight += n;
        st.rows.drain(..n).collect()
    }

    fn confirm(&self, n: usize) {
        self.lock().inflight -= n;
        self.depth.sub(n as u64, &self.metrics);
        self.metrics.store_rows(self.table, n as u64);
    }

    fn give_back(&self, rows: Vec<R>) {
        let mut st = self.lock();
        st.inflight -= rows.len();
        for r in rows.into_iter().rev() {
            st.rows.push_front(r);
        }
    }
}

/// Sends one batch; the rows come back on failure.
async fn send<R>(client: &Client, table: &str, rows: &[R]) -> Result<(), clickhouse::error::Error>
where
    R: Row + RowWrite + for<'a> Row<Value<'a> = R> + Serialize,
{
    let mut insert = client
        .insert::<R>(table)
        .await?
        .with_timeouts(Some(Duration::from_secs(20)), Some(Duration::from_secs(30)));
    for r in rows {
        insert.write(r).await?;
    }
    insert.end().await
}

/// Empties `buf` into `table` until `stop` is set and the buffer is empty (or
/// the stop deadline passed: what is left is counted as dropped).
pub(crate) async fn flush_loop<R>(
    buf: Arc<Buffer<R>>,
    client: Client,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    R: Row + RowWrite + for<'a> Row<Value<'a> = R> + Serialize + Send + Sync + 'static,
{
    let mut backoff = Duration::from_millis(100);
    let mut failing = false;
    loop {
        // A dropped sender (the store is gone) counts as a stop.
        let stopping = *stop.borrow() || stop.has_changed().is_err();
        let rows = buf.take();
        if rows.is_empty() {
            if stopping {
                return;
            }
            tokio::select! {
                _ = buf.wake.notified() => {}
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => {}
            }
            continue;
        }
        match send(&client, buf.table, &rows).await {
            Ok(()) => {
                if failing {
                    tracing::info!(table = buf.table, "ClickHouse writes resumed");
                    failing = false;
                }
                backoff = Duration::from_millis(100);
                buf.confirm(rows.len());
                // Partial batch: wait for more rather than sending tiny inserts.
                if buf.len() < buf.batch && !stopping {
                    tokio::select! {
                        _ = buf.wake.notified() => {}
                        _ = tokio::time::sleep(interval) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(table = buf.table, error = %e, rows = rows.len(),
                        "ClickHouse insert failed; keeping the rows and retrying");
                    failing = true;
                }
                buf.give_back(rows);
                if stopping {
                    // Shutdown does not wait for a server that is down; the
                    // caller's deadline decides how long to try.
                    tokio::time::sleep(backoff).await;
                } else {
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => {}
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer(bound: usize, batch: usize) -> (Buffer<u32>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let b = Buffer::new(
            "events",
            bound,
            batch,
            Arc::new(Depth::default()),
            metrics.clone(),
        );
        (b, metrics)
    }

    #[test]
    fn rows_past_the_bound_are_dropped_and_counted_in_flight_included() {
        let (b, metrics) = buffer(5, 2);
        b.push_all(0..4);
        let taken = b.take();
        assert_eq!(taken, [0, 1]);
        // Two in flight and two waiting: one more fits, the rest is dropped.
        b.push_all(4..8);
        assert_eq!(b.len(), 5);
        assert_eq!(b.dropped(), 3);
        assert_eq!(metrics.store_dropped().get("events"), Some(&3));
        assert_eq!(b.depth.get(), 5);
        b.confirm(taken.len());
        assert_eq!(b.depth.get(), 3);
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn a_subtract_that_overtakes_its_add_does_not_panic() {
        let metrics = Metrics::new();
        let d = Depth::default();
        d.sub(3, &metrics);
        d.add(3, &metrics);
        assert_eq!(d.get(), 0);
    }

    #[test]
    fn depth_returns_to_zero_under_a_concurrent_flusher() {
        let (b, _) = buffer(1_000_000, 7);
        let b = Arc::new(b);
        let flusher = {
            let b = b.clone();
            std::thread::spawn(move || {
                let mut confirmed = 0;
                while confirmed < 20_000 {
                    let rows = b.take();
                    confirmed += rows.len();
                    b.confirm(rows.len());
                }
            })
        };
        for i in 0..10_000u32 {
            b.push_all([i, i]);
        }
        flusher.join().expect("no panic in the flusher");
        assert_eq!(b.depth.get(), 0);
        assert_eq!(b.len(), 0);
    }

    #[test]
    fn a_failed_batch_goes_back_in_order() {
        let (b, _) = buffer(100, 3);
        b.push_all(0..5);
        let taken = b.take();
        b.push(5);
        b.give_back(taken);
        assert_eq!(b.take(), [0, 1, 2]);
        assert_eq!(b.take(), [3, 4, 5]);
        assert!(b.take().is_empty());
    }
}
