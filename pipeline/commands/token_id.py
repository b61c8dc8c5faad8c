"""``tokensentry token-id``: print the token id of a raw credential, for analysts."""

from __future__ import annotations

import argparse
import sys

from pipeline.assemble import load_hasher
from pipeline.commands.common import add_settings_arguments, settings_from_args
from pipeline.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "token-id",
        help="print the token id of a raw credential",
        description="Print the keyed-hash token id (tk_...) that the pipeline stores for a raw credential. "
        "Pass - to read the credential from stdin, which keeps it out of the shell history.",
    )
    parser.add_argument("credential", metavar="RAW", help="raw API key or Authorization value, or - for stdin")
    add_settings_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    raw = sys.stdin.readline().strip() if args.credential == "-" else args.credential.strip()
    if not raw or raw.lower() in ("bearer", "basic", "token"):
        raise InputError("the credential is empty; pass the raw API key or Authorization value (or - to read one line from stdin)")
    print(load_hasher(settings, create=False).token_id(raw))
    return 0
