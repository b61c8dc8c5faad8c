"""Action sinks: where decided actions go. JSON Lines here; Kafka in ``sinks.kafka``."""

from __future__ import annotations

import logging
import sys
from typing import Protocol, TextIO

from pipeline.errors import PublishError
from schemas.actions import Action

logger = logging.getLogger(__name__)


class ActionSink(Protocol):
    """Delivers actions; ``publish`` returns only once they are durable or raises ``PublishError``."""

    sink_id: str

    def publish(self, actions: list[Action]) -> None: ...

    def close(self) -> None: ...


class JsonLinesActionSink:
    """Writes one action object per line to a file, or to stdout for ``-``."""

    sink_id = "jsonl"

    def __init__(self, path: str) -> None:
        self.path = path
        self._stream: TextIO
        if path == "-":
            self._stream = sys.stdout
            self._owned = False
        else:
            try:
                self._stream = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
            except OSError as exc:
                raise PublishError(f"cannot open actions file {path}: {exc.strerror}; pass a writable path to --actions") from None
            self._owned = True

    def publish(self, actions: list[Action]) -> None:
        if not actions:
            return
        self._stream.write("".join(action.model_dump_json() + "\n" for action in actions))
        self._stream.flush()

    def close(self) -> None:
        if self._owned:
            self._stream.close()
