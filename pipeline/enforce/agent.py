"""The enforcement agent: action topic in, gateway configuration and receipts out.

The agent assigns itself every partition of the action topic, without a
consumer group, and reads from the beginning, so each start rebuilds the
full state from the compacted topic. Each message is checked before use:

- its signature must verify against the keyring (unsigned messages pass
  only with ``require_signatures=False``);
- it must be a valid ``Action`` addressed consistently;
- throttles, blocks and revokes whose ``expires_at`` has passed on the
  agent's wall clock are ignored.

Rejected messages are logged with their action id and never applied.
A change is rendered ``debounce_s`` after it arrives, and renders are at
least ``min_render_interval_s`` apart. Once the gateway
serves the new configuration, the agent sends one receipt per applied
action on the receipt topic and writes its status file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from pipeline.enforce.renderers import Renderer, RenderError
from pipeline.enforce.state import DecisionTable
from pipeline.enforce.topics import client_options, decode_json, ensure_enforcement_topics, receipt_message
from pipeline.kafka_admin import MissingTopicError, topic_partitions
from pipeline.sinks.kafka import build_producer
from pipeline.signing import Keyring, verify
from schemas.actions import Action, ActionReceipt

logger = logging.getLogger(__name__)

STATUS_FILE_NAME = "agent-status.json"
RECEIPTS_SENT_FILE_NAME = "receipts-sent.txt"
_RECEIPTS_SENT_LIMIT = 100_000
_RENDER_RETRY_S = 5.0
_POLL_MS = 500


@dataclass(slots=True)
class AgentCounters:
    """Message counts since the agent started."""

    received: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected_signature: int = 0
    rejected_invalid: int = 0
    expired: int = 0
    ignored: int = 0
    tombstones: int = 0
    renders: int = 0
    render_failures: int = 0
    receipts_sent: int = 0


class EnforcementAgent:
    """Keeps a gateway in line with the action topic. Run with ``await agent.run(stop_event)``."""

    def __init__(
        self,
        *,
        kafka: Any,
        keyring: Keyring,
        renderer: Renderer,
        agent_id: str,
        state_dir: Path,
        require_signatures: bool = True,
        send_receipts: bool = True,
        debounce_s: float = 0.1,
        min_render_interval_s: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kafka = kafka
        self.keyring = keyring
        self.renderer = renderer
        self.agent_id = agent_id
        self.state_dir = state_dir
        self.require_signatures = require_signatures
        self.send_receipts = send_receipts
        self.debounce_s = debounce_s
        self.min_render_interval_s = min_render_interval_s
        self.clock = clock
        self.table = DecisionTable()
        self.counters = AgentCounters()
        self.caught_up = False
        self.started_at = clock()
        self.positions: dict[int, int] = {}
        self._pending: dict[str, Action] = {}
        self._dirty_since: float | None = None
        self._last_render = 0.0
        self._render_retry_at = 0.0
        self._scheduled_change: float | None = None
        self._unsent: list[ActionReceipt] = []
        self._receipt_retry_at = 0.0
        self._receipts_sent = _load_receipts_sent(state_dir / RECEIPTS_SENT_FILE_NAME)
        self._unsigned_warned = False

    # ---- main loop -------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume the action topic until ``stop`` is set; raise ``KafkaError`` on a broker failure."""
        stop = stop or asyncio.Event()
        await ensure_enforcement_topics(self.kafka)
        consumer = AIOKafkaConsumer(
            **client_options(self.kafka),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
        )
        producer = None
        await consumer.start()
        try:
            if self.send_receipts:
                producer = build_producer(self.kafka, linger_ms=0)
                await producer.start()
            partitions = await self._assign(consumer)
            end_offsets = await consumer.end_offsets(partitions)
            logger.info(
                "agent %s reading %s from the beginning (%d partitions, %d messages to catch up)",
                self.agent_id,
                self.kafka.action_topic,
                len(partitions),
                sum(end_offsets.values()),
            )
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=self._poll_timeout_ms(), max_records=1000)
                for partition, records in batch.items():
                    for record in records:
                        self.handle_message(record.key, record.value, partition.partition, record.offset)
                        self.positions[partition.partition] = record.offset + 1
                if not self.caught_up and await _reached(consumer, end_offsets):
                    self._finish_catch_up()
                await self.tick(producer)
        finally:
            if producer is not None:
                await producer.stop()
            await consumer.stop()
            self.write_status()
            logger.info("agent %s stopped; holding %s", self.agent_id, self.table.summary(self.clock()))

    async def _assign(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        topic = self.kafka.action_topic
        partition_ids = await topic_partitions(self.kafka, topic)
        if not partition_ids:
            raise MissingTopicError(f"action topic {topic} not found on {self.kafka.bootstrap_servers}; create it or set kafka.create_topics")
        partitions = [TopicPartition(topic, partition) for partition in partition_ids]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        return partitions

    def _poll_timeout_ms(self) -> int:
        now = self.clock()
        wake = [now + _POLL_MS / 1000]
        if self._dirty_since is not None:
            wake.append(max(self._dirty_since + self.debounce_s, self._last_render + self.min_render_interval_s, self._render_retry_at))
        if self._scheduled_change is not None:
            wake.append(self._scheduled_change)
        return max(1, int((min(wake) - now) * 1000))

    def _finish_catch_up(self) -> None:
        self.caught_up = True
        now = self.clock()
        logger.info(
            "agent %s rebuilt state from %d messages on %s: %s; ignored: %d expired, %d bad signature, %d invalid",
            self.agent_id,
            self.counters.received,
            self.kafka.action_topic,
            ", ".join(f"{name}={count}" for name, count in self.table.summary(now).items()),
            self.counters.expired,
            self.counters.rejected_signature,
            self.counters.rejected_invalid,
        )
        if self._dirty_since is None:
            self._dirty_since = now

    # ---- messages -------------------------------------------------------------

    def handle_message(self, key: bytes | None, value: bytes | None, partition: int = -1, offset: int = -1) -> None:
        """Verify and apply one action message; log and drop it when it fails a check."""
        self.counters.received += 1
        if value is None:
            self._handle_tombstone(key)
            return
        try:
            data = decode_json(value)
        except ValueError as exc:
            self.counters.rejected_invalid += 1
            logger.warning("rejected message at partition %d offset %d: %s", partition, offset, exc)
            return
        action_id = data.get("action_id", "?") if isinstance(data, dict) else "?"
        if not isinstance(data, dict):
            self.counters.rejected_invalid += 1
            logger.warning("rejected message at partition %d offset %d: not a JSON object", partition, offset)
            return
        if not self._signature_ok(data, action_id):
            return
        try:
            action = Action.model_validate(data)
        except ValidationError as exc:
            self.counters.rejected_invalid += 1
            logger.warning("rejected action %s: invalid message: %s", action_id, exc.errors()[0]["msg"])
            return
        self.apply_action(action)

    def _signature_ok(self, data: dict[str, Any], action_id: str) -> bool:
        if not data.get("signature"):
            if not self.require_signatures:
                if not self._unsigned_warned:
                    logger.warning("applying unsigned actions: signatures are not required on this agent")
                    self._unsigned_warned = True
                return True
            self.counters.rejected_signature += 1
            logger.warning("rejected action %s: unsigned; only signed actions are applied", action_id)
            return False
        if data.get("key_id") not in self.keyring:
            self.counters.rejected_signature += 1
            logger.warning("rejected action %s: unknown signing key %r (forged, or the keyring is out of date)", action_id, data.get("key_id"))
            return False
        if not verify(data, self.keyring):
            self.counters.rejected_signature += 1
            logger.warning("rejected action %s: signature does not match key %s (forged or altered)", action_id, data.get("key_id"))
            return False
        return True

    def apply_action(self, action: Action) -> None:
        """Apply a verified action to the decision table and queue its receipt."""
        now = self.clock()
        outcome = self.table.apply(action, now)
        if outcome.status == "applied":
            self.counters.applied += 1
            logger.info("applied %s %s for %s (%s)", action.kind.value, action.action_id, action.subject, outcome.detail)
            if action.action_id not in self._receipts_sent:
                self._pending[action.action_id] = action
            if self._dirty_since is None:
                self._dirty_since = now
        elif outcome.status == "duplicate":
            self.counters.duplicates += 1
        elif outcome.detail.startswith("expired"):
            self.counters.expired += 1
            logger.info("ignored action %s for %s: %s", action.action_id, action.subject, outcome.detail)
        elif outcome.detail.startswith("invalid"):
            self.counters.rejected_invalid += 1
            logger.warning("rejected action %s: %s", action.action_id, outcome.detail)
        else:
            self.counters.ignored += 1
            logger.debug("ignored action %s: %s", action.action_id, outcome.detail)

    def _handle_tombstone(self, key: bytes | None) -> None:
        self.counters.tombstones += 1
        if key is None:
            return
        subject = key.decode("utf-8", "replace")
        if self.table.remove(subject):
            logger.info("tombstone for %s: decision dropped", subject)
            if self._dirty_since is None:
                self._dirty_since = self.clock()

    # ---- rendering and receipts -------------------------------------------------

    async def tick(self, producer: AIOKafkaProducer | None) -> None:
        """Drop expired decisions, render when due, then send receipts for what is in force."""
        now = self.clock()
        expired = self.table.expire(now)
        for decision in expired:
            logger.info("%s %s for %s expired", decision.kind.value, decision.action_id, decision.subject)
        starts = self._scheduled_change is not None and now >= self._scheduled_change
        if expired or starts:
            self._scheduled_change = None
            self._dirty_since = self._dirty_since or now
        if producer is not None and self._unsent and now >= self._receipt_retry_at:
            await self._send_receipts(producer, self._unsent)
        if not self.caught_up or self._dirty_since is None:
            return
        if now < self._dirty_since + self.debounce_s or now < self._last_render + self.min_render_interval_s:
            return
        if now < self._render_retry_at:
            return
        await self._render(producer)

    async def _render(self, producer: AIOKafkaProducer | None) -> None:
        now = self.clock()
        decisions = self.table.in_force(now)
        try:
            changed = await asyncio.to_thread(self.renderer.apply, decisions)
        except RenderError as exc:
            self.counters.render_failures += 1
            self._render_retry_at = self.clock() + _RENDER_RETRY_S
            logger.error("rendering %d decisions failed, retrying in %.0f s: %s", len(decisions), _RENDER_RETRY_S, exc)
            return

        applied_at = self.clock()
        self._last_render = applied_at
        self._dirty_since = None
        self._scheduled_change = self.table.next_change(applied_at)
        if changed:
            self.counters.renders += 1
            logger.info("gateway now enforces %d decisions (generation %s)", len(decisions), getattr(self.renderer, "generation", ""))

        receipts = [
            ActionReceipt(
                agent_id=self.agent_id,
                action_id=action.action_id,
                kind=action.kind,
                subject=action.subject,
                issued_at=action.issued_at,
                applied_at=applied_at,
            )
            for action in self._pending.values()
        ]
        self._pending.clear()
        if producer is not None and receipts:
            await self._send_receipts(producer, receipts)
        self.write_status()

    async def _send_receipts(self, producer: AIOKafkaProducer, receipts: list[ActionReceipt]) -> None:
        """Send receipts; on a broker error keep them and retry from ``tick``."""
        try:
            futures = []
            for receipt in receipts:
                key, value = receipt_message(receipt)
                futures.append(await producer.send(self.kafka.receipt_topic, key=key, value=value))
            await asyncio.gather(*futures)
        except KafkaError as exc:
            queued = {receipt.action_id for receipt in self._unsent}
            self._unsent.extend(receipt for receipt in receipts if receipt.action_id not in queued)
            self._receipt_retry_at = self.clock() + _RENDER_RETRY_S
            logger.error("sending %d receipts to %s failed, retrying in %.0f s: %s", len(receipts), self.kafka.receipt_topic, _RENDER_RETRY_S, exc)
            return
        sent = {receipt.action_id for receipt in receipts}
        self._unsent = [r for r in self._unsent if r.action_id not in sent]
        self.counters.receipts_sent += len(receipts)
        self._remember_receipts([receipt.action_id for receipt in receipts])

    def _remember_receipts(self, action_ids: list[str]) -> None:
        for action_id in action_ids:
            self._receipts_sent[action_id] = None
        path = self.state_dir / RECEIPTS_SENT_FILE_NAME
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if len(self._receipts_sent) > 2 * _RECEIPTS_SENT_LIMIT:
            kept = list(self._receipts_sent)[-_RECEIPTS_SENT_LIMIT:]
            self._receipts_sent = dict.fromkeys(kept)
            path.write_text("".join(f"{action_id}\n" for action_id in kept), encoding="utf-8")
            return
        with path.open("a", encoding="utf-8") as handle:
            handle.write("".join(f"{action_id}\n" for action_id in action_ids))

    # ---- status ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Return the agent's decisions, counters and positions, as written to the status file."""
        now = self.clock()
        return {
            "agent_id": self.agent_id,
            "topic": self.kafka.action_topic,
            "bootstrap_servers": self.kafka.bootstrap_servers,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "updated_at": now,
            "caught_up": self.caught_up,
            "positions": {str(partition): offset for partition, offset in sorted(self.positions.items())},
            "generation": getattr(self.renderer, "generation", ""),
            "summary": self.table.summary(now),
            "counters": asdict(self.counters),
            "decisions": [decision.to_json() for decision in sorted(self.table.decisions.values(), key=lambda d: d.subject)],
        }

    def write_status(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / STATUS_FILE_NAME
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(self.status(), indent=1) + "\n", encoding="utf-8")
        os.replace(temporary, path)


async def _reached(consumer: AIOKafkaConsumer, end_offsets: dict[TopicPartition, int]) -> bool:
    """Return True when the consumer's position is at or past ``end_offsets`` on every partition."""
    for partition, end in end_offsets.items():
        if await consumer.position(partition) < end:
            return False
    return True


def _load_receipts_sent(path: Path) -> dict[str, None]:
    """Return the action ids this agent already sent receipts for (an ordered set)."""
    try:
        lines = path.read_text(encoding="utf-8").split()
    except FileNotFoundError:
        return {}
    return dict.fromkeys(lines[-_RECEIPTS_SENT_LIMIT:])
