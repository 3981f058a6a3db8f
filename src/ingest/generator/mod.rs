//! A deterministic generator of realistic payment traffic with labelled faults.
//!
//! The demo, the evaluation (`faultline gen` / `faultline eval`) and the
//! benchmarks all need traffic that looks like production and whose incidents
//! are known in advance. A [`Scenario`] says what happens when (faults that must
//! be caught, quiet cases that must not be); a [`Generator`] turns it into NDJSON
//! lines of schema v1 events, in arrival order; [`Scenario::labels`] is the
//! answer key.
//!
//! # Traffic model
//!
//! - Kinds: `auth` (~80%), `webhook` (~10%) and `settlement` (~10%, a steady
//!   flow per provider and region that ignores the daily shape and surges).
//! - A [`World`] drawn from the seed: 6 providers and 5 regions with unequal
//!   shares, ~2000 six-digit BINs in issuer ranges sharing 4-digit prefixes (each
//!   with a card brand and its own business-decline rate), ~500 merchants; BINs
//!   and merchants have Zipf popularity.
//! - Outcomes: business declines 7-13% per BIN (`insufficient_funds`,
//!   `do_not_honor`, `expired_card`); technical failures 0.3-1.5% per provider
//!   and region (`timeout`, `issuer_unavailable`, `provider_5xx`,
//!   `webhook_timeout`); latencies per outcome; an occasional upstream message,
//!   rarely one holding a (test) card number, which ingest must redact.
//! - Volume: a daily swing of +-40% compressed onto the scenario (a 3-hour
//!   scenario shows one full day), times slow multiplicative noise, as a Poisson
//!   process in event time.
//! - Delivery: most events arrive within 2 s of their event time, ~5% up to
//!   25 s late, ~0.2% more than 30 s late (past the engine's allowed lateness);
//!   ~0.5% are sent twice (same id); ~0.01% are bad lines (truncated JSON, wrong
//!   types) that replace their event.
//!
//! Everything is drawn from seeded [`StdRng`] streams (one for the world, one for
//! the schedule, one for the traffic), so a scenario yields the same lines byte
//! for byte on every run. Per event the only heap allocation is the line itself.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::f64::consts::{FRAC_PI_2, TAU};
use std::fmt;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Exp1, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::incident::ts;

pub use super::families::Family;
use super::inject::{self, Act, Attrs, Hit};
pub use super::inject::{Action, Injection};

/// Payment providers, by traffic share (largest first).
pub const PROVIDERS: [&str; 6] = [
    "stripe",
    "adyen",
    "checkout",
    "worldpay",
    "braintree",
    "nuvei",
];
const PROVIDER_SHARE: [f64; 6] = [0.30, 0.22, 0.16, 0.14, 0.11, 0.07];
/// Processing regions.
pub const REGIONS: [&str; 5] = [
    "us-east-1",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "ap-southeast-1",
];
const REGION_SHARE: [f64; 5] = [0.32, 0.18, 0.24, 0.14, 0.12];
/// BINs in a [`World`].
pub const N_BINS: usize = 2000;
/// Merchants in a [`World`].
pub const N_MERCHANTS: usize = 500;
/// The longest standard scenario (a year); longer requests are cut to it.
pub const MAX_DURATION_MS: i64 = 366 * 24 * 3_600_000;
/// The default scenario start, 2026-03-02T00:00:00Z, in epoch milliseconds.
pub const DEFAULT_START_MS: i64 = 1_772_409_600_000;

pub(crate) const SECOND: i64 = 1_000;
pub(crate) const MINUTE: i64 = 60 * SECOND;
/// Time before the first fault, so baselines are learned (the rules warm up for 20 min).
pub(crate) const WARMUP: i64 = 30 * MINUTE;
/// Least time between one fault's end and the next fault's start.
pub(crate) const GAP: i64 = 15 * MINUTE;
/// Least time after the last fault, so its incident can open and resolve.
pub(crate) const TAIL: i64 = 5 * MINUTE;
/// A quiet case starts this long after the preceding fault ends (the scoring grace)...
const QUIET_AFTER_FAULT: i64 = 5 * MINUTE;
/// ...and ends this long before the next fault starts.
const QUIET_BEFORE_FAULT: i64 = 2 * MINUTE;
/// Length of one round of every fault at natural spacing; longer scenarios repeat rounds.
const ROUND_ESTIMATE: i64 = 210 * MINUTE;
/// Amplitude of the daily swing.
pub(crate) const DIURNAL_AMPLITUDE: f64 = 0.4;
/// Zipf exponents of BIN and merchant popularity.
const BIN_ZIPF: f64 = 0.9;
const MERCHANT_ZIPF: f64 = 0.9;

const WORLD_SALT: u64 = 0x5744_4c44_0000_0001;
pub(crate) const SCHEDULE_SALT: u64 = 0x5343_4845_0000_0002;
const TRAFFIC_SALT: u64 = 0x5452_4146_0000_0003;

/// Share of events by kind (of the mean total rate).
pub(crate) const AUTH_SHARE: f64 = 0.8;
pub(crate) const WEBHOOK_SHARE: f64 = 0.1;
pub(crate) const SETTLEMENT_SHARE: f64 = 0.1;

// ---------------------------------------------------------------------------
// The world: who sends traffic, and how much.

/// A cumulative distribution over indices, sampled by binary search.
#[derive(Debug, Clone)]
struct Cdf {
    cum: Vec<f64>,
}

impl Cdf {
    fn new(weights: impl IntoIterator<Item = f64>) -> Cdf {
        let mut cum: Vec<f64> = Vec::new();
        let mut total = 0.0;
        for w in weights {
            total += w.max(0.0);
            cum.push(total);
        }
        if total > 0.0 {
            cum.iter_mut().for_each(|c| *c /= total);
        }
        Cdf { cum }
    }

    fn zipf(n: usize, s: f64) -> Cdf {
        Cdf::new((1..=n).map(|k| (k as f64).powf(-s)))
    }

    fn sample(&self, rng: &mut StdRng) -> usize {
        let u: f64 = rng.gen();
        self.cum
            .partition_point(|&c| c <= u)
            .min(self.cum.len().saturating_sub(1))
    }

    fn share(&self, i: usize) -> f64 {
        match i {
            0 => self.cum.first().copied().unwrap_or(0.0),
            _ => self.cum.get(i).map_or(0.0, |c| c - self.cum[i - 1]),
        }
    }
}

#[derive(Debug, Clone)]
struct Bin {
    digits: String,
    brand: &'static str,
    decline: f64,
}

/// The population a seed draws: BINs, merchants, provider and region mix and
/// their baseline rates. [`Scenario::standard`] picks fault targets from it and
/// the [`Generator`] draws traffic from it.
#[derive(Debug, Clone)]
pub struct World {
    /// By popularity rank.
    bins: Vec<Bin>,
    bin_cdf: Cdf,
    bin_index: HashMap<String, u32>,
    /// By popularity rank.
    merchants: Vec<String>,
    merchant_cdf: Cdf,
    merchant_index: HashMap<String, u32>,
    merchant_webhook_fail: Vec<f64>,
    /// Provider x region (index `p * 5 + r`).
    pair_cdf: Cdf,
    pair_fail: Vec<f64>,
    settle_fail: Vec<f64>,
    provider_latency: [f64; 6],
}

impl World {
    /// The world of `seed`.
    pub fn new(seed: u64) -> World {
        let mut rng = StdRng::seed_from_u64(seed ^ WORLD_SALT);

        // Issuers own 4-digit ranges; each issues a handful of 6-digit BINs in it.
        const BRANDS: [(&str, f64); 6] = [
            ("visa", 0.50),
            ("mastercard", 0.33),
            ("amex", 0.06),
            ("discover", 0.04),
            ("jcb", 0.04),
            ("unionpay", 0.03),
        ];
        let brand_cdf = Cdf::new(BRANDS.iter().map(|b| b.1));
        let mut used = HashSet::new();
        let mut bins = Vec::with_capacity(N_BINS);
        while bins.len() < N_BINS {
            let b = brand_cdf.sample(&mut rng);
            let prefix: u32 = match b {
                0 => rng.gen_range(4000..5000),
                1 if rng.gen_bool(0.8) => rng.gen_range(5100..5600),
                1 => rng.gen_range(2221..2721),
                2 if rng.gen_bool(0.5) => rng.gen_range(3400..3500),
                2 => rng.gen_range(3700..3800),
                3 if rng.gen_bool(0.2) => 6011,
                3 => rng.gen_range(6440..6600),
                4 => rng.gen_range(3528..3590),
                _ => rng.gen_range(6200..6300),
            };
            if !used.insert(prefix) {
                continue;
            }
            let n = rng.gen_range(3..=12).min(N_BINS - bins.len());
            for suffix in rand::seq::index::sample(&mut rng, 100, n) {
                bins.push(Bin {
                    digits: format!("{prefix:04}{suffix:02}"),
                    brand: BRANDS[b].0,
                    decline: rng.gen_range(0.07..0.13),
                });
            }
        }
        bins.shuffle(&mut rng);
        let bin_index = bins
            .iter()
            .enumerate()
            .map(|(i, b)| (b.digits.clone(), i as u32))
            .collect();

        let mut numbers: Vec<u32> = (1..=N_MERCHANTS as u32).collect();
        numbers.shuffle(&mut rng);
        let merchants: Vec<String> = numbers.iter().map(|n| format!("m_{n:04}")).collect();
        let merchant_index = merchants
            .iter()
            .enumerate()
            .map(|(i, m)| (m.clone(), i as u32))
            .collect();
        let merchant_webhook_fail = (0..N_MERCHANTS)
            .map(|_| rng.gen_range(0.002..0.008))
            .collect();

        let mut pair_weights = Vec::with_capacity(30);
        let mut pair_fail = Vec::with_capacity(30);
        let mut settle_fail = Vec::with_capacity(30);
        let provider_base: Vec<f64> = (0..6).map(|_| rng.gen_range(0.004..0.010)).collect();
        let region_factor: Vec<f64> = (0..5).map(|_| rng.gen_range(0.7..1.4)).collect();
        for (p, ps) in PROVIDER_SHARE.iter().enumerate() {
            for (r, rs) in REGION_SHARE.iter().enumerate() {
                pair_weights.push(ps * rs * rng.gen_range(0.6..1.4));
                pair_fail.push((provider_base[p] * region_factor[r]).clamp(0.003, 0.015));
                settle_fail.push(rng.gen_range(0.002..0.008));
            }
        }
        let mut provider_latency = [0.0; 6];
        for l in &mut provider_latency {
            *l = rng.gen_range(150.0..400.0);
        }

        World {
            bins,
            bin_cdf: Cdf::zipf(N_BINS, BIN_ZIPF),
            bin_index,
            merchants,
            merchant_cdf: Cdf::zipf(N_MERCHANTS, MERCHANT_ZIPF),
            merchant_index,
            merchant_webhook_fail,
            pair_cdf: Cdf::new(pair_weights),
            pair_fail,
            settle_fail,
            provider_latency,
        }
    }

    /// BINs, most popular first.
    pub fn bins(&self) -> impl Iterator<Item = &str> + '_ {
        self.bins.iter().map(|b| b.digits.as_str())
    }

    /// Share of card traffic of the BIN at popularity `rank` (0 = most popular).
    pub fn bin_share(&self, rank: usize) -> f64 {
        self.bin_cdf.share(rank)
    }

    /// The card brand of a BIN of this world.
    pub fn card_brand(&self, bin: &str) -> Option<&'static str> {
        self.bin_index
            .get(bin)
            .map(|&i| self.bins[i as usize].brand)
    }

    /// Merchant ids, most popular first.
    pub fn merchants(&self) -> impl Iterator<Item = &str> + '_ {
        self.merchants.iter().map(String::as_str)
    }

    /// Share of traffic of the merchant at popularity `rank` (0 = most popular).
    pub fn merchant_share(&self, rank: usize) -> f64 {
        self.merchant_cdf.share(rank)
    }

    /// Share of auth and webhook traffic of `PROVIDERS[provider]` in `REGIONS[region]`.
    pub fn pair_share(&self, provider: usize, region: usize) -> f64 {
        self.pair_cdf.share(provider * REGIONS.len() + region)
    }

    /// Share of traffic of `PROVIDERS[provider]`, all regions.
    pub fn provider_share(&self, provider: usize) -> f64 {
        (0..REGIONS.len())
            .map(|r| self.pair_share(provider, r))
            .sum()
    }

    /// Share of traffic of `REGIONS[region]`, all providers.
    pub fn region_share(&self, region: usize) -> f64 {
        (0..PROVIDERS.len())
            .map(|p| self.pair_share(p, region))
            .sum()
    }

    /// Baseline technical auth failure rate of a provider in a region.
    pub fn baseline_failure_rate(&self, provider: usize, region: usize) -> f64 {
        self.pair_fail[provider * REGIONS.len() + region]
    }

    /// Number of BINs.
    pub fn bin_count(&self) -> usize {
        self.bins.len()
    }

    /// BINs with their card brand, most popular first.
    pub fn bins_with_brands(&self) -> impl Iterator<Item = (&str, &'static str)> + '_ {
        self.bins.iter().map(|b| (b.digits.as_str(), b.brand))
    }

    /// Popularity rank of a BIN of this world.
    pub fn bin_rank(&self, bin: &str) -> Option<u32> {
        self.bin_index.get(bin).copied()
    }

    /// Popularity rank of a merchant of this world.
    pub fn merchant_rank(&self, merchant: &str) -> Option<u32> {
        self.merchant_index.get(merchant).copied()
    }
}
mod spec;
pub use spec::*;

impl Scenario {
    /// The standard evaluation scenario: after a 30-minute warm-up, every
    /// [`FaultType`] once (in an order drawn from the seed), 5-15 minutes each,
    /// with at least 15 minutes between faults; plus every [`QuietType`]. Which
    /// provider, region, BIN or merchant is hit, when, for how long and how hard
    /// all come from the seed. Fault durations shrink toward 5 minutes when the
    /// scenario is short (3 hours holds everything); faults that still do not fit
    /// are left out. Long scenarios repeat the round with new targets, one round
    /// per 3.5 hours after the warm-up (two from 7.5 hours on).
    pub fn standard(seed: u64, duration_ms: i64, events_per_sec: f64) -> Scenario {
        let world = World::new(seed);
        let mut rng = StdRng::seed_from_u64(seed ^ SCHEDULE_SALT);
        let start_ms = DEFAULT_START_MS;
        let duration_ms = duration_ms.clamp(0, MAX_DURATION_MS) / SECOND * SECOND;
        let eps = if events_per_sec.is_finite() {
            events_per_sec.max(0.0)
        } else {
            0.0
        };
        let end_ms = start_ms + duration_ms;
        let (mut quiet, flaky) = background(&world, &mut rng, start_ms, end_ms);

        // Plan: fault types and durations per round; timed quiet cases in the gaps.
        let avail = duration_ms - WARMUP;
        let rounds = (avail / ROUND_ESTIMATE).max(1) as usize;
        let mut plan: Vec<(FaultType, i64)> = Vec::new();
        let mut qplan: Vec<(QuietType, i64, usize)> = Vec::new();
        for round in 0..rounds {
            let mut order = FaultType::ALL;
            order.shuffle(&mut rng);
            for ft in order {
                plan.push((ft, rng.gen_range(300..=900) * SECOND));
            }
            let gaps = rand::seq::index::sample(&mut rng, FaultType::ALL.len() - 1, 3);
            let lens = [
                (QuietType::TrafficSurge, 10 * MINUTE),
                (QuietType::DeclineSpike, 10 * MINUTE),
                (
                    QuietType::RareBinFailures,
                    rng.gen_range(120..=300) * SECOND,
                ),
            ];
            for ((qt, len), gap) in lens.into_iter().zip(gaps) {
                qplan.push((qt, len, round * FaultType::ALL.len() + gap));
            }
        }
        let gap_min = loop {
            let n = plan.len();
            qplan.retain(|q| q.2 + 1 < n);
            let gap_min: Vec<i64> = (0..n)
                .map(|i| {
                    if i + 1 == n {
                        TAIL
                    } else {
                        qplan
                            .iter()
                            .filter(|q| q.2 == i)
                            .map(|q| q.1 + QUIET_AFTER_FAULT + QUIET_BEFORE_FAULT)
                            .fold(GAP, i64::max)
                    }
                })
                .collect();
            let need: i64 = plan.iter().map(|p| p.1).sum::<i64>() + gap_min.iter().sum::<i64>();
            if n == 0 || need <= avail {
                break gap_min;
            }
            let excess = need - avail;
            let room: i64 = plan.iter().map(|p| p.1 - 5 * MINUTE).sum();
            if room > 0 {
                let k = ((room - excess) as f64 / room as f64).max(0.0);
                for p in &mut plan {
                    let extra = ((p.1 - 5 * MINUTE) as f64 * k) as i64 / SECOND * SECOND;
                    p.1 = 5 * MINUTE + extra;
                }
            } else if qplan.pop().is_none() {
                plan.pop();
            }
        };
        let n = plan.len();
        let need: i64 = plan.iter().map(|p| p.1).sum::<i64>() + gap_min.iter().sum::<i64>();
        let slack = (avail - need).max(0);
        let weights: Vec<f64> = (0..=n).map(|_| rng.sample::<f64, _>(Exp1)).collect();
        let wsum: f64 = weights.iter().sum();
        let parts: Vec<i64> = weights
            .iter()
            .map(|w| (slack as f64 * w / wsum.max(f64::MIN_POSITIVE)) as i64 / SECOND * SECOND)
            .collect();

        let mut windows = Vec::with_capacity(n);
        let mut t = start_ms + WARMUP + parts.first().copied().unwrap_or(0);
        for i in 0..n {
            windows.push((t, t + plan[i].1));
            t += plan[i].1 + gap_min[i] + parts[i + 1];
        }

        let targets = Targets::new(&world, eps, &flaky);
        let mut faults = Vec::with_capacity(n);
        for (i, (&(ft, _), &(s, e))) in plan.iter().zip(&windows).enumerate() {
            let (dims, intensity) = targets.pick(ft, &mut rng);
            faults.push(FaultSpec {
                id: format!("f{:02}", i + 1),
                fault_type: ft,
                start_ms: s,
                end_ms: e,
                dims,
                intensity,
                injections: Vec::new(),
                elements: Vec::new(),
                description: String::new(),
            });
        }
        let outage_bins: Vec<&str> = faults
            .iter()
            .filter_map(|f| f.dims.get("bin").map(String::as_str))
            .collect();
        for &(qt, len, gap) in &qplan {
            let lo = windows[gap].1 + QUIET_AFTER_FAULT;
            let hi = windows[gap + 1].0 - QUIET_BEFORE_FAULT - len;
            let s = rng.gen_range(lo / SECOND..=hi.max(lo) / SECOND) * SECOND;
            let (dims, intensity) = match qt {
                QuietType::TrafficSurge => (BTreeMap::new(), round_to(rng.gen_range(2.0..3.0), 2)),
                QuietType::DeclineSpike => {
                    let candidates: Vec<usize> = (0..30)
                        .filter(|&r| !outage_bins.contains(&world.bins[r].digits.as_str()))
                        .collect();
                    let r = candidates.choose(&mut rng).copied().unwrap_or(0);
                    (dims_of(&[("bin", &world.bins[r].digits)]), 0.5)
                }
                _ => {
                    let r = rng.gen_range(1000..N_BINS);
                    let count = rng.gen_range(3..=6);
                    (dims_of(&[("bin", &world.bins[r].digits)]), count as f64)
                }
            };
            quiet.push(QuietSpec {
                quiet_type: qt,
                start_ms: s,
                end_ms: s + len,
                dims,
                intensity,
                injections: Vec::new(),
                description: String::new(),
            });
        }

        Scenario {
            seed,
            start_ms,
            duration_ms,
            events_per_sec: eps,
            faults,
            quiet,
            duplicate_rate: 0.005,
            late_rate: 0.002,
            bad_line_rate: 0.0001,
            family: Family::Standard,
            attrs: false,
        }
    }

    /// The same scenario moved to start at `start_ms` (everything shifts with it).
    pub fn starting_at(mut self, start_ms: i64) -> Scenario {
        let delta = start_ms - self.start_ms;
        self.start_ms = start_ms;
        for f in &mut self.faults {
            f.start_ms += delta;
            f.end_ms += delta;
        }
        for q in &mut self.quiet {
            q.start_ms += delta;
            q.end_ms += delta;
        }
        self
    }

    /// End of the scenario in event time, epoch ms.
    pub fn end_ms(&self) -> i64 {
        self.start_ms.saturating_add(self.duration_ms)
    }

    /// The answer key: faults with their rule and expected root cause, and the
    /// quiet cases.
    pub fn labels(&self) -> Labels {
        let world = World::new(self.seed);
        let pct = |x: f64| format!("{:.0}%", x * 100.0);
        let get = |d: &BTreeMap<String, String>, k: &str| d.get(k).cloned().unwrap_or_default();
        let faults = self
            .faults
            .iter()
            .map(|f| {
                let d = &f.dims;
                let description = match f.fault_type {
                    _ if !f.description.is_empty() => f.description.clone(),
                    FaultType::ProviderRegionOutage => format!(
                        "{} in {}: technical auth failures at {}",
                        get(d, "provider"),
                        get(d, "region"),
                        pct(f.intensity)
                    ),
                    FaultType::BinIssuerOutage => {
                        let bin = get(d, "bin");
                        format!(
                            "issuer of BIN {bin} ({}) unavailable: {} of its auths fail at every provider and region",
                            world.card_brand(&bin).unwrap_or("unknown brand"),
                            pct(f.intensity)
                        )
                    }
                    FaultType::MerchantWebhookDown => format!(
                        "webhook endpoint of {} down: {} of deliveries fail, every provider",
                        get(d, "merchant_id"),
                        pct(f.intensity)
                    ),
                    FaultType::ProviderDegraded => format!(
                        "{} degraded: +{:.1} percentage points of technical auth failures in every region",
                        get(d, "provider"),
                        f.intensity * 100.0
                    ),
                    FaultType::SettlementProviderFailures => format!(
                        "{}: {} of settlements fail in every region",
                        get(d, "provider"),
                        pct(f.intensity)
                    ),
                    FaultType::RegionOutage => format!(
                        "{} outage: {} of auths fail at every provider",
                        get(d, "region"),
                        pct(f.intensity)
                    ),
                    FaultType::SettlementVolumeStop => format!(
                        "{}: settlement events stop in every region",
                        get(d, "provider")
                    ),
                    ft => format!("{ft} fault"),
                };
                FaultLabel {
                    id: f.id.clone(),
                    fault_type: f.fault_type,
                    rule: f.rule().to_string(),
                    dims: f.dims.clone(),
                    elements: if self.family.is_standard() {
                        f.elements.clone()
                    } else {
                        f.expected()
                    },
                    family: self.family,
                    start: ts(f.start_ms),
                    end: ts(f.end_ms),
                    intensity: f.intensity,
                    description: format!("{description} for {}", minutes(f.end_ms - f.start_ms)),
                }
            })
            .collect();
        let quiet = self
            .quiet
            .iter()
            .map(|q| {
                let d = &q.dims;
                let len = minutes(q.end_ms - q.start_ms);
                let description = match q.quiet_type {
                    _ if !q.description.is_empty() => q.description.clone(),
                    QuietType::TrafficSurge => format!(
                        "auth and webhook volume x{:.1} for {len}, failure rates unchanged",
                        q.intensity
                    ),
                    QuietType::Diurnal => format!(
                        "volume swings +-{} over one compressed day of {}",
                        pct(q.intensity),
                        minutes((q.end_ms - q.start_ms).min(24 * 60 * MINUTE))
                    ),
                    QuietType::RareBinFailures => format!(
                        "rare BIN {}: {} technical failures within {len}",
                        get(d, "bin"),
                        q.intensity.round()
                    ),
                    QuietType::FlakyMerchant => format!(
                        "{}'s webhook endpoint always fails about {} of deliveries, with bursts up to 25%",
                        get(d, "merchant_id"),
                        pct(q.intensity)
                    ),
                    QuietType::DeclineSpike => format!(
                        "BIN {}: business declines at {} for {len} (declines are not technical failures)",
                        get(d, "bin"),
                        pct(q.intensity)
                    ),
                    qt => format!("{qt} for {len}"),
                };
                QuietLabel {
                    quiet_type: q.quiet_type,
                    start: ts(q.start_ms),
                    end: ts(q.end_ms),
                    dims: q.dims.clone(),
                    intensity: q.intensity,
                    description,
                }
            })
            .collect();
        Labels {
            seed: self.seed,
            start: ts(self.start_ms),
            end: ts(self.end_ms()),
            events_per_sec: self.events_per_sec,
            faults,
            quiet,
            family: self.family,
        }
    }
}

/// The quiet cases every scenario has, drawn from `rng`: the daily swing and
/// five flaky merchants (busy enough to be seen, not the top two), whose
/// popularity ranks come back too.
pub(crate) fn background(
    world: &World,
    rng: &mut StdRng,
    start_ms: i64,
    end_ms: i64,
) -> (Vec<QuietSpec>, Vec<usize>) {
    let mut quiet = Vec::new();
    let flaky: Vec<usize> = rand::seq::index::sample(rng, 58, 5)
        .into_iter()
        .map(|i| i + 2)
        .collect();
    if end_ms > start_ms {
        let whole = |quiet_type, dims, intensity| QuietSpec {
            quiet_type,
            start_ms,
            end_ms,
            dims,
            intensity,
            injections: Vec::new(),
            description: String::new(),
        };
        quiet.push(whole(
            QuietType::Diurnal,
            BTreeMap::new(),
            DIURNAL_AMPLITUDE,
        ));
        for &m in &flaky {
            quiet.push(whole(
                QuietType::FlakyMerchant,
                dims_of(&[("merchant_id", &world.merchants[m])]),
                round_to(rng.gen_range(0.03..0.08), 3),
            ));
        }
    }
    (quiet, flaky)
}

pub(crate) fn round_to(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

/// Fault targets with enough traffic for the scenario's rate to be detectable.
struct Targets {
    pairs: Vec<(usize, usize)>,
    bins: Vec<usize>,
    merchants: Vec<usize>,
    degradable: Vec<usize>,
    settle_fail: Vec<usize>,
    settle_stop: Vec<usize>,
    bin_names: Vec<String>,
    merchant_names: Vec<String>,
}

impl Targets {
    fn new(world: &World, eps: f64, flaky: &[usize]) -> Targets {
        let auth = AUTH_SHARE * eps;
        let webhook = WEBHOOK_SHARE * eps;
        let settle = SETTLEMENT_SHARE * eps;
        let trough = 1.0 - DIURNAL_AMPLITUDE;
        // Enough expected events in a rule window at the daily trough, else the
        // biggest few: a fault nobody could see measures the generator, not faultline.
        let mut pairs: Vec<(usize, usize)> = Vec::new();
        let mut by_share: Vec<(usize, usize)> = Vec::new();
        for p in 0..PROVIDERS.len() {
            for r in 0..REGIONS.len() {
                by_share.push((p, r));
                if world.pair_share(p, r) * auth * trough * 120.0 >= 150.0 {
                    pairs.push((p, r));
                }
            }
        }
        if pairs.is_empty() {
            by_share.sort_by(|a, b| {
                world
                    .pair_share(b.0, b.1)
                    .total_cmp(&world.pair_share(a.0, a.1))
            });
            pairs = by_share[..3].to_vec();
        }
        let mut bins: Vec<usize> = (0..30)
            .filter(|&r| world.bin_share(r) * auth * trough * 120.0 >= 80.0)
            .collect();
        if bins.is_empty() {
            bins = (0..5).collect();
        }
        let calm: Vec<usize> = (0..N_MERCHANTS).filter(|m| !flaky.contains(m)).collect();
        let mut merchants: Vec<usize> = calm
            .iter()
            .copied()
            .take_while(|&m| m < 20)
            .filter(|&m| world.merchant_share(m) * webhook * trough * 180.0 >= 40.0)
            .collect();
        if merchants.is_empty() {
            merchants = calm[..3].to_vec();
        }
        let providers_by = |min_share: f64, min_settle_per_min: f64| -> Vec<usize> {
            let v: Vec<usize> = (0..PROVIDERS.len())
                .filter(|&p| {
                    world.provider_share(p) >= min_share
                        && world.provider_share(p) * settle * 60.0 >= min_settle_per_min
                })
                .collect();
            if v.is_empty() {
                vec![0, 1]
            } else {
                v
            }
        };
        Targets {
            pairs,
            bins,
            merchants,
            degradable: providers_by(0.15, 0.0),
            settle_fail: providers_by(0.0, 20.0),
            settle_stop: providers_by(0.0, 40.0),
            bin_names: world.bins.iter().map(|b| b.digits.clone()).collect(),
            merchant_names: world.merchants.clone(),
        }
    }

    fn pick(&self, ft: FaultType, rng: &mut StdRng) -> (BTreeMap<String, String>, f64) {
        fn one<T: Copy>(v: &[T], rng: &mut StdRng) -> T {
            v[rng.gen_range(0..v.len())]
        }
        let rate = |rng: &mut StdRng, lo: f64, hi: f64| round_to(rng.gen_range(lo..hi), 3);
        match ft {
            FaultType::ProviderRegionOutage => {
                let (p, r) = one(&self.pairs, rng);
                (
                    dims_of(&[("provider", PROVIDERS[p]), ("region", REGIONS[r])]),
                    rate(rng, 0.5, 1.0),
                )
            }
            FaultType::BinIssuerOutage => {
                let b = one(&self.bins, rng);
                (dims_of(&[("bin", &self.bin_names[b])]), rate(rng, 0.6, 1.0))
            }
            FaultType::MerchantWebhookDown => {
                let m = one(&self.merchants, rng);
                (
                    dims_of(&[("merchant_id", &self.merchant_names[m])]),
                    rate(rng, 0.8, 1.0),
                )
            }
            FaultType::ProviderDegraded => {
                let p = one(&self.degradable, rng);
                (
                    dims_of(&[("provider", PROVIDERS[p])]),
                    rate(rng, 0.03, 0.06),
                )
            }
            FaultType::SettlementProviderFailures => {
                let p = one(&self.settle_fail, rng);
                (dims_of(&[("provider", PROVIDERS[p])]), rate(rng, 0.3, 0.8))
            }
            FaultType::RegionOutage => {
                let r = rng.gen_range(0..REGIONS.len());
                (dims_of(&[("region", REGIONS[r])]), rate(rng, 0.5, 1.0))
            }
            FaultType::SettlementVolumeStop => {
                let p = one(&self.settle_stop, rng);
                (dims_of(&[("provider", PROVIDERS[p])]), 1.0)
            }
            ft => unreachable!("{ft} is not a standard fault type"),
        }
    }
}

mod stream;
pub use stream::*;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{parse_str, Outcome};
    use std::collections::HashMap as Map;
    use std::sync::OnceLock;

    const HOUR: i64 = 60 * MINUTE;

    #[test]
    fn same_seed_same_lines() {
        let sc = Scenario::standard(7, 40 * MINUTE, 40.0);
        let a: Vec<Line> = Generator::new(&sc).unwrap().collect();
        let b: Vec<Line> = Generator::new(&sc).unwrap().collect();
        assert!(a.len() > 80_000, "{}", a.len());
        assert_eq!(a, b);
        let other = Scenario::standard(8, 40 * MINUTE, 40.0);
        let c: Vec<Line> = Generator::new(&other).unwrap().take(100).collect();
        assert_ne!(a[..100], c[..]);
        assert_eq!(
            sc.labels(),
            Scenario::standard(7, 40 * MINUTE, 40.0).labels()
        );
    }

    #[test]
    fn labels_are_sane() {
        for (seed, hours, rate) in [
            (1, 3, 200.0),
            (2, 3, 200.0),
            (3, 3, 50.0),
            (101, 3, 1000.0),
            (9, 12, 200.0),
        ] {
            let sc = Scenario::standard(seed, hours * HOUR, rate);
            let world = World::new(seed);
            let labels = sc.labels();
            let rounds = if hours > 6 { 3 } else { 1 };
            assert_eq!(labels.faults.len(), 7 * rounds, "seed {seed}");
            let types: HashSet<FaultType> = labels.faults.iter().map(|f| f.fault_type).collect();
            assert_eq!(types.len(), 7);
            let start = ts(sc.start_ms);
            let end = ts(sc.end_ms());
            assert_eq!((labels.start, labels.end), (start, end));
            for (i, f) in labels.faults.iter().enumerate() {
                assert!(f.start >= start + chrono::Duration::minutes(30), "{f:?}");
                assert!(f.end <= end - chrono::Duration::minutes(5), "{f:?}");
                let len = (f.end - f.start).num_seconds();
                assert!((300..=900).contains(&len), "{f:?}");
                if let Some(next) = labels.faults.get(i + 1) {
                    assert!(
                        next.start - f.end >= chrono::Duration::minutes(15),
                        "{f:?} {next:?}"
                    );
                }
                assert_eq!(f.rule, f.fault_type.rule());
                let keys: Vec<&str> = f.dims.keys().map(String::as_str).collect();
                let mut want = f.fault_type.dims().to_vec();
                want.sort_unstable();
                assert_eq!(keys, want);
                for (k, v) in &f.dims {
                    let known = match k.as_str() {
                        "provider" => PROVIDERS.contains(&v.as_str()),
                        "region" => REGIONS.contains(&v.as_str()),
                        "bin" => world.bins().take(30).any(|b| b == v),
                        _ => world.merchants().take(20).any(|m| m == v),
                    };
                    assert!(known, "{f:?}");
                }
                assert!(!f.description.is_empty());
            }
            let quiet: HashSet<QuietType> = labels.quiet.iter().map(|q| q.quiet_type).collect();
            assert_eq!(quiet.len(), 5, "seed {seed}: {:?}", labels.quiet);
            for q in &labels.quiet {
                assert!(q.start >= start && q.end <= end, "{q:?}");
                if matches!(q.quiet_type, QuietType::Diurnal | QuietType::FlakyMerchant) {
                    continue;
                }
                // Timed quiet cases stay clear of every fault and its scoring grace.
                for f in &labels.faults {
                    let clear = q.end <= f.start || q.start >= f.end + chrono::Duration::minutes(5);
                    assert!(clear, "{q:?} overlaps {f:?}");
                }
            }
            let json = serde_json::to_string(&labels).unwrap();
            assert!(json.contains("\"type\":\"provider_region_outage\""));
            let back: Labels = serde_json::from_str(&json).unwrap();
            assert_eq!(back, labels);
        }
    }

    /// The standard scenario's lines and labels, byte for byte, as they were
    /// before scenario families existed (`faultline gen --seed 1 --duration 3h
    /// --rate 8`): family code must not change a standard byte.
    #[test]
    fn standard_scenario_bytes_are_pinned() {
        use sha2::{Digest, Sha256};
        let sc = Scenario::standard(1, 3 * HOUR, 8.0);
        let mut events = Sha256::new();
        let mut n = 0;
        for line in Generator::new(&sc).unwrap() {
            events.update(line.text.as_bytes());
            events.update(b"\n");
            n += 1;
        }
        assert_eq!(n, 97_950);
        let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(&events.finalize()),
            "771229e4c8ee86a0a03eae59f4adb967da189038f0d45a5dac2ad067f62877d7"
        );
        let mut labels = serde_json::to_string_pretty(&sc.labels()).unwrap();
        labels.push('\n');
        assert_eq!(
            hex(&Sha256::digest(labels.as_bytes())),
            "d4005b54048b56260afe9ca14b9f495da6d49d1602e85264edfc8e9b5f1bef77"
        );
        assert_eq!(Scenario::family(Family::Standard, 1, 3 * HOUR, 8.0), sc);
    }

    #[test]
    fn short_scenarios_keep_what_fits() {
        let sc = Scenario::standard(4, 40 * MINUTE, 100.0);
        assert!(sc.faults.len() <= 1);
        assert!(Generator::new(&sc).is_ok());
        let sc = Scenario::standard(4, 10 * MINUTE, 100.0);
        assert!(sc.faults.is_empty());
        assert!(Generator::new(&sc).unwrap().count() > 50_000);
        let sc = Scenario::standard(4, 0, 100.0);
        assert_eq!(Generator::new(&sc).unwrap().count(), 0);
    }

    #[test]
    fn rejects_targets_the_world_lacks() {
        let mut sc = Scenario::standard(1, 3 * HOUR, 100.0);
        let i = sc
            .faults
            .iter()
            .position(|f| f.fault_type == FaultType::BinIssuerOutage)
            .unwrap();
        sc.faults[i].dims.insert("bin".into(), "999999".into());
        let err = Generator::new(&sc).err().unwrap();
        assert!(err.to_string().contains("unknown bin `999999`"), "{err}");
        sc.faults[i].dims.insert("provider".into(), "stripe".into());
        let err = Generator::new(&sc).err().unwrap();
        assert!(err.to_string().contains("dims must be exactly"), "{err}");
    }

    /// Counts for one element over a time range.
    #[derive(Debug, Default, Clone, Copy)]
    struct Counts {
        events: u64,
        failures: u64,
        declines: u64,
    }

    impl Counts {
        fn add(&mut self, o: Outcome) {
            self.events += 1;
            self.failures += u64::from(o == Outcome::Failure);
            self.declines += u64::from(o == Outcome::Decline);
        }
        fn failure_rate(&self) -> f64 {
            self.failures as f64 / self.events.max(1) as f64
        }
        fn decline_rate(&self) -> f64 {
            self.declines as f64 / self.events.max(1) as f64
        }
    }

    struct Sample {
        scenario: Scenario,
        lines: u64,
        bad: u64,
        duplicates: u64,
        late: u64,
        out_of_order: u64,
        arrival_sorted: bool,
        /// Per fault: (during, the 15 minutes before).
        faults: Vec<(Counts, Counts)>,
        /// Per quiet case: (during, the 10 minutes before).
        quiet: Vec<(Counts, Counts)>,
    }

    fn kind_of(ft: FaultType) -> &'static str {
        match ft {
            FaultType::MerchantWebhookDown => "webhook",
            FaultType::SettlementProviderFailures | FaultType::SettlementVolumeStop => "settlement",
            _ => "auth",
        }
    }

    fn has(e: &crate::event::Event, dims: &BTreeMap<String, String>) -> bool {
        dims.iter().all(|(k, v)| {
            let got = match k.as_str() {
                "provider" => Some(e.provider.as_str()),
                "region" => Some(e.region.as_str()),
                "bin" => e.bin.as_deref(),
                _ => e.merchant_id.as_deref(),
            };
            got == Some(v.as_str())
        })
    }

    /// One 3-hour scenario, generated once and summarized for every test below.
    fn sample() -> &'static Sample {
        static SAMPLE: OnceLock<Sample> = OnceLock::new();
        SAMPLE.get_or_init(|| {
            let scenario = Scenario::standard(1, 3 * HOUR, 120.0);
            let mut s = Sample {
                scenario: scenario.clone(),
                lines: 0,
                bad: 0,
                duplicates: 0,
                late: 0,
                out_of_order: 0,
                arrival_sorted: true,
                faults: vec![Default::default(); scenario.faults.len()],
                quiet: vec![Default::default(); scenario.quiet.len()],
            };
            let mut seen: Map<String, u32> = Map::new();
            let (mut last_arrival, mut max_ts) = (i64::MIN, i64::MIN);
            for line in Generator::new(&scenario).unwrap() {
                s.lines += 1;
                s.arrival_sorted &= line.arrival_ms >= last_arrival;
                last_arrival = line.arrival_ms;
                let Ok(e) = parse_str(&line.text) else {
                    s.bad += 1;
                    continue;
                };
                let n = seen.entry(e.id.clone()).or_default();
                *n += 1;
                if *n > 1 {
                    s.duplicates += 1;
                    continue;
                }
                if line.arrival_ms - e.ts_ms > 30_000 {
                    s.late += 1;
                }
                if e.ts_ms < max_ts.saturating_sub(1_000) {
                    s.out_of_order += 1;
                }
                max_ts = max_ts.max(e.ts_ms);
                for (i, f) in scenario.faults.iter().enumerate() {
                    if e.kind != kind_of(f.fault_type) || !has(&e, &f.dims) {
                        continue;
                    }
                    if (f.start_ms..f.end_ms).contains(&e.ts_ms) {
                        s.faults[i].0.add(e.outcome);
                    } else if (f.start_ms - 15 * MINUTE..f.start_ms).contains(&e.ts_ms) {
                        s.faults[i].1.add(e.outcome);
                    }
                }
                for (i, q) in scenario.quiet.iter().enumerate() {
                    let kind_ok = match q.quiet_type {
                        QuietType::FlakyMerchant => e.kind == "webhook",
                        QuietType::TrafficSurge | QuietType::Diurnal => e.kind != "settlement",
                        _ => e.kind == "auth",
                    };
                    if !kind_ok || !has(&e, &q.dims) {
                        continue;
                    }
                    if (q.start_ms..q.end_ms).contains(&e.ts_ms) {
                        s.quiet[i].0.add(e.outcome);
                    } else if (q.start_ms - 10 * MINUTE..q.start_ms).contains(&e.ts_ms) {
                        s.quiet[i].1.add(e.outcome);
                    }
                }
            }
            s
        })
    }

    #[test]
    fn injected_faults_are_visible() {
        let s = sample();
        for (f, (during, before)) in s.scenario.faults.iter().zip(&s.faults) {
            assert!(before.events > 50, "{f:?}: {before:?}");
            match f.fault_type {
                FaultType::SettlementVolumeStop => assert_eq!(during.events, 0, "{f:?}"),
                FaultType::ProviderDegraded => {
                    let lift = during.failure_rate() - before.failure_rate();
                    assert!(
                        lift > f.intensity - 0.015,
                        "{f:?}: {before:?} -> {during:?}"
                    );
                    assert!(before.failure_rate() < 0.02, "{before:?}");
                }
                _ => {
                    assert!(
                        during.failure_rate() > f.intensity - 0.1,
                        "{f:?}: {during:?}"
                    );
                    assert!(before.failure_rate() < 0.02, "{f:?}: {before:?}");
                }
            }
        }
    }

    #[test]
    fn quiet_cases_are_visible_but_not_failures() {
        let s = sample();
        for (q, (during, before)) in s.scenario.quiet.iter().zip(&s.quiet) {
            match q.quiet_type {
                QuietType::TrafficSurge => {
                    let ratio = during.events as f64 / before.events as f64;
                    assert!(
                        ratio > q.intensity * 0.75,
                        "{q:?}: {before:?} -> {during:?}"
                    );
                    assert!(during.failure_rate() < 0.03, "{during:?}");
                }
                QuietType::DeclineSpike => {
                    assert!(during.decline_rate() > 0.4, "{during:?}");
                    assert!(before.decline_rate() < 0.2, "{before:?}");
                    assert!(during.failure_rate() < 0.03, "{during:?}");
                }
                QuietType::RareBinFailures => {
                    assert!(during.failures >= q.intensity as u64, "{q:?}: {during:?}");
                    assert!(
                        during.failures <= q.intensity as u64 + 2,
                        "{q:?}: {during:?}"
                    );
                }
                QuietType::FlakyMerchant => {
                    let r = during.failure_rate();
                    assert!(r > 0.02 && r < 0.15, "{q:?}: {during:?}");
                }
                QuietType::Diurnal => assert!(during.events > 100_000),
                QuietType::Failover | QuietType::DeclineBurst => {}
            }
        }
    }

    #[test]
    fn the_daily_swing_shows() {
        // Volume per 10 minutes across a 3-hour scenario: trough at the start and
        // end, peak in the middle, about +-40%.
        let sc = Scenario {
            faults: vec![],
            ..Scenario::standard(2, 3 * HOUR, 30.0)
        };
        let mut per_bucket = vec![0u64; 18];
        for line in Generator::new(&sc).unwrap() {
            if let Ok(e) = parse_str(&line.text) {
                if e.kind == "auth" {
                    per_bucket[((e.ts_ms - sc.start_ms) / (10 * MINUTE)) as usize] += 1;
                }
            }
        }
        let min = *per_bucket.iter().min().unwrap() as f64;
        let max = *per_bucket.iter().max().unwrap() as f64;
        assert!(max / min > 1.8, "{per_bucket:?}");
        assert!(per_bucket[8] > per_bucket[0] * 3 / 2, "{per_bucket:?}");
    }

    #[test]
    fn delivery_is_messy_like_production() {
        let s = sample();
        assert!(s.arrival_sorted);
        let dup = s.duplicates as f64 / s.lines as f64;
        assert!((0.003..0.007).contains(&dup), "{dup}");
        let late = s.late as f64 / s.lines as f64;
        assert!((0.001..0.004).contains(&late), "{late}");
        assert!(s.out_of_order as f64 / s.lines as f64 > 0.01);
        assert!(
            s.bad > 0 && (s.bad as f64 / s.lines as f64) < 0.0005,
            "{}",
            s.bad
        );
    }

    #[test]
    fn lines_are_valid_events_with_realistic_fields() {
        let sc = Scenario {
            bad_line_rate: 0.0,
            ..Scenario::standard(3, 20 * MINUTE, 100.0)
        };
        let mut kinds: Map<String, u64> = Map::new();
        let mut outcomes: Map<&str, u64> = Map::new();
        let mut codes: HashSet<String> = HashSet::new();
        for line in Generator::new(&sc).unwrap() {
            let e = parse_str(&line.text).unwrap_or_else(|r| panic!("{r}: {}", line.text));
            *kinds.entry(e.kind.clone()).or_default() += 1;
            if e.kind == "auth" {
                *outcomes.entry(e.outcome.as_str()).or_default() += 1;
                assert!(e.bin.is_some() && e.card_brand.is_some());
            }
            if let Some(c) = e.error_code {
                codes.insert(c);
            }
            assert!(e.latency_ms.is_some());
            assert!(e
                .merchant_id
                .as_deref()
                .is_some_and(|m| m.starts_with("m_")));
        }
        let total: u64 = kinds.values().sum();
        let share = |k: &str| kinds[k] as f64 / total as f64;
        assert!((0.75..0.85).contains(&share("auth")), "{kinds:?}");
        assert!((0.07..0.13).contains(&share("webhook")), "{kinds:?}");
        assert!((0.07..0.13).contains(&share("settlement")), "{kinds:?}");
        let auths: u64 = outcomes.values().sum();
        let decline = outcomes["decline"] as f64 / auths as f64;
        assert!((0.08..0.12).contains(&decline), "{outcomes:?}");
        let failure = outcomes["failure"] as f64 / auths as f64;
        assert!((0.003..0.015).contains(&failure), "{outcomes:?}");
        for c in [
            "timeout",
            "issuer_unavailable",
            "provider_5xx",
            "insufficient_funds",
            "do_not_honor",
            "expired_card",
        ] {
            assert!(codes.contains(c), "{codes:?}");
        }
    }

    #[test]
    fn world_is_realistic() {
        let w = World::new(1);
        let bins: Vec<&str> = w.bins().collect();
        assert_eq!(bins.len(), N_BINS);
        assert_eq!(bins.iter().collect::<HashSet<_>>().len(), N_BINS);
        assert!(bins
            .iter()
            .all(|b| b.len() == 6 && b.bytes().all(|c| c.is_ascii_digit())));
        let prefixes: HashSet<&str> = bins.iter().map(|b| &b[..4]).collect();
        assert!(prefixes.len() < N_BINS / 3, "{}", prefixes.len());
        assert_eq!(w.card_brand("999999"), None);
        assert!(bins
            .iter()
            .filter(|b| b.starts_with('4'))
            .all(|b| w.card_brand(b) == Some("visa")));
        assert!(w.bin_share(0) > 10.0 * w.bin_share(500));
        let merchants: Vec<&str> = w.merchants().collect();
        assert_eq!(merchants.len(), N_MERCHANTS);
        assert!(merchants
            .iter()
            .all(|m| m.len() == 6 && m.starts_with("m_")));
        let total: f64 = (0..6).map(|p| w.provider_share(p)).sum();
        assert!((total - 1.0).abs() < 1e-9);
        assert!(w.provider_share(0) > 2.0 * w.provider_share(5));
        for p in 0..6 {
            for r in 0..5 {
                assert!((0.003..=0.015).contains(&w.baseline_failure_rate(p, r)));
            }
        }
    }
}
