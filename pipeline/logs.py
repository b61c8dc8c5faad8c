"""Logging set-up: text or JSON lines on stderr, context ids, credential redaction.

``configure_logging`` installs one handler on the root logger. Modules keep
logging through ``logging.getLogger(__name__)`` with lazy ``%s`` arguments;
nothing else changes for them.

Context ids. Code that works on one worker, partition or batch binds the ids
once, and every line logged inside the block carries them::

    with bind_context(worker=worker_id, partition=3, batch=batch_id):
        logger.info("committed offsets up to %d", offset)

The ids live in a ``contextvars.ContextVar``, so each asyncio task and each
thread has its own bindings, and blocks nest (the inner block adds to
the outer one). Text lines show them as ``worker=w1 partition=3 batch=17``
before the message, and JSON lines as top-level fields. Fields passed with
``extra={...}`` appear the same way.

Redaction. ``RedactingFilter`` runs ``redact`` (``pipeline.identity.scrub_text``
plus URL passwords and ``password=``, ``secret=`` and ``token=`` pairs) over
the final message, the formatted exception and every string field. It is a
last line of defence: it catches credentials in the forms ``scrub_text``
recognises (``Bearer ...`` and ``Basic ...`` values, ``api_key=`` style query and
``key=value`` parameters, JSON ``authorization`` fields), not a bare token
with nothing around it. Code must still never log a raw credential.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml

from pipeline.errors import ConfigError
from pipeline.identity import REDACTED, TOKEN_ID_PREFIX, scrub_text

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
DEFAULT_LEVEL = "WARNING"
DEFAULT_FORMAT = "text"

LEVEL_ENV = "TOKENSENTRY_LOG_LEVEL"
FORMAT_ENV = "TOKENSENTRY_LOG_FORMAT"
CONFIG_ENV = "TOKENSENTRY_CONFIG"

# Context fields shown first and in this order; other bound fields follow sorted.
CONTEXT_ORDER = ("worker", "partition", "batch")

_context: ContextVar[Mapping[str, Any]] = ContextVar("tokensentry_log_context", default={})

# Secrets that scrub_text leaves alone because they are not API credentials
# in gateway logs: the password in a URL's user info (a store DSN), and
# password=, secret= and token= pairs in free text.
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s:@/]+:)[^\s@/]+@")
_SECRET_PAIR = re.compile(r"(?i)\b((?:password|passwd|secret|token)=)(\"[^\"]*\"|[^\s&\"]+)")

# Token ids, held out of scrub_text's reach and put back after it ran.
_TOKEN_ID = re.compile(r"\btk_[0-9a-f]{16}\b")
_HELD_TOKEN_ID = re.compile(r"\x00(\d+)\x00")

# Attributes every LogRecord has; anything else on a record came from
# ``extra=`` or from the context filter and is written as a field.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


@contextlib.contextmanager
def bind_context(**fields: Any) -> Iterator[Mapping[str, Any]]:
    """Add ``fields`` to every log line written inside the block; ``None`` values unbind a field."""
    merged = {**_context.get(), **fields}
    merged = {name: value for name, value in merged.items() if value is not None}
    token = _context.set(merged)
    try:
        yield merged
    finally:
        _context.reset(token)


def current_context() -> Mapping[str, Any]:
    """Return the fields bound in the current task or thread."""
    return _context.get()


class ContextFilter(logging.Filter):
    """Copies the bound context fields onto each record; a field given with ``extra=`` wins."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


def redact(text: str) -> str:
    """Redact credentials (``scrub_text``) and URL passwords and ``password=`` style pairs in ``text``.

    Token ids (``tk_`` + 16 hex digits) are keyed hashes, not secrets, and
    stay readable: ``scrub_text`` alone would take "token tk_..." for a
    ``Token`` authorization value.
    """
    token_ids: list[str] = []
    if TOKEN_ID_PREFIX in text:

        def hold(match: re.Match[str]) -> str:
            token_ids.append(match.group(0))
            return f"\x00{len(token_ids) - 1}\x00"

        text = _TOKEN_ID.sub(hold, text)
    text = scrub_text(text)
    text = _URL_PASSWORD.sub(r"\1" + REDACTED + "@", text)
    text = _SECRET_PAIR.sub(r"\1" + REDACTED, text)
    if token_ids:
        text = _HELD_TOKEN_ID.sub(lambda match: token_ids[int(match.group(1))], text)
    return text


class RedactingFilter(logging.Filter):
    """Redacts credentials in a record's message, exception text and string fields.

    The message is formatted here (``record.getMessage()``) and the arguments
    dropped, so handlers further on see only the redacted text. The cost is
    about seven regex passes per record, which matters only for debug
    logging of single records.
    """

    _exception_formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._exception_formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for name, value in list(vars(record).items()):
            if name not in _RECORD_ATTRIBUTES and isinstance(value, str):
                setattr(record, name, redact(value))
        return True


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """Return the context and ``extra=`` fields of a record, context ids first."""
    extra = {name: value for name, value in vars(record).items() if name not in _RECORD_ATTRIBUTES}
    ordered = {name: extra.pop(name) for name in CONTEXT_ORDER if name in extra}
    ordered.update(sorted(extra.items()))
    return ordered


class TextFormatter(logging.Formatter):
    """``2026-01-01T00:00:00.123Z INFO pipeline.worker worker=w1 partition=3: message``."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{name}={_text_value(value)}" for name, value in record_fields(record).items())
        line = f"{_timestamp(record)} {record.levelname} {record.name}"
        if fields:
            line += " " + fields
        line += ": " + record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message``, then the fields.

    ``ts`` is UTC in RFC 3339 with milliseconds. ``exception`` contains the
    formatted traceback when there is one. Values JSON cannot encode are
    written with ``str()``.
    """

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record_fields(record).items():
            document.setdefault(name, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            document["exception"] = record.exc_text
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, default=str, ensure_ascii=False)


class _TokenSentryHandler(logging.StreamHandler):
    """Marks the handler ``configure_logging`` installed, so a second call replaces it."""


def configure_logging(level: str = DEFAULT_LEVEL, log_format: str = DEFAULT_FORMAT, stream: TextIO | None = None) -> logging.Handler:
    """Send every log record at ``level`` or above to ``stream`` (stderr) as text or JSON lines.

    Replaces the handler of an earlier call, and leaves handlers that others
    installed (pytest's, for example) alone.

    Raises:
        ConfigError: ``level`` or ``log_format`` is not one of the known names.
    """
    level = _check_choice(level.upper(), LOG_LEVELS, "log level")
    log_format = _check_choice(log_format.lower(), LOG_FORMATS, "log format")
    handler = _TokenSentryHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _TokenSentryHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    return handler


def resolve_log_options(
    level: str | None = None, log_format: str | None = None, config_file: Path | None = None
) -> tuple[str, str]:
    """Return the log level and format in force: option, then environment, then config file, then default.

    The CLI sets up logging before a command loads its settings, so this
    reads only the two keys and leaves the rest of the file to
    ``load_settings``. A file that cannot be read is skipped here, because
    ``load_settings`` reports it with the full context.

    Raises:
        ConfigError: a value is not a known level or format; the message
            names the option, variable or file it came from.
    """
    file_values = _logging_keys_from_file(config_file)
    resolved_level = _pick(level, "--log-level", LEVEL_ENV, file_values, "log_level", DEFAULT_LEVEL)
    resolved_format = _pick(log_format, "--log-format", FORMAT_ENV, file_values, "log_format", DEFAULT_FORMAT)
    level_value, level_origin = resolved_level
    format_value, format_origin = resolved_format
    return (
        _check_choice(level_value.upper(), LOG_LEVELS, f"log level from {level_origin}"),
        _check_choice(format_value.lower(), LOG_FORMATS, f"log format from {format_origin}"),
    )


def _pick(
    option: str | None, flag: str, env_name: str, file_values: tuple[dict[str, Any], str], key: str, default: str
) -> tuple[str, str]:
    if option is not None:
        return option, flag
    if os.environ.get(env_name):
        return os.environ[env_name], env_name
    values, origin = file_values
    if isinstance(values.get(key), str):
        return values[key], f"{origin} key {key}"
    return default, "the default"


def _logging_keys_from_file(config_file: Path | None) -> tuple[dict[str, Any], str]:
    path = config_file or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    if path is None:
        return {}, ""
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}, ""
    return (values if isinstance(values, dict) else {}), f"config file {path}"


def _check_choice(value: str, choices: tuple[str, ...], description: str) -> str:
    if value not in choices:
        raise ConfigError(f"invalid {description}: {value!r}; use one of {', '.join(choices)}")
    return value


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text_value(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (not text or any(ch.isspace() or ch in '"=' for ch in text)) else text
