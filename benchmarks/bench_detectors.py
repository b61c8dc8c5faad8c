"""Benchmark the detector set: closed windows per second, per detector and for the whole set,
and bytes of state per token at 1M tokens.

Usage: .venv/bin/python benchmarks/bench_detectors.py [--tokens 10000] [--windows 36] [--repeats 3]

Throughput: synthetic traffic for ``--tokens`` tokens over ``--windows``
10 s windows (requests per window drawn from a log-normal, median about 4,
a few tokens at hundreds), 10 % of tokens restricted in the registry
(scopes, countries, origins) and using them as allowed, 30 % in accounts,
0.05 % of requests from a blocklisted network: a mostly benign workload,
so few detections are built. The window stage runs once, untimed; each
repeat then runs fresh detectors over every batch, timing only ``detect``
calls after the first 12 windows (the per-token warm-up). Figures are medians of the
repeats. The state stage (``SubjectIndex.assign``) is timed separately.

Memory: ``tracemalloc`` around building the index and every detector and
assigning 1M distinct ``tk_`` token ids, so it counts the index's hash
table, the per-slot arrays of every detector and the HST model. The growth of
the resident set size over the same steps is printed beside it.
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors.base import DetectionContext  # noqa: E402
from detectors.catalog import DetectorSettings, build_detectors  # noqa: E402
from pipeline.registry import TokenRegistry  # noqa: E402
from pipeline.state import SubjectIndex  # noqa: E402
from pipeline.windows import TumblingWindows, _with_defaults  # noqa: E402
from schemas.registry import AccountRecord, TokenRecord  # noqa: E402

T0 = 1_767_225_600.0
WINDOW_S = 10.0
WARMUP_WINDOWS = 12


def synthetic_events(tokens: int, windows: int, seed: int = 1) -> tuple[list[dict[str, np.ndarray]], TokenRegistry]:
    """Return one event batch per window for ``tokens`` tokens, and a registry for some of them."""
    rng = np.random.default_rng(seed)
    rate = np.exp(rng.normal(1.4, 1.2, tokens))
    subject = np.array([f"tk_{i:016x}" for i in range(tokens)], dtype=object)
    home_ip = np.array([f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}" for i in range(tokens)], dtype=object)
    countries = np.array(["DE", "US", "FR", "JP", "BR"], dtype=object)
    home_country = countries[rng.integers(0, len(countries), tokens)]
    account = np.where(rng.random(tokens) < 0.3, np.array([f"acct{i % 500}" for i in range(tokens)], dtype=object), "")
    routes = np.array(["/v1/orders", "/v1/orders/1", "/v1/users", "/v1/invoices"], dtype=object)
    batches = []
    for w in range(windows):
        counts = rng.poisson(rate)
        n = int(counts.sum())
        owner = np.repeat(np.arange(tokens), counts)
        ts = T0 + w * WINDOW_S + rng.random(n) * WINDOW_S * 0.99
        order = np.argsort(ts)
        owner, ts = owner[order], ts[order]
        status = np.where(rng.random(n) < 0.03, 404, 200).astype(np.uint16)
        client = home_ip[owner].copy()
        blocked = rng.random(n) < 0.0005
        client[blocked] = np.array([f"203.0.113.{i % 200}" for i in range(int(blocked.sum()))], dtype=object)
        events = {
            "ts": ts,
            "subject_id": subject[owner],
            "subject_kind": np.ones(n, dtype=np.uint8),
            "account": account[owner],
            "client_ip": client,
            "status": status,
            "route": routes[rng.integers(0, len(routes), n)],
            "country": home_country[owner],
            "user_agent": np.full(n, "client/1.0", dtype=object),
            "bytes_out": rng.integers(100, 5000, n),
        }
        events = _with_defaults(events)
        events["offset"] = np.arange(n, dtype=np.int64)
        batches.append(events)
    restricted = rng.choice(tokens, size=tokens // 10, replace=False)
    records = [
        TokenRecord(
            subject_id=str(subject[i]),
            account=str(account[i]),
            scopes=("/v1",),
            allowed_countries=(str(home_country[i]),),
            allowed_origins=("https://app.example.com",),
            expires_at=T0 + 86400 * 30,
        )
        for i in restricted
    ]
    accounts = {f"acct{i}": AccountRecord(rate_limit_rps=500.0) for i in range(500)}
    return batches, TokenRegistry.from_records(records, accounts=accounts)


def close_all(batches: list[dict[str, np.ndarray]]) -> tuple[list, float]:
    windows = TumblingWindows(size_s=WINDOW_S, allowed_lateness_s=0)
    started = time.perf_counter()
    closed = [windows.add(batch) for batch in batches] + [windows.flush()]
    return [batch for batch in closed if batch.size], time.perf_counter() - started


def settings() -> DetectorSettings:
    return DetectorSettings(params={"ip_blocklist": {"networks": ["203.0.113.0/24 bench"]}})


def run_once(closed: list, registry: TokenRegistry) -> tuple[dict[str, float], int, float]:
    """Return seconds per detector over the timed windows, the timed window count and state-stage seconds."""
    detectors = build_detectors(settings())
    index = SubjectIndex()
    for detector in detectors:
        detector.attach(index)
    context = DetectionContext(window_s=WINDOW_S, registry=registry)
    seconds = {detector.detector_id: 0.0 for detector in detectors}
    timed_windows = 0
    state_seconds = 0.0
    for number, original in enumerate(closed):
        batch = original.select(np.ones(original.size, dtype=bool))
        started = time.perf_counter()
        batch.slots = index.assign(batch.keys["subject_id"], batch.keys["window_end"])
        assign_seconds = time.perf_counter() - started
        timed = number >= WARMUP_WINDOWS
        if timed:
            timed_windows += batch.size
            state_seconds += assign_seconds
        for detector in detectors:
            started = time.perf_counter()
            detector.detect(batch, context)
            if timed:
                seconds[detector.detector_id] += time.perf_counter() - started
    return seconds, timed_windows, state_seconds


def measure_throughput(tokens: int, windows: int, repeats: int) -> None:
    print(f"generating {tokens} tokens x {windows} windows ...", flush=True)
    batches, registry = synthetic_events(tokens, windows)
    events = sum(len(batch["ts"]) for batch in batches)
    closed, window_seconds = close_all(batches)
    total_windows = sum(batch.size for batch in closed)
    print(
        f"window stage: {events} events -> {total_windows} windows in {window_seconds:.2f} s "
        f"({events / window_seconds:,.0f} events/s, {total_windows / window_seconds:,.0f} windows/s)"
    )
    runs = [run_once(closed, registry) for _ in range(repeats)]
    timed_windows = runs[0][1]
    print(f"\nthroughput over {timed_windows} closed windows after warm-up, median of {repeats} runs:")
    print(f"{'detector':<22}{'windows/s':>14}{'us/window':>12}")
    for detector_id in runs[0][0]:
        median = statistics.median(run[0][detector_id] for run in runs)
        print(f"{detector_id:<22}{timed_windows / median:>14,.0f}{median / timed_windows * 1e6:>12.2f}")
    whole = statistics.median(sum(run[0].values()) for run in runs)
    state = statistics.median(run[2] for run in runs)
    print(f"{'whole set':<22}{timed_windows / whole:>14,.0f}{whole / timed_windows * 1e6:>12.2f}")
    print(f"{'state stage (assign)':<22}{timed_windows / state:>14,.0f}{state / timed_windows * 1e6:>12.2f}")


def resident_bytes() -> int:
    """Return this process's resident set size from /proc (Linux)."""
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def measure_memory(tokens: int = 1_000_000, preallocate: bool = False) -> None:
    ids = np.array([f"tk_{i * 2654435761 % (1 << 64):016x}" for i in range(tokens)], dtype=object)
    times = np.full(tokens, T0)
    gc.collect()
    rss_before = resident_bytes()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    detectors = build_detectors(settings())
    index = SubjectIndex(initial_capacity=tokens if preallocate else 1024)
    for detector in detectors:
        detector.attach(index)
    for start in range(0, tokens, 100_000):
        index.assign(ids[start : start + 100_000], times[start : start + 100_000])
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = resident_bytes()
    traced = current - base
    how = "preallocated index" if preallocate else "index grown from 1024 slots"
    print(f"\nstate at {len(index):,} tokens, {how} (tracemalloc: index hash table and every detector's arrays):")
    print(f"  total {traced / 2**20:,.1f} MiB = {traced / tokens:.0f} bytes per token (peak during the build {peak / tokens:.0f})")
    print(f"  RSS grew by {(rss_after - rss_before) / tokens:.0f} bytes per token (allocator slack included)")
    print(f"  index: {index.nbytes / tokens:.0f} bytes per token (capacity {index.capacity:,} slots)")
    token_detectors = [d for d in detectors if d.scope == "token"]
    per_slot = sum(getattr(getattr(d, "state", None), "bytes_per_slot", 0) for d in token_detectors)
    print(f"  token detector arrays: {per_slot} bytes per slot, {per_slot * index.capacity / tokens:.0f} per token")
    for detector in detectors:
        per_slot = getattr(getattr(detector, "state", None), "bytes_per_slot", 0)
        if detector.state_nbytes():
            print(f"  {detector.detector_id:<20} {per_slot:>3} bytes per slot, {detector.state_nbytes() / tokens:6.1f} bytes per token")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=10_000, help="tokens in the throughput run")
    parser.add_argument("--windows", type=int, default=36, help="10 s windows per token in the throughput run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure; the median is printed")
    parser.add_argument("--memory-tokens", type=int, default=1_000_000, help="tokens in the memory measurement")
    args = parser.parse_args()
    measure_throughput(args.tokens, args.windows, args.repeats)
    measure_memory(args.memory_tokens)
    measure_memory(args.memory_tokens, preallocate=True)


if __name__ == "__main__":
    main()
