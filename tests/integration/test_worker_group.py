"""Two workers in one consumer group split the partitions and process every record once."""

from __future__ import annotations

import signal
import time

import pytest

pytestmark = pytest.mark.integration

ASSIGNED = r"assigned partitions test-logs-\S+"
COMMIT_TIMEOUT_S = 120.0


def test_worker_group_splits_partitions_without_overlap(tokensentry, names, kafka, log_data):
    # No --exit-when-idle: worker a must stay in the group however long worker b
    # takes to start (importing chDB and migrating its store took about 6 s on
    # a loaded machine). Both are stopped with SIGTERM once everything is committed.
    first = tokensentry.start_worker("a")
    first.wait_for_log(ASSIGNED)
    second = tokensentry.start_worker("b")
    second.wait_for_log(ASSIGNED)
    # The first worker logs a second assignment once the rebalance that admitted the second one is done.
    first.wait_for_log(ASSIGNED, count=2)

    tokensentry.produce(log_data.lines)
    end = kafka.end_offsets(names.log_topic)
    deadline = time.monotonic() + COMMIT_TIMEOUT_S
    while kafka.committed_offsets(names.group_id, names.log_topic) != end:
        assert first.process.poll() is None, first.log()[-4000:]
        assert second.process.poll() is None, second.log()[-4000:]
        assert time.monotonic() < deadline, f"the group did not commit up to the end offsets {end} in {COMMIT_TIMEOUT_S} s"
        time.sleep(0.3)
    first.send_signal(signal.SIGTERM)
    second.send_signal(signal.SIGTERM)
    assert first.wait() == 0, first.log()[-4000:]
    assert second.wait() == 0, second.log()[-4000:]

    ids = {}
    dead_letters = {}
    for worker in (first, second):
        rows = tokensentry.query(worker.store, "SELECT event_id FROM events FINAL")
        ids[worker.name] = {row["event_id"] for row in rows}
        dead_letters[worker.name] = tokensentry.query(worker.store, "SELECT count() AS n FROM dead_letters FINAL")[0]["n"]
    assert ids["a"], "worker a processed no events: it got no partitions"
    assert ids["b"], "worker b processed no events: it got no partitions"
    assert not ids["a"] & ids["b"], f"{len(ids['a'] & ids['b'])} events processed by both workers"
    assert len(ids["a"] | ids["b"]) + dead_letters["a"] + dead_letters["b"] == log_data.total
