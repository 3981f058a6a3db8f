"""Scores `faultline rca` beside RiskLoc, Adtributor and AutoRoot on data made with the
RiskLoc repository's own generator (settings S, L, H of the RiskLoc paper) and on the
RobustSpot CDN dataset it ships, in additive form.

Nothing of RiskLoc is copied here: the checkout given with --riskloc is put on
sys.path, its generator is run as a script, its peers are called through its own
`run_method`, and every method (faultline included) is scored by its own
`root_cause_postprocessing` + `score_root_causes` (exact element match, micro-averaged
over the cases: F1 = 2 TP / (2 TP + FP + FN) over the summed counts).

Run through benches/riskloc/run.sh (it makes the venv); see docs/rca.md.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from multiprocessing import Pool

# The paper's settings, as the RiskLoc README gives the generator's arguments.
SETTINGS = {
    "S": [],
    "L": ["--dims", "10", "24", "10", "15", "--noise-level", "0.0", "0.1",
          "--anomaly-severity", "0.5", "1.0", "--anomaly-deviation", "0.0", "0.0",
          "--num-anomaly", "1", "5", "--num-anomaly-elements", "1", "1", "--only-last-layer"],
    "H": ["--dims", "10", "5", "250", "20", "8", "12"],
}

# The peers and their defaults as RiskLoc's run.py parses them (utils/argument_parser.py).
PEERS = {
    "riskloc": {"risk_threshold": 0.5, "pep_threshold": 0.02, "n_remove": 5,
                "remove_relative": False, "prune_elements": True},
    "adtributor": {"tep": 0.1, "teep": 0.1, "k": 3},
    "autoroot": {"delta_threshold": 0.25},
}
NAMES = {"faultline": "faultline rca", "riskloc": "RiskLoc", "adtributor": "Adtributor",
         "autoroot": "AutoRoot"}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


CHUNK = {"S": 100, "L": 100, "H": 1}


def generate(riskloc, data_root, setting, seed, num, python):
    """Runs RiskLoc's generate_dataset.py until `num` cases exist; returns the cases.

    The generator is run in chunks (100 cases for S and L, 1 for H), chunk k seeded
    `seed + k`, each into its own folder. Its anomaly placement can recurse without end
    (when earlier anomalies of a case used every value of a dimension that a later
    full-depth anomaly must draw from; Python stops it with a RecursionError): the
    cases a chunk wrote before that are kept (its injection_info.csv is written after
    every case) and the next chunk goes on. Complete chunks are reused.
    """
    import pandas as pd
    name = f"{setting}-seed{seed}"
    os.makedirs(os.path.join(data_root, name), exist_ok=True)
    cases, k = [], 0
    while len(cases) < num:
        chunk_seed = seed + k
        want = min(CHUNK[setting], num - len(cases))
        sub = os.path.join(name, f"chunk{chunk_seed}-n{want}")
        folder = os.path.join(data_root, sub)
        info = os.path.join(folder, "injection_info.csv")
        done = os.path.join(folder, "done")
        if not os.path.exists(done):
            log(f"generating {sub} with RiskLoc's generator")
            cmd = [python, "generate_dataset.py", "--num", str(want), "--dataset-name", sub,
                   "--seed", str(chunk_seed), "--data-root", os.path.abspath(data_root)]
            with open(folder.rstrip("/") + ".log", "w") as out:
                rc = subprocess.run(cmd + SETTINGS[setting], cwd=riskloc, stdout=out,
                                    stderr=subprocess.STDOUT).returncode
            if rc != 0:
                log(f"  the generator failed (see {folder}.log); keeping the cases it wrote")
            with open(done, "w") as f:
                f.write(str(rc))
        if os.path.exists(info):
            df = pd.read_csv(info)
            cases += [(f"{chunk_seed}/{ts}", os.path.join(folder, f"{ts}.csv"), label)
                      for ts, label in zip(df["timestamp"], df["set"])]
        k += 1
    return name, cases[:num]


def robustspot_additive(riskloc, data_root):
    """Writes the RobustSpot cases in additive form and returns (case id, path, label).

    RiskLoc's `read_rs_dataframe` (utils/robustspot_data_utils.py) derives, per leaf
    at the anomaly minute: real_b = attempts (cnt), real_a = cnt - value and predict =
    the mean over the 4 previous minutes of (cnt - value) / cnt, 0 where the leaf has
    no history (predict_b = 0 then). The raw `value` is the bad count (it is what
    rises at the labelled causes), so the additive form in bad counts is
        real    = real_b - real_a                 (bad count now)
        predict = real_b * (1 - predict)          (attempts x past bad ratio)
    and predict = 0 for a leaf without history (no past bad ratio; RiskLoc's derived
    form has ratio 0 there too). Absolute deviations equal those of the good-count form
    with the sign flipped; relative ones are those of the failures.
    """
    from utils.robustspot_data_utils import read_rs_dataframe, get_rs_label
    import yaml
    src = os.path.join(riskloc, "data", "RS")
    out_dir = os.path.join(data_root, "RS-additive")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(src, "anomaly.yaml"), encoding="utf-8") as f:
        anomalies = yaml.load(f.read(), Loader=yaml.FullLoader)
    cases = []
    for a in anomalies:
        file = a["data"]
        path = os.path.join(out_dir, file + ".csv")
        if not os.path.exists(path):
            df, attributes, _, _ = read_rs_dataframe(src, file)
            has_history = df["predict_b"] > 0
            add = df[attributes].copy()
            add["real"] = df["real_b"] - df["real_a"]
            add["predict"] = (df["real_b"] * (1.0 - df["predict"])).where(has_history, 0.0)
            tmp = path + ".tmp"
            add.to_csv(tmp, index=False)
            os.replace(tmp, path)
        cases.append((file, path, get_rs_label(src, file)))
    return cases


def read_case(path):
    """The case as RiskLoc's read_dataframe reads a non-derived file, dimension values
    kept as strings (RobustSpot's numeric values would otherwise be parsed as numbers)."""
    import pandas as pd
    head = pd.read_csv(path, nrows=0).columns
    dims = [c for c in head if c not in ("real", "predict")]
    df = pd.read_csv(path, dtype={d: str for d in dims})
    return df, sorted(dims)


def score(predictions, label):
    from utils.evaluation import score_root_causes
    import numpy as np
    preds = np.unique(np.array(predictions, dtype=object)) if predictions else np.array([])
    preds = np.array(["&".join(sorted(p.split("&"))) for p in preds])
    tp, fp, fn, _ = score_root_causes(preds, label)
    return int(tp), int(fp), int(fn)


def run_faultline(binary, case):
    cid, path, label = case
    # Wall time, and the CPU time the process used (user + system, from the children's
    # rusage): on a shared machine the wall time also holds the waits for a core.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([binary, "rca", path], capture_output=True, text=True)
    ms = (time.perf_counter() - start) * 1000.0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_ms = ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) * 1000.0
    if proc.returncode != 0:
        # Counted as an empty answer (every true element missed), and said.
        log(f"  faultline rca failed on {cid}: {proc.stderr.strip()}")
        out = {"root_causes": [], "error": proc.stderr.strip()}
    else:
        out = json.loads(proc.stdout)
    preds = ["&".join(f"{k}={v}" for k, v in sorted(c["dims"].items()))
             for c in out["root_causes"]]
    cands = ["&".join(f"{k}={v}" for k, v in sorted(c["dims"].items()))
             for c in out.get("candidates", [])]
    tp, fp, fn = score(preds, label)
    return {"case": cid, "tp": tp, "fp": fp, "fn": fn, "ms": ms, "cpu_ms": cpu_ms,
            "pred": preds, "candidates": cands, "label": label, "error": out.get("error")}


def run_peer(args):
    method, case = args
    from utils.run_utils import run_method
    from utils.evaluation import root_cause_postprocessing
    cid, path, label = case
    df, attributes = read_case(path)
    # Timed as RiskLoc's run.py times a method: the search and its post-processing,
    # after the data frame is read.
    start, cpu = time.perf_counter(), time.process_time()
    rcs = run_method(df, [None, None], attributes, method, dict(PEERS[method]), False, False)
    preds = list(root_cause_postprocessing(rcs, method))
    ms = (time.perf_counter() - start) * 1000.0
    cpu_ms = (time.process_time() - cpu) * 1000.0
    tp, fp, fn = score(preds, label)
    return {"case": cid, "tp": tp, "fp": fp, "fn": fn, "ms": ms, "cpu_ms": cpu_ms,
            "pred": preds, "label": label}


def timed_out(method, case, seconds):
    cid, _, label = case
    _, _, fn = score([], label)
    log(f"  {method} gave no answer on {cid} within {seconds} s")
    return {"case": cid, "tp": 0, "fp": 0, "fn": fn, "ms": seconds * 1000.0, "pred": [],
            "label": label, "error": f"timeout after {seconds} s"}


def run_peers(riskloc, method, cases, jobs, timeout):
    """A peer on every case, `jobs` at a time; a case that takes longer than `timeout`
    seconds is stopped and counted as an empty answer (all its true elements missed)."""
    if timeout is None and jobs <= 1:
        return [run_peer((method, c)) for c in cases]
    rows = []
    pending = list(cases)
    while pending:
        pool = Pool(max(jobs, 1), initializer=init_worker, initargs=(riskloc,))
        started = [(c, pool.apply_async(run_peer, ((method, c),))) for c in pending]
        pending = []
        broken = False
        for c, res in started:
            if broken:
                pending.append(c)
                continue
            try:
                rows.append(res.get(timeout))
            except Exception as e:  # multiprocessing.TimeoutError, or the peer failed
                if isinstance(e, __import__("multiprocessing").TimeoutError):
                    rows.append(timed_out(method, c, timeout))
                    # The pool's worker is still busy with it: start a new pool.
                    broken = True
                else:
                    log(f"  {method} failed on {c[0]}: {e!r}")
                    _, _, fn = score([], c[2])
                    rows.append({"case": c[0], "tp": 0, "fp": 0, "fn": fn, "ms": 0.0,
                                 "pred": [], "label": c[2], "error": repr(e)})
        pool.terminate()
        pool.join()
    return rows


def init_worker(riskloc):
    sys.path.insert(0, riskloc)
    os.chdir(riskloc)
    import warnings
    warnings.simplefilter("ignore")


def summarize(rows):
    tp = sum(r["tp"] for r in rows)
    fp = sum(r["fp"] for r in rows)
    fn = sum(r["fn"] for r in rows)
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    med = median([x["ms"] for x in rows])
    # Results saved before CPU time was recorded have none.
    cpu = median([x["cpu_ms"] for x in rows]) if all("cpu_ms" in x for x in rows) else None
    return f1, p, r, med, cpu, len(rows)


def median(xs):
    xs = sorted(xs)
    if not xs:
        return 0.0
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--riskloc", required=True, help="a checkout of the RiskLoc repository")
    ap.add_argument("--faultline", required=True, help="the faultline binary")
    ap.add_argument("--work", required=True, help="scratch folder for data and results")
    ap.add_argument("--sets", default="S:1001:200,L:1002:200,H:1003:3,RS",
                    help="comma list of SETTING:SEED:CASES (S, L, H) and RS")
    ap.add_argument("--methods", default="faultline,riskloc,adtributor,autoroot")
    ap.add_argument("--jobs", type=int, default=1, help="peer cases run in parallel")
    ap.add_argument("--peer-timeout", type=float,
                    help="seconds a peer may take on one case (then: an empty answer)")
    ap.add_argument("--reuse-peers", action="store_true",
                    help="take a peer's results on a dataset from an earlier run when saved")
    ap.add_argument("--out", help="write the table (markdown) here as well")
    args = ap.parse_args()

    riskloc = os.path.abspath(args.riskloc)
    if not os.path.exists(os.path.join(riskloc, "generate_dataset.py")):
        sys.exit(f"{riskloc} is not a RiskLoc checkout (no generate_dataset.py)")
    # Paths given relative to where the harness was started, before it moves into the
    # RiskLoc checkout (its code reads files relative to its top).
    work = os.path.abspath(args.work)
    binary = os.path.abspath(args.faultline)
    out_table = os.path.abspath(args.out) if args.out else None
    init_worker(riskloc)
    data_root = os.path.join(work, "data")
    results = os.path.join(work, "results")
    os.makedirs(data_root, exist_ok=True)
    os.makedirs(results, exist_ok=True)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if m != "faultline" and m not in PEERS:
            sys.exit(f"unknown method {m}")

    table = []
    for spec in args.sets.split(","):
        parts = spec.strip().split(":")
        if parts[0] == "RS":
            name, label = "RS-additive", "RobustSpot (additive)"
            cases = robustspot_additive(riskloc, data_root)
        else:
            setting, seed, num = parts[0], int(parts[1]), int(parts[2])
            if setting not in SETTINGS:
                sys.exit(f"unknown setting {setting}")
            name, cases = generate(riskloc, data_root, setting, seed, num, sys.executable)
            name = f"{name}-n{num}"
            label = f"{setting} (seed {seed}, {num} cases)"
        for method in methods:
            saved = os.path.join(results, f"{name}.{method}.json")
            if method == "faultline":
                log(f"{name}: faultline rca on {len(cases)} cases")
                rows = [run_faultline(binary, c) for c in cases]
            elif args.reuse_peers and os.path.exists(saved):
                with open(saved) as f:
                    rows = json.load(f)
            else:
                log(f"{name}: {method} on {len(cases)} cases")
                rows = run_peers(riskloc, method, cases, args.jobs, args.peer_timeout)
            with open(saved, "w") as f:
                json.dump(rows, f, indent=0)
            f1, p, r, med, cpu, n = summarize(rows)
            table.append((label, NAMES[method], f1, p, r, med, cpu))
            log(f"  {NAMES[method]}: F1 {f1:.3f} P {p:.3f} R {r:.3f} median {med:.1f} ms")

    lines = ["| setting | method | F1 | precision | recall | median ms/case (wall) "
             "| median CPU ms/case |",
             "|---|---|---|---|---|---|---|"]
    for label, m, f1, p, r, med, cpu in table:
        cpu = "not recorded" if cpu is None else f"{cpu:,.1f}"
        lines.append(f"| {label} | {m} | {f1:.3f} | {p:.3f} | {r:.3f} | {med:,.1f} | {cpu} |")
    text = "\n".join(lines)
    print(text)
    if out_table:
        with open(out_table, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
