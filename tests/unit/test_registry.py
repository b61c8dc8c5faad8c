"""Token registry: YAML, CSV and query rows, reload on change, versions and lookups."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from detectors.base import DetectionContext
from pipeline.errors import ConfigError
from pipeline.registry import TokenRegistry
from schemas.registry import TokenRecord

YAML = """
plans:
  eu: {allowed_countries: [de, FR], account_limit_rps: 50}
accounts:
  acme: {rate_limit_rps: 100}
tokens:
  - subject_id: key:a
    account: acme
    plan: eu
    scopes: [/v1/orders]
    expires_at: 2026-02-01T00:00:00Z
  - subject_id: tk_00000000000000ff
    allowed_origins: [https://app.example.com]
    allowed_countries: [GB]
    rate_limit_rps: 5
"""


def touch_later(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


def test_yaml_registry_loads_plans_accounts_and_tokens(tmp_path):
    path = tmp_path / "registry.yaml"
    path.write_text(YAML, encoding="utf-8")
    registry = TokenRegistry.load(path)
    assert len(registry) == 2
    assert registry["key:a"].expires_at == 1_769_904_000.0
    rows = registry.lookup(np.array(["tk_00000000000000ff", "key:zz", "key:a"], dtype=object))
    assert rows.tolist() == [1, -1, 0]
    assert registry.allowed_countries[0] == ("DE", "FR")
    assert registry.allowed_countries[1] == ("GB",)
    assert registry.has_scopes.tolist() == [True, False]
    assert registry.account_limit_rps("acme") == 100
    assert registry.account_limit_rps("other", "eu") == 50
    assert registry.account_limit_rps("other") is None


def test_yaml_list_of_tokens(tmp_path):
    path = tmp_path / "registry.yml"
    path.write_text("- subject_id: key:a\n  expires_at: 1767225600\n", encoding="utf-8")
    assert TokenRegistry.load(path)["key:a"].expires_at == 1_767_225_600.0


def test_csv_registry_splits_list_fields(tmp_path):
    path = tmp_path / "registry.csv"
    path.write_text(
        "subject_id,account,scopes,allowed_countries,expires_at,rate_limit_rps\n"
        "key:a,acme,/v1/orders;/v1/users,DE FR,2026-01-01,2.5\n"
        "key:b,,,,,\n",
        encoding="utf-8",
    )
    registry = TokenRegistry.load(path)
    assert registry["key:a"].scopes == ("/v1/orders", "/v1/users")
    assert registry["key:a"].allowed_countries == ("DE", "FR")
    assert registry["key:a"].expires_at == 1_767_225_600.0
    assert registry["key:a"].rate_limit_rps == 2.5
    assert registry["key:b"].scopes == ()


def test_rows_registry_version_follows_content():
    columns = ["subject_id", "account", "scopes"]
    first = TokenRegistry.from_rows([("key:a", "acme", ["/v1"])], columns)
    same = TokenRegistry.from_rows([("key:a", "acme", ["/v1"])], columns)
    other = TokenRegistry.from_rows([("key:a", "acme", ["/v2"])], columns)
    assert first.version == same.version
    assert first.version != other.version
    assert first.version.startswith("rows-")
    assert first["key:a"].scopes == ("/v1",)


def test_version_has_hash_and_mtime(tmp_path):
    path = tmp_path / "registry.yaml"
    path.write_text(YAML, encoding="utf-8")
    registry = TokenRegistry.load(path)
    digest, _, seconds = registry.version.partition("-")
    assert len(digest) == 12
    assert int(seconds) == path.stat().st_mtime_ns // 1_000_000_000


def test_reload_applies_changes_without_restart(tmp_path):
    path = tmp_path / "registry.yaml"
    path.write_text("tokens:\n  - subject_id: key:a\n", encoding="utf-8")
    registry = TokenRegistry.load(path)
    context = DetectionContext(window_s=10.0, registry=registry)
    old_version = context.registry_version
    assert not context.refresh()
    path.write_text("tokens:\n  - subject_id: key:a\n  - subject_id: key:b\n", encoding="utf-8")
    touch_later(path)
    assert context.refresh()
    assert "key:b" in context.registry
    assert context.registry_version != old_version
    assert context.registry_version == registry.version


def test_invalid_reload_keeps_previous_registry(tmp_path, caplog):
    path = tmp_path / "registry.yaml"
    path.write_text("tokens:\n  - subject_id: key:a\n", encoding="utf-8")
    registry = TokenRegistry.load(path)
    version = registry.version
    path.write_text("tokens:\n  - subject_id: key:a\n    colour: red\n", encoding="utf-8")
    touch_later(path)
    assert not registry.reload_if_changed()
    assert registry.version == version
    assert "keeping version" in caplog.text
    assert not registry.reload_if_changed()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("tokens:\n  - subject_id: key:a\n  - subject_id: key:a\n", "twice"),
        ("tokens:\n  - account: acme\n", "subject_id"),
        ("tokens:\n  - subject_id: key:a\n    expires_at: soon\n", "expires_at"),
        ("plans: {eu: {colour: red}}\n", "plans.eu.colour"),
        ("- 1\n", "must be a mapping"),
    ],
)
def test_invalid_registry_names_the_problem(tmp_path, content, message):
    path = tmp_path / "registry.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        TokenRegistry.load(path)


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        TokenRegistry.load(tmp_path / "missing.yaml")
    path = tmp_path / "registry.json"
    path.write_text("{}", encoding="utf-8")
    with pytest.raises(ConfigError, match="suffix"):
        TokenRegistry.load(path)


def test_context_wraps_plain_dict_registry():
    context = DetectionContext(window_s=10.0, registry={"key:a": TokenRecord(subject_id="key:a", plan="pro")})
    assert isinstance(context.registry, TokenRegistry)
    assert context.registry["key:a"].plan == "pro"
    assert context.registry_version.startswith("records-")
    assert DetectionContext(window_s=10.0).registry_version == ""


def test_registry_pickles(tmp_path):
    import pickle

    path = tmp_path / "registry.yaml"
    path.write_text(YAML, encoding="utf-8")
    registry = pickle.loads(pickle.dumps(TokenRegistry.load(path)))
    assert registry.lookup(np.array(["key:a"], dtype=object)).tolist() == [0]
    assert not registry.reload_if_changed()
