"""``tokensentry simulate``: write realistic gateway traffic with labelled token abuse."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from datetime import UTC, datetime

from pipeline.simulate import LOG_FORMATS, SCENARIO_NAMES, Simulation, SimulationOptions
from pipeline.simulate.files import open_output, write_blocklist, write_labels, write_registry
from pipeline.simulate.options import DEFAULT_START, parse_duration_seconds, parse_scenarios, parse_start

logger = logging.getLogger(__name__)

_PROGRESS_INTERVAL_S = 1.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="write simulated gateway access logs with labelled token abuse",
        description="Generate seedable API-gateway traffic for a token population, with planted abuse "
        "scenarios and their ground-truth labels. The same options and seed give byte-identical output.",
    )

    # What to simulate.
    parser.add_argument("--tokens", type=int, default=1000, metavar="N", help="number of simulated tokens (default 1000)")
    parser.add_argument(
        "--duration", default="1d", help="event time to simulate, e.g. 90m, 2h, 3d, 1w (default 1d)"
    )
    parser.add_argument(
        "--start", default=DEFAULT_START, help=f"event time of the first second, ISO 8601, UTC unless an offset is given (default {DEFAULT_START})"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--format", dest="traffic_format", choices=LOG_FORMATS, default="nginx", help="log format (default nginx)")
    parser.add_argument(
        "--scenarios",
        default="all",
        help=f"abuse to plant: all, none or a comma list of {', '.join(SCENARIO_NAMES)} (default all)",
    )

    # Where to write it.
    parser.add_argument("--out", default="-", metavar="FILE", help="log output; - is stdout, a .gz suffix compresses (default -)")
    parser.add_argument("--labels", metavar="FILE", help="write the ground-truth labels as JSON Lines to FILE")
    parser.add_argument("--registry", metavar="FILE", help="write a YAML list of TokenRecord entries, one per token, to FILE")
    parser.add_argument("--blocklist", metavar="FILE", help="write the blocklisted networks, one CIDR per line, to FILE")

    # Volume and shape of the lines.
    parser.add_argument(
        "--rate-scale",
        type=float,
        default=1.0,
        metavar="FACTOR",
        help="multiply every benign and abuse request rate by FACTOR (default 1.0); "
        "slow scraping keeps its rate, which is tied to the plan limit",
    )
    parser.add_argument(
        "--credential-in-query",
        action="store_true",
        help="send credentials as ?api_key=... in the request target instead of the X-API-Key header",
    )
    parser.add_argument("--progress", action="store_true", help="show progress on stderr")
    parser.set_defaults(func=run)


def options_from_args(args: argparse.Namespace) -> SimulationOptions:
    """Build validated options from the parsed command line (raises ConfigError)."""
    return SimulationOptions(
        tokens=args.tokens,
        duration_s=parse_duration_seconds(args.duration),
        start=parse_start(args.start),
        seed=args.seed,
        log_format=args.traffic_format,
        scenarios=parse_scenarios(args.scenarios),
        rate_scale=args.rate_scale,
        credential_in_query=args.credential_in_query,
    )


def run(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    simulation = Simulation(options)
    if args.labels:
        count = write_labels(args.labels, simulation.labels)
        logger.info("wrote %d labels to %s", count, args.labels)
    if args.registry:
        count = write_registry(args.registry, simulation.registry_records())
        logger.info("wrote %d registry entries to %s", count, args.registry)
    if args.blocklist:
        count = write_blocklist(args.blocklist, simulation.blocklist())
        logger.info("wrote %d blocklisted networks to %s", count, args.blocklist)

    progress = Progress(options, enabled=args.progress)
    try:
        with open_output(args.out, "--out") as out:
            for chunk in simulation.iter_chunks():
                if chunk.lines:
                    out.write(chunk.data)
                progress.update(chunk.end, chunk.lines)
    except BrokenPipeError:
        # The reader of stdout went away (e.g. `| head`). Point stdout at
        # /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        logger.info("stopped: the reader of stdout closed the pipe")
        return 1
    progress.close()
    logger.info("wrote %d lines to %s", progress.lines, args.out)
    return 0


class Progress:
    """Event-time position, line count and rate on stderr, once per second and once at the end."""

    def __init__(self, options: SimulationOptions, enabled: bool) -> None:
        self.options = options
        self.enabled = enabled
        self.lines = 0
        self.started = time.perf_counter()
        self.last_print = self.started

    def update(self, event_time: int, lines: int) -> None:
        self.lines += lines
        now = time.perf_counter()
        if self.enabled and now - self.last_print >= _PROGRESS_INTERVAL_S:
            self.last_print = now
            self._print(event_time, now)

    def close(self) -> None:
        if self.enabled:
            self._print(self.options.end, time.perf_counter())
            print(file=sys.stderr)

    def _print(self, event_time: int, now: float) -> None:
        done = (event_time - self.options.start) / self.options.duration_s
        moment = datetime.fromtimestamp(event_time, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        rate = self.lines / max(now - self.started, 1e-9)
        print(
            f"\rsimulate: event time {moment} ({done:.0%}), {self.lines:,} lines, {rate:,.0f} lines/s",
            end="",
            file=sys.stderr,
            flush=True,
        )
