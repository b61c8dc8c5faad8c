"""Tumbling windows: boundaries, watermark, lateness and hand-computed features."""

import math

import numpy as np
import pytest

from pipeline.windows import TumblingWindows, compute_features, network_of
from tests.unit.helpers import T0, events


def test_window_closes_only_after_watermark_passes_end():
    windows = TumblingWindows(size_s=10, allowed_lateness_s=5)
    first = windows.add(events(ts=[T0 + 1, T0 + 9], subject_id=["a", "a"]))
    still_open = windows.add(events(ts=[T0 + 14], subject_id=["a"]))
    closed = windows.add(events(ts=[T0 + 15], subject_id=["a"]))
    assert first.size == 0
    assert still_open.size == 0
    assert closed.size == 1
    assert closed.keys["window_start"][0] == T0
    assert closed.feature("requests")[0] == 2


def test_late_event_flagged_counted_and_excluded():
    windows = TumblingWindows(size_s=10, allowed_lateness_s=0)
    windows.add(events(ts=[T0 + 1], subject_id=["a"]))
    windows.add(events(ts=[T0 + 20], subject_id=["a"]))
    late_batch = events(ts=[T0 + 2, T0 + 21], subject_id=["a", "a"])
    windows.add(late_batch)
    rest = windows.flush()
    assert late_batch["late"].tolist() == [True, False]
    assert windows.late_events == 1
    assert rest.feature("requests").tolist() == [2.0]


def test_event_within_lateness_still_counted():
    windows = TumblingWindows(size_s=10, allowed_lateness_s=5)
    windows.add(events(ts=[T0 + 1, T0 + 12], subject_id=["a", "a"]))
    batch = events(ts=[T0 + 3], subject_id=["a"])
    windows.add(batch)
    closed = windows.flush()
    assert batch["late"].tolist() == [False]
    assert closed.feature("requests").tolist() == [2.0, 1.0]


def test_flush_closes_every_window_in_order():
    windows = TumblingWindows(size_s=10, allowed_lateness_s=5)
    windows.add(events(ts=[T0 + 1, T0 + 11, T0 + 2], subject_id=["b", "b", "a"]))
    closed = windows.flush()
    assert closed.keys["subject_id"].tolist() == ["b", "a", "b"] or closed.keys["subject_id"].tolist() == [
        "a",
        "b",
        "b",
    ]
    assert closed.keys["window_start"].tolist() == sorted(closed.keys["window_start"].tolist())
    assert windows.pending_events == 0


def test_window_size_must_be_positive():
    with pytest.raises(ValueError, match="window size"):
        TumblingWindows(size_s=0)


def test_features_hand_computed():
    batch = events(
        ts=[T0 + 1, T0 + 2, T0 + 3, T0 + 4, T0 + 5],
        subject_id=["a"] * 5,
        client_ip=["10.0.0.1", "10.0.0.2", "10.0.1.9", "10.0.0.1", "10.0.0.1"],
        status=[200, 401, 403, 429, 503],
        route=["/a", "/a", "/b", "/c", "/a"],
        user_agent=["u1", "u1", "u2", "u1", "u1"],
        country=["DE", "", "FR", "DE", ""],
        bytes_out=[100, 200, -1, 50, 0],
        bytes_in=[1, 1, 1, 1, 1],
        latency_ms=np.array([10, 20, 30, 40, math.nan], dtype=np.float32),
    )
    closed = compute_features(batch, 10.0)
    assert closed.size == 1
    assert closed.feature("requests")[0] == 5
    assert closed.feature("ratio_4xx")[0] == pytest.approx(3 / 5)
    assert closed.feature("ratio_401_403")[0] == pytest.approx(2 / 5)
    assert closed.feature("ratio_429")[0] == pytest.approx(1 / 5)
    assert closed.feature("ratio_5xx")[0] == pytest.approx(1 / 5)
    assert closed.feature("distinct_ips")[0] == 3
    assert closed.feature("distinct_networks")[0] == 2
    assert closed.feature("distinct_routes")[0] == 3
    assert closed.feature("distinct_user_agents")[0] == 2
    assert closed.feature("distinct_countries")[0] == 2
    assert closed.feature("bytes_out")[0] == 350
    assert closed.feature("bytes_in")[0] == 5
    assert closed.feature("latency_p50_ms")[0] == 20
    assert closed.feature("latency_p95_ms")[0] == 30
    assert closed.keys["first_offset"][0] == 1
    assert closed.keys["last_offset"][0] == 5


def test_features_separate_subjects_and_windows():
    batch = events(
        ts=[T0 + 1, T0 + 2, T0 + 11, T0 + 3],
        subject_id=["a", "a", "a", "b"],
        status=[200, 500, 200, 404],
    )
    closed = compute_features(batch, 10.0)
    by_key = {
        (s, w): (r, e)
        for s, w, r, e in zip(
            closed.keys["subject_id"],
            closed.keys["window_start"],
            closed.feature("requests"),
            closed.feature("ratio_5xx"),
            strict=True,
        )
    }
    assert by_key == {("a", T0): (2, 0.5), ("a", T0 + 10): (1, 0.0), ("b", T0): (1, 0.0)}


def test_window_ids_deterministic_and_distinct():
    batch = events(ts=[T0 + 1, T0 + 11, T0 + 1], subject_id=["a", "a", "b"])
    first = compute_features(batch, 10.0).keys["window_id"]
    second = compute_features(batch, 10.0).keys["window_id"]
    assert np.array_equal(first, second)
    assert len(set(first.tolist())) == 3


@pytest.mark.parametrize(
    ("address", "network"),
    [("192.0.2.77", "192.0.2.0/24"), ("2001:db8:1:2::5", "2001:db8:1::/48"), ("unknown", "unknown")],
)
def test_network_of(address, network):
    assert network_of(address) == network
