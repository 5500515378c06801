#!/usr/bin/env python3
"""Masking baseline: the retail privacy policy (transforms/privacy/policies/retail.yaml) over
the SF 1 customers in pyarrow + hmac/hashlib + re, the way a Python job would write it:
HMAC-SHA256 hex for names, format-preserving tokens (HMAC stream mapped per character class)
for emails and cards (last four kept), a regex redaction for phones, NULL streets, postal
prefixes and birth years. The file is read once with pyarrow.json; only the masking is timed,
median of the runs. Compare with `cargo bench -p stratalake-benches --bench mask` (same file).

    python3 benches/e2e/mask_baseline.py --data /tmp/strata-bench/sf1 --runs 5
"""
import argparse
import hashlib
import hmac
import json
import re
import statistics
import time

import pyarrow as pa
import pyarrow.json as pj

KEY = b"bench-key-0123456789abcdef"
PHONE = re.compile(r"[0-9](?:[ ]?[0-9]){3}$")
DIGITS, LOWER, UPPER = "0123456789", "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def hash_(v):
    return hmac.new(KEY, v.encode(), hashlib.sha256).hexdigest()


def stream(v, n):
    out, block = b"", 0
    while len(out) < n:
        out += hmac.new(KEY, block.to_bytes(4, "big") + v.encode(), hashlib.sha256).digest()
        block += 1
    return out


def token_chars(seed, part):
    bs = stream(seed, len(part))
    res = []
    for c, b in zip(part, bs):
        if c.isdigit():
            res.append(DIGITS[b % 10])
        elif "a" <= c <= "z":
            res.append(LOWER[b % 26])
        elif "A" <= c <= "Z":
            res.append(UPPER[b % 26])
        elif c.isalpha():
            res.append(LOWER[b % 26])
        else:
            res.append(c)
    return "".join(res)


def tokenize(v, keep_last=0):
    if "@" in v:
        local, domain = v.rsplit("@", 1)
        host, _, tld = domain.rpartition(".")
        t = token_chars(v, f"{local}@{host}")
        return f"{t}.{tld}" if tld else t
    split = max(len(v) - keep_last, 0)
    return token_chars(v, v[:split]) + v[split:]


def mask(t):
    def col(name, f):
        return pa.array([None if v is None else f(v) for v in t.column(name).to_pylist()], pa.string())

    addr = t.column("address").combine_chunks()
    new_addr = pa.StructArray.from_arrays(
        [pa.nulls(len(addr), pa.string()),
         pa.array([None if v is None else v[:2] + "*" * max(len(v) - 2, 0)
                   for v in addr.field("postal_code").to_pylist()], pa.string()),
         addr.field("city"), addr.field("country")],
        names=["street", "postal_code", "city", "country"])
    cols = {
        "first_name": col("first_name", hash_),
        "last_name": col("last_name", hash_),
        "email": col("email", tokenize),
        "phone": col("phone", lambda v: PHONE.sub("****", v)),
        "birth_date": col("birth_date", lambda v: v[:4] + "-01-01"),
        "card_number": col("card_number", lambda v: tokenize(v, 4)),
        "address": new_addr,
    }
    for name, arr in cols.items():
        t = t.set_column(t.schema.get_field_index(name), name, arr)
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/tmp/strata-bench/sf1")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    # As bronze holds it: birth dates as text (pyarrow would infer timestamps).
    t = pj.read_json(f"{a.data}/customers.ndjson",
                     parse_options=pj.ParseOptions(explicit_schema=pa.schema([("birth_date", pa.string())])))
    times = []
    for _ in range(a.runs):
        start = time.perf_counter()
        out = mask(t)
        times.append(time.perf_counter() - start)
    assert out.num_rows == t.num_rows
    med = statistics.median(times)
    print(json.dumps({"rows": t.num_rows, "arrow_mb": round(t.nbytes / 1e6, 1), "median_seconds": round(med, 3),
                      "rows_per_second": round(t.num_rows / med), "mb_per_second": round(t.nbytes / 1e6 / med, 1),
                      "all_runs": [round(x, 3) for x in times]}))


if __name__ == "__main__":
    main()
