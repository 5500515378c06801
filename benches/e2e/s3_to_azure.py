#!/usr/bin/env python3
"""End-to-end benchmark: the generator's orders as Parquet, copied from S3 (moto) to Azure Blob
(Azurite) on the local servers.

Strata (`strata run`: an S3 source reading row-group splits concurrently, an Azure sink with
streaming block uploads and a create-only manifest) against pyarrow's S3FileSystem and
AzureFileSystem (`dataset(...)` -> `write_dataset(...)`, zstd), on the same objects, run
alternately, each in its own process; wall time and peak RSS (wait4 ru_maxrss) per run, medians
reported. Both sides pay the same servers' costs (moto and Azurite are Python and Node
programs), so the ratio mostly measures the clients. Usage:

    scripts/services.sh start
    cargo build --release -p stratalake-cli
    pip install pyarrow
    python3 benches/e2e/s3_to_azure.py --scale 1 --runs 3
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from _common import ROOT, medians, timed
S3 = os.environ.get("STRATA_S3_ENDPOINT", "http://127.0.0.1:5000")
AZURITE = os.environ.get("STRATA_AZURITE_ENDPOINT", "http://127.0.0.1:10000")
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

PYARROW_COPY = r'''
import sys, pyarrow.dataset as ds, pyarrow.fs as fs
s3 = fs.S3FileSystem(access_key="bench", secret_key="bench", endpoint_override=sys.argv[1],
                     scheme="http", region="us-east-1", force_virtual_addressing=False)
az = fs.AzureFileSystem(account_name="devstoreaccount1", account_key=sys.argv[3],
                        blob_storage_authority=sys.argv[2], blob_storage_scheme="http",
                        dfs_storage_authority=sys.argv[2], dfs_storage_scheme="http")
src = ds.dataset(sys.argv[4], filesystem=s3, format="parquet")
fmt = ds.ParquetFileFormat()
ds.write_dataset(src, sys.argv[5], filesystem=az, format="parquet",
                 file_options=fmt.make_write_options(compression="zstd"),
                 existing_data_behavior="overwrite_or_ignore")
'''




def s3_conn(bucket, prefix):
    return (f"      bucket: {bucket}\n      prefix: {prefix}\n      endpoint: {S3}\n"
            "      path_style: true\n      allow_http: true\n      credentials:\n"
            "        type: static\n        access_key_id: bench\n        secret_access_key: bench\n")


def az_conn(container, prefix):
    return (f"      container: {container}\n      prefix: {prefix}\n      endpoint: {AZURITE}\n"
            "      credentials:\n        type: emulator\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--strata", default=str(ROOT / "target/release/strata"))
    ap.add_argument("--work", default=str(ROOT / "benches/data"))
    args = ap.parse_args()
    work = Path(args.work)
    data = work / f"sf{args.scale}"
    if not (data / "orders.ndjson").exists():
        subprocess.run([args.strata, "generate", "--scale", str(args.scale), "--dirt-rate", "0",
                        "--out", str(data)], check=True)
    schema = json.loads((data / "orders.schema.json").read_text())
    cols = "".join(f'          - {{ name: {c["name"]}, type: "{c["type"]}" }}\n' for c in schema)
    tag = str(int(time.time()))
    bucket, container = f"bench-{tag}", f"bench-{tag}"
    # 1. The input: the orders as Parquet files in S3, written by Strata from the NDJSON.
    load = work / "s3-load.yaml"
    load.write_text(
        "pipeline: load\nsource:\n  files:\n"
        f"    root: '{data}'\n    include: [\"orders.ndjson\"]\n    format: ndjson\n"
        "    schema:\n      explicit:\n" + cols.replace("          -", "        -") +
        "sink:\n  s3:\n    connection:\n" + s3_conn(bucket, "orders") +
        "    write:\n      target_file_size_megabytes: 16\ncheckpoint: memory\n")
    subprocess.run([args.strata, "setup", str(load)], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([args.strata, "run", "--quiet", str(load)], check=True)
    with urllib.request.urlopen(f"{S3}/{bucket}?list-type=2&prefix=orders/part") as r:
        listing = r.read().decode()
    size = sum(int(s.split("</Size>")[0]) for s in listing.split("<Size>")[1:])
    files = listing.count("<Key>")
    runs_strata, runs_pyarrow = [], []
    for i in range(args.runs):
        copy = work / f"s3-to-azure-{i}.yaml"
        copy.write_text(
            "pipeline: copy\nsource:\n  s3:\n    connection:\n" + s3_conn(bucket, "orders") +
            "    read:\n      format: parquet\n      include: [\"*.parquet\"]\n"
            "sink:\n  azure_blob:\n    connection:\n" + az_conn(container, f"strata-{i}") +
            "    write:\n      target_file_size_megabytes: 16\ncheckpoint: memory\n")
        if i == 0:
            subprocess.run([args.strata, "setup", str(copy)], check=True, stdout=subprocess.DEVNULL)
        runs_strata.append(timed([args.strata, "run", "--quiet", str(copy)]))
        host = AZURITE.split("://")[1]
        runs_pyarrow.append(timed([sys.executable, "-c", PYARROW_COPY, S3.split("://")[1], host,
                                   KEY, f"{bucket}/orders", f"{container}/pyarrow-{i}"]))
    s = statistics.median(w for w, _ in runs_strata)
    p = statistics.median(w for w, _ in runs_pyarrow)
    row = {
        "scale": args.scale, "parquet_mb": round(size / 1e6, 1), "files": files, "runs": args.runs,
        "strata_s": round(s, 2), "pyarrow_s": round(p, 2), "ratio": round(s / p, 2),
        "strata_rss_mb": round(statistics.median(r for _, r in runs_strata) / 2**20, 1),
        "pyarrow_rss_mb": round(statistics.median(r for _, r in runs_pyarrow) / 2**20, 1),
        "strata_all_s": [round(w, 2) for w, _ in runs_strata],
        "pyarrow_all_s": [round(w, 2) for w, _ in runs_pyarrow],
    }
    print(json.dumps(row))
    print("\n| SF | Parquet MB (files) | Strata s | pyarrow s | ratio | Strata peak RSS MB | pyarrow peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {row['scale']} | {row['parquet_mb']} ({files}) | {row['strata_s']} | {row['pyarrow_s']} | "
          f"{row['ratio']} | {row['strata_rss_mb']} | {row['pyarrow_rss_mb']} |")


if __name__ == "__main__":
    main()
