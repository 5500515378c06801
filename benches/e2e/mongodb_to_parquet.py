#!/usr/bin/env python3
"""End-to-end benchmark: 100,000 documents of mixed shape from MongoDB (SecantusDB) to Parquet.

Documents: nested addresses, arrays of order lines, ObjectIds, dates, Decimal128 totals, and a
`score` that is an int, a double or a string (a third each). On the same server, alternately,
each in its own process:

- Strata: `strata run` (stratalake-mongodb, mixed_types: json_text, an explicit schema; one split by
  default, see `--splits`) into the Parquet sink (zstd);
- pymongo + pyarrow: `find()` to a list of dicts, `pa.Table.from_pylist` (score as text),
  `pq.write_table` (zstd);
- pymongoarrow: `find_arrow_all` with a schema, `pq.write_table` (zstd). It cannot read the
  mixed `score` field (`TypeError: Got unexpected type int32 instead of expected type string`),
  so its schema leaves `score` out: it does a little less work than the others.

Wall time and peak RSS (wait4 ru_maxrss), medians reported. Usage:

    scripts/services.sh start
    cargo build --release -p stratalake-cli
    pip install pymongo pymongoarrow pyarrow
    python3 benches/e2e/mongodb_to_parquet.py --docs 100000 --runs 3
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from _common import ROOT, medians, timed
URI = os.environ.get("STRATA_MONGODB_URI", "mongodb://127.0.0.1:27017/?directConnection=true")

LOAD = r'''
import sys, random, datetime
from bson import ObjectId, Decimal128
from pymongo import MongoClient
uri, n = sys.argv[1], int(sys.argv[2])
c = MongoClient(uri)["bench"]["customers"]
c.drop()
rnd = random.Random(7)
batch = []
for i in range(n):
    k = i % 3
    score = i if k == 0 else (i / 7 if k == 1 else f"s{i}")
    batch.append({
        "_id": ObjectId(),
        "name": f"Customer {i}",
        "email": f"c{i}@example.com",
        "since": datetime.datetime(2020, 1, 1) + datetime.timedelta(minutes=i),
        "total": Decimal128(f"{rnd.randint(0, 10**7) / 100:.2f}"),
        "score": score,
        "address": {"street": f"Main Street {i % 200}", "city": rnd.choice(["Berlin", "Paris", "Madrid"]), "zip": f"{i % 99999:05d}"},
        "lines": [{"sku": f"SKU-{(i + j) % 500:04d}", "qty": 1 + j} for j in range(1 + i % 4)],
        "vip": i % 10 == 0,
    })
    if len(batch) == 2000:
        c.insert_many(batch); batch = []
if batch:
    c.insert_many(batch)
print(c.count_documents({}))
'''

PYMONGO = r'''
import sys, pyarrow as pa, pyarrow.parquet as pq
from pymongo import MongoClient
uri, out = sys.argv[1], sys.argv[2]
rows = []
for d in MongoClient(uri)["bench"]["customers"].find({}, batch_size=2000):
    d["_id"] = str(d["_id"]); d["total"] = d["total"].to_decimal(); d["score"] = str(d["score"])
    rows.append(d)
pq.write_table(pa.Table.from_pylist(rows), out, compression="zstd")
'''

PYMONGOARROW = r'''
import sys, pyarrow as pa, pyarrow.parquet as pq
from pymongo import MongoClient
from pymongoarrow.api import Schema, find_arrow_all
from pymongoarrow.types import ObjectIdType, Decimal128Type
uri, out = sys.argv[1], sys.argv[2]
schema = Schema({"_id": ObjectIdType(), "name": pa.string(), "email": pa.string(),
                 "since": pa.timestamp("ms"), "total": Decimal128Type(),
                 "address": pa.struct([("street", pa.string()), ("city", pa.string()), ("zip", pa.string())]),
                 "lines": pa.list_(pa.struct([("sku", pa.string()), ("qty", pa.int64())])),
                 "vip": pa.bool_()})
# (no `score`: pymongoarrow raises TypeError on its mixed int/double/string values)
t = find_arrow_all(MongoClient(uri)["bench"]["customers"], {}, schema=schema)
# The ObjectId and Decimal128 extension columns are written as their binary storage (Parquet
# has no such types; converting them to text would cost pymongoarrow extra work).
cols = {n: (pa.chunked_array([c.storage for c in t[n].chunks]) if n in ("_id", "total") else t[n])
        for n in t.column_names}
pq.write_table(pa.table(cols), out, compression="zstd")
'''




def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--splits", type=int, default=1,
                    help="_id ranges read in parallel; SecantusDB scans the collection for every "
                         "range query, so more than one only adds server work there")
    ap.add_argument("--strata", default=str(ROOT / "target/release/strata"))
    ap.add_argument("--work", default=str(ROOT / "benches/data"))
    args = ap.parse_args()
    work = Path(args.work)
    print("loaded", subprocess.run([sys.executable, "-c", LOAD, URI, str(args.docs)], check=True,
                                   capture_output=True, text=True).stdout.strip(), flush=True)
    out = work / "mongo-out"
    pipeline = work / "mongo-bench.yaml"
    pipeline.write_text(
        "pipeline: mongo_bench\nsource:\n  mongodb:\n"
        f"    uri: \"{URI}\"\n    database: bench\n    collection: customers\n    mixed_types: json_text\n"
        f"    splits: {args.splits}\n"
        "    schema:\n      explicit:\n"
        "        - { name: _id, type: utf8 }\n        - { name: name, type: utf8 }\n"
        "        - { name: email, type: utf8 }\n        - { name: since, type: timestamp }\n"
        "        - { name: total, type: \"decimal(12,2)\" }\n        - { name: score, type: utf8 }\n"
        "        - { name: address, type: \"struct<street: utf8, city: utf8, zip: utf8>\" }\n"
        "        - { name: lines, type: \"list<struct<sku: utf8, qty: int64>>\" }\n"
        "        - { name: vip, type: boolean }\n"
        f"sink:\n  parquet:\n    root: '{out / 'strata'}'\ncheckpoint: memory\n")
    res = {"strata": [], "pymongo_pyarrow": [], "pymongoarrow": []}
    for _ in range(args.runs):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        res["strata"].append(timed([args.strata, "run", "--quiet", str(pipeline)]))
        res["pymongo_pyarrow"].append(timed([sys.executable, "-c", PYMONGO, URI, str(out / "pymongo.parquet")]))
        res["pymongoarrow"].append(timed([sys.executable, "-c", PYMONGOARROW, URI, str(out / "pma.parquet")]))
    med, rss, every = medians(res)
    print(json.dumps({"docs": args.docs, "runs": args.runs,
                      **{f"{k}_s": round(v, 2) for k, v in med.items()},
                      **{f"{k}_rss_mb": round(v, 1) for k, v in rss.items()},
                      **{f"{k}_all_s": v for k, v in every.items()}}))
    print("\n| client | s (median) | x Strata's time | peak RSS MB |")
    print("|---|---|---|---|")
    for k in res:
        print(f"| {k} | {med[k]:.2f} | {med[k] / med['strata']:.2f} | {rss[k]:.0f} |")


if __name__ == "__main__":
    main()
