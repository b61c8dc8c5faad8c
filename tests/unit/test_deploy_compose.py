"""The compose file: loaded by the compose-spec loader, its settings valid, its NGINX config accepted by nginx -t."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import resolve_settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
HEX = "ef" * 32


def tool(name: str) -> str:
    """Return the path of a validator installed by `make tools` into the virtualenv, or on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; run `make tools` (the `test` targets run it)")
    return found


def example_env() -> dict[str, str]:
    """The variables of .env.example with its placeholders filled, as an operator would."""
    values = {}
    for line in (COMPOSE_DIR / ".env.example").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = HEX if value == "CHANGE-ME" else value
    values["CLICKHOUSE_PASSWORD"] = "pw0123456789"
    return values


def load_project(extra_env: dict[str, str] | None = None, *profiles: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("TOKENSENTRY_")}
    env.update(extra_env or {})
    command = [tool("composecheck")]
    for profile in profiles:
        command += ["--profile", profile]
    return subprocess.run([*command, str(COMPOSE_FILE)], capture_output=True, text=True, env=env, check=False)


@pytest.fixture(scope="module")
def project() -> dict:
    result = load_project(example_env(), "*")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_file_valid(project: dict) -> None:
    assert project["name"] == "tokensentry"
    assert set(project["services"]) == {
        "kafka",
        "clickhouse",
        "worker",
        "shipper",
        "nginx",
        "enforce",
        "prometheus",
        "grafana",
    }


def test_default_profile_leaves_monitoring_out() -> None:
    result = load_project(example_env())
    assert result.returncode == 0, result.stderr
    assert "prometheus" not in json.loads(result.stdout)["services"]


def test_secrets_required() -> None:
    env = example_env()
    del env["TOKENSENTRY_HASH_SECRET"]
    result = load_project(env)
    assert result.returncode == 1
    assert "set TOKENSENTRY_HASH_SECRET in deploy/compose/.env" in result.stderr


def test_images_named(project: dict) -> None:
    images = {name: service["image"] for name, service in project["services"].items()}
    assert images["kafka"].startswith("apache/kafka:")
    assert images["clickhouse"].startswith("clickhouse/clickhouse-server:")
    assert images["worker"] == images["shipper"] == "tokensentry:dev"
    assert images["nginx"] == images["enforce"] == "tokensentry-gateway:dev"


def test_worker_scales_and_builds(project: dict) -> None:
    worker = project["services"]["worker"]
    assert worker["deploy"]["replicas"] == 2
    assert worker["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert Path(worker["build"]["context"]) == REPO
    assert "ports" not in worker, "published ports would collide when the worker is scaled"
    assert worker["command"] == ["run"]


def test_enforce_shares_nginx_pid_namespace(project: dict) -> None:
    enforce = project["services"]["enforce"]
    assert enforce["pid"] == "service:nginx"
    assert enforce["command"][0] == "enforce"


@pytest.mark.parametrize("service", ["worker", "shipper", "enforce"])
def test_service_settings_valid(project: dict, service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The TOKENSENTRY_* environment each service gets passes `tokensentry config check`."""
    for name in list(os.environ):
        if name.startswith("TOKENSENTRY_"):
            monkeypatch.delenv(name)
    environment = project["services"][service]["environment"]
    for name, value in environment.items():
        if name.startswith("TOKENSENTRY_"):
            monkeypatch.setenv(name, value)
    resolved = resolve_settings()
    assert resolved.settings.kafka.bootstrap_servers == "kafka:9092"
    assert resolved.settings.store_dsn().startswith("http://tokensentry:")
    assert resolved.origins["hash_secret"] == "environment variable TOKENSENTRY_HASH_SECRET"


def test_bind_mounts_exist(project: dict) -> None:
    for name, service in project["services"].items():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), f"service {name} mounts missing {volume['source']}"


def test_prometheus_scrapes_worker_port(project: dict) -> None:
    config = (REPO / "deploy" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8")
    assert 'names: ["worker"]' in config
    port = project["services"]["worker"]["environment"]["TOKENSENTRY_METRICS__PORT"]
    assert f"port: {port}" in config


def nginx_test(tmp_path: Path, render_initial: bool) -> subprocess.CompletedProcess[str]:
    """Run `nginx -t` on the gateway config, its absolute paths moved under ``tmp_path``."""
    nginx = shutil.which("nginx")
    if nginx is None:
        pytest.fail("nginx is not installed; run deploy/nginx/install.sh (make test runs it)")
    modules = Path("/etc/nginx/modules-enabled")
    text = (COMPOSE_DIR / "nginx" / "nginx.conf").read_text(encoding="utf-8")
    for directory in ("/run/nginx", "/var/log/gateway", "/etc/nginx/tokensentry"):
        moved = tmp_path / directory.strip("/").replace("/", "-")
        moved.mkdir()
        text = text.replace(directory, str(moved))
    text = text.replace("/etc/nginx/mime.types", "/etc/nginx/mime.types" if Path("/etc/nginx/mime.types").exists() else "")
    if modules.exists():
        # Debian's load_module lines name modules/*.so relative to the prefix.
        (tmp_path / "modules").symlink_to(Path("/usr/share/nginx/modules").resolve())
    else:
        text = text.replace("include /etc/nginx/modules-enabled/*.conf;", "")
    if os.geteuid() != 0:
        text = re.sub(r"^user .*;$", "", text, flags=re.MULTILINE)
    if render_initial:
        from pipeline.enforce.renderers.nginx import NginxOptions, NginxRenderer

        options = NginxOptions(output_dir=tmp_path / "etc-nginx-tokensentry", hash_secret=bytes.fromhex(HEX), status_listen="127.0.0.1:8081")
        NginxRenderer(options).ensure_files()
    config = tmp_path / "nginx.conf"
    config.write_text(text, encoding="utf-8")
    return subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(config)], capture_output=True, text=True, check=False)


def test_nginx_config_accepted_before_agent(tmp_path: Path) -> None:
    result = nginx_test(tmp_path, render_initial=False)
    assert result.returncode == 0, result.stderr


def test_nginx_config_accepted_with_agent_files(tmp_path: Path) -> None:
    """The includes fit the files the enforcement agent writes (its empty-decision set, with njs)."""
    result = nginx_test(tmp_path, render_initial=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "etc-nginx-tokensentry" / "tokensentry-http.conf").exists()
