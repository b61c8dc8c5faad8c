"""Per-token window features: what one subject did in one event-time window."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

WINDOW_SCHEMA_VERSION = 1

# Feature name -> dtype, in the order detectors see them as matrix columns.
# Ratios are fractions of ``requests`` in [0, 1]; latency is in milliseconds
# (NaN when the gateway does not log it); bytes are summed over the window.
WINDOW_FEATURES: dict[str, np.dtype] = {
    "requests": np.dtype(np.float64),
    "ratio_4xx": np.dtype(np.float64),
    "ratio_401_403": np.dtype(np.float64),
    "ratio_429": np.dtype(np.float64),
    "ratio_5xx": np.dtype(np.float64),
    "distinct_ips": np.dtype(np.float64),
    "distinct_networks": np.dtype(np.float64),
    "distinct_user_agents": np.dtype(np.float64),
    "distinct_routes": np.dtype(np.float64),
    "distinct_countries": np.dtype(np.float64),
    "distinct_devices": np.dtype(np.float64),
    "bytes_in": np.dtype(np.float64),
    "bytes_out": np.dtype(np.float64),
    "latency_p50_ms": np.dtype(np.float64),
    "latency_p95_ms": np.dtype(np.float64),
}

# Identifying columns of a window batch, beside the feature matrix.
WINDOW_KEYS: dict[str, np.dtype] = {
    "window_id": np.dtype(np.uint64),
    "subject_id": np.dtype(object),
    "subject_kind": np.dtype(np.uint8),
    "account": np.dtype(object),
    "window_start": np.dtype(np.float64),
    "window_end": np.dtype(np.float64),
    "first_offset": np.dtype(np.int64),
    "last_offset": np.dtype(np.int64),
}


class WindowFeatures(BaseModel):
    """One closed window of one subject, as stored in the ``windows`` table.

    The window covers event times ``[window_start, window_end)`` in seconds
    since the Unix epoch; it is closed once the watermark passes its end.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = WINDOW_SCHEMA_VERSION
    window_id: int
    subject_id: str
    subject_kind: int
    account: str = ""
    window_start: float
    window_end: float
    first_offset: int = Field(description="Smallest source offset of an event in the window.")
    last_offset: int
    features: dict[str, float] = Field(description="Values keyed by the names in WINDOW_FEATURES.")


# Per-client-IP window features, in matrix column order. Credential stuffing
# and brute force are visible only per client: one address failing on many
# tokens. Counts are requests in the window; "failing" means status 401 or 403.
CLIENT_WINDOW_FEATURES: dict[str, np.dtype] = {
    "requests": np.dtype(np.float64),
    "failures_401_403": np.dtype(np.float64),
    "distinct_subjects": np.dtype(np.float64),
    "distinct_failing_subjects": np.dtype(np.float64),
    "distinct_user_agents": np.dtype(np.float64),
}

# Columns of the (window, value) pair tables kept beside a window batch for
# the rules (see ``pipeline.windows.PairTable``): one row per distinct value
# of an event column within one window, with its request and 401/403 counts.
PAIR_COLUMNS: tuple[str, ...] = ("client_ip", "country", "origin", "route")
