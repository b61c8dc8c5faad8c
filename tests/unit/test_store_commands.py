"""Tests for ``tokensentry store migrate`` and ``tokensentry store size`` on embedded stores."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.sinks.clickhouse import AuditStore, StoreError
from pipeline.sinks.store_migrations import load_migrations
from tests.unit.analyst_logs import ReplayedStore, replay_planted_log

ALL_MIGRATIONS = tuple(migration.path.stem for migration in load_migrations())
LATEST_VERSION = len(ALL_MIGRATIONS)


def _dsn(data_dir: Path) -> str:
    return f"chdb://{(data_dir / 'store').resolve()}"


def _tables(data_dir: Path) -> set[str]:
    with AuditStore.open(_dsn(data_dir)) as store:
        _, rows = store.query("SELECT name FROM system.tables WHERE database = currentDatabase()")
    return {name for (name,) in rows}


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> ReplayedStore:
    return replay_planted_log(tmp_path_factory.mktemp("store_commands"))


# ---- store migrate -----------------------------------------------------------


def test_migrate_from_empty_applies_all(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "migrate", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out

    for label in ALL_MIGRATIONS:
        assert f"applied {label}" in out
    assert f"schema version {LATEST_VERSION}" in out
    tables = _tables(tmp_path)
    for table in ("events", "windows", "detections", "actions", "dead_letters", "receipts", "token_minute"):
        assert table in tables


def test_migrate_twice_applies_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "migrate", "--data-dir", str(tmp_path)]) == 0
    capsys.readouterr()

    assert main(["store", "migrate", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out

    assert "nothing to apply" in out
    assert "applied" not in out
    assert f"schema version {LATEST_VERSION}" in out


def test_migrate_from_version_2_applies_rest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with AuditStore.open(_dsn(tmp_path)) as store:
        assert store.migrate(up_to=2) == [1, 2]
    assert "receipts" not in _tables(tmp_path)

    assert main(["store", "migrate", "--data-dir", str(tmp_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)

    assert result["applied"] == list(ALL_MIGRATIONS[2:])
    assert result["schema_version"] == LATEST_VERSION
    assert "receipts" in _tables(tmp_path)


def test_migrate_to_stages_upgrade(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "migrate", "--data-dir", str(tmp_path), "--to", "1"]) == 0
    out = capsys.readouterr().out

    assert "applied 001_audit_tables" in out
    assert "002_token_minute" not in out
    assert "schema version 1" in out
    assert "token_minute" not in _tables(tmp_path)


def test_migrate_keeps_stored_rows(replayed: ReplayedStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "migrate", "--data-dir", str(replayed.data_dir)]) == 0
    assert "nothing to apply" in capsys.readouterr().out

    with AuditStore.open(replayed.dsn) as store:
        _, rows = store.query("SELECT count() FROM events FINAL")
    assert rows[0][0] == replayed.log.lines


def test_migrate_unknown_version_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "migrate", "--data-dir", str(tmp_path), "--to", "99"]) == 2
    err = capsys.readouterr().err

    assert "--to 99" in err
    assert str(list(range(1, LATEST_VERSION + 1))) in err


# ---- store size --------------------------------------------------------------


def test_size_json_counts_rows_and_bytes(replayed: ReplayedStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "size", "--data-dir", str(replayed.data_dir), "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    tables = {table["table"]: table for table in result["tables"]}

    assert tables["events"]["rows"] == replayed.log.lines
    assert tables["events"]["compressed_bytes"] > 0
    assert tables["events"]["uncompressed_bytes"] > tables["events"]["compressed_bytes"]
    assert tables["detections"]["rows"] > 0
    assert result["compressed_bytes_per_event"]["events_table"] == pytest.approx(
        tables["events"]["compressed_bytes"] / replayed.log.lines
    )
    assert result["compressed_bytes_per_event"]["all_tables"] > result["compressed_bytes_per_event"]["events_table"]
    assert result["compressed_bytes_per_detection"] == pytest.approx(
        tables["detections"]["compressed_bytes"] / tables["detections"]["rows"]
    )
    assert tables["receipts"]["rows"] == 0


def test_size_table_lists_per_record_figures(replayed: ReplayedStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "size", "--data-dir", str(replayed.data_dir)]) == 0
    out = capsys.readouterr().out

    for table in ("events", "windows", "detections", "actions", "token_minute", "total"):
        assert f"\n{table} " in out
    assert "compressed per event, events table:" in out
    assert "compressed per detection:" in out


def test_size_optimize_merges_parts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Events are partitioned by UTC day, so the log must not cross midnight
    # for one part to remain: it starts at noon of the day before today.
    yesterday_noon = (int(time.time()) // 86400 - 1) * 86400 + 12 * 3600.0
    replayed = replay_planted_log(tmp_path, start=yesterday_noon)
    capsys.readouterr()

    assert main(["store", "size", "--data-dir", str(replayed.data_dir), "--format", "json"]) == 0
    before = {t["table"]: t for t in json.loads(capsys.readouterr().out)["tables"]}
    assert main(["store", "size", "--data-dir", str(replayed.data_dir), "--format", "json", "--optimize"]) == 0
    after = {t["table"]: t for t in json.loads(capsys.readouterr().out)["tables"]}

    assert before["events"]["parts"] > 1
    assert after["events"]["parts"] == 1
    assert after["events"]["rows"] == before["events"]["rows"]


def test_size_columns_compact_parts_explained(replayed: ReplayedStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "size", "--data-dir", str(replayed.data_dir), "--columns", "events"]) == 0
    captured = capsys.readouterr()

    assert "compact" in captured.err
    assert "compressed per event" in captured.out


def test_size_columns_unknown_table_rejected(replayed: ReplayedStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "size", "--data-dir", str(replayed.data_dir), "--columns", "nope"]) == 2

    assert "--columns 'nope'" in capsys.readouterr().err


def test_size_before_migrate_advises_migrate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "size", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err

    assert "tokensentry store migrate" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv", [["query", "SELECT 1"], ["store", "size"]])
def test_read_command_missing_store_creates_nothing(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "missing"

    assert main([*argv, "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err

    assert f"no audit store at {(data_dir / 'store').resolve()}" in err
    assert "tokensentry store migrate" in err
    assert not data_dir.exists()


def test_query_before_migrate_names_cli_remedy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    AuditStore.open(f"chdb://{(tmp_path / 'store').resolve()}").close()

    assert main(["query", "--data-dir", str(tmp_path), "SELECT 1"]) == 2
    err = capsys.readouterr().err

    assert "tokensentry store migrate" in err
    assert "Traceback" not in err


def test_write_before_migrate_names_cli_remedy(tmp_path: Path) -> None:
    with AuditStore.open(f"chdb://{(tmp_path / 'store').resolve()}") as store:
        with pytest.raises(StoreError) as raised:
            store.save_checkpoint("group", "topic", 0, 1, b"state", owner="test")

    assert "tokensentry store migrate" in str(raised.value)
