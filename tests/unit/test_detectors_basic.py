"""EWMA spike and static rate-limit detectors on planted and benign windows."""

import numpy as np

from detectors.base import DetectionContext
from detectors.ewma import EwmaRate
from detectors.rate_limit import StaticRateLimit
from pipeline.state import SubjectIndex
from pipeline.windows import TumblingWindows
from schemas.detections import Severity
from schemas.registry import TokenRecord
from tests.unit.helpers import steady_windows

CONTEXT = DetectionContext(window_s=10.0, default_limit_rps=20.0)


def run_detector(detector, batches, context=CONTEXT):
    """Feed each event batch through windows and the detector; return all detections."""
    index = SubjectIndex()
    detector.attach(index)
    windows = TumblingWindows(size_s=10, allowed_lateness_s=0)
    found = []
    closed_batches = [windows.add(batch) for batch in batches] + [windows.flush()]
    for closed in closed_batches:
        if closed.size:
            closed.slots = index.assign(closed.keys["subject_id"], closed.keys["window_end"])
            found.extend(detector.detect(closed, context))
    return found


def test_ewma_flags_planted_burst():
    rng = np.random.default_rng(7)
    counts = rng.poisson(40, size=60).tolist() + [600] + rng.poisson(40, size=5).tolist()
    found = run_detector(EwmaRate(), [steady_windows("key:busy", counts)])
    assert len(found) == 1
    assert found[0].subject_id == "key:busy"
    assert found[0].evidence[0].observed == 600
    assert 30 < found[0].evidence[0].expected < 50
    assert found[0].severity >= Severity.HIGH


def test_ewma_leaves_steady_low_volume_token_alone():
    rng = np.random.default_rng(11)
    counts = rng.poisson(0.5, size=2000).tolist()
    counts[1000] = 9  # a Poisson outlier, far above 0.5 but below min_requests
    found = run_detector(EwmaRate(), [steady_windows("key:quiet", counts)])
    assert found == []


def test_ewma_leaves_steady_busy_token_alone():
    rng = np.random.default_rng(3)
    counts = rng.poisson(200, size=500).tolist()
    found = run_detector(EwmaRate(), [steady_windows("key:steady", counts)])
    assert found == []


def test_ewma_silent_during_warmup():
    found = run_detector(EwmaRate(warmup_windows=12), [steady_windows("key:new", [10] * 5 + [1000])])
    assert found == []


def test_ewma_explanation_states_observed_and_baseline():
    counts = [40] * 30 + [800]
    detection = run_detector(EwmaRate(), [steady_windows("key:x", counts)])[0]
    assert "sent 800 requests in 10 s" in detection.explanation
    assert "requests 800 (expected 40)" in detection.explanation


def test_ewma_scores_repeated_subject_in_order():
    detector = EwmaRate(warmup_windows=2, min_requests=1)
    index = SubjectIndex()
    detector.attach(index)
    slots = np.array([0, 0, 0, 0], dtype=np.int64)
    z, means, flags = detector.score_and_learn(slots, np.array([10.0, 10.0, 10.0, 100.0]))
    assert means.tolist()[:2] == [0.0, 10.0]
    assert flags.tolist() == [False, False, False, True]


def test_rate_limit_flags_only_above_limit():
    found = run_detector(StaticRateLimit(), [steady_windows("key:a", [199, 200, 201, 1100])])
    assert [round(d.score, 3) for d in found] == [1.005, 5.5]
    assert found[1].severity == Severity.CRITICAL


def test_rate_limit_uses_registry_override():
    context = DetectionContext(
        window_s=10.0,
        default_limit_rps=20.0,
        registry={"key:a": TokenRecord(subject_id="key:a", rate_limit_rps=1.0)},
    )
    found = run_detector(StaticRateLimit(), [steady_windows("key:a", [15])], context)
    assert len(found) == 1
    assert found[0].evidence[0].expected == 1.0


def test_rate_limit_uses_plan_limit():
    context = DetectionContext(
        window_s=10.0,
        default_limit_rps=20.0,
        plan_limits_rps={"free": 2.0},
        registry={"key:a": TokenRecord(subject_id="key:a", plan="free")},
    )
    found = run_detector(StaticRateLimit(), [steady_windows("key:a", [25])], context)
    assert found[0].evidence[0].expected == 2.0


def test_detection_ids_stable_across_runs():
    counts = [40] * 30 + [800]
    first = run_detector(EwmaRate(), [steady_windows("key:x", counts)])
    second = run_detector(EwmaRate(), [steady_windows("key:x", counts)])
    assert [d.detection_id for d in first] == [d.detection_id for d in second]
