"""Envoy's default text access log (``envoy_text``), plain or in Istio's longer form.

Envoy's default format string is::

    [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%"
    %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
    %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
    "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"

Istio 1.8 and later insert ``%RESPONSE_CODE_DETAILS%
%CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%"``
after the flags and append ``%UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS%
%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%
%REQUESTED_SERVER_NAME% %ROUTE_NAME%``. Both forms parse here. The client is
Istio's downstream remote address when logged, else the first
X-Forwarded-For address, else "". Envoy does not escape quotes in header
values, so a user agent containing ``"`` can shift the later fields.
"""

from __future__ import annotations

import re
from typing import NoReturn

from pipeline.parsers.clf import split_request_line
from pipeline.parsers.errors import FormatMismatch
from pipeline.parsers.fields import NAN, count_in_range, first_forwarded_address, quote_value, strip_port
from pipeline.parsers.timestamps import iso8601_to_epoch

# Strict pattern with numeric fields, for the fast path.
FAST_PATTERN = re.compile(
    r'\[([^\]]+)\] "([^"]*)" ([0-9]{1,3}|-) [^ ]+'  # time, request, status, flags
    r'(?: [^ "]+ [^ "]+ "[^"]*")?'  # Istio: code details, termination details, failure reason
    r" ([0-9]+|-) ([0-9]+|-) ([0-9]+|-) [^ ]+"  # bytes received, bytes sent, duration, upstream time
    r' "([^"]*)" "([^"]*)" "([^"]*)" "([^"]*)" "[^"]*"'  # forwarded-for, agent, request id, authority, upstream
    r"(?: ([^ ]+) [^ ]+ [^ ]+ ([^ ]+) [^ ]+ ([^ ]+))?"  # Istio: cluster, -, -, downstream remote, -, route
    r"\s*"
)
# The same layout with any token in the numeric fields, to name a bad value.
_LENIENT = re.compile(FAST_PATTERN.pattern.replace("([0-9]{1,3}|-)", "([^ ]+)").replace("([0-9]+|-)", "([^ ]+)"))
_NUMBER = re.compile(r"[0-9]+")


def _raise_bad_number(match: re.Match[str]) -> NoReturn:
    """Raise ValueError naming the numeric field of a lenient match that the fast pattern rejected."""
    for name, text in zip(("response code", "bytes received", "bytes sent", "duration"), match.group(3, 4, 5, 6)):
        if text != "-" and _NUMBER.fullmatch(text) is None:
            raise ValueError(f"{name} {quote_value(text)} is not a number")
    raise ValueError(f"response code {match.group(3)} is not an HTTP status code")


class EnvoyTextParser:
    """Envoy default text format, with Istio's optional fields."""

    format_id = "envoy_text"

    def matches(self, line: str) -> bool:
        """Return True when ``line`` starts with a bracketed time and has a quote."""
        return line.startswith("[") and '"' in line

    def parse_line(self, line: str) -> tuple:
        """Parse one Envoy text line into a row."""
        match = FAST_PATTERN.fullmatch(line)
        if match is None:
            lenient = _LENIENT.fullmatch(line)
            if lenient is None:
                raise FormatMismatch('no [time] "request" status flags bytes ... sequence of Envoy\'s default format')
            _raise_bad_number(lenient)
        (time_text, request, status, received, sent, duration, forwarded_for, agent,
         request_id, authority, cluster, remote_address, route) = match.groups()  # fmt: skip
        method, target = split_request_line(request)
        client = ""
        if remote_address is not None and remote_address != "-":
            client = strip_port(remote_address)
        elif forwarded_for != "-":
            client = first_forwarded_address(forwarded_for)
        if cluster is None:
            route = ""
        elif route == "-":
            route = "" if cluster == "-" else cluster
        return (
            iso8601_to_epoch(time_text),
            client,
            method,
            "" if authority == "-" else authority,
            target,
            route,
            int(status) if status != "-" else 0,
            float(duration) if duration != "-" else NAN,
            count_in_range("bytes received", int(received)) if received != "-" else -1,
            count_in_range("bytes sent", int(sent)) if sent != "-" else -1,
            "" if agent == "-" else agent,
            "",
            "",
            "",
            0,
            "" if request_id == "-" else request_id,
            "",
            "",
            "",
            "",
        )
