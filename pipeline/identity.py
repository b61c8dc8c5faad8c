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
from pipeline.parsers.base import ParsedChunk
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
# Names whose value is a secret, as a query parameter, header, JSON key or
# key=value pair. "key" alone is too common in prose to redact outside a
# query string or a key= pair.
_SECRET_NAMES = (
    r"(?:proxy-)?authorization|x-api-key|x_api_key|api[-_]?key|apikey|x-auth-token|auth[-_]?token"
    r"|access[-_]?token|refresh[-_]?token|id[-_]?token|token|password|passwd|secret|client[-_]?secret"
    r"|cookie|set-cookie|session(?:id)?|auth"
)
# A query parameter, also percent-encoded (%3F ? %26 & %3D =) or after ';'.
_QUERY_CREDENTIAL = re.compile(
    r"(?i)((?:[?&;#]|%3f|%26)(?:api[_-]?key|apikey|access_token|key|token|auth|password|secret)(?:=|%3d))([^&#\s\"]*)"
)
# name: value, name=value, "name": "value", "name": ["value"], with a value
# that may start with an auth scheme.
_NAMED_CREDENTIAL = re.compile(
    r'(?i)(?<![\w-])("?(?:' + _SECRET_NAMES + r')"?\s*[:=]\s*)'
    r'("(?:[^"\\]|\\.)*"|\[[^\]]*\]|(?:bearer|basic|token|digest)\s+[^\s,;"]+|[^\s,;&"\]}]+)'
)
_EXTRA_KEY_CREDENTIAL = re.compile(r'(?i)(?<![\w-])(key=)("[^"]*"|[^\s"]+)')
_SCHEME_CREDENTIAL = re.compile(r'(?i)\b(bearer|basic|digest)\s+("?)[^\s",;()]+')
_URL_USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@")
# Well-known token shapes that need no name: Stripe-style sk_/pk_/rk_ keys,
# GitHub tokens, Slack tokens, JWTs.
_KNOWN_TOKEN = re.compile(
    r"\b(?:[spr]k_(?:live|test)_[A-Za-z0-9]{6,}|gh[pousr]_[A-Za-z0-9]{20,}|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)"
)
# Cheap test, on the lower-cased text, that a value may need scrubbing at all.
# Case-insensitive alternations are several times slower in the re module.
_MAY_HOLD_SECRET = re.compile(
    r"key|token|auth|bearer|basic|digest|secret|pass|cookie|session|@|%3f|[spr]k_|gh[pousr]_|xox|eyj"
)
# The same test for request paths, whose query string is already gone: a
# credential needs a ;param=, an encoded query, a fragment, a userinfo or a known shape.
_PATH_MAY_HOLD_SECRET = re.compile(r"[;%@#=]|[spr]k_|eyJ|gh[pousr]_|xox")

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

    def token_ids(self, credentials: np.ndarray) -> np.ndarray:
        """Return the token id of each raw credential in an object array, hashing each distinct one once."""
        values = credentials.tolist()
        table = {credential: self.token_id(credential) for credential in set(values)}
        return _strings(list(map(table.__getitem__, values)))


def scrub_text(text: str) -> str:
    """Redact credentials from free text (a raw log line, a user agent) before it is stored.

    Covers query parameters (plain or percent-encoded), named values in
    header, JSON and key=value form, auth schemes (Bearer, Basic, Digest),
    passwords in URLs, and token shapes that need no name (``sk_live_``,
    ``ghp_``, ``xoxb-``, JWTs). NOTE: a secret with no name and no known
    shape, written alone in free text, cannot be recognised.
    """
    if not _MAY_HOLD_SECRET.search(text.lower()):
        return text
    text = _URL_USERINFO.sub(r"\1" + REDACTED + "@", text)
    text = _SCHEME_CREDENTIAL.sub(r"\1 " + REDACTED, text)
    text = _QUERY_CREDENTIAL.sub(r"\1" + REDACTED, text)
    text = _NAMED_CREDENTIAL.sub(lambda match: match.group(1) + _redacted_like(match.group(2)), text)
    text = _EXTRA_KEY_CREDENTIAL.sub(r'\1"' + REDACTED + '"', text)
    return _KNOWN_TOKEN.sub(REDACTED, text)


def _redacted_like(value: str) -> str:
    """Return the redaction marker in the value's own quoting (a JSON string or list stays valid)."""
    if value.startswith('"'):
        return '"' + REDACTED + '"'
    if value.startswith("["):
        return '["' + REDACTED + '"]'
    if REDACTED in value:
        return value
    return REDACTED


def scrub_column(values: np.ndarray, paths: bool = False) -> np.ndarray:
    """Return ``scrub_text`` applied to a string column, computed once per distinct value.

    ``paths`` selects a cheaper pre-test for request paths without their
    query string. A column with nothing to scrub is returned as is.
    """
    if len(values) == 0:
        return values
    rows = values.tolist()
    may_hold = _PATH_MAY_HOLD_SECRET.search if paths else None
    scrubbed: dict[str, str] = {}
    for value in set(rows):
        if may_hold is not None and not may_hold(value):
            continue
        new = scrub_text(value)
        if new != value:
            scrubbed[value] = new
    if not scrubbed:
        return values
    return _strings([scrubbed.get(value, value) for value in rows])


def prefixed_strings(prefix: str, values: np.ndarray) -> np.ndarray:
    """Return ``prefix + value`` for each value, one string object per distinct value."""
    rows = values.tolist()
    table = {value: prefix + value for value in set(rows)}
    return _strings(list(map(table.__getitem__, rows)))


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
    stream_id: str = "",
) -> dict[str, np.ndarray]:
    """Turn parsed rows into event columns (``EVENT_COLUMNS``) with no raw credential left.

    Raw credentials in ``credential`` and in the query string of ``target``
    are hashed here and dropped; the returned columns never hold them.
    Work on strings runs once per distinct value of the chunk.
    """
    n = len(chunk)
    if n == 0:
        return empty_events()
    raw = chunk.columns()
    paths, query_credentials = _split_targets(raw["target"])
    credentials = raw["credential"]
    if query_credentials is not None:
        from_query = (credentials == "") & (query_credentials != "")
        if from_query.any():
            credentials = credentials.copy()
            credentials[from_query] = query_credentials[from_query]
    subjects, kinds = _subjects(raw["key_id"], credentials, raw["client_ip"], hasher)

    # Free-text columns may carry a credential the gateway copied (a referer
    # with ?api_key=, a user agent with "Bearer ..."): scrubbed per distinct value.
    path_column = scrub_column(paths, paths=True)
    route_column = raw["route"]
    no_route = route_column == ""
    if no_route.any():
        route_column = route_column.copy()
        route_column[no_route] = path_column[no_route]
    route_column = scrub_column(route_column, paths=True)
    offsets = np.asarray(chunk.positions, dtype=np.int64)
    events: dict[str, np.ndarray] = {
        "event_id": event_ids(stream_id or source, partition, offsets),
        "ts": raw["ts"],
        "gateway": _strings(chunk.formats),
        "subject_id": subjects,
        "subject_kind": kinds,
        "account": raw["account"],
        "client_ip": raw["client_ip"],
        "method": raw["method"],
        "host": scrub_column(raw["host"]),
        "path": path_column,
        "route": route_column,
        "status": raw["status"].astype(np.uint16),
        "latency_ms": raw["latency_ms"].astype(np.float32),
        "bytes_in": raw["bytes_in"],
        "bytes_out": raw["bytes_out"],
        "user_agent": scrub_column(raw["user_agent"]),
        "origin": scrub_column(raw["origin"]),
        "referer": scrub_column(raw["referer"]),
        "country": raw["country"],
        "asn": raw["asn"].astype(np.uint32),
        "device_id": raw["device_id"],
        "request_id": raw["request_id"],
        "source": np.full(n, source, dtype=object),
        "partition": np.full(n, partition, dtype=np.int32),
        "offset": offsets,
        "late": np.zeros(n, dtype=np.bool_),
    }
    return events


def _split_targets(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Split request targets into paths and query-string credentials ("" for none).

    The credentials are None when no target has a query string.
    """
    rows = targets.tolist()
    with_query = [index for index, target in enumerate(rows) if "?" in target]
    if not with_query:
        return targets, None
    table = {rows[index]: split_target(rows[index]) for index in with_query}
    paths = targets.copy()
    credentials = np.full(len(rows), "", dtype=object)
    for index in with_query:
        paths[index], credentials[index] = table[rows[index]]
    return paths, credentials


def _subjects(
    key_ids: np.ndarray, credentials: np.ndarray, client_ips: np.ndarray, hasher: TokenHasher
) -> tuple[np.ndarray, np.ndarray]:
    """Pick each event's subject id and kind: the key id, else the hashed credential, else the client IP."""
    n = len(key_ids)
    subjects = np.empty(n, dtype=object)
    kinds = np.full(n, SubjectKind.CLIENT_IP, dtype=np.uint8)
    has_key = key_ids != ""
    has_credential = (credentials != "") & ~has_key
    by_address = ~(has_key | has_credential)
    if has_key.any():
        subjects[has_key] = prefixed_strings(KEY_ID_PREFIX, key_ids[has_key])
        kinds[has_key] = SubjectKind.KEY_ID
    if has_credential.any():
        subjects[has_credential] = hasher.token_ids(credentials[has_credential])
        kinds[has_credential] = SubjectKind.TOKEN_HASH
    if by_address.any():
        subjects[by_address] = prefixed_strings(IP_PREFIX, client_ips[by_address])
    return subjects, kinds


def empty_events() -> dict[str, np.ndarray]:
    """Return an event batch with every column and no rows."""
    return {name: np.empty(0, dtype=dtype) for name, dtype in EVENT_COLUMNS.items()}


def _strings(values) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array
