"""``tokensentry replay`` end to end on a small file: every table, counts, and no raw token anywhere."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.sinks.clickhouse import AuditStore

PLANTED = "sk_live_PLANTEDsecret0123456789"
HEADER_PLANTED = "sk_live_HEADERsecret9876543210"
START = 1_767_225_600  # 2026-01-01T00:00:00Z


def clf_time(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")


def write_log(path: Path) -> dict[str, int]:
    """Write a small NGINX log with a planted credential burst, quiet traffic and bad lines."""
    lines: list[str] = []
    # A token sent in the query string: 400 requests inside one 10 s window (40 rps).
    for i in range(400):
        ts = START + 20 + i * 0.02
        lines.append(
            f'198.51.100.7 - - [{clf_time(ts)}] "GET /v1/orders?api_key={PLANTED}&page={i} HTTP/1.1" 200 512 '
            f'"-" "okhttp/4.12" rt=0.012 country="DE"'
        )
    # The same kind of secret in a header extra, at a low rate.
    for i in range(30):
        ts = START + i * 2.0
        lines.append(
            f'203.0.113.9 - - [{clf_time(ts)}] "GET /v1/users HTTP/1.1" 200 90 "-" "curl/8.5" '
            f'key="{HEADER_PLANTED}" rt=0.004'
        )
    # Lines that must become dead letters, one of them carrying the planted secret.
    bad = [
        f"garbage line with api_key={PLANTED} inside",
        "",
        '198.51.100.7 - - [not a time] "GET / HTTP/1.1" 200 1 "-" "x"',
    ]
    lines.extend(bad)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return {"good": 430, "bad": len(bad)}


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    directory = tmp_path_factory.mktemp("replay")
    log = directory / "access.log.gz"
    expected = write_log(log)
    actions = directory / "actions.jsonl"
    return {"directory": directory, "log": log, "expected": expected, "actions": actions}


def run_replay(replayed: dict, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> dict:
    caplog.set_level(logging.DEBUG)
    code = main(
        [
            "--log-level",
            "DEBUG",
            "replay",
            str(replayed["log"]),
            "--data-dir",
            str(replayed["directory"] / "data"),
            "--actions",
            str(replayed["actions"]),
            "--json",
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return {"summary": json.loads(captured.out.strip().splitlines()[-1]), "out": captured.out, "err": captured.err}


def test_replay_end_to_end_rows_and_secrets(replayed, capsys, caplog):
    result = run_replay(replayed, capsys, caplog)
    summary = result["summary"]
    expected = replayed["expected"]

    # Counts add up, and the summary has the documented keys.
    for key in ("lines_read", "events_accepted", "dead_lettered", "tokens", "windows", "detections", "actions",
                "elapsed_s", "events_per_s"):
        assert key in summary, key
    assert summary["lines_read"] == expected["good"] + expected["bad"]
    assert summary["events_accepted"] == expected["good"]
    assert summary["dead_lettered"] == expected["bad"]
    assert summary["lines_read"] == summary["events_accepted"] + summary["dead_lettered"]

    store = AuditStore.open(f"chdb://{replayed['directory'] / 'data' / 'store'}")
    try:
        def scalar(sql: str):
            return store.query(sql)[1][0][0]

        # Every table holds the rows the summary reports.
        assert scalar("SELECT count() FROM events FINAL") == expected["good"]
        assert scalar("SELECT count() FROM dead_letters FINAL") == expected["bad"]
        assert scalar("SELECT count() FROM windows FINAL") == summary["windows"]
        assert scalar("SELECT count() FROM detections FINAL") == summary["detections"]
        assert scalar("SELECT count() FROM actions FINAL") == summary["actions"]
        assert scalar("SELECT uniqExact(subject_id) FROM events FINAL") == summary["tokens"]
        assert scalar("SELECT sum(requests) FROM windows FINAL") == expected["good"]

        # The burst token is flagged by the static limit and throttled.
        burst_id = scalar("SELECT subject_id FROM events FINAL WHERE client_ip = '198.51.100.7' LIMIT 1")
        assert burst_id.startswith("tk_")
        assert scalar(f"SELECT count() FROM detections FINAL WHERE subject_id = '{burst_id}' AND detector = 'rate_limit'") >= 1
        assert scalar(f"SELECT count() FROM actions FINAL WHERE subject = '{burst_id}' AND kind = 'throttle'") == 1

        # Dead letters keep source, line number and reason.
        reasons = store.query("SELECT offset, reason, raw FROM dead_letters FINAL ORDER BY offset")[1]
        assert [row[0] for row in reasons] == [431, 432, 433]
        assert all(row[1] for row in reasons)

        # The planted secrets appear in no String column of any table.
        tables = [row[0] for row in store.query("SELECT name FROM system.tables WHERE database = currentDatabase() AND engine LIKE '%MergeTree'")[1]]
        for table in tables:
            columns = store.query(
                f"SELECT name FROM system.columns WHERE database = currentDatabase() AND table = '{table}' "
                "AND type LIKE '%String%'"
            )[1]
            for (column,) in columns:
                for secret in (PLANTED, HEADER_PLANTED):
                    hits = scalar(f"SELECT count() FROM {table} WHERE position(toString(`{column}`), '{secret}') > 0")
                    assert hits == 0, f"{secret} found in {table}.{column}"
    finally:
        store.close()

    # Nor in the actions file, the printed output or the logs.
    actions_text = replayed["actions"].read_text()
    assert len(actions_text.splitlines()) == summary["actions"]
    log_text = "\n".join(record.getMessage() for record in caplog.records)
    for secret in (PLANTED, HEADER_PLANTED):
        assert secret not in actions_text
        assert secret not in result["out"]
        assert secret not in result["err"]
        assert secret not in log_text
    # Nor on disk in the embedded store's files (uncompressed parts would show it).
    for path in (replayed["directory"] / "data").rglob("*"):
        if path.is_file():
            assert PLANTED.encode() not in path.read_bytes(), path


def test_replay_twice_adds_no_duplicate_rows(replayed, capsys, caplog):
    run_replay(replayed, capsys, caplog)
    second = run_replay(replayed, capsys, caplog)["summary"]
    store = AuditStore.open(f"chdb://{replayed['directory'] / 'data' / 'store'}")
    try:
        events = store.query("SELECT count(), uniqExact(event_id) FROM events FINAL")[1][0]
        actions = store.query("SELECT count(), uniqExact(action_id) FROM actions FINAL")[1][0]
    finally:
        store.close()
    assert events == (second["events_accepted"], second["events_accepted"])
    assert actions[0] == actions[1]


def test_replay_missing_file_is_one_clear_line(tmp_path, capsys):
    code = main(["replay", str(tmp_path / "nope.log"), "--data-dir", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code == 2
    assert "nope.log not found" in err
    assert "Traceback" not in err
