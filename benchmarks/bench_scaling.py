"""How the pipeline scales with the number of active tokens: windows/s and memory from 10k tokens up.

Each token count runs ``--repeat`` times, each in a fresh child process.
The child builds the production pipeline around a store that discards its
writes (``bench_memory.NullStore``) and feeds ``--windows`` 10 s windows
in which every token sends one request, so every window closes one window
per token. Figures per count, medians over the repeats:

* windows/s: windows closed divided by the pipeline's own timers
  (``RunStats.stage_seconds``) for the window, detect (slot assignment
  and detectors) and decide stages. Parsing and identity are timed apart,
  because their cost is per line, not per token;
* lines/s through the whole pipeline without the store;
* peak RSS of the child (``ru_maxrss``) and RSS per token.

A count whose estimated peak RSS exceeds ``--max-rss-gib`` is not run.
For such counts the script prints a linear estimate from the two largest
measured counts, marked as an estimate.

Usage: .venv/bin/python benchmarks/bench_scaling.py [--tokens 10000,100000,1000000,10000000] [--windows 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_memory import REPO, build_null_pipeline, feed_windows, load_averages

PER_WINDOW_STAGES = ("window", "detect", "decide")
PER_LINE_STAGES = ("parse", "identify")


def child(tokens: int, windows: int) -> dict:
    """Measure one run in this process; return the figures as a dict."""
    with tempfile.TemporaryDirectory(prefix="tokensentry-bench-scaling-") as work:
        pipeline = build_null_pipeline(Path(work))
        started = time.perf_counter()
        lines = feed_windows(pipeline, tokens, windows)
        elapsed = time.perf_counter() - started
    stages = dict(pipeline.stats.stage_seconds)
    per_window = sum(stages.get(stage, 0.0) for stage in PER_WINDOW_STAGES)
    per_line = sum(stages.get(stage, 0.0) for stage in PER_LINE_STAGES)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "tokens": tokens,
        "lines": lines,
        "windows_closed": pipeline.stats.windows,
        "windows_per_s": pipeline.stats.windows / per_window if per_window else 0.0,
        "parse_identify_lines_per_s": lines / per_line if per_line else 0.0,
        "lines_per_s": lines / elapsed,
        "peak_rss_bytes": peak_rss,
        "stage_seconds": stages,
        "detectors": [detector.detector_id for detector in pipeline.detectors],
    }


def run_child(tokens: int, windows: int) -> dict:
    command = [sys.executable, __file__, "--child", str(tokens), "--windows", str(windows)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"child for {tokens} tokens failed with exit code {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def linear_fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Return intercept and slope of the line through the last two points."""
    (x1, y1), (x2, y2) = points[-2:]
    slope = (y2 - y1) / (x2 - x1)
    return y1 - slope * x1, slope


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="10000,100000,1000000,10000000", help="comma-separated token counts")
    parser.add_argument("--windows", type=int, default=4, help="10 s windows per run, every token active in each")
    parser.add_argument("--repeat", type=int, default=3, help="runs per token count; medians are printed")
    parser.add_argument("--max-rss-gib", type=float, default=12.0, help="skip counts whose estimated peak RSS exceeds this")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.windows)))
        return

    counts = [int(value) for value in args.tokens.split(",")]
    print(f"{args.windows} windows per run; load averages at start: {load_averages()}")
    print(f"{'tokens':>11}{'windows/s':>12}{'parse+id lines/s':>18}{'lines/s':>10}{'peak RSS MiB':>14}{'RSS B/token':>13}  load after")
    measured: list[tuple[float, float]] = []
    rates: list[tuple[int, float]] = []
    for tokens in counts:
        if len(measured) >= 2:
            intercept, slope = linear_fit(measured)
            estimate = intercept + slope * tokens
            if estimate > args.max_rss_gib * 2**30:
                print(
                    f"{tokens:>11,}  not run: estimated peak RSS {estimate / 2**30:.1f} GiB > --max-rss-gib {args.max_rss_gib:g}"
                )
                continue
        runs = [run_child(tokens, args.windows) for _ in range(args.repeat)]
        windows_per_s = statistics.median(run["windows_per_s"] for run in runs)
        parse_rate = statistics.median(run["parse_identify_lines_per_s"] for run in runs)
        lines_per_s = statistics.median(run["lines_per_s"] for run in runs)
        peak = statistics.median(run["peak_rss_bytes"] for run in runs)
        measured.append((float(tokens), peak))
        rates.append((tokens, windows_per_s))
        print(
            f"{tokens:>11,}{windows_per_s:>12,.0f}{parse_rate:>18,.0f}{lines_per_s:>10,.0f}{peak / 2**20:>14,.0f}"
            f"{peak / tokens:>13,.0f}  {load_averages()}"
        )
    if len(measured) >= 2:
        intercept, slope = linear_fit(measured)
        print(
            f"peak RSS grows by {slope:,.0f} bytes per added token between the two largest counts "
            f"(intercept {intercept / 2**20:,.0f} MiB)"
        )
        for tokens in counts:
            if tokens > measured[-1][0]:
                print(
                    f"ESTIMATE, not measured: {tokens:,} tokens would need about "
                    f"{(intercept + slope * tokens) / 2**30:,.1f} GiB peak RSS with every token active in every window"
                )
    if len(rates) >= 2:
        (small, small_rate), (large, large_rate) = rates[0], rates[-1]
        print(f"windows/s at {large:,} tokens is {large_rate / small_rate:.2f} x the rate at {small:,} tokens (same run)")
    print(f"detectors: {', '.join(runs[-1]['detectors'])}")
    print(f"cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
