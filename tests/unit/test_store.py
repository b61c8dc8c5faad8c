"""AuditStore on the real embedded chDB backend, one store directory per test.

chDB runs one engine per process, so every test closes its store before the
next one opens another directory.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from pipeline.sinks.clickhouse import (
    AuditStore,
    Retention,
    RetryPolicy,
    StoreError,
    StoreInUseError,
    StoreReadOnlyError,
    TransientStoreError,
)
from pipeline.sinks.store_migrations import MIGRATIONS_DIR, load_migrations
from schemas.actions import Action, ActionKind, ActionReceipt, Reason
from schemas.deadletters import DeadLetter
from schemas.detections import Detection, Evidence, Severity
from schemas.events import EVENT_COLUMNS
from schemas.windows import WINDOW_FEATURES, WINDOW_KEYS

REPO_ROOT = Path(__file__).resolve().parents[2]
AUDIT_TABLES = {"events", "windows", "detections", "actions", "dead_letters", "receipts", "schema_migrations"}
# A whole second one hour ago: recent enough for every TTL, and exact in milliseconds.
BASE_TS = float(int(time.time()) - 3600)


def store_dsn(directory: Path) -> str:
    return f"chdb://{directory.resolve()}"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuditStore]:
    opened = AuditStore.open(store_dsn(tmp_path / "store"))
    opened.migrate()
    yield opened
    opened.close()


def event_batch(rows: int, first_offset: int = 0, *, partition: int = 0, source: str = "gateway-logs") -> dict[str, np.ndarray]:
    """Build an event batch whose event ids follow from (partition, offset), as the pipeline's do."""
    offsets = np.arange(first_offset, first_offset + rows, dtype=np.int64)
    statuses = np.array([200, 404, 503, 200], dtype=np.uint16)
    return {
        "event_id": (offsets.astype(np.uint64) + np.uint64(partition) * np.uint64(10**12) + np.uint64(2**63)),
        "ts": BASE_TS + offsets * 0.25,
        "gateway": np.full(rows, "kong_json", dtype=object),
        "subject_id": np.array([f"tk_{offset % 3:016x}" for offset in offsets], dtype=object),
        "subject_kind": np.ones(rows, dtype=np.uint8),
        "account": np.full(rows, "acct-1", dtype=object),
        "client_ip": np.array([f"203.0.113.{offset % 250}" for offset in offsets], dtype=object),
        "method": np.full(rows, "GET", dtype=object),
        "host": np.full(rows, "api.example.com", dtype=object),
        "path": np.array([f"/v1/items/{offset}" for offset in offsets], dtype=object),
        "route": np.full(rows, "items", dtype=object),
        "status": statuses[offsets % 4],
        "latency_ms": np.where(offsets % 5 == 0, np.nan, offsets * 0.5).astype(np.float32),
        "bytes_in": np.where(offsets % 7 == 0, -1, 100 + offsets).astype(np.int64),
        "bytes_out": (1000 + offsets).astype(np.int64),
        "user_agent": np.full(rows, "curl/8.5.0", dtype=object),
        "origin": np.full(rows, "", dtype=object),
        "referer": np.full(rows, "https://app.example.com/", dtype=object),
        "country": np.full(rows, "DE", dtype=object),
        "asn": np.full(rows, 3320, dtype=np.uint32),
        "device_id": np.full(rows, "", dtype=object),
        "request_id": np.array([f"req-{partition}-{offset}" for offset in offsets], dtype=object),
        "source": np.full(rows, source, dtype=object),
        "partition": np.full(rows, partition, dtype=np.int32),
        "offset": offsets,
        "late": offsets % 2 == 1,
    }


def window_batch(rows: int) -> dict[str, np.ndarray]:
    columns: dict[str, np.ndarray] = {
        "window_id": np.arange(rows, dtype=np.uint64) + np.uint64(2**64 - 100),
        "subject_id": np.array([f"tk_{i:016x}" for i in range(rows)], dtype=object),
        "subject_kind": np.zeros(rows, dtype=np.uint8),
        "account": np.full(rows, "acct-2", dtype=object),
        "window_start": BASE_TS + np.arange(rows) * 60.0,
        "window_end": BASE_TS + np.arange(rows) * 60.0 + 60.0,
        "first_offset": np.arange(rows, dtype=np.int64) * 100,
        "last_offset": np.arange(rows, dtype=np.int64) * 100 + 99,
    }
    for position, name in enumerate(WINDOW_FEATURES):
        columns[name] = np.arange(rows, dtype=np.float64) + position / 8.0
    columns["latency_p95_ms"][0] = np.nan
    return columns


def sample_detection(detection_id: int = 2**63 + 5) -> Detection:
    return Detection(
        detection_id=detection_id,
        detector="ewma_rate",
        detector_version="1.2.0",
        subject_id="tk_0123456789abcdef",
        subject_kind=1,
        account="acct-1",
        client_ip="198.51.100.0/24",
        window_id=2**64 - 1,
        window_start=BASE_TS + 0.125,
        window_end=BASE_TS + 60.125,
        score=4.25,
        threshold=3.0,
        severity=Severity.HIGH,
        explanation="Request rate was 4.2 times the baseline of 100 per minute.",
        evidence=(Evidence(feature="requests", observed=420.0, expected=100.0, threshold=300.0),),
        registry_version="r7",
    )


def sample_action(action_id: str = "act-0001") -> Action:
    return Action(
        action_id=action_id,
        kind=ActionKind.THROTTLE,
        token_id="tk_0123456789abcdef",
        subject="tk_0123456789abcdef",
        account="acct-1",
        limit_rps=2.5,
        issued_at=BASE_TS + 0.5,
        expires_at=BASE_TS + 900.0,
        reason="Rate 4.2x baseline",
        reasons=(
            Reason(
                detection_id=2**63 + 5,
                detector="ewma_rate",
                severity=3,
                score=4.25,
                explanation="rate",
                window_start=BASE_TS,
                window_end=BASE_TS + 60.0,
                evidence=(Evidence(feature="requests", observed=420.0, expected=100.0),),
            ),
        ),
        policy_version="p3",
        rule="throttle-on-rate",
        dry_run=True,
        shadow_reason="dry-run: rule throttle-on-rate",
        grace_period_s=30.0,
        origin="pipeline",
        key_id="k1",
        signature="c2lnbmF0dXJl",
    )


def sample_receipt(agent_id: str = "kong-7") -> ActionReceipt:
    return ActionReceipt(
        agent_id=agent_id,
        action_id="act-0001",
        kind=ActionKind.THROTTLE,
        subject="tk_0123456789abcdef",
        issued_at=BASE_TS + 0.5,
        applied_at=BASE_TS + 1.5,
    )


def single_value(store: AuditStore, sql: str) -> object:
    _, rows = store.query(sql)
    return rows[0][0]


def seconds(value: datetime) -> float:
    return value.timestamp()


# ---- migrations ----------------------------------------------------------


def test_migrate_from_empty_creates_tables(store: AuditStore) -> None:
    _, rows = store.query("SELECT name FROM system.tables WHERE database = currentDatabase()")
    tables = {name for (name,) in rows}

    assert AUDIT_TABLES <= tables
    assert {"token_minute", "token_minute_mv", "events_final", "receipts_final"} <= tables


def test_migrate_records_checksums(store: AuditStore) -> None:
    expected = {(m.version, m.name, m.checksum) for m in load_migrations()}

    _, rows = store.query("SELECT version, name, checksum FROM schema_migrations FINAL")

    assert set(rows) == expected


def test_migrate_twice_is_noop(store: AuditStore) -> None:
    before = store.query("SHOW CREATE TABLE events")

    applied = store.migrate()

    assert applied == []
    assert single_value(store, "SELECT count() FROM schema_migrations") == len(load_migrations())
    assert store.query("SHOW CREATE TABLE events") == before


def test_migrate_from_version_1_applies_rest(tmp_path: Path) -> None:
    dsn = store_dsn(tmp_path / "store")
    with AuditStore.open(dsn) as old:
        assert old.migrate(up_to=1) == [1]
        old.write_events(event_batch(4))
        _, rows = old.query("SELECT name FROM system.tables WHERE database = currentDatabase()")
        assert "receipts" not in {name for (name,) in rows}

    with AuditStore.open(dsn) as upgraded:
        applied = upgraded.migrate()
        upgraded.write_receipts([sample_receipt()])

        assert applied == [m.version for m in load_migrations() if m.version > 1]
        assert single_value(upgraded, "SELECT count() FROM events FINAL") == 4
        assert single_value(upgraded, "SELECT count() FROM receipts FINAL") == 1


def test_migrate_changed_applied_file_raises(tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    with AuditStore.open(store_dsn(tmp_path / "store")) as store:
        store.migrate(directory=migrations)
        changed = migrations / "002_token_minute.sql"
        changed.write_text(changed.read_text() + "\n-- edited after release\n")

        with pytest.raises(StoreError) as raised:
            store.migrate(directory=migrations)

    assert str(changed) in str(raised.value)


def test_migrate_ttl_settings_in_show_create(tmp_path: Path) -> None:
    retention = Retention(events=7, windows=21, token_minute=14, detections=400, actions=500, dead_letters=60, receipts=450)
    with AuditStore.open(store_dsn(tmp_path / "store")) as store:
        store.migrate(retention)
        ddl = {table: single_value(store, f"SHOW CREATE TABLE {table}") for table in retention.days()}

    for table, days in retention.days().items():
        assert f"+ toIntervalDay({days})" in ddl[table], table


def test_migrate_changed_retention_alters_ttl(store: AuditStore) -> None:
    applied = store.migrate(Retention(events=14))

    assert applied == []
    assert "toDateTime(inserted_at) + toIntervalDay(14)" in single_value(store, "SHOW CREATE TABLE events")
    assert "toIntervalDay(90)" in single_value(store, "SHOW CREATE TABLE windows")


def test_table_columns_match_batch_contracts(store: AuditStore) -> None:
    _, event_rows = store.query("SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'events'")
    _, window_rows = store.query("SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'windows'")

    assert [name for (name,) in event_rows] == [*EVENT_COLUMNS, "inserted_at"]
    assert [name for (name,) in window_rows] == [*WINDOW_KEYS, *WINDOW_FEATURES, "inserted_at"]


# ---- writes round-trip ---------------------------------------------------


def test_write_events_round_trips(store: AuditStore) -> None:
    batch = event_batch(12, first_offset=1000, partition=3)

    inserted = store.write_events(batch)
    names, rows = store.query(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events FINAL ORDER BY offset")
    stored = {name: [row[index] for row in rows] for index, name in enumerate(names)}

    assert inserted == 12
    assert [seconds(value) for value in stored["ts"]] == batch["ts"].tolist()
    assert all(value.tzinfo is not None for value in stored["ts"])
    assert [math.isnan(value) for value in stored["latency_ms"]] == np.isnan(batch["latency_ms"]).tolist()
    assert np.array(stored["latency_ms"], dtype=np.float32)[~np.isnan(batch["latency_ms"])].tolist() == (
        batch["latency_ms"][~np.isnan(batch["latency_ms"])].tolist()
    )
    for name in EVENT_COLUMNS:
        if name in ("ts", "latency_ms"):
            continue
        assert stored[name] == batch[name].tolist(), name


def test_write_events_constant_columns_round_trip(store: AuditStore) -> None:
    batch = event_batch(5)
    batch["host"][2] = "other.example.com"
    batch["origin"][:] = "https://app.example.com"

    store.write_events(batch)
    names, rows = store.query("SELECT host, origin, source, gateway FROM events FINAL ORDER BY offset")

    assert [row[0] for row in rows] == batch["host"].tolist()
    assert [row[1] for row in rows] == ["https://app.example.com"] * 5
    assert [row[2] for row in rows] == ["gateway-logs"] * 5
    assert [row[3] for row in rows] == ["kong_json"] * 5


def test_write_windows_round_trips(store: AuditStore) -> None:
    batch = window_batch(5)

    inserted = store.write_windows(batch)
    names, rows = store.query("SELECT * EXCEPT inserted_at FROM windows FINAL ORDER BY window_start")
    stored = {name: [row[index] for row in rows] for index, name in enumerate(names)}

    assert inserted == 5
    assert [seconds(value) for value in stored["window_start"]] == batch["window_start"].tolist()
    assert [seconds(value) for value in stored["window_end"]] == batch["window_end"].tolist()
    assert math.isnan(stored["latency_p95_ms"][0])
    assert stored["latency_p95_ms"][1:] == batch["latency_p95_ms"][1:].tolist()
    for name in [*WINDOW_KEYS, *WINDOW_FEATURES]:
        if name in ("window_start", "window_end", "latency_p95_ms"):
            continue
        assert stored[name] == batch[name].tolist(), name


def test_write_detections_round_trips(store: AuditStore) -> None:
    detection = sample_detection()

    store.write_detections([detection])
    names, [row] = store.query("SELECT * EXCEPT inserted_at FROM detections FINAL")
    stored = dict(zip(names, row, strict=True))
    expected = detection.model_dump(mode="json")

    assert seconds(stored.pop("window_start")) == detection.window_start
    assert seconds(stored.pop("window_end")) == detection.window_end
    assert json.loads(stored.pop("evidence")) == expected.pop("evidence")
    expected.pop("window_start")
    expected.pop("window_end")
    assert stored == expected


def test_write_actions_round_trips(store: AuditStore) -> None:
    action = sample_action()

    store.write_actions([action], published=True)
    names, [row] = store.query("SELECT * EXCEPT inserted_at FROM actions FINAL")
    stored = dict(zip(names, row, strict=True))
    expected = action.model_dump(mode="json")

    assert stored.pop("published") == 1
    assert seconds(stored.pop("issued_at")) == expected.pop("issued_at")
    assert seconds(stored.pop("expires_at")) == expected.pop("expires_at")
    assert json.loads(stored.pop("reasons")) == expected.pop("reasons")
    assert stored == expected


def test_write_actions_none_stored_as_null(store: AuditStore) -> None:
    action = sample_action().model_copy(update={"limit_rps": None, "grace_period_s": None, "expires_at": 0.0})

    store.write_actions([action], published=False)
    _, [(limit_rps, grace_period_s, expires_at)] = store.query("SELECT limit_rps, grace_period_s, expires_at FROM actions FINAL")

    assert limit_rps is None
    assert grace_period_s is None
    assert seconds(expires_at) == 0.0


def test_write_dead_letters_round_trips(store: AuditStore) -> None:
    letter = DeadLetter(
        source="/var/log/nginx/access.log",
        partition=-1,
        offset=42,
        stage="parser",
        reason="invalid status 'abc'",
        raw='1.2.3.4 - - [x] "GET /?key=<redacted> HTTP/1.1" abc',
        format="nginx_combined",
    )

    store.write_dead_letters([letter])
    names, [row] = store.query("SELECT * EXCEPT inserted_at FROM dead_letters FINAL")

    assert dict(zip(names, row, strict=True)) == letter.model_dump()


def test_write_receipts_round_trips(store: AuditStore) -> None:
    receipt = sample_receipt()

    store.write_receipts([receipt], received_at=BASE_TS + 2.25)
    names, [row] = store.query("SELECT * EXCEPT inserted_at FROM receipts FINAL")
    stored = dict(zip(names, row, strict=True))
    expected = receipt.model_dump(mode="json")

    assert seconds(stored.pop("received_at")) == BASE_TS + 2.25
    assert seconds(stored.pop("issued_at")) == expected.pop("issued_at")
    assert seconds(stored.pop("applied_at")) == expected.pop("applied_at")
    assert stored == expected


def test_write_receipts_received_at_list(store: AuditStore) -> None:
    receipts = [sample_receipt("g1"), sample_receipt("g2")]

    store.write_receipts(receipts, received_at=[BASE_TS + 1.0, BASE_TS + 2.0])
    _, rows = store.query("SELECT agent_id, received_at FROM receipts FINAL ORDER BY agent_id")

    assert [(agent, seconds(received)) for agent, received in rows] == [("g1", BASE_TS + 1.0), ("g2", BASE_TS + 2.0)]


def test_receipts_received_at_defaults_now(store: AuditStore) -> None:
    before = time.time()

    store.write_receipts([sample_receipt()])
    received = seconds(single_value(store, "SELECT received_at FROM receipts"))

    assert before - 0.001 <= received <= time.time() + 0.001


def test_write_empty_batches_insert_nothing(store: AuditStore) -> None:
    assert store.write_events(event_batch(0)) == 0
    assert store.write_detections([]) == 0
    assert single_value(store, "SELECT count() FROM events") == 0


# ---- deduplication -------------------------------------------------------


def test_write_events_twice_keeps_one_copy(store: AuditStore) -> None:
    batch = event_batch(40)

    first = store.write_events(batch)
    second = store.write_events(batch)

    assert (first, second) == (40, 0)
    assert single_value(store, "SELECT count() FROM events FINAL") == 40
    assert single_value(store, "SELECT count() FROM events") == 40
    assert single_value(store, "SELECT sum(requests) FROM token_minute") == 40


def test_write_events_overlapping_redelivery_inserts_rest(store: AuditStore) -> None:
    store.write_events(event_batch(100, first_offset=0))

    # After a crash the consumer resumes at the same offset but cuts the batch elsewhere.
    inserted = store.write_events(event_batch(100, first_offset=50))

    assert inserted == 50
    assert single_value(store, "SELECT count() FROM events FINAL") == 150
    assert single_value(store, "SELECT sum(requests) FROM token_minute") == 150
    assert single_value(store, "SELECT uniqExact(event_id) FROM events") == 150


def test_write_events_other_partition_kept(store: AuditStore) -> None:
    store.write_events(event_batch(10, partition=0))

    inserted = store.write_events(event_batch(10, partition=1))

    assert inserted == 10
    assert single_value(store, "SELECT count() FROM events FINAL") == 20


def test_write_events_repeated_id_in_batch_dropped(store: AuditStore) -> None:
    batch = event_batch(6)
    doubled = {name: np.concatenate([values, values[:2]]) for name, values in batch.items()}

    inserted = store.write_events(doubled)

    assert inserted == 6
    assert single_value(store, "SELECT sum(requests) FROM token_minute") == 6


def test_token_minute_rolls_up_errors_and_bytes(store: AuditStore) -> None:
    batch = event_batch(8)
    known_bytes_in = batch["bytes_in"][batch["bytes_in"] > 0].sum()

    store.write_events(batch)
    _, [(requests, errors_4xx, errors_5xx, bytes_in, bytes_out)] = store.query(
        "SELECT sum(requests), sum(errors_4xx), sum(errors_5xx), sum(bytes_in), sum(bytes_out) FROM token_minute"
    )

    assert requests == 8
    assert errors_4xx == 2
    assert errors_5xx == 2
    assert bytes_in == known_bytes_in
    assert bytes_out == batch["bytes_out"].sum()


@pytest.mark.parametrize(
    ("table", "write"),
    [
        ("windows", lambda store: store.write_windows(window_batch(3))),
        ("detections", lambda store: store.write_detections([sample_detection(1), sample_detection(2)])),
        ("actions", lambda store: store.write_actions([sample_action("a1"), sample_action("a2")], published=True)),
        (
            "dead_letters",
            lambda store: store.write_dead_letters(
                [DeadLetter(source="t", offset=offset, stage="parser", reason="bad", raw="x") for offset in (1, 2)]
            ),
        ),
        (
            "receipts",
            lambda store: store.write_receipts(
                [sample_receipt(agent) for agent in ("g1", "g2")], received_at=BASE_TS
            ),
        ),
    ],
)
def test_write_twice_final_counts_once(store: AuditStore, table: str, write) -> None:
    written = write(store)
    write(store)

    assert single_value(store, f"SELECT count() FROM {table} FINAL") == written
    assert single_value(store, f"SELECT count() FROM {table}_final") == written


def test_write_twice_optimize_keeps_one(store: AuditStore) -> None:
    store.write_detections([sample_detection()])
    store.write_detections([sample_detection()])

    store.optimize("detections")

    assert single_value(store, "SELECT count() FROM detections") == 1


def test_write_actions_published_copy_wins(store: AuditStore) -> None:
    action = sample_action()

    store.write_actions([action], published=True)
    store.write_actions([action], published=False)

    assert single_value(store, "SELECT published FROM actions FINAL") == 1


# ---- reads ---------------------------------------------------------------


def test_query_insert_raises_read_only(store: AuditStore) -> None:
    with pytest.raises(StoreReadOnlyError) as raised:
        store.query("INSERT INTO dead_letters (source, offset, stage, reason, raw) VALUES ('t', 1, 's', 'r', 'x')")

    assert "INSERT INTO dead_letters" in str(raised.value)
    assert single_value(store, "SELECT count() FROM dead_letters") == 0


def test_query_ddl_raises_read_only(store: AuditStore) -> None:
    with pytest.raises(StoreReadOnlyError):
        store.query("DROP TABLE events")


def test_query_settings_change_raises_read_only(store: AuditStore) -> None:
    with pytest.raises(StoreReadOnlyError):
        store.query("SET readonly = 0")


def test_query_unknown_table_raises_store_error(store: AuditStore) -> None:
    with pytest.raises(StoreError) as raised:
        store.query("SELECT * FROM no_such_table")

    assert "no_such_table" in str(raised.value)


def test_query_binds_parameters(store: AuditStore) -> None:
    store.write_events(event_batch(9))

    names, rows = store.query("SELECT count() AS n FROM events FINAL WHERE subject_id = {subject:String}", {"subject": f"tk_{1:016x}"})

    assert names == ["n"]
    assert rows == [(3,)]


def test_query_arrow_returns_table(store: AuditStore) -> None:
    store.write_events(event_batch(5))

    table = store.query_arrow("SELECT event_id, status FROM events FINAL ORDER BY offset")

    assert table.num_rows == 5
    assert table.column("status").to_pylist() == event_batch(5)["status"].tolist()


# ---- errors --------------------------------------------------------------


def test_write_before_migrate_advises_migrate(tmp_path: Path) -> None:
    with AuditStore.open(store_dsn(tmp_path / "store")) as store:
        with pytest.raises(StoreError) as raised:
            store.write_events(event_batch(2))

    assert "migrate()" in str(raised.value)


def test_write_schema_error_not_retriable(tmp_path: Path) -> None:
    with AuditStore.open(store_dsn(tmp_path / "store")) as store:
        with pytest.raises(StoreError) as raised:
            store.write_windows(window_batch(2))

    assert not isinstance(raised.value, TransientStoreError)
    assert raised.value.retriable is False


# ---- transient failures ----------------------------------------------------

NO_WAIT_RETRY = RetryPolicy(attempts=2, initial_delay_s=0.0, max_delay_s=0.0)

# Driver errors as clickhouse-connect raises them when the server is away:
# OperationalError without a code for a refused connection, server codes for
# a timeout and for a connection reset while the server restarts.
TRANSIENT_ERRORS: dict[str, Callable[[], DatabaseError]] = {
    "connection refused": lambda: OperationalError("Error HTTPConnectionPool(host='127.0.0.1', port=8123): Connection refused"),
    "timeout": lambda: DatabaseError("Code: 159. DB::Exception: Timeout exceeded: elapsed 300 seconds", code=159),
    "server restarting": lambda: DatabaseError("Code: 210. DB::NetException: Connection reset by peer", code=210),
}


@pytest.fixture
def no_wait_store(tmp_path: Path) -> Iterator[AuditStore]:
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


@pytest.mark.parametrize("cause", sorted(TRANSIENT_ERRORS))
def test_write_transient_failure_is_retriable(
    no_wait_store: AuditStore, monkeypatch: pytest.MonkeyPatch, cause: str
) -> None:
    errors = [TRANSIENT_ERRORS[cause]() for _ in range(NO_WAIT_RETRY.attempts)]
    calls = fail_client_calls(monkeypatch, no_wait_store, "insert_arrow", errors)

    with pytest.raises(TransientStoreError) as raised:
        no_wait_store.write_windows(window_batch(2))

    assert len(calls) == NO_WAIT_RETRY.attempts
    assert raised.value.retriable is True
    assert isinstance(raised.value, StoreError)
    assert raised.value.__cause__ is errors[-1]
    assert "windows" in str(raised.value)
    assert "retries are used up" in str(raised.value)


def test_write_events_lookup_failure_retriable(
    no_wait_store: AuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors = [TRANSIENT_ERRORS["connection refused"]() for _ in range(NO_WAIT_RETRY.attempts)]
    fail_client_calls(monkeypatch, no_wait_store, "query", errors)

    with pytest.raises(TransientStoreError) as raised:
        no_wait_store.write_events(event_batch(3))

    assert "events" in str(raised.value)


def test_write_transient_failure_then_success(no_wait_store: AuditStore, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fail_client_calls(monkeypatch, no_wait_store, "insert_arrow", [TRANSIENT_ERRORS["timeout"]()])

    written = no_wait_store.write_windows(window_batch(3))

    assert written == 3
    assert len(calls) == 2
    assert single_value(no_wait_store, "SELECT count() FROM windows FINAL") == 3


def test_write_giving_up_logs_warning(
    no_wait_store: AuditStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    errors = [TRANSIENT_ERRORS["server restarting"]() for _ in range(NO_WAIT_RETRY.attempts)]
    fail_client_calls(monkeypatch, no_wait_store, "insert_arrow", errors)

    with caplog.at_level(logging.DEBUG), pytest.raises(TransientStoreError):
        no_wait_store.write_windows(window_batch(1))

    giving_up = [record for record in caplog.records if "giving up" in record.getMessage()]
    assert len(giving_up) == 1
    assert giving_up[0].levelno == logging.WARNING
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_write_events_missing_column_names_it(store: AuditStore) -> None:
    batch = event_batch(3)
    del batch["country"]

    with pytest.raises(ValueError) as raised:
        store.write_events(batch)

    assert "country" in str(raised.value)


def test_write_events_wrong_dtype_names_column(store: AuditStore) -> None:
    batch = event_batch(3)
    batch["status"] = batch["status"].astype(np.int64)

    with pytest.raises(TypeError) as raised:
        store.write_events(batch)

    assert "status" in str(raised.value)


def test_write_events_none_string_names_column(store: AuditStore) -> None:
    batch = event_batch(3)
    batch["host"][1] = None

    with pytest.raises(ValueError) as raised:
        store.write_events(batch)

    assert "host" in str(raised.value)


def test_closed_store_raises(tmp_path: Path) -> None:
    store = AuditStore.open(store_dsn(tmp_path / "store"))
    store.close()

    with pytest.raises(StoreError) as raised:
        store.query("SELECT 1")

    assert "closed" in str(raised.value)


@pytest.mark.parametrize(
    ("dsn", "fragment"),
    [
        ("postgres://u:secret@db:5432/x", "unknown scheme"),
        ("chdb://data/store", "absolute"),
        ("chdb:relative/store", "absolute"),
        ("http://u:secret@/tokensentry", "host is missing"),
        ("https://u:secret@:8443", "host is missing"),
    ],
)
def test_open_malformed_dsn_names_value(dsn: str, fragment: str) -> None:
    with pytest.raises(StoreError) as raised:
        AuditStore.open(dsn)

    message = str(raised.value)
    assert fragment in message
    assert "secret" not in message
    assert "chdb:///absolute/dir" in message


def test_open_uncreatable_dir_names_path(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")

    with pytest.raises(StoreError) as raised:
        AuditStore.open(store_dsn(blocker / "store"))

    assert str(blocker / "store") in str(raised.value)


OPEN_AND_REPORT = """
import sys
from pipeline.sinks.clickhouse import AuditStore, StoreError
try:
    AuditStore.open(sys.argv[1]).close()
except StoreError as error:
    print(type(error).__name__, error)
else:
    print("opened")
"""


def test_open_unwritable_dir_names_path(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        directory = tmp_path / "read-only"
        directory.mkdir(mode=0o555)
        with pytest.raises(StoreError) as raised:
            AuditStore.open(store_dsn(directory))
        assert str(directory) in str(raised.value)
        assert "not writable" in str(raised.value)
        return

    # Root writes everywhere, so the open runs as "nobody" in a child
    # process, under a parent directory that "nobody" can traverse. setpriv
    # (util-linux) drops the privileges: subprocess's user= could not exec
    # the interpreter here, whose real path is under /root.
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv (util-linux) to open the store as another user")
    parent = Path(tempfile.mkdtemp(prefix="store-unwritable-"))
    try:
        parent.chmod(0o755)
        directory = parent / "read-only"
        directory.mkdir(mode=0o555)
        result = subprocess.run(
            [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-c", OPEN_AND_REPORT, store_dsn(directory)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        shutil.rmtree(parent)

    assert result.stdout.startswith("StoreError"), result.stdout + result.stderr
    assert str(directory) in result.stdout
    assert "not writable" in result.stdout


HOLD_OPEN = """
import sys
from pipeline.sinks.clickhouse import AuditStore
store = AuditStore.open(sys.argv[1])
print("ready", flush=True)
sys.stdin.read()
store.close()
"""


def test_open_locked_dir_raises_in_use(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_OPEN, store_dsn(directory)],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreInUseError) as raised:
            AuditStore.open(store_dsn(directory))
    finally:
        holder.stdin.close()
        holder.wait(timeout=120)

    message = str(raised.value)
    assert str(directory.resolve()) in message
    assert f"PID {holder.pid}" in message
    assert "--store" in message


def test_open_after_holder_exits(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    subprocess.run([sys.executable, "-c", OPEN_AND_REPORT, store_dsn(directory)], cwd=REPO_ROOT, check=True, timeout=120)

    with AuditStore.open(store_dsn(directory)) as store:
        assert store.migrate() == [m.version for m in load_migrations()]


def test_query_before_migrate_advises_migrate(tmp_path: Path) -> None:
    with AuditStore.open(store_dsn(tmp_path / "store")) as store:
        with pytest.raises(StoreError) as raised:
            store.query("SELECT 1")

    assert "migrate()" in str(raised.value)


def test_open_second_dir_same_process(tmp_path: Path) -> None:
    with AuditStore.open(store_dsn(tmp_path / "first")):
        with pytest.raises(StoreError) as raised:
            AuditStore.open(store_dsn(tmp_path / "second"))

    assert str((tmp_path / "first").resolve()) in str(raised.value)


def test_open_unreachable_server_hides_password() -> None:
    with pytest.raises(StoreError) as raised:
        AuditStore.open("http://writer:s3cret@127.0.0.1:1/tokensentry", connect_timeout_s=2)

    assert "writer:***@127.0.0.1:1" in str(raised.value)
    assert "s3cret" not in str(raised.value)


def test_open_chdb_with_async_insert_raises(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as raised:
        AuditStore.open(store_dsn(tmp_path / "store"), async_insert=True)

    assert "async_insert" in str(raised.value)


def test_event_ids_survive_uint64_range(store: AuditStore) -> None:
    batch = event_batch(2)
    batch["event_id"] = np.array([0, 2**64 - 1], dtype=np.uint64)

    store.write_events(batch)

    assert single_value(store, "SELECT max(event_id) FROM events") == 2**64 - 1


def test_ts_rounds_to_milliseconds(store: AuditStore) -> None:
    batch = event_batch(1)
    batch["ts"] = np.array([BASE_TS + 0.0126])

    store.write_events(batch)

    stored = single_value(store, "SELECT ts FROM events")
    assert stored == datetime.fromtimestamp(BASE_TS + 0.013, tz=UTC)


def test_write_events_spanning_many_days(store: AuditStore) -> None:
    batch = event_batch(150)
    batch["ts"] = BASE_TS + np.arange(150) * 86400.0

    inserted = store.write_events(batch)

    assert inserted == 150
    assert single_value(store, "SELECT count() FROM events") == 150
    assert single_value(store, "SELECT uniqExact(toDate(ts)) FROM events") == 150
