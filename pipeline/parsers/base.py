"""The contract every log-format parser implements.

A parser turns a chunk of raw lines into rows in ``RAW_FIELDS`` order plus
dead letters: row tuples line by line, or arrays per field for a whole chunk
(``ColumnBlock``). Rows still hold raw credentials (``credential`` and the
query string inside ``target``): only the identity stage may read them, and
it replaces them with keyed hashes before anything is stored or logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

# Field order of a parsed row. Strings are "" when the log lacks the field;
# numbers use the same sentinels as the event batch (NaN latency, -1 bytes,
# 0 ASN, 0 status when the log has none: a `-` status, a JSON log without
# one, or Envoy's 0 for "no response sent").
RAW_FIELDS: tuple[str, ...] = (
    "ts",  # float, event time in seconds since the Unix epoch, UTC
    "client_ip",  # str
    "method",  # str, upper case as logged
    "host",  # str, Host header or virtual host when logged
    "target",  # str, request target as logged: path plus query string (may hold a credential)
    "route",  # str, gateway route or service name when logged
    "status",  # int
    "latency_ms",  # float, NaN when unknown
    "bytes_in",  # int, -1 when unknown
    "bytes_out",  # int, -1 when unknown
    "user_agent",  # str
    "referer",  # str
    "origin",  # str, Origin header when logged
    "country",  # str, ISO 3166-1 alpha-2 when the gateway adds it
    "asn",  # int, 0 when unknown
    "request_id",  # str
    "key_id",  # str, credential or key id the gateway logged (not secret)
    "account",  # str, consumer, user or account id the gateway logged
    "credential",  # str, RAW secret: Authorization or X-API-Key header value when logged
    "device_id",  # str, device-id header or TLS fingerprint (JA3/JA4) when logged
)
FIELD_INDEX: dict[str, int] = {name: i for i, name in enumerate(RAW_FIELDS)}

# Event times the pipeline accepts, in seconds since the Unix epoch: 1970-01-01
# to 2106-02-07 UTC, because window and detector state keep times as uint32.
MIN_EVENT_TIME = 0.0
MAX_EVENT_TIME = float(2**32)


def event_time_error(ts: float) -> str:
    """Return the dead-letter reason for an event time outside the accepted range."""
    return (
        f"event time {ts!r} s is outside 1970-01-01 to 2106-02-07 UTC, the range of times "
        "the pipeline keeps; check the timestamp's unit and year"
    )


# Array dtype of each field in columnar form; every other field is a string (object).
NUMERIC_FIELD_DTYPES: dict[str, np.dtype] = {
    "ts": np.dtype(np.float64),
    "status": np.dtype(np.int64),
    "latency_ms": np.dtype(np.float64),
    "bytes_in": np.dtype(np.int64),
    "bytes_out": np.dtype(np.int64),
    "asn": np.dtype(np.int64),
}


def field_array(name: str, values) -> np.ndarray:
    """Return one field's values (a sequence in ``RAW_FIELDS`` conventions) as an array of its columnar dtype."""
    dtype = NUMERIC_FIELD_DTYPES.get(name)
    if dtype is not None:
        return np.fromiter(values, dtype=dtype, count=len(values))
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def missing_field_column(name: str, n: int) -> np.ndarray:
    """Return ``n`` rows of a field the log does not have, with the missing-value sentinel of ``RAW_FIELDS``."""
    dtype = NUMERIC_FIELD_DTYPES.get(name)
    if dtype is None:
        return np.full(n, "", dtype=object)
    if name == "latency_ms":
        return np.full(n, float("nan"), dtype=dtype)
    if name in ("bytes_in", "bytes_out"):
        return np.full(n, -1, dtype=dtype)
    return np.zeros(n, dtype=dtype)


@dataclass(slots=True)
class ColumnBlock:
    """Rows that a columnar parser parsed a whole chunk at a time.

    ``columns`` maps every ``RAW_FIELDS`` name to an array of the same
    length, with the dtypes of ``NUMERIC_FIELD_DTYPES`` and object arrays of
    str for the rest.
    """

    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.columns["ts"])


@dataclass(slots=True)
class ParsedChunk:
    """The output of a parser for one chunk of lines.

    Rows are parsed either a chunk at a time into ``block`` or line by line
    into ``line_rows``. The block's rows come first: ``positions[i]`` and
    ``formats[i]`` belong to row ``i`` in that order. ``LineParser`` keeps
    rows in line order, so it leaves rows in only one of the two. Invariant: the row
    count plus ``len(dead)`` equals the number of lines given, so counts add up.
    """

    line_rows: list[tuple] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    formats: list[str] = field(default_factory=list)
    # (position, raw line as text, reason, format tried or "")
    dead: list[tuple[int, str, str, str]] = field(default_factory=list)
    block: ColumnBlock | None = None

    def __len__(self) -> int:
        """Return the number of rows (block and line rows), dead letters not counted."""
        return (len(self.block) if self.block is not None else 0) + len(self.line_rows)

    @property
    def rows(self) -> list[tuple]:
        """Every row as a tuple in ``RAW_FIELDS`` order, block rows first (built on each access)."""
        if self.block is None:
            return self.line_rows
        block_rows = list(zip(*(self.block.columns[name].tolist() for name in RAW_FIELDS), strict=True))
        return block_rows + self.line_rows

    @rows.setter
    def rows(self, rows: list[tuple]) -> None:
        self.line_rows = rows
        self.block = None

    def columns(self) -> dict[str, np.ndarray]:
        """Return every row as one array per ``RAW_FIELDS`` name (dtypes as in ``ColumnBlock``)."""
        line_columns: dict[str, np.ndarray] | None = None
        if self.line_rows:
            transposed = list(zip(*self.line_rows, strict=True))
            line_columns = {name: field_array(name, transposed[i]) for i, name in enumerate(RAW_FIELDS)}
        if self.block is None:
            return line_columns if line_columns is not None else {name: field_array(name, ()) for name in RAW_FIELDS}
        if line_columns is None:
            return self.block.columns
        return {name: np.concatenate((self.block.columns[name], line_columns[name])) for name in RAW_FIELDS}


class Parser(Protocol):
    """One log format. ``format_id`` is stable: it is stored with every event."""

    format_id: str

    def matches(self, line: str) -> bool:
        """Return True when ``line`` may be this format: a cheap pre-filter; detection confirms with ``parse_line``."""
        ...

    def parse_line(self, line: str) -> tuple:
        """Parse one line into a row in ``RAW_FIELDS`` order.

        Raises:
            FormatMismatch: the line is not this format at all, so the driver
                tries the other formats (a ``ValueError`` subclass in
                ``pipeline.parsers.errors``).
            ValueError: the line is this format with a bad value; the message
                is the dead-letter reason and names what is wrong.
        """
        ...
