//! `faultline rca FILE.csv`: root-cause localization of one snapshot.
//!
//! Every column but `real` and `predict` is a dimension; each row is a leaf.
//! The file is streamed: values are interned per column and leaves kept as
//! columns of ids, so a 24-million-row, 1.3 GB snapshot fits in about 1.5 GB.
//! Dense snapshots (the usual case: one row per combination) go to the
//! relative-deviation search in [`super::cover`]; sparse ones to the daemon's
//! deviance search, both directions.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context};
use rustc_hash::FxHashMap;
use serde::Serialize;

use super::cover::{grid_fits, localize_grid, CoverOptions, Grid};
use super::{localize, Element, Leaf, Limits};
use crate::detect::{Criteria, Direction};
use crate::window::{MAX_DIMS, MAX_RULE_DIMS};

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
    /// Best first.
    pub root_causes: Vec<RcaCause>,
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
    if dims.is_empty() || dims.len() > MAX_RULE_DIMS {
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
    let parts: Vec<anyhow::Result<Part>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (rx, lay) = (&rx, &lay);
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
                    let rest = buf.split_off(cut);
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
    // Merge: ids of the first part stay, the others are remapped.
    let mut snap = Snapshot {
        names: lay.dims.iter().map(|&i| names[i].clone()).collect(),
        cols: vec![Vec::new(); ndims],
        ..Snapshot::default()
    };
    let mut global: Vec<Column> = (0..ndims).map(|_| Column::default()).collect();
    for part in parts {
        let part = part?;
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
    Ok(snap)
}

/// Localizes a snapshot; elements carry value ids.
pub fn localize_snapshot(snap: &Snapshot) -> Vec<Element> {
    let sizes: Vec<u32> = snap.values.iter().map(|v| v.len() as u32).collect();
    if grid_fits(&sizes, snap.real.len()) {
        let mut grid = Grid::new(&sizes);
        // Cell index of every leaf, one column at a time (row-major: last fastest).
        let mut cell = vec![0usize; snap.real.len()];
        for (col, &size) in snap.cols.iter().zip(&sizes) {
            for (c, &v) in cell.iter_mut().zip(col) {
                *c = *c * size as usize + v as usize;
            }
        }
        for (i, &c) in cell.iter().enumerate() {
            grid.real[c] += snap.real[i];
            grid.predict[c] += snap.predict[i];
        }
        return localize_grid(&grid, &CoverOptions::default());
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
    localize_both(snap.names.len(), &leaves)
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
    let causes = localize_snapshot(&snap);
    Ok(RcaOutput {
        root_causes: causes
            .into_iter()
            .map(|e| RcaCause {
                dims: (0..snap.names.len())
                    .filter(|d| e.mask & (1 << d) != 0)
                    .map(|d| {
                        let v = snap.values[d].get(e.key[d] as usize);
                        (snap.names[d].clone(), v.cloned().unwrap_or_default())
                    })
                    .collect(),
                score: (e.score * 1000.0).round() / 1000.0,
            })
            .collect(),
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

    #[test]
    fn rejects_a_csv_without_real() {
        assert!(run_reader("a,predict\nx,1\n".as_bytes()).is_err());
    }
}
