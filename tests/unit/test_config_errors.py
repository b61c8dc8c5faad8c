"""Settings error messages: masked secrets, bounded values, real sources, finite numbers."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from pipeline.commands import config as config_command
from pipeline.config import SECRET_MASK, SettingsError, load_settings
from pipeline.errors import ConfigError

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
kafka:
  topics: *f
"""


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("TOKENSENTRY_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def run_config(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="tokensentry")
    subparsers = parser.add_subparsers(dest="command", required=True)
    config_command.register(subparsers)
    args = parser.parse_args(["config", *argv])
    return args.func(args)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TOKENSENTRY_HASH_SECRT", "0123456789abcdef0123456789abcdefSECRET"),
        ("TOKENSENTRY_KAFKA__SASL_PASWORD", "hunter2SECRET"),
        ("TOKENSENTRY_API_TOKEN", "tokenSECRET"),
    ],
)
def test_unknown_key_value_masked(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(variable, value)

    assert run_config("check") == 2
    err = capsys.readouterr().err

    assert "SECRET" not in err
    assert SECRET_MASK in err
    assert variable in err


def test_secret_named_known_key_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENSENTRY_KAFKA__SSL_KEYFILE", "")
    monkeypatch.setenv("TOKENSENTRY_SIGNING_KEY_ID", "")

    with pytest.raises(SettingsError) as raised:
        load_settings()

    assert "signing_key_id" in str(raised.value)
    assert "(got '')" not in str(raised.value)
    assert SECRET_MASK in str(raised.value)


def test_echoed_value_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENSENTRY_LOG_FORMAT", "x" * 5000)

    with pytest.raises(SettingsError) as raised:
        load_settings()

    assert "x" * 81 not in str(raised.value)
    assert "log_format" in str(raised.value)


def test_billion_laughs_output_bounded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(BILLION_LAUGHS, encoding="utf-8")

    assert run_config("check", "--config", str(path)) == 2

    assert len(capsys.readouterr().err) < 10_000


def test_command_line_option_named_as_source() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(store="bogus://x")

    message = str(raised.value)
    assert message.startswith("invalid settings from command-line option:")
    assert "environment" not in message


def test_environment_named_as_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENSENTRY_WINDOW_S", "-1")

    with pytest.raises(SettingsError) as raised:
        load_settings()

    assert str(raised.value).startswith("invalid settings from environment variable TOKENSENTRY_WINDOW_S:")


def test_non_utf8_config_names_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"window_s: 10 # \xff\n")

    with pytest.raises(ConfigError) as raised:
        load_settings(path)

    assert str(path) in str(raised.value)
    assert "UTF-8" in str(raised.value)


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "Infinity"])
@pytest.mark.parametrize(
    "variable",
    ["TOKENSENTRY_WINDOW_S", "TOKENSENTRY_ALERT_MIN_INTERVAL_S", "TOKENSENTRY_METRICS__STALL_TIMEOUT_S", "TOKENSENTRY_IDLE_TTL_S"],
)
def test_non_finite_float_rejected(variable: str, text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, text)

    with pytest.raises(SettingsError) as raised:
        load_settings()

    assert "finite number" in str(raised.value)


def test_non_finite_window_option_rejected() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(window_s=float("inf"))

    assert "window_s" in str(raised.value)


@pytest.mark.parametrize(
    ("key", "value", "valid"),
    [
        ("window_s", 86400.0, True),
        ("window_s", 86400.5, False),
        ("window_s", 0.0, False),
        ("allowed_lateness_s", 0.0, True),
        ("allowed_lateness_s", 86400.0, True),
        ("allowed_lateness_s", 86401.0, False),
        ("allowed_lateness_s", -1.0, False),
    ],
)
def test_window_bounds(key: str, value: float, valid: bool) -> None:
    if valid:
        assert getattr(load_settings(**{key: value}), key) == value
    else:
        with pytest.raises(SettingsError):
            load_settings(**{key: value})


def test_show_prints_default_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_config("show", "--data-dir", str(tmp_path / "data")) == 0

    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("store "))
    assert f"chdb://{(tmp_path / 'data' / 'store').resolve()}" in line
    assert "null" not in line
    assert "default" in line


def test_show_masks_store_password(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_config("show", "--store", "http://writer:s3cret@host:8123/db") == 0
    out = capsys.readouterr().out

    assert "s3cret" not in out
    assert f"writer:{SECRET_MASK}@host" in out
