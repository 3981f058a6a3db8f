#!/usr/bin/env bash
# Scores `faultline rca` beside RiskLoc, Adtributor and AutoRoot on datasets made with
# the RiskLoc repository's generator (paper settings S, L, H) and on its RobustSpot data
# in additive form. See docs/rca.md ("Benchmark on RiskLoc's generator").
#
#   benches/riskloc/run.sh RISKLOC_CHECKOUT [harness options]
#   RISKLOC=/path/to/riskloc benches/riskloc/run.sh [harness options]
#
# Harness options (benches/riskloc/harness.py --help): --sets S:1001:300,L:1002:300,...
# --methods faultline,riskloc,adtributor,autoroot --jobs N --work DIR --reuse-peers.
# Data and results go to $RCA_BENCH_WORK (default target/riskloc-bench); the Python venv
# with RiskLoc's requirements to target/riskloc-venv.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

riskloc="${RISKLOC:-}"
if [[ $# -gt 0 && "$1" != --* ]]; then
    riskloc="$1"
    shift
fi
if [[ -z "$riskloc" || ! -f "$riskloc/generate_dataset.py" ]]; then
    echo "usage: $0 RISKLOC_CHECKOUT [harness options]  (or set RISKLOC)" >&2
    echo "a RiskLoc checkout has generate_dataset.py at its top" >&2
    exit 2
fi
riskloc="$(cd "$riskloc" && pwd)"

venv="$root/target/riskloc-venv"
if [[ ! -x "$venv/bin/python" ]]; then
    python="${PYTHON:-python3}"
    "$python" -m venv "$venv"
    # RiskLoc's requirements.txt names numpy, pandas, scipy, kneed, loguru and pyyaml
    # without versions; its code predates pandas 2 (Adtributor sums string columns in a
    # groupby), so pandas 1.5 and numpy 1.x are pinned.
    "$venv/bin/pip" install --quiet 'numpy<2' 'pandas==1.5.3' 'scipy<1.14' kneed loguru pyyaml
fi

if [[ -z "${FAULTLINE_BIN:-}" ]]; then
    (cd "$root" && cargo build --release --quiet --bin faultline)
    FAULTLINE_BIN="$root/target/release/faultline"
fi

work="${RCA_BENCH_WORK:-$root/target/riskloc-bench}"
exec "$venv/bin/python" "$here/harness.py" --riskloc "$riskloc" --faultline "$FAULTLINE_BIN" \
    --work "$work" "$@"
