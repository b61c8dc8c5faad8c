"""Benign request rates as a sum of components with a shared time shape.

A component is a set of tokens with fixed weights (requests per second at
multiplier 1) and one multiplier curve over time. The curve is the daily
cycle of a client kind in one time zone, linear growth, a nightly batch
window or a launch spike. Because weights are fixed, the tokens of a chunk
are drawn with one ``searchsorted`` over precomputed cumulative weights. So
the cost of a chunk grows with its number of requests, not with the number
of idle tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from pipeline.simulate.catalog import COUNTRIES
from pipeline.simulate.population import LAUNCH_DECAY_S, LAUNCH_FACTOR, LAUNCH_RAMP_S, ClientKind, Population

SECONDS_PER_DAY = 86400
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday; Monday is 0


class ComponentKind(IntEnum):
    """Time shape of a component."""

    BASE = 0
    """Daily cycle of the client kind in the tokens' local time."""
    GROWTH = 1
    """Daily cycle times days since the start: linear growth of the rate."""
    LAUNCH = 2
    """Daily cycle times a ramp to a peak and an exponential decay."""
    BATCH = 3
    """1 inside the nightly batch window, 0 outside."""


# Hour-of-day multipliers in local time, hours 0 to 23, and the weekend
# factor, per ClientKind. Rows are scaled below so the weekly mean is 1,
# which makes a token's weight its mean rate.
_RAW_DAILY = np.array(
    [
        # SERVER: busy in business hours, never idle
        [0.55, 0.5, 0.5, 0.5, 0.55, 0.6, 0.75, 0.9, 1.1, 1.25, 1.35, 1.4,
         1.4, 1.4, 1.4, 1.35, 1.3, 1.2, 1.05, 0.95, 0.85, 0.75, 0.65, 0.6],
        # BROWSER: office hours with a lunch dip
        [0.1, 0.07, 0.05, 0.05, 0.05, 0.08, 0.2, 0.6, 1.4, 2.1, 2.3, 2.2,
         1.9, 2.1, 2.2, 2.1, 1.8, 1.3, 0.8, 0.5, 0.4, 0.3, 0.2, 0.15],
        # MOBILE: evening peak
        [0.6, 0.4, 0.25, 0.18, 0.15, 0.2, 0.4, 0.75, 1.0, 1.0, 1.0, 1.05,
         1.15, 1.1, 1.0, 1.0, 1.05, 1.2, 1.45, 1.7, 1.85, 1.75, 1.4, 0.95],
    ]
)  # fmt: skip
WEEKEND_FACTOR = np.array([0.75, 0.3, 1.15])
DAILY_PROFILES = _RAW_DAILY / (_RAW_DAILY.mean(axis=1) * (5.0 + 2.0 * WEEKEND_FACTOR) / 7.0)[:, None]


@dataclass(frozen=True, eq=False)
class RateComponents:
    """All benign rate components of a population, concatenated.

    Entries ``entry_start[c]:entry_start[c + 1]`` of ``tokens`` and
    ``cum_weight`` belong to component ``c``. ``cum_weight`` is the running
    sum of weights over all entries, so one ``searchsorted`` finds the tokens
    of every component.
    """

    start: int
    tokens: np.ndarray  # int64 token per entry
    cum_weight: np.ndarray  # float64 running sum of entry weights
    entry_start: np.ndarray  # (C + 1,) int64
    weight_start: np.ndarray  # (C,) float64 running sum before the component's first entry
    total_weight: np.ndarray  # (C,) float64 requests per second at multiplier 1
    kind: np.ndarray  # (C,) ComponentKind
    client_kind: np.ndarray  # (C,) ClientKind, selects the daily profile
    utc_offset_s: np.ndarray  # (C,) int64
    batch_start_s: np.ndarray  # (C,) int64 second of the UTC day, -1 for non-batch
    batch_length_s: np.ndarray  # (C,) int64
    launch_start: int

    def __len__(self) -> int:
        return len(self.total_weight)

    def multipliers(self, seconds: np.ndarray) -> np.ndarray:
        """Return the multiplier of each component at each epoch second, shape (C, S)."""
        seconds = np.asarray(seconds, dtype=np.int64)
        local = seconds[None, :] + self.utc_offset_s[:, None]
        hour = (local % SECONDS_PER_DAY) / 3600.0
        whole_hour = hour.astype(np.int64)
        fraction = hour - whole_hour
        profiles = DAILY_PROFILES[self.client_kind]
        this_hour = np.take_along_axis(profiles, whole_hour, axis=1)
        next_hour = np.take_along_axis(profiles, (whole_hour + 1) % 24, axis=1)
        weekday = (local // SECONDS_PER_DAY + _EPOCH_WEEKDAY) % 7
        weekend = np.where(weekday >= 5, WEEKEND_FACTOR[self.client_kind][:, None], 1.0)
        curve = (this_hour * (1.0 - fraction) + next_hour * fraction) * weekend

        elapsed_days = np.maximum(seconds - self.start, 0) / SECONDS_PER_DAY
        curve = np.where((self.kind == ComponentKind.GROWTH)[:, None], curve * elapsed_days[None, :], curve)

        since_launch = (seconds - self.launch_start).astype(np.float64)
        ramp = np.clip(since_launch / LAUNCH_RAMP_S, 0.0, 1.0)
        spike = np.where(since_launch >= 0, ramp * np.exp(-np.maximum(since_launch, 0.0) / LAUNCH_DECAY_S), 0.0)
        curve = np.where((self.kind == ComponentKind.LAUNCH)[:, None], curve * spike[None, :], curve)

        in_batch = (seconds[None, :] - self.batch_start_s[:, None]) % SECONDS_PER_DAY < self.batch_length_s[:, None]
        return np.where((self.kind == ComponentKind.BATCH)[:, None], in_batch.astype(np.float64), curve)


def build_components(population: Population) -> RateComponents:
    """Split the population's benign rates into components (see the module docstring)."""
    offsets_s = np.round(np.array([c.utc_offset_h for c in COUNTRIES]) * 3600.0).astype(np.int64)
    everyone = np.arange(population.size)
    growing = np.flatnonzero(population.growth_per_day > 0)
    launching = np.flatnonzero(population.account == population.launch_account)
    batching = np.flatnonzero(population.batch_start_s >= 0)

    groups: list[tuple[ComponentKind, np.ndarray, np.ndarray, np.ndarray]] = [
        (ComponentKind.BASE, everyone, population.rate, np.stack([population.kind, population.country], axis=1)),
        (
            ComponentKind.GROWTH,
            growing,
            population.rate[growing] * population.growth_per_day[growing],
            np.stack([population.kind[growing], population.country[growing]], axis=1),
        ),
        (
            ComponentKind.LAUNCH,
            launching,
            population.rate[launching] * LAUNCH_FACTOR,
            np.stack([population.kind[launching], population.country[launching]], axis=1),
        ),
        (
            ComponentKind.BATCH,
            batching,
            population.batch_rate[batching],
            np.stack([population.batch_start_s[batching], population.batch_length_s[batching]], axis=1),
        ),
    ]

    token_parts: list[np.ndarray] = []
    weight_parts: list[np.ndarray] = []
    sizes: list[int] = []
    kinds: list[int] = []
    client_kinds: list[int] = []
    utc_offsets: list[int] = []
    batch_starts: list[int] = []
    batch_lengths: list[int] = []
    for kind, tokens, weights, keys in groups:
        if len(tokens) == 0:
            continue
        unique_keys, group_of = np.unique(keys.astype(np.int64), axis=0, return_inverse=True)
        order = np.argsort(group_of, kind="stable")
        counts = np.bincount(group_of, minlength=len(unique_keys))
        token_parts.append(tokens[order])
        weight_parts.append(weights[order])
        for key, count in zip(unique_keys.tolist(), counts.tolist()):
            sizes.append(count)
            kinds.append(kind)
            if kind == ComponentKind.BATCH:
                client_kinds.append(ClientKind.SERVER)
                utc_offsets.append(0)
                batch_starts.append(key[0])
                batch_lengths.append(key[1])
            else:
                client_kinds.append(key[0])
                utc_offsets.append(int(offsets_s[key[1]]))
                batch_starts.append(-1)
                batch_lengths.append(0)

    weights = np.concatenate(weight_parts)
    cum_weight = np.cumsum(weights)
    entry_start = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    weight_before = np.concatenate([[0.0], cum_weight])[entry_start[:-1]]
    total_weight = np.add.reduceat(weights, entry_start[:-1])
    return RateComponents(
        start=population.start,
        tokens=np.concatenate(token_parts).astype(np.int64),
        cum_weight=cum_weight,
        entry_start=entry_start,
        weight_start=weight_before,
        total_weight=total_weight,
        kind=np.array(kinds, dtype=np.int64),
        client_kind=np.array(client_kinds, dtype=np.int64),
        utc_offset_s=np.array(utc_offsets, dtype=np.int64),
        batch_start_s=np.array(batch_starts, dtype=np.int64),
        batch_length_s=np.array(batch_lengths, dtype=np.int64),
        launch_start=population.launch_start,
    )
