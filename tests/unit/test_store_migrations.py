"""Migration files: naming, statement splitting, placeholders and retention."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.sinks.store_errors import StoreError
from pipeline.sinks.store_migrations import (
    MIGRATIONS_DIR,
    TTL_COLUMNS,
    Retention,
    load_migrations,
    render,
    split_statements,
)


def test_migrations_numbered_from_one() -> None:
    versions = [migration.version for migration in load_migrations()]

    assert versions == list(range(1, len(versions) + 1))


def test_migrations_render_all_placeholders() -> None:
    values = {"database": "tokensentry", **Retention().placeholders()}

    for migration in load_migrations():
        rendered = render(migration.text, values, migration.path)
        assert re.search(r"\{[A-Za-z_]+\}", rendered) is None, migration.path


def test_migrations_ttl_match_ttl_columns() -> None:
    text = "\n".join(migration.text for migration in load_migrations())

    assert set(re.findall(r"\{(\w+)_ttl_days\}", text)) == set(TTL_COLUMNS)
    for table, column in TTL_COLUMNS.items():
        assert f"TTL toDateTime({column}) + toIntervalDay({{{table}_ttl_days}})" in text, table


def test_split_statements_drops_comments() -> None:
    text = "-- header; with a semicolon;\nCREATE TABLE a (x UInt8)\n-- inside;\nENGINE = Memory;\n\nSELECT 1;\n"

    assert split_statements(text) == ["CREATE TABLE a (x UInt8)\nENGINE = Memory", "SELECT 1"]


def test_split_statements_keeps_inline_semicolon() -> None:
    assert split_statements("SELECT ';' AS s, 1;\n") == ["SELECT ';' AS s, 1"]


def test_render_keeps_query_parameters() -> None:
    rendered = render("SELECT {x:UInt8} FROM {database}.t", {"database": "db"}, Path("001_x.sql"))

    assert rendered == "SELECT {x:UInt8} FROM db.t"


def test_render_unknown_placeholder_names_file() -> None:
    with pytest.raises(StoreError) as raised:
        render("TTL ts + toIntervalDay({event_ttl_days})", {"database": "db"}, Path("/m/004_ttl.sql"))

    assert "/m/004_ttl.sql" in str(raised.value)
    assert "event_ttl_days" in str(raised.value)


def test_load_migrations_bad_name_names_file(tmp_path: Path) -> None:
    (tmp_path / "4_add_column.sql").write_text("SELECT 1;\n")

    with pytest.raises(StoreError) as raised:
        load_migrations(tmp_path)

    assert "4_add_column.sql" in str(raised.value)


def test_load_migrations_duplicate_version_names_both(tmp_path: Path) -> None:
    (tmp_path / "002_a.sql").write_text("SELECT 1;\n")
    (tmp_path / "002_b.sql").write_text("SELECT 2;\n")

    with pytest.raises(StoreError) as raised:
        load_migrations(tmp_path)

    assert "002_a.sql" in str(raised.value)
    assert "002_b.sql" in str(raised.value)


def test_load_migrations_ignores_other_files(tmp_path: Path) -> None:
    (tmp_path / "001_base.sql").write_text("SELECT 1;\n")
    (tmp_path / "README.md").write_text("notes")

    assert [migration.name for migration in load_migrations(tmp_path)] == ["base"]


@pytest.mark.parametrize("days", [0, -1, 1.5, True])
def test_retention_rejects_invalid_days(days: object) -> None:
    with pytest.raises(ValueError) as raised:
        Retention(events=days)  # type: ignore[arg-type]

    assert "events" in str(raised.value)


def test_retention_defaults_keep_events_shortest() -> None:
    days = Retention().days()

    assert days["events"] < days["windows"] < days["detections"]
    assert days["actions"] == days["detections"]


def test_migrations_dir_is_packaged_with_schemas() -> None:
    assert MIGRATIONS_DIR.name == "migrations"
    assert (MIGRATIONS_DIR.parent / "events.py").exists()
