"""Two baseline systems that read the same parsed events as the pipeline.

* ``StaticLimitBaseline``: a static per-subject rate limit over tumbling
  windows, like the ``rate_limit`` detector on its own with a throttle
  policy. Each token (and each client without a token) is limited to its
  registry limit, else its plan's limit, else a default, in requests per
  second over ``window_s``.
* ``LeakyBucketBaseline``: per-client-IP leaky buckets in the style of the
  CrowdSec HTTP scenarios, with a ban on overflow.

Both consume event columns batch by batch (``observe``) in event-time
order and keep only per-subject state, then report ``Finding`` records.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.evaluate.scoring import ACTION, DETECTION, Finding
from pipeline.registry import TokenRegistry

IP_PREFIX = "ip:"


# ---- static limit ----------------------------------------------------------------


class SubjectLimits:
    """Static limits in requests per second, looked up once per subject.

    Order: the token's own ``rate_limit_rps`` in the registry, then the
    policy's limit for the token's plan, then the registry plan's
    ``rate_limit_rps``, then ``default_rps``. Subjects ``ip:<addr>``
    (requests without a credential) get ``client_rps``. The
    ``rate_limit`` detector uses the same order.
    """

    def __init__(
        self,
        registry: TokenRegistry | None,
        *,
        default_rps: float,
        client_rps: float,
        plan_limits_rps: Mapping[str, float] | None = None,
    ) -> None:
        self.registry = registry if registry is not None else TokenRegistry()
        self.default_rps = default_rps
        self.client_rps = client_rps
        self.plan_limits = {plan: record.rate_limit_rps for plan, record in self.registry.plans.items() if record.rate_limit_rps}
        self.plan_limits.update(plan_limits_rps or {})
        self._cache: dict[str, float] = {}

    def __call__(self, subjects: np.ndarray) -> np.ndarray:
        """Return the limit of each subject in ``subjects`` (an object array of ids)."""
        missing = [subject for subject in pd.unique(subjects).tolist() if subject not in self._cache]
        if missing:
            self._cache.update(zip(missing, self._compute(np.array(missing, dtype=object)).tolist(), strict=True))
        return np.fromiter((self._cache[subject] for subject in subjects.tolist()), dtype=np.float64, count=len(subjects))

    def _compute(self, subjects: np.ndarray) -> np.ndarray:
        limits = np.full(len(subjects), self.default_rps, dtype=np.float64)
        is_client = np.fromiter((s.startswith(IP_PREFIX) for s in subjects.tolist()), dtype=bool, count=len(subjects))
        limits[is_client] = self.client_rps
        rows = self.registry.lookup(subjects)
        for i in np.flatnonzero(rows >= 0).tolist():
            row = int(rows[i])
            own = float(self.registry.rate_limit_rps[row])
            plan_limit = self.plan_limits.get(str(self.registry.plan[row]))
            if not math.isnan(own):
                limits[i] = own
            elif plan_limit is not None:
                limits[i] = plan_limit
        return limits


class StaticLimitBaseline:
    """A static rate limit per subject over tumbling event-time windows.

    A window ``[k * window_s, (k + 1) * window_s)`` closes when the
    watermark (largest event time seen minus ``allowed_lateness_s``) passes
    its end, as in the pipeline. A closed window with more than
    ``limit * window_s`` requests is a detection, reported at the window's
    end. It is also a ``throttle`` action unless the subject is still
    throttled by an earlier action: a throttle lasts ``throttle_s``, as the
    built-in policy's ``rate-limit-throttle`` rule does.
    """

    name = "static_limit"

    def __init__(
        self,
        limits: Callable[[np.ndarray], np.ndarray],
        *,
        window_s: float = 10.0,
        allowed_lateness_s: float = 5.0,
        throttle_s: float = 600.0,
    ) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.limits = limits
        self.window_s = window_s
        self.allowed_lateness_s = allowed_lateness_s
        self.throttle_s = throttle_s
        self.findings: list[Finding] = []
        self._open: dict[int, dict[str, int]] = {}
        self._throttled_until: dict[str, float] = {}
        self._watermark = -math.inf
        self.late_events = 0

    def observe(self, events: dict[str, np.ndarray]) -> None:
        """Count one batch of events into their windows and close the windows the watermark passed."""
        ts = events["ts"]
        if len(ts) == 0:
            return
        window = np.floor(ts / self.window_s).astype(np.int64)
        late = (window + 1) * self.window_s <= self._watermark
        self.late_events += int(late.sum())
        counts = pd.DataFrame({"window": window[~late], "subject": events["subject_id"][~late]}).value_counts(sort=False)
        for (k, subject), count in counts.items():
            bucket = self._open.setdefault(int(k), {})
            bucket[subject] = bucket.get(subject, 0) + int(count)
        self._watermark = max(self._watermark, float(ts.max()) - self.allowed_lateness_s)
        self._close(lambda k: (k + 1) * self.window_s <= self._watermark)

    def finish(self) -> None:
        """Close every open window (end of input)."""
        self._close(lambda k: True)

    def _close(self, is_due: Callable[[int], bool]) -> None:
        for k in sorted(k for k in self._open if is_due(k)):
            counts = self._open.pop(k)
            subjects = np.array(list(counts), dtype=object)
            requests = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
            over = requests > self.limits(subjects) * self.window_s
            start, end = k * self.window_s, (k + 1) * self.window_s
            for subject in subjects[over].tolist():
                self._report(subject, start, end)

    def _report(self, subject: str, start: float, end: float) -> None:
        network = subject[len(IP_PREFIX) :] if subject.startswith(IP_PREFIX) else ""
        self.findings.append(Finding(DETECTION, subject, network, start, end, end, "rate_limit"))
        if self._throttled_until.get(subject, -math.inf) > end:
            return
        self._throttled_until[subject] = end + self.throttle_s
        self.findings.append(Finding(ACTION, subject, network, start, end, end, "throttle"))


# ---- leaky buckets ---------------------------------------------------------------

STATIC_EXTENSIONS = (".jpg", ".css", ".js", ".jpeg", ".png", ".svg")
"""File extensions CrowdSec's crowdsecurity/http-logs enricher marks as static resources."""


@dataclass(frozen=True)
class BucketScenario:
    """One CrowdSec-style leaky bucket scenario, grouped by client IP.

    ``statuses`` and ``methods`` select the events poured (empty: any);
    ``excluded_methods`` drops methods; ``non_static`` keeps only paths
    without a static-file extension. With ``distinct`` (``path`` or
    ``file_name``, the last path segment), ``run_buckets`` pours each value
    at most once per bucket lifetime, as CrowdSec's ``distinct`` does.
    """

    name: str
    capacity: int
    leak_s: float
    blackhole_s: float
    statuses: tuple[int, ...] = ()
    methods: tuple[str, ...] = ()
    excluded_methods: tuple[str, ...] = ()
    non_static: bool = False
    distinct: str | None = None

    def select(self, events: dict[str, np.ndarray]) -> np.ndarray:
        """Return the mask of events this scenario pours (its ``filter``)."""
        mask = np.ones(len(events["ts"]), dtype=bool)
        if self.statuses:
            mask &= np.isin(events["status"], self.statuses)
        if self.methods:
            mask &= pd.Index(events["method"]).isin(self.methods)
        if self.excluded_methods:
            mask &= ~pd.Index(events["method"]).isin(self.excluded_methods)
        if self.non_static:
            mask &= ~pd.Series(events["path"], dtype=object).str.lower().str.endswith(STATIC_EXTENSIONS).to_numpy(dtype=bool)
        return mask

    def distinct_values(self, events: dict[str, np.ndarray], mask: np.ndarray) -> np.ndarray | None:
        if self.distinct is None:
            return None
        paths = events["path"][mask]
        if self.distinct == "path":
            return paths
        return pd.Series(paths, dtype=object).str.rpartition("/")[2].to_numpy(dtype=object)


# Parameters of the scenarios in CrowdSec's base HTTP collection, as published
# in the crowdsecurity/hub repository (scenarios/crowdsecurity/*.yaml).
# NOTE: buckets are grouped by client IP only. Some hub versions group crawl
# and probing by client IP and host, which can only split buckets further.
CROWDSEC_HTTP_SCENARIOS: tuple[BucketScenario, ...] = (
    BucketScenario(
        "http-crawl-non_statics", capacity=40, leak_s=0.5, blackhole_s=60.0,
        methods=("GET", "HEAD"), non_static=True, distinct="file_name",
    ),
    BucketScenario(
        "http-generic-401-bf", capacity=5, leak_s=10.0, blackhole_s=60.0,
        statuses=(401,), excluded_methods=("OPTIONS", "PROPFIND", "REPORT"),
    ),
    BucketScenario(
        "http-generic-403-bf", capacity=5, leak_s=10.0, blackhole_s=60.0,
        statuses=(403,), excluded_methods=("OPTIONS", "PROPFIND", "REPORT"),
    ),
    BucketScenario(
        "http-probing", capacity=10, leak_s=10.0, blackhole_s=300.0,
        statuses=(404, 403, 400), non_static=True, distinct="path",
    ),
)

DEFAULT_BAN_S = 4 * 3600.0
"""Ban duration of CrowdSec's default profile (``default_ip_remediation``: ban, 4h)."""


@dataclass(slots=True)
class _Bucket:
    """One live bucket: the token-bucket limiter of Go's ``rate.Limiter`` plus the distinct-value cache."""

    tokens: float
    last: float
    last_pour: float
    seen: set = field(default_factory=set)


def run_buckets(
    scenario: BucketScenario,
    clients: np.ndarray,
    ts: np.ndarray,
    distinct: np.ndarray | None,
    buckets: dict[str, _Bucket],
    blackholed_until: dict[str, float],
) -> list[tuple[str, float]]:
    """Pour events (sorted by client, then time) into the scenario's buckets; return ``(client, time)`` overflows.

    The semantics follow CrowdSec's ``pkg/leakybucket`` (crowdsecurity/crowdsec).
    A bucket is a Go ``rate.Limiter`` with ``burst = capacity`` that starts
    full and regains one token per ``leak_s``. A pour that finds less than
    one token overflows the bucket, which is then destroyed. A bucket with
    no pour for ``(capacity + 1) * leak_s`` underflows and is destroyed too.
    With ``distinct``, a value already poured into the live bucket is
    dropped before the limiter. An overflow within ``blackhole_s`` of the
    client's last reported overflow is discarded. ``buckets`` and
    ``blackholed_until`` carry the state between batches.
    """
    capacity = float(scenario.capacity)
    rate = 1.0 / scenario.leak_s
    lifetime = (scenario.capacity + 1) * scenario.leak_s
    overflows: list[tuple[str, float]] = []
    client_list = clients.tolist()
    time_list = ts.tolist()
    values = distinct.tolist() if distinct is not None else None
    for i, client in enumerate(client_list):
        t = time_list[i]
        bucket = buckets.get(client)
        if bucket is None or t - bucket.last_pour > lifetime:
            bucket = _Bucket(tokens=capacity, last=t, last_pour=t)
            buckets[client] = bucket
        if values is not None:
            value = values[i]
            if value in bucket.seen:
                continue
            bucket.seen.add(value)
        bucket.last_pour = t
        # Like Go's limiter, an event older than the last pour refills nothing.
        tokens = min(capacity, bucket.tokens + max(0.0, t - bucket.last) * rate)
        if tokens >= 1.0:
            bucket.tokens = tokens - 1.0
            bucket.last = t
            continue
        del buckets[client]
        if blackholed_until.get(client, -math.inf) > t:
            continue
        blackholed_until[client] = t + scenario.blackhole_s
        overflows.append((client, t))
    return overflows


class LeakyBucketBaseline:
    """Per-client-IP leaky buckets in the style of CrowdSec's HTTP scenarios, with a ban on overflow.

    Every reported overflow is a detection. It is also a ``ban`` action on
    the client IP unless the client is still banned: a ban lasts ``ban_s``
    (CrowdSec's default profile bans for 4 hours). The buckets keep pouring
    while a client is banned, because the agent still reads the log lines.
    """

    name = "leaky_bucket"

    def __init__(self, scenarios: Sequence[BucketScenario] = CROWDSEC_HTTP_SCENARIOS, *, ban_s: float = DEFAULT_BAN_S) -> None:
        self.scenarios = tuple(scenarios)
        self.ban_s = ban_s
        self.findings: list[Finding] = []
        self._buckets: list[dict[str, _Bucket]] = [{} for _ in self.scenarios]
        self._blackholes: list[dict[str, float]] = [{} for _ in self.scenarios]
        self._banned_until: dict[str, float] = {}
        self.overflows_by_scenario: dict[str, int] = {scenario.name: 0 for scenario in self.scenarios}

    def observe(self, events: dict[str, np.ndarray]) -> None:
        """Pour one batch of events into every scenario's buckets and turn overflows into bans."""
        if len(events["ts"]) == 0:
            return
        overflows: list[tuple[float, str, str]] = []
        for number, scenario in enumerate(self.scenarios):
            mask = scenario.select(events)
            if not mask.any():
                continue
            clients = events["client_ip"][mask]
            ts = events["ts"][mask]
            distinct = scenario.distinct_values(events, mask)
            client_codes, _ = pd.factorize(clients)
            order = np.lexsort((ts, client_codes))
            found = run_buckets(
                scenario,
                clients[order],
                ts[order],
                distinct[order] if distinct is not None else None,
                self._buckets[number],
                self._blackholes[number],
            )
            self.overflows_by_scenario[scenario.name] += len(found)
            overflows.extend((t, client, scenario.name) for client, t in found)
        for t, client, scenario_name in sorted(overflows):
            self._report(client, t, scenario_name)

    def finish(self) -> None:
        """Nothing is pending at the end of input: overflows are reported as they happen."""

    def _report(self, client: str, t: float, scenario_name: str) -> None:
        subject = IP_PREFIX + client
        self.findings.append(Finding(DETECTION, subject, client, t, t, t, scenario_name))
        if self._banned_until.get(client, -math.inf) > t:
            return
        self._banned_until[client] = t + self.ban_s
        self.findings.append(Finding(ACTION, "", client, t, t, t, "ban"))
