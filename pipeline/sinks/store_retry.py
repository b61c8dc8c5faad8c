"""Retry store operations on transient ClickHouse failures.

Only failures that a later attempt can fix are retried: lost connections,
timeouts, overload (too many parts, memory limit, too many queries) and
replication hiccups. Schema and data errors (unknown table or column, type
mismatch, read-only) fail at once, because repeating them cannot help and
would only delay the error.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from pipeline.sinks.store_errors import StoreError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# ClickHouse error codes (src/Common/ErrorCodes.cpp) that are worth a retry.
TRANSIENT_CODES: frozenset[int] = frozenset(
    {
        159,  # TIMEOUT_EXCEEDED
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        203,  # NO_FREE_CONNECTION
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        225,  # NO_ZOOKEEPER
        236,  # ABORTED
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY (replica lost its Keeper session)
        252,  # TOO_MANY_PARTS
        285,  # TOO_FEW_LIVE_REPLICAS
        319,  # UNKNOWN_STATUS_OF_INSERT
        373,  # SESSION_IS_LOCKED
        439,  # CANNOT_SCHEDULE_TASK
        999,  # KEEPER_EXCEPTION
        1000,  # POCO_EXCEPTION (connection reset and similar)
    }
)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a store operation is retried.

    The delay before retry ``n`` (1-based) is ``initial_delay_s * 2**(n-1)``,
    capped at ``max_delay_s``, with up to 20% random jitter so that workers
    that failed together do not retry together.
    """

    attempts: int = 5
    initial_delay_s: float = 0.2
    max_delay_s: float = 10.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be >= 1, got {self.attempts}")
        if self.initial_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError(
                f"RetryPolicy delays must be >= 0, got initial {self.initial_delay_s} s and max {self.max_delay_s} s"
            )

    def delay_s(self, retry: int) -> float:
        base = min(self.max_delay_s, self.initial_delay_s * 2 ** (retry - 1))
        return base * (1.0 + 0.2 * random.random())


def root_cause(error: BaseException) -> BaseException:
    """Follow ``__cause__`` to the innermost error (store errors wrap driver errors)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def is_transient(error: BaseException) -> bool:
    """Return True when retrying the operation that raised ``error`` may succeed."""
    cause = root_cause(error)
    if not isinstance(cause, DatabaseError):
        return False
    code = getattr(cause, "code", None)
    if code is not None:
        return code in TRANSIENT_CODES
    # Without a server code an OperationalError is a transport failure
    # (connection refused or reset, HTTP timeout).
    return isinstance(cause, OperationalError)


def call_with_retry(
    operation: Callable[[], T],
    *,
    policy: RetryPolicy,
    description: str,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``operation``, retrying it on transient errors as ``policy`` allows.

    ``description`` names the operation and its ids in log lines, e.g.
    "insert into tokensentry.events (50000 rows)". Driver errors and store
    errors that wrap one are retried when ``is_transient`` returns True. The last
    error is re-raised unchanged once the attempts are used up, and
    non-transient errors are re-raised at once. Every failed attempt, the
    last one included, is logged at WARNING, because the caller decides
    whether giving up is an error (the Kafka worker retries a failed batch
    write in its own loop).
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            return operation()
        except (DatabaseError, StoreError) as error:
            code = getattr(root_cause(error), "code", None)
            if not is_transient(error):
                raise
            if attempt == policy.attempts:
                logger.warning(
                    "%s failed on attempt %d of %d (ClickHouse code %s), giving up: %s",
                    description,
                    attempt,
                    policy.attempts,
                    code,
                    error,
                )
                raise
            delay = policy.delay_s(attempt)
            logger.warning(
                "%s failed on attempt %d of %d (ClickHouse code %s), retrying in %.2f s: %s",
                description,
                attempt,
                policy.attempts,
                code,
                delay,
                error,
            )
            sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")
