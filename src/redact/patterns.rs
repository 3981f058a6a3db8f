//! Every sensitive pattern but card numbers: CVV and expiry dates, emails,
//! phone numbers, IBANs, bearer tokens, API keys and secrets, as regexes with a
//! check each (a checksum, a placeholder list), plus the span arithmetic that
//! applies masks.

use std::ops::Range;
use std::sync::LazyLock;

use regex::{Regex, RegexSet};

use super::pan::find_card_numbers;
use super::{PAN_MASK, PATTERNS};

/// What a span holds. The order is priority when spans overlap, and the order of
/// [`PATTERNS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    Pan,
    Cvv,
    Expiry,
    Email,
    Phone,
    Iban,
    Bearer,
    Secret,
    ApiKey,
    SlackToken,
    AwsKey,
    Jwt,
    PrivateKey,
}

impl Kind {
    pub(super) fn name(self) -> &'static str {
        PATTERNS[self as usize]
    }

    fn mask(self) -> &'static str {
        match self {
            Kind::Pan => PAN_MASK,
            Kind::Cvv => "[REDACTED:CVV]",
            Kind::Expiry => "[REDACTED:EXPIRY]",
            Kind::Email => "[REDACTED:EMAIL]",
            Kind::Phone => "[REDACTED:PHONE]",
            Kind::Iban => "[REDACTED:IBAN]",
            Kind::Bearer => "[REDACTED:TOKEN]",
            Kind::Secret => "[REDACTED:SECRET]",
            Kind::ApiKey => "[REDACTED:API_KEY]",
            Kind::SlackToken => "[REDACTED:SLACK_TOKEN]",
            Kind::AwsKey => "[REDACTED:AWS_KEY]",
            Kind::Jwt => "[REDACTED:JWT]",
            Kind::PrivateKey => "[REDACTED:PRIVATE_KEY]",
        }
    }
}

/// Decides what of a regex match is sensitive: given the haystack and the
/// sensitive part of the match (the first capture group that took part, else
/// the whole match), returns the byte range to mask, or `None` when it is not sensitive
/// after all (a failed checksum, a status word after `token:`, ...).
type Check = fn(&str, Range<usize>) -> Option<Range<usize>>;

struct Detector {
    kind: Kind,
    pattern: &'static str,
    check: Check,
}

/// A `key: value` pattern over a key alternation: optional key prefixes
/// (`aws_secret_access_key`, `x-api-key`), then the value quoted or up to a
/// delimiter. The value is the only capture group.
macro_rules! kv_pattern {
    ($keys:literal) => {
        concat!(
            r"(?i)(?-u:\b)(?:[a-z0-9]+[_.-])*(?:",
            $keys,
            r#")["']?\s{0,3}[:=]\s{0,3}(?:"([^"\r\n]*)"|'([^'\r\n]*)'|([^\s"',;&}]+))"#
        )
    };
}

static DETECTORS: LazyLock<Vec<Detector>> = LazyLock::new(|| {
    // Patterns use ASCII classes ([0-9], not \d) wherever a value is checked
    // numerically: \d would also match other scripts' digits. Word boundaries
    // are ASCII ((?-u:\b)): a Unicode \b keeps the regex engine off its DFA on
    // any non-ASCII text, about 100 times slower, and treating a non-ASCII
    // letter as a boundary only ever finds more.
    vec![
        Detector {
            kind: Kind::Cvv,
            pattern: r#"(?i)(?-u:\b)(?:cvv2?|cvc2?|cvn2?|csc|cvd|cav2|security[ _-]?code|card[ _-]?verification(?:[ _-]?(?:value|code|number))?)["']?\s{0,3}(?:[:=#]|is|was)?\s{0,3}["']?([0-9]{3,4})(?-u:\b)"#,
            check: accept,
        },
        Detector {
            kind: Kind::Expiry,
            pattern: r#"(?i)(?-u:\b)(?:exp(?:iry|iration|ires|ired)?(?:[ _-]?date)?|valid[ _-]?(?:thru|through|until|to)|good[ _-]?thru)["']?\s{0,3}(?:[:=#]|is|on)?\s{0,3}["']?((?:0?[1-9]|1[0-2])\s?[/-]\s?(?:20)?[0-9]{2}|(?:0[1-9]|1[0-2])[0-9]{2})(?-u:\b)"#,
            check: not_a_full_date,
        },
        Detector {
            kind: Kind::Expiry,
            pattern: r#"(?i)(?-u:\b)exp(?:iry|iration)?[ _-]?(?:month|mon|mm|year|yr|yy|yyyy)["']?\s{0,3}[:=]?\s{0,3}["']?([0-9]{1,4})(?-u:\b)"#,
            check: accept,
        },
        Detector {
            kind: Kind::Email,
            pattern: r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.\p{L}{2,24}(?-u:\b)",
            check: accept,
        },
        Detector {
            kind: Kind::Phone,
            // International: +CC then groups, 8..=15 digits in all.
            pattern: r"\+[0-9]{1,3}(?:[ -]?(?:\([0-9]{1,5}\)|[0-9]{1,5})){1,6}",
            check: international_phone,
        },
        Detector {
            kind: Kind::Phone,
            // North American: (415) 555-2671, 415-555-2671, 1 415.555.2671.
            pattern: r"(?:(?-u:\b)1[ .-]?)?(?:\([2-9][0-9]{2}\)\s?|(?-u:\b)[2-9][0-9]{2}[ .-])[2-9][0-9]{2}[ .-][0-9]{4}(?-u:\b)",
            check: accept,
        },
        Detector {
            kind: Kind::Phone,
            // Trunk-prefix national: 020 7946 0958, 07700 900123, 030 1234567.
            pattern: r"(?-u:\b)0[1-9][0-9]{1,4}[ -][0-9]{3,8}(?:[ -][0-9]{3,4})?(?-u:\b)",
            check: national_phone,
        },
        Detector {
            kind: Kind::Phone,
            // French style: 01 23 45 67 89, 01.23.45.67.89.
            pattern: r"(?-u:\b)0[1-9](?:[ .][0-9]{2}){4}(?-u:\b)",
            check: accept,
        },
        Detector {
            kind: Kind::Iban,
            pattern: r"(?i)(?-u:\b)[a-z]{2}[0-9]{2}(?: ?[a-z0-9]){11,32}(?-u:\b)",
            check: iban,
        },
        Detector {
            kind: Kind::Bearer,
            pattern: r"(?i)(?-u:\b)bearer\s+([A-Za-z0-9._~+/-]+=*)",
            check: token_like,
        },
        Detector {
            kind: Kind::Bearer,
            pattern: r#"(?i)(?-u:\b)(?:proxy-)?authorization["']?\s{0,3}[:=]\s{0,3}["']?(?:(?:bearer|basic|digest|token|apikey|key)\s+)?([^\s"',;]+)"#,
            check: masked_or_token_like,
        },
        Detector {
            kind: Kind::Secret,
            // Keys whose value is masked whatever it looks like.
            pattern: kv_pattern!(
                r"password|passwd|passphrase|pwd|pin|secret|secret[_-]?key|client[_-]?secret|signing[_-]?secret|api[_-]?key|apikey|access[_-]?key|private[_-]?key|credentials?"
            ),
            check: secret_value,
        },
        Detector {
            kind: Kind::Secret,
            // Keys whose value is masked only when it looks like a token, since
            // "token: expired" and "session: closed" are ordinary log text.
            pattern: kv_pattern!(
                r"token|access[_-]?token|refresh[_-]?token|id[_-]?token|auth[_-]?token|session[_-]?(?:id|token|key)|sid|cookie|set-cookie|signature"
            ),
            check: masked_or_token_like,
        },
        Detector {
            kind: Kind::ApiKey,
            pattern: r"(?-u:\b)(?:(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{8,}|whsec_[A-Za-z0-9]{16,}|sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}|AIza[0-9A-Za-z_-]{35})",
            check: accept,
        },
        Detector {
            kind: Kind::SlackToken,
            pattern: r"(?-u:\b)xox[abposre]-[A-Za-z0-9-]{10,}|(?-u:\b)xapp-[0-9]+-[A-Za-z0-9-]{10,}|https?://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]+",
            check: accept,
        },
        Detector {
            kind: Kind::AwsKey,
            pattern: r"(?-u:\b)(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA|ASCA)[A-Z0-9]{16}(?-u:\b)",
            check: accept,
        },
        Detector {
            kind: Kind::Jwt,
            pattern: r"(?-u:\b)eyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]*",
            check: accept,
        },
        Detector {
            kind: Kind::PrivateKey,
            pattern: r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?s:.*?)(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\z)",
            check: accept,
        },
    ]
});

struct Compiled {
    set: RegexSet,
    regexes: Vec<Regex>,
}

static COMPILED: LazyLock<Compiled> = LazyLock::new(|| {
    let patterns: Vec<&str> = DETECTORS.iter().map(|d| d.pattern).collect();
    // The patterns are constants covered by the unit tests: a failure here is a
    // programming error, caught by any test run, never by outside data.
    #[allow(clippy::expect_used)]
    let set = RegexSet::new(&patterns).expect("redaction patterns compile");
    #[allow(clippy::expect_used)]
    let regexes = patterns
        .iter()
        .map(|p| Regex::new(p).expect("redaction pattern compiles"))
        .collect();
    Compiled { set, regexes }
});

/// Every sensitive span in `s`, merged where they overlap, in order.
pub(super) fn find_all(s: &str) -> Vec<(Range<usize>, Kind)> {
    merge(find_spans(s))
}

/// Every sensitive span in `s`, as found: overlapping spans of different
/// kinds are all there (a Slack token's digits can pass the Luhn check).
pub(super) fn find_spans(s: &str) -> Vec<(Range<usize>, Kind)> {
    let mut spans: Vec<(Range<usize>, Kind)> = find_card_numbers(s)
        .into_iter()
        .map(|(a, b)| (a..b, Kind::Pan))
        .collect();
    let compiled = &*COMPILED;
    for i in compiled.set.matches(s).iter() {
        let detector = &DETECTORS[i];
        let re = &compiled.regexes[i];
        let mut at = 0;
        while at <= s.len() {
            let Some(caps) = re.captures_at(s, at) else {
                break;
            };
            let Some(whole) = caps.get(0) else { break };
            let part = caps
                .iter()
                .skip(1)
                .flatten()
                .next()
                .map_or(whole.range(), |m| m.range());
            match (detector.check)(s, part) {
                Some(range) if !range.is_empty() => {
                    at = range.end.max(whole.start() + 1);
                    spans.push((range, detector.kind));
                }
                // Not sensitive after all: a later, overlapping match may be.
                _ => at = whole.start() + 1,
            }
            while at < s.len() && !s.is_char_boundary(at) {
                at += 1;
            }
        }
    }
    spans
}

/// Sorts spans and merges overlapping ones; a merged span takes the kind of the
/// outermost span, or the highest priority (card numbers first) when spans
/// only overlap.
fn merge(mut spans: Vec<(Range<usize>, Kind)>) -> Vec<(Range<usize>, Kind)> {
    spans.sort_by_key(|(r, k)| (r.start, std::cmp::Reverse(r.end), *k));
    let mut out: Vec<(Range<usize>, Kind)> = Vec::with_capacity(spans.len());
    for (range, kind) in spans {
        match out.last_mut() {
            Some((last, last_kind)) if range.start < last.end => {
                // A span inside another takes its name (the digits of an IBAN
                // can pass the Luhn check); overlapping ones take the stronger.
                if range.end > last.end {
                    *last_kind = (*last_kind).min(kind);
                }
                last.end = last.end.max(range.end);
            }
            _ => out.push((range, kind)),
        }
    }
    out
}

pub(super) fn apply(s: &str, spans: &[(Range<usize>, Kind)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for (range, kind) in spans {
        out.push_str(&s[last..range.start]);
        out.push_str(kind.mask());
        last = range.end;
    }
    out.push_str(&s[last..]);
    out
}

fn accept(_: &str, part: Range<usize>) -> Option<Range<usize>> {
    Some(part)
}

/// "expires 12/27/2026" is a date, not a card expiry.
fn not_a_full_date(s: &str, part: Range<usize>) -> Option<Range<usize>> {
    let mut rest = s[part.end..].chars();
    match (rest.next(), rest.next()) {
        (Some('/' | '-'), Some(c)) if c.is_ascii_digit() => None,
        _ => Some(part),
    }
}

fn international_phone(s: &str, part: Range<usize>) -> Option<Range<usize>> {
    // "a+1234567890" or "1+2" is arithmetic or an identifier, not a phone number.
    if let Some(prev) = s[..part.start].chars().next_back() {
        if prev.is_alphanumeric() || prev == '+' {
            return None;
        }
    }
    let digits = s[part.clone()].bytes().filter(u8::is_ascii_digit).count();
    (8..=15).contains(&digits).then_some(part)
}

fn national_phone(s: &str, part: Range<usize>) -> Option<Range<usize>> {
    let digits = s[part.clone()].bytes().filter(u8::is_ascii_digit).count();
    (9..=12).contains(&digits).then_some(part)
}

/// IBAN lengths by country (ISO 13616 registry).
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BI", 27),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DJ", 27),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FK", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("LY", 25),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MN", 20),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NI", 28),
    ("NL", 18),
    ("NO", 15),
    ("OM", 23),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("RU", 33),
    ("SA", 24),
    ("SC", 31),
    ("SD", 18),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("SO", 23),
    ("ST", 25),
    ("SV", 28),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
    ("YE", 30),
];

/// Finds the IBAN at the start of a candidate: the registry length for known
/// countries (the regex may have run on into a following word), the whole
/// candidate otherwise; it must pass the ISO 7064 mod-97 check.
fn iban(s: &str, part: Range<usize>) -> Option<Range<usize>> {
    let text = &s[part.clone()];
    // (byte offset just past the char, char) for every non-space char.
    let chars: Vec<(usize, char)> = text
        .char_indices()
        .filter(|(_, c)| *c != ' ')
        .map(|(i, c)| (i + c.len_utf8(), c.to_ascii_uppercase()))
        .collect();
    let country: String = chars.iter().take(2).map(|(_, c)| *c).collect();
    let len = match IBAN_LENGTHS.iter().find(|(cc, _)| *cc == country) {
        Some(&(_, len)) => len,
        None if (15..=34).contains(&chars.len()) => chars.len(),
        None => return None,
    };
    if chars.len() < len {
        return None;
    }
    let body: Vec<char> = chars[..len].iter().map(|(_, c)| *c).collect();
    if !mod97(&body) {
        return None;
    }
    Some(part.start..part.start + chars[len - 1].0)
}

/// ISO 7064 mod 97-10 over an IBAN: the first four characters moved to the end,
/// letters as 10..=35, remainder 1.
fn mod97(iban: &[char]) -> bool {
    let mut rem: u32 = 0;
    for c in iban[4..].iter().chain(&iban[..4]) {
        let v = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        rem = if v < 10 {
            (rem * 10 + v) % 97
        } else {
            (rem * 100 + v) % 97
        };
    }
    rem == 1
}

/// Skips masks already in place at the start of a value: `password=[REDACTED:SECRET]`
/// is clean, `password=[REDACTED:SECRET]hunter2` is not.
fn skip_masks(s: &str, mut part: Range<usize>) -> Range<usize> {
    while s[part.clone()].starts_with("[REDACTED") {
        match s[part.clone()].find(']') {
            Some(end) => part.start += end + 1,
            None => break,
        }
    }
    part
}

/// Values that say a secret is absent or hidden rather than being one.
fn is_placeholder(v: &str) -> bool {
    const WORDS: &[&str] = &[
        "",
        "null",
        "none",
        "nil",
        "undefined",
        "true",
        "false",
        "redacted",
        "[redacted]",
        "<redacted>",
        "(redacted)",
        "hidden",
        "masked",
        "missing",
        "invalid",
        "expired",
        "required",
        "empty",
        "unset",
        "n/a",
        "na",
        "-",
    ];
    let lower = v.to_ascii_lowercase();
    WORDS.contains(&lower.as_str())
        || v.chars().all(|c| c == '*')
        || (v.len() >= 3 && v.chars().all(|c| c == 'x' || c == 'X'))
}

/// True for strings that look generated rather than written: long, or with a
/// digit or token punctuation.
fn looks_like_token(v: &str) -> bool {
    v.len() >= 20
        || (v.len() >= 8
            && v.chars().any(|c| {
                c.is_ascii_digit() || matches!(c, '-' | '.' | '_' | '~' | '+' | '/' | '=')
            }))
}

fn token_like(s: &str, part: Range<usize>) -> Option<Range<usize>> {
    looks_like_token(&s[part.clone()]).then_some(part)
}

fn masked_or_token_like(s: &str, part: Range<usize>) -> Option<Range<usize>> {
    let part = skip_masks(s, part);
    let v = &s[part.clone()];
    (!is_placeholder(v) && looks_like_token(v)).then_some(part)
}

fn secret_value(s: &str, part: Range<usize>) -> Option<Range<usize>> {
    let part = skip_masks(s, part);
    (!is_placeholder(&s[part.clone()])).then_some(part)
}

#[cfg(test)]
mod tests {
    use super::super::{redact, redact_all, violations};
    use super::*;
    use std::borrow::Cow;

    fn assert_redacts(kind: &str, s: &str, gone: &str) {
        let v = violations(s);
        assert!(v.contains(&kind), "{kind} not found in {s:?}: {v:?}");
        let r = redact_all(s);
        assert!(!r.contains(gone), "{gone:?} left in {r:?}");
        assert!(violations(&r).is_empty(), "{r:?}: {:?}", violations(&r));
    }

    fn assert_clean(s: &str) {
        assert_eq!(violations(s), Vec::<&str>::new(), "{s:?}");
        assert_eq!(redact_all(s), s);
    }

    #[test]
    fn cvv() {
        for (s, gone) in [
            ("cvv 123", "123"),
            ("CVC: 1234", "1234"),
            (r#"{"cvv":"987"}"#, "987"),
            ("cvv2=456 declined", "456"),
            ("security code is 321", "321"),
            ("card verification value 777", "777"),
        ] {
            assert_redacts("cvv", s, gone);
        }
        assert_eq!(redact_all("cvv 123"), "cvv [REDACTED:CVV]");
        for s in [
            "cvv check failed",
            "cvc_check: fail",
            "CVV2 mismatch (N)",
            "HTTP 503 from issuer",
            "cvv 12",
        ] {
            assert_clean(s);
        }
    }

    #[test]
    fn expiry() {
        for (s, gone) in [
            ("exp 12/27", "12/27"),
            ("expiry 12/2027", "12/2027"),
            ("Expiration date: 03-29", "03-29"),
            ("valid thru 1/28", "1/28"),
            ("exp 1227", "1227"),
            (r#"{"exp_month":12,"exp_year":2027}"#, "2027"),
        ] {
            assert_redacts("expiry", s, gone);
        }
        for s in [
            "token expired at 2026-03-02T00:20:41Z",
            "expires 12/27/2026",
            "exponential backoff 200ms",
            "expired card",
            "exp 13/27",
        ] {
            assert_clean(s);
        }
    }

    #[test]
    fn email() {
        for (s, gone) in [
            ("contact jane.doe+test@example.co.uk now", "jane.doe"),
            ("josé@exämple.com", "josé"),
            ("<ops@acme.io>", "ops@acme.io"),
        ] {
            assert_redacts("email", s, gone);
        }
        for s in [
            "git@github",
            "package@1.2.3",
            "user at example dot com",
            "@here deploy",
        ] {
            assert_clean(s);
        }
    }

    #[test]
    fn phone() {
        for (s, gone) in [
            ("call +1 415 555 2671", "555 2671"),
            ("+44 20 7946 0958", "7946 0958"),
            ("+44 (0)20 7946 0958", "7946 0958"),
            ("tel:+15551234567", "5551234567"),
            ("(415) 555-2671", "555-2671"),
            ("415-555-2671", "555-2671"),
            ("1-800-555-0199", "555-0199"),
            ("020 7946 0958", "7946 0958"),
            ("07700 900123", "900123"),
            ("01 23 45 67 89", "45 67 89"),
        ] {
            assert_redacts("phone", s, gone);
        }
        for s in [
            "2026-03-02T00:20:41+01:00",
            "2026-03-02 00:20:41.123",
            "at 00:20:41",
            "amount 1,234,567.89 EUR",
            "EUR 1 234 567",
            "bin 414720 and 41472012",
            "latency 1200 ms, 503 errors",
            "order 123456 shipped",
            "550e8400-e29b-41d4-a716-446655440000",
            "123e4567-e89b-12d3-a456-426614174000",
            "retry 1+1 times",
            "err_code=R01 do_not_honor",
            "HTTP 503",
            "ratio +12.5%",
            "02-03-2026",
            "10.0.0.12:8080",
            "v1.23.4567",
        ] {
            assert_clean(s);
        }
    }

    #[test]
    fn iban() {
        for (s, gone) in [
            ("iban DE89 3704 0044 0532 0130 00 EUR", "3704 0044"),
            ("GB82WEST12345698765432", "WEST1234"),
            ("to FR14 2004 1010 0505 0001 3M02 606", "2004 1010"),
            ("gb82 west 1234 5698 7654 32", "west 1234"),
        ] {
            assert_redacts("iban", s, gone);
        }
        assert_eq!(
            redact_all("DE89 3704 0044 0532 0130 00 EUR"),
            "[REDACTED:IBAN] EUR"
        );
        // Bad check digits: not an IBAN (its 20 digits hold a Luhn-valid
        // window, so the card scanner masks them anyway).
        assert!(!violations("DE88 3704 0044 0532 0130 00").contains(&"iban"));
        for s in [
            "AB12CDEFGHIJKLMNOP",
            "ORDER12345678901234",
            "de12f3a9b4c5d6e7f8091a2b3c4d5e6f",
        ] {
            assert_clean(s);
        }
    }

    #[test]
    fn tokens_and_keys() {
        let cases = [
            ("bearer_token", "Authorization: Bearer abc123def456ghi789", "abc123def456"),
            ("bearer_token", "sent bearer 9f8e7d6c5b4a", "9f8e7d6c5b4a"),
            ("bearer_token", "authorization=Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpw"),
            ("api_key", "key sk_live_4eC39HqLyjWDarjtT1zdp7dc", "4eC39HqL"),
            ("api_key", "sk_test_51H8abcdEFGH", "51H8abcd"),
            ("api_key", "rk_live_abcdefgh12345678", "abcdefgh1234"),
            ("api_key", "OPENAI sk-proj-abcdefghijklmnopqrstuvwxyz012345", "abcdefghijklmnop"),
            ("slack_token", "xoxb-1234567890-0987654321-AbCdEfGhIjKl", "1234567890"),
            ("slack_token", "xoxp-11111111-22222222-abcdef", "22222222"),
            ("slack_token", "https://hooks.slack.com/services/T000/B000/XXXXXXXX", "T000/B000"),
            ("aws_access_key", "id AKIAIOSFODNN7EXAMPLE", "IOSFODNN7"),
            (
                "jwt",
                "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                "eyJzdWIi",
            ),
            ("secret", "password=hunter2", "hunter2"),
            ("secret", r#"{"api_key": "abc def", "x": 1}"#, "abc def"),
            ("secret", "client_secret: s3cr3t!", "s3cr3t"),
            ("secret", "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG", "wJalrXUt"),
            ("secret", "X-Api-Key: 0123456789", "0123456789"),
            ("secret", "secret: opensesame", "opensesame"),
            ("secret", "?access_token=ya29.a0AfH6SMB&x=1", "ya29"),
            ("secret", "pin=1234", "1234"),
            ("secret", "password=[REDACTED:SECRET]hunter2", "hunter2"),
            (
                "private_key",
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
                "MIIEpAIBAAKCAQEA",
            ),
        ];
        for (kind, s, gone) in cases {
            assert_redacts(kind, s, gone);
        }
        assert_eq!(
            redact_all("password=hunter2 ok"),
            "password=[REDACTED:SECRET] ok"
        );
        for s in [
            "Bearer token missing",
            "bearer authentication failed",
            "authorization: declined by issuer",
            "Authorization failed",
            "token: expired",
            "token=invalid",
            "token_type=bearer",
            "session: closed",
            "api_key: missing",
            "password: ********",
            "password=[REDACTED:SECRET]",
            "Password reset failed",
            "do_not_honor",
            "insufficient_funds",
            "card_declined (05)",
            "sk_live_",
            "the task queue",
            "risk score 0.93",
            "eyJ alone",
        ] {
            assert_clean(s);
        }
    }

    #[test]
    fn realistic_log_lines_are_clean() {
        for s in [
            "issuer timeout after 1200ms (HTTP 503) at 2026-03-02T00:20:41.123Z",
            "decline do_not_honor bin=414720 region=us-west-2 provider=stripe",
            "trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span=00f067aa0ba902b7",
            "request 550e8400-e29b-41d4-a716-446655440000 took 35 ms",
            "amount=1999 currency=EUR merchant=m_8842 attempts=3",
            "webhook delivery failed: 502 Bad Gateway, retry 4/10 in 30s",
            "p99 latency 2.5s, error rate 4.0% (baseline 0.51%)",
            "settlement batch 20260302-01 completed: 15230 items",
        ] {
            assert_clean(s);
        }
    }

    #[test]
    fn everything_in_one_text() {
        let s = "card 4111 1111 1111 1111 cvv 123 exp 12/27 for jane@example.com \
                 +44 20 7946 0958 DE89 3704 0044 0532 0130 00 Bearer abc.def.ghi123 \
                 sk_live_4eC39HqLyjWDarjtT1zdp7dc password=hunter2";
        let v = violations(s);
        for kind in [
            "pan",
            "cvv",
            "expiry",
            "email",
            "phone",
            "iban",
            "bearer_token",
            "api_key",
            "secret",
        ] {
            assert!(v.contains(&kind), "{kind}: {v:?}");
        }
        let r = redact_all(s);
        assert!(violations(&r).is_empty(), "{r}");
        for gone in [
            "4111", "123 ", "12/27", "jane", "7946", "3704", "abc.def", "4eC39", "hunter2",
        ] {
            assert!(!r.contains(gone), "{gone} in {r}");
        }
    }

    #[test]
    fn nothing_to_mask_borrows() {
        assert!(matches!(redact_all("issuer timeout"), Cow::Borrowed(_)));
        assert!(matches!(redact("issuer timeout"), Cow::Borrowed(_)));
    }

    #[test]
    fn pattern_names_match_kinds() {
        assert_eq!(Kind::PrivateKey as usize + 1, PATTERNS.len());
        assert_eq!(Kind::Iban.name(), "iban");
    }
}
