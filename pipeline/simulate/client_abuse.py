"""Abuse scenarios labelled by client address (``ip:<address>``).

Credential stuffing and brute force send raw credentials that match no key.
The gateway then logs no key id, so no token subject exists to label. The
blocklisted-network scenario also sends requests with no credential at all.
"""

from __future__ import annotations

import numpy as np

from pipeline.simulate.addresses import BlockRole, block_base, format_cidr, format_ip, host_address, network_of
from pipeline.simulate.batch import EventBatch
from pipeline.simulate.benign import token_requests
from pipeline.simulate.catalog import (
    BROWSER_AGENTS,
    COUNTRY_INDEX,
    ROUTE_INDEX,
    ROUTES,
    SCANNER_AGENTS,
    SCANNER_ROUTES,
    TOOL_AGENTS,
)
from pipeline.simulate.mixing import base62_strings, hash_pair
from pipeline.simulate.population import SECRET_LENGTH, SECRET_PREFIX
from pipeline.simulate.scenario_base import (
    Scenario,
    ScenarioContext,
    choose_statuses,
    poisson_times,
    rejection_responses,
    steady_times,
)


def _host_in_slash24(third_octet: int | np.ndarray, last_octet: int | np.ndarray) -> np.ndarray:
    """Return the host number (see ``host_address``) of ``<block>.<third>.<last>``, last octet 1-254."""
    return np.asarray(third_octet, dtype=np.int64) * 254 + np.asarray(last_octet, dtype=np.int64) - 1


def _invalid_secrets(seed: int, salt: int, count: int) -> list[str]:
    """Return ``count`` credentials shaped like real secrets that match no token."""
    key = int(hash_pair(seed, salt))
    return [SECRET_PREFIX + suffix for suffix in base62_strings(key, np.arange(count), SECRET_LENGTH)]


class CredentialStuffing(Scenario):
    """Thousands of leaked credentials are tried from 150 residential-proxy exits in 30 /24s.

    Almost every request fails (401, some 403 and 429); each exit sends only
    a few requests per minute, so no single client looks busy.
    """

    name = "credential_stuffing"
    NOMINAL_S = 3600
    RATE_RPS = 8.0
    CREDENTIALS = 3000
    COUNTRIES = ("BR", "VN", "ID", "IN", "RU", "TR")
    NETWORKS_PER_COUNTRY = 5
    ADDRESSES_PER_NETWORK = 5

    def __init__(self, context: ScenarioContext, rng: np.random.Generator) -> None:
        super().__init__(context)
        self.window_start, self.window_end = context.place_window(rng, self.NOMINAL_S)
        self.rate = self.RATE_RPS * context.rate_scale
        addresses: list[int] = []
        networks: list[str] = []
        for code in self.COUNTRIES:
            base = block_base(COUNTRY_INDEX[code], BlockRole.PROXY)
            for third in rng.choice(250, size=self.NETWORKS_PER_COUNTRY, replace=False).tolist():
                lasts = rng.choice(np.arange(1, 255), size=self.ADDRESSES_PER_NETWORK, replace=False)
                hosts = host_address(base, _host_in_slash24(third, lasts))
                addresses.extend(int(address) for address in hosts)
                networks.append(format_cidr(network_of(int(hosts[0]), 24), 24))
        self.addresses = np.array(addresses, dtype=np.uint32)
        secrets = _invalid_secrets(context.seed, 0x57F1, self.CREDENTIALS)
        agents = [BROWSER_AGENTS[i] for i in rng.integers(0, len(BROWSER_AGENTS), self.CREDENTIALS).tolist()]
        self.profiles = context.profiles.add(agents, secrets=secrets)
        self.routes = np.array([ROUTE_INDEX["users-get"], ROUTE_INDEX["customers-list"]], dtype=np.int64)
        self._label(
            "client",
            [f"ip:{format_ip(address)}" for address in addresses],
            f"credential stuffing: {self.CREDENTIALS} invalid credentials tried at {self.rate:.1f} requests/s from "
            f"{len(addresses)} proxy addresses in {len(networks)} networks across {', '.join(self.COUNTRIES)}",
            addresses=addresses,
            networks=networks,
        )

    def _generate(self, start_s: int, end_s: int, rng: np.random.Generator) -> EventBatch:
        ts_ms = poisson_times(rng, start_s, end_s, self.rate)
        count = len(ts_ms)
        routes = self.routes[(rng.random(count) < 0.3).astype(np.int64)]
        params = np.where(routes == ROUTE_INDEX["users-get"], rng.integers(1, 2_000_000, count), 1)
        status = choose_statuses(rng, count, (401, 403, 429), (0.92, 0.06, 0.02))
        bytes_out, latency_ms = rejection_responses(status, rng)
        return EventBatch(
            ts_ms=ts_ms,
            profile=self.profiles[rng.integers(0, len(self.profiles), count)],
            address=self.addresses[rng.integers(0, len(self.addresses), count)],
            route=routes,
            param=params.astype(np.int64),
            status=status,
            bytes_out=bytes_out,
            latency_ms=latency_ms,
        )


class BruteForce(Scenario):
    """One VPS sends 20 requests/s, each with a new guessed credential; nearly all get 401."""

    name = "brute_force"
    NOMINAL_S = 900
    RATE_RPS = 20.0
    MAX_CREDENTIALS = 50_000

    def __init__(self, context: ScenarioContext, rng: np.random.Generator) -> None:
        super().__init__(context)
        self.window_start, self.window_end = context.place_window(rng, self.NOMINAL_S)
        self.rate = self.RATE_RPS * context.rate_scale
        country = COUNTRY_INDEX[("RU", "CN", "NG", "VN")[int(rng.integers(0, 4))]]
        self.address = int(host_address(block_base(country, BlockRole.HOSTING), int(rng.integers(0, 60_000))))
        # Request k uses credential k modulo the pool, so a pool as large as
        # the expected request count makes (almost) every guess distinct.
        expected = int(self.rate * (self.window_end - self.window_start) * 1.05) + 1
        pool = min(expected, self.MAX_CREDENTIALS)
        secrets = _invalid_secrets(context.seed, 0xB7F0, pool)
        self.profiles = context.profiles.add([TOOL_AGENTS[2]] * pool, secrets=secrets)
        self.salt = int(hash_pair(context.seed, 0xB7F1))
        self.route = ROUTE_INDEX["orders-list"]
        self._label(
            "client",
            [f"ip:{format_ip(self.address)}"],
            f"brute force: one client tries a new credential per request at {self.rate:.1f} requests/s (401)",
            addresses=[self.address],
            networks=[format_cidr(self.address, 32)],
        )

    def _generate(self, start_s: int, end_s: int, rng: np.random.Generator) -> EventBatch:
        sequence, ts_ms = steady_times(self.salt, self.window_start, self.rate, start_s, end_s)
        count = len(ts_ms)
        status = choose_statuses(rng, count, (401, 429), (0.995, 0.005))
        bytes_out, latency_ms = rejection_responses(status, rng)
        return EventBatch(
            ts_ms=ts_ms,
            profile=self.profiles[sequence % len(self.profiles)],
            address=np.full(count, self.address, dtype=np.uint32),
            route=np.full(count, self.route, dtype=np.int64),
            param=np.ones(count, dtype=np.int64),
            status=status,
            bytes_out=bytes_out,
            latency_ms=latency_ms,
        )


# Blocklisted networks: (country, third octet, prefix length) inside that
# country's BAD_HOSTING /16. Traffic comes from the first two; the others
# are on the list without traffic, as most entries of a real blocklist are.
_BLOCKLIST: tuple[tuple[str, int, int], ...] = (
    ("RU", 13, 24),
    ("NL", 32, 22),
    ("RU", 77, 24),
    ("CN", 200, 24),
    ("UA", 150, 28),
)


def _blocklist_networks() -> list[tuple[int, int]]:
    """Return the (network address, prefix length) of every blocklisted network."""
    networks = []
    for code, third, prefix in _BLOCKLIST:
        base = int(block_base(COUNTRY_INDEX[code], BlockRole.BAD_HOSTING))
        networks.append((base + (third << 8), prefix))
    return networks


def blocklist_cidrs() -> list[str]:
    """Return the blocklist in CIDR notation; it does not depend on seed or options."""
    return [format_cidr(network, prefix) for network, prefix in _blocklist_networks()]


class BlocklistedNetwork(Scenario):
    """Requests from blocklisted networks: scanners without a credential, and a valid token.

    Three hosts of the first blocklisted /24 scan for exposed files and admin
    routes (404, and 401 on admin routes). A valid token is used with curl
    from a host of the blocklisted /22 and succeeds.
    """

    name = "blocklisted_network"
    NOMINAL_S = 1800
    SCAN_RATE_RPS = 0.5
    TOKEN_RATE_RPS = 0.3

    def __init__(self, context: ScenarioContext, rng: np.random.Generator) -> None:
        super().__init__(context)
        population = context.population
        self.window_start, self.window_end = context.place_window(rng, self.NOMINAL_S)
        self.scan_rate = self.SCAN_RATE_RPS * context.rate_scale
        self.token_rate = self.TOKEN_RATE_RPS * context.rate_scale
        (scan_network, scan_prefix), (token_network, token_prefix) = _blocklist_networks()[:2]
        lasts = rng.choice(np.arange(1, 255), size=3, replace=False)
        self.scan_addresses = (scan_network + lasts).astype(np.uint32)
        self.token_address = int(token_network + (1 << 8) + int(rng.integers(1, 255)))
        self.scan_profiles = context.profiles.add(list(SCANNER_AGENTS))
        self.token = context.pick_token(rng, min_rate=0.001, max_rate=0.5)
        self.token_profile = int(context.profiles.add_token_variants(self.token, [TOOL_AGENTS[0]])[0])
        self.scan_status = np.array([404 if not route.name else 401 for route in ROUTES], dtype=np.int64)

        scan_cidr = format_cidr(scan_network, scan_prefix)
        token_cidr = format_cidr(token_network, token_prefix)
        self._label(
            "client",
            [f"ip:{format_ip(address)}" for address in self.scan_addresses.tolist()],
            f"blocklisted network: 3 scanners in {scan_cidr} probe exposed files and admin routes "
            f"without a credential at {self.scan_rate:.2f} requests/s",
            addresses=self.scan_addresses.tolist(),
            networks=[scan_cidr],
        )
        key_id = population.key_ids([self.token])[0]
        self._label(
            "token",
            [f"key:{key_id}"],
            f"blocklisted network: {key_id} is used with curl from {format_ip(self.token_address)} in {token_cidr} "
            f"at {self.token_rate:.2f} requests/s",
            addresses=[self.token_address],
            networks=[token_cidr],
        )

    def _generate(self, start_s: int, end_s: int, rng: np.random.Generator) -> EventBatch:
        scan_ms = poisson_times(rng, start_s, end_s, self.scan_rate)
        count = len(scan_ms)
        routes = SCANNER_ROUTES[rng.integers(0, len(SCANNER_ROUTES), count)].astype(np.int64)
        status = self.scan_status[routes]
        bytes_out, latency_ms = rejection_responses(status, rng)
        scans = EventBatch(
            ts_ms=scan_ms,
            profile=self.scan_profiles[rng.integers(0, len(self.scan_profiles), count)],
            address=self.scan_addresses[rng.integers(0, len(self.scan_addresses), count)],
            route=routes,
            param=np.zeros(count, dtype=np.int64),
            status=status,
            bytes_out=bytes_out,
            latency_ms=latency_ms,
        )
        token_ms = poisson_times(rng, start_s, end_s, self.token_rate)
        tokens = np.full(len(token_ms), self.token, dtype=np.int64)
        token_use = token_requests(self.context.population, tokens, token_ms, rng)
        token_use.address = np.full(len(token_use), self.token_address, dtype=np.uint32)
        token_use.profile = np.full(len(token_use), self.token_profile, dtype=np.int64)
        return EventBatch.concat([scans, token_use])
