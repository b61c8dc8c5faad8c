"""Build the pipeline an evaluation runs: the production wiring, pointed at the labelled set's registry and blocklist."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.assemble import build_pipeline
from pipeline.config import Settings
from pipeline.runner import Pipeline
from pipeline.sinks.write_behind import WriteBehind


class TappedStore:
    """An audit store that hands every event batch to ``on_events`` before writing it.

    Everything else is delegated unchanged, so the pipeline writes exactly
    what it writes in production.
    """

    def __init__(self, store, on_events: Callable[[dict[str, np.ndarray]], None]) -> None:
        self._store = store
        self._on_events = on_events

    def write_events(self, columns: dict[str, np.ndarray]) -> int:
        self._on_events(columns)
        return self._store.write_events(columns)

    def __getattr__(self, name: str):
        return getattr(self._store, name)


def with_input_files(settings: Settings, registry_file: Path | None, blocklist_file: Path | None) -> Settings:
    """Return ``settings`` with the labelled set's registry and blocklist files, where it has them.

    Without a file of its own, the labelled set keeps the registry or
    blocklist the settings name.
    """
    updates: dict[str, object] = {}
    if registry_file is not None:
        updates["registry_file"] = registry_file
    if blocklist_file is not None:
        updates["detectors"] = settings.detectors.model_copy(update={"blocklist_file": blocklist_file})
    return settings.model_copy(update=updates)


def build_evaluation_pipeline(
    settings: Settings, *, store, log_format: str | None, writer: WriteBehind | None = None
) -> Pipeline:
    """Build the production pipeline (``build_pipeline``) around ``store``."""
    return build_pipeline(settings, store=store, log_format=log_format, writer=writer)
