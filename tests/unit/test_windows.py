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


def pair_dict(table):
    return {
        (int(row), value): (requests, failures)
        for row, value, requests, failures in zip(
            table.rows, table.values, table.requests, table.failures, strict=True
        )
    }


def test_pair_tables_count_requests_and_failures():
    batch = events(
        ts=[T0 + 1, T0 + 2, T0 + 3, T0 + 4],
        subject_id=["a", "a", "a", "b"],
        client_ip=["10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.1"],
        status=[200, 401, 200, 403],
        country=["DE", "DE", "", "FR"],
        origin=["https://x.example", "", "", ""],
        route=["/r1", "/r2", "/r1", "/r1"],
    )
    closed = compute_features(batch, 10.0)
    row = {subject: i for i, subject in enumerate(closed.keys["subject_id"])}
    a, b = row["a"], row["b"]
    assert pair_dict(closed.pairs["client_ip"]) == {
        (a, "10.0.0.1"): (2, 1),
        (a, "10.0.0.2"): (1, 0),
        (b, "10.0.0.1"): (1, 1),
    }
    assert pair_dict(closed.pairs["country"]) == {(a, "DE"): (2, 1), (a, ""): (1, 0), (b, "FR"): (1, 1)}
    assert pair_dict(closed.pairs["route"])[(a, "/r1")] == (2, 0)
    assert pair_dict(closed.pairs["origin"])[(a, "https://x.example")] == (1, 0)


def test_client_windows_count_subjects_and_failures():
    batch = events(
        ts=[T0 + 1, T0 + 2, T0 + 3, T0 + 4, T0 + 12],
        subject_id=["a", "b", "c", "a", "a"],
        client_ip=["192.0.2.1", "192.0.2.1", "192.0.2.1", "192.0.2.9", "192.0.2.1"],
        status=[401, 401, 200, 200, 403],
        user_agent=["u1", "u2", "u1", "u1", "u1"],
    )
    clients = compute_features(batch, 10.0).clients
    rows = {
        (ip, start - T0): i
        for i, (ip, start) in enumerate(zip(clients.keys["client_ip"], clients.keys["window_start"], strict=True))
    }
    first = rows[("192.0.2.1", 0.0)]
    assert clients.feature("requests")[first] == 3
    assert clients.feature("failures_401_403")[first] == 2
    assert clients.feature("distinct_subjects")[first] == 3
    assert clients.feature("distinct_failing_subjects")[first] == 2
    assert clients.feature("distinct_user_agents")[first] == 2
    assert clients.keys["subject_id"][first] == "ip:192.0.2.1"
    assert clients.feature("failures_401_403")[rows[("192.0.2.1", 10.0)]] == 1
    assert clients.size == 3


def test_client_window_ids_differ_from_unauthenticated_token_windows():
    batch = events(ts=[T0 + 1], subject_id=["ip:192.0.2.1"], client_ip=["192.0.2.1"])
    closed = compute_features(batch, 10.0)
    assert closed.keys["subject_id"][0] == closed.clients.keys["subject_id"][0]
    assert closed.keys["window_id"][0] != closed.clients.keys["window_id"][0]


def test_country_lookup_fills_only_missing_countries():
    calls = []

    def lookup(addresses):
        calls.append(list(addresses))
        return np.array(["JP" for _ in addresses], dtype=object)

    batch = events(
        ts=[T0 + 1, T0 + 2, T0 + 3],
        subject_id=["a", "a", "a"],
        client_ip=["192.0.2.1", "192.0.2.1", "192.0.2.2"],
        country=["", "", "DE"],
    )
    closed = compute_features(batch, 10.0, country_lookup=lookup)
    assert calls == [["192.0.2.1"]]
    assert set(closed.pairs["country"].values.tolist()) == {"JP", "DE"}
    assert closed.feature("distinct_countries")[0] == 2
    assert batch["country"].tolist() == ["", "", "DE"]


def test_select_and_concat_keep_pairs_aligned():
    batch = events(
        ts=[T0 + 1, T0 + 2, T0 + 3],
        subject_id=["a", "b", "c"],
        country=["DE", "FR", "JP"],
    )
    closed = compute_features(batch, 10.0)
    keep = closed.keys["subject_id"] != "b"
    selected = closed.select(keep)
    countries = {selected.keys["subject_id"][r]: v for r, v in zip(selected.pairs["country"].rows, selected.pairs["country"].values, strict=True)}
    assert countries == {"a": "DE", "c": "JP"}
    merged = type(closed).concat([selected, closed.select(~keep)])
    countries = {merged.keys["subject_id"][r]: v for r, v in zip(merged.pairs["country"].rows, merged.pairs["country"].values, strict=True)}
    assert countries == {"a": "DE", "b": "FR", "c": "JP"}


def test_windows_without_origin_column_still_close():
    batch = events(ts=[T0 + 1], subject_id=["a"])
    del batch["origin"]
    closed = compute_features(batch, 10.0)
    assert closed.pairs["origin"].values.tolist() == [""]
