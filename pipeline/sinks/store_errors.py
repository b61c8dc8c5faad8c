"""Errors raised by the ClickHouse audit store, re-exported from the project's error tree.

Every message names the value that failed (a masked DSN, a path, a table or a
migration file) and what to do next, so an operator can act on the log line
alone.
"""

from pipeline.errors import StoreError, StoreInUseError, StoreReadOnlyError, TransientStoreError

__all__ = ["StoreError", "StoreInUseError", "StoreReadOnlyError", "TransientStoreError"]
