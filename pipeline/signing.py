"""Signatures on action messages, so enforcement points apply only genuine decisions.

The signed bytes are the canonical encoding of the action as a JSON object
without its ``signature`` member. The encoding follows the JSON
Canonicalization Scheme (RFC 8785): members sorted by name, no whitespace,
strings escaped as ``JSON.stringify`` escapes them, and numbers written as
ECMAScript writes them (``1767225600.0`` becomes ``1767225600``). A gateway
plugin in another language can therefore rebuild the same bytes.
``key_id`` is inside the signed bytes.

Two algorithms are supported:

- ``hmac-sha256``: a shared secret. Every holder of the key can also sign,
  so give it only to enforcement points you trust as much as the pipeline.
- ``ed25519``: the pipeline keeps the private key and enforcement points
  get only the public key. Needs the optional ``cryptography`` package.

The signature is lowercase hex. A keyring maps key ids to keys. The key
named by an action's ``key_id`` decides the algorithm, never the message,
so a message cannot downgrade an Ed25519 key to HMAC.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from schemas.actions import Action

logger = logging.getLogger(__name__)

HMAC_SHA256 = "hmac-sha256"
ED25519 = "ed25519"
ALGORITHMS = (HMAC_SHA256, ED25519)
KEYRING_FILE_NAME = "signing-keys.json"
MIN_HMAC_KEY_BYTES = 16

try:  # Ed25519 is optional: the cryptography package is not a core dependency.
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    HAVE_ED25519 = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_ED25519 = False


# ---- canonical encoding ------------------------------------------------------


def canonical_json(value: Any) -> str:
    """Encode a JSON value canonically (RFC 8785): sorted members, no whitespace."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int):
        # Exact digits. Below 2**53 this is what RFC 8785 writes. Above it (63-bit
        # detection ids) RFC 8785 would round, so verifiers must parse integers losslessly.
        return str(value)
    if isinstance(value, float):
        return _format_number(value)
    if isinstance(value, Mapping):
        for name in value:
            if not isinstance(name, str):
                raise TypeError(f"JSON object member names must be strings, got {name!r}")
        members = sorted(value.items(), key=lambda item: item[0].encode("utf-16-be"))
        return "{" + ",".join(f"{canonical_json(name)}:{canonical_json(item)}" for name, item in members) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(canonical_json(item) for item in value) + "]"
    raise TypeError(f"cannot encode {type(value).__name__} value {value!r} as canonical JSON")


def _format_number(value: float) -> str:
    """Write a finite double as ECMAScript ``Number.prototype.toString`` does (RFC 8785, 3.2.2.3)."""
    if not math.isfinite(value):
        raise ValueError(f"canonical JSON has no encoding for {value!r}")
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    # repr() gives the shortest digits that round-trip, which ECMAScript also uses.
    decimal = Decimal(repr(abs(value))).normalize()
    _, digit_tuple, exponent = decimal.as_tuple()
    digits = "".join(str(digit) for digit in digit_tuple)
    k = len(digits)
    point = exponent + k  # value = 0.digits * 10**point
    if k <= point <= 21:
        return sign + digits + "0" * (point - k)
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * (-point) + digits
    shown = point - 1
    mantissa = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{sign}{mantissa}e{'+' if shown >= 0 else '-'}{abs(shown)}"


def signed_payload(message: Action | Mapping[str, Any]) -> dict[str, Any]:
    """Return the JSON object that is signed: the message without ``signature``.

    Pass the received JSON object itself when verifying, not a re-parsed
    model: fields a newer sender added must stay in the signed bytes.
    """
    data = message.model_dump(mode="json") if isinstance(message, Action) else dict(message)
    data.pop("signature", None)
    return data


def canonical_bytes(message: Action | Mapping[str, Any]) -> bytes:
    """Return the UTF-8 canonical encoding of a message without its signature."""
    return canonical_json(signed_payload(message)).encode("utf-8")


# ---- keys and keyrings -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One key of a keyring.

    For ``hmac-sha256``, ``secret`` is the shared key. For ``ed25519``,
    ``secret`` is the 32-byte private seed (absent on verify-only keyrings)
    and ``public_key`` the 32-byte public key.
    """

    key_id: str
    algorithm: str
    secret: bytes | None = field(default=None, repr=False)
    public_key: bytes | None = None

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"signing key {self.key_id!r}: unknown algorithm {self.algorithm!r}; use one of {ALGORITHMS}")
        if self.algorithm == HMAC_SHA256 and (self.secret is None or len(self.secret) < MIN_HMAC_KEY_BYTES):
            raise ConfigError(
                f"signing key {self.key_id!r}: an hmac-sha256 key needs at least {MIN_HMAC_KEY_BYTES} bytes (32 recommended)"
            )
        if self.algorithm == ED25519 and self.secret is None and self.public_key is None:
            raise ConfigError(f"signing key {self.key_id!r}: an ed25519 key needs a private or a public key")

    @property
    def can_sign(self) -> bool:
        return self.secret is not None

    def public(self) -> SigningKey:
        """Return the part of this key that only verifies (the key itself for HMAC)."""
        if self.algorithm == HMAC_SHA256:
            return self
        return SigningKey(self.key_id, ED25519, None, self.public_key or _ed25519_public(self.secret))


class Keyring:
    """Keys by id, plus the id of the key new signatures use."""

    def __init__(self, keys: Mapping[str, SigningKey] | None = None, active: str | None = None) -> None:
        self.keys: dict[str, SigningKey] = dict(keys or {})
        self.active = active
        if active is not None and active not in self.keys:
            raise ConfigError(f"active signing key {active!r} is not in the keyring (keys: {sorted(self.keys)})")

    def __contains__(self, key_id: str) -> bool:
        return key_id in self.keys

    def get(self, key_id: str) -> SigningKey | None:
        return self.keys.get(key_id)

    def add(self, key: SigningKey, make_active: bool = False) -> None:
        self.keys[key.key_id] = key
        if make_active or self.active is None:
            self.active = key.key_id

    def active_key(self) -> SigningKey:
        """Return the key new signatures use; raise ``ConfigError`` if it cannot sign."""
        key = self.keys.get(self.active or "")
        if key is None or not key.can_sign:
            raise ConfigError(
                "no signing key with a private part in the keyring; create one with `tokensentry action keys --new hmac-sha256`"
            )
        return key

    def verify_only(self) -> Keyring:
        """Return a copy without private Ed25519 keys, for distribution to enforcement points."""
        return Keyring({key_id: key.public() for key_id, key in self.keys.items()}, None)

    def to_json(self) -> dict[str, Any]:
        keys = {}
        for key_id, key in sorted(self.keys.items()):
            entry: dict[str, str] = {"algorithm": key.algorithm}
            if key.secret is not None:
                entry["secret"] = key.secret.hex()
            if key.algorithm == ED25519:
                entry["public_key"] = (key.public_key or _ed25519_public(key.secret)).hex()
            keys[key_id] = entry
        return {"active": self.active, "keys": keys}

    @classmethod
    def from_json(cls, data: Any, origin: str) -> Keyring:
        if not isinstance(data, dict) or not isinstance(data.get("keys"), dict):
            raise ConfigError(f"keyring {origin} must be a JSON object with a 'keys' object")
        keys = {}
        for key_id, entry in data["keys"].items():
            if not isinstance(entry, dict):
                raise ConfigError(f"keyring {origin}: keys.{key_id} must be an object with 'algorithm' and 'secret'")
            keys[key_id] = SigningKey(
                key_id=key_id,
                algorithm=entry.get("algorithm", ""),
                secret=_hex_field(entry, "secret", key_id, origin),
                public_key=_hex_field(entry, "public_key", key_id, origin),
            )
        return cls(keys, data.get("active"))


def _hex_field(entry: dict[str, Any], name: str, key_id: str, origin: str) -> bytes | None:
    value = entry.get(name)
    if value is None:
        return None
    try:
        return bytes.fromhex(value)
    except (TypeError, ValueError):
        raise ConfigError(f"keyring {origin}: keys.{key_id}.{name} is not hex") from None


def generate_key(algorithm: str = HMAC_SHA256, key_id: str | None = None) -> SigningKey:
    """Create a new random key; the default id is the algorithm plus 8 random hex digits."""
    key_id = key_id or f"{algorithm.split('-')[0]}-{secrets.token_hex(4)}"
    if algorithm == HMAC_SHA256:
        return SigningKey(key_id, HMAC_SHA256, secrets.token_bytes(32))
    if algorithm == ED25519:
        _require_ed25519()
        seed = secrets.token_bytes(32)
        return SigningKey(key_id, ED25519, seed, _ed25519_public(seed))
    raise ConfigError(f"unknown signing algorithm {algorithm!r}; use one of {ALGORITHMS}")


def load_keyring(path: Path) -> Keyring:
    """Read a keyring file (JSON: ``{"active": id, "keys": {id: {algorithm, secret, public_key}}}``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"keyring file {path} not found; copy the pipeline's {KEYRING_FILE_NAME} there") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"keyring file {path} is not valid JSON: {exc}") from None
    return Keyring.from_json(data, str(path))


def save_keyring(keyring: Keyring, path: Path) -> None:
    """Write a keyring file with mode 0600, replacing the old file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(keyring.to_json(), handle, indent=1, sort_keys=True)
        handle.write("\n")
    os.replace(temporary, path)


def load_or_create_keyring(data_dir: Path) -> Keyring:
    """Load ``signing-keys.json`` from ``data_dir``, creating it with one HMAC key on first use."""
    path = data_dir / KEYRING_FILE_NAME
    if path.exists():
        return load_keyring(path)
    keyring = Keyring()
    keyring.add(generate_key(HMAC_SHA256), make_active=True)
    save_keyring(keyring, path)
    logger.info("created signing keyring %s with key %s", path, keyring.active)
    return keyring


def keyring_from_settings(settings: Any, create: bool = True) -> Keyring:
    """Build the keyring from settings.

    Order: ``signing_keyring`` (a file), else ``signing-keys.json`` in the data
    directory (created when ``create``). ``signing_key_id`` plus ``signing_key``
    (hex HMAC key, e.g. from ``TOKENSENTRY_SIGNING_KEY``) add a key and make
    it the active one.
    """
    # NOTE: read with getattr so this works before Settings declares the
    # signing_* fields; without them only the data-directory keyring is used.
    path = getattr(settings, "signing_keyring", None)
    if path is not None:
        keyring = load_keyring(Path(path))
    elif create:
        keyring = load_or_create_keyring(Path(settings.data_dir))
    else:
        default = Path(settings.data_dir) / KEYRING_FILE_NAME
        keyring = load_keyring(default) if default.exists() else Keyring()
    secret = getattr(settings, "signing_key", None)
    if secret is not None:
        key_id = getattr(settings, "signing_key_id", None) or "env"
        try:
            raw = bytes.fromhex(secret.get_secret_value())
        except ValueError:
            raise ConfigError("TOKENSENTRY_SIGNING_KEY is not hex; use 64 hex digits") from None
        keyring.add(SigningKey(key_id, HMAC_SHA256, raw), make_active=True)
    return keyring


# ---- signing and verification ------------------------------------------------


def sign(action: Action, key_id: str, key: bytes | SigningKey) -> Action:
    """Return a copy of ``action`` with ``key_id`` set and signed with ``key``.

    ``key`` is a raw HMAC-SHA256 key or a ``SigningKey`` with a private part.
    """
    signing_key = key if isinstance(key, SigningKey) else SigningKey(key_id, HMAC_SHA256, key)
    if not signing_key.can_sign:
        raise ConfigError(f"signing key {key_id!r} has no private part; it can only verify")
    unsigned = action.model_copy(update={"key_id": key_id, "signature": ""})
    return unsigned.model_copy(update={"signature": _signature(signing_key, canonical_bytes(unsigned))})


def verify(message: Action | Mapping[str, Any], keyring: Keyring | Mapping[str, SigningKey]) -> bool:
    """Return True when ``message`` carries a valid signature by a key in ``keyring``.

    Unsigned messages, unknown key ids and malformed signatures return False.
    """
    data = message.model_dump(mode="json") if isinstance(message, Action) else message
    key_id = data.get("key_id")
    signature = data.get("signature")
    if not isinstance(key_id, str) or not isinstance(signature, str) or not key_id or not signature:
        return False
    key = keyring.get(key_id)
    if key is None:
        return False
    try:
        payload = canonical_bytes(data)
    except (TypeError, ValueError):
        return False
    if key.algorithm == HMAC_SHA256:
        expected = hmac.new(key.secret, payload, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, signature)
    return _verify_ed25519(key, payload, signature)


class Signer:
    """Signs actions with the keyring's active key."""

    def __init__(self, keyring: Keyring) -> None:
        self.key = keyring.active_key()

    @property
    def key_id(self) -> str:
        return self.key.key_id

    def sign(self, action: Action) -> Action:
        return sign(action, self.key.key_id, self.key)


def _signature(key: SigningKey, payload: bytes) -> str:
    if key.algorithm == HMAC_SHA256:
        return hmac.new(key.secret, payload, hashlib.sha256).hexdigest()
    _require_ed25519()
    return Ed25519PrivateKey.from_private_bytes(key.secret).sign(payload).hex()


def _verify_ed25519(key: SigningKey, payload: bytes, signature: str) -> bool:
    if not HAVE_ED25519:
        logger.warning("cannot verify ed25519 key %s: the cryptography package is not installed", key.key_id)
        return False
    try:
        raw_signature = bytes.fromhex(signature)
        public = key.public_key or _ed25519_public(key.secret)
        Ed25519PublicKey.from_public_bytes(public).verify(raw_signature, payload)
    except (ValueError, InvalidSignature):
        return False
    return True


def _ed25519_public(seed: bytes | None) -> bytes:
    _require_ed25519()
    if seed is None:
        raise ConfigError("an ed25519 key needs its private seed to derive the public key")
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _require_ed25519() -> None:
    if not HAVE_ED25519:
        raise ConfigError("ed25519 signing needs the cryptography package: pip install cryptography")
