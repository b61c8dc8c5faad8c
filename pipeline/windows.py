"""Event-time tumbling windows per subject, with a watermark and allowed lateness.

Windows are ``[k * size, (k + 1) * size)`` in event time. The watermark is
the largest event time seen minus ``allowed_lateness``; every window that
ends at or before the watermark is closed and its features are computed
in one vectorized pass. An event whose window already closed is *late*: it
is flagged (``late`` column), counted and still written to the audit trail,
but it changes no closed window.

Besides the per-subject feature matrix, each closed batch carries what the
rules need, computed in the same vectorized pass (no Python loop over events):

* ``pairs``: for ``client_ip``, ``country``, ``origin`` and ``route``, one row
  per distinct (window, value) with its request and 401/403 counts
  (``PairTable``). Rules compare these with the token registry: countries
  outside a geofence, origins not allowed, routes outside the scopes.
* ``clients``: per-client-IP windows (``ClientWindowBatch``) with requests,
  401/403 count, distinct subjects and distinct failing subjects, the unit of
  credential stuffing and brute force.

When a ``country_lookup`` is given, events whose gateway logged no country
get the country of their client IP before any feature is computed.

>>> import numpy as np
>>> windows = TumblingWindows(size_s=10, allowed_lateness_s=0)
>>> events = {"ts": np.array([1.0, 2.0, 12.0]), "subject_id": np.array(["a", "a", "a"], dtype=object)}
>>> closed = windows.add(_with_defaults(events))
>>> closed.size, float(closed.features[0, 0])
(1, 2.0)
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.factorize import factorize_strings
from pipeline.hashing import hash_pair
from pipeline.identity import prefixed_strings
from pipeline.state import subject_keys
from schemas.events import EVENT_COLUMNS, SubjectKind
from schemas.windows import CLIENT_WINDOW_FEATURES, PAIR_COLUMNS, WINDOW_FEATURES, WINDOW_KEYS

logger = logging.getLogger(__name__)

FEATURE_NAMES: tuple[str, ...] = tuple(WINDOW_FEATURES)
FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(FEATURE_NAMES)}
CLIENT_FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLIENT_WINDOW_FEATURES)}
CLIENT_SUBJECT_PREFIX = "ip:"

CountryLookup = Callable[[np.ndarray], np.ndarray]
"""Maps an object array of client IPs to an object array of ISO country codes ("" when unknown)."""


@dataclass(slots=True)
class PairTable:
    """Distinct (window row, value) pairs of one event column, sorted by row.

    ``rows[i]`` is a row of the window batch, ``values[i]`` a value seen in
    that window ("" when the gateway did not log the field), ``requests[i]``
    the window's requests with that value and ``failures[i]`` those that
    were not served: status 400 or above (rejected credentials, 429 from the
    gateway's own limit, errors).
    """

    rows: np.ndarray
    values: np.ndarray
    requests: np.ndarray
    failures: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    @staticmethod
    def empty() -> PairTable:
        return PairTable(
            rows=np.empty(0, dtype=np.int64),
            values=np.empty(0, dtype=object),
            requests=np.empty(0, dtype=np.float64),
            failures=np.empty(0, dtype=np.float64),
        )

    def select_rows(self, mask: np.ndarray) -> PairTable:
        """Return the pairs of the windows where ``mask`` is True, renumbered as after ``mask``."""
        new_row = np.cumsum(mask) - 1
        keep = mask[self.rows]
        return PairTable(
            rows=new_row[self.rows[keep]],
            values=self.values[keep],
            requests=self.requests[keep],
            failures=self.failures[keep],
        )

    @staticmethod
    def concat(tables: list[PairTable], row_offsets: list[int]) -> PairTable:
        return PairTable(
            rows=np.concatenate([t.rows + offset for t, offset in zip(tables, row_offsets, strict=True)]),
            values=np.concatenate([t.values for t in tables]),
            requests=np.concatenate([t.requests for t in tables]),
            failures=np.concatenate([t.failures for t in tables]),
        )


@dataclass(slots=True)
class ClientWindowBatch:
    """Closed per-client-IP windows: what one client address did in one window, over all subjects.

    ``keys`` has the columns of ``WINDOW_KEYS`` plus ``client_ip``, so
    detections are built the same way as for token windows: ``subject_id``
    is ``ip:<addr>``, ``subject_kind`` is ``SubjectKind.CLIENT_IP`` and
    ``account`` is empty. Window ids are derived from ``client:<addr>``, so
    they never equal the id of the token window of an unauthenticated
    subject ``ip:<addr>``. ``features`` columns follow ``CLIENT_WINDOW_FEATURES``.
    """

    keys: dict[str, np.ndarray]
    features: np.ndarray

    @property
    def size(self) -> int:
        return int(self.features.shape[0])

    def feature(self, name: str) -> np.ndarray:
        """Return one feature column by name (a view, not a copy)."""
        return self.features[:, CLIENT_FEATURE_INDEX[name]]

    @staticmethod
    def empty() -> ClientWindowBatch:
        keys = {name: np.empty(0, dtype=dtype) for name, dtype in WINDOW_KEYS.items()}
        keys["client_ip"] = np.empty(0, dtype=object)
        return ClientWindowBatch(keys=keys, features=np.empty((0, len(CLIENT_WINDOW_FEATURES)), dtype=np.float64))

    @staticmethod
    def concat(batches: list[ClientWindowBatch]) -> ClientWindowBatch:
        batches = [batch for batch in batches if batch.size]
        if not batches:
            return ClientWindowBatch.empty()
        if len(batches) == 1:
            return batches[0]
        return ClientWindowBatch(
            keys={name: np.concatenate([b.keys[name] for b in batches]) for name in batches[0].keys},
            features=np.concatenate([b.features for b in batches]),
        )


@dataclass(slots=True)
class WindowBatch:
    """Closed windows: identifying columns plus an ``(n, len(FEATURE_NAMES))`` float64 matrix.

    ``slots`` is filled by the state stage with each subject's row in the
    per-subject arrays; it is -1 until then. ``pairs`` (keyed by the names in
    ``PAIR_COLUMNS``) and ``clients`` are None for batches built by hand;
    rules that need them then find nothing. ``cache`` contains values
    derived from the batch that several detectors share (registry rows,
    account aggregates), keyed by the deriving function.
    """

    keys: dict[str, np.ndarray]
    features: np.ndarray
    slots: np.ndarray
    pairs: dict[str, PairTable] | None = None
    clients: ClientWindowBatch | None = None
    cache: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.features.shape[0])

    def feature(self, name: str) -> np.ndarray:
        """Return one feature column by name (a view, not a copy)."""
        return self.features[:, FEATURE_INDEX[name]]

    def select(self, mask: np.ndarray) -> WindowBatch:
        """Return the windows where ``mask`` is True, with their pairs; client windows are kept whole."""
        pairs = None
        if self.pairs is not None:
            pairs = {name: table.select_rows(mask) for name, table in self.pairs.items()}
        return WindowBatch(
            keys={name: column[mask] for name, column in self.keys.items()},
            features=self.features[mask],
            slots=self.slots[mask],
            pairs=pairs,
            clients=self.clients,
        )

    def columns(self) -> dict[str, np.ndarray]:
        """Return keys and features as one dict of columns, the store's input."""
        merged = dict(self.keys)
        for name, index in FEATURE_INDEX.items():
            merged[name] = self.features[:, index]
        return merged

    @staticmethod
    def empty() -> WindowBatch:
        return WindowBatch(
            keys={name: np.empty(0, dtype=dtype) for name, dtype in WINDOW_KEYS.items()},
            features=np.empty((0, len(FEATURE_NAMES)), dtype=np.float64),
            slots=np.empty(0, dtype=np.int64),
        )

    @staticmethod
    def concat(batches: list[WindowBatch]) -> WindowBatch:
        batches = [batch for batch in batches if batch.size]
        if not batches:
            return WindowBatch.empty()
        if len(batches) == 1:
            return batches[0]
        pairs = None
        if all(b.pairs is not None for b in batches):
            offsets = np.cumsum([0] + [b.size for b in batches[:-1]]).tolist()
            pairs = {name: PairTable.concat([b.pairs[name] for b in batches], offsets) for name in PAIR_COLUMNS}
        clients = None
        if any(b.clients is not None for b in batches):
            clients = ClientWindowBatch.concat([b.clients for b in batches if b.clients is not None])
        return WindowBatch(
            keys={name: np.concatenate([b.keys[name] for b in batches]) for name in WINDOW_KEYS},
            features=np.concatenate([b.features for b in batches]),
            slots=np.concatenate([b.slots for b in batches]),
            pairs=pairs,
            clients=clients,
        )


class TumblingWindows:
    """Buffers events of open windows and closes them as the watermark advances.

    Memory is bounded by the events of ``size_s + allowed_lateness_s``
    seconds of event time, plus whatever a source delivers out of order
    within that span.
    """

    def __init__(
        self,
        size_s: float = 10.0,
        allowed_lateness_s: float = 5.0,
        country_lookup: CountryLookup | None = None,
    ) -> None:
        if size_s <= 0:
            raise ValueError(f"window size must be positive seconds, got {size_s!r}")
        if allowed_lateness_s < 0:
            raise ValueError(f"allowed lateness must be >= 0 seconds, got {allowed_lateness_s!r}")
        self.size_s = float(size_s)
        self.allowed_lateness_s = float(allowed_lateness_s)
        self.max_event_time = -np.inf
        self.closed_until = -np.inf
        """Every window ending at or before this event time is closed."""
        self._pending: list[dict[str, np.ndarray]] = []
        self.late_events = 0
        self.country_lookup = country_lookup
        """Fills the country of events whose gateway logged none; None keeps only logged countries."""

    @property
    def watermark(self) -> float:
        return self.max_event_time - self.allowed_lateness_s

    @property
    def pending_events(self) -> int:
        return sum(len(part["ts"]) for part in self._pending)

    def add(self, events: dict[str, np.ndarray]) -> WindowBatch:
        """Take one event batch, flag its late events in place, and return windows it closed."""
        ts = events["ts"]
        if len(ts) == 0:
            return WindowBatch.empty()
        window_end = (np.floor(ts / self.size_s) + 1.0) * self.size_s
        late = window_end <= self.closed_until
        events["late"] = late
        late_count = int(late.sum())
        if late_count:
            self.late_events += late_count
            logger.debug("%d late events before %.3f", late_count, self.closed_until)
            on_time = ~late
            self._pending.append({name: events[name][on_time] for name in _WINDOW_INPUTS})
        else:
            self._pending.append({name: events[name] for name in _WINDOW_INPUTS})
        self.max_event_time = max(self.max_event_time, float(ts.max()))
        boundary = np.floor(self.watermark / self.size_s) * self.size_s
        if boundary <= self.closed_until:
            return WindowBatch.empty()
        return self._close_before(boundary)

    def flush(self) -> WindowBatch:
        """Close every open window, as at the end of a replayed input.

        The event-time clock starts over afterwards, so the next input (another
        file) is a new stream whose events are not late against this one.
        """
        closed = self._close_before(np.inf) if self._pending else WindowBatch.empty()
        self.max_event_time = -np.inf
        self.closed_until = -np.inf
        return closed

    def _close_before(self, boundary: float) -> WindowBatch:
        pending = _concat_events(self._pending)
        ready = pending["ts"] < boundary
        self.closed_until = max(self.closed_until, boundary)
        lookup = getattr(self, "country_lookup", None)  # absent in checkpoints written before it existed
        if ready.all():
            self._pending = []
            return compute_features(pending, self.size_s, country_lookup=lookup)
        self._pending = [{name: column[~ready] for name, column in pending.items()}]
        if not ready.any():
            return WindowBatch.empty()
        ready_events = {name: column[ready] for name, column in pending.items()}
        return compute_features(ready_events, self.size_s, country_lookup=lookup)


# Event columns the window stage reads; the rest are only stored.
_WINDOW_INPUTS = (
    "ts",
    "subject_id",
    "subject_kind",
    "account",
    "client_ip",
    "route",
    "status",
    "latency_ms",
    "bytes_in",
    "bytes_out",
    "user_agent",
    "origin",
    "country",
    "device_id",
    "offset",
)


def _concat_events(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _with_defaults(events: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Fill missing event columns with empty values (for examples and tests)."""
    n = len(events["ts"])
    full = {}
    for name, dtype in EVENT_COLUMNS.items():
        if name in events:
            full[name] = events[name]
        elif dtype == np.dtype(object):
            full[name] = np.full(n, "", dtype=object)
        elif name == "latency_ms":
            full[name] = np.full(n, np.nan, dtype=dtype)
        else:
            full[name] = np.zeros(n, dtype=dtype)
    return full


@functools.lru_cache(maxsize=1 << 18)
def network_of(address: str) -> str:
    """Return the /24 (IPv4) or /48 (IPv6) network of an address, the unit for 'networks'."""
    if ":" in address:
        return ":".join(address.split(":")[:3]) + "::/48"
    head, _, _ = address.rpartition(".")
    return head + ".0/24" if head else address


def _distinct_nonempty_codes(
    group: np.ndarray, codes: np.ndarray, uniques: np.ndarray, n_groups: int
) -> np.ndarray:
    """Count distinct codes per group, leaving out the code of "" (a value the gateway did not log)."""
    empty = np.flatnonzero(uniques == "")
    if len(empty) == 0:
        return _distinct_codes_per_group(group, codes, len(uniques), n_groups)
    present = codes != empty[0]
    return _distinct_codes_per_group(group[present], codes[present], len(uniques), n_groups)


def window_ids(subject_ids: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Derive a deterministic 64-bit id per (subject, window start).

    The id hashes the subject's 64-bit key (``state.subject_keys``) with the
    start in whole milliseconds, so it is computed once per distinct subject.
    """
    codes, subjects = factorize_strings(np.asarray(subject_ids, dtype=object))
    keys, _ = subject_keys(subjects)
    return _window_ids_from_keys(keys[codes], starts)


def _window_ids_from_keys(keys: np.ndarray, starts: np.ndarray) -> np.ndarray:
    start_ms = np.rint(np.asarray(starts, dtype=np.float64) * 1000.0).astype(np.int64).view(np.uint64)
    return hash_pair(keys, start_ms)


@dataclass(slots=True)
class _Factorized:
    """Codes and uniques of one string column of the event batch."""

    codes: np.ndarray
    uniques: np.ndarray

    @staticmethod
    def of(values: np.ndarray) -> _Factorized:
        codes, uniques = factorize_strings(values)
        return _Factorized(codes, uniques)


def compute_features(
    events: dict[str, np.ndarray],
    size_s: float,
    *,
    country_lookup: CountryLookup | None = None,
) -> WindowBatch:
    """Compute the features of every (subject, window) found in ``events``.

    All work is vectorized: each string column is factorized once, then
    bincounts give counts and sums and one sort gives latency quantiles
    (the "lower" method: an observed value, never an interpolation). The
    pair tables and client windows reuse the same codes.
    """
    ts = events["ts"]
    if len(ts) == 0:
        return WindowBatch.empty()
    window_index = np.floor(ts / size_s).astype(np.int64)
    window_offset = window_index - window_index.min()
    subjects = _Factorized.of(events["subject_id"])
    combined = window_offset * len(subjects.uniques) + subjects.codes
    group, group_keys = pd.factorize(combined, sort=True)
    n_groups = len(group_keys)

    first = np.zeros(n_groups, dtype=np.int64)
    first[group[::-1]] = np.arange(len(group))[::-1]
    requests = np.bincount(group, minlength=n_groups).astype(np.float64)
    status = events["status"]
    failing = (status == 401) | (status == 403)

    def ratio(mask: np.ndarray) -> np.ndarray:
        return np.bincount(group, weights=mask, minlength=n_groups) / requests

    ips = _Factorized.of(events["client_ip"])
    networks = _networks(ips)
    agents = _Factorized.of(events["user_agent"])
    routes = _Factorized.of(events["route"])
    countries = _Factorized.of(_resolve_countries(events["country"], events["client_ip"], country_lookup))
    devices = _Factorized.of(events["device_id"])
    origins = _Factorized.of(_column(events, "origin"))

    latency_p50, latency_p95 = _latency_quantiles(group, events["latency_ms"], n_groups)
    features = np.empty((n_groups, len(FEATURE_NAMES)), dtype=np.float64)
    features[:, FEATURE_INDEX["requests"]] = requests
    features[:, FEATURE_INDEX["ratio_4xx"]] = ratio((status >= 400) & (status < 500))
    features[:, FEATURE_INDEX["ratio_401_403"]] = ratio(failing)
    features[:, FEATURE_INDEX["ratio_429"]] = ratio(status == 429)
    features[:, FEATURE_INDEX["ratio_5xx"]] = ratio(status >= 500)
    features[:, FEATURE_INDEX["distinct_ips"]] = _distinct_codes_per_group(group, ips.codes, len(ips.uniques), n_groups)
    features[:, FEATURE_INDEX["distinct_networks"]] = _distinct_codes_per_group(
        group, networks.codes, len(networks.uniques), n_groups
    )
    features[:, FEATURE_INDEX["distinct_user_agents"]] = _distinct_codes_per_group(
        group, agents.codes, len(agents.uniques), n_groups
    )
    features[:, FEATURE_INDEX["distinct_routes"]] = _distinct_codes_per_group(
        group, routes.codes, len(routes.uniques), n_groups
    )
    features[:, FEATURE_INDEX["distinct_countries"]] = _distinct_nonempty_codes(
        group, countries.codes, countries.uniques, n_groups
    )
    features[:, FEATURE_INDEX["distinct_devices"]] = _distinct_nonempty_codes(
        group, devices.codes, devices.uniques, n_groups
    )
    features[:, FEATURE_INDEX["bytes_in"]] = np.bincount(
        group, weights=np.maximum(events["bytes_in"], 0), minlength=n_groups
    )
    features[:, FEATURE_INDEX["bytes_out"]] = np.bincount(
        group, weights=np.maximum(events["bytes_out"], 0), minlength=n_groups
    )
    features[:, FEATURE_INDEX["latency_p50_ms"]] = latency_p50
    features[:, FEATURE_INDEX["latency_p95_ms"]] = latency_p95

    first_offset, last_offset = _offset_range(group, events["offset"], n_groups)
    starts = window_index[first].astype(np.float64) * size_s
    subject_keys_by_code, _ = subject_keys(subjects.uniques)
    keys = {
        "window_id": _window_ids_from_keys(subject_keys_by_code[subjects.codes[first]], starts),
        "subject_id": events["subject_id"][first],
        "subject_kind": events["subject_kind"][first],
        "account": events["account"][first],
        "window_start": starts,
        "window_end": starts + size_s,
        "first_offset": first_offset,
        "last_offset": last_offset,
    }
    not_served = status >= 400
    pairs = {
        name: _pair_table(group, column.codes, column.uniques, not_served)
        for name, column in (("client_ip", ips), ("country", countries), ("origin", origins), ("route", routes))
    }
    clients = _client_windows(events, window_index, size_s, ips, agents, subjects, failing)
    return WindowBatch(
        keys=keys,
        features=features,
        slots=np.full(n_groups, -1, dtype=np.int64),
        pairs=pairs,
        clients=clients,
    )


def _column(events: dict[str, np.ndarray], name: str) -> np.ndarray:
    """Return a string column, or empty strings when the batch lacks it (older checkpoints)."""
    column = events.get(name)
    if column is None:
        return np.full(len(events["ts"]), "", dtype=object)
    return column


def _resolve_countries(countries: np.ndarray, client_ips: np.ndarray, lookup: CountryLookup | None) -> np.ndarray:
    """Fill empty countries with the country of the client IP; one lookup per distinct address."""
    if lookup is None or len(countries) == 0:
        return countries
    missing = countries == ""
    if not missing.any():
        return countries
    codes, addresses = pd.factorize(client_ips[missing], use_na_sentinel=False)
    found = np.asarray(lookup(np.asarray(addresses, dtype=object)), dtype=object)
    resolved = countries.copy()
    resolved[missing] = found[codes]
    return resolved


def _offset_range(group: np.ndarray, offsets: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    first_offset = np.full(n_groups, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_offset, group, offsets)
    last_offset = np.full(n_groups, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last_offset, group, offsets)
    return first_offset, last_offset


def _distinct_codes_per_group(group: np.ndarray, codes: np.ndarray, n_codes: int, n_groups: int) -> np.ndarray:
    """Count distinct integer ``codes`` (0 <= code < n_codes) within each group id."""
    width = max(n_codes, 1)
    pairs = pd.unique(group.astype(np.int64) * width + codes)
    return np.bincount(pairs // width, minlength=n_groups).astype(np.float64)


def _pair_table(group: np.ndarray, codes: np.ndarray, uniques, failing: np.ndarray) -> PairTable:
    """Build the (window, value) pairs of one factorized column with request and 401/403 counts."""
    if len(group) == 0:
        return PairTable.empty()
    width = max(len(uniques), 1)
    pair_codes, pair_keys = pd.factorize(group.astype(np.int64) * width + codes, sort=True)
    values = np.asarray(uniques, dtype=object)
    return PairTable(
        rows=(pair_keys // width).astype(np.int64),
        values=values[pair_keys % width],
        requests=np.bincount(pair_codes, minlength=len(pair_keys)).astype(np.float64),
        failures=np.bincount(pair_codes, weights=failing, minlength=len(pair_keys)),
    )


def _client_windows(
    events: dict[str, np.ndarray],
    window_index: np.ndarray,
    size_s: float,
    ips: _Factorized,
    agents: _Factorized,
    subjects: _Factorized,
    failing: np.ndarray,
) -> ClientWindowBatch:
    """Group events by (client IP, window): requests, 401/403, distinct and failing subjects."""
    if len(window_index) == 0:
        return ClientWindowBatch.empty()
    n_ips = max(len(ips.uniques), 1)
    n_subjects = len(subjects.uniques)
    base = window_index.min()
    group, group_keys = pd.factorize((window_index - base) * n_ips + ips.codes, sort=True)
    n_groups = len(group_keys)
    features = np.empty((n_groups, len(CLIENT_WINDOW_FEATURES)), dtype=np.float64)
    features[:, CLIENT_FEATURE_INDEX["requests"]] = np.bincount(group, minlength=n_groups)
    features[:, CLIENT_FEATURE_INDEX["failures_401_403"]] = np.bincount(group, weights=failing, minlength=n_groups)
    features[:, CLIENT_FEATURE_INDEX["distinct_subjects"]] = _distinct_codes_per_group(
        group, subjects.codes, n_subjects, n_groups
    )
    features[:, CLIENT_FEATURE_INDEX["distinct_failing_subjects"]] = _distinct_codes_per_group(
        group[failing], subjects.codes[failing], n_subjects, n_groups
    )
    features[:, CLIENT_FEATURE_INDEX["distinct_user_agents"]] = _distinct_codes_per_group(
        group, agents.codes, len(agents.uniques), n_groups
    )
    ip_codes = group_keys % n_ips
    client_ips = ips.uniques[ip_codes]
    starts = ((group_keys // n_ips) + base).astype(np.float64) * size_s
    first_offset, last_offset = _offset_range(group, events["offset"], n_groups)
    subject_ids = prefixed_strings(CLIENT_SUBJECT_PREFIX, ips.uniques)[ip_codes]
    client_keys, _ = subject_keys(prefixed_strings("client:", ips.uniques))
    keys = {
        "window_id": _window_ids_from_keys(client_keys[ip_codes], starts),
        "subject_id": subject_ids,
        "subject_kind": np.full(n_groups, SubjectKind.CLIENT_IP, dtype=np.uint8),
        "account": np.full(n_groups, "", dtype=object),
        "window_start": starts,
        "window_end": starts + size_s,
        "first_offset": first_offset,
        "last_offset": last_offset,
        "client_ip": client_ips,
    }
    return ClientWindowBatch(keys=keys, features=features)



def _networks(ips: _Factorized) -> _Factorized:
    """Factorize the network (``network_of``) of each event's client IP, one lookup per distinct IP."""
    by_ip = np.empty(len(ips.uniques), dtype=object)
    by_ip[:] = [network_of(address) for address in ips.uniques.tolist()]
    network_codes, networks = factorize_strings(by_ip)
    return _Factorized(network_codes[ips.codes], networks)


def _latency_quantiles(group: np.ndarray, latency: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    valid = ~np.isnan(latency)
    p50 = np.full(n_groups, np.nan)
    p95 = np.full(n_groups, np.nan)
    if not valid.any():
        return p50, p95
    valid_group = group[valid]
    order = np.lexsort((latency[valid], valid_group))
    sorted_latency = latency[valid][order].astype(np.float64)
    counts = np.bincount(valid_group, minlength=n_groups)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    has = counts > 0
    p50[has] = sorted_latency[starts[has] + ((counts[has] - 1) * 0.50).astype(np.int64)]
    p95[has] = sorted_latency[starts[has] + ((counts[has] - 1) * 0.95).astype(np.int64)]
    return p50, p95
