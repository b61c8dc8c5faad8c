"""Coalesced window and detection writes, alone and behind a pipeline's writer, on a real chDB store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from pipeline.assemble import build_pipeline
from pipeline.cli import main
from pipeline.config import load_settings
from pipeline.runner import Pipeline, RunStats
from pipeline.sinks.clickhouse import AuditStore, StoreError
from pipeline.sinks.coalesce import CoalescedWrites
from pipeline.sinks.write_behind import WriteBehind
from pipeline.sources.base import LineBatch
from schemas.detections import Detection, Severity
from schemas.windows import WINDOW_FEATURES

HOUR_AGO = float(int(time.time()) - 3600)


class RecordingStore:
    """The real store, with a log of write calls and the detections stored when each action batch arrives."""

    def __init__(self, store: AuditStore) -> None:
        self._store = store
        self.calls: list[tuple[str, int]] = []
        self.detections_before_actions: list[int] = []

    def write_windows(self, columns: dict[str, np.ndarray]) -> int:
        self.calls.append(("windows", len(columns["window_id"])))
        return self._store.write_windows(columns)

    def write_detections(self, detections) -> int:
        self.calls.append(("detections", len(detections)))
        return self._store.write_detections(detections)

    def write_actions(self, actions, published: bool) -> int:
        self.detections_before_actions.append(stored_count(self._store, "detections"))
        return self._store.write_actions(actions, published)

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def count(self, table: str) -> int:
        return sum(rows for name, rows in self.calls if name == table)

    def inserts(self, table: str) -> int:
        return sum(1 for name, _ in self.calls if name == table)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuditStore]:
    opened = AuditStore.open(f"chdb://{(tmp_path / 'store').resolve()}")
    opened.migrate()
    yield opened
    opened.close()


def window_columns(rows: int, first_id: int) -> dict[str, np.ndarray]:
    starts = HOUR_AGO + np.arange(rows) * 10.0
    columns: dict[str, np.ndarray] = {
        "window_id": np.arange(first_id, first_id + rows, dtype=np.uint64),
        "subject_id": np.array([f"tk_{i:016x}" for i in range(first_id, first_id + rows)], dtype=object),
        "subject_kind": np.ones(rows, dtype=np.uint8),
        "account": np.full(rows, "", dtype=object),
        "window_start": starts,
        "window_end": starts + 10.0,
        "first_offset": np.arange(rows, dtype=np.int64),
        "last_offset": np.arange(rows, dtype=np.int64),
    }
    for name in WINDOW_FEATURES:
        columns[name] = np.ones(rows, dtype=np.float64)
    return columns


def stored_count(store: AuditStore, table: str) -> int:
    _, rows = store.query(f"SELECT count() FROM {table}")
    return rows[0][0]


def test_coalesced_writes_hold_windows_below_limit(store: AuditStore):
    recording = RecordingStore(store)
    pending = CoalescedWrites(recording, window_rows=5)

    pending.add_windows(window_columns(3, first_id=0))

    assert recording.calls == []
    assert stored_count(store, "windows") == 0


def test_coalesced_writes_insert_at_limit(store: AuditStore):
    recording = RecordingStore(store)
    pending = CoalescedWrites(recording, window_rows=5)

    pending.add_windows(window_columns(3, first_id=0))
    pending.add_windows(window_columns(3, first_id=3))

    assert recording.calls == [("windows", 6)]
    _, rows = store.query("SELECT window_id FROM windows ORDER BY window_id")
    ids = [row[0] for row in rows]
    assert ids == list(range(6))


def test_coalesced_writes_write_all_stores_rest(store: AuditStore):
    recording = RecordingStore(store)
    pending = CoalescedWrites(recording)
    pending.add_windows(window_columns(4, first_id=0))

    pending.write_all()
    pending.write_all()

    assert recording.calls == [("windows", 4)]
    assert stored_count(store, "windows") == 4


class FailingWindowsStore(RecordingStore):
    """The real store, except that every window insert fails."""

    def write_windows(self, columns: dict[str, np.ndarray]) -> int:
        self.calls.append(("windows", len(columns["window_id"])))
        raise StoreError("windows insert failed (test)")


def held_detection(number: int) -> Detection:
    return Detection(
        detection_id=number,
        detector="rate_limit",
        detector_version="1.0.0",
        subject_id="tk_0123456789abcdef",
        subject_kind=1,
        window_id=number,
        window_start=HOUR_AGO,
        window_end=HOUR_AGO + 10.0,
        score=40.0,
        threshold=20.0,
        severity=Severity.HIGH,
        explanation="test detection",
    )


def test_detection_limit_writes_windows_first(store: AuditStore):
    recording = RecordingStore(store)
    pending = CoalescedWrites(recording, window_rows=100, detection_rows=2)
    pending.add_windows(window_columns(3, first_id=0))

    pending.add_detections([held_detection(1), held_detection(2)])

    assert recording.calls == [("windows", 3), ("detections", 2)]
    assert stored_count(store, "detections") == 2


def test_failed_windows_keep_detections_held(store: AuditStore):
    failing = FailingWindowsStore(store)
    pending = CoalescedWrites(failing)
    pending.add_windows(window_columns(3, first_id=0))
    pending.add_detections([held_detection(1)])

    with pytest.raises(StoreError, match="windows insert failed"):
        pending.write_all()

    assert failing.calls == [("windows", 3)]
    assert stored_count(store, "detections") == 0


def test_coalesced_writes_reject_zero_limit():
    with pytest.raises(ValueError, match="row limits"):
        CoalescedWrites(store=None, window_rows=0)


def clf_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")


def burst_batches(batches: int, lines_per_batch: int) -> list[LineBatch]:
    """Batches of NGINX lines: one key at 40 requests/s (over the default rate limit) and 20 quiet clients."""
    result = []
    for number in range(batches):
        lines = []
        for i in range(lines_per_batch):
            offset = number * lines_per_batch + i
            ts = HOUR_AGO + offset * 0.0125
            if i % 2 == 0:
                lines.append(
                    f'198.51.100.7 - - [{clf_time(ts)}] "GET /v1/orders HTTP/1.1" 200 512 "-" "okhttp/4" '
                    'key="sk_live_burst0123"'.encode()
                )
            else:
                lines.append(f'203.0.113.{offset % 20} - - [{clf_time(ts)}] "GET /health HTTP/1.1" 200 2 "-" "curl/8"'.encode())
        result.append(
            LineBatch(
                source="access.log",
                partition=0,
                lines=lines,
                positions=list(range(number * lines_per_batch, (number + 1) * lines_per_batch)),
                size_bytes=sum(len(line) + 1 for line in lines),
            )
        )
    return result


@dataclass
class Run:
    recording: RecordingStore
    stats: RunStats
    # Detections made up to each batch that wrote actions, once per write_actions call it makes.
    detections_at_actions: list[int]


def run_pipeline(tmp_path: Path, store: AuditStore, writer: WriteBehind | None) -> Run:
    settings = load_settings(None, data_dir=str(tmp_path / "data"))
    recording = RecordingStore(store)
    pipeline = build_pipeline(settings, store=recording, log_format="nginx_combined", writer=writer)
    results = [pipeline.process(batch) for batch in burst_batches(batches=30, lines_per_batch=400)]
    results.append(pipeline.finish())
    pipeline.flush()
    if writer is not None:
        writer.close()
    detections, at_actions = 0, []
    for result in results:
        detections += len(result.detections)
        calls = any(not action.dry_run for action in result.actions) + any(action.dry_run for action in result.actions)
        at_actions.extend([detections] * calls)
    return Run(recording, pipeline.stats, at_actions)


def test_writer_pipeline_stores_all_windows(tmp_path: Path, store: AuditStore):
    run = run_pipeline(tmp_path, store, WriteBehind(max_pending=2))
    stats = run.stats

    assert stats.windows > 0
    assert stats.detections > 0
    assert stored_count(store, "windows") == stats.windows
    assert stored_count(store, "detections") == stats.detections
    assert run.recording.count("windows") == stats.windows


def test_writer_pipeline_coalesces_window_inserts(tmp_path: Path, store: AuditStore):
    run = run_pipeline(tmp_path, store, WriteBehind(max_pending=2))

    # 30 batches close windows, all of them together fewer than the row limit.
    assert run.stats.windows < CoalescedWrites(None).window_rows
    # An action batch writes the held windows early, and finish writes the rest.
    assert run.recording.inserts("windows") <= len(run.detections_at_actions) + 1


def test_writer_pipeline_stores_detections_before_actions(tmp_path: Path, store: AuditStore):
    run = run_pipeline(tmp_path, store, WriteBehind(max_pending=2))

    assert run.stats.actions > 0
    assert run.recording.detections_before_actions == run.detections_at_actions


def test_pipeline_write_held_after_early_stop(tmp_path: Path, store: AuditStore):
    writer = WriteBehind(max_pending=2)
    settings = load_settings(None, data_dir=str(tmp_path / "data"))
    pipeline = build_pipeline(settings, store=RecordingStore(store), log_format="nginx_combined", writer=writer)
    results = [pipeline.process(batch) for batch in burst_batches(batches=12, lines_per_batch=400)]

    # Stopped early, as replay does on an interrupt: no finish, no flush.
    pipeline.write_held()
    writer.close(flush=False)

    assert sum(result.windows.size for result in results) > 0
    assert stored_count(store, "windows") == sum(result.windows.size for result in results)
    assert stored_count(store, "detections") == sum(len(result.detections) for result in results)


def test_pipeline_without_writer_writes_each_batch(tmp_path: Path, store: AuditStore):
    run = run_pipeline(tmp_path, store, writer=None)

    assert stored_count(store, "windows") == run.stats.windows
    assert run.recording.inserts("windows") > len(run.detections_at_actions) + 1


def test_replay_interrupted_stores_held_windows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    log = tmp_path / "access.log"
    log.write_bytes(b"".join(line + b"\n" for batch in burst_batches(batches=12, lines_per_batch=400) for line in batch.lines))
    monkeypatch.setenv("TOKENSENTRY_BATCH_LINES", "400")
    computed = {"windows": 0, "detections": 0}
    process = Pipeline.process

    def process_then_interrupt(self: Pipeline, batch: LineBatch):
        result = process(self, batch)
        computed["windows"] += result.windows.size
        computed["detections"] += len(result.detections)
        if batch.positions[0] > 8 * 400:
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(Pipeline, "process", process_then_interrupt)
    data_dir = tmp_path / "data"

    code = main(["replay", str(log), "--data-dir", str(data_dir), "--json", "--no-progress"])

    assert code == 130
    stored = AuditStore.open(f"chdb://{(data_dir / 'store').resolve()}")
    try:
        assert computed["windows"] > 0
        assert stored_count(stored, "windows_final") == computed["windows"]
        assert stored_count(stored, "detections_final") == computed["detections"]
        _, orphans = stored.query(
            "SELECT count() FROM detections_final WHERE window_id NOT IN (SELECT window_id FROM windows_final)"
        )
        assert orphans[0][0] == 0
    finally:
        stored.close()
