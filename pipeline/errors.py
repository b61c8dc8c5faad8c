"""The project's error tree.

The run loop decides between retry, pause and dead-letter from the class,
never from message text. Every message names the value that failed and what
to do about it.
"""

from __future__ import annotations


class TokenSentryError(Exception):
    """Root of every error TokenSentry raises on purpose."""

    retriable: bool = False
    """True when the same call may succeed later (a server down or slow)."""


class ConfigError(TokenSentryError):
    """A setting, policy or registry file is invalid; the message names the key."""


class InputError(TokenSentryError):
    """An input file or stream cannot be read (missing, unreadable, bad compression)."""


class StoreError(TokenSentryError):
    """The ClickHouse audit store cannot be opened or written."""


class StoreInUseError(StoreError):
    """Another process holds the lock on the embedded chDB store directory.

    chDB runs one embedded server per directory and locks ``<dir>/status``
    while it is open, so a second process cannot open the same directory.
    """


class StoreReadOnlyError(StoreError):
    """A statement given to ``AuditStore.query`` tried to change data or schema."""


class TransientStoreError(StoreError):
    """A write failed for a reason that may pass: timeouts, a restarting server."""

    retriable = True


class PublishError(TokenSentryError):
    """An action or dead letter could not be delivered to its topic or file."""

    retriable = True
