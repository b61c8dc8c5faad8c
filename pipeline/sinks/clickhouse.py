"""Audit store: events, windows, detections, actions and receipts in ClickHouse.

The store also keeps the Kafka workers' partition checkpoints
(``save_checkpoint``, ``load_checkpoint``) in the table ``state_checkpoints``.

``AuditStore.open(dsn)`` connects through clickhouse-connect to either an
embedded chDB engine (``chdb:///abs/dir``, the default for one machine) or a
ClickHouse server (``http(s)://user:password@host:port/db``). The schema comes
from the versioned SQL files in ``schemas/migrations`` (see
``store_migrations``), and every write is one columnar Arrow insert.

Deduplication. Every record has a deterministic id (``event_id`` from source,
partition and offset, ``window_id``, ``detection_id``, ``action_id``), and
every audit table is a ReplacingMergeTree whose ORDER BY ends with that id.
A redelivered copy therefore has the same sorting key and partition and
collapses into one row when parts merge. ``SELECT ... FINAL`` and the
``*_final`` views are exact at any time. Insert deduplication tokens alone
would not do: ClickHouse drops a block only when it is identical to an
earlier one, and a Kafka batch redelivered after a crash usually has other
boundaries than the first attempt.

Merges cannot fix the ``token_minute`` rollup, because its materialized view
aggregates each insert as it arrives. So ``write_events`` also looks up which
of the batch's (source, partition, offset) ranges are already stored, and
inserts only the events it has not seen. This keeps the rollup exact after a
crash-and-redeliver. It can still double-count when two workers write the
same partition at the same moment (a consumer-group rebalance while both are
mid-batch). The raw tables stay exact through FINAL even then.

Errors. When a ``write_*`` or checkpoint call still fails on a transient
cause (connection refused, timeout, server restarting) after every attempt
of its ``RetryPolicy``, it raises ``TransientStoreError``, whose
``retriable`` is True, so the caller can decide from the class whether to
try again. Other ClickHouse failures of these calls raise ``StoreError``.

chDB runs one engine per process and one process per directory. A second
process that opens the same directory gets ``StoreInUseError``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

import clickhouse_connect
import numpy as np
import pyarrow as pa
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError, DatabaseError

from pipeline.sinks import store_arrow, store_chdb, store_migrations
from pipeline.sinks.store_readonly import check_read_only
from pipeline.sinks.store_dsn import ChdbTarget, ServerTarget, mask_dsn, parse_dsn
from pipeline.sinks.store_errors import StoreError, StoreInUseError, StoreReadOnlyError, TransientStoreError
from pipeline.sinks.store_migrations import Retention
from pipeline.sinks.store_retry import RetryPolicy, call_with_retry, is_transient
from schemas.actions import Action, ActionReceipt
from schemas.deadletters import DeadLetter
from schemas.detections import Detection

logger = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = [
    "AuditStore",
    "Checkpoint",
    "Retention",
    "RetryPolicy",
    "StoreError",
    "StoreInUseError",
    "StoreReadOnlyError",
    "TransientStoreError",
]

# ClickHouse error codes the store turns into specific advice.
READONLY_CODE = 164
UNKNOWN_DATABASE_CODE = 81
SCHEMA_CODES = frozenset({16, 47, 60, 81})  # NO_SUCH_COLUMN_IN_TABLE, UNKNOWN_IDENTIFIER, UNKNOWN_TABLE, UNKNOWN_DATABASE

AUDIT_TABLES = frozenset({"events", "windows", "detections", "actions", "dead_letters", "receipts", "token_minute"})

# readonly=2 rejects writes and DDL but still lets the driver send per-query
# settings, which readonly=1 would reject too.
READER_SETTINGS = {"readonly": 2}
# The server stops a query() statement after this many seconds, so a slow
# statement or an unreachable URL cannot hang a command.
DEFAULT_MAX_EXECUTION_TIME_S = 300.0

# Skipping the in-block collapse of ReplacingMergeTree on insert cut the
# insert cost of a 50k-row event batch on chDB 4.4 by about a quarter
# (3.3 to 2.6 us/row on a loaded 2-CPU machine). FINAL and merges still
# collapse duplicates.
EVENT_INSERT_SETTINGS = {"optimize_on_insert": 0}
# Tables are partitioned by day, and ClickHouse rejects an insert that spans
# more than 100 partitions by default. A replayed batch of a sparse log can
# span more days than that, and its events must not be lost, so the limit is off.
INSERT_SETTINGS = {"max_partitions_per_insert_block": 0}
ASYNC_INSERT_SETTINGS = {"async_insert": 1, "wait_for_async_insert": 1}

CHECKPOINT_TABLE = "state_checkpoints"
CHECKPOINT_COLUMNS = ["group_id", "topic", "partition", "offset", "version", "owner", "state_bytes", "state"]
# On a cluster (deploy/clickhouse/cluster.sql) state_checkpoints is a
# Distributed table, which by default queues inserts and sends them to the
# shard later. A synchronous insert makes a saved checkpoint readable at once
# by the partition's next owner. insert_distributed_sync is the older name of
# distributed_foreground_insert and still its alias (ClickHouse settings
# reference; chDB 4.4 accepts both), so older servers accept it too. On a
# single node the setting has no effect. NOTE: not yet run on a cluster.
CHECKPOINT_INSERT_SETTINGS = {"insert_distributed_sync": 1}


class Checkpoint(NamedTuple):
    """A stored partition state: the first offset it does not cover and the ``Pipeline.checkpoint`` blob."""

    offset: int
    state: bytes


class AuditStore:
    """Columnar writer and read-only query access for the audit tables, and the workers' checkpoint table.

    Use ``open`` to create one. Methods may be called from several threads:
    each call is one request on a client that serializes its own calls. Two
    threads writing the same events at once can both miss the duplicate
    lookup, which FINAL still corrects in the raw tables.
    """

    def __init__(
        self,
        writer: Client,
        target: ChdbTarget | ServerTarget,
        *,
        label: str,
        retry: RetryPolicy,
        async_insert: bool,
        client_options: Mapping[str, Any],
    ) -> None:
        self._writer = writer
        self._reader: Client | None = None
        self._reader_lock = threading.Lock()
        self._target = target
        self._label = label
        self._retry = retry
        self._async_insert = async_insert
        self._client_options = dict(client_options)
        self._closed = False

    # ---- opening ---------------------------------------------------------

    @classmethod
    def open(
        cls,
        dsn: str,
        *,
        retry: RetryPolicy | None = None,
        async_insert: bool | None = None,
        connect_timeout_s: float = 10.0,
        send_receive_timeout_s: float = 300.0,
        create: bool = True,
    ) -> AuditStore:
        """Open the store named by ``dsn`` (see ``store_dsn`` for the accepted forms).

        A chdb directory is created when missing, unless ``create`` is False:
        read-only commands pass False, so that they fail on a missing store
        instead of leaving an empty directory behind. ``async_insert`` makes a
        server buffer inserts and acknowledge them once flushed. It defaults
        to the DSN option and is rejected for chdb. The timeouts apply to
        servers only.

        Raises:
            StoreError: the DSN is malformed, the chdb directory is missing
                and ``create`` is False, cannot be created or written, or the
                server cannot be reached.
            StoreInUseError: another process has the chdb directory open.
        """
        target = parse_dsn(dsn)
        label = mask_dsn(dsn)
        retry = retry or RetryPolicy()
        if isinstance(target, ChdbTarget):
            if async_insert:
                raise StoreError(f"async_insert applies to ClickHouse servers only. Remove it for the chDB store {label}")
            options: dict[str, Any] = {"tz_mode": "aware"}
            if not create and not target.path.is_dir():
                raise StoreError(
                    f"no audit store at {target.path}; run tokensentry replay or tokensentry store migrate first"
                )
            store_chdb.prepare_directory(target.path)
            writer = store_chdb.open_client(target.path, **options)
            use_async = False
        else:
            options = _server_options(target, connect_timeout_s, send_receive_timeout_s)
            writer = _connect_server(label, options)
            use_async = target.async_insert if async_insert is None else async_insert
        logger.info(
            "Opened audit store %s (database %s, async_insert %s)",
            label,
            target.database,
            use_async,
        )
        return cls(
            writer,
            target,
            label=label,
            retry=retry,
            async_insert=use_async,
            client_options=options,
        )

    @property
    def database(self) -> str:
        return self._target.database

    @property
    def label(self) -> str:
        """The DSN with its password masked, for logs and messages."""
        return self._label

    # ---- schema ----------------------------------------------------------

    def migrate(
        self,
        retention: Retention | None = None,
        *,
        up_to: int | None = None,
        directory: Path = store_migrations.MIGRATIONS_DIR,
    ) -> list[int]:
        """Apply pending migrations and the retention, returning the versions applied.

        Safe to run from several workers at once and to run again: applied
        migrations are skipped and TTLs are altered only when they differ
        from ``retention`` (default ``Retention()``). The whole call is
        retried on transient server errors because every step is idempotent.
        ``up_to`` stops after that version. ``directory`` replaces the
        packaged migrations, to stage an upgrade or test one.

        Raises:
            StoreError: a migration file changed after it was applied, or a
                statement failed. The message names the file.
        """
        self._check_open()
        retention = retention or Retention()
        return call_with_retry(
            lambda: store_migrations.migrate(
                self._writer, self.database, retention, up_to=up_to, directory=directory
            ),
            policy=self._retry,
            description=f"migrate database {self.database} of {self._label}",
        )

    def optimize(self, table_name: str) -> None:
        """Merge all parts of one audit table now (``OPTIMIZE TABLE ... FINAL``).

        Merging collapses redelivered copies, so plain reads become exact
        too, and compression reaches its steady state. It rewrites the whole
        table: use it in tests, benchmarks and maintenance windows, not per batch.

        Raises:
            ValueError: ``table_name`` is not an audit table.
        """
        self._check_open()
        if table_name not in AUDIT_TABLES:
            raise ValueError(f"Unknown audit table {table_name!r}, expected one of {sorted(AUDIT_TABLES)}")
        logger.info("Optimizing %s.%s", self.database, table_name)
        call_with_retry(
            lambda: self._writer.command(f"OPTIMIZE TABLE {self.database}.{table_name} FINAL"),
            policy=self._retry,
            description=f"optimize {self.database}.{table_name}",
        )

    # ---- writes ----------------------------------------------------------

    def write_events(self, columns: Mapping[str, np.ndarray]) -> int:
        """Insert an event batch (``EVENT_COLUMNS``) and return the number of rows inserted.

        Events whose ``event_id`` is already stored, or repeats earlier in the
        batch, are skipped, so a redelivered batch inserts only what the
        first attempt did not. ``ts`` float seconds become millisecond UTC
        timestamps.

        Raises:
            ValueError, TypeError: the batch does not match ``EVENT_COLUMNS``.
            TransientStoreError: the retries are used up on a transient
                failure. The same call may succeed later.
            StoreError: the insert failed for another reason. The message
                names the table.
        """
        self._check_open()
        table = store_arrow.events_table(columns)
        if table.num_rows == 0:
            return 0
        table = _drop_repeated_ids(table, "event_id")
        return self._retrying_insert("events", table.num_rows, lambda: self._insert_new_events(table))

    def write_windows(self, columns: Mapping[str, np.ndarray]) -> int:
        """Insert a window batch (``WINDOW_KEYS`` plus ``WINDOW_FEATURES``) and return its row count."""
        self._check_open()
        table = store_arrow.windows_table(columns)
        return self._insert("windows", table)

    def write_detections(self, detections: Sequence[Detection]) -> int:
        """Insert detections, evidence stored as a JSON array string, and return their count."""
        self._check_open()
        return self._insert("detections", store_arrow.detections_table(detections))

    def write_actions(self, actions: Sequence[Action], published: bool) -> int:
        """Insert actions with the ``published`` flag and return their count.

        Recording an action again with ``published=True`` supersedes an
        unpublished copy, because ``published`` is the table's version column.
        """
        self._check_open()
        return self._insert("actions", store_arrow.actions_table(actions, published))

    def write_dead_letters(self, letters: Sequence[DeadLetter]) -> int:
        """Insert dead letters and return their count."""
        self._check_open()
        return self._insert("dead_letters", store_arrow.dead_letters_table(letters))

    def write_receipts(
        self,
        receipts: Sequence[ActionReceipt],
        received_at: float | Sequence[float] | None = None,
    ) -> int:
        """Insert enforcement receipts and return their count.

        ``received_at`` is when the pipeline received each receipt, in
        seconds since the Unix epoch: one time for the whole batch, one per
        receipt (e.g. the Kafka message timestamps), or None for now.
        """
        self._check_open()
        if received_at is None:
            received_at = time.time()
        if isinstance(received_at, int | float):
            received_at = [float(received_at)] * len(receipts)
        return self._insert("receipts", store_arrow.receipts_table(receipts, received_at))

    def _insert(self, table_name: str, table: pa.Table) -> int:
        if table.num_rows == 0:
            return 0
        settings = dict(ASYNC_INSERT_SETTINGS) if self._async_insert else {}

        def insert() -> int:
            self._insert_arrow(table_name, table, settings)
            return table.num_rows

        return self._retrying_insert(table_name, table.num_rows, insert)

    def _retrying_insert(self, table_name: str, rows: int, operation: Callable[[], int]) -> int:
        description = f"insert into {self.database}.{table_name} ({rows} rows)"
        try:
            return call_with_retry(operation, policy=self._retry, description=description)
        except DatabaseError as error:
            raise _write_error(self.database, table_name, rows, error) from error

    def _insert_arrow(self, table_name: str, table: pa.Table, settings: Mapping[str, Any]) -> None:
        self._writer.insert_arrow(table_name, table, database=self.database, settings={**INSERT_SETTINGS, **settings})

    def _insert_new_events(self, table: pa.Table) -> int:
        """Insert the rows of ``table`` whose event ids are not stored yet and return how many."""
        stored = self._stored_event_ids(table)
        if stored.size:
            keep = ~np.isin(table.column("event_id").to_numpy(), stored)
            logger.info(
                "Skipping %d of %d events already stored in %s.events (redelivered batch)",
                table.num_rows - int(keep.sum()),
                table.num_rows,
                self.database,
            )
            table = table.filter(pa.array(keep))
        if table.num_rows == 0:
            return 0
        settings = dict(EVENT_INSERT_SETTINGS)
        if self._async_insert:
            settings.update(ASYNC_INSERT_SETTINGS)
        self._insert_arrow("events", table, settings)
        return table.num_rows

    def _stored_event_ids(self, table: pa.Table) -> np.ndarray:
        """Return the ids of stored events in the batch's (source, partition) offset ranges.

        The ``idx_offset`` minmax index lets ClickHouse skip every granule
        outside those ranges, so a batch that was never written costs one
        small query.
        """
        ranges = table.group_by(["source", "partition"]).aggregate([("offset", "min"), ("offset", "max")])
        conditions = []
        parameters: dict[str, Any] = {}
        for index, (source, partition, low, high) in enumerate(
            zip(
                ranges.column("source").to_pylist(),
                ranges.column("partition").to_pylist(),
                ranges.column("offset_min").to_pylist(),
                ranges.column("offset_max").to_pylist(),
                strict=True,
            )
        ):
            conditions.append(
                f"(source = {{s{index}:String}} AND partition = {{p{index}:Int32}} "
                f"AND offset BETWEEN {{lo{index}:Int64}} AND {{hi{index}:Int64}})"
            )
            parameters.update({f"s{index}": source, f"p{index}": partition, f"lo{index}": low, f"hi{index}": high})
        result = self._writer.query(
            f"SELECT event_id FROM {self.database}.events WHERE {' OR '.join(conditions)}",
            parameters=parameters,
        )
        column = result.result_columns[0] if result.result_columns else []
        return np.asarray(column, dtype=np.uint64)

    # ---- partition checkpoints -------------------------------------------

    def save_checkpoint(
        self,
        group_id: str,
        topic: str,
        partition: int,
        offset: int,
        state: bytes,
        *,
        owner: str,
        retry: RetryPolicy | None = None,
    ) -> None:
        """Insert the state of one Kafka partition as processed by consumer group ``group_id``.

        ``offset`` is the first offset the state does not cover, and
        ``owner`` names the writing worker in the row. The row's ``version``
        is the write time in nanoseconds, so the newest save wins in
        ``load_checkpoint`` and when parts merge. ``retry`` replaces the
        store's retry policy for this call.

        Raises:
            TransientStoreError: the retries are used up on a transient
                failure. The same call may succeed later.
            StoreError: the insert failed for another reason, e.g. the
                table is missing because ``migrate`` has not run.
        """
        self._check_open()
        row = [group_id, topic, partition, offset, time.time_ns(), owner, len(state), state]
        action = f"Checkpoint save of {topic}/{partition} (group {group_id}, offset {offset}, {len(state)} bytes)"
        try:
            call_with_retry(
                lambda: self._writer.insert(
                    CHECKPOINT_TABLE,
                    [row],
                    column_names=CHECKPOINT_COLUMNS,
                    database=self.database,
                    settings=dict(CHECKPOINT_INSERT_SETTINGS),
                ),
                policy=retry or self._retry,
                description=f"{action} into {self.database}.{CHECKPOINT_TABLE}",
            )
        except DatabaseError as error:
            raise _checkpoint_error(action, self.database, error) from error

    def load_checkpoint(
        self,
        group_id: str,
        topic: str,
        partition: int,
        *,
        retry: RetryPolicy | None = None,
    ) -> Checkpoint | None:
        """Return the newest checkpoint of ``topic``/``partition`` saved for ``group_id``, or None.

        FINAL keeps only the row with the highest ``version``, so the result
        is exact before parts merge. ``retry`` replaces the store's retry
        policy for this call.

        Raises:
            TransientStoreError: the retries are used up on a transient
                failure. The same call may succeed later.
            StoreError: the query failed for another reason, e.g. the
                table is missing because ``migrate`` has not run.
        """
        self._check_open()
        action = f"Checkpoint load of {topic}/{partition} (group {group_id})"
        try:
            result = call_with_retry(
                lambda: self._writer.query(
                    f"SELECT offset, state FROM {self.database}.{CHECKPOINT_TABLE} FINAL "
                    "WHERE group_id = {group_id:String} AND topic = {topic:String} AND partition = {partition:Int32}",
                    parameters={"group_id": group_id, "topic": topic, "partition": partition},
                    column_formats={"state": "bytes"},
                ),
                policy=retry or self._retry,
                description=f"{action} from {self.database}.{CHECKPOINT_TABLE}",
            )
        except DatabaseError as error:
            raise _checkpoint_error(action, self.database, error) from error
        if not result.result_rows:
            return None
        offset, state = result.result_rows[0]
        return Checkpoint(offset=int(offset), state=state)

    # ---- reads -----------------------------------------------------------

    def query(
        self,
        sql: str,
        parameters: Mapping[str, Any] | Sequence[Any] | None = None,
        *,
        max_execution_time_s: float = DEFAULT_MAX_EXECUTION_TIME_S,
    ) -> tuple[list[str], list[tuple]]:
        """Run one read-only statement and return (column names, rows).

        The statement must start with SELECT, WITH, SHOW, DESCRIBE, DESC,
        EXPLAIN or EXISTS, and must not call a table function that reaches
        outside the store (``store_readonly.EXTERNAL_FUNCTIONS``). Unqualified
        table names resolve in the store's database. Use ``{name:Type}``
        placeholders with ``parameters`` for values. The server stops the
        statement after ``max_execution_time_s`` seconds.

        Raises:
            StoreReadOnlyError: ``sql`` is not one read-only statement, calls
                an external table function, or writes data or schema.
            StoreError: the query failed or timed out. The message includes
                the server's.
        """
        settings = _read_settings(sql, max_execution_time_s)
        result = self._run_read(lambda reader: reader.query(sql, parameters=parameters, settings=settings), sql)
        return list(result.column_names), [tuple(row) for row in result.result_rows]

    def query_arrow(
        self,
        sql: str,
        parameters: Mapping[str, Any] | Sequence[Any] | None = None,
        *,
        max_execution_time_s: float = DEFAULT_MAX_EXECUTION_TIME_S,
    ) -> pa.Table:
        """Run one read-only statement, checked as in ``query``, and return the result as an Arrow table."""
        settings = _read_settings(sql, max_execution_time_s)
        return self._run_read(lambda reader: reader.query_arrow(sql, parameters=parameters, settings=settings), sql)

    def _run_read(self, operation: Callable[[Client], T], sql: str) -> T:
        reader = self._reader_client()
        try:
            return operation(reader)
        except DatabaseError as error:
            statement = " ".join(sql.split())[:200]
            if getattr(error, "code", None) == READONLY_CODE:
                raise StoreReadOnlyError(
                    f"Queries on the audit store must be read-only, and this one writes: {statement!r}. "
                    "To change the schema run `tokensentry store migrate`; data is written by "
                    "`tokensentry replay` or `tokensentry run` (in Python, AuditStore.migrate() and the write_* methods)."
                ) from error
            raise StoreError(f"Query on {self._label} failed: {statement!r}: {error}") from error

    def _reader_client(self) -> Client:
        """Return the read-only client, created on first use.

        It is created lazily because it runs in the store's database, which
        exists only once ``migrate`` has run.
        """
        self._check_open()
        with self._reader_lock:
            if self._reader is None:
                self._reader = self._open_reader()
            return self._reader

    def _open_reader(self) -> Client:
        options = {**self._client_options, "database": self.database, "settings": dict(READER_SETTINGS)}
        try:
            if isinstance(self._target, ChdbTarget):
                return store_chdb.open_client(self._target.path, **options)
            return _connect_server(self._label, options)
        except DatabaseError as error:
            if getattr(error, "code", None) == UNKNOWN_DATABASE_CODE:
                raise StoreError(
                    f"Database {self.database} does not exist in {self._label}. Create it with `tokensentry store migrate` "
                    "(in Python, AuditStore.migrate()), or fill the store with `tokensentry replay`"
                ) from error
            raise StoreError(f"Cannot open a read-only connection to {self._label}: {error}") from error

    # ---- closing ---------------------------------------------------------

    def close(self) -> None:
        """Close the clients. For chDB this releases the directory lock unless another store in this process uses it."""
        if self._closed:
            return
        self._closed = True
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        self._writer.close()
        logger.info("Closed audit store %s", self._label)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"The audit store {self._label} is closed. Open a new one with AuditStore.open()")

    def __enter__(self) -> AuditStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _drop_repeated_ids(table: pa.Table, id_column: str) -> pa.Table:
    """Keep the first row of each id, so a batch never double-counts in the rollups."""
    ids = table.column(id_column).to_numpy()
    _, first_rows = np.unique(ids, return_index=True)
    if first_rows.size == ids.size:
        return table
    logger.info("Dropping %d rows with a repeated %s from a batch of %d", ids.size - first_rows.size, id_column, ids.size)
    return table.take(pa.array(np.sort(first_rows)))


def _read_settings(sql: str, max_execution_time_s: float) -> dict[str, Any]:
    """Check ``sql`` with ``check_read_only`` and return the per-query settings of a read."""
    check_read_only(sql)
    if not (max_execution_time_s > 0 and math.isfinite(max_execution_time_s)):
        raise ValueError(f"max_execution_time_s must be a positive number of seconds, got {max_execution_time_s!r}")
    return {"max_execution_time": max_execution_time_s}


def _server_options(target: ServerTarget, connect_timeout_s: float, send_receive_timeout_s: float) -> dict[str, Any]:
    # NOTE: only the connection-failure path of the server backend has run in
    # tests. Writes, migrations and readonly=2 were verified on chDB alone.
    return {
        "interface": target.scheme,
        "host": target.host,
        "port": target.port,
        "username": target.username,
        "password": target.password,
        "secure": target.secure,
        "verify": target.verify,
        "ca_cert": target.ca_cert,
        "connect_timeout": connect_timeout_s,
        "send_receive_timeout": send_receive_timeout_s,
        # A session id would serialize concurrent requests from worker threads
        # and fail them with SESSION_IS_LOCKED.
        "autogenerate_session_id": False,
        "tz_mode": "aware",
    }


def _connect_server(label: str, options: Mapping[str, Any]) -> Client:
    try:
        return clickhouse_connect.get_client(**options)
    except ClickHouseError as error:
        logger.error("Cannot connect to the audit store %s: %s", label, error)
        raise StoreError(
            f"Cannot connect to ClickHouse at {label}: {error}. "
            "Check the host, port, user and password, and that the server is running."
        ) from error


def _write_error(database: str, table_name: str, rows: int, error: DatabaseError) -> StoreError:
    code = getattr(error, "code", None)
    advice = ""
    if code in SCHEMA_CODES:
        advice = "Create or update the schema with `tokensentry store migrate` (in Python, AuditStore.migrate())."
    error_class = StoreError
    if is_transient(error):
        advice = "The retries are used up. Do not commit the batch's source offsets, so that it is redelivered."
        error_class = TransientStoreError
    return error_class(f"Insert of {rows} rows into {database}.{table_name} failed (ClickHouse code {code}): {error}. {advice}".rstrip())


def _checkpoint_error(action: str, database: str, error: DatabaseError) -> StoreError:
    code = getattr(error, "code", None)
    message = f"{action} in {database}.{CHECKPOINT_TABLE} failed (ClickHouse code {code}): {error}."
    if is_transient(error):
        return TransientStoreError(f"{message} The retries are used up. Try again once the server is reachable.")
    if code in SCHEMA_CODES:
        return StoreError(
            f"{message} Create the {CHECKPOINT_TABLE} table with `tokensentry store migrate` (in Python, AuditStore.migrate())."
        )
    return StoreError(message)
