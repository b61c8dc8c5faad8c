"""Prometheus metrics and the HTTP endpoint that serves them with the health probes.

The consume loop owns one ``Metrics`` object and calls it at a few points::

    metrics = Metrics(stall_timeout_s=s.metrics.stall_timeout_s, ready_max_lag=s.metrics.ready_max_lag)
    store = metrics.instrument_store(open_store(settings))        # ClickHouse latency and errors
    sink = metrics.instrument_sink(kafka_action_sink, "actions")  # producer errors
    with MetricsServer(metrics, s.metrics.host, s.metrics.port):
        ...
        metrics.set_assigned(consumer.assignment())   # after every rebalance
        metrics.tick()                                # every loop turn, records or not
        started = time.perf_counter()
        pipeline.process(batch)
        metrics.observe_batch(pipeline.stats, time.perf_counter() - started)
        metrics.set_lag(tp, highwater - position)     # per assigned partition

Every metric name starts with ``tokensentry_``. Labels are stable ids only:
detector id, action kind, table name, sink id, topic and partition number,
so the number of series is bounded by configuration, never by traffic.
"""

from __future__ import annotations

import functools
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    make_wsgi_app,
)

from pipeline import __version__
from pipeline.errors import ConfigError
from pipeline.health import HealthState, ProbeResult

if TYPE_CHECKING:
    from pipeline.runner import RunStats

logger = logging.getLogger(__name__)

PREFIX = "tokensentry_"

BATCH_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_RECORDS_BUCKETS = (1, 10, 100, 1_000, 5_000, 10_000, 20_000, 50_000, 100_000)
WRITE_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# RunStats counters and the Prometheus counter each one feeds.
_SCALAR_COUNTERS = (
    ("lines_read", "records_in"),
    ("bytes_read", "bytes_in"),
    ("events_accepted", "records_accepted"),
    ("dead_lettered", "records_dead_lettered"),
    ("late_events", "late_events"),
    ("windows", "windows_closed"),
    ("actions_published", "actions_published"),
)


@dataclass
class _Snapshot:
    """The last RunStats values counted, to turn running totals into increments."""

    scalars: dict[str, int] = field(default_factory=dict)
    detections: dict[str, int] = field(default_factory=dict)
    actions: dict[str, int] = field(default_factory=dict)


def _increment(current: int, previous: int) -> int:
    # A total below the last one means a new RunStats (a rebuilt pipeline)
    # started from zero, so all of the current total is new.
    return current - previous if current >= previous else current


def partition_key(partition: Any) -> tuple[str, int]:
    """Return ``(topic, partition)`` from an aiokafka ``TopicPartition`` or a 2-tuple."""
    if hasattr(partition, "topic") and hasattr(partition, "partition"):
        return str(partition.topic), int(partition.partition)
    topic, number = partition
    return str(topic), int(number)


class Metrics:
    """Every metric a worker or replay exports, plus the health state behind the probes.

    Each instance has its own ``CollectorRegistry``, so tests and several
    pipelines in one process do not collide. Methods are safe to call from
    the loop while the HTTP thread scrapes.
    """

    def __init__(
        self,
        *,
        stall_timeout_s: float = 120.0,
        ready_max_lag: int | None = 500_000,
        registry: CollectorRegistry | None = None,
        process_metrics: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.health = HealthState(stall_timeout_s=stall_timeout_s, ready_max_lag=ready_max_lag, clock=clock)
        self._snapshots: dict[int, tuple[RunStats, _Snapshot]] = {}
        self._lock = threading.Lock()
        if process_metrics:
            # process_resident_memory_bytes, process_cpu_seconds_total, python_gc_*, python_info
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            self.registry.register(GC_COLLECTOR)
        self._define()

    def _define(self) -> None:
        registry = self.registry
        Info(PREFIX + "build", "TokenSentry version of this process.", registry=registry).info({"version": __version__})
        self.records_in = Counter(PREFIX + "records_in", "Raw records (log lines) read from the source.", registry=registry)
        self.bytes_in = Counter(PREFIX + "bytes_in", "Bytes of raw records read, line endings included.", registry=registry)
        self.records_accepted = Counter(PREFIX + "records_accepted", "Records parsed into events.", registry=registry)
        self.records_dead_lettered = Counter(
            PREFIX + "records_dead_lettered", "Records that failed to parse and went to the dead letters.", registry=registry
        )
        self.late_events = Counter(
            PREFIX + "late_events", "Events that arrived after their window closed (stored, not windowed).", registry=registry
        )

        self.windows_closed = Counter(PREFIX + "windows_closed", "Per-subject windows closed and scored.", registry=registry)
        self.detections = Counter(PREFIX + "detections", "Detections by detector id.", ["detector"], registry=registry)
        self.actions = Counter(PREFIX + "actions", "Actions decided, by kind (dry-run ones included).", ["kind"], registry=registry)
        self.actions_published = Counter(
            PREFIX + "actions_published", "Actions published to the action sinks (not dry-run).", registry=registry
        )

        self.batches = Counter(PREFIX + "batches", "Batches processed.", registry=registry)
        self.batch_duration = Histogram(
            PREFIX + "batch_duration_seconds",
            "Wall time of one batch through every stage, store writes and publishing included.",
            buckets=BATCH_SECONDS_BUCKETS,
            registry=registry,
        )
        self.batch_records = Histogram(
            PREFIX + "batch_records", "Raw records per batch.", buckets=BATCH_RECORDS_BUCKETS, registry=registry
        )

        self.consumer_lag = Gauge(
            PREFIX + "consumer_lag",
            "Records between the partition's high watermark and this worker's position.",
            ["topic", "partition"],
            registry=registry,
        )
        self.assigned_partitions = Gauge(
            PREFIX + "assigned_partitions", "Partitions the consumer group assigned to this worker.", registry=registry
        )
        self.rebalances = Counter(PREFIX + "rebalances", "Partition assignments received from the consumer group.", registry=registry)
        self.last_tick = Gauge(
            PREFIX + "loop_last_tick_timestamp_seconds", "Unix time of the consume loop's last turn.", registry=registry
        )

        self.store_write_duration = Histogram(
            PREFIX + "clickhouse_write_duration_seconds",
            "Wall time of one audit-store write call, by table; the store's own retries of transient errors are included.",
            ["table"],
            buckets=WRITE_SECONDS_BUCKETS,
            registry=registry,
        )
        self.store_write_errors = Counter(
            PREFIX + "clickhouse_write_errors",
            "Audit-store write calls that raised, by table (after the store's own retries).",
            ["table"],
            registry=registry,
        )

        self.published_messages = Counter(
            PREFIX + "published_messages", "Messages a sink acknowledged, by sink id and role.", ["sink", "role"], registry=registry
        )
        self.producer_errors = Counter(
            PREFIX + "producer_errors", "Publish calls that raised, by sink id and role.", ["sink", "role"], registry=registry
        )

        self.offset_commits = Counter(PREFIX + "offset_commits", "Offset commits that succeeded.", registry=registry)
        self.offset_commit_errors = Counter(PREFIX + "offset_commit_errors", "Offset commits that failed.", registry=registry)

        self.last_tick.set(time.time())

    # -- the consume loop ---------------------------------------------------

    def tick(self) -> None:
        """Record a loop turn; call it every turn, also when a poll returned nothing."""
        self.health.tick()
        self.last_tick.set(time.time())

    def observe_batch(self, stats: RunStats, duration_s: float) -> None:
        """Count what the pipeline did since the previous call for the same ``stats``.

        Pass the pipeline's running ``RunStats`` after each ``process`` or
        ``finish``; the increments are computed here, so callers never
        subtract. Also records the batch duration and counts as a loop tick.
        """
        with self._lock:
            _, previous = self._snapshots.get(id(stats), (stats, _Snapshot()))
            current = _Snapshot(
                scalars={name: getattr(stats, name) for name, _ in _SCALAR_COUNTERS},
                detections=dict(stats.detections_by_detector),
                actions=dict(stats.actions_by_kind),
            )
            self._snapshots[id(stats)] = (stats, current)
        for stats_name, metric_name in _SCALAR_COUNTERS:
            increment = _increment(current.scalars[stats_name], previous.scalars.get(stats_name, 0))
            if increment:
                getattr(self, metric_name).inc(increment)
        for detector, total in current.detections.items():
            increment = _increment(total, previous.detections.get(detector, 0))
            if increment:
                self.detections.labels(detector=detector).inc(increment)
        for kind, total in current.actions.items():
            increment = _increment(total, previous.actions.get(kind, 0))
            if increment:
                self.actions.labels(kind=kind).inc(increment)
        self.batches.inc()
        self.batch_duration.observe(duration_s)
        self.batch_records.observe(_increment(current.scalars["lines_read"], previous.scalars.get("lines_read", 0)))
        self.tick()

    def forget(self, stats: RunStats) -> None:
        """Drop the snapshot of a ``RunStats`` whose pipeline is discarded."""
        with self._lock:
            self._snapshots.pop(id(stats), None)

    def set_assigned(self, partitions: Iterable[Any]) -> None:
        """Record the partitions the group assigned (``TopicPartition`` or ``(topic, n)``), after every rebalance."""
        assigned = {partition_key(partition) for partition in partitions}
        for topic, partition in self._lag_series():
            if (topic, partition) not in assigned:
                self.consumer_lag.remove(topic, str(partition))
        self.health.set_assigned(assigned)
        self.assigned_partitions.set(len(assigned))
        self.rebalances.inc()

    def set_lag(self, partition: Any, lag: int) -> None:
        """Set the lag in records of one assigned partition (high watermark minus position)."""
        topic, number = partition_key(partition)
        lag = max(int(lag), 0)
        self.consumer_lag.labels(topic=topic, partition=str(number)).set(lag)
        self.health.set_lag((topic, number), lag)

    def set_stopping(self) -> None:
        """Fail readiness from now on; call it when shutdown starts."""
        self.health.set_stopping()

    def observe_commit(self, error: BaseException | None = None) -> None:
        """Count one offset commit, failed when ``error`` is given."""
        if error is None:
            self.offset_commits.inc()
        else:
            self.offset_commit_errors.inc()

    # -- sinks --------------------------------------------------------------

    def observe_store_write(self, table: str, duration_s: float, failed: bool = False) -> None:
        self.store_write_duration.labels(table=table).observe(duration_s)
        if failed:
            self.store_write_errors.labels(table=table).inc()

    def instrument_store(self, store: Any) -> Any:
        """Return ``store`` with its ``write_<table>`` methods timed and their failures counted."""
        return _InstrumentedStore(store, self)

    def instrument_sink(self, sink: Any, role: str) -> Any:
        """Return ``sink`` with ``publish`` counted; ``role`` is ``actions`` or ``dead_letters``."""
        return _InstrumentedSink(sink, self, role)

    # -- probes -------------------------------------------------------------

    def liveness(self) -> ProbeResult:
        return self.health.liveness()

    def readiness(self) -> ProbeResult:
        return self.health.readiness()

    def _lag_series(self) -> list[tuple[str, int]]:
        series = []
        for metric in self.consumer_lag.collect():
            for sample in metric.samples:
                series.append((sample.labels["topic"], int(sample.labels["partition"])))
        return series


class _InstrumentedStore:
    """Delegates to the audit store; ``write_*`` calls feed the ClickHouse metrics."""

    def __init__(self, store: Any, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics

    @property
    def wrapped(self) -> Any:
        return self._store

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if not (name.startswith("write_") and callable(attribute)):
            return attribute
        table = name.removeprefix("write_")

        @functools.wraps(attribute)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                result = attribute(*args, **kwargs)
            except Exception:
                self._metrics.observe_store_write(table, time.perf_counter() - started, failed=True)
                raise
            self._metrics.observe_store_write(table, time.perf_counter() - started)
            return result

        return timed


class _InstrumentedSink:
    """Delegates to an action or dead-letter sink; ``publish`` feeds the producer metrics."""

    def __init__(self, sink: Any, metrics: Metrics, role: str) -> None:
        self._sink = sink
        self._metrics = metrics
        self._labels = {"sink": str(getattr(sink, "sink_id", type(sink).__name__)), "role": role}

    @property
    def wrapped(self) -> Any:
        return self._sink

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sink, name)

    def publish(self, items: list[Any]) -> Any:
        try:
            result = self._sink.publish(items)
        except Exception:
            self._metrics.producer_errors.labels(**self._labels).inc()
            raise
        self._metrics.published_messages.labels(**self._labels).inc(len(items))
        return result


# -- HTTP ---------------------------------------------------------------------


def make_app(metrics: Metrics) -> Callable:
    """Return the WSGI app: ``/metrics`` (Prometheus text or OpenMetrics), ``/healthz``, ``/readyz``."""
    metrics_app = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: Callable) -> list[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path in ("/healthz", "/readyz"):
            result = metrics.liveness() if path == "/healthz" else metrics.readiness()
            return _respond(start_response, 200 if result.ok else 503, result.detail)
        if path == "/":
            return _respond(start_response, 200, {"endpoints": ["/metrics", "/healthz", "/readyz"]})
        return _respond(start_response, 404, {"status": f"no such endpoint {path}; use /metrics, /healthz or /readyz"})

    return app


def _respond(start_response: Callable, code: int, document: dict[str, Any]) -> list[bytes]:
    reasons = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}
    body = json.dumps(document).encode("utf-8") + b"\n"
    start_response(
        f"{code} {reasons[code]}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")],
    )
    return [body]


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """A WSGI server that answers each request in its own thread, so a slow scrape blocks no probe."""

    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    """Logs requests at debug level through ``logging`` instead of printing them to stderr."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it so
        logger.debug("metrics endpoint %s: " + format, self.address_string(), *args)


class MetricsServer:
    """Serves ``make_app(metrics)`` from a daemon thread; use as a context manager or call ``close``."""

    def __init__(self, metrics: Metrics, host: str = "127.0.0.1", port: int = 9464) -> None:
        self.metrics = metrics
        self.host = host
        self.requested_port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> MetricsServer:
        """Bind and start serving.

        Raises:
            ConfigError: the address cannot be bound (port in use, unknown
                host, no permission); the message names ``metrics.host`` and
                ``metrics.port``.
        """
        server_class = _ThreadingWSGIServer
        if ":" in self.host:
            server_class = type("_ThreadingWSGIServerV6", (_ThreadingWSGIServer,), {"address_family": socket.AF_INET6})
        try:
            self._server = make_server(
                self.host, self.requested_port, make_app(self.metrics), server_class=server_class, handler_class=_QuietHandler
            )
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {self.host}:{self.requested_port}: {exc.strerror or exc}; "
                "set metrics.port (TOKENSENTRY_METRICS__PORT) to a free port or metrics.enabled to false"
            ) from None
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.5}, name="tokensentry-metrics", daemon=True
        )
        self._thread.start()
        logger.info("serving /metrics, /healthz and /readyz on %s", self.url)
        return self

    @property
    def port(self) -> int:
        """The bound port, also when 0 asked for a free one."""
        if self._server is None:
            raise RuntimeError("MetricsServer.port read before start()")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        logger.info("stopped the metrics endpoint on %s:%d", self.host, self.requested_port)
        self._server = None
        self._thread = None

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
