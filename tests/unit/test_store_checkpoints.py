"""Partition checkpoints in the audit store: migration 005, save_checkpoint and load_checkpoint on real chDB."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from pipeline.sinks.clickhouse import AuditStore, Checkpoint, RetryPolicy, StoreError, TransientStoreError

NO_WAIT_RETRY = RetryPolicy(attempts=2, initial_delay_s=0.0, max_delay_s=0.0)
GROUP = "tokensentry-workers"
TOPIC = "gateway-logs"

# The statement workers before migration 005 ran at start-up (CheckpointStore.create_table).
PRE_005_DDL = """
CREATE TABLE IF NOT EXISTS tokensentry.state_checkpoints
(
    group_id String,
    topic String,
    partition Int32,
    offset Int64 COMMENT 'first offset the state does not cover: resume reading here',
    version UInt64 COMMENT 'write time in ns; the newest row wins',
    owner String COMMENT 'worker that wrote the row: client id, host and pid',
    state_bytes UInt64,
    state String CODEC(ZSTD(3)) COMMENT 'Pipeline.checkpoint() pickle; restore only rows this project wrote',
    written_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (group_id, topic, partition)
"""


def store_dsn(directory: Path) -> str:
    return f"chdb://{directory.resolve()}"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuditStore]:
    opened = AuditStore.open(store_dsn(tmp_path / "store"), retry=NO_WAIT_RETRY)
    opened.migrate()
    yield opened
    opened.close()


def fail_client_calls(monkeypatch: pytest.MonkeyPatch, store: AuditStore, method: str, errors: list[Exception]) -> list[str]:
    """Make the next calls of ``method`` on the store's ClickHouse client raise ``errors`` in turn, then succeed.

    The client is private to AuditStore. Patching it is how these tests make
    the real chDB engine fail like a lost server. Returns the list of calls made.
    """
    client = store._writer  # noqa: SLF001
    original = getattr(client, method)
    pending = list(errors)
    calls: list[str] = []

    def failing(*args: object, **kwargs: object) -> object:
        calls.append(method)
        if pending:
            raise pending.pop(0)
        return original(*args, **kwargs)

    monkeypatch.setattr(client, method, failing)
    return calls


# ---- migration 005 ---------------------------------------------------------


def test_migrate_creates_checkpoint_table(store: AuditStore) -> None:
    _, rows = store.query(
        "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = 'state_checkpoints'"
    )

    assert len(rows) == 1
    engine_full = rows[0][0]
    assert engine_full.startswith("ReplacingMergeTree(version)")
    assert "ORDER BY (group_id, topic, partition)" in engine_full
    assert "TTL" not in engine_full


def test_migrate_keeps_table_of_older_workers(tmp_path: Path) -> None:
    with AuditStore.open(store_dsn(tmp_path / "store")) as old:
        assert old.migrate(up_to=4) == [1, 2, 3, 4]
        old._writer.command(PRE_005_DDL)  # noqa: SLF001 - what workers before migration 005 ran
        old.save_checkpoint(GROUP, TOPIC, 0, 120, b"old state", owner="old-worker")

    with AuditStore.open(store_dsn(tmp_path / "store")) as upgraded:
        applied = upgraded.migrate()
        loaded = upgraded.load_checkpoint(GROUP, TOPIC, 0)

    assert applied == [5]
    assert loaded == Checkpoint(offset=120, state=b"old state")


# ---- save and load ---------------------------------------------------------


def test_load_checkpoint_missing_returns_none(store: AuditStore) -> None:
    assert store.load_checkpoint(GROUP, TOPIC, 0) is None


def test_checkpoint_round_trips_binary_state(store: AuditStore) -> None:
    state = bytes(range(256)) * 4 + os.urandom(3_000_000)

    store.save_checkpoint(GROUP, TOPIC, 3, 4_711, state, owner="worker-1@host:42")
    loaded = store.load_checkpoint(GROUP, TOPIC, 3)

    assert loaded is not None
    assert loaded.offset == 4_711
    assert loaded.state == state
    offset, blob = loaded
    assert (offset, blob) == (4_711, state)


def test_save_checkpoint_records_owner_and_size(store: AuditStore) -> None:
    store.save_checkpoint(GROUP, TOPIC, 1, 10, b"abc", owner="worker-1@host:42")

    _, rows = store.query("SELECT owner, state_bytes, version > 0, written_at > now64(3) - 60 FROM state_checkpoints")

    assert rows == [("worker-1@host:42", 3, True, True)]


def test_load_checkpoint_newest_save_wins(store: AuditStore) -> None:
    store.save_checkpoint(GROUP, TOPIC, 0, 100, b"first", owner="worker-1")
    store.save_checkpoint(GROUP, TOPIC, 0, 250, b"second", owner="worker-2")
    store.save_checkpoint(GROUP, TOPIC, 0, 180, b"third, at a lower offset", owner="worker-1")

    loaded = store.load_checkpoint(GROUP, TOPIC, 0)

    # The parts are not merged yet, so only FINAL hides the older rows.
    _, rows = store.query("SELECT count() FROM state_checkpoints")
    assert rows == [(3,)]
    assert loaded == Checkpoint(offset=180, state=b"third, at a lower offset")


def test_load_checkpoint_matches_full_key(store: AuditStore) -> None:
    store.save_checkpoint(GROUP, TOPIC, 0, 10, b"group topic 0", owner="w")
    store.save_checkpoint(GROUP, TOPIC, 1, 20, b"group topic 1", owner="w")
    store.save_checkpoint(GROUP, "other-logs", 0, 30, b"group other-logs 0", owner="w")
    store.save_checkpoint("other-group", TOPIC, 0, 40, b"other-group topic 0", owner="w")

    assert store.load_checkpoint(GROUP, TOPIC, 0) == Checkpoint(10, b"group topic 0")
    assert store.load_checkpoint(GROUP, TOPIC, 1) == Checkpoint(20, b"group topic 1")
    assert store.load_checkpoint(GROUP, "other-logs", 0) == Checkpoint(30, b"group other-logs 0")
    assert store.load_checkpoint("other-group", TOPIC, 0) == Checkpoint(40, b"other-group topic 0")
    assert store.load_checkpoint(GROUP, TOPIC, 2) is None


def test_checkpoint_group_quotes_bound(store: AuditStore) -> None:
    group = "g' OR 1 = 1 --"
    store.save_checkpoint(GROUP, TOPIC, 0, 10, b"other group's state", owner="w")

    assert store.load_checkpoint(group, TOPIC, 0) is None
    store.save_checkpoint(group, TOPIC, 0, 11, b"quoted group's state", owner="w")
    assert store.load_checkpoint(group, TOPIC, 0) == Checkpoint(11, b"quoted group's state")


# ---- errors ------------------------------------------------------------------


def test_save_checkpoint_before_migrate_advises_migrate(tmp_path: Path) -> None:
    with AuditStore.open(store_dsn(tmp_path / "store")) as store:
        store.migrate(up_to=4)
        with pytest.raises(StoreError) as raised:
            store.save_checkpoint(GROUP, TOPIC, 0, 1, b"x", owner="w")

    assert not isinstance(raised.value, TransientStoreError)
    assert "migrate()" in str(raised.value)
    assert "state_checkpoints" in str(raised.value)


def test_load_checkpoint_before_migrate_advises_migrate(tmp_path: Path) -> None:
    with AuditStore.open(store_dsn(tmp_path / "store")) as store:
        store.migrate(up_to=4)
        with pytest.raises(StoreError) as raised:
            store.load_checkpoint(GROUP, TOPIC, 0)

    assert not isinstance(raised.value, TransientStoreError)
    assert "migrate()" in str(raised.value)


def test_checkpoint_on_closed_store_raises(tmp_path: Path) -> None:
    store = AuditStore.open(store_dsn(tmp_path / "store"))
    store.migrate()
    store.close()

    with pytest.raises(StoreError):
        store.save_checkpoint(GROUP, TOPIC, 0, 1, b"x", owner="w")
    with pytest.raises(StoreError):
        store.load_checkpoint(GROUP, TOPIC, 0)


def test_save_checkpoint_transient_failure_retriable(
    store: AuditStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[Exception] = [OperationalError("Connection refused") for _ in range(NO_WAIT_RETRY.attempts)]
    calls = fail_client_calls(monkeypatch, store, "insert", errors)

    with caplog.at_level(logging.DEBUG), pytest.raises(TransientStoreError) as raised:
        store.save_checkpoint(GROUP, TOPIC, 5, 99, b"state", owner="w")

    assert len(calls) == NO_WAIT_RETRY.attempts
    assert raised.value.retriable is True
    assert f"{TOPIC}/5" in str(raised.value)
    assert "offset 99" in str(raised.value)
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_load_checkpoint_transient_failure_retriable(store: AuditStore, monkeypatch: pytest.MonkeyPatch) -> None:
    errors: list[Exception] = [
        DatabaseError("Code: 159. DB::Exception: Timeout exceeded", code=159) for _ in range(NO_WAIT_RETRY.attempts)
    ]
    fail_client_calls(monkeypatch, store, "query", errors)

    with pytest.raises(TransientStoreError) as raised:
        store.load_checkpoint(GROUP, TOPIC, 5)

    assert raised.value.retriable is True
    assert "159" in str(raised.value)


def test_checkpoint_retry_policy_per_call(store: AuditStore, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fail_client_calls(monkeypatch, store, "insert", [OperationalError("Connection refused") for _ in range(3)])

    store.save_checkpoint(GROUP, TOPIC, 0, 7, b"state", owner="w", retry=RetryPolicy(attempts=4, initial_delay_s=0.0))

    assert len(calls) == 4
    assert store.load_checkpoint(GROUP, TOPIC, 0) == Checkpoint(7, b"state")
