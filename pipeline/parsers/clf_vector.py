"""Vectorized parsing of NGINX / Apache combined lines with numpy, with no Python work per line.

The chunk is one byte buffer with a newline after every line, and numpy
finds every newline, quote and space in it. The expected layout of a
combined line (and of its extra fields, see ``extras.Layout``) then fixes
where each field starts and ends. Checks at each delimiter confirm that
the line has that layout. Field bytes are gathered into Arrow string arrays, numbers and
times are converted with array arithmetic, and other conversions run once
per distinct value.

A line is taken only when its bytes fit the layout exactly: single spaces
between fields, a 26-character ``dd/Mon/yyyy:HH:MM:SS +zzzz`` time, an
``HTTP/`` request line, no backslash anywhere, printable ASCII in unquoted
extra values and nothing after the last field. Under these conditions the
regex of ``clf_columns`` matches the line with the same groups, so the row
is the same. Every other line is left to that parser, and a test compares
the rows of all three parsers.

>>> from pipeline.parsers.extras import build_layout
>>> line = b'203.0.113.9 - - [02/Nov/2026:10:00:00 +0000] "GET /v1/x HTTP/1.1" 200 12 "-" "curl/8" rt=0.004\\n'
>>> columns, taken = parse_vector(line + b"bad line\\n", 2, build_layout(" rt=0.004"))
>>> taken.tolist(), float(columns["latency_ms"][0]), columns["target"][0], float(columns["ts"][0])
([0], 4.0, '/v1/x', 1793613600.0)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.parsers.base import MAX_EVENT_TIME, MIN_EVENT_TIME, RAW_FIELDS, missing_field_column
from pipeline.parsers.column_values import convert_distinct, dash_to_empty
from pipeline.parsers.extras import Layout, unescape_quotes
from pipeline.parsers.fields import MAX_COUNT_DIGITS
from pipeline.parsers.timestamps import MONTHS

NEWLINE, SPACE, QUOTE, BACKSLASH = 10, 32, 34, 92
# Zero bytes after the last newline, so fixed-offset reads near the end stay in the buffer.
_PADDING = bytes(64)
_WORD = 8  # bytes read at once by _Lines.words_at
_TIME_WIDTH = 26  # dd/Mon/yyyy:HH:MM:SS +zzzz
_TIME_DIGITS = np.array([0, 1, 7, 8, 9, 10, 12, 13, 15, 16, 18, 19, 22, 23, 24, 25])
_TIME_LITERALS = {2: b"/", 6: b"/", 11: b":", 14: b":", 17: b":", 20: b" "}
_MONTH_KEYS = np.array(sorted((ord(a) << 16) | (ord(b) << 8) | ord(c) for a, b, c in MONTHS), dtype=np.int64)
_MONTH_NUMBERS = np.array(
    [MONTHS[chr(key >> 16) + chr((key >> 8) & 0xFF) + chr(key & 0xFF)] for key in _MONTH_KEYS.tolist()], dtype=np.int64
)
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)


def parse_vector(blob: bytes, n: int, layout: Layout | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Parse the lines of ``blob`` that fit the combined layout exactly.

    ``blob`` contains ``n`` lines, each followed by a newline, and must be valid
    UTF-8. ``layout`` gives the extra fields after the user agent; None means
    lines end after it. Returns the columns (``RAW_FIELDS`` names,
    ``ColumnBlock`` dtypes) of the lines taken and their indexes, ascending.
    """
    padded = blob + _PADDING
    buf = np.frombuffer(padded, dtype=np.uint8)
    ends = np.flatnonzero(buf == NEWLINE)
    if len(ends) != n:
        raise ValueError(f"expected {n} newline-terminated lines, found {len(ends)} newlines")
    spaces = np.flatnonzero(buf == SPACE)
    if n == 0 or len(spaces) == 0:
        # Every combined line has spaces, so no line of this chunk fits.
        no_rows = np.empty(0, dtype=np.int64)
        empty = _Lines(buf, spaces, no_rows, no_rows, np.empty((0, 6), dtype=np.int64), padded)
        return empty.parse(()), np.empty(0, dtype=np.int64)
    starts = np.empty(n, dtype=np.int64)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    quotes = np.flatnonzero(buf == QUOTE)
    backslashes = np.flatnonzero(buf == BACKSLASH)
    items = layout.items if layout is not None else ()
    quote_count = 6 + 2 * sum(1 for _, quoted in items if quoted)

    first_quote = np.searchsorted(quotes, starts)
    fits = np.searchsorted(quotes, ends) - first_quote == quote_count
    fits &= np.searchsorted(backslashes, starts) == np.searchsorted(backslashes, ends)
    rows = np.flatnonzero(fits)
    q = quotes[first_quote[rows][:, None] + np.arange(quote_count)]
    lines = _Lines(buf, spaces, starts[rows], ends[rows], q, padded)
    columns = lines.parse(items)
    if layout is not None:
        lines.fill_extras(layout, columns)
    good = lines.good
    return {name: column[good] for name, column in columns.items()}, rows[good]


class _Lines:
    """The candidate lines of one chunk: their bounds, quote positions and a mask of lines that still fit."""

    def __init__(
        self, buf: np.ndarray, spaces: np.ndarray, starts: np.ndarray, ends: np.ndarray, quotes: np.ndarray, padded: bytes
    ):
        self.buf = buf
        # Every byte offset as the start of a little-endian 8-byte word (an unaligned, overlapping view).
        # One gather from it reads 8 bytes per line, where a gather from buf reads one.
        self.words = np.ndarray(shape=(len(padded) - _WORD + 1,), dtype="<u8", buffer=padded, strides=(1,))
        self.spaces = spaces
        self.starts = starts
        self.ends = ends
        self.quotes = quotes
        self.good = np.ones(len(starts), dtype=np.bool_)
        self.extras: list[tuple[np.ndarray, np.ndarray]] = []

    def byte_at(self, positions: np.ndarray) -> np.ndarray:
        return self.buf[np.clip(positions, 0, len(self.buf) - 1)]

    def words_at(self, positions: np.ndarray) -> np.ndarray:
        """Return the 8 bytes at each position as a little-endian uint64 (zero bytes past the end)."""
        return self.words[np.clip(positions, 0, len(self.words) - 1)]

    def literal_at(self, positions: np.ndarray, literal: bytes) -> np.ndarray:
        """Return a mask of the ``positions`` where ``literal`` starts."""
        found = np.ones(len(positions), dtype=np.bool_)
        for offset in range(0, len(literal), _WORD):
            piece = literal[offset : offset + _WORD]
            mask = np.uint64((1 << (8 * len(piece))) - 1)
            found &= (self.words_at(positions + offset) & mask) == np.uint64(int.from_bytes(piece, "little"))
        return found

    def spaces_between(self, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the number of spaces in ``[low, high)`` and the index of the first in ``spaces``."""
        first = np.searchsorted(self.spaces, low)
        return np.searchsorted(self.spaces, high) - first, first

    def space(self, index: np.ndarray) -> np.ndarray:
        return self.spaces[np.clip(index, 0, len(self.spaces) - 1)]

    def parse(self, items: tuple[tuple[str, bool], ...]) -> dict[str, np.ndarray]:
        """Check the combined fields of every line and return their columns (extras not filled yet)."""
        q, starts = self.quotes, self.starts
        request_open = q[:, 0]
        time_start = request_open - 28
        # client ident user [time] "request"
        self.good &= (self.byte_at(request_open - 1) == SPACE) & (self.byte_at(request_open - 2) == ord("]"))
        self.good &= (self.byte_at(time_start - 1) == ord("[")) & (self.byte_at(time_start - 2) == SPACE)
        prefix_end = time_start - 2
        count, first = self.spaces_between(starts, prefix_end)
        self.good &= count == 2
        client_end, user_start = self.space(first), self.space(first + 1) + 1
        self.good &= (client_end > starts) & (user_start - 1 > client_end + 1) & (prefix_end > user_start)
        ts = self.times(time_start)

        # "METHOD TARGET HTTP/x"
        count, first = self.spaces_between(request_open, q[:, 1])
        self.good &= count == 2
        method_end, target_end = self.space(first), self.space(first + 1)
        self.good &= self.literal_at(target_end + 1, b"HTTP/")

        # " status bytes "
        count, first = self.spaces_between(q[:, 1], q[:, 2])
        self.good &= (count == 3) & (self.byte_at(q[:, 1] + 1) == SPACE) & (self.byte_at(q[:, 2] - 1) == SPACE)
        status_start, bytes_start = q[:, 1] + 2, self.space(first + 1) + 1
        status = self.status(status_start, bytes_start - 1)
        bytes_out = self.counts(bytes_start, q[:, 2] - 1)

        # "referer" "agent"
        self.good &= (q[:, 4] == q[:, 3] + 2) & (self.byte_at(q[:, 3] + 1) == SPACE)
        if not items:
            self.good &= self.ends == q[:, 5] + 1
        else:
            self.extras = self.extra_values(items)

        n = len(starts)
        columns = {name: missing_field_column(name, n) for name in RAW_FIELDS}
        columns["ts"] = ts
        columns["client_ip"] = self.strings(starts, client_end)
        columns["account"] = dash_to_empty(self.strings(user_start, prefix_end))
        columns["method"] = self.strings(request_open + 1, method_end)
        columns["target"] = self.strings(method_end + 1, target_end)
        columns["status"] = status
        columns["bytes_out"] = bytes_out
        columns["referer"] = dash_to_empty(self.strings(q[:, 2] + 1, q[:, 3]))
        columns["user_agent"] = dash_to_empty(self.strings(q[:, 4] + 1, q[:, 5]))
        return columns

    def extra_values(self, items: tuple[tuple[str, bool], ...]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Check the extra fields (`` name=value`` or `` name="value"``) and return each value's bounds."""
        q = self.quotes
        position = q[:, 5] + 1
        next_quote = 6
        bounds: list[tuple[np.ndarray, np.ndarray]] = []
        for name, quoted in items:
            prefix = f" {name}=".encode()
            self.good &= self.literal_at(position, prefix)
            position = position + len(prefix)
            if quoted:
                self.good &= q[:, next_quote] == position
                bounds.append((position + 1, q[:, next_quote + 1]))
                position = q[:, next_quote + 1] + 1
                next_quote += 2
            else:
                _, first = self.spaces_between(position, self.ends)
                end = np.minimum(self.space(first), self.ends)
                end = np.where(first < len(self.spaces), end, self.ends)
                # A \S* group stops at any whitespace, not only at a space.
                self.check_printable_range(position, end)
                bounds.append((position, end))
                position = end
        self.good &= position == self.ends
        return bounds

    def fill_extras(self, layout: Layout, columns: dict[str, np.ndarray]) -> None:
        """Convert the known extra fields into their columns, as ``extras.apply_extra_fields`` does."""
        for index, slot, convert in layout.fills:
            start, end = self.extras[index]
            name = RAW_FIELDS[slot]
            if convert is unescape_quotes:
                # No line here contains a backslash, so the text needs no unescaping.
                values = self.strings(start, end)
                present = (values != "") & (values != "-")
                columns[name][present] = values[present]
                continue
            self.fill_converted(self.arrow_strings(start, end), convert, columns[name])

    def fill_converted(self, values: pa.StringArray, convert: Callable[[str], Any], column: np.ndarray) -> None:
        """Set ``column`` to ``convert(value)`` where the value is neither "" nor "-", once per distinct value.

        Lines whose value makes ``convert`` raise ValueError stop fitting.
        """
        encoded = values.dictionary_encode()
        codes = encoded.indices.to_numpy()
        uniques = encoded.dictionary.to_numpy(zero_copy_only=False)
        present_uniques = (uniques != "") & (uniques != "-")
        present = present_uniques[codes]
        if not present.any():
            return
        renumbered = np.cumsum(present_uniques) - 1
        converted, failed = convert_distinct(renumbered[codes[present]], uniques[present_uniques], convert, column.dtype)
        column[present] = converted
        if failed is not None:
            self.good[np.flatnonzero(present)[failed]] = False

    def strings(self, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Return the bytes in ``[start, end)`` of each line as an object array of str.

        Rows with equal text share one str object, made once per distinct
        value. Later stages hash and compare these strings many times, and
        a str caches its hash, so shared objects make that cheaper.
        """
        if len(start) == 0:
            return np.empty(0, dtype=object)
        encoded = self.arrow_strings(start, end).dictionary_encode()
        return encoded.dictionary.to_numpy(zero_copy_only=False)[encoded.indices.to_numpy()]

    def arrow_strings(self, start: np.ndarray, end: np.ndarray) -> pa.StringArray:
        """Return the bytes in ``[start, end)`` of each line as an Arrow string array (empty for lines that no longer fit)."""
        self.good &= end >= start
        lengths = np.where(self.good, end - start, 0)
        offsets = np.zeros(len(start) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        positions = np.repeat(start - offsets[:-1], lengths) + np.arange(offsets[-1])
        data = self.buf[positions]
        return pa.StringArray.from_buffers(len(start), pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data))

    def check_printable(self, data: np.ndarray, lengths: np.ndarray) -> None:
        """Mark lines whose field (``lengths`` bytes each, concatenated in ``data``) has a byte outside printable ASCII.

        A ``\\S*`` regex group stops at any whitespace, Unicode spaces
        included, so an unquoted value must be printable ASCII to fit.
        """
        bad = (data < 33) | (data > 126)
        if bad.any():
            owner = np.repeat(np.arange(len(lengths)), lengths)
            self.good[np.unique(owner[bad])] = False

    def check_printable_range(self, start: np.ndarray, end: np.ndarray) -> None:
        lengths = np.where(self.good & (end >= start), end - start, 0)
        offsets = np.zeros(len(start) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        self.check_printable(self.buf[np.repeat(start - offsets[:-1], lengths) + np.arange(offsets[-1])], lengths)

    def digits(self, start: np.ndarray, width: int) -> np.ndarray:
        """Return the number in the ``width`` bytes at ``start``. Lines with a non-digit there stop fitting."""
        raw = self.buf[np.clip(start[:, None] + np.arange(width), 0, len(self.buf) - 1)].astype(np.int64) - ord("0")
        self.good &= ((raw >= 0) & (raw <= 9)).all(axis=1)
        return raw @ (10 ** np.arange(width - 1, -1, -1, dtype=np.int64))

    def status(self, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        dash = (end == start + 1) & (self.byte_at(start) == ord("-"))
        self.good &= dash | (end == start + 3)
        return np.where(dash, 0, self.digits(start, 3))

    def counts(self, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Parse a byte count of digits or "-" (as ``[0-9]+|-``), where "-" gives -1."""
        dash = (end == start + 1) & (self.byte_at(start) == ord("-"))
        width = end - start
        self.good &= dash | ((width >= 1) & (width <= MAX_COUNT_DIGITS))
        value = np.zeros(len(start), dtype=np.int64)
        for offset in range(MAX_COUNT_DIGITS):
            inside = offset < width
            digit = self.byte_at(start + offset).astype(np.int64) - ord("0")
            self.good &= ~inside | dash | ((digit >= 0) & (digit <= 9))
            value = np.where(inside, value * 10 + digit, value)
            if not inside.any():
                break
        return np.where(dash, -1, value)

    def times(self, start: np.ndarray) -> np.ndarray:
        """Convert ``dd/Mon/yyyy:HH:MM:SS +zzzz`` at ``start`` to UTC epoch seconds, with the line parser's range checks.

        Consecutive lines mostly repeat the same second, so each run of equal
        time texts is converted once.
        """
        if len(start) == 0:
            return np.empty(0, dtype=np.float64)
        # The text as 4 words, the last masked to its 2 remaining bytes. Rows are compared word by word.
        words = np.stack([self.words_at(start + offset) for offset in range(0, _TIME_WIDTH, _WORD)], axis=1)
        words[:, -1] &= np.uint64((1 << (8 * (_TIME_WIDTH % _WORD))) - 1)
        changed = np.ones(len(words), dtype=np.bool_)
        changed[1:] = (words[1:] != words[:-1]).any(axis=1)
        run = np.cumsum(changed) - 1
        raw = np.ascontiguousarray(words[changed]).view(np.uint8)[:, :_TIME_WIDTH]
        epoch, valid = _clf_times(raw.astype(np.int64))
        self.good &= valid[run]
        return epoch[run]


def _clf_times(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the epoch seconds of CLF time texts (one row of 26 byte values each) and a mask of valid ones."""
    digits = raw[:, _TIME_DIGITS] - ord("0")
    valid = ((digits >= 0) & (digits <= 9)).all(axis=1)
    for offset, literal in _TIME_LITERALS.items():
        valid &= raw[:, offset] == literal[0]
    sign = raw[:, 21]
    valid &= (sign == ord("+")) | (sign == ord("-"))
    letters = raw[:, 3:6] | 0x20
    valid &= ((letters >= ord("a")) & (letters <= ord("z"))).all(axis=1)
    key = (letters[:, 0] << 16) | (letters[:, 1] << 8) | letters[:, 2]
    slot = np.clip(np.searchsorted(_MONTH_KEYS, key), 0, len(_MONTH_KEYS) - 1)
    valid &= _MONTH_KEYS[slot] == key
    month = _MONTH_NUMBERS[slot]

    day = digits[:, 0] * 10 + digits[:, 1]
    year = digits[:, 2] * 1000 + digits[:, 3] * 100 + digits[:, 4] * 10 + digits[:, 5]
    hour = digits[:, 6] * 10 + digits[:, 7]
    minute = digits[:, 8] * 10 + digits[:, 9]
    second = digits[:, 10] * 10 + digits[:, 11]
    offset = (digits[:, 12] * 10 + digits[:, 13]) * 3600 + (digits[:, 14] * 10 + digits[:, 15]) * 60
    offset = np.where(sign == ord("-"), -offset, offset)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    days_in_month = _DAYS_IN_MONTH[month] + ((month == 2) & leap)
    valid &= (day >= 1) & (day <= days_in_month) & (hour <= 23) & (minute <= 59) & (second <= 60)
    days = _days_from_civil(year, month, day)
    epoch = (days * 86400 + hour * 3600 + minute * 60 + second - offset).astype(np.float64)
    valid &= (epoch >= MIN_EVENT_TIME) & (epoch < MAX_EVENT_TIME)
    return epoch, valid


def _days_from_civil(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Vectorized ``timestamps.days_from_civil``: days since 1970-01-01 for proleptic Gregorian dates."""
    year = year - (month <= 2)
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + np.where(month > 2, -3, 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468
