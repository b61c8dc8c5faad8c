"""Executes notebooks/audit_trail.ipynb against a store filled by replaying the planted log."""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.unit.analyst_logs import ReplayedStore, replay_planted_log

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "audit_trail.ipynb"
MAX_SECONDS = 30.0
FIGURES = 4  # top offenders, detections over time, action timeline, one token's baseline


def execute(notebook_path: Path, working_dir: Path) -> tuple[nbformat.NotebookNode, float]:
    notebook = nbformat.read(notebook_path, as_version=4)
    started = time.perf_counter()
    NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(working_dir)}},
    ).execute()
    return notebook, time.perf_counter() - started


def outputs(notebook: nbformat.NotebookNode) -> list[dict]:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]


def text_of(notebook: nbformat.NotebookNode) -> str:
    parts = []
    for output in outputs(notebook):
        if output.get("output_type") == "stream":
            parts.append(output["text"])
        elif "text/plain" in output.get("data", {}):
            parts.append(output["data"]["text/plain"])
    return "\n".join(parts)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> ReplayedStore:
    # The replay closes its store, which releases the chDB directory for the
    # notebook's kernel: chDB allows one process per store directory.
    return replay_planted_log(tmp_path_factory.mktemp("notebook"))


@pytest.fixture
def notebook_env(replayed: ReplayedStore, monkeypatch: pytest.MonkeyPatch) -> ReplayedStore:
    monkeypatch.delenv("TOKENSENTRY_STORE", raising=False)
    monkeypatch.delenv("TOKENSENTRY_CONFIG", raising=False)
    monkeypatch.setenv("TOKENSENTRY_DATA_DIR", str(replayed.data_dir))
    monkeypatch.setenv("AUDIT_NOTEBOOK_TOKEN", replayed.spike_id)
    return replayed


def test_notebook_runs_and_draws_figures(notebook_env: ReplayedStore, tmp_path: Path) -> None:
    notebook, seconds = execute(NOTEBOOK, tmp_path)
    errors = [output for output in outputs(notebook) if output.get("output_type") == "error"]
    figures = [output for output in outputs(notebook) if "image/png" in output.get("data", {})]
    text = text_of(notebook)

    assert errors == []
    assert len(figures) == FIGURES
    assert seconds < MAX_SECONDS
    assert f"audit store: {notebook_env.dsn}" in text
    assert notebook_env.flood_id in text.split("token:")[0]
    assert f"token: {notebook_env.spike_id}" in text
    assert "detection ewma_rate, high" in text
    assert "rule spike-throttle" in text


def test_notebook_closes_store(notebook_env: ReplayedStore, tmp_path: Path) -> None:
    from pipeline.sinks.clickhouse import AuditStore

    execute(NOTEBOOK, tmp_path)

    with AuditStore.open(notebook_env.dsn) as store:
        _, rows = store.query("SELECT count() FROM events FINAL")
    assert rows[0][0] == notebook_env.log.lines


def test_notebook_saved_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)

    nbformat.validate(notebook)
    assert outputs(notebook) == []
