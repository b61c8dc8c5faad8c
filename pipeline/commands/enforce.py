"""``tokensentry enforce``: run the NGINX enforcement agent, or report on enforcement.

Modes:

- default: read the action topic, render decisions into ``--nginx-dir`` and
  reload NGINX, sending a receipt per applied action;
- ``--status``: print what the local agent holds, from its status file;
- ``--receipts``: print per-agent receipt counts and detection-to-enforcement
  latency p50/p99 from the audit store;
- ``--collect-receipts``: consume the receipt topic into the audit store.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import signal
import socket
import sys
import time
from pathlib import Path

from pipeline.commands.common import add_settings_arguments, settings_from_args
from pipeline.commands.query import write_result
from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.identity import SECRET_FILE_NAME, parse_secret
from pipeline.signing import Keyring, keyring_from_settings, load_keyring

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "enforce",
        help="run the NGINX enforcement agent, or show its status and receipt latency",
        description="Apply signed actions from the action topic to NGINX: revoked and rotated tokens and "
        "blocked clients get 403, throttled tokens get 429 above their limit.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--status", action="store_true", help="print the agent's decisions and counters (from its status file) and exit")
    mode.add_argument("--receipts", action="store_true", help="print per-agent receipts and latency p50/p99 from the store")
    mode.add_argument("--collect-receipts", action="store_true", help="consume the receipt topic into the audit store")

    nginx = parser.add_argument_group("NGINX")
    nginx.add_argument("--nginx-dir", type=Path, help="directory for the generated files (e.g. /etc/nginx/tokensentry)")
    nginx.add_argument("--nginx-binary", default="nginx", help="nginx executable (default: nginx)")
    nginx.add_argument("--nginx-prefix", type=Path, help="nginx -p prefix (default: compiled-in)")
    nginx.add_argument("--nginx-conf", type=Path, help="nginx -c configuration file (default: compiled-in)")
    nginx.add_argument("--no-reload", action="store_true", help="only write the files; something else reloads NGINX")
    key_id = nginx.add_mutually_exclusive_group()
    key_id.add_argument("--key-id-header", default="X-Key-Id", help="request header with the key id, set by a trusted layer in front (default X-Key-Id)")
    key_id.add_argument("--key-id-variable", metavar="$NAME", help="NGINX variable with the key id, e.g. one a map extracts from the credential")
    nginx.add_argument("--no-njs", action="store_true", help="enforce key ids and clients only; tk_ token ids need njs")
    nginx.add_argument("--status-listen", metavar="HOST:PORT", help="serve the config generation here to confirm reloads")
    nginx.add_argument("--burst-seconds", type=float, default=1.0, help="throttle burst, in seconds of the rate (default 1)")

    agent = parser.add_argument_group("agent")
    agent.add_argument("--agent-id", help="id in receipts (default: nginx@HOSTNAME)")
    agent.add_argument("--state-dir", type=Path, help="status file directory (default: DATA_DIR/enforce/AGENT_ID)")
    agent.add_argument("--keyring", type=Path, help="verify-only keyring file (default: the data directory's keyring)")
    agent.add_argument("--allow-unsigned", action="store_true", help="also apply unsigned actions (testing only)")
    agent.add_argument("--no-receipts", action="store_true", help="do not send receipts")
    agent.add_argument("--debounce", type=float, default=0.1, metavar="SECONDS", help="wait after a change before rendering")
    agent.add_argument("--bootstrap-servers", help="Kafka bootstrap servers (default: from settings)")

    parser.add_argument("--hours", type=float, default=24.0, help="--receipts: look back this many hours (default 24)")
    add_settings_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = {"kafka": {"bootstrap_servers": args.bootstrap_servers}} if args.bootstrap_servers else {}
    settings = settings_from_args(args, **overrides)
    agent_id = args.agent_id or f"nginx@{socket.gethostname()}"
    state_dir = args.state_dir or settings.data_dir / "enforce" / _safe_name(agent_id)
    if args.status:
        return print_status(state_dir)
    if args.receipts:
        return print_receipts(settings, args.hours)
    if args.collect_receipts:
        return collect(settings)
    return run_agent(args, settings, agent_id, state_dir)


def run_agent(args: argparse.Namespace, settings: Settings, agent_id: str, state_dir: Path) -> int:
    from pipeline.enforce.agent import EnforcementAgent
    from pipeline.enforce.renderers.nginx import NginxController, NginxOptions, NginxRenderer

    if args.nginx_dir is None:
        raise ConfigError("missing --nginx-dir: the directory NGINX includes the generated files from")
    keyring = load_keyring(args.keyring) if args.keyring else keyring_from_settings(settings, create=False)
    _check_keyring(keyring, args.allow_unsigned)
    try:
        options = NginxOptions(
            output_dir=args.nginx_dir,
            key_id_header=args.key_id_header,
            key_id_variable=args.key_id_variable,
            njs=not args.no_njs,
            hash_secret=None if args.no_njs else _hash_secret(settings),
            burst_seconds=args.burst_seconds,
            status_listen=args.status_listen,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    controller = None if args.no_reload else NginxController(args.nginx_binary, args.nginx_prefix, args.nginx_conf)
    renderer = NginxRenderer(options, controller)
    renderer.ensure_files()
    agent = EnforcementAgent(
        kafka=settings.kafka,
        keyring=keyring,
        renderer=renderer,
        agent_id=agent_id,
        state_dir=state_dir,
        require_signatures=not args.allow_unsigned,
        send_receipts=not args.no_receipts,
        debounce_s=args.debounce,
    )
    logger.info("enforcement agent %s starting: topic %s, NGINX files in %s", agent_id, settings.kafka.action_topic, args.nginx_dir)
    asyncio.run(_run_until_signal(agent.run))
    return 0


async def _run_until_signal(main) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return await main(stop)


def _check_keyring(keyring: Keyring, allow_unsigned: bool) -> None:
    if not keyring.keys and not allow_unsigned:
        raise ConfigError(
            "no verification keys: pass --keyring FILE (from `tokensentry action keys --export FILE`) "
            "or set the data directory to the pipeline's"
        )


def _hash_secret(settings: Settings) -> bytes:
    """Return the pipeline's token-hash secret; the agent never creates one."""
    if settings.hash_secret is not None:
        return parse_secret(settings.hash_secret.get_secret_value(), origin="TOKENSENTRY_HASH_SECRET")
    path = settings.data_dir / SECRET_FILE_NAME
    if not path.exists():
        raise ConfigError(
            f"token-hash secret {path} not found; set TOKENSENTRY_HASH_SECRET to the pipeline's secret, "
            "or pass --no-njs to enforce key ids and client networks only"
        )
    return parse_secret(path.read_text(encoding="ascii").strip(), origin=str(path))


def print_status(state_dir: Path) -> int:
    from pipeline.enforce.agent import STATUS_FILE_NAME

    path = state_dir / STATUS_FILE_NAME
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no agent status at {path}; has the agent run with this --state-dir or --agent-id?") from None
    age = time.time() - status["updated_at"]
    summary = ", ".join(f"{name}={count}" for name, count in status["summary"].items())
    print(f"agent       {status['agent_id']} (pid {status['pid']}, status written {age:.0f} s ago)")
    print(f"topic       {status['topic']} on {status['bootstrap_servers']}, caught up: {status['caught_up']}")
    print(f"positions   {status['positions']}")
    print(f"generation  {status['generation'] or '-'}")
    print(f"holding     {summary}")
    print(f"counters    {', '.join(f'{k}={v}' for k, v in status['counters'].items())}")
    for decision in status["decisions"]:
        limit = f" {decision['limit_rps']:g} rps" if decision["limit_rps"] else ""
        expires = f" until {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(decision['expires_at']))}Z" if decision["expires_at"] else ""
        print(f"  {decision['kind']:<8} {decision['subject']}{limit}{expires}  ({decision['action_id']})")
    return 0


def print_receipts(settings: Settings, hours: float) -> int:
    from pipeline.assemble import open_store
    from pipeline.enforce.receipts import receipt_summary

    store = open_store(settings)
    try:
        columns, rows, pending = receipt_summary(store, hours)
    finally:
        store.close()
    if rows:
        write_result(columns, rows, "table", sys.stdout)
    else:
        print(f"no receipts in the last {hours:g} h")
    print(f"published actions of the last {hours:g} h without any receipt: {pending}")
    return 0


def collect(settings: Settings) -> int:
    from pipeline.assemble import open_store
    from pipeline.enforce.receipts import collect_receipts

    store = open_store(settings)
    try:
        stored = asyncio.run(_run_until_signal(lambda stop: collect_receipts(settings.kafka, store, stop)))
    finally:
        store.close()
    logger.info("stored %s receipts", stored)
    return 0


def _safe_name(agent_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]", "_", agent_id)
