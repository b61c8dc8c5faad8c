"""One stream with a planted case for every detector among benign tokens, for the contract tests.

Twenty minutes of 10 s windows (120 windows). Benign: 30 steady tokens,
an account of 20 small tokens. Planted (window numbers in brackets):
a request burst [100], an error burst [100], a scope violation [90], a
geofence breach that is also impossible travel [90], a foreign origin [90],
an expired token [60 on], a shared token [100], a blocklisted client [50],
credential stuffing from one client [110], and an account-wide spike over
its limit [105].
"""

from __future__ import annotations

import numpy as np

from detectors.base import DetectionContext
from pipeline.registry import TokenRegistry
from schemas.registry import AccountRecord, TokenRecord
from tests.scenarios.traffic import T0, Traffic

WINDOWS = 120
BLOCKLIST = ("203.0.113.0/24 test-feed",)

# Detector id -> subject (token, ip:<addr> or account:<name>) its planted case must flag.
PLANTED: dict[str, str] = {
    "rate_limit": "key:burst",
    "ewma_rate": "key:burst",
    "ewma_errors": "key:errors",
    "hst": "key:errors",
    "ip_blocklist": "ip:203.0.113.66",
    "expired_token": "key:old",
    "scope_violation": "key:scoped",
    "origin_not_allowed": "key:web",
    "geofence": "key:geo",
    "impossible_travel": "key:geo",
    "token_sharing": "key:shared",
    "credential_stuffing": "ip:192.0.2.200",
    "brute_force": "ip:192.0.2.200",
    "account_rate_limit": "account:bulk",
    "account_spike": "account:bulk",
}

# Small-sample settings so every detector warms up within 120 windows.
TEST_PARAMS: dict[str, dict] = {
    "hst": {"model_warmup": 300, "learn_fraction": 1.0, "min_calibration": 200, "window_size": 50, "seed": 3},
    "ip_blocklist": {"networks": BLOCKLIST},
}


def steady(rng: np.random.Generator, mean: float, change: dict[int, float] | None = None) -> np.ndarray:
    counts = rng.poisson(mean, WINDOWS).astype(np.int64)
    for window, value in (change or {}).items():
        counts[window] = value
    return counts


def mixed_traffic(seed: int = 5) -> tuple[Traffic, DetectionContext]:
    rng = np.random.default_rng(seed)
    traffic = Traffic(seed=seed)
    records = []
    for i in range(30):
        traffic.add(f"key:n{i}", steady(rng, 40), client_ip=f"198.51.{i}.10", country="DE", account="acme")
    traffic.add("key:burst", steady(rng, 40, {100: 1500}), client_ip="198.51.100.7", country="DE")

    def error_status(window: int, count: int, rng: np.random.Generator) -> np.ndarray:
        status = np.full(count, 200)
        if window == 100:
            status[: int(count * 0.8)] = 403
        return status

    traffic.add("key:errors", steady(rng, 50), client_ip="198.51.101.7", country="DE", status=error_status)
    traffic.add(
        "key:scoped",
        steady(rng, 30),
        client_ip="198.51.102.7",
        country="DE",
        route=lambda w, c, r: ["/admin/users"] * c if w == 90 else ["/v1/orders/1"] * c,
    )
    records.append(TokenRecord(subject_id="key:scoped", scopes=("/v1/orders",)))
    traffic.add(
        "key:geo",
        steady(rng, 30),
        client_ip="198.51.103.7",
        country=lambda w, c, r: ["RU"] * c if w == 90 else ["DE"] * c,
    )
    records.append(TokenRecord(subject_id="key:geo", allowed_countries=("DE", "AT")))
    traffic.add(
        "key:web",
        steady(rng, 30),
        client_ip="198.51.104.7",
        country="DE",
        origin=lambda w, c, r: ["https://evil.example.net"] * c if w == 90 else ["https://app.example.com"] * c,
    )
    records.append(TokenRecord(subject_id="key:web", allowed_origins=("https://app.example.com",)))
    traffic.add("key:old", steady(rng, 10), client_ip="198.51.105.7", country="DE")
    records.append(TokenRecord(subject_id="key:old", expires_at=T0 + 600.0))

    def shared_ips(window: int, count: int, rng: np.random.Generator) -> np.ndarray:
        if window != 100:
            return np.full(count, "198.51.106.7", dtype=object)
        return np.array([f"100.{64 + i % 12}.{i % 7}.{i}" for i in range(count)], dtype=object)

    traffic.add(
        "key:shared",
        steady(rng, 40),
        client_ip=shared_ips,
        country="DE",
        user_agent=lambda w, c, r: [f"agent/{i % 15}" for i in range(c)] if w == 100 else ["client/1.0"] * c,
    )
    traffic.add("key:n1", [0] * 50 + [20], client_ip="203.0.113.66", country="DE")
    for i in range(40):
        traffic.add(f"tk_{i:016x}", [0] * 110 + [2], client_ip="192.0.2.200", status=401, country="DE")
    for i in range(20):
        traffic.add(
            f"key:bulk{i}", steady(rng, 5, {105: 80}), client_ip=f"198.51.{120 + i}.9", country="DE", account="bulk"
        )
    registry = TokenRegistry.from_records(records, accounts={"bulk": AccountRecord(rate_limit_rps=50.0)})
    return traffic, DetectionContext(window_s=10.0, registry=registry)
