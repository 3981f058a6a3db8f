//! Scenario families: labelled traffic wider than the shipped rules.
//!
//! The standard scenario ([`Scenario::standard`]) holds the seven fault types
//! the shipped rules were shaped around. A family holds faults of one other
//! shape, several times with targets, intensities and durations drawn from the
//! seed: a cause on any event attribute (`cause_*`), several elements at once
//! (`multi_*`, `overlapping`), a three-dimension element (`deep3`), small
//! elements failing hard (`low_volume`), ramps and small lifts (`slow_burn`),
//! and two quiet families that must open nothing (`failover`,
//! `decline_burst`). Every family scenario also has the background quiet cases
//! of the standard one (the daily swing, five flaky merchants).
//!
//! What a family fault does to traffic is data ([`Injection`]s); what it
//! expects is its elements ([`FaultSpec::elements`]), keyed by event field names
//! (`provider`, `region`, `bin`, `bin4`, `card_brand`, `merchant_id`,
//! `error_code`, `attrs.NAME`). `scenarios/README.md` lists the families.

use std::collections::BTreeMap;
use std::f64::consts::{FRAC_PI_2, TAU};
use std::fmt;
use std::str::FromStr;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::Exp1;
use serde::{Deserialize, Serialize};

use super::generator::{
    background, dims_of, minutes, round_to, FaultSpec, FaultType, QuietSpec, QuietType, Scenario,
    World, AUTH_SHARE, DEFAULT_START_MS, DIURNAL_AMPLITUDE, GAP, MAX_DURATION_MS, MINUTE,
    N_MERCHANTS, PROVIDERS, REGIONS, SCHEDULE_SALT, SECOND, SETTLEMENT_SHARE, TAIL, WARMUP,
    WEBHOOK_SHARE,
};
use super::inject::{Action, Injection, APP_VERSIONS, CHANNELS, NEW_ERROR_CODES};

mod variants;

/// A scenario family: what [`Scenario::family`] builds.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// [`Scenario::standard`]: the seven standard fault types and quiet cases.
    #[default]
    Standard,
    /// A provider's auths fail in every region (some: its settlements).
    CauseProvider,
    /// A region's auths fail at every provider (some: its settlements).
    CauseRegion,
    /// A busy BIN fails at every provider and region.
    CauseBin,
    /// Every BIN of one 4-digit issuer prefix fails: `{bin4}`.
    CauseBinRange,
    /// A card network outage: every BIN of one brand, everywhere.
    CauseCardBrand,
    /// A large merchant's auth integration breaks (some: its webhooks).
    CauseMerchant,
    /// A new technical error code across all auths at 5-20%.
    CauseErrorCode,
    /// One value of an `attrs` attribute fails (a bad app release, a channel).
    CauseAttr,
    /// Two or three elements at once under one parent.
    MultiSameParent,
    /// Two or three elements at once with different parents.
    MultiDiffParent,
    /// Two unrelated faults, the second starting 2-4 minutes into the first.
    Overlapping,
    /// `{provider, region, card_brand}`, the parent otherwise healthy.
    Deep3,
    /// A BIN or merchant with 20-35 auths per 2 minutes failing 50-80%.
    LowVolume,
    /// Failure rates ramping up over minutes, and +2-4 point lifts on big elements.
    SlowBurn,
    /// Quiet: a region's traffic moves to another region for a while.
    Failover,
    /// Quiet: business declines burst on a BIN, a merchant or a card brand.
    DeclineBurst,
}

impl Family {
    /// Every family, the standard one first.
    pub const ALL: [Family; 17] = [
        Family::Standard,
        Family::CauseProvider,
        Family::CauseRegion,
        Family::CauseBin,
        Family::CauseBinRange,
        Family::CauseCardBrand,
        Family::CauseMerchant,
        Family::CauseErrorCode,
        Family::CauseAttr,
        Family::MultiSameParent,
        Family::MultiDiffParent,
        Family::Overlapping,
        Family::Deep3,
        Family::LowVolume,
        Family::SlowBurn,
        Family::Failover,
        Family::DeclineBurst,
    ];

    /// The snake_case name used on the command line and in labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Standard => "standard",
            Family::CauseProvider => "cause_provider",
            Family::CauseRegion => "cause_region",
            Family::CauseBin => "cause_bin",
            Family::CauseBinRange => "cause_bin_range",
            Family::CauseCardBrand => "cause_card_brand",
            Family::CauseMerchant => "cause_merchant",
            Family::CauseErrorCode => "cause_error_code",
            Family::CauseAttr => "cause_attr",
            Family::MultiSameParent => "multi_same_parent",
            Family::MultiDiffParent => "multi_diff_parent",
            Family::Overlapping => "overlapping",
            Family::Deep3 => "deep3",
            Family::LowVolume => "low_volume",
            Family::SlowBurn => "slow_burn",
            Family::Failover => "failover",
            Family::DeclineBurst => "decline_burst",
        }
    }

    /// The standard family (for `skip_serializing_if`).
    pub fn is_standard(&self) -> bool {
        *self == Family::Standard
    }

    /// A family that has no faults, only cases that must open no incident.
    pub fn is_quiet(self) -> bool {
        matches!(self, Family::Failover | Family::DeclineBurst)
    }

    /// The fault type of its faults (none for the standard and quiet families).
    pub fn fault_type(self) -> Option<FaultType> {
        Some(match self {
            Family::CauseProvider => FaultType::CauseProvider,
            Family::CauseRegion => FaultType::CauseRegion,
            Family::CauseBin => FaultType::CauseBin,
            Family::CauseBinRange => FaultType::CauseBinRange,
            Family::CauseCardBrand => FaultType::CauseCardBrand,
            Family::CauseMerchant => FaultType::CauseMerchant,
            Family::CauseErrorCode => FaultType::CauseErrorCode,
            Family::CauseAttr => FaultType::CauseAttr,
            Family::MultiSameParent => FaultType::MultiSameParent,
            Family::MultiDiffParent => FaultType::MultiDiffParent,
            Family::Overlapping => FaultType::Overlapping,
            Family::Deep3 => FaultType::Deep3,
            Family::LowVolume => FaultType::LowVolume,
            Family::SlowBurn => FaultType::SlowBurn,
            Family::Standard | Family::Failover | Family::DeclineBurst => return None,
        })
    }

    /// The shapes its faults (or quiet cases) take, cycled through in an order
    /// drawn from the seed.
    fn variants(self) -> Vec<V> {
        use V::*;
        match self {
            Family::Standard => vec![],
            Family::CauseProvider => vec![ProviderAuth, ProviderAuth, ProviderSettle],
            Family::CauseRegion => vec![RegionAuth, RegionAuth, RegionSettle],
            Family::CauseBin => vec![Bin],
            Family::CauseBinRange => vec![BinRange],
            Family::CauseCardBrand => vec![Brand],
            Family::CauseMerchant => vec![MerchantAuth, MerchantAuth, MerchantWebhook],
            Family::CauseErrorCode => vec![ErrorCode],
            Family::CauseAttr => vec![AttrVersion, AttrVersion, AttrChannel],
            Family::MultiSameParent => {
                vec![SameProviderRegions, SameRangeBins, SameRegionProviders]
            }
            Family::MultiDiffParent => vec![DiffPairs, DiffBinMerchant, DiffPairBin],
            Family::Overlapping => (0..OVERLAPS.len() as u8).map(Overlap).collect(),
            Family::Deep3 => vec![Deep3],
            Family::LowVolume => vec![LowBin, LowMerchant],
            Family::SlowBurn => vec![
                RampPair,
                RampBin,
                RampProvider,
                RampRegion,
                LiftPair,
                LiftPair,
            ],
            Family::Failover => vec![FailoverRegion, FailoverPair],
            Family::DeclineBurst => vec![DeclineBin, DeclineMerchant, DeclineBrand],
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Family {
    type Err = String;

    fn from_str(s: &str) -> Result<Family, String> {
        Family::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Family::ALL.iter().map(|f| f.as_str()).collect();
                format!("unknown family `{s}` (one of {})", names.join(", "))
            })
    }
}

/// One shape of fault or quiet case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum V {
    ProviderAuth,
    ProviderSettle,
    RegionAuth,
    RegionSettle,
    Bin,
    BinRange,
    Brand,
    MerchantAuth,
    MerchantWebhook,
    ErrorCode,
    AttrVersion,
    AttrChannel,
    SameProviderRegions,
    SameRangeBins,
    SameRegionProviders,
    DiffPairs,
    DiffBinMerchant,
    DiffPairBin,
    /// Index into [`OVERLAPS`].
    Overlap(u8),
    /// A provider in one region (the single-element piece of overlaps).
    Pair,
    Deep3,
    LowBin,
    LowMerchant,
    RampPair,
    RampBin,
    RampProvider,
    RampRegion,
    LiftPair,
    FailoverRegion,
    FailoverPair,
    DeclineBin,
    DeclineMerchant,
    DeclineBrand,
}

/// The two faults of an `overlapping` slot, first and second.
const OVERLAPS: [(V, V); 6] = [
    (V::Pair, V::Bin),
    (V::Bin, V::Pair),
    (V::Pair, V::MerchantWebhook),
    (V::ProviderSettle, V::Pair),
    (V::MerchantAuth, V::Pair),
    (V::Pair, V::Pair),
];

/// A fault's content before it gets an id and a time.
struct Built {
    elements: Vec<BTreeMap<String, String>>,
    injections: Vec<Injection>,
    intensity: f64,
    description: String,
}

/// A one-element fault before its rate is drawn.
struct Single {
    kind: &'static str,
    element: BTreeMap<String, String>,
    lo: f64,
    hi: f64,
    /// The description is `HEAD: RATE TAIL`.
    head: String,
    tail: &'static str,
}

/// What a family builder knows: the world and the traffic volume over time.
struct Ctx<'w> {
    world: &'w World,
    eps: f64,
    start_ms: i64,
    period: f64,
    flaky: Vec<usize>,
}

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

fn draw(rng: &mut StdRng, lo: f64, hi: f64) -> f64 {
    round_to(rng.gen_range(lo..hi), 3)
}

fn fail(rate: f64) -> Action {
    Action::Fail {
        rate,
        ramp_ms: 0,
        code: None,
    }
}

fn pick<T: Clone>(v: &[T], rng: &mut StdRng) -> T {
    v[rng.gen_range(0..v.len())].clone()
}

/// No dimension both name with the same value: neither is the other's parent
/// or child, and they share no parent among their own dimensions.
fn unrelated(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> bool {
    a.iter().all(|(k, v)| b.get(k) != Some(v))
}

/// The elements named as `k=v, ...`, `; ` between elements.
fn names(elements: &[BTreeMap<String, String>]) -> String {
    elements
        .iter()
        .map(|e| {
            e.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Fits slots of the given (length, shortest length) after the warm-up, at
/// least [`GAP`] apart and [`TAIL`] before the end: lengths shrink toward their
/// shortest, then slots that still do not fit are dropped; the slack is spread
/// at random between them. Returns the kept slots' windows.
fn schedule(rng: &mut StdRng, plan: &mut Vec<(i64, i64)>, first: i64, end: i64) -> Vec<(i64, i64)> {
    let avail = end - first;
    let need = |plan: &[(i64, i64)]| -> i64 {
        let n = plan.len() as i64;
        plan.iter().map(|p| p.0).sum::<i64>() + (n - 1).max(0) * GAP + if n > 0 { TAIL } else { 0 }
    };
    while !plan.is_empty() && need(plan) > avail {
        let excess = need(plan) - avail;
        let room: i64 = plan.iter().map(|p| p.0 - p.1).sum();
        if room > excess {
            let k = (room - excess) as f64 / room as f64;
            for p in plan.iter_mut() {
                p.0 = p.1 + ((p.0 - p.1) as f64 * k) as i64 / SECOND * SECOND;
            }
        } else {
            for p in plan.iter_mut() {
                p.0 = p.1;
            }
            if need(plan) > avail {
                plan.pop();
            }
        }
    }
    let slack = (avail - need(plan)).max(0);
    let weights: Vec<f64> = (0..=plan.len())
        .map(|_| rng.sample::<f64, _>(Exp1))
        .collect();
    let wsum: f64 = weights.iter().sum::<f64>().max(f64::MIN_POSITIVE);
    let mut t = first;
    let mut windows = Vec::with_capacity(plan.len());
    for (i, p) in plan.iter().enumerate() {
        t += (slack as f64 * weights[i] / wsum) as i64 / SECOND * SECOND;
        windows.push((t, t + p.0));
        t += p.0 + GAP;
    }
    windows
}

impl Scenario {
    /// A scenario of `family` (see [`Family`]; `standard` is
    /// [`Scenario::standard`]): after a 30-minute warm-up, about one fault (or
    /// quiet case) of the family every 25 minutes, 5-12 minutes each (10-20
    /// for failovers), at least 15 minutes apart, with targets, intensities and
    /// durations drawn from the seed; plus the background quiet cases (the
    /// daily swing, five flaky merchants). A 3-hour scenario holds six.
    pub fn family(family: Family, seed: u64, duration_ms: i64, events_per_sec: f64) -> Scenario {
        if family == Family::Standard {
            return Scenario::standard(seed, duration_ms, events_per_sec);
        }
        let world = World::new(seed);
        let salt = (family as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut rng = StdRng::seed_from_u64(seed ^ SCHEDULE_SALT ^ salt);
        let start_ms = DEFAULT_START_MS;
        let duration_ms = duration_ms.clamp(0, MAX_DURATION_MS) / SECOND * SECOND;
        let eps = if events_per_sec.is_finite() {
            events_per_sec.max(0.0)
        } else {
            0.0
        };
        let end_ms = start_ms + duration_ms;
        let (mut quiet, flaky) = background(&world, &mut rng, start_ms, end_ms);
        let ctx = Ctx {
            world: &world,
            eps,
            start_ms,
            period: duration_ms.clamp(1, 24 * 60 * MINUTE) as f64,
            flaky,
        };

        let per_slot = match family {
            Family::Overlapping => 36 * MINUTE,
            Family::Failover => 30 * MINUTE,
            _ => 25 * MINUTE,
        };
        let avail = duration_ms - WARMUP;
        let count = if avail > 0 {
            (avail / per_slot).max(1) as usize
        } else {
            0
        };
        let mut variants = family.variants();
        variants.shuffle(&mut rng);
        let shapes: Vec<V> = (0..count).map(|i| variants[i % variants.len()]).collect();
        // (length, shortest length) per slot, and a ramp for the ramps.
        let mut plan = Vec::with_capacity(count);
        let mut ramps = Vec::with_capacity(count);
        for &v in &shapes {
            let (len, min, ramp) = match v {
                V::FailoverRegion | V::FailoverPair => {
                    (rng.gen_range(600..=1200) * SECOND, 10 * MINUTE, 0)
                }
                V::Overlap(_) => (rng.gen_range(540..=840) * SECOND, 9 * MINUTE, 0),
                V::RampPair | V::RampBin | V::RampProvider | V::RampRegion => {
                    let ramp = rng.gen_range(180..=480) * SECOND;
                    let len =
                        (ramp + rng.gen_range(180..=300) * SECOND).clamp(8 * MINUTE, 12 * MINUTE);
                    (len, 8 * MINUTE, ramp)
                }
                V::LiftPair => (rng.gen_range(540..=720) * SECOND, 8 * MINUTE, 0),
                _ => (rng.gen_range(300..=720) * SECOND, 5 * MINUTE, 0),
            };
            plan.push((len, min));
            ramps.push(ramp);
        }
        let windows = schedule(&mut rng, &mut plan, start_ms + WARMUP, end_ms);

        let mut faults: Vec<FaultSpec> = Vec::new();
        let fault_type = family.fault_type();
        let push = |built: Built, s: i64, e: i64, faults: &mut Vec<FaultSpec>| {
            if let Some(ft) = fault_type {
                faults.push(FaultSpec {
                    id: format!("f{:02}", faults.len() + 1),
                    fault_type: ft,
                    start_ms: s,
                    end_ms: e,
                    dims: built.elements[0].clone(),
                    intensity: built.intensity,
                    injections: built.injections,
                    elements: built.elements,
                    // The label adds the duration.
                    description: built.description,
                });
            }
        };
        for (i, &(s, e)) in windows.iter().enumerate() {
            let v = shapes[i];
            match v {
                V::Overlap(k) => {
                    let (a, b) = OVERLAPS[k as usize];
                    let offset = rng.gen_range(120..=240) * SECOND;
                    let first_end =
                        (s + rng.gen_range(offset + 3 * MINUTE..=e - s) / SECOND * SECOND).min(e);
                    let first = ctx.fault(a, s, first_end, 0, &mut rng);
                    let mut second = ctx.fault(b, s + offset, e, 0, &mut rng);
                    for _ in 0..20 {
                        if unrelated(&first.elements[0], &second.elements[0]) {
                            break;
                        }
                        second = ctx.fault(b, s + offset, e, 0, &mut rng);
                    }
                    push(first, s, first_end, &mut faults);
                    push(second, s + offset, e, &mut faults);
                }
                V::FailoverRegion
                | V::FailoverPair
                | V::DeclineBin
                | V::DeclineMerchant
                | V::DeclineBrand => quiet.push(ctx.quiet(v, s, e, &mut rng)),
                _ => {
                    let ramp = ramps[i].min(e - s - 3 * MINUTE).max(0);
                    let built = ctx.fault(v, s, e, ramp, &mut rng);
                    push(built, s, e, &mut faults);
                }
            }
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
            family,
            attrs: family == Family::CauseAttr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{parse_str, Event, Outcome};
    use crate::ingest::generator::{Generator, Labels};
    use std::collections::HashSet;

    const HOUR: i64 = 60 * MINUTE;
    const KEYS: [&str; 8] = [
        "provider",
        "region",
        "bin",
        "bin4",
        "card_brand",
        "merchant_id",
        "error_code",
        "attrs.app_version",
    ];

    #[test]
    fn families_parse_and_print() {
        for f in Family::ALL {
            assert_eq!(f.as_str().parse::<Family>(), Ok(f));
            assert_eq!(
                serde_json::to_string(&f).unwrap(),
                format!("\"{}\"", f.as_str())
            );
        }
        let err = "cause_planet".parse::<Family>().unwrap_err();
        assert!(err.contains("cause_bin_range"), "{err}");
        assert_eq!(Family::ALL.iter().filter(|f| f.is_quiet()).count(), 2);
    }

    #[test]
    fn every_family_has_well_formed_labels() {
        for family in Family::ALL.into_iter().skip(1) {
            for seed in [1, 2] {
                let sc = Scenario::family(family, seed, 3 * HOUR, 200.0);
                assert_eq!(sc, Scenario::family(family, seed, 3 * HOUR, 200.0));
                assert!(Generator::new(&sc).is_ok(), "{family}");
                let labels = sc.labels();
                assert_eq!(labels.family, family);
                let json = serde_json::to_string(&labels).unwrap();
                let back: Labels = serde_json::from_str(&json).unwrap();
                assert_eq!(back, labels, "{family}");
                let start = ts_of(sc.start_ms + WARMUP);
                let end = ts_of(sc.end_ms() - TAIL);
                let timed: Vec<_> = labels
                    .quiet
                    .iter()
                    .filter(|q| {
                        !matches!(q.quiet_type, QuietType::Diurnal | QuietType::FlakyMerchant)
                    })
                    .collect();
                if family.is_quiet() {
                    assert!(labels.faults.is_empty(), "{family}");
                    assert!(timed.len() >= 4, "{family}: {timed:?}");
                    for q in &timed {
                        assert!(q.start >= start && q.end <= end, "{q:?}");
                        assert!(!q.description.is_empty());
                        let min = (q.end - q.start).num_minutes();
                        let want = if family == Family::Failover {
                            10..=20
                        } else {
                            5..=12
                        };
                        assert!(want.contains(&min), "{q:?}");
                    }
                    continue;
                }
                assert!(timed.is_empty(), "{family}: {timed:?}");
                assert!(
                    labels.faults.len() >= 6,
                    "{family}: {}",
                    labels.faults.len()
                );
                for (i, f) in labels.faults.iter().enumerate() {
                    assert_eq!(f.family, family);
                    assert_eq!(Some(f.fault_type), family.fault_type());
                    assert!(f.start >= start && f.end <= end, "{f:?}");
                    let min = (f.end - f.start).num_seconds();
                    assert!((300..=840).contains(&min), "{f:?}");
                    assert!(!f.elements.is_empty());
                    assert_eq!(&f.dims, &f.elements[0]);
                    for e in &f.elements {
                        assert!(!e.is_empty());
                        for k in e.keys() {
                            let ok = KEYS.contains(&k.as_str()) || k == "attrs.channel";
                            assert!(ok, "{f:?}");
                        }
                    }
                    let distinct: HashSet<_> = f.elements.iter().collect();
                    assert_eq!(distinct.len(), f.elements.len(), "{f:?}");
                    let multi = matches!(family, Family::MultiSameParent | Family::MultiDiffParent);
                    assert_eq!(multi, f.elements.len() > 1, "{f:?}");
                    assert!(f.description.contains('%'), "{f:?}");
                    assert_eq!(f.description.matches(" for ").count(), 1, "{f:?}");
                    // Slots are at least 15 minutes apart; overlapping pairs overlap.
                    if let Some(next) = labels.faults.get(i + 1) {
                        let gap = next.start - f.end;
                        if family == Family::Overlapping && i % 2 == 0 {
                            let offset = (next.start - f.start).num_seconds();
                            assert!((120..=240).contains(&offset), "{f:?} {next:?}");
                            assert!(next.start < f.end, "{f:?} {next:?}");
                            assert!(unrelated(&f.dims, &next.dims), "{f:?} {next:?}");
                        } else if family != Family::Overlapping {
                            assert!(gap >= chrono::Duration::minutes(15), "{f:?} {next:?}");
                        }
                    }
                }
                let rules: HashSet<&str> = labels.faults.iter().map(|f| f.rule.as_str()).collect();
                let mixed = matches!(
                    family,
                    Family::CauseProvider
                        | Family::CauseRegion
                        | Family::CauseMerchant
                        | Family::Overlapping
                );
                assert!(rules.contains("auth_technical_failures"));
                if mixed && seed == 1 {
                    assert!(rules.len() > 1, "{family}: {rules:?}");
                }
            }
        }
    }

    fn ts_of(ms: i64) -> chrono::DateTime<chrono::Utc> {
        crate::incident::ts(ms)
    }

    /// Whether event `e` belongs to `element` (keyed by event field names).
    fn has(e: &Event, element: &BTreeMap<String, String>) -> bool {
        element.iter().all(|(k, v)| {
            let got = match k.as_str() {
                "provider" => Some(e.provider.as_str()),
                "region" => Some(e.region.as_str()),
                "bin" => e.bin.as_deref(),
                "bin4" => e.bin.as_deref().and_then(|b| b.get(..4)),
                "card_brand" => e.card_brand.as_deref(),
                "merchant_id" => e.merchant_id.as_deref(),
                "error_code" => e.error_code.as_deref(),
                k => k
                    .strip_prefix("attrs.")
                    .and_then(|a| e.attrs.get(a))
                    .map(String::as_str),
            };
            got == Some(v.as_str())
        })
    }

    #[derive(Debug, Default, Clone, Copy)]
    struct Counts {
        events: u64,
        failures: u64,
        declines: u64,
    }

    impl Counts {
        fn add(&mut self, e: &Event) {
            self.events += 1;
            self.failures += u64::from(e.outcome == Outcome::Failure);
            self.declines += u64::from(e.outcome == Outcome::Decline);
        }
        fn rate(&self) -> f64 {
            self.failures as f64 / self.events.max(1) as f64
        }
        fn decline_rate(&self) -> f64 {
            self.declines as f64 / self.events.max(1) as f64
        }
    }

    /// The faults (or family quiet cases) at `pick` of a family scenario at
    /// `rate`, laid out one after the other `gap` apart from `gap` in, the
    /// scenario ending 2 minutes after them, without the daily swing; and its
    /// distinct, valid events.
    fn compact(
        family: Family,
        seed: u64,
        rate: f64,
        pick: &[usize],
        gap: i64,
    ) -> (Scenario, Vec<Event>) {
        let mut sc = Scenario::family(family, seed, 3 * HOUR, rate);
        let mut t = sc.start_ms + gap;
        let mut faults = Vec::new();
        let mut timed = Vec::new();
        let cases: Vec<QuietSpec> = sc
            .quiet
            .iter()
            .filter(|q| matches!(q.quiet_type, QuietType::Failover | QuietType::DeclineBurst))
            .cloned()
            .collect();
        for &i in pick {
            if let Some(f) = sc.faults.get(i) {
                let mut f = f.clone();
                (f.start_ms, f.end_ms) = (t, t + f.end_ms - f.start_ms);
                t = f.end_ms + gap;
                faults.push(f);
            } else {
                let mut q = cases[i].clone();
                (q.start_ms, q.end_ms) = (t, t + q.end_ms - q.start_ms);
                t = q.end_ms + gap;
                timed.push(q);
            }
        }
        sc.faults = faults;
        // Flat volume (no daily swing), so windows compare.
        sc.quiet
            .retain(|q| q.quiet_type == QuietType::FlakyMerchant);
        sc.quiet.extend(timed);
        sc.duration_ms = t - gap + 2 * MINUTE - sc.start_ms;
        sc.bad_line_rate = 0.0;
        let mut seen = HashSet::new();
        let events = Generator::new(&sc)
            .unwrap()
            .filter_map(|l| parse_str(&l.text).ok())
            .filter(|e| seen.insert(e.id.clone()))
            .collect();
        (sc, events)
    }

    fn kind_of(f: &FaultSpec) -> &str {
        f.injections[0].kind.as_deref().unwrap_or("auth")
    }

    /// Per fault: (inside any element, outside every element) of its kind, over
    /// the fault once ramped up.
    fn inside_outside(sc: &Scenario, events: &[Event]) -> Vec<(Counts, Counts)> {
        sc.faults
            .iter()
            .map(|f| {
                let ramp = match f.injections[0].action {
                    Action::Fail { ramp_ms, .. } | Action::Add { ramp_ms, .. } => ramp_ms,
                    _ => 0,
                };
                let (mut inside, mut outside) = (Counts::default(), Counts::default());
                for e in events {
                    if e.kind != kind_of(f) || !(f.start_ms + ramp..f.end_ms).contains(&e.ts_ms) {
                        continue;
                    }
                    if f.elements.iter().any(|el| has(e, el)) {
                        inside.add(e);
                    } else {
                        outside.add(e);
                    }
                }
                (inside, outside)
            })
            .collect()
    }

    /// Faults whose elements are event attributes: failure rate inside every
    /// element near the intensity, outside at baseline.
    #[test]
    fn element_faults_fail_inside_and_not_outside() {
        for (family, pick) in [
            (Family::CauseProvider, &[0, 1, 2][..]),
            (Family::CauseRegion, &[0, 1, 2]),
            (Family::CauseBin, &[0]),
            (Family::CauseBinRange, &[0]),
            (Family::CauseCardBrand, &[0]),
            (Family::CauseMerchant, &[0, 1, 2]),
            (Family::CauseAttr, &[0, 1, 2]),
            (Family::MultiSameParent, &[0, 1, 2]),
            (Family::MultiDiffParent, &[0, 1, 2]),
            (Family::Deep3, &[0]),
            (Family::LowVolume, &[0, 1]),
        ] {
            let (sc, events) = compact(family, 1, 30.0, pick, MINUTE);
            assert_eq!(sc.faults.len(), pick.len(), "{family}");
            for (f, (inside, outside)) in sc.faults.iter().zip(inside_outside(&sc, &events)) {
                assert!(inside.events >= 20, "{family} {f:?}: {inside:?}");
                let margin = 3.0 * (f.intensity / inside.events as f64).sqrt() + 0.05;
                assert!(
                    (inside.rate() - f.intensity).abs() < margin,
                    "{family} {}: {inside:?} vs {}",
                    f.description,
                    f.intensity
                );
                assert!(
                    outside.rate() < 0.03,
                    "{family} {}: {outside:?}",
                    f.description
                );
                if f.elements.len() > 1 {
                    // Every element fails, not just one of them.
                    for el in &f.elements {
                        let mut c = Counts::default();
                        events
                            .iter()
                            .filter(|e| {
                                e.kind == kind_of(f)
                                    && (f.start_ms..f.end_ms).contains(&e.ts_ms)
                                    && has(e, el)
                            })
                            .for_each(|e| c.add(e));
                        let n = c.events as f64;
                        let margin = 3.0 * (f.intensity * (1.0 - f.intensity) / n).sqrt() + 0.05;
                        assert!(c.events >= 5, "{family} {el:?}: {c:?}");
                        assert!(c.rate() > f.intensity - margin, "{family} {el:?}: {c:?}");
                    }
                }
                if family == Family::Deep3 {
                    // The parent's other brands stay healthy.
                    let mut parent = f.dims.clone();
                    let brand = parent.remove("card_brand").unwrap();
                    let mut c = Counts::default();
                    events
                        .iter()
                        .filter(|e| e.kind == "auth" && (f.start_ms..f.end_ms).contains(&e.ts_ms))
                        .filter(|e| has(e, &parent) && e.card_brand.as_deref() != Some(&brand))
                        .for_each(|e| c.add(e));
                    assert!(c.events > 50 && c.rate() < 0.03, "{c:?}");
                }
            }
        }
    }

    #[test]
    fn attrs_only_where_enabled() {
        let (sc, events) = compact(Family::CauseAttr, 2, 10.0, &[0], MINUTE);
        assert!(sc.attrs);
        let auths: Vec<&Event> = events.iter().filter(|e| e.kind == "auth").collect();
        assert!(auths.iter().all(|e| e.attrs.contains_key("channel")));
        let mobile = auths.iter().filter(|e| e.attrs["channel"] != "web").count();
        let versioned = auths
            .iter()
            .filter(|e| e.attrs.contains_key("app_version"))
            .count();
        assert_eq!(mobile, versioned);
        assert!(events
            .iter()
            .filter(|e| e.kind != "auth")
            .all(|e| e.attrs.is_empty()));
        let (_, plain) = compact(Family::CauseBin, 2, 10.0, &[0], MINUTE);
        assert!(plain.iter().all(|e| e.attrs.is_empty()));
    }

    #[test]
    fn a_new_error_code_appears_across_all_traffic() {
        let (sc, events) = compact(Family::CauseErrorCode, 1, 30.0, &[0, 1], MINUTE);
        for f in &sc.faults {
            let code = &f.dims["error_code"];
            assert!(NEW_ERROR_CODES.contains(&code.as_str()));
            let during: Vec<&Event> = events
                .iter()
                .filter(|e| e.kind == "auth" && (f.start_ms..f.end_ms).contains(&e.ts_ms))
                .collect();
            let with = during
                .iter()
                .filter(|e| e.error_code.as_deref() == Some(code))
                .count() as f64;
            let share = with / during.len() as f64;
            // The fault's failures carry the code; the usual background keeps its own.
            assert!(
                share > f.intensity - 0.03 && share <= f.intensity + 0.01,
                "{share} {f:?}"
            );
            assert!(during
                .iter()
                .filter(|e| e.error_code.as_deref() == Some(code))
                .all(|e| e.outcome == Outcome::Failure));
            // Across all providers and regions.
            let providers: HashSet<&str> = during
                .iter()
                .filter(|e| e.error_code.as_deref() == Some(code))
                .map(|e| e.provider.as_str())
                .collect();
            assert_eq!(providers.len(), PROVIDERS.len());
            let outside = events
                .iter()
                .filter(|e| !(f.start_ms..f.end_ms).contains(&e.ts_ms))
                .filter(|e| e.error_code.as_deref() == Some(code))
                .count();
            let other = sc
                .faults
                .iter()
                .any(|g| g.id != f.id && &g.dims["error_code"] == code);
            assert!(other || outside == 0, "{outside}");
        }
    }

    #[test]
    fn slow_burns_ramp_up_and_lifts_are_small() {
        let full = Scenario::family(Family::SlowBurn, 1, 3 * HOUR, 40.0);
        let lift = |f: &FaultSpec| matches!(f.injections[0].action, Action::Add { .. });
        let mut pick: Vec<usize> = (0..full.faults.len())
            .filter(|&i| !lift(&full.faults[i]))
            .take(2)
            .collect();
        pick.extend((0..full.faults.len()).find(|&i| lift(&full.faults[i])));
        assert_eq!(pick.len(), 3);
        let (sc, events) = compact(Family::SlowBurn, 1, 40.0, &pick, MINUTE);
        let mut ramps = 0;
        for (f, (inside, outside)) in sc.faults.iter().zip(inside_outside(&sc, &events)) {
            assert!(outside.rate() < 0.03, "{}: {outside:?}", f.description);
            match f.injections[0].action {
                Action::Fail { rate, ramp_ms, .. } => {
                    ramps += 1;
                    assert!((0.1..=0.3).contains(&rate));
                    assert!((2 * MINUTE..=8 * MINUTE).contains(&ramp_ms), "{f:?}");
                    assert!(
                        (inside.rate() - rate).abs() < 0.06,
                        "{}: {inside:?}",
                        f.description
                    );
                    // The first quarter of the ramp is well below where it ends.
                    let mut early = Counts::default();
                    events
                        .iter()
                        .filter(|e| {
                            e.kind == "auth"
                                && (f.start_ms..f.start_ms + ramp_ms / 4).contains(&e.ts_ms)
                        })
                        .filter(|e| has(e, &f.dims))
                        .for_each(|e| early.add(e));
                    assert!(
                        early.events > 20 && early.rate() < rate * 0.5,
                        "{}: {early:?}",
                        f.description
                    );
                }
                Action::Add { add, .. } => {
                    assert!((0.02..=0.04).contains(&add));
                    let (p, r) = (&f.dims["provider"], &f.dims["region"]);
                    let p = PROVIDERS.iter().position(|x| x == p).unwrap();
                    let r = REGIONS.iter().position(|x| x == r).unwrap();
                    let base = World::new(1).baseline_failure_rate(p, r);
                    let lift = inside.rate() - base;
                    assert!((lift - add).abs() < 0.015, "{}: {inside:?}", f.description);
                }
                _ => panic!("{f:?}"),
            }
        }
        assert_eq!(ramps, 2);
        let ramps = full.faults.iter().filter(|f| !lift(f)).count();
        assert!(ramps >= 3 && ramps < full.faults.len(), "{ramps}");
    }

    #[test]
    fn failover_moves_traffic_and_keeps_totals_and_rates() {
        let (sc, events) = compact(Family::Failover, 1, 30.0, &[0, 1], 8 * MINUTE);
        let cases: Vec<&QuietSpec> = sc
            .quiet
            .iter()
            .filter(|q| q.quiet_type == QuietType::Failover)
            .collect();
        assert_eq!(cases.len(), 2);
        for q in cases {
            let Action::Move { to } = &q.injections[0].action else {
                panic!()
            };
            let len = q.end_ms - q.start_ms;
            let window = |s: i64, e: i64| -> (Counts, Counts, u64, u64) {
                let (mut all, mut settle, mut from, mut dest) =
                    (Counts::default(), Counts::default(), 0, 0);
                for ev in events.iter().filter(|ev| (s..e).contains(&ev.ts_ms)) {
                    if ev.kind == "auth" {
                        all.add(ev);
                    }
                    if ev.kind == "settlement" {
                        settle.add(ev);
                    }
                    from += u64::from(has(ev, &q.dims));
                    dest += u64::from(&ev.region == to);
                }
                (all, settle, from, dest)
            };
            let (during, settle, from, dest) = window(q.start_ms, q.end_ms);
            let (before, settle_before, from_before, dest_before) =
                window(q.start_ms - len.min(7 * MINUTE), q.start_ms);
            let per_min = |n: u64, ms: i64| n as f64 / (ms as f64 / MINUTE as f64);
            let blen = len.min(7 * MINUTE);
            // Nothing left where the traffic moved from, all of it at the destination.
            assert_eq!(from, 0, "{}", q.description);
            assert!(from_before > 100, "{}", q.description);
            let moved = per_min(dest, len) - per_min(dest_before, blen);
            assert!(
                moved > 0.7 * per_min(from_before, blen),
                "{}: {moved}",
                q.description
            );
            // Same totals (within the daily swing and noise), same failure rates.
            let ratio = per_min(during.events, len) / per_min(before.events, blen);
            assert!((0.8..1.25).contains(&ratio), "{}: {ratio}", q.description);
            let settle_ratio = per_min(settle.events, len) / per_min(settle_before.events, blen);
            assert!(
                (0.85..1.15).contains(&settle_ratio),
                "{}: {settle_ratio}",
                q.description
            );
            assert!(
                (during.rate() - before.rate()).abs() < 0.006,
                "{during:?} {before:?}"
            );
        }
    }

    #[test]
    fn decline_bursts_are_declines_not_failures() {
        let (sc, events) = compact(Family::DeclineBurst, 1, 30.0, &[0, 1, 2], 8 * MINUTE);
        let cases: Vec<&QuietSpec> = sc
            .quiet
            .iter()
            .filter(|q| q.quiet_type == QuietType::DeclineBurst)
            .collect();
        assert_eq!(cases.len(), 3);
        let kinds: HashSet<&str> = cases
            .iter()
            .flat_map(|q| q.dims.keys())
            .map(String::as_str)
            .collect();
        assert_eq!(kinds.len(), 3, "{kinds:?}");
        for q in cases {
            let (mut during, mut before) = (Counts::default(), Counts::default());
            for e in events
                .iter()
                .filter(|e| e.kind == "auth" && has(e, &q.dims))
            {
                if (q.start_ms..q.end_ms).contains(&e.ts_ms) {
                    during.add(e);
                } else if (q.start_ms - 8 * MINUTE..q.start_ms).contains(&e.ts_ms) {
                    before.add(e);
                }
            }
            assert!(during.events > 50, "{}: {during:?}", q.description);
            assert!(
                (during.decline_rate() - q.intensity).abs() < 0.08,
                "{}: {during:?}",
                q.description
            );
            assert!(before.decline_rate() < 0.2, "{before:?}");
            assert!(during.rate() < 0.03, "{}: {during:?}", q.description);
        }
    }
}
