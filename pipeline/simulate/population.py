"""The simulated token population: who owns each token and how it is used.

Every attribute is a numpy array indexed by token number, so populations of
millions of tokens are built in a few vectorized steps and take about 250
bytes per token. Strings (key ids, secrets, origins) are derived on demand
from the token number and the seed, never stored for every token.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from pipeline.simulate.addresses import HOSTS_PER_BLOCK, BlockRole, block_base, host_address
from pipeline.simulate.catalog import (
    BROWSER_AGENT_RANGE,
    COUNTRIES,
    MOBILE_AGENT_RANGE,
    PLAN_LIMITS,
    ROUTES_PER_SERVICE,
    SERVER_AGENT_RANGE,
    SERVICES,
)
from pipeline.simulate.mixing import base62_strings, hash_pair, splitmix64

logger = logging.getLogger(__name__)

STREAM_POPULATION = 1
"""Random stream id of population building; chunk and scenario streams use others."""

SECRET_PREFIX = "sk_live_"
SECRET_LENGTH = 24  # base62 characters after the prefix, about 143 bits
MAX_SCOPES = 3
USUAL_ROUTES = 4
TOKENS_PER_ACCOUNT = 6  # mean; account sizes are heavy-tailed
MAX_STATIC_SPAN = 4  # a server token rotates over at most this many addresses

# Mean request rate per token in requests per second (before --rate-scale).
# Most tokens follow a log-normal with a median of one request every ~17
# minutes; 1% are busy integrations with a median of 0.5 rps.
RATE_MEDIAN_RPS = 0.001
RATE_SIGMA = 2.0
BUSY_SHARE = 0.01
BUSY_MEDIAN_RPS = 0.5
BUSY_SIGMA = 1.0
RATE_MIN_RPS = 2e-5
RATE_MAX_RPS = 25.0

PEAK_DAILY_FACTOR = 3.0
"""Upper bound of the hour-of-day multiplier, used to size each token's plan."""
PLAN_HEADROOM = 4.0
"""A token's plan limit is at least this many times its peak benign rate."""

GROWTH_SHARE = 0.06
# NOTE: growth is linear and unbounded, so in runs of several weeks a growing
# token keeps gaining (2x to 4x of its mean rate per week) and may outgrow its plan.
BATCH_SHARE_OF_SERVERS = 0.08
BATCH_LENGTHS_S = (300, 600, 1200)
BATCH_LOCAL_HOURS = (1, 2, 3, 4)
LAUNCH_FACTOR = 4.0
"""Extra rate of the launching account's tokens at the launch peak, as a multiple of their mean."""
LAUNCH_DECAY_S = 7200.0
LAUNCH_RAMP_S = 600.0


class ClientKind(IntEnum):
    """The kind of client a token is issued to; it sets IP habits and the daily cycle."""

    SERVER = 0
    """A backend integration on one to four static datacenter addresses."""
    BROWSER = 1
    """A web app: behind its account's office NAT, or on a home line that changes every few days."""
    MOBILE = 2
    """A mobile app whose carrier address changes every 15 minutes to 2 hours, within one country."""


KIND_SHARES = (0.4, 0.3, 0.3)


@dataclass(frozen=True, eq=False)
class Population:
    """Tokens and their habits, one array element per token.

    Client addresses come from ``addresses_at``: host ``ip_host`` of the /16
    ``ip_block``, moved by a hash of (token, time slot) within ``ip_span``
    hosts every ``ip_period`` seconds. A span of 1 is a static address.
    """

    seed: int
    start: int
    size: int
    kind: np.ndarray  # uint8 ClientKind
    account: np.ndarray  # int64 account number
    country: np.ndarray  # int64 index into COUNTRIES
    rate: np.ndarray  # float64 mean requests per second over a week
    plan: np.ndarray  # int64 index into PLANS
    scopes: np.ndarray  # (size, MAX_SCOPES) int64 service index, -1 for unused slots
    routes: np.ndarray  # (size, USUAL_ROUTES) int64 route index
    route_cum: np.ndarray  # (size, USUAL_ROUTES) float64 cumulative route weights, last column 1
    agent: np.ndarray  # int64 index into catalog.USER_AGENTS
    ip_block: np.ndarray  # uint32
    ip_host: np.ndarray  # int64
    ip_span: np.ndarray  # int64
    ip_period: np.ndarray  # int64 seconds
    ip_phase: np.ndarray  # int64 seconds
    object_base: np.ndarray  # int64, first object id the token usually reads
    growth_per_day: np.ndarray  # float64, added fraction of the mean rate per day (0: no growth)
    batch_start_s: np.ndarray  # int64 second of the UTC day a nightly batch starts, -1 for none
    batch_length_s: np.ndarray  # int64
    batch_rate: np.ndarray  # float64 requests per second during the batch
    expires_at: np.ndarray  # float64 epoch seconds, NaN for never
    country_locked: np.ndarray  # bool, registry allows only the home country
    launch_account: int
    """Account whose tokens get a launch spike, -1 for none."""
    launch_start: int
    """Epoch second the launch spike starts."""

    def key_ids(self, tokens: np.ndarray) -> list[str]:
        """Return the non-secret key id of each token, e.g. ``key_000123``."""
        return [f"key_{token:06d}" for token in np.asarray(tokens).tolist()]

    def account_ids(self, tokens: np.ndarray) -> list[str]:
        """Return the account id of each token, e.g. ``acct_00042``."""
        return [f"acct_{account:05d}" for account in self.account[tokens].tolist()]

    def secrets(self, tokens: np.ndarray) -> list[str]:
        """Return the raw secret of each token (``sk_live_`` + 24 base62 characters)."""
        suffixes = base62_strings(self.seed, np.asarray(tokens, dtype=np.uint64), SECRET_LENGTH)
        return [SECRET_PREFIX + suffix for suffix in suffixes]

    def origins(self, tokens: np.ndarray) -> list[str]:
        """Return the web origin of each browser token and "" for other kinds."""
        tokens = np.asarray(tokens)
        is_browser = (self.kind[tokens] == ClientKind.BROWSER).tolist()
        accounts = self.account[tokens].tolist()
        return [f"https://acct-{account:05d}.example.com" if browser else "" for account, browser in zip(accounts, is_browser)]

    def addresses_at(self, tokens: np.ndarray, ts_s: np.ndarray) -> np.ndarray:
        """Return the client address (uint32) each token uses at each event second."""
        slot = (np.asarray(ts_s, dtype=np.int64) + self.ip_phase[tokens]) // self.ip_period[tokens]
        moved = hash_pair(tokens.astype(np.uint64), slot.astype(np.uint64)) % self.ip_span[tokens].astype(np.uint64)
        host = (self.ip_host[tokens] + moved.astype(np.int64)) % HOSTS_PER_BLOCK
        return host_address(self.ip_block[tokens], host)

    def static_addresses(self, token: int) -> list[int]:
        """Return every address a token can use, or [] when it moves over a whole block."""
        span = int(self.ip_span[token])
        if span > MAX_STATIC_SPAN:
            return []
        hosts = (int(self.ip_host[token]) + np.arange(span)) % HOSTS_PER_BLOCK
        return [int(address) for address in host_address(self.ip_block[token], hosts)]

    def is_steady(self) -> np.ndarray:
        """Return a mask of tokens with static addresses and no growth, batch or launch.

        Scenarios plant abuse on these tokens so that their labelled windows
        are not confused with benign bursts and the label can list every
        address the token uses.
        """
        static = (self.kind == ClientKind.SERVER) | ((self.kind == ClientKind.BROWSER) & (self.ip_span == 1))
        return (
            static
            & (self.growth_per_day == 0)
            & (self.batch_start_s < 0)
            & (self.account != self.launch_account)
            & np.isnan(self.expires_at)
        )


def build_population(size: int, seed: int, start: int, duration_s: int) -> Population:
    """Draw a population of ``size`` tokens from the seed.

    The draw depends only on (size, seed, start, duration), never on the
    selected scenarios, so benign traffic is the same with and without abuse.
    """
    rng = np.random.default_rng([seed, STREAM_POPULATION])
    account_count = max(1, math.ceil(size / TOKENS_PER_ACCOUNT))

    # Account sizes follow a Zipf-like law: a few accounts own many tokens.
    account_weights = 1.0 / np.arange(1, account_count + 1) ** 1.1
    account_weights /= account_weights.sum()
    account_order = rng.permutation(account_count)
    account = account_order[rng.choice(account_count, size=size, p=account_weights)].astype(np.int64)
    shares = np.array([country.benign_share for country in COUNTRIES])
    account_country = rng.choice(len(COUNTRIES), size=account_count, p=shares / shares.sum())
    account_has_office = rng.random(account_count) < 0.6
    country = account_country[account].astype(np.int64)
    kind = rng.choice(len(ClientKind), size=size, p=KIND_SHARES).astype(np.uint8)

    rate = _draw_rates(rng, size)
    growth_per_day = np.where(rng.random(size) < GROWTH_SHARE, rng.uniform(1.0 / 7.0, 3.0 / 7.0, size), 0.0)
    batch_start_s, batch_length_s, batch_rate = _draw_batches(rng, kind, country, rate)
    launch_account, launch_start = _choose_launch(account, kind, start, duration_s)
    plan = _assign_plans(rng, rate, growth_per_day, batch_rate, duration_s)
    scopes, routes, route_cum = _draw_routes(rng, size)
    agent = _draw_agents(rng, kind)
    ip_block, ip_host, ip_span, ip_period, ip_phase = _draw_addresses(rng, kind, country, account, account_has_office, seed)

    expires_at = np.where(rng.random(size) < 0.25, start + rng.uniform(90, 400, size) * 86400.0, np.nan)
    expires_at = np.floor(expires_at)
    country_locked = rng.random(size) < 0.55
    object_base = rng.integers(10_000, 9_000_000, size) * 10

    logger.info(
        "built %d tokens in %d accounts: mean %.4f requests/s per token, %d growing, %d with nightly batches",
        size,
        account_count,
        float(rate.mean()),
        int((growth_per_day > 0).sum()),
        int((batch_start_s >= 0).sum()),
    )
    return Population(
        seed=seed,
        start=start,
        size=size,
        kind=kind,
        account=account,
        country=country,
        rate=rate,
        plan=plan,
        scopes=scopes,
        routes=routes,
        route_cum=route_cum,
        agent=agent,
        ip_block=ip_block,
        ip_host=ip_host,
        ip_span=ip_span,
        ip_period=ip_period,
        ip_phase=ip_phase,
        object_base=object_base,
        growth_per_day=growth_per_day,
        batch_start_s=batch_start_s,
        batch_length_s=batch_length_s,
        batch_rate=batch_rate,
        expires_at=expires_at,
        country_locked=country_locked,
        launch_account=launch_account,
        launch_start=launch_start,
    )


def _draw_rates(rng: np.random.Generator, size: int) -> np.ndarray:
    rate = rng.lognormal(math.log(RATE_MEDIAN_RPS), RATE_SIGMA, size)
    busy = rng.random(size) < BUSY_SHARE
    rate[busy] = rng.lognormal(math.log(BUSY_MEDIAN_RPS), BUSY_SIGMA, int(busy.sum()))
    return np.clip(rate, RATE_MIN_RPS, RATE_MAX_RPS)


def _draw_batches(
    rng: np.random.Generator, kind: np.ndarray, country: np.ndarray, rate: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Give some server tokens a nightly batch job at a fixed local hour."""
    size = len(kind)
    has_batch = (kind == ClientKind.SERVER) & (rng.random(size) < BATCH_SHARE_OF_SERVERS)
    offsets_h = np.array([c.utc_offset_h for c in COUNTRIES])[country]
    local_hour = rng.choice(BATCH_LOCAL_HOURS, size)
    start_s = np.round((local_hour - offsets_h) * 3600.0).astype(np.int64) % 86400
    length_s = rng.choice(BATCH_LENGTHS_S, size).astype(np.int64)
    batch_rate = np.clip(40.0 * rate, 0.5, 20.0)
    return (
        np.where(has_batch, start_s, -1),
        np.where(has_batch, length_s, 0),
        np.where(has_batch, batch_rate, 0.0),
    )


def _choose_launch(account: np.ndarray, kind: np.ndarray, start: int, duration_s: int) -> tuple[int, int]:
    """Pick the account with the most browser and mobile tokens for a product launch."""
    client_tokens = account[kind != ClientKind.SERVER]
    if len(client_tokens) < 5:
        return -1, 0
    counts = np.bincount(client_tokens)
    launch_account = int(np.argmax(counts))
    offset = int(0.55 * duration_s)
    if duration_s >= 2 * 3600:
        offset -= offset % 3600  # launches start on the hour
    return launch_account, start + offset


def _assign_plans(
    rng: np.random.Generator, rate: np.ndarray, growth_per_day: np.ndarray, batch_rate: np.ndarray, duration_s: int
) -> np.ndarray:
    """Pick the smallest plan whose limit leaves ``PLAN_HEADROOM`` over each token's peak."""
    days = duration_s / 86400.0
    peak = rate * PEAK_DAILY_FACTOR * (1.0 + growth_per_day * days) * (1.0 + LAUNCH_FACTOR)
    needed = PLAN_HEADROOM * np.maximum(peak, batch_rate)
    plan = np.searchsorted(PLAN_LIMITS, needed, side="left")
    upgraded = plan + (rng.random(len(rate)) < 0.1)
    return np.minimum(upgraded, len(PLAN_LIMITS) - 1).astype(np.int64)


def _draw_routes(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw each token's scopes (1 to 3 services) and its usual routes inside them."""
    scope_count = rng.choice([1, 2, 3], size=size, p=[0.5, 0.35, 0.15])
    services = np.argsort(rng.random((size, len(SERVICES))), axis=1)[:, :MAX_SCOPES]
    scopes = np.where(np.arange(MAX_SCOPES)[None, :] < scope_count[:, None], services, -1).astype(np.int64)

    scope_pick = (rng.random((size, USUAL_ROUTES)) * scope_count[:, None]).astype(np.int64)
    route_service = np.take_along_axis(services, scope_pick, axis=1)
    # Position inside a service: list, get, create, update.
    route_offset = rng.choice(ROUTES_PER_SERVICE, size=(size, USUAL_ROUTES), p=[0.4, 0.45, 0.1, 0.05])
    routes = (route_service * ROUTES_PER_SERVICE + route_offset).astype(np.int64)

    weights = rng.gamma(0.8, size=(size, USUAL_ROUTES)) + 1e-9
    route_cum = np.cumsum(weights, axis=1)
    route_cum /= route_cum[:, -1:]
    return scopes, routes, route_cum


def _draw_agents(rng: np.random.Generator, kind: np.ndarray) -> np.ndarray:
    ranges = np.array([SERVER_AGENT_RANGE, BROWSER_AGENT_RANGE, MOBILE_AGENT_RANGE])[kind]
    return (ranges[:, 0] + (rng.random(len(kind)) * (ranges[:, 1] - ranges[:, 0])).astype(np.int64)).astype(np.int64)


def _draw_addresses(
    rng: np.random.Generator,
    kind: np.ndarray,
    country: np.ndarray,
    account: np.ndarray,
    account_has_office: np.ndarray,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Place each token's client addresses according to its kind (see ``ClientKind``)."""
    size = len(kind)
    server = kind == ClientKind.SERVER
    office = (kind == ClientKind.BROWSER) & account_has_office[account]
    home = (kind == ClientKind.BROWSER) & ~office
    mobile = kind == ClientKind.MOBILE

    second_block = rng.random(size) < 0.5
    role = np.select(
        [server, office, home, mobile],
        [
            BlockRole.DATACENTER,
            BlockRole.OFFICE,
            np.where(second_block, BlockRole.RESIDENTIAL_B, BlockRole.RESIDENTIAL_A),
            np.where(second_block, BlockRole.CARRIER_B, BlockRole.CARRIER_A),
        ],
    )
    ip_block = block_base(country, role)

    # An office NAT address is a function of the account, so every browser
    # token of the account shares it.
    office_host = (splitmix64(account.astype(np.uint64) ^ np.uint64(seed)) % np.uint64(HOSTS_PER_BLOCK)).astype(np.int64)
    ip_host = np.where(office, office_host, rng.integers(0, HOSTS_PER_BLOCK, size))
    server_span = rng.choice([1, 2, 4], size=size, p=[0.6, 0.25, 0.15])
    ip_span = np.select([server, office], [server_span, 1], default=HOSTS_PER_BLOCK).astype(np.int64)
    ip_period = np.select(
        [server, office, home, mobile],
        [1, 365 * 86400, 3 * 86400, rng.integers(900, 7201, size)],
    ).astype(np.int64)
    ip_phase = (rng.random(size) * ip_period).astype(np.int64)
    return ip_block, ip_host.astype(np.int64), ip_span, ip_period, ip_phase
