"""AuditStore.query accepts one read-only statement and rejects what reaches outside the store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.errors import StoreReadOnlyError
from pipeline.sinks.clickhouse import AuditStore, StoreError
from pipeline.sinks.store_readonly import check_read_only


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuditStore]:
    opened = AuditStore.open(f"chdb://{(tmp_path / 'store').resolve()}")
    opened.migrate()
    yield opened
    opened.close()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "  -- leading comment\n /* block /* nested */ */ select 1",
        "# hash comment\nSELECT 1;",
        "WITH 1 AS x SELECT x",
        "SHOW TABLES",
        "DESCRIBE TABLE events",
        "DESC events",
        "EXPLAIN SELECT 1",
        "EXISTS TABLE events",
        "SELECT 'a; b' AS text",
        "SELECT formatReadableSize(1), profile FROM (SELECT 1 AS profile)",
        "SELECT name FROM system.settings WHERE name = 'max_execution_time'",
        "SELECT 1; -- trailing comment",
    ],
)
def test_check_read_only_accepts(sql: str) -> None:
    check_read_only(sql)


@pytest.mark.parametrize(
    ("sql", "fragment"),
    [
        ("INSERT INTO FUNCTION file('/tmp/x.txt','CSV') SELECT 1", "INSERT statements"),
        ("SYSTEM STOP MERGES", "SYSTEM statements"),
        ("KILL QUERY WHERE 1", "KILL statements"),
        ("SET readonly = 0", "SET statements"),
        ("/* SELECT */ DROP TABLE events", "DROP statements"),
        ("", "this statement is not allowed"),
        ("SELECT 1; SELECT 2", "has 2"),
        ("SELECT 1; INSERT INTO events SELECT * FROM events", "has 2"),
        ("SELECT * FROM file('/etc/passwd','LineAsString')", "file()"),
        ("SELECT file('/etc/hostname')", "file()"),
        ("SELECT * FROM `file`('/etc/passwd','LineAsString')", "file()"),
        ("SELECT * FROM FILE /* x */ ('/etc/passwd')", "FILE()"),
        ("SELECT * FROM file\n-- x\n('/etc/passwd')", "file()"),
        ("SELECT * FROM url('http://127.0.0.1:1/','LineAsString')", "url()"),
        ("SELECT * FROM s3('https://bucket/x.csv')", "s3()"),
        ("SELECT * FROM remoteSecure('host', system.one)", "remoteSecure()"),
        ("SELECT * FROM executable('x.sh', 'CSV', 'a Int8')", "executable()"),
        ("SELECT * FROM postgresql('host:5432', 'db', 't', 'u', 'p')", "postgresql()"),
        ("SELECT 1 INTO OUTFILE '/tmp/x.txt'", "INTO OUTFILE"),
        ("SELECT sleep(1) SETTINGS max_execution_time = 0", "max_execution_time"),
        ("SELECT '1", "unterminated ' quote"),
        ("SELECT 1 /* open", "unterminated /* comment"),
    ],
)
def test_check_read_only_rejects(sql: str, fragment: str) -> None:
    with pytest.raises(StoreReadOnlyError) as raised:
        check_read_only(sql)

    assert fragment in str(raised.value)


def test_rejection_names_allowed_keywords() -> None:
    with pytest.raises(StoreReadOnlyError) as raised:
        check_read_only("SYSTEM STOP MERGES")

    message = str(raised.value)
    assert "SYSTEM STOP MERGES" in message
    assert "SELECT, WITH, SHOW, DESCRIBE, DESC, EXPLAIN or EXISTS" in message.replace("EXPLAIN, EXISTS", "EXPLAIN or EXISTS")


def test_query_insert_into_file_writes_nothing(store: AuditStore, tmp_path: Path) -> None:
    target = tmp_path / "written.csv"

    with pytest.raises(StoreReadOnlyError):
        store.query(f"INSERT INTO FUNCTION file('{target}','CSV') SELECT 1")

    assert not target.exists()


def test_query_into_outfile_writes_nothing(store: AuditStore, tmp_path: Path) -> None:
    target = tmp_path / "out.txt"

    with pytest.raises(StoreReadOnlyError):
        store.query(f"SELECT 1 INTO OUTFILE '{target}'")

    assert not target.exists()


def test_query_file_read_rejected(store: AuditStore, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do-not-read\n")

    with pytest.raises(StoreReadOnlyError) as raised:
        store.query(f"SELECT * FROM file('{secret}', 'LineAsString')")

    assert "file()" in str(raised.value)


def test_query_arrow_url_rejected(store: AuditStore) -> None:
    with pytest.raises(StoreReadOnlyError):
        store.query_arrow("SELECT * FROM url('http://127.0.0.1:1/','LineAsString')")


def test_query_system_statement_rejected(store: AuditStore) -> None:
    with pytest.raises(StoreReadOnlyError) as raised:
        store.query("SYSTEM STOP MERGES")

    assert "SYSTEM" in str(raised.value)


def test_query_max_execution_time_stops(store: AuditStore) -> None:
    with pytest.raises(StoreError) as raised:
        store.query("SELECT sleep(1)", max_execution_time_s=0.2)

    assert "Timeout exceeded" in str(raised.value) or "TIMEOUT_EXCEEDED" in str(raised.value)


def test_query_max_execution_time_invalid(store: AuditStore) -> None:
    with pytest.raises(ValueError):
        store.query("SELECT 1", max_execution_time_s=0)


def test_query_read_statements_run(store: AuditStore) -> None:
    assert store.query("SELECT 1 AS one;") == (["one"], [(1,)])
    assert store.query("-- count\nWITH 2 AS two SELECT two") == (["two"], [(2,)])
    assert "events" in {row[0] for row in store.query("SHOW TABLES")[1]}
