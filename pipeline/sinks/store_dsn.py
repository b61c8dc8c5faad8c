"""Parse and mask the audit store DSN.

Accepted forms:

- ``chdb:///absolute/dir``: embedded chDB, data kept in that directory.
- ``http://user:password@host:8123/db`` or ``https://user:password@host:8443/db``:
  a ClickHouse server. ``db`` defaults to ``tokensentry``, and the query string
  may set ``verify=false``, ``ca_cert=/path/ca.pem`` and ``async_insert=true``.

The password never leaves this module unmasked except inside ``ServerTarget``,
whose ``repr`` hides it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from pipeline.sinks.store_errors import StoreError

DEFAULT_DATABASE = "tokensentry"
ACCEPTED_FORMS = (
    "chdb:///absolute/dir, http://user:password@host:8123/db or "
    "https://user:password@host:8443/db?verify=true&ca_cert=/path/ca.pem"
)
SERVER_OPTIONS = ("verify", "ca_cert", "async_insert")
DEFAULT_PORTS = {"http": 8123, "https": 8443}

# Database names are interpolated into DDL, so only plain identifiers pass.
_DATABASE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TRUE_WORDS = {"1", "true", "yes", "on"}
_FALSE_WORDS = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class ChdbTarget:
    """An embedded chDB store in ``path``, an absolute directory."""

    path: Path
    database: str = DEFAULT_DATABASE


@dataclass(frozen=True)
class ServerTarget:
    """A ClickHouse server reached over HTTP(S)."""

    scheme: str
    host: str
    port: int
    username: str
    password: str = field(repr=False)
    database: str
    verify: bool = True
    ca_cert: str | None = None
    async_insert: bool = False

    @property
    def secure(self) -> bool:
        return self.scheme == "https"


def mask_dsn(dsn: str) -> str:
    """Return ``dsn`` with the password replaced by ``***``.

    Works on malformed DSNs too: everything between the first ``:`` of the
    user info and the last ``@`` is masked, which may hide more than the
    password but never less.
    """
    match = re.match(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>.*)@(?P<rest>.*)$", dsn)
    if match is None:
        return dsn
    userinfo = match["userinfo"]
    if ":" not in userinfo:
        return dsn
    username = userinfo.split(":", 1)[0]
    return f"{match['scheme']}{username}:***@{match['rest']}"


def parse_dsn(dsn: str) -> ChdbTarget | ServerTarget:
    """Parse ``dsn`` into a store target.

    Raises:
        StoreError: the scheme is unknown, a chdb path is relative or empty,
            a server DSN lacks a host, or an option is invalid. The message
            shows the DSN with its password masked and the accepted forms.
    """
    parts = urlsplit(dsn)
    scheme = parts.scheme.lower()
    if scheme == "chdb":
        return _parse_chdb(dsn, parts.netloc, parts.path, parts.query)
    if scheme in DEFAULT_PORTS:
        return _parse_server(dsn, scheme)
    raise _invalid(dsn, f"unknown scheme {parts.scheme!r}" if parts.scheme else "no scheme")


def _invalid(dsn: str, problem: str) -> StoreError:
    return StoreError(f"Invalid store DSN {mask_dsn(dsn)!r}: {problem}. Accepted forms: {ACCEPTED_FORMS}.")


def _parse_chdb(dsn: str, netloc: str, path: str, query: str) -> ChdbTarget:
    if netloc:
        # chdb://data/store puts "data" in the host part: the path is relative.
        raise _invalid(dsn, f"the chdb path must be absolute, use chdb:///{netloc}{path} for /{netloc}{path}")
    if query:
        raise _invalid(dsn, "a chdb DSN takes no options")
    directory = unquote(path)
    if not directory.startswith("/"):
        raise _invalid(dsn, "the chdb path must be absolute, as in chdb:///dir")
    if directory.rstrip("/") == "":
        raise _invalid(dsn, "the chdb path must name a directory below /")
    return ChdbTarget(path=Path(directory))


def _parse_server(dsn: str, scheme: str) -> ServerTarget:
    parts = urlsplit(dsn)
    try:
        host = parts.hostname
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError as error:
        # urlsplit raises on a port that is not a number in 0..65535.
        raise _invalid(dsn, str(error)) from error
    if not host:
        raise _invalid(dsn, "the host is missing")

    database = unquote(parts.path.strip("/")) or DEFAULT_DATABASE
    if not _DATABASE_RE.match(database):
        raise _invalid(dsn, f"database {database!r} is not a plain identifier (letters, digits, underscore)")

    options = _parse_options(dsn, parts.query)
    return ServerTarget(
        scheme=scheme,
        host=host,
        port=port,
        username=unquote(parts.username or "default"),
        password=unquote(parts.password or ""),
        database=database,
        verify=_parse_bool(dsn, "verify", options.get("verify", "true")),
        ca_cert=options.get("ca_cert") or None,
        async_insert=_parse_bool(dsn, "async_insert", options.get("async_insert", "false")),
    )


def _parse_options(dsn: str, query: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for name, values in parse_qs(query, keep_blank_values=True).items():
        if name not in SERVER_OPTIONS:
            raise _invalid(dsn, f"unknown option {name!r} (accepted: {', '.join(SERVER_OPTIONS)})")
        if len(values) != 1:
            raise _invalid(dsn, f"option {name!r} is given {len(values)} times")
        options[name] = values[0]
    return options


def _parse_bool(dsn: str, name: str, text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise _invalid(dsn, f"option {name}={text!r} is not a boolean (use true or false)")
