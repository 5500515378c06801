#!/usr/bin/env python3
"""End-to-end benchmark: bronze to silver to gold.

The same bronze Delta tables (loaded once by Strata's bronze pipelines; their data files are
plain Parquet) go through silver and gold three ways, each in its own process, run
alternately; wall time and peak RSS (wait4 ru_maxrss) per run, medians reported:

- Strata: `strata build` of the retail project's silver and gold models (`--select
  silver.*,gold.*`): five merge models (mask, conform, validate with quarantine, explode, MERGE
  into Delta by key) and ten gold models (DataFusion SQL into Delta tables), per-model times
  from the build's own lines.
- DuckDB and Polars: the same rules and the same gold SQL over the bronze Parquet files,
  writing Parquet (no Delta log, no MERGE, no quarantine table: less work than Strata does).

Usage:

    cargo build --release -p stratalake-cli
    pip install duckdb==2.0.1 polars==2.1.0
    python3 benches/e2e/medallion.py --scale 1 --runs 3

The peers' versions are pinned (DuckDB's SQL dialect changes between majors): the script
refuses others.
"""
import argparse
import json
import shutil
import subprocess
from pathlib import Path

from _common import ROOT, check_versions, fresh_project, medians, model_seconds, timed

PINNED = {"duckdb": "2.0.1", "polars": "2.1.0"}

CURRENCIES = ["AED", "AUD", "BGN", "BRL", "CAD", "CHF", "CNY", "CZK", "DKK", "EUR", "GBP", "HKD", "HUF",
              "IDR", "ILS", "INR", "ISK", "JPY", "KRW", "MXN", "MYR", "NOK", "NZD", "PHP", "PLN", "RON",
              "SAR", "SEK", "SGD", "THB", "TRY", "TWD", "USD", "ZAR"]
STATUSES = ["placed", "paid", "shipped", "delivered", "cancelled", "returned"]

# Silver orders (valid rows, newest version per order), order lines, and the gold tables:
# the statements Strata runs, in DuckDB's dialect.
def duckdb_script(bronze, out):
    cur = ", ".join(f"'{c}'" for c in CURRENCIES)
    st = ", ".join(f"'{s}'" for s in STATUSES)
    return f"""
import duckdb
con = duckdb.connect()
con.sql("SET preserve_insertion_order = false")
src = lambda t: f"read_parquet('{bronze}/{{t}}/_ingest_date=*/*.parquet', hive_partitioning = false)"
con.sql(f'''CREATE TABLE orders AS SELECT * EXCLUDE (rn) FROM (
  SELECT order_id, partner_id, customer_id, status, channel, currency,
         created_at::TIMESTAMPTZ AS created_at, updated_at::TIMESTAMPTZ AS updated_at, lines,
         total_amount, coupon_code,
         row_number() OVER (PARTITION BY order_id ORDER BY updated_at DESC) AS rn
  FROM {{src('orders')}}
  WHERE order_id IS NOT NULL AND partner_id IS NOT NULL AND customer_id IS NOT NULL
    AND created_at IS NOT NULL AND updated_at IS NOT NULL AND total_amount IS NOT NULL
    AND lines IS NOT NULL AND currency IN ({cur}) AND status IN ({st})
    AND list_min(list_transform(lines, lambda x: x.quantity)) >= 1
    AND list_min(list_transform(lines, lambda x: x.unit_price)) >= 0) WHERE rn = 1''')
con.sql('''CREATE TABLE order_lines AS SELECT order_id, partner_id, customer_id, status, currency,
  created_at, updated_at, l.line_no, l.product_id, l.quantity, l.unit_price, l.discount
  FROM (SELECT *, unnest(lines) AS l FROM orders)''')
con.sql(f"CREATE TABLE partners AS SELECT partner_id, name, country, city, currency, onboarded_at FROM {{src('partners')}}")
con.sql(f"CREATE TABLE products AS SELECT product_id, partner_id, name, category, price, currency FROM {{src('products')}}")
con.sql(f"CREATE TABLE customers AS SELECT customer_id, address.city AS city, address.country AS country, marketing_opt_in, created_at FROM {{src('customers')}}")
for t in ['orders', 'order_lines']:
    con.sql(f"COPY {{t}} TO '{out}/silver_{{t}}.parquet' (FORMAT parquet, COMPRESSION zstd)")
gold = {{
 'fact_order_line': "SELECT order_id, line_no, created_at::DATE AS order_date, partner_id, customer_id, product_id, currency, status, quantity, unit_price, discount, (quantity::DECIMAL(12,2) * unit_price - discount)::DECIMAL(14,2) AS line_amount FROM order_lines",
 'daily_revenue': "SELECT created_at::DATE AS order_date, partner_id, currency, COUNT(*) AS orders, SUM(total_amount)::DECIMAL(18,2) AS revenue, SUM(CASE WHEN status IN ('cancelled','returned') THEN 0 ELSE total_amount END)::DECIMAL(18,2) AS net_revenue FROM orders GROUP BY ALL",
 'orders_by_status': "SELECT created_at::DATE AS order_date, status, COUNT(*) AS orders FROM orders GROUP BY ALL",
 'product_performance': "WITH per_order AS (SELECT product_id, currency, order_id, SUM(quantity) AS units, SUM(quantity::DECIMAL(12,2) * unit_price - discount) AS revenue, SUM(CASE WHEN status = 'cancelled' THEN quantity ELSE 0 END) AS cancelled_units, SUM(CASE WHEN status = 'returned' THEN quantity ELSE 0 END) AS returned_units FROM order_lines GROUP BY ALL) SELECT product_id, currency, COUNT(*) AS orders, SUM(units)::BIGINT AS units, SUM(revenue)::DECIMAL(18,2) AS revenue, SUM(cancelled_units)::BIGINT AS cancelled_units, SUM(returned_units)::BIGINT AS returned_units FROM per_order GROUP BY ALL",
 'customer_activity': "WITH last AS (SELECT MAX(created_at::DATE) AS d FROM orders) SELECT customer_id, currency, COUNT(*) AS orders, SUM(total_amount)::DECIMAL(18,2) AS spend, MIN(created_at) AS first_order_at, MAX(created_at) AS last_order_at, (ANY_VALUE(last.d) - MAX(created_at::DATE))::BIGINT AS recency_days, COUNT(*) AS frequency, SUM(total_amount)::DECIMAL(18,2) AS monetary FROM orders CROSS JOIN last GROUP BY customer_id, currency",
 'partner_activity': "SELECT o.partner_id, p.name AS partner_name, o.currency, COUNT(*) AS orders, COUNT(DISTINCT o.customer_id) AS customers, SUM(o.total_amount)::DECIMAL(18,2) AS revenue, MIN(o.created_at) AS first_order_at, MAX(o.created_at) AS last_order_at FROM orders o LEFT JOIN partners p USING (partner_id) GROUP BY ALL",
 'dim_customer': "SELECT * FROM customers", 'dim_partner': "SELECT * FROM partners", 'dim_product': "SELECT * FROM products",
 'dim_date': "SELECT DISTINCT created_at::DATE AS date, year(created_at) AS year, month(created_at) AS month, day(created_at) AS day, dayofweek(created_at) AS day_of_week FROM orders",
}}
for name, sql in gold.items():
    con.sql(f"COPY ({{sql}}) TO '{out}/gold_{{name}}.parquet' (FORMAT parquet, COMPRESSION zstd)")
"""


def polars_script(bronze, out):
    return f"""
import polars as pl
src = lambda t: pl.scan_parquet('{bronze}/' + t + '/_ingest_date=*/*.parquet', hive_partitioning=False)
cur, st = {CURRENCIES!r}, {STATUSES!r}
o = (src('orders')
     .filter(pl.col('order_id').is_not_null() & pl.col('partner_id').is_not_null() & pl.col('customer_id').is_not_null()
             & pl.col('created_at').is_not_null() & pl.col('updated_at').is_not_null() & pl.col('total_amount').is_not_null()
             & pl.col('lines').is_not_null() & pl.col('currency').is_in(cur) & pl.col('status').is_in(st)
             & (pl.col('lines').list.eval(pl.element().struct.field('quantity')).list.min() >= 1)
             & (pl.col('lines').list.eval(pl.element().struct.field('unit_price')).list.min() >= 0))
     .sort('updated_at').unique('order_id', keep='last')
     .select('order_id', 'partner_id', 'customer_id', 'status', 'channel', 'currency', 'created_at', 'updated_at', 'lines', 'total_amount', 'coupon_code')
     ).collect()
o.write_parquet('{out}/silver_orders.parquet', compression='zstd')
lines = (o.select('order_id', 'partner_id', 'customer_id', 'status', 'currency', 'created_at', 'updated_at', 'lines')
         .explode('lines').unnest('lines'))
lines.write_parquet('{out}/silver_order_lines.parquet', compression='zstd')
o, lines = o.lazy(), lines.lazy()
partners = src('partners').select('partner_id', 'name', 'country', 'city', 'currency', 'onboarded_at')
amount = (pl.col('quantity').cast(pl.Decimal(12, 2)) * pl.col('unit_price') - pl.col('discount'))
day = pl.col('created_at').dt.date()
gold = {{
 'fact_order_line': lines.select('order_id', 'line_no', day.alias('order_date'), 'partner_id', 'customer_id', 'product_id', 'currency', 'status', 'quantity', 'unit_price', 'discount', amount.alias('line_amount')),
 'daily_revenue': o.group_by(day.alias('order_date'), 'partner_id', 'currency').agg(pl.len().alias('orders'), pl.col('total_amount').sum().alias('revenue'), pl.when(pl.col('status').is_in(['cancelled', 'returned'])).then(0).otherwise(pl.col('total_amount')).sum().alias('net_revenue')),
 'orders_by_status': o.group_by(day.alias('order_date'), 'status').agg(pl.len().alias('orders')),
 'product_performance': lines.group_by('product_id', 'currency').agg(pl.col('order_id').n_unique().alias('orders'), pl.col('quantity').sum().alias('units'), amount.sum().alias('revenue'), pl.when(pl.col('status') == 'cancelled').then(pl.col('quantity')).otherwise(0).sum().alias('cancelled_units'), pl.when(pl.col('status') == 'returned').then(pl.col('quantity')).otherwise(0).sum().alias('returned_units')),
 'customer_activity': o.group_by('customer_id', 'currency').agg(pl.len().alias('orders'), pl.col('total_amount').sum().alias('spend'), pl.col('created_at').min().alias('first_order_at'), pl.col('created_at').max().alias('last_order_at')).with_columns((o.select(day.max()).collect().item() - pl.col('last_order_at').dt.date()).dt.total_days().alias('recency_days'), pl.col('orders').alias('frequency'), pl.col('spend').alias('monetary')),
 'partner_activity': o.group_by('partner_id', 'currency').agg(pl.len().alias('orders'), pl.col('customer_id').n_unique().alias('customers'), pl.col('total_amount').sum().alias('revenue'), pl.col('created_at').min().alias('first_order_at'), pl.col('created_at').max().alias('last_order_at')).join(partners.select('partner_id', pl.col('name').alias('partner_name')), on='partner_id', how='left'),
 'dim_customer': src('customers').select('customer_id', pl.col('address').struct.field('city').alias('city'), pl.col('address').struct.field('country').alias('country'), 'marketing_opt_in', 'created_at'),
 'dim_partner': partners,
 'dim_product': src('products').select('product_id', 'partner_id', 'name', 'category', 'price', 'currency'),
 'dim_date': o.select(day.alias('date'), pl.col('created_at').dt.year().alias('year'), pl.col('created_at').dt.month().alias('month'), pl.col('created_at').dt.day().alias('day'), pl.col('created_at').dt.weekday().alias('day_of_week')).unique(),
}}
for name, lf in gold.items():
    lf.collect().write_parquet('{out}/gold_' + name + '.parquet', compression='zstd')
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dirt-rate", type=float, default=0.01)
    ap.add_argument("--strata", nargs="+", default=[str(ROOT / "target/release/strata")],
                    help="one or more strata binaries (say, before and after a change), run interleaved")
    ap.add_argument("--only-strata", action="store_true", help="skip the peers")
    ap.add_argument("--work", default=str(ROOT / "benches/data/medallion"))
    args = ap.parse_args()
    strata = args.strata[0]
    work = Path(args.work)
    data = work / f"data-sf{args.scale}"
    if not (data / "manifest.json").exists():
        subprocess.run([strata, "generate", "--scale", str(args.scale), "--dirt-rate",
                        str(args.dirt_rate), "--out", str(data)], check=True)
    manifest = json.loads((data / "manifest.json").read_text())
    # Bronze once (not timed): Delta tables whose data files are the peers' Parquet input.
    base = work / f"lake-sf{args.scale}"
    if not (base / "bronze/orders/_delta_log").exists():
        shutil.rmtree(base, ignore_errors=True)
        pipes = work / "project-base"
        subprocess.run([strata, "scaffold", "--data", str(data), "--lake", str(base), "--out", str(pipes)],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run([strata, "build", str(pipes), "--select", "bronze.*"], check=True,
                       stdout=subprocess.DEVNULL)
    bronze = base / "bronze"
    peers = [] if args.only_strata else [("duckdb", duckdb_script), ("polars", polars_script)]
    if peers:
        check_versions(PINNED)
    names = ["strata" if k == 0 else f"strata[{Path(s).parent.name}]" for k, s in enumerate(args.strata)]
    results = {n: [] for n in names + [p for p, _ in peers]}
    per_model = {n: {} for n in names}
    for _ in range(args.runs):
        for name, binary in zip(names, args.strata):
            # Strata: a fresh lake holding a copy of bronze; silver models, then gold.
            lake, pipes = work / "lake-run", work / "project-run"
            fresh_project(binary, data, bronze, lake, pipes)
            log = work / "strata-build.txt"
            script = work / "strata-medallion.sh"
            script.write_text(f"set -e\n'{binary}' build '{pipes}' --select 'silver.*,gold.*' > '{log}'\n")
            results[name].append(timed(["bash", str(script)]))
            for model, secs in model_seconds(log.read_text(), ["silver.", "gold."]).items():
                per_model[name].setdefault(model, []).append(secs)
        for name, make in peers:
            out = work / f"out-{name}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            results[name].append(timed(["python3", "-c", make(bronze, out)]))
    med, rss, every = medians(results)
    row = {
        "scale": args.scale, "orders": manifest["orders"], "runs": args.runs,
        "seconds": {k: round(v, 2) for k, v in med.items()},
        "ratio_vs_strata": {k: round(v / med["strata"], 2) for k, v in med.items()},
        "ratio_vs_duckdb": {k: round(v / med["duckdb"], 2) for k, v in med.items()} if "duckdb" in med else None,
        "peak_rss_mb": {k: round(v, 1) for k, v in rss.items()},
        "all_seconds": every,
        "strata_model_seconds": {n: {k: sorted(v)[len(v) // 2] for k, v in m.items()} for n, m in per_model.items()},
    }
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
