#!/usr/bin/env python3
"""End-to-end benchmark: NDJSON of a shape the generator does not write, to zstd Parquet.

The data set is written here, not by `strata generate`, so that the decoder is measured on a
shape nobody tuned it for: purchases keyed by a string reference, a nested store and buyer (a
buyer's geo two levels down), ISO timestamps with milliseconds, floats for money, line items
that each hold a nested attribute object and a list of discount codes, a payment object, tags,
and nulls. `--bad-lines` malformed lines (cut short, a stray comma, text that is not JSON) are
spread through the file for the dirty run.

Each tool converts the same file with its schema inferred, alternately, each in its own
process; wall time, CPU time (user + system, from wait4) and peak RSS are measured per run and
the medians reported:

- Strata: `strata run` (release build) with `schema` left out (inferred from a bounded sample)
  into the Parquet sink (zstd, exactly-once manifest); dirty: every bad line quarantined with
  its line and raw text;
- DuckDB: `COPY (SELECT * FROM read_json_auto(...)) TO ... (FORMAT parquet, COMPRESSION zstd)`;
  dirty: `ignore_errors = true` (bad lines dropped, not kept);
- pyarrow: `pyarrow.json.read_json` then `pyarrow.parquet.write_table(..., compression="zstd")`
  (clean only: it stops at the first bad line);
- Polars: `scan_ndjson(...).sink_parquet(..., compression="zstd")` (clean only).

Usage:

    cargo build --release -p stratalake-cli
    pip install duckdb==2.0.1 polars==2.1.0 pyarrow==26.0.1
    python3 benches/e2e/ndjson_shapes.py --records 1000000 --runs 3

The peers' versions are pinned: the script refuses others.
"""
import argparse
import json
import random
import shutil
import statistics
import sys
from pathlib import Path

from _common import ROOT, measured, check_versions

PINNED = {"duckdb": "2.0.1", "polars": "2.1.0", "pyarrow": "26.0.1"}




REGIONS = ["EU-W", "EU-N", "US-E", "US-W", "APAC", "LATAM"]
TIERS = ["none", "silver", "gold", "platinum"]
STATES = ["open", "settled", "refunded", "void"]
COUNTRIES = ["DE", "FR", "NL", "US", "CA", "BR", "JP", "AU", "IN", "ZA"]
COLORS = ["red", "blue", "green", "black", "white", None]
METHODS = ["card", "paypal", "klarna", "giftcard", "bank"]
WORDS = ["promo", "mobile", "web", "first", "repeat", "bulk", "b2b", "gift", "express"]


def record(rng, i):
    lines = []
    for _ in range(rng.choice((1, 1, 2, 2, 3, 4, 6))):
        qty = rng.randint(1, 9)
        lines.append({
            "sku": f"SK{rng.randint(1, 250_000):07d}",
            "qty": qty,
            "price": round(rng.uniform(0.5, 400.0), 2),
            "tax_rate": rng.choice((0.0, 0.07, 0.19, 0.2)),
            "attrs": {"color": rng.choice(COLORS), "size": rng.choice(("S", "M", "L", "XL", None)),
                      "weight_g": rng.randint(10, 25_000)},
            "discounts": rng.sample(("SPRING", "VIP", "BUNDLE", "CLEAR"), rng.randint(0, 2)),
        })
    amount = round(sum(l["qty"] * l["price"] for l in lines), 2)
    day = 1 + i % 28
    return {
        "purchase_ref": f"PR-{i:09d}-{rng.randint(0, 0xFFFF):04x}",
        "store": {"id": rng.randint(1, 5_000), "region": rng.choice(REGIONS), "name": f"Store {rng.randint(1, 5_000)}"},
        "buyer": {
            "uid": f"u{rng.randint(1, 2_000_000):08d}",
            "email": f"user{rng.randint(1, 2_000_000)}@example.org",
            "tier": rng.choice(TIERS),
            "geo": {"country": rng.choice(COUNTRIES), "postcode": f"{rng.randint(1000, 99999)}",
                    "lat": round(rng.uniform(-60, 70), 5), "lon": round(rng.uniform(-180, 180), 5)},
        },
        "placed": f"2026-03-{day:02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999):03d}Z",
        "state": rng.choice(STATES),
        "lines": lines,
        "payment": {"method": rng.choice(METHODS), "amount": amount, "captured": rng.random() < 0.9},
        "gift": rng.random() < 0.05,
        "notes": None if rng.random() < 0.8 else "leave at the " + rng.choice(("door", "desk", "neighbour")),
        "tags": rng.sample(WORDS, rng.randint(0, 3)),
    }


def bad_line(rng, i):
    good = json.dumps(record(rng, i), separators=(",", ":"))
    kind = i % 3
    if kind == 0:
        return good[: rng.randint(10, len(good) - 2)]  # cut short
    if kind == 1:
        return good[:-1] + ",}"  # a stray comma
    return "ERROR 502 upstream returned html <html>" + str(i)


def write_data(path, records, bad, seed=20):
    """The data set, deterministic for (records, bad, seed)."""
    rng = random.Random(seed)
    bad_at = set(rng.sample(range(records), bad)) if bad else set()
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        for i in range(records):
            if i in bad_at:
                f.write(bad_line(rng, i) + "\n")
            else:
                f.write(json.dumps(record(rng, i), separators=(",", ":")) + "\n")
    tmp.rename(path)


def data_file(work, records, bad):
    (work / "in").mkdir(parents=True, exist_ok=True)
    path = work / "in" / f"purchases-{records}-{bad}.ndjson"
    if not path.exists():
        print(f"writing {path} ...", file=sys.stderr, flush=True)
        write_data(path, records, bad)
    return path


def strata_cmd(strata, work, src, out, tag):
    pipeline = work / f"shapes-{tag}.yaml"
    pipeline.write_text(
        "pipeline: shapes\nsource:\n  files:\n"
        f"    root: '{src.parent}'\n    include: [\"{src.name}\"]\n    format: ndjson\n"
        f"sink:\n  parquet:\n    root: '{out / 'strata'}'\ncheckpoint: memory\n")
    return [strata, "run", "--quiet", str(pipeline)]


def duckdb_cmd(src, out, dirty):
    opts = ", ignore_errors = true" if dirty else ""
    sql = (f"COPY (SELECT * FROM read_json_auto('{src}'{opts})) TO '{out / 'duckdb.parquet'}' "
           "(FORMAT parquet, COMPRESSION zstd)")
    return [sys.executable, "-c", f"import duckdb; duckdb.sql({sql!r})"]


def pyarrow_cmd(src, out):
    code = ("import pyarrow.json as j, pyarrow.parquet as pq; "
            f"pq.write_table(j.read_json({str(src)!r}), {str(out / 'pyarrow.parquet')!r}, compression='zstd')")
    return [sys.executable, "-c", code]


def polars_cmd(src, out):
    code = ("import polars as pl; "
            f"pl.scan_ndjson({str(src)!r}).sink_parquet({str(out / 'polars.parquet')!r}, compression='zstd')")
    return [sys.executable, "-c", code]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, nargs="+", default=[1_000_000])
    ap.add_argument("--bad-lines", type=int, default=500)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--strata", nargs="+", default=[str(ROOT / "target/release/strata")],
                    help="one or more strata binaries (e.g. release and dist builds), run interleaved")
    ap.add_argument("--only-strata", action="store_true", help="skip the peers")
    ap.add_argument("--work", default=str(ROOT / "benches/data/shapes"))
    args = ap.parse_args()
    if not args.only_strata:
        check_versions(PINNED)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out = work / "out"
    rows = []
    for n in args.records:
        clean = data_file(work, n, 0)
        dirty = data_file(work, n, args.bad_lines) if args.bad_lines else None
        cmds = {}
        for k, s in enumerate(args.strata):
            name = "strata" if k == 0 else f"strata[{Path(s).parent.name}]"
            cmds[name] = strata_cmd(s, work, clean, out, "clean")
            if dirty:
                cmds[name + " dirty"] = strata_cmd(s, work, dirty, out, "dirty")
        if not args.only_strata:
            cmds["duckdb"] = duckdb_cmd(clean, out, False)
            if dirty:
                cmds["duckdb dirty"] = duckdb_cmd(dirty, out, True)
            cmds["pyarrow"] = pyarrow_cmd(clean, out)
            cmds["polars"] = polars_cmd(clean, out)
        results = {k: [] for k in cmds}
        for _ in range(args.runs):
            for name, cmd in cmds.items():
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True)
                results[name].append(measured(cmd))
        base = statistics.median(r[0] for r in results.get("duckdb", results["strata"]))
        base_cpu = statistics.median(r[1] for r in results.get("duckdb", results["strata"]))
        mb = clean.stat().st_size / 1e6
        for name, rs in results.items():
            wall = statistics.median(r[0] for r in rs)
            cpu = statistics.median(r[1] for r in rs)
            row = {
                "records": n, "input_mb": round(mb, 1), "tool": name,
                "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                "rss_mb": round(statistics.median(r[2] for r in rs) / 2**20),
                "x_duckdb_wall": round(wall / base, 2), "x_duckdb_cpu": round(cpu / base_cpu, 2),
                "mb_per_cpu_s": round(mb / cpu, 1),
                "all_wall_s": [round(r[0], 2) for r in rs],
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| records | input MB | tool | wall s | CPU s | peak RSS MB | x DuckDB wall | x DuckDB CPU | MB per CPU-second |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['records']} | {r['input_mb']} | {r['tool']} | {r['wall_s']} | {r['cpu_s']} | {r['rss_mb']} | "
              f"{r['x_duckdb_wall']} | {r['x_duckdb_cpu']} | {r['mb_per_cpu_s']} |")


if __name__ == "__main__":
    main()
