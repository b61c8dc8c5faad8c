"""One worker over real log lines: every record accounted for, the burst acted on, the bad line dead-lettered."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration


def test_worker_single_run_accounts_for_every_record(tokensentry, names, kafka, log_data):
    produced = tokensentry.produce(log_data.lines)
    assert produced["lines_produced"] == log_data.total

    worker = tokensentry.start_worker("a", "--exit-when-idle", "4")
    assert worker.wait() == 0, worker.log()[-4000:]

    summary = worker.summary()
    assert summary["records_in"] == log_data.total
    assert summary["dead_lettered"] == log_data.malformed_lines
    counts = tokensentry.query(
        worker.store,
        "SELECT (SELECT count() FROM events FINAL) AS events, "
        "(SELECT uniqExact(event_id) FROM events FINAL) AS event_ids, "
        "(SELECT count() FROM dead_letters FINAL) AS dead_letters",
    )[0]
    assert counts["events"] + counts["dead_letters"] == log_data.total, counts
    assert counts["dead_letters"] == log_data.malformed_lines, counts
    assert counts["event_ids"] == counts["events"], counts


def test_worker_single_run_publishes_actions_and_dead_letters(tokensentry, names, kafka, log_data):
    tokensentry.produce(log_data.lines)
    worker = tokensentry.start_worker("a", "--exit-when-idle", "4")
    assert worker.wait() == 0, worker.log()[-4000:]

    action_records = kafka.read_topic(names.action_topic)
    actions = [json.loads(record.value) for record in action_records]
    burst = [action for action in actions if log_data.burst_ip in action["subject"]]
    assert burst, f"no action for the burst client {log_data.burst_ip}; actions: {actions}"
    assert burst[0]["kind"] in ("throttle", "revoke"), burst[0]
    assert burst[0]["issued_at"] == log_data.burst_window_start + 10, burst[0]
    for record, action in zip(action_records, actions, strict=True):
        assert record.key.decode() == action["subject"], (record.key, action)
        assert kafka.header(record, "action_id") == action["action_id"], record.headers

    stored = tokensentry.query(worker.store, "SELECT action_id, published FROM actions FINAL")
    assert {row["action_id"] for row in stored} == {action["action_id"] for action in actions}
    assert all(row["published"] == 1 for row in stored), stored

    dead = kafka.read_topic(names.dead_letter_topic)
    assert len(dead) == log_data.malformed_lines, [record.value for record in dead]
    letter = dead[0]
    assert letter.value.decode() == "this line is not an access log record"
    assert kafka.header(letter, "reason"), letter.headers
    assert kafka.header(letter, "stage") == "parser", letter.headers
    assert kafka.header(letter, "source_topic") == names.log_topic, letter.headers
    assert int(kafka.header(letter, "source_offset")) >= 0, letter.headers

    printed = tokensentry.command(
        "actions", "--json", "--topic", names.action_topic, "--bootstrap-servers", tokensentry.bootstrap
    ).stdout.splitlines()
    printed_ids = [json.loads(line)["action_id"] for line in printed]
    assert sorted(printed_ids) == sorted({action["action_id"] for action in actions})
