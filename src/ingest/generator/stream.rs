//! The event stream: a scenario's events, in time order, as NDJSON lines.

use super::*;

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
