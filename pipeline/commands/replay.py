"""``tokensentry replay``: run the whole pipeline over log files, no servers needed."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from pipeline.assemble import build_pipeline, open_store
from pipeline.commands.common import add_settings_arguments, load_mapping, settings_from_args
from pipeline.metrics import Metrics, MetricsServer
from pipeline.parsers import FORMAT_IDS
from pipeline.runner import Pipeline, RunStats, prepare_gc_for_batches
from pipeline.sinks.actions import JsonLinesActionSink
from pipeline.sinks.write_behind import WriteBehind
from pipeline.sources.files import check_readable, read_batches

logger = logging.getLogger(__name__)

_PROGRESS_INTERVAL_S = 0.5


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="replay access-log files through the pipeline",
        description="Replay gateway access logs (plain, gzip or - for stdin) through parse, window, "
        "detect and decide, writing the audit trail to the store.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="log file, gzip file, or - for stdin")
    parser.add_argument("--format", choices=FORMAT_IDS, help="pin the log format (default: detect per file)")
    parser.add_argument("--mapping", type=Path, help="JSON field mapping for --format json")
    parser.add_argument("--actions", metavar="FILE", help="also write actions as JSON Lines to FILE (- for stdout)")
    parser.add_argument("--policy", type=Path, help="policy YAML file (default: the built-in policy)")
    parser.add_argument("--registry", type=Path, help="token registry, YAML or CSV: owner, plan, scopes, expiry, allowed origins and countries")
    parser.add_argument("--blocklist", type=Path, help="file of blocked client networks, one CIDR per line")
    parser.add_argument("--window", type=float, metavar="SECONDS", help="window size in seconds (default 10)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.add_argument(
        "--sync-writes",
        action="store_true",
        help="write each batch to the store before parsing the next (default: a background writer overlaps them)",
    )
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None, help="show progress on stderr")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress")
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve /metrics on metrics.host:PORT while replaying (0 picks a free port; default: no endpoint)",
    )
    add_settings_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(
        args,
        policy_file=args.policy,
        window_s=args.window,
        registry_file=args.registry,
        detectors={"blocklist_file": args.blocklist} if args.blocklist else None,
    )
    for path in args.files:
        check_readable(path)
    mapping = load_mapping(args.mapping)
    sinks = [JsonLinesActionSink(args.actions)] if args.actions else []
    show_progress = sys.stderr.isatty() if args.progress is None else args.progress
    started = time.perf_counter()
    metrics = Metrics(stall_timeout_s=settings.metrics.stall_timeout_s)
    server = MetricsServer(metrics, settings.metrics.host, args.metrics_port).start() if args.metrics_port is not None else None
    store = metrics.instrument_store(open_store(settings))
    # Store writes run on a background thread, overlapping the next batch's parsing.
    writer = None if args.sync_writes else WriteBehind(max_pending=2)
    pipeline: Pipeline | None = None
    try:
        pipeline = build_pipeline(
            settings, store=store, log_format=args.format, mapping=mapping, action_sinks=sinks, writer=writer
        )
        progress = Progress(enabled=show_progress)
        prepare_gc_for_batches()
        for path in args.files:
            replay_file(pipeline, path, settings.batch_lines, progress, metrics)
        if writer is not None:
            writer.close()
        progress.close()
    finally:
        if writer is not None:
            if pipeline is not None:
                pipeline.write_held()
            writer.close(flush=False)
        for sink in sinks:
            sink.close()
        store.close()
        if server is not None:
            server.close()
    summary = summarize(pipeline.stats, pipeline.index.subjects_seen, time.perf_counter() - started)
    if args.json:
        print(json.dumps(summary))
    else:
        print_summary(summary, settings.store_dsn(), file=sys.stderr if args.actions == "-" else sys.stdout)
    return 0


def replay_file(pipeline: Pipeline, path: str, batch_lines: int, progress: Progress, metrics: Metrics | None = None) -> None:
    """Replay one file; its open windows are closed at its end.

    NOTE: each file is an independent event-time stream, so a window that
    spans two rotated files of the same gateway is split at the boundary.
    """
    lines_before = pipeline.stats.lines_read
    accepted_before = pipeline.stats.events_accepted
    for batch in read_batches(path, batch_lines):
        started = time.perf_counter()
        pipeline.process(batch)
        if metrics is not None:
            metrics.observe_batch(pipeline.stats, time.perf_counter() - started)
        progress.update(pipeline.stats)
    started = time.perf_counter()
    pipeline.finish()
    if metrics is not None:
        metrics.observe_batch(pipeline.stats, time.perf_counter() - started)
    progress.update(pipeline.stats, force=True)
    lines = pipeline.stats.lines_read - lines_before
    if lines and pipeline.stats.events_accepted == accepted_before:
        logger.warning(
            "all %d lines of %s were dead-lettered: check --format, or that it is an access log; "
            "the reasons are in the dead_letters table",
            lines,
            path,
        )


def summarize(stats: RunStats, tokens: int, elapsed_s: float) -> dict:
    """Return the closing summary; the first keys are a stable interface for scripts."""
    return {
        "lines_read": stats.lines_read,
        "events_accepted": stats.events_accepted,
        "dead_lettered": stats.dead_lettered,
        "tokens": tokens,
        "windows": stats.windows,
        "detections": stats.detections,
        "actions": stats.actions,
        "elapsed_s": round(elapsed_s, 3),
        "events_per_s": round(stats.events_accepted / elapsed_s, 1) if elapsed_s > 0 else 0.0,
        "late_events": stats.late_events,
        "events_already_stored": stats.events_already_stored,
        "bytes_read": stats.bytes_read,
        "actions_published": stats.actions_published,
        "detections_by_detector": stats.detections_by_detector,
        "actions_by_kind": stats.actions_by_kind,
        "stage_seconds": {stage: round(seconds, 3) for stage, seconds in stats.stage_seconds.items()},
    }


def print_summary(summary: dict, store_dsn: str, file) -> None:
    width = max(len(key) for key in summary)
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{name}={count}" for name, count in sorted(value.items())) or "-"
        print(f"{key:<{width}}  {value}", file=file)
    print(f"{'store':<{width}}  {store_dsn}", file=file)


class Progress:
    """A one-line progress display on stderr: lines, bytes and rate."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.started = time.perf_counter()
        self.last = 0.0

    def update(self, stats: RunStats, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self.last < _PROGRESS_INTERVAL_S:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        sys.stderr.write(
            f"\r{stats.lines_read:>12,} lines  {stats.bytes_read / 2**20:>9.1f} MiB  "
            f"{stats.lines_read / elapsed:>10,.0f} lines/s  {stats.dead_lettered:,} dead-lettered"
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
