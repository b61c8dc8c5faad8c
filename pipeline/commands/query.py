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
    # A query never creates the store, so a mistyped --data-dir fails instead of leaving an empty store.
    store = AuditStore.open(settings.store_dsn(), create=False)
    try:
        columns, rows = store.query(args.sql)
    finally:
        store.close()
    write_result(columns, rows, args.format, sys.stdout)
    return 0


def write_result(columns: Sequence[str], rows: Sequence[Sequence], output_format: str, out) -> None:
    """Print a result set as an aligned table, CSV with a header, or a JSON array of objects."""
    if output_format == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
    elif output_format == "json":
        records = [dict(zip(_padded_names(columns, len(row)), row, strict=False)) for row in rows]
        out.write(json.dumps(records, default=str, indent=1) + "\n")
    else:
        _write_table(columns, rows, out)


def _write_table(columns: Sequence[str], rows: Sequence[Sequence], out) -> None:
    # A row may have more or fewer cells than there are column names (e.g. a
    # statement with no result columns), so each row and the header are
    # padded to the widest of them instead of zipped strictly.
    cells = [[_cell(value) for value in row] for row in rows]
    header = [str(name) for name in columns]
    width_count = max([len(header), *(len(row) for row in cells)])
    widths = [0] * width_count
    for row in [header, *cells]:
        for position, cell in enumerate(row):
            widths[position] = max(widths[position], len(cell))
    _write_line(header, widths, out)
    out.write("  ".join("-" * width for width in widths) + "\n")
    for row in cells:
        _write_line(row, widths, out)
    out.write(f"({len(rows)} rows)\n")


def _padded_names(columns: Sequence[str], count: int) -> list[str]:
    """Return ``columns`` extended with ``column_N`` names up to ``count`` names."""
    return [*columns, *(f"column_{position + 1}" for position in range(len(columns), count))]


def _write_line(cells: Sequence[str], widths: Sequence[int], out) -> None:
    out.write("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=False)).rstrip() + "\n")


def _cell(value) -> str:
    text = str(value)
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 1] + "…"
