"""Replay stored windows through the detectors and a candidate policy, and compare with stored actions.

``run_backtest`` reads the ``windows`` table (keys and feature columns, with
FINAL). It feeds the windows, batch by batch, to a fresh detector set
(``build_detectors``) and a ``Policy`` built from the candidate
configuration, through the pipeline's steps 4 to 6: assign slots, detect,
decide, expire idle subjects. It then compares the actions the candidate
would have taken with the pipeline actions stored in the ``actions`` table.
Nothing is written to the store.

Batching matters because the policy takes at most one action per subject
and batch. ``insert`` batching (the default) regroups the windows as the
pipeline wrote them: every window of one pipeline batch was inserted in one
statement and shares its ``inserted_at``. Replaying the current policy that
way reproduces the stored action ids. ``window`` batching groups windows by
their end, as a live stream with small batches would close them.

Comparison, per subject (the action's target):

1. actions with the same ``action_id`` are the same decision;
2. other actions issued at the same event time are the same decision;
3. the rest are ``new`` (candidate only) or ``dropped`` (stored only).

A matched pair is ``changed`` when the kind or the throttle limit differs,
else ``unchanged``. An action that moved to another window counts as one
new and one dropped action. ``restore`` and ``unblock`` follow from expiry
and are not compared; manual actions are left out.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from detectors.base import DetectionContext
from pipeline.analysis.timerange import Since
from pipeline.assemble import build_detectors
from pipeline.errors import ConfigError, StoreError
from pipeline.policy import Policy, PolicyConfig
from pipeline.sinks.clickhouse import AuditStore
from pipeline.state import SubjectIndex
from pipeline.windows import FEATURE_NAMES, WindowBatch
from schemas.actions import Action, ActionKind
from schemas.windows import WINDOW_KEYS

logger = logging.getLogger(__name__)

BATCHING_MODES = ("insert", "window")
DEFAULT_PAGE_ROWS = 200_000
AUTOMATIC_KINDS = (ActionKind.RESTORE.value, ActionKind.UNBLOCK.value)

# Column (as epoch milliseconds) that groups windows into batches, per mode.
_BATCH_KEYS = {
    "insert": "toUnixTimestamp64Milli(inserted_at)",
    "window": "toUnixTimestamp64Milli(window_end)",
}


@dataclass(slots=True)
class ComparedAction:
    """The fields of an action that the comparison looks at."""

    action_id: str
    subject: str
    kind: str
    limit_rps: float | None
    issued_at: float
    rule: str
    dry_run: bool
    explanations: tuple[str, ...]
    """Explanations of the detections behind the action, in the action's order."""


@dataclass(slots=True)
class ActionChange:
    """One comparison result: ``new``, ``dropped``, ``changed`` or ``unchanged``."""

    change: str
    subject: str
    stored: ComparedAction | None
    candidate: ComparedAction | None

    @property
    def time(self) -> float:
        action = self.candidate or self.stored
        assert action is not None
        return action.issued_at


@dataclass(slots=True)
class SubjectChanges:
    """Counts of comparison results for one subject, with the action kinds on each side."""

    subject: str
    new: int = 0
    dropped: int = 0
    changed: int = 0
    unchanged: int = 0
    stored_kinds: Counter = field(default_factory=Counter)
    candidate_kinds: Counter = field(default_factory=Counter)


@dataclass(slots=True)
class BacktestReport:
    """The outcome of a backtest. Times are epoch seconds, and counts cover the compared span."""

    policy_version: str
    batching: str
    window_s: float
    replay_start: float
    compare_start: float
    end: float
    windows_replayed: int
    windows_compared: int
    batches: int
    detections_by_detector: Counter
    stored: list[ComparedAction]
    candidate: list[ComparedAction]
    changes: list[ActionChange]

    def totals(self) -> dict[str, int]:
        counts = Counter(change.change for change in self.changes)
        return {name: counts.get(name, 0) for name in ("new", "dropped", "changed", "unchanged")}

    def subjects(self) -> list[SubjectChanges]:
        """Return per-subject counts, subjects with differences first, then by subject id."""
        by_subject: dict[str, SubjectChanges] = {}
        for change in self.changes:
            summary = by_subject.setdefault(change.subject, SubjectChanges(change.subject))
            setattr(summary, change.change, getattr(summary, change.change) + 1)
            if change.stored is not None:
                summary.stored_kinds[change.stored.kind] += 1
            if change.candidate is not None:
                summary.candidate_kinds[change.candidate.kind] += 1
        return sorted(
            by_subject.values(),
            key=lambda s: (-(s.new + s.dropped + s.changed), s.subject),
        )


# ---- comparison ------------------------------------------------------------


def _same_decision(stored: ComparedAction, candidate: ComparedAction) -> bool:
    if stored.kind != candidate.kind:
        return False
    if stored.limit_rps is None or candidate.limit_rps is None:
        return stored.limit_rps is None and candidate.limit_rps is None
    return abs(stored.limit_rps - candidate.limit_rps) <= 1e-9 * max(1.0, abs(stored.limit_rps))


def compare_actions(stored: list[ComparedAction], candidate: list[ComparedAction]) -> list[ActionChange]:
    """Match candidate actions with stored ones per subject and classify each, in time order."""
    changes: list[ActionChange] = []
    subjects = sorted({a.subject for a in stored} | {a.subject for a in candidate})
    for subject in subjects:
        left = [a for a in stored if a.subject == subject]
        right = [a for a in candidate if a.subject == subject]
        pairs: list[tuple[ComparedAction, ComparedAction]] = []

        by_id = {a.action_id: a for a in right}
        for action in list(left):
            match = by_id.pop(action.action_id, None)
            if match is not None:
                pairs.append((action, match))
                left.remove(action)
                right.remove(match)

        by_time: dict[int, ComparedAction] = {}
        for action in right:
            by_time.setdefault(_milliseconds(action.issued_at), action)
        for action in list(left):
            match = by_time.pop(_milliseconds(action.issued_at), None)
            if match is not None:
                pairs.append((action, match))
                left.remove(action)
                right.remove(match)

        for old, new in pairs:
            change = "unchanged" if _same_decision(old, new) else "changed"
            changes.append(ActionChange(change, subject, old, new))
        changes.extend(ActionChange("dropped", subject, action, None) for action in left)
        changes.extend(ActionChange("new", subject, None, action) for action in right)
    changes.sort(key=lambda change: (change.time, change.subject))
    return changes


def _milliseconds(seconds: float) -> int:
    return int(round(seconds * 1000.0))


def compared(action: Action) -> ComparedAction:
    return ComparedAction(
        action_id=action.action_id,
        subject=action.subject,
        kind=action.kind.value,
        limit_rps=action.limit_rps,
        issued_at=action.issued_at,
        rule=action.rule,
        dry_run=action.dry_run,
        explanations=tuple(reason.explanation for reason in action.reasons) or (action.reason,),
    )


# ---- reading the store ---------------------------------------------------------


_RANGE_SQL = """
SELECT count(), min(toUnixTimestamp64Milli(window_start)), max(toUnixTimestamp64Milli(window_end)),
       groupUniqArray(10)(toUnixTimestamp64Milli(window_end) - toUnixTimestamp64Milli(window_start))
FROM windows
"""

_STORED_ACTIONS_SQL = """
SELECT action_id, subject, kind, limit_rps, toUnixTimestamp64Milli(issued_at), rule, dry_run,
       arrayMap(r -> JSONExtractString(r, 'explanation'), JSONExtractArrayRaw(reasons)), reason
FROM actions FINAL
WHERE origin = 'pipeline'
  AND kind NOT IN {automatic:Array(String)}
  AND issued_at >= fromUnixTimestamp64Milli({start_ms:Int64}, 'UTC')
  AND issued_at <= fromUnixTimestamp64Milli({end_ms:Int64}, 'UTC')
ORDER BY issued_at, action_id
"""


@dataclass(slots=True)
class StoredSpan:
    """Extent of the stored windows: count, first start, last end and the window size."""

    windows: int
    first_start: float
    last_end: float
    window_s: float


def stored_span(store: AuditStore) -> StoredSpan:
    """Return the extent of the ``windows`` table.

    Raises:
        StoreError: the table is empty, or contains windows of several
            sizes (the detectors assume one size per run).
    """
    _, rows = store.query(_RANGE_SQL)
    count, first_ms, last_ms, sizes_ms = rows[0]
    if not count:
        raise StoreError(
            f"the windows table of {store.label} is empty, so there is nothing to backtest; "
            "fill the store with `tokensentry replay` or a running pipeline first"
        )
    sizes = sorted({int(size) for size in sizes_ms})
    if len(sizes) != 1:
        raise StoreError(
            f"the windows table of {store.label} contains windows of several sizes ({', '.join(f'{s / 1000:g} s' for s in sizes)}); "
            "a backtest needs one window size: pass --since to cover a span with one size"
        )
    return StoredSpan(int(count), first_ms / 1000.0, last_ms / 1000.0, sizes[0] / 1000.0)


def check_window_columns(store: AuditStore) -> None:
    """Raise ``StoreError`` when the windows table lacks a key or feature column the detectors read."""
    _, rows = store.query(
        "SELECT name FROM system.columns WHERE database = {database:String} AND table = 'windows'",
        parameters={"database": store.database},
    )
    present = {name for (name,) in rows}
    missing = [name for name in (*WINDOW_KEYS, *FEATURE_NAMES) if name not in present]
    if missing:
        raise StoreError(
            f"the windows table of {store.label} lacks the columns {', '.join(missing)} that the detectors read; "
            "update the schema with `tokensentry store migrate`"
        )


def load_stored_actions(store: AuditStore, start: float, end: float) -> list[ComparedAction]:
    """Return the pipeline's stored actions issued in ``[start, end]``, without restores and unblocks."""
    _, rows = store.query(
        _STORED_ACTIONS_SQL,
        parameters={
            "automatic": list(AUTOMATIC_KINDS),
            "start_ms": int(start * 1000),
            "end_ms": int(end * 1000),
        },
    )
    return [
        ComparedAction(
            action_id=action_id,
            subject=subject,
            kind=kind,
            limit_rps=None if limit is None else float(limit),
            issued_at=issued_ms / 1000.0,
            rule=rule,
            dry_run=bool(dry_run),
            explanations=tuple(explanations) or (reason,),
        )
        for action_id, subject, kind, limit, issued_ms, rule, dry_run, explanations, reason in rows
    ]


def iter_window_batches(
    store: AuditStore,
    start: float,
    end: float,
    batching: str,
    page_rows: int = DEFAULT_PAGE_ROWS,
) -> Iterator[WindowBatch]:
    """Yield the stored windows that start in ``[start, end]`` as pipeline-like batches, in order.

    The batch list is read first (one row per batch key), then the windows
    page by page, each page a run of whole batches of about ``page_rows``
    windows, so memory stays bounded by the page size.
    """
    if batching not in _BATCH_KEYS:
        raise ConfigError(f"invalid batching {batching!r}; use one of {', '.join(BATCHING_MODES)}")
    key = _BATCH_KEYS[batching]
    span = {"start_ms": int(start * 1000), "end_ms": int(end * 1000)}
    in_span = (
        "window_start >= fromUnixTimestamp64Milli({start_ms:Int64}, 'UTC') "
        "AND window_start <= fromUnixTimestamp64Milli({end_ms:Int64}, 'UTC')"
    )
    _, batch_rows = store.query(
        f"SELECT {key} AS batch_key, count() FROM windows FINAL WHERE {in_span} GROUP BY batch_key ORDER BY batch_key",
        parameters=span,
    )
    columns = ", ".join(
        [
            "window_id",
            "subject_id",
            "subject_kind",
            "account",
            "toUnixTimestamp64Milli(window_start) AS window_start_ms",
            "toUnixTimestamp64Milli(window_end) AS window_end_ms",
            "first_offset",
            "last_offset",
            *FEATURE_NAMES,
            f"{key} AS batch_key",
        ]
    )
    for low, high in _pages(batch_rows, page_rows):
        table = store.query_arrow(
            f"SELECT {columns} FROM windows FINAL WHERE {in_span} "
            "AND batch_key >= {low:Int64} AND batch_key <= {high:Int64} "
            "ORDER BY batch_key, window_start, window_id",
            parameters={**span, "low": low, "high": high},
        )
        yield from _split_batches(table)


def _pages(batch_rows: list[tuple], page_rows: int) -> Iterator[tuple[int, int]]:
    """Group consecutive batch keys into (first key, last key) pages of about ``page_rows`` windows."""
    low: int | None = None
    rows = 0
    previous = 0
    for batch_key, count in batch_rows:
        if low is None:
            low = int(batch_key)
        rows += int(count)
        previous = int(batch_key)
        if rows >= page_rows:
            yield low, previous
            low, rows = None, 0
    if low is not None:
        yield low, previous


def _split_batches(table: pa.Table) -> Iterator[WindowBatch]:
    if table.num_rows == 0:
        return
    batch_keys = table.column("batch_key").to_numpy()
    boundaries = np.flatnonzero(np.diff(batch_keys)) + 1
    keys = {
        "window_id": table.column("window_id").to_numpy().astype(np.uint64),
        "subject_id": _strings(table.column("subject_id")),
        "subject_kind": table.column("subject_kind").to_numpy().astype(np.uint8),
        "account": _strings(table.column("account")),
        "window_start": table.column("window_start_ms").to_numpy().astype(np.float64) / 1000.0,
        "window_end": table.column("window_end_ms").to_numpy().astype(np.float64) / 1000.0,
        "first_offset": table.column("first_offset").to_numpy().astype(np.int64),
        "last_offset": table.column("last_offset").to_numpy().astype(np.int64),
    }
    features = np.column_stack(
        [table.column(name).to_numpy(zero_copy_only=False).astype(np.float64) for name in FEATURE_NAMES]
    )
    # NOTE: the store keeps no per-value pair tables and no per-client-IP
    # windows, so the batches carry neither (None) and rules that read them
    # find nothing in a backtest.
    for rows in np.split(np.arange(table.num_rows), boundaries):
        yield WindowBatch(
            keys={name: column[rows] for name, column in keys.items()},
            features=features[rows],
            slots=np.full(len(rows), -1, dtype=np.int64),
        )


def _strings(column: pa.ChunkedArray) -> np.ndarray:
    values = np.empty(len(column), dtype=object)
    values[:] = column.to_pylist()
    return values


# ---- the replay -----------------------------------------------------------------


class CandidateRun:
    """Fresh detector and policy state for one backtest, fed batch by batch.

    ``step`` follows the pipeline's steps 4 to 6 (``Pipeline._detect_and_decide``):
    assign slots, run every detector, let the policy decide, expire idle
    subjects.
    """

    # NOTE: this repeats Pipeline._detect_and_decide and the context that
    # assemble.build_pipeline builds; both must change together until the
    # pipeline exposes one shared function for these steps.
    def __init__(self, policy_config: PolicyConfig, window_s: float, idle_ttl_s: float) -> None:
        self.index = SubjectIndex(idle_ttl_s=idle_ttl_s)
        self.detectors = build_detectors()
        for detector in self.detectors:
            detector.attach(self.index)
        self.context = DetectionContext(
            window_s=window_s,
            default_limit_rps=policy_config.default_limit_rps,
            client_limit_rps=policy_config.client_limit_rps,
            plan_limits_rps=dict(policy_config.plan_limits_rps),
        )
        self.policy = Policy(policy_config)

    def step(self, closed: WindowBatch) -> tuple[list, list[Action]]:
        """Run one batch of closed windows; return its detections and actions."""
        closed.slots = self.index.assign(closed.keys["subject_id"], closed.keys["window_end"])
        detections = []
        for detector in self.detectors:
            detections.extend(detector.detect(closed, self.context))
        actions = self.policy.decide(detections)
        self.index.expire(float(closed.keys["window_end"].max()))
        return detections, actions


def run_backtest(
    store: AuditStore,
    policy_config: PolicyConfig,
    *,
    since: Since | None = None,
    warmup_s: float = 0.0,
    batching: str = "insert",
    idle_ttl_s: float = 7 * 86400.0,
    page_rows: int = DEFAULT_PAGE_ROWS,
) -> BacktestReport:
    """Replay the stored windows through fresh detectors and ``policy_config`` and compare the actions.

    Without ``since`` every stored window is replayed and compared. With
    it, comparison starts at ``since`` and the replay ``warmup_s`` earlier,
    so baselines are learned again before the compared span begins.
    """
    span = stored_span(store)
    check_window_columns(store)
    compare_start = since.start(span.last_end) if since is not None else span.first_start
    replay_start = max(span.first_start, compare_start - warmup_s) if since is not None else span.first_start
    end = span.last_end

    run = CandidateRun(policy_config, span.window_s, idle_ttl_s)
    candidate: list[ComparedAction] = []
    detections_by_detector: Counter = Counter()
    windows_replayed = windows_compared = batches = 0
    for batch in iter_window_batches(store, replay_start, end, batching, page_rows):
        detections, actions = run.step(batch)
        batches += 1
        windows_replayed += batch.size
        windows_compared += int((batch.keys["window_start"] >= compare_start).sum())
        for detection in detections:
            if detection.window_start >= compare_start:
                detections_by_detector[detection.detector] += 1
        candidate.extend(
            compared(action)
            for action in actions
            if action.issued_at >= compare_start and action.kind.value not in AUTOMATIC_KINDS
        )
    logger.info("Backtest replayed %d windows in %d batches from %s", windows_replayed, batches, store.label)

    stored = load_stored_actions(store, compare_start, end)
    return BacktestReport(
        policy_version=policy_config.version,
        batching=batching,
        window_s=span.window_s,
        replay_start=replay_start,
        compare_start=compare_start,
        end=end,
        windows_replayed=windows_replayed,
        windows_compared=windows_compared,
        batches=batches,
        detections_by_detector=detections_by_detector,
        stored=stored,
        candidate=candidate,
        changes=compare_actions(stored, candidate),
    )
