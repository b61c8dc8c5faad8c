"""The chunk driver: raw lines in, rows and dead letters out, following format changes."""

from __future__ import annotations

import bisect
import logging
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.errors import ConfigError
from pipeline.parsers.base import MAX_EVENT_TIME, MIN_EVENT_TIME, ColumnBlock, ParsedChunk, Parser, event_time_error
from pipeline.parsers.clf_columns import CombinedColumnParser
from pipeline.parsers.container import has_cri_prefix, strip_cri_prefix
from pipeline.parsers.detect import detect_format
from pipeline.parsers.errors import FormatMismatch
from pipeline.parsers.registry import build_parsers, check_format_id

logger = logging.getLogger(__name__)

# Parser bugs are logged for the first few lines that hit one, then every Nth.
LOGGED_INTERNAL_ERRORS = 10
INTERNAL_ERROR_LOG_INTERVAL = 1000


def _parse_without_format(line: str) -> tuple:
    raise FormatMismatch("no format detected yet")


class _LazyLines(Sequence[str]):
    """The decoded lines of a chunk, split from its text on first access.

    The vector parser reads only the chunk's bytes, so a chunk whose lines
    all fit it never makes one str per line.
    """

    def __init__(self, blob: bytes, count: int, valid: bool, text: str | None = None) -> None:
        self._blob = blob
        self._count = count
        self._valid = valid
        self._text = text
        """The decoded blob, when decoding it was already needed to check that it is UTF-8."""
        self._lines: list[str] | None = None

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index):
        return self.lines()[index]

    def __iter__(self):
        return iter(self.lines())

    def lines(self) -> list[str]:
        if self._lines is None:
            text = self._text
            if text is None:
                text = self._blob.decode() if self._valid else self._blob.decode("utf-8", "backslashreplace")
            self._lines = text.split("\n")
            self._text = None
            self._lines.pop()
        return self._lines


@dataclass(slots=True)
class _DecodedChunk:
    texts: _LazyLines
    escaped: bool
    """Whether any line contains ``\\"``."""
    blob: bytes | None
    """The lines, each followed by a newline, when they are valid UTF-8."""


def _decode_block(lines: list[bytes]) -> _DecodedChunk | None:
    """Decode a chunk in one call, as the line parser decodes each line, without line endings.

    Takes lines without a newline (as sources yield them) or lines that
    each end with one (as ``readlines`` returns them). Returns None for
    other chunks, such as a Kafka record holding a newline.
    """
    if not lines:
        return None
    ended = lines[0].endswith(b"\n")
    if ended and not all(line.endswith(b"\n") for line in lines):
        return None
    blob = b"".join(lines) if ended else b"\n".join([*lines, b""])
    # The line parser strips a CR before the newline, which the chunk parsers would keep.
    if blob.count(b"\n") != len(lines) or (b"\r" in blob and b"\r\n" in blob):
        return None
    text = None
    if blob.isascii():
        valid = True
    else:
        try:
            text = blob.decode()
        except UnicodeDecodeError:
            valid = False
        else:
            valid = True
    # A one-byte search runs on memchr, many times faster than the two-byte one. Invalid bytes
    # decode to \xNN, a backslash never followed by a quote, so searching the bytes finds the same.
    escaped = b"\\" in blob and b'\\"' in blob
    return _DecodedChunk(_LazyLines(blob, len(lines), valid, text), escaped, blob if valid else None)


def _merge_in_line_order(
    chunk: ParsedChunk,
    columns: dict[str, np.ndarray],
    taken: list[int],
    block_positions: list[int],
    line_row_indexes: list[int],
    format_id: str,
) -> None:
    """Merge block rows (lines ``taken``) and line rows (lines ``line_row_indexes``) into one block in line order."""
    positions = block_positions + chunk.positions
    formats = [format_id] * len(taken) + chunk.formats
    chunk.block = ColumnBlock(columns)
    merged = chunk.columns()
    order = np.argsort(np.asarray(taken + line_row_indexes), kind="stable")
    chunk.block = ColumnBlock({name: column[order] for name, column in merged.items()})
    chunk.line_rows = []
    chunk.positions = [positions[i] for i in order.tolist()]
    chunk.formats = [formats[i] for i in order.tolist()]


def _expand_formats(format_starts: list[tuple[int, str]], row_count: int, first_row: int = 0) -> list[str]:
    """Return one format id per row from ``first_row`` on, from (first row index, format id) pairs."""
    formats: list[str] = []
    for number, (start, format_id) in enumerate(format_starts):
        end = format_starts[number + 1][0] if number + 1 < len(format_starts) else row_count
        formats.extend([format_id] * (end - max(start, first_row)))
    return formats


class LineParser:
    """Parse chunks of raw log lines into rows and dead letters.

    With ``format=None`` the format is detected from the first chunk. When
    a line then does not parse in the current format, the other formats try
    it in registry order and the first that parses it becomes the current
    format, so a file that switches format part-way keeps parsing. A line
    that the current format parses stays in it, so once the catch-all
    ``json`` format is current it also takes lines that a more specific JSON
    format would parse. A given ``format`` is pinned, and lines that do not
    parse in it become dead letters. ``mapping`` configures the ``json``
    format (see ``json_generic``).

    The current format carries over from chunk to chunk, so use one
    LineParser per stream. ``format_switches`` counts changes of format
    after the first detection, and ``internal_errors`` counts lines that hit
    a parser bug.

    While the current format is ``nginx_combined``, chunks go through its
    columnar parser (``clf_columns``). It gives the same rows as arrays, so
    the identity stage needs no loop over rows. Lines it does not take go
    through the line parsers as above. ``columnar=False`` parses every line
    with the line parsers.

    Raises:
        ConfigError: ``format`` is not a registered format id, or ``mapping``
            is invalid or given with a format other than ``json``.
    """

    def __init__(
        self,
        format: str | None = None,
        mapping: Mapping[str, Any] | None = None,
        columnar: bool = True,
    ) -> None:
        if format is not None:
            check_format_id(format)
        if mapping is not None and format not in (None, "json"):
            raise ConfigError(f"a field mapping applies only to the json format, not to {format!r}")
        self._parsers = build_parsers(mapping)
        self._pinned = format is not None
        self._current: Parser | None = self._parsers[format] if format is not None else None
        self._strip_prefix = False
        self._column_parsers = {CombinedColumnParser.format_id: CombinedColumnParser()} if columnar else {}
        self.format_switches = 0
        self.internal_errors = 0

    @property
    def format(self) -> str | None:
        """Format id of the current format, None before one is detected."""
        return self._current.format_id if self._current is not None else None

    def parse(self, lines: list[bytes], positions: list[int]) -> ParsedChunk:
        """Parse one chunk of raw lines, each with its position in the source.

        Lines are decoded as UTF-8 (invalid bytes become ``\\xHH``) and lose
        their line ending. Every line ends up either as a row or as a dead
        letter with a reason, so ``len(rows) + len(dead) == len(lines)``,
        and no exception escapes for bad input.

        Raises:
            ValueError: ``lines`` and ``positions`` differ in length.
        """
        if len(lines) != len(positions):
            raise ValueError(f"got {len(lines)} lines but {len(positions)} positions: expected one position per line")
        chunk = ParsedChunk()
        if self._current is None:
            self._detect(lines)
        column_parser = self._column_parser()
        decoded = _decode_block(lines) if column_parser is not None else None
        if decoded is None:
            self._parse_lines(lines, positions, chunk)
            return chunk

        try:
            columns, taken, misfits = column_parser.parse_block(decoded.texts, decoded.escaped, decoded.blob)
        except Exception as error:  # noqa: BLE001 - a parser bug must not lose the chunk
            self._record_internal_error(column_parser.format_id, error, positions[0])
            self._parse_lines(lines, positions, chunk)
            return chunk
        if not misfits:
            chunk.block = ColumnBlock(columns)
            chunk.positions = list(positions)
            chunk.formats = [column_parser.format_id] * len(taken)
            return chunk
        line_row_indexes, moved = self._parse_misfits(lines, positions, misfits, chunk)
        if moved:
            keep = np.ones(len(taken), dtype=np.bool_)
            keep[np.searchsorted(taken, moved)] = False
            columns = {name: column[keep] for name, column in columns.items()}
            taken = [index for index, kept in zip(taken, keep.tolist(), strict=True) if kept]
        if taken:
            block_positions = [positions[i] for i in taken]
            _merge_in_line_order(chunk, columns, taken, block_positions, line_row_indexes, column_parser.format_id)
        return chunk

    def _parse_misfits(
        self, lines: list[bytes], positions: list[int], misfits: list[int], chunk: ParsedChunk
    ) -> tuple[list[int], list[int]]:
        """Parse the misfit lines with the line parsers, in line order, as ``_parse_lines`` would in one pass.

        A misfit can switch the current format away from ``nginx_combined``.
        Then the lines after it that the block took are parsed by the line
        parsers too, until the format is ``nginx_combined`` again, so format
        switches happen where a line-by-line pass would make them. Returns
        the indexes of the lines that became line rows and of the lines
        taken from the block.
        """
        combined = self._parsers[CombinedColumnParser.format_id]
        line_row_indexes: list[int] = []
        moved: list[int] = []
        misfit_set = set(misfits)
        index = misfits[0]
        while index < len(lines):
            if index not in misfit_set and self._current is combined:
                following = bisect.bisect_left(misfits, index)
                if following == len(misfits):
                    break
                index = misfits[following]
                continue
            if index not in misfit_set:
                moved.append(index)
            if self._parse_lines([lines[index]], [positions[index]], chunk):
                line_row_indexes.append(index)
            index += 1
        return line_row_indexes, moved

    def _column_parser(self) -> CombinedColumnParser | None:
        if self._current is None or self._strip_prefix:
            return None
        return self._column_parsers.get(self._current.format_id)

    def _parse_lines(self, lines: list[bytes], positions: list[int], chunk: ParsedChunk) -> list[int]:
        """Parse lines one by one, appending rows to ``chunk.line_rows`` with their positions and formats, or dead letters.

        Returns the indexes (into ``lines``) of the lines that became rows.
        """
        rows = chunk.line_rows
        append_row = rows.append
        # Positions and formats are built after the loop, from the lines that
        # became dead letters and the row counts where the format changed,
        # which saves two appends per line.
        dead_indexes: list[int] = []
        format_starts: list[tuple[int, str]] = []

        parser = self._current
        parse_line = parser.parse_line if parser is not None else _parse_without_format
        format_id = parser.format_id if parser is not None else ""
        format_starts.append((0, format_id))
        strip_prefix = self._strip_prefix
        for index, raw in enumerate(lines):
            try:
                line = raw.decode()
            except UnicodeDecodeError:
                line = raw.decode("utf-8", "backslashreplace")
            line = line.rstrip("\r\n")
            text = strip_cri_prefix(line) if strip_prefix else line
            try:
                row = parse_line(text)
            except ValueError as error:
                row = self._recover(line, text, error, positions[index], chunk)
                if row is None:
                    dead_indexes.append(index)
                    continue
                parser = self._current
                parse_line = parser.parse_line
                strip_prefix = self._strip_prefix
                if parser.format_id != format_id:
                    format_id = parser.format_id
                    format_starts.append((len(rows), format_id))
            except Exception as error:  # noqa: BLE001 - a parser bug must not lose the chunk
                self._record_internal_error(format_id, error, positions[index])
                reason = f"internal error in the {format_id} parser ({type(error).__name__})"
                chunk.dead.append((positions[index], line, reason, format_id))
                dead_indexes.append(index)
                continue
            if not MIN_EVENT_TIME <= row[0] < MAX_EVENT_TIME:
                chunk.dead.append((positions[index], line, event_time_error(row[0]), format_id))
                dead_indexes.append(index)
                continue
            append_row(row)

        first_row = len(rows) - (len(lines) - len(dead_indexes))
        if dead_indexes:
            dead = set(dead_indexes)
            kept = [index for index in range(len(lines)) if index not in dead]
            chunk.positions.extend(positions[index] for index in kept)
        else:
            kept = list(range(len(lines)))
            chunk.positions.extend(positions)
        chunk.formats.extend(_expand_formats(format_starts, len(rows), first_row))
        return kept

    def _detect(self, lines: list[bytes]) -> None:
        format_id = detect_format(lines, self._parsers)
        if format_id is not None:
            self._current = self._parsers[format_id]
            logger.info("detected log format %s", format_id)

    def _recover(self, line: str, text: str, error: ValueError, position: int, chunk: ParsedChunk) -> tuple | None:
        """Find a row for a line the current format rejected, or record it as a dead letter.

        Tries, in order: the current format again once a newly seen CRI
        prefix is removed, then (unless the format is pinned) every other
        format in registry order. A format that parses the line becomes the
        current one. Returns the row, or None after recording a dead letter.
        """
        if not text.strip():
            chunk.dead.append((position, line, "empty line", ""))
            return None
        current = self._current
        current_id = current.format_id if current is not None else ""

        candidates: list[Parser] = []
        if not self._strip_prefix and has_cri_prefix(text):
            self._strip_prefix = True
            logger.info("lines carry a container runtime (CRI) prefix, which is removed from now on")
            text = strip_cri_prefix(text)
            if current is not None:
                candidates.append(current)
        if not self._pinned:
            candidates.extend(parser for parser in self._parsers.values() if parser is not current)

        specific_error: tuple[ValueError, str] | None = None
        if current is not None and not isinstance(error, FormatMismatch):
            specific_error = (error, current_id)
        for parser in candidates:
            if not parser.matches(text):
                continue
            try:
                row = parser.parse_line(text)
            except FormatMismatch:
                continue
            except ValueError as candidate_error:
                if specific_error is None:
                    specific_error = (candidate_error, parser.format_id)
                continue
            except Exception as candidate_error:  # noqa: BLE001 - a parser bug must not stop recovery
                self._record_internal_error(parser.format_id, candidate_error, position)
                continue
            if parser is not current:
                self._switch_to(parser, position)
            return row

        if specific_error is not None:
            reason, format_id = str(specific_error[0]), specific_error[1]
        elif self._pinned:
            reason, format_id = f"does not match the pinned format {current_id} ({error})", current_id
        elif current is not None:
            reason, format_id = f"does not match {current_id} or any known format", current_id
        else:
            reason, format_id = "does not match any known format", ""
        chunk.dead.append((position, line, reason, format_id))
        return None

    def _switch_to(self, parser: Parser, position: int) -> None:
        previous = self._current
        self._current = parser
        if previous is None:
            logger.info("detected log format %s at position %d", parser.format_id, position)
            return
        self.format_switches += 1
        logger.debug("log format switched from %s to %s at position %d", previous.format_id, parser.format_id, position)

    def _record_internal_error(self, format_id: str, error: Exception, position: int) -> None:
        """Count a parser bug and log it with its code location but without the line.

        The line and the exception message may hold a credential, so neither
        is logged.
        """
        self.internal_errors += 1
        count = self.internal_errors
        if count <= LOGGED_INTERNAL_ERRORS or count % INTERNAL_ERROR_LOG_INTERVAL == 0:
            frames = traceback.extract_tb(error.__traceback__)
            location = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "unknown location"
            logger.error(
                "parser %s raised %s at %s on the line at position %d (%d parser errors so far)",
                format_id, type(error).__name__, location, position, count,
            )  # fmt: skip
