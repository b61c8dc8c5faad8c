"""Facts the evaluation takes from the event stream itself: benign tokens, attack-only subjects, event-time span."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.evaluate.labels import LabelIndex
from schemas.events import SubjectKind


class TrafficTracker:
    """Tracks, over all event batches, which token subjects behaved benignly.

    A token subject (``key:`` or ``tk_``) is *benign* when at least one of
    its requests came from a client that no ``client`` label lists. A
    subject whose every request came from the clients of ``client`` labels
    (a credential only a brute-force client tried) is *attributed* to those
    labels, so findings about it count for them and not as false positives.
    Memory is one set entry per token subject seen.
    """

    def __init__(self, index: LabelIndex) -> None:
        self.index = index
        attacker_addresses = index.client_label_addresses
        self._attacker_index = pd.Index(list(attacker_addresses), dtype=object)
        self._attacker_labels = list(attacker_addresses.values())
        self.benign_subjects: set[str] = set()
        self._attacker_subjects: dict[str, set[int]] = {}
        self.events = 0
        self.first_ts = float("inf")
        self.last_ts = float("-inf")

    def observe(self, events: dict[str, np.ndarray]) -> None:
        """Update the tracker with one batch of event columns (``schemas.events.EVENT_COLUMNS``)."""
        count = len(events["ts"])
        if count == 0:
            return
        self.events += count
        self.first_ts = min(self.first_ts, float(events["ts"].min()))
        self.last_ts = max(self.last_ts, float(events["ts"].max()))
        is_token = events["subject_kind"] != SubjectKind.CLIENT_IP
        subjects = events["subject_id"]
        if len(self._attacker_index):
            positions = self._attacker_index.get_indexer(events["client_ip"])
        else:
            positions = np.full(count, -1, dtype=np.int64)
        from_attacker = positions >= 0
        self.benign_subjects.update(pd.unique(subjects[is_token & ~from_attacker]).tolist())
        attack_rows = np.flatnonzero(is_token & from_attacker)
        if len(attack_rows) == 0:
            return
        pairs = pd.DataFrame({"subject": subjects[attack_rows], "position": positions[attack_rows]}).drop_duplicates()
        for subject, position in zip(pairs["subject"].tolist(), pairs["position"].tolist(), strict=True):
            self._attacker_subjects.setdefault(subject, set()).update(self._attacker_labels[position])

    def attributed(self) -> dict[str, set[int]]:
        """Return the attack-only token subjects, each with the numbers of the labels it belongs to."""
        return {
            subject: numbers
            for subject, numbers in self._attacker_subjects.items()
            if subject not in self.benign_subjects
        }

    def benign_tokens(self) -> int:
        """Return how many benign token subjects no label lists."""
        return len(self.benign_subjects - self.index.labelled_subjects)

    @property
    def span_s(self) -> float:
        """Event time from the first to the last event, seconds (0 before any event)."""
        return max(0.0, self.last_ts - self.first_ts) if self.events else 0.0
