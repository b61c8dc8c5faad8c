"""Abuse scenarios on valid tokens, labelled by token (``key:<key id>``)."""

from __future__ import annotations

import numpy as np

from pipeline.simulate.addresses import BlockRole, block_base, host_address
from pipeline.simulate.batch import EventBatch
from pipeline.simulate.benign import token_requests
from pipeline.simulate.catalog import (
    ADMIN_ROUTES,
    COUNTRY_CODES,
    COUNTRY_INDEX,
    PLAN_LIMITS,
    ROUTE_INDEX,
    ROUTE_PARAM,
    ROUTES,
    SERVICES,
    TOOL_AGENTS,
    ParamKind,
)
from pipeline.simulate.mixing import hash_pair, unit_float
from pipeline.simulate.scenario_base import (
    Scenario,
    ScenarioContext,
    choose_statuses,
    poisson_times,
    rejection_responses,
    steady_times,
)


class SpamBurst(Scenario):
    """A valid token sends 50 times its mean rate for 10 minutes from its usual clients.

    Requests above the token's plan limit get 429, as the gateway would respond.
    """

    name = "spam_burst"
    NOMINAL_S = 600
    FACTOR = 50.0
    MIN_RATE_RPS = 0.5

    def __init__(self, context: ScenarioContext, rng: np.random.Generator) -> None:
        super().__init__(context)
        population = context.population
        self.token = context.pick_token(rng, min_rate=0.01, max_rate=0.5)
        self.window_start, self.window_end = context.place_window(rng, self.NOMINAL_S)
        base_rate = float(population.rate[self.token]) * context.rate_scale
        self.rate = max(self.FACTOR * base_rate, self.MIN_RATE_RPS * context.rate_scale)
        limit = float(PLAN_LIMITS[population.plan[self.token]])
        self.throttled_share = max(0.0, 1.0 - limit / self.rate)
        key_id = population.key_ids([self.token])[0]
        throttling = f", {self.throttled_share:.0%} get 429 above its {limit:g} requests/s limit" if self.throttled_share else ""
        self._label(
            "token",
            [f"key:{key_id}"],
            f"spam burst: {key_id} sends {self.rate:.2f} requests/s, {self.rate / base_rate:.0f}x its mean rate, "
            f"from its usual clients{throttling}",
            addresses=population.static_addresses(self.token),
        )

    def _generate(self, start_s: int, end_s: int, rng: np.random.Generator) -> EventBatch:
        ts_ms = poisson_times(rng, start_s, end_s, self.rate)
        tokens = np.full(len(ts_ms), self.token, dtype=np.int64)
        batch = token_requests(self.context.population, tokens, ts_ms, rng)
        throttled = rng.random(len(batch)) < self.throttled_share
        if throttled.any():
            batch.status[throttled] = 429
            bytes_out, latency_ms = rejection_responses(batch.status[throttled], rng)
            batch.bytes_out[throttled] = bytes_out
            batch.latency_ms[throttled] = latency_ms
        return batch


class SlowScraping(Scenario):
    """A token walks sequential object ids at 85% of its plan limit for hours.

    Every request is allowed, so a static rate limit never fires; the signal
    is the steady rate and the number of distinct paths. The scraper runs on
    one VPS in the token's home country with a scripting user agent.
    """

    name = "slow_scraping"
    NOMINAL_S = 6 * 3600
    LIMIT_SHARE = 0.85
    MISSING_SHARE = 0.08

    def __init__(self, context: ScenarioContext, rng: np.random.Generator) -> None:
        super().__init__(context)
        population = context.population
        low_plan = PLAN_LIMITS[population.plan] <= 10.0
        self.token = context.pick_token(rng, min_rate=0.0, max_rate=0.05, extra=low_plan)
        self.window_start, self.window_end = context.place_window(rng, self.NOMINAL_S)
        self.limit = float(PLAN_LIMITS[population.plan[self.token]])
        self.rate = self.LIMIT_SHARE * self.limit
        service = int(population.scopes[self.token, 0])
        self.route = ROUTE_INDEX[f"{SERVICES[service]}-get"]
        self.first_id = int(rng.integers(100_000, 900_000))
        country = int(population.country[self.token])
        self.address = int(host_address(block_base(country, BlockRole.HOSTING), int(rng.integers(0, 60_000))))
        self.profile = int(context.profiles.add_token_variants(self.token, [TOOL_AGENTS[1]])[0])
        self.salt = int(hash_pair(context.seed, 0x5C2A9E))
        key_id = population.key_ids([self.token])[0]
        self._label(
            "token",
            [f"key:{key_id}"],
            f"slow scraping: {key_id} reads {ROUTES[self.route].path_head}<id> for sequential ids at "
            f"{self.rate:.2f} requests/s, {self.LIMIT_SHARE:.0%} of its {self.limit:g} requests/s limit",
            addresses=[self.address],
        )

    def _generate(self, start_s: int, end_s: int, rng: np.random.Generator) -> EventBatch:
        sequence, ts_ms = steady_times(self.salt, self.window_start, self.rate, start_s, end_s)
        count = len(ts_ms)
        missing = unit_float(hash_pair(self.salt + 1, sequence.astype(np.uint64))) < self.MISSING_SHARE
        status = np.where(missing, 404, 200).astype(np.int64)
        latency_ms = (12 + rng.integers(0, 25, count)).astype(np.int64)
        bytes_out = np.where(missing, 70, 1200 + rng.integers(0, 600, count)).astype(np.int64)
        return EventBatch(
            ts_ms=ts_ms,
            profile=np.full(count, self.profile, dtype=np.int64),
            address=np.full(count, self.address, dtype=np.uint32),
            route=np.full(count, self.route, dtype=np.int64),
            param=self.first_id + sequence,
            status=status,
            bytes_out=bytes_out,
            latency_ms=latency_ms,
        )


class LeakedToken(Scenario):
    """A leaked token is used at once from 40 VPS addresses in 5 foreign countries (impossible travel).

    The owner's own traffic continues unchanged beside it.
    """

    name = "leaked_token"
    NOMINAL_S = 3600
    RATE_RPS = 1.5
    COUNTRY_COUNT = 5
    ADDRESSES_PER_COUNTRY = 8
    SOURCE_COUNTRIES = ("RU", "VN", "NG", "RO", "UA", "ID", "TR", "BR", "US", "DE", "SG")

    def __init__(self, context: ScenarioContext, rng: np.random.Generator) -> None:
        super().__init__(context)
        population = context.population
        self.token = context.pick_token(rng, min_rate=0.005, max_rate=0.5, extra=population.country_locked.copy())
        self.window_start, self.window_end = context.place_window(rng, self.NOMINAL_S)
        self.rate = self.RATE_RPS * context.rate_scale
        home = COUNTRY_CODES[int(population.country[self.token])]
        foreign = [code for code in self.SOURCE_COUNTRIES if code != home]
        chosen = rng.choice(len(foreign), size=self.COUNTRY_COUNT, replace=False)
        self.countries = [foreign[i] for i in sorted(chosen.tolist())]
        countries = np.repeat([COUNTRY_INDEX[code] for code in self.countries], self.ADDRESSES_PER_COUNTRY)
        hosts = rng.choice(60_000, size=len(countries), replace=False)
        self.addresses = host_address(block_base(countries, BlockRole.HOSTING), hosts)
        self.agent_profiles = context.profiles.add_token_variants(self.token, list(TOOL_AGENTS))
        key_id = population.key_ids([self.token])[0]
        self._label(
            "token",
            [f"key:{key_id}"],
            f"leaked token: {key_id} (home {home}) is used at the same time from "
            f"{len(self.addresses)} addresses in {', '.join(self.countries)} at {self.rate:.2f} requests/s",
            addresses=self.addresses.tolist(),
        )

    def _generate(self, start_s: int, end_s: int, rng: np.random.Generator) -> EventBatch:
        ts_ms = poisson_times(rng, start_s, end_s, self.rate)
        tokens = np.full(len(ts_ms), self.token, dtype=np.int64)
        batch = token_requests(self.context.population, tokens, ts_ms, rng)
        batch.address = self.addresses[rng.integers(0, len(self.addresses), len(batch))]
        batch.profile = self.agent_profiles[rng.integers(0, len(self.agent_profiles), len(batch))]
        return batch


class ScopeProbing(Scenario):
    """A token calls routes outside its scopes, admin routes included, and gets 403s.

    The requests come from the token's usual clients, as from a compromised
    integration exploring what else the credential opens.
    """

    name = "scope_probing"
    NOMINAL_S = 1800
    RATE_RPS = 0.4

    def __init__(self, context: ScenarioContext, rng: np.random.Generator) -> None:
        super().__init__(context)
        population = context.population
        self.token = context.pick_token(rng, min_rate=0.005, max_rate=0.5)
        self.window_start, self.window_end = context.place_window(rng, self.NOMINAL_S)
        self.rate = self.RATE_RPS * context.rate_scale
        allowed = {SERVICES[s] for s in population.scopes[self.token].tolist() if s >= 0}
        outside = [i for i, route in enumerate(ROUTES) if route.service in SERVICES and route.service not in allowed]
        self.routes = np.array(sorted(outside + ADMIN_ROUTES.tolist()), dtype=np.int64)
        key_id = population.key_ids([self.token])[0]
        self._label(
            "token",
            [f"key:{key_id}"],
            f"scope probing: {key_id}, scoped to {', '.join('/v1/' + s for s in sorted(allowed))}, calls "
            f"{len(self.routes)} routes outside its scopes at {self.rate:.2f} requests/s (403)",
            addresses=population.static_addresses(self.token),
        )

    def _generate(self, start_s: int, end_s: int, rng: np.random.Generator) -> EventBatch:
        population = self.context.population
        ts_ms = poisson_times(rng, start_s, end_s, self.rate)
        count = len(ts_ms)
        routes = self.routes[rng.integers(0, len(self.routes), count)]
        params = np.where(
            ROUTE_PARAM[routes] == ParamKind.ID,
            rng.integers(1, 5_000_000, count),
            rng.integers(1, 20, count),
        )
        status = choose_statuses(rng, count, (403, 404), (0.92, 0.08))
        bytes_out, latency_ms = rejection_responses(status, rng)
        tokens = np.full(count, self.token, dtype=np.int64)
        return EventBatch(
            ts_ms=ts_ms,
            profile=tokens,
            address=population.addresses_at(tokens, ts_ms // 1000),
            route=routes,
            param=params.astype(np.int64),
            status=status,
            bytes_out=bytes_out,
            latency_ms=latency_ms,
        )


class ExpiredToken(Scenario):
    """A token keeps calling after the ``expires_at`` its registry entry states.

    The gateway does not enforce the registry's expiry, so the calls succeed
    (200). Besides the owner's usual traffic, which continues, a job of the
    owner calls every ``1 / RATE_RPS`` seconds on average, so the window
    always contains requests. The label runs from the expiry to the end.
    """

    name = "expired_token"
    RATE_RPS = 0.02

    def __init__(self, context: ScenarioContext, rng: np.random.Generator) -> None:
        super().__init__(context)
        population = context.population
        self.token = context.pick_token(rng, min_rate=0.01, max_rate=1.0)
        self.window_start = context.start + int(context.duration_s * rng.uniform(0.3, 0.5))
        self.window_end = context.end
        self.rate = self.RATE_RPS * context.rate_scale
        self.registry_overrides[self.token] = {"expires_at": float(self.window_start)}
        key_id = population.key_ids([self.token])[0]
        self._label(
            "token",
            [f"key:{key_id}"],
            f"use after expiry: {key_id} expired at {self.window_start} in the registry and keeps calling "
            f"(gateway answers 200)",
            addresses=population.static_addresses(self.token),
        )

    def _generate(self, start_s: int, end_s: int, rng: np.random.Generator) -> EventBatch:
        ts_ms = poisson_times(rng, start_s, end_s, self.rate)
        tokens = np.full(len(ts_ms), self.token, dtype=np.int64)
        return token_requests(self.context.population, tokens, ts_ms, rng)
