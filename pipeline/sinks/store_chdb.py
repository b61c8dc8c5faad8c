"""Open an embedded chDB store directory and explain why an open failed.

chDB (4.4, engine 26.9) runs one embedded ClickHouse server per process and
one process per directory. When the engine cannot start it prints the cause
on stderr and raises only "Error initializing EmbeddedServer", which
clickhouse-connect 1.12 wraps in ``ProgrammingError``. Observed causes:

- another process has the directory open: the engine cannot ``flock``
  ``<dir>/status`` ("Another server instance in same directory is already
  running"), and the status file contains that process's PID;
- the directory is not writable: opening ``<dir>/status`` fails with EACCES;
- this process already runs the engine on another directory: the message
  names both paths.

So this module checks the directory before the engine starts and probes the
status-file lock after a failure, to raise a ``StoreError`` that names the cause.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ProgrammingError

from pipeline.sinks.store_errors import StoreError, StoreInUseError

logger = logging.getLogger(__name__)

STATUS_FILE = "status"
_PID_RE = re.compile(r"^PID:\s*(\d+)", re.MULTILINE)
_OTHER_PATH_RE = re.compile(r"already initialized with path '([^']*)'")


def prepare_directory(path: Path) -> None:
    """Create ``path`` if needed and check that this process can write to it.

    The check writes and deletes a temporary file, because ``os.access`` reports
    every directory as writable for root, even on a read-only file system.

    Raises:
        StoreError: the directory cannot be created or is not writable. The
            message names the path.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StoreError(
            f"Cannot create the chDB store directory {path}: {error.strerror or error}. "
            "Create it with write access for this user or pass another --store."
        ) from error
    try:
        with tempfile.TemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as error:
        raise StoreError(
            f"The chDB store directory {path} is not writable: {error.strerror or error}. "
            "Give this user write access to it or pass another --store."
        ) from error


def open_client(path: Path, **client_options: Any) -> Client:
    """Return a clickhouse-connect client on the chDB engine in ``path``.

    ``path`` must be absolute and prepared with ``prepare_directory``. Clients
    opened on the same path in one process share one engine.

    Raises:
        StoreInUseError: another process has the directory open.
        StoreError: the engine failed for another reason. The message names
            the path and the cause.
    """
    try:
        return clickhouse_connect.get_client(interface="chdb", path=str(path), **client_options)
    except ProgrammingError as error:
        raise _explain_open_failure(path, error) from error


def _explain_open_failure(path: Path, error: ProgrammingError) -> StoreError:
    message = str(error)
    other = _OTHER_PATH_RE.search(message)
    if other is not None:
        return StoreError(
            f"Cannot open the chDB store {path}: this process already runs chDB on {other.group(1)}, "
            "and chDB allows one store directory per process. Close the other AuditStore first."
        )

    holder = lock_holder(path)
    if holder is not None:
        logger.error("chDB store %s is locked by another process (%s)", path, holder)
        return StoreInUseError(
            f"The chDB store {path} is in use by another process ({holder}). chDB allows one process "
            "per store directory: stop the other process or pass another --store."
        )

    try:
        os.close(os.open(path / STATUS_FILE, os.O_RDWR))
    except FileNotFoundError:
        pass
    except OSError as status_error:
        return StoreError(
            f"The chDB store directory {path} is not usable: cannot open {path / STATUS_FILE} "
            f"({status_error.strerror or status_error}). Fix its permissions or pass another --store."
        )

    first_line = message.splitlines()[0] if message else repr(error)
    return StoreError(f"chDB failed to open the store {path}: {first_line}")


def lock_holder(path: Path) -> str | None:
    """Return a description of the process holding the chDB lock on ``path``, or None.

    chDB takes an exclusive ``flock`` on ``<path>/status`` and writes its PID
    there. Probing takes the lock for an instant when it is free, so call this
    only after an open failed, never while the engine might be starting.
    """
    status = path / STATUS_FILE
    try:
        descriptor = os.open(status, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            return _describe_holder(status)
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        return None
    finally:
        os.close(descriptor)


def _describe_holder(status: Path) -> str:
    try:
        match = _PID_RE.search(status.read_text(errors="replace"))
    except OSError:
        match = None
    if match is None:
        return f"lock on {status}"
    return f"PID {match.group(1)}, lock on {status}"
