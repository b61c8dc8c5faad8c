"""The worker's checkpoint policy (pipeline.checkpoints) with real pipelines and a real chDB audit store."""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from pipeline.assemble import build_pipeline
from pipeline.backpressure import PublishGate
from pipeline.checkpoints import Checkpointer
from pipeline.config import Settings, load_settings
from pipeline.runner import Pipeline
from pipeline.sinks.clickhouse import AuditStore, Checkpoint
from pipeline.sources.base import LineBatch
from pipeline.worker import PartitionState, WorkerMetrics

GROUP = "test-group"
PARTITION = TopicPartition("gateway-logs", 0)
LINES = 40
HOUR_AGO = float(int(time.time()) - 3600)


@dataclass
class Harness:
    settings: Settings
    store: AuditStore
    metrics: WorkerMetrics
    make_checkpointer: Callable[..., Checkpointer]

    def new_state(self, *, next_offset: int | None, committed_offset: int | None) -> PartitionState:
        gate = PublishGate()
        pipeline = build_pipeline(self.settings, store=self.store)
        return PartitionState(PARTITION, pipeline, gate, next_offset=next_offset, committed_offset=committed_offset)

    def stored(self) -> Checkpoint | None:
        return self.store.load_checkpoint(GROUP, PARTITION.topic, PARTITION.partition)


async def run_in_thread(function: Callable[..., object], *args: object) -> object:
    return await asyncio.to_thread(function, *args)


def access_lines(count: int) -> list[bytes]:
    lines = []
    for i in range(count):
        ts = datetime.fromtimestamp(HOUR_AGO + i, UTC).strftime("%d/%b/%Y:%H:%M:%S") + " +0000"
        lines.append(f'198.51.100.{i % 5 + 1} - - [{ts}] "GET /api/v1/items/{i} HTTP/1.1" 200 512 "-" "client/1.0"'.encode())
    return lines


def learn(pipeline: Pipeline) -> None:
    """Process LINES access-log lines, so the pipeline has subjects and open windows to checkpoint."""
    lines = access_lines(LINES)
    pipeline.process(LineBatch(source=PARTITION.topic, partition=PARTITION.partition, lines=lines, positions=list(range(LINES)), size_bytes=0))


@contextmanager
def open_harness(tmp_path: Path, *, migrate_up_to: int | None = None) -> Iterator[Harness]:
    settings = load_settings(None, data_dir=str(tmp_path / "data"), store=f"chdb://{(tmp_path / 'store').resolve()}")
    store = AuditStore.open(settings.store_dsn())
    store.migrate(up_to=migrate_up_to)
    metrics = WorkerMetrics()

    def make_checkpointer(*, interval_s: float = 3600.0, every_batches: int = 0) -> Checkpointer:
        return Checkpointer(
            store,
            group_id=GROUP,
            owner="test-worker@host:1",
            interval_s=interval_s,
            every_batches=every_batches,
            metrics=metrics,
            run_in_thread=run_in_thread,
            build_pipeline=lambda gate: build_pipeline(settings, store=store),
        )

    try:
        yield Harness(settings, store, metrics, make_checkpointer)
    finally:
        store.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    with open_harness(tmp_path) as opened:
        yield opened


# ---- saving ------------------------------------------------------------------


def test_save_at_committed_offset_stores_state(harness: Harness) -> None:
    state = harness.new_state(next_offset=LINES, committed_offset=LINES)
    learn(state.pipeline)
    state.batches_since_checkpoint = 3

    asyncio.run(harness.make_checkpointer().save(state, "revoked"))

    stored = harness.stored()
    assert stored is not None
    assert stored.offset == LINES
    assert state.checkpoint_offset == LINES
    assert state.batches_since_checkpoint == 0
    assert harness.metrics.checkpoints == 1
    assert harness.metrics.checkpoint_bytes == len(stored.state)


@pytest.mark.parametrize(
    ("next_offset", "committed_offset", "checkpoint_offset", "failed"),
    [
        (LINES, LINES - 10, None, False),
        (LINES, LINES, None, True),
        (LINES, LINES, LINES, False),
        (None, None, None, False),
    ],
    ids=["uncommitted", "failed-batch", "unchanged", "no-records"],
)
def test_save_skipped(
    harness: Harness, next_offset: int | None, committed_offset: int | None, checkpoint_offset: int | None, failed: bool
) -> None:
    state = harness.new_state(next_offset=next_offset, committed_offset=committed_offset)
    state.checkpoint_offset = checkpoint_offset
    state.failed = failed
    state.batches_since_checkpoint = 2
    state.last_checkpoint = 0.0

    asyncio.run(harness.make_checkpointer().save(state, "interval"))

    assert harness.stored() is None
    assert harness.metrics.checkpoints == 0
    assert state.checkpoint_offset == checkpoint_offset
    assert state.batches_since_checkpoint == 0
    assert state.last_checkpoint > 0.0


def test_save_failure_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Without migration 005 the table is missing, so the insert fails for good.
    with open_harness(tmp_path, migrate_up_to=4) as harness:
        state = harness.new_state(next_offset=LINES, committed_offset=LINES)

        with caplog.at_level(logging.WARNING, logger="pipeline.checkpoints"):
            asyncio.run(harness.make_checkpointer().save(state, "interval"))

    assert state.checkpoint_offset is None
    assert harness.metrics.checkpoints == 0
    assert "checkpoint at offset 40 (interval) not saved" in caplog.text
    assert "migrate()" in caplog.text


def test_save_due_first_checkpoint_at_once(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    state = harness.new_state(next_offset=LINES, committed_offset=LINES)
    state.batches_since_checkpoint = 1

    with caplog.at_level(logging.INFO, logger="pipeline.checkpoints"):
        asyncio.run(harness.make_checkpointer(interval_s=3600.0).save_due([state]))

    assert state.checkpoint_offset == LINES
    assert "(first," in caplog.text


def test_save_due_by_batch_count(harness: Harness) -> None:
    due = harness.new_state(next_offset=LINES, committed_offset=LINES)
    due.checkpoint_offset = 10
    due.batches_since_checkpoint = 2
    not_due = harness.new_state(next_offset=LINES, committed_offset=LINES)
    not_due.partition = TopicPartition(PARTITION.topic, 1)
    not_due.checkpoint_offset = 10
    not_due.batches_since_checkpoint = 1

    asyncio.run(harness.make_checkpointer(interval_s=3600.0, every_batches=2).save_due([due, not_due]))

    assert due.checkpoint_offset == LINES
    assert not_due.checkpoint_offset == 10
    assert harness.store.load_checkpoint(GROUP, PARTITION.topic, 1) is None


def test_save_due_by_interval(harness: Harness) -> None:
    state = harness.new_state(next_offset=LINES, committed_offset=LINES)
    state.checkpoint_offset = 10
    state.last_checkpoint = time.monotonic() - 61.0

    asyncio.run(harness.make_checkpointer(interval_s=60.0).save_due([state]))

    assert state.checkpoint_offset == LINES


def test_save_due_nothing_due(harness: Harness) -> None:
    state = harness.new_state(next_offset=LINES, committed_offset=LINES)
    state.checkpoint_offset = 10
    state.batches_since_checkpoint = 5

    asyncio.run(harness.make_checkpointer(interval_s=60.0).save_due([state]))

    assert state.checkpoint_offset == 10
    assert harness.stored() is None


# ---- restore on assignment -------------------------------------------------------


def test_restore_latest_checkpoint_replays_to_committed(harness: Harness) -> None:
    saved = harness.new_state(next_offset=LINES, committed_offset=LINES)
    learn(saved.pipeline)
    asyncio.run(harness.make_checkpointer().save(saved, "revoked"))
    state = harness.new_state(next_offset=LINES + 25, committed_offset=LINES + 25)

    seek_to = asyncio.run(harness.make_checkpointer().restore(state))

    assert seek_to == LINES
    assert state.next_offset == LINES
    assert state.checkpoint_offset == LINES
    assert state.replay_until == LINES + 25
    assert len(state.pipeline.index) == len(saved.pipeline.index) > 0


def test_restore_without_committed_offset_replays_nothing(harness: Harness) -> None:
    saved = harness.new_state(next_offset=LINES, committed_offset=LINES)
    learn(saved.pipeline)
    asyncio.run(harness.make_checkpointer().save(saved, "revoked"))
    state = harness.new_state(next_offset=None, committed_offset=None)

    seek_to = asyncio.run(harness.make_checkpointer().restore(state))

    assert seek_to == LINES
    assert state.replay_until == LINES


def test_restore_no_checkpoint_keeps_fresh_state(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    fresh = harness.new_state(next_offset=None, committed_offset=None)
    committed = harness.new_state(next_offset=LINES, committed_offset=LINES)

    with caplog.at_level(logging.INFO, logger="pipeline.checkpoints"):
        assert asyncio.run(harness.make_checkpointer().restore(fresh)) is None
        assert asyncio.run(harness.make_checkpointer().restore(committed)) is None

    assert fresh.next_offset is None
    assert committed.next_offset == LINES
    assert committed.checkpoint_offset is None
    assert "no checkpoint and no committed offset" in caplog.text
    assert f"no checkpoint for group {GROUP}, starting with empty state at the committed offset {LINES}" in caplog.text


def test_restore_discards_checkpoint_above_committed(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    harness.store.save_checkpoint(GROUP, PARTITION.topic, PARTITION.partition, 500, b"ignored", owner="w")
    state = harness.new_state(next_offset=LINES, committed_offset=LINES)

    with caplog.at_level(logging.WARNING, logger="pipeline.checkpoints"):
        seek_to = asyncio.run(harness.make_checkpointer().restore(state))

    assert seek_to is None
    assert state.next_offset == LINES
    assert state.checkpoint_offset is None
    assert "discarding the checkpoint at offset 500 because the committed offset 40 is lower" in caplog.text


@pytest.mark.parametrize(
    "blob",
    [b"not a pickle", pickle.dumps({"version": -1})],
    ids=["garbage", "other-version"],
)
def test_restore_discards_unreadable_checkpoint(harness: Harness, caplog: pytest.LogCaptureFixture, blob: bytes) -> None:
    harness.store.save_checkpoint(GROUP, PARTITION.topic, PARTITION.partition, 20, blob, owner="w")
    state = harness.new_state(next_offset=LINES, committed_offset=LINES)
    pipeline_before = state.pipeline

    with caplog.at_level(logging.WARNING, logger="pipeline.checkpoints"):
        seek_to = asyncio.run(harness.make_checkpointer().restore(state))

    assert seek_to is None
    assert state.next_offset == LINES
    assert state.checkpoint_offset is None
    assert state.pipeline is not pipeline_before
    assert "discarding the checkpoint at offset 20, which cannot be restored" in caplog.text
