#!/usr/bin/env python3
"""End-to-end benchmark: the generator's orders NDJSON to zstd Parquet.

Strata (`strata run`, release build) against DuckDB's
`COPY (SELECT * FROM read_json_auto(...)) TO ... (FORMAT parquet, COMPRESSION zstd)`, on the same
file, run alternately, each in its own process; wall time and peak RSS (wait4 ru_maxrss) per run,
medians reported. Usage:

    cargo build --release -p stratalake-cli
    pip install duckdb psutil
    python3 benches/e2e/orders_to_parquet.py --scales 0.1 1 --runs 3
"""
import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from _common import ROOT, medians, timed




def schema_yaml(data):
    cols = json.loads((data / "orders.schema.json").read_text())
    return "".join(f'        - {{ name: {c["name"]}, type: "{c["type"]}" }}\n' for c in cols)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scales", nargs="+", type=float, default=[0.1, 1.0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dirt-rate", type=float, default=0.0,
                    help="0 by default: DuckDB's read_json_auto fails on malformed lines")
    ap.add_argument("--strata", default=str(ROOT / "target/release/strata"))
    ap.add_argument("--work", default=str(ROOT / "benches/data"))
    args = ap.parse_args()
    work = Path(args.work)
    results = []
    for scale in args.scales:
        data = work / f"sf{scale}"
        if not (data / "orders.ndjson").exists() or json.loads((data / "manifest.json").read_text())["dirt_rate"] != args.dirt_rate:
            subprocess.run([args.strata, "generate", "--scale", str(scale), "--dirt-rate", str(args.dirt_rate), "--out", str(data)], check=True)
        src = data / "orders.ndjson"
        size = src.stat().st_size
        out = work / "out"
        pipeline = work / f"bench-sf{scale}.yaml"
        pipeline.write_text(
            "pipeline: bench\nsource:\n  files:\n"
            f"    root: '{data}'\n    include: [\"orders.ndjson\"]\n    format: ndjson\n"
            "    schema:\n      explicit:\n" + schema_yaml(data) +
            f"sink:\n  parquet:\n    root: '{out / 'strata'}'\ncheckpoint: memory\n")
        strata, duck = [], []
        for _ in range(args.runs):
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            strata.append(timed([args.strata, "run", "--quiet", str(pipeline)]))
            sql = (f"COPY (SELECT * FROM read_json_auto('{src}')) TO '{out / 'duckdb.parquet'}' "
                   "(FORMAT parquet, COMPRESSION zstd)")
            duck.append(timed([sys.executable, "-c", f"import duckdb; duckdb.sql({sql!r})"]))
        s_wall = statistics.median(w for w, _ in strata)
        d_wall = statistics.median(w for w, _ in duck)
        row = {
            "scale": scale, "input_mb": round(size / 1e6, 1), "runs": args.runs,
            "strata_s": round(s_wall, 2), "duckdb_s": round(d_wall, 2), "ratio": round(s_wall / d_wall, 2),
            "strata_rss_mb": round(statistics.median(r for _, r in strata) / 2**20, 1),
            "duckdb_rss_mb": round(statistics.median(r for _, r in duck) / 2**20, 1),
            "strata_all_s": [round(w, 2) for w, _ in strata], "duckdb_all_s": [round(w, 2) for w, _ in duck],
        }
        results.append(row)
        print(json.dumps(row), flush=True)
    print("\n| SF | input MB | Strata s | DuckDB s | ratio | Strata peak RSS MB | DuckDB peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['scale']} | {r['input_mb']} | {r['strata_s']} | {r['duckdb_s']} | {r['ratio']} | {r['strata_rss_mb']} | {r['duckdb_rss_mb']} |")


if __name__ == "__main__":
    main()
