"""Subject index: 64-bit keys, the numpy hash table, slot reuse, expiry and checkpoints."""

from __future__ import annotations

import pickle

import numpy as np

from detectors.ewma import EwmaRate
from pipeline.state import KeyTable, SubjectIndex, subject_keys


def test_token_ids_key_by_their_hex():
    keys, is_token = subject_keys(np.array(["tk_00000000000000ff", "tk_ffffffffffffffff"], dtype=object))
    assert keys.tolist() == [255, 2**64 - 1]
    assert is_token.tolist() == [True, True]


def test_other_ids_are_hashed():
    ids = np.array(["key:abc", "ip:192.0.2.1", "tk_XYZ", "tk_00000000000000FF", "tk_00000000000000ffa"], dtype=object)
    keys, is_token = subject_keys(ids)
    assert not is_token.any()
    assert len(set(keys.tolist())) == len(ids)


def test_key_table_matches_dict_under_random_operations():
    rng = np.random.default_rng(1)
    table = KeyTable()
    reference: dict[int, int] = {}
    for _ in range(200):
        candidates = np.unique(rng.integers(0, 3000, rng.integers(0, 150)).astype(np.uint64))
        new = np.array([k for k in candidates.tolist() if k not in reference], dtype=np.uint64)
        values = rng.integers(0, 1_000_000, len(new))
        table.insert(new, values)
        reference.update(zip(new.tolist(), values.tolist(), strict=True))
        removed = np.unique(rng.integers(0, 3000, rng.integers(0, 80)).astype(np.uint64))
        table.remove(removed)
        for key in removed.tolist():
            reference.pop(key, None)
        probe = rng.integers(0, 3000, 400).astype(np.uint64)
        assert table.lookup(probe).tolist() == [reference.get(k, -1) for k in probe.tolist()]
        assert table.live == len(reference)


def test_assign_is_stable_and_rebuilds_names():
    index = SubjectIndex()
    ids = np.array(["tk_0123456789abcdef", "key:a", "ip:192.0.2.1", "key:a"], dtype=object)
    slots = index.assign(ids, np.full(4, 100.0))
    assert slots.tolist() == [0, 1, 2, 1]
    assert [index.subject(slot) for slot in range(3)] == ["tk_0123456789abcdef", "key:a", "ip:192.0.2.1"]
    assert index.slot("key:a") == 1
    assert index.slot("key:missing") is None
    assert len(index) == 3


def test_expire_resets_detector_rows_and_reuses_slots():
    index = SubjectIndex(idle_ttl_s=100.0)
    detector = EwmaRate()
    detector.attach(index)
    index.assign(np.array(["key:old", "key:new"], dtype=object), np.array([10.0, 500.0]))
    detector.state["mean"][0] = 42.0
    assert index.expire(now=200.0) == 1
    assert detector.state["mean"][0] == 0.0
    assert index.subject(0) is None
    assert index.slot("key:old") is None
    assert index.assign(np.array(["key:third"], dtype=object), np.array([600.0])).tolist() == [0]
    assert index.subjects_seen == 3


def test_index_grows_detector_arrays():
    index = SubjectIndex()
    detector = EwmaRate()
    detector.attach(index)
    ids = np.array([f"tk_{i:016x}" for i in range(5000)], dtype=object)
    slots = index.assign(ids, np.full(5000, 1.0))
    assert slots.max() == 4999
    assert len(detector.state["mean"]) >= 5000
    assert index.assign(ids[::-1], np.full(5000, 2.0)).tolist() == slots[::-1].tolist()


def test_index_pickles_with_attached_detectors():
    index = SubjectIndex()
    detector = EwmaRate()
    detector.attach(index)
    ids = np.array([f"key:{i}" for i in range(50)], dtype=object)
    slots = index.assign(ids, np.full(50, 1.0))
    restored_index, restored_detector = pickle.loads(pickle.dumps((index, detector)))
    assert restored_index.assign(ids, np.full(50, 2.0)).tolist() == slots.tolist()
    restored_index.assign(np.array([f"tk_{i:016x}" for i in range(3000)], dtype=object), np.full(3000, 3.0))
    assert len(restored_detector.state["mean"]) >= 3050


def test_index_bytes_per_token_small():
    index = SubjectIndex()
    n = 100_000
    index.assign(np.array([f"tk_{i:016x}" for i in range(n)], dtype=object), np.full(n, 1.0))
    assert index.nbytes / n < 64
