"""``tokensentry action``: manual actions for analysts, and signing-key management.

A manual action is built like an automatic one (``origin='manual'``,
``rule='manual'``), signed with the active signing key, recorded in the
audit store, published to the action topic and recorded again as
published. An action that could not be audited is not published, unless
``--no-audit`` is given.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import ipaddress
import logging
import sys
import time
from pathlib import Path

from pipeline.commands.common import add_settings_arguments, settings_from_args
from pipeline.config import Settings
from pipeline.durations import parse_duration
from pipeline.errors import ConfigError
from pipeline.identity import KEY_ID_PREFIX, TOKEN_ID_PREFIX
from pipeline.signing import ALGORITHMS, KEYRING_FILE_NAME, Signer, generate_key, keyring_from_settings, save_keyring
from schemas.actions import Action, ActionKind

logger = logging.getLogger(__name__)

TOKEN_OPERATIONS = ("revoke", "throttle", "restore", "rotate")
CLIENT_OPERATIONS = ("block", "unblock")
MANUAL = "manual"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "action",
        help="issue a manual action (revoke, throttle, restore, rotate, block, unblock) or manage signing keys",
        description="Issue a signed manual action: it is recorded in the audit store and published to the action topic.",
    )
    operations = parser.add_subparsers(dest="operation", required=True, metavar="OPERATION")
    for operation in TOKEN_OPERATIONS:
        sub = operations.add_parser(operation, help=f"{operation} a token")
        sub.add_argument("target", nargs="?", metavar="TOKEN", help="token id (tk_... or key:...); omit with --raw")
        sub.add_argument("--raw", action="store_true", help="read a raw credential from stdin and use its token id")
        _add_action_arguments(sub, operation)
    for operation in CLIENT_OPERATIONS:
        sub = operations.add_parser(operation, help=f"{operation} a client IP address or CIDR network")
        sub.add_argument("target", metavar="CIDR", help="client IP address or network, e.g. 203.0.113.0/24")
        _add_action_arguments(sub, operation)
    keys = operations.add_parser("keys", help="list, create or export signing keys")
    keys.add_argument("--new", choices=ALGORITHMS, help="create a key with this algorithm and make it the active one")
    keys.add_argument("--export", type=Path, metavar="FILE", help="write a verify-only keyring for enforcement agents to FILE")
    add_settings_arguments(keys)
    keys.set_defaults(func=run_keys)


def _add_action_arguments(parser: argparse.ArgumentParser, operation: str) -> None:
    parser.add_argument("--reason", required=True, help="why, for the audit trail and the message")
    if operation == "throttle":
        parser.add_argument("--limit", type=float, required=True, metavar="RPS", help="allowed requests per second")
    if operation in ("throttle", "revoke", "block"):
        parser.add_argument("--for", dest="duration", metavar="DURATION", help="how long, e.g. 30m or 2h (default: until lifted)")
    if operation == "rotate":
        parser.add_argument("--grace", default="24h", metavar="DURATION", help="how long the old key keeps working (default 24h)")
    parser.add_argument("--account", default="", help="account the subject belongs to, for the audit trail")
    parser.add_argument("--analyst", default=None, help="who issues the action (default: the login name)")
    parser.add_argument("--dry-run", action="store_true", help="record the action as a shadow action; publish nothing")
    parser.add_argument("--no-audit", action="store_true", help="publish without recording in the audit store")
    parser.add_argument("--bootstrap-servers", help="Kafka bootstrap servers (default: from settings)")
    parser.add_argument("--json", action="store_true", help="print the action as JSON")
    add_settings_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    overrides = {"kafka": {"bootstrap_servers": args.bootstrap_servers}} if args.bootstrap_servers else {}
    settings = settings_from_args(args, **overrides)
    subject = _subject(args, settings)
    action = build_manual_action(
        kind=ActionKind(args.operation),
        subject=subject,
        reason=args.reason,
        analyst=args.analyst or _login_name(),
        account=args.account,
        limit_rps=getattr(args, "limit", None),
        duration_s=_duration(getattr(args, "duration", None), "--for"),
        grace_period_s=_duration(getattr(args, "grace", None), "--grace"),
        dry_run=args.dry_run,
    )
    action = Signer(keyring_from_settings(settings)).sign(action)
    publish_manual_action(action, settings, audit=not args.no_audit)
    if args.json:
        print(action.model_dump_json(indent=1))
    else:
        state = "recorded as dry run, not published" if action.dry_run else f"published to {settings.kafka.action_topic}"
        print(f"{action.kind.value} {action.subject}: action {action.action_id} {state}")
    return 0


def build_manual_action(
    *,
    kind: ActionKind,
    subject: str,
    reason: str,
    analyst: str,
    account: str = "",
    limit_rps: float | None = None,
    duration_s: float | None = None,
    grace_period_s: float | None = None,
    dry_run: bool = False,
    issued_at: float | None = None,
) -> Action:
    """Build an unsigned manual action; its id derives from kind, subject, time and reason."""
    if kind is ActionKind.THROTTLE and not (limit_rps and limit_rps > 0):
        raise ConfigError(f"throttle needs a positive --limit in requests per second, got {limit_rps!r}")
    issued_at = time.time() if issued_at is None else issued_at
    client = kind in (ActionKind.BLOCK, ActionKind.UNBLOCK)
    digest = hashlib.sha256(f"{MANUAL}\x00{kind.value}\x00{subject}\x00{issued_at!r}\x00{reason}".encode())
    return Action(
        action_id=digest.hexdigest()[:32],
        kind=kind,
        token_id="" if client else subject,
        subject=subject,
        account=account,
        limit_rps=limit_rps if kind is ActionKind.THROTTLE else None,
        grace_period_s=grace_period_s if kind is ActionKind.ROTATE else None,
        issued_at=issued_at,
        expires_at=issued_at + duration_s if duration_s else 0.0,
        reason=f"manual by {analyst}: {reason}",
        policy_version=MANUAL,
        rule=MANUAL,
        dry_run=dry_run,
        shadow_reason=f"dry-run: manual action by {analyst}" if dry_run else "",
        origin=MANUAL,
    )


def publish_manual_action(action: Action, settings: Settings, audit: bool = True) -> None:
    """Record, publish and record as published; a dry run is only recorded."""
    # Imported here so `tokensentry action keys` works without Kafka or store modules loaded.
    from pipeline.assemble import open_store
    from pipeline.enforce.topics import publish_actions

    store = open_store(settings) if audit else None
    try:
        if store is not None:
            store.write_actions([action], published=False)
        if action.dry_run:
            return
        publish_actions(settings.kafka, [action])
        if store is not None:
            store.write_actions([action], published=True)
    finally:
        if store is not None:
            store.close()


def run_keys(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    keyring = keyring_from_settings(settings)
    path = Path(getattr(settings, "signing_keyring", None) or settings.data_dir / KEYRING_FILE_NAME)
    if args.new:
        key = generate_key(args.new)
        keyring.add(key, make_active=True)
        save_keyring(keyring, path)
        print(f"created {key.algorithm} key {key.key_id} in {path}; it signs new actions from now on")
    if args.export:
        save_keyring(keyring.verify_only(), args.export)
        secret_note = " (contains HMAC secrets: agents holding them can also sign)" if any(
            key.algorithm == "hmac-sha256" for key in keyring.keys.values()
        ) else ""
        print(f"wrote verify-only keyring to {args.export}{secret_note}")
    for key_id, key in sorted(keyring.keys.items()):
        marker = "*" if key_id == keyring.active else " "
        print(f"{marker} {key_id}  {key.algorithm}")
    return 0


def _subject(args: argparse.Namespace, settings: Settings) -> str:
    if args.operation in CLIENT_OPERATIONS:
        try:
            return str(ipaddress.ip_network(args.target, strict=False))
        except ValueError:
            raise ConfigError(f"invalid client address {args.target!r}; use an IP address or CIDR such as 203.0.113.0/24") from None
    if args.raw:
        if args.target:
            raise ConfigError("pass either TOKEN or --raw (credential on stdin), not both")
        from pipeline.assemble import load_hasher

        raw = sys.stdin.readline().strip()
        if not raw:
            raise ConfigError("--raw read an empty line from stdin; pipe the credential in")
        return load_hasher(settings, create=False).token_id(raw)
    if not args.target:
        raise ConfigError("missing TOKEN; pass a token id (tk_... or key:...) or --raw")
    if not args.target.startswith((TOKEN_ID_PREFIX, KEY_ID_PREFIX)):
        raise ConfigError(
            f"{args.target!r} is not a token id; pass tk_... or key:..., or use --raw to hash a raw credential from stdin"
        )
    return args.target


def _duration(value: str | None, option: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ConfigError(f"{option}: {exc}") from None


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"

