"""A small NGINX combined log with planted abuse, for the analyst-workflow tests.

The log covers 40 minutes of 10-second windows that end about an hour
before the test runs. It must be recent because the store's TTLs count from
event time, and chDB drops rows that are already past their TTL when they
are inserted (events after 30 days, windows after 90 days).

Planted subjects, with what the built-in policy does to them (20 req/s
limit, 300 s cooldown):

- ``FLOOD_KEY``: 2 requests per window, then 300 per window (30 req/s) in
  windows 100-102. Both detectors fire and one throttle at 20 req/s follows.
- ``SPIKE_KEY``: about 20 requests per window, then 120 (12 req/s) in
  window 150. Only ``ewma_rate`` fires (z about 20, HIGH), so one throttle
  at the default 20 req/s follows.
- ``BUSY_KEY``: 150 requests per window (15 req/s) in windows 0-29 only.
  That is below the limit and steady, so nothing happens.
- ``FLOOD_IP``: no credential, 1100 requests per window (110 req/s, over
  five times the client limit) in windows 200-201. One revoke follows.
- ``BENIGN_KEYS``: 0-5 requests per window throughout. Nothing happens.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

WINDOW_S = 10
WINDOWS = 240

FLOOD_KEY = "flood-key-3f9a1c"
SPIKE_KEY = "spike-key-77b0e2"
BUSY_KEY = "busy-key-c41d09"
BENIGN_KEYS = tuple(f"benign-key-{i:02d}" for i in range(8))
FLOOD_IP = "203.0.113.9"

FLOOD_WINDOWS = (100, 101, 102)
SPIKE_WINDOW = 150
BUSY_WINDOWS = range(0, 30)
IP_FLOOD_WINDOWS = (200, 201)

_ROUTES = ("/v1/orders", "/v1/orders/{n}", "/v1/customers/{n}", "/v1/invoices", "/v1/search")
_AGENTS = ("python-requests/2.32.3", "okhttp/4.12.0", "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0")


@dataclass(frozen=True)
class PlantedLog:
    """The written log and the event time its first window starts at."""

    path: Path
    start: float
    lines: int


def default_start(now: float | None = None) -> float:
    """Return a window-aligned start so that the log ends about an hour before ``now``."""
    now = time.time() if now is None else now
    span = WINDOWS * WINDOW_S
    return float((int(now - span - 3600) // 600) * 600)


def write_planted_log(path: Path, start: float | None = None, seed: int = 7) -> PlantedLog:
    """Write the planted log to ``path`` in event-time order and return where it starts."""
    start = default_start() if start is None else start
    rng = np.random.default_rng(seed)
    records: list[tuple[float, str]] = []

    def add(window: int, count: int, client_ip: str, key: str | None, status: int = 200) -> None:
        offsets = np.sort(rng.uniform(0.0, WINDOW_S - 0.001, count))
        for offset in offsets:
            ts = start + window * WINDOW_S + offset
            records.append((ts, _line(ts, client_ip, key, status, rng)))

    for i, key in enumerate(BENIGN_KEYS):
        for window in range(WINDOWS):
            add(window, int(rng.integers(0, 6)), f"198.51.100.{10 + i}", key)
    for window in range(WINDOWS):
        add(window, 300 if window in FLOOD_WINDOWS else 2, "192.0.2.50", FLOOD_KEY)
        add(window, 120 if window == SPIKE_WINDOW else int(rng.integers(18, 23)), "192.0.2.60", SPIKE_KEY)
    for window in BUSY_WINDOWS:
        add(window, 150, "192.0.2.70", BUSY_KEY)
    for window in IP_FLOOD_WINDOWS:
        add(window, 1100, FLOOD_IP, None, status=404)

    records.sort(key=lambda record: record[0])
    path.write_text("".join(line + "\n" for _, line in records), encoding="utf-8")
    return PlantedLog(path=path, start=start, lines=len(records))


def _line(ts: float, client_ip: str, key: str | None, status: int, rng: np.random.Generator) -> str:
    stamp = datetime.fromtimestamp(int(ts), UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
    route = _ROUTES[int(rng.integers(len(_ROUTES)))].replace("{n}", str(int(rng.integers(1, 5000))))
    target = f"{route}?api_key={key}" if key else route
    agent = _AGENTS[int(rng.integers(len(_AGENTS)))]
    size = int(rng.integers(200, 4000))
    return f'{client_ip} - - [{stamp}] "GET {target} HTTP/1.1" {status} {size} "-" "{agent}"'


@dataclass(frozen=True)
class ReplayedStore:
    """A data directory whose embedded store contains the replayed planted log, and its subject ids."""

    data_dir: Path
    log: PlantedLog
    flood_id: str
    spike_id: str
    busy_id: str
    benign_ids: tuple[str, ...]
    ip_subject: str = f"ip:{FLOOD_IP}"

    @property
    def dsn(self) -> str:
        return f"chdb://{(self.data_dir / 'store').resolve()}"


def replay_planted_log(directory: Path, batch_lines: int = 2000, start: float | None = None) -> ReplayedStore:
    """Write the planted log into ``directory`` and replay it with ``tokensentry replay``.

    ``batch_lines`` is small so that the replay, like a live pipeline, decides
    in many batches. ``start`` is passed to ``write_planted_log``. The store
    is closed again when this returns.
    """
    from pipeline.assemble import load_hasher
    from pipeline.cli import main
    from pipeline.config import load_settings

    directory.mkdir(parents=True, exist_ok=True)
    log = write_planted_log(directory / "access.log", start=start)
    config = directory / "tokensentry.yaml"
    config.write_text(f"batch_lines: {batch_lines}\n", encoding="utf-8")
    data_dir = directory / "data"
    exit_code = main(["replay", str(log.path), "--config", str(config), "--data-dir", str(data_dir), "--no-progress", "--json"])
    if exit_code != 0:
        raise RuntimeError(f"tokensentry replay of {log.path} exited with {exit_code}")
    hasher = load_hasher(load_settings(config, data_dir=data_dir))
    return ReplayedStore(
        data_dir=data_dir,
        log=log,
        flood_id=hasher.token_id(FLOOD_KEY),
        spike_id=hasher.token_id(SPIKE_KEY),
        busy_id=hasher.token_id(BUSY_KEY),
        benign_ids=tuple(hasher.token_id(key) for key in BENIGN_KEYS),
    )
