//! 10,000 hostile lines through the event parser: nothing panics, every
//! rejection is named, and no accepted event shows a card number.

mod common;

use std::collections::BTreeMap;
use std::panic;

use common::hostile::{hostile_lines, leaked_pan, squeeze};
use faultline::event::parse;
use faultline::redact;

const SEED: u64 = 0x00FA_0171_11E5;
const LINES: usize = 10_000;

#[test]
fn hostile_lines_never_panic_and_never_leak_a_card_number() {
    let (lines, pans) = hostile_lines(SEED, LINES);
    assert_eq!(lines.len(), LINES);
    assert!(pans.len() >= 32, "only {} card numbers used", pans.len());

    let mut accepted = 0;
    // Accepted events whose line held a card number: what the leak check tests.
    let mut accepted_with_pan = 0;
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for (n, line) in lines.iter().enumerate() {
        let result = panic::catch_unwind(|| parse(line))
            .unwrap_or_else(|_| panic!("line {n} panicked (seed {SEED:#x})"));
        match result {
            Ok(event) => {
                accepted += 1;
                if leaked_pan(&String::from_utf8_lossy(line), &pans).is_some() {
                    accepted_with_pan += 1;
                }
                let shown = format!("{event:?}");
                if let Some(pan) = leaked_pan(&shown, &pans) {
                    panic!("line {n} leaks {pan}: {shown}");
                }
                if let Some(message) = &event.message {
                    let v = redact::violations(message);
                    assert!(
                        v.is_empty(),
                        "line {n}: message still holds {v:?}: {message:?}"
                    );
                }
                if let Some(bin) = &event.bin {
                    assert!(
                        (6..=8).contains(&bin.len()) && bin.bytes().all(|b| b.is_ascii_digit()),
                        "line {n}: bin {bin:?}"
                    );
                }
            }
            Err(rejection) => {
                let reason = rejection.reason();
                assert!(!reason.is_empty(), "line {n}: empty reason");
                assert!(
                    reason
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                    "line {n}: reason {reason:?}"
                );
                // A rejection carries no payload to leak.
                let shown = format!("{rejection:?} {rejection}");
                assert!(leaked_pan(&shown, &pans).is_none(), "line {n}: {shown}");
                *reasons.entry(reason.into_owned()).or_default() += 1;
            }
        }
    }

    // The mix is what it is meant to be: many accepted events carrying card
    // numbers (or the leak check proves nothing), and every kind of rejection.
    // Since a dimension value holding 13+ digits rejects the event, the card
    // numbers that are accepted sit in `message`, `id` and `bin`.
    assert!(
        accepted >= 1_000 && accepted_with_pan >= 500,
        "only {accepted} accepted, {accepted_with_pan} with a card number; rejected: {reasons:?}"
    );
    for reason in [
        "invalid_json",
        "invalid_utf8",
        "not_an_object",
        "oversized",
        "card_number_in_bin",
        "invalid_id",
        "invalid_ts",
        "invalid_latency_ms",
        "invalid_attrs",
        "invalid_message",
        // A dimension value hiding a card number (any form) is refused.
        "invalid_provider",
        "invalid_merchant_id",
    ] {
        assert!(reasons.contains_key(reason), "no {reason}: {reasons:?}");
    }
}

#[test]
fn the_builder_is_deterministic_and_ndjson_safe() {
    let (a, pans_a) = hostile_lines(7, 2_000);
    let (b, pans_b) = hostile_lines(7, 2_000);
    assert_eq!(a, b);
    assert_eq!(pans_a, pans_b);
    assert_ne!(a, hostile_lines(8, 2_000).0);
    for line in &a {
        assert!(!line.contains(&b'\n') && !line.contains(&b'\r'));
    }
    for pan in &pans_a {
        let digits: Vec<u32> = pan.chars().filter_map(|c| c.to_digit(10)).collect();
        assert!((13..=19).contains(&digits.len()), "{pan}");
        assert!(redact::luhn(digits.into_iter()), "{pan}");
    }
}

#[test]
fn the_leak_check_sees_every_style() {
    let (_, pans) = hostile_lines(SEED, 200);
    for pan in &pans {
        for style in 0..common::hostile::STYLES {
            let text = format!("x {} y", common::hostile::styled(pan, style));
            // As Rust Debug, as JSON, and raw.
            for shown in [
                format!("{text:?}"),
                serde_json::to_string(&text).unwrap(),
                text.clone(),
            ] {
                assert_eq!(
                    leaked_pan(&shown, &pans),
                    Some(pan.as_str()),
                    "style {style}: {shown}"
                );
            }
            assert!(common::hostile::pan_forms(pan).contains(&common::hostile::styled(pan, style)));
        }
        // Redaction output is clean by the same check.
        let masked = redact::redact(&common::hostile::styled(pan, 1)).into_owned();
        assert!(leaked_pan(&masked, &pans).is_none(), "{masked}");
        assert!(!squeeze(&masked).contains(pan.as_str()));
    }
}

/// The same lines through the real binary: exit 0, every line counted, and
/// neither the incidents (stdout) nor the report and logs (stderr) show a card
/// number.
#[test]
fn hostile_file_through_replay_is_counted_and_never_leaks() {
    use std::io::Write;
    let (lines, pans) = hostile_lines(SEED ^ 1, LINES);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.ndjson");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for l in &lines {
        f.write_all(l).unwrap();
        f.write_all(b"\n").unwrap();
    }
    f.flush().unwrap();
    drop(f);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["replay", "--events"])
        .arg(&path)
        .env("FAULTLINE_LOG", "debug")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(leaked_pan(&stdout, &pans), None);
    assert_eq!(leaked_pan(&stderr, &pans), None);
    let report: serde_json::Value = serde_json::from_str(stderr.lines().last().unwrap()).unwrap();
    let rejected: u64 = report["rejected"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|v| v.as_u64())
        .sum();
    let read = report["events_read"].as_u64().unwrap();
    assert_eq!(report["accepted"].as_u64().unwrap() + rejected, read);
    assert!(read >= (LINES as u64) * 9 / 10, "{report}");
}
