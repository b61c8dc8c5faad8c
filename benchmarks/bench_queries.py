"""Analyst query latency and stored bytes per event on an embedded store of 10 million events.

Fills a fresh embedded chDB store, then times the queries analysts run:

1. events: ``--events`` rows (default 10,000,000) over the 7 days before now,
   generated with numpy and inserted with ``AuditStore.write_events`` in
   batches of ``--batch`` rows (default 500,000), so the ``token_minute``
   rollup fills as in production. Subjects follow a Pareto popularity over
   ``--tokens`` tokens (default 5,000) plus 5 % unauthenticated clients;
   paths carry object ids; statuses, latencies, sizes and user agents are
   drawn from fixed mixes. No request id, origin, referer, country or ASN
   is logged, as in the NGINX combined format.
2. windows, detections and actions: derived inside ClickHouse with
   ``INSERT ... SELECT`` (10 s windows grouped from the events; a
   ``rate_limit`` detection for every window above 20 requests, a 2 req/s
   plan limit; an ``ewma_rate`` detection for a hashed 1-in-500 sample of
   windows with 5 or more requests;
   one action per subject and 5 minutes with detections). They have the
   production schema and realistic text, but their counts are set by these
   rules, not by the detectors.
3. ``OPTIMIZE TABLE ... FINAL`` on every table, as background merges would
   do over time, then each query ``--runs`` times (default 3); the median
   wall time is printed. Every query reads with FINAL, as the docs advise.
4. compressed bytes per event and per detection, before and after the merge.

The store lives in a temporary directory unless ``--dir`` is given.

Usage: .venv/bin/python benchmarks/bench_queries.py [--events N] [--batch N] [--tokens N] [--runs N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.analysis.sizes import StoreSize, format_bytes, measure_store
from pipeline.analysis.timeline import find_subject, load_history
from pipeline.analysis.timerange import parse_since
from pipeline.sinks import store_chdb
from pipeline.sinks.clickhouse import AUDIT_TABLES, AuditStore

WEEK_S = 7 * 86400
PATH_TEMPLATES = (
    "/v1/orders",
    "/v1/orders/{id}",
    "/v1/orders/{id}/items",
    "/v1/customers/{id}",
    "/v1/invoices",
    "/v1/invoices/{id}",
    "/v1/search",
    "/v1/products/{id}",
    "/health",
)
AGENTS = (
    "okhttp/4.12.0",
    "python-requests/2.32.3",
    "Go-http-client/2.0",
    "axios/1.7.7",
    "curl/8.5.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
)
STATUSES = np.array([200, 201, 204, 304, 400, 401, 403, 404, 429, 500, 502], dtype=np.uint16)
STATUS_WEIGHTS = np.array([0.80, 0.04, 0.02, 0.02, 0.02, 0.02, 0.01, 0.04, 0.015, 0.01, 0.005])


class EventGenerator:
    """Draws event batches for a fixed population of subjects, in event-time order across batches."""

    def __init__(self, events: int, tokens: int, end: float, seed: int = 1) -> None:
        self.rng = np.random.default_rng(seed)
        self.events = events
        self.start = end - WEEK_S
        self.end = end
        weights = self.rng.pareto(1.1, tokens) + 0.02
        self.token_weights = weights / weights.sum()
        self.token_ids = np.array([f"tk_{value:016x}" for value in self.rng.integers(0, 2**63, tokens)], dtype=object)
        self.accounts = np.array([f"acct-{i % (tokens // 4 + 1):05d}" for i in range(tokens)], dtype=object)
        # Each token calls from a handful of addresses in its own /24.
        self.token_networks = self.rng.integers(0, 2**24, tokens)
        self.token_agents = self.rng.integers(0, len(AGENTS), tokens)
        self.written = 0

    def batch(self, size: int) -> dict[str, np.ndarray]:
        rng = self.rng
        n = min(size, self.events - self.written)
        span = (self.end - self.start) / self.events
        ts = self.start + (self.written + np.sort(rng.uniform(0, n, n))) * span

        token = rng.choice(len(self.token_ids), size=n, p=self.token_weights)
        client = rng.random(n) < 0.05
        network = self.token_networks[token]
        host = rng.integers(1, 6, n)
        addresses = np.where(client, rng.integers(0, 2**32, n), (network << 8) + host)
        client_ips = _format_ipv4(addresses.astype(np.uint64))
        subject = np.where(client, "ip:" + client_ips, self.token_ids[token])

        template = rng.integers(0, len(PATH_TEMPLATES), n)
        object_id = rng.integers(1, 2_000_000, n)
        paths = np.array(
            [PATH_TEMPLATES[t].replace("{id}", str(i)) for t, i in zip(template, object_id, strict=True)],
            dtype=object,
        )
        agents = np.array(AGENTS, dtype=object)[np.where(client, rng.integers(0, len(AGENTS), n), self.token_agents[token])]
        offsets = np.arange(self.written + 1, self.written + n + 1, dtype=np.int64)
        self.written += n

        return {
            "event_id": offsets.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15),
            "ts": ts,
            "gateway": _repeat("nginx_combined", n),
            "subject_id": subject.astype(object),
            "subject_kind": np.where(client, 2, 1).astype(np.uint8),
            "account": np.where(client, "", self.accounts[token]).astype(object),
            "client_ip": client_ips,
            "method": np.where(rng.random(n) < 0.85, "GET", "POST").astype(object),
            "host": _repeat("api.example.com", n),
            "path": paths,
            "route": paths,
            "status": rng.choice(STATUSES, size=n, p=STATUS_WEIGHTS),
            "latency_ms": rng.lognormal(3.5, 0.8, n).astype(np.float32),
            "bytes_in": np.full(n, -1, dtype=np.int64),
            "bytes_out": rng.lognormal(7.0, 1.2, n).astype(np.int64),
            "user_agent": agents,
            "origin": _repeat("", n),
            "referer": _repeat("", n),
            "country": _repeat("", n),
            "asn": np.zeros(n, dtype=np.uint32),
            "device_id": _repeat("", n),
            "request_id": _repeat("", n),
            "source": _repeat("/var/log/nginx/access.log", n),
            "partition": np.full(n, -1, dtype=np.int32),
            "offset": offsets,
            "late": np.zeros(n, dtype=np.bool_),
        }


def _repeat(value: str, n: int) -> np.ndarray:
    column = np.empty(n, dtype=object)
    column[:] = value
    return column


def _format_ipv4(addresses: np.ndarray) -> np.ndarray:
    octets = [(addresses >> np.uint64(shift)) & np.uint64(255) for shift in (24, 16, 8, 0)]
    text = octets[0].astype(str)
    for octet in octets[1:]:
        text = np.char.add(np.char.add(text, "."), octet.astype(str))
    return text.astype(object)


WINDOWS_SQL = """
INSERT INTO {db}.windows (window_id, subject_id, subject_kind, account, window_start, window_end, first_offset,
    last_offset, requests, ratio_4xx, ratio_401_403, ratio_429, ratio_5xx, distinct_ips, distinct_networks,
    distinct_user_agents, distinct_routes, distinct_countries, distinct_devices, bytes_in, bytes_out,
    latency_p50_ms, latency_p95_ms)
SELECT cityHash64(subject_id, start), subject_id, any(subject_kind), any(account), start, start + INTERVAL 10 SECOND,
    min(offset), max(offset), count(), avg(status >= 400 AND status < 500), avg(status IN (401, 403)),
    avg(status = 429), avg(status >= 500), uniqExact(client_ip),
    uniqExact(IPv4NumToStringClassC(toIPv4OrDefault(client_ip))), uniqExact(user_agent), uniqExact(route),
    0, 0, 0, sum(greatest(bytes_out, 0)), quantileExact(0.5)(latency_ms), quantileExact(0.95)(latency_ms)
FROM {db}.events
GROUP BY subject_id, toStartOfInterval(ts, INTERVAL 10 SECOND) AS start
"""

DETECTIONS_SQL = """
INSERT INTO {db}.detections (detection_id, detector, detector_version, registry_version, subject_id, subject_kind,
    account, client_ip, window_id, window_start, window_end, score, threshold, severity, explanation, evidence,
    schema_version)
SELECT cityHash64(detector, window_id) AS detection_id, detector, '2', '', subject_id, subject_kind, account, '',
    window_id, window_start, window_end, score, threshold, severity, explanation, evidence, 1
FROM (
    SELECT 'rate_limit' AS detector, requests / 10 / 2 AS score, 1.0 AS threshold,
        multiIf(score >= 5, 4, score >= 2, 3, 2) AS severity,
        format('{{}} exceeded its static limit in a 10 s window: request_rate_rps {{}} (expected 2)',
               subject_id, toString(round(requests / 10, 1))) AS explanation,
        concat('[{{"feature":"request_rate_rps","observed":', toString(requests / 10),
               ',"expected":2.0,"threshold":null}}]') AS evidence,
        *
    FROM {db}.windows WHERE requests > 20
    UNION ALL
    SELECT 'ewma_rate', 6 + (cityHash64(window_id) % 40) AS score, 6.0, multiIf(score >= 24, 4, score >= 12, 3, 2),
        format('{{}} sent {{}} requests in 10 s, z = {{}} against its own baseline (threshold 6): requests {{}} (expected {{}})',
               subject_id, toString(requests), toString(score), toString(requests), toString(round(requests / 4, 1))),
        concat('[{{"feature":"requests","observed":', toString(requests), ',"expected":',
               toString(round(requests / 4, 1)), ',"threshold":', toString(round(requests / 2, 1)), '}}]'),
        *
    FROM {db}.windows WHERE requests >= 5 AND cityHash64(window_id) % 500 = 0
)
"""

ACTIONS_SQL = """
INSERT INTO {db}.actions (action_id, kind, token_id, subject, account, limit_rps, issued_at, expires_at, reason,
    reasons, policy_version, rule, dry_run, origin, key_id, signature, published, schema_version)
SELECT hex(cityHash64(subject_id, bucket)), kind, if(client = 1, '', subject_id),
    if(client = 1, concat(substring(subject_id, 4), '/32'), subject_id), account,
    if(kind = 'throttle', 20.0, NULL), issued_at, issued_at + INTERVAL 10 MINUTE, reason,
    concat('[', arrayStringConcat(reasons, ','), ']'), 'builtin-1', rule, false, 'pipeline', '', '', 1, 1
FROM (
    SELECT subject_id, toUInt8(any(subject_kind) = 2) AS client, any(account) AS account,
        toStartOfInterval(window_start, INTERVAL 5 MINUTE) AS bucket, max(window_end) AS issued_at,
        if(max(severity) >= 4, if(client = 1, 'block', 'revoke'), 'throttle') AS kind,
        if(max(severity) >= 4, 'rate-limit-revoke', 'rate-limit-throttle') AS rule,
        arrayStringConcat(groupArray(5)(explanation), '; ') AS reason,
        groupArray(5)(concat('{{"detection_id":', toString(detection_id), ',"detector":"', detector,
            '","severity":', toString(severity), ',"score":', toString(score),
            ',"explanation":"', explanation, '"}}')) AS reasons
    FROM {db}.detections
    GROUP BY subject_id, bucket
)
"""


def median_seconds(action: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def print_sizes(title: str, size: StoreSize) -> None:
    per_event = size.per_event()
    print(f"\n{title}")
    for table in size.tables:
        if table.rows:
            print(
                f"  {table.table:<18} {table.rows:>12,} rows  {format_bytes(table.compressed_bytes):>10} compressed  "
                f"{format_bytes(table.uncompressed_bytes):>10} uncompressed  {table.compressed_per_row or 0:8.1f} B/row"
            )
    print(f"  compressed bytes per event, events table: {per_event['events_table']:.1f}")
    print(f"  compressed bytes per event, all tables:   {per_event['all_tables']:.1f}")
    detection = size.per_detection()
    print(f"  compressed bytes per detection:           {detection:.1f}" if detection else "  no detections")


def fill_store(store: AuditStore, writer, args: argparse.Namespace) -> None:
    """Insert the generated events, then derive windows, detections and actions inside ClickHouse."""
    generator = EventGenerator(args.events, args.tokens, end=float(int(time.time())))
    started = time.perf_counter()
    while generator.written < args.events:
        store.write_events(generator.batch(args.batch))
    elapsed = time.perf_counter() - started
    print(f"inserted {args.events:,} events in {elapsed:.1f} s ({args.events / elapsed:,.0f} events/s)")

    for name, sql in (("windows", WINDOWS_SQL), ("detections", DETECTIONS_SQL), ("actions", ACTIONS_SQL)):
        started = time.perf_counter()
        writer.command(sql.format(db=store.database))
        print(f"derived {name} in {time.perf_counter() - started:.1f} s")


def analyst_queries(store: AuditStore) -> list[tuple[str, Callable[[], object]]]:
    """Return (title, run) for each timed query, on the 10th busiest token and the top offender."""
    _, rows = store.query("SELECT subject_id FROM events GROUP BY subject_id ORDER BY count() DESC LIMIT 1 OFFSET 9")
    token = rows[0][0]
    _, rows = store.query("SELECT subject_id FROM detections GROUP BY subject_id ORDER BY count() DESC LIMIT 1")
    offender = rows[0][0]
    return [
        (
            "a token over time (hourly, 7 days, events FINAL)",
            lambda: store.query(
                "SELECT toStartOfHour(ts) AS hour, count(), countIf(status >= 400) FROM events FINAL "
                "WHERE subject_id = {t:String} AND ts >= now() - INTERVAL 7 DAY GROUP BY hour ORDER BY hour",
                parameters={"t": token},
            ),
        ),
        (
            "top offenders this week (detections FINAL)",
            lambda: store.query(
                "SELECT subject_id, count() AS detections, max(severity) FROM detections FINAL "
                "WHERE window_start >= now() - INTERVAL 7 DAY GROUP BY subject_id ORDER BY detections DESC LIMIT 20"
            ),
        ),
        (
            "detections by detector per hour",
            lambda: store.query(
                "SELECT toStartOfHour(window_start) AS hour, detector, count() FROM detections FINAL "
                "GROUP BY hour, detector ORDER BY hour, detector"
            ),
        ),
        (
            "actions by kind this week",
            lambda: store.query(
                "SELECT kind, count(), uniqExact(subject) FROM actions FINAL "
                "WHERE issued_at >= now() - INTERVAL 7 DAY GROUP BY kind ORDER BY kind"
            ),
        ),
        (
            "explain queries for one token (24 h, 1,000 windows)",
            lambda: load_history(store, offender, find_subject(store, offender), parse_since("24h"), limit=1000),
        ),
        (
            "per-minute rollup of a token (token_minute, 1 day)",
            lambda: store.query(
                "SELECT minute, sum(requests), sum(errors_4xx), sum(errors_5xx) FROM token_minute "
                "WHERE subject_id = {t:String} AND minute >= now() - INTERVAL 1 DAY GROUP BY minute ORDER BY minute",
                parameters={"t": token},
            ),
        ),
        (
            "busiest tokens per minute, last hour (token_minute)",
            lambda: store.query(
                "SELECT minute, subject_id, sum(requests) AS requests FROM token_minute "
                "WHERE minute >= now() - INTERVAL 1 HOUR GROUP BY minute, subject_id "
                "ORDER BY requests DESC LIMIT 20"
            ),
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="events to insert (default 10,000,000)")
    parser.add_argument("--batch", type=int, default=500_000, help="events per write_events call (default 500,000)")
    parser.add_argument("--tokens", type=int, default=5_000, help="distinct tokens (default 5,000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per query; the median is printed (default 3)")
    parser.add_argument("--dir", type=Path, help="store directory to create (default: a temporary one, removed after)")
    args = parser.parse_args(argv)

    directory = args.dir or Path(tempfile.mkdtemp(prefix="bench-queries-"))
    store = AuditStore.open(f"chdb://{directory.resolve() / 'store'}")
    try:
        store.migrate()
        # INSERT ... SELECT needs a writable client; clients on one chDB path share the store's engine.
        writer = store_chdb.open_client(directory.resolve() / "store", tz_mode="aware")
        fill_store(store, writer, args)
        writer.close()
        print_sizes("stored as inserted (unmerged parts):", measure_store(store))

        started = time.perf_counter()
        for table in sorted(AUDIT_TABLES):
            store.optimize(table)
        print(f"\nOPTIMIZE ... FINAL of every table in {time.perf_counter() - started:.1f} s")
        print_sizes("stored after merging:", measure_store(store))

        print(f"\nquery medians over {args.runs} runs:")
        for title, query in analyst_queries(store):
            print(f"  {median_seconds(query, args.runs) * 1000:9.1f} ms  {title}", flush=True)
    finally:
        store.close()
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
