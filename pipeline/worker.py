"""Kafka consumer-group worker: the loop behind ``tokensentry run``.

Each worker joins a consumer group on the log topics, fetches records with
``getmany``, runs them through one ``Pipeline`` per assigned partition,
publishes actions and dead letters to their topics, and commits offsets.
Several workers in one group split the partitions between them.

State per partition
-------------------
A token's windows, baselines and cooldowns live in the ``Pipeline`` of the
partition that carries its records, and event-time watermarks advance per
partition. The log topic must therefore be keyed by token (``tokensentry
produce`` keys by the same subject the pipeline derives). When it is not,
one token's requests are spread over several partitions. Each partition
receives only part of the token's traffic, so per-window rates undercount,
static limits fire late or never, and each partition learns its own,
smaller baseline.

Checkpoints
-----------
Each partition's state is checkpointed into the audit store. A worker that
is assigned the partition restores the latest checkpoint and replays the
records after it, up to the committed offset, without publishing.
``pipeline.checkpoints`` describes when states are saved and which
checkpoints are discarded.

Delivery guarantee
------------------
Input records are processed at least once. Offsets are committed only after
``Pipeline.process`` returned for every record below them, that is after
the batch's audit rows were written and its actions and dead letters were
acknowledged by the broker (``acks='all'``, idempotent producer). A crash
between the writes and the commit redelivers the batch. Audit rows are
effectively once: every row has a deterministic id (event ids from topic,
partition and offset; window, detection and action ids from their inputs)
and the store deduplicates on it (``FINAL``). Actions on the action topic
are at least once: a redelivered batch can publish an action again, always
with the same ``action_id``, so a consumer of the action topic must skip
``action_id`` values it already applied. The topic is compacted by subject,
so a reader starting from the beginning gets at least the latest action per
subject.

Backpressure
------------
A write that fails with a retriable error is retried in place while
fetching is paused, and the worker keeps polling the paused consumer to
stay in the group (``pipeline.backpressure``). Non-retriable errors stop the
worker without committing the failed batch.

Shutdown
--------
SIGTERM or SIGINT finish the batch in flight, commit, checkpoint every
partition, leave the group and return. If the batch cannot be written
within ``shutdown_timeout_s`` (or on a second signal), the worker gives up
on it, leaves its offsets uncommitted and raises ``BatchAbortedError``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord
from clickhouse_connect.driver.exceptions import DatabaseError

from pipeline.alerts import WebhookAlertSink
from pipeline.assemble import build_pipeline, open_store
from pipeline.backpressure import (
    BatchAbortedError,
    PartitionSink,
    PublishGate,
    RetryingStore,
    WorkerError,
    WriteRetrier,
)
from pipeline.checkpoints import Checkpointer
from pipeline.config import Settings
from pipeline.enforce.receipts import collect_receipts
from pipeline.kafka_admin import KafkaUnavailableError, ensure_topics, topic_specs
from pipeline.runner import BatchResult, Pipeline
from pipeline.sinks.clickhouse import AuditStore
from pipeline.sinks.kafka import KafkaActionSink, KafkaDeadLetterSink, ProducerBridge, build_producer
from pipeline.sinks.store_errors import StoreError
from pipeline.sources.kafka import build_consumer, line_batch, subscribe

# WorkerError and BatchAbortedError are defined in pipeline.backpressure and
# exported from here too.
__all__ = ["BatchAbortedError", "PartitionState", "Worker", "WorkerError", "WorkerMetrics", "WorkerOptions"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# While a batch runs in the pipeline thread, the event loop checks it this
# often and, when fetching is paused, polls the consumer so that the group
# keeps counting this member as alive (max.poll.interval.ms).
KEEPALIVE_POLL_S = 1.0
PROGRESS_LOG_INTERVAL_S = 30.0


@dataclass(slots=True)
class WorkerOptions:
    """Polling, retry, checkpoint and shutdown options of a worker; Kafka names come from ``Settings.kafka``."""

    max_records: int = 10_000
    """Records per ``getmany`` call, over all assigned partitions."""
    poll_timeout_s: float = 0.5
    checkpoint_interval_s: float = 60.0
    checkpoint_every_batches: int = 0
    """Also checkpoint a partition after this many batches; 0 checkpoints by time only."""
    exit_when_idle_s: float | None = None
    """Stop after this many seconds without records (tests, batch jobs); None runs until a signal."""
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    shutdown_timeout_s: float = 30.0
    """After SIGTERM, how long a failing write is still retried before the batch is given up."""
    log_format: str | None = None
    mapping: dict[str, str] | None = None


@dataclass(slots=True)
class WorkerMetrics:
    """Counters of one worker since it started, for logs and a metrics exporter.

    ``lag`` maps ``topic/partition`` to the records between the partition's
    high watermark (as of the last fetch) and the next offset to process.
    """

    records_in: int = 0
    bytes_in: int = 0
    events_accepted: int = 0
    dead_lettered: int = 0
    actions: int = 0
    actions_published: int = 0
    batches: int = 0
    replayed_records: int = 0
    commits: int = 0
    commit_failures: int = 0
    checkpoints: int = 0
    checkpoint_bytes: int = 0
    write_retries: int = 0
    rebalances: int = 0
    lag: dict[str, int] = field(default_factory=dict)

    def snapshot(self) -> dict[str, Any]:
        """Return the counters as a plain dict (a copy)."""
        values = {name: getattr(self, name) for name in self.__slots__}
        values["lag"] = dict(self.lag)
        return values


@dataclass(slots=True)
class PartitionState:
    """A partition's pipeline and positions.

    Offsets below ``next_offset`` are processed and written; offsets below
    ``committed_offset`` are also committed. ``next_offset`` is None until
    the first record when the group has no committed offset and no
    checkpoint exists.
    """

    partition: TopicPartition
    pipeline: Pipeline
    gate: PublishGate
    next_offset: int | None
    committed_offset: int | None
    replay_until: int = -1
    """Offsets below this were published by an earlier run; Kafka sinks stay muted for them."""
    checkpoint_offset: int | None = None
    last_checkpoint: float = field(default_factory=time.monotonic)
    batches_since_checkpoint: int = 0
    failed: bool = False
    """A batch failed part-way: the state is ahead of the written data and must never be checkpointed."""

    @property
    def label(self) -> str:
        return f"{self.partition.topic}/{self.partition.partition}"


class _RebalanceListener(ConsumerRebalanceListener):
    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._worker.on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._worker.on_partitions_assigned(assigned)


class Worker:
    """One member of a TokenSentry consumer group; see the module docstring for its guarantees.

    ``run`` returns after a clean stop (signal or ``exit_when_idle_s``) and
    raises ``WorkerError`` or ``KafkaUnavailableError`` when it cannot go on.
    """

    def __init__(
        self,
        settings: Settings,
        options: WorkerOptions,
        *,
        store_opener: Callable[[Settings], AuditStore] = open_store,
        exporter: Any | None = None,
    ) -> None:
        """Create a worker; nothing connects until ``run``.

        ``store_opener`` opens and migrates the audit store (tests pass one
        that injects failures). ``exporter`` is an optional
        ``pipeline.metrics.Metrics``: the worker calls its hooks (store and
        sink instrumentation, ticks, batches, lag, commits, assignment).
        """
        self.settings = settings
        self._store_opener = store_opener
        self._exporter = exporter
        self.kafka = settings.kafka
        self.options = options
        self.metrics = WorkerMetrics()
        self.owner = f"{self.kafka.client_id}@{socket.gethostname()}:{os.getpid()}"
        self._partitions: dict[TopicPartition, PartitionState] = {}
        self._released: dict[TopicPartition, PartitionState] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokensentry-pipeline")
        self._abort = threading.Event()
        self._stop: asyncio.Event | None = None
        self._round_lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._generation = 0
        self._listener_error: BaseException | None = None
        self._fetch_paused = False
        self._last_activity = time.monotonic()
        self._last_progress_log = time.monotonic()
        self._store: AuditStore | None = None
        self._checkpointer: Checkpointer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._action_sink: KafkaActionSink | None = None
        self._dead_letter_sink: KafkaDeadLetterSink | None = None
        self._alert_sink: WebhookAlertSink | None = None
        if settings.alert_webhook_url is not None:
            self._alert_sink = WebhookAlertSink(
                settings.alert_webhook_url.get_secret_value(),
                alert_format=settings.alert_format,
                min_interval_s=settings.alert_min_interval_s,
            )
        self._retrier = WriteRetrier(
            initial_s=options.retry_initial_s,
            max_s=options.retry_max_s,
            abort=self._abort,
            on_wait=self._pause_from_thread,
            on_resume=self._resume_from_thread,
            metrics=self.metrics,
        )

    # ---- lifecycle -------------------------------------------------------

    async def run(self) -> None:
        """Join the group and process records until stopped; always leaves the group and closes clients."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._round_lock = asyncio.Lock()
        self._install_signal_handlers()
        try:
            await self._start()
            # Receipts from enforcement agents go into this worker's store; the
            # group shares the receipt topic's partitions like the log topics'.
            receipts = asyncio.create_task(collect_receipts(self.kafka, self._store, self._stop), name="receipts")
            try:
                await self._consume()
                await self._checkpoint_all("shutdown")
            finally:
                await _stop_task(receipts)
        except (StoreError, DatabaseError) as exc:
            raise WorkerError(f"audit store failed: {exc}") from exc
        except KafkaError as exc:
            raise WorkerError(f"Kafka client failed: {type(exc).__name__}: {exc}") from exc
        finally:
            await self._close()
            self._remove_signal_handlers()
        logger.info("worker %s stopped: %s", self.owner, self.metrics.snapshot())

    def request_stop(self) -> None:
        """Finish the batch in flight, then commit, checkpoint and leave the group (call on the loop)."""
        if self._stop is None or self._stop.is_set():
            return
        self._stop.set()
        if self._exporter is not None:
            self._exporter.set_stopping()
        if self._loop is not None:
            self._loop.call_later(self.options.shutdown_timeout_s, self._abort.set)

    async def _start(self) -> None:
        kafka = self.kafka
        self._store = await self._in_thread(self._store_opener, self.settings)
        self._checkpointer = Checkpointer(
            self._store,
            group_id=kafka.group_id,
            owner=self.owner,
            interval_s=self.options.checkpoint_interval_s,
            every_batches=self.options.checkpoint_every_batches,
            metrics=self.metrics,
            run_in_thread=self._in_thread,
            build_pipeline=self._build_pipeline,
        )
        created = await ensure_topics(kafka, topic_specs(kafka))
        if created:
            logger.info("created topics %s", ", ".join(created))

        self._producer = build_producer(kafka)
        self._consumer = build_consumer(kafka, group_id=kafka.group_id, max_records=self.options.max_records)
        try:
            await self._producer.start()
            await self._consumer.start()
        except KafkaError as exc:
            raise KafkaUnavailableError(
                f"cannot connect to Kafka at {kafka.bootstrap_servers}: {exc}; check --bootstrap-servers "
                "and that the brokers are running"
            ) from None
        bridge = ProducerBridge(self._producer, asyncio.get_running_loop())
        self._action_sink = KafkaActionSink(bridge, kafka.action_topic)
        self._dead_letter_sink = KafkaDeadLetterSink(bridge, kafka.dead_letter_topic)
        subscribe(self._consumer, kafka.topics, _RebalanceListener(self))
        logger.info(
            "worker %s joining group %s on %s (actions to %s, dead letters to %s, store %s)",
            self.owner,
            kafka.group_id,
            ", ".join(kafka.topics),
            kafka.action_topic,
            kafka.dead_letter_topic,
            self._store.label,
        )
        self._last_activity = time.monotonic()

    async def _close(self) -> None:
        # After an aborted retry fetching stays paused; the stopped consumer must not be polled.
        self._fetch_paused = False
        if self._consumer is not None:
            # stop() leaves the group (LeaveGroup), so the partitions move at once.
            await self._consumer.stop()
            logger.info("left group %s", self.kafka.group_id)
        if self._producer is not None:
            await self._producer.stop()
        if self._store is not None:
            await self._in_thread(self._store.close)
        if self._alert_sink is not None:
            await self._in_thread(self._alert_sink.close)
        self._executor.shutdown(wait=True)

    def _install_signal_handlers(self) -> None:
        assert self._loop is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError):
                # Not the main thread, or a platform without signal handlers.
                logger.debug("cannot install a handler for %s", sig.name)

    def _remove_signal_handlers(self) -> None:
        assert self._loop is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass

    def _on_signal(self, sig: signal.Signals) -> None:
        assert self._stop is not None
        if not self._stop.is_set():
            logger.info(
                "received %s: finishing the batch in flight, then committing, checkpointing and leaving the group",
                sig.name,
            )
            self.request_stop()
        else:
            logger.warning("received %s again: giving up retries; a batch still failing is not committed", sig.name)
            self._abort.set()

    # ---- the consume loop ------------------------------------------------

    async def _consume(self) -> None:
        assert self._consumer is not None
        assert self._stop is not None
        assert self._round_lock is not None
        assert self._checkpointer is not None
        poll_ms = int(self.options.poll_timeout_s * 1000)
        while not self._stop.is_set():
            self._raise_listener_error()
            generation = self._generation
            records = await self._consumer.getmany(timeout_ms=poll_ms, max_records=self.options.max_records)
            if self._exporter is not None:
                self._exporter.tick()
            async with self._round_lock:
                self._raise_listener_error()
                if records and generation != self._generation:
                    # A rebalance ran while getmany waited: these records may
                    # predate the seek to a checkpoint, so fetch them again.
                    self._rewind(records)
                    continue
                if records:
                    self._last_activity = time.monotonic()
                    await self._process_round(records)
                await self._checkpointer.save_due(self._partitions.values())
            self._update_lag()
            self._log_progress()
            if not records and self._idle_expired():
                logger.info("no records for %.1f s; stopping (--exit-when-idle)", self.options.exit_when_idle_s)
                break

    def _idle_expired(self) -> bool:
        limit = self.options.exit_when_idle_s
        return limit is not None and time.monotonic() - self._last_activity >= limit

    def _raise_listener_error(self) -> None:
        if self._listener_error is not None:
            error, self._listener_error = self._listener_error, None
            raise error

    def _rewind(self, records: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> None:
        assert self._consumer is not None
        assigned = self._consumer.assignment()
        for partition, batch in records.items():
            state = self._partitions.get(partition)
            if state is None or partition not in assigned or not batch:
                continue
            offset = state.next_offset if state.next_offset is not None else batch[0].offset
            self._consumer.seek(partition, offset)
            logger.debug("%s: fetched across a rebalance, seeking back to offset %d", state.label, offset)

    async def _process_round(self, records: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> None:
        """Process every partition of one ``getmany`` result, then commit what was fully written.

        The commit path, per round:
        1. ``Pipeline.process`` per partition batch: audit rows written, then
           actions and dead letters published and acknowledged;
        2. commit the next offset of every partition processed in step 1;
        3. (in ``Checkpointer.save_due``) checkpoint partitions whose interval passed.
        A failure in step 1 still commits the partitions finished before it.
        """
        done: dict[TopicPartition, int] = {}
        try:
            for partition, batch in records.items():
                state = self._partitions.get(partition)
                if state is None:
                    logger.warning("dropped %d records of %s/%d, which is not assigned to this worker", len(batch), *partition)
                    continue
                pending = self._unprocessed(state, batch)
                if not pending:
                    continue
                replayed = [record for record in pending if record.offset < state.replay_until]
                live = pending[len(replayed) :]
                if replayed:
                    await self._process_batch(state, replayed, publish=False)
                if live:
                    await self._process_batch(state, live, publish=True)
                done[partition] = state.next_offset
        finally:
            if done:
                await self._commit(done)

    def _unprocessed(self, state: PartitionState, batch: Sequence[ConsumerRecord]) -> list[ConsumerRecord]:
        if state.next_offset is None or not batch:
            return list(batch)
        pending = [record for record in batch if record.offset >= state.next_offset]
        if len(pending) < len(batch):
            logger.debug("%s: skipped %d records below offset %d", state.label, len(batch) - len(pending), state.next_offset)
        return pending

    async def _process_batch(self, state: PartitionState, records: Sequence[ConsumerRecord], *, publish: bool) -> None:
        batch = line_batch(state.partition, records)
        first, last = records[0].offset, records[-1].offset
        self._retrier.batch_label = f"{state.label} offsets {first}-{last}"
        state.gate.open = publish
        started = time.perf_counter()
        try:
            result = await self._in_thread(state.pipeline.process, batch)
        except BaseException:
            state.failed = True
            raise
        if self._exporter is not None:
            self._exporter.observe_batch(state.pipeline.stats, time.perf_counter() - started)
        state.next_offset = last + 1
        state.batches_since_checkpoint += 1
        self._count(batch_records=len(records), size=batch.size_bytes, result=result, published=publish)
        logger.debug(
            "%s: processed offsets %d-%d (%d events, %d dead letters, %d actions%s)",
            state.label,
            first,
            last,
            result.events,
            len(result.dead_letters),
            len(result.actions),
            "" if publish else ", replayed without publishing",
        )

    def _count(self, *, batch_records: int, size: int, result: BatchResult, published: bool) -> None:
        metrics = self.metrics
        metrics.batches += 1
        metrics.records_in += batch_records
        metrics.bytes_in += size
        metrics.events_accepted += result.events
        metrics.dead_lettered += len(result.dead_letters)
        metrics.actions += len(result.actions)
        if published:
            metrics.actions_published += sum(1 for action in result.actions if not action.dry_run)
        else:
            metrics.replayed_records += batch_records

    async def _commit(self, offsets: dict[TopicPartition, int]) -> bool:
        """Commit ``offsets``; on a lost group membership log it and return False."""
        assert self._consumer is not None
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError as exc:
            self.metrics.commit_failures += 1
            if self._exporter is not None:
                self._exporter.observe_commit(exc)
            logger.warning(
                "commit of %s failed because the group rebalanced (%s); the partitions' new owners process "
                "these records again, with the same event and action ids",
                _describe_offsets(offsets),
                exc,
            )
            return False
        except KafkaError as exc:
            if self._exporter is not None:
                self._exporter.observe_commit(exc)
            raise WorkerError(f"offset commit of {_describe_offsets(offsets)} failed: {exc}") from exc
        self.metrics.commits += 1
        if self._exporter is not None:
            self._exporter.observe_commit()
        for partition, offset in offsets.items():
            state = self._partitions.get(partition) or self._released.get(partition)
            if state is not None:
                state.committed_offset = offset
        logger.debug("committed %s", _describe_offsets(offsets))
        return True

    def _update_lag(self) -> None:
        assert self._consumer is not None
        lag: dict[str, int] = {}
        for partition, state in self._partitions.items():
            highwater = self._consumer.highwater(partition)
            if highwater is not None and state.next_offset is not None:
                lag[state.label] = max(highwater - state.next_offset, 0)
                if self._exporter is not None:
                    self._exporter.set_lag(partition, lag[state.label])
        self.metrics.lag = lag

    def _log_progress(self) -> None:
        now = time.monotonic()
        if now - self._last_progress_log < PROGRESS_LOG_INTERVAL_S:
            return
        self._last_progress_log = now
        metrics = self.metrics
        logger.info(
            "progress: %d records in (%d events, %d dead letters), %d actions published, %d commits, lag %s",
            metrics.records_in,
            metrics.events_accepted,
            metrics.dead_lettered,
            metrics.actions_published,
            metrics.commits,
            sum(metrics.lag.values()),
        )

    # ---- the pipeline thread ---------------------------------------------

    async def _in_thread(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function`` in the pipeline thread; poll the paused consumer meanwhile to stay in the group."""
        assert self._loop is not None
        future = self._loop.run_in_executor(self._executor, function, *args)
        while True:
            done, _ = await asyncio.wait({future}, timeout=KEEPALIVE_POLL_S)
            if done:
                return future.result()
            if self._fetch_paused:
                if self._exporter is not None:
                    # Retrying a failed write in place is progress for /healthz; a call that hangs is not.
                    self._exporter.tick()
                await self._poll_paused()

    async def _poll_paused(self) -> None:
        assert self._consumer is not None
        # During a rebalance getmany waits for the new assignment, which waits
        # for this batch (the revoke callback takes the round lock): the
        # timeout breaks that cycle, and cancelling getmany there drops nothing.
        try:
            records = await asyncio.wait_for(self._consumer.getmany(timeout_ms=0), timeout=KEEPALIVE_POLL_S)
        except TimeoutError:
            return
        # Paused partitions return nothing; any records come from partitions
        # assigned since the pause, and are fetched again later.
        if records:
            self._rewind(records)

    def _pause_from_thread(self) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._pause_fetching)

    def _resume_from_thread(self) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._resume_fetching)

    def _pause_fetching(self) -> None:
        if self._consumer is None or self._fetch_paused:
            return
        self._fetch_paused = True
        self._consumer.pause(*self._consumer.assignment())
        logger.info("paused fetching until the failing write succeeds")

    def _resume_fetching(self) -> None:
        if self._consumer is None or not self._fetch_paused:
            return
        self._fetch_paused = False
        self._consumer.resume(*self._consumer.paused())
        logger.info("resumed fetching")

    # ---- rebalancing -----------------------------------------------------

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Commit and checkpoint the revoked partitions once the batch in flight is done.

        Called by aiokafka before the group rebalances. The states are kept
        in memory, so a partition assigned back at once needs no restore.
        """
        assert self._round_lock is not None
        async with self._round_lock:
            self._generation += 1
            self.metrics.rebalances += 1
            try:
                await self._release(revoked)
            except Exception as exc:  # noqa: BLE001 - aiokafka would only log it; the consume loop raises it
                logger.exception("releasing partitions %s failed", _describe_partitions(revoked))
                self._listener_error = exc

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Build or restore each assigned partition's pipeline and seek to where its state ends."""
        assert self._round_lock is not None
        async with self._round_lock:
            self._generation += 1
            self._last_activity = time.monotonic()
            try:
                for partition in sorted(assigned):
                    self._partitions[partition] = await self._claim(partition)
            except Exception as exc:  # noqa: BLE001 - aiokafka would only log it; the consume loop raises it
                logger.exception("preparing assigned partitions %s failed", _describe_partitions(assigned))
                self._listener_error = exc
            for released in self._released.values():
                if self._exporter is not None:
                    self._exporter.forget(released.pipeline.stats)
            self._released.clear()
            if self._exporter is not None:
                self._exporter.set_assigned(assigned)
            logger.info("assigned partitions %s in group %s", _describe_partitions(assigned) or "(none)", self.kafka.group_id)

    async def _release(self, revoked: set[TopicPartition]) -> None:
        assert self._checkpointer is not None
        states = [self._partitions.pop(partition) for partition in sorted(revoked) if partition in self._partitions]
        healthy = [state for state in states if not state.failed and state.next_offset is not None]
        for state in healthy:
            self._released[state.partition] = state
        # Rounds commit as they finish, so only a commit that failed earlier is still pending here.
        uncommitted = {state.partition: state.next_offset for state in healthy if state.next_offset != state.committed_offset}
        if uncommitted:
            await self._commit(uncommitted)
        for state in healthy:
            await self._checkpointer.save(state, "revoked")
        if states:
            logger.info("revoked partitions %s", _describe_partitions(revoked))

    async def _claim(self, partition: TopicPartition) -> PartitionState:
        assert self._consumer is not None
        assert self._checkpointer is not None
        committed = await self._consumer.committed(partition)
        previous_state = self._released.get(partition)
        if previous_state is not None and committed is not None and previous_state.next_offset == committed:
            logger.debug("%s: assigned back, keeping the in-memory state at offset %d", previous_state.label, committed)
            return self._released.pop(partition)

        gate = PublishGate()
        pipeline = await self._in_thread(self._build_pipeline, gate)
        state = PartitionState(partition, pipeline, gate, next_offset=committed, committed_offset=committed)
        checkpoint_offset = await self._checkpointer.restore(state)
        if checkpoint_offset is not None:
            self._consumer.seek(partition, checkpoint_offset)
        return state

    def _build_pipeline(self, gate: PublishGate) -> Pipeline:
        assert self._store is not None
        assert self._action_sink is not None
        assert self._dead_letter_sink is not None
        store: Any = self._store
        action_sink: Any = self._action_sink
        dead_letter_sink: Any = self._dead_letter_sink
        if self._exporter is not None:
            # Instrumented inside the retrier, so every failed attempt is counted.
            store = self._exporter.instrument_store(store)
            action_sink = self._exporter.instrument_sink(action_sink, "actions")
            dead_letter_sink = self._exporter.instrument_sink(dead_letter_sink, "dead_letters")
        return build_pipeline(
            self.settings,
            store=RetryingStore(store, self._retrier),
            log_format=self.options.log_format,
            mapping=self.options.mapping,
            # Alerts go out only after the actions are on the topic, and never block the batch.
            action_sinks=[PartitionSink(action_sink, gate, self._retrier)] + ([self._alert_sink] if self._alert_sink else []),
            dead_letter_sinks=[PartitionSink(dead_letter_sink, gate, self._retrier)],
        )

    # ---- checkpoints -----------------------------------------------------

    async def _checkpoint_all(self, reason: str) -> None:
        assert self._round_lock is not None
        assert self._checkpointer is not None
        async with self._round_lock:
            for state in list(self._partitions.values()):
                await self._checkpointer.save(state, reason)


def _describe_partitions(partitions: set[TopicPartition] | Sequence[TopicPartition]) -> str:
    return ", ".join(f"{partition.topic}/{partition.partition}" for partition in sorted(partitions))


def _describe_offsets(offsets: Mapping[TopicPartition, int]) -> str:
    return ", ".join(f"{partition.topic}/{partition.partition}@{offset}" for partition, offset in sorted(offsets.items()))


async def _stop_task(task: asyncio.Task) -> None:
    """Cancel a helper task and log the error it failed with, if any."""
    if not task.done():
        task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except (KafkaError, StoreError, DatabaseError) as exc:
        logger.error("task %s failed: %s: %s", task.get_name(), type(exc).__name__, exc)
