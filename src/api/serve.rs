//! The accept loop: HTTP/1.1 connections with a header-read timeout and caps on
//! connections, in total and per client address.
//!
//! `axum::serve` reads request headers without a deadline and accepts every
//! connection, so a few hundred sockets each trickling a header line (slowloris)
//! hold every file descriptor and `/healthz` stops answering. Here:
//!
//! - a request's headers must arrive within `header_read_timeout`, or the
//!   connection is closed (hyper's own timer; the request timeout only starts
//!   once the headers are in);
//! - at most `max_connections_per_client` connections per client IP address
//!   and `max_connections` in all are open at once; a connection past either
//!   cap is closed as soon as it is accepted, and counted in
//!   `faultline_http_connections_refused_total`;
//! - `max_connections` is lowered to leave headroom under the process's open
//!   file limit, whatever the configuration says;
//! - when `accept` fails (out of descriptors), the loop pauses briefly instead
//!   of spinning.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

use super::{router, AppState};

/// Descriptors kept free for everything but client connections (stores,
/// NATS, files, the listener itself).
const FD_HEADROOM: usize = 64;
/// How long a finished server waits for connections in flight.
const DRAIN_FOR: Duration = Duration::from_secs(10);

/// Connection limits, from `[api]`.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Most open connections.
    pub total: usize,
    /// Most open connections from one IP address.
    pub per_client: usize,
    /// Longest the headers of one request may take to arrive.
    pub header_read_timeout: Duration,
}

/// Open connections, in total and by client address.
#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// A slot in [`Open`], given back when the connection ends.
struct Slot {
    open: Arc<Mutex<Open>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // A std Mutex: the lock is never held across an await.
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_client.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.by_client.remove(&self.ip);
            }
        }
    }
}

fn admit(open: &Arc<Mutex<Open>>, ip: IpAddr, limits: &ConnLimits) -> Option<Slot> {
    let mut o = open.lock().unwrap_or_else(|e| e.into_inner());
    let mine = o.by_client.get(&ip).copied().unwrap_or(0);
    if o.total >= limits.total || mine >= limits.per_client {
        return None;
    }
    o.total += 1;
    *o.by_client.entry(ip).or_insert(0) += 1;
    Some(Slot {
        open: Arc::clone(open),
        ip,
    })
}

/// The soft limit on open files, from `/proc/self/limits` (Linux); `None`
/// elsewhere or when unlimited.
fn open_file_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// `limits.total`, lowered to leave [`FD_HEADROOM`] descriptors free.
pub fn effective_total(limits: &ConnLimits) -> usize {
    match open_file_limit() {
        Some(fds) => limits.total.min(fds.saturating_sub(FD_HEADROOM).max(1)),
        None => limits.total,
    }
}

/// Serves `router(state)` on `listener` until `shutdown` completes, then lets
/// requests in flight finish (for at most [`DRAIN_FOR`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut limits = state.conn_limits;
    limits.total = effective_total(&limits);
    let metrics = Arc::clone(&state.metrics);
    let app = router(state);
    let open = Arc::new(Mutex::new(Open::default()));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and its kin: the caps should prevent it; if not,
                    // give connections in flight a moment to end.
                    tracing::warn!(error = %e, "api: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = admit(&open, peer.ip(), &limits) else {
            metrics.http_connection_refused();
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let conn = http.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A client that hangs up or times out is not the server's error.
            let _ = conn.await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN_FOR, graceful.shutdown()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_per_client_and_in_total_and_free_on_drop() {
        let limits = ConnLimits {
            total: 3,
            per_client: 2,
            header_read_timeout: Duration::from_secs(1),
        };
        let open = Arc::new(Mutex::new(Open::default()));
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let a1 = admit(&open, a, &limits).expect("first");
        let _a2 = admit(&open, a, &limits).expect("second");
        assert!(admit(&open, a, &limits).is_none(), "per-client cap");
        let _b1 = admit(&open, b, &limits).expect("another client");
        assert!(admit(&open, b, &limits).is_none(), "total cap");
        drop(a1);
        assert!(admit(&open, a, &limits).is_some(), "a slot freed");
    }
}
