"""EWMA rate and error detectors over days of event time: benign look-alikes and planted spikes.

These feed per-window counts straight into ``score_and_learn`` (60 s
windows, several tokens per call), so a week of windows runs in well
under a second.
"""

from __future__ import annotations

import numpy as np
import pytest

from detectors.ewma import EwmaErrors, EwmaRate
from pipeline.state import SubjectIndex
from tests.scenarios.traffic import DAY, T0

WINDOW_S = 60.0
PER_DAY = int(DAY / WINDOW_S)


def run_rate(counts: np.ndarray, detector: EwmaRate | None = None) -> np.ndarray:
    """Score a (windows, tokens) count matrix window by window; return the flag matrix."""
    detector = detector or EwmaRate()
    detector.attach(SubjectIndex())
    detector.grow(counts.shape[1])
    slots = np.arange(counts.shape[1])
    flags = np.zeros(counts.shape, dtype=bool)
    for w in range(counts.shape[0]):
        active = counts[w] > 0
        if not active.any():
            continue
        starts = np.full(int(active.sum()), T0 + w * WINDOW_S)
        _, _, flags[w, active] = detector.score_and_learn(slots[active], counts[w, active].astype(float), starts)
    return flags


def hour_of(window: np.ndarray) -> np.ndarray:
    return (window * WINDOW_S / 3600.0) % 24


def test_nightly_batch_job_flagged_at_most_first_night():
    rng = np.random.default_rng(1)
    windows = np.arange(5 * PER_DAY)
    night = (hour_of(windows) >= 2) & (hour_of(windows) < 2.5)
    daytime_and_job = np.where(night, rng.poisson(600, len(windows)), rng.poisson(5, len(windows)))
    job_only = np.where(night, rng.poisson(400, len(windows)), 0)
    flags = run_rate(np.stack([daytime_and_job, job_only], axis=1))
    assert not flags[PER_DAY:].any()
    assert not flags[:, 1].any()


def test_nightly_batch_job_new_night_is_flagged():
    rng = np.random.default_rng(2)
    windows = np.arange(2 * PER_DAY)
    night = (hour_of(windows) >= 2) & (hour_of(windows) < 2.5)
    counts = np.where(night & (windows < PER_DAY), rng.poisson(600, len(windows)), rng.poisson(5, len(windows)))
    counts[PER_DAY + 14 * 60] = 900  # 14:00 on day two, an hour never busy before
    flags = run_rate(counts[:, None])
    assert flags[PER_DAY + 14 * 60, 0]


def test_daily_peak_not_flagged_after_first_day():
    rng = np.random.default_rng(3)
    windows = np.arange(4 * PER_DAY)
    peak = (hour_of(windows) >= 12) & (hour_of(windows) < 13)
    counts = rng.poisson(np.where(peak, 400, 30))
    flags = run_rate(counts[:, None])
    assert not flags[PER_DAY:].any()


def test_smooth_daily_cycle_never_flagged():
    rng = np.random.default_rng(4)
    windows = np.arange(3 * PER_DAY)
    rate = 40 + 360 * (1 + np.sin(2 * np.pi * hour_of(windows) / 24)) / 2
    flags = run_rate(rng.poisson(rate)[:, None])
    assert not flags.any()


def test_growth_three_times_over_week_not_flagged():
    rng = np.random.default_rng(5)
    windows = np.arange(7 * PER_DAY)
    growth = 3.0 ** (windows / (7 * PER_DAY))
    daily = 1 + 0.5 * np.sin(2 * np.pi * hour_of(windows) / 24)
    flags = run_rate(rng.poisson(60 * growth * daily)[:, None])
    assert not flags.any()


def test_spike_on_growing_token_flagged():
    rng = np.random.default_rng(6)
    windows = np.arange(3 * PER_DAY)
    counts = rng.poisson(60 * 3.0 ** (windows / (7 * PER_DAY)))
    counts[2 * PER_DAY + 500] = 2000
    flags = run_rate(counts[:, None])
    assert flags[2 * PER_DAY + 500, 0]
    assert flags.sum() == 1


def test_hour_profile_off_ignores_history():
    rng = np.random.default_rng(7)
    windows = np.arange(2 * PER_DAY)
    night = (hour_of(windows) >= 2) & (hour_of(windows) < 2.5)
    counts = np.where(night, rng.poisson(600, len(windows)), rng.poisson(5, len(windows)))
    flags = run_rate(counts[:, None], EwmaRate(seasonal=False))
    assert flags[PER_DAY:].any()


def test_rate_state_is_44_bytes_per_slot():
    assert EwmaRate().state.bytes_per_slot == 44


@pytest.mark.parametrize("bad", [{"span": 0}, {"threshold": 0}, {"season_alpha": 0}])
def test_rate_rejects_invalid_settings(bad):
    with pytest.raises(ValueError):
        EwmaRate(**bad)


def run_errors(requests: np.ndarray, ratios: np.ndarray, detector: EwmaErrors | None = None) -> np.ndarray:
    """Score one token's windows; ``ratios`` is (windows, 3). Return the (windows, 3) flag matrix."""
    detector = detector or EwmaErrors()
    detector.attach(SubjectIndex())
    flags = np.zeros(ratios.shape, dtype=bool)
    slot = np.zeros(1, dtype=np.int64)
    for w in range(len(requests)):
        _, _, flags[w] = detector.score_and_learn(slot, ratios[w][None, :], requests[w : w + 1].astype(float))
    return flags


def test_errors_flag_401_burst():
    rng = np.random.default_rng(8)
    requests = rng.poisson(100, 300)
    ratios = np.zeros((300, 3))
    ratios[:, 0] = rng.binomial(requests, 0.02) / requests
    ratios[250, 0] = ratios[250, 1] = 0.9
    flags = run_errors(requests, ratios)
    assert flags[250, 1]
    assert flags[250, 0]
    assert flags.sum() == 2


def test_errors_small_counts_never_flagged():
    rng = np.random.default_rng(9)
    requests = rng.integers(1, 4, 2000)
    failed = rng.binomial(requests, 0.05)
    ratios = np.zeros((2000, 3))
    ratios[:, 1] = ratios[:, 0] = failed / requests
    ratios[1500] = [1.0, 1.0, 0.0]
    assert not run_errors(requests, ratios).any()


def test_errors_steady_high_error_token_not_flagged():
    rng = np.random.default_rng(10)
    requests = rng.poisson(80, 1000)
    ratios = np.zeros((1000, 3))
    ratios[:, 2] = rng.binomial(requests, 0.3) / requests
    assert not run_errors(requests, ratios).any()
