"""Shared parts of the abuse scenarios: setup context, window placement and arrival times.

A scenario is set up once from its own random stream: it picks its tokens
and clients, places its window in event time, adds its client profiles and
writes its labels. Then ``generate`` returns its requests for any chunk of
event time, from the chunk's random stream of that scenario.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from pipeline.errors import ConfigError
from pipeline.simulate.addresses import format_ip
from pipeline.simulate.batch import EventBatch
from pipeline.simulate.labels import Label
from pipeline.simulate.mixing import hash_pair, unit_float
from pipeline.simulate.population import Population
from pipeline.simulate.profiles import ClientProfiles

logger = logging.getLogger(__name__)

WARMUP_S = 3600
"""Preferred event time before a window starts, so detectors have a baseline."""
MAX_WINDOW_FRACTION = 0.4
"""A window and its warm-up each take at most this share of the run."""


@dataclass
class ScenarioContext:
    """The run a scenario is set up in. ``used_tokens`` collects the tokens earlier scenarios picked."""

    population: Population
    profiles: ClientProfiles
    start: int
    end: int
    seed: int
    rate_scale: float
    used_tokens: set[int] = field(default_factory=set)

    @property
    def duration_s(self) -> int:
        return self.end - self.start

    def place_window(self, rng: np.random.Generator, nominal_s: int) -> tuple[int, int]:
        """Place a window of ``nominal_s`` seconds (shortened for short runs) after a warm-up.

        The warm-up is at least as long as the window, so an equal window
        right before it lies inside the run.
        """
        length = max(1, min(nominal_s, int(self.duration_s * MAX_WINDOW_FRACTION)))
        warmup = min(max(length, WARMUP_S), int(self.duration_s * MAX_WINDOW_FRACTION))
        earliest = self.start + warmup
        latest = self.end - length
        start = earliest + int(rng.integers(0, max(latest - earliest, 0) + 1))
        return start, start + length

    def pick_token(
        self, rng: np.random.Generator, *, min_rate: float, max_rate: float, extra: np.ndarray | None = None
    ) -> int:
        """Pick an unused steady token (see ``Population.is_steady``) with a mean rate in range.

        If none fits, ``extra``, then the rate range, then steadiness are
        dropped in turn, so small populations still get every scenario, with
        weaker signals.
        """
        population = self.population
        free = population.is_steady()
        in_range = (population.rate >= min_rate) & (population.rate <= max_rate)
        attempts = [free & in_range, free]
        if extra is not None:
            attempts.insert(0, free & in_range & extra)
        attempts.append(np.ones(population.size, dtype=bool))
        for candidates in attempts:
            if self.used_tokens:
                candidates[list(self.used_tokens)] = False
            indices = np.flatnonzero(candidates)
            if len(indices):
                token = int(indices[rng.integers(0, len(indices))])
                self.used_tokens.add(token)
                return token
        raise ConfigError(f"no unused token left for a scenario among {population.size} tokens; use more --tokens")


class Scenario:
    """Base class: subclasses set ``name`` and implement ``_generate``."""

    name: ClassVar[str]
    window_start: int
    window_end: int

    def __init__(self, context: ScenarioContext) -> None:
        self.context = context
        self.labels: list[Label] = []
        self.registry_overrides: dict[int, dict[str, object]] = {}
        """Registry fields to replace, per token number (e.g. a past ``expires_at``)."""

    def overlaps(self, start_s: int, end_s: int) -> bool:
        """Return True when the window shares event time with ``[start_s, end_s)``."""
        return self.window_start < end_s and start_s < self.window_end

    def generate(self, start_s: int, end_s: int, rng: np.random.Generator) -> EventBatch:
        """Return the planted requests with event time in ``[start_s, end_s)``, unsorted."""
        begin = max(start_s, self.window_start)
        end = min(end_s, self.window_end)
        if begin >= end:
            return EventBatch.empty()
        return self._generate(begin, end, rng)

    def _generate(self, start_s: int, end_s: int, rng: np.random.Generator) -> EventBatch:
        raise NotImplementedError

    def _label(
        self,
        kind: str,
        subject_ids: Sequence[str],
        description: str,
        *,
        addresses: Sequence[int] = (),
        networks: Sequence[str] = (),
        start: int | None = None,
        end: int | None = None,
    ) -> None:
        self.labels.append(
            Label(
                label_id=f"{self.name}-{len(self.labels) + 1}",
                scenario=self.name,
                kind=kind,
                subject_ids=tuple(subject_ids),
                client_ips=tuple(format_ip(address) for address in addresses),
                networks=tuple(networks),
                start=self.window_start if start is None else start,
                end=self.window_end if end is None else end,
                description=description,
            )
        )


def poisson_times(rng: np.random.Generator, start_s: int, end_s: int, rate: float) -> np.ndarray:
    """Draw Poisson arrivals at ``rate`` per second in ``[start_s, end_s)``, as epoch ms (unsorted)."""
    count = int(rng.poisson(rate * (end_s - start_s)))
    return rng.integers(start_s * 1000, end_s * 1000, count, dtype=np.int64)


def steady_times(salt: int, window_start: int, rate: float, start_s: int, end_s: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the sequence numbers and epoch-ms times of a steady process inside ``[start_s, end_s)``.

    Request ``k`` falls at a hashed point inside its own slot
    ``[k, k + 1) / rate`` after ``window_start``, so the rate is exact over
    any span, gaps vary, and the result does not depend on chunk boundaries.
    """
    interval_ms = 1000.0 / rate
    origin_ms = window_start * 1000
    first = max(0, math.floor((start_s * 1000 - origin_ms) / interval_ms) - 1)
    last = math.ceil((end_s * 1000 - origin_ms) / interval_ms) + 1
    sequence = np.arange(first, last, dtype=np.int64)
    jitter = unit_float(hash_pair(salt, sequence.astype(np.uint64)))
    ts_ms = (origin_ms + (sequence + jitter) * interval_ms).astype(np.int64)
    inside = (ts_ms >= start_s * 1000) & (ts_ms < end_s * 1000)
    return sequence[inside], ts_ms[inside]


def rejection_responses(status: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw response bytes and latency in ms for requests the gateway rejects (small and fast)."""
    count = len(status)
    bytes_out = (60 + rng.integers(0, 90, count)).astype(np.int64)
    latency_ms = (1 + rng.integers(0, 5, count)).astype(np.int64)
    return bytes_out, latency_ms


def choose_statuses(rng: np.random.Generator, count: int, codes: tuple[int, ...], probabilities: tuple[float, ...]) -> np.ndarray:
    """Draw ``count`` status codes with the given probabilities."""
    return np.asarray(codes, dtype=np.int64)[rng.choice(len(codes), size=count, p=probabilities)]
