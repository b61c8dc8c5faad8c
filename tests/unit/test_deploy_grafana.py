"""The Grafana dashboard: structure, queries parsed by promtool, and every metric exported by pipeline.metrics."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.test_deploy_prometheus import exported_series, metric_names, tool

REPO = Path(__file__).resolve().parents[2]
GRAFANA_DIR = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "tokensentry.json"

# Grafana template variables and their stand-ins for a PromQL syntax check.
TEMPLATE_VALUES = {"$__rate_interval": "5m", "$instance": ".*", "${datasource}": "prometheus"}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def query_panels(dashboard: dict) -> list[dict]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def expressions(dashboard: dict) -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in query_panels(dashboard) for target in panel["targets"]]


def test_dashboard_structure(dashboard: dict) -> None:
    assert dashboard["uid"] == "tokensentry-workers"
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert variables == {"datasource", "instance"}
    for panel in query_panels(dashboard):
        assert panel["title"] and panel["description"], f"panel {panel['id']} needs a title and a description"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        grid = panel["gridPos"]
        assert grid["x"] >= 0, f"panel {panel['title']!r} starts left of the grid"
        assert grid["x"] + grid["w"] <= 24, f"panel {panel['title']!r} is wider than the grid"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), f"panel {panel['title']!r} repeats a refId"


def test_panels_do_not_overlap(dashboard: dict) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_queries_use_exported_metrics(dashboard: dict) -> None:
    exported = exported_series()
    used = set()
    for title, expr in expressions(dashboard):
        names = metric_names(expr)
        assert names, f"panel {title!r}: no metric found in {expr!r}"
        assert not names - exported, f"panel {title!r} uses {sorted(names - exported)}, not exported by pipeline.metrics"
        used |= names
    # The dashboard shows every TokenSentry series family at least once.
    families = {name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum").removesuffix("_total") for name in used}
    for required in (
        "tokensentry_records_in",
        "tokensentry_records_accepted",
        "tokensentry_records_dead_lettered",
        "tokensentry_consumer_lag",
        "tokensentry_batch_duration_seconds",
        "tokensentry_windows_closed",
        "tokensentry_detections",
        "tokensentry_actions",
        "tokensentry_clickhouse_write_duration_seconds",
        "tokensentry_clickhouse_write_errors",
        "tokensentry_producer_errors",
    ):
        assert required in families, f"no panel shows {required}"


def test_queries_parse_with_promtool(dashboard: dict, tmp_path: Path) -> None:
    """Each query becomes a recording rule, so `promtool check rules` parses it with Prometheus' own parser."""
    rules = []
    for index, (_, expr) in enumerate(expressions(dashboard)):
        for variable, value in TEMPLATE_VALUES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unknown template variable in {expr!r}"
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = subprocess.run([tool("promtool"), "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_provisioning_points_at_dashboard() -> None:
    provider = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "tokensentry.yaml").read_text(encoding="utf-8"))
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    compose = (REPO / "deploy" / "compose" / "compose.yaml").read_text(encoding="utf-8")
    assert "../grafana/dashboards:/var/lib/grafana/dashboards:ro" in compose
    datasource = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yaml").read_text(encoding="utf-8"))
    assert datasource["datasources"][0]["type"] == "prometheus"
