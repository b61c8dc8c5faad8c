"""NGINX and Apache access logs: combined (``nginx_combined``) and common (``clf``) format.

A combined line is ``client ident user [time] "request" status bytes
"referer" "user agent"``. NGINX's ``combined`` format and Apache's
``%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"`` write the same
fields, so one format id covers both. A common line ends after the bytes.

Both parsers also accept:

- a virtual host before the client (Apache ``vhost_combined``), and a
  missing or extra field between client and time;
- extra fields after the user agent, or after the bytes in common format
  (see ``extras``);
- request lines that are not HTTP (``"-"``, TLS handshakes logged as
  ``\\x16\\x03...``, ``"GET /"`` without protocol), split into method and
  target as far as they parse;
- ``\\"`` inside quoted fields (Apache's escape), unescaped in referer and
  user agent; other escapes such as ``\\xHH`` stay as logged;
- a user agent cut off before its closing quote.

The logged user (``%u``, ``$remote_user``) goes to ``account``.

The fast path is one regex built from single-character negated classes,
which CPython's regex engine runs much faster than the escape-aware classes
of the slow path (``parse_clf_line``).
"""

from __future__ import annotations

import re

from pipeline.parsers.errors import FormatMismatch
from pipeline.parsers.extras import apply_extra_fields
from pipeline.parsers.fields import NAN, count_in_range, quote_value
from pipeline.parsers.timestamps import clf_epoch_cache, clf_time_to_epoch

# Byte counts of up to MAX_COUNT_DIGITS digits; longer ones go to the slow path, which checks their range.
COMBINED_FAST_PATTERN = re.compile(
    r'([^ ]+) [^ ]+ ([^ ]+) \[([^\]]+)\] "([^"]*)" ([0-9]{3}|-) ([0-9]{1,18}|-) "([^"]*)" "([^"]*)"(.*)'
)
COMMON_FAST_PATTERN = re.compile(r'([^ ]+) [^ ]+ ([^ ]+) \[([^\]]+)\] "([^"]*)" ([0-9]{3}|-) ([0-9]{1,18}|-)')

# Escape-aware quoted field: anything but quote and backslash, or a backslash pair.
_QUOTED_BODY = r'[^"\\]*(?:\\.[^"\\]*)*'
_SLOW_PATTERN = re.compile(
    r"([^\[]*?) ?\[([^\]]*)\] +"  # client and other prefix fields, time
    rf'"({_QUOTED_BODY})" +'  # request line
    r'([^ ]+) +([^ "]+)'  # status, bytes
    rf'(?: +"({_QUOTED_BODY})"'  # referer
    rf'(?: +"({_QUOTED_BODY})(?:"|$))?)?'  # user agent, possibly cut off
    r"(.*)"  # extra fields
)
_STATUS = re.compile(r"[0-9]{3}")
_BYTES = re.compile(r"[0-9]+")
_METHOD = re.compile(r"[A-Z][A-Z0-9_-]{0,31}")

_clf_cache_get = clf_epoch_cache.get


def split_request_line(request: str) -> tuple[str, str]:
    """Split a logged request line into (method, target) as far as it parses.

    ``METHOD TARGET HTTP/x`` gives method and target as logged, and a target
    with spaces is kept whole. Otherwise a first word of upper-case letters
    is the method and the next word the target. Anything else, such as
    ``-`` or binary junk, gives ("", "").
    """
    method, _, rest = request.partition(" ")
    target, _, protocol = rest.partition(" ")
    if protocol[:5] == "HTTP/" and " " not in protocol:
        return method, target
    parts = request.split()
    if not parts:
        return "", ""
    if len(parts) >= 3 and parts[-1].startswith("HTTP/"):
        return parts[0], " ".join(parts[1:-1])
    if _METHOD.fullmatch(parts[0]) is None:
        return "", ""
    if len(parts) == 1:
        return parts[0], ""
    return parts[0], parts[1]


def _unescape_quotes(value: str) -> str:
    return value.replace('\\"', '"') if '\\"' in value else value


def _split_prefix(prefix: str) -> tuple[str, str, str]:
    """Return (client, user, virtual host) from the fields before ``[time]``.

    One to three fields are ``client [ident [user]]``. With four or more, the
    first is the virtual host, the second the client and the last the user.
    """
    fields = prefix.split()
    if not fields:
        raise FormatMismatch("no client address before the [time] field")
    if len(fields) >= 4:
        host, client, user = fields[0], fields[1], fields[-1]
    else:
        host, client = "", fields[0]
        user = fields[2] if len(fields) == 3 else "-"
    return client, ("" if user == "-" else user), host


def parse_clf_line(line: str, combined: bool) -> tuple[tuple, str]:
    """Parse a CLF-family line with the escape-aware slow path.

    Returns the row and the text after the last parsed field (extra fields).
    ``combined`` requires the referer field, otherwise it must be absent.

    Raises:
        FormatMismatch: the line lacks the fields of the format.
        ValueError: a field has an invalid value.
    """
    match = _SLOW_PATTERN.match(line)
    if match is None:
        raise FormatMismatch('no [time] "request" status bytes sequence')
    prefix, time_text, request, status_text, size_text, referer, agent, tail = match.groups()
    if combined and referer is None:
        raise FormatMismatch("no quoted referer after the byte count")
    if not combined and referer is not None:
        raise FormatMismatch("a quoted referer follows the byte count, as in combined format")
    client, user, host = _split_prefix(prefix)
    if status_text == "-":
        status = 0
    elif _STATUS.fullmatch(status_text):
        status = int(status_text)
    else:
        raise ValueError(f"status {quote_value(status_text)} is not a 3-digit number")
    if size_text == "-":
        size = -1
    elif _BYTES.fullmatch(size_text):
        size = count_in_range("bytes", int(size_text))
    else:
        raise ValueError(f"bytes {quote_value(size_text)} is not a number")
    ts = clf_time_to_epoch(time_text)
    method, target = split_request_line(request)
    agent = "" if agent is None or agent == "-" else _unescape_quotes(agent)
    referer = "" if referer is None or referer == "-" else _unescape_quotes(referer)
    row = (ts, client, method, host, target, "", status, NAN, -1, size, agent, referer,
           "", "", 0, "", "", user, "", "")  # fmt: skip
    return row, tail


def _finish(row: tuple, tail: str) -> tuple:
    return apply_extra_fields(row, tail) if tail and not tail.isspace() else row


class CombinedParser:
    """NGINX / Apache combined format, with optional extra fields."""

    format_id = "nginx_combined"

    def matches(self, line: str) -> bool:
        """Return True when ``line`` has a bracket and a quote, as every CLF line does."""
        return "[" in line and '"' in line

    def parse_line(self, line: str) -> tuple:
        """Parse one combined line into a row (see the module docstring for variants)."""
        match = COMBINED_FAST_PATTERN.match(line)
        if match is not None:
            client, user, time_text, request, status, size, referer, agent, tail = match.groups()
            # The fast split ignores escapes, yet it is exact when nothing follows the
            # user agent. Each boundary the pattern checks (a space before an opening
            # quote, digits before the referer) rules out a backslash before that quote.
            # So an escaped quote taken for a boundary would leave text after the final
            # quote. Extra fields could hide such a shift, so with them the line must
            # contain no \" at all.
            if not tail or '\\"' not in line:
                ts = _clf_cache_get(time_text)
                if ts is None:
                    ts = clf_time_to_epoch(time_text)
                method, _, rest = request.partition(" ")
                target, _, protocol = rest.partition(" ")
                if protocol[:5] != "HTTP/" or " " in protocol:
                    method, target = split_request_line(request)
                row = (
                    ts, client, method, "", target, "",
                    int(status) if status != "-" else 0, NAN, -1, int(size) if size != "-" else -1,
                    "" if agent == "-" else agent, "" if referer == "-" else referer,
                    "", "", 0, "", "", "" if user == "-" else user, "", "",
                )  # fmt: skip
                if tail:
                    return _finish(row, tail)
                return row
        row, tail = parse_clf_line(line, combined=True)
        return _finish(row, tail)


class CommonParser:
    """Common Log Format: combined without referer and user agent."""

    format_id = "clf"

    def matches(self, line: str) -> bool:
        """Return True when ``line`` has a bracket and a quote, as every CLF line does."""
        return "[" in line and '"' in line

    def parse_line(self, line: str) -> tuple:
        """Parse one common-format line into a row (see the module docstring for variants)."""
        match = COMMON_FAST_PATTERN.fullmatch(line)
        if match is not None:
            client, user, time_text, request, status, size = match.groups()
            ts = _clf_cache_get(time_text)
            if ts is None:
                ts = clf_time_to_epoch(time_text)
            method, target = split_request_line(request)
            return (
                ts, client, method, "", target, "",
                int(status) if status != "-" else 0, NAN, -1, int(size) if size != "-" else -1,
                "", "", "", "", 0, "", "", "" if user == "-" else user, "", "",
            )  # fmt: skip
        row, tail = parse_clf_line(line, combined=False)
        return _finish(row, tail)
