"""``tokensentry evaluate``: score the pipeline and two baselines against labelled abuse."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from pipeline.commands.common import add_settings_arguments, settings_from_args
from pipeline.durations import parse_duration
from pipeline.errors import ConfigError
from pipeline.evaluate import Evaluation, build_report, file_input, render_text, simulated_input
from pipeline.parsers import FORMAT_IDS
from pipeline.simulate import SCENARIO_NAMES, SimulationOptions
from pipeline.simulate.options import DEFAULT_START, parse_duration_seconds, parse_scenarios, parse_start

DEFAULT_GRACE = "10m"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score the pipeline and two baselines against labelled abuse",
        description="Run the pipeline in-process over a labelled set, together with a static rate limit and "
        "CrowdSec-style leaky buckets on the same parsed events, and report per label whether each system "
        "acted and how soon (event time), plus false positives on benign traffic.",
    )
    inputs = parser.add_argument_group("input (give --simulate, or --access-log with --labels)")
    inputs.add_argument("--simulate", action="store_true", help="generate the labelled set in-process with the simulator")
    # Not --log: the tokensentry parser would read it as an abbreviation of --log-level or --log-format.
    inputs.add_argument(
        "--access-log", action="append", metavar="FILE", help="access-log file (plain or gzip); repeat for more files"
    )
    inputs.add_argument("--labels", type=Path, metavar="FILE", help="ground-truth labels, JSON Lines as written by simulate --labels")
    inputs.add_argument("--registry", type=Path, metavar="FILE", help="token registry file (.yaml or .csv) for the log files")
    inputs.add_argument("--blocklist", type=Path, metavar="FILE", help="CIDR blocklist file for the log files")
    inputs.add_argument("--format", choices=FORMAT_IDS, help="pin the log format of --access-log files (default: detect per file)")

    simulation = parser.add_argument_group("simulation (with --simulate)")
    simulation.add_argument("--tokens", type=int, default=1000, metavar="N", help="number of simulated tokens (default 1000)")
    simulation.add_argument("--duration", default="1d", help="event time to simulate, e.g. 2h, 1d (default 1d)")
    simulation.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    simulation.add_argument("--start", default=DEFAULT_START, help=f"event time of the first second, ISO 8601 (default {DEFAULT_START})")
    simulation.add_argument(
        "--scenarios", default="all", help=f"abuse to plant: all or a comma list of {', '.join(SCENARIO_NAMES)} (default all)"
    )
    simulation.add_argument("--rate-scale", type=float, default=1.0, metavar="FACTOR", help="multiply every request rate by FACTOR (default 1.0)")

    scoring = parser.add_argument_group("scoring")
    scoring.add_argument(
        "--grace",
        default=DEFAULT_GRACE,
        help=f"event time after a label's end during which a finding still matches it, e.g. 0s, 10m (default {DEFAULT_GRACE})",
    )
    scoring.add_argument(
        "--enforcing-only",
        action="store_true",
        help="count only actions that restrict traffic (throttle, revoke, rotate, block, ban), not alerts",
    )

    parser.add_argument("--policy", type=Path, help="policy YAML file (default: the built-in policy)")
    parser.add_argument("--window", type=float, metavar="SECONDS", help="window size in seconds (default 10)")
    parser.add_argument(
        "--batch-seconds",
        type=float,
        metavar="SECONDS",
        help="cut input batches where event time crosses a multiple of SECONDS, as a live stream polls "
        "(default: the window size; 0 cuts by line count only, which delays actions in event time)",
    )
    parser.add_argument(
        "--sync-writes",
        action="store_true",
        help="write each batch to the store before parsing the next (default: a background writer overlaps them)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("--progress", action="store_true", help="show progress on stderr")
    add_settings_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    grace_s = _grace_seconds(args.grace)
    _check_input_arguments(args)
    if args.batch_seconds is not None and args.batch_seconds < 0:
        raise ConfigError(f"invalid --batch-seconds {args.batch_seconds:g}; use 0 or more")
    with tempfile.TemporaryDirectory(prefix="tokensentry-evaluate-") as work:
        work_dir = Path(work)
        # Without --store or --data-dir the audit trail and the token-hash secret live in the temporary directory.
        data_dir = args.data_dir or work_dir / "data"
        settings = settings_from_args(
            argparse.Namespace(config=args.config, data_dir=data_dir, store=args.store),
            policy_file=args.policy,
            window_s=args.window,
        )
        if args.simulate:
            data = simulated_input(_simulation_options(args), work_dir, settings.batch_lines)
        else:
            data = file_input(
                args.access_log,
                args.labels,
                registry_file=args.registry,
                blocklist_file=args.blocklist,
                log_format=args.format,
                batch_lines=settings.batch_lines,
            )
        batch_seconds = settings.window_s if args.batch_seconds is None else args.batch_seconds
        evaluation = Evaluation(
            settings,
            data,
            grace_s=grace_s,
            enforcing_only=args.enforcing_only,
            batch_seconds=batch_seconds or None,
            sync_writes=args.sync_writes,
            show_progress=args.progress,
        )
        result = evaluation.run()
    report = build_report(result)
    if args.json:
        print(json.dumps(report))
    else:
        render_text(report, sys.stdout)
    return 0


def _check_input_arguments(args: argparse.Namespace) -> None:
    if args.simulate and (args.access_log or args.labels or args.registry or args.blocklist):
        raise ConfigError(
            "--simulate generates its own logs, labels, registry and blocklist; "
            "drop --access-log, --labels, --registry and --blocklist"
        )
    if not args.simulate and not args.access_log:
        raise ConfigError("no input: pass --simulate, or --access-log FILE with --labels FILE")
    if args.access_log and args.labels is None:
        raise ConfigError("--access-log needs --labels FILE with the ground truth of those logs")


def _simulation_options(args: argparse.Namespace) -> SimulationOptions:
    return SimulationOptions(
        tokens=args.tokens,
        duration_s=parse_duration_seconds(args.duration),
        start=parse_start(args.start),
        seed=args.seed,
        scenarios=parse_scenarios(args.scenarios),
        rate_scale=args.rate_scale,
    )


def _grace_seconds(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"invalid --grace: {exc}") from None
    if seconds < 0:
        raise ConfigError(f"invalid --grace {text!r}; use a duration of 0s or more")
    return seconds
