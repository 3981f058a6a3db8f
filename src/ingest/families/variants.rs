//! The fault shapes of each family: `Ctx` picks elements busy enough for
//! their rule and builds each variant's injections, labels and wording.

use super::*;

impl Ctx<'_> {
    /// The daily volume factor at `t` (as the generator's diurnal case draws it).
    pub(super) fn daily(&self, t: i64) -> f64 {
        1.0 + DIURNAL_AMPLITUDE * (TAU * (t - self.start_ms) as f64 / self.period - FRAC_PI_2).sin()
    }

    /// The lowest daily factor over `[s, e]`.
    pub(super) fn low(&self, s: i64, e: i64) -> f64 {
        (0..=8)
            .map(|i| self.daily(s + (e - s) * i / 8))
            .fold(f64::INFINITY, f64::min)
    }

    /// Expected auths per 2 minutes for `share` of auth traffic at the quietest
    /// point of `[s, e]`.
    pub(super) fn auths(&self, share: f64, s: i64, e: i64) -> f64 {
        share * AUTH_SHARE * self.eps * 120.0 * self.low(s, e)
    }

    /// The same in the middle of `[s, e]`.
    pub(super) fn auths_mid(&self, share: f64, s: i64, e: i64) -> f64 {
        share * AUTH_SHARE * self.eps * 120.0 * self.daily((s + e) / 2)
    }

    /// Provider x region pairs with at least `min` auths per 2 minutes, else the
    /// three biggest.
    pub(super) fn pairs(&self, min: f64, s: i64, e: i64) -> Vec<(usize, usize)> {
        let mut all: Vec<(usize, usize)> = (0..PROVIDERS.len())
            .flat_map(|p| (0..REGIONS.len()).map(move |r| (p, r)))
            .collect();
        all.sort_by(|a, b| {
            self.world
                .pair_share(b.0, b.1)
                .total_cmp(&self.world.pair_share(a.0, a.1))
        });
        let busy: Vec<(usize, usize)> = all
            .iter()
            .copied()
            .filter(|&(p, r)| self.auths(self.world.pair_share(p, r), s, e) >= min)
            .collect();
        if busy.is_empty() {
            all[..3].to_vec()
        } else {
            busy
        }
    }

    /// BIN popularity ranks (below `ranks`) with at least `min` auths per 2
    /// minutes, else the five busiest.
    pub(super) fn bins(&self, min: f64, ranks: usize, s: i64, e: i64) -> Vec<usize> {
        let v: Vec<usize> = (0..ranks)
            .filter(|&r| self.auths(self.world.bin_share(r), s, e) >= min)
            .collect();
        if v.is_empty() {
            (0..5).collect()
        } else {
            v
        }
    }

    pub(super) fn bin(&self, rank: usize) -> String {
        self.world.bins().nth(rank).unwrap_or_default().to_string()
    }

    /// 4-digit prefixes with their BIN ranks, busiest prefix first.
    pub(super) fn ranges(&self) -> Vec<(String, Vec<usize>)> {
        let mut by: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (rank, b) in self.world.bins().enumerate() {
            by.entry(b[..4].to_string()).or_default().push(rank);
        }
        let mut v: Vec<(String, Vec<usize>)> = by.into_iter().collect();
        let share =
            |ranks: &[usize]| -> f64 { ranks.iter().map(|&r| self.world.bin_share(r)).sum() };
        v.sort_by(|a, b| share(&b.1).total_cmp(&share(&a.1)));
        v
    }

    /// Card brands with their share of auths, biggest first.
    pub(super) fn brands(&self) -> Vec<(&'static str, f64)> {
        let mut by: BTreeMap<&'static str, f64> = BTreeMap::new();
        for (rank, (_, brand)) in self.world.bins_with_brands().enumerate() {
            *by.entry(brand).or_default() += self.world.bin_share(rank);
        }
        let mut v: Vec<(&'static str, f64)> = by.into_iter().collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v
    }

    pub(super) fn merchant(&self, rank: usize) -> String {
        self.world
            .merchants()
            .nth(rank)
            .unwrap_or_default()
            .to_string()
    }

    /// Merchant ranks (not flaky, below 60) with at least `min` auths per 2
    /// minutes, else the three biggest.
    pub(super) fn merchants(&self, min: f64, s: i64, e: i64) -> Vec<usize> {
        let calm = |m: &usize| !self.flaky.contains(m);
        let v: Vec<usize> = (0..60)
            .filter(calm)
            .filter(|&m| self.auths(self.world.merchant_share(m), s, e) >= min)
            .collect();
        if v.is_empty() {
            (0..60).filter(calm).take(3).collect()
        } else {
            v
        }
    }

    /// Merchants busy enough for the webhook rule, as the standard scenario picks them.
    pub(super) fn webhook_merchants(&self, s: i64, e: i64) -> Vec<usize> {
        let calm = |m: &usize| !self.flaky.contains(m);
        let low = self.low(s, e);
        let v: Vec<usize> = (0..20)
            .filter(calm)
            .filter(|&m| {
                self.world.merchant_share(m) * WEBHOOK_SHARE * self.eps * low * 180.0 >= 40.0
            })
            .collect();
        if v.is_empty() {
            (0..20).filter(calm).take(3).collect()
        } else {
            v
        }
    }

    /// A rank among `n` whose auths per 2 minutes in the middle of `[s, e]` are
    /// in 20..=35 (else the nearest to 27).
    pub(super) fn low_volume(
        &self,
        n: usize,
        share: impl Fn(usize) -> f64,
        s: i64,
        e: i64,
        rng: &mut StdRng,
        skip: &[usize],
    ) -> usize {
        let fit: Vec<usize> = (0..n)
            .filter(|r| !skip.contains(r))
            .filter(|&r| (20.0..=35.0).contains(&self.auths_mid(share(r), s, e)))
            .collect();
        if fit.is_empty() {
            (0..n)
                .filter(|r| !skip.contains(r))
                .min_by(|&a, &b| {
                    let d = |r| (self.auths_mid(share(r), s, e) - 27.0).abs();
                    d(a).total_cmp(&d(b))
                })
                .unwrap_or(0)
        } else {
            pick(&fit, rng)
        }
    }

    /// Providers whose settlements are busy enough for the settlement rules.
    pub(super) fn settle_providers(&self) -> Vec<usize> {
        let v: Vec<usize> = (0..PROVIDERS.len())
            .filter(|&p| self.world.provider_share(p) * SETTLEMENT_SHARE * self.eps * 60.0 >= 20.0)
            .collect();
        if v.is_empty() {
            vec![0, 1]
        } else {
            v
        }
    }

    pub(super) fn settle_regions(&self) -> Vec<usize> {
        let v: Vec<usize> = (0..REGIONS.len())
            .filter(|&r| self.world.region_share(r) * SETTLEMENT_SHARE * self.eps * 60.0 >= 20.0)
            .collect();
        if v.is_empty() {
            vec![0]
        } else {
            v
        }
    }

    /// One element failing at `rate` on `kind` events.
    pub(super) fn one(
        &self,
        kind: &str,
        element: BTreeMap<String, String>,
        rate: f64,
        what: String,
    ) -> Built {
        Built {
            injections: vec![Injection::on(kind, &element, fail(rate))],
            elements: vec![element],
            intensity: rate,
            description: what,
        }
    }

    /// Several elements failing at `rate` on auths.
    pub(super) fn several(
        &self,
        elements: Vec<BTreeMap<String, String>>,
        rate: f64,
        what: &str,
    ) -> Built {
        Built {
            injections: elements
                .iter()
                .map(|e| Injection::on("auth", e, fail(rate)))
                .collect(),
            description: format!(
                "{what}: {} of auths fail in each of {}",
                pct(rate),
                names(&elements)
            ),
            elements,
            intensity: rate,
        }
    }

    pub(super) fn pair_dims(p: usize, r: usize) -> BTreeMap<String, String> {
        dims_of(&[("provider", PROVIDERS[p]), ("region", REGIONS[r])])
    }

    /// A one-element fault of shape `v` over `[s, e)`: its target and rate
    /// range, and the words before and after the rate in its description.
    pub(super) fn single(&self, v: V, s: i64, e: i64, rng: &mut StdRng) -> Option<Single> {
        let world = self.world;
        let auth = |element, (lo, hi), head: String, tail| Single {
            kind: "auth",
            element,
            lo,
            hi,
            head,
            tail,
        };
        Some(match v {
            V::ProviderAuth | V::ProviderSettle => {
                let settle = v == V::ProviderSettle;
                let pool: Vec<usize> = if settle {
                    self.settle_providers()
                } else {
                    (0..PROVIDERS.len()).collect()
                };
                let p = PROVIDERS[pick(&pool, rng)];
                Single {
                    kind: if settle { "settlement" } else { "auth" },
                    element: dims_of(&[("provider", p)]),
                    lo: if settle { 0.3 } else { 0.2 },
                    hi: if settle { 0.8 } else { 0.9 },
                    head: p.to_string(),
                    tail: if settle {
                        "of settlements fail in every region"
                    } else {
                        "of auths fail in every region"
                    },
                }
            }
            V::RegionAuth | V::RegionSettle => {
                let settle = v == V::RegionSettle;
                let pool: Vec<usize> = if settle {
                    self.settle_regions()
                } else {
                    (0..REGIONS.len()).collect()
                };
                let r = REGIONS[pick(&pool, rng)];
                Single {
                    kind: if settle { "settlement" } else { "auth" },
                    element: dims_of(&[("region", r)]),
                    lo: if settle { 0.3 } else { 0.2 },
                    hi: if settle { 0.8 } else { 0.9 },
                    head: r.to_string(),
                    tail: if settle {
                        "of settlements fail at every provider"
                    } else {
                        "of auths fail at every provider"
                    },
                }
            }
            V::Bin => {
                let b = self.bin(pick(&self.bins(80.0, 100, s, e), rng));
                let brand = world.card_brand(&b).unwrap_or("unknown brand");
                auth(
                    dims_of(&[("bin", &b)]),
                    (0.4, 1.0),
                    format!("issuer of BIN {b} ({brand})"),
                    "of its auths fail everywhere",
                )
            }
            V::BinRange => {
                let ranges = self.ranges();
                let ok: Vec<&(String, Vec<usize>)> = ranges
                    .iter()
                    .filter(|(_, ranks)| {
                        let share: f64 = ranks.iter().map(|&r| world.bin_share(r)).sum();
                        ranks.len() >= 3 && self.auths(share, s, e) >= 100.0
                    })
                    .collect();
                let (prefix, ranks) = if ok.is_empty() {
                    ranges[0].clone()
                } else {
                    pick(&ok, rng).clone()
                };
                auth(
                    dims_of(&[("bin4", &prefix)]),
                    (0.4, 1.0),
                    format!("issuer range {prefix}xx ({} BINs) down", ranks.len()),
                    "of their auths fail everywhere",
                )
            }
            V::Brand => {
                let brand = self.brand(s, e, rng);
                auth(
                    dims_of(&[("card_brand", brand)]),
                    (0.15, 0.7),
                    format!("{brand} network outage"),
                    "of its auths fail at every provider and region",
                )
            }
            V::MerchantAuth => {
                let m = self.merchant(pick(&self.merchants(80.0, s, e), rng));
                auth(
                    dims_of(&[("merchant_id", &m)]),
                    (0.4, 1.0),
                    format!("{m}'s payment integration broken"),
                    "of its auths fail",
                )
            }
            V::MerchantWebhook => {
                let m = self.merchant(pick(&self.webhook_merchants(s, e), rng));
                Single {
                    kind: "webhook",
                    element: dims_of(&[("merchant_id", &m)]),
                    lo: 0.8,
                    hi: 1.0,
                    head: format!("webhook endpoint of {m} down"),
                    tail: "of deliveries fail, every provider",
                }
            }
            V::AttrVersion => {
                let v = pick(&APP_VERSIONS, rng).0;
                auth(
                    dims_of(&[("attrs.app_version", v)]),
                    (0.3, 1.0),
                    format!("bad app release {v} (iOS and Android)"),
                    "of its auths fail",
                )
            }
            V::AttrChannel => {
                let c = pick(&CHANNELS, rng).0;
                auth(
                    dims_of(&[("attrs.channel", c)]),
                    (0.2, 0.6),
                    format!("channel {c} broken"),
                    "of its auths fail",
                )
            }
            V::Pair => {
                let (p, r) = pick(&self.pairs(150.0, s, e), rng);
                auth(
                    Self::pair_dims(p, r),
                    (0.4, 1.0),
                    format!("{} in {}", PROVIDERS[p], REGIONS[r]),
                    "of auths fail",
                )
            }
            V::Deep3 => {
                let brands = self.brands();
                let mut ok: Vec<(usize, usize, &'static str)> = Vec::new();
                for (p, r) in self.pairs(0.0, s, e) {
                    for &(brand, share) in &brands {
                        if self.auths(world.pair_share(p, r) * share, s, e) >= 80.0 {
                            ok.push((p, r, brand));
                        }
                    }
                }
                let (p, r, brand) = if ok.is_empty() {
                    let (p, r) = self.pairs(0.0, s, e)[0];
                    (p, r, brands[0].0)
                } else {
                    pick(&ok, rng)
                };
                let mut element = Self::pair_dims(p, r);
                element.insert("card_brand".into(), brand.into());
                auth(
                    element,
                    (0.4, 1.0),
                    format!(
                        "{} in {} fails {brand} cards only",
                        PROVIDERS[p], REGIONS[r]
                    ),
                    "of them fail, its other brands healthy",
                )
            }
            V::LowBin | V::LowMerchant => {
                let (n, share, skip, what): (usize, &dyn Fn(usize) -> f64, &[usize], _) =
                    if v == V::LowBin {
                        (world.bin_count(), &|r| world.bin_share(r), &[], "bin")
                    } else {
                        (
                            N_MERCHANTS,
                            &|r| world.merchant_share(r),
                            &self.flaky,
                            "merchant_id",
                        )
                    };
                let rank = self.low_volume(n, share, s, e, rng, skip);
                let name = if v == V::LowBin {
                    self.bin(rank)
                } else {
                    self.merchant(rank)
                };
                let per = self.auths_mid(share(rank), s, e);
                auth(
                    dims_of(&[(what, &name)]),
                    (0.5, 0.8),
                    format!(
                        "small {} {name} (~{per:.0} auths per 2 min)",
                        if v == V::LowBin { "BIN" } else { "merchant" }
                    ),
                    "of its auths fail",
                )
            }
            _ => return None,
        })
    }

    /// A card brand busy enough for the auth rule, else the biggest.
    pub(super) fn brand(&self, s: i64, e: i64, rng: &mut StdRng) -> &'static str {
        let brands = self.brands();
        let ok: Vec<&'static str> = brands
            .iter()
            .filter(|b| self.auths(b.1, s, e) >= 150.0)
            .map(|b| b.0)
            .collect();
        if ok.is_empty() {
            brands[0].0
        } else {
            pick(&ok, rng)
        }
    }

    /// The fault of shape `v` over `[s, e)`; `ramp_ms` for the ramps.
    pub(super) fn fault(&self, v: V, s: i64, e: i64, ramp_ms: i64, rng: &mut StdRng) -> Built {
        if let Some(one) = self.single(v, s, e, rng) {
            let rate = draw(rng, one.lo, one.hi);
            return self.one(
                one.kind,
                one.element,
                rate,
                format!("{}: {} {}", one.head, pct(rate), one.tail),
            );
        }
        match v {
            V::ErrorCode => {
                let code = pick(&NEW_ERROR_CODES, rng);
                let rate = draw(rng, 0.05, 0.2);
                let element = dims_of(&[("error_code", code)]);
                Built {
                    injections: vec![Injection::on(
                        "auth",
                        &BTreeMap::new(),
                        Action::Fail {
                            rate,
                            ramp_ms: 0,
                            code: Some(code.to_string()),
                        },
                    )],
                    elements: vec![element],
                    intensity: rate,
                    description: format!(
                        "new failure `{code}` across all auths: {} of auths fail with it, every provider, region and BIN",
                        pct(rate)
                    ),
                }
            }
            V::SameProviderRegions => {
                let pairs = self.pairs(150.0, s, e);
                let mut by_provider: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
                for &(p, r) in &pairs {
                    by_provider.entry(p).or_default().push(r);
                }
                let k = rng.gen_range(2..=3);
                let mut ok: Vec<(usize, Vec<usize>)> = by_provider
                    .iter()
                    .filter(|(_, rs)| rs.len() >= k)
                    .map(|(p, rs)| (*p, rs.clone()))
                    .collect();
                if ok.is_empty() {
                    ok = vec![(0, (0..REGIONS.len()).collect())];
                }
                let (p, mut regions) = pick(&ok, rng);
                regions.shuffle(rng);
                regions.truncate(k);
                regions.sort_unstable();
                let elements = regions.iter().map(|&r| Self::pair_dims(p, r)).collect();
                let rate = draw(rng, 0.4, 1.0);
                self.several(
                    elements,
                    rate,
                    &format!(
                        "{} down in {k} of its regions, the others healthy",
                        PROVIDERS[p]
                    ),
                )
            }
            V::SameRangeBins => {
                // A range with at least three BINs, two of them busy.
                let ranges = self.ranges();
                let busy = |r: &usize| self.auths(self.world.bin_share(*r), s, e) >= 60.0;
                let ok: Vec<&(String, Vec<usize>)> = ranges
                    .iter()
                    .filter(|(_, ranks)| {
                        ranks.len() >= 3 && ranks.iter().filter(|r| busy(r)).count() >= 2
                    })
                    .collect();
                let (prefix, mut ranks) = if ok.is_empty() {
                    ranges
                        .iter()
                        .find(|(_, ranks)| ranks.len() >= 3)
                        .unwrap_or(&ranges[0])
                        .clone()
                } else {
                    pick(&ok, rng).clone()
                };
                ranks.sort_unstable();
                let elements = ranks[..2.min(ranks.len())]
                    .iter()
                    .map(|&r| dims_of(&[("bin", &self.bin(r))]))
                    .collect();
                let rate = draw(rng, 0.5, 1.0);
                self.several(
                    elements,
                    rate,
                    &format!(
                        "two BINs of issuer range {prefix}xx ({} BINs) down",
                        ranks.len()
                    ),
                )
            }
            V::SameRegionProviders => {
                let pairs = self.pairs(150.0, s, e);
                let mut by_region: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
                for &(p, r) in &pairs {
                    by_region.entry(r).or_default().push(p);
                }
                let mut ok: Vec<(usize, Vec<usize>)> = by_region
                    .into_iter()
                    .filter(|(_, ps)| ps.len() >= 3)
                    .collect();
                if ok.is_empty() {
                    ok = vec![(0, (0..PROVIDERS.len()).collect())];
                }
                let (r, mut providers) = pick(&ok, rng);
                providers.shuffle(rng);
                providers.truncate(2);
                providers.sort_unstable();
                let elements = providers.iter().map(|&p| Self::pair_dims(p, r)).collect();
                let rate = draw(rng, 0.4, 1.0);
                self.several(
                    elements,
                    rate,
                    &format!("two providers down in {}, the others healthy", REGIONS[r]),
                )
            }
            V::DiffPairs => {
                let mut pairs = self.pairs(150.0, s, e);
                pairs.shuffle(rng);
                let k = rng.gen_range(2..=3);
                let mut chosen: Vec<(usize, usize)> = Vec::new();
                for (p, r) in pairs {
                    if chosen.len() < k && chosen.iter().all(|c| c.0 != p && c.1 != r) {
                        chosen.push((p, r));
                    }
                }
                let elements = chosen.iter().map(|&(p, r)| Self::pair_dims(p, r)).collect();
                let rate = draw(rng, 0.4, 1.0);
                self.several(
                    elements,
                    rate,
                    "providers down in different regions at once",
                )
            }
            V::DiffBinMerchant => {
                let b = self.bin(pick(&self.bins(80.0, 100, s, e), rng));
                let m = self.merchant(pick(&self.merchants(80.0, s, e), rng));
                let rate = draw(rng, 0.4, 1.0);
                self.several(
                    vec![dims_of(&[("bin", &b)]), dims_of(&[("merchant_id", &m)])],
                    rate,
                    "a BIN's issuer and a merchant's integration fail at once",
                )
            }
            V::DiffPairBin => {
                let (p, r) = pick(&self.pairs(150.0, s, e), rng);
                let b = self.bin(pick(&self.bins(80.0, 100, s, e), rng));
                let rate = draw(rng, 0.4, 1.0);
                self.several(
                    vec![Self::pair_dims(p, r), dims_of(&[("bin", &b)])],
                    rate,
                    "a provider in one region and a BIN's issuer fail at once",
                )
            }
            V::RampPair | V::RampBin | V::RampProvider | V::RampRegion => {
                let element = match v {
                    V::RampPair => {
                        let (p, r) = pick(&self.pairs(150.0, s, e), rng);
                        Self::pair_dims(p, r)
                    }
                    V::RampBin => {
                        dims_of(&[("bin", &self.bin(pick(&self.bins(150.0, 100, s, e), rng)))])
                    }
                    V::RampProvider => {
                        let big: Vec<usize> = (0..PROVIDERS.len())
                            .filter(|&p| self.world.provider_share(p) >= 0.15)
                            .collect();
                        let p = if big.is_empty() { 0 } else { pick(&big, rng) };
                        dims_of(&[("provider", PROVIDERS[p])])
                    }
                    _ => dims_of(&[("region", REGIONS[rng.gen_range(0..REGIONS.len())])]),
                };
                let rate = draw(rng, 0.1, 0.3);
                Built {
                    injections: vec![Injection::on(
                        "auth",
                        &element,
                        Action::Fail {
                            rate,
                            ramp_ms,
                            code: None,
                        },
                    )],
                    description: format!(
                        "{}: auth failures ramp from baseline to {} over {}, then hold",
                        names(std::slice::from_ref(&element)),
                        pct(rate),
                        minutes(ramp_ms)
                    ),
                    elements: vec![element],
                    intensity: rate,
                }
            }
            V::LiftPair => {
                let pairs = self.pairs(150.0, s, e);
                let (p, r) = pick(&pairs[..5.min(pairs.len())], rng);
                let add = draw(rng, 0.02, 0.04);
                let element = Self::pair_dims(p, r);
                Built {
                    injections: vec![Injection::on(
                        "auth",
                        &element,
                        Action::Add { add, ramp_ms: 0 },
                    )],
                    elements: vec![element],
                    intensity: add,
                    description: format!(
                        "{} in {}: +{:.1} percentage points of auth failures (baseline {:.1}%)",
                        PROVIDERS[p],
                        REGIONS[r],
                        add * 100.0,
                        self.world.baseline_failure_rate(p, r) * 100.0
                    ),
                }
            }
            V::ProviderAuth
            | V::ProviderSettle
            | V::RegionAuth
            | V::RegionSettle
            | V::Bin
            | V::BinRange
            | V::Brand
            | V::MerchantAuth
            | V::MerchantWebhook
            | V::AttrVersion
            | V::AttrChannel
            | V::Pair
            | V::Deep3
            | V::LowBin
            | V::LowMerchant
            | V::Overlap(_)
            | V::FailoverRegion
            | V::FailoverPair
            | V::DeclineBin
            | V::DeclineMerchant
            | V::DeclineBrand => unreachable!("not a single fault: {v:?}"),
        }
    }

    /// The quiet case of shape `v` over `[s, e)`.
    pub(super) fn quiet(&self, v: V, s: i64, e: i64, rng: &mut StdRng) -> QuietSpec {
        let len = minutes(e - s);
        let (quiet_type, dims, intensity, injection, description) = match v {
            V::FailoverRegion | V::FailoverPair => {
                let (dims, from, what) = if v == V::FailoverRegion {
                    let r = rng.gen_range(0..REGIONS.len());
                    (
                        dims_of(&[("region", REGIONS[r])]),
                        r,
                        "all traffic".to_string(),
                    )
                } else {
                    let (p, r) = pick(&self.pairs(150.0, s, e), rng);
                    (
                        Self::pair_dims(p, r),
                        r,
                        format!("{}'s traffic", PROVIDERS[p]),
                    )
                };
                let to = (from + rng.gen_range(1..REGIONS.len())) % REGIONS.len();
                let injection = Injection {
                    kind: None,
                    matcher: dims.clone(),
                    action: Action::Move {
                        to: REGIONS[to].to_string(),
                    },
                };
                let description = format!(
                    "failover: {what} in {} (auths, webhooks, settlements) is processed in {} for {len}; same totals, same failure rates",
                    REGIONS[from], REGIONS[to]
                );
                (QuietType::Failover, dims, 1.0, injection, description)
            }
            _ => {
                let dims = match v {
                    V::DeclineBin => {
                        dims_of(&[("bin", &self.bin(pick(&self.bins(80.0, 100, s, e), rng)))])
                    }
                    V::DeclineMerchant => dims_of(&[(
                        "merchant_id",
                        &self.merchant(pick(&self.merchants(80.0, s, e), rng)),
                    )]),
                    _ => dims_of(&[("card_brand", self.brand(s, e, rng))]),
                };
                let rate = draw(rng, 0.4, 0.7);
                let injection = Injection::on("auth", &dims, Action::Decline { rate });
                let description = format!(
                    "{}: business declines (outcome decline, not failure) at {} for {len}",
                    names(std::slice::from_ref(&dims)),
                    pct(rate)
                );
                (QuietType::DeclineBurst, dims, rate, injection, description)
            }
        };
        QuietSpec {
            quiet_type,
            start_ms: s,
            end_ms: e,
            dims,
            intensity,
            injections: vec![injection],
            description,
        }
    }
}
