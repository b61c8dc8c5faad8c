"""Tests for ``tokensentry backtest``: candidate policies replayed over a replayed store.

The expectations are built by hand from the planted log (see
``analyst_logs``) and the policies below, not from the code under test:

- the built-in policy, written out as a file, takes the same three actions
  as the replay: throttle the flood token and the spike token at 20 req/s,
  block the flooding client's /32;
- the strict policy lowers the token limit to 10 req/s. So the busy token
  (15 req/s for 300 s, one cooldown) gets one new throttle, and the flood
  token (30 req/s) and the spike token (12 req/s) are throttled at 10
  instead of 20 req/s. The client limit stays 20 req/s, so the block is
  unchanged;
- the loose policy raises the token limit to 50 req/s and drops the
  ``ewma_rate`` rules, so both token throttles are dropped and only the
  block remains.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.analysis.backtest import ComparedAction, compare_actions
from pipeline.cli import main
from pipeline.sinks.clickhouse import AuditStore
from tests.unit.analyst_logs import FLOOD_IP, IP_FLOOD_WINDOWS, SPIKE_WINDOW, WINDOW_S, ReplayedStore, replay_planted_log

BUILTIN_RULES = """
rules:
  - {id: rate-limit-revoke, detectors: [rate_limit], min_severity: critical, action: revoke, duration: 1h}
  - {id: rate-limit-throttle, detectors: [rate_limit], min_severity: medium, action: throttle, duration: 10m}
  - {id: spike-throttle, detectors: [ewma_rate], min_severity: high, action: throttle, duration: 10m}
  - {id: spike-alert, detectors: [ewma_rate], min_severity: medium, action: alert, duration: 0}
"""

LOOSE_RULES = """
rules:
  - {id: rate-limit-revoke, detectors: [rate_limit], min_severity: critical, action: revoke, duration: 1h}
  - {id: rate-limit-throttle, detectors: [rate_limit], min_severity: medium, action: throttle, duration: 10m}
"""

POLICIES = {
    "same": "version: builtin-1\n" + BUILTIN_RULES,
    "strict": "version: strict-1\ndefault_limit_rps: 10\n" + BUILTIN_RULES,
    "loose": "version: loose-1\ndefault_limit_rps: 50\n" + LOOSE_RULES,
}
BLOCK_SUBJECT = f"{FLOOD_IP}/32"


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> ReplayedStore:
    return replay_planted_log(tmp_path_factory.mktemp("backtest"))


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("policies")
    paths = {}
    for name, text in POLICIES.items():
        paths[name] = directory / f"{name}.yaml"
        paths[name].write_text(text, encoding="utf-8")
    return paths


def backtest_json(replayed: ReplayedStore, policy: Path, capsys, *args: str) -> dict:
    exit_code = main(["backtest", "--policy", str(policy), "--data-dir", str(replayed.data_dir), "--json", *args])
    captured = capsys.readouterr()
    assert exit_code == 0, captured.err
    return json.loads(captured.out)


def changes_of(report: dict, change: str) -> dict[str, list[tuple]]:
    """Return subject -> [(stored kind/limit, candidate kind/limit)] for one kind of change."""
    found: dict[str, list[tuple]] = {}
    for item in report["changes"]:
        if item["change"] != change:
            continue
        stored = (item["stored"]["kind"], item["stored"]["limit_rps"]) if item["stored"] else None
        candidate = (item["candidate"]["kind"], item["candidate"]["limit_rps"]) if item["candidate"] else None
        found.setdefault(item["subject"], []).append((stored, candidate))
    return found


def test_backtest_same_policy_reproduces_actions(replayed: ReplayedStore, policies, capsys) -> None:
    report = backtest_json(replayed, policies["same"], capsys)

    assert report["totals"] == {"new": 0, "dropped": 0, "changed": 0, "unchanged": 3}
    assert report["stored_actions"] == 3
    assert sorted(changes_of(report, "unchanged")) == sorted([replayed.flood_id, replayed.spike_id, BLOCK_SUBJECT])
    assert all(item["stored"]["action_id"] == item["candidate"]["action_id"] for item in report["changes"])


def test_backtest_stricter_policy(replayed: ReplayedStore, policies, capsys) -> None:
    report = backtest_json(replayed, policies["strict"], capsys)

    assert changes_of(report, "new") == {replayed.busy_id: [(None, ("throttle", 10.0))]}
    assert changes_of(report, "changed") == {
        replayed.flood_id: [(("throttle", 20.0), ("throttle", 10.0))],
        replayed.spike_id: [(("throttle", 20.0), ("throttle", 10.0))],
    }
    assert changes_of(report, "dropped") == {}
    assert changes_of(report, "unchanged") == {BLOCK_SUBJECT: [(("block", None), ("block", None))]}
    assert report["totals"] == {"new": 1, "dropped": 0, "changed": 2, "unchanged": 1}


def test_backtest_looser_policy(replayed: ReplayedStore, policies, capsys) -> None:
    report = backtest_json(replayed, policies["loose"], capsys)

    assert changes_of(report, "dropped") == {
        replayed.flood_id: [(("throttle", 20.0), None)],
        replayed.spike_id: [(("throttle", 20.0), None)],
    }
    assert changes_of(report, "new") == {}
    assert changes_of(report, "changed") == {}
    assert changes_of(report, "unchanged") == {BLOCK_SUBJECT: [(("block", None), ("block", None))]}
    assert report["candidate_actions"] == 1


def test_backtest_text_report_lists_subjects(replayed: ReplayedStore, policies, capsys) -> None:
    exit_code = main(["backtest", "--policy", str(policies["strict"]), "--data-dir", str(replayed.data_dir)])
    out = capsys.readouterr().out
    difference_lines = out.split("Actions that differ")[1].splitlines()[1:]

    assert exit_code == 0
    assert "new 1, dropped 0, changed 2, unchanged 1" in out
    assert f"{replayed.busy_id}  1    0        0        0          -         throttle" in out
    assert len(difference_lines) == 3
    assert "new      " + replayed.busy_id + "  throttle 10/s" in difference_lines[0]
    assert "throttle 20/s -> throttle 10/s" in difference_lines[1]


def test_backtest_same_policy_text(replayed: ReplayedStore, policies, capsys) -> None:
    assert main(["backtest", "--policy", str(policies["same"]), "--data-dir", str(replayed.data_dir)]) == 0

    assert "The candidate policy takes the same actions as the stored ones." in capsys.readouterr().out


def test_backtest_since_compares_later_span_only(replayed: ReplayedStore, policies, capsys) -> None:
    # From 30 s before the spike: the flood and its restore lie in the warm-up.
    seconds_before_end = (240 - SPIKE_WINDOW) * WINDOW_S + 30
    report = backtest_json(replayed, policies["same"], capsys, "--since", f"{seconds_before_end}s", "--warmup", "5m")

    assert report["totals"] == {"new": 0, "dropped": 0, "changed": 0, "unchanged": 2}
    assert sorted(changes_of(report, "unchanged")) == sorted([replayed.spike_id, BLOCK_SUBJECT])
    assert report["windows_replayed"] > report["windows_compared"]
    assert report["detections_by_detector"] == {"ewma_rate": 1, "rate_limit": len(IP_FLOOD_WINDOWS)}


def test_backtest_window_batching_moves_action(replayed: ReplayedStore, policies, capsys) -> None:
    report = backtest_json(replayed, policies["same"], capsys, "--batching", "window")

    # One batch per window end: the flood throttle is issued after the first
    # flood window instead of after the replay batch that held all three.
    assert changes_of(report, "new") == {replayed.flood_id: [(None, ("throttle", 20.0))]}
    assert changes_of(report, "dropped") == {replayed.flood_id: [(("throttle", 20.0), None)]}
    assert report["batches"] > 200


def test_backtest_writes_nothing(replayed: ReplayedStore, policies, capsys) -> None:
    query = (
        "SELECT table, sum(rows), groupArraySorted(1000)(name) FROM system.parts "
        "WHERE database = currentDatabase() AND active GROUP BY table ORDER BY table"
    )
    with AuditStore.open(replayed.dsn) as store:
        _, before = store.query(query)

    backtest_json(replayed, policies["strict"], capsys)
    with AuditStore.open(replayed.dsn) as store:
        _, after = store.query(query)

    assert after == before


def test_backtest_invalid_policy_rejected(replayed: ReplayedStore, tmp_path: Path, capsys) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text("rules: [{id: x, action: explode}]\n", encoding="utf-8")

    assert main(["backtest", "--policy", str(policy), "--data-dir", str(replayed.data_dir)]) == 2
    assert "is invalid" in capsys.readouterr().err


def test_backtest_empty_store_explains(tmp_path: Path, policies, capsys) -> None:
    assert main(["store", "migrate", "--data-dir", str(tmp_path)]) == 0
    capsys.readouterr()

    assert main(["backtest", "--policy", str(policies["same"]), "--data-dir", str(tmp_path)]) == 2
    assert "nothing to backtest" in capsys.readouterr().err


# ---- compare_actions ----------------------------------------------------------


def action(action_id: str, kind: str = "throttle", limit: float | None = 20.0, at: float = 100.0, subject: str = "tk_a") -> ComparedAction:
    return ComparedAction(action_id, subject, kind, limit, at, "rule", False, ("why",))


def test_compare_same_id_unchanged() -> None:
    changes = compare_actions([action("a1")], [action("a1")])

    assert [change.change for change in changes] == ["unchanged"]


def test_compare_same_time_other_limit_changed() -> None:
    changes = compare_actions([action("a1")], [action("b1", limit=10.0)])

    assert [change.change for change in changes] == ["changed"]


def test_compare_same_time_other_kind_changed() -> None:
    changes = compare_actions([action("a1")], [action("b1", kind="revoke", limit=None)])

    assert [change.change for change in changes] == ["changed"]


def test_compare_other_time_new_and_dropped() -> None:
    changes = compare_actions([action("a1", at=100.0)], [action("b1", at=90.0)])

    assert [(change.change, change.time) for change in changes] == [("new", 90.0), ("dropped", 100.0)]


def test_compare_other_subject_not_matched() -> None:
    changes = compare_actions([action("a1", subject="tk_a")], [action("a1", subject="tk_b")])

    assert sorted(change.change for change in changes) == ["dropped", "new"]
