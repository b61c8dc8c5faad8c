"""Per-subject state: a dense slot per subject, shared by every detector.

``SubjectIndex`` maps each subject id to a row ("slot") in per-detector
numpy arrays, so detectors update whole batches of windows with fancy
indexing instead of per-token objects. Slots of subjects idle for longer
than ``idle_ttl_s`` of event time are released and reused; detectors reset
their rows for released slots.
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

logger = logging.getLogger(__name__)

_INITIAL_CAPACITY = 1024


class SlotState(Protocol):
    """Per-slot arrays owned by one detector."""

    def grow(self, capacity: int) -> None:
        """Extend every array to ``capacity`` rows, new rows in their initial state."""
        ...

    def reset(self, slots: np.ndarray) -> None:
        """Return the rows of ``slots`` to their initial state (the subject expired)."""
        ...


class SubjectIndex:
    """Assigns slots to subject ids and expires idle ones.

    >>> index = SubjectIndex()
    >>> index.assign(np.array(["a", "b", "a"], dtype=object), np.array([0.0, 0.0, 5.0])).tolist()
    [0, 1, 0]
    """

    def __init__(self, idle_ttl_s: float = 7 * 86400.0) -> None:
        self.idle_ttl_s = idle_ttl_s
        self._slot_of: dict[str, int] = {}
        self._subject_of: list[str | None] = []
        self._free: list[int] = []
        self.last_seen = np.full(_INITIAL_CAPACITY, -np.inf)
        self._states: list[SlotState] = []
        self.expired_total = 0

    def __len__(self) -> int:
        return len(self._slot_of)

    @property
    def subjects_seen(self) -> int:
        """Distinct subjects ever assigned a slot, including expired ones."""
        return len(self._slot_of) + self.expired_total

    @property
    def capacity(self) -> int:
        return len(self.last_seen)

    def attach(self, state: SlotState) -> None:
        """Register a detector's arrays so they grow and reset with the index."""
        state.grow(self.capacity)
        self._states.append(state)

    def slot(self, subject_id: str) -> int | None:
        return self._slot_of.get(subject_id)

    def subject(self, slot: int) -> str | None:
        return self._subject_of[slot] if slot < len(self._subject_of) else None

    def assign(self, subject_ids: np.ndarray, event_times: np.ndarray) -> np.ndarray:
        """Return the slot of each subject, creating slots for new ones, and mark them seen."""
        slots = np.empty(len(subject_ids), dtype=np.int64)
        slot_of = self._slot_of
        for i, subject in enumerate(subject_ids):
            slot = slot_of.get(subject)
            if slot is None:
                slot = self._new_slot(subject)
            slots[i] = slot
        np.maximum.at(self.last_seen, slots, event_times)
        return slots

    def expire(self, now: float) -> int:
        """Release slots whose subject was last seen more than ``idle_ttl_s`` before ``now``."""
        used = len(self._subject_of)
        idle = np.flatnonzero(self.last_seen[:used] < now - self.idle_ttl_s)
        idle = np.array([slot for slot in idle if self._subject_of[slot] is not None], dtype=np.int64)
        if len(idle) == 0:
            return 0
        for slot in idle:
            subject = self._subject_of[slot]
            del self._slot_of[subject]
            self._subject_of[slot] = None
            self._free.append(int(slot))
        self.last_seen[idle] = -np.inf
        self.expired_total += len(idle)
        for state in self._states:
            state.reset(idle)
        logger.info("expired %d idle subjects (idle longer than %.0f s)", len(idle), self.idle_ttl_s)
        return len(idle)

    def _new_slot(self, subject: str) -> int:
        if self._free:
            slot = self._free.pop()
            self._subject_of[slot] = subject
        else:
            slot = len(self._subject_of)
            self._subject_of.append(subject)
            if slot >= self.capacity:
                self._grow(max(self.capacity * 2, slot + 1))
        self._slot_of[subject] = slot
        return slot

    def _grow(self, capacity: int) -> None:
        extra = np.full(capacity - self.capacity, -np.inf)
        self.last_seen = np.concatenate([self.last_seen, extra])
        for state in self._states:
            state.grow(capacity)


def grow_array(array: np.ndarray, capacity: int, fill: float | int) -> np.ndarray:
    """Return ``array`` extended to ``capacity`` rows with ``fill`` in the new ones."""
    if len(array) >= capacity:
        return array
    extra = np.full((capacity - len(array),) + array.shape[1:], fill, dtype=array.dtype)
    return np.concatenate([array, extra])
