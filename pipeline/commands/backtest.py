"""``tokensentry backtest``: what a candidate policy would have done to the stored traffic."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pipeline.analysis.access import opened_store, require_tables
from pipeline.analysis.backtest import BATCHING_MODES, ActionChange, BacktestReport, ComparedAction, run_backtest
from pipeline.analysis.timeline import join_explanations
from pipeline.analysis.timerange import format_span, format_time, iso_time, parse_since
from pipeline.commands.common import add_settings_arguments, settings_from_args
from pipeline.commands.query import write_result
from pipeline.durations import parse_duration
from pipeline.errors import ConfigError
from pipeline.policy import load_policy

logger = logging.getLogger(__name__)

DEFAULT_WARMUP = "1h"
DEFAULT_CHANGE_LIMIT = 50


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "backtest",
        help="replay stored windows through a candidate policy and compare with the stored actions",
        description="Replay the stored windows through fresh detectors and a candidate policy, and report "
        "which tokens and clients it would have acted on against the actions the pipeline took: new, "
        "dropped and changed (other kind or limit) actions per subject. Nothing is written to the store.",
    )
    parser.add_argument("--policy", type=Path, required=True, metavar="FILE", help="candidate policy YAML file")
    parser.add_argument(
        "--since",
        help="compare from this point: a duration counted back from the newest stored window (e.g. 24h, 7d) "
        "or a UTC time such as 2026-03-02T10:00:00Z (default: every stored window)",
    )
    parser.add_argument(
        "--warmup",
        default=DEFAULT_WARMUP,
        metavar="DURATION",
        help=f"with --since, replay this much earlier traffic first so baselines are learned, without "
        f"comparing its actions (default: {DEFAULT_WARMUP})",
    )
    parser.add_argument(
        "--batching",
        choices=BATCHING_MODES,
        default="insert",
        help="insert: regroup windows as the pipeline wrote them, which reproduces its decisions; "
        "window: one batch per window end, as a live stream (default: insert)",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_CHANGE_LIMIT,
        metavar="N",
        help=f"list at most N new, dropped or changed actions in the text report (default: {DEFAULT_CHANGE_LIMIT})",
    )
    parser.add_argument("--json", action="store_true", help="print the whole report as one JSON object")
    add_settings_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    policy_config = load_policy(args.policy)
    since = parse_since(args.since) if args.since else None
    try:
        warmup_s = parse_duration(args.warmup)
    except ValueError as error:
        raise ConfigError(f"invalid --warmup: {error}") from None
    if args.limit < 0:
        raise ConfigError(f"invalid --limit {args.limit}; use a whole number >= 0")

    with opened_store(settings.store_dsn()) as store:
        require_tables(store, ("windows", "actions"))
        report = run_backtest(
            store,
            policy_config,
            since=since,
            warmup_s=warmup_s,
            batching=args.batching,
            idle_ttl_s=settings.idle_ttl_s,
        )

    if args.json:
        print(json.dumps(report_json(report, str(args.policy)), indent=1))
    else:
        write_report(report, str(args.policy), args.limit, sys.stdout)
    return 0


# ---- text report ---------------------------------------------------------------


def describe_action(action: ComparedAction | None) -> str:
    if action is None:
        return "-"
    text = action.kind
    if action.limit_rps is not None:
        text += f" {action.limit_rps:g}/s"
    if action.dry_run:
        text += " (dry run)"
    return text


def _kinds(counts) -> str:
    if not counts:
        return "-"
    return ", ".join(f"{kind} x{count}" if count > 1 else kind for kind, count in sorted(counts.items()))


def write_report(report: BacktestReport, policy_source: str, limit: int, out) -> None:
    """Write the report: the replayed span, totals, a per-subject table and the changed actions."""
    totals = report.totals()
    warmup = report.compare_start - report.replay_start
    out.write(f"Backtest of policy {policy_source} (version {report.policy_version}) against the stored actions\n")
    out.write(
        f"Replayed {report.windows_replayed:,} windows of {report.window_s:g} s in {report.batches:,} batches "
        f"({report.batching} batching) from {format_time(report.replay_start)} to {format_time(report.end)}\n"
    )
    if warmup > 0:
        out.write(f"Compared from {format_time(report.compare_start)}, after {format_span(warmup)} of warm-up\n")
    detections = ", ".join(f"{name} {count}" for name, count in sorted(report.detections_by_detector.items())) or "none"
    out.write(f"Candidate detections: {detections}\n\n")

    stored_subjects = {action.subject for action in report.stored}
    candidate_subjects = {action.subject for action in report.candidate}
    write_result(
        ("", "stored", "candidate"),
        [
            ("actions", len(report.stored), len(report.candidate)),
            ("subjects acted on", len(stored_subjects), len(candidate_subjects)),
        ],
        "table",
        out,
    )
    out.write(
        f"\nnew {totals['new']}, dropped {totals['dropped']}, changed {totals['changed']}, "
        f"unchanged {totals['unchanged']}\n"
    )

    differing = [summary for summary in report.subjects() if summary.new or summary.dropped or summary.changed]
    if not differing:
        out.write("\nThe candidate policy takes the same actions as the stored ones.\n")
        return
    out.write("\n")
    write_result(
        ("subject", "new", "dropped", "changed", "unchanged", "stored", "candidate"),
        [
            (
                summary.subject,
                summary.new,
                summary.dropped,
                summary.changed,
                summary.unchanged,
                _kinds(summary.stored_kinds),
                _kinds(summary.candidate_kinds),
            )
            for summary in differing
        ],
        "table",
        out,
    )
    changes = [change for change in report.changes if change.change != "unchanged"]
    out.write("\nActions that differ, in event time (UTC):\n")
    for change in changes[:limit]:
        out.write(_change_line(change) + "\n")
    if len(changes) > limit:
        out.write(f"... and {len(changes) - limit} more; pass --limit {len(changes)} or --json to see all\n")


def _change_line(change: ActionChange) -> str:
    when = format_time(change.time)
    if change.change == "changed":
        detail = f"{describe_action(change.stored)} -> {describe_action(change.candidate)}"
    elif change.change == "new":
        detail = describe_action(change.candidate)
    else:
        detail = describe_action(change.stored)
    action = change.candidate or change.stored
    assert action is not None
    reason = join_explanations(list(action.explanations))
    return f"{when}  {change.change:<7}  {change.subject}  {detail}  (rule {action.rule}): {reason}"


# ---- JSON report ---------------------------------------------------------------


def _action_json(action: ComparedAction | None) -> dict | None:
    if action is None:
        return None
    return {
        "action_id": action.action_id,
        "kind": action.kind,
        "limit_rps": action.limit_rps,
        "issued_at": iso_time(action.issued_at),
        "rule": action.rule,
        "dry_run": action.dry_run,
        "explanations": list(action.explanations),
    }


def report_json(report: BacktestReport, policy_source: str) -> dict:
    """Return the report as JSON-ready data, times in ISO 8601 UTC."""
    return {
        "policy": policy_source,
        "policy_version": report.policy_version,
        "batching": report.batching,
        "window_s": report.window_s,
        "replay_start": iso_time(report.replay_start),
        "compare_start": iso_time(report.compare_start),
        "end": iso_time(report.end),
        "windows_replayed": report.windows_replayed,
        "windows_compared": report.windows_compared,
        "batches": report.batches,
        "detections_by_detector": dict(report.detections_by_detector),
        "stored_actions": len(report.stored),
        "candidate_actions": len(report.candidate),
        "totals": report.totals(),
        "subjects": [
            {
                "subject": summary.subject,
                "new": summary.new,
                "dropped": summary.dropped,
                "changed": summary.changed,
                "unchanged": summary.unchanged,
                "stored_kinds": dict(summary.stored_kinds),
                "candidate_kinds": dict(summary.candidate_kinds),
            }
            for summary in report.subjects()
        ],
        "changes": [
            {
                "change": change.change,
                "subject": change.subject,
                "stored": _action_json(change.stored),
                "candidate": _action_json(change.candidate),
            }
            for change in report.changes
        ],
    }
