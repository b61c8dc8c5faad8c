"""A store outage: the worker pauses fetching, retries the same write with backoff, and commits only after it.

The worker retries a write when the error's class is retriable
(``TransientStoreError``), and stops on any other store error.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.integration

FAILURES = 3

# Runs in its own process, because an embedded chDB store binds the process to one directory.
WORKER_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, logging, sys

    from aiokafka.admin import AIOKafkaAdminClient
    from clickhouse_connect.driver.exceptions import OperationalError

    from pipeline.assemble import open_store
    from pipeline.config import load_settings
    from pipeline.errors import StoreError, TransientStoreError
    from pipeline.worker import Worker, WorkerOptions

    bootstrap, group, topic, actions, dead_letters, store, data_dir, failures, shutdown_timeout, error_kind = sys.argv[1:11]
    observed = []


    def injected_error():
        if error_kind == "transient":
            return TransientStoreError("injected failure: ClickHouse unavailable")
        # Not retriable by class, although its cause is a transient driver
        # error: the worker must decide from the class alone.
        error = StoreError("injected failure: no such column in table events")
        error.__cause__ = OperationalError("connection refused")
        return error


    async def committed_offsets():
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()
        return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset >= 0}


    class FailingStore:
        '''The audit store, except that the first write_events calls fail with injected_error().'''

        def __init__(self, store, failures):
            self._store = store
            self.failures_left = failures

        def write_events(self, columns):
            if self.failures_left:
                self.failures_left -= 1
                partition = int(columns["partition"][0])
                committed = asyncio.run(committed_offsets()).get(partition)
                observed.append({"partition": partition, "first_offset": int(columns["offset"].min()), "committed": committed})
                raise injected_error()
            return self._store.write_events(columns)

        def __getattr__(self, name):
            return getattr(self._store, name)


    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    settings = load_settings(
        None,
        data_dir=data_dir,
        store=store,
        kafka={"bootstrap_servers": bootstrap, "group_id": group, "topics": [topic],
               "action_topic": actions, "dead_letter_topic": dead_letters},
    )
    options = WorkerOptions(
        exit_when_idle_s=3, retry_initial_s=0.1, retry_max_s=0.4, shutdown_timeout_s=float(shutdown_timeout)
    )
    worker = Worker(settings, options, store_opener=lambda s: FailingStore(open_store(s), int(failures)))
    try:
        asyncio.run(worker.run())
        error = None
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    print(json.dumps({"metrics": worker.metrics.snapshot(), "observed": observed, "error": error}))
    sys.exit(0 if error is None else 3)
    """
)


def _script_argv(tokensentry, names, tmp_path, failures: int, shutdown_timeout_s: float, error_kind: str = "transient") -> list[str]:
    script = tmp_path / "failing_worker.py"
    script.write_text(WORKER_SCRIPT)
    return [
        sys.executable,
        str(script),
        tokensentry.bootstrap,
        names.group_id,
        names.log_topic,
        names.action_topic,
        names.dead_letter_topic,
        f"chdb://{tmp_path / 'store'}",
        str(tmp_path / "data"),
        str(failures),
        str(shutdown_timeout_s),
        error_kind,
    ]


def test_worker_store_outage_retries_without_committing(tokensentry, names, kafka, log_data, tmp_path):
    tokensentry.produce(log_data.lines)
    result = subprocess.run(
        _script_argv(tokensentry, names, tmp_path, FAILURES, 30.0),
        capture_output=True,
        text=True,
        timeout=180,
        env=tokensentry.env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["metrics"]["write_retries"] == FAILURES
    failed_batches = {(item["partition"], item["first_offset"]) for item in report["observed"]}
    assert len(failed_batches) == 1, f"the retries wrote different batches: {failed_batches}"
    for item in report["observed"]:
        committed = item["committed"]
        assert committed is None or committed <= item["first_offset"], f"offset committed past a failing batch: {item}"
    for attempt in range(1, FAILURES + 1):
        assert f"failed on attempt {attempt}" in result.stderr
    assert "paused fetching" in result.stderr
    assert f"succeeded on attempt {FAILURES + 1}" in result.stderr
    assert "resumed fetching" in result.stderr

    assert report["metrics"]["records_in"] == log_data.total
    assert kafka.committed_offsets(names.group_id, names.log_topic) == kafka.end_offsets(names.log_topic)
    counts = tokensentry.query(
        f"chdb://{tmp_path / 'store'}",
        "SELECT (SELECT count() FROM events FINAL) AS events, (SELECT count() FROM dead_letters FINAL) AS dead_letters",
    )[0]
    assert counts["events"] + counts["dead_letters"] == log_data.total, counts


def test_worker_sigterm_during_outage_leaves_batch_uncommitted(tokensentry, names, kafka, log_data, tmp_path):
    tokensentry.produce(log_data.lines)
    stderr_path = tmp_path / "worker.log"
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            _script_argv(tokensentry, names, tmp_path, failures=1_000_000, shutdown_timeout_s=1.0),
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=tokensentry.env,
        )
    deadline = time.monotonic() + 90
    while "failed on attempt 2" not in stderr_path.read_text(errors="replace"):
        assert process.poll() is None, stderr_path.read_text()[-4000:]
        assert time.monotonic() < deadline, "the injected store failure was never retried"
        time.sleep(0.1)

    process.send_signal(signal.SIGTERM)
    stdout, _ = process.communicate(timeout=60)
    report = json.loads(stdout.strip().splitlines()[-1])

    assert process.returncode == 3, stderr_path.read_text()[-4000:]
    assert report["error"].startswith("BatchAbortedError"), report["error"]
    failing = report["observed"][0]
    committed = kafka.committed_offsets(names.group_id, names.log_topic).get(failing["partition"])
    assert committed is None or committed <= failing["first_offset"], (committed, failing)


def test_worker_permanent_store_error_stops(tokensentry, names, kafka, log_data, tmp_path):
    tokensentry.produce(log_data.lines)
    result = subprocess.run(
        _script_argv(tokensentry, names, tmp_path, failures=1, shutdown_timeout_s=30.0, error_kind="permanent"),
        capture_output=True,
        text=True,
        timeout=180,
        env=tokensentry.env,
        check=False,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert result.returncode == 3, result.stderr[-4000:]
    assert report["error"].startswith("WorkerError: audit store failed: injected failure"), report["error"]
    assert report["metrics"]["write_retries"] == 0
    assert "failed on attempt" not in result.stderr
    assert "paused fetching" not in result.stderr
    assert len(report["observed"]) == 1
    failing = report["observed"][0]
    committed = kafka.committed_offsets(names.group_id, names.log_topic).get(failing["partition"])
    assert committed is None or committed <= failing["first_offset"], (committed, failing)
