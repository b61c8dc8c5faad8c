"""The deploy/clickhouse SQL parses and stays in step with the migrations."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client

from pipeline.sinks.store_migrations import Retention, load_migrations, render, split_statements

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "clickhouse"
SQL_FILES = sorted(DEPLOY_DIR.glob("*.sql"))
_TABLE_HEADER_RE = re.compile(r"^CREATE TABLE IF NOT EXISTS tokensentry\.(\w+?)(?:_local ON CLUSTER '\{cluster\}')?\n\(")


@pytest.fixture(scope="module")
def engine() -> Iterator[Client]:
    """An in-memory chDB engine, used only to parse statements with formatQuery()."""
    client = clickhouse_connect.get_client(interface="chdb")
    yield client
    client.close()


def table_bodies(statements: list[str]) -> dict[str, str]:
    """Return table -> CREATE statement without its header and ENGINE lines."""
    bodies: dict[str, str] = {}
    for statement in statements:
        match = _TABLE_HEADER_RE.match(statement)
        if match is None or "ENGINE = Distributed" in statement:
            continue
        lines = statement.splitlines()[1:]
        bodies[match.group(1)] = "\n".join(line for line in lines if not line.startswith("ENGINE = "))
    return bodies


def migration_statements() -> list[str]:
    values = {"database": "tokensentry", **Retention().placeholders()}
    statements: list[str] = []
    for migration in load_migrations():
        statements += split_statements(render(migration.text, values, migration.path))
    return statements


def test_deploy_sql_files_exist() -> None:
    assert {path.name for path in SQL_FILES} == {"cluster.sql", "users.sql"}


@pytest.mark.parametrize("path", SQL_FILES, ids=lambda path: path.name)
def test_deploy_sql_parses(engine: Client, path: Path) -> None:
    for statement in split_statements(path.read_text()):
        engine.query("SELECT formatQuery({statement:String})", parameters={"statement": statement})


_MODIFY_TTL_RE = re.compile(r"^ALTER TABLE tokensentry\.(\w+) MODIFY (TTL .+)$")


def apply_ttl_changes(bodies: dict[str, str], statements: list[str]) -> dict[str, str]:
    """Replace each table's TTL line as later ``ALTER ... MODIFY TTL`` migrations do."""
    for statement in statements:
        match = _MODIFY_TTL_RE.match(statement.strip())
        if match is None:
            continue
        table, ttl = match.groups()
        bodies[table] = re.sub(r"^TTL .+?(;?)$", lambda m: ttl + m.group(1), bodies[table], flags=re.MULTILINE)
    return bodies


def test_cluster_tables_match_migrations() -> None:
    cluster = table_bodies(split_statements((DEPLOY_DIR / "cluster.sql").read_text()))
    statements = migration_statements()
    single_node = apply_ttl_changes(table_bodies(statements), statements)

    assert set(cluster) == set(single_node)
    for table, body in single_node.items():
        assert cluster[table] == body, table


def test_cluster_tables_are_replicated() -> None:
    text = (DEPLOY_DIR / "cluster.sql").read_text()
    engines = re.findall(r"ENGINE = (\w+)", text)

    assert set(engines) == {"ReplicatedReplacingMergeTree", "ReplicatedSummingMergeTree", "Distributed"}
    assert engines.count("Distributed") == len(table_bodies(migration_statements()))
