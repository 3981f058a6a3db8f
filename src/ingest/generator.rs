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

// ---------------------------------------------------------------------------
// Scenarios and their labels.

/// The faults a scenario can inject: the seven of the standard scenario, each
/// caught by one shipped rule, then one per fault family of
/// [`Family`](super::families::Family), whose effect, rule and expected
/// elements each fault carries itself ([`FaultSpec::injections`],
/// [`FaultSpec::rule`], [`FaultSpec::elements`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultType {
    /// Technical auth failures at 50-100% for one provider in one region.
    /// Dims: `provider`, `region`.
    ProviderRegionOutage,
    /// One busy BIN's issuer fails 60-100% of auths at every provider and region.
    /// Dims: `bin`.
    BinIssuerOutage,
    /// A top merchant's webhook endpoint fails 80-100% of deliveries.
    /// Dims: `merchant_id`.
    MerchantWebhookDown,
    /// +3 to +6 percentage points of technical auth failures at one large
    /// provider, every region. Dims: `provider`.
    ProviderDegraded,
    /// 30-80% of one provider's settlements fail, every region. Dims: `provider`.
    SettlementProviderFailures,
    /// Every provider in one region fails 50-100% of auths. Dims: `region`.
    RegionOutage,
    /// One provider's settlement events stop, every region. Dims: `provider`.
    SettlementVolumeStop,
    /// Family `cause_provider`: one provider's auths (or settlements) fail.
    CauseProvider,
    /// Family `cause_region`: one region's auths (or settlements) fail.
    CauseRegion,
    /// Family `cause_bin`: one BIN fails everywhere.
    CauseBin,
    /// Family `cause_bin_range`: every BIN of one 4-digit prefix fails.
    CauseBinRange,
    /// Family `cause_card_brand`: a card network outage.
    CauseCardBrand,
    /// Family `cause_merchant`: one merchant's auth integration (or webhooks) breaks.
    CauseMerchant,
    /// Family `cause_error_code`: a new technical error code across all auths.
    CauseErrorCode,
    /// Family `cause_attr`: one value of an `attrs` attribute fails.
    CauseAttr,
    /// Family `multi_same_parent`: two or three elements under one parent.
    MultiSameParent,
    /// Family `multi_diff_parent`: two or three elements with different parents.
    MultiDiffParent,
    /// Family `overlapping`: two unrelated faults, the second starting while
    /// the first goes on.
    Overlapping,
    /// Family `deep3`: a three-dimension element, its parents otherwise healthy.
    Deep3,
    /// Family `low_volume`: a small element failing hard.
    LowVolume,
    /// Family `slow_burn`: ramps and small sustained lifts.
    SlowBurn,
}

impl FaultType {
    /// The standard scenario's fault types, in a fixed order.
    pub const ALL: [FaultType; 7] = [
        FaultType::ProviderRegionOutage,
        FaultType::BinIssuerOutage,
        FaultType::MerchantWebhookDown,
        FaultType::ProviderDegraded,
        FaultType::SettlementProviderFailures,
        FaultType::RegionOutage,
        FaultType::SettlementVolumeStop,
    ];

    /// The snake_case name used in labels.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultType::ProviderRegionOutage => "provider_region_outage",
            FaultType::BinIssuerOutage => "bin_issuer_outage",
            FaultType::MerchantWebhookDown => "merchant_webhook_down",
            FaultType::ProviderDegraded => "provider_degraded",
            FaultType::SettlementProviderFailures => "settlement_provider_failures",
            FaultType::RegionOutage => "region_outage",
            FaultType::SettlementVolumeStop => "settlement_volume_stop",
            FaultType::CauseProvider => "cause_provider",
            FaultType::CauseRegion => "cause_region",
            FaultType::CauseBin => "cause_bin",
            FaultType::CauseBinRange => "cause_bin_range",
            FaultType::CauseCardBrand => "cause_card_brand",
            FaultType::CauseMerchant => "cause_merchant",
            FaultType::CauseErrorCode => "cause_error_code",
            FaultType::CauseAttr => "cause_attr",
            FaultType::MultiSameParent => "multi_same_parent",
            FaultType::MultiDiffParent => "multi_diff_parent",
            FaultType::Overlapping => "overlapping",
            FaultType::Deep3 => "deep3",
            FaultType::LowVolume => "low_volume",
            FaultType::SlowBurn => "slow_burn",
        }
    }

    /// A fault type of the standard scenario (its effect follows from the type
    /// and the dims), not of a family (its effect is its injections).
    pub fn is_standard(self) -> bool {
        FaultType::ALL.contains(&self)
    }

    /// The shipped rule (`rules/*.yaml`) that should catch a standard fault of
    /// this type. Family faults may be on other kinds: their rule is
    /// [`FaultSpec::rule`]; here they answer the auth rule.
    pub fn rule(self) -> &'static str {
        match self {
            FaultType::MerchantWebhookDown => "webhook_delivery_failures",
            FaultType::SettlementProviderFailures => "settlement_failures",
            FaultType::SettlementVolumeStop => "settlement_volume_drop",
            _ => "auth_technical_failures",
        }
    }

    /// The dimensions of a standard fault's root cause, as keyed in incidents
    /// (none for family faults, whose elements vary: [`FaultSpec::elements`]).
    pub fn dims(self) -> &'static [&'static str] {
        match self {
            FaultType::ProviderRegionOutage => &["provider", "region"],
            FaultType::BinIssuerOutage => &["bin"],
            FaultType::MerchantWebhookDown => &["merchant_id"],
            FaultType::ProviderDegraded
            | FaultType::SettlementProviderFailures
            | FaultType::SettlementVolumeStop => &["provider"],
            FaultType::RegionOutage => &["region"],
            _ => &[],
        }
    }
}

impl fmt::Display for FaultType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Things that look unusual but are not incidents: a detector must stay quiet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuietType {
    /// Auth and webhook volume x2-3 for 10 minutes, rates unchanged.
    TrafficSurge,
    /// The daily swing of volume (the whole scenario).
    Diurnal,
    /// A rare BIN gets a handful (3-6) of technical failures in a few minutes.
    RareBinFailures,
    /// A merchant whose webhook endpoint always fails 3-8%, with short bursts.
    FlakyMerchant,
    /// One BIN's business declines jump to 50%: declines are not technical failures.
    DeclineSpike,
    /// Family `failover`: one region's traffic (or one provider's there) is
    /// processed in another region for a while; totals and failure rates stay.
    Failover,
    /// Family `decline_burst`: business declines at 40-70% on a BIN, a merchant
    /// or a card brand.
    DeclineBurst,
}

impl QuietType {
    /// The snake_case name used in labels.
    pub fn as_str(self) -> &'static str {
        match self {
            QuietType::TrafficSurge => "traffic_surge",
            QuietType::Diurnal => "diurnal",
            QuietType::RareBinFailures => "rare_bin_failures",
            QuietType::FlakyMerchant => "flaky_merchant",
            QuietType::DeclineSpike => "decline_spike",
            QuietType::Failover => "failover",
            QuietType::DeclineBurst => "decline_burst",
        }
    }

    /// Whether it claims any incident opened during it, whatever its root
    /// cause (else only incidents naming its element).
    pub fn claims_any(self) -> bool {
        matches!(
            self,
            QuietType::TrafficSurge | QuietType::Diurnal | QuietType::Failover
        )
    }

    /// The dimensions it is about (for the family cases, which vary, none:
    /// see their dims).
    pub fn dims(self) -> &'static [&'static str] {
        match self {
            QuietType::TrafficSurge
            | QuietType::Diurnal
            | QuietType::Failover
            | QuietType::DeclineBurst => &[],
            QuietType::RareBinFailures | QuietType::DeclineSpike => &["bin"],
            QuietType::FlakyMerchant => &["merchant_id"],
        }
    }
}

impl fmt::Display for QuietType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultSpec {
    /// Label id, e.g. `f03`.
    pub id: String,
    /// What breaks.
    pub fault_type: FaultType,
    /// Event time it starts, epoch ms (inclusive).
    pub start_ms: i64,
    /// Event time it ends, epoch ms (exclusive).
    pub end_ms: i64,
    /// The element that breaks: exactly [`FaultType::dims`], values from the
    /// scenario's [`World`]. This is the expected root cause.
    pub dims: BTreeMap<String, String>,
    /// Failure rate of the element during the fault (0..1); for
    /// `provider_degraded` (and lifts in `slow_burn`) the added failure rate;
    /// unused by `settlement_volume_stop`.
    pub intensity: f64,
    /// Family faults: what happens to traffic (for standard faults, empty: the
    /// effect follows from the type and the dims).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub injections: Vec<Injection>,
    /// Every expected root-cause element; empty means `[dims]`. `dims` is the first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub elements: Vec<BTreeMap<String, String>>,
    /// Family faults: a description for humans (standard ones get theirs from the type).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl FaultSpec {
    /// The shipped rule that should catch it: the fault type's, or for family
    /// faults the rate rule of the kind its injections touch.
    pub fn rule(&self) -> &'static str {
        match self.injections.first().and_then(|i| i.kind.as_deref()) {
            _ if self.fault_type.is_standard() => self.fault_type.rule(),
            Some("webhook") => "webhook_delivery_failures",
            Some("settlement") => "settlement_failures",
            _ => "auth_technical_failures",
        }
    }

    /// Every expected root-cause element.
    pub fn expected(&self) -> Vec<BTreeMap<String, String>> {
        if self.elements.is_empty() {
            vec![self.dims.clone()]
        } else {
            self.elements.clone()
        }
    }
}

/// One quiet case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuietSpec {
    /// What happens.
    pub quiet_type: QuietType,
    /// Event time it starts, epoch ms (inclusive).
    pub start_ms: i64,
    /// Event time it ends, epoch ms (exclusive). For `diurnal`, `end - start` (at
    /// most a day) is the period of one full swing.
    pub end_ms: i64,
    /// The element concerned: exactly [`QuietType::dims`].
    pub dims: BTreeMap<String, String>,
    /// `traffic_surge`: volume factor; `diurnal`: amplitude (0.4 = +-40%);
    /// `rare_bin_failures`: number of failures; `flaky_merchant`: baseline
    /// webhook failure rate; `decline_spike`, `decline_burst`: decline rate;
    /// `failover`: share of the element's traffic moved (1).
    pub intensity: f64,
    /// Family cases (`failover`, `decline_burst`): what happens to traffic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub injections: Vec<Injection>,
    /// Family cases: a description for humans.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// What to generate: traffic from the seed's [`World`], faults and quiet cases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    /// Seeds the world, the schedule and the traffic.
    pub seed: u64,
    /// Event time of the first event, epoch ms.
    pub start_ms: i64,
    /// Length in event time, ms.
    pub duration_ms: i64,
    /// Mean total event rate (all kinds), events per second of event time.
    pub events_per_sec: f64,
    /// Faults to inject.
    pub faults: Vec<FaultSpec>,
    /// Quiet cases to inject.
    pub quiet: Vec<QuietSpec>,
    /// Share of events sent twice.
    pub duplicate_rate: f64,
    /// Share of events arriving more than 30 s after their event time.
    pub late_rate: f64,
    /// Share of events replaced by a bad line.
    pub bad_line_rate: f64,
    /// The scenario family it was built as.
    #[serde(default, skip_serializing_if = "Family::is_standard")]
    pub family: Family,
    /// Auths carry `attrs` (`channel`, `app_version`); off in the standard
    /// scenario, whose lines stay as they always were.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attrs: bool,
}

/// The answer key of a scenario (`labels.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Labels {
    /// The scenario's seed.
    pub seed: u64,
    /// Scenario start (event time).
    pub start: DateTime<Utc>,
    /// Scenario end (event time).
    pub end: DateTime<Utc>,
    /// Mean total event rate.
    pub events_per_sec: f64,
    /// Faults: each should open at least one matching incident.
    pub faults: Vec<FaultLabel>,
    /// Quiet cases: none should open an incident.
    pub quiet: Vec<QuietLabel>,
    /// The scenario family (absent: `standard`).
    #[serde(default, skip_serializing_if = "Family::is_standard")]
    pub family: Family,
}

/// One fault in [`Labels`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultLabel {
    /// Fault id, e.g. `f03`.
    pub id: String,
    /// What breaks.
    #[serde(rename = "type")]
    pub fault_type: FaultType,
    /// The rule that should catch it.
    pub rule: String,
    /// The expected root cause, keyed as in incidents (the first of
    /// `elements` when there are several).
    pub dims: BTreeMap<String, String>,
    /// Every expected root-cause element; empty (as in standard labels) means `[dims]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub elements: Vec<BTreeMap<String, String>>,
    /// The scenario family of the fault (absent: `standard`).
    #[serde(default, skip_serializing_if = "Family::is_standard")]
    pub family: Family,
    /// Start (event time).
    pub start: DateTime<Utc>,
    /// End (event time).
    pub end: DateTime<Utc>,
    /// See [`FaultSpec::intensity`].
    #[serde(default)]
    pub intensity: f64,
    /// For humans.
    #[serde(default)]
    pub description: String,
}

impl FaultLabel {
    /// Every expected root-cause element: `elements`, or `[dims]` when empty.
    pub fn expected(&self) -> Vec<&BTreeMap<String, String>> {
        if self.elements.is_empty() {
            vec![&self.dims]
        } else {
            self.elements.iter().collect()
        }
    }
}

/// One quiet case in [`Labels`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuietLabel {
    /// What happens.
    #[serde(rename = "type")]
    pub quiet_type: QuietType,
    /// Start (event time).
    pub start: DateTime<Utc>,
    /// End (event time).
    pub end: DateTime<Utc>,
    /// The element concerned (empty when it concerns all traffic).
    #[serde(default)]
    pub dims: BTreeMap<String, String>,
    /// See [`QuietSpec::intensity`].
    #[serde(default)]
    pub intensity: f64,
    /// For humans.
    #[serde(default)]
    pub description: String,
}

/// A scenario that cannot be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {message}")]
pub struct ScenarioError {
    /// The fault id or quiet case concerned, or `scenario`.
    pub what: String,
    /// What is wrong.
    pub message: String,
}

pub(crate) fn dims_of(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(crate) fn minutes(ms: i64) -> String {
    let m = ms as f64 / MINUTE as f64;
    if (m - m.round()).abs() < 0.05 {
        format!("{} min", m.round())
    } else {
        format!("{m:.1} min")
    }
}

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

// ---------------------------------------------------------------------------
// The generator.

/// One NDJSON line (no trailing newline) and when it reaches faultline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Arrival time, epoch ms: event time plus delivery delay.
    pub arrival_ms: i64,
    /// The line.
    pub text: String,
}

/// Counts of what a [`Generator`] has produced so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GenStats {
    /// Distinct events generated (including those replaced by bad lines).
    pub events: u64,
    /// Lines queued (events + duplicates).
    pub lines: u64,
    /// Events sent a second time.
    pub duplicates: u64,
    /// Events delivered more than 30 s after their event time.
    pub late: u64,
    /// Bad lines.
    pub bad: u64,
}

/// Why an auth failed, which picks its error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    Baseline,
    Provider,
    Issuer,
    Network,
}

#[derive(Debug, Clone, Copy)]
enum Effect {
    AuthFail {
        provider: Option<u8>,
        region: Option<u8>,
        bin: Option<u32>,
        rate: f64,
        cause: Cause,
    },
    AuthAdd {
        provider: u8,
        add: f64,
    },
    WebhookFail {
        merchant: u32,
        rate: f64,
    },
    SettleFail {
        provider: u8,
        rate: f64,
    },
    SettleStop {
        provider: u8,
    },
    Surge {
        factor: f64,
    },
    Declines {
        bin: u32,
        rate: f64,
    },
    /// A family injection: index into [`Generator::hits`].
    Generic(u16),
}

#[derive(Debug, Clone, Copy)]
struct Timed {
    start: i64,
    end: i64,
    effect: Effect,
}

#[derive(Debug, Clone)]
struct Flaky {
    start: i64,
    end: i64,
    base: f64,
    /// (start, end, failure rate)
    bursts: Vec<(i64, i64, f64)>,
}

#[derive(Debug, Clone, Copy)]
struct Diurnal {
    start: i64,
    end: i64,
    period: f64,
    amplitude: f64,
}

/// A line waiting for its arrival time. Ordered so the heap pops the earliest.
#[derive(Debug)]
struct Pending {
    arrival_ms: i64,
    seq: u64,
    text: String,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.arrival_ms == other.arrival_ms && self.seq == other.seq
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.arrival_ms, other.seq).cmp(&(self.arrival_ms, self.seq))
    }
}

/// What one generated event is; borrowed names keep it allocation-free.
struct Ev {
    kind: &'static str,
    outcome: &'static str,
    pair: usize,
    bin: Option<u32>,
    merchant: u32,
    code: Option<&'static str>,
    latency: u64,
    message: Option<&'static str>,
    attrs: Option<Attrs>,
}

/// A card number (Stripe's test Visa) in upstream text, which ingest must redact.
const CARD_MESSAGE: &str = "retry with card 4242 4242 4242 4242 failed";

fn message_for(code: &str) -> &'static str {
    match code {
        "timeout" => "upstream timeout after 30s",
        "issuer_unavailable" => "issuer did not respond (RC 91)",
        "provider_5xx" => "acquirer said \\\"502 bad gateway\\\"",
        "webhook_timeout" => "delivery timed out after 10s",
        "insufficient_funds" => "insufficient funds (RC 51)",
        "do_not_honor" => "do not honor (RC 05)",
        c => inject::message_for_new_code(c).unwrap_or("card expired (RC 54)"),
    }
}

/// Streams a [`Scenario`] as NDJSON lines in arrival order.
///
/// Events are drawn in event-time order; each gets a delivery delay and waits
/// in a heap until no event still to be drawn could arrive before it, so the
/// lines come out sorted by [`Line::arrival_ms`].
pub struct Generator {
    rng: StdRng,
    world: World,
    seed: u64,
    end_ms: i64,
    start_ms: i64,
    duplicate_rate: f64,
    late_rate: f64,
    bad_rate: f64,

    effects: Vec<Timed>,
    /// Compiled family injections, referenced by [`Effect::Generic`].
    hits: Vec<Hit>,
    /// Auths carry attrs.
    attrs: bool,
    active: Vec<usize>,
    next_change: i64,
    surge: f64,
    flaky_of: Vec<Option<u16>>,
    flaky: Vec<Flaky>,
    diurnal: Option<Diurnal>,
    /// (event time, bin) of injected rare-BIN failures, sorted.
    injections: Vec<(i64, u32)>,
    next_injection: usize,

    /// Per-ms rates: customer (auth + webhook) base, settlement.
    cust_base: f64,
    settle_rate: f64,
    rate_sec: i64,
    cust_rate: f64,
    total_rate: f64,
    noise_bucket: i64,
    noise: f64,

    next_t: f64,
    finished: bool,
    heap: BinaryHeap<Pending>,
    seq: u64,
    counter: u64,
    day: i64,
    date: String,
    stats: GenStats,
}

fn provider_index(name: &str) -> Option<u8> {
    PROVIDERS.iter().position(|p| *p == name).map(|i| i as u8)
}

fn region_index(name: &str) -> Option<u8> {
    REGIONS.iter().position(|r| *r == name).map(|i| i as u8)
}

impl Generator {
    /// A generator for `scenario`; fails when a fault or quiet case names
    /// dimensions or values its kind or the seed's [`World`] does not have.
    pub fn new(scenario: &Scenario) -> Result<Generator, ScenarioError> {
        let world = World::new(scenario.seed);
        let mut rng = StdRng::seed_from_u64(scenario.seed ^ TRAFFIC_SALT);
        let bad = |what: &str, message: String| ScenarioError {
            what: what.to_string(),
            message,
        };
        if !(scenario.events_per_sec.is_finite() && scenario.events_per_sec >= 0.0) {
            return Err(bad(
                "scenario",
                "events_per_sec must be a number >= 0".into(),
            ));
        }
        if scenario.duration_ms < 0 {
            return Err(bad("scenario", "duration must be >= 0".into()));
        }
        for (name, r) in [
            ("duplicate_rate", scenario.duplicate_rate),
            ("late_rate", scenario.late_rate),
            ("bad_line_rate", scenario.bad_line_rate),
        ] {
            if !(0.0..=1.0).contains(&r) {
                return Err(bad("scenario", format!("{name} must be in 0..1")));
            }
        }

        // Checks the dimension names, then resolves one value to an index in the world.
        let keys_ok = |what: &str, dims: &BTreeMap<String, String>, expected: &[&str]| {
            let keys: Vec<&str> = dims.keys().map(String::as_str).collect();
            let mut want = expected.to_vec();
            want.sort_unstable();
            if keys == want {
                Ok(())
            } else {
                Err(bad(
                    what,
                    format!("dims must be exactly {want:?}, got {keys:?}"),
                ))
            }
        };
        let resolve = |what: &str,
                       dims: &BTreeMap<String, String>,
                       expected: &[&str],
                       key: &str|
         -> Result<u32, ScenarioError> {
            keys_ok(what, dims, expected)?;
            let value = dims.get(key).map(String::as_str).unwrap_or_default();
            let found = match key {
                "provider" => provider_index(value).map(u32::from),
                "region" => region_index(value).map(u32::from),
                "bin" => world.bin_index.get(value).copied(),
                _ => world.merchant_index.get(value).copied(),
            };
            found.ok_or_else(|| {
                bad(
                    what,
                    format!("unknown {key} `{value}` for seed {}", scenario.seed),
                )
            })
        };

        let mut effects = Vec::new();
        let mut hits = Vec::new();
        // Family faults and quiet cases: their injections, compiled.
        let generic = |effects: &mut Vec<Timed>,
                       hits: &mut Vec<Hit>,
                       start: i64,
                       end: i64,
                       injections: &[Injection]|
         -> Result<(), String> {
            for inj in injections {
                let hit = Hit::compile(inj, &world)?;
                let index = u16::try_from(hits.len()).map_err(|_| "too many injections")?;
                hits.push(hit);
                effects.push(Timed {
                    start,
                    end,
                    effect: Effect::Generic(index),
                });
            }
            Ok(())
        };
        for f in &scenario.faults {
            let what = f.id.as_str();
            if f.end_ms <= f.start_ms {
                return Err(bad(what, "end must be after start".into()));
            }
            if !(0.0..=1.0).contains(&f.intensity) {
                return Err(bad(what, "intensity must be in 0..1".into()));
            }
            if !f.fault_type.is_standard() || !f.injections.is_empty() {
                if f.injections.is_empty() {
                    return Err(bad(what, "a family fault needs injections".into()));
                }
                generic(&mut effects, &mut hits, f.start_ms, f.end_ms, &f.injections)
                    .map_err(|m| bad(what, m))?;
                continue;
            }
            let exp = f.fault_type.dims();
            let r = |k| resolve(what, &f.dims, exp, k);
            let rate = f.intensity;
            let effect = match f.fault_type {
                FaultType::ProviderRegionOutage => Effect::AuthFail {
                    provider: Some(r("provider")? as u8),
                    region: Some(r("region")? as u8),
                    bin: None,
                    rate,
                    cause: Cause::Provider,
                },
                FaultType::BinIssuerOutage => Effect::AuthFail {
                    provider: None,
                    region: None,
                    bin: Some(r("bin")?),
                    rate,
                    cause: Cause::Issuer,
                },
                FaultType::RegionOutage => Effect::AuthFail {
                    provider: None,
                    region: Some(r("region")? as u8),
                    bin: None,
                    rate,
                    cause: Cause::Network,
                },
                FaultType::ProviderDegraded => Effect::AuthAdd {
                    provider: r("provider")? as u8,
                    add: rate,
                },
                FaultType::MerchantWebhookDown => Effect::WebhookFail {
                    merchant: r("merchant_id")?,
                    rate,
                },
                FaultType::SettlementProviderFailures => Effect::SettleFail {
                    provider: r("provider")? as u8,
                    rate,
                },
                FaultType::SettlementVolumeStop => Effect::SettleStop {
                    provider: r("provider")? as u8,
                },
                ft => return Err(bad(what, format!("a {ft} fault needs injections"))),
            };
            effects.push(Timed {
                start: f.start_ms,
                end: f.end_ms,
                effect,
            });
        }

        let mut flaky_of = vec![None; N_MERCHANTS];
        let mut flaky = Vec::new();
        let mut diurnal = None;
        let mut injections = Vec::new();
        for (i, q) in scenario.quiet.iter().enumerate() {
            let what = format!("quiet[{i}] {}", q.quiet_type);
            if q.end_ms <= q.start_ms {
                return Err(bad(&what, "end must be after start".into()));
            }
            if !q.injections.is_empty()
                || matches!(q.quiet_type, QuietType::Failover | QuietType::DeclineBurst)
            {
                if q.injections.is_empty() {
                    return Err(bad(&what, "a family quiet case needs injections".into()));
                }
                generic(&mut effects, &mut hits, q.start_ms, q.end_ms, &q.injections)
                    .map_err(|m| bad(&what, m))?;
                continue;
            }
            let r = |k| resolve(&what, &q.dims, q.quiet_type.dims(), k);
            match q.quiet_type {
                QuietType::TrafficSurge => {
                    keys_ok(&what, &q.dims, &[])?;
                    if !(q.intensity.is_finite() && q.intensity > 0.0 && q.intensity <= 100.0) {
                        return Err(bad(
                            &what,
                            "intensity (volume factor) must be in (0, 100]".into(),
                        ));
                    }
                    effects.push(Timed {
                        start: q.start_ms,
                        end: q.end_ms,
                        effect: Effect::Surge {
                            factor: q.intensity,
                        },
                    });
                }
                QuietType::DeclineSpike => {
                    effects.push(Timed {
                        start: q.start_ms,
                        end: q.end_ms,
                        effect: Effect::Declines {
                            bin: r("bin")?,
                            rate: q.intensity.clamp(0.0, 1.0),
                        },
                    });
                }
                QuietType::RareBinFailures => {
                    let bin = r("bin")?;
                    let n = q.intensity.round().clamp(0.0, 10_000.0) as usize;
                    for _ in 0..n {
                        injections.push((rng.gen_range(q.start_ms..q.end_ms), bin));
                    }
                }
                QuietType::FlakyMerchant => {
                    let m = r("merchant_id")? as usize;
                    let mut bursts = Vec::new();
                    let mut t = q.start_ms;
                    loop {
                        t += (rng.sample::<f64, _>(Exp1) * 20.0 * MINUTE as f64) as i64 + MINUTE;
                        if t >= q.end_ms {
                            break;
                        }
                        let len = rng.gen_range(30..=120) * SECOND;
                        bursts.push((t, t + len, rng.gen_range(0.15..0.25)));
                        t += len;
                    }
                    flaky_of[m] = Some(flaky.len() as u16);
                    flaky.push(Flaky {
                        start: q.start_ms,
                        end: q.end_ms,
                        base: q.intensity.clamp(0.0, 1.0),
                        bursts,
                    });
                }
                QuietType::Diurnal => {
                    keys_ok(&what, &q.dims, &[])?;
                    diurnal = Some(Diurnal {
                        start: q.start_ms,
                        end: q.end_ms,
                        period: (q.end_ms - q.start_ms).min(24 * 60 * MINUTE) as f64,
                        amplitude: q.intensity.clamp(0.0, 0.95),
                    });
                }
                QuietType::Failover | QuietType::DeclineBurst => {}
            }
        }
        injections.sort_unstable();

        let eps = scenario.events_per_sec / 1000.0;
        let mut g = Generator {
            rng,
            world,
            seed: scenario.seed,
            start_ms: scenario.start_ms,
            end_ms: scenario.end_ms(),
            duplicate_rate: scenario.duplicate_rate,
            late_rate: scenario.late_rate,
            bad_rate: scenario.bad_line_rate,
            effects,
            hits,
            attrs: scenario.attrs,
            active: Vec::new(),
            next_change: i64::MIN,
            surge: 1.0,
            flaky_of,
            flaky,
            diurnal,
            injections,
            next_injection: 0,
            cust_base: eps * (AUTH_SHARE + WEBHOOK_SHARE),
            settle_rate: eps * SETTLEMENT_SHARE,
            rate_sec: i64::MIN,
            cust_rate: 0.0,
            total_rate: 0.0,
            noise_bucket: 0,
            noise: 0.0,
            next_t: scenario.start_ms as f64,
            finished: false,
            heap: BinaryHeap::new(),
            seq: 0,
            counter: 0,
            day: i64::MIN,
            date: String::new(),
            stats: GenStats::default(),
        };
        g.advance();
        Ok(g)
    }

    /// What has been produced so far.
    pub fn stats(&self) -> GenStats {
        self.stats
    }

    fn refresh_effects(&mut self, t: i64) {
        self.active.clear();
        let mut next = i64::MAX;
        let mut surge = 1.0;
        for (i, e) in self.effects.iter().enumerate() {
            if e.start <= t && t < e.end {
                self.active.push(i);
                if let Effect::Surge { factor } = e.effect {
                    surge *= factor;
                }
            }
            if e.start > t {
                next = next.min(e.start);
            } else if e.end > t {
                next = next.min(e.end);
            }
        }
        self.next_change = next;
        self.surge = surge;
        self.rate_sec = i64::MIN;
    }

    fn refresh_rate(&mut self, t: i64) {
        // Slow multiplicative noise: AR(1) per 30 s, stationary sd ~7%.
        let bucket = (t - self.start_ms).div_euclid(30 * SECOND);
        while self.noise_bucket < bucket {
            self.noise_bucket += 1;
            let z: f64 = self.rng.sample(StandardNormal);
            self.noise = 0.85 * self.noise + 0.037 * z;
        }
        let daily = match self.diurnal {
            Some(d) if d.start <= t && t < d.end => {
                // Starts at the trough (midnight) and peaks half a period later.
                1.0 + d.amplitude * (TAU * (t - d.start) as f64 / d.period - FRAC_PI_2).sin()
            }
            _ => 1.0,
        };
        self.cust_rate = self.cust_base * daily * (1.0 + self.noise).max(0.3) * self.surge;
        self.total_rate = self.cust_rate + self.settle_rate;
        self.rate_sec = t.div_euclid(SECOND);
    }

    /// Moves `next_t` to the next regular event time.
    fn advance(&mut self) {
        let t = self.next_t as i64;
        if t >= self.next_change {
            self.refresh_effects(t);
        }
        if self.rate_sec != t.div_euclid(SECOND) {
            self.refresh_rate(t);
        }
        if self.total_rate <= 0.0 {
            self.next_t = f64::INFINITY;
            return;
        }
        let e: f64 = self.rng.sample(Exp1);
        self.next_t += e / self.total_rate;
    }

    /// Event time below which nothing remains to be drawn.
    fn frontier(&self) -> i64 {
        let inj = self
            .injections
            .get(self.next_injection)
            .map_or(i64::MAX, |i| i.0);
        let regular = if self.next_t < self.end_ms as f64 {
            self.next_t as i64
        } else {
            i64::MAX
        };
        inj.min(regular)
    }

    /// Draws the next event (or skips one a fault suppresses).
    fn produce(&mut self) {
        let inj = self.injections.get(self.next_injection).copied();
        let regular_done = self.next_t >= self.end_ms as f64;
        match inj {
            Some((t, bin)) if regular_done || (t as f64) <= self.next_t => {
                self.next_injection += 1;
                self.injected_failure(t, bin);
                return;
            }
            _ => {}
        }
        if regular_done {
            self.finished = true;
            return;
        }
        let t = self.next_t as i64;
        if t >= self.next_change {
            self.refresh_effects(t);
        }
        if self.rate_sec != t.div_euclid(SECOND) {
            self.refresh_rate(t);
        }
        let u = self.rng.gen::<f64>() * self.total_rate;
        if u < self.settle_rate {
            self.settlement(t);
        } else if u < self.settle_rate + self.cust_rate * AUTH_SHARE / (AUTH_SHARE + WEBHOOK_SHARE)
        {
            self.auth(t);
        } else {
            self.webhook(t);
        }
        self.advance();
    }

    fn lognormal(&mut self, median: f64, sigma: f64) -> u64 {
        let z: f64 = self.rng.sample(StandardNormal);
        (median * (sigma * z).exp()) as u64
    }

    fn auth(&mut self, t: i64) {
        let w = &self.world;
        let rng = &mut self.rng;
        let pair = w.pair_cdf.sample(rng);
        let pair = relocated(&self.active, &self.effects, &self.hits, inject::AUTH, pair);
        let (p, r) = ((pair / REGIONS.len()) as u8, (pair % REGIONS.len()) as u8);
        let bin = w.bin_cdf.sample(rng) as u32;
        let merchant = w.merchant_cdf.sample(rng) as u32;
        let attrs = self.attrs.then(|| inject::draw_attrs(rng));
        let base = w.pair_fail[pair];
        let mut pf = base;
        let mut cause = Cause::Baseline;
        let mut forced: Option<&'static str> = None;
        let mut pd = w.bins[bin as usize].decline;
        for &i in &self.active {
            match self.effects[i].effect {
                Effect::Generic(h) => {
                    let hit = &self.hits[h as usize];
                    if hit.kinds & inject::AUTH == 0
                        || !hit.matches(p, r, Some(bin), Some(merchant), attrs)
                    {
                        continue;
                    }
                    let elapsed = t - self.effects[i].start;
                    match hit.act {
                        Act::Fail {
                            rate,
                            ramp_ms,
                            code,
                        } => {
                            let target = base + (rate - base) * inject::ramp(elapsed, ramp_ms);
                            if target > pf {
                                pf = target;
                                cause = hit.cause;
                                forced = code;
                            }
                        }
                        Act::Add { add, ramp_ms } => {
                            pf = (pf + add * inject::ramp(elapsed, ramp_ms)).min(1.0);
                            if cause == Cause::Baseline {
                                cause = hit.cause;
                            }
                        }
                        Act::Decline { rate } => pd = rate,
                        Act::Move { .. } => {}
                    }
                }
                Effect::AuthFail {
                    provider,
                    region,
                    bin: b,
                    rate,
                    cause: c,
                } => {
                    let hit = provider.is_none_or(|x| x == p)
                        && region.is_none_or(|x| x == r)
                        && b.is_none_or(|x| x == bin);
                    if hit && rate > pf {
                        pf = rate;
                        cause = c;
                    }
                }
                Effect::AuthAdd { provider, add } if provider == p => {
                    pf = (pf + add).min(1.0);
                    if cause == Cause::Baseline {
                        cause = Cause::Provider;
                    }
                }
                Effect::Declines { bin: b, rate } if b == bin => pd = rate,
                _ => {}
            }
        }
        let (outcome, code) = if rng.gen::<f64>() < pf {
            // Part of the failures are the usual background, with its own codes.
            let c = if cause != Cause::Baseline && rng.gen::<f64>() * pf >= base {
                cause
            } else {
                Cause::Baseline
            };
            let u: f64 = rng.gen();
            let code = match c {
                Cause::Baseline if u < 0.4 => "timeout",
                Cause::Baseline if u < 0.75 => "provider_5xx",
                Cause::Baseline => "issuer_unavailable",
                Cause::Provider if u < 0.65 => "provider_5xx",
                Cause::Provider => "timeout",
                Cause::Issuer if u < 0.85 => "issuer_unavailable",
                Cause::Issuer => "timeout",
                Cause::Network if u < 0.7 => "timeout",
                Cause::Network => "provider_5xx",
            };
            let code = match forced {
                Some(f) if c != Cause::Baseline => f,
                _ => code,
            };
            ("failure", Some(code))
        } else if rng.gen::<f64>() < pd {
            let u: f64 = rng.gen();
            let code = if u < 0.5 {
                "insufficient_funds"
            } else if u < 0.85 {
                "do_not_honor"
            } else {
                "expired_card"
            };
            ("decline", Some(code))
        } else {
            ("success", None)
        };
        let median = w.provider_latency[p as usize];
        let latency = match code {
            Some("timeout") => rng.gen_range(15_000..30_000),
            Some("provider_5xx") => self.lognormal(120.0, 0.5),
            Some("issuer_unavailable") => self.lognormal(900.0, 0.4),
            _ => self.lognormal(median, 0.45),
        };
        let message = self.message(outcome, code);
        self.finish(
            t,
            &Ev {
                kind: "auth",
                outcome,
                pair,
                bin: Some(bin),
                merchant,
                code,
                latency,
                message,
                attrs,
            },
        );
    }

    fn webhook(&mut self, t: i64) {
        let w = &self.world;
        let rng = &mut self.rng;
        let pair = w.pair_cdf.sample(rng);
        let pair = relocated(
            &self.active,
            &self.effects,
            &self.hits,
            inject::WEBHOOK,
            pair,
        );
        let merchant = w.merchant_cdf.sample(rng) as u32;
        let mut pf = w.merchant_webhook_fail[merchant as usize];
        if let Some(f) = self.flaky_of[merchant as usize] {
            let f = &self.flaky[f as usize];
            if f.start <= t && t < f.end {
                pf = f
                    .bursts
                    .iter()
                    .find(|b| b.0 <= t && t < b.1)
                    .map_or(f.base, |b| b.2);
            }
        }
        let (p, r) = ((pair / REGIONS.len()) as u8, (pair % REGIONS.len()) as u8);
        for &i in &self.active {
            match self.effects[i].effect {
                Effect::WebhookFail { merchant: m, rate } if m == merchant => pf = pf.max(rate),
                Effect::Generic(h) => {
                    let hit = &self.hits[h as usize];
                    if hit.kinds & inject::WEBHOOK != 0
                        && hit.matches(p, r, None, Some(merchant), None)
                    {
                        pf = generic_rate(hit, pf, t - self.effects[i].start);
                    }
                }
                _ => {}
            }
        }
        let failed = rng.gen::<f64>() < pf;
        let (outcome, code, latency) = if failed {
            (
                "failure",
                Some("webhook_timeout"),
                rng.gen_range(10_000..15_000),
            )
        } else {
            ("success", None, self.lognormal(250.0, 0.6))
        };
        let message = self.message(outcome, code);
        self.finish(
            t,
            &Ev {
                kind: "webhook",
                outcome,
                pair,
                bin: None,
                merchant,
                code,
                latency,
                message,
                attrs: None,
            },
        );
    }

    fn settlement(&mut self, t: i64) {
        let w = &self.world;
        let rng = &mut self.rng;
        let pair = w.pair_cdf.sample(rng);
        let pair = relocated(
            &self.active,
            &self.effects,
            &self.hits,
            inject::SETTLEMENT,
            pair,
        );
        let p = (pair / REGIONS.len()) as u8;
        let mut pf = w.settle_fail[pair];
        for &i in &self.active {
            match self.effects[i].effect {
                // Thinning: the stopped provider's events are drawn and dropped.
                Effect::SettleStop { provider } if provider == p => return,
                Effect::SettleFail { provider, rate } if provider == p => pf = pf.max(rate),
                Effect::Generic(h) => {
                    let hit = &self.hits[h as usize];
                    let r = (pair % REGIONS.len()) as u8;
                    if hit.kinds & inject::SETTLEMENT != 0 && hit.matches(p, r, None, None, None) {
                        pf = generic_rate(hit, pf, t - self.effects[i].start);
                    }
                }
                _ => {}
            }
        }
        let merchant = w.merchant_cdf.sample(rng) as u32;
        let (outcome, code) = if rng.gen::<f64>() < pf {
            let code = if rng.gen_bool(0.6) {
                "provider_5xx"
            } else {
                "timeout"
            };
            ("failure", Some(code))
        } else {
            ("success", None)
        };
        let latency = self.lognormal(1500.0, 0.5);
        let message = self.message(outcome, code);
        self.finish(
            t,
            &Ev {
                kind: "settlement",
                outcome,
                pair,
                bin: None,
                merchant,
                code,
                latency,
                message,
                attrs: None,
            },
        );
    }

    fn injected_failure(&mut self, t: i64, bin: u32) {
        let pair = self.world.pair_cdf.sample(&mut self.rng);
        let merchant = self.world.merchant_cdf.sample(&mut self.rng) as u32;
        let latency = self.lognormal(900.0, 0.4);
        self.finish(
            t,
            &Ev {
                kind: "auth",
                outcome: "failure",
                pair,
                bin: Some(bin),
                merchant,
                code: Some("issuer_unavailable"),
                latency,
                message: None,
                attrs: None,
            },
        );
    }

    fn message(&mut self, outcome: &str, code: Option<&str>) -> Option<&'static str> {
        let u: f64 = self.rng.gen();
        if u < 1e-5 {
            return Some(CARD_MESSAGE);
        }
        let p = match outcome {
            "failure" => 0.2,
            "decline" => 0.05,
            _ => 0.0,
        };
        match code {
            Some(c) if u < p => Some(message_for(c)),
            _ => None,
        }
    }

    /// Writes the event's line and queues it (and maybe a duplicate) for arrival.
    fn finish(&mut self, t: i64, ev: &Ev) {
        self.counter += 1;
        self.stats.events += 1;
        let corrupt = if self.rng.gen::<f64>() < self.bad_rate {
            Some(self.rng.gen_range(0u8..4))
        } else {
            None
        };
        let mut s = String::with_capacity(288);
        s.push_str("{\"id\":");
        if corrupt == Some(1) {
            push_u64(&mut s, self.counter);
        } else {
            s.push_str("\"evt_");
            push_u64(&mut s, self.seed);
            s.push('_');
            push_u64(&mut s, self.counter);
            s.push('"');
        }
        s.push_str(",\"ts\":");
        if corrupt == Some(2) {
            push_i64(&mut s, t);
        } else {
            s.push('"');
            self.push_ts(&mut s, t);
            s.push('"');
        }
        s.push_str(",\"kind\":\"");
        s.push_str(ev.kind);
        s.push_str("\",\"outcome\":\"");
        s.push_str(ev.outcome);
        s.push_str("\",\"provider\":\"");
        s.push_str(PROVIDERS[ev.pair / REGIONS.len()]);
        s.push_str("\",\"region\":\"");
        s.push_str(REGIONS[ev.pair % REGIONS.len()]);
        s.push('"');
        if let Some(b) = ev.bin {
            let bin = &self.world.bins[b as usize];
            s.push_str(",\"bin\":\"");
            s.push_str(&bin.digits);
            s.push_str("\",\"card_brand\":\"");
            s.push_str(bin.brand);
            s.push('"');
        }
        s.push_str(",\"merchant_id\":\"");
        s.push_str(&self.world.merchants[ev.merchant as usize]);
        s.push_str("\",\"latency_ms\":");
        if corrupt == Some(3) {
            s.push('"');
            push_u64(&mut s, ev.latency);
            s.push_str("ms\"");
        } else {
            push_u64(&mut s, ev.latency);
        }
        if let Some(c) = ev.code {
            s.push_str(",\"error_code\":\"");
            s.push_str(c);
            s.push('"');
        }
        if let Some(m) = ev.message {
            s.push_str(",\"message\":\"");
            s.push_str(m);
            s.push('"');
        }
        if let Some(a) = ev.attrs {
            inject::push_attrs(&mut s, a);
        }
        s.push('}');
        if corrupt == Some(0) {
            // Lines are ASCII, so any byte offset is a char boundary.
            let cut = self.rng.gen_range(1..s.len());
            s.truncate(cut);
        }

        let r: f64 = self.rng.gen();
        let delay = if r < self.late_rate {
            self.stats.late += 1;
            self.rng.gen_range(31 * SECOND..180 * SECOND)
        } else if r < self.late_rate + 0.05 {
            self.rng.gen_range(2 * SECOND..25 * SECOND)
        } else {
            1 + (self.rng.sample::<f64, _>(Exp1) * 400.0) as i64
        };
        let arrival = t + delay;
        if corrupt.is_some() {
            self.stats.bad += 1;
        } else if self.rng.gen::<f64>() < self.duplicate_rate {
            self.stats.duplicates += 1;
            let again = arrival + self.rng.gen_range(200..30 * SECOND);
            self.push(again, s.clone());
        }
        self.push(arrival, s);
    }

    fn push(&mut self, arrival_ms: i64, text: String) {
        self.seq += 1;
        self.stats.lines += 1;
        self.heap.push(Pending {
            arrival_ms,
            seq: self.seq,
            text,
        });
    }

    /// `2026-03-02T00:20:41.123Z`; the date part is cached per day.
    fn push_ts(&mut self, s: &mut String, t: i64) {
        let day = t.div_euclid(86_400_000);
        if day != self.day {
            self.day = day;
            self.date = ts(day * 86_400_000).format("%Y-%m-%d").to_string();
        }
        let ms = t.rem_euclid(86_400_000);
        let (h, m, sec, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
        s.push_str(&self.date);
        let b = [
            b'T',
            b'0' + (h / 10) as u8,
            b'0' + (h % 10) as u8,
            b':',
            b'0' + (m / 10) as u8,
            b'0' + (m % 10) as u8,
            b':',
            b'0' + (sec / 10) as u8,
            b'0' + (sec % 10) as u8,
            b'.',
            b'0' + (milli / 100) as u8,
            b'0' + (milli / 10 % 10) as u8,
            b'0' + (milli % 10) as u8,
            b'Z',
        ];
        // Every byte above is ASCII.
        s.push_str(std::str::from_utf8(&b).unwrap_or_default());
    }
}

/// The pair (provider x region index) traffic of `kind` is processed in once
/// the active family moves apply.
fn relocated(active: &[usize], effects: &[Timed], hits: &[Hit], kind: u8, pair: usize) -> usize {
    if hits.is_empty() {
        return pair;
    }
    let active_hits = active.iter().filter_map(|&i| match effects[i].effect {
        Effect::Generic(h) => Some(&hits[h as usize]),
        _ => None,
    });
    inject::relocate(active_hits, kind, pair)
}

/// The failure rate of a webhook or settlement a family injection touches,
/// `elapsed_ms` after it started.
fn generic_rate(hit: &Hit, pf: f64, elapsed_ms: i64) -> f64 {
    match hit.act {
        Act::Fail { rate, ramp_ms, .. } => {
            pf.max(pf + (rate - pf) * inject::ramp(elapsed_ms, ramp_ms))
        }
        Act::Add { add, ramp_ms } => (pf + add * inject::ramp(elapsed_ms, ramp_ms)).min(1.0),
        Act::Decline { .. } | Act::Move { .. } => pf,
    }
}

fn push_u64(s: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    s.push_str(std::str::from_utf8(&buf[i..]).unwrap_or_default());
}

fn push_i64(s: &mut String, n: i64) {
    if n < 0 {
        s.push('-');
    }
    push_u64(s, n.unsigned_abs());
}

impl Iterator for Generator {
    type Item = Line;

    fn next(&mut self) -> Option<Line> {
        loop {
            if let Some(top) = self.heap.peek() {
                if self.finished || top.arrival_ms <= self.frontier() {
                    let p = self.heap.pop()?;
                    return Some(Line {
                        arrival_ms: p.arrival_ms,
                        text: p.text,
                    });
                }
            } else if self.finished {
                return None;
            }
            self.produce();
        }
    }
}

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
