"""Retry of store operations on transient ClickHouse errors."""

from __future__ import annotations

import logging

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from pipeline.sinks.store_errors import StoreError
from pipeline.sinks.store_retry import RetryPolicy, call_with_retry, is_transient

FAST = RetryPolicy(attempts=3, initial_delay_s=0.0, max_delay_s=0.0)


class FlakyOperation:
    """Raises the given errors in turn, then returns "done"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (DatabaseError("Code: 252. Too many parts", code=252), True),
        (DatabaseError("Code: 159. Timeout exceeded", code=159), True),
        (OperationalError("connection refused"), True),
        (DatabaseError("Code: 60. Unknown table", code=60), False),
        (DatabaseError("Code: 16. No such column", code=16), False),
        (DatabaseError("Code: 164. Readonly", code=164), False),
        (OperationalError("Code: 53. Type mismatch", code=53), False),
        (ValueError("bad batch"), False),
    ],
)
def test_is_transient(error: Exception, expected: bool) -> None:
    assert is_transient(error) is expected


def test_is_transient_follows_store_error_cause() -> None:
    wrapped = StoreError("migration failed")
    wrapped.__cause__ = DatabaseError("Code: 242. Table is read only", code=242)

    assert is_transient(wrapped)


def test_retry_transient_then_success(caplog: pytest.LogCaptureFixture) -> None:
    operation = FlakyOperation(OperationalError("reset"), DatabaseError("Code: 252", code=252))
    delays: list[float] = []

    with caplog.at_level(logging.WARNING):
        result = call_with_retry(operation, policy=FAST, description="insert into db.events (3 rows)", sleep=delays.append)

    assert result == "done"
    assert operation.calls == 3
    assert len(delays) == 2
    assert "attempt 1 of 3" in caplog.text
    assert "attempt 2 of 3" in caplog.text
    assert "insert into db.events (3 rows)" in caplog.text


def test_retry_schema_error_not_retried() -> None:
    operation = FlakyOperation(DatabaseError("Code: 60. Unknown table", code=60))

    with pytest.raises(DatabaseError):
        call_with_retry(operation, policy=FAST, description="insert", sleep=lambda _: None)

    assert operation.calls == 1


def test_retry_gives_up_after_attempts(caplog: pytest.LogCaptureFixture) -> None:
    operation = FlakyOperation(*[OperationalError("reset") for _ in range(5)])

    with caplog.at_level(logging.WARNING), pytest.raises(OperationalError):
        call_with_retry(operation, policy=FAST, description="insert", sleep=lambda _: None)

    assert operation.calls == 3
    assert "attempt 3 of 3" in caplog.text
    assert "giving up" in caplog.text


def test_retry_gives_up_at_warning_level(caplog: pytest.LogCaptureFixture) -> None:
    operation = FlakyOperation(*[OperationalError("reset") for _ in range(3)])

    with caplog.at_level(logging.DEBUG), pytest.raises(OperationalError):
        call_with_retry(operation, policy=FAST, description="insert", sleep=lambda _: None)

    giving_up = [record for record in caplog.records if "giving up" in record.getMessage()]
    assert len(giving_up) == 1
    assert giving_up[0].levelno == logging.WARNING
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_retry_delays_grow_and_cap() -> None:
    policy = RetryPolicy(attempts=6, initial_delay_s=1.0, max_delay_s=3.0)

    delays = [policy.delay_s(retry) for retry in range(1, 5)]

    assert 1.0 <= delays[0] <= 1.2
    assert 2.0 <= delays[1] <= 2.4
    assert 3.0 <= delays[2] <= 3.6
    assert 3.0 <= delays[3] <= 3.6


def test_retry_policy_rejects_zero_attempts() -> None:
    with pytest.raises(ValueError) as raised:
        RetryPolicy(attempts=0)

    assert "attempts" in str(raised.value)
