//! `faultline rca FILE.csv`: root-cause localization of one snapshot.
//!
//! Every column but `real` and `predict` is a dimension; each row is a leaf.
//! The file is streamed: values are interned per column and leaves kept as
//! columns of ids, so a 24-million-row, 1.3 GB snapshot fits in about 1.5 GB.
//! Snapshots of counts (`real` whole numbers, such as failures against attempts x
//! a past failure ratio) go to a Poisson search over the whole lattice
//! ([`localize_counts`]); other dense snapshots (the usual case: one row per
//! combination of a forecast measure) to the relative-deviation search in
//! [`super::cover`]; sparse ones to the daemon's deviance search, both directions.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context};
use rustc_hash::FxHashMap;
use serde::Serialize;

use super::cover::{grid_fits, localize_grid_all, CoverOptions, Grid, Localized};
use super::{localize, Element, Leaf, Limits, Mask};
use crate::detect::{llr_threshold, poisson_llr, Criteria, Direction};
use crate::window::{Key, MAX_DIMS, MAX_RULE_DIMS};

/// One element of the answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RcaCause {
    /// Dimension name to value.
    pub dims: BTreeMap<String, String>,
    /// Share of the deviation explained, 0..1.
    pub score: f64,
}

/// The answer printed by `faultline rca`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RcaOutput {
    /// The elements that explain the deviation, best first.
    pub root_causes: Vec<RcaCause>,
    /// Pieces of a cause (elements within one of `root_causes`) and weaker
    /// alternatives, best first; not part of the answer.
    pub candidates: Vec<RcaCause>,
}

/// A snapshot as read: per-column interned values and columns of ids.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Dimension names, in column order.
    pub names: Vec<String>,
    /// Per dimension, the value of each id (ids are dense from 0).
    pub values: Vec<Vec<String>>,
    /// Per dimension, the value id of each leaf.
    pub cols: Vec<Vec<u32>>,
    /// Observed value per leaf.
    pub real: Vec<f64>,
    /// Expected value per leaf.
    pub predict: Vec<f64>,
}

/// Per-column interning; the last value is cached because snapshots usually
/// arrive sorted, so most columns repeat the previous row.
#[derive(Default)]
struct Column {
    ids: FxHashMap<Box<[u8]>, u32>,
    values: Vec<String>,
    last: Vec<u8>,
    last_id: u32,
}

impl Column {
    fn intern(&mut self, v: &[u8]) -> u32 {
        if !self.values.is_empty() && v == self.last.as_slice() {
            return self.last_id;
        }
        let id = match self.ids.get(v) {
            Some(&id) => id,
            None => {
                let id = self.values.len() as u32;
                self.ids.insert(v.into(), id);
                self.values.push(String::from_utf8_lossy(v).into_owned());
                id
            }
        };
        self.last.clear();
        self.last.extend_from_slice(v);
        self.last_id = id;
        id
    }
}

/// Plain decimals (`-12.5`) parsed directly; anything else through `str::parse`.
fn parse_num(b: &[u8]) -> Option<f64> {
    let b = b.trim_ascii();
    let (neg, digits) = match b.first() {
        Some(b'-') => (true, &b[1..]),
        Some(b'+') => (false, &b[1..]),
        _ => (false, b),
    };
    let mut m: u64 = 0;
    let mut frac: i32 = -1;
    let mut n = 0;
    for &c in digits {
        match c {
            b'0'..=b'9' if n < 18 => {
                m = m * 10 + (c - b'0') as u64;
                n += 1;
                if frac >= 0 {
                    frac += 1;
                }
            }
            b'.' if frac < 0 => frac = 0,
            _ => {
                let v: f64 = std::str::from_utf8(b).ok()?.parse().ok()?;
                return v.is_finite().then_some(v);
            }
        }
    }
    if n == 0 {
        return None;
    }
    let v = m as f64 / 10f64.powi(frac.max(0));
    Some(if neg { -v } else { v })
}

/// Splits one CSV line into field ranges; a quoted line goes through the csv crate
/// and its unquoted fields into `scratch`. Returns the bytes the ranges index.
fn split<'a>(
    line: &'a [u8],
    scratch: &'a mut Vec<u8>,
    out: &mut Vec<std::ops::Range<usize>>,
) -> anyhow::Result<&'a [u8]> {
    out.clear();
    let mut start = 0;
    let mut quoted = false;
    for (i, &c) in line.iter().enumerate() {
        if c == b',' {
            out.push(start..i);
            start = i + 1;
        } else if c == b'"' {
            quoted = true;
            break;
        }
    }
    if !quoted {
        out.push(start..line.len());
        return Ok(line);
    }
    out.clear();
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(line);
    let mut rec = csv::ByteRecord::new();
    rdr.read_byte_record(&mut rec)?;
    scratch.clear();
    for f in rec.iter() {
        let s = scratch.len();
        scratch.extend_from_slice(f);
        out.push(s..scratch.len());
    }
    Ok(scratch)
}

/// One worker's share of the rows: its own interners, merged at the end.
#[derive(Default)]
struct Part {
    cols: Vec<Vec<u32>>,
    columns: Vec<Column>,
    real: Vec<f64>,
    predict: Vec<f64>,
}

struct Layout {
    real: usize,
    predict: usize,
    dims: Vec<usize>,
}

fn parse_block(block: &[u8], offset: u64, lay: &Layout, part: &mut Part) -> anyhow::Result<()> {
    let mut fields = Vec::new();
    let mut scratch = Vec::new();
    let mut pos = 0usize;
    for raw in block.split(|&c| c == b'\n') {
        let at = offset + pos as u64;
        pos += raw.len() + 1;
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.is_empty() {
            continue;
        }
        let src = split(line, &mut scratch, &mut fields)
            .with_context(|| format!("the line at byte {at}"))?;
        let num = |i: usize| -> anyhow::Result<f64> {
            let f = fields.get(i).map(|f| &src[f.clone()]).unwrap_or_default();
            parse_num(f)
                .with_context(|| format!("the line at byte {at}: column {} is not a number", i + 1))
        };
        part.real.push(num(lay.real)?);
        part.predict.push(num(lay.predict)?);
        for (d, &c) in lay.dims.iter().enumerate() {
            let f = fields.get(c).map(|f| &src[f.clone()]).unwrap_or_default();
            part.cols[d].push(part.columns[d].intern(f.trim_ascii()));
        }
    }
    Ok(())
}

/// Reads a snapshot from CSV, streaming: the calling thread reads blocks of whole
/// lines and the available cores parse them, each into its own columns and
/// interners; parts are merged by remapping value ids. Row order is irrelevant to
/// localization (the measures are additive), so parts are simply appended.
pub fn read_snapshot<R: Read>(mut reader: R) -> anyhow::Result<Snapshot> {
    const BLOCK: usize = 4 << 20;
    let mut buf: Vec<u8> = Vec::with_capacity(2 * BLOCK);
    let mut chunk = vec![0u8; BLOCK];
    // The header line.
    let header_end = loop {
        if let Some(nl) = buf.iter().position(|&c| c == b'\n') {
            break nl;
        }
        let n = reader.read(&mut chunk).context("reading the CSV")?;
        if n == 0 {
            if buf.is_empty() {
                bail!("the CSV is empty");
            }
            break buf.len();
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let mut fields = Vec::new();
    let mut scratch = Vec::new();
    let head = buf[..header_end]
        .strip_suffix(b"\r")
        .unwrap_or(&buf[..header_end]);
    let src = split(head, &mut scratch, &mut fields).context("the header")?;
    let names: Vec<String> = fields
        .iter()
        .map(|f| String::from_utf8_lossy(&src[f.clone()]).trim().to_string())
        .collect();
    let r = names.iter().position(|h| h == "real");
    let p = names.iter().position(|h| h == "predict");
    let (Some(r), Some(p)) = (r, p) else {
        bail!("the header needs `real` and `predict` columns");
    };
    let dims: Vec<usize> = (0..names.len()).filter(|&i| i != r && i != p).collect();
    if dims.is_empty() || dims.len() > MAX_READ_DIMS {
        bail!(
            "between 1 and {MAX_RULE_DIMS} dimension columns are supported, found {}",
            dims.len()
        );
    }
    let lay = Layout {
        real: r,
        predict: p,
        dims,
    };
    let ndims = lay.dims.len();
    let mut offset = (header_end + 1) as u64;
    buf.drain(..(header_end + 1).min(buf.len()));

    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>)>(workers * 2);
    let rx = std::sync::Mutex::new(rx);
    // Parsed blocks come back to be filled again: a fresh 4 MiB block per read
    // would be fresh pages the kernel must zero, the size of the file in all (a
    // quarter of the time on a 1.2 GB snapshot).
    let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let parts: Vec<anyhow::Result<Part>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (rx, lay, back_tx) = (&rx, &lay, back_tx.clone());
                s.spawn(move || -> anyhow::Result<Part> {
                    let mut part = Part {
                        cols: vec![Vec::new(); ndims],
                        columns: (0..ndims).map(|_| Column::default()).collect(),
                        ..Part::default()
                    };
                    loop {
                        // The lock is held only to take the next block.
                        let next = rx
                            .lock()
                            .map_err(|_| anyhow::anyhow!("reader failed"))?
                            .recv();
                        let Ok((at, block)) = next else { break };
                        parse_block(&block, at, lay, &mut part)?;
                        // The reader may be done and gone: then the block is dropped.
                        let _ = back_tx.send(block);
                    }
                    Ok(part)
                })
            })
            .collect();
        let read = (|| -> anyhow::Result<()> {
            loop {
                let n = reader.read(&mut chunk).context("reading the CSV")?;
                if n > 0 {
                    buf.extend_from_slice(&chunk[..n]);
                }
                let cut = if n == 0 {
                    buf.len()
                } else if buf.len() >= BLOCK {
                    match buf.iter().rposition(|&c| c == b'\n') {
                        Some(nl) => nl + 1,
                        None => continue,
                    }
                } else {
                    continue;
                };
                if cut > 0 {
                    let mut rest = back_rx
                        .try_recv()
                        .unwrap_or_else(|_| Vec::with_capacity(2 * BLOCK));
                    rest.clear();
                    rest.extend_from_slice(&buf[cut..]);
                    buf.truncate(cut);
                    let block = std::mem::replace(&mut buf, rest);
                    let len = block.len() as u64;
                    if tx.send((offset, block)).is_err() {
                        // A worker failed; its error is reported below.
                        return Ok(());
                    }
                    offset += len;
                }
                if n == 0 {
                    return Ok(());
                }
            }
        })();
        drop(tx);
        let mut parts: Vec<anyhow::Result<Part>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a parser panicked")))
            })
            .collect();
        if let Err(e) = read {
            parts.push(Err(e));
        }
        parts
    });
    // Merge: the first part is taken as it is (its ids stay), the others are
    // remapped onto it. Moving the first part's columns, not copying them, keeps the
    // pages the process must touch (a 24-million-row snapshot is about 1 GB of
    // columns) close to one copy.
    let mut snap = Snapshot {
        names: lay.dims.iter().map(|&i| names[i].clone()).collect(),
        cols: vec![Vec::new(); ndims],
        ..Snapshot::default()
    };
    let mut global: Vec<Column> = (0..ndims).map(|_| Column::default()).collect();
    for (k, part) in parts.into_iter().enumerate() {
        let part = part?;
        if k == 0 {
            snap.cols = part.cols;
            snap.real = part.real;
            snap.predict = part.predict;
            global = part.columns;
            continue;
        }
        for ((g, col), (pcol, pids)) in global
            .iter_mut()
            .zip(&mut snap.cols)
            .zip(part.columns.iter().zip(&part.cols))
        {
            let map: Vec<u32> = pcol.values.iter().map(|v| g.intern(v.as_bytes())).collect();
            col.extend(pids.iter().map(|&id| map[id as usize]));
        }
        snap.real.extend_from_slice(&part.real);
        snap.predict.extend_from_slice(&part.predict);
    }
    snap.values = global.into_iter().map(|c| c.values).collect();
    drop_constant_dims(&mut snap)?;
    Ok(snap)
}

/// Columns read at most: more than `MAX_RULE_DIMS` dimensions are fine as long as the
/// extra ones hold a single value (see `drop_constant_dims`).
const MAX_READ_DIMS: usize = 64;

/// With more dimensions than the search takes, drops those that hold one value only:
/// they split nothing (an element fixing one has the same leaves as its parent).
fn drop_constant_dims(snap: &mut Snapshot) -> anyhow::Result<()> {
    if snap.names.len() <= MAX_RULE_DIMS {
        return Ok(());
    }
    let mut keep: Vec<bool> = snap.values.iter().map(|v| v.len() > 1).collect();
    let kept = keep.iter().filter(|&&k| k).count();
    if kept > MAX_RULE_DIMS {
        bail!(
            "between 1 and {MAX_RULE_DIMS} dimension columns are supported, found {} \
             ({kept} of them with more than one value)",
            snap.names.len()
        );
    }
    if kept == 0 {
        // Nothing varies: one column keeps the snapshot a grid.
        keep[0] = true;
    }
    let mut k = keep.iter();
    snap.names.retain(|_| *k.next().unwrap_or(&false));
    let mut k = keep.iter();
    snap.values.retain(|_| *k.next().unwrap_or(&false));
    let mut k = keep.iter();
    snap.cols.retain(|_| *k.next().unwrap_or(&false));
    Ok(())
}

/// Localizes a snapshot; elements carry value ids.
pub fn localize_snapshot(snap: &Snapshot) -> Vec<Element> {
    localize_snapshot_all(snap).causes
}

/// Localizes a snapshot: causes and candidates, value ids in the keys.
pub fn localize_snapshot_all(snap: &Snapshot) -> Localized {
    let sizes: Vec<u32> = snap.values.iter().map(|v| v.len() as u32).collect();
    if is_counts(snap) && counts_fit(snap) {
        return localize_counts(snap, &CountOptions::default());
    }
    if grid_fits(&sizes, snap.real.len()) {
        return localize_grid_all(&grid_of(snap, &sizes), &CoverOptions::default());
    }
    let leaves: Vec<Leaf> = (0..snap.real.len())
        .map(|i| {
            let mut key = [0u32; MAX_DIMS];
            for (d, col) in snap.cols.iter().enumerate() {
                key[d] = col[i];
            }
            Leaf {
                key,
                real: snap.real[i],
                predict: snap.predict[i],
                volume: snap.predict[i].abs(),
            }
        })
        .collect();
    Localized {
        causes: localize_both(snap.names.len(), &leaves),
        candidates: Vec::new(),
    }
}

/// The cell of leaf `i` in a grid over `sizes` (row-major: last dimension fastest).
fn cell_of(snap: &Snapshot, sizes: &[u32], i: usize) -> usize {
    snap.cols
        .iter()
        .zip(sizes)
        .fold(0, |c, (col, &size)| c * size as usize + col[i] as usize)
}

/// The leaves in a dense grid (duplicates add up: the measures are additive).
fn grid_of(snap: &Snapshot, sizes: &[u32]) -> Grid {
    let mut grid = Grid::new(sizes);
    for i in 0..snap.real.len() {
        let c = cell_of(snap, sizes, i);
        grid.real[c] += snap.real[i];
        grid.predict[c] += snap.predict[i];
    }
    grid
}

/// Tuning of the Poisson search on count snapshots ([`localize_counts`]).
#[derive(Debug, Clone, Copy)]
pub struct CountOptions {
    /// False-alarm probability shared by every element of the lattice, both
    /// directions (Bonferroni).
    pub alpha: f64,
    /// Most causes reported.
    pub max_causes: usize,
    /// A parent replaces the chosen element when the rest of it deviates the same
    /// way by at least this ratio (and significantly): it fails alike.
    pub lift: f64,
    /// A further cause must deviate by at least this share of the causes found
    /// before it; weaker ones are candidates.
    pub min_share: f64,
    /// A child replaces the chosen element when the rest of it holds at most this
    /// share of its counts (real + predict): the rest is empty.
    pub empty: f64,
    /// Smallest expected count: a leaf without history (predict 0) is not
    /// infinitely surprising.
    pub min_expected: f64,
}

impl Default for CountOptions {
    fn default() -> Self {
        CountOptions {
            alpha: 1e-3,
            max_causes: 3,
            lift: 1.5,
            min_share: 0.3,
            empty: 0.005,
            min_expected: 1e-9,
        }
    }
}

/// Leaves times cuboids the count search enumerates at most (its lattice holds
/// every element, each with its list of leaves).
const COUNT_LATTICE_MAX: usize = 20_000_000;

/// Whether `real` holds counts: whole, non-negative numbers, not all zero, with
/// non-negative forecasts. Counts have Poisson noise (variance = mean), not the
/// proportional noise of a forecast measure the relative search assumes.
pub fn is_counts(snap: &Snapshot) -> bool {
    snap.real.iter().any(|&r| r > 0.0)
        && snap
            .real
            .iter()
            .all(|&r| r >= 0.0 && r.is_finite() && r.fract() == 0.0)
        && snap.predict.iter().all(|&p| p >= 0.0 && p.is_finite())
}

/// Whether the count search's lattice stays within [`COUNT_LATTICE_MAX`].
fn counts_fit(snap: &Snapshot) -> bool {
    let dims = snap.names.len();
    (1..=MAX_RULE_DIMS).contains(&dims)
        && snap.real.len().saturating_mul((1usize << dims) - 1) <= COUNT_LATTICE_MAX
}

/// One element of the count lattice.
struct CountEl {
    mask: Mask,
    key: Key,
    leaves: Vec<u32>,
}

/// Every element with at least one leaf, and an index by (mask, key).
struct Lattice {
    els: Vec<CountEl>,
    index: FxHashMap<(Mask, Key), usize>,
}

impl Lattice {
    fn build(snap: &Snapshot) -> Lattice {
        let dims = snap.names.len();
        let mut els: Vec<CountEl> = Vec::new();
        let mut index: FxHashMap<(Mask, Key), usize> = FxHashMap::default();
        for mask in 1..(1 as Mask) << dims {
            for i in 0..snap.real.len() {
                let mut key = [0u32; MAX_DIMS];
                for (d, col) in snap.cols.iter().enumerate() {
                    if mask & (1 << d) != 0 {
                        key[d] = col[i];
                    }
                }
                let at = *index.entry((mask, key)).or_insert_with(|| {
                    els.push(CountEl {
                        mask,
                        key,
                        leaves: Vec::new(),
                    });
                    els.len() - 1
                });
                els[at].leaves.push(i as u32);
            }
        }
        Lattice { els, index }
    }
}

/// Poisson deviance of `real` against `predict` (floored), signed by direction:
/// positive up, negative down.
fn signed_deviance(real: f64, predict: f64, floor: f64) -> f64 {
    let g = poisson_llr(real, predict.max(floor));
    if real >= predict {
        g
    } else {
        -g
    }
}

/// Localizes a snapshot of counts: a greedy Poisson search over every element.
///
/// 1. **Pick** the element with the largest deviance (either direction) on the
///    leaves no cause explains yet, if it passes the Bonferroni threshold for
///    every element of the lattice in both directions.
/// 2. **Generalize**: while a parent's other leaves deviate the same way,
///    significantly and by at least `lift`, the parent is the cause (its children
///    fail alike; the sharpest child is only where the counts are largest).
/// 3. **Specialize**: while one child holds all but `empty` of the element's
///    counts, the child is the cause (the rest of the element is empty: the cause
///    is named where the traffic is).
/// 4. **Stop** after `max_causes`, or when the next cause deviates by less than
///    `min_share` of the causes before it; it and the elements replaced in steps
///    2-3 are candidates.
pub fn localize_counts(snap: &Snapshot, opts: &CountOptions) -> Localized {
    let lat = Lattice::build(snap);
    let n = snap.real.len();
    let floor = opts.min_expected;
    let thr = llr_threshold(opts.alpha, 2 * lat.els.len());
    let mut explained = vec![false; n];
    let totals = |e: usize, explained: &[bool]| -> (f64, f64) {
        lat.els[e]
            .leaves
            .iter()
            .filter(|&&i| !explained[i as usize])
            .fold((0.0, 0.0), |(r, p), &i| {
                (r + snap.real[i as usize], p + snap.predict[i as usize])
            })
    };
    let mut causes: Vec<Element> = Vec::new();
    let mut candidates: Vec<Element> = Vec::new();
    let mut chosen_dev = 0.0;
    let el = |e: usize, (r, p): (f64, f64)| Element {
        implied: 0,
        mask: lat.els[e].mask,
        key: lat.els[e].key,
        real: r,
        predict: p,
        volume: p,
        llr: signed_deviance(r, p, floor).abs(),
        score: 0.0,
    };
    while causes.len() < opts.max_causes {
        // 1. Pick.
        let mut best: Option<(f64, usize)> = None;
        for e in 0..lat.els.len() {
            let (r, p) = totals(e, &explained);
            let g = signed_deviance(r, p, floor).abs();
            if g > thr && best.is_none_or(|(bg, _)| g > bg) {
                best = Some((g, e));
            }
        }
        let Some((_, picked)) = best else { break };
        let mut cur = picked;
        let (r0, p0) = totals(cur, &explained);
        let up = r0 >= p0;
        // Whether leaves totalling (r, p) fail alike: significantly, the same way,
        // by at least `lift`.
        let alike = |r: f64, p: f64| {
            let g = signed_deviance(r, p, floor);
            if up {
                g > thr && r >= opts.lift * p.max(floor)
            } else {
                -g > thr && r * opts.lift <= p
            }
        };
        // 2. Generalize.
        loop {
            let (r, p) = totals(cur, &explained);
            let mut parent: Option<(f64, usize)> = None;
            let mask = lat.els[cur].mask;
            if mask.count_ones() <= 1 {
                break;
            }
            for d in 0..snap.names.len() {
                if mask & (1 << d) == 0 {
                    continue;
                }
                let mut key = lat.els[cur].key;
                key[d] = 0;
                let Some(&pe) = lat.index.get(&(mask & !(1 << d), key)) else {
                    continue;
                };
                let (pr, pp) = totals(pe, &explained);
                let (rr, rp) = (pr - r, pp - p);
                let g = signed_deviance(rr, rp, floor);
                if alike(rr, rp) && parent.is_none_or(|(bg, _)| g.abs() > bg) {
                    parent = Some((g.abs(), pe));
                }
            }
            match parent {
                Some((_, pe)) => cur = pe,
                None => break,
            }
        }
        // 3. Specialize.
        'down: loop {
            let (r, p) = totals(cur, &explained);
            let mask = lat.els[cur].mask;
            for d in 0..snap.names.len() {
                if mask & (1 << d) != 0 {
                    continue;
                }
                let mut by_value: FxHashMap<u32, (f64, f64)> = FxHashMap::default();
                for &i in &lat.els[cur].leaves {
                    let i = i as usize;
                    if !explained[i] {
                        let s = by_value.entry(snap.cols[d][i]).or_default();
                        s.0 += snap.real[i];
                        s.1 += snap.predict[i];
                    }
                }
                if by_value.len() < 2 {
                    continue;
                }
                // The child that holds all but `empty` of the counts, if one does.
                let held = |&(cr, cp): &(f64, f64)| (r + p) - (cr + cp) <= opts.empty * (r + p);
                let Some((&v, _)) = by_value
                    .iter()
                    .filter(|(_, s)| held(s))
                    .min_by_key(|(&v, _)| v)
                else {
                    continue;
                };
                let mut key = lat.els[cur].key;
                key[d] = v;
                if let Some(&ce) = lat.index.get(&(mask | (1 << d), key)) {
                    cur = ce;
                    continue 'down;
                }
            }
            break;
        }
        let (r, p) = totals(cur, &explained);
        if cur != picked {
            candidates.push(el(picked, (r0, p0)));
        }
        let e = el(cur, (r, p));
        if !causes.is_empty() && (r - p).abs() < opts.min_share * chosen_dev {
            candidates.push(e);
            break;
        }
        chosen_dev += (r - p).abs();
        for &i in &lat.els[cur].leaves {
            explained[i as usize] = true;
        }
        causes.push(e);
    }
    let score = |v: &mut Vec<Element>| {
        for e in v.iter_mut() {
            e.score = if chosen_dev > 0.0 {
                (e.real - e.predict).abs() / chosen_dev
            } else {
                0.0
            };
        }
    };
    score(&mut causes);
    score(&mut candidates);
    causes.sort_by(|a, b| b.score.total_cmp(&a.score));
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    Localized { causes, candidates }
}

/// Reads a CSV and localizes.
pub fn run_file(path: &Path) -> anyhow::Result<String> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let out = run_reader(file)?;
    Ok(serde_json::to_string(&out)?)
}

/// Localizes the snapshot in a CSV reader.
pub fn run_reader<R: Read>(reader: R) -> anyhow::Result<RcaOutput> {
    let snap = read_snapshot(reader)?;
    let found = localize_snapshot_all(&snap);
    let named = |e: Element| RcaCause {
        dims: (0..snap.names.len())
            .filter(|d| e.mask & (1 << d) != 0)
            .map(|d| {
                let v = snap.values[d].get(e.key[d] as usize);
                (snap.names[d].clone(), v.cloned().unwrap_or_default())
            })
            .collect(),
        score: (e.score * 1000.0).round() / 1000.0,
    };
    Ok(RcaOutput {
        root_causes: found.causes.into_iter().map(named).collect(),
        candidates: found.candidates.into_iter().map(named).collect(),
    })
}

/// The daemon's deviance search in both directions, merged by evidence (sparse snapshots).
pub fn localize_both(dims: usize, leaves: &[Leaf]) -> Vec<Element> {
    let up = Criteria {
        direction: Direction::Up,
        min_volume: 0.0,
        min_real: 0.0,
        ratio: 1.2,
        min_rate_delta: 0.0,
        alpha: 1e-3,
    };
    let down = Criteria {
        direction: Direction::Down,
        ratio: 0.8,
        ..up
    };
    let limits = Limits::default();
    let mut all = localize(dims, leaves, &up, &limits).causes;
    all.extend(localize(dims, leaves, &down, &limits).causes);
    all.sort_by(|a, b| b.llr.total_cmp(&a.llr));
    all.truncate(limits.max_causes);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_injected_element_in_a_csv() {
        let mut csv = String::from("a,b,real,predict\n");
        for a in 1..=5 {
            for b in 1..=4 {
                let predict = 100.0;
                let real = if a == 2 && b == 3 { 400.0 } else { 100.0 };
                csv.push_str(&format!("a{a},b{b},{real},{predict}\n"));
            }
        }
        let out = run_reader(csv.as_bytes()).unwrap();
        assert_eq!(out.root_causes.len(), 1, "{out:?}");
        let want: BTreeMap<String, String> = [
            ("a".to_string(), "a2".to_string()),
            ("b".to_string(), "b3".to_string()),
        ]
        .into();
        assert_eq!(out.root_causes[0].dims, want);
    }

    #[test]
    fn quoted_fields_and_crlf_are_read() {
        let csv = "a,real,predict\r\n\"x,1\",1.5,2\r\ny,3e1,-4\r\n";
        let snap = read_snapshot(csv.as_bytes()).unwrap();
        assert_eq!(snap.values[0], vec!["x,1".to_string(), "y".to_string()]);
        assert_eq!(snap.real, vec![1.5, 30.0]);
        assert_eq!(snap.predict, vec![2.0, -4.0]);
    }

    #[test]
    fn numbers_parse_like_std() {
        for s in [
            "0",
            "12.25",
            "-3.5",
            "+7",
            "1e3",
            " 4.0 ",
            "123456789.123456",
        ] {
            assert_eq!(parse_num(s.as_bytes()), s.trim().parse::<f64>().ok(), "{s}");
        }
        assert_eq!(parse_num(b"abc"), None);
        assert_eq!(parse_num(b""), None);
    }

    /// A count snapshot over a (4) x b (3) x c (2), every leaf expecting 10 and
    /// seeing 10 except where `real` says otherwise.
    fn counts_csv(real: impl Fn(u32, u32, u32) -> (u32, f64)) -> String {
        let mut csv = String::from("a,b,c,real,predict\n");
        for a in 0..4 {
            for b in 0..3 {
                for c in 0..2 {
                    let (r, p) = real(a, b, c);
                    csv.push_str(&format!("a{a},b{b},c{c},{r},{p}\n"));
                }
            }
        }
        csv
    }

    fn dims_of(c: &RcaCause) -> Vec<String> {
        c.dims.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    #[test]
    fn counts_are_whole_numbers() {
        let snap = read_snapshot(counts_csv(|_, _, _| (10, 10.0)).as_bytes()).unwrap();
        assert!(is_counts(&snap));
        let snap = read_snapshot("a,real,predict\nx,1.5,1\ny,2,1\n".as_bytes()).unwrap();
        assert!(!is_counts(&snap));
        let snap = read_snapshot("a,real,predict\nx,0,1\ny,0,1\n".as_bytes()).unwrap();
        assert!(!is_counts(&snap), "all zero is no count data");
    }

    #[test]
    fn counts_name_the_parent_when_its_children_fail_alike() {
        // a = 1 fails on every leaf, ten-fold at b = 0 and two-fold elsewhere:
        // a1 & b0 has the most deviance, but the rest of a1 fails too.
        let csv = counts_csv(|a, b, _| match (a, b) {
            (1, 0) => (100, 10.0),
            (1, _) => (20, 10.0),
            _ => (10, 10.0),
        });
        let out = run_reader(csv.as_bytes()).unwrap();
        let causes: Vec<_> = out.root_causes.iter().map(dims_of).collect();
        assert_eq!(causes, vec![vec!["a=a1".to_string()]], "{out:?}");
        let cands: Vec<_> = out.candidates.iter().map(dims_of).collect();
        assert!(
            cands.contains(&vec!["a=a1".into(), "b=b0".into()]),
            "{out:?}"
        );
    }

    #[test]
    fn counts_name_the_child_that_holds_all_the_counts() {
        // a = 2 has traffic only at b = 1, and that fails: a2 and a2 & b1 hold
        // the same counts, and the cause is named where the traffic is.
        let csv = counts_csv(|a, b, _| match (a, b) {
            (2, 1) => (50, 10.0),
            (2, _) => (0, 0.0),
            _ => (10, 10.0),
        });
        let out = run_reader(csv.as_bytes()).unwrap();
        let causes: Vec<_> = out.root_causes.iter().map(dims_of).collect();
        assert_eq!(
            causes,
            vec![vec!["a=a2".to_string(), "b=b1".to_string()]],
            "{out:?}"
        );
    }

    #[test]
    fn constant_columns_beyond_the_dimension_limit_are_dropped() {
        let mut csv = String::from("a,b,k1,k2,k3,k4,k5,real,predict\n");
        for a in 1..=4 {
            for b in 1..=3 {
                let real = if a == 2 { 300.0 } else { 100.0 };
                csv.push_str(&format!("a{a},b{b},x,y,z,w,v,{real},100\n"));
            }
        }
        let out = run_reader(csv.as_bytes()).unwrap();
        let want: BTreeMap<String, String> = [("a".to_string(), "a2".to_string())].into();
        assert_eq!(out.root_causes.len(), 1, "{out:?}");
        assert_eq!(out.root_causes[0].dims, want);
        // Seven varying dimensions are still too many, and said so.
        let mut csv = String::from("a,b,c,d,e,f,g,real,predict\n");
        csv.push_str("1,1,1,1,1,1,1,1,1\n2,2,2,2,2,2,2,1,1\n");
        let err = run_reader(csv.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("7 of them with more than one value"), "{err}");
    }

    #[test]
    fn a_snapshot_of_many_blocks_is_read_whole() {
        // Some 17 MiB: several 4 MiB blocks, parsed by every core into parts that are
        // merged, and block buffers that are filled again. Every row must arrive once
        // with its own values.
        let mut csv = String::from("a,b,real,predict\n");
        let rows = 600_000u64;
        for i in 0..rows {
            csv.push_str(&format!("a{},b{:06},{},{}.5\n", i % 7, i, i, i % 3));
        }
        assert!(csv.len() > 3 * (4 << 20));
        let snap = read_snapshot(csv.as_bytes()).unwrap();
        assert_eq!(snap.real.len(), rows as usize);
        assert_eq!(snap.values[0].len(), 7);
        assert_eq!(snap.values[1].len(), rows as usize);
        let want: f64 = (0..rows).map(|i| i as f64).sum();
        assert_eq!(snap.real.iter().sum::<f64>(), want);
        // Each row's values stay together: b's number is the row's real, and a is
        // that number mod 7, whatever part the row was parsed in.
        for i in 0..snap.real.len() {
            let b = &snap.values[1][snap.cols[1][i] as usize];
            let n: u64 = b[1..].parse().unwrap();
            assert_eq!(n as f64, snap.real[i]);
            assert_eq!(
                snap.values[0][snap.cols[0][i] as usize],
                format!("a{}", n % 7)
            );
            assert_eq!(snap.predict[i], (n % 3) as f64 + 0.5);
        }
    }

    #[test]
    fn rejects_a_csv_without_real() {
        assert!(run_reader("a,predict\nx,1\n".as_bytes()).is_err());
    }
}
