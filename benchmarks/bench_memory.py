"""Memory of the pipeline state per active token at 10k, 100k and 1M tokens.

Each token count runs in a fresh child process. The child builds the
production pipeline (``pipeline.assemble.build_pipeline``, default policy)
around a store that discards every write, so only the pipeline's own state
is measured: open windows, the subject index, detector arrays, policy
state and the token hasher. It then feeds three 10 s windows in which every
token sends one request (NGINX combined lines with a ``key_id`` extra, as
``tokensentry simulate`` writes them). Afterwards the first two windows are
closed and learned, and the third is open with one pending event per token,
the steady state of a stream in which every token is active.

Two figures per token count:

* tracemalloc: Python and numpy allocations still live after the three
  windows minus those before the pipeline was built, after ``gc.collect()``;
* RSS: resident set size (``psutil``) after minus before, which adds
  allocator slack and freed-but-kept pages.

Both are divided by the token count. Memory is deterministic for a given
input, so each count runs once (``--repeat`` runs more and prints medians).

Usage: .venv/bin/python benchmarks/bench_memory.py [--tokens 10000,100000,1000000] [--repeat 1]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

T0 = 1_772_409_600  # 2026-03-02T00:00:00Z, a multiple of 10 s
WINDOW_S = 10
BATCH_LINES = 20_000
ROUTES = ("/v1/orders", "/v1/orders/42", "/v1/users", "/v1/products?page=3", "/v1/status")
AGENTS = ("okhttp/4.12.0", "python-requests/2.32.3", "axios/1.6.8", "Java/17.0.10")


class NullStore:
    """An audit store that accepts and discards every write, so only pipeline state stays in memory."""

    def write_events(self, columns) -> int:
        return len(columns["ts"])

    def write_windows(self, columns) -> int:
        return len(columns["window_id"])

    def write_detections(self, detections) -> int:
        return len(detections)

    def write_actions(self, actions, published: bool) -> int:
        return len(actions)

    def write_dead_letters(self, letters) -> int:
        return len(letters)

    def close(self) -> None:
        pass


def window_lines(first: int, last: int, tokens: int, window: int) -> list[bytes]:
    """Return one line per token in ``[first, last)`` for ``window``, in event-time order.

    Token ``i`` sends at second ``i * WINDOW_S // tokens`` of the window, so
    lines of consecutive tokens are in time order and every window contains
    every token once.
    """
    lines = []
    for i in range(first, last):
        second = T0 + window * WINDOW_S + i * WINDOW_S // tokens
        stamp = datetime.fromtimestamp(second, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
        lines.append(
            f'10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255} - - [{stamp}] "GET {ROUTES[i % 5]} HTTP/1.1" 200 {200 + i % 5000} '
            f'"-" "{AGENTS[i % 4]}" rt=0.0{10 + i % 80} key="sk_live_{i:024d}" key_id="key_{i:08d}" '
            f'origin="-" country="DE" req_id={i:016x}'.encode()
        )
    return lines


def build_null_pipeline(data_dir: Path):
    """Return the production pipeline wired around a ``NullStore``."""
    from pipeline.assemble import build_pipeline
    from pipeline.config import load_settings

    settings = load_settings(None, data_dir=data_dir, window_s=float(WINDOW_S))
    return build_pipeline(settings, store=NullStore(), log_format="nginx_combined")


def feed_windows(pipeline, tokens: int, windows: int) -> int:
    """Feed ``windows`` windows of one request per token, in batches of ``BATCH_LINES``; return lines fed."""
    from pipeline.sources.base import LineBatch

    position = 1
    for window in range(windows):
        for first in range(0, tokens, BATCH_LINES):
            lines = window_lines(first, min(first + BATCH_LINES, tokens), tokens, window)
            pipeline.process(LineBatch("bench", -1, lines, list(range(position, position + len(lines))), 0))
            position += len(lines)
    return position - 1


def state_breakdown(pipeline, tokens: int) -> dict[str, float]:
    """Return bytes per token the components report about themselves (arrays only, no Python objects)."""
    detector_bytes = sum(detector.state_nbytes() for detector in pipeline.detectors)
    return {
        "index_bytes_per_token": pipeline.index.nbytes / tokens,
        "detector_arrays_bytes_per_token": detector_bytes / tokens,
        "pending_events": pipeline.windows.pending_events,
    }


def child(tokens: int) -> dict:
    """Measure one token count in this process; return the figures as a dict."""
    process = psutil.Process()
    with tempfile.TemporaryDirectory(prefix="tokensentry-bench-memory-") as work:
        # A throw-away run first, so imports, compiled patterns and caches are not counted.
        feed_windows(build_null_pipeline(Path(work)), 100, windows=3)
        gc.collect()
        rss_before = process.memory_info().rss
        tracemalloc.start()
        traced_before, _ = tracemalloc.get_traced_memory()
        started = time.perf_counter()
        pipeline = build_null_pipeline(Path(work))
        lines = feed_windows(pipeline, tokens, windows=3)
        elapsed = time.perf_counter() - started
        gc.collect()
        traced_after, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss_after = process.memory_info().rss
        return {
            "tokens": tokens,
            "lines": lines,
            "windows_closed": pipeline.stats.windows,
            "subjects": len(pipeline.index),
            "detectors": [detector.detector_id for detector in pipeline.detectors],
            "traced_bytes_per_token": (traced_after - traced_before) / tokens,
            "traced_peak_bytes_per_token": (traced_peak - traced_before) / tokens,
            "rss_bytes_per_token": (rss_after - rss_before) / tokens,
            "rss_after_mib": rss_after / 2**20,
            "seconds": elapsed,
            **state_breakdown(pipeline, tokens),
        }


def marginal(first: dict, second: dict, key: str) -> float:
    """Return the growth of a per-token figure between two token counts, per added token."""
    total_first = first[key] * first["tokens"]
    total_second = second[key] * second["tokens"]
    return (total_second - total_first) / (second["tokens"] - first["tokens"])


def run_child(tokens: int) -> dict:
    """Run ``child`` in a fresh interpreter so RSS figures do not inherit earlier runs."""
    command = [sys.executable, __file__, "--child", str(tokens)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"child for {tokens} tokens failed with exit code {done.returncode}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def load_averages() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="10000,100000,1000000", help="comma-separated token counts")
    parser.add_argument("--repeat", type=int, default=1, help="runs per token count; medians are printed")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return

    counts = [int(value) for value in args.tokens.split(",")]
    print(f"load averages at start: {load_averages()}")
    header = (
        f"{'tokens':>10}{'traced B/token':>16}{'RSS B/token':>13}{'index B/tok':>13}{'detector B/tok':>16}"
        f"{'pending':>10}{'run s':>8}  load after"
    )
    print(header)
    medians: list[dict] = []
    for tokens in counts:
        runs = [run_child(tokens) for _ in range(args.repeat)]
        figures = {key: statistics.median(run[key] for run in runs) for key in runs[0] if key != "detectors"}
        figures["detectors"] = runs[0]["detectors"]
        medians.append(figures)
        print(
            f"{tokens:>10,}{figures['traced_bytes_per_token']:>16,.0f}{figures['rss_bytes_per_token']:>13,.0f}"
            f"{figures['index_bytes_per_token']:>13,.0f}{figures['detector_arrays_bytes_per_token']:>16,.0f}"
            f"{figures['pending_events']:>10,.0f}{figures['seconds']:>8.1f}  {load_averages()}"
        )
    for first, second in zip(medians, medians[1:], strict=False):
        print(
            f"per added token from {first['tokens']:,} to {second['tokens']:,}: "
            f"traced {marginal(first, second, 'traced_bytes_per_token'):,.0f} B, "
            f"RSS {marginal(first, second, 'rss_bytes_per_token'):,.0f} B"
        )
    print(f"detectors: {', '.join(medians[-1]['detectors'])}")


if __name__ == "__main__":
    main()
