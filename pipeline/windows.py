"""Event-time tumbling windows per subject, with a watermark and allowed lateness.

Windows are ``[k * size, (k + 1) * size)`` in event time. The watermark is
the largest event time seen minus ``allowed_lateness``; every window that
ends at or before the watermark is closed and its features are computed
in one vectorized pass. An event whose window already closed is *late*: it
is flagged (``late`` column), counted and still written to the audit trail,
but it changes no closed window.

>>> import numpy as np
>>> windows = TumblingWindows(size_s=10, allowed_lateness_s=0)
>>> events = {"ts": np.array([1.0, 2.0, 12.0]), "subject_id": np.array(["a", "a", "a"], dtype=object)}
>>> closed = windows.add(_with_defaults(events))
>>> closed.size, float(closed.features[0, 0])
(1, 2.0)
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from schemas.events import EVENT_COLUMNS
from schemas.windows import WINDOW_FEATURES, WINDOW_KEYS

logger = logging.getLogger(__name__)

FEATURE_NAMES: tuple[str, ...] = tuple(WINDOW_FEATURES)
FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}


@dataclass(slots=True)
class WindowBatch:
    """Closed windows: identifying columns plus an ``(n, len(FEATURE_NAMES))`` float64 matrix.

    ``slots`` is filled by the state stage with each subject's row in the
    per-subject arrays; it is -1 until then.
    """

    keys: dict[str, np.ndarray]
    features: np.ndarray
    slots: np.ndarray

    @property
    def size(self) -> int:
        return int(self.features.shape[0])

    def feature(self, name: str) -> np.ndarray:
        """Return one feature column by name (a view, not a copy)."""
        return self.features[:, FEATURE_INDEX[name]]

    def select(self, mask: np.ndarray) -> WindowBatch:
        """Return the windows where ``mask`` is True."""
        return WindowBatch(
            keys={name: column[mask] for name, column in self.keys.items()},
            features=self.features[mask],
            slots=self.slots[mask],
        )

    def columns(self) -> dict[str, np.ndarray]:
        """Return keys and features as one dict of columns, the store's input."""
        merged = dict(self.keys)
        for name, index in FEATURE_INDEX.items():
            merged[name] = self.features[:, index]
        return merged

    @staticmethod
    def empty() -> WindowBatch:
        return WindowBatch(
            keys={name: np.empty(0, dtype=dtype) for name, dtype in WINDOW_KEYS.items()},
            features=np.empty((0, len(FEATURE_NAMES)), dtype=np.float64),
            slots=np.empty(0, dtype=np.int64),
        )

    @staticmethod
    def concat(batches: list[WindowBatch]) -> WindowBatch:
        batches = [batch for batch in batches if batch.size]
        if not batches:
            return WindowBatch.empty()
        if len(batches) == 1:
            return batches[0]
        return WindowBatch(
            keys={name: np.concatenate([b.keys[name] for b in batches]) for name in WINDOW_KEYS},
            features=np.concatenate([b.features for b in batches]),
            slots=np.concatenate([b.slots for b in batches]),
        )


class TumblingWindows:
    """Buffers events of open windows and closes them as the watermark advances.

    Memory is bounded by the events of ``size_s + allowed_lateness_s``
    seconds of event time, plus whatever a source delivers out of order
    within that span.
    """

    def __init__(self, size_s: float = 10.0, allowed_lateness_s: float = 5.0) -> None:
        if size_s <= 0:
            raise ValueError(f"window size must be positive seconds, got {size_s!r}")
        if allowed_lateness_s < 0:
            raise ValueError(f"allowed lateness must be >= 0 seconds, got {allowed_lateness_s!r}")
        self.size_s = float(size_s)
        self.allowed_lateness_s = float(allowed_lateness_s)
        self.max_event_time = -np.inf
        self.closed_until = -np.inf
        """Every window ending at or before this event time is closed."""
        self._pending: list[dict[str, np.ndarray]] = []
        self.late_events = 0

    @property
    def watermark(self) -> float:
        return self.max_event_time - self.allowed_lateness_s

    @property
    def pending_events(self) -> int:
        return sum(len(part["ts"]) for part in self._pending)

    def add(self, events: dict[str, np.ndarray]) -> WindowBatch:
        """Take one event batch, flag its late events in place, and return windows it closed."""
        ts = events["ts"]
        if len(ts) == 0:
            return WindowBatch.empty()
        window_end = (np.floor(ts / self.size_s) + 1.0) * self.size_s
        late = window_end <= self.closed_until
        events["late"] = late
        late_count = int(late.sum())
        if late_count:
            self.late_events += late_count
            logger.debug("%d late events before %.3f", late_count, self.closed_until)
            on_time = ~late
            self._pending.append({name: events[name][on_time] for name in _WINDOW_INPUTS})
        else:
            self._pending.append({name: events[name] for name in _WINDOW_INPUTS})
        self.max_event_time = max(self.max_event_time, float(ts.max()))
        boundary = np.floor(self.watermark / self.size_s) * self.size_s
        if boundary <= self.closed_until:
            return WindowBatch.empty()
        return self._close_before(boundary)

    def flush(self) -> WindowBatch:
        """Close every open window, as at the end of a replayed input."""
        if not self._pending:
            return WindowBatch.empty()
        return self._close_before(np.inf)

    def _close_before(self, boundary: float) -> WindowBatch:
        pending = _concat_events(self._pending)
        ready = pending["ts"] < boundary
        self.closed_until = max(self.closed_until, boundary)
        if ready.all():
            self._pending = []
            return compute_features(pending, self.size_s)
        self._pending = [{name: column[~ready] for name, column in pending.items()}]
        if not ready.any():
            return WindowBatch.empty()
        return compute_features({name: column[ready] for name, column in pending.items()}, self.size_s)


# Event columns the window stage reads; the rest are only stored.
_WINDOW_INPUTS = (
    "ts",
    "subject_id",
    "subject_kind",
    "account",
    "client_ip",
    "route",
    "status",
    "latency_ms",
    "bytes_in",
    "bytes_out",
    "user_agent",
    "country",
    "device_id",
    "offset",
)


def _concat_events(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _with_defaults(events: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Fill missing event columns with empty values (for examples and tests)."""
    n = len(events["ts"])
    full = {}
    for name, dtype in EVENT_COLUMNS.items():
        if name in events:
            full[name] = events[name]
        elif dtype == np.dtype(object):
            full[name] = np.full(n, "", dtype=object)
        elif name == "latency_ms":
            full[name] = np.full(n, np.nan, dtype=dtype)
        else:
            full[name] = np.zeros(n, dtype=dtype)
    return full


def network_of(address: str) -> str:
    """Return the /24 (IPv4) or /48 (IPv6) network of an address, the unit for 'networks'."""
    if ":" in address:
        return ":".join(address.split(":")[:3]) + "::/48"
    head, _, _ = address.rpartition(".")
    return head + ".0/24" if head else address


def _distinct_per_group(group: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Count distinct ``values`` (a string column) within each group id."""
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    pairs = np.unique(group.astype(np.int64) * max(len(uniques), 1) + codes)
    return np.bincount(pairs // max(len(uniques), 1), minlength=n_groups).astype(np.float64)


def _distinct_nonempty_per_group(group: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    present = values != ""
    if present.all():
        return _distinct_per_group(group, values, n_groups)
    return _distinct_per_group(group[present], values[present], n_groups)


def window_ids(subject_ids: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Derive a deterministic 64-bit id per (subject, window start)."""
    ids = np.empty(len(subject_ids), dtype=np.uint64)
    for i, (subject, start) in enumerate(zip(subject_ids, starts, strict=True)):
        digest = hashlib.blake2b(f"{subject}\x00{start:.3f}".encode(), digest_size=8).digest()
        ids[i] = int.from_bytes(digest, "little")
    return ids


def compute_features(events: dict[str, np.ndarray], size_s: float) -> WindowBatch:
    """Compute the features of every (subject, window) found in ``events``.

    All work is vectorized: one factorization of (subject, window index),
    then bincounts for counts and sums and one sort for latency quantiles
    (the "lower" method: an observed value, never an interpolation).
    """
    ts = events["ts"]
    window_index = np.floor(ts / size_s).astype(np.int64)
    subject_codes, subjects = pd.factorize(events["subject_id"], use_na_sentinel=False)
    combined = (window_index - window_index.min()) * len(subjects) + subject_codes
    group, group_keys = pd.factorize(combined, sort=True)
    n_groups = len(group_keys)

    first = np.zeros(n_groups, dtype=np.int64)
    first[group[::-1]] = np.arange(len(group))[::-1]
    requests = np.bincount(group, minlength=n_groups).astype(np.float64)
    status = events["status"]

    def ratio(mask: np.ndarray) -> np.ndarray:
        return np.bincount(group, weights=mask, minlength=n_groups) / requests

    networks = _networks(events["client_ip"])
    latency_p50, latency_p95 = _latency_quantiles(group, events["latency_ms"], n_groups)
    features = np.empty((n_groups, len(FEATURE_NAMES)), dtype=np.float64)
    features[:, FEATURE_INDEX["requests"]] = requests
    features[:, FEATURE_INDEX["ratio_4xx"]] = ratio((status >= 400) & (status < 500))
    features[:, FEATURE_INDEX["ratio_401_403"]] = ratio((status == 401) | (status == 403))
    features[:, FEATURE_INDEX["ratio_429"]] = ratio(status == 429)
    features[:, FEATURE_INDEX["ratio_5xx"]] = ratio(status >= 500)
    features[:, FEATURE_INDEX["distinct_ips"]] = _distinct_per_group(group, events["client_ip"], n_groups)
    features[:, FEATURE_INDEX["distinct_networks"]] = _distinct_per_group(group, networks, n_groups)
    features[:, FEATURE_INDEX["distinct_user_agents"]] = _distinct_per_group(group, events["user_agent"], n_groups)
    features[:, FEATURE_INDEX["distinct_routes"]] = _distinct_per_group(group, events["route"], n_groups)
    features[:, FEATURE_INDEX["distinct_countries"]] = _distinct_nonempty_per_group(
        group, events["country"], n_groups
    )
    features[:, FEATURE_INDEX["distinct_devices"]] = _distinct_nonempty_per_group(
        group, events["device_id"], n_groups
    )
    features[:, FEATURE_INDEX["bytes_in"]] = np.bincount(
        group, weights=np.maximum(events["bytes_in"], 0), minlength=n_groups
    )
    features[:, FEATURE_INDEX["bytes_out"]] = np.bincount(
        group, weights=np.maximum(events["bytes_out"], 0), minlength=n_groups
    )
    features[:, FEATURE_INDEX["latency_p50_ms"]] = latency_p50
    features[:, FEATURE_INDEX["latency_p95_ms"]] = latency_p95

    offsets = events["offset"]
    first_offset = np.full(n_groups, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_offset, group, offsets)
    last_offset = np.full(n_groups, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last_offset, group, offsets)

    starts = window_index[first].astype(np.float64) * size_s
    subject_ids = events["subject_id"][first]
    keys = {
        "window_id": window_ids(subject_ids, starts),
        "subject_id": subject_ids,
        "subject_kind": events["subject_kind"][first],
        "account": events["account"][first],
        "window_start": starts,
        "window_end": starts + size_s,
        "first_offset": first_offset,
        "last_offset": last_offset,
    }
    return WindowBatch(keys=keys, features=features, slots=np.full(n_groups, -1, dtype=np.int64))


def _networks(client_ips: np.ndarray) -> np.ndarray:
    codes, uniques = pd.factorize(client_ips, use_na_sentinel=False)
    unique_networks = np.array([network_of(address) for address in uniques], dtype=object)
    return unique_networks[codes] if len(uniques) else np.empty(0, dtype=object)


def _latency_quantiles(group: np.ndarray, latency: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    valid = ~np.isnan(latency)
    p50 = np.full(n_groups, np.nan)
    p95 = np.full(n_groups, np.nan)
    if not valid.any():
        return p50, p95
    valid_group = group[valid]
    order = np.lexsort((latency[valid], valid_group))
    sorted_latency = latency[valid][order].astype(np.float64)
    counts = np.bincount(valid_group, minlength=n_groups)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    has = counts > 0
    p50[has] = sorted_latency[starts[has] + ((counts[has] - 1) * 0.50).astype(np.int64)]
    p95[has] = sorted_latency[starts[has] + ((counts[has] - 1) * 0.95).astype(np.int64)]
    return p50, p95
