"""The worker and gateway Dockerfiles: lint, the README's install command, what the image copies."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from pipeline.config import MetricsSettings

REPO = Path(__file__).resolve().parents[2]
WORKER_DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
GATEWAY_DOCKERFILE = REPO / "deploy" / "docker" / "gateway.Dockerfile"
DOCKERFILES = [WORKER_DOCKERFILE, GATEWAY_DOCKERFILE]


def tool(name: str) -> str:
    """Return the path of a validator installed by `make tools` into the virtualenv, or on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; run `make tools` (the `test` targets run it)")
    return found


def instructions(path: Path) -> list[dict]:
    return [item for item in DockerfileParser(path=str(path)).structure if item["instruction"] != "COMMENT"]


def pip_install_commands(text: str) -> list[list[str]]:
    """Return the argument lists of every `pip install` command in shell text (RUN lines, code blocks)."""
    commands = []
    for line in text.splitlines():
        for part in re.split(r"&&|;|\|\|", line):
            words = shlex.split(part.strip().lstrip("$ ").strip()) if part.strip() else []
            for i in range(len(words) - 1):
                is_pip = words[i] in ("pip", "pip3") or words[i].endswith(("/pip", "/pip3"))
                in_command_position = i == 0 or words[i - 1] == "-m"
                if is_pip and in_command_position and words[i + 1] == "install":
                    commands.append(words[i + 2 :])
                    break
    return commands


def readme_install_commands() -> list[list[str]]:
    readme = REPO / "README.md"
    if not readme.exists():
        pytest.fail("README.md is missing; its install section must show `pip install .`, the Dockerfile's command")
    blocks = re.findall(r"```(?:sh|bash|shell|console)?\n(.*?)```", readme.read_text(encoding="utf-8"), re.S)
    return [command for block in blocks for command in pip_install_commands(block)]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda path: path.name)
def test_hadolint_passes(path: Path) -> None:
    result = subprocess.run([tool("hadolint"), "--no-color", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda path: path.name)
def test_installs_like_readme(path: Path) -> None:
    runs = [item["value"] for item in instructions(path) if item["instruction"] == "RUN"]
    image_commands = [command for run in runs for command in pip_install_commands(run)]
    assert image_commands == [["."]], f"{path.name} must install the package with exactly `pip install .`"
    assert ["."] in readme_install_commands(), "README.md shows no `pip install .`, the command the images run"


def test_base_images() -> None:
    worker = [item["value"].split()[0] for item in instructions(WORKER_DOCKERFILE) if item["instruction"] == "FROM"]
    assert worker == ["python:3.11-slim", "python:3.11-slim"]
    gateway = [item["value"].split()[0] for item in instructions(GATEWAY_DOCKERFILE) if item["instruction"] == "FROM"]
    assert gateway == ["python:3.11-slim-bookworm", "python:3.11-slim-bookworm"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda path: path.name)
def test_copies_every_package(path: Path) -> None:
    """Every top-level package that pyproject installs, plus the files the build reads, is copied and not ignored."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = sorted(
        child.name
        for child in REPO.iterdir()
        if (child / "__init__.py").exists() and any(re.fullmatch(p.replace("*", ".*"), child.name) for p in patterns)
    )
    assert packages, "pyproject.toml's package patterns match no directory"
    copied = " ".join(item["value"] for item in instructions(path) if item["instruction"] == "COPY")
    ignore = (path.parent / f"{path.name}.dockerignore").read_text(encoding="utf-8").split()
    for name in [*packages, "pyproject.toml", pyproject["project"]["readme"]]:
        assert re.search(rf"(^|\s){re.escape(name)}(\s|$)", copied), f"{path.name} does not COPY {name}"
        assert f"!{name}" in ignore or f"!{name}/" in ignore, f"{path.name}.dockerignore excludes {name}"


def test_worker_runs_as_non_root() -> None:
    users = [item["value"] for item in instructions(WORKER_DOCKERFILE) if item["instruction"] == "USER"]
    assert users == ["10001:10001"]


def test_worker_healthcheck_probes_healthz() -> None:
    (healthcheck,) = [item["value"] for item in instructions(WORKER_DOCKERFILE) if item["instruction"] == "HEALTHCHECK"]
    assert '"-m", "pipeline.health", "healthz"' in healthcheck


def test_worker_exposes_metrics_port() -> None:
    exposed = [item["value"] for item in instructions(WORKER_DOCKERFILE) if item["instruction"] == "EXPOSE"]
    assert exposed == [str(MetricsSettings().port)]
    env = " ".join(item["value"] for item in instructions(WORKER_DOCKERFILE) if item["instruction"] == "ENV")
    assert f"TOKENSENTRY_METRICS__PORT={MetricsSettings().port}" in env
    assert "TOKENSENTRY_METRICS__HOST=0.0.0.0" in env


def test_healthcheck_module_runs() -> None:
    result = subprocess.run([sys.executable, "-m", "pipeline.health", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "healthz" in result.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pip install .", [["."]]),
        ("$ python -m pip install -e '.[test]'", [["-e", ".[test]"]]),
        (".venv/bin/pip install --quiet . && echo ok", [["--quiet", "."]]),
        ("echo pip install", []),
    ],
)
def test_pip_install_parsing(text: str, expected: list[list[str]]) -> None:
    assert pip_install_commands(text) == expected
