"""Token identity: the first stage that sees a raw credential, and the last.

Every parsed row goes through ``identify`` before anything is windowed,
stored, logged or published. It picks the subject each request is profiled
under, best first:

1. a key or credential id the gateway logged (not secret): ``key:<id>``;
2. a raw credential (``Authorization`` or ``X-API-Key`` header, or an
   ``api_key``/``apikey``/``access_token``/``key``/``token`` query
   parameter): replaced by ``tk_`` + the first 16 hex digits of
   HMAC-SHA256(secret, credential), a 64-bit id;
3. neither: the client IP, ``ip:<addr>``.

Query strings are dropped from stored paths, and ``scrub_text`` redacts
credentials in text kept verbatim (dead letters).

>>> hasher = TokenHasher(b"k" * 32)
>>> hasher.token_id("Bearer abc") == hasher.token_id("abc")
True
>>> hasher.token_id("abc")
'tk_af61b693912efc56'
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError
from pipeline.parsers.base import FIELD_INDEX, ParsedChunk
from schemas.events import EVENT_COLUMNS, SubjectKind

logger = logging.getLogger(__name__)

SECRET_FILE_NAME = "token-hash.key"
MIN_SECRET_BYTES = 16
TOKEN_ID_PREFIX = "tk_"
KEY_ID_PREFIX = "key:"
IP_PREFIX = "ip:"
REDACTED = "<redacted>"

# Query parameters that carry API credentials in the wild.
CREDENTIAL_PARAMS = frozenset({"api_key", "apikey", "api-key", "access_token", "key", "token"})

_AUTH_SCHEME = re.compile(r"^\s*(?:bearer|token|apikey|basic)\s+", re.IGNORECASE)
_QUERY_CREDENTIAL = re.compile(r"(?i)([?&;](?:api[_-]?key|access_token|key|token)=)([^&#\s\"]*)")
_HEADER_CREDENTIAL = re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{4,}")
_JSON_CREDENTIAL = re.compile(
    r'(?i)("(?:[\w-]*authorization|[\w-]*x-api-key|apikey|api_key|access_token)"\s*:\s*)"(?:[^"\\]|\\.)*"'
)
_EXTRA_CREDENTIAL = re.compile(r'(?i)(?<![?&;\w])((?:x_api_key|api_key|apikey|key|auth|authorization)=)("[^"]*"|[^\s"]+)')

_HASH_CACHE_LIMIT = 200_000


def load_or_create_secret(data_dir: Path) -> bytes:
    """Load the token-hash secret kept in ``data_dir``, creating it on first use.

    The file holds 64 hex digits and is created with mode 0600. Changing it
    changes every token id, so back it up with the audit store.
    """
    path = data_dir / SECRET_FILE_NAME
    if path.exists():
        return parse_secret(path.read_text(encoding="ascii").strip(), origin=str(path))
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(value + "\n")
    logger.info("created a new token-hash secret at %s", path)
    return bytes.fromhex(value)


def parse_secret(value: str, origin: str) -> bytes:
    """Decode a hex secret, rejecting short or malformed values with the fix."""
    try:
        secret = bytes.fromhex(value)
    except ValueError:
        raise ConfigError(
            f"token-hash secret from {origin} is not hex; write 64 hex digits, "
            "e.g. the output of `python -c 'import secrets; print(secrets.token_hex(32))'`"
        ) from None
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"token-hash secret from {origin} has {len(secret)} bytes; use at least {MIN_SECRET_BYTES} (32 recommended)"
        )
    return secret


class TokenHasher:
    """Keyed hashing of raw credentials into stable token ids.

    A bounded cache maps recent credentials to ids, because a busy token
    repeats on most lines and HMAC costs about 1 µs. The cache lives only in
    process memory, like the lines being parsed.
    """

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(f"token-hash secret has {len(secret)} bytes; use at least {MIN_SECRET_BYTES}")
        self._secret = secret
        self._cache: dict[str, str] = {}

    def token_id(self, credential: str) -> str:
        """Return the token id of a raw credential; auth schemes such as ``Bearer`` are ignored."""
        cached = self._cache.get(credential)
        if cached is not None:
            return cached
        bare = _AUTH_SCHEME.sub("", credential).strip()
        digest = hmac.new(self._secret, bare.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()
        token_id = TOKEN_ID_PREFIX + digest[:16]
        if len(self._cache) >= _HASH_CACHE_LIMIT:
            self._cache.clear()
        self._cache[credential] = token_id
        return token_id


def scrub_text(text: str) -> str:
    """Redact credentials from free text (a raw log line) before it is stored."""
    text = _HEADER_CREDENTIAL.sub(r"\1 " + REDACTED, text)
    text = _QUERY_CREDENTIAL.sub(r"\1" + REDACTED, text)
    text = _JSON_CREDENTIAL.sub(r'\1"' + REDACTED + '"', text)
    return _EXTRA_CREDENTIAL.sub(r'\1"' + REDACTED + '"', text)


def split_target(target: str) -> tuple[str, str]:
    """Split a request target into path and the credential found in its query, if any."""
    path, sep, query = target.partition("?")
    if not sep:
        return path, ""
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if value and name.lower() in CREDENTIAL_PARAMS:
            return path, value
    return path, ""


def event_ids(source: str, partition: int, offsets: np.ndarray) -> np.ndarray:
    """Derive deterministic 64-bit event ids from source, partition and offsets.

    Within one (source, partition) the mapping is a bijection (an odd
    multiplier and an XOR modulo 2**64), so two offsets never share an id and
    a redelivered record keeps its id.
    """
    seed = hashlib.blake2b(f"{source}\x00{partition}".encode(), digest_size=8).digest()
    base = np.uint64(int.from_bytes(seed, "little"))
    with np.errstate(over="ignore"):
        return (offsets.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ base


def identify(
    chunk: ParsedChunk,
    hasher: TokenHasher,
    source: str,
    partition: int = -1,
) -> dict[str, np.ndarray]:
    """Turn parsed rows into event columns (``EVENT_COLUMNS``) with no raw credential left.

    Raw credentials in ``credential`` and in the query string of ``target``
    are hashed here and dropped; the returned columns never hold them.
    """
    n = len(chunk.rows)
    if n == 0:
        return empty_events()
    columns = list(zip(*chunk.rows, strict=True))
    key_ids = columns[FIELD_INDEX["key_id"]]
    credentials = columns[FIELD_INDEX["credential"]]
    client_ips = columns[FIELD_INDEX["client_ip"]]

    paths: list[str] = []
    subjects: list[str] = []
    kinds = np.empty(n, dtype=np.uint8)
    token_id = hasher.token_id
    for i, target in enumerate(columns[FIELD_INDEX["target"]]):
        path, query_credential = split_target(target) if "?" in target else (target, "")
        paths.append(path)
        if key_ids[i]:
            subjects.append(KEY_ID_PREFIX + key_ids[i])
            kinds[i] = SubjectKind.KEY_ID
        elif credentials[i] or query_credential:
            subjects.append(token_id(credentials[i] or query_credential))
            kinds[i] = SubjectKind.TOKEN_HASH
        else:
            subjects.append(IP_PREFIX + client_ips[i])
            kinds[i] = SubjectKind.CLIENT_IP

    routes = columns[FIELD_INDEX["route"]]
    offsets = np.fromiter(chunk.positions, dtype=np.int64, count=n)
    events: dict[str, np.ndarray] = {
        "event_id": event_ids(source, partition, offsets),
        "ts": np.fromiter(columns[FIELD_INDEX["ts"]], dtype=np.float64, count=n),
        "gateway": _strings(chunk.formats),
        "subject_id": _strings(subjects),
        "subject_kind": kinds,
        "account": _strings(columns[FIELD_INDEX["account"]]),
        "client_ip": _strings(client_ips),
        "method": _strings(columns[FIELD_INDEX["method"]]),
        "host": _strings(columns[FIELD_INDEX["host"]]),
        "path": _strings(paths),
        "route": _strings([route or path for route, path in zip(routes, paths, strict=True)]),
        "status": np.fromiter(columns[FIELD_INDEX["status"]], dtype=np.uint16, count=n),
        "latency_ms": np.fromiter(columns[FIELD_INDEX["latency_ms"]], dtype=np.float32, count=n),
        "bytes_in": np.fromiter(columns[FIELD_INDEX["bytes_in"]], dtype=np.int64, count=n),
        "bytes_out": np.fromiter(columns[FIELD_INDEX["bytes_out"]], dtype=np.int64, count=n),
        "user_agent": _strings(columns[FIELD_INDEX["user_agent"]]),
        "origin": _strings(columns[FIELD_INDEX["origin"]]),
        "referer": _strings(columns[FIELD_INDEX["referer"]]),
        "country": _strings(columns[FIELD_INDEX["country"]]),
        "asn": np.fromiter(columns[FIELD_INDEX["asn"]], dtype=np.uint32, count=n),
        "device_id": _strings(columns[FIELD_INDEX["device_id"]]),
        "request_id": _strings(columns[FIELD_INDEX["request_id"]]),
        "source": np.full(n, source, dtype=object),
        "partition": np.full(n, partition, dtype=np.int32),
        "offset": offsets,
        "late": np.zeros(n, dtype=np.bool_),
    }
    return events


def empty_events() -> dict[str, np.ndarray]:
    """Return an event batch with every column and no rows."""
    return {name: np.empty(0, dtype=dtype) for name, dtype in EVENT_COLUMNS.items()}


def _strings(values) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array
