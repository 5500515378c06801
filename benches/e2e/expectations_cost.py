#!/usr/bin/env python3
"""What the retail project's expectations cost: `strata build --select 'silver.*'` at a scale
factor, with the project's expectations and with them stripped, interleaved, medians of N.

    python3 benches/e2e/expectations_cost.py --scale 1 --runs 3 --strata target/release/strata

Reuses medallion.py's work directory (the generated data and the bronze lake): run that one
first, or give --work where they are.
"""

import argparse
import json
import subprocess
import time
from pathlib import Path

from _common import fresh_project, model_seconds

ROOT = Path(__file__).resolve().parents[2]


def strip_expectations(project: Path) -> int:
    """Remove every `expectations:` block from the models' settings; how many were removed."""
    removed = 0
    for f in project.glob("models/*/*.sql"):
        out, skipping = [], False
        for line in f.read_text().splitlines(keepends=True):
            if line.startswith("expectations:"):
                skipping, removed = True, removed + 1
                continue
            if skipping and (line.startswith((" ", "-", "#"))):
                continue
            skipping = False
            out.append(line)
        f.write_text("".join(out))
    return removed


def run(strata: str, data: Path, bronze: Path, work: Path, strip: bool) -> dict:
    lake, project = work / "lake-expect", work / "project-expect"
    fresh_project(strata, data, bronze, lake, project)
    if strip:
        assert strip_expectations(project) > 0
    t = time.monotonic()
    out = subprocess.run([strata, "build", str(project), "--select", "silver.*"], check=True,
                         capture_output=True, text=True).stdout
    wall = time.monotonic() - t
    models = model_seconds(out, ["silver."])
    return {"wall": wall, "models": models}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--strata", default=str(ROOT / "target/release/strata"))
    ap.add_argument("--work", default=str(ROOT / "benches/data/medallion"))
    args = ap.parse_args()
    work = Path(args.work)
    data = work / f"data-sf{args.scale}"
    bronze = work / f"lake-sf{args.scale}" / "bronze"
    if not (bronze / "orders/_delta_log").exists():
        raise SystemExit(f"no bronze lake under {bronze}: run benches/e2e/medallion.py first")
    runs = {"with": [], "without": []}
    for _ in range(args.runs):
        runs["with"].append(run(args.strata, data, bronze, work, False))
        runs["without"].append(run(args.strata, data, bronze, work, True))

    def median(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2]

    res = {}
    for k, rs in runs.items():
        res[k] = {"wall": round(median([r["wall"] for r in rs]), 2),
                  "models": {m: round(median([r["models"][m] for r in rs]), 2) for m in rs[0]["models"]}}
    res["cost_percent"] = round((res["with"]["wall"] / res["without"]["wall"] - 1) * 100, 1)
    print(json.dumps({"scale": args.scale, "runs": args.runs, **res}, indent=1))


if __name__ == "__main__":
    main()
