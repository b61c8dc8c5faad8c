"""The interface every detector implements, and helpers to build detections.

A detector sees a batch of closed windows (``pipeline.windows.WindowBatch``)
whose ``slots`` rows point into its own per-subject arrays. It scores the
whole batch at once, returns detections for the windows that cross its
threshold, and then learns from the batch. Scoring before learning means a
window is always judged against a baseline that did not include it.

Besides token windows, a batch carries per-client windows
(``windows.clients``) and (window, value) pair tables (``windows.pairs``);
detectors with ``scope = "client"`` report on client windows and set
``Detection.client_ip``, those with ``scope = "account"`` on all tokens of
one account together (``subject_id`` is ``account:<name>``).

Every detection explains itself with ``explain``: a summary, then each
``Evidence`` as "feature observed (expected E)", so the numbers in the text
are the numbers in the evidence.
"""

from __future__ import annotations

import hashlib
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from pipeline.registry import TokenRegistry
from pipeline.state import SubjectIndex, grow_array
from pipeline.windows import WindowBatch
from schemas.detections import Detection, Evidence, Severity
from schemas.registry import TokenRecord

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class DetectionContext:
    """Inputs of detectors besides the windows: limits and the token registry.

    ``registry`` may be given as a plain dict of records. It is wrapped in a
    ``TokenRegistry``, so rules can look up whole batches at once.
    ``registry_version`` defaults to the registry's own version.
    """

    window_s: float
    default_limit_rps: float = 20.0
    """Static limit for tokens without a registry or plan limit, requests per second."""
    client_limit_rps: float = 20.0
    """Static limit for requests without a credential, per client IP, requests per second."""
    plan_limits_rps: dict[str, float] = field(default_factory=dict)
    registry: Mapping[str, TokenRecord] = field(default_factory=dict)
    registry_version: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.registry, TokenRegistry):
            records = list(self.registry.values())
            self.registry = TokenRegistry.from_records(records) if records else TokenRegistry()
        if not self.registry_version:
            self.registry_version = self.registry.version

    @property
    def tokens(self) -> TokenRegistry:
        """The registry, typed for its vectorized lookups."""
        assert isinstance(self.registry, TokenRegistry)
        return self.registry

    def refresh(self) -> bool:
        """Reload a file-backed registry whose file changed; return True when the version changed.

        The runner calls this once per batch, before the detectors.
        """
        if self.tokens.reload_if_changed():
            self.registry_version = self.tokens.version
            return True
        return False


class Detector(ABC):
    """A detector with a stable id used in logs, metrics and the audit trail.

    ``scope`` names what a detection is about: ``token`` windows,
    ``client`` IP windows or ``account`` aggregates. ``score_range`` bounds
    every score the detector emits; the contract tests check it.
    """

    detector_id: ClassVar[str]
    version: ClassVar[str]
    scope: ClassVar[str] = "token"
    score_range: ClassVar[tuple[float, float]] = (0.0, math.inf)

    def attach(self, index: SubjectIndex) -> None:  # noqa: B027 - optional hook
        """Register per-subject arrays with the index; stateless detectors keep the default."""

    @abstractmethod
    def detect(self, windows: WindowBatch, context: DetectionContext) -> list[Detection]:
        """Score ``windows``, return detections, then learn from them."""

    def state_nbytes(self) -> int:
        """Bytes of learned state, for memory budgets; 0 for stateless detectors."""
        return 0


class SlotArrays:
    """Named per-slot numpy arrays that grow and reset with a ``SubjectIndex``.

    ``spec`` maps each name to (dtype, initial value, trailing shape). The
    arrays are plain numpy, so a detector holding them pickles compactly.
    """

    def __init__(self, spec: dict[str, tuple[Any, float | int, tuple[int, ...]]]) -> None:
        self.spec = spec
        self.arrays: dict[str, np.ndarray] = {
            name: np.full((0, *shape), fill, dtype=dtype) for name, (dtype, fill, shape) in spec.items()
        }

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def grow(self, capacity: int) -> None:
        for name, (_, fill, _) in self.spec.items():
            self.arrays[name] = grow_array(self.arrays[name], capacity, fill)

    def reset(self, slots: np.ndarray) -> None:
        for name, (_, fill, _) in self.spec.items():
            self.arrays[name][slots] = fill

    @property
    def bytes_per_slot(self) -> int:
        return sum(np.dtype(dtype).itemsize * int(np.prod(shape)) for dtype, _, shape in self.spec.values())

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for array in self.arrays.values())


class SlotStateDetector(Detector):
    """A detector whose learned state is one ``SlotArrays`` in ``self.state``.

    It attaches the arrays to the subject index, so they grow with it and
    the rows of expired subjects return to their initial values.
    """

    state: SlotArrays

    def attach(self, index: SubjectIndex) -> None:
        index.attach(self)

    def grow(self, capacity: int) -> None:
        self.state.grow(capacity)

    def reset(self, slots: np.ndarray) -> None:
        self.state.reset(slots)

    def state_nbytes(self) -> int:
        return self.state.nbytes


def detection_id(detector_id: str, window_id: int, salt: str = "") -> int:
    """Derive a deterministic 63-bit detection id, stable across redelivery."""
    digest = hashlib.blake2b(f"{detector_id}\x00{window_id}\x00{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def severity_from_score(score: float, medium: float, high: float, critical: float) -> Severity:
    """Map a score onto severities by three increasing cut points; below ``medium`` is LOW."""
    if score >= critical:
        return Severity.CRITICAL
    if score >= high:
        return Severity.HIGH
    if score >= medium:
        return Severity.MEDIUM
    return Severity.LOW


def build_detection(
    detector: Detector,
    windows: WindowBatch,
    row: int,
    *,
    score: float,
    threshold: float,
    severity: Severity,
    explanation: str,
    evidence: tuple[Evidence, ...],
    context: DetectionContext,
    client_ip: str = "",
) -> Detection:
    """Build the detection for window ``row`` of ``windows``."""
    keys = windows.keys
    window_id = int(keys["window_id"][row])
    return Detection(
        detection_id=detection_id(detector.detector_id, window_id, client_ip),
        detector=detector.detector_id,
        detector_version=detector.version,
        subject_id=str(keys["subject_id"][row]),
        subject_kind=int(keys["subject_kind"][row]),
        account=str(keys["account"][row]),
        client_ip=client_ip,
        window_id=window_id,
        window_start=float(keys["window_start"][row]),
        window_end=float(keys["window_end"][row]),
        score=float(score),
        threshold=float(threshold),
        severity=severity,
        explanation=explanation,
        evidence=evidence,
        registry_version=context.registry_version,
    )


def rows_where(mask: np.ndarray) -> list[int]:
    """Return the row numbers where ``mask`` is True, as Python ints."""
    return [int(row) for row in np.flatnonzero(mask)]


def format_number(value: float) -> str:
    """Format a number for explanations: whole numbers in full, others to 3 significant digits."""
    value = float(value)
    if math.isnan(value):
        return "n/a"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.3g}"


def describe_evidence(evidence: Evidence) -> str:
    """Render one evidence item as ``feature observed (expected E)``, or ``(limit T)`` for static rules."""
    text = f"{evidence.feature} {format_number(evidence.observed)}"
    if evidence.expected is not None:
        text += f" (expected {format_number(evidence.expected)})"
    elif evidence.threshold is not None:
        text += f" (limit {format_number(evidence.threshold)})"
    return text


def explain(summary: str, evidence: tuple[Evidence, ...]) -> str:
    """Join a one-line summary with every evidence item, so the text matches the evidence."""
    if not evidence:
        return summary
    return f"{summary}: " + "; ".join(describe_evidence(item) for item in evidence)


def registry_rows(windows: WindowBatch, context: DetectionContext) -> np.ndarray:
    """Return each window's row in the registry's column arrays (-1 when absent), computed once per batch."""
    key = ("registry_rows", context.tokens.version, id(context.tokens))
    cached = windows.cache.get(key)
    if cached is None:
        cached = context.tokens.lookup(windows.keys["subject_id"])
        windows.cache[key] = cached
    return cached


def stable_fraction(ids: np.ndarray, seed: int) -> np.ndarray:
    """Map 64-bit ids to reproducible numbers in [0, 1), different for each seed.

    Used to sample windows without random state: the same window is always
    sampled or always skipped for one seed, so replays and pickled copies
    agree.
    """
    z = ids.astype(np.uint64) ^ np.uint64((seed * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
    z ^= z >> np.uint64(33)
    z *= np.uint64(0xFF51AFD7ED558CCD)
    z ^= z >> np.uint64(33)
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)
