"""Kafka sinks: actions and dead letters published with an idempotent producer.

``Pipeline.process`` runs in a worker thread, and the aiokafka producer
runs on the event loop. ``ProducerBridge.publish`` hands the messages to
the loop and blocks the calling thread until the broker acknowledged every
one of them (``acks='all'``), as the ``ActionSink`` contract requires.

Action topic records (see ``action_message``):

- key: the action's subject (a token id such as ``tk_…``, a key id, or a
  client IP or CIDR). The topic is compacted, so the latest record per key
  is the current decision for that subject, and all records of one subject
  stay in order in one partition. Alerts use the key ``alert:<subject>``:
  they change no enforcement state, and under the subject's key a later
  alert would compact away an active throttle or revoke.
- value: the ``Action`` as JSON.
- headers: ``action_id``, ``kind`` and ``schema_version``.

Delivery is at-least-once: after a crash the same action can be published
again, always with the same ``action_id``. Consumers must skip an
``action_id`` they already applied.

Dead-letter records: the value is the rejected record with credentials
scrubbed, the key is ``<topic>/<partition>`` of the source record, and the
headers carry ``reason``, ``stage``, ``format``, ``source_topic``,
``source_partition`` and ``source_offset``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError

from pipeline.config import KafkaSettings
from pipeline.errors import PublishError
from pipeline.kafka_admin import client_options
from schemas.actions import Action, ActionKind
from schemas.deadletters import DeadLetter

logger = logging.getLogger(__name__)

# Upper bound on one publish call seen from the pipeline thread. The producer
# fails a batch on its own after request_timeout_ms (aiokafka default 40 s),
# so this only guards against a stuck event loop.
PUBLISH_TIMEOUT_S = 120.0
ALERT_KEY_PREFIX = "alert:"


class PublishRejectedError(PublishError):
    """The broker rejected a record for good (too large, not authorized, producer fenced)."""

    retriable = False


@dataclass(frozen=True, slots=True)
class Message:
    """One record to publish."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def build_producer(kafka: KafkaSettings, *, linger_ms: int = 5) -> AIOKafkaProducer:
    """Return an unstarted idempotent producer that waits for all in-sync replicas (``acks='all'``)."""
    return AIOKafkaProducer(
        **client_options(kafka),
        enable_idempotence=True,
        acks="all",
        linger_ms=linger_ms,
    )


def is_retriable_kafka_error(exc: BaseException) -> bool:
    """Return True when a later send may succeed: timeouts, lost connections, leader changes."""
    return isinstance(exc, KafkaTimeoutError) or (isinstance(exc, KafkaError) and exc.retriable)


class ProducerBridge:
    """Publishes messages on the event loop that owns ``producer``, from any other thread.

    Create it on the loop's thread: that thread may only use ``send_all``.
    """

    def __init__(self, producer: AIOKafkaProducer, loop: asyncio.AbstractEventLoop) -> None:
        self.producer = producer
        self.loop = loop
        self._loop_thread = threading.get_ident()

    def publish(self, messages: Sequence[Message]) -> None:
        """Send ``messages`` and return once the broker acknowledged all of them.

        Call it from a thread other than the loop's. Messages are sent in
        order, so records of one key keep their order.

        Raises:
            PublishError: a send failed for a reason that may pass (broker
                down, timeout, leader change); retry the call.
            PublishRejectedError: the broker rejected a record for good.
            RuntimeError: called from the event loop's own thread.
        """
        if not messages:
            return
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("ProducerBridge.publish blocks; call it from a worker thread, or await send_all on the loop")
        future = asyncio.run_coroutine_threadsafe(self.send_all(messages), self.loop)
        try:
            future.result(timeout=PUBLISH_TIMEOUT_S)
        except TimeoutError:
            future.cancel()
            raise PublishError(
                f"publishing {len(messages)} records to {messages[0].topic} timed out after {PUBLISH_TIMEOUT_S:g} s"
            ) from None

    async def send_all(self, messages: Sequence[Message]) -> None:
        """Send ``messages`` and wait until every one is acknowledged (coroutine form of ``publish``)."""
        deliveries = []
        try:
            for message in messages:
                deliveries.append(
                    await self.producer.send(message.topic, message.value, key=message.key, headers=message.headers)
                )
        except KafkaError as exc:
            # Let the records already queued finish, so none is left behind unobserved.
            await asyncio.gather(*deliveries, return_exceptions=True)
            raise _publish_error(exc, messages[0].topic, len(messages)) from exc
        results = await asyncio.gather(*deliveries, return_exceptions=True)
        failures = [result for result in results if isinstance(result, BaseException)]
        if failures:
            first = failures[0]
            if not isinstance(first, KafkaError):
                raise first
            raise _publish_error(first, messages[0].topic, len(failures)) from first


def _publish_error(exc: KafkaError, topic: str, count: int) -> PublishError:
    text = f"publishing {count} records to topic {topic} failed: {type(exc).__name__}: {exc}"
    if is_retriable_kafka_error(exc):
        return PublishError(text)
    return PublishRejectedError(f"{text}; the broker will not accept them on retry, check the topic and ACLs")


def action_key(action: Action) -> bytes:
    """Return the record key of an action: its subject, or ``alert:<subject>`` for alerts."""
    if action.kind is ActionKind.ALERT:
        return (ALERT_KEY_PREFIX + action.subject).encode()
    return action.subject.encode()


def action_message(topic: str, action: Action) -> Message:
    """Return the action topic record of ``action`` (key, JSON value, headers)."""
    return Message(
        topic=topic,
        key=action_key(action),
        value=action.model_dump_json().encode(),
        headers=[
            ("action_id", action.action_id.encode()),
            ("kind", action.kind.value.encode()),
            ("schema_version", str(action.schema_version).encode()),
        ],
    )


def dead_letter_message(topic: str, letter: DeadLetter) -> Message:
    """Return the dead-letter topic record of ``letter``: the scrubbed raw record with its context in headers."""
    return Message(
        topic=topic,
        key=f"{letter.source}/{letter.partition}".encode(),
        value=letter.raw.encode("utf-8", "surrogateescape"),
        headers=[
            ("reason", letter.reason.encode()),
            ("stage", letter.stage.encode()),
            ("format", letter.format.encode()),
            ("source_topic", letter.source.encode()),
            ("source_partition", str(letter.partition).encode()),
            ("source_offset", str(letter.offset).encode()),
            ("schema_version", str(letter.schema_version).encode()),
        ],
    )


class KafkaActionSink:
    """Publishes live actions to the action topic; ``publish`` returns once all are acknowledged."""

    sink_id = "kafka_actions"

    def __init__(self, bridge: ProducerBridge, topic: str) -> None:
        self.bridge = bridge
        self.topic = topic

    def publish(self, actions: list[Action]) -> None:
        self.bridge.publish([action_message(self.topic, action) for action in actions])

    def close(self) -> None:
        """Do nothing: the worker owns the producer and stops it after the last batch."""


class KafkaDeadLetterSink:
    """Publishes dead letters to the dead-letter topic; ``publish`` returns once all are acknowledged."""

    sink_id = "kafka_dead_letters"

    def __init__(self, bridge: ProducerBridge, topic: str) -> None:
        self.bridge = bridge
        self.topic = topic

    def publish(self, letters: list[DeadLetter]) -> None:
        self.bridge.publish([dead_letter_message(self.topic, letter) for letter in letters])

    def close(self) -> None:
        """Do nothing: the worker owns the producer and stops it after the last batch."""
