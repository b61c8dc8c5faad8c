"""The token registry: owner, plan, scopes, expiry and allowed origins and countries of each token.

Sources:

* a YAML file, either a list of tokens or a mapping with ``plans``,
  ``accounts`` and ``tokens`` (``schemas.registry.RegistryDocument``);
* a CSV file with a header row naming ``TokenRecord`` fields; list fields
  (scopes, origins, countries) are separated by ``;``, ``|`` or spaces;
* rows of a ClickHouse query (``TokenRegistry.from_rows``), e.g.
  ``client.query("SELECT subject_id, account, ... FROM tokens")`` passing
  ``result.result_rows`` and ``result.column_names``.

A file-backed registry reloads itself when the file's modification time
changes (``reload_if_changed``, called once per batch), so edits apply
without a restart. A reload that fails validation keeps the previous
registry and logs a warning. ``version`` (content hash and modification
time) is recorded with every detection, so each finding names the registry
it was judged against.

Expiry times may be seconds since the Unix epoch or ISO 8601 text; a time
without a zone is UTC.

>>> registry = TokenRegistry.from_records([TokenRecord(subject_id="key:a", account="acme", scopes=("/v1/orders",))])
>>> registry.lookup(np.array(["key:b", "key:a"], dtype=object)).tolist()
[-1, 0]
>>> registry["key:a"].account
'acme'
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import ValidationError

from pipeline.errors import ConfigError
from schemas.registry import AccountRecord, PlanRecord, RegistryDocument, TokenRecord

logger = logging.getLogger(__name__)

LIST_FIELDS = ("scopes", "allowed_origins", "allowed_countries")
_LIST_SEPARATORS = str.maketrans({";": " ", "|": " ", ",": " "})


class TokenRegistry(Mapping[str, TokenRecord]):
    """Token records by subject id, with columnar arrays for vectorized lookups.

    Column arrays are aligned with ``lookup``'s row numbers: ``account`` and
    ``plan`` (str), ``expires_at`` (float, NaN for never), ``rate_limit_rps``
    (float, NaN when unset), ``has_scopes`` / ``has_origins`` /
    ``has_countries`` (bool), and ``allowed_countries`` (the token's own list,
    else its plan's).
    """

    def __init__(self, document: RegistryDocument | None = None, *, version: str = "", path: Path | None = None) -> None:
        self._set_document(document or RegistryDocument(), version)
        self.path = path
        self._mtime_ns: int | None = None
        self._failed_mtime_ns: int | None = None

    # -- construction -------------------------------------------------------

    @classmethod
    def from_records(
        cls,
        records: Iterable[TokenRecord],
        *,
        plans: Mapping[str, PlanRecord] | None = None,
        accounts: Mapping[str, AccountRecord] | None = None,
        version: str = "",
    ) -> TokenRegistry:
        """Build a registry from records; ``version`` defaults to a hash of their content."""
        document = RegistryDocument(plans=dict(plans or {}), accounts=dict(accounts or {}), tokens=tuple(records))
        return cls(document, version=version or "records-" + _content_hash(document.model_dump_json().encode()))

    @classmethod
    def load(cls, path: Path | str) -> TokenRegistry:
        """Load a YAML (``.yaml``/``.yml``) or CSV (``.csv``) registry file.

        Raises:
            ConfigError: the file is missing, unreadable or invalid; the
                message names the file and the offending entry.
        """
        registry = cls(path=Path(path))
        registry._load_file()
        return registry

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[Any]], columns: Sequence[str]) -> TokenRegistry:
        """Build a registry from query rows whose ``columns`` name ``TokenRecord`` fields.

        Array columns may arrive as lists (ClickHouse ``Array(String)``) or as
        separated text. The version is ``rows-`` plus a hash of the rows, so
        an unchanged table gives an unchanged version.

        Raises:
            ConfigError: a row is invalid; the message gives its number.
        """
        columns = list(columns)
        raw = [dict(zip(columns, row, strict=True)) for row in rows]
        document = _validate_tokens(raw, origin="registry query rows")
        canonical = json.dumps(raw, sort_keys=True, default=str).encode()
        return cls(document, version="rows-" + _content_hash(canonical))

    # -- reloading ----------------------------------------------------------

    def reload_if_changed(self) -> bool:
        """Reload the file when its modification time changed; return True when a new version is in force.

        A missing or invalid file keeps the registry in force and logs a
        warning once per modification time.
        """
        if self.path is None:
            return False
        try:
            mtime_ns = self.path.stat().st_mtime_ns
        except OSError as exc:
            if self._failed_mtime_ns != -1:
                logger.warning("registry file %s cannot be read (%s); keeping version %s", self.path, exc, self.version)
                self._failed_mtime_ns = -1
            return False
        if mtime_ns == self._mtime_ns or mtime_ns == self._failed_mtime_ns:
            return False
        previous = self.version
        try:
            self._load_file()
        except ConfigError as exc:
            self._failed_mtime_ns = mtime_ns
            logger.warning("registry reload failed, keeping version %s: %s", previous, exc)
            return False
        logger.info("registry %s reloaded: version %s -> %s, %d tokens", self.path, previous, self.version, len(self))
        return self.version != previous

    def _load_file(self) -> None:
        assert self.path is not None
        path = self.path
        try:
            mtime_ns = path.stat().st_mtime_ns
            content = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"registry file {path} not found; check the registry_file setting") from None
        except OSError as exc:
            raise ConfigError(f"registry file {path} cannot be read: {exc}") from None
        if path.suffix.lower() == ".csv":
            document = _parse_csv(content, str(path))
        elif path.suffix.lower() in (".yaml", ".yml"):
            document = _parse_yaml(content, str(path))
        else:
            raise ConfigError(f"registry file {path} has suffix {path.suffix!r}; use .yaml, .yml or .csv")
        version = f"{_content_hash(content)}-{mtime_ns // 1_000_000_000}"
        self._set_document(document, version)
        self._mtime_ns = mtime_ns
        self._failed_mtime_ns = None

    # -- lookups ------------------------------------------------------------

    def _set_document(self, document: RegistryDocument, version: str) -> None:
        records: dict[str, TokenRecord] = {}
        for record in document.tokens:
            if record.subject_id in records:
                raise ConfigError(f"registry lists token {record.subject_id!r} twice; keep one entry per subject_id")
            records[record.subject_id] = record
        self.document = document
        self.plans: dict[str, PlanRecord] = dict(document.plans)
        self.accounts: dict[str, AccountRecord] = dict(document.accounts)
        self.records = records
        self.version = version
        tokens = list(records.values())
        self._index = pd.Index([record.subject_id for record in tokens], dtype=object)
        self.account = _objects([record.account for record in tokens])
        self.plan = _objects([record.plan for record in tokens])
        self.expires_at = np.array(
            [math.nan if record.expires_at is None else record.expires_at for record in tokens], dtype=np.float64
        )
        self.rate_limit_rps = np.array(
            [math.nan if record.rate_limit_rps is None else record.rate_limit_rps for record in tokens],
            dtype=np.float64,
        )
        self.scopes = _objects([record.scopes for record in tokens])
        self.allowed_origins = _objects([record.allowed_origins for record in tokens])
        self.allowed_countries = _objects([self._countries_of(record) for record in tokens])
        self.has_scopes = np.array([bool(record.scopes) for record in tokens], dtype=bool)
        self.has_origins = np.array([bool(record.allowed_origins) for record in tokens], dtype=bool)
        self.has_countries = np.array([bool(countries) for countries in self.allowed_countries], dtype=bool)

    def _countries_of(self, record: TokenRecord) -> tuple[str, ...]:
        if record.allowed_countries:
            return tuple(code.upper() for code in record.allowed_countries)
        plan = self.plans.get(record.plan)
        return tuple(code.upper() for code in plan.allowed_countries) if plan else ()

    def lookup(self, subject_ids: np.ndarray) -> np.ndarray:
        """Return each subject's row in the column arrays, -1 for subjects not in the registry."""
        if len(self.records) == 0 or len(subject_ids) == 0:
            return np.full(len(subject_ids), -1, dtype=np.int64)
        return self._index.get_indexer(subject_ids).astype(np.int64)

    def account_limit_rps(self, account: str, plan: str | None = None) -> float | None:
        """Return the account's own limit, else its plan's account limit, else None."""
        record = self.accounts.get(account)
        if record is not None and record.rate_limit_rps is not None:
            return record.rate_limit_rps
        plan_record = self.plans.get(plan) if plan else None
        return plan_record.account_limit_rps if plan_record else None

    def __getitem__(self, subject_id: str) -> TokenRecord:
        return self.records[subject_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __getstate__(self) -> dict[str, Any]:
        # The pandas index rebuilds its hash table lazily; pickle only the document.
        return {"document": self.document, "version": self.version, "path": self.path, "mtime_ns": self._mtime_ns}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._set_document(state["document"], state["version"])
        self.path = state["path"]
        self._mtime_ns = state["mtime_ns"]
        self._failed_mtime_ns = None


def _objects(values: list) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _content_hash(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()[:12]


def _parse_yaml(content: bytes, origin: str) -> RegistryDocument:
    try:
        raw = yaml.safe_load(content.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"registry file {origin} is not valid UTF-8 YAML: {exc}") from None
    if raw is None:
        return RegistryDocument()
    if isinstance(raw, list):
        return _validate_tokens(raw, origin)
    if not isinstance(raw, dict):
        raise ConfigError(f"registry file {origin} must hold a list of tokens or a mapping, got {type(raw).__name__}")
    tokens = raw.get("tokens") or []
    if not isinstance(tokens, list):
        raise ConfigError(f"registry file {origin}: 'tokens' must be a list, got {type(tokens).__name__}")
    rest = {key: value for key, value in raw.items() if key != "tokens"}
    try:
        head = RegistryDocument.model_validate(rest)
    except ValidationError as exc:
        raise ConfigError(f"registry file {origin} is invalid: {_first_error(exc)}") from None
    return RegistryDocument(plans=head.plans, accounts=head.accounts, tokens=_validate_tokens(tokens, origin).tokens)


def _parse_csv(content: bytes, origin: str) -> RegistryDocument:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"registry file {origin} is not valid UTF-8: {exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    rows = [{key: value for key, value in row.items() if value not in ("", None)} for row in reader]
    return _validate_tokens(rows, origin)


def _validate_tokens(raw_tokens: list, origin: str) -> RegistryDocument:
    tokens = []
    for number, raw in enumerate(raw_tokens, start=1):
        if not isinstance(raw, dict):
            raise ConfigError(f"{origin}: token entry {number} must be a mapping, got {type(raw).__name__}")
        try:
            tokens.append(TokenRecord.model_validate(_normalize_token(raw)))
        except (ValidationError, ValueError) as exc:
            reason = _first_error(exc) if isinstance(exc, ValidationError) else str(exc)
            name = raw.get("subject_id", "?")
            raise ConfigError(f"{origin}: token entry {number} ({name!r}) is invalid: {reason}") from None
    return RegistryDocument(tokens=tuple(tokens))


def _normalize_token(raw: dict[str, Any]) -> dict[str, Any]:
    """Turn text lists, empty cells and date-times into the types ``TokenRecord`` expects."""
    token = {key: value for key, value in raw.items() if value is not None}
    for name in LIST_FIELDS:
        value = token.get(name)
        if isinstance(value, str):
            token[name] = tuple(value.translate(_LIST_SEPARATORS).split())
    if "expires_at" in token:
        token["expires_at"] = _epoch_seconds(token["expires_at"])
    if "rate_limit_rps" in token and isinstance(token["rate_limit_rps"], str):
        token["rate_limit_rps"] = float(token["rate_limit_rps"])
    return token


def _epoch_seconds(value: Any) -> float | None:
    if value in ("", None):
        return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.timestamp()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"expires_at {text!r} is neither epoch seconds nor ISO 8601 text") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    location = ".".join(str(part) for part in error["loc"]) or "(top level)"
    return f"{location}: {error['msg']} (got {error.get('input')!r})"

