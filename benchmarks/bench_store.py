"""Measure event inserts into the chDB audit store and the stored size per event.

Run: .venv/bin/python benchmarks/bench_store.py [--rows 50000] [--batches 20]

Prints the time per row of ``AuditStore.write_events`` and of its three
steps: the numpy-to-Arrow conversion, the lookup of already stored events,
and ``insert_arrow``, which also feeds the ``token_minute`` view. Then it
prints the compressed bytes per event after merging all parts, in total and
per column. The events are synthetic but shaped like
gateway traffic: 800 tokens with Zipf-like activity, three IPs and one user
agent per token, and mostly status 200. Event ids are random 64-bit values
and request ids random 128-bit values, and these two dominate the
compressed size.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

from pipeline.sinks import store_arrow
from pipeline.sinks.clickhouse import EVENT_INSERT_SETTINGS, AuditStore

SOURCE = "gateway-logs"
PARTITIONS = 6


def splitmix64(values: np.ndarray) -> np.ndarray:
    """Scramble integers into well-spread 64-bit ids (stand-in for the pipeline's event-id hash)."""
    z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class TrafficModel:
    """Synthetic gateway traffic with stable per-token habits."""

    def __init__(self, seed: int, tokens: int = 800) -> None:
        self.rng = np.random.default_rng(seed)
        rng = self.rng
        self.tokens = np.array([f"tk_{value:016x}" for value in rng.integers(0, 2**63, tokens)], dtype=object)
        # Zipf-like activity: a few tokens make most of the requests.
        weights = 1.0 / np.arange(1, tokens + 1) ** 1.1
        self.token_weights = weights / weights.sum()
        self.accounts = np.array([f"acct-{i % 120:03d}" for i in range(tokens)], dtype=object)
        self.token_ips = rng.integers(0, 2**32, (tokens, 3))
        agents = [f"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36" for v in range(118, 132)]
        agents += ["python-requests/2.31.0", "curl/8.5.0", "okhttp/4.12.0", "Go-http-client/2.0"]
        self.agents = np.array(agents, dtype=object)
        self.token_agent = rng.integers(0, len(agents), tokens)
        self.routes = np.array(["items", "orders", "auth", "users", "search", "billing"], dtype=object)
        self.paths = np.array([f"/v1/{route}/{i}" for route in self.routes for i in range(40)], dtype=object)
        self.countries = np.array(["US", "DE", "FR", "GB", "IN", "BR", "JP", "NL"], dtype=object)
        self.statuses = np.array([200] * 80 + [201] * 5 + [204] * 3 + [304] * 3 + [400, 401, 403, 404, 404, 429, 500, 502, 503])

    def batch(self, rows: int, first_offset: int, start_s: float) -> dict[str, np.ndarray]:
        rng = self.rng
        token = rng.choice(len(self.tokens), rows, p=self.token_weights)
        ip_choice = self.token_ips[token, rng.integers(0, 3, rows)]
        client_ip = np.array([f"{(v >> 24) & 255}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}" for v in ip_choice.tolist()], dtype=object)
        path_index = rng.integers(0, len(self.paths), rows)
        offsets = np.arange(first_offset, first_offset + rows, dtype=np.int64)
        partition = (offsets % PARTITIONS).astype(np.int32)
        return {
            "event_id": splitmix64(offsets),
            "ts": start_s + np.sort(rng.random(rows)) * 60.0,
            "gateway": np.full(rows, "kong_json", dtype=object),
            "subject_id": self.tokens[token],
            "subject_kind": np.ones(rows, dtype=np.uint8),
            "account": self.accounts[token],
            "client_ip": client_ip,
            "method": rng.choice(np.array(["GET", "GET", "GET", "POST", "PUT", "DELETE"], dtype=object), rows),
            "host": np.full(rows, "api.example.com", dtype=object),
            "path": self.paths[path_index],
            "route": self.routes[path_index // 40],
            "status": rng.choice(self.statuses, rows).astype(np.uint16),
            "latency_ms": np.round(rng.gamma(2.0, 18.0, rows), 3).astype(np.float32),
            "bytes_in": rng.integers(0, 1500, rows).astype(np.int64),
            "bytes_out": np.round(rng.lognormal(7.5, 1.2, rows)).astype(np.int64),
            "user_agent": self.agents[self.token_agent[token]],
            "origin": np.full(rows, "", dtype=object),
            "referer": np.full(rows, "", dtype=object),
            "country": self.countries[ip_choice % len(self.countries)],
            "asn": (ip_choice % 5 + 15169).astype(np.uint32),
            "device_id": np.full(rows, "", dtype=object),
            "request_id": np.array([f"{v:032x}" for v in (rng.integers(0, 2**63, rows).astype(object) << 64 | rng.integers(0, 2**63, rows).astype(object))], dtype=object),
            "source": np.full(rows, SOURCE, dtype=object),
            "partition": partition,
            "offset": offsets // PARTITIONS,
            "late": np.zeros(rows, dtype=bool),
        }


def measure_writes(store: AuditStore, model: TrafficModel, rows: int, batches: int, first_batch: int) -> list[float]:
    """Write batches through ``write_events`` and return the seconds per row of each call."""
    per_row_s: list[float] = []
    start_s = time.time() - 3600.0
    for number in range(first_batch, first_batch + batches):
        batch = model.batch(rows, number * rows, start_s + number * 60.0)
        began = time.perf_counter()
        inserted = store.write_events(batch)
        per_row_s.append((time.perf_counter() - began) / rows)
        assert inserted == rows, f"batch {number}: inserted {inserted} of {rows}"
    return per_row_s


def measure_steps(store: AuditStore, model: TrafficModel, rows: int, batches: int, first_batch: int) -> dict[str, list[float]]:
    """Run the steps of ``write_events`` one by one and return the seconds per row of each step.

    Calls the store's private steps on purpose, because the cost of the Arrow
    insert alone is the number to compare across schema and setting changes.
    """
    steps: dict[str, list[float]] = {"numpy -> Arrow": [], "duplicate lookup": [], "insert_arrow": []}
    start_s = time.time() - 3600.0
    for number in range(first_batch, first_batch + batches):
        batch = model.batch(rows, number * rows, start_s + number * 60.0)
        began = time.perf_counter()
        table = store_arrow.events_table(batch)
        converted = time.perf_counter()
        stored = store._stored_event_ids(table)
        looked_up = time.perf_counter()
        store._insert_arrow("events", table, EVENT_INSERT_SETTINGS)
        inserted = time.perf_counter()
        assert stored.size == 0, f"batch {number}: {stored.size} events already stored"
        steps["numpy -> Arrow"].append((converted - began) / rows)
        steps["duplicate lookup"].append((looked_up - converted) / rows)
        steps["insert_arrow"].append((inserted - looked_up) / rows)
    return steps


def describe(per_row_s: list[float]) -> str:
    """Median and minimum in microseconds per row, leaving out the first (warm-up) batch."""
    values = per_row_s[1:] or per_row_s
    return f"median {statistics.median(values) * 1e6:5.2f}  min {min(values) * 1e6:5.2f} us/row"


def report_size(store: AuditStore) -> None:
    store.optimize("events")
    _, [(rows, compressed, uncompressed, parts)] = store.query(
        "SELECT sum(rows), sum(data_compressed_bytes), sum(data_uncompressed_bytes), count() "
        "FROM system.parts WHERE database = currentDatabase() AND table = 'events' AND active"
    )
    print(f"stored events: {rows} rows in {parts} parts after OPTIMIZE FINAL")
    print(f"compressed bytes/event: {compressed / rows:.1f} (uncompressed {uncompressed / rows:.1f})")
    _, columns = store.query(
        "SELECT name, data_compressed_bytes FROM system.columns "
        "WHERE database = currentDatabase() AND table = 'events' ORDER BY data_compressed_bytes DESC"
    )
    print("per column, compressed bytes/event:")
    for name, size in columns:
        print(f"  {name:<14} {size / rows:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000, help="rows per batch (default 50000)")
    parser.add_argument("--batches", type=int, default=10, help="batches in each of the two measurements (default 10)")
    parser.add_argument("--seed", type=int, default=7, help="random seed of the synthetic traffic")
    arguments = parser.parse_args()

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"chdb {version('chdb')}, clickhouse-connect {version('clickhouse-connect')}, pyarrow {version('pyarrow')}")
    print(f"load average before: {os.getloadavg()[0]:.2f} (other processes skew the timings)")
    with tempfile.TemporaryDirectory(prefix="bench-store-") as directory:
        with AuditStore.open(f"chdb://{Path(directory).resolve()}/store") as store:
            store.migrate()
            model = TrafficModel(arguments.seed)
            end_to_end = measure_writes(store, model, arguments.rows, arguments.batches, first_batch=0)
            steps = measure_steps(store, model, arguments.rows, arguments.batches, first_batch=arguments.batches)
            print(f"batches of {arguments.rows} rows, {arguments.batches} batches per measurement, first left out:")
            print(f"  write_events        {describe(end_to_end)}")
            for name, per_row_s in steps.items():
                print(f"  {name:<19} {describe(per_row_s)}")
            print(f"load average after: {os.getloadavg()[0]:.2f}")
            report_size(store)


if __name__ == "__main__":
    main()
