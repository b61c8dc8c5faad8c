"""Fixtures for tests against the real Kafka broker (``deploy/kafka/broker``) and embedded chDB stores.

The session starts the broker when ``broker status`` reports it is not
running, and stops it again at the end. When the broker cannot start, the
session fails with the broker's log tail instead of skipping. Every test gets its own topics and
consumer group (uuid suffix), and every worker process its own chDB store,
because an embedded store serves one process. Stores are read through
``tokensentry query`` in a subprocess for the same reason.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord

REPO = Path(__file__).resolve().parents[2]
BROKER_SCRIPT = REPO / "deploy" / "kafka" / "broker"
APACHE_LOG_CANDIDATES = (
    REPO.parent / "shared" / "data" / "real" / "elastic_apache" / "apache_logs",
    Path("/work/shared/data/real/elastic_apache/apache_logs"),
)
BROKER_START_TIMEOUT_S = 300
COMMAND_TIMEOUT_S = 120

# The planted burst: one client without a credential sends 30 requests/s for
# one whole 10 s window, above the default limit of 20 requests/s per client.
BURST_IP = "203.0.113.77"
BURST_REQUESTS = 300
MALFORMED_LINE = "this line is not an access log record"

_CLF_TIME = re.compile(r"\[(\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2}) ([+-]\d{4})\]")
_CLF_FORMAT = "%d/%b/%Y:%H:%M:%S"


# ---- the broker -------------------------------------------------------------


def _broker(command: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BROKER_SCRIPT), command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _broker_log_tail(lines: int = 60) -> str:
    data_dir = Path(os.environ.get("KAFKA_DATA_DIR", REPO / "deploy" / "kafka" / ".data"))
    log = data_dir / "logs" / "server.log"
    if not log.exists():
        return f"(no broker log at {log})"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    """Return the bootstrap address of a running broker, starting it for this session if needed."""
    started_here = False
    if _broker("status", 60).returncode != 0:
        result = _broker("start", BROKER_START_TIMEOUT_S)
        if result.returncode != 0:
            pytest.fail(
                f"deploy/kafka/broker start failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}\n"
                f"--- broker log tail ---\n{_broker_log_tail()}",
                pytrace=False,
            )
        started_here = True
    address = _broker("bootstrap", 30).stdout.strip()
    yield address
    if started_here:
        _broker("stop", 120)


# ---- per-test names ---------------------------------------------------------


@dataclass(frozen=True)
class KafkaNames:
    """Topic and group names unique to one test."""

    log_topic: str
    action_topic: str
    dead_letter_topic: str
    receipt_topic: str
    group_id: str

    @property
    def topics(self) -> list[str]:
        return [self.log_topic, self.action_topic, self.dead_letter_topic, self.receipt_topic]


@pytest.fixture
def names(bootstrap: str) -> Iterator[KafkaNames]:
    suffix = uuid.uuid4().hex[:10]
    created = KafkaNames(
        log_topic=f"test-logs-{suffix}",
        action_topic=f"test-actions-{suffix}",
        dead_letter_topic=f"test-dead-letters-{suffix}",
        receipt_topic=f"test-receipts-{suffix}",
        group_id=f"test-group-{suffix}",
    )
    yield created
    asyncio.run(_delete_topics(bootstrap, created.topics))


async def _delete_topics(bootstrap: str, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [topic for topic in topics if topic in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


# ---- reading the broker -------------------------------------------------------


class KafkaInspector:
    """Reads topics, offsets and group state for assertions, without joining any group."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def read_topic(self, topic: str) -> list[ConsumerRecord]:
        """Return every record of ``topic``, partition by partition, up to the end offsets."""
        return asyncio.run(self._read_topic(topic))

    def end_offsets(self, topic: str) -> dict[int, int]:
        return asyncio.run(self._end_offsets(topic))

    def committed_offsets(self, group_id: str, topic: str) -> dict[int, int]:
        """Return partition -> committed offset of ``group_id`` on ``topic`` (partitions without one are absent)."""
        return asyncio.run(self._committed(group_id, topic))

    def group_state(self, group_id: str) -> tuple[str, int]:
        """Return the group's state (e.g. 'Empty', 'Stable') and member count."""
        return asyncio.run(self._group_state(group_id))

    @staticmethod
    def header(record: ConsumerRecord, name: str) -> str | None:
        """Return the value of header ``name`` of ``record`` as text, or None."""
        for key, value in record.headers or ():
            if key == name:
                return value.decode()
        return None

    async def _partitions(self, topic: str) -> list[TopicPartition]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            descriptions = await admin.describe_topics([topic])
        finally:
            await admin.close()
        partitions = [p["partition"] for d in descriptions if d["topic"] == topic for p in d["partitions"]]
        return [TopicPartition(topic, partition) for partition in sorted(partitions)]

    async def _read_topic(self, topic: str) -> list[ConsumerRecord]:
        partitions = await self._partitions(topic)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False)
        await consumer.start()
        records: list[ConsumerRecord] = []
        try:
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            end = await consumer.end_offsets(partitions)
            deadline = time.monotonic() + 60
            while any([await consumer.position(tp) < end[tp] for tp in partitions]):
                assert time.monotonic() < deadline, f"reading {topic} to its end offsets {end} took over 60 s"
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records.extend(batch)
        finally:
            await consumer.stop()
        return records

    async def _end_offsets(self, topic: str) -> dict[int, int]:
        partitions = await self._partitions(topic)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None)
        await consumer.start()
        try:
            end = await consumer.end_offsets(partitions)
        finally:
            await consumer.stop()
        return {tp.partition: offset for tp, offset in end.items()}

    async def _committed(self, group_id: str, topic: str) -> dict[int, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group_id)
        finally:
            await admin.close()
        return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0}

    async def _group_state(self, group_id: str) -> tuple[str, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            # One group per call: aiokafka 0.14.0 mis-decodes DescribeGroups for several ids.
            responses = await admin.describe_consumer_groups([group_id])
        finally:
            await admin.close()
        group = responses[0].to_object()["groups"][0]
        return group["state"], len(group["members"])


@pytest.fixture
def kafka(bootstrap: str) -> KafkaInspector:
    return KafkaInspector(bootstrap)


# ---- the tokensentry command --------------------------------------------------


def _tokensentry_argv() -> list[str]:
    script = Path(sys.executable).with_name("tokensentry")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipeline.cli"]


@dataclass
class WorkerProcess:
    """A ``tokensentry run`` subprocess with its stderr log file and its own store."""

    name: str
    process: subprocess.Popen
    log_path: Path
    stdout_path: Path
    store: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, pattern: str, *, count: int = 1, timeout: float = 60.0) -> None:
        """Wait until ``pattern`` (a regex) occurs ``count`` times in the worker's log."""
        deadline = time.monotonic() + timeout
        while len(re.findall(pattern, self.log())) < count:
            if self.process.poll() is not None:
                pytest.fail(f"worker {self.name} exited with {self.process.returncode} before logging {pattern!r}:\n{self.log()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"worker {self.name} did not log {pattern!r} {count} times within {timeout} s:\n{self.log()[-4000:]}")
            time.sleep(0.1)

    def wait(self, timeout: float = COMMAND_TIMEOUT_S) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"worker {self.name} still ran after {timeout} s; killed it:\n{self.log()[-4000:]}")

    def summary(self) -> dict:
        """Return the ``--json`` summary the worker printed on exit."""
        return json.loads(self.stdout_path.read_text().strip().splitlines()[-1])

    def send_signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)


class TokenSentry:
    """Runs ``tokensentry`` subcommands against one test's topics."""

    def __init__(self, bootstrap: str, names: KafkaNames, work_dir: Path) -> None:
        self.bootstrap = bootstrap
        self.names = names
        self.work_dir = work_dir
        self.workers: list[WorkerProcess] = []
        self.env = dict(os.environ)
        # One secret for every process, so token ids match across workers and produce.
        self.env["TOKENSENTRY_HASH_SECRET"] = secrets.token_hex(32)
        self.env["TOKENSENTRY_KAFKA__RECEIPT_TOPIC"] = names.receipt_topic
        # Several workers run on this host: port 0 gives each metrics endpoint a free port.
        self.env["TOKENSENTRY_METRICS__PORT"] = "0"

    def command(self, *args: str, timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess:
        """Run ``tokensentry ARGS`` and fail the test with its output when it exits non-zero."""
        result = subprocess.run(
            [*_tokensentry_argv(), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"tokensentry {' '.join(args)} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def produce(self, lines: list[str], *, rate: float = 0) -> dict:
        """Feed ``lines`` to the log topic with ``tokensentry produce`` and return its summary."""
        result = self.command(*self._produce_args(lines, rate))
        return json.loads(result.stdout)

    def produce_in_background(self, lines: list[str], *, rate: float) -> subprocess.Popen:
        """Start ``tokensentry produce`` at ``rate`` lines/s without waiting for it."""
        return subprocess.Popen(
            [*_tokensentry_argv(), *self._produce_args(lines, rate)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )

    def _produce_args(self, lines: list[str], rate: float) -> list[str]:
        path = self.work_dir / f"input-{uuid.uuid4().hex[:6]}.log.gz"
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        return [
            "produce",
            str(path),
            "--topic",
            self.names.log_topic,
            "--bootstrap-servers",
            self.bootstrap,
            "--rate",
            str(rate),
            "--json",
            "--data-dir",
            str(self.work_dir / "producer"),
        ]

    def start_worker(self, name: str, *extra: str, store_of: str | None = None) -> WorkerProcess:
        """Start ``tokensentry run`` on the test's topics with its own chDB store and data directory.

        ``store_of`` names an earlier worker whose store and data directory
        this one reuses, as a restarted worker would.
        """
        owner = store_of or name
        store = f"chdb://{self.work_dir / ('store-' + owner)}"
        log_path = self.work_dir / f"worker-{name}.log"
        stdout_path = self.work_dir / f"worker-{name}.out"
        argv = [
            *_tokensentry_argv(),
            "--log-level",
            "INFO",
            "run",
            "--bootstrap-servers",
            self.bootstrap,
            "--group-id",
            self.names.group_id,
            "--topic",
            self.names.log_topic,
            "--action-topic",
            self.names.action_topic,
            "--dead-letter-topic",
            self.names.dead_letter_topic,
            "--data-dir",
            str(self.work_dir / ("data-" + owner)),
            "--store",
            store,
            "--json",
            *extra,
        ]
        with open(log_path, "ab") as stderr, open(stdout_path, "wb") as stdout:
            process = subprocess.Popen(argv, stdout=stdout, stderr=stderr, env=self.env)
        worker = WorkerProcess(name, process, log_path, stdout_path, store)
        self.workers.append(worker)
        return worker

    def query(self, store: str, sql: str) -> list[dict]:
        """Run a read-only query on a stopped worker's store and return its rows."""
        result = self.command("query", sql, "--store", store, "--format", "json")
        return json.loads(result.stdout)

    def stop_all(self) -> None:
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()


@pytest.fixture
def tokensentry(bootstrap: str, names: KafkaNames, tmp_path: Path) -> Iterator[TokenSentry]:
    runner = TokenSentry(bootstrap, names, tmp_path)
    yield runner
    runner.stop_all()


# ---- input data ---------------------------------------------------------------


@dataclass
class LogData:
    """Access-log lines in time order with what the tests expect from them."""

    lines: list[str]
    malformed_lines: int
    burst_ip: str
    burst_window_start: float
    source: str
    extra: dict = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.lines)


def _clf_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime(_CLF_FORMAT) + " +0000"


def _real_lines() -> list[str] | None:
    for path in APACHE_LOG_CANDIDATES:
        if path.exists():
            return [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return None


def _generated_lines(start: float) -> list[str]:
    """NGINX combined lines from 200 clients over 3 hours, each well below the rate limit."""
    lines = []
    for i in range(6000):
        ts = start + i * 1.8
        ip = f"198.51.100.{i % 200 + 1}"
        lines.append(f'{ip} - - [{_clf_time(ts)}] "GET /api/v1/items/{i % 97} HTTP/1.1" 200 {300 + i % 700} "-" "client/{i % 7}"')
    return lines


def build_log_data(now: float) -> LogData:
    """Return real Apache lines (or generated NGINX lines) moved to recent event times, a burst and a bad line.

    Event times are shifted to end one hour before ``now``: the store keeps
    events 30 days, so lines from 2015 would be dropped on insert.
    """
    real = _real_lines()
    if real is not None:
        source = "elastic_apache/apache_logs"
        parsed = []
        for line in real:
            match = _CLF_TIME.search(line)
            if match is None:
                continue
            moment = datetime.strptime(match.group(1) + " " + match.group(2), _CLF_FORMAT + " %z")
            parsed.append((moment.timestamp(), line, match))
        shift = (now - 3600) - max(ts for ts, _, _ in parsed)
        timed = [(ts + shift, line[: m.start()] + f"[{_clf_time(ts + shift)}]" + line[m.end() :]) for ts, line, m in parsed]
    else:
        source = "generated nginx_combined"
        timed = []
        for line in _generated_lines(now - 4 * 3600):
            match = _CLF_TIME.search(line)
            moment = datetime.strptime(match.group(1) + " " + match.group(2), _CLF_FORMAT + " %z")
            timed.append((moment.timestamp(), line))
    first = min(ts for ts, _ in timed)
    burst_start = (int(first) // 10 + 60) * 10  # a window boundary ten minutes in
    per_second = BURST_REQUESTS // 10
    for i in range(BURST_REQUESTS):
        ts = burst_start + i // per_second
        timed.append(
            (ts, f'{BURST_IP} - - [{_clf_time(ts)}] "GET /api/v1/orders?page={i} HTTP/1.1" 200 512 "-" "burst-client/1.0"')
        )
    timed.sort(key=lambda item: item[0])
    lines = [line for _, line in timed]
    # The bad line sits in the first third, so later lines of every partition follow it.
    lines.insert(len(lines) // 3, MALFORMED_LINE)
    return LogData(lines=lines, malformed_lines=1, burst_ip=BURST_IP, burst_window_start=float(burst_start), source=source)


@pytest.fixture(scope="session")
def log_data() -> LogData:
    return build_log_data(datetime.now(UTC).timestamp())
