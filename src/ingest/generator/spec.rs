//! What a scenario is: the fault and quiet-case types, their specs, the
//! scenario itself and its answer key (`labels.json`).

use super::*;

// ---------------------------------------------------------------------------
// Scenarios and their labels.

/// The faults a scenario can inject: the seven of the standard scenario, each
/// caught by one shipped rule, then one per fault family of
/// [`Family`](crate::ingest::families::Family), whose effect, rule and expected
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
