"""``tokensentry produce``: feed an access-log file into a Kafka log topic, keyed by token.

Each line becomes one record keyed by the subject the pipeline will
profile the request under. The key comes from the same parser and
``pipeline.identity`` rules: ``key:<id>`` when the gateway logged a key id,
``tk_…`` (the keyed hash of the credential) when the line carries one, else
``ip:<client address>``. Lines the parser rejects get no key, so the
producer spreads them over the partitions, and the pipeline dead-letters them.

The ``tk_`` ids are keyed with the same secret as the workers' (the
``--data-dir`` secret file or ``TOKENSENTRY_HASH_SECRET``), so record keys
equal the token ids in the audit store. Partitioning only needs every
producer of a topic to use one secret: otherwise one token's lines land in
several partitions (see ``pipeline.worker`` for what that costs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError

from pipeline.assemble import load_hasher
from pipeline.commands.common import add_settings_arguments, load_mapping, settings_from_args
from pipeline.config import Settings
from pipeline.identity import identify
from pipeline.kafka_admin import KafkaUnavailableError, ensure_topics, log_topic_spec
from pipeline.parsers import FORMAT_IDS, LineParser
from pipeline.sinks.kafka import build_producer
from pipeline.sources.base import LineBatch
from pipeline.sources.files import check_readable, read_batches

logger = logging.getLogger(__name__)

# Records sent but not yet acknowledged before produce waits for them; bounds memory.
MAX_UNACKNOWLEDGED = 20_000
# With a rate limit, sleep only when this far ahead of schedule, seconds.
PACING_SLACK_S = 0.005
READ_BATCH_LINES = 5_000


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "produce",
        help="feed an access-log file into a Kafka log topic, keyed by token",
        description="Send each line of a log file (plain, gzip, or - for stdin) as one record to a Kafka log topic, "
        "keyed by the subject the pipeline profiles it under (key id, keyed token hash tk_..., or client IP), "
        "as a gateway would. Blank lines are skipped. Creates the topic when it is missing and kafka.create_topics "
        "is true.",
    )
    parser.add_argument("file", metavar="FILE", help="log file, gzip file, or - for stdin")
    parser.add_argument("--topic", help="log topic to write to (default: the first of kafka.topics)")
    parser.add_argument(
        "--rate",
        type=_non_negative_float,
        default=0.0,
        metavar="LINES_PER_S",
        help="send at most this many lines per second; 0 sends as fast as possible (default 0)",
    )
    parser.add_argument("--bootstrap-servers", metavar="HOST:PORT[,...]", help="brokers to connect to (env: TOKENSENTRY_KAFKA__BOOTSTRAP_SERVERS)")
    parser.add_argument("--format", choices=FORMAT_IDS, help="log format used to find the key (default: detect)")
    parser.add_argument("--mapping", type=Path, help="JSON field mapping for --format json")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    add_settings_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = {"bootstrap_servers": args.bootstrap_servers} if args.bootstrap_servers else None
    settings = settings_from_args(args, kafka=overrides)
    check_readable(args.file)
    topic = args.topic or settings.kafka.topics[0]
    keyer = SubjectKeyer(settings, args.format, load_mapping(args.mapping))
    summary = asyncio.run(produce_file(settings, args.file, topic, args.rate, keyer))
    if args.json:
        print(json.dumps(summary))
    else:
        width = max(len(key) for key in summary)
        for key, value in summary.items():
            if isinstance(value, dict):
                value = ", ".join(f"{name}={count}" for name, count in sorted(value.items())) or "-"
            print(f"{key:<{width}}  {value}")
    return 0


class SubjectKeyer:
    """Derives record keys from log lines with the pipeline's parser and identity rules."""

    def __init__(self, settings: Settings, log_format: str | None, mapping: dict[str, str] | None) -> None:
        self.parser = LineParser(format=log_format, mapping=mapping)
        self.hasher = load_hasher(settings)

    def keys(self, batch: LineBatch) -> list[bytes | None]:
        """Return one key per line of ``batch``: the subject id, or None for a line that does not parse."""
        chunk = self.parser.parse(batch.lines, batch.positions)
        events = identify(chunk, self.hasher, batch.source)
        subjects = dict(zip(events["offset"].tolist(), events["subject_id"].tolist(), strict=True))
        return [subject.encode() if (subject := subjects.get(position)) else None for position in batch.positions]


async def produce_file(settings: Settings, path: str, topic: str, rate: float, keyer: SubjectKeyer) -> dict[str, Any]:
    """Send every non-blank line of ``path`` to ``topic`` and return the summary."""
    kafka = settings.kafka
    await ensure_topics(kafka, [log_topic_spec(kafka, topic)])
    producer = build_producer(kafka, linger_ms=20)
    try:
        await producer.start()
    except KafkaError as exc:
        raise KafkaUnavailableError(f"cannot connect to Kafka at {kafka.bootstrap_servers}: {exc}") from None

    partitions: Counter[int] = Counter()
    key_kinds: Counter[str] = Counter()
    produced = 0
    skipped = 0
    unacknowledged: list[asyncio.Future] = []
    started = time.perf_counter()
    try:
        for batch in read_batches(path, READ_BATCH_LINES):
            for line, key in zip(batch.lines, keyer.keys(batch), strict=True):
                if not line.strip():
                    skipped += 1
                    continue
                if rate > 0:
                    await _pace(started, produced, rate)
                unacknowledged.append(await producer.send(topic, line, key=key))
                key_kinds[_key_kind(key)] += 1
                produced += 1
                if len(unacknowledged) >= MAX_UNACKNOWLEDGED:
                    await _settle(unacknowledged, partitions)
        await _settle(unacknowledged, partitions)
    except KafkaError as exc:
        raise KafkaUnavailableError(
            f"sending to topic {topic} at {kafka.bootstrap_servers} failed after {produced} lines were sent: {exc}"
        ) from None
    finally:
        await producer.stop()

    elapsed = time.perf_counter() - started
    logger.info("produced %d lines to %s in %.2f s", produced, topic, elapsed)
    return {
        "lines_produced": produced,
        "blank_lines_skipped": skipped,
        "elapsed_s": round(elapsed, 3),
        "lines_per_s": round(produced / elapsed, 1) if elapsed > 0 else 0.0,
        "topic": topic,
        "records_by_partition": {str(partition): count for partition, count in sorted(partitions.items())},
        "keys_by_kind": dict(key_kinds),
    }


async def _pace(started: float, produced: int, rate: float) -> None:
    ahead = started + produced / rate - time.perf_counter()
    if ahead > PACING_SLACK_S:
        await asyncio.sleep(ahead)


async def _settle(unacknowledged: list[asyncio.Future], partitions: Counter[int]) -> None:
    """Wait for every sent record to be acknowledged and count them by partition."""
    for metadata in await asyncio.gather(*unacknowledged):
        partitions[metadata.partition] += 1
    unacknowledged.clear()


def _key_kind(key: bytes | None) -> str:
    if key is None:
        return "none"
    if key.startswith(b"tk_"):
        return "token"
    if key.startswith(b"key:"):
        return "key_id"
    return "client_ip"


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected lines per second, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a rate >= 0, got {text}")
    return value
