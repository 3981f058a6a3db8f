//! Generic injections: what a fault or quiet case of a scenario family does to
//! traffic, as data.
//!
//! The standard scenario's fault types each have their own effect in the
//! [`Generator`](super::generator::Generator). Scenario families
//! ([`super::families`]) need causes on any event attribute, several at once,
//! ramps, failovers and decline bursts; rather than one effect per family, an
//! [`Injection`] says which events it touches (exact matches on event fields,
//! keyed like root causes: `provider`, `region`, `bin`, `bin4`, `card_brand`,
//! `merchant_id`, `attrs.channel`, `attrs.app_version`) and what happens to them
//! ([`Action`]). The generator compiles each one against the seed's
//! [`World`] into a [`Hit`] and applies it per event.
//!
//! Events carry `attrs` (`channel`, and `app_version` for the mobile channels)
//! only in scenarios that enable them ([`Scenario::attrs`](super::generator::Scenario::attrs)),
//! so scenarios without attributes keep their bytes.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::generator::{Cause, World, PROVIDERS, REGIONS};

/// Client channels of `attrs.channel`, with their share of auths.
pub const CHANNELS: [(&str, f64); 3] = [("web", 0.45), ("ios", 0.30), ("android", 0.25)];
/// App releases of `attrs.app_version` (mobile channels only, both platforms
/// ship the same versions), with their share of mobile auths.
pub const APP_VERSIONS: [(&str, f64); 5] = [
    ("5.1.4", 0.08),
    ("5.2.0", 0.22),
    ("5.2.3", 0.25),
    ("5.3.0", 0.30),
    ("5.3.1", 0.15),
];
/// Technical error codes that only injected faults produce (the background
/// uses `timeout`, `provider_5xx`, `issuer_unavailable`, `webhook_timeout`).
pub const NEW_ERROR_CODES: [&str; 5] = [
    "network_token_error",
    "3ds_server_error",
    "acquirer_config_invalid",
    "hsm_unavailable",
    "tokenization_timeout",
];

/// Every technical error code an injection may force.
const KNOWN_CODES: [&str; 9] = [
    "timeout",
    "provider_5xx",
    "issuer_unavailable",
    "webhook_timeout",
    "network_token_error",
    "3ds_server_error",
    "acquirer_config_invalid",
    "hsm_unavailable",
    "tokenization_timeout",
];

/// Upstream text for the codes only injections produce.
pub(crate) fn message_for_new_code(code: &str) -> Option<&'static str> {
    Some(match code {
        "network_token_error" => "network token cryptogram rejected",
        "3ds_server_error" => "3DS server returned an error",
        "acquirer_config_invalid" => "acquirer rejected merchant configuration",
        "hsm_unavailable" => "HSM not reachable",
        "tokenization_timeout" => "token vault timed out",
        _ => return None,
    })
}

/// What happens to the events an [`Injection`] matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Technical failures at `rate` (or the events' own rate when higher),
    /// reached linearly from the baseline over `ramp_ms` after the start.
    Fail {
        /// Failure rate, 0..1.
        rate: f64,
        /// Ramp length, ms (0: at once).
        #[serde(default)]
        ramp_ms: i64,
        /// The error code of the injected failures (default: the usual codes
        /// of the cause the matched fields suggest).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
    },
    /// `add` more failure probability (percentage points / 100), reached
    /// linearly over `ramp_ms`.
    Add {
        /// Added failure rate, 0..1.
        add: f64,
        /// Ramp length, ms (0: at once).
        #[serde(default)]
        ramp_ms: i64,
    },
    /// Business declines (not failures) at `rate`.
    Decline {
        /// Decline rate, 0..1.
        rate: f64,
    },
    /// The matched traffic is processed in region `to` instead: same events,
    /// with the failure rates of where they land.
    Move {
        /// Destination region.
        to: String,
    },
}

/// One generic effect on traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Injection {
    /// Event kind it touches (`auth`, `webhook`, `settlement`); none: every kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Exact matches on event fields (`provider`, `region`, `bin`, `bin4`,
    /// `card_brand`, `merchant_id`, `attrs.channel`, `attrs.app_version`);
    /// empty: all events of the kind. Settlements match on `provider` and
    /// `region` only, webhooks also on `merchant_id`.
    #[serde(default)]
    pub matcher: BTreeMap<String, String>,
    /// What happens to them.
    #[serde(flatten)]
    pub action: Action,
}

impl Injection {
    /// An injection on events of `kind` matching `matcher`.
    pub fn on(kind: &str, matcher: &BTreeMap<String, String>, action: Action) -> Injection {
        Injection {
            kind: Some(kind.to_string()),
            matcher: matcher.clone(),
            action,
        }
    }
}

/// Kind bits of a [`Hit`].
pub(crate) const AUTH: u8 = 1;
pub(crate) const WEBHOOK: u8 = 2;
pub(crate) const SETTLEMENT: u8 = 4;

/// What a [`Hit`] does, resolved.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Act {
    Fail {
        rate: f64,
        ramp_ms: i64,
        code: Option<&'static str>,
    },
    Add {
        add: f64,
        ramp_ms: i64,
    },
    Decline {
        rate: f64,
    },
    Move {
        to: u8,
    },
}

/// An [`Injection`] resolved against a [`World`]: indices instead of names.
#[derive(Debug, Clone)]
pub(crate) struct Hit {
    pub kinds: u8,
    provider: Option<u8>,
    region: Option<u8>,
    /// `bin`, `bin4` and `card_brand` together, per BIN index.
    bins: Option<Vec<bool>>,
    merchant: Option<u32>,
    channel: Option<u8>,
    version: Option<u8>,
    pub act: Act,
    /// Picks the codes of injected failures without a forced code.
    pub cause: Cause,
}

/// Attributes of one auth: channel index, app version index (mobile only).
pub(crate) type Attrs = (u8, Option<u8>);

/// Draws the attributes of one auth.
pub(crate) fn draw_attrs(rng: &mut StdRng) -> Attrs {
    let pick = |rng: &mut StdRng, table: &[(&str, f64)]| -> u8 {
        let mut u: f64 = rng.gen();
        for (i, (_, w)) in table.iter().enumerate() {
            if u < *w {
                return i as u8;
            }
            u -= w;
        }
        (table.len() - 1) as u8
    };
    let channel = pick(rng, &CHANNELS);
    let version = (channel != 0).then(|| pick(rng, &APP_VERSIONS));
    (channel, version)
}

/// Appends `,"attrs":{...}` for the event's attributes.
pub(crate) fn push_attrs(s: &mut String, attrs: Attrs) {
    s.push_str(",\"attrs\":{\"channel\":\"");
    s.push_str(CHANNELS[attrs.0 as usize].0);
    s.push('"');
    if let Some(v) = attrs.1 {
        s.push_str(",\"app_version\":\"");
        s.push_str(APP_VERSIONS[v as usize].0);
        s.push('"');
    }
    s.push('}');
}

/// The share of a ramp done `elapsed_ms` after the start.
pub(crate) fn ramp(elapsed_ms: i64, ramp_ms: i64) -> f64 {
    if ramp_ms <= 0 {
        1.0
    } else {
        (elapsed_ms as f64 / ramp_ms as f64).clamp(0.0, 1.0)
    }
}

impl Hit {
    /// Whether an event with these fields is touched (`bin`, `attrs` absent
    /// for webhooks and settlements).
    pub fn matches(
        &self,
        provider: u8,
        region: u8,
        bin: Option<u32>,
        merchant: Option<u32>,
        attrs: Option<Attrs>,
    ) -> bool {
        self.provider.is_none_or(|p| p == provider)
            && self.region.is_none_or(|r| r == region)
            && self
                .bins
                .as_ref()
                .is_none_or(|set| bin.is_some_and(|b| set[b as usize]))
            && self.merchant.is_none_or(|m| merchant == Some(m))
            && self.channel.is_none_or(|c| attrs.is_some_and(|a| a.0 == c))
            && self
                .version
                .is_none_or(|v| attrs.is_some_and(|a| a.1 == Some(v)))
    }

    /// Resolves `inj` against `world`; the error says what is wrong.
    pub fn compile(inj: &Injection, world: &World) -> Result<Hit, String> {
        let kinds = match inj.kind.as_deref() {
            None => AUTH | WEBHOOK | SETTLEMENT,
            Some("auth") => AUTH,
            Some("webhook") => WEBHOOK,
            Some("settlement") => SETTLEMENT,
            Some(k) => return Err(format!("unknown event kind `{k}`")),
        };
        let mut hit = Hit {
            kinds,
            provider: None,
            region: None,
            bins: None,
            merchant: None,
            channel: None,
            version: None,
            act: Act::Decline { rate: 0.0 },
            cause: Cause::Provider,
        };
        let mut bins = vec![true; world.bin_count()];
        let mut by_bin = false;
        for (k, v) in &inj.matcher {
            let allowed = match k.as_str() {
                "provider" | "region" => true,
                "merchant_id" => kinds & SETTLEMENT == 0,
                _ => kinds == AUTH,
            };
            if !allowed {
                return Err(format!(
                    "cannot match `{k}` on {} events",
                    inj.kind.as_deref().unwrap_or("all")
                ));
            }
            let unknown = || format!("unknown {k} `{v}`");
            let index = |table: &[(&str, f64)]| {
                table
                    .iter()
                    .position(|(n, _)| n == v)
                    .map(|i| i as u8)
                    .ok_or_else(unknown)
            };
            match k.as_str() {
                "provider" => {
                    hit.provider =
                        Some(PROVIDERS.iter().position(|p| p == v).ok_or_else(unknown)? as u8)
                }
                "region" => {
                    hit.region =
                        Some(REGIONS.iter().position(|r| r == v).ok_or_else(unknown)? as u8)
                }
                "merchant_id" => hit.merchant = Some(world.merchant_rank(v).ok_or_else(unknown)?),
                "attrs.channel" => hit.channel = Some(index(&CHANNELS)?),
                "attrs.app_version" => hit.version = Some(index(&APP_VERSIONS)?),
                "bin" | "bin4" | "card_brand" => {
                    by_bin = true;
                    let mut any = false;
                    for (i, (digits, brand)) in world.bins_with_brands().enumerate() {
                        let ok = match k.as_str() {
                            "bin" => digits == v,
                            "bin4" => digits.get(..4) == Some(v.as_str()),
                            _ => brand == v,
                        };
                        bins[i] &= ok;
                        any |= ok;
                    }
                    if !any {
                        return Err(unknown());
                    }
                }
                _ => return Err(format!("cannot match on `{k}`")),
            }
        }
        if by_bin {
            hit.bins = Some(bins);
        }
        let unit = |name: &str, x: f64| {
            if (0.0..=1.0).contains(&x) {
                Ok(x)
            } else {
                Err(format!("{name} must be in 0..1"))
            }
        };
        hit.act = match &inj.action {
            Action::Fail {
                rate,
                ramp_ms,
                code,
            } => Act::Fail {
                rate: unit("rate", *rate)?,
                ramp_ms: *ramp_ms,
                code: match code {
                    None => None,
                    Some(c) => Some(
                        KNOWN_CODES
                            .iter()
                            .copied()
                            .find(|k| k == c)
                            .ok_or_else(|| format!("unknown error code `{c}`"))?,
                    ),
                },
            },
            Action::Add { add, ramp_ms } => Act::Add {
                add: unit("add", *add)?,
                ramp_ms: *ramp_ms,
            },
            Action::Decline { rate } => {
                if kinds != AUTH {
                    return Err("declines happen on auth events only".into());
                }
                Act::Decline {
                    rate: unit("rate", *rate)?,
                }
            }
            Action::Move { to } => {
                if inj.matcher.keys().any(|k| k != "provider" && k != "region") {
                    return Err("a move matches on provider and region only".into());
                }
                let to = REGIONS
                    .iter()
                    .position(|r| r == to)
                    .ok_or_else(|| format!("unknown region `{to}`"))?
                    as u8;
                if hit.region.is_none_or(|r| r == to) {
                    return Err("a move needs a region to leave, other than its destination".into());
                }
                Act::Move { to }
            }
        };
        let keys: Vec<&str> = inj.matcher.keys().map(String::as_str).collect();
        hit.cause = if keys
            .iter()
            .any(|k| matches!(*k, "bin" | "bin4" | "card_brand"))
        {
            Cause::Issuer
        } else if keys == ["region"] {
            Cause::Network
        } else {
            Cause::Provider
        };
        Ok(hit)
    }
}

/// The region `pair` (provider x region index) is processed in once the active
/// moves apply.
pub(crate) fn relocate<'a>(hits: impl Iterator<Item = &'a Hit>, kind: u8, pair: usize) -> usize {
    let n = REGIONS.len();
    let (p, mut r) = ((pair / n) as u8, (pair % n) as u8);
    for h in hits {
        if let Act::Move { to } = h.act {
            if h.kinds & kind != 0 && h.matches(p, r, None, None, None) {
                r = to;
            }
        }
    }
    p as usize * n + r as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn injections_round_trip_as_json() {
        let inj = Injection::on(
            "auth",
            &dims(&[("attrs.app_version", "5.3.1")]),
            Action::Fail {
                rate: 0.4,
                ramp_ms: 0,
                code: None,
            },
        );
        let json = serde_json::to_string(&inj).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"auth","matcher":{"attrs.app_version":"5.3.1"},"action":"fail","rate":0.4,"ramp_ms":0}"#
        );
        assert_eq!(serde_json::from_str::<Injection>(&json).unwrap(), inj);
        let mv: Injection = serde_json::from_str(
            r#"{"matcher":{"region":"us-east-1"},"action":"move","to":"us-west-2"}"#,
        )
        .unwrap();
        assert_eq!(mv.kind, None);
    }

    #[test]
    fn compile_resolves_and_rejects() {
        let world = World::new(1);
        let bin: String = world.bins().next().unwrap().to_string();
        let prefix = &bin[..4];
        let fail = Action::Fail {
            rate: 0.5,
            ramp_ms: 0,
            code: Some("network_token_error".into()),
        };
        let hit = Hit::compile(
            &Injection::on("auth", &dims(&[("bin4", prefix)]), fail.clone()),
            &world,
        )
        .unwrap();
        let rank = world.bin_rank(&bin).unwrap();
        assert!(hit.matches(0, 0, Some(rank), Some(0), None));
        assert!(!hit.matches(0, 0, None, Some(0), None));
        assert!(matches!(hit.cause, Cause::Issuer));

        let attr = Hit::compile(
            &Injection::on("auth", &dims(&[("attrs.channel", "ios")]), fail.clone()),
            &world,
        )
        .unwrap();
        assert!(attr.matches(0, 0, Some(0), Some(0), Some((1, Some(0)))));
        assert!(!attr.matches(0, 0, Some(0), Some(0), Some((0, None))));
        assert!(!attr.matches(0, 0, Some(0), Some(0), None));

        for (inj, why) in [
            (
                Injection::on("auth", &dims(&[("bin4", "0000")]), fail.clone()),
                "unknown bin4",
            ),
            (
                Injection::on("settlement", &dims(&[("bin", &bin)]), fail.clone()),
                "cannot match",
            ),
            (
                Injection::on("auth", &dims(&[("color", "red")]), fail.clone()),
                "cannot match",
            ),
            (
                Injection::on(
                    "auth",
                    &dims(&[]),
                    Action::Fail {
                        rate: 0.5,
                        ramp_ms: 0,
                        code: Some("made_up".into()),
                    },
                ),
                "unknown error code",
            ),
            (
                Injection::on(
                    "auth",
                    &dims(&[("region", "us-east-1")]),
                    Action::Move {
                        to: "us-east-1".into(),
                    },
                ),
                "a move needs",
            ),
            (
                Injection::on("webhook", &dims(&[]), Action::Decline { rate: 0.5 }),
                "declines",
            ),
        ] {
            let err = Hit::compile(&inj, &world).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn moves_relocate_only_what_they_match() {
        let world = World::new(1);
        let mv = |m: &[(&str, &str)]| Injection {
            kind: None,
            matcher: dims(m),
            action: Action::Move {
                to: "us-west-2".into(),
            },
        };
        let hits = [Hit::compile(
            &mv(&[("provider", "adyen"), ("region", "us-east-1")]),
            &world,
        )
        .unwrap()];
        // adyen (1) x us-east-1 (0) -> us-west-2 (1); stripe stays.
        assert_eq!(relocate(hits.iter(), AUTH, 5), 6);
        assert_eq!(relocate(hits.iter(), SETTLEMENT, 5), 6);
        assert_eq!(relocate(hits.iter(), AUTH, 0), 0);
    }
}
