"""Columnar parsing of NGINX / Apache combined lines, one chunk at a time.

The line parser (``clf.CombinedParser``) builds a row tuple per line and
converts every field of every line on its own. This parser matches each
line with one regex that also covers the chunk's extra fields and puts the
groups into one object array. Then it converts each field once per distinct
value in the chunk, because access logs repeat their times, latencies and
credentials on many lines. When the driver passes the chunk's bytes,
the lines that fit the layout exactly go through ``clf_vector`` first,
which needs no Python code per line, and the regex parses only the rest.

It takes only the lines whose row it can build exactly as the line parser
would, and returns the rest as misfits for the driver to parse line by line:

- lines the pattern does not match: another layout of extra fields, a
  vhost prefix, a format switch, an empty line;
- lines with an escaped quote (``\\"``), which need the escape-aware slow path;
- lines with a value that does not convert (a bad time, a non-numeric
  ``rt=``, an event time outside 1970 to 2106), whose dead-letter reason
  the line parser writes.

The tests check that all three parsers give equal rows for the lines taken.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import numpy as np

from pipeline.parsers.base import MAX_EVENT_TIME, MIN_EVENT_TIME, NUMERIC_FIELD_DTYPES, RAW_FIELDS, missing_field_column
from pipeline.parsers.clf import COMBINED_FAST_PATTERN, CombinedParser, split_request_line
from pipeline.parsers.clf_vector import parse_vector
from pipeline.parsers.column_values import convert_each, convert_runs, dash_to_empty
from pipeline.parsers.extras import Layout, apply_extra_fields, build_layout, unescape_quotes
from pipeline.parsers.timestamps import clf_time_to_epoch

logger = logging.getLogger(__name__)

# The groups of COMBINED_FAST_PATTERN, with the request line split as the line
# parser splits it: "METHOD TARGET HTTP/x" fills groups 4 and 5, anything else group 6.
_BASE = (
    r'([^ ]+) [^ ]+ ([^ ]+) \[([^\]]+)\] "(?:([^ "]*) ([^ "]*) HTTP/[^ "]*|([^"]*))" '
    r'([0-9]{3}|-) ([0-9]{1,18}|-) "([^"]*)" "([^"]*)"'
)
CLIENT, USER, TIME, METHOD, TARGET, REQUEST, STATUS, BYTES, REFERER, AGENT = range(10)
TAIL = 10
"""Index of the first group after the user agent."""

# A chunk where more than this share of lines are misfits chooses its
# pattern again from the next chunk's first line, as after a change of layout.
MAX_MISFIT_SHARE = 0.5
# Lines searched for one that shows the chunk's tail layout.
LAYOUT_SAMPLE_LINES = 16

_PLAIN = "plain"
"""Mode for lines that end after the user agent (blank tails only)."""
_LAYOUT = "layout"
"""Mode for extra fields in one compiled layout (``extras.Layout``)."""
_GENERIC = "generic"
"""Mode for extra fields without a layout, applied row by row as the line parser does."""


def _counts(values: np.ndarray, missing: int) -> np.ndarray:
    """Convert a column of digit strings or "-" (which the pattern guarantees) to int64, "-" to ``missing``."""
    dash = values == "-"
    if not dash.any():
        return values.astype(np.int64)
    counts = np.full(len(values), missing, dtype=np.int64)
    counts[~dash] = values[~dash].astype(np.int64)
    return counts



class CombinedColumnParser:
    """Parse chunks of ``nginx_combined`` lines into columns; see the module docstring.

    Keeps the chunk pattern between calls, so use one instance per stream.

    >>> parser = CombinedColumnParser()
    >>> line = '203.0.113.9 - - [02/Nov/2026:10:00:00 +0000] "GET /v1/x HTTP/1.1" 200 12 "-" "curl/8" rt=0.004'
    >>> columns, taken, misfits = parser.parse_block([line, "not a log line"])
    >>> taken, misfits, float(columns["latency_ms"][0]), columns["target"][0]
    ([0], [1], 4.0, '/v1/x')
    """

    format_id = CombinedParser.format_id

    def __init__(self) -> None:
        self._mode: str | None = None
        self._pattern: re.Pattern | None = None
        self._layout: Layout | None = None

    def parse_block(
        self, texts: Sequence[str], escaped: bool | None = None, blob: bytes | None = None
    ) -> tuple[dict[str, np.ndarray], list[int], list[int]]:
        """Parse the lines this parser takes exactly.

        ``texts`` are decoded lines without line endings. ``escaped`` is
        whether any of them contains ``\\"``; None makes this method check.
        ``blob`` is the same lines as valid UTF-8 bytes, each followed by a
        newline. With it, the lines that fit exactly parse vectorized
        (``clf_vector``) and only the rest go through the regex.
        Returns the columns of the rows taken (``RAW_FIELDS`` names,
        ``ColumnBlock`` dtypes), the indexes of the lines taken and the
        indexes of the misfits, both in line order.
        """
        if self._pattern is None:
            self._choose_pattern(texts)
        if blob is None or self._mode == _GENERIC:
            columns, taken, misfits = self._parse_regex(texts, escaped)
        else:
            columns, taken, misfits = self._parse_vector_first(texts, escaped, blob)
        if len(misfits) > MAX_MISFIT_SHARE * len(texts):
            logger.debug(
                "%d of %d lines did not fit the %s pattern, so the next chunk chooses it again",
                len(misfits), len(texts), self._mode,
            )  # fmt: skip
            self._pattern = None
        return columns, taken, misfits

    def _parse_vector_first(
        self, texts: Sequence[str], escaped: bool | None, blob: bytes
    ) -> tuple[dict[str, np.ndarray], list[int], list[int]]:
        vector_columns, vector_taken = parse_vector(blob, len(texts), self._layout)
        if len(vector_taken) == len(texts):
            return vector_columns, vector_taken.tolist(), []
        rest = np.setdiff1d(np.arange(len(texts)), vector_taken, assume_unique=True)
        regex_columns, regex_taken, regex_misfits = self._parse_regex([texts[i] for i in rest.tolist()], escaped)
        taken = np.concatenate((vector_taken, rest[regex_taken]))
        order = np.argsort(taken, kind="stable")
        columns = {
            name: np.concatenate((vector_columns[name], regex_columns[name]))[order] for name in RAW_FIELDS
        }
        return columns, taken[order].tolist(), rest[regex_misfits].tolist()

    def _parse_regex(self, texts: Sequence[str], escaped: bool | None) -> tuple[dict[str, np.ndarray], list[int], list[int]]:
        matches = list(map(self._pattern.fullmatch, texts))
        if escaped is None:
            escaped = any('\\"' in text for text in texts)
        if escaped or None in matches:
            taken = [i for i, match in enumerate(matches) if match is not None and '\\"' not in texts[i]]
        else:
            taken = list(range(len(texts)))
        if taken and len(taken) < len(texts):
            matches = [matches[i] for i in taken]
        if len(taken) == 0:
            columns = {name: np.empty(0, dtype=NUMERIC_FIELD_DTYPES.get(name, object)) for name in RAW_FIELDS}
        else:
            columns, failed_rows = self._convert(np.array(list(map(re.Match.groups, matches)), dtype=object))
            if failed_rows.any():
                kept = ~failed_rows
                columns = {name: column[kept] for name, column in columns.items()}
                taken = [index for index, keep in zip(taken, kept.tolist(), strict=True) if keep]
        return columns, taken, _complement(taken, len(texts))

    def _choose_pattern(self, texts: Sequence[str]) -> None:
        """Pick the mode and pattern from the tail of the first combined line among the first few."""
        tail = ""
        for text in texts[:LAYOUT_SAMPLE_LINES]:
            match = COMBINED_FAST_PATTERN.match(text)
            if match is not None:
                tail = match.group(9)
                break
        self._layout = build_layout(tail) if tail and not tail.isspace() else None
        if not tail or tail.isspace():
            self._mode, tail_pattern = _PLAIN, r"\s*"
        elif self._layout is not None:
            self._mode, tail_pattern = _LAYOUT, self._layout.pattern_text
        else:
            self._mode, tail_pattern = _GENERIC, "(.*)"
        self._pattern = re.compile(_BASE + tail_pattern)
        logger.debug("combined lines parse by columns in %s mode", self._mode)

    def _convert(self, groups: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Convert the matched groups (one row per line) into columns; return them and the rows that failed."""
        n = len(groups)
        failed = np.zeros(n, dtype=np.bool_)
        columns: dict[str, np.ndarray] = {}

        def convert(values: np.ndarray, converter, function, dtype, rows: np.ndarray | None = None) -> np.ndarray:
            """Convert one column; mark the rows (indexes ``rows`` into the block, or all) whose value failed."""
            converted, bad = converter(values, function, dtype)
            if bad is not None:
                # The failed rows are dropped, so their placeholder values are never read.
                failed[bad if rows is None else rows[bad]] = True
            return converted

        columns["ts"] = convert(groups[:, TIME], convert_runs, clf_time_to_epoch, np.float64)
        # The line parser dead-letters times outside the supported range with its reason.
        failed |= (columns["ts"] < MIN_EVENT_TIME) | (columns["ts"] >= MAX_EVENT_TIME)
        columns["client_ip"] = groups[:, CLIENT].copy()
        method = groups[:, METHOD].copy()
        target = groups[:, TARGET].copy()
        for row in np.flatnonzero(method == None).tolist():  # noqa: E711 - elementwise test on an object array
            method[row], target[row] = split_request_line(groups[row, REQUEST])
        columns["method"] = method
        columns["target"] = target
        columns["status"] = _counts(groups[:, STATUS], 0)
        columns["bytes_out"] = _counts(groups[:, BYTES], -1)
        columns["referer"] = dash_to_empty(groups[:, REFERER])
        columns["user_agent"] = dash_to_empty(groups[:, AGENT])
        columns["account"] = dash_to_empty(groups[:, USER])
        for name in RAW_FIELDS:
            if name not in columns:
                columns[name] = missing_field_column(name, n)

        if self._mode == _LAYOUT:
            for index, slot, function in self._layout.fills:
                values = groups[:, TAIL + index]
                present = (values != "") & (values != "-")
                if present.any():
                    name = RAW_FIELDS[slot]
                    dtype = NUMERIC_FIELD_DTYPES.get(name, object)
                    if function is unescape_quotes:
                        # Block rows contain no \", so the text needs no unescaping.
                        columns[name][present] = values[present]
                    else:
                        columns[name][present] = convert(
                            values[present], convert_each, function, dtype, np.flatnonzero(present)
                        )
        elif self._mode == _GENERIC:
            self._apply_generic_tails(groups[:, TAIL], columns, failed)
        return {name: columns[name] for name in RAW_FIELDS}, failed

    @staticmethod
    def _apply_generic_tails(tails: np.ndarray, columns: dict[str, np.ndarray], failed: np.ndarray) -> None:
        """Fill extra fields row by row through ``apply_extra_fields``, as the line parser does."""
        for row, tail in enumerate(tails.tolist()):
            if not tail or tail.isspace():
                continue
            before = tuple(columns[name][row] for name in RAW_FIELDS)
            try:
                after = apply_extra_fields(before, tail)
            except ValueError:
                failed[row] = True
                continue
            for slot, (old, new) in enumerate(zip(before, after, strict=True)):
                if new is not old:
                    columns[RAW_FIELDS[slot]][row] = new



def _complement(taken: list[int], n: int) -> list[int]:
    if len(taken) == n:
        return []
    kept = set(taken)
    return [index for index in range(n) if index not in kept]

