//! The detector's clock: how far every live replica has reported its counts.
//!
//! A single process moves its watermark with the wall clock, so a silent
//! stream is seen. The detector cannot: its input is other processes' counts,
//! and when they cannot reach it (the partials stream electing a leader after
//! a NATS node died, for ten seconds here) the wall clock would evaluate those
//! steps empty, drop the counts arriving after them as late, and could read
//! the gap as a volume drop. So the detector's time is the replicas' time:
//! every flush (a heartbeat when nothing was counted) carries the replica's
//! wall clock (`Partial::at`), and the clock is the earliest of the replicas
//! heard from recently, never moving back:
//!
//! - every replica silent (the stream is down): the clock stops, and the
//!   counts waiting in the replicas' outboxes are on time when they arrive;
//! - one replica silent (killed): the clock waits for it `idle` past the
//!   newest flush, long enough (the events' ack wait) for its unacknowledged
//!   events to be redelivered to, and counted by, the others; then it is
//!   forgotten and the clock follows the rest;
//! - no traffic at all: heartbeats still move the clock (a stopped flow is
//!   seen, as in a single process).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The earliest flush time among the replicas heard from recently.
#[derive(Debug)]
pub struct CountsClock {
    idle: Duration,
    /// Each replica's latest flush time (epoch ms) and when it arrived here.
    latest: HashMap<String, (i64, Instant)>,
    /// When counts started arriving again after a silence of every replica.
    resumed: Option<Instant>,
    last_heard: Option<Instant>,
    now: Option<i64>,
}

impl CountsClock {
    /// A silent replica is waited for `idle` (of this process's time, while
    /// the others are heard from).
    pub fn new(idle: Duration) -> CountsClock {
        CountsClock {
            idle,
            latest: HashMap::new(),
            resumed: None,
            last_heard: None,
            now: None,
        }
    }

    /// Notes `node`'s flush at `at` (its wall clock, epoch ms), read here at
    /// `heard`; returns the clock.
    pub fn note(&mut self, node: &str, at: i64, heard: Instant) -> i64 {
        // A silence of everyone is the stream's, not a replica's: the time
        // a replica is waited for counts from when the counts came back.
        let gap = self.idle / 4;
        if self
            .last_heard
            .is_none_or(|t| heard.saturating_duration_since(t) > gap)
        {
            self.resumed = Some(heard);
        }
        self.last_heard = Some(heard);
        let entry = self.latest.entry(node.to_string()).or_insert((at, heard));
        *entry = (entry.0.max(at), heard);
        let resumed = self.resumed.unwrap_or(heard);
        if heard.saturating_duration_since(resumed) > self.idle {
            let idle = self.idle;
            self.latest
                .retain(|_, (_, t)| heard.saturating_duration_since(*t) <= idle);
        }
        self.advance(at)
    }

    /// Notes `node`'s last flush (it is stopping): the clock no longer waits
    /// for it. Returns the clock.
    pub fn leave(&mut self, node: &str, at: i64, heard: Instant) -> i64 {
        self.note(node, at, heard);
        self.latest.remove(node);
        self.advance(at)
    }

    /// Moves the clock to the earliest replica's flush (`fallback` when none
    /// is waited for), never back.
    fn advance(&mut self, fallback: i64) -> i64 {
        let earliest = self
            .latest
            .values()
            .map(|(t, _)| *t)
            .min()
            .unwrap_or(fallback);
        let now = self.now.map_or(earliest, |n| n.max(earliest));
        self.now = Some(now);
        now
    }

    /// The clock, once any replica has flushed.
    pub fn now(&self) -> Option<i64> {
        self.now
    }

    /// Replicas waited for now.
    pub fn replicas(&self) -> usize {
        self.latest.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_clock_is_the_slowest_live_replica() {
        let t0 = Instant::now();
        let mut c = CountsClock::new(ms(4000));
        assert_eq!(c.now(), None);
        assert_eq!(c.note("a", 10_000, t0), 10_000);
        assert_eq!(c.note("b", 10_400, t0 + ms(100)), 10_000);
        assert_eq!(c.note("a", 10_500, t0 + ms(500)), 10_400);
        assert_eq!(c.note("b", 11_000, t0 + ms(900)), 10_500);
        assert_eq!(c.replicas(), 2);
    }

    #[test]
    fn a_silent_replica_holds_the_clock_until_idle_then_is_forgotten() {
        let t0 = Instant::now();
        let mut c = CountsClock::new(ms(4000));
        c.note("a", 10_000, t0);
        c.note("b", 10_000, t0);
        // `b` dies; `a` goes on flushing every 500 ms.
        for i in 1..=8 {
            let t = 10_000 + i * 500;
            assert_eq!(
                c.note("a", t, t0 + ms(i as u64 * 500)),
                10_000,
                "held at a={t}"
            );
        }
        // More than 4 s since b was heard: it is no longer waited for.
        assert_eq!(c.note("a", 14_500, t0 + ms(4500)), 14_500);
        assert_eq!(c.replicas(), 1);
        // b back (restarted) behind the clock: the clock does not go back.
        assert_eq!(c.note("b", 14_200, t0 + ms(4600)), 14_500);
        assert_eq!(c.note("b", 15_000, t0 + ms(5000)), 14_500);
        assert_eq!(c.note("a", 15_500, t0 + ms(5000)), 15_000);
    }

    #[test]
    fn a_replica_that_said_goodbye_is_not_waited_for() {
        let t0 = Instant::now();
        let mut c = CountsClock::new(ms(4000));
        c.note("a", 10_000, t0);
        c.note("b", 10_000, t0);
        assert_eq!(c.leave("b", 10_500, t0 + ms(500)), 10_000);
        assert_eq!(c.note("a", 10_500, t0 + ms(500)), 10_500);
        assert_eq!(c.note("a", 11_000, t0 + ms(1000)), 11_000);
        assert_eq!(c.replicas(), 1);
    }

    #[test]
    fn when_every_replica_is_silent_the_clock_stops_and_the_backlog_is_on_time() {
        let t0 = Instant::now();
        let mut c = CountsClock::new(ms(4000));
        c.note("a", 10_000, t0);
        c.note("b", 10_000, t0);
        // The stream is down 10 s: nothing arrives, the clock stays. Then
        // the outboxes drain, `a`'s whole backlog before `b`'s.
        let back = t0 + ms(10_000);
        for (i, t) in (10_500..=20_000).step_by(500).enumerate() {
            assert_eq!(c.note("a", t, back + ms(i as u64)), 10_000);
        }
        for (i, t) in (10_500..=20_000).step_by(500).enumerate() {
            assert_eq!(c.note("b", t, back + ms(100 + i as u64)), t);
        }
        assert_eq!(c.replicas(), 2);
    }

    #[test]
    fn replayed_counts_forget_nobody() {
        // A new detector reads an hour of counts in a second: `b` died at
        // the end of it and is waited for only once the replay is over.
        let t0 = Instant::now();
        let mut c = CountsClock::new(ms(4000));
        for (i, t) in (0..3_600_000).step_by(500).enumerate() {
            let heard = t0 + Duration::from_micros(i as u64 * 100);
            c.note("a", t, heard);
            if t < 3_500_000 {
                c.note("b", t, heard);
            }
        }
        assert_eq!(c.now(), Some(3_499_500));
        // Live, `a` flushes every 500 ms; `b` was last heard 0.7 s in.
        let mut now = 0;
        for k in 0..9u64 {
            now = c.note("a", 3_600_000 + k as i64 * 500, t0 + ms(1000 + k * 500));
            if k < 8 {
                assert_eq!(now, 3_499_500, "b waited for at {k}");
            }
        }
        assert_eq!(now, 3_604_000);
        assert_eq!(c.replicas(), 1);
    }
}
