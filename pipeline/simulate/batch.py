"""Columnar batches of simulated requests, before they are formatted as log lines."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np


@dataclass(slots=True)
class EventBatch:
    """Simulated requests as parallel numpy columns, one row per request.

    ``profile`` indexes ``ClientProfiles``, which stores who sent the request
    and with which credential. ``route`` indexes ``catalog.ROUTES``, and
    ``param`` is the object id or page number placed in its target (see
    ``ParamKind``).
    """

    ts_ms: np.ndarray  # int64, event time in milliseconds since the Unix epoch
    profile: np.ndarray  # int64
    address: np.ndarray  # uint32, client IPv4 address
    route: np.ndarray  # int64
    param: np.ndarray  # int64
    status: np.ndarray  # int64, HTTP status
    bytes_out: np.ndarray  # int64, response body bytes
    latency_ms: np.ndarray  # int64, request time in milliseconds

    def __len__(self) -> int:
        return len(self.ts_ms)

    @classmethod
    def empty(cls) -> EventBatch:
        """Return a batch with no rows and the column dtypes."""
        return cls(
            ts_ms=np.empty(0, np.int64),
            profile=np.empty(0, np.int64),
            address=np.empty(0, np.uint32),
            route=np.empty(0, np.int64),
            param=np.empty(0, np.int64),
            status=np.empty(0, np.int64),
            bytes_out=np.empty(0, np.int64),
            latency_ms=np.empty(0, np.int64),
        )

    @classmethod
    def concat(cls, batches: Sequence[EventBatch]) -> EventBatch:
        """Concatenate batches column by column (no sorting)."""
        batches = [batch for batch in batches if len(batch)]
        if not batches:
            return cls.empty()
        if len(batches) == 1:
            return batches[0]
        columns = {
            column.name: np.concatenate([getattr(batch, column.name) for batch in batches]) for column in fields(cls)
        }
        return cls(**columns)

    def take(self, order: np.ndarray) -> EventBatch:
        """Return the rows at ``order`` (an index array or boolean mask)."""
        return EventBatch(**{column.name: getattr(self, column.name)[order] for column in fields(self)})

    def sorted_by_time(self) -> EventBatch:
        """Return the rows in event-time order; ties keep their current order."""
        return self.take(np.argsort(self.ts_ms, kind="stable"))
