"""Kong file-log / http-log JSON parser."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest

from pipeline.parsers.base import RAW_FIELDS
from pipeline.parsers.errors import FormatMismatch
from pipeline.parsers.kong import KongJsonParser

KONG = KongJsonParser()
FIXTURE = Path(__file__).parent / "fixtures" / "parsers" / "kong_file_log.jsonl"


def fields(row: tuple) -> dict:
    assert len(row) == len(RAW_FIELDS)
    return dict(zip(RAW_FIELDS, row))


def fixture_lines() -> list[str]:
    return FIXTURE.read_text().splitlines()


def fixture_record(number: int) -> dict:
    return orjson.loads(fixture_lines()[number])


def test_kong_v3_record_fields():
    row = fields(KONG.parse_line(fixture_lines()[0]))
    assert row["ts"] == pytest.approx(1726783839.539)
    assert row["client_ip"] == "192.168.65.1"
    assert row["method"] == "GET"
    assert row["host"] == "localhost:8000"
    assert row["target"] == "/anything?page=2"
    assert row["route"] == "example_route"
    assert row["status"] == 200
    assert row["latency_ms"] == 1201.0
    assert row["bytes_in"] == 139
    assert row["bytes_out"] == 9982
    assert row["user_agent"] == "HTTPie/3.2.3"
    assert row["referer"] == "https://app.example.com/pay"
    assert row["origin"] == "https://app.example.com"
    assert row["request_id"] == "2f6946328ffc4946b8c9120704a4a155"
    assert row["key_id"] == "c62c1455-9b1d-4f2d-8797-509ba83b8ae8"
    assert row["account"] == "acme"


def test_kong_redacted_authorization_uses_api_key():
    row = fields(KONG.parse_line(fixture_lines()[0]))
    assert row["credential"] == "kong-key-4f1c"


def test_kong_legacy_record_fields():
    row = fields(KONG.parse_line(fixture_lines()[1]))
    assert row["ts"] == pytest.approx(1433209822.425)
    assert row["method"] == "POST"
    assert row["host"] == "httpbin.org"
    assert row["status"] == 201
    assert row["bytes_in"] == 75
    assert row["bytes_out"] == 434
    assert row["route"] == "75818c5f-202d-4b82-a553-6a46e7c9a19e"
    assert row["key_id"] == "eaa330c0-4cff-47f5-c79e-b2e4f355207e"
    assert row["account"] == "80f74eef-31b8-45d5-c525-ae532297ea8e"
    assert row["credential"] == "Bearer legacy-token-77"
    assert row["latency_ms"] == 1921.0


def test_kong_anonymous_record_fields():
    row = fields(KONG.parse_line(fixture_lines()[2]))
    assert row["client_ip"] == "2001:db8::42"
    assert row["route"] == "status-svc"
    assert row["key_id"] == ""
    assert row["account"] == ""
    assert row["user_agent"] == "probe/1.0"
    assert row["credential"] == "key-a"
    assert row["status"] == 401
    assert row["ts"] == pytest.approx(1726783840.0005)


def test_kong_consumer_username_when_id_missing():
    record = fixture_record(0)
    del record["consumer"]["id"]
    row = fields(KONG.parse_line(orjson.dumps(record).decode()))
    assert row["account"] == "acme"


def test_kong_host_from_url_without_host_header():
    record = fixture_record(2)
    del record["request"]["headers"]["host"]
    row = fields(KONG.parse_line(orjson.dumps(record).decode()))
    assert row["host"] == "api.example.com:8443"


def test_kong_missing_latencies_is_nan():
    record = fixture_record(0)
    del record["latencies"]
    row = fields(KONG.parse_line(orjson.dumps(record).decode()))
    assert math.isnan(row["latency_ms"])


def test_kong_bad_status_reason():
    record = fixture_record(0)
    record["response"]["status"] = "two hundred"
    with pytest.raises(ValueError, match="response.status 'two hundred' is not a number"):
        KONG.parse_line(orjson.dumps(record).decode())


def test_kong_bad_started_at_reason():
    record = fixture_record(0)
    record["started_at"] = "yesterday"
    with pytest.raises(ValueError, match="started_at 'yesterday' is not epoch seconds"):
        KONG.parse_line(orjson.dumps(record).decode())


def test_kong_rejects_object_without_request():
    with pytest.raises(FormatMismatch, match="no started_at and request object"):
        KONG.parse_line('{"started_at": 1726783839539, "response": {"status": 200}}')


def test_kong_rejects_json_array():
    with pytest.raises(FormatMismatch):
        KONG.parse_line("[1, 2]")


def test_kong_matches_needs_started_at():
    assert KONG.matches(fixture_lines()[0])
    assert not KONG.matches('{"time": 1}')
