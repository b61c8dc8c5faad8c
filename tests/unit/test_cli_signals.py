"""``tokensentry`` under SIGTERM: a clear message, exit code 143 and a store left usable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline.cli import EXIT_TERMINATED
from pipeline.sinks.clickhouse import AuditStore

LINE = b'203.0.113.9 - - [02/Nov/2026:10:00:00 +0000] "GET /v1/x HTTP/1.1" 200 12 "-" "curl/8"\n'


def wait_for(path: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout_s} s")
        time.sleep(0.05)


def test_replay_sigterm_exits_143_with_message(tmp_path: Path):
    data_dir = tmp_path / "data"
    replay = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "replay", "-", "--data-dir", str(data_dir), "--no-progress"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "TOKENSENTRY_BATCH_LINES": "100"},
    )
    assert replay.stdin is not None
    # The file source reads 1 MiB blocks, so it gets the lines of the first MiB and then waits
    # for more, because stdin stays open.
    replay.stdin.write(LINE * (2 * 2**20 // len(LINE)))
    replay.stdin.flush()
    processed = (2**20 // len(LINE)) // 100 * 100
    # The store opens after the handler is installed.
    wait_for(data_dir / "store")
    time.sleep(2.0)

    replay.send_signal(signal.SIGTERM)
    _, stderr = replay.communicate(timeout=60)

    assert replay.returncode == EXIT_TERMINATED
    assert "tokensentry replay: terminated (SIGTERM)" in stderr.decode()
    assert "Traceback" not in stderr.decode()
    store = AuditStore.open(f"chdb://{(data_dir / 'store').resolve()}")
    try:
        _, rows = store.query("SELECT count() FROM events_final")
    finally:
        store.close()
    # Every batch processed before the signal is stored whole. How many were processed depends on timing.
    assert 0 < rows[0][0] <= processed
    assert rows[0][0] % 100 == 0
