"""Replay a token's request-rate baseline from its stored windows.

Detections record the baseline (``expected``) only for the windows they
flag. To plot a token's baseline against all of its traffic, this module
feeds the token's stored windows, oldest first, to a fresh ``ewma_rate``
detector configured as in ``build_detectors``. The EWMA state of one token
depends only on that token's own windows. So the replayed baseline equals
the pipeline's when the replay starts at the token's first window and the
token never idled out of the pipeline's state (``idle_ttl_s``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.assemble import build_detectors
from pipeline.errors import ConfigError
from pipeline.state import SubjectIndex

EWMA_DETECTOR_ID = "ewma_rate"


@dataclass(slots=True)
class ReplayedBaseline:
    """Per window, in the order given: the expected request count, the z-score and the flag."""

    expected: np.ndarray
    z: np.ndarray
    flagged: np.ndarray


def replay_baseline(window_start: np.ndarray, requests: np.ndarray) -> ReplayedBaseline:
    """Replay one token's windows (``window_start`` in epoch seconds, ascending) through ``ewma_rate``.

    Raises:
        ConfigError: the detector set has no ``ewma_rate`` detector.
    """
    detector = next((d for d in build_detectors() if d.detector_id == EWMA_DETECTOR_ID), None)
    if detector is None:
        raise ConfigError(f"the detector set has no {EWMA_DETECTOR_ID} detector, so there is no baseline to replay")
    index = SubjectIndex()
    detector.attach(index)
    starts = np.asarray(window_start, dtype=np.float64)
    counts = np.asarray(requests, dtype=np.float64)
    slots = index.assign(np.full(len(counts), "replayed", dtype=object), starts)
    z, expected, flags = detector.score_and_learn(slots, counts, starts)
    return ReplayedBaseline(expected=expected, z=z, flagged=flags)
