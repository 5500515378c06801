#!/usr/bin/env python3
"""End-to-end benchmark: the SF 1 customers NDJSON, masked by the retail privacy policy, to
zstd Parquet — file in, file out, each tool in its own process.

- Strata: `strata run` of a pipeline `files` (NDJSON, schema inferred) -> `mask` (the policy
  `transforms/privacy/policies/retail.yaml`, role silver) -> `parquet`.
- Python: pyarrow.json reads the file, `mask_baseline.mask` applies the same policy in
  pyarrow + hmac/hashlib + re, pyarrow.parquet writes it (zstd).

Both use the same key, so the keyed hashes of the names must agree: the script checks that
they do, row for row, before it reports anything. Run alternately; wall time and peak RSS
(wait4 ru_maxrss) per run, medians reported.

    cargo build --release -p stratalake-cli
    python3 benches/e2e/mask_files.py --runs 3
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from _common import ROOT, medians, timed

KEY = "bench-key-0123456789abcdef"  # the key mask_baseline.py hashes with

PYTHON = r"""
import sys
sys.path.insert(0, sys.argv[3])
import pyarrow as pa, pyarrow.json as pj, pyarrow.parquet as pq
from mask_baseline import mask
t = pj.read_json(sys.argv[1], parse_options=pj.ParseOptions(
    explicit_schema=pa.schema([("birth_date", pa.string())])))
pq.write_table(mask(t), sys.argv[2], compression="zstd")
"""

CHECK = r"""
import sys, glob, json, pyarrow.parquet as pq, pyarrow as pa
strata = pa.concat_tables([pq.read_table(f) for f in sorted(glob.glob(sys.argv[1] + "/**/*.parquet", recursive=True))
                           if "_quarantine" not in f])
python = pq.read_table(sys.argv[2])
key = lambda t: dict(zip(t.column("customer_id").to_pylist(), zip(t.column("first_name").to_pylist(),
                                                                  t.column("last_name").to_pylist())))
s, p = key(strata), key(python)
print(json.dumps({"strata_rows": strata.num_rows, "python_rows": python.num_rows,
                  "hashes_agree": s == p}))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", default="/tmp/strata-mask-bench")
    ap.add_argument("--strata", default=str(ROOT / "target/release/strata"))
    a = ap.parse_args()
    work = Path(a.work)
    data = work / f"sf{a.scale}"
    src = data / "customers.ndjson"
    if not src.exists():
        subprocess.run([a.strata, "generate", "--scale", str(a.scale), "--dirt-rate", "0",
                        "--out", str(data)], check=True, capture_output=True)
    out = work / "out"
    policy = ROOT / "transforms/privacy/policies/retail.yaml"
    pipeline = work / "mask.yaml"
    pipeline.write_text(
        "pipeline: mask_bench\nsource:\n  files:\n"
        f"    root: '{data}'\n    include: [\"customers.ndjson\"]\n    format: ndjson\n"
        f"transforms:\n  - mask: {{ policy: '{policy}', table: customers }}\n"
        f"sink:\n  parquet:\n    root: '{out / 'strata'}'\ncheckpoint: memory\n")
    env = dict(os.environ, STRATA_MASKING_KEY=KEY)
    results = {"strata": [], "python": []}
    py = [sys.executable, "-c", PYTHON, str(src), str(out / "python.parquet"),
          str(Path(__file__).resolve().parent)]
    for i in range(a.runs):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        results["strata"].append(timed([a.strata, "run", "--quiet", str(pipeline)], env=env))
        results["python"].append(timed(py))
        print(f"run {i + 1}: strata {results['strata'][-1][0]:.2f}s, "
              f"python {results['python'][-1][0]:.2f}s", file=sys.stderr)
    check = json.loads(subprocess.run([sys.executable, "-c", CHECK, str(out / "strata"),
                                       str(out / "python.parquet")],
                                      check=True, capture_output=True, text=True).stdout)
    if not check["hashes_agree"] or check["strata_rows"] != check["python_rows"]:
        sys.exit(f"the two outputs differ: {check}")
    med, rss, every = medians(results)
    print(json.dumps({
        "scale": a.scale, "input_mb": round(src.stat().st_size / 1e6, 1), **check,
        "median_seconds": {k: round(v, 2) for k, v in med.items()},
        "peak_rss_mb": {k: round(v) for k, v in rss.items()},
        "python / strata": round(med["python"] / med["strata"], 2),
        "all_runs": every,
    }, indent=1))


if __name__ == "__main__":
    main()
