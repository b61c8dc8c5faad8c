"""File replay source: line splitting, line endings, gzip and byte counts."""

from __future__ import annotations

import gzip
import io
import sys
from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.sources.files import read_batches


def read_all(path: Path | str, batch_lines: int = 2) -> tuple[list[bytes], list[int], int]:
    lines: list[bytes] = []
    positions: list[int] = []
    size = 0
    for batch in read_batches(str(path), batch_lines):
        lines.extend(batch.lines)
        positions.extend(batch.positions)
        size += batch.size_bytes
    return lines, positions, size


def test_read_batches_strips_crlf(tmp_path):
    path = tmp_path / "access.log"
    path.write_bytes(b"a\r\nb\r\nc\n")
    lines, positions, size = read_all(path)
    assert lines == [b"a", b"b", b"c"]
    assert positions == [1, 2, 3]
    assert size == path.stat().st_size


def test_read_batches_keeps_inner_carriage_return(tmp_path):
    path = tmp_path / "access.log"
    path.write_bytes(b"a\rb\nc\n")
    lines, _, _ = read_all(path)
    assert lines == [b"a\rb", b"c"]


def test_read_batches_counts_last_line_without_newline(tmp_path):
    path = tmp_path / "access.log"
    path.write_bytes(b"a\nb\nc")
    lines, positions, size = read_all(path)
    assert lines == [b"a", b"b", b"c"]
    assert positions == [1, 2, 3]
    assert size == path.stat().st_size


def test_read_batches_reads_gzip(tmp_path):
    path = tmp_path / "access.log.1"
    path.write_bytes(gzip.compress(b"a\nb\r\n"))
    lines, positions, _ = read_all(path)
    assert lines == [b"a", b"b"]
    assert positions == [1, 2]


def test_read_batches_missing_file_names_path(tmp_path):
    with pytest.raises(InputError) as raised:
        list(read_batches(str(tmp_path / "absent.log")))
    assert "absent.log" in str(raised.value)


class FakeStdin:
    def __init__(self, data: bytes) -> None:
        self.buffer = io.BufferedReader(io.BytesIO(data))


def read_stdin(monkeypatch: pytest.MonkeyPatch, data: bytes) -> tuple[list[bytes], list[int], int]:
    monkeypatch.setattr(sys, "stdin", FakeStdin(data))
    return read_all("-")


def test_read_batches_reads_gzip_stdin(monkeypatch):
    lines, positions, size = read_stdin(monkeypatch, gzip.compress(b"a\nbb\nc\n"))
    assert lines == [b"a", b"bb", b"c"]
    assert positions == [1, 2, 3]
    assert size == 7


def test_read_batches_reads_plain_stdin(monkeypatch):
    lines, _, size = read_stdin(monkeypatch, b"\x1fa\nb")
    assert lines == [b"\x1fa", b"b"]
    assert size == 4


def test_read_batches_reads_one_byte_stdin(monkeypatch):
    lines, _, _ = read_stdin(monkeypatch, b"x")
    assert lines == [b"x"]


def test_truncated_gzip_stdin_names_input(monkeypatch):
    truncated = gzip.compress(b"".join(b"%d\n" % i for i in range(10_000)))[:200]
    with pytest.raises(InputError, match="standard input is not a valid gzip file"):
        read_stdin(monkeypatch, truncated)
