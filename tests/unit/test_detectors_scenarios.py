"""Golden scenarios: log lines with fixed event times in, the expected detections out.

Each folder under tests/scenarios/ runs through identity, windows, state
and the full detector set (see tests/scenarios/harness.py).
"""

from __future__ import annotations

import pytest

from tests.scenarios import harness
from tests.scenarios.harness import parse_lines, run_scenario, scenario_folders

FOLDERS = scenario_folders()


def test_scenarios_exist():
    assert len(FOLDERS) >= 6


@pytest.mark.parametrize("folder", FOLDERS, ids=[folder.name for folder in FOLDERS])
def test_scenario_detections_match_expected(folder):
    found, expected = run_scenario(folder)
    for item in expected["detections"]:
        key = (item["detector"], item["subject"])
        assert found[key] == item["count"], f"{key}: found {found[key]}, expected {item['count']}"
    if expected["exclusive"]:
        listed = {(item["detector"], item["subject"]) for item in expected["detections"]}
        assert set(found) - listed == set()


@pytest.mark.skipif(harness.LineParser is None, reason="pipeline.parsers is not in this checkout")
@pytest.mark.parametrize("folder", FOLDERS, ids=[folder.name for folder in FOLDERS])
def test_fallback_parser_matches_line_parser(folder):
    lines = (folder / "input.log").read_text(encoding="utf-8").splitlines()
    real = parse_lines(lines)
    fallback = parse_lines(lines, use_line_parser=False)
    assert not real.dead
    assert len(real.rows) == len(fallback.rows)
    for real_row, fallback_row in zip(real.rows, fallback.rows, strict=True):
        assert [v for v in real_row if v == v] == [v for v in fallback_row if v == v]  # NaN latency compares unequal
