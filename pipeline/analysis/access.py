"""Open the audit store for analysis and check that the tables a command reads exist."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from pipeline import errors
from pipeline.sinks.clickhouse import AuditStore

logger = logging.getLogger(__name__)


@contextmanager
def opened_store(dsn: str) -> Iterator[AuditStore]:
    """Open the store named by ``dsn``, yield it and close it on exit."""
    store = AuditStore.open(dsn)
    try:
        yield store
    finally:
        store.close()


def existing_tables(store: AuditStore) -> set[str]:
    """Return the names of the tables and views in the store's database.

    Raises:
        pipeline.errors.StoreError: the database does not exist yet. The
            message names the command that creates it.
    """
    try:
        _, rows = store.query(
            "SELECT name FROM system.tables WHERE database = {database:String}",
            parameters={"database": store.database},
        )
    except errors.StoreError as error:
        # The read-only client runs inside the store's database, so it
        # cannot even start before the first migration created it.
        raise errors.StoreError(
            f"cannot read the tables of database {store.database} in the audit store {store.label}: {error}. "
            "Create the schema with `tokensentry store migrate`, or fill the store with `tokensentry replay`."
        ) from error
    return {name for (name,) in rows}


def require_tables(store: AuditStore, tables: Iterable[str]) -> set[str]:
    """Return the store's tables, or raise ``StoreError`` naming the fix when one of ``tables`` is missing."""
    existing = existing_tables(store)
    missing = sorted(set(tables) - existing)
    if missing:
        raise errors.StoreError(
            f"the audit store {store.label} has no table {', '.join(missing)} in database {store.database}; "
            "create the schema with `tokensentry store migrate`, or fill the store with `tokensentry replay`"
        )
    return existing
