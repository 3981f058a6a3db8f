//! Root-cause localization benchmark: synthetic RiskLoc/Squeeze-style cases, faultline
//! against two published baselines reimplemented here (never in the product).
//!
//! ```text
//! cargo run --release --example rca_bench -- [A|B|C|all] [--cases N] [--csv DIR] [--hard] [--gaussian] [--tail-false X]
//!     [--faultline-only] [--verbose]
//! cargo run --release --example rca_bench -- --rca FILE.csv   # the CLI path, timed
//! cargo run --release --example rca_bench -- C --cases 1 --csv DIR --long-names  # 1.3 GB file
//! ```
//!
//! Settings (fixed seeds, case `i` of setting `S` is seeded `hash(S, i)`):
//! - **A**: 5 dimensions (10,12,10,8,5) = 48,000 leaves; 1-3 causes, each at any layer 1-5.
//! - **B**: 4 dimensions (10,24,10,15) = 36,000 leaves; 1-5 causes, all full depth (single leaves).
//! - **C**: 6 dimensions (10,5,250,20,8,12) = 24,000,000 leaves; 1-3 causes at layers 1-6.
//!
//! Every case: `predict` per leaf is Weibull (scale 10, shape 1.2); a share z ~ U(0, 0.2)
//! of leaves outside the causes are zero (`real = predict = 0`); normal leaves get
//! `real = predict * (1 + U(-n, n))` with n ~ U(0, 0.25) per case. Each cause is a
//! random element (non-overlapping with the others) with a random direction: down
//! `real = predict * (1 - s) * (1 + U(-n, n))`, s ~ U(0.6, 0.95); up
//! `real = predict * (1 + s) * (1 + U(-n, n))`, s ~ U(1, 3). `--hard` draws severities
//! from U(0.3, 0.95) down and U(0.3, 3) up, so weak causes overlap the noise band.
//! `--gaussian` draws the noise from N(0, n / sqrt 3) (same variance, unbounded tails).
//!
//! Score: micro-averaged F1 over cases, a prediction counting only when it equals a true
//! element exactly; median time per case. `--csv DIR` also writes each case of the chosen
//! settings as `DIR/S-i.csv` plus `DIR/S-i.labels.json` for the `faultline rca` CLI path.

use std::collections::BTreeSet;
use std::io::Write;
use std::time::Instant;

use faultline::localize::cover::{localize_grid, CoverOptions, Grid};
use faultline::localize::rca::{localize_snapshot, read_snapshot};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Weibull};

/// An element: (dimension, value id) pairs, sorted by dimension.
type El = Vec<(usize, u32)>;

struct Setting {
    name: &'static str,
    sizes: Vec<u32>,
    layers: Vec<usize>,
    causes: (usize, usize),
    cases: usize,
}

fn settings() -> Vec<Setting> {
    vec![
        Setting {
            name: "A",
            sizes: vec![10, 12, 10, 8, 5],
            layers: vec![1, 2, 3, 4, 5],
            causes: (1, 3),
            cases: 100,
        },
        Setting {
            name: "B",
            sizes: vec![10, 24, 10, 15],
            layers: vec![4],
            causes: (1, 5),
            cases: 100,
        },
        Setting {
            name: "C",
            sizes: vec![10, 5, 250, 20, 8, 12],
            layers: vec![1, 2, 3, 4, 5, 6],
            causes: (1, 3),
            cases: 5,
        },
    ]
}

struct Case {
    grid: Grid,
    truth: BTreeSet<El>,
}

fn key_of(sizes: &[u32], mut i: usize) -> Vec<u32> {
    let mut key = vec![0u32; sizes.len()];
    for d in (0..sizes.len()).rev() {
        key[d] = (i % sizes[d] as usize) as u32;
        i /= sizes[d] as usize;
    }
    key
}

fn overlap(a: &El, b: &El) -> bool {
    a.iter()
        .all(|&(d, v)| b.iter().all(|&(e, w)| e != d || w == v))
}

/// Severity ranges (down: s in `down`, real = predict (1 - s); up: s in `up`, real =
/// predict (1 + s)). `--hard` widens them into the noise band.
#[derive(Clone, Copy)]
struct Severity {
    down: (f64, f64),
    up: (f64, f64),
}

const NORMAL_SEVERITY: Severity = Severity {
    down: (0.6, 0.95),
    up: (1.0, 3.0),
};
const HARD_SEVERITY: Severity = Severity {
    down: (0.3, 0.95),
    up: (0.3, 3.0),
};

fn generate(s: &Setting, case: usize, sev: Severity) -> Case {
    let seed = (s.name.as_bytes()[0] as u64) << 32 | case as u64;
    let mut rng = StdRng::seed_from_u64(seed);
    let dims = s.sizes.len();
    let noise: f64 = rng.gen_range(0.0..0.25);
    let gauss = gaussian();
    let zero: f64 = rng.gen_range(0.0..0.2);
    let k = rng.gen_range(s.causes.0..=s.causes.1);
    let mut causes: Vec<(El, f64)> = Vec::new();
    while causes.len() < k {
        let depth = s.layers[rng.gen_range(0..s.layers.len())];
        let mut ds: Vec<usize> = (0..dims).collect();
        for i in 0..depth {
            let j = rng.gen_range(i..dims);
            ds.swap(i, j);
        }
        let mut el: El = ds[..depth]
            .iter()
            .map(|&d| (d, rng.gen_range(0..s.sizes[d])))
            .collect();
        el.sort();
        if causes.iter().any(|(c, _)| overlap(c, &el)) {
            continue;
        }
        let factor = if rng.gen_bool(0.5) {
            1.0 - rng.gen_range(sev.down.0..sev.down.1)
        } else {
            1.0 + rng.gen_range(sev.up.0..sev.up.1)
        };
        causes.push((el, factor));
    }
    let weibull = Weibull::new(10.0, 1.2).expect("weibull");
    let mut grid = Grid::new(&s.sizes);
    let n = grid.real.len();
    let mut key = key_of(&s.sizes, 0);
    for i in 0..n {
        let hit = causes
            .iter()
            .find(|(c, _)| c.iter().all(|&(d, v)| key[d] == v));
        if hit.is_none() && rng.gen::<f64>() < zero {
            // real = predict = 0
        } else {
            let p: f64 = weibull.sample(&mut rng);
            let f = hit.map_or(1.0, |(_, f)| *f);
            let e: f64 = if noise <= 0.0 {
                0.0
            } else if gauss {
                // Same variance as U(-n, n); cut at -0.99 so `real` stays >= 0.
                let g: f64 = rand_distr::StandardNormal.sample(&mut rng);
                (g * noise / 3f64.sqrt()).max(-0.99)
            } else {
                rng.gen_range(-noise..noise)
            };
            grid.predict[i] = p;
            grid.real[i] = p * f * (1.0 + e);
        }
        // Next key, last dimension fastest (row-major, as Grid lays cells out).
        for d in (0..dims).rev() {
            key[d] += 1;
            if key[d] < s.sizes[d] {
                break;
            }
            key[d] = 0;
        }
    }
    Case {
        grid,
        truth: causes.into_iter().map(|(c, _)| c).collect(),
    }
}

fn write_csv(s: &Setting, c: &Case, path: &std::path::Path) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let names: Vec<String> = (0..s.sizes.len())
        .map(|d| ((b'a' + d as u8) as char).to_string())
        .collect();
    writeln!(w, "{},real,predict", names.join(","))?;
    let mut line = String::new();
    for i in 0..c.grid.real.len() {
        line.clear();
        for (d, v) in key_of(&s.sizes, i).iter().enumerate() {
            use std::fmt::Write as _;
            if long_names() {
                let _ = write!(line, "{}_v{:04},", names[d], v);
            } else {
                let _ = write!(line, "{}{},", names[d], v);
            }
        }
        use std::fmt::Write as _;
        let _ = write!(line, "{:.2},{:.2}", c.grid.real[i], c.grid.predict[i]);
        writeln!(w, "{line}")?;
    }
    w.flush()
}

/// `--gaussian`: normal leaves get Gaussian noise with the variance of U(-n, n)
/// (sigma = n / sqrt 3) instead: tails reach past any threshold, as real forecast
/// errors do.
fn gaussian() -> bool {
    std::env::args().any(|a| a == "--gaussian")
}

/// `--long-names`: values spelled `a_v0007` instead of `a7`, which brings a setting-C
/// file to the 1.3 GB the issue describes.
fn long_names() -> bool {
    std::env::args().any(|a| a == "--long-names")
}

fn csv_string(s: &Setting, c: &Case) -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("rca_bench_{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join("case.csv");
    write_csv(s, c, &p).expect("write csv");
    let bytes = std::fs::read(&p).expect("read csv");
    let _ = std::fs::remove_dir_all(&dir);
    bytes
}

// ---------------------------------------------------------------------------
// Baselines (published methods, reimplemented for this harness only).

/// Per-cuboid aggregates, dense over the cuboid's cells.
struct Cuboid {
    fixed: Vec<usize>,
    real: Vec<f64>,
    predict: Vec<f64>,
    /// Sum over leaves of (v - f)^2, v^2, v f, f^2: the ripple-effect distances.
    vf2: Vec<f64>,
    vv: Vec<f64>,
    vf: Vec<f64>,
    ff: Vec<f64>,
}

fn cuboid(grid: &Grid, mask: u32) -> Cuboid {
    let dims = grid.sizes.len();
    let fixed: Vec<usize> = (0..dims).filter(|d| mask & (1 << d) != 0).collect();
    let cells: usize = fixed.iter().map(|&d| grid.sizes[d] as usize).product();
    let mut c = Cuboid {
        fixed: fixed.clone(),
        real: vec![0.0; cells],
        predict: vec![0.0; cells],
        vf2: vec![0.0; cells],
        vv: vec![0.0; cells],
        vf: vec![0.0; cells],
        ff: vec![0.0; cells],
    };
    let mut key = vec![0u32; dims];
    for i in 0..grid.real.len() {
        let mut j = 0usize;
        for &d in &fixed {
            j = j * grid.sizes[d] as usize + key[d] as usize;
        }
        let (v, f) = (grid.real[i], grid.predict[i]);
        c.real[j] += v;
        c.predict[j] += f;
        c.vf2[j] += (v - f) * (v - f);
        c.vv[j] += v * v;
        c.vf[j] += v * f;
        c.ff[j] += f * f;
        for d in (0..dims).rev() {
            key[d] += 1;
            if key[d] < grid.sizes[d] {
                break;
            }
            key[d] = 0;
        }
    }
    c
}

fn element_of(grid: &Grid, fixed: &[usize], mut j: usize) -> El {
    let mut el: El = Vec::new();
    for &d in fixed.iter().rev() {
        el.push((d, (j % grid.sizes[d] as usize) as u32));
        j /= grid.sizes[d] as usize;
    }
    el.sort();
    el
}

/// Adtributor (Bhagwan et al., NSDI 2014): one-dimension explanations. Per dimension,
/// values by surprise (Jensen-Shannon term of predicted vs. observed shares), kept while
/// each explains over T_EEP = 0.1 of the change until T_EP = 0.67 is explained; the
/// dimension with the most surprise wins.
fn adtributor(grid: &Grid) -> BTreeSet<El> {
    let (t_eep, t_ep) = (0.1, 0.67);
    let total_r: f64 = grid.real.iter().sum();
    let total_p: f64 = grid.predict.iter().sum();
    let change = total_r - total_p;
    let mut best: (f64, BTreeSet<El>) = (f64::NEG_INFINITY, BTreeSet::new());
    for d in 0..grid.sizes.len() {
        let c = cuboid(grid, 1 << d);
        let mut vals: Vec<(f64, f64, usize)> = (0..c.real.len())
            .map(|j| {
                let p = c.predict[j] / total_p.max(1e-12);
                let q = c.real[j] / total_r.max(1e-12);
                let js = |x: f64, y: f64| {
                    if x > 0.0 {
                        x * (2.0 * x / (x + y)).ln()
                    } else {
                        0.0
                    }
                };
                let surprise = 0.5 * (js(p, q) + js(q, p));
                let ep =
                    (c.real[j] - c.predict[j]) / if change.abs() > 1e-12 { change } else { 1.0 };
                (surprise, ep, j)
            })
            .collect();
        vals.sort_by(|a, b| b.0.total_cmp(&a.0));
        let (mut ep_sum, mut s_sum) = (0.0, 0.0);
        let mut set = BTreeSet::new();
        for (s, ep, j) in vals {
            if ep > t_eep {
                set.insert(element_of(grid, &c.fixed, j));
                ep_sum += ep;
                s_sum += s;
                if ep_sum > t_ep {
                    break;
                }
            }
        }
        if !set.is_empty() && s_sum > best.0 {
            best = (s_sum, set);
        }
    }
    best.1
}

/// HotSpot (Sun et al., IEEE Access 2018) with the ripple-effect potential score
/// PS = max(0, 1 - d(v, a) / d(v, f)), where a spreads each chosen element's change
/// over its leaves in proportion to their forecasts. Searched layer by layer; within a
/// cuboid, sets are the top-k elements by |change| (k <= 5) instead of MCTS; the search
/// stops at the first layer whose best set reaches PS >= 0.9, else returns the best seen.
fn hotspot(grid: &Grid) -> BTreeSet<El> {
    let dims = grid.sizes.len();
    let d0: f64 = grid
        .real
        .iter()
        .zip(&grid.predict)
        .map(|(v, f)| (v - f) * (v - f))
        .sum();
    let mut best: (f64, BTreeSet<El>) = (f64::NEG_INFINITY, BTreeSet::new());
    for layer in 1..=dims {
        let mut layer_best: (f64, BTreeSet<El>) = (f64::NEG_INFINITY, BTreeSet::new());
        for mask in 1u32..(1 << dims) {
            if mask.count_ones() as usize != layer {
                continue;
            }
            let c = cuboid(grid, mask);
            let mut order: Vec<usize> = (0..c.real.len()).filter(|&j| c.predict[j] > 0.0).collect();
            order.sort_by(|&a, &b| {
                (c.real[b] - c.predict[b])
                    .abs()
                    .total_cmp(&(c.real[a] - c.predict[a]).abs())
            });
            let mut d2 = d0;
            for (k, &j) in order.iter().take(5).enumerate() {
                let rho = c.real[j] / c.predict[j];
                let ripple = c.vv[j] - 2.0 * rho * c.vf[j] + rho * rho * c.ff[j];
                d2 += ripple - c.vf2[j];
                let ps = (1.0 - d2.max(0.0).sqrt() / d0.sqrt().max(1e-12)).max(0.0);
                // A small price per element so that a longer set must earn its place.
                let score = ps - 0.01 * k as f64;
                if score > layer_best.0 {
                    let set = order[..=k]
                        .iter()
                        .map(|&j| element_of(grid, &c.fixed, j))
                        .collect();
                    layer_best = (score, set);
                }
            }
        }
        if layer_best.0 > best.0 {
            best = layer_best.clone();
        }
        if layer_best.0 >= 0.9 {
            return layer_best.1;
        }
    }
    best.1
}

/// `--tail-false X` overrides `CoverOptions::tail_false` (sensitivity runs) for the
/// in-memory search; the "CSV + localize" row keeps the defaults, as the CLI does.
fn options() -> CoverOptions {
    let args: Vec<String> = std::env::args().collect();
    let mut opts = CoverOptions::default();
    if let Some(v) = args
        .iter()
        .position(|a| a == "--tail-false")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
    {
        opts.tail_false = v;
    }
    opts
}

fn faultline_grid(grid: &Grid) -> BTreeSet<El> {
    localize_grid(grid, &options())
        .into_iter()
        .map(|e| {
            (0..grid.sizes.len())
                .filter(|d| e.mask & (1 << d) != 0)
                .map(|d| (d, e.key[d]))
                .collect()
        })
        .collect()
}

/// The CLI path: CSV bytes read, interned and localized as `faultline rca` does.
/// Value names are `<dim letter><id>`, so ids map back by parsing them.
fn faultline_csv(bytes: &[u8]) -> BTreeSet<El> {
    let snap = read_snapshot(bytes).expect("csv");
    localize_snapshot(&snap)
        .into_iter()
        .map(|e| {
            (0..snap.names.len())
                .filter(|d| e.mask & (1 << d) != 0)
                .map(|d| {
                    (
                        d,
                        snap.values[d][e.key[d] as usize]
                            .trim_start_matches(|c: char| !c.is_ascii_digit())
                            .parse()
                            .expect("id"),
                    )
                })
                .collect()
        })
        .collect()
}

#[derive(Default, Clone)]
struct Score {
    tp: usize,
    fp: usize,
    fns: usize,
    times: Vec<f64>,
}

impl Score {
    fn add(&mut self, pred: &BTreeSet<El>, truth: &BTreeSet<El>, secs: f64) {
        let tp = pred.intersection(truth).count();
        self.tp += tp;
        self.fp += pred.len() - tp;
        self.fns += truth.len() - tp;
        self.times.push(secs);
    }
    fn f1(&self) -> f64 {
        let p = self.tp as f64 / (self.tp + self.fp).max(1) as f64;
        let r = self.tp as f64 / (self.tp + self.fns).max(1) as f64;
        if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        }
    }
    fn median_ms(&self) -> f64 {
        let mut t = self.times.clone();
        t.sort_by(f64::total_cmp);
        if t.is_empty() {
            0.0
        } else {
            t[t.len() / 2] * 1e3
        }
    }
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed().as_secs_f64())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The setting is the one bare word that is not a flag's value.
    const VALUED: [&str; 4] = ["--cases", "--csv", "--rca", "--tail-false"];
    let which = args
        .iter()
        .enumerate()
        .find(|&(i, a)| !a.starts_with("--") && (i == 0 || !VALUED.contains(&args[i - 1].as_str())))
        .map(|(_, a)| a.clone());
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let cases_override: Option<usize> = flag("--cases").and_then(|v| v.parse().ok());
    let csv_dir = flag("--csv").map(std::path::PathBuf::from);
    let verbose = args.iter().any(|a| a == "--verbose");
    // `--faultline-only`: skip the baselines (HotSpot takes ~30 s per setting-C case).
    let faultline_only = args.iter().any(|a| a == "--faultline-only");
    let sev = if args.iter().any(|a| a == "--hard") {
        HARD_SEVERITY
    } else {
        NORMAL_SEVERITY
    };
    if let Some(file) = flag("--rca") {
        // The CLI path on one file, read and localize timed apart.
        let (snap, t_read) =
            timed(|| read_snapshot(std::fs::File::open(&file).expect("open")).expect("csv"));
        let (out, t_loc) = timed(|| localize_snapshot(&snap));
        eprintln!(
            "read {t_read:.2} s, localize {t_loc:.2} s, {} causes",
            out.len()
        );
        return;
    }
    println!("| setting | leaves | cases | method | F1 | precision | recall | median ms/case |");
    println!("|---|---|---|---|---|---|---|---|");
    for s in settings() {
        if let Some(w) = &which {
            if w != "all" && w != s.name {
                continue;
            }
        }
        let cases = cases_override.unwrap_or(s.cases);
        let big = s.sizes.iter().product::<u32>() > 1_000_000;
        let mut scores: Vec<(&str, Score)> = vec![
            ("faultline (localize)", Score::default()),
            ("faultline (CSV + localize)", Score::default()),
            ("Adtributor", Score::default()),
            ("HotSpot (greedy)", Score::default()),
        ];
        for i in 0..cases {
            let case = generate(&s, i, sev);
            if let Some(dir) = &csv_dir {
                std::fs::create_dir_all(dir).expect("csv dir");
                let p = dir.join(format!("{}-{i}.csv", s.name));
                write_csv(&s, &case, &p).expect("write csv");
                let labels: Vec<Vec<(String, String)>> = case
                    .truth
                    .iter()
                    .map(|el| {
                        el.iter()
                            .map(|&(d, v)| {
                                let n = ((b'a' + d as u8) as char).to_string();
                                let v = if long_names() {
                                    format!("{n}_v{v:04}")
                                } else {
                                    format!("{n}{v}")
                                };
                                (n, v)
                            })
                            .collect()
                    })
                    .collect();
                std::fs::write(
                    dir.join(format!("{}-{i}.labels.json", s.name)),
                    serde_json::to_string(&labels).expect("json"),
                )
                .expect("labels");
            }
            let (p, t) = timed(|| faultline_grid(&case.grid));
            if verbose {
                eprintln!("{} {i}: truth {:?} got {:?}", s.name, case.truth, p);
            }
            scores[0].1.add(&p, &case.truth, t);
            if !big {
                let bytes = csv_string(&s, &case);
                let (p, t) = timed(|| faultline_csv(&bytes));
                scores[1].1.add(&p, &case.truth, t);
            }
            if faultline_only {
                continue;
            }
            let (p, t) = timed(|| adtributor(&case.grid));
            scores[2].1.add(&p, &case.truth, t);
            let (p, t) = timed(|| hotspot(&case.grid));
            scores[3].1.add(&p, &case.truth, t);
        }
        for (name, sc) in &scores {
            if sc.times.is_empty() {
                continue;
            }
            let p = sc.tp as f64 / (sc.tp + sc.fp).max(1) as f64;
            let r = sc.tp as f64 / (sc.tp + sc.fns).max(1) as f64;
            println!(
                "| {} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.1} |",
                s.name,
                s.sizes.iter().product::<u32>(),
                cases,
                name,
                sc.f1(),
                p,
                r,
                sc.median_ms()
            );
        }
    }
}
