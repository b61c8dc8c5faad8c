"""Receipts in the audit store: recording them and measuring enforcement latency.

Agents send an ``ActionReceipt`` per applied action on the receipt topic.
``collect_receipts`` consumes that topic in its own consumer group and
writes each receipt to the store's ``receipts`` table with the time it was
received. ``receipt_summary`` reports, per agent, how many actions it
applied and the detection-to-enforcement latency: ``applied_at`` minus the
action's ``issued_at``, which is the end of the triggering window for
automatic actions and the analyst's wall-clock time for manual ones.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

from pipeline.enforce.topics import client_options, decode_json, ensure_enforcement_topics
from schemas.actions import ActionReceipt

logger = logging.getLogger(__name__)

# {database} and {hours} are filled in by receipt_summary. Latency is
# applied_at - issued_at in seconds; receipt_delay is received_at - applied_at
# (agent to store). "pending" in PENDING_SQL counts published token and
# client actions of the period that no agent has acknowledged yet.
LATENCY_SQL = """
SELECT
    agent_id,
    count() AS receipts,
    round(quantile(0.5)(latency_ms) / 1000, 3) AS p50_s,
    round(quantile(0.99)(latency_ms) / 1000, 3) AS p99_s,
    round(max(latency_ms) / 1000, 3) AS max_s,
    round(quantile(0.99)(delay_ms) / 1000, 3) AS receipt_delay_p99_s,
    max(applied_at) AS last_applied_at
FROM
(
    SELECT
        agent_id,
        applied_at,
        toUnixTimestamp64Milli(applied_at) - toUnixTimestamp64Milli(issued_at) AS latency_ms,
        toUnixTimestamp64Milli(received_at) - toUnixTimestamp64Milli(applied_at) AS delay_ms
    FROM {database}.receipts_final
    WHERE applied_at >= now64(3) - toIntervalHour({hours})
)
GROUP BY agent_id
ORDER BY agent_id
"""

PENDING_SQL = """
SELECT count() AS pending
FROM {database}.actions_final AS a
WHERE a.published = 1
  AND a.kind != 'alert'
  AND a.issued_at >= now64(3) - toIntervalHour({hours})
  AND a.action_id NOT IN (SELECT action_id FROM {database}.receipts_final)
"""


def record_receipts(store: Any, receipts: Sequence[ActionReceipt], received_at: float | None = None) -> int:
    """Write receipts to the audit store's ``receipts`` table; return the row count."""
    if not receipts:
        return 0
    return store.write_receipts(list(receipts), time.time() if received_at is None else received_at)


def parse_receipt(value: bytes | None) -> ActionReceipt:
    """Decode one receipt message value; raise ``ValueError`` naming the problem."""
    try:
        return ActionReceipt.model_validate(decode_json(value))
    except ValidationError as exc:
        raise ValueError(f"invalid receipt: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None


def receipt_summary(store: Any, hours: float = 24.0) -> tuple[list[str], list[tuple], int]:
    """Return per-agent latency rows (columns, rows) and the count of unacknowledged actions."""
    hours_text = f"{float(hours):g}"
    columns, rows = store.query(LATENCY_SQL.format(database=store.database, hours=hours_text))
    _, pending_rows = store.query(PENDING_SQL.format(database=store.database, hours=hours_text))
    pending = int(pending_rows[0][0]) if pending_rows else 0
    return columns, rows, pending


async def collect_receipts(
    kafka: Any,
    store: Any,
    stop: asyncio.Event,
    group_id: str | None = None,
    stop_after: int | None = None,
) -> int:
    """Consume the receipt topic into the store until ``stop`` is set; return the receipts stored.

    With ``stop_after``, also return once that many receipts are stored.

    Offsets are committed after each stored batch, so a crash re-delivers
    at most one batch, which the ``receipts`` table collapses by
    ``(action_id, agent_id)``.
    """
    await ensure_enforcement_topics(kafka)
    consumer = AIOKafkaConsumer(
        kafka.receipt_topic,
        **client_options(kafka),
        group_id=group_id or f"{kafka.group_id}-receipts",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    stored = 0
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            receipts = []
            for records in batch.values():
                for record in records:
                    try:
                        receipts.append(parse_receipt(record.value))
                    except ValueError as exc:
                        logger.warning("skipped receipt at partition %d offset %d: %s", record.partition, record.offset, exc)
            if receipts:
                stored += await asyncio.to_thread(record_receipts, store, receipts)
            if batch:
                await consumer.commit()
            if stop_after is not None and stored >= stop_after:
                break
    finally:
        await consumer.stop()
    return stored
