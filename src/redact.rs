//! The card-data boundary.
//!
//! A card number (PAN) is 13 to 19 digits passing the Luhn check, written with or
//! without single spaces or dashes between digits. Every stage that lets text out
//! of the process (stdout, API, store, Slack, LLM, logs) uses this module, so the
//! rule lives in one place.

use std::borrow::Cow;

/// What a redacted card number is replaced with.
pub const PAN_MASK: &str = "[REDACTED:PAN]";

/// True when `s` contains a card number anywhere.
pub fn contains_card_number(s: &str) -> bool {
    !find_card_numbers(s).is_empty()
}

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

/// Byte spans of card numbers in `s`, in order, non-overlapping.
///
/// A run is a maximal sequence of digits where single separators (space or dash)
/// may sit between two digits. Within a run, every window of 13..=19 digits is
/// checked, longest first, so a PAN glued to other digits is still found.
fn find_card_numbers(s: &str) -> Vec<(usize, usize)> {
    let bytes = s.as_bytes();
    let mut spans = Vec::new();
    // Fast exit: fewer than 13 digits in the whole string.
    if bytes.iter().filter(|b| b.is_ascii_digit()).count() < 13 {
        return spans;
    }
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        // Collect the run: positions of its digits.
        let mut digits: Vec<usize> = vec![i];
        let mut j = i + 1;
        while j < bytes.len() {
            if bytes[j].is_ascii_digit() {
                digits.push(j);
                j += 1;
            } else if (bytes[j] == b' ' || bytes[j] == b'-')
                && j + 1 < bytes.len()
                && bytes[j + 1].is_ascii_digit()
            {
                j += 1;
            } else {
                break;
            }
        }
        scan_run(bytes, &digits, &mut spans);
        i = j;
    }
    spans
}

/// Checks one run. Candidates are contiguous sequences of separator-delimited
/// digit groups with 13..=19 digits in all, longest first, so "4111 1111 1111
/// 1111 12" finds the PAN but a 16-digit order number failing Luhn is left alone.
/// A single group longer than 19 digits is scanned window by window, since a PAN
/// glued to other digits is still a PAN.
fn scan_run(bytes: &[u8], digits: &[usize], spans: &mut Vec<(usize, usize)>) {
    let n = digits.len();
    if n < 13 {
        return;
    }
    let value = |k: usize| (bytes[digits[k]] - b'0') as u32;
    // Group boundaries: indexes into `digits` where a new group starts.
    let mut starts = vec![0];
    for k in 1..n {
        if digits[k] != digits[k - 1] + 1 {
            starts.push(k);
        }
    }
    starts.push(n);
    let groups = starts.len() - 1;
    let mut g = 0;
    while g < groups {
        let (gs, ge) = (starts[g], starts[g + 1]);
        if ge - gs > 19 {
            scan_windows(digits, gs, ge, &value, spans);
            g += 1;
            continue;
        }
        let mut found = None;
        for end in (g + 1..=groups).rev() {
            let len = starts[end] - gs;
            if (13..=19).contains(&len) && luhn((gs..starts[end]).map(&value)) {
                found = Some(end);
                break;
            }
        }
        match found {
            Some(end) => {
                spans.push((digits[gs], digits[starts[end] - 1] + 1));
                g = end;
            }
            None => g += 1,
        }
    }
}

fn scan_windows(
    digits: &[usize],
    from: usize,
    to: usize,
    value: &dyn Fn(usize) -> u32,
    spans: &mut Vec<(usize, usize)>,
) {
    let mut start = from;
    while start + 13 <= to {
        let len = (13..=19usize)
            .rev()
            .find(|&len| start + len <= to && luhn((start..start + len).map(value)));
        match len {
            Some(len) => {
                spans.push((digits[start], digits[start + len - 1] + 1));
                start += len;
            }
            None => start += 1,
        }
    }
}

/// The Luhn checksum over digits given most significant first.
pub fn luhn(digits: impl DoubleEndedIterator<Item = u32>) -> bool {
    let mut sum = 0;
    for (k, d) in digits.rev().enumerate() {
        let d = if k % 2 == 1 {
            let x = d * 2;
            if x > 9 {
                x - 9
            } else {
                x
            }
        } else {
            d
        };
        sum += d;
    }
    sum % 10 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_pans_with_and_without_separators() {
        for s in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "card=5500005555555559;",
            "x378282246310005y",
            "6011000990139424",
        ] {
            assert!(contains_card_number(s), "{s}");
            assert!(!redact(s).contains("1111 1111"), "{s}");
        }
    }

    #[test]
    fn leaves_other_numbers_alone() {
        for s in [
            "414720",
            "order 1234567890123 failed",
            "2026-03-02 00:20:41",
            "4111111111111112",
        ] {
            assert!(!contains_card_number(s), "{s}");
            assert_eq!(redact(s), s);
        }
    }

    #[test]
    fn redacts_in_place() {
        assert_eq!(
            redact("pan 4111111111111111 end"),
            format!("pan {PAN_MASK} end")
        );
    }
}
