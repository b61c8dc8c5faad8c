"""Versioned schema migrations and table retention for the audit store.

Migrations are plain SQL files ``schemas/migrations/NNN_name.sql``, applied in
version order and recorded in ``<database>.schema_migrations`` with a SHA-256
checksum of the file. A file may hold several statements: each ends with
``;`` at the end of a line, and lines starting with ``--`` are comments.
``{database}`` and ``{<table>_ttl_days}`` placeholders are rendered from the
store's database and ``Retention``. The checksum covers the file before
rendering, so a retention change is not a changed migration.

Several workers may start at once against one server. Every statement must
therefore be idempotent (``IF NOT EXISTS``): two workers that both see a
version as missing both run it, which is harmless, and both record it in the
ReplacingMergeTree ``schema_migrations``, which collapses the copies.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

import schemas
from pipeline.sinks.store_errors import StoreError

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(schemas.__file__).parent / "migrations"
MIGRATIONS_TABLE = "schema_migrations"

_FILE_RE = re.compile(r"^(?P<version>\d{3})_(?P<name>[a-z0-9_]+)\.sql$")
# Matches {name} placeholders. ClickHouse query parameters ({name:Type}) have
# a colon and are left alone.
_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_STATEMENT_END_RE = re.compile(r";[ \t]*$", re.MULTILINE)
_TTL_RE = re.compile(r"TTL toDateTime\((?P<column>\w+)\) \+ toIntervalDay\((?P<days>\d+)\)")

_BOOTSTRAP_SQL = (
    "CREATE DATABASE IF NOT EXISTS {database}",
    """CREATE TABLE IF NOT EXISTS {database}.schema_migrations
(
    version UInt32,
    name String,
    checksum String COMMENT 'SHA-256 of the migration file before rendering, hex',
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY version""",
)

# Table -> time column its TTL counts from, after the last migration. The
# migrations write the TTL clauses in the same form:
# toDateTime(<column>) + toIntervalDay(<days>). Insertion time, so replayed
# old logs are kept as long as fresh ones (migration 004).
TTL_COLUMNS: dict[str, str] = {
    "events": "inserted_at",
    "windows": "inserted_at",
    "token_minute": "minute",
    "detections": "inserted_at",
    "actions": "inserted_at",
    "dead_letters": "inserted_at",
    "receipts": "inserted_at",
}


@dataclass(frozen=True)
class Retention:
    """Days each table keeps a row, counted from the column in ``TTL_COLUMNS``.

    Raw events are the bulk of the data and are kept shortest. The audit
    records of what was decided (detections, actions, receipts) are kept a
    year. ``migrate`` renders these into new tables and alters existing ones.
    """

    events: int = 30
    windows: int = 90
    token_minute: int = 90
    detections: int = 365
    actions: int = 365
    dead_letters: int = 365
    receipts: int = 365

    def __post_init__(self) -> None:
        for table, days in asdict(self).items():
            if not isinstance(days, int) or isinstance(days, bool) or days < 1:
                raise ValueError(f"Retention for {table} must be a whole number of days >= 1, got {days!r}")

    def days(self) -> dict[str, int]:
        return asdict(self)

    def placeholders(self) -> dict[str, str]:
        return {f"{table}_ttl_days": str(days) for table, days in self.days().items()}


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    path: Path
    text: str
    checksum: str

    @property
    def label(self) -> str:
        return f"{self.version:03d}_{self.name}"


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Read the migration files in ``directory``, sorted by version.

    Raises:
        StoreError: a ``.sql`` file is not named ``NNN_name.sql`` or two files
            share a version.
    """
    migrations: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if match is None:
            raise StoreError(f"Migration file {path} is not named NNN_name.sql (three digits, lower-case name)")
        version = int(match["version"])
        if version in migrations:
            raise StoreError(f"Migrations {migrations[version].path} and {path} share version {version}")
        data = path.read_bytes()
        migrations[version] = Migration(
            version=version,
            name=match["name"],
            path=path,
            text=data.decode("utf-8"),
            checksum=hashlib.sha256(data).hexdigest(),
        )
    return [migrations[version] for version in sorted(migrations)]


def split_statements(text: str) -> list[str]:
    """Split migration text into statements, dropping ``--`` comment lines."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    chunks = _STATEMENT_END_RE.split("\n".join(lines))
    return [chunk.strip() for chunk in chunks if chunk.strip()]


def render(text: str, values: dict[str, str], source: Path) -> str:
    """Replace ``{name}`` placeholders with ``values``.

    Raises:
        StoreError: ``text`` uses a placeholder that ``values`` lacks. The
            message names the file and the placeholder.
    """
    unknown = sorted({name for name in _PLACEHOLDER_RE.findall(text) if name not in values})
    if unknown:
        raise StoreError(
            f"Migration {source} uses unknown placeholders {unknown}. Known placeholders: {sorted(values)}"
        )
    return _PLACEHOLDER_RE.sub(lambda match: values[match.group(1)], text)


def applied_migrations(client: Client, database: str) -> dict[int, tuple[str, str]]:
    """Return version -> (name, checksum) of the migrations recorded in ``database``."""
    result = client.query(
        f"SELECT version, argMax(name, applied_at), argMax(checksum, applied_at) "
        f"FROM {database}.{MIGRATIONS_TABLE} GROUP BY version ORDER BY version"
    )
    return {int(version): (name, checksum) for version, name, checksum in result.result_rows}


def migrate(
    client: Client,
    database: str,
    retention: Retention,
    *,
    directory: Path = MIGRATIONS_DIR,
    up_to: int | None = None,
) -> list[int]:
    """Apply the migrations not yet recorded, then bring table TTLs in line with ``retention``.

    ``up_to`` stops after that version (used to build older schemas in tests
    and to stage upgrades). Returns the versions applied by this call.

    Raises:
        StoreError: an applied migration's file changed since (the message
            names the file), or a statement failed (the message names the
            file and the statement).
    """
    for statement in _BOOTSTRAP_SQL:
        client.command(statement.format(database=database))

    migrations = load_migrations(directory)
    recorded = applied_migrations(client, database)
    _check_recorded(migrations, recorded, database)

    values = {"database": database, **retention.placeholders()}
    applied: list[int] = []
    for migration in migrations:
        if migration.version in recorded or (up_to is not None and migration.version > up_to):
            continue
        _apply(client, database, migration, values)
        applied.append(migration.version)

    apply_retention(client, database, retention)
    return applied


def _check_recorded(migrations: list[Migration], recorded: dict[int, tuple[str, str]], database: str) -> None:
    known = {migration.version: migration for migration in migrations}
    for migration in migrations:
        if migration.version not in recorded:
            continue
        _, checksum = recorded[migration.version]
        if checksum != migration.checksum:
            raise StoreError(
                f"Migration {migration.path} changed after it was applied to database {database} "
                f"(recorded checksum {checksum[:12]}, file checksum {migration.checksum[:12]}). "
                "Restore the file and put the change in a new migration."
            )
    newer = sorted(version for version in recorded if version not in known)
    if newer:
        # A newer release migrated this database. Older workers can keep
        # writing as long as the newer migrations only added to the schema.
        logger.warning(
            "Database %s has migrations %s that this release does not know, continuing with the newer schema",
            database,
            newer,
        )


def _apply(client: Client, database: str, migration: Migration, values: dict[str, str]) -> None:
    statements = split_statements(render(migration.text, values, migration.path))
    logger.info("Applying migration %s to database %s (%d statements)", migration.label, database, len(statements))
    for index, statement in enumerate(statements, start=1):
        try:
            client.command(statement)
        except ClickHouseError as error:
            # The migration is now half applied. Running it again is safe
            # because every statement is idempotent.
            first_line = statement.splitlines()[0]
            raise StoreError(
                f"Migration {migration.path} failed at statement {index} ({first_line!r}): {error}"
            ) from error
    client.insert(
        MIGRATIONS_TABLE,
        [[migration.version, migration.name, migration.checksum]],
        column_names=["version", "name", "checksum"],
        database=database,
    )
    logger.info("Applied migration %s to database %s", migration.label, database)


def apply_retention(client: Client, database: str, retention: Retention) -> list[str]:
    """Alter the TTL of every existing table whose retention differs from ``retention``.

    Tables that a partial migration has not created yet are skipped. Returns
    the names of the altered tables. ClickHouse rewrites the TTL metadata of
    existing parts when the TTL changes (``materialize_ttl_after_modify``),
    which reads the TTL column of the whole table once.
    """
    current = current_ttl_days(client, database)
    altered: list[str] = []
    for table, days in retention.days().items():
        if table not in current or current[table] == days:
            continue
        column = TTL_COLUMNS[table]
        client.command(f"ALTER TABLE {database}.{table} MODIFY TTL toDateTime({column}) + toIntervalDay({days})")
        logger.info("Changed TTL of %s.%s from %s to %d days", database, table, current[table], days)
        altered.append(table)
    return altered


def current_ttl_days(client: Client, database: str) -> dict[str, int | None]:
    """Return table -> TTL in days for the retention-managed tables that exist in ``database``.

    The value is None for a table whose TTL is missing or not in the
    ``toDateTime(<column>) + toIntervalDay(<days>)`` form.
    """
    # Only MergeTree tables have a TTL. On a cluster the names in TTL_COLUMNS
    # are Distributed tables, which are left alone.
    result = client.query(
        "SELECT name, engine_full FROM system.tables WHERE database = {database:String} AND engine LIKE '%MergeTree'",
        parameters={"database": database},
    )
    days: dict[str, int | None] = {}
    for name, engine_full in result.result_rows:
        if name not in TTL_COLUMNS:
            continue
        match = _TTL_RE.search(engine_full)
        days[name] = int(match["days"]) if match and match["column"] == TTL_COLUMNS[name] else None
    return days
