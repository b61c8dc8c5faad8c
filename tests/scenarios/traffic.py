"""Synthetic gateway traffic with fixed event times, for detector tests and benchmarks.

``Traffic`` collects per-subject request counts per window plus the values
of the other event columns, then yields event batches in time order, as a
source would deliver them. ``run_pipeline_stages`` pushes those batches
through the window, state and detect stages (not the parser, sinks or
policy) and returns the detections.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors.base import DetectionContext, Detector
from pipeline.state import SubjectIndex
from pipeline.windows import TumblingWindows, _with_defaults
from schemas.detections import Detection
from schemas.events import SubjectKind

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAY = 86400.0

Column = Any  # a scalar, a sequence per window, or a function (window number, count, rng) -> values


@dataclass
class Traffic:
    """Per-subject request counts per window, expanded into events with fixed timestamps."""

    window_s: float = 10.0
    start: float = T0
    seed: int = 0
    _parts: list[dict[str, np.ndarray]] = field(default_factory=list)

    def add(self, subject: str, counts: Sequence[float] | np.ndarray, *, first_window: int = 0, **columns: Column) -> Traffic:
        """Add ``counts[i]`` requests of ``subject`` in window ``first_window + i``.

        Keyword arguments give event columns (``client_ip``, ``status``,
        ``country``, ``origin``, ``route``, ``user_agent``, ``device_id``,
        ``account``, ``bytes_out``): a scalar for every request, a list with
        one value per window, or a function ``f(window, count, rng)``
        returning ``count`` values.
        """
        rng = np.random.default_rng([self.seed, len(self._parts)])
        counts = np.asarray(counts, dtype=np.int64)
        windows = np.flatnonzero(counts > 0)
        n = int(counts.sum())
        window_of_event = np.repeat(windows, counts[windows])
        position = np.concatenate([np.arange(c) / c for c in counts[windows]]) if n else np.zeros(0)
        ts = self.start + (first_window + window_of_event + position * 0.99) * self.window_s
        part: dict[str, np.ndarray] = {"ts": ts, "subject_id": _strings([subject] * n)}
        part["subject_kind"] = np.full(
            n, SubjectKind.CLIENT_IP if subject.startswith("ip:") else SubjectKind.KEY_ID, dtype=np.uint8
        )
        defaults = {"client_ip": "198.51.100.1", "status": 200, "route": "/v1/orders", "user_agent": "client/1.0"}
        for name, value in {**defaults, **columns}.items():
            part[name] = _expand(value, windows + first_window, counts[windows], rng)
        self._parts.append(part)
        return self

    def batches(self, windows_per_batch: int = 6) -> list[dict[str, np.ndarray]]:
        """Return all events in time order, cut into batches of ``windows_per_batch`` windows of event time."""
        merged = _merge(self._parts)
        order = np.argsort(merged["ts"], kind="stable")
        merged = {name: column[order] for name, column in merged.items()}
        merged = _with_defaults(merged)
        merged["offset"] = np.arange(1, len(merged["ts"]) + 1, dtype=np.int64)
        cut = np.floor((merged["ts"] - self.start) / (self.window_s * windows_per_batch)).astype(np.int64)
        bounds = np.flatnonzero(np.r_[True, cut[1:] != cut[:-1], True])
        return [{name: column[a:b] for name, column in merged.items()} for a, b in zip(bounds[:-1], bounds[1:])]


def _strings(values) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = list(values)
    return array


def _expand(value: Column, windows: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if callable(value):
        parts = [np.asarray(value(int(w), int(c), rng)) for w, c in zip(windows, counts, strict=True)]
        flat = np.concatenate(parts) if parts else np.zeros(0)
        return _strings(flat.tolist()) if flat.dtype.kind in "OUS" else flat
    if isinstance(value, (list, tuple, np.ndarray)):
        per_window = np.asarray(value, dtype=object)[windows - windows.min() if len(windows) else windows]
        flat = np.repeat(per_window, counts)
        return _strings(flat.tolist()) if isinstance(flat[0] if len(flat) else "", str) else flat.astype(np.int64)
    if isinstance(value, str):
        return _strings([value] * int(counts.sum()))
    return np.full(int(counts.sum()), value)


def _merge(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    names = sorted({name for part in parts for name in part})
    merged = {}
    for name in names:
        columns = []
        for part in parts:
            n = len(part["ts"])
            if name in part:
                columns.append(part[name])
            elif name in ("status",):
                columns.append(np.full(n, 200))
            else:
                columns.append(_strings([""] * n))
        column = np.concatenate(columns)
        if name == "status":
            column = column.astype(np.uint16)
        if name in ("bytes_out", "bytes_in"):
            column = column.astype(np.int64)
        merged[name] = column
    return merged


def run_pipeline_stages(
    detectors: Sequence[Detector],
    batches: list[dict[str, np.ndarray]],
    context: DetectionContext,
    *,
    country_lookup: Callable | None = None,
    index: SubjectIndex | None = None,
) -> list[Detection]:
    """Run event batches through windows, slots and detectors as the runner does; return all detections."""
    index = index or SubjectIndex()
    for detector in detectors:
        detector.attach(index)
    windows = TumblingWindows(size_s=context.window_s, allowed_lateness_s=0, country_lookup=country_lookup)
    found: list[Detection] = []
    closed_batches = [windows.add(batch) for batch in batches] + [windows.flush()]
    for closed in closed_batches:
        if closed.size == 0:
            continue
        context.refresh()
        closed.slots = index.assign(closed.keys["subject_id"], closed.keys["window_end"])
        for detector in detectors:
            found.extend(detector.detect(closed, context))
        index.expire(float(closed.keys["window_end"].max()))
    return found


def close_windows(
    batches: list[dict[str, np.ndarray]], window_s: float, country_lookup: Callable | None = None
) -> list:
    """Return the closed window batches of ``batches`` (window stage only), in order."""
    windows = TumblingWindows(size_s=window_s, allowed_lateness_s=0, country_lookup=country_lookup)
    closed = [windows.add(batch) for batch in batches] + [windows.flush()]
    return [batch for batch in closed if batch.size]


def detect_closed(
    detectors: Sequence[Detector], closed: list, context: DetectionContext, index: SubjectIndex | None = None
) -> list[Detection]:
    """Run closed window batches through slots and detectors; batches are copied, so they can be reused.

    Without ``index`` a new one is made and the detectors are attached to it;
    a given index must already have them attached.
    """
    if index is None:
        index = SubjectIndex()
        for detector in detectors:
            detector.attach(index)
    found: list[Detection] = []
    for original in closed:
        batch = original.select(np.ones(original.size, dtype=bool))
        context.refresh()
        batch.slots = index.assign(batch.keys["subject_id"], batch.keys["window_end"])
        for detector in detectors:
            found.extend(detector.detect(batch, context))
        index.expire(float(batch.keys["window_end"].max()))
    return found
