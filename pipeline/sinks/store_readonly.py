"""Check that a statement given to ``AuditStore.query`` only reads the store.

The read-only client runs with ``readonly=2``, which rejects writes to tables
and DDL. It does not reject everything that reaches outside the store: chDB
4.4 still runs ``INSERT INTO FUNCTION file(...)``, ``SELECT ... INTO OUTFILE``,
``file()``, ``url()`` and ``SYSTEM`` statements. So ``check_read_only``
accepts one statement whose first keyword is in ``READ_KEYWORDS`` and rejects
table functions that read or write files, URLs, other servers or programs.

NOTE: this is a guard against mistakes and casual misuse, not a sandbox. It
matches text, not a parsed query, so a statement built to evade it may pass
(for example a function name spelled with escapes inside backquotes). Do not
give ``tokensentry query`` to users who must not read the host's files.
"""

from __future__ import annotations

import re

from pipeline.sinks.store_errors import StoreReadOnlyError

READ_KEYWORDS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS")

# Table functions (and the scalar file()) that read or write outside the
# store's own tables: local files, URLs, object stores, other servers and
# databases, and programs.
EXTERNAL_FUNCTIONS = (
    "file",
    "fileCluster",
    "url",
    "urlCluster",
    "s3",
    "s3Cluster",
    "gcs",
    "azureBlobStorage",
    "azureBlobStorageCluster",
    "hdfs",
    "hdfsCluster",
    "remote",
    "remoteSecure",
    "cluster",
    "clusterAllReplicas",
    "mysql",
    "postgresql",
    "odbc",
    "jdbc",
    "mongodb",
    "redis",
    "sqlite",
    "executable",
    "input",
    "iceberg",
    "icebergS3",
    "icebergAzure",
    "icebergHDFS",
    "icebergLocal",
    "deltaLake",
    "deltaLakeAzure",
    "hudi",
    "python",
)

_MAX_SHOWN = 200

# A name followed by "(" or by a comment, which ClickHouse allows between a
# function name and its arguments. The optional quotes catch `file`(...).
_EXTERNAL_CALL = re.compile(
    r"""(?<![\w$])[`"]?(?P<name>""" + "|".join(EXTERNAL_FUNCTIONS) + r""")[`"]?\s*(?:\(|/\*|--|\#)""",
    re.IGNORECASE,
)
_OUTFILE = re.compile(r"\bINTO\s+OUTFILE\b", re.IGNORECASE)
# readonly=2 lets a statement change settings in its SETTINGS clause, which
# would lift the execution time limit that query() sets.
_TIME_LIMIT_OVERRIDE = re.compile(r"\bmax_execution_time\s*=", re.IGNORECASE)
_FIRST_WORD = re.compile(r"[A-Za-z_]+")


def check_read_only(sql: str) -> None:
    """Raise ``StoreReadOnlyError`` unless ``sql`` is one statement that only reads the store."""
    excerpt = _shorten(sql)
    code, statements = _strip_comments_and_strings(sql, excerpt)
    if statements > 1:
        raise StoreReadOnlyError(
            f"A query on the audit store must be one statement, and this text has {statements}: {excerpt!r}. Remove the extra ';'-separated statements."
        )

    match = _FIRST_WORD.match(code.lstrip())
    keyword = match.group(0).upper() if match else ""
    if keyword not in READ_KEYWORDS:
        found = f"{keyword} statements are" if keyword else "this statement is"
        raise StoreReadOnlyError(
            f"Queries on the audit store must be read-only, and {found} not allowed: {excerpt!r}. "
            f"Start the statement with {', '.join(READ_KEYWORDS)}. "
            "To change data or schema use `tokensentry store migrate` or `tokensentry replay` "
            "(in Python, the AuditStore write_* methods or migrate())."
        )

    for text in (sql, code):
        call = _EXTERNAL_CALL.search(text)
        if call is not None:
            raise StoreReadOnlyError(
                f"Queries read the audit store only, and the function {call.group('name')}() reaches "
                f"outside it: {excerpt!r}. Query the store's tables; functions that read files, URLs, "
                f"other servers or programs are rejected ({', '.join(EXTERNAL_FUNCTIONS)})."
            )
    if _OUTFILE.search(code):
        raise StoreReadOnlyError(
            f"Queries on the audit store do not write files, and this statement has INTO OUTFILE: {excerpt!r}. "
            "Remove INTO OUTFILE and use `tokensentry query --format csv > FILE`."
        )
    if _TIME_LIMIT_OVERRIDE.search(code):
        raise StoreReadOnlyError(
            f"The audit store sets max_execution_time on every query, and this statement changes it: {excerpt!r}. "
            "Remove the setting (in Python, pass max_execution_time_s to AuditStore.query())."
        )


def _shorten(sql: str) -> str:
    statement = " ".join(sql.split())
    return statement if len(statement) <= _MAX_SHOWN else statement[: _MAX_SHOWN - 1] + "…"


def _strip_comments_and_strings(sql: str, excerpt: str) -> tuple[str, int]:
    """Return ``sql`` with comments blanked and string literals emptied, and its number of statements.

    Follows the ClickHouse lexer: ``--`` and ``#`` comments run to the end of
    the line, ``/* */`` comments nest, and string literals take backslash
    escapes and doubled quotes. A ';' followed only by comments and
    whitespace ends the statement without starting another.
    """
    pieces: list[str] = []
    statements = 0
    current_has_code = False
    index = 0
    length = len(sql)
    while index < length:
        char = sql[index]
        if sql.startswith("--", index) or char == "#":
            end = sql.find("\n", index)
            index = length if end < 0 else end
            pieces.append(" ")
            continue
        if sql.startswith("/*", index):
            index = _skip_block_comment(sql, index, excerpt)
            pieces.append(" ")
            continue
        if char in "'\"`":
            end = _skip_quoted(sql, index, excerpt)
            # Quoted identifiers stay, because a quoted name may call a function.
            pieces.append("''" if char == "'" else sql[index:end])
            current_has_code = True
            index = end
            continue
        if char == ";":
            if current_has_code:
                statements += 1
            current_has_code = False
            pieces.append(" ")
            index += 1
            continue
        if not char.isspace():
            current_has_code = True
        pieces.append(char)
        index += 1
    if current_has_code:
        statements += 1
    return "".join(pieces), statements


def _skip_block_comment(sql: str, start: int, excerpt: str) -> int:
    depth = 0
    index = start
    while index < len(sql):
        if sql.startswith("/*", index):
            depth += 1
            index += 2
        elif sql.startswith("*/", index):
            depth -= 1
            index += 2
            if depth == 0:
                return index
        else:
            index += 1
    raise StoreReadOnlyError(f"The statement has an unterminated /* comment: {excerpt!r}. Close it with */.")


def _skip_quoted(sql: str, start: int, excerpt: str) -> int:
    quote = sql[start]
    index = start + 1
    while index < len(sql):
        char = sql[index]
        if char == "\\":
            index += 2
        elif char == quote:
            if sql.startswith(quote * 2, index):
                index += 2
            else:
                return index + 1
        else:
            index += 1
    raise StoreReadOnlyError(f"The statement has an unterminated {quote} quote: {excerpt!r}. Close the quote.")
