"""Output files of a simulation: the log (plain, gzip or stdout), labels, registry and blocklist."""

from __future__ import annotations

import gzip
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import BinaryIO

import orjson

from pipeline.errors import ConfigError
from pipeline.simulate.labels import Label

GZIP_LEVEL = 3
"""zlib level: about twice as fast as the default 6 at a slightly larger file (about 6.8x instead of 8x on nginx lines)."""


@contextmanager
def open_output(path: str, option: str) -> Iterator[BinaryIO]:
    """Open ``path`` for binary writing: ``-`` is stdout, a ``.gz`` suffix compresses.

    Gzip headers carry no file name and a zero mtime, so equal content gives
    byte-identical files. ``option`` names the command-line option in errors.
    """
    if path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    try:
        raw = open(path, "wb")  # noqa: SIM115 - closed below, after the gzip layer
    except OSError as exc:
        raise ConfigError(f"cannot write {option} {path}: {exc.strerror}; check that the directory exists and is writable") from None
    try:
        if path.endswith(".gz"):
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=0) as compressed:
                yield compressed
        else:
            yield raw
    finally:
        raw.close()


def write_labels(path: str, labels: Iterable[Label]) -> int:
    """Write labels as JSON Lines and return how many were written."""
    count = 0
    with open_output(path, "--labels") as out:
        for label in labels:
            out.write(orjson.dumps(label.model_dump(mode="json")) + b"\n")
            count += 1
    return count


def write_registry(path: str, records: Iterable[dict[str, object]]) -> int:
    """Write registry records as a YAML list and return how many were written.

    Each item is a JSON flow mapping (JSON is valid YAML), which streams
    millions of records far faster than a YAML emitter.
    """
    count = 0
    with open_output(path, "--registry") as out:
        for record in records:
            out.write(b"- " + orjson.dumps(record) + b"\n")
            count += 1
        if count == 0:
            out.write(b"[]\n")
    return count


def write_blocklist(path: str, cidrs: Iterable[str]) -> int:
    """Write one CIDR per line and return how many were written."""
    lines = list(cidrs)
    with open_output(path, "--blocklist") as out:
        out.write("".join(f"{cidr}\n" for cidr in lines).encode("ascii"))
    return len(lines)
