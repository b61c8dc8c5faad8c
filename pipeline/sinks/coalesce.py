"""Coalescing of small store writes, so consecutive batches share one insert.

Every insert makes ClickHouse write a new part, which costs a few
milliseconds whatever its size and more CPU later when background merges
combine the parts. A replay batch closes a few thousand windows and a few
detections, so writing them batch by batch makes many small parts. This
buffer keeps windows and detections until enough rows wait, then inserts
them together. Events are never held: they are the bulk of every insert
and the event write is what a checkpoint acknowledges.

The buffer belongs to one thread (the pipeline's writer thread) and is not
thread-safe. ``write_all`` must run before the writes count as done, also
when a run stops early. Detections are inserted only after the windows
held before them, so a stored detection always has its window.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from schemas.detections import Detection

logger = logging.getLogger(__name__)

# Rows that trigger an insert. 50,000 window rows are about 12 MiB of numpy
# columns. The limits are estimates that make the fixed cost per part small
# next to the rows written, not measured optima.
WINDOW_ROWS = 50_000
DETECTION_ROWS = 5_000


class CoalescedWrites:
    """Windows and detections waiting for one insert per table.

    >>> class Store:
    ...     def write_windows(self, columns):
    ...         print("windows", len(columns["window_id"]))
    ...     def write_detections(self, detections):
    ...         print("detections", len(detections))
    >>> pending = CoalescedWrites(Store(), window_rows=3)
    >>> pending.add_windows({"window_id": np.arange(2)})
    >>> pending.add_windows({"window_id": np.arange(2)})
    windows 4
    >>> pending.add_detections([])
    >>> pending.write_all()
    """

    def __init__(self, store, window_rows: int = WINDOW_ROWS, detection_rows: int = DETECTION_ROWS) -> None:
        if window_rows < 1 or detection_rows < 1:
            raise ValueError(f"row limits must be >= 1, got windows={window_rows!r}, detections={detection_rows!r}")
        self.store = store
        self.window_rows = window_rows
        self.detection_rows = detection_rows
        self._windows: list[Mapping[str, np.ndarray]] = []
        self._window_count = 0
        self._detections: list[Detection] = []

    def add_windows(self, columns: Mapping[str, np.ndarray]) -> None:
        """Hold one batch of window columns. All held windows are inserted once ``window_rows`` wait."""
        rows = len(next(iter(columns.values()), ()))
        if rows == 0:
            return
        self._windows.append(columns)
        self._window_count += rows
        if self._window_count >= self.window_rows:
            self.write_windows()

    def add_detections(self, detections: list[Detection]) -> None:
        """Hold detections. Once ``detection_rows`` wait, everything held is inserted, windows first."""
        self._detections.extend(detections)
        if len(self._detections) >= self.detection_rows:
            self.write_all()

    def write_windows(self) -> None:
        """Insert the held windows as one block, if any."""
        if not self._windows:
            return
        batches, self._windows, self._window_count = self._windows, [], 0
        if len(batches) == 1:
            merged = dict(batches[0])
        else:
            merged = {name: np.concatenate([batch[name] for batch in batches]) for name in batches[0]}
        logger.debug("inserting %d held windows from %d batches", len(next(iter(merged.values()))), len(batches))
        self.store.write_windows(merged)

    def write_detections(self) -> None:
        """Insert the held detections as one block, if any. Callers write the held windows first."""
        if not self._detections:
            return
        detections, self._detections = self._detections, []
        self.store.write_detections(detections)

    def write_all(self) -> None:
        """Insert the held windows, then the held detections.

        A failed insert drops its rows from the buffer and raises. When the
        windows fail, the detections stay held and are not inserted.
        """
        self.write_windows()
        self.write_detections()
