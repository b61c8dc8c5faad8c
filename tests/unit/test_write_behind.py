"""The background writer: order, bounded queue, and errors handed back to the caller."""

import threading

import pytest

from pipeline.sinks.write_behind import WriteBehind


def test_write_behind_runs_calls_in_order():
    writer = WriteBehind(max_pending=2)
    done: list[int] = []
    for value in range(50):
        writer.submit(done.append, value)
    writer.close()
    assert done == list(range(50))


def test_write_behind_blocks_when_full():
    writer = WriteBehind(max_pending=1)
    release = threading.Event()
    writer.submit(release.wait)  # occupies the thread
    writer.submit(lambda: None)  # fills the queue
    blocked = threading.Thread(target=writer.submit, args=(lambda: None,))
    blocked.start()
    blocked.join(timeout=0.3)
    still_blocked = blocked.is_alive()
    release.set()
    blocked.join(timeout=5)
    writer.close()
    assert still_blocked


def test_write_behind_raises_failure_on_flush_and_skips_later_calls():
    writer = WriteBehind(max_pending=4)
    done: list[int] = []

    def fail() -> None:
        raise OSError("disk full")

    writer.submit(fail)
    writer.submit(done.append, 1)
    with pytest.raises(OSError, match="disk full"):
        writer.flush()
    writer.close()
    assert done == []


def test_write_behind_rejects_zero_pending():
    with pytest.raises(ValueError, match="max_pending"):
        WriteBehind(max_pending=0)
