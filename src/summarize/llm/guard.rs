//! What keeps the LLM off the critical path and within cost: a circuit
//! breaker, an hourly token budget and a bounded cache of summaries by fact
//! hash. All three take the time as an argument ([`Instant`]), so they are
//! tested without sleeping.
//!
//! Each uses a std `Mutex`: the lock is never held across an `.await`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Stops calling an endpoint that keeps failing.
///
/// Closed: calls go through; `threshold` consecutive failures open it. Open:
/// calls are refused until `cooldown` has passed. Then one trial call goes
/// through (half-open): a success closes it, a failure opens it again.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen,
}

#[derive(Debug)]
struct BreakerState {
    phase: Phase,
    failures: u32,
}

impl Breaker {
    /// Opens after `threshold` consecutive failures, for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(BreakerState {
                phase: Phase::Closed,
                failures: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a call may go out now. In half-open, only the first caller gets
    /// through; the others are refused until it reports.
    pub fn allow(&self, now: Instant) -> bool {
        let mut s = self.lock();
        match s.phase {
            Phase::Closed => true,
            Phase::Open { until } if now >= until => {
                s.phase = Phase::HalfOpen;
                true
            }
            Phase::Open { .. } | Phase::HalfOpen => false,
        }
    }

    /// The endpoint answered (even with invalid content: it is up).
    pub fn success(&self) {
        let mut s = self.lock();
        s.phase = Phase::Closed;
        s.failures = 0;
    }

    /// The endpoint failed (timeout, 429, 5xx, refused connection).
    pub fn failure(&self, now: Instant) {
        let mut s = self.lock();
        s.failures = s.failures.saturating_add(1);
        if s.phase == Phase::HalfOpen || s.failures >= self.threshold {
            s.phase = Phase::Open {
                until: now + self.cooldown,
            };
        }
    }

    /// Whether it is open (refusing) at `now`.
    pub fn is_open(&self, now: Instant) -> bool {
        matches!(self.lock().phase, Phase::Open { until } if now < until)
    }
}

/// Caps the tokens spent in any sliding hour.
#[derive(Debug)]
pub struct TokenBudget {
    per_hour: u64,
    spent: Mutex<VecDeque<(Instant, u64)>>,
}

const HOUR: Duration = Duration::from_secs(3600);

impl TokenBudget {
    /// At most `per_hour` tokens in any hour.
    pub fn new(per_hour: u64) -> TokenBudget {
        TokenBudget {
            per_hour,
            spent: Mutex::new(VecDeque::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Instant, u64)>> {
        self.spent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tokens spent in the hour before `now`.
    pub fn used(&self, now: Instant) -> u64 {
        let mut q = self.lock();
        while q
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= HOUR)
        {
            q.pop_front();
        }
        q.iter().map(|(_, n)| n).sum()
    }

    /// Whether `estimate` more tokens fit in the hour.
    pub fn allows(&self, now: Instant, estimate: u64) -> bool {
        self.used(now).saturating_add(estimate) <= self.per_hour
    }

    /// `tokens` were spent at `now`.
    pub fn spend(&self, now: Instant, tokens: u64) {
        if tokens > 0 {
            self.lock().push_back((now, tokens));
        }
    }
}

/// A bounded map from fact hash to a value; the oldest entry goes first.
#[derive(Debug)]
pub struct Cache<V> {
    capacity: usize,
    inner: Mutex<(HashMap<String, V>, VecDeque<String>)>,
}

impl<V: Clone> Cache<V> {
    /// Keeps at most `capacity` entries (0: keeps none).
    pub fn new(capacity: usize) -> Cache<V> {
        Cache {
            capacity,
            inner: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<String, V>, VecDeque<String>)> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value kept for `key`.
    pub fn get(&self, key: &str) -> Option<V> {
        self.lock().0.get(key).cloned()
    }

    /// Keeps `value` for `key`, evicting the oldest entry when full.
    pub fn put(&self, key: String, value: V) {
        if self.capacity == 0 {
            return;
        }
        let mut g = self.lock();
        let (map, order) = &mut *g;
        if map.insert(key.clone(), value).is_none() {
            order.push_back(key);
            while order.len() > self.capacity {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.lock().0.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_cools_down_and_half_opens() {
        let t0 = Instant::now();
        let b = Breaker::new(3, Duration::from_secs(60));
        assert!(b.allow(t0));
        b.failure(t0);
        b.failure(t0);
        assert!(b.allow(t0), "two failures of three: still closed");
        b.success();
        b.failure(t0);
        b.failure(t0);
        assert!(b.allow(t0), "a success resets the count");
        b.failure(t0);
        assert!(b.is_open(t0));
        assert!(!b.allow(t0 + Duration::from_secs(59)));
        // Cool-down over: one trial, the next caller still waits.
        let t1 = t0 + Duration::from_secs(60);
        assert!(b.allow(t1));
        assert!(!b.allow(t1));
        // The trial fails: open again for a full cool-down.
        b.failure(t1);
        assert!(!b.allow(t1 + Duration::from_secs(30)));
        let t2 = t1 + Duration::from_secs(60);
        assert!(b.allow(t2));
        b.success();
        assert!(b.allow(t2) && b.allow(t2));
    }

    #[test]
    fn budget_caps_a_sliding_hour() {
        let t0 = Instant::now();
        let b = TokenBudget::new(1000);
        assert!(b.allows(t0, 1000));
        assert!(!b.allows(t0, 1001));
        b.spend(t0, 600);
        assert!(b.allows(t0, 400));
        assert!(!b.allows(t0, 401));
        b.spend(t0 + Duration::from_secs(1800), 300);
        assert_eq!(b.used(t0 + Duration::from_secs(1800)), 900);
        // The first spend leaves the window an hour later.
        assert_eq!(b.used(t0 + Duration::from_secs(3600)), 300);
        assert!(b.allows(t0 + Duration::from_secs(3600), 700));
    }

    #[test]
    fn cache_is_bounded_oldest_first() {
        let c = Cache::new(2);
        c.put("a".into(), 1);
        c.put("b".into(), 2);
        c.put("a".into(), 10);
        assert_eq!(c.get("a"), Some(10));
        c.put("c".into(), 3);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("a"), None);
        assert_eq!(c.get("b"), Some(2));
        assert_eq!(c.get("c"), Some(3));
        let none: Cache<u32> = Cache::new(0);
        none.put("a".into(), 1);
        assert!(none.is_empty());
    }
}
