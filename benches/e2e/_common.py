"""Helpers shared by the end-to-end benchmarks."""
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def measured(cmd, env=None):
    """Run `cmd` in its own process: (wall seconds, CPU seconds (user + system), peak RSS bytes),
    the last two from wait4's rusage.

    Linux carries the peak RSS over fork and exec, so a command never reports less than this
    process's own peak when it forked: keep the data out of the benchmark's parent process.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode()
    if status != 0:
        sys.exit(f"command failed ({status}): {' '.join(map(str, cmd))[:300]}\n{err[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024


def timed(cmd, env=None):
    """Run `cmd` in its own process: (wall seconds, peak RSS bytes); see `measured`."""
    wall, _, rss = measured(cmd, env)
    return wall, rss


def medians(results):
    """{name: [(wall, rss)]} -> ({name: median wall}, {name: median RSS MB}, {name: all walls})."""
    med = {k: statistics.median(w for w, _ in v) for k, v in results.items() if v}
    rss = {k: statistics.median(r for _, r in v) / 2**20 for k, v in results.items() if v}
    every = {k: [round(w, 2) for w, _ in v] for k, v in results.items() if v}
    return med, rss, every


def check_versions(pinned):
    """Refuse to run unless each package in `pinned` ({name: version}) is that version."""
    import importlib
    for name, want in pinned.items():
        have = importlib.import_module(name).__version__
        if have != want:
            raise SystemExit(f"{name} {have} is installed; this benchmark is pinned to {want}: pip install {name}=={want}")


def fresh_project(strata, data, bronze, lake, project):
    """A fresh lake at `lake` holding a copy of the `bronze` tables, and the retail project
    scaffolded over it at `project` (neither timed)."""
    import shutil
    shutil.rmtree(lake, ignore_errors=True)
    shutil.copytree(bronze, Path(lake) / "bronze")
    shutil.rmtree(project, ignore_errors=True)
    subprocess.run([strata, "scaffold", "--data", str(data), "--lake", str(lake), "--out", str(project)],
                   check=True, stdout=subprocess.DEVNULL)


def model_seconds(build_output, prefixes):
    """Each model's seconds from `strata build`'s lines (`<model> built ... <seconds> s`)."""
    out = {}
    for line in build_output.splitlines():
        p = line.split()
        if len(p) > 4 and p[0].startswith(tuple(prefixes)) and p[4] == "s":
            out[p[0]] = float(p[3])
    return out
