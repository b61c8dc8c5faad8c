"""Contract checks shared by every detector, run on one stream with a planted case for each.

Each detector must: flag its planted case; return [] for an empty batch;
tolerate batches without pair tables or client windows; give identical
detections after a pickle round-trip mid-stream and across two runs with
the same seed; keep scores finite and inside its declared range; and
explain itself with the numbers of its evidence.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from detectors.base import format_number
from detectors.catalog import DETECTOR_CLASSES, DetectorSettings, build_detectors
from pipeline.state import SubjectIndex
from pipeline.windows import WindowBatch
from schemas.detections import Severity
from tests.scenarios.mixed import PLANTED, TEST_PARAMS, mixed_traffic
from tests.scenarios.traffic import close_windows, detect_closed

DETECTOR_IDS = list(DETECTOR_CLASSES)


def make_detector(detector_id: str):
    settings = DetectorSettings(
        disabled=tuple(i for i in DETECTOR_IDS if i != detector_id),
        params={detector_id: TEST_PARAMS.get(detector_id, {})},
    )
    (detector,) = build_detectors(settings)
    return detector


@pytest.fixture(scope="module")
def stream():
    traffic, context = mixed_traffic()
    return close_windows(traffic.batches(), context.window_s), context


@pytest.fixture(scope="module")
def results(stream):
    closed, context = stream
    return {detector_id: detect_closed([make_detector(detector_id)], closed, context) for detector_id in DETECTOR_IDS}


def as_rows(detections):
    return [detection.model_dump() for detection in detections]


def test_every_detector_has_a_planted_case():
    assert set(PLANTED) == set(DETECTOR_IDS)


@pytest.mark.parametrize("detector_id", DETECTOR_IDS)
def test_detector_flags_planted_case(detector_id, results):
    subjects = {detection.subject_id for detection in results[detector_id]}
    assert PLANTED[detector_id] in subjects


@pytest.mark.parametrize("detector_id", DETECTOR_IDS)
def test_detector_leaves_steady_tokens_alone(detector_id, results):
    steady = {f"key:n{i}" for i in range(30)} - {"key:n1"}
    assert not [d for d in results[detector_id] if d.subject_id in steady]


@pytest.mark.parametrize("detector_id", DETECTOR_IDS)
def test_detector_empty_batch_returns_nothing(detector_id, stream):
    _, context = stream
    detector = make_detector(detector_id)
    detector.attach(SubjectIndex())
    assert detector.detect(WindowBatch.empty(), context) == []


@pytest.mark.parametrize("detector_id", DETECTOR_IDS)
def test_detector_tolerates_batch_without_pairs(detector_id, stream):
    closed, context = stream
    detector = make_detector(detector_id)
    index = SubjectIndex()
    detector.attach(index)
    for original in closed[:3]:
        bare = WindowBatch(keys=dict(original.keys), features=original.features.copy(), slots=original.slots.copy())
        bare.slots = index.assign(bare.keys["subject_id"], bare.keys["window_end"])
        assert isinstance(detector.detect(bare, context), list)


@pytest.mark.parametrize("detector_id", DETECTOR_IDS)
def test_detector_pickle_round_trip_keeps_results(detector_id, stream):
    closed, context = stream
    half = len(closed) // 2
    detector = make_detector(detector_id)
    index = SubjectIndex()
    detector.attach(index)
    detect_closed([detector], closed[:half], context, index)
    copy_index, copy_detector = pickle.loads(pickle.dumps((index, detector)))
    original_rest = detect_closed([detector], closed[half:], context, index)
    restored_rest = detect_closed([copy_detector], closed[half:], context, copy_index)
    assert as_rows(restored_rest) == as_rows(original_rest)


@pytest.mark.parametrize("detector_id", DETECTOR_IDS)
def test_detector_same_seed_same_results(detector_id, stream, results):
    closed, context = stream
    again = detect_closed([make_detector(detector_id)], closed, context)
    assert as_rows(again) == as_rows(results[detector_id])


@pytest.mark.parametrize("detector_id", DETECTOR_IDS)
def test_detector_scores_in_declared_range(detector_id, results):
    low, high = DETECTOR_CLASSES[detector_id].score_range
    for detection in results[detector_id]:
        assert math.isfinite(detection.score)
        assert low <= detection.score <= high


@pytest.mark.parametrize("detector_id", DETECTOR_IDS)
def test_detector_fields_consistent(detector_id, results, stream):
    _, context = stream
    cls = DETECTOR_CLASSES[detector_id]
    for detection in results[detector_id]:
        assert detection.detector == detector_id
        assert detection.detector_version == cls.version
        assert detection.registry_version == context.registry_version
        assert detection.severity in tuple(Severity)
        assert detection.window_end > detection.window_start
        assert bool(detection.client_ip) == (cls.scope == "client")
        assert detection.evidence


@pytest.mark.parametrize("detector_id", DETECTOR_IDS)
def test_explanation_matches_evidence(detector_id, results):
    for detection in results[detector_id]:
        for evidence in detection.evidence:
            assert f"{evidence.feature} {format_number(evidence.observed)}" in detection.explanation
            if evidence.expected is not None:
                assert f"expected {format_number(evidence.expected)}" in detection.explanation


@pytest.mark.parametrize("detector_id", DETECTOR_IDS)
def test_detection_ids_unique(detector_id, results):
    ids = [detection.detection_id for detection in results[detector_id]]
    assert len(ids) == len(set(ids))


def test_hst_seeds_differ():
    first = make_detector("hst")
    second = pickle.loads(pickle.dumps(first))
    assert first.seed == second.seed
    draw = np.arange(1000, dtype=np.uint64)
    from detectors.base import stable_fraction

    assert not np.array_equal(stable_fraction(draw, 1), stable_fraction(draw, 2))
