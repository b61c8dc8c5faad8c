"""The simulation run: setup once, then event-time chunks of formatted log lines.

Each chunk draws from its own random streams, keyed by (seed, stream,
chunk number), so the output depends only on the options, and benign
traffic is the same whichever scenarios are selected.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pipeline.simulate.batch import EventBatch
from pipeline.simulate.benign import BenignTraffic
from pipeline.simulate.client_abuse import blocklist_cidrs
from pipeline.simulate.labels import Label
from pipeline.simulate.options import SimulationOptions
from pipeline.simulate.population import PEAK_DAILY_FACTOR, build_population
from pipeline.simulate.profiles import ClientProfiles
from pipeline.simulate.rates import build_components
from pipeline.simulate.registry import iter_registry_records
from pipeline.simulate.scenarios import STREAM_SCENARIO_CHUNK, build_scenarios
from pipeline.simulate.writers import make_writer

logger = logging.getLogger(__name__)

STREAM_CHUNK = 2
STREAM_REQUEST_IDS = 4

TARGET_CHUNK_LINES = 50_000
"""Benign lines per chunk at the daily peak when the chunk length is automatic; bounds memory."""
MAX_CHUNK_S = 60


@dataclass(frozen=True)
class Chunk:
    """The formatted lines of one chunk of event time ``[start, end)`` (epoch seconds)."""

    start: int
    end: int
    lines: int
    data: bytes


class Simulation:
    """One simulated run: the population, the scenarios, their labels and the traffic.

    Setup is eager and cheap because it is vectorized over tokens. The
    iterators generate traffic lazily, one chunk at a time, so memory is
    bounded by the busiest chunk and not by the length of the run.
    """

    def __init__(self, options: SimulationOptions) -> None:
        self.options = options
        self.population = build_population(options.tokens, options.seed, options.start, options.duration_s)
        self.profiles = ClientProfiles(self.population)
        self.benign = BenignTraffic(
            self.population, build_components(self.population), self.profiles, options.rate_scale
        )
        self.scenarios = build_scenarios(
            self.population,
            self.profiles,
            start=options.start,
            end=options.end,
            seed=options.seed,
            rate_scale=options.rate_scale,
            selected=options.scenarios,
        )
        self.chunk_s = options.chunk_s or auto_chunk_seconds(float(self.population.rate.sum()) * options.rate_scale)
        # The writer sizes its per-profile caches now, after every profile was added.
        self.writer = make_writer(options.log_format, self.profiles, options.credential_in_query)
        logger.info(
            "simulating %d tokens for %d s from %d with seed %d in %d s chunks, scenarios: %s",
            options.tokens,
            options.duration_s,
            options.start,
            options.seed,
            self.chunk_s,
            ", ".join(options.scenarios) or "none",
        )

    @property
    def labels(self) -> list[Label]:
        """Ground-truth labels of the selected scenarios, in canonical scenario order."""
        return [label for _, scenario in self.scenarios for label in scenario.labels]

    def registry_records(self) -> Iterator[dict[str, object]]:
        """Yield the TokenRecord-shaped registry entry of every simulated token."""
        overrides: dict[int, dict[str, object]] = {}
        for _, scenario in self.scenarios:
            for token, fields in scenario.registry_overrides.items():
                overrides.setdefault(token, {}).update(fields)
        return iter_registry_records(self.population, overrides)

    @staticmethod
    def blocklist() -> list[str]:
        """Return the blocklisted CIDRs; the list is the same for every run."""
        return blocklist_cidrs()

    def iter_batches(self) -> Iterator[tuple[int, int, EventBatch]]:
        """Yield ``(start, end, batch)`` per chunk, each batch sorted by event time."""
        options = self.options
        for number, start in enumerate(range(options.start, options.end, self.chunk_s)):
            end = min(start + self.chunk_s, options.end)
            rng = np.random.default_rng([options.seed, STREAM_CHUNK, number])
            parts = [self.benign.generate(start, end, rng)]
            for stream, scenario in self.scenarios:
                if scenario.overlaps(start, end):
                    scenario_rng = np.random.default_rng([options.seed, STREAM_SCENARIO_CHUNK + stream, number])
                    parts.append(scenario.generate(start, end, scenario_rng))
            yield start, end, EventBatch.concat(parts).sorted_by_time()

    def iter_chunks(self) -> Iterator[Chunk]:
        """Yield the formatted lines of every chunk, in event-time order."""
        options = self.options
        for number, (start, end, batch) in enumerate(self.iter_batches()):
            request_ids: list[int] = []
            if self.writer.uses_request_ids and len(batch):
                rng = np.random.default_rng([options.seed, STREAM_REQUEST_IDS, number])
                request_ids = np.frombuffer(rng.bytes(8 * len(batch)), dtype="<u8").tolist()
            yield Chunk(start=start, end=end, lines=len(batch), data=self.writer.format(batch, request_ids))

    def iter_lines(self) -> Iterator[bytes]:
        """Yield encoded log lines, one block of newline-terminated lines per non-empty chunk."""
        for chunk in self.iter_chunks():
            if chunk.lines:
                yield chunk.data


def auto_chunk_seconds(mean_rate_rps: float) -> int:
    """Return a chunk length that keeps a chunk near ``TARGET_CHUNK_LINES`` at the daily peak.

    Small populations get one-minute chunks; a million tokens get chunks of
    one or two seconds, so memory does not grow with the population.
    """
    peak_rps = max(mean_rate_rps * PEAK_DAILY_FACTOR, 1e-9)
    return int(min(MAX_CHUNK_S, max(1, TARGET_CHUNK_LINES // peak_rps)))


def iter_lines(options: SimulationOptions) -> Iterator[bytes]:
    """Simulate with ``options`` and yield blocks of encoded log lines in event-time order."""
    return Simulation(options).iter_lines()
