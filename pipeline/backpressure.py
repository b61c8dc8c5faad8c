"""Retrying the writes of the batch in flight while fetching is paused: the worker's backpressure.

A write that fails with a retriable error is retried in place with capped
exponential backoff while fetching is paused. An error is retriable when its
class sets ``retriable = True``, as ``TransientStoreError`` from the audit
store and ``PublishError`` from the producer do (see ``is_retriable``).
Retrying the write, not the whole batch, keeps the batch's events from being
added to the windows twice. The worker pauses and resumes fetching through
the retrier's ``on_wait`` and ``on_resume`` hooks and keeps polling the
paused consumer, so it stays in the group, while the paused partitions fetch
nothing: memory stays bounded by the batch in flight plus aiokafka's
prefetch buffer. Non-retriable errors stop the worker without committing
the failed batch.

The pipeline writes through ``RetryingStore`` and ``PartitionSink``, which
send every write of one worker through its single ``WriteRetrier``.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pipeline.errors import TokenSentryError
from pipeline.sinks.clickhouse import AuditStore
from pipeline.sinks.kafka import is_retriable_kafka_error

if TYPE_CHECKING:
    from pipeline.worker import WorkerMetrics

logger = logging.getLogger(__name__)

T = TypeVar("T")


# The worker's errors live here because the retrier raises BatchAbortedError;
# pipeline.worker imports both, so they can be imported from there too.
class WorkerError(TokenSentryError):
    """The worker stopped because a batch could not be processed or written."""


class BatchAbortedError(WorkerError):
    """A batch was given up during shutdown; its offsets were not committed."""


def is_retriable(exc: BaseException) -> bool:
    """Return True when repeating the write that raised ``exc`` may succeed.

    The error's class decides through its ``retriable`` attribute. Kafka
    client errors that reach the retrier unwrapped go through
    ``is_retriable_kafka_error``, which also retries ``KafkaTimeoutError``.
    """
    if isinstance(exc, BatchAbortedError):
        return False
    if getattr(exc, "retriable", False) is True:
        return True
    return is_retriable_kafka_error(exc)


class PublishGate:
    """Whether a partition's Kafka sinks publish; closed while replaying records published before."""

    __slots__ = ("open",)

    def __init__(self) -> None:
        self.open = True


class WriteRetrier:
    """Repeats one write of the batch in flight until it succeeds, with capped exponential backoff.

    Runs in the pipeline thread. ``on_wait`` is called before the first
    retry (the worker pauses fetching) and ``on_resume`` after the write
    succeeded. Setting ``abort`` makes a waiting retry raise ``BatchAbortedError``.
    """

    def __init__(
        self,
        *,
        initial_s: float,
        max_s: float,
        abort: threading.Event,
        on_wait: Callable[[], None],
        on_resume: Callable[[], None],
        metrics: WorkerMetrics,
    ) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.abort = abort
        self.on_wait = on_wait
        self.on_resume = on_resume
        self.metrics = metrics
        self.batch_label = "no batch"
        """The batch in flight, e.g. 'gateway-logs/3 offsets 100-599', for log lines."""

    def delay_s(self, attempt: int) -> float:
        """Return the wait before retry ``attempt`` (1-based): doubling from ``initial_s``, capped, with 20% jitter."""
        return min(self.max_s, self.initial_s * 2 ** (attempt - 1)) * (1.0 + 0.2 * random.random())

    def call(self, description: str, operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``operation(*args, **kwargs)``, retrying it while it fails with a retriable error."""
        attempt = 0
        while True:
            try:
                result = operation(*args, **kwargs)
            except Exception as exc:
                if not is_retriable(exc):
                    raise
                attempt += 1
                self.metrics.write_retries += 1
                if attempt == 1:
                    self.on_wait()
                delay = self.delay_s(attempt)
                logger.warning(
                    "%s for %s failed on attempt %d: %s; fetching paused, the batch is kept and its offsets "
                    "are not committed; retrying in %.1f s",
                    description,
                    self.batch_label,
                    attempt,
                    exc,
                    delay,
                )
                if self.abort.wait(delay):
                    raise BatchAbortedError(
                        f"gave up {description} for {self.batch_label} after {attempt} failed attempts "
                        f"during shutdown (last error: {exc}); its offsets are not committed, so the "
                        "partition's next owner processes the batch again"
                    ) from exc
                continue
            if attempt:
                logger.info("%s for %s succeeded on attempt %d; resuming fetching", description, self.batch_label, attempt + 1)
                self.on_resume()
            return result


class RetryingStore:
    """Audit store wrapper that the pipeline writes through: every ``write_*`` call goes through a ``WriteRetrier``."""

    def __init__(self, store: AuditStore, retrier: WriteRetrier) -> None:
        self._store = store
        self._retrier = retrier

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if name.startswith("write_") and callable(attribute):
            return functools.partial(self._retrier.call, f"store {name}", attribute)
        return attribute


class PartitionSink:
    """A shared Kafka sink seen from one partition: muted by its gate, retried by the retrier."""

    def __init__(self, sink: Any, gate: PublishGate, retrier: WriteRetrier) -> None:
        self.sink = sink
        self.sink_id = sink.sink_id
        self.gate = gate
        self.retrier = retrier

    def publish(self, items: list) -> None:
        if not items:
            return
        if not self.gate.open:
            logger.debug("%s: %d records not published again while replaying", self.sink_id, len(items))
            return
        self.retrier.call(f"{self.sink_id} publish of {len(items)} records", self.sink.publish, items)

    def close(self) -> None:
        self.sink.close()
