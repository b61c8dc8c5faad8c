"""Per-subject state: a dense slot per subject, shared by every detector.

``SubjectIndex`` maps each subject id to a row ("slot") in per-detector
numpy arrays, so detectors update whole batches of windows with fancy
indexing instead of per-token objects. Slots of subjects idle for longer
than ``idle_ttl_s`` of event time are released and reused; detectors reset
their rows for released slots.

Memory. Subject ids are not kept as Python strings, because a 19-character
``str`` key in a dict costs about 150 bytes. Each id becomes a 64-bit key.
For a token id (``tk_`` + 16 hex digits) the key is that hex number, so the
id can be rebuilt from it. Any other id (``key:<id>``, ``ip:<addr>``) is
keyed by the first 8 bytes of its BLAKE2b digest, and its text is kept in a
dict beside the table. Keys live in a numpy open-addressing hash table
(linear probing, load factor at most 0.7), so the index costs 17 to 48
bytes per subject for the table (12 bytes per entry, the table a power of
two), 8 for the key of each slot and 4 for its last-seen time: about 40
bytes per ``tk_`` subject at 1M subjects (``benchmarks/bench_detectors.py``
measures it).
Other ids cost about 150 bytes more, for their text.

Two different ids collide only when their 64-bit keys are equal: for 1M
subjects the chance of any collision is about 3e-8.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from typing import Protocol

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

_INITIAL_CAPACITY = 1024
_INITIAL_TABLE = 2048
TOKEN_PREFIX = "tk_"
_TOKEN_ID_LENGTH = 19  # "tk_" + 16 hex digits, see pipeline.identity
_EMPTY = -1
_DELETED = -2

# Hex digit code point -> value, 255 for anything that is not a lower-case hex digit.
_HEX_VALUE = np.full(128, 255, dtype=np.uint8)
_HEX_VALUE[np.frombuffer(b"0123456789", dtype=np.uint8)] = np.arange(10)
_HEX_VALUE[np.frombuffer(b"abcdef", dtype=np.uint8)] = np.arange(10, 16)
_NIBBLE_SHIFTS = np.arange(60, -1, -4, dtype=np.uint64)


class SlotState(Protocol):
    """Per-slot arrays owned by one detector."""

    def grow(self, capacity: int) -> None:
        """Extend every array to ``capacity`` rows, new rows in their initial state."""
        ...

    def reset(self, slots: np.ndarray) -> None:
        """Return the rows of ``slots`` to their initial state (the subject expired)."""
        ...


def subject_keys(subject_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the 64-bit key of each subject id and a mask of ids that are ``tk_`` token ids.

    ``tk_`` + 16 lower-case hex digits maps to that number; other ids map
    to the first 8 bytes (little-endian) of their BLAKE2b digest.
    """
    n = len(subject_ids)
    keys = np.zeros(n, dtype=np.uint64)
    is_token = np.zeros(n, dtype=bool)
    if n == 0:
        return keys, is_token
    lengths = np.fromiter(map(len, subject_ids), dtype=np.int64, count=n)
    candidates = np.flatnonzero(lengths == _TOKEN_ID_LENGTH)
    if len(candidates):
        text = subject_ids[candidates].astype(f"U{_TOKEN_ID_LENGTH}")
        points = text.view(np.uint32).reshape(len(candidates), _TOKEN_ID_LENGTH)
        prefix_ok = (points[:, 0] == ord("t")) & (points[:, 1] == ord("k")) & (points[:, 2] == ord("_"))
        digits = points[:, 3:]
        nibbles = _HEX_VALUE[np.minimum(digits, 127)]
        valid = prefix_ok & (digits < 128).all(axis=1) & (nibbles != 255).all(axis=1)
        good = candidates[valid]
        keys[good] = (nibbles[valid].astype(np.uint64) << _NIBBLE_SHIFTS).sum(axis=1, dtype=np.uint64)
        is_token[good] = True
    for i in np.flatnonzero(~is_token):
        keys[i] = _hashed_key(subject_ids[i])
    return keys, is_token


# Subjects and client addresses recur from batch to batch, and a BLAKE2b call
# costs about ten cache lookups.
@functools.lru_cache(maxsize=1 << 18)
def _hashed_key(subject_id: str) -> int:
    digest = hashlib.blake2b(subject_id.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _mix(keys: np.ndarray) -> np.ndarray:
    """Scramble keys (the splitmix64 finalizer) so hashed ids and token ids spread evenly."""
    z = keys.copy()
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


class KeyTable:
    """Open-addressing hash table from uint64 keys to int32 values, with vectorized batch operations.

    Linear probing; a removed entry becomes a tombstone that lookups step
    over and inserts reuse. When live entries plus tombstones would pass
    ``MAX_LOAD`` of the table, it is rebuilt at the smallest power of two
    holding twice the live entries.

    >>> table = KeyTable()
    >>> table.insert(np.array([7, 9], dtype=np.uint64), np.array([0, 1]))
    >>> table.lookup(np.array([9, 8, 7], dtype=np.uint64)).tolist()
    [1, -1, 0]
    """

    MAX_LOAD = 0.7

    def __init__(self, capacity: int = _INITIAL_TABLE) -> None:
        size = 1 << max(int(capacity - 1).bit_length(), 4)
        self._keys = np.zeros(size, dtype=np.uint64)
        self._values = np.full(size, _EMPTY, dtype=np.int32)
        self.live = 0
        self.deleted = 0

    @property
    def size(self) -> int:
        return len(self._keys)

    @property
    def nbytes(self) -> int:
        return self._keys.nbytes + self._values.nbytes

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Return the value of each key, -1 where the key is absent."""
        positions = self._positions(keys)
        found = np.full(len(keys), -1, dtype=np.int64)
        hit = positions >= 0
        found[hit] = self._values[positions[hit]]
        return found

    def insert(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Insert distinct keys that are not in the table yet."""
        if len(keys) == 0:
            return
        if self.live + self.deleted + len(keys) > self.MAX_LOAD * self.size:
            self._rebuild(self.live + len(keys))
        mask = np.uint64(self.size - 1)
        position = (_mix(keys) & mask).astype(np.int64)
        pending = np.arange(len(keys))
        while len(pending):
            probe = position[pending]
            free = self._values[probe] < 0
            # Of several keys probing the same free position, the first one gets it.
            taken, first = np.unique(probe[free], return_index=True)
            winners = pending[free][first]
            self.deleted -= int((self._values[taken] == _DELETED).sum())
            self._keys[taken] = keys[winners]
            self._values[taken] = values[winners]
            done = np.zeros(len(keys), dtype=bool)
            done[winners] = True
            pending = pending[~done[pending]]
            position[pending] = (position[pending] + 1) & int(mask)
        self.live += len(keys)

    def remove(self, keys: np.ndarray) -> None:
        """Remove keys; absent keys are ignored."""
        positions = self._positions(keys)
        positions = positions[positions >= 0]
        self._values[positions] = _DELETED
        self.live -= len(positions)
        self.deleted += len(positions)

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the live keys and their values."""
        live = self._values >= 0
        return self._keys[live], self._values[live].astype(np.int64)

    def _positions(self, keys: np.ndarray) -> np.ndarray:
        """Return the table position of each key, -1 where absent."""
        mask = np.uint64(self.size - 1)
        position = (_mix(keys) & mask).astype(np.int64)
        result = np.full(len(keys), -1, dtype=np.int64)
        active = np.arange(len(keys))
        while len(active):
            probe = position[active]
            value = self._values[probe]
            hit = (value >= 0) & (self._keys[probe] == keys[active])
            result[active[hit]] = probe[hit]
            go_on = ~hit & (value != _EMPTY)
            active = active[go_on]
            position[active] = (probe[go_on] + 1) & int(mask)
        return result

    def _rebuild(self, live: int) -> None:
        keys, values = self.items()
        self.__init__(max(2 * live, _INITIAL_TABLE))
        self.insert(keys, values)


class SubjectIndex:
    """Assigns slots to subject ids and expires idle ones.

    >>> index = SubjectIndex()
    >>> index.assign(np.array(["a", "b", "a"], dtype=object), np.array([0.0, 0.0, 5.0])).tolist()
    [0, 1, 0]
    >>> index.subject(1)
    'b'
    """

    def __init__(self, idle_ttl_s: float = 7 * 86400.0, initial_capacity: int = _INITIAL_CAPACITY) -> None:
        """``initial_capacity`` slots are allocated up front; sizing it for the expected
        number of subjects avoids the copies of growing (each growth briefly holds
        old and new arrays)."""
        self.idle_ttl_s = idle_ttl_s
        initial_capacity = max(int(initial_capacity), 1)
        self._table = KeyTable(max(2 * initial_capacity, _INITIAL_TABLE))
        self._key_of_slot = np.zeros(initial_capacity, dtype=np.uint64)
        self._names: dict[int, str] = {}
        """Text of the subjects in use whose id is not a ``tk_`` token id, by slot."""
        self._free = np.empty(0, dtype=np.int64)
        self._used = 0
        self.last_seen = np.zeros(initial_capacity, dtype=np.uint32)
        """Last event time of each slot's subject, whole seconds rounded up; 0 for a free slot."""
        self._states: list[SlotState] = []
        self.expired_total = 0

    def __len__(self) -> int:
        return self._table.live

    @property
    def subjects_seen(self) -> int:
        """Distinct subjects ever assigned a slot, including expired ones."""
        return len(self) + self.expired_total

    @property
    def capacity(self) -> int:
        return len(self.last_seen)

    @property
    def nbytes(self) -> int:
        """Bytes held by the index's arrays, not counting the text of non-token ids."""
        return self._table.nbytes + self._key_of_slot.nbytes + self.last_seen.nbytes + self._free.nbytes

    def attach(self, state: SlotState) -> None:
        """Register a detector's arrays so they grow and reset with the index."""
        state.grow(self.capacity)
        self._states.append(state)

    def slot(self, subject_id: str) -> int | None:
        keys, _ = subject_keys(np.array([subject_id], dtype=object))
        slot = int(self._table.lookup(keys)[0])
        return None if slot < 0 else slot

    def subject(self, slot: int) -> str | None:
        if slot >= self._used or self.last_seen[slot] == 0:
            return None
        name = self._names.get(slot)
        if name is not None:
            return name
        return f"{TOKEN_PREFIX}{int(self._key_of_slot[slot]):016x}"

    def assign(self, subject_ids: np.ndarray, event_times: np.ndarray) -> np.ndarray:
        """Return the slot of each subject, creating slots for new ones, and mark them seen."""
        if len(subject_ids) == 0:
            return np.empty(0, dtype=np.int64)
        keys, is_token = subject_keys(subject_ids)
        codes, unique_keys = pd.factorize(keys, use_na_sentinel=False)
        unique_keys = np.asarray(unique_keys, dtype=np.uint64)
        unique_slots = self._table.lookup(unique_keys)
        new = np.flatnonzero(unique_slots < 0)
        if len(new):
            first = np.empty(len(unique_keys), dtype=np.int64)
            first[codes[::-1]] = np.arange(len(codes))[::-1]
            unique_slots[new] = self._new_slots(unique_keys[new], subject_ids[first[new]], is_token[first[new]])
        slots = unique_slots[codes]
        seen = np.minimum(np.ceil(event_times), np.iinfo(np.uint32).max).astype(np.uint32)
        np.maximum.at(self.last_seen, slots, np.maximum(seen, 1))
        return slots

    def expire(self, now: float) -> int:
        """Release slots whose subject was last seen more than ``idle_ttl_s`` before ``now``."""
        cutoff = now - self.idle_ttl_s
        seen = self.last_seen[: self._used]
        idle = np.flatnonzero((seen > 0) & (seen < cutoff))
        if len(idle) == 0:
            return 0
        self._table.remove(self._key_of_slot[idle])
        if self._names:
            for slot in idle.tolist():
                self._names.pop(slot, None)
        self.last_seen[idle] = 0
        self._free = np.concatenate([self._free, idle])
        self.expired_total += len(idle)
        for state in self._states:
            state.reset(idle)
        logger.info("expired %d idle subjects (idle longer than %.0f s)", len(idle), self.idle_ttl_s)
        return len(idle)

    def _new_slots(self, keys: np.ndarray, subject_ids: np.ndarray, is_token: np.ndarray) -> np.ndarray:
        """Take free slots first, then fresh ones, for keys not in the table."""
        reused = self._free[len(self._free) - min(len(keys), len(self._free)) :][::-1]
        self._free = self._free[: len(self._free) - len(reused)]
        fresh = np.arange(self._used, self._used + len(keys) - len(reused), dtype=np.int64)
        self._used += len(fresh)
        if self._used > self.capacity:
            # Grow by half, not double, so at most a third of the slots sit unused.
            self._grow(max(self.capacity * 3 // 2, self._used))
        slots = np.concatenate([reused, fresh])
        self._key_of_slot[slots] = keys
        self._table.insert(keys, slots)
        for i in np.flatnonzero(~is_token):
            self._names[int(slots[i])] = subject_ids[i]
        return slots

    def _grow(self, capacity: int) -> None:
        self.last_seen = grow_array(self.last_seen, capacity, 0)
        self._key_of_slot = grow_array(self._key_of_slot, capacity, 0)
        for state in self._states:
            state.grow(capacity)


def grow_array(array: np.ndarray, capacity: int, fill: float | int) -> np.ndarray:
    """Return ``array`` extended to ``capacity`` rows with ``fill`` in the new ones."""
    if len(array) >= capacity:
        return array
    extra = np.full((capacity - len(array),) + array.shape[1:], fill, dtype=array.dtype)
    return np.concatenate([array, extra])
