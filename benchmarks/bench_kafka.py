"""Kafka worker throughput with one and two workers, and event-time-to-action latency, on the real broker.

Throughput: the workers join a fresh consumer group on an empty 6-partition
topic. Then this script sends ``--lines`` NGINX combined lines as fast as one
aiokafka producer can, in 512 KiB batches. Half of the lines carry an
``api_key`` and are keyed by token id like ``tokensentry produce``, the rest
by client IP. Meanwhile the script polls the group's committed offsets.
Throughput is lines / (time the last offset was committed - time the first
line was sent), so it includes Kafka, the pipeline, the embedded chDB writes
and the commits. Each worker has its own
chDB store. The producer rate is printed too: when it is not well above the
worker rate, the figure measures the producer.

Latency: one worker; the script sends lines at a steady ``--rate`` lines per
second with the current wall-clock time as event time, and each 10 s window
five new client IPs send 25 requests per second (above the default limit of
20), so the static rate limit throttles each of them once. An action's
latency is its record timestamp on the action topic (producer create time)
minus its ``issued_at`` (the end of the window, in event time). The floor is
the allowed lateness (5 s) plus up to 1 s because access-log timestamps
have whole seconds.

Usage: .venv/bin/python benchmarks/bench_kafka.py [--lines N] [--latency-seconds S] [--rate R] [--bootstrap HOST:PORT]
Needs the broker (deploy/kafka/broker start) and the tokensentry command
with the run subcommand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner

from pipeline.config import KafkaSettings
from pipeline.identity import TokenHasher
from pipeline.kafka_admin import ensure_topics, topic_specs

REPO = Path(__file__).resolve().parents[1]
PARTITIONS = 6
ROUTES = ["/v1/orders", "/v1/orders/42", "/v1/users", "/v1/search", "/v1/cart"]
BURST_IPS_PER_WINDOW = 5
BURST_RPS = 25
WINDOW_S = 10
TAIL_S = 8.0
SEND_BATCH_BYTES = 512 * 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=200_000, help="lines per throughput run (default 200000)")
    parser.add_argument("--latency-seconds", type=float, default=90.0, help="length of the latency run (default 90)")
    parser.add_argument("--rate", type=float, default=2000.0, help="lines per second in the latency run (default 2000)")
    parser.add_argument("--bootstrap", help="broker address (default: deploy/kafka/broker bootstrap)")
    args = parser.parse_args()
    bootstrap = args.bootstrap or subprocess.run(
        [str(REPO / "deploy" / "kafka" / "broker"), "bootstrap"], capture_output=True, text=True, check=True
    ).stdout.strip()

    bench = Bench(bootstrap)
    results = {
        "machine": f"{os.cpu_count()} cores, {_cpu_model()}, Python {platform.python_version()}",
        "throughput_1_worker": bench.throughput(args.lines, workers=1),
        "throughput_2_workers": bench.throughput(args.lines, workers=2),
        "latency": bench.latency(args.latency_seconds, args.rate),
    }
    print(json.dumps(results, indent=1))
    return 0


class Bench:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.secret = secrets.token_hex(32)
        self.hasher = TokenHasher(bytes.fromhex(self.secret))
        self.work = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
        self.env = dict(os.environ, TOKENSENTRY_HASH_SECRET=self.secret)

    # ---- runs --------------------------------------------------------------

    def throughput(self, lines: int, *, workers: int) -> dict:
        names = self._names()
        asyncio.run(ensure_topics(names["settings"], topic_specs(names["settings"])))
        processes = self._start_workers(names, workers)
        try:
            records = list(self._bulk_records(lines))
            started = time.monotonic()
            produced_at = asyncio.run(self._send(names["log"], records))
            finished = self._wait_for_commits(names, lines, timeout=max(600.0, lines / 500))
        finally:
            summaries = self._stop_workers(processes)
        elapsed = finished - started
        result = {
            "lines": lines,
            "workers": workers,
            "seconds": round(elapsed, 2),
            "lines_per_s": round(lines / elapsed, 1),
            "producer_lines_per_s": round(lines / (produced_at - started), 1),
            "records_per_worker": [summary.get("records_in") for summary in summaries],
        }
        print(f"throughput, {workers} worker(s): {result}", file=sys.stderr)
        asyncio.run(self._delete(names))
        return result

    def latency(self, seconds: float, rate: float) -> dict:
        names = self._names()
        asyncio.run(ensure_topics(names["settings"], topic_specs(names["settings"])))
        processes = self._start_workers(names, 1)
        try:
            asyncio.run(self._send_steady(names["log"], seconds, rate))
            time.sleep(2)
            actions = asyncio.run(self._read_actions(names["actions"]))
        finally:
            self._stop_workers(processes)
        latencies = sorted(record_ts - issued for record_ts, issued in actions)
        result = {"rate_lines_per_s": rate, "seconds": seconds, "actions": len(latencies)}
        if latencies:
            result.update(
                p50_s=round(statistics.median(latencies), 2),
                p99_s=round(_percentile(latencies, 0.99), 2),
                max_s=round(latencies[-1], 2),
                min_s=round(latencies[0], 2),
            )
        print(f"latency: {result}", file=sys.stderr)
        asyncio.run(self._delete(names))
        return result

    # ---- workers -----------------------------------------------------------

    def _names(self) -> dict:
        suffix = uuid.uuid4().hex[:8]
        names = {
            "log": f"bench-logs-{suffix}",
            "actions": f"bench-actions-{suffix}",
            "dead_letters": f"bench-dead-letters-{suffix}",
            "receipts": f"bench-receipts-{suffix}",
            "group": f"bench-group-{suffix}",
        }
        names["settings"] = KafkaSettings(
            bootstrap_servers=self.bootstrap,
            group_id=names["group"],
            topics=(names["log"],),
            action_topic=names["actions"],
            dead_letter_topic=names["dead_letters"],
            receipt_topic=names["receipts"],
            partitions=PARTITIONS,
        )
        return names

    def _start_workers(self, names: dict, count: int) -> list[tuple[subprocess.Popen, Path, Path]]:
        processes = []
        for index in range(count):
            label = f"{names['group']}-{index}"
            log = self.work / f"{label}.log"
            out = self.work / f"{label}.json"
            argv = [
                str(Path(sys.executable).with_name("tokensentry")),
                "--log-level",
                "INFO",
                "run",
                "--bootstrap-servers",
                self.bootstrap,
                "--group-id",
                names["group"],
                "--topic",
                names["log"],
                "--action-topic",
                names["actions"],
                "--dead-letter-topic",
                names["dead_letters"],
                "--store",
                f"chdb://{self.work / ('store-' + label)}",
                "--data-dir",
                str(self.work / ("data-" + label)),
                "--json",
            ]
            env = dict(self.env, TOKENSENTRY_KAFKA__RECEIPT_TOPIC=names["receipts"])
            with open(log, "wb") as stderr, open(out, "wb") as stdout:
                processes.append((subprocess.Popen(argv, stdout=stdout, stderr=stderr, env=env), log, out))
            # Each new member triggers a rebalance; wait for all members' assignments before sending.
            _wait_for_text(log, "assigned partitions bench", 1, 120)
        for index, (_, log, _) in enumerate(processes):
            _wait_for_text(log, "assigned partitions bench", count - index, 120)
        return processes

    def _stop_workers(self, processes: list[tuple[subprocess.Popen, Path, Path]]) -> list[dict]:
        for process, _, _ in processes:
            process.send_signal(signal.SIGTERM)
        summaries = []
        for process, log, out in processes:
            code = process.wait(timeout=120)
            if code != 0:
                raise SystemExit(f"worker exited with {code}; log {log}:\n{log.read_text()[-3000:]}")
            summaries.append(json.loads(out.read_text().strip().splitlines()[-1]))
        return summaries

    def _wait_for_commits(self, names: dict, total: int, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if asyncio.run(self._committed(names["group"], names["log"])) >= total:
                return time.monotonic()
            time.sleep(0.1)
        raise SystemExit(f"the workers did not commit {total} records within {timeout:.0f} s; logs in {self.work}")

    # ---- Kafka helpers -----------------------------------------------------

    async def _committed(self, group: str, topic: str) -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
        return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0)

    async def _send(self, topic: str, records: list[tuple[bytes, bytes]]) -> float:
        """Send keyed records in large batches, partitions interleaved; return when the last one is acknowledged.

        Records are partitioned by key with aiokafka's default partitioner
        (murmur2, as the Java client), the same as ``tokensentry produce``.
        """
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", max_batch_size=SEND_BATCH_BYTES)
        await producer.start()
        try:
            partitions = sorted(await producer.partitions_for(topic))
            partitioner = DefaultPartitioner()
            queues: dict[int, list[tuple[bytes, bytes]]] = {partition: [] for partition in partitions}
            for key, line in records:
                queues[partitioner(key, partitions, partitions)].append((key, line))
            deliveries = []
            positions = dict.fromkeys(partitions, 0)
            while any(positions[partition] < len(queue) for partition, queue in queues.items()):
                for partition, queue in queues.items():
                    batch = producer.create_batch()
                    while positions[partition] < len(queue):
                        key, line = queue[positions[partition]]
                        if batch.append(key=key, value=line, timestamp=None) is None:
                            break
                        positions[partition] += 1
                    if batch.record_count():
                        deliveries.append(await producer.send_batch(batch, topic, partition=partition))
            await asyncio.gather(*deliveries)
        finally:
            await producer.stop()
        return time.monotonic()

    async def _send_steady(self, topic: str, seconds: float, rate: float) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            started = time.time()
            sent = 0
            burst_serial = 0
            burst_window = None
            bursts: list[str] = []
            # After the measured span, background traffic alone runs for the
            # allowed lateness and a bit more, so the last bursting window closes.
            tail_until = started + seconds + TAIL_S
            while (now := time.time()) < tail_until:
                in_tail = now >= started + seconds
                window = int(now // WINDOW_S)
                if window != burst_window:
                    burst_window = window
                    bursts = [f"198.18.{(burst_serial + i) // 250}.{(burst_serial + i) % 250 + 1}" for i in range(BURST_IPS_PER_WINDOW)]
                    burst_serial += BURST_IPS_PER_WINDOW
                due = int((now - started) * rate)
                while sent < due:
                    if not in_tail and sent % int(rate) < BURST_IPS_PER_WINDOW * BURST_RPS:
                        ip = bursts[sent % BURST_IPS_PER_WINDOW]
                    else:
                        ip = f"192.0.2.{sent % 250 + 1}" if sent % 2 else f"198.51.100.{sent % 250 + 1}"
                    line = _line(ip, now, ROUTES[sent % len(ROUTES)], 200, 512)
                    await producer.send(topic, line.encode(), key=f"ip:{ip}".encode())
                    sent += 1
                await asyncio.sleep(0.005)
            await producer.flush()
        finally:
            await producer.stop()

    async def _read_actions(self, topic: str) -> list[tuple[float, float]]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=self.bootstrap, group_id=None, auto_offset_reset="earliest")
        await consumer.start()
        actions = []
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=2000)
                if not batches:
                    break
                for records in batches.values():
                    for record in records:
                        action = json.loads(record.value)
                        actions.append((record.timestamp / 1000.0, action["issued_at"]))
        finally:
            await consumer.stop()
        return actions

    async def _delete(self, names: dict) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([names["log"], names["actions"], names["dead_letters"], names["receipts"]])
        finally:
            await admin.close()

    # ---- data --------------------------------------------------------------

    def _bulk_records(self, lines: int):
        """Yield (key, line): 5,000 clients, half with an api_key, event time over the last 20 minutes."""
        start = time.time() - 1200
        step = 1200 / lines
        for i in range(lines):
            client = i * 7919 % 5000
            ip = f"198.51.{client // 250}.{client % 250 + 1}"
            route = ROUTES[i % len(ROUTES)]
            if client % 2:
                credential = f"key-{client:05d}"
                key = self.hasher.token_id(credential)
                route = f"{route}?api_key={credential}"
            else:
                key = f"ip:{ip}"
            yield key.encode(), _line(ip, start + i * step, route, 200 if i % 20 else 404, 200 + i % 5000).encode()


def _line(ip: str, ts: float, target: str, status: int, size: int) -> str:
    stamp = datetime.fromtimestamp(ts, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
    return f'{ip} - - [{stamp}] "GET {target} HTTP/1.1" {status} {size} "-" "bench/1.0"'


def _wait_for_text(path: Path, text: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text(errors="replace").count(text) >= count:
            return
        time.sleep(0.1)
    raise SystemExit(f"{path} did not contain {text!r} {count} times within {timeout} s:\n{path.read_text()[-3000:]}")


def _percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
