"""``tokensentry actions``: print the actions on the action topic.

Reads every partition without joining a consumer group, so it commits no
offsets and disturbs no worker. Each ``action_id`` is printed once: the
topic is at-least-once, and a redelivered batch can repeat an action with
the same id.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import UTC, datetime
from typing import TextIO

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from pipeline.commands.common import add_settings_arguments, settings_from_args
from pipeline.config import KafkaSettings
from pipeline.kafka_admin import KafkaUnavailableError, MissingTopicError, action_topic_spec, client_options, topic_partitions
from schemas.actions import Action

logger = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 500


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "actions",
        help="print the actions on the action topic",
        description="Print the action topic, one line per action: issue time (event time, UTC), kind, subject, "
        "rate limit, expiry and reason. Reads from the beginning and stops at the end of the topic; with "
        "--follow it keeps printing new actions until interrupted. Repeated deliveries of one action_id are "
        "printed once.",
    )
    parser.add_argument("--follow", action="store_true", help="keep waiting for new actions (stop with Ctrl-C)")
    parser.add_argument(
        "--from-beginning",
        action="store_true",
        help="with --follow, print the actions already on the topic first; without --follow they are always printed",
    )
    parser.add_argument("--json", action="store_true", help="print each action as its raw JSON value, one per line")
    parser.add_argument("--topic", help="action topic to read (default: kafka.action_topic)")
    parser.add_argument("--bootstrap-servers", metavar="HOST:PORT[,...]", help="brokers to connect to (env: TOKENSENTRY_KAFKA__BOOTSTRAP_SERVERS)")
    add_settings_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = {
        name: value
        for name, value in {"bootstrap_servers": args.bootstrap_servers, "action_topic": args.topic}.items()
        if value is not None
    }
    settings = settings_from_args(args, kafka=overrides or None)
    from_beginning = args.from_beginning or not args.follow
    asyncio.run(print_actions(settings.kafka, follow=args.follow, from_beginning=from_beginning, raw_json=args.json, out=sys.stdout))
    return 0


async def print_actions(kafka: KafkaSettings, *, follow: bool, from_beginning: bool, raw_json: bool, out: TextIO) -> int:
    """Print the action topic to ``out`` and return the number of actions printed."""
    consumer = AIOKafkaConsumer(**client_options(kafka), group_id=None, enable_auto_commit=False)
    try:
        await consumer.start()
    except KafkaError as exc:
        raise KafkaUnavailableError(f"cannot connect to Kafka at {kafka.bootstrap_servers}: {exc}") from None
    try:
        partitions = await _assign_all(consumer, kafka)
        if from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            await consumer.seek_to_end(*partitions)
        end_offsets = await consumer.end_offsets(partitions)
        seen: set[str] = set()
        printed = 0
        while follow or not await _reached(consumer, end_offsets):
            batches = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
            for records in batches.values():
                for record in records:
                    printed += _print_record(record, seen, raw_json, out)
            out.flush()
        return printed
    finally:
        await consumer.stop()


async def _assign_all(consumer: AIOKafkaConsumer, kafka: KafkaSettings) -> list[TopicPartition]:
    topic = kafka.action_topic
    ids = await topic_partitions(kafka, topic)
    if not ids:
        raise MissingTopicError(
            f"action topic {topic!r} does not exist at {kafka.bootstrap_servers}; `tokensentry run` creates it, "
            f"or create it with: {action_topic_spec(kafka).create_command(kafka.bootstrap_servers)}"
        )
    partitions = [TopicPartition(topic, partition) for partition in ids]
    consumer.assign(partitions)
    return partitions


async def _reached(consumer: AIOKafkaConsumer, end_offsets: dict[TopicPartition, int]) -> bool:
    for partition, end in end_offsets.items():
        if await consumer.position(partition) < end:
            return False
    return True


def _print_record(record, seen: set[str], raw_json: bool, out: TextIO) -> int:
    """Print one record unless its action_id was printed before; return 1 when printed."""
    try:
        action = Action.model_validate_json(record.value or b"")
    except ValidationError as exc:
        print(
            f"tokensentry actions: skipped {record.topic}/{record.partition} offset {record.offset}: "
            f"not a valid action ({exc.error_count()} errors, first: {exc.errors()[0]['msg']})",
            file=sys.stderr,
        )
        return 0
    if action.action_id in seen:
        return 0
    seen.add(action.action_id)
    if raw_json:
        out.write(record.value.decode("utf-8", "replace") + "\n")
    else:
        out.write(format_action(action) + "\n")
    return 1


def format_action(action: Action) -> str:
    """Return one line: issue time, kind, subject, limit, expiry and reason."""
    limit = f"{action.limit_rps:g}/s" if action.limit_rps is not None else "-"
    expiry = _utc(action.expires_at) if action.expires_at else "never"
    dry_run = " (dry run)" if action.dry_run else ""
    return f"{_utc(action.issued_at)}  {action.kind.value:<8}  {action.subject}  limit={limit}  expires={expiry}  {action.reason}{dry_run}"


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
