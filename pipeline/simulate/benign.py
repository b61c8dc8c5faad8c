"""Benign traffic of one chunk: token owners using their tokens, and uptime monitors."""

from __future__ import annotations

import numpy as np

from pipeline.simulate.addresses import BlockRole, block_base, host_address
from pipeline.simulate.batch import EventBatch
from pipeline.simulate.catalog import (
    COUNTRY_INDEX,
    LIST_ROUTE_OFFSET,
    MONITOR_AGENT,
    READ_STATUSES,
    ROUTE_IS_WRITE,
    ROUTE_LATENCY_MS,
    ROUTE_PARAM,
    ROUTE_RESPONSE_BYTES,
    ROUTES,
    ROUTES_PER_SERVICE,
    STATUS_ROUTE,
    WRITE_STATUSES,
    ParamKind,
)
from pipeline.simulate.population import Population
from pipeline.simulate.profiles import ClientProfiles
from pipeline.simulate.rates import ComponentKind, RateComponents

# Uptime monitors: (country, host number in that country's datacenter block,
# phase in seconds). Each requests the public status route every
# MONITOR_INTERVAL_S without a credential, so the pipeline profiles it by IP.
MONITORS: tuple[tuple[str, int, int], ...] = (("US", 40_001, 0), ("DE", 40_002, 11), ("SG", 40_003, 23))
MONITOR_INTERVAL_S = 30

_IS_POST = np.array([route.method == "POST" for route in ROUTES])


def benign_responses(routes: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw status, response bytes and latency in ms for benign requests to ``routes``.

    Reads and writes have their own status mix (``catalog.READ_STATUSES`` and
    ``WRITE_STATUSES``); a successful POST returns 201. Sizes and latencies
    are log-normal around each route's mean, errors are small and fast.
    """
    count = len(routes)
    is_write = ROUTE_IS_WRITE[routes]
    draw = rng.random(count)
    read_codes, read_probabilities = READ_STATUSES
    write_codes, write_probabilities = WRITE_STATUSES
    read_status = read_codes[np.minimum(np.searchsorted(np.cumsum(read_probabilities), draw, side="right"), len(read_codes) - 1)]
    write_status = write_codes[
        np.minimum(np.searchsorted(np.cumsum(write_probabilities), draw, side="right"), len(write_codes) - 1)
    ]
    status = np.where(is_write, write_status, read_status)
    status = np.where(_IS_POST[routes] & (status == 200), 201, status)

    noise = rng.lognormal(0.0, 0.45, count)
    bytes_out = ROUTE_RESPONSE_BYTES[routes] * noise
    bytes_out = np.where(status >= 400, 60.0 + 80.0 * noise, bytes_out)
    bytes_out = np.where(status == 304, 0.0, bytes_out)

    latency = ROUTE_LATENCY_MS[routes] * rng.lognormal(0.0, 0.6, count)
    latency = np.where((status >= 400) & (status < 500), latency * 0.3, latency)
    latency = np.where(status >= 500, latency * 4.0 + 50.0, latency)
    return status.astype(np.int64), bytes_out.astype(np.int64), np.maximum(latency, 1.0).astype(np.int64)


def token_requests(
    population: Population,
    tokens: np.ndarray,
    ts_ms: np.ndarray,
    rng: np.random.Generator,
    batch_job: np.ndarray | None = None,
) -> EventBatch:
    """Build requests of tokens used by their owners: usual routes, addresses and profiles.

    Rows where ``batch_job`` is True page through the list route of the
    token's first scope, as a nightly export does.
    """
    count = len(tokens)
    slot = (rng.random(count)[:, None] >= population.route_cum[tokens]).sum(axis=1)
    slot = np.minimum(slot, population.routes.shape[1] - 1)
    routes = population.routes[tokens, slot]
    pages = rng.geometric(0.55, count)
    if batch_job is not None and batch_job.any():
        list_routes = population.scopes[tokens, 0] * ROUTES_PER_SERVICE + LIST_ROUTE_OFFSET
        routes = np.where(batch_job, list_routes, routes)
        pages = np.where(batch_job, rng.integers(1, 500, count), pages)

    kinds = ROUTE_PARAM[routes]
    object_ids = population.object_base[tokens] + rng.geometric(0.03, count) - 1
    params = np.select([kinds == ParamKind.ID, kinds == ParamKind.PAGE], [object_ids, pages], default=0)
    status, bytes_out, latency_ms = benign_responses(routes, rng)
    return EventBatch(
        ts_ms=ts_ms.astype(np.int64),
        profile=tokens.astype(np.int64),
        address=population.addresses_at(tokens, ts_ms // 1000),
        route=routes.astype(np.int64),
        param=params.astype(np.int64),
        status=status,
        bytes_out=bytes_out,
        latency_ms=latency_ms,
    )


class BenignTraffic:
    """Generator of benign requests for any chunk of event time."""

    def __init__(self, population: Population, components: RateComponents, profiles: ClientProfiles, rate_scale: float):
        self.population = population
        self.components = components
        self.rate_scale = rate_scale
        countries = np.array([COUNTRY_INDEX[country] for country, _, _ in MONITORS])
        hosts = np.array([host for _, host, _ in MONITORS])
        self.monitor_addresses = host_address(block_base(countries, BlockRole.DATACENTER), hosts)
        self.monitor_phases = np.array([phase for _, _, phase in MONITORS], dtype=np.int64)
        self.monitor_profile = int(profiles.add([MONITOR_AGENT])[0])

    def generate(self, start_s: int, end_s: int, rng: np.random.Generator) -> EventBatch:
        """Return the benign requests with event time in ``[start_s, end_s)``, unsorted."""
        return EventBatch.concat([self._token_traffic(start_s, end_s, rng), self._monitor_traffic(start_s, end_s)])

    def _token_traffic(self, start_s: int, end_s: int, rng: np.random.Generator) -> EventBatch:
        components = self.components
        seconds = np.arange(start_s, end_s, dtype=np.int64)
        curves = components.multipliers(seconds)
        curve_sums = curves.sum(axis=1)
        counts = rng.poisson(components.total_weight * curve_sums * self.rate_scale)
        total = int(counts.sum())
        if total == 0:
            return EventBatch.empty()

        component = np.repeat(np.arange(len(components)), counts)
        # Token: weighted by its weight inside its component.
        targets = components.weight_start[component] + rng.random(total) * components.total_weight[component]
        entry = np.searchsorted(components.cum_weight, targets, side="right")
        entry = np.clip(entry, components.entry_start[component], components.entry_start[component + 1] - 1)
        tokens = components.tokens[entry]

        # Second: weighted by the component's curve inside the chunk. Row c of
        # the normalized running sums lies in (c, c + 1], so one searchsorted
        # over the flattened rows finds the second for every component.
        running = np.cumsum(curves, axis=1)
        safe_sums = np.where(curve_sums > 0, curve_sums, 1.0)
        normalized = running / safe_sums[:, None] + np.arange(len(components))[:, None]
        flat_index = np.searchsorted(normalized.ravel(), component + rng.random(total), side="right")
        second = np.clip(flat_index - component * len(seconds), 0, len(seconds) - 1)
        ts_ms = (start_s + second) * 1000 + rng.integers(0, 1000, total)

        batch_job = components.kind[component] == ComponentKind.BATCH
        return token_requests(self.population, tokens, ts_ms, rng, batch_job)

    def _monitor_traffic(self, start_s: int, end_s: int) -> EventBatch:
        first = start_s + (-(start_s + self.monitor_phases)) % MONITOR_INTERVAL_S
        times = [np.arange(begin, end_s, MONITOR_INTERVAL_S, dtype=np.int64) for begin in first.tolist()]
        monitor = np.repeat(np.arange(len(times)), [len(t) for t in times])
        seconds = np.concatenate(times)
        count = len(seconds)
        if count == 0:
            return EventBatch.empty()
        return EventBatch(
            ts_ms=seconds * 1000 + 137 * (monitor + 1),
            profile=np.full(count, self.monitor_profile, dtype=np.int64),
            address=self.monitor_addresses[monitor],
            route=np.full(count, STATUS_ROUTE, dtype=np.int64),
            param=np.zeros(count, dtype=np.int64),
            status=np.full(count, 200, dtype=np.int64),
            bytes_out=np.full(count, 62, dtype=np.int64),
            latency_ms=np.full(count, 2, dtype=np.int64) + monitor,
        )
