"""Log line formats: NGINX combined with key=value extras, and Kong file-log JSON.

Formatting is the hot loop, so each writer prepares as much as it can
ahead. It builds one %-format string per route with the method, path and
route names in it, and per-profile fragments the first time a profile
appears. Per chunk, it formats each second's timestamp and each distinct
address once. What is left per line is a single ``%`` operation.
"""

from __future__ import annotations

import time
import uuid
from typing import Protocol

import numpy as np
import orjson

from pipeline.simulate.addresses import UNKNOWN_COUNTRY, country_of, format_ip
from pipeline.simulate.batch import EventBatch
from pipeline.simulate.catalog import API_HOST, COUNTRY_CODES, ROUTE_BODY_BYTES, ROUTES, ParamKind, Route
from pipeline.simulate.profiles import ClientProfiles

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_COUNTRY_BY_INDEX = np.array(
    [COUNTRY_CODES[i] if i < len(COUNTRY_CODES) else "-" for i in range(UNKNOWN_COUNTRY + 1)], dtype=object
)
_CONSUMER_NAMESPACE = uuid.UUID("6f1c5d2e-8a43-4b7e-9c1d-2f0e5a7b3c91")
_ROUTE_HAS_QUERY = np.array(["?" in route.path_head for route in ROUTES])
_ROUTE_IS_PAGE = np.array([route.param == ParamKind.PAGE for route in ROUTES])
_ROUTE_UNMATCHED = np.array([not route.name for route in ROUTES])
# Estimated header sizes for Kong's request.size and response.size, which
# count headers too; the simulator has no real headers to measure.
_RESPONSE_HEADER_BYTES = 230
_REQUEST_LINE_BYTES = 60


class LineWriter(Protocol):
    """Turns a time-sorted batch into encoded log lines."""

    uses_request_ids: bool

    def format(self, batch: EventBatch, request_ids: list[int]) -> bytes:
        """Return one line per row, each ending in a newline."""
        ...


def _nginx_escape(value: str) -> str:
    """Escape a header value as NGINX does in access logs (``"`` and ``\\`` as ``\\xHH``)."""
    if not value:
        return "-"
    return value.replace("\\", "\\x5C").replace('"', "\\x22")


def _param_slot(route_param: ParamKind) -> str:
    """Return the format slot for the per-request number; ``%.0s`` consumes it and prints nothing."""
    return "%.0s" if route_param == ParamKind.NONE else "%d"


def _time_local_table(first_second: int, last_second: int) -> np.ndarray:
    """Return NGINX ``$time_local`` strings (UTC) for every second in the range."""
    strings = []
    for second in range(first_second, last_second + 1):
        t = time.gmtime(second)
        strings.append(
            f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year:04d}:{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
        )
    return np.array(strings, dtype=object)


def _address_strings(addresses: np.ndarray) -> list[str]:
    """Format addresses, once per distinct address."""
    distinct, inverse = np.unique(addresses, return_inverse=True)
    table = np.array([format_ip(address) for address in distinct.tolist()], dtype=object)
    return table[inverse].tolist()


class _ProfileCache:
    """Per-profile strings computed on first use, for populations of millions of tokens.

    NOTE: entries are never evicted, so a long run over a million tokens keeps
    about 300 (NGINX) to 500 (Kong) bytes per token that appeared, estimated from string lengths.
    """

    def __init__(self, profiles: ClientProfiles, names: tuple[str, ...]) -> None:
        self.profiles = profiles
        self.filled = np.zeros(len(profiles), dtype=bool)
        self.columns = {name: np.empty(len(profiles), dtype=object) for name in names}

    def missing(self, requested: np.ndarray) -> np.ndarray:
        """Return the distinct profiles in ``requested`` that have no strings yet."""
        distinct = np.unique(requested)
        return distinct[~self.filled[distinct]]


class NginxWriter:
    """NGINX ``combined`` plus ``rt``, ``key``, ``key_id``, ``origin``, ``country`` and ``req_id``.

    Empty values are written as ``-``. With ``credential_in_query`` the
    secret goes into the request target as ``api_key=`` and ``key`` is ``-``.
    """

    uses_request_ids = True

    def __init__(self, profiles: ClientProfiles, credential_in_query: bool = False) -> None:
        self.credential_in_query = credential_in_query
        names = ("before_rt", "after_rt") + (("query_question", "query_ampersand") if credential_in_query else ())
        self._cache = _ProfileCache(profiles, names)
        tail = ' HTTP/1.1" %d %d %s rt=%.3f %s country="%s" req_id=%016x'
        query_slot = "%s" if credential_in_query else ""
        self._route_formats = np.array(
            [
                f'%s - - [%s] "{route.method} {route.path_head}{_param_slot(route.param)}{query_slot}{tail}'
                for route in ROUTES
            ],
            dtype=object,
        )

    def _fill(self, requested: np.ndarray) -> None:
        cache = self._cache
        missing = cache.missing(requested)
        if not len(missing):
            return
        fields = cache.profiles.fields(missing)
        key_field = [""] * len(missing) if self.credential_in_query else fields["secret"]
        cache.columns["before_rt"][missing] = [
            f'"{_nginx_escape(referer)}" "{_nginx_escape(agent)}"'
            for referer, agent in zip(fields["referer"], fields["user_agent"])
        ]
        cache.columns["after_rt"][missing] = [
            f'key="{_nginx_escape(key)}" key_id="{_nginx_escape(key_id)}" origin="{_nginx_escape(origin)}"'
            for key, key_id, origin in zip(key_field, fields["key_id"], fields["origin"])
        ]
        if self.credential_in_query:
            cache.columns["query_question"][missing] = [f"?api_key={s}" if s else "" for s in fields["secret"]]
            cache.columns["query_ampersand"][missing] = [f"&api_key={s}" if s else "" for s in fields["secret"]]
        cache.filled[missing] = True

    def format(self, batch: EventBatch, request_ids: list[int]) -> bytes:
        """Return the batch as NGINX lines (see the class docstring)."""
        if not len(batch):
            return b""
        self._fill(batch.profile)
        columns = self._cache.columns

        seconds = batch.ts_ms // 1000
        first = int(seconds[0])
        times = _time_local_table(first, int(seconds[-1]))[seconds - first].tolist()
        arguments = [_address_strings(batch.address), times, batch.param.tolist()]
        if self.credential_in_query:
            query = np.where(
                _ROUTE_HAS_QUERY[batch.route],
                columns["query_ampersand"][batch.profile],
                columns["query_question"][batch.profile],
            )
            arguments.append(query.tolist())
        arguments += [
            batch.status.tolist(),
            batch.bytes_out.tolist(),
            columns["before_rt"][batch.profile].tolist(),
            (batch.latency_ms / 1000.0).tolist(),
            columns["after_rt"][batch.profile].tolist(),
            _COUNTRY_BY_INDEX[country_of(batch.address)].tolist(),
            request_ids,
        ]

        formats = self._route_formats[batch.route].tolist()
        lines = [line_format % values for line_format, values in zip(formats, zip(*arguments))]
        lines.append("")
        return "\n".join(lines).encode("utf-8")


class KongWriter:
    """Kong file-log JSON, one object per line, plus a top-level ``country``.

    Unlike a default Kong, the ``x-api-key`` header is logged unredacted so the
    pipeline's credential hashing is exercised. ``consumer`` and
    ``authenticated_entity`` are present only for requests whose credential
    matched a key, and ``route``/``service`` only for paths a route matches.
    ``latencies.proxy`` is -1 when the gateway responded without calling the
    upstream (401, 403, 429 and unmatched paths).
    """

    uses_request_ids = False

    def __init__(self, profiles: ClientProfiles, credential_in_query: bool = False) -> None:
        self.credential_in_query = credential_in_query
        names = ("headers", "consumer", "header_bytes")
        if credential_in_query:
            names += ("uri_question", "uri_ampersand", "qs_first", "qs_next")
        self._cache = _ProfileCache(profiles, names)
        self._route_formats = np.array([self._route_format(route) for route in ROUTES], dtype=object)

    def _route_format(self, route: Route) -> str:
        """Return the line format of one route.

        The per-request number fills three slots: uri, url and querystring.
        Routes without a page number swallow the querystring slot with
        ``%.0s``, so every route's format takes the same arguments.
        """
        number = _param_slot(route.param)
        query = "%s" if self.credential_in_query else ""
        uri = f"{route.path_head}{number}{query}"
        if route.param == ParamKind.PAGE:
            querystring = '{"page":"%d"' + query + "}"
        else:
            querystring = "%.0s{" + query + "}"
        route_names = ""
        if route.name:
            route_names = (
                f',"route":{{"name":{orjson.dumps(route.name).decode()}}}'
                f',"service":{{"name":{orjson.dumps(route.service).decode()}}}'
            )
        return (
            '{"started_at":%d,"client_ip":"%s","request":{"method":"' + route.method + '","uri":"' + uri + '",'
            '"url":"https://' + API_HOST + uri + '","size":%d,"querystring":' + querystring + ","
            '"headers":{"host":"' + API_HOST + '"%s}},"response":{"status":%d,"size":%d},'
            '"latencies":{"request":%d,"kong":%d,"proxy":%d}' + route_names + '%s,"country":"%s"}'
        )

    def _fill(self, requested: np.ndarray) -> None:
        cache = self._cache
        missing = cache.missing(requested)
        if not len(missing):
            return
        fields = cache.profiles.fields(missing)
        headers, consumers = [], []
        for secret, key_id, account, agent, origin, referer in zip(
            fields["secret"], fields["key_id"], fields["account"], fields["user_agent"], fields["origin"], fields["referer"]
        ):
            parts = []
            if agent:
                parts.append(',"user-agent":' + orjson.dumps(agent).decode())
            if secret and not self.credential_in_query:
                parts.append(',"x-api-key":' + orjson.dumps(secret).decode())
            if origin:
                parts.append(',"origin":' + orjson.dumps(origin).decode())
            if referer:
                parts.append(',"referer":' + orjson.dumps(referer).decode())
            headers.append("".join(parts))
            if key_id:
                consumer_id = str(uuid.uuid5(_CONSUMER_NAMESPACE, account or key_id))
                consumers.append(
                    ',"consumer":{"id":"%s","username":%s},"authenticated_entity":{"id":%s,"consumer_id":"%s"}'
                    % (consumer_id, orjson.dumps(account).decode(), orjson.dumps(key_id).decode(), consumer_id)
                )
            else:
                consumers.append("")
        cache.columns["headers"][missing] = headers
        cache.columns["consumer"][missing] = consumers
        cache.columns["header_bytes"][missing] = [len(h) for h in headers]
        if self.credential_in_query:
            cache.columns["uri_question"][missing] = [f"?api_key={s}" if s else "" for s in fields["secret"]]
            cache.columns["uri_ampersand"][missing] = [f"&api_key={s}" if s else "" for s in fields["secret"]]
            cache.columns["qs_first"][missing] = [f'"api_key":"{s}"' if s else "" for s in fields["secret"]]
            cache.columns["qs_next"][missing] = [f',"api_key":"{s}"' if s else "" for s in fields["secret"]]
        cache.filled[missing] = True

    def format(self, batch: EventBatch, request_ids: list[int]) -> bytes:
        """Return the batch as Kong JSON lines (see the class docstring)."""
        if not len(batch):
            return b""
        self._fill(batch.profile)
        columns = self._cache.columns
        profiles = batch.profile
        routes = batch.route

        request_size = columns["header_bytes"][profiles].astype(np.int64) + ROUTE_BODY_BYTES[routes] + _REQUEST_LINE_BYTES
        # Time spent in Kong itself: 0-2 ms (from the millisecond, so no random
        # stream is needed), or all of it when Kong responded on its own.
        rejected = np.isin(batch.status, (401, 403, 429)) | _ROUTE_UNMATCHED[routes]
        kong_ms = np.where(rejected, batch.latency_ms, batch.ts_ms % 3)
        proxy_ms = np.where(rejected, -1, np.maximum(batch.latency_ms - kong_ms, 0))

        params = batch.param.tolist()
        started = batch.ts_ms.tolist()
        addresses = _address_strings(batch.address)
        sizes = request_size.tolist()
        if self.credential_in_query:
            uri_query = np.where(
                _ROUTE_HAS_QUERY[routes], columns["uri_ampersand"][profiles], columns["uri_question"][profiles]
            ).tolist()
            qs_query = np.where(_ROUTE_IS_PAGE[routes], columns["qs_next"][profiles], columns["qs_first"][profiles]).tolist()
            request_parts = zip(started, addresses, params, uri_query, params, uri_query, sizes, params, qs_query)
        else:
            request_parts = zip(started, addresses, params, params, sizes, params)
        response_parts = zip(
            columns["headers"][profiles].tolist(),
            batch.status.tolist(),
            (batch.bytes_out + _RESPONSE_HEADER_BYTES).tolist(),
            batch.latency_ms.tolist(),
            kong_ms.tolist(),
            proxy_ms.tolist(),
            columns["consumer"][profiles].tolist(),
            _COUNTRY_BY_INDEX[country_of(batch.address)].tolist(),
        )

        formats = self._route_formats[routes].tolist()
        lines = [
            line_format % (*request, *response)
            for line_format, request, response in zip(formats, request_parts, response_parts)
        ]
        lines.append("")
        return "\n".join(lines).encode("utf-8")


def make_writer(log_format: str, profiles: ClientProfiles, credential_in_query: bool) -> LineWriter:
    """Return the writer for ``nginx`` or ``kong``."""
    if log_format == "nginx":
        return NginxWriter(profiles, credential_in_query)
    if log_format == "kong":
        return KongWriter(profiles, credential_in_query)
    raise ValueError(f"unknown log format {log_format!r}; use nginx or kong")
