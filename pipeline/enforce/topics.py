"""Kafka plumbing for enforcement: the action and receipt topics.

Topic layout, client options and record keys come from
``pipeline.kafka_admin`` and ``pipeline.sinks.kafka``, so manual actions and
agents use the same compacted, subject-keyed action topic as the worker.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from aiokafka.errors import KafkaError

from pipeline.errors import PublishError
from pipeline.kafka_admin import client_options, ensure_topics, topic_specs
from pipeline.sinks.kafka import action_message, build_producer
from schemas.actions import Action, ActionReceipt

__all__ = [
    "client_options",
    "decode_json",
    "ensure_enforcement_topics",
    "publish_actions",
    "publish_actions_async",
    "receipt_message",
]


async def ensure_enforcement_topics(kafka: Any) -> None:
    """Check (and, with ``kafka.create_topics``, create) the action and receipt topics."""
    specs = [spec for spec in topic_specs(kafka, log_topics=()) if spec.role in ("action", "receipt")]
    await ensure_topics(kafka, specs)


def receipt_message(receipt: ActionReceipt) -> tuple[bytes, bytes]:
    """Return key (the action id) and value (JSON) of a receipt record."""
    return receipt.action_id.encode(), receipt.model_dump_json().encode()


async def publish_actions_async(kafka: Any, actions: Sequence[Action]) -> None:
    """Publish actions to the action topic with an idempotent producer (acks=all) and wait for the acks."""
    await ensure_enforcement_topics(kafka)
    producer = build_producer(kafka, linger_ms=0)
    try:
        await producer.start()
        futures = []
        for action in actions:
            message = action_message(kafka.action_topic, action)
            futures.append(await producer.send(message.topic, message.value, key=message.key, headers=message.headers))
        await asyncio.gather(*futures)
    except KafkaError as exc:
        raise PublishError(
            f"publishing {len(actions)} actions to {kafka.action_topic} on {kafka.bootstrap_servers} failed: {exc}"
        ) from exc
    finally:
        await producer.stop()


def publish_actions(kafka: Any, actions: Sequence[Action]) -> None:
    """Blocking wrapper of ``publish_actions_async`` for commands."""
    asyncio.run(publish_actions_async(kafka, actions))


def decode_json(value: bytes | None) -> Any:
    """Decode a JSON record value; raise ``ValueError`` with the reason when it is not JSON."""
    if value is None:
        raise ValueError("record has no value")
    try:
        return json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"value is not JSON: {exc}") from None
