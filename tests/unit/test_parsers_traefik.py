"""Traefik CLF and JSON access-log parsers."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import orjson
import pytest

from pipeline.parsers.base import RAW_FIELDS
from pipeline.parsers.errors import FormatMismatch
from pipeline.parsers.traefik_clf import TraefikClfParser
from pipeline.parsers.traefik_json import TraefikJsonParser

CLF = TraefikClfParser()
JSON = TraefikJsonParser()

TRAEFIK_V1_LINE = (
    '172.25.0.1 - - [08/Jun/2018:08:51:23 +0000] "GET / HTTP/2.0" 200 44 "-" '
    '"Mozilla/5.0 (X11; Linux x86_64)" 1 "Host-api-first-containous-demo-com-2" "http://172.25.0.5:80" 3ms'
)


def utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=timezone.utc).timestamp()


def fields(row: tuple) -> dict:
    assert len(row) == len(RAW_FIELDS)
    return dict(zip(RAW_FIELDS, row))


def traefik_record(**overrides) -> str:
    record = {
        "ClientAddr": "192.168.65.1:29366",
        "ClientHost": "192.168.65.1",
        "ClientPort": "29366",
        "ClientUsername": "-",
        "DownstreamContentSize": 364,
        "DownstreamStatus": 200,
        "Duration": 2001375,
        "OriginContentSize": 364,
        "OriginStatus": 200,
        "RequestContentSize": 42,
        "RequestHost": "api.localhost",
        "RequestMethod": "POST",
        "RequestPath": "/api/data?limit=5",
        "RequestProtocol": "HTTP/1.1",
        "RouterName": "root@file -> leaf@file",
        "ServiceName": "api@file",
        "StartLocal": "2026-01-08T15:20:00.250000000+01:00",
        "StartUTC": "2026-01-08T14:20:00.250000000Z",
        "request_User-Agent": "sdk/3.1",
        "request_Referer": "https://app.example.com/",
        "request_Origin": "https://app.example.com",
        "request_Authorization": "Bearer tok_abc",
        "request_X-Request-Id": "req-7",
        "time": "2026-01-08T14:20:00Z",
    }
    record.update(overrides)
    return orjson.dumps({key: value for key, value in record.items() if value is not None}).decode()


def test_traefik_clf_v1_line_fields():
    row = fields(CLF.parse_line(TRAEFIK_V1_LINE))
    assert row["ts"] == utc(2018, 6, 8, 8, 51, 23)
    assert row["client_ip"] == "172.25.0.1"
    assert row["method"] == "GET"
    assert row["target"] == "/"
    assert row["status"] == 200
    assert row["bytes_out"] == 44
    assert row["route"] == "Host-api-first-containous-demo-com-2"
    assert row["latency_ms"] == 3.0
    assert row["user_agent"] == "Mozilla/5.0 (X11; Linux x86_64)"


def test_traefik_clf_router_chain_kept_whole():
    line = (
        '172.17.1.3 - - [24/Nov/2024:13:40:15 +0000] "GET /api/users HTTP/1.1" 200 450 "-" "curl/7.68.0" 300 '
        '"root@docker -> intermediate1@docker -> leaf@docker" "http://172.17.0.4:80" 25ms'
    )
    row = fields(CLF.parse_line(line))
    assert row["route"] == "root@docker -> intermediate1@docker -> leaf@docker"
    assert row["latency_ms"] == 25.0


def test_traefik_clf_no_backend_dashes():
    line = (
        '172.25.0.1 - - [08/Jun/2018:08:59:32 +0000] "GET / HTTP/2.0" 401 17 "-" "REDACTED" 9 '
        '"Auth for frontend-Host-www-first-containous-demo-com-0" - 0ms'
    )
    row = fields(CLF.parse_line(line))
    assert row["status"] == 401
    assert row["route"] == "Auth for frontend-Host-www-first-containous-demo-com-0"
    assert row["latency_ms"] == 0.0


def test_traefik_clf_dash_status_and_router():
    line = (
        '172.17.1.1 - - [28/Sep/2022:13:38:04 +0000] "GET /mobileadmin/home.cs HTTP/1.1" - - "-" '
        '"Mozilla/5.00 (Nikto/2.1.5)" 45640 "-" "-" 0ms'
    )
    row = fields(CLF.parse_line(line))
    assert row["status"] == 0
    assert row["bytes_out"] == -1
    assert row["route"] == ""


def test_traefik_clf_escaped_quote_uses_slow_path():
    line = (
        '10.0.0.1 - - [08/Jun/2018:08:51:23 +0000] "GET / HTTP/2.0" 200 44 "-" "a \\"b\\"" 1 '
        '"router-1" "http://10.0.0.5:80" 7ms'
    )
    row = fields(CLF.parse_line(line))
    assert row["user_agent"] == 'a "b"'
    assert row["route"] == "router-1"
    assert row["latency_ms"] == 7.0


def test_traefik_clf_rejects_plain_combined():
    line = '1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1 "-" "curl"'
    with pytest.raises(FormatMismatch, match="no request count, router, server URL and duration"):
        CLF.parse_line(line)


def test_traefik_json_fields():
    row = fields(JSON.parse_line(traefik_record()))
    assert row["ts"] == pytest.approx(utc(2026, 1, 8, 14, 20, 0) + 0.25)
    assert row["client_ip"] == "192.168.65.1"
    assert row["method"] == "POST"
    assert row["host"] == "api.localhost"
    assert row["target"] == "/api/data?limit=5"
    assert row["route"] == "root@file -> leaf@file"
    assert row["status"] == 200
    assert row["latency_ms"] == pytest.approx(2.001375)
    assert row["bytes_in"] == 42
    assert row["bytes_out"] == 364
    assert row["user_agent"] == "sdk/3.1"
    assert row["referer"] == "https://app.example.com/"
    assert row["origin"] == "https://app.example.com"
    assert row["request_id"] == "req-7"
    assert row["credential"] == "Bearer tok_abc"
    assert row["account"] == ""


def test_traefik_json_api_key_header():
    line = traefik_record(**{"request_Authorization": None, "request_X-Api-Key": "key-123"})
    assert fields(JSON.parse_line(line))["credential"] == "key-123"


def test_traefik_json_redacted_authorization():
    line = traefik_record(request_Authorization="REDACTED")
    assert fields(JSON.parse_line(line))["credential"] == ""


def test_traefik_json_v1_frontend_name_and_time():
    line = traefik_record(RouterName=None, FrontendName="Host-www-2", StartUTC=None, StartLocal=None)
    row = fields(JSON.parse_line(line))
    assert row["route"] == "Host-www-2"
    assert row["ts"] == utc(2026, 1, 8, 14, 20, 0)


def test_traefik_json_start_local_offset():
    line = traefik_record(StartUTC=None, time=None)
    assert fields(JSON.parse_line(line))["ts"] == pytest.approx(utc(2026, 1, 8, 14, 20, 0) + 0.25)


def test_traefik_json_forwarded_client_host_list():
    line = traefik_record(ClientHost="192.168.1.100,10.0.0.50")
    assert fields(JSON.parse_line(line))["client_ip"] == "192.168.1.100"


def test_traefik_json_client_addr_fallback_ipv6():
    line = traefik_record(ClientHost=None, ClientAddr="[2001:db8::7]:443")
    assert fields(JSON.parse_line(line))["client_ip"] == "2001:db8::7"


def test_traefik_json_origin_status_fallback():
    line = traefik_record(DownstreamStatus=None, OriginStatus=502)
    assert fields(JSON.parse_line(line))["status"] == 502


def test_traefik_json_missing_duration_is_nan():
    line = traefik_record(Duration=None)
    assert math.isnan(fields(JSON.parse_line(line))["latency_ms"])


def test_traefik_json_bad_status_reason():
    with pytest.raises(ValueError, match="DownstreamStatus 'OK' is not a number"):
        JSON.parse_line(traefik_record(DownstreamStatus="OK"))


def test_traefik_json_missing_time_reason():
    with pytest.raises(ValueError, match="no StartUTC, StartLocal or time field"):
        JSON.parse_line(traefik_record(StartUTC=None, StartLocal=None, time=None))


def test_traefik_json_rejects_other_json():
    with pytest.raises(FormatMismatch, match="no DownstreamStatus"):
        JSON.parse_line('{"time": "2026-01-08T14:20:00Z", "status": 200}')


def test_traefik_json_broken_json_reason():
    with pytest.raises(ValueError, match=r"^no JSON object: .* at char \d+"):
        JSON.parse_line('{"DownstreamStatus": 200 "x": 1}')
