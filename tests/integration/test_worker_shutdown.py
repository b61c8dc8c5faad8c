"""SIGTERM: the worker finishes its batch, commits, checkpoints, leaves the group and exits 0."""

from __future__ import annotations

import signal
import time

import pytest

pytestmark = pytest.mark.integration


def _wait_for_commits(kafka, names, predicate, timeout: float = 90.0) -> dict[int, int]:
    deadline = time.monotonic() + timeout
    while True:
        committed = kafka.committed_offsets(names.group_id, names.log_topic)
        if predicate(committed):
            return committed
        assert time.monotonic() < deadline, f"committed offsets {committed} did not reach the expected state in {timeout} s"
        time.sleep(0.3)


def test_worker_sigterm_after_catching_up_commits_everything(tokensentry, names, kafka, log_data):
    worker = tokensentry.start_worker("a")
    tokensentry.produce(log_data.lines)
    end = kafka.end_offsets(names.log_topic)
    _wait_for_commits(kafka, names, lambda committed: committed == end)

    worker.send_signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.log()[-4000:]

    assert kafka.committed_offsets(names.group_id, names.log_topic) == end
    assert kafka.group_state(names.group_id) == ("Empty", 0)
    assert "left group" in worker.log()


def test_worker_sigterm_mid_stream_commits_written(tokensentry, names, kafka, log_data):
    producer = tokensentry.produce_in_background(log_data.lines, rate=2500)
    worker = tokensentry.start_worker("a", "--max-records", "200")
    _wait_for_commits(kafka, names, lambda committed: sum(committed.values()) >= 1000)

    worker.send_signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.log()[-4000:]
    committed = kafka.committed_offsets(names.group_id, names.log_topic)
    assert producer.wait(timeout=120) == 0, producer.stderr.read()
    assert sum(committed.values()) < log_data.total, "the worker caught up before SIGTERM; nothing was tested"

    stored = tokensentry.query(
        worker.store,
        "SELECT partition, count() AS records, max(offset) AS last FROM "
        "(SELECT partition, offset FROM events FINAL UNION ALL SELECT partition, offset FROM dead_letters FINAL) "
        "GROUP BY partition",
    )
    written = {row["partition"]: row["records"] for row in stored}
    last_offsets = {row["partition"]: row["last"] for row in stored}
    assert written == committed, f"stored records per partition {written} differ from committed offsets {committed}"
    assert last_offsets == {partition: offset - 1 for partition, offset in committed.items()}

    checkpoints = tokensentry.query(
        worker.store, "SELECT partition, argMax(offset, version) AS offset FROM state_checkpoints GROUP BY partition"
    )
    assert {row["partition"]: row["offset"] for row in checkpoints} == committed
