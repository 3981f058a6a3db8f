//! Detection rules: YAML files in `rules/`, documented in `rules/README.md`.
//!
//! A file holds `rules:`, a list of rules. Every struct here denies unknown
//! fields, so a typo is an error that names the file, the rule and the field
//! rather than a silently ignored setting.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::event::{Event, Outcome};

/// The rules compiled into the binary: the shipped `rules/` folder.
pub const EMBEDDED: &[(&str, &str)] = &[
    ("auth.yaml", include_str!("../rules/auth.yaml")),
    ("settlement.yaml", include_str!("../rules/settlement.yaml")),
    ("webhook.yaml", include_str!("../rules/webhook.yaml")),
];

/// One rules file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// The rules it defines.
    pub rules: Vec<Rule>,
}

/// What a rule measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// Excess failures given attempts: observed failures vs attempts x baseline rate.
    #[default]
    Rate,
    /// Events that normally flow stop arriving: observed vs expected volume.
    VolumeDrop,
}

/// Incident severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look during working hours.
    Info,
    /// Degradation; someone should look soon.
    Warning,
    /// Customer-facing outage; page.
    Critical,
}

impl Severity {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// A dimension a rule can filter on or localize over.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    /// `provider`
    Provider,
    /// `region`
    Region,
    /// `bin`
    Bin,
    /// `merchant_id`
    MerchantId,
    /// `card_brand`
    CardBrand,
    /// `error_code`
    ErrorCode,
    /// `attrs.NAME`
    Attr(String),
    /// `binN`, N in 1..=5: the first N digits of the BIN, an issuer range (a
    /// derived dimension: `bin4=4147` covers BINs 414700..414799). Listed
    /// beside `bin`, several failing BINs of one range localize to one element.
    BinPrefix(u8),
}

impl Dim {
    /// Parses a dimension name as written in rules and incidents.
    pub fn parse(name: &str) -> Option<Dim> {
        Some(match name {
            "provider" => Dim::Provider,
            "region" => Dim::Region,
            "bin" => Dim::Bin,
            "merchant_id" => Dim::MerchantId,
            "card_brand" => Dim::CardBrand,
            "error_code" => Dim::ErrorCode,
            "bin1" | "bin2" | "bin3" | "bin4" | "bin5" => Dim::BinPrefix(name.as_bytes()[3] - b'0'),
            _ => {
                let attr = name.strip_prefix("attrs.")?;
                if attr.is_empty() || attr.len() > 64 {
                    return None;
                }
                Dim::Attr(attr.to_string())
            }
        })
    }

    /// The name used in rules and in incident `dims`.
    pub fn name(&self) -> String {
        match self {
            Dim::Provider => "provider".into(),
            Dim::Region => "region".into(),
            Dim::Bin => "bin".into(),
            Dim::MerchantId => "merchant_id".into(),
            Dim::CardBrand => "card_brand".into(),
            Dim::ErrorCode => "error_code".into(),
            Dim::Attr(a) => format!("attrs.{a}"),
            Dim::BinPrefix(n) => format!("bin{n}"),
        }
    }

    /// The event's value for this dimension, if it has one.
    pub fn value<'e>(&self, e: &'e Event) -> Option<&'e str> {
        match self {
            Dim::Provider => Some(&e.provider),
            Dim::Region => Some(&e.region),
            Dim::Bin => e.bin.as_deref(),
            Dim::MerchantId => e.merchant_id.as_deref(),
            Dim::CardBrand => e.card_brand.as_deref(),
            Dim::ErrorCode => e.error_code.as_deref(),
            Dim::Attr(a) => e.attrs.get(a).map(String::as_str),
            // A BIN is 6 to 8 ASCII digits, so a byte prefix is a char prefix.
            Dim::BinPrefix(n) => e.bin.as_deref().and_then(|b| b.get(..usize::from(*n))),
        }
    }

    /// Whether the dimension is derived from another one (a BIN prefix): on
    /// equal evidence the localizer reports the underlying dimension instead.
    pub fn is_derived(&self) -> bool {
        matches!(self, Dim::BinPrefix(_))
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A duration written as `30s`, `5m`, `6h`, `7d` (or a combination like `1h30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    /// Milliseconds.
    pub fn ms(self) -> i64 {
        self.0.as_millis() as i64
    }
}

impl std::fmt::Display for Dur {
    /// The shortest form [`parse_duration`] reads back: `2m`, `1h30m`, `250ms`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
            ("ms", 1),
        ] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(Dur).ok_or_else(|| {
            serde::de::Error::custom(format!("`{s}` is not a duration like 30s, 5m, 6h, 1d"))
        })
    }
}

/// Parses `30s`, `5m`, `1h30m`, `7d`, `250ms`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total_ms: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total_ms = total_ms.checked_add(n.checked_mul(unit_ms)?)?;
    }
    Some(Duration::from_millis(total_ms))
}

/// How a rule learns what normal looks like.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// Half-life of the exponentially weighted baseline. Longer is steadier and
    /// slower to accept a new normal.
    #[serde(default = "default_horizon")]
    pub horizon: Dur,
    /// History needed before the rule tests anything (from its first event).
    #[serde(default = "default_warmup")]
    pub warmup: Dur,
    /// Weight, in attempts, of the rule-wide rate when estimating a cell with little
    /// history of its own (shrinkage toward the rule's overall rate).
    #[serde(default = "default_prior_events")]
    pub prior_events: f64,
    /// Seasonal profile: expect each time-of-day (`daily`) or time-of-week
    /// (`weekly`) slot to differ from the learned baseline the way it did on its
    /// last visits (see `rules/README.md`, "Seasonality"). `none` keeps the plain
    /// baseline.
    #[serde(default)]
    pub seasonality: Seasonality,
    /// Length of one seasonal slot (UTC-aligned); a whole number of steps that
    /// divides the period. Ignored when `seasonality` is `none`.
    #[serde(default = "default_season_slot")]
    pub season_slot: Dur,
}

/// The period of a rule's seasonal baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Seasonality {
    /// No seasonal profile: the plain baseline.
    #[default]
    None,
    /// One profile per time of day (UTC).
    Daily,
    /// One profile per time of week (UTC).
    Weekly,
}

impl Seasonality {
    /// The period in milliseconds (`None` for `none`).
    pub fn period_ms(self) -> Option<i64> {
        match self {
            Seasonality::None => None,
            Seasonality::Daily => Some(86_400_000),
            Seasonality::Weekly => Some(7 * 86_400_000),
        }
    }
}

/// Most seasonal slots per period (a week of 5-minute slots).
pub const MAX_SEASON_SLOTS: i64 = 2016;

fn default_horizon() -> Dur {
    Dur(Duration::from_secs(3600))
}
fn default_warmup() -> Dur {
    Dur(Duration::from_secs(1800))
}
fn default_prior_events() -> f64 {
    200.0
}
fn default_season_slot() -> Dur {
    Dur(Duration::from_secs(3600))
}

impl Default for Baseline {
    fn default() -> Self {
        Baseline {
            horizon: default_horizon(),
            warmup: default_warmup(),
            prior_events: default_prior_events(),
            seasonality: Seasonality::None,
            season_slot: default_season_slot(),
        }
    }
}

/// Thresholds an element must pass, all of them, to count as anomalous.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Volume floor: attempts in the window (rate rules) or expected events
    /// (volume rules) below which nothing is tested.
    #[serde(default = "default_min_events")]
    pub min_events: f64,
    /// Rate rules: fewest failures in the window.
    #[serde(default = "default_min_failures")]
    pub min_failures: f64,
    /// Rate rules: failure rate must be at least this multiple of the baseline rate.
    #[serde(default = "default_min_lift")]
    pub min_lift: f64,
    /// Rate rules: failure rate must exceed the baseline rate by at least this much
    /// (absolute, 0.02 = 2 percentage points).
    #[serde(default = "default_min_rate_increase")]
    pub min_rate_increase: f64,
    /// Volume rules: observed / expected events must fall to or below this.
    #[serde(default = "default_max_volume_ratio")]
    pub max_volume_ratio: f64,
    /// False-alarm control: the probability of a false alarm per evaluation step
    /// across every element tested (Bonferroni-corrected). Smaller is quieter.
    #[serde(default = "default_sensitivity")]
    pub false_alarm_rate: f64,
}

fn default_min_events() -> f64 {
    100.0
}
fn default_min_failures() -> f64 {
    10.0
}
fn default_min_lift() -> f64 {
    2.0
}
fn default_min_rate_increase() -> f64 {
    0.02
}
fn default_max_volume_ratio() -> f64 {
    0.3
}
fn default_sensitivity() -> f64 {
    1e-4
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            min_events: default_min_events(),
            min_failures: default_min_failures(),
            min_lift: default_min_lift(),
            min_rate_increase: default_min_rate_increase(),
            max_volume_ratio: default_max_volume_ratio(),
            false_alarm_rate: default_sensitivity(),
        }
    }
}

/// A dashboard link template.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LinkTemplate {
    /// Button text.
    pub title: String,
    /// URL with placeholders: `{provider}`, `{region}`, ... (the root cause's
    /// dimension values, URL-encoded, empty when not part of the root cause),
    /// `{rule}`, `{from}` / `{to}` (RFC 3339) and `{from_ms}` / `{to_ms}`.
    pub url: String,
}

/// One detection rule.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique name, `[a-z0-9_]`, used in incidents and fingerprints.
    pub name: String,
    /// What the rule is for, shown in summaries.
    #[serde(default)]
    pub description: String,
    /// The event kind it watches.
    pub kind: String,
    /// Rate or volume-drop detection.
    #[serde(default)]
    pub detector: Detector,
    /// Outcomes counted as failures (rate rules).
    #[serde(default = "default_failures")]
    pub failures: Vec<Outcome>,
    /// Exact-match filters on dimensions; only matching events count.
    #[serde(default)]
    pub filter: BTreeMap<String, String>,
    /// Dimensions the rule localizes over (1 to 6).
    pub dimensions: Vec<String>,
    /// Sliding window length.
    pub window: Dur,
    /// Evaluation step; the window is a whole number of steps.
    pub step: Dur,
    /// Baseline learning.
    #[serde(default)]
    pub baseline: Baseline,
    /// Thresholds.
    #[serde(default)]
    pub thresholds: Thresholds,
    /// Consecutive anomalous steps before an incident opens.
    #[serde(default = "default_open_after")]
    pub open_after: u32,
    /// Consecutive clean steps before an incident resolves.
    #[serde(default = "default_resolve_after")]
    pub resolve_after: u32,
    /// A cause that comes back this soon after its incident resolved reopens
    /// that incident instead of opening a second one (`0s`: never).
    #[serde(default = "default_reopen_within")]
    pub reopen_within: Dur,
    /// Severity of its incidents.
    pub severity: Severity,
    /// Slack channel for its incidents (default channel when absent).
    #[serde(default)]
    pub slack_channel: Option<String>,
    /// Dashboard links, filled with the root cause and time range.
    #[serde(default)]
    pub dashboards: Vec<LinkTemplate>,
    /// Runbook URL.
    #[serde(default)]
    pub runbook: Option<String>,
}

fn default_failures() -> Vec<Outcome> {
    vec![Outcome::Failure]
}
fn default_open_after() -> u32 {
    2
}
fn default_reopen_within() -> Dur {
    Dur(Duration::from_secs(600))
}
fn default_resolve_after() -> u32 {
    6
}

/// A validated rule, ready for the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledRule {
    /// The rule as written.
    pub rule: Rule,
    /// Parsed dimensions, in the order written.
    pub dims: Vec<Dim>,
    /// Parsed filters.
    pub filter: Vec<(Dim, String)>,
    /// Where it came from (file name).
    pub source: String,
    /// What its cells are keyed by: its dimensions, then the attributes it
    /// explains incidents with ([`RuleSet::with_explain`]).
    pub cells: CellDims,
}

/// Which event attributes rules explain incidents with beyond their own
/// `dimensions` (the `[explain]` settings): a card network outage is named
/// `card_brand=amex` even by a rule that counts `provider x region x bin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explain {
    /// Explain with the standard attributes: `provider`, `region`, `bin`, its
    /// issuer prefix, `card_brand`, `merchant_id`, and the failures' `error_code`.
    pub standard: bool,
    /// Digits of the BIN prefix explained with (`bin4` for 4), 0 for none.
    pub bin_prefix: u8,
    /// `attrs.NAME` keys explained with (allow-listed: attributes are free-form).
    pub attrs: Vec<String>,
    /// Distinct values kept per attribute of `attrs` and per rule; later new
    /// values are not explained with.
    pub max_attr_values: usize,
}

impl Default for Explain {
    fn default() -> Self {
        Explain {
            standard: true,
            bin_prefix: 4,
            attrs: Vec::new(),
            max_attr_values: 1000,
        }
    }
}

/// The dimensions a rule's cells are keyed by, in slot order: the rule's own
/// `dimensions` (slots `0..base`: baselines are learned per their
/// combination), then the attributes incidents are explained with beyond them
/// (slots `base..search`: the localizer searches `0..search`), then, for rate
/// rules, the error code of failures (slot `search` when `code`): it splits
/// failures, not attempts, so it is counted apart and only read for the error
/// codes behind an incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellDims {
    /// Every slot's dimension.
    pub dims: Vec<Dim>,
    /// The rule's own dimensions are slots `0..base`.
    pub base: usize,
    /// The localizer searches slots `0..search`.
    pub search: usize,
    /// Whether slot `search` holds the error code of failures.
    pub code: bool,
    /// Distinct values kept per `attrs.NAME` slot.
    pub attr_cap: usize,
}

impl CellDims {
    /// The cell dimensions of a rule under `explain`. Volume rules keep their
    /// own dimensions only: an absent event has no attributes to explain with.
    pub fn of(rule: &Rule, dims: &[Dim], filter: &[(Dim, String)], explain: &Explain) -> CellDims {
        let mut all: Vec<Dim> = dims.to_vec();
        let rate = rule.detector == Detector::Rate;
        if rate {
            let mut extra: Vec<Dim> = Vec::new();
            if explain.standard {
                extra.extend([Dim::Provider, Dim::Region, Dim::Bin]);
                if (1..=5).contains(&explain.bin_prefix) {
                    extra.push(Dim::BinPrefix(explain.bin_prefix));
                }
                extra.extend([Dim::CardBrand, Dim::MerchantId]);
            }
            extra.extend(explain.attrs.iter().map(|a| Dim::Attr(a.clone())));
            for d in extra {
                // A filtered dimension has one value: nothing to explain with.
                let fixed = filter.iter().any(|(f, _)| *f == d);
                if !fixed && !all.contains(&d) && all.len() + 1 < crate::window::MAX_DIMS {
                    all.push(d);
                }
            }
        }
        let search = all.len();
        let code = rate && explain.standard && !all.contains(&Dim::ErrorCode);
        if code {
            all.push(Dim::ErrorCode);
        }
        CellDims {
            dims: all,
            base: dims.len(),
            search,
            code,
            attr_cap: explain.max_attr_values,
        }
    }

    /// The event's value in every slot: the error code only for failures.
    pub fn values<'e>(
        &'e self,
        e: &'e Event,
        failure: bool,
    ) -> impl Iterator<Item = Option<&'e str>> + 'e {
        self.dims.iter().enumerate().map(move |(i, d)| {
            if self.code && i == self.search && !failure {
                None
            } else {
                d.value(e)
            }
        })
    }
}

/// Windows of history an opening incident looks back on
/// ([`CompiledRule::history_steps`]).
pub const HISTORY_WINDOWS: usize = 6;

impl CompiledRule {
    /// Localization limits for this rule's cell dimensions: which are derived
    /// (a BIN prefix beside the BIN), and which name no element by their
    /// missing value (the attributes explained with beyond the rule's own).
    pub fn localize_limits(&self) -> crate::localize::Limits {
        let mask_of = |keep: &dyn Fn(&Dim) -> bool| {
            self.cells
                .dims
                .iter()
                .take(self.cells.search)
                .enumerate()
                .filter(|(_, d)| keep(d))
                .fold(0, |m, (i, _)| m | (1 << i))
        };
        let nameless = (self.cells.base..self.cells.search).fold(0, |m, i| m | (1 << i));
        crate::localize::Limits {
            derived: mask_of(&|d| d.is_derived()),
            nameless,
            root: self.cells.search > self.cells.base,
            // A BIN's prefixes and card brand follow from it.
            follows: mask_of(&|d| d.is_derived() || *d == Dim::CardBrand),
            source: mask_of(&|d| *d == Dim::Bin),
            ..Default::default()
        }
    }

    /// Step in milliseconds.
    pub fn step_ms(&self) -> i64 {
        self.rule.step.ms()
    }
    /// Number of steps in the window.
    pub fn window_steps(&self) -> usize {
        (self.rule.window.ms() / self.rule.step.ms()) as usize
    }
    /// Steps of history an incident looks back on when it opens: to find
    /// when its failures began (a slow rise passes the test minutes after it
    /// left normal) and to draw a window of traffic before that.
    pub fn history_steps(&self) -> usize {
        HISTORY_WINDOWS * self.window_steps().max(1)
    }
    /// Whether the event counts for this rule.
    pub fn matches(&self, e: &Event) -> bool {
        e.kind == self.rule.kind
            && self
                .filter
                .iter()
                .all(|(d, v)| d.value(e) == Some(v.as_str()))
    }
    /// Whether the event counts as a failure (rate rules).
    pub fn is_failure(&self, e: &Event) -> bool {
        self.rule.failures.contains(&e.outcome)
    }
}

/// One problem found in a rules file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// The file.
    pub file: String,
    /// The rule's name, or its index when it has none.
    pub rule: Option<String>,
    /// The field, as a dotted path.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(r) = &self.rule {
            write!(f, ": rule {r}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A set of rules, validated together (names unique across files).
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    /// The rules, in file then definition order.
    pub rules: Vec<CompiledRule>,
    /// What they explain incidents with ([`RuleSet::with_explain`]); a reload
    /// keeps it.
    pub explain: Explain,
}

impl RuleSet {
    /// The shipped rules built into the binary.
    pub fn embedded() -> RuleSet {
        let files: Vec<(String, String)> = EMBEDDED
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        // The shipped rules are checked by tests; failing here is a build defect.
        RuleSet::from_sources(&files).expect("embedded rules are valid")
    }

    /// Loads every `*.yaml` / `*.yml` file in `dir`.
    pub fn load_dir(dir: &Path) -> Result<RuleSet, Vec<RuleError>> {
        let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
                .collect(),
            Err(e) => {
                return Err(vec![RuleError {
                    file: dir.display().to_string(),
                    rule: None,
                    field: None,
                    message: format!("cannot read rules folder: {e}"),
                }])
            }
        };
        paths.sort();
        let mut files = Vec::new();
        let mut errors = Vec::new();
        for p in paths {
            match std::fs::read_to_string(&p) {
                Ok(t) => files.push((p.display().to_string(), t)),
                Err(e) => errors.push(RuleError {
                    file: p.display().to_string(),
                    rule: None,
                    field: None,
                    message: format!("cannot read: {e}"),
                }),
            }
        }
        if files.is_empty() && errors.is_empty() {
            errors.push(RuleError {
                file: dir.display().to_string(),
                rule: None,
                field: None,
                message: "no rule files (*.yaml) found".into(),
            });
        }
        match RuleSet::from_sources(&files) {
            Ok(set) if errors.is_empty() => Ok(set),
            Ok(_) => Err(errors),
            Err(mut e) => {
                errors.append(&mut e);
                Err(errors)
            }
        }
    }

    /// Parses and validates rule files given as (name, text).
    pub fn from_sources(files: &[(String, String)]) -> Result<RuleSet, Vec<RuleError>> {
        let mut errors = Vec::new();
        let mut rules = Vec::new();
        for (file, text) in files {
            match parse_file(file, text) {
                Ok(mut r) => rules.append(&mut r),
                Err(mut e) => errors.append(&mut e),
            }
        }
        let mut seen = std::collections::HashMap::new();
        for r in &rules {
            if let Some(first) = seen.insert(r.rule.name.clone(), r.source.clone()) {
                errors.push(RuleError {
                    file: r.source.clone(),
                    rule: Some(r.rule.name.clone()),
                    field: Some("name".into()),
                    message: format!("duplicate rule name (also defined in {first})"),
                });
            }
        }
        if errors.is_empty() {
            Ok(RuleSet {
                rules,
                explain: Explain::default(),
            })
        } else {
            Err(errors)
        }
    }

    /// The same rules explaining incidents with the attributes `explain` names.
    pub fn with_explain(mut self, explain: &Explain) -> RuleSet {
        for r in &mut self.rules {
            r.cells = CellDims::of(&r.rule, &r.dims, &r.filter, explain);
        }
        self.explain = explain.clone();
        self
    }

    /// Finds a rule by name.
    pub fn get(&self, name: &str) -> Option<&CompiledRule> {
        self.rules.iter().find(|r| r.rule.name == name)
    }
}

fn parse_file(file: &str, text: &str) -> Result<Vec<CompiledRule>, Vec<RuleError>> {
    let de = serde_norway::Deserializer::from_str(text);
    let parsed: RuleFile = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        vec![yaml_error(file, text, &path, inner)]
    })?;
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for (i, rule) in parsed.rules.into_iter().enumerate() {
        let label = if rule.name.is_empty() {
            format!("#{}", i + 1)
        } else {
            rule.name.clone()
        };
        match compile(rule, file) {
            Ok(c) => out.push(c),
            Err(errs) => errors.extend(errs.into_iter().map(|(field, message)| RuleError {
                file: file.to_string(),
                rule: Some(label.clone()),
                field: Some(field),
                message,
            })),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Turns a serde path like `rules[2].thresholds.min_lift` into rule and field.
fn yaml_error(file: &str, text: &str, path: &str, message: String) -> RuleError {
    let mut rule = None;
    let mut field = None;
    if let Some(rest) = path.strip_prefix("rules[") {
        if let Some((idx, tail)) = rest.split_once(']') {
            let idx: usize = idx.parse().unwrap_or(0);
            rule = Some(rule_name_at(text, idx).unwrap_or_else(|| format!("#{}", idx + 1)));
            let tail = tail.trim_start_matches('.');
            if !tail.is_empty() {
                field = Some(tail.to_string());
            }
        }
    } else if path != "." && !path.is_empty() {
        field = Some(path.to_string());
    }
    // serde reports an unknown field at the map that holds it; name it in the field.
    if let Some(unknown) = message
        .strip_prefix("unknown field `")
        .and_then(|m| m.split('`').next())
    {
        field = Some(match field {
            Some(f) => format!("{f}.{unknown}"),
            None => unknown.to_string(),
        });
    }
    RuleError {
        file: file.to_string(),
        rule,
        field,
        message,
    }
}

/// Best effort: the `name` of the idx-th rule, read leniently.
fn rule_name_at(text: &str, idx: usize) -> Option<String> {
    let v: serde_norway::Value = serde_norway::from_str(text).ok()?;
    v.get("rules")?
        .get(idx)?
        .get("name")?
        .as_str()
        .map(str::to_string)
}

fn compile(rule: Rule, file: &str) -> Result<CompiledRule, Vec<(String, String)>> {
    let mut errs: Vec<(String, String)> = Vec::new();
    let mut err = |f: &str, m: String| errs.push((f.to_string(), m));

    if rule.name.is_empty()
        || rule.name.len() > 64
        || !rule
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        err("name", "must be 1..64 characters of [a-z0-9_]".into());
    }
    if rule.kind.is_empty()
        || rule.kind.len() > 32
        || !rule
            .kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_')
    {
        err("kind", "must be an event kind, [a-z_]{1,32}".into());
    }
    if rule.detector == Detector::Rate && rule.failures.is_empty() {
        err(
            "failures",
            "a rate rule needs at least one failure outcome".into(),
        );
    }
    if rule.failures.contains(&Outcome::Success) {
        err("failures", "`success` cannot count as a failure".into());
    }
    let mut dims = Vec::new();
    if rule.dimensions.is_empty() || rule.dimensions.len() > crate::window::MAX_RULE_DIMS {
        err(
            "dimensions",
            format!("list 1 to {} dimensions", crate::window::MAX_RULE_DIMS),
        );
    }
    for (i, d) in rule.dimensions.iter().enumerate() {
        match Dim::parse(d) {
            Some(dim) if dims.contains(&dim) => {
                err(&format!("dimensions[{i}]"), format!("`{d}` listed twice"))
            }
            Some(dim) => dims.push(dim),
            None => err(
                &format!("dimensions[{i}]"),
                format!("unknown dimension `{d}` (provider, region, bin, merchant_id, card_brand, error_code, attrs.NAME)"),
            ),
        }
    }
    let mut filter = Vec::new();
    for (k, v) in &rule.filter {
        match Dim::parse(k) {
            Some(d) => filter.push((d, v.clone())),
            None => err(&format!("filter.{k}"), format!("unknown dimension `{k}`")),
        }
    }
    let step = rule.step.ms();
    let window = rule.window.ms();
    if step < 1000 {
        err("step", "must be at least 1s".into());
    } else if window < step || window % step != 0 {
        err("window", "must be a whole number (>= 1) of steps".into());
    } else if window / step > 720 {
        err("window", "at most 720 steps per window".into());
    }
    let b = &rule.baseline;
    if b.horizon.ms() < step.max(1) {
        err("baseline.horizon", "must be at least one step".into());
    }
    if !(b.prior_events.is_finite() && b.prior_events >= 0.0) {
        err("baseline.prior_events", "must be >= 0".into());
    }
    if let Some(period) = b.seasonality.period_ms() {
        let slot = b.season_slot.ms();
        if slot < step.max(1) || slot % step.max(1) != 0 {
            err(
                "baseline.season_slot",
                "must be a whole number (>= 1) of steps".into(),
            );
        } else if period % slot != 0 {
            err(
                "baseline.season_slot",
                "must divide the seasonal period (1d for daily, 7d for weekly)".into(),
            );
        } else if period / slot > MAX_SEASON_SLOTS {
            err(
                "baseline.season_slot",
                format!("at most {MAX_SEASON_SLOTS} slots per period; use longer slots"),
            );
        }
    }
    let t = &rule.thresholds;
    let nonneg = [
        ("thresholds.min_events", t.min_events),
        ("thresholds.min_failures", t.min_failures),
        ("thresholds.min_rate_increase", t.min_rate_increase),
    ];
    for (f, v) in nonneg {
        if !(v.is_finite() && v >= 0.0) {
            err(f, "must be a number >= 0".into());
        }
    }
    if !(t.min_lift.is_finite() && t.min_lift >= 1.0) {
        err("thresholds.min_lift", "must be >= 1".into());
    }
    if !(t.max_volume_ratio > 0.0 && t.max_volume_ratio < 1.0) {
        err("thresholds.max_volume_ratio", "must be in (0, 1)".into());
    }
    if !(t.false_alarm_rate > 0.0 && t.false_alarm_rate < 0.5) {
        err("thresholds.false_alarm_rate", "must be in (0, 0.5)".into());
    }
    if rule.open_after == 0 || rule.open_after > 100 {
        err("open_after", "must be 1..100 steps".into());
    }
    if rule.resolve_after == 0 || rule.resolve_after > 1000 {
        err("resolve_after", "must be 1..1000 steps".into());
    }
    for (i, l) in rule.dashboards.iter().enumerate() {
        if l.title.is_empty() {
            err(
                &format!("dashboards[{i}].title"),
                "must not be empty".into(),
            );
        }
        if !(l.url.starts_with("https://") || l.url.starts_with("http://")) {
            err(
                &format!("dashboards[{i}].url"),
                "must be an http(s) URL".into(),
            );
        }
        if let Some(bad) = unknown_placeholder(&l.url) {
            err(
                &format!("dashboards[{i}].url"),
                format!("unknown placeholder `{{{bad}}}`"),
            );
        }
    }
    if let Some(rb) = &rule.runbook {
        if !(rb.starts_with("https://") || rb.starts_with("http://")) {
            err("runbook", "must be an http(s) URL".into());
        }
    }
    if errs.is_empty() {
        let cells = CellDims::of(&rule, &dims, &filter, &Explain::default());
        Ok(CompiledRule {
            rule,
            dims,
            filter,
            source: file.to_string(),
            cells,
        })
    } else {
        Err(errs)
    }
}

/// The first `{name}` in a link template that is not a known placeholder.
fn unknown_placeholder(url: &str) -> Option<String> {
    let mut rest = url;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after.find('}')?;
        let name = &after[..close];
        let known = matches!(name, "rule" | "from" | "to" | "from_ms" | "to_ms")
            || Dim::parse(name).is_some();
        if !known {
            return Some(name.to_string());
        }
        rest = &after[close + 1..];
    }
    None
}

/// Fills a link template with the root cause's dimensions and the time range.
pub fn fill_link(
    template: &str,
    rule: &str,
    dims: &BTreeMap<String, String>,
    from_ms: i64,
    to_ms: i64,
) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    let rfc = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    };
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let name = &after[..close];
        let value = match name {
            "rule" => rule.to_string(),
            "from" => rfc(from_ms),
            "to" => rfc(to_ms),
            "from_ms" => from_ms.to_string(),
            "to_ms" => to_ms.to_string(),
            d => dims.get(d).cloned().unwrap_or_default(),
        };
        out.extend(utf8_percent_encode(&value, NON_ALPHANUMERIC));
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_they_parse() {
        for text in ["2m", "15s", "1h30m", "250ms", "7d", "1d2h3m4s5ms", "0s"] {
            let d = Dur(parse_duration(text).unwrap());
            assert_eq!(d.to_string(), text);
        }
    }

    #[test]
    fn shipped_rules_are_valid() {
        let set = RuleSet::embedded();
        assert_eq!(set.rules.len(), 4);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("5x"), None);
    }

    #[test]
    fn unknown_field_names_file_rule_and_field() {
        let text = "rules:\n  - name: r1\n    kind: auth\n    dimensions: [provider]\n    window: 5m\n    step: 30s\n    severity: critical\n    thresholds:\n      min_lfit: 3\n";
        let errs = RuleSet::from_sources(&[("x.yaml".into(), text.into())]).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].file, "x.yaml");
        assert_eq!(errs[0].rule.as_deref(), Some("r1"));
        assert_eq!(errs[0].field.as_deref(), Some("thresholds.min_lfit"));
    }

    #[test]
    fn semantic_errors_name_the_field() {
        let text = "rules:\n  - name: r1\n    kind: auth\n    dimensions: [provider, nope]\n    window: 5m\n    step: 7s\n    severity: critical\n";
        let errs = RuleSet::from_sources(&[("x.yaml".into(), text.into())]).unwrap_err();
        let fields: Vec<_> = errs.iter().filter_map(|e| e.field.clone()).collect();
        assert!(fields.contains(&"dimensions[1]".to_string()), "{errs:?}");
        assert!(fields.contains(&"window".to_string()), "{errs:?}");
    }

    #[test]
    fn seasonality_is_parsed_and_checked() {
        let rule = |baseline: &str| {
            format!("rules:\n  - name: r1\n    kind: auth\n    dimensions: [provider]\n    window: 5m\n    step: 30s\n    severity: critical\n    baseline: {baseline}\n")
        };
        let ok =
            RuleSet::from_sources(&[("x.yaml".into(), rule("{seasonality: weekly}"))]).unwrap();
        let b = &ok.rules[0].rule.baseline;
        assert_eq!(b.seasonality, Seasonality::Weekly);
        assert_eq!(b.season_slot.ms(), 3_600_000);
        let default = RuleSet::from_sources(&[("x.yaml".into(), rule("{horizon: 1h}"))]).unwrap();
        assert_eq!(
            default.rules[0].rule.baseline.seasonality,
            Seasonality::None
        );
        assert_ne!(
            ok.rules[0], default.rules[0],
            "a seasonality change is a rule change"
        );

        let errs =
            RuleSet::from_sources(&[("x.yaml".into(), rule("{seasonality: hourly}"))]).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].file, "x.yaml");
        assert_eq!(errs[0].rule.as_deref(), Some("r1"));
        assert_eq!(errs[0].field.as_deref(), Some("baseline.seasonality"));
        assert!(errs[0].message.contains("hourly"), "{}", errs[0]);

        for bad in [
            "{seasonality: daily, season_slot: 45s}",
            "{seasonality: daily, season_slot: 7h}",
            "{seasonality: weekly, season_slot: 1m}",
        ] {
            let errs = RuleSet::from_sources(&[("x.yaml".into(), rule(bad))]).unwrap_err();
            assert_eq!(
                errs[0].field.as_deref(),
                Some("baseline.season_slot"),
                "{bad}: {errs:?}"
            );
        }
        // Without seasonality the slot is not used, so not checked.
        assert!(RuleSet::from_sources(&[("x.yaml".into(), rule("{season_slot: 7h}"))]).is_ok());
    }

    #[test]
    fn links_are_filled_and_encoded() {
        let mut dims = BTreeMap::new();
        dims.insert("provider".to_string(), "a&b c".to_string());
        let url = fill_link(
            "https://g/d?p={provider}&r={region}&from={from_ms}",
            "r",
            &dims,
            1000,
            2000,
        );
        assert_eq!(url, "https://g/d?p=a%26b%20c&r=&from=1000");
    }
}
