//! Load tool: memory per active cell, and eviction of idle cells.
//!
//! `cargo run --release --example cells_rss -- CELLS [ROUNDS]`
//!
//! Feeds events over CELLS distinct (provider, region, bin) cells within one
//! window, reports peak RSS and bytes per cell, then keeps feeding ROUNDS more
//! rounds of *new* cells (the old ones go idle) and reports that the number of
//! cells and RSS stay bounded by the active set.

use faultline::engine::{Engine, EngineOptions};
use faultline::event::{Event, Outcome};
use faultline::rules::RuleSet;

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let cells: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let rounds: u64 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let rules = RuleSet::embedded();
    let mut engine = Engine::new(&rules, &EngineOptions::default());
    let mut out = Vec::new();
    let base = rss_kib("VmRSS:");
    let mut id = 0u64;
    let mut ts = 1_772_409_600_000i64;
    // Each round spreads its cells over 60 s of event time (inside the 2-minute
    // window), then time moves on 10 minutes so they go idle.
    for round in 0..=rounds {
        let start = ts;
        for c in 0..cells {
            id += 1;
            let n = round * cells + c;
            let ev = Event {
                id: format!("e{id}"),
                ts_ms: start + (c * 60_000 / cells) as i64,
                kind: "auth".into(),
                outcome: if c % 100 == 0 {
                    Outcome::Failure
                } else {
                    Outcome::Success
                },
                provider: format!("p{}", n % 8),
                region: format!("r{}", (n / 8) % 6),
                bin: Some(format!("{:08}", 40_000_000 + n / 48)),
                merchant_id: None,
                card_brand: None,
                error_code: None,
                latency_ms: None,
                message: None,
                attrs: Default::default(),
            };
            let _ = engine.ingest(&ev, &mut out);
            out.clear();
        }
        let active = engine.active_cells();
        println!(
            "round {round}: {active} active cells, RSS {} MiB, peak {} MiB",
            rss_kib("VmRSS:") / 1024,
            rss_kib("VmHWM:") / 1024
        );
        if round == 0 {
            let per_cell = (rss_kib("VmHWM:").saturating_sub(base)) * 1024 / active.max(1) as u64;
            println!("cells={cells}: {per_cell} bytes per active cell (peak RSS growth / cells, interner and dedupe included)");
        }
        ts = start + 10 * 60_000;
        engine.advance_to(ts, &mut out);
        out.clear();
    }
}
