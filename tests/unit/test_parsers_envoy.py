"""Envoy JSON and default-text access-log parsers."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import orjson
import pytest

from pipeline.parsers.base import RAW_FIELDS
from pipeline.parsers.envoy_json import EnvoyJsonParser
from pipeline.parsers.envoy_text import EnvoyTextParser
from pipeline.parsers.errors import FormatMismatch

ENVOY_JSON = EnvoyJsonParser()
ENVOY_TEXT = EnvoyTextParser()

DEFAULT_TEXT_LINE = (
    '[2016-04-15T20:17:00.310Z] "POST /api/v1/locations HTTP/2" 204 - 154 0 226 100 "10.0.35.28" '
    '"nsq2http" "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2" "locations" "tcp://10.0.2.1:80"'
)
ISTIO_TEXT_LINE = (
    '[2024-06-02T13:35:27.054Z] "GET /realms/kubeflow/auth?client_id=3d36 HTTP/2" 302 UAEX ext_authz_denied - '
    '"-" 0 387 16 - "192.168.0.24" "Mozilla/5.0" "1d3ec87f-d974-4521-b5ac-23404817a56a" "kubeflow.example.org" "-" '
    "outbound|80||centraldashboard.kubeflow.svc.cluster.local - 10.0.0.196:8443 192.168.0.99:41604 "
    "kubeflow.example.org default"
)


def utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=timezone.utc).timestamp()


def fields(row: tuple) -> dict:
    assert len(row) == len(RAW_FIELDS)
    return dict(zip(RAW_FIELDS, row))


def gateway_record(**overrides) -> str:
    """An Envoy Gateway access-log object (its default JSON key names)."""
    record = {
        ":authority": "www.example.com",
        "bytes_received": 12,
        "bytes_sent": 121258,
        "connection_termination_details": None,
        "downstream_local_address": "10.42.0.77:10443",
        "downstream_remote_address": "10.0.0.12:59292",
        "duration": 11,
        "method": "GET",
        "protocol": "HTTP/2",
        "response_code": 200,
        "response_flags": "-",
        "route_name": "httproute/app/www/rule/0/match/0/www_example_com",
        "start_time": "2025-12-31T16:37:40.479Z",
        "upstream_cluster": "httproute/app/www/rule/0",
        "upstream_host": "10.42.0.82:8080",
        "user-agent": "Mozilla/4.0 (Windows NT 9.0)",
        "x-envoy-origin-path": "/assets/image.webp?v=2",
        "x-envoy-upstream-service-time": None,
        "x-forwarded-for": "10.0.0.12",
        "x-request-id": "3bbc0252-2d5c-49fe-bd89-104e9b61770b",
    }
    record.update(overrides)
    return orjson.dumps({key: value for key, value in record.items() if value != "<drop>"}).decode()


def test_envoy_json_gateway_record_fields():
    row = fields(ENVOY_JSON.parse_line(gateway_record()))
    assert row["ts"] == pytest.approx(utc(2025, 12, 31, 16, 37, 40) + 0.479)
    assert row["client_ip"] == "10.0.0.12"
    assert row["method"] == "GET"
    assert row["host"] == "www.example.com"
    assert row["target"] == "/assets/image.webp?v=2"
    assert row["route"] == "httproute/app/www/rule/0/match/0/www_example_com"
    assert row["status"] == 200
    assert row["latency_ms"] == 11.0
    assert row["bytes_in"] == 12
    assert row["bytes_out"] == 121258
    assert row["user_agent"] == "Mozilla/4.0 (Windows NT 9.0)"
    assert row["request_id"] == "3bbc0252-2d5c-49fe-bd89-104e9b61770b"
    assert row["credential"] == ""


def test_envoy_json_istio_keys():
    line = orjson.dumps(
        {
            "start_time": "2024-06-02T13:35:27.054Z",
            "method": "POST",
            "path": "/v1/orders",
            "protocol": "HTTP/1.1",
            "response_code": "201",
            "bytes_received": "310",
            "bytes_sent": "17",
            "duration": "42",
            "x_forwarded_for": "203.0.113.9, 10.0.0.1",
            "user_agent": "sdk/1",
            "request_id": "rid-1",
            "authority": "api.example.com",
            "route_name": "default",
            "downstream_remote_address": "-",
            "authorization": "Bearer abc.def",
        }
    ).decode()
    row = fields(ENVOY_JSON.parse_line(line))
    assert row["status"] == 201
    assert row["bytes_in"] == 310
    assert row["latency_ms"] == 42.0
    assert row["client_ip"] == "203.0.113.9"
    assert row["host"] == "api.example.com"
    assert row["target"] == "/v1/orders"
    assert row["route"] == "default"
    assert row["request_id"] == "rid-1"
    assert row["credential"] == "Bearer abc.def"


def test_envoy_json_ipv6_downstream_address():
    line = gateway_record(downstream_remote_address="[fd00:1234:5678::1]:54321")
    assert fields(ENVOY_JSON.parse_line(line))["client_ip"] == "fd00:1234:5678::1"


def test_envoy_json_downstream_address_preferred():
    line = gateway_record(**{"x-forwarded-for": "192.168.1.100, 10.42.0.1", "downstream_remote_address": "10.42.0.1:5"})
    assert fields(ENVOY_JSON.parse_line(line))["client_ip"] == "10.42.0.1"


def test_envoy_json_original_path_wins_over_path():
    line = gateway_record(**{"x-envoy-original-path": "/public/v1", "path": "/internal/v1"})
    assert fields(ENVOY_JSON.parse_line(line))["target"] == "/public/v1"


def test_envoy_json_route_falls_back_to_cluster():
    line = gateway_record(route_name=None)
    assert fields(ENVOY_JSON.parse_line(line))["route"] == "httproute/app/www/rule/0"


def test_envoy_json_api_key_header():
    line = gateway_record(**{"x-api-key": "key-9"})
    assert fields(ENVOY_JSON.parse_line(line))["credential"] == "key-9"


def test_envoy_json_zero_response_code():
    line = gateway_record(response_code=0, duration=None)
    row = fields(ENVOY_JSON.parse_line(line))
    assert row["status"] == 0
    assert math.isnan(row["latency_ms"])


def test_envoy_json_missing_start_time_reason():
    with pytest.raises(ValueError, match="no start_time field"):
        ENVOY_JSON.parse_line(gateway_record(start_time="<drop>"))


def test_envoy_json_bad_response_code_reason():
    with pytest.raises(ValueError, match="response_code 'abc' is not a number"):
        ENVOY_JSON.parse_line(gateway_record(response_code="abc"))


def test_envoy_json_rejects_other_json():
    with pytest.raises(FormatMismatch, match="no response_code"):
        ENVOY_JSON.parse_line('{"start_time": "2025-12-31T16:37:40.479Z"}')


def test_envoy_text_default_format_fields():
    row = fields(ENVOY_TEXT.parse_line(DEFAULT_TEXT_LINE))
    assert row["ts"] == pytest.approx(utc(2016, 4, 15, 20, 17, 0) + 0.31)
    assert row["method"] == "POST"
    assert row["target"] == "/api/v1/locations"
    assert row["status"] == 204
    assert row["bytes_in"] == 154
    assert row["bytes_out"] == 0
    assert row["latency_ms"] == 226.0
    assert row["client_ip"] == "10.0.35.28"
    assert row["user_agent"] == "nsq2http"
    assert row["request_id"] == "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2"
    assert row["host"] == "locations"
    assert row["route"] == ""


def test_envoy_text_dash_fields():
    line = (
        '[2025-10-01T13:46:14.808Z] "OPTIONS /game.ControllService/StreamPlayerInput HTTP/1.1" 200 - 0 0 0 - '
        '"-" "Mozilla/5.0" "a38702bf" "localhost:8080" "-"'
    )
    row = fields(ENVOY_TEXT.parse_line(line))
    assert row["client_ip"] == ""
    assert row["latency_ms"] == 0.0
    assert row["method"] == "OPTIONS"


def test_envoy_text_forwarded_for_ipv6_list():
    line = (
        '[2026-01-24T01:38:00.000Z] "POST /api/proxy6 HTTP/1.1" 201 - 0 1024 40 20 '
        '"fd00:1234:5678::5a24, [fd00:1234:5678::1]:54321" "curl/8.10.1" "multi" "proxy6.example.com" '
        '"tcp://[fd00:1234:5678::e18]:8080"'
    )
    assert fields(ENVOY_TEXT.parse_line(line))["client_ip"] == "fd00:1234:5678::5a24"


def test_envoy_text_bracketed_ipv6_forwarded_for():
    line = (
        '[2026-01-24T01:34:36.743Z] "GET /test HTTP/1.1" 200 - 0 256 50 25 "[fd00:1234:5678::5a24]" '
        '"curl/8.10.1" "test-request-id" "example.com" "tcp://[fd00:1234:5678::e18]:8080"'
    )
    assert fields(ENVOY_TEXT.parse_line(line))["client_ip"] == "fd00:1234:5678::5a24"


def test_envoy_text_istio_format_fields():
    row = fields(ENVOY_TEXT.parse_line(ISTIO_TEXT_LINE))
    assert row["status"] == 302
    assert row["bytes_in"] == 0
    assert row["bytes_out"] == 387
    assert row["latency_ms"] == 16.0
    assert row["client_ip"] == "192.168.0.99"
    assert row["route"] == "default"
    assert row["host"] == "kubeflow.example.org"
    assert row["target"] == "/realms/kubeflow/auth?client_id=3d36"


def test_envoy_text_bad_status_reason():
    line = DEFAULT_TEXT_LINE.replace('" 204 -', '" 2x4 -')
    with pytest.raises(ValueError, match="response code '2x4' is not a number"):
        ENVOY_TEXT.parse_line(line)


def test_envoy_text_rejects_clf():
    line = '1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1 "-" "curl"'
    with pytest.raises(FormatMismatch):
        ENVOY_TEXT.parse_line(line)
