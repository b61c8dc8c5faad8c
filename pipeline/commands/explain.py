"""``tokensentry explain``: a token's recent windows, detections and actions as a timeline."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from pipeline.analysis.access import opened_store, require_tables
from pipeline.analysis.timeline import (
    DEFAULT_WINDOW_LIMIT,
    build_timeline,
    find_subject,
    load_history,
    render_text,
    to_json,
)
from pipeline.analysis.timerange import format_time, parse_since
from pipeline.assemble import load_hasher
from pipeline.commands.common import add_settings_arguments, settings_from_args
from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.identity import IP_PREFIX, KEY_ID_PREFIX, TOKEN_ID_PREFIX

logger = logging.getLogger(__name__)

EXIT_NOT_FOUND = 1
SUBJECT_PREFIXES = (TOKEN_ID_PREFIX, KEY_ID_PREFIX, IP_PREFIX)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="show a token's windows, detections and actions as a timeline",
        description="Show the audit records of one token: its windows (baseline against observed "
        "traffic), the detections and the actions with their reasons, in event-time order (UTC). Windows "
        "without detections are folded into runs.",
    )
    parser.add_argument(
        "token",
        nargs="?",
        metavar="TOKEN",
        help="subject id as stored: tk_<hash>, key:<key id> or ip:<address> (see --raw for a raw credential)",
    )
    parser.add_argument(
        "--raw",
        action="store_true",
        help="read a raw credential from stdin and look up its token id; keeps it out of the shell history",
    )
    parser.add_argument(
        "--since",
        default="24h",
        help="a duration counted back from the token's newest stored record (e.g. 90m, 24h, 7d), "
        "or a UTC time such as 2026-03-02T10:00:00Z (default: 24h)",
    )
    parser.add_argument(
        "--limit",
        type=_positive_int,
        default=DEFAULT_WINDOW_LIMIT,
        metavar="N",
        help=f"show at most the N newest windows, with the detections and actions of their span "
        f"(default: {DEFAULT_WINDOW_LIMIT})",
    )
    parser.add_argument("--json", action="store_true", help="print the history and timeline as one JSON object")
    add_settings_arguments(parser)
    parser.set_defaults(func=run)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}; use a whole number >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid count {value}; use a whole number >= 1")
    return value


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    since = parse_since(args.since)
    subject_id = resolve_subject(args, settings)

    with opened_store(settings.store_dsn()) as store:
        tables = require_tables(store, ("windows", "detections", "actions"))
        presence = find_subject(store, subject_id)
        if not presence.found:
            print(not_found_message(subject_id, store.label, from_raw=args.raw), file=sys.stderr)
            return EXIT_NOT_FOUND
        history = load_history(
            store,
            subject_id,
            presence,
            since,
            limit=args.limit,
            with_receipts="receipts" in tables,
        )

    if history.empty:
        print(
            f"tokensentry explain: {subject_id} has no windows, detections or actions {since.describe()}; "
            f"its newest record is at {format_time(presence.latest)}. Pass an earlier --since.",
            file=sys.stderr,
        )
        return EXIT_NOT_FOUND
    entries = build_timeline(history)
    if args.json:
        print(json.dumps(to_json(history, entries), indent=1))
    else:
        sys.stdout.write(render_text(history, entries))
    return 0


def resolve_subject(args: argparse.Namespace, settings: Settings) -> str:
    """Return the subject id to look up: TOKEN as given, or the token id of the credential on stdin."""
    if args.raw:
        if args.token is not None:
            raise ConfigError(
                "pass either TOKEN or --raw, not both; --raw reads the raw credential from stdin"
            )
        credential = sys.stdin.readline().strip()
        if not credential:
            raise ConfigError("--raw read no credential from stdin; pipe it in, e.g. `printenv API_KEY | tokensentry explain --raw`")
        return load_hasher(settings, create=False).token_id(credential)
    if args.token is None:
        raise ConfigError("missing TOKEN: pass a subject id (tk_..., key:..., ip:...) or --raw to read a credential from stdin")
    return args.token.strip()


def not_found_message(subject_id: str, store_label: str, from_raw: bool) -> str:
    """Return the message for a subject without stored records, with how to find the right id."""
    fragment = subject_id.split(":", 1)[-1].removeprefix(TOKEN_ID_PREFIX)[:8]
    # Quotes, backslashes and shell characters would break the suggested command.
    fragment = "".join(character for character in fragment if character not in "'\"\\`$")
    lines = [
        f"tokensentry explain: {subject_id} was not found in the audit store {store_label} "
        "(no windows, detections or actions).",
        "List the stored subject ids that look like it with:",
        f"  tokensentry query \"SELECT subject_id, count() AS windows, max(window_end) AS last_seen FROM windows "
        f"WHERE subject_id LIKE '%{fragment}%' GROUP BY subject_id ORDER BY last_seen DESC LIMIT 20\"",
    ]
    if from_raw:
        lines.append(
            "The credential was hashed with this machine's token-hash secret (TOKENSENTRY_HASH_SECRET or "
            "token-hash.key in the data directory). It must be the secret the pipeline used."
        )
    elif not subject_id.startswith(SUBJECT_PREFIXES):
        lines.append("Subject ids start with tk_, key: or ip:; for a raw credential, pipe it into --raw.")
    return "\n".join(lines)
