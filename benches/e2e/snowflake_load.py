#!/usr/bin/env python3
"""End-to-end benchmark: loading the gold layer into Snowflake (fakesnow on 127.0.0.1:8085).

The same gold Delta tables (built once by Strata's medallion at the given scale) are loaded
into a fresh Snowflake database three ways, each in its own process, run alternately; wall
time and peak RSS (wait4 ru_maxrss) per run, medians reported:

- Strata COPY: `strata sync-snowflake` (Parquet files PUT to an internal stage, COPY into a
  staging table, one transaction merging by key and recording the Delta version).
- Strata INSERT: the same sync with bound INSERTs (array bindings) instead of PUT + COPY.
- write_pandas: snowflake-connector-python's `write_pandas` (PUT of Parquet chunks + COPY,
  append only, no merge, no control table), each table read from Delta with the `deltalake`
  package into pandas first.

Bound inserts are slow enough that at SF 1 they only run on the tables up to
`--insert-max-rows` rows; the rows/s of each method over the same tables give the ratio.

Usage:

    cargo build --release -p stratalake-cli
    pip install 'pandas<3' deltalake   # fakesnow and the connector come from scripts/services.sh
    python3 benches/e2e/snowflake_load.py --scale 1 --runs 3
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, medians, timed

URL = "http://127.0.0.1:8085"
STRATA = str(ROOT / "target/release/strata")

WRITE_PANDAS = r"""
import sys, deltalake, snowflake.connector
import snowflake.connector.pandas_tools as pt
from snowflake.connector.pandas_tools import write_pandas
# fakesnow records a stage created as `identifier(?)` with a broken URL: create write_pandas's
# temporary stage with its name written out; the rest of write_pandas runs unchanged.
def _stage(cursor, stage_location, compression, *args):
    cursor.execute(f"CREATE TEMPORARY STAGE {stage_location} FILE_FORMAT=(TYPE=PARQUET COMPRESSION={compression})")
pt._do_create_temp_stage = _stage
# ... and reads its COPY's stage when written as a literal ('@stage'), as connector 4.x does,
# only when written as a name.
import re as _re
from snowflake.connector.cursor import SnowflakeCursor
_execute = SnowflakeCursor.execute
def _execute_fixed(self, command, *a, **k):
    return _execute(self, _re.sub(r"FROM '(@[A-Za-z0-9_]+)'", r"FROM \1", command), *a, **k)
SnowflakeCursor.execute = _execute_fixed
lake, db, tables = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
con = snowflake.connector.connect(user="strata", password="x", account="fakesnow", host="127.0.0.1",
                                  port=8085, protocol="http", database=db, schema="GOLD")
cur = con.cursor()
cur.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
cur.execute(f"CREATE SCHEMA IF NOT EXISTS {db}.GOLD")
cur.execute(f"USE SCHEMA {db}.GOLD")
import pyarrow as pa
def sf_type(t):
    # fakesnow has no INFER_SCHEMA (auto_create_table): the table is created from the Arrow schema.
    if pa.types.is_integer(t): return "NUMBER(38,0)"
    if pa.types.is_decimal(t): return f"NUMBER({t.precision},{t.scale})"
    if pa.types.is_floating(t): return "FLOAT"
    if pa.types.is_boolean(t): return "BOOLEAN"
    if pa.types.is_date(t): return "DATE"
    if pa.types.is_timestamp(t): return "TIMESTAMP_TZ" if t.tz else "TIMESTAMP_NTZ"
    return "VARCHAR"
for t in tables:
    dt = deltalake.DeltaTable(f"{lake}/gold/{t}")
    arrow = dt.to_pyarrow_table()
    cols = ", ".join(f"{f.name.upper()} {sf_type(f.type)}" for f in arrow.schema)
    cur.execute(f"CREATE TABLE IF NOT EXISTS {t.upper()} ({cols})")
    df = arrow.to_pandas()
    ok, _, rows, _ = write_pandas(con, df, t.upper(), quote_identifiers=False, use_logical_type=True)
    assert ok and rows == len(df), (t, rows, len(df))
"""


def strata(*args):
    return subprocess.run([STRATA, *args], check=True,
                          capture_output=True, text=True).stdout


def gold_rows(lake):
    # Counted in a child process: Linux carries a process's peak RSS over fork and exec
    # (ru_maxrss), so a parent that had loaded the tables would lend every measured command
    # its own peak.
    code = ("import deltalake, json, sys, pathlib; g = pathlib.Path(sys.argv[1]) / 'gold'; "
            "print(json.dumps({t.name: deltalake.DeltaTable(str(t)).to_pyarrow_table().num_rows "
            "for t in sorted(g.iterdir()) if (t / '_delta_log').exists()}))")
    return json.loads(subprocess.run([sys.executable, "-c", code, str(lake)], check=True,
                                     capture_output=True, text=True).stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", default="/tmp/strata-snowflake-bench")
    ap.add_argument("--insert-max-rows", type=int, default=60_000)
    ap.add_argument("--strata-bin", default=str(ROOT / "target/release/strata"))
    a = ap.parse_args()
    global STRATA
    STRATA = a.strata_bin
    work = Path(a.work) / f"sf{a.scale}"
    lake = work / "lake"
    project = work / "retail"
    if not (lake / "gold").exists():
        data = work / "data"
        strata("generate", "--out", str(data), "--scale", str(a.scale), "--dirt-rate", "0.01")
        strata("scaffold", "--data", str(data), "--lake", str(lake), "--out", str(project))
        strata("build", str(project))
    rows = gold_rows(lake)
    total = sum(rows.values())
    small = [t for t, n in rows.items() if n <= a.insert_max_rows]
    small_rows = sum(rows[t] for t in small)
    print(f"gold at SF {a.scale}: {total} rows in {len(rows)} tables; bound inserts on "
          f"{len(small)} tables, {small_rows} rows", file=sys.stderr)

    def conn(db):
        p = work / f"{db}.yaml"
        p.write_text(f"account: fakesnow\nbase_url: {URL}\nuser: strata\n"
                     f"auth: {{ type: password, password: x }}\ndatabase: {db}\nschema: GOLD\n")
        return str(p)

    small_arg = ["--tables", ",".join(small)]
    results = {k: [] for k in ["strata_copy_all", "write_pandas_all", "strata_copy_small",
                               "strata_insert_small", "write_pandas_small"]}
    py = [sys.executable, "-c", WRITE_PANDAS]
    for i in range(a.runs):
        tag = f"{int(time.time())}_{i}"
        results["strata_copy_all"].append(timed(
            [STRATA, "sync-snowflake", str(project), "--connection", conn(f"CA_{tag}")]))
        results["write_pandas_all"].append(timed(py + [str(lake), f"PA_{tag}", ",".join(rows)]))
        results["strata_copy_small"].append(timed(
            [STRATA, "sync-snowflake", str(project), "--connection", conn(f"CS_{tag}")]
            + small_arg))
        results["strata_insert_small"].append(timed(
            [STRATA, "sync-snowflake", str(project), "--connection",
             conn(f"IS_{tag}"), "--insert-rows-per-statement", "5000"] + small_arg))
        results["write_pandas_small"].append(timed(py + [str(lake), f"PS_{tag}", ",".join(small)]))
        print(f"run {i + 1}: " + ", ".join(f"{k} {v[-1][0]:.2f}s" for k, v in results.items()), file=sys.stderr)
    med, rss, every = medians(results)
    out = {
        "scale": a.scale, "gold_rows": total, "small_tables": small, "small_rows": small_rows,
        "median_seconds": {k: round(v, 2) for k, v in med.items()},
        "peak_rss_mb": {k: round(v) for k, v in rss.items()},
        "rows_per_second": {
            "strata_copy_all": round(total / med["strata_copy_all"]),
            "write_pandas_all": round(total / med["write_pandas_all"]),
            "strata_insert_small": round(small_rows / med["strata_insert_small"]),
            "strata_copy_small": round(small_rows / med["strata_copy_small"]),
        },
        "ratios": {
            "write_pandas / strata_copy (all gold)": round(med["write_pandas_all"] / med["strata_copy_all"], 2),
            "strata_insert / strata_copy (small tables)": round(med["strata_insert_small"] / med["strata_copy_small"], 2),
            "write_pandas / strata_copy (small tables)": round(med["write_pandas_small"] / med["strata_copy_small"], 2),
        },
        "all_runs": every,
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
