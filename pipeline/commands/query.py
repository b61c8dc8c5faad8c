"""``tokensentry query``: run a read-only SQL query on the audit store."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence

from pipeline.commands.common import add_settings_arguments, settings_from_args
from pipeline.sinks.clickhouse import AuditStore

_MAX_CELL = 60


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "query",
        help="run a read-only SQL query on the audit store",
        description="Run one read-only SQL statement on the audit store and print the result.",
    )
    parser.add_argument("sql", metavar="SQL", help="the statement, e.g. \"SELECT kind, count() FROM actions GROUP BY kind\"")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format (default: table)")
    add_settings_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    store = AuditStore.open(settings.store_dsn())
    try:
        columns, rows = store.query(args.sql)
    finally:
        store.close()
    write_result(columns, rows, args.format, sys.stdout)
    return 0


def write_result(columns: Sequence[str], rows: Sequence[Sequence], output_format: str, out) -> None:
    """Print a result set as an aligned table, CSV with a header, or a JSON array of objects."""
    if output_format == "csv":
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows(rows)
    elif output_format == "json":
        records = [dict(zip(columns, row, strict=True)) for row in rows]
        out.write(json.dumps(records, default=str, indent=1) + "\n")
    else:
        _write_table(columns, rows, out)


def _write_table(columns: Sequence[str], rows: Sequence[Sequence], out) -> None:
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [len(name) for name in columns]
    for row in cells:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    out.write("  ".join(name.ljust(width) for name, width in zip(columns, widths, strict=True)).rstrip() + "\n")
    out.write("  ".join("-" * width for width in widths) + "\n")
    for row in cells:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n")
    out.write(f"({len(rows)} rows)\n")


def _cell(value) -> str:
    text = str(value)
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 1] + "…"
