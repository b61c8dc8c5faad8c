"""``tokensentry run``: process the log topics as a member of a Kafka consumer group."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.commands.common import add_settings_arguments, load_mapping, settings_from_args
from pipeline.metrics import Metrics, MetricsServer
from pipeline.parsers import FORMAT_IDS
from pipeline.runner import prepare_gc_for_batches
from pipeline.worker import Worker, WorkerOptions

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the pipeline as a Kafka consumer-group worker",
        description="Join a consumer group on the log topics and run parse, window, detect and decide on every "
        "record, writing the audit trail to the store and publishing actions and dead letters to their topics. "
        "Offsets are committed after the writes are acknowledged. Start several workers with the same group id "
        "to split the partitions; they must share one ClickHouse server (an embedded chDB store serves one "
        "process). SIGTERM or Ctrl-C finish the batch in flight, commit, checkpoint and leave the group.",
    )
    kafka = parser.add_argument_group("Kafka (default: the kafka section of the settings)")
    kafka.add_argument("--bootstrap-servers", metavar="HOST:PORT[,...]", help="brokers to connect to (env: TOKENSENTRY_KAFKA__BOOTSTRAP_SERVERS)")
    kafka.add_argument("--group-id", help="consumer group to join (env: TOKENSENTRY_KAFKA__GROUP_ID)")
    kafka.add_argument(
        "--topic",
        dest="topics",
        action="append",
        metavar="TOPIC",
        help="log topic to consume; repeat for several (default: kafka.topics)",
    )
    kafka.add_argument("--action-topic", help="compacted topic that receives actions (default: kafka.action_topic)")
    kafka.add_argument("--dead-letter-topic", help="topic that receives rejected records (default: kafka.dead_letter_topic)")

    pipeline = parser.add_argument_group("pipeline")
    pipeline.add_argument("--format", choices=FORMAT_IDS, help="pin the log format (default: detect per partition)")
    pipeline.add_argument("--mapping", type=Path, help="JSON field mapping for --format json")
    pipeline.add_argument("--policy", type=Path, help="policy YAML file (default: the built-in policy)")
    pipeline.add_argument("--window", type=_positive_float, metavar="SECONDS", help="window size in seconds (default 10)")

    worker = parser.add_argument_group("worker")
    worker.add_argument(
        "--max-records",
        type=_positive_int,
        metavar="N",
        help="records per fetch over all partitions (default: kafka.max_batch_records, 10000)",
    )
    worker.add_argument(
        "--checkpoint-interval",
        type=_positive_float,
        default=60.0,
        metavar="SECONDS",
        help="save each partition's state at least this often (default 60)",
    )
    worker.add_argument(
        "--checkpoint-every",
        type=_non_negative_int,
        default=0,
        metavar="BATCHES",
        help="also save a partition's state after this many batches; 0 saves by time only (default 0)",
    )
    worker.add_argument(
        "--exit-when-idle",
        type=_positive_float,
        metavar="SECONDS",
        help="stop cleanly after this many seconds without new records (default: run until a signal)",
    )
    worker.add_argument(
        "--shutdown-timeout",
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="after SIGTERM, how long a failing write is retried before its batch is left uncommitted (default 30)",
    )
    worker.add_argument("--json", action="store_true", help="print the closing summary as one JSON object")
    add_settings_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    kafka_overrides = {
        "bootstrap_servers": args.bootstrap_servers,
        "group_id": args.group_id,
        "topics": tuple(args.topics) if args.topics else None,
        "action_topic": args.action_topic,
        "dead_letter_topic": args.dead_letter_topic,
    }
    kafka_overrides = {name: value for name, value in kafka_overrides.items() if value is not None}
    settings = settings_from_args(args, policy_file=args.policy, window_s=args.window, kafka=kafka_overrides or None)
    options = WorkerOptions(
        max_records=args.max_records or settings.kafka.max_batch_records,
        checkpoint_interval_s=args.checkpoint_interval,
        checkpoint_every_batches=args.checkpoint_every,
        exit_when_idle_s=args.exit_when_idle,
        shutdown_timeout_s=args.shutdown_timeout,
        log_format=args.format,
        mapping=load_mapping(args.mapping),
    )
    metrics = Metrics(stall_timeout_s=settings.metrics.stall_timeout_s, ready_max_lag=settings.metrics.ready_max_lag)
    worker = Worker(settings, options, exporter=metrics)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if settings.metrics.enabled:
            stack.enter_context(MetricsServer(metrics, settings.metrics.host, settings.metrics.port))
        prepare_gc_for_batches()
        asyncio.run(worker.run())
    summary = summarize(worker.metrics.snapshot(), time.perf_counter() - started)
    if args.json:
        print(json.dumps(summary))
    else:
        print_summary(summary, settings.store_dsn(), settings.kafka.group_id, file=sys.stdout)
    return 0


def summarize(metrics: dict[str, Any], elapsed_s: float) -> dict[str, Any]:
    """Return the closing summary: the worker's counters plus the run time and rate."""
    summary = dict(metrics)
    summary["elapsed_s"] = round(elapsed_s, 3)
    summary["records_per_s"] = round(metrics["records_in"] / elapsed_s, 1) if elapsed_s > 0 else 0.0
    return summary


def print_summary(summary: dict[str, Any], store_dsn: str, group_id: str, file) -> None:
    rows = dict(summary)
    rows["lag"] = ", ".join(f"{name}={count}" for name, count in sorted(summary["lag"].items())) or "-"
    rows["group"] = group_id
    rows["store"] = store_dsn
    width = max(len(key) for key in rows)
    for key, value in rows.items():
        print(f"{key:<{width}}  {value}", file=file)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a positive whole number, got 0")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value
