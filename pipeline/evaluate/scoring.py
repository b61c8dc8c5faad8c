"""Match detections and actions to ground-truth labels, and count false positives.

Every system under evaluation (the TokenSentry pipeline and the baselines)
reports ``Finding`` records. A finding matches a label when both hold:

* it is about the label's subjects. Its subject is one of the label's
  subjects, or is attributed to a ``client`` label because all its
  traffic came from the label's clients (e.g. the ``tk_`` id of a
  credential that only a brute-force client sent). Or its client network
  contains one of the label's client addresses or lies inside one of the
  label's networks.
* its event-time span overlaps ``[label.start, label.end + grace_s]``.

An action that matches no label is a false positive, including an action
on a labelled subject outside every window of its labels: that subject was
behaving normally then. ``restore`` and ``unblock`` only lift earlier
actions, so systems do not report them as findings.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pipeline.evaluate.labels import LabelIndex

DETECTION = "detection"
ACTION = "action"

ENFORCING_KINDS = frozenset({"throttle", "revoke", "rotate", "block", "ban"})
"""Action kinds that restrict traffic; ``alert`` only notifies people."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One detection or action of a system, reduced to the fields matching needs.

    ``subject`` is a token id (``key:``, ``tk_``) or ``ip:<addr>``, or empty
    for actions on a client network. ``network`` is the client address or
    CIDR the finding is about, or empty. ``start`` and ``end`` bound the
    event time the finding judged (a window, or ``start == end`` for a
    single event), and ``at`` is the event time the system reported it.
    """

    stage: str
    subject: str
    network: str
    start: float
    end: float
    at: float
    kind: str

    @property
    def enforcing(self) -> bool:
        return self.kind in ENFORCING_KINDS


def overlaps(start: float, end: float, low: float, high: float) -> bool:
    """Return True when ``[start, end)`` shares time with ``[low, high]``; a point ``start == end`` counts if inside."""
    if start == end:
        return low <= start <= high
    return start <= high and end > low


@dataclass(slots=True)
class LabelOutcome:
    """One system's result on one label. Times are event-time seconds after the label's start."""

    label_id: str
    scenario: str
    first_detection_s: float | None = None
    first_action_s: float | None = None
    first_action_kind: str = ""
    actions: int = 0

    @property
    def caught(self) -> bool:
        return self.first_action_s is not None

    def record(self, finding: Finding, label_start: float) -> None:
        delay = finding.at - label_start
        if finding.stage == DETECTION:
            if self.first_detection_s is None or delay < self.first_detection_s:
                self.first_detection_s = delay
            return
        self.actions += 1
        if self.first_action_s is None or delay < self.first_action_s:
            self.first_action_s = delay
            self.first_action_kind = finding.kind


@dataclass(slots=True)
class SystemScore:
    """One system's outcome per label plus its false positives."""

    system: str
    outcomes: list[LabelOutcome]
    actions: int = 0
    detections: int = 0
    fp_actions: int = 0
    fp_enforcing_actions: int = 0
    fp_detections: int = 0
    fp_subjects: set[str] = field(default_factory=set)
    fp_actions_by_kind: dict[str, int] = field(default_factory=dict)

    def fp_rate_per_1000_tokens_per_day(self, benign_tokens: int, span_s: float) -> float | None:
        """Return false-positive actions per 1000 benign tokens per day of event time, or None without tokens or time."""
        if benign_tokens <= 0 or span_s <= 0:
            return None
        return self.fp_actions / (benign_tokens / 1000.0) / (span_s / 86400.0)


class Scorer:
    """Accumulates one system's findings against the labels, one finding at a time.

    Findings need not arrive in event-time order; each outcome keeps the
    earliest matching time. Memory is one set entry per false-positive
    subject, so findings can stream from a long run.
    """

    def __init__(
        self,
        system: str,
        index: LabelIndex,
        *,
        grace_s: float,
        attributed: Mapping[str, Iterable[int]] | None = None,
        enforcing_only: bool = False,
    ) -> None:
        if grace_s < 0 or math.isnan(grace_s):
            raise ValueError(f"grace_s must be >= 0, got {grace_s}")
        self.index = index
        self.grace_s = grace_s
        self.attributed = attributed if attributed is not None else {}
        self.enforcing_only = enforcing_only
        self.score = SystemScore(
            system=system,
            outcomes=[LabelOutcome(label_id=label.label_id, scenario=label.scenario) for label in index.labels],
        )

    def add(self, finding: Finding) -> None:
        """Match one finding and update the outcomes or the false-positive counts."""
        score = self.score
        counted_action = finding.stage == ACTION and (finding.enforcing or not self.enforcing_only)
        if finding.stage == ACTION and not counted_action:
            return
        if counted_action:
            score.actions += 1
        else:
            score.detections += 1
        matched = False
        for number in self.candidate_labels(finding):
            label = self.index.labels[number]
            if overlaps(finding.start, finding.end, label.start, label.end + self.grace_s):
                score.outcomes[number].record(finding, label.start)
                matched = True
        if matched:
            return
        if counted_action:
            score.fp_actions += 1
            score.fp_enforcing_actions += int(finding.enforcing)
            score.fp_subjects.add(finding.subject or finding.network)
            score.fp_actions_by_kind[finding.kind] = score.fp_actions_by_kind.get(finding.kind, 0) + 1
        else:
            score.fp_detections += 1

    def add_all(self, findings: Iterable[Finding]) -> None:
        for finding in findings:
            self.add(finding)

    def candidate_labels(self, finding: Finding) -> set[int]:
        """Return the labels the finding's subject or network belongs to, before the time check."""
        numbers: set[int] = set()
        if finding.subject:
            numbers.update(self.index.for_subject(finding.subject))
            numbers.update(self.attributed.get(finding.subject, ()))
        if finding.network:
            numbers.update(self.index.for_network(finding.network))
        return numbers
