"""Replay throughput against a bare one-regex parse loop over the same file.

Writes a synthetic NGINX combined log with token extras (default 2,000,000
lines, 20,000 tokens, event time advancing 2,000 requests per second), then
in one run, three times each, measures:

* the bare loop: read, decode and ``re.match`` one combined-format regex per
  line, taking its groups (fields as strings, nothing converted or stored);
* ``tokensentry replay`` end to end on a fresh embedded chDB store, every
  event written to the audit trail, in a child process so its peak RSS is
  its own.

Prints medians, the ratio replay / bare, the replay's peak memory and the
CPU seconds of the last replay by thread: the main thread (parse, identify,
window, detect, decide), the writer thread (Arrow conversion and the
inserts, which chDB runs on the calling thread), and native threads
(chDB's background merges and query pool).

Usage: .venv/bin/python benchmarks/bench_replay.py [--lines N] [--tokens N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

BARE = re.compile(r'^(\S+) \S+ \S+ \[([^\]]+)\] "([^"]*)" (\d{3}|-) (\d+|-) "([^"]*)" "([^"]*)"(.*)')
ROUTES = ["/v1/orders", "/v1/orders/{id}", "/v1/users", "/v1/search", "/v1/cart", "/health"]
AGENTS = ["okhttp/4.12.0", "python-requests/2.32.3", "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0", "curl/8.5.0"]


def write_log(path: Path, lines: int, tokens: int, seed: int = 1) -> None:
    """Write ``lines`` NGINX combined lines with key/key_id extras, in event-time order."""
    rng = np.random.default_rng(seed)
    weights = rng.pareto(1.2, tokens) + 0.05
    weights /= weights.sum()
    token_of = rng.choice(tokens, size=lines, p=weights)
    status = rng.choice([200, 200, 200, 200, 201, 204, 401, 404, 429, 500], size=lines)
    route = rng.integers(0, len(ROUTES), size=lines)
    agent = rng.integers(0, len(AGENTS), size=lines)
    size = rng.integers(100, 20_000, size=lines)
    start = datetime(2026, 11, 2, tzinfo=UTC).timestamp()
    with path.open("w", encoding="ascii") as out:
        for first in range(0, lines, 100_000):
            chunk = []
            for i in range(first, min(first + 100_000, lines)):
                ts = start + i / 2000.0
                stamp = datetime.fromtimestamp(ts, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
                t = token_of[i]
                chunk.append(
                    f'10.{t % 250}.{t // 250 % 250}.{t % 7 + 1} - - [{stamp}] "GET {ROUTES[route[i]]} HTTP/1.1" '
                    f'{status[i]} {size[i]} "-" "{AGENTS[agent[i]]}" rt=0.0{i % 90 + 10} '
                    f'key="sk_live_{t:08d}abcdef" key_id="-" origin="-" country="DE" req_id={i:016x}\n'
                )
            out.write("".join(chunk))


def bare_loop(path: Path) -> float:
    """Return seconds for reading, decoding and regex-parsing every line into its fields."""
    started = time.perf_counter()
    match = BARE.match
    matched = 0
    with path.open("rb") as handle:
        for line in handle:
            found = match(line.decode())
            if found:
                found.groups()
                matched += 1
    elapsed = time.perf_counter() - started
    assert matched > 0
    return elapsed


def replay(path: Path, work: Path) -> dict:
    """Run ``tokensentry replay --json`` in a child process and return its summary, peak RSS and CPU by thread."""
    data_dir = work / "replay"
    shutil.rmtree(data_dir, ignore_errors=True)
    command = [sys.executable, __file__, "--child", str(path), str(data_dir)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    summary.update(json.loads(done.stderr.strip().splitlines()[-1]))
    return summary


class ThreadCpu:
    """Samples the CPU seconds of every thread of this process from ``start`` on, keeping the last value of threads that exit.

    Python threads are grouped by their Python name (``MainThread``,
    ``tokensentry-writer``) and all other threads as ``native``: chDB's
    background merges and query pool, and any pool of pyarrow. chDB renames
    its pool threads by task (``MergeMutate`` while merging parts), so their
    names do not split merges from other work. A thread that ends between
    two samples loses at most one interval.
    """

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.last: dict[int, tuple[str, float]] = {}
        self._baseline: dict[int, float] = {}
        self._tick = os.sysconf("SC_CLK_TCK")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def start(self) -> None:
        self._sample()
        self._baseline = {tid: seconds for tid, (_, seconds) in self.last.items()}
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._sample()
        groups: Counter[str] = Counter()
        for tid, (name, seconds) in self.last.items():
            if name != "cpu-sampler":
                groups[name] += seconds - self._baseline.get(tid, 0.0)
        return {group: round(seconds, 2) for group, seconds in groups.most_common() if seconds >= 0.005}

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        python_names = {thread.native_id: thread.name for thread in threading.enumerate()}
        for entry in os.listdir("/proc/self/task"):
            stat = _read(f"/proc/self/task/{entry}/stat")
            if not stat:
                continue  # the thread ended
            name = python_names.get(int(entry), "native")
            fields = stat.rsplit(")", 1)[1].split()
            self.last[int(entry)] = (name, (int(fields[11]) + int(fields[12])) / self._tick)


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError:
        return ""


def run_child(path: str, data_dir: str) -> int:
    """Replay ``path`` in this process; print the summary on stdout and memory and CPU on stderr."""
    import resource

    from pipeline.cli import build_parser
    from pipeline.cli import main as cli_main

    # Building the parser imports every command and detector, so start-up imports are not sampled.
    build_parser()
    sampler = ThreadCpu()
    sampler.start()
    code = cli_main(["replay", path, "--data-dir", data_dir, "--json", "--no-progress"])
    cpu = sampler.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mib": peak, "cpu_s_by_thread": cpu}), file=sys.stderr)
    return code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument("--tokens", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="work directory to keep (default: a temporary one)")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="tokensentry-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "access.log"
    if not log.exists():
        print(f"writing {args.lines:,} lines to {log}", file=sys.stderr)
        write_log(log, args.lines, args.tokens)

    bare_rates, replay_rates, peaks, summaries = [], [], [], []
    for attempt in range(args.repeat):
        bare_rates.append(args.lines / bare_loop(log))
        summary = replay(log, work)
        replay_rates.append(summary["events_accepted"] / summary["elapsed_s"])
        peaks.append(summary["peak_rss_mib"])
        summaries.append(summary)
        print(f"run {attempt + 1}: bare {bare_rates[-1]:,.0f} lines/s, replay {replay_rates[-1]:,.0f} events/s", file=sys.stderr)

    bare = statistics.median(bare_rates)
    full = statistics.median(replay_rates)
    last = summaries[-1]
    print(f"file: {args.lines:,} lines, {log.stat().st_size / 2**20:.0f} MiB, {args.tokens:,} tokens")
    print(f"bare one-regex loop      median {bare:>10,.0f} lines/s")
    print(f"tokensentry replay       median {full:>10,.0f} events/s  (all events written to chDB)")
    print(f"ratio replay / bare      {full / bare:.2f}")
    print(f"replay peak RSS          median {statistics.median(peaks):,.0f} MiB")
    print(
        f"last replay: accepted {last['events_accepted']:,}, dead-lettered {last['dead_lettered']:,}, "
        f"windows {last['windows']:,}, detections {last['detections']:,}, actions {last['actions']:,}"
    )
    cpu = last["cpu_s_by_thread"]
    print(
        f"last replay CPU seconds by thread (total {sum(cpu.values()):.1f} s in {last['elapsed_s']:.1f} s): "
        + ", ".join(f"{group} {seconds:.1f}" for group, seconds in cpu.items())
    )
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        sys.exit(run_child(sys.argv[2], sys.argv[3]))
    main()
