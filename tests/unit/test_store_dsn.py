"""Parsing and masking of audit store DSNs."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.sinks.store_dsn import ChdbTarget, ServerTarget, mask_dsn, parse_dsn
from pipeline.sinks.store_errors import StoreError


def test_parse_chdb_absolute_path() -> None:
    assert parse_dsn("chdb:///var/lib/tokensentry/store") == ChdbTarget(path=Path("/var/lib/tokensentry/store"))


def test_parse_chdb_percent_encoded_path() -> None:
    assert parse_dsn("chdb:///data/audit%20store").path == Path("/data/audit store")


def test_parse_http_defaults() -> None:
    target = parse_dsn("http://writer:pw@ch.internal")

    assert isinstance(target, ServerTarget)
    assert (target.host, target.port, target.database, target.secure) == ("ch.internal", 8123, "tokensentry", False)
    assert (target.username, target.password) == ("writer", "pw")


def test_parse_https_options() -> None:
    target = parse_dsn("https://writer:p%40ss@ch.internal:9443/audit?verify=false&ca_cert=/etc/ca.pem&async_insert=1")

    assert isinstance(target, ServerTarget)
    assert (target.port, target.database, target.secure) == (9443, "audit", True)
    assert target.password == "p@ss"
    assert target.verify is False
    assert target.ca_cert == "/etc/ca.pem"
    assert target.async_insert is True


def test_server_target_repr_hides_password() -> None:
    target = parse_dsn("http://writer:topsecret@ch.internal/audit")

    assert "topsecret" not in repr(target)


@pytest.mark.parametrize(
    ("dsn", "fragment"),
    [
        ("ftp://host/x", "unknown scheme 'ftp'"),
        ("/just/a/path", "no scheme"),
        ("chdb://relative/store", "must be absolute"),
        ("chdb:store", "must be absolute"),
        ("chdb:///", "directory below /"),
        ("chdb:///data?x=1", "takes no options"),
        ("http://u:pw@/db", "host is missing"),
        ("http://u:pw@host:99999/db", "Port out of range"),
        ("http://u:pw@host/bad-name", "not a plain identifier"),
        ("http://u:pw@host/db?tls=1", "unknown option 'tls'"),
        ("http://u:pw@host/db?verify=maybe", "not a boolean"),
        ("http://u:pw@host/db?verify=1&verify=0", "given 2 times"),
    ],
)
def test_parse_invalid_dsn_names_problem(dsn: str, fragment: str) -> None:
    with pytest.raises(StoreError) as raised:
        parse_dsn(dsn)

    assert fragment in str(raised.value)
    assert "Accepted forms" in str(raised.value)


def test_parse_invalid_dsn_masks_password() -> None:
    with pytest.raises(StoreError) as raised:
        parse_dsn("http://writer:hunter2@host/bad-name")

    assert "hunter2" not in str(raised.value)
    assert "writer:***@host" in str(raised.value)


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        ("http://u:secret@host:8123/db", "http://u:***@host:8123/db"),
        ("https://u:se@cret@host/db", "https://u:***@host/db"),
        ("http://u@host/db", "http://u@host/db"),
        ("http://host/db", "http://host/db"),
        ("chdb:///data/store", "chdb:///data/store"),
        ("not a dsn", "not a dsn"),
    ],
)
def test_mask_dsn(dsn: str, masked: str) -> None:
    assert mask_dsn(dsn) == masked
