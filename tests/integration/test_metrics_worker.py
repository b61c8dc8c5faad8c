"""A real worker against the real broker: /metrics counters move and /readyz flips to ready.

Needs the development broker (``deploy/kafka/broker start``, which
``make test`` runs first). Each test run uses its own topics and consumer
group, and an embedded chDB store in a temporary directory.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from pipeline.config import load_settings
from pipeline.metrics import Metrics, MetricsServer
from pipeline.worker import Worker, WorkerOptions

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BROKER = REPO / "deploy" / "kafka" / "broker"
PARTITIONS = 2
STEADY_LINES = 300
BURST_LINES = 600
GOOD_LINES = STEADY_LINES + BURST_LINES
BAD_LINES = 7
T0 = "01/Jan/2026:00:00:00"


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8")


def sample(text: str, name: str, labels: str = "") -> float | None:
    """Return the value of one sample in Prometheus text format, or None when absent."""
    pattern = re.compile(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", re.MULTILINE)
    match = pattern.search(text)
    return float(match.group(1)) if match else None


def wait_for(condition, timeout_s: float, description: str, running: RunningWorker | None = None):
    """Poll ``condition`` until it returns a true value; fail early if the worker thread died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if running is not None and not running.thread.is_alive():
            pytest.fail(f"the worker stopped while waiting for {description}: {running.error!r}")
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout_s} s waiting for {description}")


def access_line(client: int, second: int, key: str, size: int) -> tuple[bytes, bytes]:
    """Return (record key, nginx combined line); records are keyed by API key, as the worker requires."""
    line = (
        f'198.51.100.{client} - - [{T0[:-2]}{second:02d} +0000] "GET /v1/items?api_key={key} HTTP/1.1" '
        f'200 {size} "-" "client/1.0"'
    )
    return key.encode(), line.encode()


def access_records() -> list[tuple[bytes, bytes]]:
    """60 s of event time: three steady API keys, one key bursting at 60 requests/s, and unparsable lines.

    The burst is three times the built-in policy's default limit of 20
    requests/s, so the static rate limit detects it and the policy acts.
    """
    records = []
    for i in range(STEADY_LINES):
        records.append(access_line(i % 3 + 1, i * 60 // STEADY_LINES, f"k-{i % 3}-0123456789abcdef", 100 + i))
    for i in range(BURST_LINES):
        records.append(access_line(9, 30 + i * 10 // BURST_LINES, "burst-0123456789abcdef", 100))
    records.sort(key=lambda record: record[1].split(b"[")[1][:20])
    records.extend((b"bad", f"not an access log line {i}".encode()) for i in range(BAD_LINES))
    return records


@pytest.fixture(scope="module")
def bootstrap() -> str:
    status = subprocess.run([str(BROKER), "status"], capture_output=True, text=True, check=False)
    if status.returncode != 0:
        pytest.fail(f"the development broker is not running ({status.stdout.strip()}); start it with `{BROKER} start`")
    return subprocess.run([str(BROKER), "bootstrap"], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def worker_settings(bootstrap: str, tmp_path: Path):
    run_id = uuid.uuid4().hex[:10]
    return load_settings(
        data_dir=tmp_path,
        store=f"chdb://{tmp_path / 'store'}",
        hash_secret="ab" * 32,
        kafka={
            "bootstrap_servers": bootstrap,
            "group_id": f"metrics-test-{run_id}",
            "topics": [f"metrics-test-logs-{run_id}"],
            "action_topic": f"metrics-test-actions-{run_id}",
            "dead_letter_topic": f"metrics-test-dead-{run_id}",
            "receipt_topic": f"metrics-test-receipts-{run_id}",
            "partitions": PARTITIONS,
            "create_topics": True,
        },
    )


class RunningWorker:
    """A worker on its own event loop in a thread, stopped through ``request_stop`` like SIGTERM does."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.loop = asyncio.new_event_loop()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-worker", daemon=True)

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self.worker.run())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.worker.request_stop)
        self.thread.join(timeout=90)
        assert not self.thread.is_alive(), "the worker did not stop within 90 s of request_stop"
        self.loop.close()
        if self.error is not None:
            raise self.error


@pytest.fixture
def served_worker(worker_settings) -> Iterator[tuple[RunningWorker, MetricsServer]]:
    metrics = Metrics(stall_timeout_s=30.0, ready_max_lag=1_000_000)
    options = WorkerOptions(max_records=100, poll_timeout_s=0.2, checkpoint_interval_s=3600.0)
    try:
        worker = Worker(worker_settings, options, exporter=metrics)
    except TypeError as exc:
        pytest.fail(f"pipeline.worker.Worker does not take exporter=Metrics yet ({exc}); apply the wiring diff")
    with MetricsServer(metrics, "127.0.0.1", 0) as server:
        running = RunningWorker(worker)
        yield running, server
        if running.thread.is_alive():
            running.stop()


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Send the records, each key to one partition, and the keys spread over every partition.

    The default partitioner could hash the few keys here all to one
    partition, and a partition that never gets a record has no lag to export.
    """
    partition_of: dict[bytes, int] = {}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, line in records:
            partition = partition_of.setdefault(key, len(partition_of) % PARTITIONS)
            await producer.send(topic, line, key=key, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


def test_worker_metrics_and_probes(served_worker, worker_settings) -> None:
    running, server = served_worker
    url = server.url

    # Before the worker joins the group: alive, not ready.
    status, body = http_get(url + "/readyz")
    assert status == 503
    assert "waiting for the consumer group" in json.loads(body)["status"]
    assert http_get(url + "/healthz")[0] == 200

    running.thread.start()
    ready = wait_for(lambda: http_get(url + "/readyz")[0] == 200, 90, "/readyz to return 200 after assignment", running)
    assert ready
    readiness = json.loads(http_get(url + "/readyz")[1])
    topic = worker_settings.kafka.topics[0]
    assert readiness["partitions"] == [f"{topic}/{n}" for n in range(PARTITIONS)]

    records = access_records()
    asyncio.run(produce(worker_settings.kafka.bootstrap_servers, topic, records))

    def scraped_all() -> str | None:
        text = http_get(url + "/metrics")[1]
        return text if (sample(text, "tokensentry_records_in_total") or 0) >= len(records) else None

    text = wait_for(scraped_all, 90, f"tokensentry_records_in_total to reach {len(records)}", running)
    assert sample(text, "tokensentry_records_in_total") == len(records)
    assert sample(text, "tokensentry_records_accepted_total") == GOOD_LINES
    assert sample(text, "tokensentry_records_dead_lettered_total") == BAD_LINES
    assert sample(text, "tokensentry_assigned_partitions") == PARTITIONS
    assert (sample(text, "tokensentry_batch_duration_seconds_count") or 0) >= 1
    assert (sample(text, "tokensentry_windows_closed_total") or 0) >= 1
    assert (sample(text, "tokensentry_clickhouse_write_duration_seconds_count", '{table="events"}') or 0) >= 1
    assert (sample(text, "tokensentry_clickhouse_write_duration_seconds_count", '{table="dead_letters"}') or 0) >= 1
    assert sample(text, "tokensentry_clickhouse_write_errors_total", '{table="events"}') is None
    assert sample(text, "tokensentry_published_messages_total", '{role="dead_letters",sink="kafka_dead_letters"}') == BAD_LINES
    assert (sample(text, "tokensentry_detections_total", '{detector="rate_limit"}') or 0) >= 1
    assert "tokensentry_actions_total{kind=" in text
    assert (sample(text, "tokensentry_offset_commits_total") or 0) >= 1
    assert "tokensentry_producer_errors_total{" not in text

    def lag_caught_up() -> str | None:
        current = http_get(url + "/metrics")[1]
        lags = [sample(current, "tokensentry_consumer_lag", f'{{partition="{n}",topic="{topic}"}}') for n in range(PARTITIONS)]
        return current if all(lag == 0 for lag in lags) else None

    wait_for(lag_caught_up, 30, "tokensentry_consumer_lag to reach 0 on every partition", running)

    running.stop()
    status, body = http_get(url + "/readyz")
    assert status == 503
    assert json.loads(body)["status"] == "stopping"
