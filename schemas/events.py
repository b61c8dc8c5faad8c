"""The normalized access event: one gateway request after parsing and identity.

``AccessEvent`` documents one record and is what the JSON Schema publishes.
The hot path never builds it: parsers and the identity stage fill the numpy
columns named in ``EVENT_COLUMNS`` instead, one array per field.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

EVENT_SCHEMA_VERSION = 1


class SubjectKind(IntEnum):
    """How the profiled subject of an event was identified, best first."""

    KEY_ID = 0
    """The gateway logged a key or credential id (Kong ``authenticated_entity``)."""
    TOKEN_HASH = 1
    """A raw credential was found in the record and replaced by its keyed hash."""
    CLIENT_IP = 2
    """No credential at all: the request is profiled by its client IP."""


# Column name -> numpy dtype of the columnar event batch. Strings are object
# arrays of ``str`` ("" when the gateway did not log the field); numbers use a
# sentinel instead of None: NaN for latency, -1 for unknown byte counts, 0 for
# an unknown ASN.
EVENT_COLUMNS: dict[str, np.dtype] = {
    "event_id": np.dtype(np.uint64),
    "ts": np.dtype(np.float64),
    "gateway": np.dtype(object),
    "subject_id": np.dtype(object),
    "subject_kind": np.dtype(np.uint8),
    "account": np.dtype(object),
    "client_ip": np.dtype(object),
    "method": np.dtype(object),
    "host": np.dtype(object),
    "path": np.dtype(object),
    "route": np.dtype(object),
    "status": np.dtype(np.uint16),
    "latency_ms": np.dtype(np.float32),
    "bytes_in": np.dtype(np.int64),
    "bytes_out": np.dtype(np.int64),
    "user_agent": np.dtype(object),
    "origin": np.dtype(object),
    "referer": np.dtype(object),
    "country": np.dtype(object),
    "asn": np.dtype(np.uint32),
    "device_id": np.dtype(object),
    "request_id": np.dtype(object),
    "source": np.dtype(object),
    "partition": np.dtype(np.int32),
    "offset": np.dtype(np.int64),
    "late": np.dtype(np.bool_),
}


class AccessEvent(BaseModel):
    """One normalized gateway request, as stored in the ``events`` table.

    Timestamps are event time in seconds since the Unix epoch (UTC). The raw
    credential never appears here: ``subject_id`` is a key id, a keyed hash
    (``tk_`` + 16 hex digits of HMAC-SHA256) or ``ip:<client ip>``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = EVENT_SCHEMA_VERSION
    event_id: int = Field(description="Deterministic 64-bit id from source, partition and offset.")
    ts: float = Field(description="Event time, seconds since the Unix epoch, UTC.")
    gateway: str = Field(description="Log format id the record was parsed with, e.g. 'nginx_combined'.")
    subject_id: str = Field(description="Token id: key id, keyed hash of the credential, or ip:<addr>.")
    subject_kind: SubjectKind
    account: str = Field("", description="Consumer or account id when the gateway logs one.")
    client_ip: str
    method: str = ""
    host: str = ""
    path: str = Field("", description="Request path without its query string.")
    route: str = Field("", description="Gateway route or service name when logged, else the path.")
    status: int = Field(0, ge=0, le=999)
    latency_ms: float | None = None
    bytes_in: int = -1
    bytes_out: int = -1
    user_agent: str = ""
    origin: str = ""
    referer: str = ""
    country: str = Field("", description="ISO 3166-1 alpha-2 code when the gateway adds it.")
    asn: int = 0
    device_id: str = Field("", description="Device-id header or TLS fingerprint (JA3/JA4) when logged.")
    request_id: str = ""
    source: str = Field(description="File path or Kafka topic the record came from.")
    partition: int = Field(-1, description="Kafka partition, -1 for files.")
    offset: int = Field(description="Kafka offset, or 1-based line number for files.")
    late: bool = Field(False, description="True when the event arrived after its window had closed.")
