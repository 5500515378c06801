#!/usr/bin/env python3
"""End-to-end benchmark: 1M orders (SF 1) pulled from a local HTTP API into Parquet.

The API is `strata serve-api` (release build, Rust/axum): `GET /orders?cursor=<n>&limit=1000`
answers `{"data": [...1000 orders...], "next_cursor": "<n+1000>" | null, "total": N}`. On the
same server, alternately, each in its own process:

- Strata: `strata run` with a stratalake-rest source (cursor paginator, explicit schema) and the
  Parquet sink (zstd);
- plain Python: a `requests.Session` loop with `json.loads` (`--python-fetch-only` measures
  just that); and the same loop writing each page through `pyarrow.Table.from_pylist` to one
  Parquet file (zstd);
- dlt 1.x: `rest_api` source with the same cursor paginator, `filesystem` destination, Parquet.

Wall time and peak RSS (wait4 ru_maxrss) per run; medians reported. Usage:

    cargo build --release -p stratalake-cli
    pip install requests pyarrow dlt
    python3 benches/e2e/rest_orders.py --scale 1 --runs 3
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from _common import ROOT, medians, timed

PY_LOOP = r'''
import json, sys, requests
base, out, write = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
s = requests.Session()
cursor, n, writer = "0", 0, None
if write:
    import pyarrow as pa, pyarrow.parquet as pq
while cursor is not None:
    page = json.loads(s.get(f"{base}/orders", params={"cursor": cursor, "limit": 1000}).content)
    rows = page["data"]
    n += len(rows)
    if write and rows:
        t = pa.Table.from_pylist(rows)
        if writer is None:
            writer = pq.ParquetWriter(out, t.schema, compression="zstd")
        writer.write_table(t.cast(writer.schema))
    cursor = page["next_cursor"]
if writer is not None:
    writer.close()
print(n)
'''

DLT = r'''
import sys, dlt
from dlt.sources.rest_api import rest_api_source
base, out = sys.argv[1], sys.argv[2]
source = rest_api_source({
    "client": {"base_url": base},
    "resources": [{
        "name": "orders",
        "endpoint": {
            "path": "orders",
            "params": {"limit": 1000},
            "data_selector": "data",
            "paginator": {"type": "cursor", "cursor_path": "next_cursor", "cursor_param": "cursor"},
        },
    }],
})
pipeline = dlt.pipeline(pipeline_name="bench_rest", destination=dlt.destinations.filesystem(bucket_url=f"file://{out}"),
                        dataset_name="bench", pipelines_dir=f"{out}/_pipelines")
info = pipeline.run(source, loader_file_format="parquet")
print(info)
'''




def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dlt-runs", type=int, default=1)
    ap.add_argument("--port", type=int, default=8089)
    ap.add_argument("--strata", default=str(ROOT / "target/release/strata"))
    ap.add_argument("--work", default=str(ROOT / "benches/data"))
    args = ap.parse_args()
    work = Path(args.work)
    data = work / f"sf{args.scale}"
    if not (data / "orders.ndjson").exists():
        subprocess.run([args.strata, "generate", "--scale", str(args.scale), "--dirt-rate", "0",
                        "--out", str(data)], check=True)
    schema = json.loads((data / "orders.schema.json").read_text())
    cols = "".join(f'        - {{ name: {c["name"]}, type: "{c["type"]}" }}\n' for c in schema)
    server = subprocess.Popen([args.strata, "serve-api", "--file", str(data / "orders.ndjson"),
                               "--port", str(args.port)], stdout=subprocess.PIPE)
    print(server.stdout.readline().decode().strip(), flush=True)
    base = f"http://127.0.0.1:{args.port}"
    out = work / "rest-out"
    pipeline = work / "rest-bench.yaml"
    pipeline.write_text(
        "pipeline: rest_bench\nsource:\n  rest:\n"
        f"    base_url: {base}\n    path: /orders\n    params: {{ limit: \"1000\" }}\n    records: $.data\n"
        "    paginator: { type: cursor, cursor_path: $.next_cursor, cursor_param: cursor }\n"
        "    schema:\n      explicit:\n" + cols +
        f"sink:\n  parquet:\n    root: '{out / 'strata'}'\ncheckpoint: memory\n")
    results = {"strata": [], "python_fetch": [], "python_parquet": [], "dlt": []}
    try:
        for i in range(args.runs):
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            results["strata"].append(timed([args.strata, "run", "--quiet", str(pipeline)]))
            results["python_fetch"].append(timed([sys.executable, "-c", PY_LOOP, base, "-", "0"]))
            results["python_parquet"].append(timed([sys.executable, "-c", PY_LOOP, base, str(out / "py.parquet"), "1"]))
            if i < args.dlt_runs:
                env = dict(os.environ, RUNTIME__LOG_LEVEL="WARNING", DLT_DATA_DIR=str(out / "_dlt"))
                results["dlt"].append(timed([sys.executable, "-c", DLT, base, str(out / "dlt")], env=env))
    finally:
        server.kill()
    med, rss, every = medians(results)
    row = {"scale": args.scale, "runs": args.runs, "dlt_runs": args.dlt_runs,
           **{f"{k}_s": round(v, 2) for k, v in med.items()},
           **{f"{k}_rss_mb": round(v, 1) for k, v in rss.items()},
           **{f"{k}_all_s": v for k, v in every.items()},
           "dlt_over_strata": round(med["dlt"] / med["strata"], 1) if "dlt" in med else None,
           "python_fetch_over_strata": round(med["python_fetch"] / med["strata"], 2),
           "python_parquet_over_strata": round(med["python_parquet"] / med["strata"], 2)}
    print(json.dumps(row))
    print("\n| client | s (median) | x Strata's time | peak RSS MB |")
    print("|---|---|---|---|")
    for k in [k for k in ["strata", "python_fetch", "python_parquet", "dlt"] if k in med]:
        print(f"| {k} | {med[k]:.2f} | {med[k] / med['strata']:.1f} | {rss[k]:.0f} |")


if __name__ == "__main__":
    main()
