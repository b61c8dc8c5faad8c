"""The batch every source yields: raw lines with their positions."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class LineBatch:
    """Raw records from one source partition, in source order.

    ``positions[i]`` is the 1-based line number of ``lines[i]`` in a file, or
    its offset in a Kafka partition; ``partition`` is -1 for files.
    ``size_bytes`` counts the bytes read, line endings included.
    ``stream_id`` names the stream the positions count in, for deterministic
    event ids; empty means ``source``. Files add a fingerprint of their first
    64 KiB, so a rotated file or another stdin stream under the same name gets
    new ids, while a file that only grew keeps the ids of its old lines.
    """

    source: str
    partition: int
    lines: list[bytes]
    positions: list[int]
    size_bytes: int
    stream_id: str = ""

    def __len__(self) -> int:
        return len(self.lines)
