"""A worker killed with SIGKILL mid-stream and restarted on the same store loses and duplicates nothing."""

from __future__ import annotations

import json
import re
import signal
import time
from collections import defaultdict

import pytest

pytestmark = pytest.mark.integration


def wait_until_committed_partitions_checkpointed(worker, kafka, names, minimum: int = 3, timeout: float = 60.0) -> None:
    """Wait until at least ``minimum`` partitions have a checkpoint and every committed partition has one.

    A worker commits a partition's first batch and saves its first
    checkpoint just after. Killed in between, the partition restarts with
    empty windows at the committed offset (a documented gap), and the burst
    window would lose its first events. So the kill waits for that moment to pass.
    """
    deadline = time.monotonic() + timeout
    pattern = re.compile(re.escape(names.log_topic) + r"/(\d+): checkpointed at offset")
    while time.monotonic() < deadline:
        checkpointed = {int(number) for number in pattern.findall(worker.log())}
        committed = set(kafka.committed_offsets(names.group_id, names.log_topic))
        if len(checkpointed) >= minimum and committed <= checkpointed:
            return
        time.sleep(0.05)
    pytest.fail(f"worker {worker.name} did not checkpoint every committed partition within {timeout} s:\n{worker.log()[-4000:]}")


def test_worker_sigkill_restart_no_loss_no_duplicates(tokensentry, names, kafka, log_data):
    producer = tokensentry.produce_in_background(log_data.lines, rate=2500)
    first = tokensentry.start_worker("a", "--max-records", "300", "--checkpoint-every", "2")
    wait_until_committed_partitions_checkpointed(first, kafka, names)
    first.send_signal(signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL
    committed_at_kill = sum(kafka.committed_offsets(names.group_id, names.log_topic).values())
    assert committed_at_kill < log_data.total, "the worker finished before it was killed; nothing was tested"

    restarted = tokensentry.start_worker("a-restarted", "--exit-when-idle", "4", store_of="a")
    assert producer.wait(timeout=120) == 0, producer.stderr.read()
    assert restarted.wait() == 0, restarted.log()[-4000:]
    assert "restored the checkpoint" in restarted.log()

    counts = tokensentry.query(
        restarted.store,
        "SELECT (SELECT count() FROM events FINAL) AS events, "
        "(SELECT uniqExact(event_id) FROM events FINAL) AS event_ids, "
        "(SELECT count() FROM dead_letters FINAL) AS dead_letters",
    )[0]
    assert counts["events"] + counts["dead_letters"] == log_data.total, counts
    assert counts["event_ids"] == counts["events"], counts

    # Redelivery may repeat an action on the topic, but only as the same
    # action_id with the same content; the store has it once.
    copies: dict[str, set[bytes]] = defaultdict(set)
    for record in kafka.read_topic(names.action_topic):
        copies[json.loads(record.value)["action_id"]].add(record.value)
    assert all(len(values) == 1 for values in copies.values()), {k: v for k, v in copies.items() if len(v) > 1}
    stored = tokensentry.query(restarted.store, "SELECT action_id FROM actions FINAL")
    assert {row["action_id"] for row in stored} == set(copies)
    assert any(log_data.burst_ip in json.loads(next(iter(values)))["subject"] for values in copies.values())
