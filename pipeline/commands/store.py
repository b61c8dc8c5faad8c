"""``tokensentry store``: maintain and measure the audit store.

``store migrate`` applies pending schema migrations, and ``store size``
reports stored bytes per table, per event and per detection.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict

from pipeline.analysis.access import opened_store, require_tables
from pipeline.analysis.sizes import StoreSize, format_bytes, measure_columns, measure_store
from pipeline.commands.common import add_settings_arguments, settings_from_args
from pipeline.commands.query import write_result
from pipeline.errors import ConfigError
from pipeline.sinks.clickhouse import AUDIT_TABLES, AuditStore
from pipeline.sinks.store_migrations import MIGRATIONS_TABLE, Retention, load_migrations

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "store",
        help="migrate the audit store or report its size",
        description="Maintain and measure the audit store.",
    )
    commands = parser.add_subparsers(dest="store_command", required=True, metavar="STORE_COMMAND")

    migrate = commands.add_parser(
        "migrate",
        help="apply pending schema migrations",
        description="Create the audit tables or bring them to the newest schema version, and set the "
        "default retention (TTL) of every table. Applied migrations are skipped, so running it again is safe.",
    )
    migrate.add_argument(
        "--to",
        type=int,
        metavar="VERSION",
        help="apply migrations up to and including this version only, to stage an upgrade",
    )
    migrate.add_argument("--json", action="store_true", help="print the result as one JSON object")
    add_settings_arguments(migrate)
    migrate.set_defaults(func=run_migrate)

    size = commands.add_parser(
        "size",
        help="report stored bytes per table, per event and per detection",
        description="Report rows and stored bytes (compressed and uncompressed) of every table, from "
        "system.parts and system.columns, with compressed bytes per event and per detection. Rows are "
        "counted as stored, before redelivered copies collapse in merges.",
    )
    size.add_argument(
        "--columns",
        metavar="TABLE",
        help="also list the bytes of each column of TABLE (from system.columns)",
    )
    size.add_argument(
        "--optimize",
        action="store_true",
        help="merge the parts of every audit table first (OPTIMIZE TABLE ... FINAL), so figures show merged, "
        "steady-state compression; this rewrites every table, so avoid it on a busy server",
    )
    size.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format (default: table)")
    add_settings_arguments(size)
    size.set_defaults(func=run_size)


# ---- store migrate ---------------------------------------------------------


def run_migrate(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    labels = {migration.version: migration.label for migration in load_migrations()}
    if args.to is not None and args.to not in labels:
        raise ConfigError(f"invalid --to {args.to}: no migration has that version; known versions: {sorted(labels)}")

    with opened_store(settings.store_dsn()) as store:
        applied = store.migrate(up_to=args.to)
        version = _schema_version(store)
        label, database = store.label, store.database

    retention = Retention().days()
    if args.json:
        result = {
            "store": label,
            "database": database,
            "applied": [labels.get(number, str(number)) for number in applied],
            "schema_version": version,
            "retention_days": retention,
        }
        print(json.dumps(result))
        return 0
    if applied:
        for number in applied:
            print(f"applied {labels.get(number, number)}")
    else:
        print("nothing to apply")
    print(f"database {database} on {label} is at schema version {version}")
    print("retention in days: " + ", ".join(f"{table} {days}" for table, days in retention.items()))
    return 0


def _schema_version(store: AuditStore) -> int:
    _, rows = store.query(f"SELECT max(version) FROM {MIGRATIONS_TABLE}")
    return int(rows[0][0]) if rows else 0


# ---- store size ------------------------------------------------------------


def run_size(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    # Measuring never creates the store, so a mistyped --data-dir fails instead of leaving an empty store.
    with AuditStore.open(settings.store_dsn(), create=False) as store:
        tables = require_tables(store, ("events",))
        if args.columns is not None and args.columns not in tables:
            raise ConfigError(f"invalid --columns {args.columns!r}: no such table; tables: {', '.join(sorted(tables))}")
        if args.optimize:
            for table in sorted(AUDIT_TABLES & tables):
                store.optimize(table)
        size = measure_store(store)
        columns = measure_columns(store, args.columns) if args.columns else None

    column_note = None
    if columns is not None and not any(column.compressed_bytes for column in columns):
        column_note = (
            f"{args.columns} has no per-column sizes: its parts are compact (every column in one file, as "
            "for parts below the table's min_bytes_for_wide_part), and ClickHouse measures columns of wide "
            "parts only"
        )
        columns = None

    if args.format == "json":
        result = size.to_json()
        if columns is not None:
            result["columns"] = {"table": args.columns, "columns": [asdict(column) for column in columns]}
        if column_note is not None:
            result["columns"] = {"table": args.columns, "columns": [], "note": column_note}
        print(json.dumps(result, indent=1))
        return 0
    write_result(*_table_rows(size), args.format, sys.stdout)
    if columns is not None:
        print()
        total = sum(column.compressed_bytes for column in columns)
        write_result(
            ("column", "type", "compressed", "uncompressed", "share"),
            [
                (
                    column.column,
                    column.type,
                    format_bytes(column.compressed_bytes),
                    format_bytes(column.uncompressed_bytes),
                    _share(column.compressed_bytes, total),
                )
                for column in columns
            ],
            args.format,
            sys.stdout,
        )
    if column_note is not None:
        print(f"note: {column_note}", file=sys.stderr)
    if args.format == "table":
        print()
        _print_per_record(size)
    return 0


def _table_rows(size: StoreSize) -> tuple[tuple[str, ...], list[tuple]]:
    header = ("table", "rows", "parts", "compressed", "uncompressed", "ratio", "bytes/row", "on disk")
    rows = [
        (
            table.table,
            f"{table.rows:,}",
            table.parts,
            format_bytes(table.compressed_bytes),
            format_bytes(table.uncompressed_bytes),
            f"{table.compression_ratio:.1f}x" if table.compression_ratio else "-",
            f"{table.compressed_per_row:.1f}" if table.compressed_per_row else "-",
            format_bytes(table.on_disk_bytes),
        )
        for table in size.tables
    ]
    rows.append(
        (
            "total",
            "",
            sum(table.parts for table in size.tables),
            format_bytes(size.compressed_bytes),
            format_bytes(size.uncompressed_bytes),
            f"{size.uncompressed_bytes / size.compressed_bytes:.1f}x" if size.compressed_bytes else "-",
            "",
            format_bytes(size.on_disk_bytes),
        )
    )
    return header, rows


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _print_per_record(size: StoreSize) -> None:
    per_event = size.per_event()
    per_detection = size.per_detection()

    def figure(value: float | None) -> str:
        return f"{value:,.1f} bytes" if value is not None else "- (no rows)"

    print(f"compressed per event, events table:  {figure(per_event['events_table'])}")
    print(f"compressed per event, all tables:    {figure(per_event['all_tables'])}")
    print(f"compressed per detection:            {figure(per_detection)}")
