"""File and standard-input replay: the same batches a Kafka partition yields, without servers.

Gzip files are recognized by their magic bytes, whatever their name. Lines
end at ``\\n``; a trailing ``\\r`` is removed; a last line without a newline
still counts.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pipeline.errors import InputError
from pipeline.sources.base import LineBatch

logger = logging.getLogger(__name__)

STDIN = "-"
GZIP_MAGIC = b"\x1f\x8b"
_BLOCK_BYTES = 1 << 20
_FINGERPRINT_BYTES = 1 << 16


def check_readable(path: str) -> None:
    """Raise ``InputError`` naming ``path`` when it cannot be read, before any work starts."""
    if path == STDIN:
        return
    file = Path(path)
    if not file.exists():
        raise InputError(f"input file {path} not found; check the path")
    if file.is_dir():
        raise InputError(f"input {path} is a directory; pass the log files inside it")
    try:
        with file.open("rb"):
            pass
    except PermissionError:
        raise InputError(f"input file {path} is not readable; check its permissions") from None


def read_batches(path: str, batch_lines: int = 20_000) -> Iterator[LineBatch]:
    """Yield batches of at most ``batch_lines`` lines from a file or stdin (``-``), either one plain or gzip."""
    check_readable(path)
    logger.info("reading %s", path)
    if path == STDIN:
        stdin = sys.stdin.buffer
        head = stdin.read(len(GZIP_MAGIC))
        yield from _split_maybe_gzip(_Prefixed(head, stdin), head == GZIP_MAGIC, path, batch_lines)
        return
    with open(path, "rb") as raw:
        compressed = raw.read(len(GZIP_MAGIC)) == GZIP_MAGIC
        raw.seek(0)
        yield from _split_maybe_gzip(raw, compressed, path, batch_lines)


def _split_maybe_gzip(raw: BinaryIO, compressed: bool, source: str, batch_lines: int) -> Iterator[LineBatch]:
    if not compressed:
        yield from _split_batches(raw, source, batch_lines)
        return
    with gzip.GzipFile(fileobj=raw) as stream:
        try:
            yield from _split_batches(stream, source, batch_lines)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            name = "standard input" if source == STDIN else f"input file {source}"
            raise InputError(f"{name} is not a valid gzip file ({exc}); re-compress or decompress it") from None


class _Prefixed:
    """A binary stream that returns ``head`` (bytes already read from ``rest``) before the rest of ``rest``."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            return self._rest.read(size)
        if size < 0:
            data, self._head = self._head + self._rest.read(), b""
            return data
        data, self._head = self._head[:size], self._head[size:]
        if len(data) < size:
            data += self._rest.read(size - len(data))
        return data


def stream_fingerprint(first_block: bytes) -> str:
    """Return 16 hex digits identifying a stream by its first 64 KiB."""
    return hashlib.blake2b(first_block[:_FINGERPRINT_BYTES], digest_size=8).hexdigest()


def _split_batches(stream: BinaryIO, source: str, batch_lines: int) -> Iterator[LineBatch]:
    line_number = 0
    lines: list[bytes] = []
    size = 0
    remainder = b""
    stream_id = source
    # True from the first block that contains a CR. From then on, each line is checked for a CR to strip.
    carriage_returns = False
    while True:
        block = stream.read(_BLOCK_BYTES)
        if not block:
            break
        if size == 0:
            stream_id = f"{source}#{stream_fingerprint(block)}"
        size += len(block)
        carriage_returns = carriage_returns or b"\r" in block
        parts = (remainder + block).split(b"\n")
        remainder = parts.pop()
        lines.extend(parts)
        while len(lines) >= batch_lines:
            chunk, lines = lines[:batch_lines], lines[batch_lines:]
            yield _batch(source, stream_id, chunk, line_number, _chunk_bytes(chunk), carriage_returns)
            line_number += len(chunk)
    if remainder:
        lines.append(remainder)
    for start in range(0, len(lines), batch_lines):
        chunk = lines[start : start + batch_lines]
        chunk_size = _chunk_bytes(chunk)
        if remainder and start + batch_lines >= len(lines):
            chunk_size -= 1  # the last line has no newline
        yield _batch(source, stream_id, chunk, line_number, chunk_size, carriage_returns)
        line_number += len(chunk)
    logger.info("finished %s: %d lines, %d bytes", source, line_number, size)


def _chunk_bytes(lines: list[bytes]) -> int:
    return sum(map(len, lines)) + len(lines)


def _batch(
    source: str, stream_id: str, lines: list[bytes], first_line: int, size: int, carriage_returns: bool
) -> LineBatch:
    if carriage_returns:
        stripped = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    else:
        stripped = lines
    return LineBatch(
        source=source,
        partition=-1,
        lines=stripped,
        positions=list(range(first_line + 1, first_line + 1 + len(lines))),
        size_bytes=size,
        stream_id=stream_id,
    )
