//! The card-data boundary, and the wider redaction of outbound text.
//!
//! A card number (PAN) is 13 to 19 digits passing the Luhn check, however it is
//! written (CONTRACT section 6). Every stage that lets text out of the process
//! (stdout, API, store, Slack, LLM, logs, NATS dead letters) uses this module, so
//! the rule lives in one place.
//!
//! # Layout
//!
//! - [`pan`]: the normalizing lexer (escapes, Unicode digits and separators) and
//!   the card-number scanner; no regex, it runs on every field of every event.
//! - [`patterns`]: CVV and expiry dates, emails, phone numbers, IBANs, bearer
//!   tokens, API keys and secrets, as checked regexes.
//! - this file: the public entry points.
//!
//! Three levels:
//!
//! - [`redact`] masks card numbers only.
//! - [`redact_all`] masks everything [`PATTERNS`] names. It is for free text
//!   (event messages), for every identifier on arrival, and for any text that goes
//!   to Slack, an LLM, logs, errors or stored rows. [`violations`] is the
//!   matching policy check: it names what still matches, so a sink can refuse
//!   to send.
//! - [`scrub_json`] applies [`redact_all`] to every string (and key, and
//!   number) of a JSON document: the last step before a payload leaves.
//!
//! Encoded text is seen through: the card scanner reads escapes in place, and
//! the pattern detectors also run on the decoded text (`jane%40example.com`).

use std::borrow::Cow;

mod pan;
mod patterns;

pub use pan::{contains_card_number, has_long_digit_run, luhn};
#[cfg(test)]
pub(crate) use pan::{digit_value, is_invisible};

#[cfg(test)]
pub(crate) use pan::tests::pan_strategy;
use pan::{decode_escapes, find_card_numbers};
use patterns::{apply, find_all, find_spans, Kind};

/// What a redacted card number is replaced with.
pub const PAN_MASK: &str = "[REDACTED:PAN]";

/// What [`redact_all`] returns when text still matches a pattern after several
/// passes (it never should): the whole text is withheld rather than sent.
pub const ALL_MASK: &str = "[REDACTED]";

/// The pattern names [`violations`] reports, in the order it reports them.
pub const PATTERNS: &[&str] = &[
    "pan",
    "cvv",
    "expiry",
    "email",
    "phone",
    "iban",
    "bearer_token",
    "secret",
    "api_key",
    "slack_token",
    "aws_access_key",
    "jwt",
    "private_key",
];

/// Replaces every card number in `s` with [`PAN_MASK`]; borrows when there is none.
pub fn redact(s: &str) -> Cow<'_, str> {
    let spans = find_card_numbers(s);
    if spans.is_empty() {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for (start, end) in spans {
        out.push_str(&s[last..start]);
        out.push_str(PAN_MASK);
        last = end;
    }
    out.push_str(&s[last..]);
    Cow::Owned(out)
}

/// Replaces card numbers, CVV and expiry dates, emails, phone numbers, IBANs,
/// bearer tokens, API keys and secrets in `s` with `[REDACTED:KIND]` masks;
/// borrows when there is nothing to mask.
///
/// Key-value secrets keep their key (`password=[REDACTED:SECRET]`), so the text
/// still reads. The result never has [`violations`]: masking can join text into
/// a new match, so this repeats until nothing matches, and after a few passes
/// (never seen) withholds the whole text as [`ALL_MASK`]. When only the decoded
/// form of an encoded text (`cvv%3D123`) holds something, the decoded text is
/// masked and returned: the encoding is not worth a leak.
pub fn redact_all(s: &str) -> Cow<'_, str> {
    let out = mask_until_clean(Cow::Borrowed(s));
    match decode_escapes(&out) {
        Cow::Owned(decoded) if !find_all(&decoded).is_empty() => {
            Cow::Owned(mask_until_clean(Cow::Owned(decoded)).into_owned())
        }
        _ => out,
    }
}

fn mask_until_clean(mut out: Cow<'_, str>) -> Cow<'_, str> {
    for _ in 0..4 {
        let spans = find_all(&out);
        if spans.is_empty() {
            return out;
        }
        out = Cow::Owned(apply(&out, &spans));
    }
    if find_all(&out).is_empty() {
        out
    } else {
        Cow::Borrowed(ALL_MASK)
    }
}

/// Names (from [`PATTERNS`]) of every pattern that matches in `s` or in its
/// decoded form, in the order of [`PATTERNS`]; empty when `s` is safe to send.
pub fn violations(s: &str) -> Vec<&'static str> {
    let mut kinds: Vec<Kind> = find_spans(s).into_iter().map(|(_, k)| k).collect();
    if let Cow::Owned(decoded) = decode_escapes(s) {
        kinds.extend(find_spans(&decoded).into_iter().map(|(_, k)| k));
    }
    kinds.sort();
    kinds.dedup();
    kinds.into_iter().map(Kind::name).collect()
}

/// Applies [`redact_all`] to every string and object key of `v`, and replaces a
/// number whose digits hold a card number with [`PAN_MASK`]. For payloads about
/// to leave the process (API answers, Slack, dead letters), whatever built them.
pub fn scrub_json(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::String(s) => {
            if let Cow::Owned(r) = redact_all(s) {
                *s = r;
            }
        }
        Value::Number(n) => {
            // Only whole numbers: a card number sent as a JSON number is an
            // integer, while a float's digits ("0.30000000000000004") are not
            // a written number a person would read as one.
            let whole = match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => Some(u.to_string()),
                (_, Some(i), _) => Some(i.to_string()),
                (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 1e20 => {
                    Some(format!("{:.0}", f.abs()))
                }
                _ => None,
            };
            if whole.is_some_and(|w| contains_card_number(&w)) {
                *v = Value::String(PAN_MASK.into());
            }
        }
        Value::Array(items) => items.iter_mut().for_each(scrub_json),
        Value::Object(map) => {
            let dirty = map.keys().any(|k| matches!(redact_all(k), Cow::Owned(_)));
            if dirty {
                let old = std::mem::take(map);
                for (k, mut item) in old {
                    scrub_json(&mut item);
                    map.insert(redact_all(&k).into_owned(), item);
                }
            } else {
                map.values_mut().for_each(scrub_json);
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encoded_secrets_are_seen_through() {
        for s in [
            "cvv%3D123",
            "jane%40example.com",
            r"cvv\u003d123",
            "Bearer%20abc123def456ghi789",
        ] {
            assert!(!violations(s).is_empty(), "{s:?}");
            let r = redact_all(s);
            assert!(violations(&r).is_empty(), "{s:?} -> {r:?}");
        }
        // Percent-encoding without anything behind it stays as it is.
        assert_eq!(redact_all("a%20b"), "a%20b");
    }

    #[test]
    fn json_documents_are_scrubbed_everywhere() {
        let mut v = serde_json::json!({
            "a": ["4111 1111 1111 1111", {"cvv=123": 4111111111111111u64}],
            "b": "jane@example.com",
            "n": 12,
        });
        scrub_json(&mut v);
        let text = v.to_string();
        assert!(!text.contains("4111"), "{text}");
        assert!(!text.contains("jane"), "{text}");
        assert!(!text.contains("123\""), "{text}");
        assert_eq!(v["n"], 12);
        // Floats keep their value whatever their digits.
        let mut f = serde_json::json!([0.30000000000000004, 4111111111111111.0]);
        scrub_json(&mut f);
        assert_eq!(f[0], 0.30000000000000004);
        assert_eq!(f[1], PAN_MASK);
    }

    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            "[ -~]{0,12}",
            Just("4111 1111 1111 1111".to_string()),
            Just("5500-0055-5555-5559".to_string()),
            Just("cvv ".to_string()),
            Just("exp ".to_string()),
            Just("12/27".to_string()),
            Just("password=".to_string()),
            Just("token: ".to_string()),
            Just("[REDACTED:SECRET]".to_string()),
            Just("Bearer ".to_string()),
            Just("@".to_string()),
            Just("+44 ".to_string()),
            Just("DE89 3704 0044 0532 0130 00".to_string()),
            Just("sk_live_".to_string()),
            Just("eyJ".to_string()),
            "[0-9]{1,5}",
            "[a-z]{1,8}",
            Just("\u{200B}".to_string()),
            Just("\u{FF14}".to_string()),
            Just("é".to_string()),
            Just("%20".to_string()),
            Just("%40".to_string()),
            Just("\\u00a0".to_string()),
            Just("&#52;".to_string()),
        ]
    }

    proptest! {
        #[test]
        fn redact_all_leaves_no_violations(parts in proptest::collection::vec(fragment(), 0..24)) {
            let s: String = parts.concat();
            let r = redact_all(&s);
            prop_assert!(violations(&r).is_empty(), "{:?} -> {:?}: {:?}", s, r, violations(&r));
            prop_assert!(!contains_card_number(&r));
        }

        #[test]
        fn redact_is_idempotent_and_never_panics(s in "\\PC{0,200}") {
            let once = redact(&s).into_owned();
            prop_assert!(!contains_card_number(&once));
            prop_assert_eq!(redact(&once), once.as_str());
            let all = redact_all(&s);
            prop_assert!(violations(&all).is_empty());
        }
    }
}
