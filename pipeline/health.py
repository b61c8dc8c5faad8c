"""Liveness and readiness of a worker, and the probe a container health check runs.

``HealthState`` is fed by the consume loop through ``pipeline.metrics.Metrics``
(``tick``, ``set_assigned``, ``set_lag``, ``set_stopping``) and backs the two
HTTP probes served beside ``/metrics``:

- ``/healthz`` (liveness): the process serves HTTP and the loop ticked within
  ``stall_timeout_s``. A loop stuck in a call that never returns fails it, and
  the orchestrator restarts the process.
- ``/readyz`` (readiness): live, not stopping, the consumer group handed this
  worker its partitions, and no assigned partition lags by more than
  ``ready_max_lag`` records. An empty assignment (more workers than
  partitions) counts as ready: the worker is idle, not broken.

Run ``python -m pipeline.health [healthz|readyz]`` to probe a local worker;
it exits 0 when the probe returns HTTP 200 and 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PORT = 9464
PORT_ENV = "TOKENSENTRY_METRICS__PORT"


@dataclass(frozen=True)
class ProbeResult:
    """The result of one probe: ``ok`` selects HTTP 200 or 503, and ``detail`` is the JSON body."""

    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)


class HealthState:
    """Loop ticks, partition assignment and lag, read by the probes from the HTTP thread.

    Times come from ``clock`` (monotonic seconds), so a wall-clock jump
    neither kills nor revives a worker. A lock guards the state because the
    loop writes it and the HTTP server thread reads it.
    """

    def __init__(
        self,
        *,
        stall_timeout_s: float = 120.0,
        ready_max_lag: int | None = 500_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if stall_timeout_s <= 0:
            raise ValueError(f"stall_timeout_s must be > 0 seconds, got {stall_timeout_s}")
        if ready_max_lag is not None and ready_max_lag < 0:
            raise ValueError(f"ready_max_lag must be >= 0 records or None, got {ready_max_lag}")
        self.stall_timeout_s = stall_timeout_s
        self.ready_max_lag = ready_max_lag
        self._clock = clock
        self._lock = threading.Lock()
        self._last_tick = clock()
        self._assigned: frozenset[tuple[str, int]] | None = None
        self._lag: dict[tuple[str, int], int] = {}
        self._stopping = False

    def tick(self) -> None:
        """Record that the loop made progress: polled, processed or waited on purpose."""
        with self._lock:
            self._last_tick = self._clock()

    def set_assigned(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Replace the assignment; lag of partitions no longer assigned is forgotten."""
        assigned = frozenset(partitions)
        with self._lock:
            self._assigned = assigned
            self._lag = {tp: lag for tp, lag in self._lag.items() if tp in assigned}

    def set_lag(self, partition: tuple[str, int], lag: int) -> None:
        with self._lock:
            self._lag[partition] = lag

    def set_stopping(self) -> None:
        """Mark the worker as shutting down: readiness fails from now on, liveness does not."""
        with self._lock:
            self._stopping = True

    def liveness(self) -> ProbeResult:
        with self._lock:
            age = self._clock() - self._last_tick
        detail = {"last_tick_age_s": round(age, 3), "stall_timeout_s": self.stall_timeout_s}
        if age > self.stall_timeout_s:
            detail["status"] = f"the consume loop has not ticked for {age:.1f} s (limit {self.stall_timeout_s} s)"
            return ProbeResult(False, detail)
        detail["status"] = "ok"
        return ProbeResult(True, detail)

    def readiness(self) -> ProbeResult:
        live = self.liveness()
        with self._lock:
            assigned = self._assigned
            lag = dict(self._lag)
            stopping = self._stopping
        detail: dict[str, Any] = {
            "partitions": sorted(f"{topic}/{partition}" for topic, partition in assigned or ()),
            "max_lag": max(lag.values(), default=0),
            "ready_max_lag": self.ready_max_lag,
        }
        if stopping:
            return ProbeResult(False, {**detail, "status": "stopping"})
        if not live.ok:
            return ProbeResult(False, {**detail, "status": live.detail["status"]})
        if assigned is None:
            return ProbeResult(False, {**detail, "status": "waiting for the consumer group to assign partitions"})
        if self.ready_max_lag is not None:
            behind = {tp: value for tp, value in lag.items() if value > self.ready_max_lag}
            if behind:
                (topic, partition), worst = max(behind.items(), key=lambda item: item[1])
                status = f"{len(behind)} partition(s) lag by more than {self.ready_max_lag} records; {topic}/{partition} lags by {worst}"
                return ProbeResult(False, {**detail, "status": status})
        detail["status"] = "ok" if assigned else "ok: no partitions assigned (more workers than partitions)"
        return ProbeResult(True, detail)


def probe(url: str, timeout_s: float = 3.0) -> tuple[bool, str]:
    """GET ``url``; return whether it returned HTTP 200, and a one-line description."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - the URL is the operator's
            return response.status == 200, f"{url}: HTTP {response.status} {response.read(512).decode('utf-8', 'replace')}"
    except urllib.error.HTTPError as exc:
        return False, f"{url}: HTTP {exc.code} {exc.read(512).decode('utf-8', 'replace')}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"{url}: request failed: {reason}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.health",
        description="Probe a local worker's /healthz or /readyz; exit 0 on HTTP 200, 1 otherwise.",
    )
    parser.add_argument("endpoint", nargs="?", default="healthz", choices=["healthz", "readyz"], help="probe to call (default: healthz)")
    parser.add_argument(
        "--url",
        help=f"full URL to probe (default: http://127.0.0.1:PORT/ENDPOINT, PORT from {PORT_ENV} or {DEFAULT_PORT})",
    )
    parser.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS", help="request timeout in seconds (default 3)")
    args = parser.parse_args(argv)
    port = os.environ.get(PORT_ENV) or str(DEFAULT_PORT)
    url = args.url or f"http://127.0.0.1:{port}/{args.endpoint}"
    ok, description = probe(url, args.timeout)
    print(description, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
