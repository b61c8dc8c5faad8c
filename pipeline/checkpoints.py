"""Checkpoint policy of the Kafka worker: when partition states are saved, and how they are restored.

A partition's state is saved with ``Pipeline.checkpoint()`` into the
ClickHouse table ``state_checkpoints`` of the audit store (migration 005,
``AuditStore.save_checkpoint``), one row per (group, topic, partition) with
the offset the state covers. It is saved when partitions are revoked, when
the worker stops, and every ``checkpoint_interval_s`` seconds (or
``checkpoint_every_batches`` batches), but only when the offset equals the
group's committed offset. A worker that gets a partition restores the latest
checkpoint, seeks to its offset and replays the records up to the committed
offset with Kafka publishing muted: those records' audit rows are rewritten
with the same ids, and their actions and dead letters are already on the
topics.

Discard rules. A state is never saved after a batch failed part-way (it is
ahead of the written data), when its offset differs from the committed
offset, or when it has not changed since its last checkpoint. On assignment
a checkpoint is discarded, and the partition starts with empty state, when
its offset is above the committed offset (the group's offsets were reset)
or when it cannot be restored (an older format or changed classes).

Why ClickHouse rather than a compacted Kafka state topic: a checkpoint
contains every subject's arrays and the events of the open windows. It
outgrows Kafka's default 1 MiB record limit (``message.max.bytes``) at a
few thousand subjects per partition (measured with five requests per
subject: 0.8 MB at 5,000 subjects, 3.3 MB at 20,000), while a ClickHouse
``String`` value has no such limit and compresses with ZSTD. The workers of a group already
share one ClickHouse server for the audit trail, and the
ReplacingMergeTree table keeps only the latest row per partition after
merges, as compaction would. The cost: with an embedded chDB store every
worker has its own checkpoints, so a partition that moves to another worker
starts with fresh state there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from aiokafka import TopicPartition
from clickhouse_connect.driver.exceptions import DatabaseError

from pipeline.backpressure import PublishGate
from pipeline.runner import Pipeline
from pipeline.sinks.clickhouse import AuditStore, Checkpoint
from pipeline.sinks.store_errors import StoreError
from pipeline.sinks.store_retry import RetryPolicy

if TYPE_CHECKING:
    from pipeline.worker import PartitionState, WorkerMetrics

logger = logging.getLogger(__name__)

# Checkpoint reads and writes are retried this way, then given up. A checkpoint
# that was not saved costs a longer replay from the previous one.
CHECKPOINT_RETRY = RetryPolicy(attempts=4, initial_delay_s=0.5, max_delay_s=5.0)


class Checkpointer:
    """Saves the partition states of one consumer group in the audit store and restores them on assignment.

    Its coroutines run on the worker's event loop and do the blocking work
    (store calls, ``Pipeline.checkpoint`` and ``restore``) through
    ``run_in_thread``, the worker's pipeline thread. ``build_pipeline``
    creates a fresh pipeline for a partition when a restore fails part-way.
    """

    def __init__(
        self,
        store: AuditStore,
        *,
        group_id: str,
        owner: str,
        interval_s: float,
        every_batches: int,
        metrics: WorkerMetrics,
        run_in_thread: Callable[..., Awaitable[Any]],
        build_pipeline: Callable[[PublishGate], Pipeline],
    ) -> None:
        self.store = store
        self.group_id = group_id
        self.owner = owner
        self.interval_s = interval_s
        self.every_batches = every_batches
        self.metrics = metrics
        self._run_in_thread = run_in_thread
        self._build_pipeline = build_pipeline

    # ---- restore on assignment -------------------------------------------

    async def restore(self, state: PartitionState) -> int | None:
        """Restore the newest checkpoint into a newly built ``state`` unless a discard rule applies.

        ``state`` has a fresh pipeline and ``next_offset`` at the committed
        offset. Returns the checkpoint's offset, where the caller must seek
        the consumer, or None when the partition starts with the state it has.
        """
        committed = state.committed_offset
        checkpoint = await self._run_in_thread(self._load, state.partition)
        if checkpoint is None and committed is None:
            logger.info("%s: no checkpoint and no committed offset, starting with empty state at the earliest offset", state.label)
            return None
        if checkpoint is None:
            # NOTE: windows that were open at the committed offset restart
            # without their earlier events, so their counts are low once.
            logger.warning(
                "%s: no checkpoint for group %s, starting with empty state at the committed offset %d",
                state.label,
                self.group_id,
                committed,
            )
            return None
        if committed is not None and checkpoint.offset > committed:
            logger.warning(
                "%s: discarding the checkpoint at offset %d because the committed offset %d is lower (offsets were "
                "reset); starting with empty state",
                state.label,
                checkpoint.offset,
                committed,
            )
            return None
        try:
            await self._run_in_thread(state.pipeline.restore, checkpoint.state)
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint (older format, changed classes) is discarded
            logger.warning(
                "%s: discarding the checkpoint at offset %d, which cannot be restored (%s: %s); starting with empty state",
                state.label,
                checkpoint.offset,
                type(exc).__name__,
                exc,
            )
            # restore() may have replaced part of the state before it failed.
            state.pipeline = await self._run_in_thread(self._build_pipeline, state.gate)
            return None
        state.next_offset = checkpoint.offset
        state.checkpoint_offset = checkpoint.offset
        state.replay_until = committed if committed is not None else checkpoint.offset
        logger.info(
            "%s: restored the checkpoint at offset %d (%d bytes); replaying %d records up to the committed offset "
            "without publishing",
            state.label,
            checkpoint.offset,
            len(checkpoint.state),
            state.replay_until - checkpoint.offset,
        )
        return checkpoint.offset

    # ---- saving ------------------------------------------------------------

    async def save_due(self, states: Iterable[PartitionState]) -> None:
        """Save each partition whose first checkpoint is due, or whose interval or batch count has passed."""
        now = time.monotonic()
        every = self.every_batches
        for state in list(states):
            # A partition with commits but no checkpoint would restart with
            # empty windows at the committed offset, so its first checkpoint is due at once.
            first = state.checkpoint_offset is None and state.batches_since_checkpoint > 0
            due_by_time = now - state.last_checkpoint >= self.interval_s
            due_by_count = every > 0 and state.batches_since_checkpoint >= every
            if first or due_by_time or due_by_count:
                await self.save(state, "first" if first else "interval")

    async def save(self, state: PartitionState, reason: str) -> None:
        """Save ``state`` if it covers exactly the committed offsets and changed since its last checkpoint.

        A failed save is logged and skipped: the partition's next owner then
        restores an older checkpoint and replays more records.
        """
        state.last_checkpoint = time.monotonic()
        state.batches_since_checkpoint = 0
        offset = state.next_offset
        if state.failed or offset is None or offset != state.committed_offset or offset == state.checkpoint_offset:
            return
        blob = await self._run_in_thread(state.pipeline.checkpoint)
        try:
            await self._run_in_thread(self._save, state.partition, offset, blob)
        except (StoreError, DatabaseError) as exc:
            logger.warning(
                "%s: checkpoint at offset %d (%s) not saved: %s; a new owner restores an older checkpoint and replays more",
                state.label,
                offset,
                reason,
                exc,
            )
            return
        state.checkpoint_offset = offset
        self.metrics.checkpoints += 1
        self.metrics.checkpoint_bytes += len(blob)
        logger.info("%s: checkpointed at offset %d (%s, %d bytes)", state.label, offset, reason, len(blob))

    # ---- store calls, in the pipeline thread -------------------------------

    def _load(self, partition: TopicPartition) -> Checkpoint | None:
        return self.store.load_checkpoint(self.group_id, partition.topic, partition.partition, retry=CHECKPOINT_RETRY)

    def _save(self, partition: TopicPartition, offset: int, blob: bytes) -> None:
        self.store.save_checkpoint(
            self.group_id, partition.topic, partition.partition, offset, blob, owner=self.owner, retry=CHECKPOINT_RETRY
        )
