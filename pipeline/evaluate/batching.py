"""Cut input batches at event-time boundaries, so the pipeline decides as often as a live stream would.

The policy issues at most one action per subject and batch, stamped with
the newest window end among the batch's detections. A replay batch of
20,000 lines can span many minutes of event time, which would delay every
action by up to that span. A live consumer that polls a steady stream
receives batches of a few seconds. Cutting at multiples of ``seconds`` keeps the
event-time stamps of actions independent of the input's batch size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

from pipeline.parsers import LineParser
from pipeline.sources.base import LineBatch

_MAX_PROBE_LINES = 64
"""Lines tried forward from a probe that does not parse before the rest of the batch is kept whole."""


class EventTimeCutter:
    """Split each ``LineBatch`` into consecutive pieces that each stay within one ``seconds``-long slot.

    Cut points are found by binary search on the event times of single
    lines, parsed with a parser of their own, so the cost is a few dozen
    line parses per piece. Lines are assumed to be in event-time order; a
    few lines out of order only move a cut point. Pieces are not merged
    across input batches.
    """

    def __init__(self, seconds: float, log_format: str | None = None) -> None:
        if seconds <= 0:
            raise ValueError(f"seconds must be > 0, got {seconds}")
        self.seconds = seconds
        self._parser = LineParser(format=log_format)

    def cut_all(self, batches: Iterable[LineBatch]) -> Iterator[LineBatch]:
        for batch in batches:
            yield from self.cut(batch)

    def cut(self, batch: LineBatch) -> Iterator[LineBatch]:
        """Yield the pieces of one batch in order; together they hold every line once."""
        start = 0
        count = len(batch.lines)
        while start < count:
            first_ts = self._time_at(batch, start, count)
            if math.isinf(first_ts):
                end = count
            else:
                boundary = (math.floor(first_ts / self.seconds) + 1) * self.seconds
                end = self._first_at_or_after(batch, start + 1, count, boundary)
            yield _slice(batch, start, end)
            start = end

    def _first_at_or_after(self, batch: LineBatch, low: int, high: int, boundary: float) -> int:
        """Return the first index in ``[low, high)`` whose event time is at or after ``boundary``, else ``high``."""
        while low < high:
            middle = (low + high) // 2
            if self._time_at(batch, middle, high) >= boundary:
                high = middle
            else:
                low = middle + 1
        return low

    def _time_at(self, batch: LineBatch, index: int, limit: int) -> float:
        """Return the event time of the first parsable line from ``index`` on, or infinity if none is near."""
        for probe in range(index, min(limit, index + _MAX_PROBE_LINES)):
            parsed = self._parser.parse([batch.lines[probe]], [batch.positions[probe]])
            if len(parsed):
                return float(parsed.columns()["ts"][0])
        return math.inf


def _slice(batch: LineBatch, start: int, end: int) -> LineBatch:
    if start == 0 and end == len(batch.lines):
        return batch
    lines = batch.lines[start:end]
    return LineBatch(
        source=batch.source,
        partition=batch.partition,
        lines=lines,
        positions=batch.positions[start:end],
        size_bytes=sum(len(line) + 1 for line in lines),
    )
