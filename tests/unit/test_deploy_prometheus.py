"""Prometheus rules and config checked by promtool, and every metric they use exported by pipeline.metrics."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "alerts.yaml"

# Series Prometheus itself adds to every scrape, and PromQL names that are not series.
SCRAPE_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created", ""),
    "info": ("_info",),
    "unknown": ("",),
}


def tool(name: str) -> str:
    """Return the path of a validator installed by `make tools` into the virtualenv, or on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; run `make tools` (the `test` targets run it)")
    return found


def exported_series() -> set[str]:
    """Every series name a worker's /metrics can contain, labelled children included."""
    names = set()
    for family in Metrics().registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names


def metric_names(expr: str) -> set[str]:
    """Return the metric names a PromQL expression selects (tokensentry_*, process_*, python_* and up)."""
    return set(re.findall(r"\b((?:tokensentry|process|python)_[a-z0-9_]+|up)\b(?=\s*[{\[)]|\s*$|\s*[=!<>*/+-])", expr))


def rule_expressions() -> list[tuple[str, str]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [(rule["alert"], rule["expr"]) for group in document["groups"] for rule in group["rules"]]


def test_promtool_check_rules() -> None:
    result = subprocess.run([tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 10 rules found" in result.stdout


def test_promtool_unit_tests() -> None:
    result = subprocess.run(
        [tool("promtool"), "test", "rules", "alerts.test.yaml"],
        capture_output=True,
        text=True,
        cwd=PROMETHEUS_DIR,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test() -> None:
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts.test.yaml").read_text(encoding="utf-8"))["tests"]
    firing = {
        case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]
    }
    assert firing == {name for name, _ in rule_expressions()}


def test_promtool_check_config(tmp_path: Path) -> None:
    """prometheus.yml is valid once its rule path (a container path) points at the repository's file."""
    config = (PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8")
    assert "/etc/prometheus/alerts.yaml" in config
    copy = tmp_path / "prometheus.yml"
    copy.write_text(config.replace("/etc/prometheus/alerts.yaml", str(RULES)), encoding="utf-8")
    result = subprocess.run([tool("promtool"), "check", "config", str(copy)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_use_exported_metrics() -> None:
    exported = exported_series() | SCRAPE_SERIES
    for alert, expr in rule_expressions():
        names = metric_names(expr)
        assert names, f"{alert}: no metric found in {expr!r}"
        missing = names - exported
        assert not missing, f"{alert} uses {sorted(missing)}, which pipeline.metrics does not export"


def test_rules_select_worker_job() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    for alert, expr in rule_expressions():
        for job in re.findall(r'job="([^"]+)"', expr):
            assert job in jobs, f"{alert} selects job {job!r}, which prometheus.yml does not scrape"


def test_metric_name_extraction() -> None:
    expr = 'sum(rate(tokensentry_records_in_total{instance=~"a"}[5m])) / up{job="x"} and time() - tokensentry_loop_last_tick_timestamp_seconds > 3'
    assert metric_names(expr) == {"tokensentry_records_in_total", "up", "tokensentry_loop_last_tick_timestamp_seconds"}
