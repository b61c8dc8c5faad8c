"""Write the golden scenario folders (input.log, config.yaml, registry.yaml, expected.json).

Run ``.venv/bin/python -m tests.scenarios.generate`` after changing a
scenario here; the folders are committed, so tests never depend on this
script's randomness (it is seeded anyway). Event times are fixed, starting
2026-01-01T00:00:00Z.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import yaml

from tests.scenarios.traffic import T0

HERE = Path(__file__).parent


def line(ts: float, client: str, path: str, status: int, agent: str = "client/1.0", user: str = "-", **extras: str) -> str:
    moment = datetime.fromtimestamp(ts, tz=UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
    extra = "".join(f' {name}="{value}"' for name, value in extras.items())
    return f'{client} - {user} [{moment}] "GET {path} HTTP/1.1" {status} 512 "-" "{agent}"{extra}'


def steady(windows: int, per_window: int, **fields) -> list[tuple[float, str]]:
    """Return (ts, line) pairs of ``per_window`` requests per 10 s window."""
    rows = []
    for w in range(windows):
        for i in range(per_window):
            ts = T0 + w * 10 + i * 9.0 / per_window
            rows.append((ts, line(ts, **fields)))
    return rows


def write(name: str, rows: list[tuple[float, str]], expected: list[dict], exclusive: bool = True, config=None, registry=None, blocklist=None) -> None:
    folder = HERE / name
    folder.mkdir(exist_ok=True)
    rows.sort(key=lambda row: row[0])
    (folder / "input.log").write_text("\n".join(text for _, text in rows) + "\n", encoding="utf-8")
    (folder / "config.yaml").write_text(yaml.safe_dump(config or {"window_s": 10.0}, sort_keys=False), encoding="utf-8")
    if registry is not None:
        (folder / "registry.yaml").write_text(yaml.safe_dump(registry, sort_keys=False), encoding="utf-8")
    if blocklist is not None:
        (folder / "blocklist.txt").write_text(blocklist, encoding="utf-8")
    (folder / "expected.json").write_text(
        json.dumps({"detections": expected, "exclusive": exclusive}, indent=2) + "\n", encoding="utf-8"
    )


def credential_stuffing() -> None:
    rows = []
    # An office NAT: 40 people, each with their own key, two of them with a stale key.
    for person in range(40):
        status = 401 if person < 2 else 200
        rows += steady(6, 2, client="198.51.100.10", path="/v1/orders", status=status, key_id=f"staff-{person}")
    # One client trying 30 stolen keys within one window.
    for attempt in range(30):
        ts = T0 + 30 + attempt * 0.25
        rows.append((ts, line(ts, "192.0.2.200", "/v1/login", 401, "python-requests/2.31", key=f"stolen-{attempt:03d}")))
    write(
        "credential_stuffing",
        rows,
        [
            {"detector": "credential_stuffing", "subject": "ip:192.0.2.200", "count": 1},
            {"detector": "brute_force", "subject": "ip:192.0.2.200", "count": 1},
        ],
    )


def scopes_and_expiry() -> None:
    rows = steady(8, 3, client="198.51.100.20", path="/v1/orders/17", status=200, key_id="orders-bot")
    for i in range(5):
        ts = T0 + 50 + i
        rows.append((ts, line(ts, "198.51.100.20", "/v1/admin/users", 200, key_id="orders-bot")))
    rows += steady(8, 2, client="198.51.100.21", path="/v1/reports", status=200, key_id="old-key")
    rows += steady(8, 2, client="198.51.100.22", path="/v1/reports", status=200, key_id="fresh-key")
    registry = {
        "tokens": [
            {"subject_id": "key:orders-bot", "scopes": ["/v1/orders"]},
            {"subject_id": "key:old-key", "expires_at": "2026-01-01T00:00:30Z"},
            {"subject_id": "key:fresh-key", "expires_at": "2027-01-01T00:00:00Z", "scopes": ["/v1/reports"]},
        ]
    }
    write(
        "scopes_and_expiry",
        rows,
        [
            {"detector": "scope_violation", "subject": "key:orders-bot", "count": 1},
            {"detector": "expired_token", "subject": "key:old-key", "count": 4},
        ],
        registry=registry,
        config={"window_s": 10.0, "detectors": {"params": {"expired_token": {"grace_s": 10}}}},
    )


def geofence_and_travel() -> None:
    rows = []
    for w in range(8):
        country = "JP" if w == 6 else "DE"
        for i in range(4):
            ts = T0 + w * 10 + i * 2
            rows.append((ts, line(ts, "198.51.100.30", "/v1/orders", 200, key_id="eu-app", country=country)))
    # A phone hopping between carrier addresses, always in France.
    for w in range(8):
        for i in range(4):
            ts = T0 + w * 10 + i * 2
            client = f"100.{64 + (w + i) % 9}.{i}.7"
            rows.append((ts, line(ts, client, "/v1/feed", 200, "app/3 (Android)", key_id="mobile", country="FR", device="d-42")))
    registry = {"tokens": [{"subject_id": "key:eu-app", "allowed_countries": ["DE", "AT"]}]}
    write(
        "geofence_and_travel",
        rows,
        [
            {"detector": "geofence", "subject": "key:eu-app", "count": 1},
            {"detector": "impossible_travel", "subject": "key:eu-app", "count": 2},
        ],
        registry=registry,
    )


def blocklisted_client() -> None:
    rows = steady(4, 3, client="198.51.100.40", path="/v1/orders", status=200, key_id="shop")
    rows += steady(1, 5, client="203.0.113.7", path="/v1/orders", status=200, key_id="shop")
    write(
        "blocklisted_client",
        rows,
        [{"detector": "ip_blocklist", "subject": "ip:203.0.113.7", "count": 1}],
        blocklist="# test feed\n203.0.113.0/24 known-scanner\n",
        config={"window_s": 10.0, "detectors": {"blocklist_file": "blocklist.txt"}},
    )


def leaked_token() -> None:
    rng = np.random.default_rng(11)
    rows = []
    for w in range(30):
        leaked = w == 25
        count = 60 if leaked else int(rng.poisson(20))
        for i in range(count):
            ts = T0 + w * 10 + i * 9.0 / count
            client = f"100.{70 + i % 25}.{i % 5}.{i}" if leaked else "198.51.100.50"
            agent = f"curl/8.{i % 10}" if leaked else "backend/2.1"
            rows.append((ts, line(ts, client, "/v1/orders", 200, agent, key="demo-leaked-key-0001", country="DE")))
    write(
        "leaked_token",
        rows,
        [
            {"detector": "token_sharing", "subject": "credential:demo-leaked-key-0001", "count": 1},
            {"detector": "ewma_rate", "subject": "credential:demo-leaked-key-0001", "count": 1},
        ],
    )


def request_burst() -> None:
    rows = steady(15, 20, client="198.51.100.60", path="/v1/search", status=200, key_id="search")
    for i in range(400):
        ts = T0 + 150 + i * 0.02
        rows.append((ts, line(ts, "198.51.100.60", "/v1/search", 200, key_id="search")))
    write(
        "request_burst",
        rows,
        [
            {"detector": "rate_limit", "subject": "key:search", "count": 1},
            {"detector": "ewma_rate", "subject": "key:search", "count": 1},
        ],
    )


def main() -> None:
    credential_stuffing()
    scopes_and_expiry()
    geofence_and_travel()
    blocklisted_client()
    leaked_token()
    request_burst()


if __name__ == "__main__":
    main()
