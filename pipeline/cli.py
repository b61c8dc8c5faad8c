"""The ``tokensentry`` command.

Each subcommand lives in ``pipeline.commands.<name>`` and exposes
``register(subparsers)``; adding a command is one module plus one line in
``COMMAND_MODULES``. Errors derived from ``TokenSentryError`` end the
program with one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from pipeline import __version__
from pipeline.errors import TokenSentryError
from pipeline.logs import LOG_FORMATS, LOG_LEVELS, configure_logging, resolve_log_options

logger = logging.getLogger(__name__)

COMMAND_MODULES: tuple[str, ...] = (
    "pipeline.commands.config",
    "pipeline.commands.replay",
    "pipeline.commands.query",
    "pipeline.commands.token_id",
    "pipeline.commands.action",
    "pipeline.commands.enforce",
    "pipeline.commands.schema",
    "pipeline.commands.simulate",
    "pipeline.commands.store",
    "pipeline.commands.explain",
    "pipeline.commands.backtest",
    "pipeline.commands.run",
    "pipeline.commands.produce",
    "pipeline.commands.actions",
    "pipeline.commands.evaluate",
)

EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so ``finally`` blocks close stores and writers as on Ctrl-C.

    It derives from BaseException, as KeyboardInterrupt does, so ``except Exception`` clauses do not catch it.
    """


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into ``Terminated`` while a command runs, then restore the previous handler.

    Commands that install their own handlers (``run`` and ``enforce``, through
    asyncio) replace this one while they run. Python installs signal handlers
    only in the main thread, so in other threads this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="tokensentry",
        description="Profile API tokens from gateway access logs and act on token abuse.",
    )
    parser.add_argument("--version", action="version", version=f"tokensentry {__version__}")
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        help="log level on stderr (env: TOKENSENTRY_LOG_LEVEL; default: WARNING)",
    )
    parser.add_argument(
        "--log-format",
        type=str.lower,
        choices=LOG_FORMATS,
        help="log lines as text for people or json, one object per line, for collectors "
        "(env: TOKENSENTRY_LOG_FORMAT; default: text)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        configure_logging(*resolve_log_options(args.log_level, args.log_format, getattr(args, "config", None)))
        with _sigterm_raises():
            return int(args.func(args) or 0)
    except TokenSentryError as exc:
        print(f"tokensentry {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"tokensentry {args.command}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"tokensentry {args.command}: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_TERMINATED
    except BrokenPipeError:
        # The reader closed the pipe (`| head`): stop quietly, as other Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
