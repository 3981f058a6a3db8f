//! Throughput of the hot paths: event parsing, the whole replay pipeline, and
//! one localization over a 48,000-leaf snapshot.
//!
//! `cargo bench --bench pipeline`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use faultline::detect::{Criteria, Direction};
use faultline::ingest::generator::{Generator, Scenario};
use faultline::localize::{localize, Leaf, Limits};
use faultline::rules::RuleSet;
use faultline::window::MAX_DIMS;

fn lines() -> Vec<String> {
    // 40 minutes at 100 events/s: past the warm-up, so rules evaluate and localize.
    let sc = Scenario::standard(3, 40 * 60_000, 100.0);
    Generator::new(&sc)
        .expect("scenario")
        .map(|l| l.text)
        .collect()
}

fn parse(c: &mut Criterion) {
    let lines = lines();
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.sample_size(10);
    g.bench_function("event::parse", |b| {
        b.iter(|| {
            lines
                .iter()
                .filter(|l| faultline::event::parse(l.as_bytes()).is_ok())
                .count()
        })
    });
    g.finish();
}

fn replay(c: &mut Criterion) {
    let lines = lines();
    let rules = RuleSet::embedded();
    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.sample_size(10);
    g.bench_function("replay_lines", |b| {
        b.iter(|| {
            faultline::pipeline::replay_lines(lines.iter(), &rules)
                .report
                .accepted
        })
    });
    g.finish();
}

fn localize_snapshot(c: &mut Criterion) {
    // 5 dimensions (10, 12, 10, 8, 5) = 48,000 leaves, one injected element.
    let sizes = [10u32, 12, 10, 8, 5];
    let mut leaves = Vec::new();
    let mut x: u64 = 1;
    for i in 0..sizes.iter().product::<u32>() {
        let mut key = [0u32; MAX_DIMS];
        let mut r = i;
        for (d, s) in sizes.iter().enumerate() {
            key[d] = r % s + 1;
            r /= s;
        }
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let predict = 20.0 + (x >> 40) as f64 / (1u64 << 24) as f64 * 80.0;
        let noisy = predict * (0.9 + ((x >> 20) & 0xff) as f64 / 255.0 * 0.2);
        let real = if key[0] == 3 && key[2] == 7 {
            noisy * 3.0
        } else {
            noisy
        };
        leaves.push(Leaf {
            key,
            real,
            predict,
            volume: predict,
        });
    }
    let criteria = Criteria {
        direction: Direction::Up,
        min_volume: 0.0,
        min_real: 0.0,
        ratio: 1.2,
        min_rate_delta: 0.0,
        alpha: 1e-3,
    };
    c.bench_function("localize/48k_leaves", |b| {
        b.iter_batched(
            || leaves.clone(),
            |l| localize(5, &l, &criteria, &Limits::default()).causes.len(),
            BatchSize::LargeInput,
        )
    });
}

criterion_group!(benches, parse, replay, localize_snapshot);
criterion_main!(benches);
