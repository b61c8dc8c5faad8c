"""Half-Space Trees detector: normalization, warm-up, calibration and sampling."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.hst import HST_FEATURES, HalfSpaceTreesDetector
from tests.scenarios.mixed import TEST_PARAMS, mixed_traffic
from tests.scenarios.traffic import close_windows, detect_closed


def test_normalize_maps_baseline_to_half_and_clips():
    detector = HalfSpaceTreesDetector(clip=4.0)
    values = np.zeros((3, len(HST_FEATURES)))
    mean = np.zeros((3, len(HST_FEATURES)))
    values[1, 0] = 10.0  # 1024 times the baseline, clipped at 16 times
    values[2, 5] = -1.0  # error ratio fell from 1 to 0
    scaled = detector.normalize(values, mean)
    assert np.all(scaled[0] == 0.5)
    assert scaled[1, 0] == 1.0
    assert scaled[2, 5] == 0.0
    assert scaled.min() >= 0.0
    assert scaled.max() <= 1.0


def test_threshold_is_quantile_or_floor():
    detector = HalfSpaceTreesDetector(quantile=0.5, score_floor=0.3, calibration_size=8, min_calibration=4)
    detector._remember_scores(np.array([0.1, 0.2, 0.3, 0.9], dtype=np.float32))
    assert detector.threshold() == pytest.approx(0.3)
    detector._remember_scores(np.array([0.8, 0.8, 0.8, 0.8, 0.8], dtype=np.float32))
    assert detector.threshold() == pytest.approx(0.8)
    assert detector._scores_seen == 9


def test_no_detection_before_model_warmup():
    traffic, context = mixed_traffic()
    closed = close_windows(traffic.batches(), context.window_s)
    params = dict(TEST_PARAMS["hst"], model_warmup=100_000)
    detector = HalfSpaceTreesDetector(**params)
    assert detect_closed([detector], closed, context) == []
    assert detector.learned > 0


def test_learn_fraction_samples_reproducibly():
    traffic, context = mixed_traffic()
    closed = close_windows(traffic.batches(), context.window_s)
    learned = []
    for _ in range(2):
        detector = HalfSpaceTreesDetector(**dict(TEST_PARAMS["hst"], learn_fraction=0.25))
        detect_closed([detector], closed, context)
        learned.append(detector.learned)
    assert learned[0] == learned[1]
    full = HalfSpaceTreesDetector(**TEST_PARAMS["hst"])
    detect_closed([full], closed, context)
    assert 0.15 * full.learned < learned[0] < 0.35 * full.learned


def test_memory_per_slot():
    assert HalfSpaceTreesDetector().state.bytes_per_slot == 34


@pytest.mark.parametrize("bad", [{"learn_fraction": 0}, {"quantile": 1.0}])
def test_rejects_invalid_settings(bad):
    with pytest.raises(ValueError):
        HalfSpaceTreesDetector(**bad)
