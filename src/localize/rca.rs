//! `faultline rca FILE.csv`: the daemon's localizer on one snapshot.
//!
//! Every column but `real` and `predict` is a dimension; each row is a leaf.
//! Deviations in both directions are searched and merged, strongest first.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use serde::Serialize;

use super::{localize, Element, Leaf, Limits};
use crate::detect::{Criteria, Direction};
use crate::window::{Interner, MAX_DIMS};

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

/// Reads a CSV and localizes.
pub fn run_file(path: &Path) -> anyhow::Result<String> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let out = run_reader(std::io::BufReader::with_capacity(1 << 20, file))?;
    Ok(serde_json::to_string(&out)?)
}

/// Localizes the snapshot in a CSV reader.
pub fn run_reader<R: std::io::Read>(reader: R) -> anyhow::Result<RcaOutput> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(reader);
    let headers = rdr.headers().context("reading the header")?.clone();
    let real_col = headers.iter().position(|h| h == "real");
    let predict_col = headers.iter().position(|h| h == "predict");
    let (Some(real_col), Some(predict_col)) = (real_col, predict_col) else {
        bail!("the header needs `real` and `predict` columns");
    };
    let dim_cols: Vec<usize> = (0..headers.len())
        .filter(|&i| i != real_col && i != predict_col)
        .collect();
    if dim_cols.is_empty() || dim_cols.len() > MAX_DIMS {
        bail!(
            "between 1 and {MAX_DIMS} dimension columns are supported, found {}",
            dim_cols.len()
        );
    }
    let mut interners: Vec<Interner> = dim_cols.iter().map(|_| Interner::default()).collect();
    let mut leaves = Vec::new();
    let mut record = csv::ByteRecord::new();
    let mut row = 1u64;
    while rdr
        .read_byte_record(&mut record)
        .with_context(|| format!("reading row {row}"))?
    {
        row += 1;
        let num = |i: usize| -> anyhow::Result<f64> {
            let s = std::str::from_utf8(record.get(i).unwrap_or_default()).unwrap_or("");
            let v: f64 = s.trim().parse().with_context(|| {
                format!(
                    "row {row}: `{}` is not a number",
                    headers.get(i).unwrap_or("")
                )
            })?;
            if !v.is_finite() {
                bail!("row {row}: not a finite number");
            }
            Ok(v)
        };
        let real = num(real_col)?;
        let predict = num(predict_col)?;
        let mut key = [0u32; MAX_DIMS];
        for (d, &c) in dim_cols.iter().enumerate() {
            let v = String::from_utf8_lossy(record.get(c).unwrap_or_default());
            key[d] = interners[d].intern(Some(&v));
        }
        leaves.push(Leaf {
            key,
            real,
            predict,
            volume: predict.abs(),
        });
    }
    let names: Vec<String> = dim_cols
        .iter()
        .map(|&c| headers.get(c).unwrap_or("").to_string())
        .collect();
    let causes = localize_both(names.len(), &leaves);
    Ok(RcaOutput {
        root_causes: causes
            .into_iter()
            .map(|e| RcaCause {
                dims: (0..names.len())
                    .filter(|d| e.mask & (1 << d) != 0)
                    .map(|d| (names[d].clone(), interners[d].value(e.key[d]).to_string()))
                    .collect(),
                score: (e.score * 1000.0).round() / 1000.0,
            })
            .collect(),
    })
}

/// Both directions, merged by evidence.
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
    fn rejects_a_csv_without_real() {
        assert!(run_reader("a,predict\nx,1\n".as_bytes()).is_err());
    }
}
