"""``tokensentry config check|show`` output and exit codes."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from pipeline.commands import config as config_command
from pipeline.config import SECRET_MASK, settings_keys

HEX_SECRET = "cd" * 32


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TOKENSENTRY_"):
            monkeypatch.delenv(name)


def run_config(*argv: str) -> int:
    """Parse and run ``tokensentry config ...`` the way ``pipeline.cli`` does."""
    parser = argparse.ArgumentParser(prog="tokensentry")
    subparsers = parser.add_subparsers(dest="command", required=True)
    config_command.register(subparsers)
    args = parser.parse_args(["config", *argv])
    return args.func(args)


def test_check_ok_lists_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("kafka:\n  partitions: 12\n", encoding="utf-8")
    monkeypatch.setenv("TOKENSENTRY_KAFKA__TOPICS", "a,b")
    assert run_config("check", "--config", str(path)) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("ok: ")
    assert any(line.split()[:2] == ["kafka.partitions", "12"] and line.endswith(f"config file {path}") for line in lines)
    assert any(
        line.startswith("kafka.topics") and line.endswith("environment variable TOKENSENTRY_KAFKA__TOPICS") for line in lines
    )
    assert len(lines) == 1 + len(settings_keys())


def test_check_invalid_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("kafka:\n  partitions: 0\nwindow_s: 0\n", encoding="utf-8")
    assert run_config("check", "--config", str(path)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "tokensentry config check: 2 errors in the settings:" in captured.err
    assert "  kafka.partitions: Input should be greater than or equal to 1 (got 0)" in captured.err
    assert "  window_s: Input should be greater than 0 (got 0)" in captured.err


def test_check_missing_file_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_config("check", "--config", "/nonexistent/c.yaml") == 2
    assert "config file /nonexistent/c.yaml not found" in capsys.readouterr().err


def test_check_missing_policy_file(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TOKENSENTRY_POLICY_FILE", "/nonexistent/policy.yaml")
    assert run_config("check") == 2
    err = capsys.readouterr().err
    assert "policy_file: policy file /nonexistent/policy.yaml not found" in err
    assert "set by environment variable TOKENSENTRY_POLICY_FILE" in err


def test_check_missing_tls_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"kafka:\n  security_protocol: SSL\n  ssl_cafile: {tmp_path}/ca.pem\n", encoding="utf-8")
    assert run_config("check", "--config", str(path)) == 2
    assert f"kafka.ssl_cafile: file {tmp_path}/ca.pem does not exist" in capsys.readouterr().err


def test_check_certificate_without_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("pem", encoding="utf-8")
    path = tmp_path / "c.yaml"
    path.write_text(f"kafka:\n  ssl_certfile: {cert}\n", encoding="utf-8")
    assert run_config("check", "--config", str(path)) == 2
    assert "ssl_certfile and kafka.ssl_keyfile must be set together" in capsys.readouterr().err


def test_show_masks_secrets(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TOKENSENTRY_HASH_SECRET", HEX_SECRET)
    monkeypatch.setenv("TOKENSENTRY_STORE", "http://writer:pa55word@clickhouse:8123/tokensentry")
    assert run_config("show") == 0
    out = capsys.readouterr().out
    assert HEX_SECRET not in out
    assert "pa55word" not in out
    (line,) = [line for line in out.splitlines() if line.startswith("hash_secret")]
    assert SECRET_MASK in line
    assert f"http://writer:{SECRET_MASK}@clickhouse:8123/tokensentry" in out


def test_show_json_nested(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TOKENSENTRY_HASH_SECRET", HEX_SECRET)
    monkeypatch.setenv("TOKENSENTRY_KAFKA__TOPICS", '["x","y"]')
    assert run_config("show", "--json") == 0
    document = json.loads(capsys.readouterr().out)
    assert document["hash_secret"] == SECRET_MASK
    assert document["kafka"]["topics"] == ["x", "y"]
    assert document["metrics"]["port"] == 9464


def test_show_option_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_config("show", "--data-dir", str(tmp_path)) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("data_dir")]
    assert str(tmp_path) in line
    assert line.endswith("command-line option")


def test_show_invalid_exits_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TOKENSENTRY_KAFKA__PARTITIONS", "zero")
    assert run_config("show", "--json") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "kafka.partitions: Input should be a valid integer" in captured.err


def test_example_config_is_valid_and_complete(capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "config.example.yaml"
    assert run_config("check", "--config", str(example)) == 0
    out = capsys.readouterr().out
    text = example.read_text(encoding="utf-8")
    for key in settings_keys():
        leaf = key.split(".")[-1]
        assert f"{leaf}:" in text, f"deploy/config.example.yaml does not mention {key}"
    assert "default" in out
