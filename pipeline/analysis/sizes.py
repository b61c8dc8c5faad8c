"""Stored bytes per audit table, per event and per detection: ``tokensentry store size``.

Sizes come from ClickHouse's own accounting of the active data parts:
``system.parts`` for rows and bytes per table, ``system.columns`` for the
split by column. ``compressed`` counts the column data as written to disk
after the column codecs (LZ4 by default, ZSTD where a column declares it),
``uncompressed`` the same data before compression, and ``on_disk`` adds
marks, primary index and metadata files.

Rows are counted as stored: redelivered copies that no merge has collapsed
yet count twice, and a table that has just been filled holds many small
parts that compress worse than merged ones. ``AuditStore.optimize`` (the
``--optimize`` option) merges them first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pipeline.sinks.clickhouse import AuditStore


@dataclass(slots=True)
class TableSize:
    """Rows and bytes of one table's active parts."""

    table: str
    engine: str
    rows: int
    parts: int
    compressed_bytes: int
    uncompressed_bytes: int
    on_disk_bytes: int

    @property
    def compressed_per_row(self) -> float | None:
        return self.compressed_bytes / self.rows if self.rows else None

    @property
    def compression_ratio(self) -> float | None:
        return self.uncompressed_bytes / self.compressed_bytes if self.compressed_bytes else None


@dataclass(slots=True)
class ColumnSize:
    """Bytes of one column over a table's active parts."""

    column: str
    type: str
    compressed_bytes: int
    uncompressed_bytes: int


@dataclass(slots=True)
class StoreSize:
    """Sizes of every MergeTree table of the store's database, with per-event figures."""

    database: str
    tables: list[TableSize]

    def table(self, name: str) -> TableSize | None:
        return next((size for size in self.tables if size.table == name), None)

    @property
    def compressed_bytes(self) -> int:
        return sum(size.compressed_bytes for size in self.tables)

    @property
    def uncompressed_bytes(self) -> int:
        return sum(size.uncompressed_bytes for size in self.tables)

    @property
    def on_disk_bytes(self) -> int:
        return sum(size.on_disk_bytes for size in self.tables)

    def per_event(self) -> dict[str, float | None]:
        """Return compressed bytes per stored event: of the events table alone, and of every table.

        The second figure charges the windows, rollup, detections and
        actions that the events produced to each event, which is what one
        more event costs the store as a whole.
        """
        events = self.table("events")
        rows = events.rows if events else 0
        if not rows:
            return {"events_table": None, "all_tables": None}
        return {"events_table": events.compressed_bytes / rows, "all_tables": self.compressed_bytes / rows}

    def per_detection(self) -> float | None:
        detections = self.table("detections")
        return detections.compressed_per_row if detections else None

    def to_json(self) -> dict:
        return {
            "database": self.database,
            "tables": [
                {
                    **asdict(size),
                    "compressed_per_row": size.compressed_per_row,
                    "compression_ratio": size.compression_ratio,
                }
                for size in self.tables
            ],
            "total": {
                "compressed_bytes": self.compressed_bytes,
                "uncompressed_bytes": self.uncompressed_bytes,
                "on_disk_bytes": self.on_disk_bytes,
            },
            "compressed_bytes_per_event": self.per_event(),
            "compressed_bytes_per_detection": self.per_detection(),
        }


_TABLES_SQL = """
SELECT name, engine FROM system.tables
WHERE database = {database:String} AND engine LIKE '%MergeTree'
ORDER BY name
"""

_PARTS_SQL = """
SELECT table, sum(rows), count(), sum(data_compressed_bytes), sum(data_uncompressed_bytes), sum(bytes_on_disk)
FROM system.parts
WHERE database = {database:String} AND active
GROUP BY table
"""

_COLUMNS_SQL = """
SELECT name, type, data_compressed_bytes, data_uncompressed_bytes
FROM system.columns
WHERE database = {database:String} AND table = {table:String}
ORDER BY data_compressed_bytes DESC, name
"""


def measure_store(store: AuditStore) -> StoreSize:
    """Return rows and bytes of every MergeTree table in the store's database (empty tables included)."""
    parameters = {"database": store.database}
    _, table_rows = store.query(_TABLES_SQL, parameters=parameters)
    _, part_rows = store.query(_PARTS_SQL, parameters=parameters)
    parts = {row[0]: row[1:] for row in part_rows}
    tables = []
    for name, engine in table_rows:
        rows, count, compressed, uncompressed, on_disk = parts.get(name, (0, 0, 0, 0, 0))
        tables.append(
            TableSize(
                table=name,
                engine=engine,
                rows=int(rows),
                parts=int(count),
                compressed_bytes=int(compressed),
                uncompressed_bytes=int(uncompressed),
                on_disk_bytes=int(on_disk),
            )
        )
    return StoreSize(database=store.database, tables=tables)


def measure_columns(store: AuditStore, table: str) -> list[ColumnSize]:
    """Return the bytes of each column of ``table``, largest first."""
    _, rows = store.query(_COLUMNS_SQL, parameters={"database": store.database, "table": table})
    return [ColumnSize(name, type_name, int(compressed), int(uncompressed)) for name, type_name, compressed, uncompressed in rows]


def format_bytes(count: float | None) -> str:
    """Format a byte count with binary units: ``812 B``, ``3.4 KiB``, ``1.2 GiB``."""
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable: the loop returns at TiB")
