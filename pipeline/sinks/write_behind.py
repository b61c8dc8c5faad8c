"""A bounded background writer, so store inserts overlap the next batch's parsing.

chDB and the HTTP client release the GIL while ClickHouse works, so a
writer thread keeps both cores busy during a replay. At most
``max_pending`` batches wait; ``submit`` blocks beyond that, which bounds
memory. Writes run in submission order on one thread. The first error a
write raises is re-raised by the next ``submit`` or by ``flush``, and no
write submitted after it runs.

>>> writer = WriteBehind(max_pending=2)
>>> done = []
>>> writer.submit(done.append, 1)
>>> writer.flush()
>>> done
[1]
>>> writer.close()
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

_STOP = object()


class WriteBehind:
    """Runs write calls on one background thread, in order, at most ``max_pending`` queued."""

    def __init__(self, max_pending: int = 2, name: str = "tokensentry-writer") -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending!r}")
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, function: Callable[..., Any], *args: Any) -> None:
        """Queue ``function(*args)``; block while ``max_pending`` calls wait; raise an earlier failure."""
        self._raise_error()
        self._queue.put((function, args))

    @property
    def running(self) -> bool:
        """Whether the thread still takes calls, that is, ``close`` has not stopped it."""
        return self._thread.is_alive()

    def flush(self) -> None:
        """Wait until every submitted call has run, then raise the first failure if any."""
        self._queue.join()
        self._raise_error()

    def close(self, flush: bool = True) -> None:
        """Stop the thread after the calls already queued; with ``flush``, raise their first failure."""
        if not self._thread.is_alive():
            return
        try:
            if flush:
                self.flush()
        finally:
            self._queue.put(_STOP)
            self._thread.join()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                if self._error is None:
                    function, args = item
                    function(*args)
            except BaseException as error:  # noqa: BLE001 - handed to the submitting thread
                logger.error("background write failed: %s", error)
                self._error = error
            finally:
                self._queue.task_done()
