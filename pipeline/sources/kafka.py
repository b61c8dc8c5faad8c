"""Kafka source: a consumer-group member whose records become one ``LineBatch`` per partition.

One record is one log line: its value is the line (a trailing ``\\n`` or
``\\r\\n`` is removed), and a record without a value becomes an empty line,
which the parser dead-letters. The batch's ``source`` is the topic and its
positions are the record offsets, so event ids derived from them are stable
across redeliveries.

Offsets are never committed automatically: ``pipeline.worker`` commits them
after the batch's writes are acknowledged. A group without committed
offsets starts at the earliest retained record (``auto_offset_reset``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord

from pipeline.config import KafkaSettings
from pipeline.kafka_admin import client_options
from pipeline.sources.base import LineBatch

logger = logging.getLogger(__name__)

# A member that does not rejoin within this time during a rebalance is
# dropped from the group. The worker finishes its in-flight batch and writes
# checkpoints while partitions are revoked, which can take longer than
# aiokafka's default (the session timeout, 10 s).
REBALANCE_TIMEOUT_MS = 60_000


def build_consumer(
    kafka: KafkaSettings,
    *,
    group_id: str,
    max_records: int,
    max_poll_interval_ms: int = 300_000,
) -> AIOKafkaConsumer:
    """Return an unstarted group consumer with manual commits; ``subscribe`` it with a listener."""
    return AIOKafkaConsumer(
        **client_options(kafka),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=max_records,
        max_poll_interval_ms=max_poll_interval_ms,
        rebalance_timeout_ms=REBALANCE_TIMEOUT_MS,
    )


def subscribe(consumer: AIOKafkaConsumer, topics: Sequence[str], listener: ConsumerRebalanceListener) -> None:
    """Subscribe ``consumer`` to ``topics``; ``listener`` is called on every rebalance."""
    consumer.subscribe(topics=list(topics), listener=listener)


def line_batch(partition: TopicPartition, records: Sequence[ConsumerRecord]) -> LineBatch:
    """Return the records of one partition as a ``LineBatch`` in offset order."""
    lines = [_line(record.value) for record in records]
    return LineBatch(
        source=partition.topic,
        partition=partition.partition,
        lines=lines,
        positions=[record.offset for record in records],
        size_bytes=sum(len(record.value) if record.value is not None else 0 for record in records),
    )


def line_batches(records: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> dict[TopicPartition, LineBatch]:
    """Return one ``LineBatch`` per partition of a ``getmany`` result, skipping empty partitions."""
    return {partition: line_batch(partition, batch) for partition, batch in records.items() if batch}


def _line(value: bytes | None) -> bytes:
    if value is None:
        return b""
    if value.endswith(b"\n"):
        value = value[:-1]
    if value.endswith(b"\r"):
        value = value[:-1]
    return value
