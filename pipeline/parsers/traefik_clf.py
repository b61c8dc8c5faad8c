"""Traefik's CLF access log (``traefik_clf``).

Traefik 1.x and 2.x/3.x write NGINX combined format followed by four fields:
``<request count> "<router or frontend name>" "<server URL>" <duration>ms``.
Router and server URL are a bare ``-`` when the request reached no server,
for example when authentication rejected it.
The router name (a chain such as ``root@file -> leaf@file`` in Traefik 3)
becomes ``route`` as logged, and the duration becomes ``latency_ms``.
The other CLF variants of ``clf.py`` are accepted too.
"""

from __future__ import annotations

import re

from pipeline.parsers.base import FIELD_INDEX
from pipeline.parsers.clf import parse_clf_line, split_request_line
from pipeline.parsers.errors import FormatMismatch
from pipeline.parsers.timestamps import clf_epoch_cache, clf_time_to_epoch

FAST_PATTERN = re.compile(
    r'([^ ]+) [^ ]+ ([^ ]+) \[([^\]]+)\] "([^"]*)" ([0-9]{3}|-) ([0-9]{1,18}|-) "([^"]*)" "([^"]*)"'
    r' (?:[0-9]+|-) (?:"([^"]*)"|-) (?:"[^"]*"|-) ([0-9]+(?:\.[0-9]+)?)ms'
)
_QUOTED_BODY = r'[^"\\]*(?:\\.[^"\\]*)*'
_TAIL = re.compile(
    rf' +(?:[0-9]+|-) +(?:"({_QUOTED_BODY})"|-) +(?:"{_QUOTED_BODY}"|-) +([0-9]+(?:\.[0-9]+)?)ms\s*'
)

_ROUTE = FIELD_INDEX["route"]
_LATENCY = FIELD_INDEX["latency_ms"]
_clf_cache_get = clf_epoch_cache.get


class TraefikClfParser:
    """Traefik CLF: combined format plus request count, router, server URL and duration."""

    format_id = "traefik_clf"

    def matches(self, line: str) -> bool:
        """Return True when ``line`` is CLF-like and ends with a ``<n>ms`` duration."""
        return line.rstrip().endswith("ms") and "[" in line and '"' in line

    def parse_line(self, line: str) -> tuple:
        """Parse one Traefik CLF line into a row."""
        if '\\"' not in line:
            match = FAST_PATTERN.fullmatch(line)
            if match is not None:
                client, user, time_text, request, status, size, referer, agent, router, duration = match.groups()
                ts = _clf_cache_get(time_text)
                if ts is None:
                    ts = clf_time_to_epoch(time_text)
                method, target = split_request_line(request)
                return (
                    ts, client, method, "", target, "" if router is None or router == "-" else router,
                    int(status) if status != "-" else 0, float(duration), -1,
                    int(size) if size != "-" else -1,
                    "" if agent == "-" else agent, "" if referer == "-" else referer,
                    "", "", 0, "", "", "" if user == "-" else user, "", "",
                )  # fmt: skip
        row, tail = parse_clf_line(line, combined=True)
        match = _TAIL.fullmatch(tail)
        if match is None:
            raise FormatMismatch("no request count, router, server URL and duration after the user agent")
        router, duration = match.groups()
        values = list(row)
        values[_ROUTE] = "" if router is None or router == "-" else router
        values[_LATENCY] = float(duration)
        return tuple(values)
