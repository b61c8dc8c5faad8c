"""Convert pipeline batches and records into Arrow tables for ``insert_arrow``.

Times arrive as float seconds since the Unix epoch and leave as Arrow
``timestamp[ms, tz=UTC]``, rounded to the nearest millisecond, which is what
the ``DateTime64(3, 'UTC')`` columns keep. String columns must not contain
None: the tables use "" for a missing value, as the batch contracts do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import orjson
import pyarrow as pa

from schemas.actions import Action, ActionReceipt
from schemas.deadletters import DeadLetter
from schemas.detections import Detection
from schemas.events import EVENT_COLUMNS
from schemas.windows import WINDOW_FEATURES, WINDOW_KEYS

TIMESTAMP_MS_UTC = pa.timestamp("ms", tz="UTC")

# Columns of a batch that hold float seconds and become timestamps.
EVENT_TIME_COLUMNS = frozenset({"ts"})
WINDOW_TIME_COLUMNS = frozenset({"window_start", "window_end"})
WINDOW_COLUMNS: dict[str, np.dtype] = {**WINDOW_KEYS, **WINDOW_FEATURES}


def seconds_to_timestamps(seconds: np.ndarray | Sequence[float], name: str) -> pa.Array:
    """Convert float seconds since the epoch to a UTC millisecond timestamp array.

    Raises:
        ValueError: a value is NaN or infinite. The message names the column
            and the first bad row.
    """
    values = np.asarray(seconds, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        row = int(np.argmin(finite))
        raise ValueError(f"Column {name!r} has a non-finite time {values[row]!r} at row {row}")
    milliseconds = np.rint(values * 1000.0).astype(np.int64)
    return pa.array(milliseconds, type=TIMESTAMP_MS_UTC)


def batch_length(columns: Mapping[str, np.ndarray], expected: Mapping[str, np.dtype], kind: str) -> int:
    """Check a columnar batch against its contract and return its row count.

    Raises:
        ValueError: a column is missing or unexpected, or the lengths differ.
        TypeError: a column has another dtype than the contract declares.
    """
    missing = [name for name in expected if name not in columns]
    extra = [name for name in columns if name not in expected]
    if missing or extra:
        raise ValueError(f"{kind} batch does not match its contract: missing columns {missing}, unexpected {extra}")

    lengths = {name: len(columns[name]) for name in expected}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{kind} batch columns differ in length: {lengths}")

    for name, dtype in expected.items():
        actual = np.asarray(columns[name]).dtype
        if actual != dtype:
            raise TypeError(f"{kind} column {name!r} has dtype {actual}, expected {dtype}. Convert it with .astype()")
    return next(iter(lengths.values()), 0)


def _constant_strings(values: np.ndarray) -> pa.Array | None:
    """Return a string column whose rows all hold one str as a dictionary array, else None.

    Building it takes one comparison per row instead of copying every
    string, and ClickHouse reads a dictionary column into a String or
    LowCardinality(String) column alike. Many columns of a batch are
    constant: the source, the gateway, and fields the gateway never logs.
    """
    first = values[0]
    if not isinstance(first, str) or values[-1] != first or not (values == first).all():
        return None
    return pa.DictionaryArray.from_arrays(np.zeros(len(values), dtype=np.int8), pa.array([first], type=pa.string()))


def _column_array(name: str, values: np.ndarray, time_columns: frozenset[str]) -> pa.Array:
    if name in time_columns:
        return seconds_to_timestamps(values, name)
    if values.dtype == object:
        constant = _constant_strings(values) if len(values) else None
        if constant is not None:
            return constant
        try:
            array = pa.array(values, type=pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise ValueError(f"Column {name!r} must contain only str values: {error}") from error
        if array.null_count:
            raise ValueError(f"Column {name!r} contains {array.null_count} None values. Use '' for a missing string")
        return array
    return pa.array(values)


def batch_table(
    columns: Mapping[str, np.ndarray],
    expected: Mapping[str, np.dtype],
    time_columns: frozenset[str],
    kind: str,
) -> pa.Table:
    """Convert a validated columnar batch into an Arrow table in contract column order."""
    batch_length(columns, expected, kind)
    arrays = [_column_array(name, np.asarray(columns[name]), time_columns) for name in expected]
    return pa.Table.from_arrays(arrays, names=list(expected))


def events_table(columns: Mapping[str, np.ndarray]) -> pa.Table:
    """Convert an event batch (``EVENT_COLUMNS``) into an Arrow table."""
    return batch_table(columns, EVENT_COLUMNS, EVENT_TIME_COLUMNS, "Event")


def windows_table(columns: Mapping[str, np.ndarray]) -> pa.Table:
    """Convert a window batch (``WINDOW_KEYS`` plus ``WINDOW_FEATURES``) into an Arrow table."""
    return batch_table(columns, WINDOW_COLUMNS, WINDOW_TIME_COLUMNS, "Window")


def _json(items: Sequence[object]) -> str:
    return orjson.dumps([item.model_dump(mode="json") for item in items]).decode()


def detections_table(detections: Sequence[Detection]) -> pa.Table:
    """Convert detections into an Arrow table, with the evidence as a JSON array string."""
    return pa.table(
        {
            "detection_id": pa.array([d.detection_id for d in detections], type=pa.uint64()),
            "detector": pa.array([d.detector for d in detections], type=pa.string()),
            "detector_version": pa.array([d.detector_version for d in detections], type=pa.string()),
            "registry_version": pa.array([d.registry_version for d in detections], type=pa.string()),
            "subject_id": pa.array([d.subject_id for d in detections], type=pa.string()),
            "subject_kind": pa.array([d.subject_kind for d in detections], type=pa.uint8()),
            "account": pa.array([d.account for d in detections], type=pa.string()),
            "client_ip": pa.array([d.client_ip for d in detections], type=pa.string()),
            "window_id": pa.array([d.window_id for d in detections], type=pa.uint64()),
            "window_start": seconds_to_timestamps([d.window_start for d in detections], "window_start"),
            "window_end": seconds_to_timestamps([d.window_end for d in detections], "window_end"),
            "score": pa.array([d.score for d in detections], type=pa.float64()),
            "threshold": pa.array([d.threshold for d in detections], type=pa.float64()),
            "severity": pa.array([int(d.severity) for d in detections], type=pa.uint8()),
            "explanation": pa.array([d.explanation for d in detections], type=pa.string()),
            "evidence": pa.array([_json(d.evidence) for d in detections], type=pa.string()),
            "schema_version": pa.array([d.schema_version for d in detections], type=pa.uint16()),
        }
    )


def actions_table(actions: Sequence[Action], published: bool) -> pa.Table:
    """Convert actions into an Arrow table, with the reasons as a JSON array string."""
    return pa.table(
        {
            "action_id": pa.array([a.action_id for a in actions], type=pa.string()),
            "kind": pa.array([a.kind.value for a in actions], type=pa.string()),
            "token_id": pa.array([a.token_id for a in actions], type=pa.string()),
            "subject": pa.array([a.subject for a in actions], type=pa.string()),
            "account": pa.array([a.account for a in actions], type=pa.string()),
            "limit_rps": pa.array([a.limit_rps for a in actions], type=pa.float64()),
            "grace_period_s": pa.array([a.grace_period_s for a in actions], type=pa.float64()),
            "issued_at": seconds_to_timestamps([a.issued_at for a in actions], "issued_at"),
            "expires_at": seconds_to_timestamps([a.expires_at for a in actions], "expires_at"),
            "reason": pa.array([a.reason for a in actions], type=pa.string()),
            "reasons": pa.array([_json(a.reasons) for a in actions], type=pa.string()),
            "policy_version": pa.array([a.policy_version for a in actions], type=pa.string()),
            "rule": pa.array([a.rule for a in actions], type=pa.string()),
            "dry_run": pa.array([a.dry_run for a in actions], type=pa.bool_()),
            "shadow_reason": pa.array([a.shadow_reason for a in actions], type=pa.string()),
            "origin": pa.array([a.origin for a in actions], type=pa.string()),
            "key_id": pa.array([a.key_id for a in actions], type=pa.string()),
            "signature": pa.array([a.signature for a in actions], type=pa.string()),
            "published": pa.array([int(published)] * len(actions), type=pa.uint8()),
            "schema_version": pa.array([a.schema_version for a in actions], type=pa.uint16()),
        }
    )


def dead_letters_table(letters: Sequence[DeadLetter]) -> pa.Table:
    """Convert dead letters into an Arrow table."""
    return pa.table(
        {
            "source": pa.array([d.source for d in letters], type=pa.string()),
            "partition": pa.array([d.partition for d in letters], type=pa.int32()),
            "offset": pa.array([d.offset for d in letters], type=pa.int64()),
            "stage": pa.array([d.stage for d in letters], type=pa.string()),
            "reason": pa.array([d.reason for d in letters], type=pa.string()),
            "format": pa.array([d.format for d in letters], type=pa.string()),
            "raw": pa.array([d.raw for d in letters], type=pa.string()),
            "schema_version": pa.array([d.schema_version for d in letters], type=pa.uint16()),
        }
    )


def receipts_table(receipts: Sequence[ActionReceipt], received_at: Sequence[float]) -> pa.Table:
    """Convert enforcement receipts and the times the pipeline received them into an Arrow table."""
    if len(received_at) != len(receipts):
        raise ValueError(f"Got {len(received_at)} received_at times for {len(receipts)} receipts")
    return pa.table(
        {
            "action_id": pa.array([r.action_id for r in receipts], type=pa.string()),
            "agent_id": pa.array([r.agent_id for r in receipts], type=pa.string()),
            "kind": pa.array([r.kind.value for r in receipts], type=pa.string()),
            "subject": pa.array([r.subject for r in receipts], type=pa.string()),
            "issued_at": seconds_to_timestamps([r.issued_at for r in receipts], "issued_at"),
            "applied_at": seconds_to_timestamps([r.applied_at for r in receipts], "applied_at"),
            "received_at": seconds_to_timestamps(received_at, "received_at"),
            "schema_version": pa.array([r.schema_version for r in receipts], type=pa.uint16()),
        }
    )
