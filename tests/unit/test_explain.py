"""Tests for ``tokensentry explain`` on a store filled by replaying the planted log."""

from __future__ import annotations

import io
import json
import re

import pytest

from pipeline.cli import main
from tests.unit.analyst_logs import FLOOD_KEY, FLOOD_WINDOWS, SPIKE_WINDOW, WINDOW_S, WINDOWS, ReplayedStore, replay_planted_log

LINE_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ")


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> ReplayedStore:
    return replay_planted_log(tmp_path_factory.mktemp("explain"))


def explain(replayed: ReplayedStore, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    exit_code = main(["explain", *args, "--data-dir", str(replayed.data_dir)])
    captured = capsys.readouterr()
    return exit_code, captured.out, captured.err


def timeline_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if LINE_TIME.match(line)]


def test_explain_flood_detection_and_action(replayed: ReplayedStore, capsys) -> None:
    exit_code, out, _ = explain(replayed, capsys, replayed.flood_id)
    lines = timeline_lines(out)
    detection_lines = [line for line in lines if "detection rate_limit" in line]
    action_lines = [line for line in lines if "action throttle" in line]

    assert exit_code == 0
    assert out.startswith(f"{replayed.flood_id} (token hash)")
    assert len(detection_lines) == len(FLOOD_WINDOWS)
    assert "exceeded its static limit" in detection_lines[0]
    assert len(action_lines) == 1
    assert "to 20 requests/s" in action_lines[0]
    assert "rule rate-limit-throttle" in action_lines[0]
    assert "exceeded its static limit in a 10 s window: request_rate_rps 30 (expected 20) (x3)" in action_lines[0]


def test_explain_timeline_in_time_order(replayed: ReplayedStore, capsys) -> None:
    _, out, _ = explain(replayed, capsys, replayed.flood_id)
    lines = timeline_lines(out)
    times = [line[:20] for line in lines]
    first_window = next(i for i, line in enumerate(lines) if "window: 300 requests" in line)
    first_detection = next(i for i, line in enumerate(lines) if "detection " in line)
    action = next(i for i, line in enumerate(lines) if "action throttle" in line)

    assert times == sorted(times)
    assert first_window < first_detection < action


def test_explain_quiet_windows_fold_into_runs(replayed: ReplayedStore, capsys) -> None:
    _, out, _ = explain(replayed, capsys, replayed.flood_id)
    lines = timeline_lines(out)
    runs = [line for line in lines if "no detections" in line]
    folded = sum(int(re.search(r"  (\d+) windows over", run).group(1)) for run in runs)

    # Before the flood, from the flood to the restore, after the restore.
    assert len(runs) == 3
    assert f"  {FLOOD_WINDOWS[0]} windows over" in runs[0]
    assert "2 requests per window" in runs[0]
    assert "action restore" in lines[lines.index(runs[1]) + 1]
    assert folded == WINDOWS - len(FLOOD_WINDOWS)


def test_explain_shows_recorded_baseline(replayed: ReplayedStore, capsys) -> None:
    _, out, _ = explain(replayed, capsys, replayed.spike_id)
    window_lines = [line for line in timeline_lines(out) if "window: 120 requests" in line]

    assert len(window_lines) == 1
    assert "against a baseline of 2" in window_lines[0]
    assert "detection ewma_rate, high" in out
    assert "rule spike-throttle" in out


def test_explain_raw_credential_from_stdin(replayed: ReplayedStore, capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(FLOOD_KEY + "\n"))
    exit_code, out, _ = explain(replayed, capsys, "--raw")

    assert exit_code == 0
    assert out.startswith(replayed.flood_id)
    assert FLOOD_KEY not in out


def test_explain_json_lists_records(replayed: ReplayedStore, capsys) -> None:
    exit_code, out, _ = explain(replayed, capsys, replayed.flood_id, "--json")
    result = json.loads(out)
    kinds = [entry["kind"] for entry in result["timeline"]]
    flagged = [window for window in result["windows"] if window["baseline"] is not None]

    assert exit_code == 0
    assert result["subject_id"] == replayed.flood_id
    assert result["windows_total"] == WINDOWS
    assert sorted({d["detector"] for d in result["detections"]}) == ["ewma_rate", "rate_limit"]
    assert [a["kind"] for a in result["actions"]] == ["throttle", "restore"]
    assert kinds.count("windows") == 3
    assert kinds.count("detection") == 2 * len(FLOOD_WINDOWS)
    assert len(flagged) == len(FLOOD_WINDOWS)
    assert [entry["time"] for entry in result["timeline"]] == sorted(entry["time"] for entry in result["timeline"])


def test_explain_client_subject_shows_block(replayed: ReplayedStore, capsys) -> None:
    exit_code, out, _ = explain(replayed, capsys, replayed.ip_subject)

    assert exit_code == 0
    assert "(client IP)" in out
    assert "action block 203.0.113.9/32" in out
    assert "rule rate-limit-revoke" in out


def test_explain_limit_truncates_windows(replayed: ReplayedStore, capsys) -> None:
    exit_code, out, _ = explain(replayed, capsys, replayed.flood_id, "--limit", "10")

    assert exit_code == 0
    assert f"Showing the newest 10 of {WINDOWS} windows" in out
    assert "  10 windows over 1m40s" in out
    assert not [line for line in timeline_lines(out) if "  detection " in line]


def test_explain_since_duration_counts_from_newest(replayed: ReplayedStore, capsys) -> None:
    minutes_after_spike = (WINDOWS - SPIKE_WINDOW) * WINDOW_S // 60 - 1
    _, out, _ = explain(replayed, capsys, replayed.flood_id, "--since", f"{minutes_after_spike}m")

    assert "0 detections and 1 action" in out
    assert "action restore" in out


def test_explain_since_after_newest_record_fails(replayed: ReplayedStore, capsys) -> None:
    exit_code, _, err = explain(replayed, capsys, replayed.flood_id, "--since", "2099-01-01T00:00:00Z")

    assert exit_code == 1
    assert "no windows, detections or actions since 2099-01-01 00:00:00Z" in err


def test_explain_unknown_token_exits_1(replayed: ReplayedStore, capsys) -> None:
    exit_code, out, err = explain(replayed, capsys, "tk_0000000000000000")

    assert exit_code == 1
    assert out == ""
    assert "tk_0000000000000000 was not found" in err
    assert 'tokensentry query "SELECT subject_id' in err
    assert "LIKE '%00000000%'" in err


def test_explain_unknown_raw_mentions_secret(replayed: ReplayedStore, capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("never-used-credential\n"))
    exit_code, _, err = explain(replayed, capsys, "--raw")

    assert exit_code == 1
    assert "token-hash secret" in err


def test_explain_token_and_raw_rejected(replayed: ReplayedStore, capsys) -> None:
    exit_code, _, err = explain(replayed, capsys, replayed.flood_id, "--raw")

    assert exit_code == 2
    assert "either TOKEN or --raw" in err


def test_explain_missing_token_rejected(replayed: ReplayedStore, capsys) -> None:
    exit_code, _, err = explain(replayed, capsys)

    assert exit_code == 2
    assert "missing TOKEN" in err


def test_explain_invalid_since_rejected(replayed: ReplayedStore, capsys) -> None:
    exit_code, _, err = explain(replayed, capsys, replayed.flood_id, "--since", "yesterday")

    assert exit_code == 2
    assert "invalid --since 'yesterday'" in err
