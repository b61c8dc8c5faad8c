"""Generic JSON parser with field mappings, and the Caddy JSON parser."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import orjson
import pytest

from pipeline.errors import ConfigError
from pipeline.parsers.base import RAW_FIELDS
from pipeline.parsers.caddy_json import CaddyJsonParser
from pipeline.parsers.errors import FormatMismatch
from pipeline.parsers.json_generic import GenericJsonParser, merge_mapping

GENERIC = GenericJsonParser()
CADDY = CaddyJsonParser()


def utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=timezone.utc).timestamp()


def fields(row: tuple) -> dict:
    assert len(row) == len(RAW_FIELDS)
    return dict(zip(RAW_FIELDS, row))


def dumps(record: dict) -> str:
    return orjson.dumps(record).decode()


NGINX_JSON_RECORD = {
    "time_iso8601": "2024-03-01T12:00:05+01:00",
    "remote_addr": "198.51.100.7",
    "request_method": "PUT",
    "http_host": "api.example.com",
    "request_uri": "/v2/items/9?x=1",
    "status": "200",
    "request_time": "0.042",
    "request_length": "812",
    "body_bytes_sent": "33",
    "http_user_agent": "sdk/4",
    "http_referer": "-",
    "http_x_api_key": "key-live-1",
    "geoip_country_code": "fr",
    "asn": "AS3215",
    "request_id": "abc123",
}


def test_generic_default_mapping_nginx_json_fields():
    row = fields(GENERIC.parse_line(dumps(NGINX_JSON_RECORD)))
    assert row["ts"] == utc(2024, 3, 1, 11, 0, 5)
    assert row["client_ip"] == "198.51.100.7"
    assert row["method"] == "PUT"
    assert row["host"] == "api.example.com"
    assert row["target"] == "/v2/items/9?x=1"
    assert row["status"] == 200
    assert row["latency_ms"] == pytest.approx(42.0)
    assert row["bytes_in"] == 812
    assert row["bytes_out"] == 33
    assert row["user_agent"] == "sdk/4"
    assert row["referer"] == ""
    assert row["credential"] == "key-live-1"
    assert row["country"] == "FR"
    assert row["asn"] == 3215
    assert row["request_id"] == "abc123"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1709294405, 1709294405.0),
        (1709294405.25, 1709294405.25),
        (1709294405250, 1709294405.25),
        ("1709294405.250", 1709294405.25),
        (1709294405250000, 1709294405.25),
        (1709294405250000000, 1709294405.25),
        ("2024-03-01T12:00:05.25Z", 1709294405.25),
        ("2024-03-01 12:00:05.25", 1709294405.25),
        ("01/Mar/2024:13:00:05 +0100", 1709294405.0),
    ],
)
def test_generic_timestamp_forms(value, expected):
    row = fields(GENERIC.parse_line(dumps({"time": value, "status": 200})))
    assert row["ts"] == pytest.approx(expected)


def test_generic_custom_mapping_dotted_paths():
    parser = GenericJsonParser({"ts": "time", "client_ip": "remote.addr", "credential": "headers.x-api-key"})
    record = {"time": 1700000000, "remote": {"addr": "10.1.2.3:5555"}, "headers": {"x-api-key": "k-5"}, "status": 404}
    line = dumps(record)
    row = fields(parser.parse_line(line))
    assert row["client_ip"] == "10.1.2.3"
    assert row["credential"] == "k-5"
    assert row["status"] == 404


def test_generic_literal_dotted_key_wins():
    parser = GenericJsonParser({"method": "http.request.method"})
    line = dumps({"ts": 1700000000, "http.request.method": "PATCH", "http": {"request": {"method": "GET"}}})
    assert fields(parser.parse_line(line))["method"] == "PATCH"


def test_generic_candidate_list_order():
    parser = GenericJsonParser({"client_ip": ["edge.client", "peer"]})
    line = dumps({"ts": 1700000000, "peer": "10.0.0.1", "edge": {"client": "203.0.113.5"}})
    assert fields(parser.parse_line(line))["client_ip"] == "203.0.113.5"


def test_generic_object_value_skipped():
    line = dumps({"@timestamp": "2024-03-01T12:00:05Z", "status": 200, "user_agent": {"original": "ecs-agent/1"}})
    assert fields(GENERIC.parse_line(line))["user_agent"] == "ecs-agent/1"


def test_generic_none_disables_default():
    parser = GenericJsonParser({"user_agent": None})
    line = dumps({"ts": 1700000000, "status": 200, "user_agent": "sdk"})
    assert fields(parser.parse_line(line))["user_agent"] == ""


def test_generic_latency_units():
    parser = GenericJsonParser({"latency_us": "elapsed_us"})
    line = dumps({"ts": 1700000000, "status": 200, "elapsed_us": 2500})
    assert fields(parser.parse_line(line))["latency_ms"] == pytest.approx(2.5)


def test_generic_missing_latency_is_nan():
    row = fields(GENERIC.parse_line(dumps({"ts": 1700000000, "status": 200})))
    assert math.isnan(row["latency_ms"])
    assert row["bytes_out"] == -1


def test_generic_list_header_value_first_item():
    parser = GenericJsonParser({"user_agent": "headers.User-Agent"})
    line = dumps({"ts": 1700000000, "status": 200, "headers": {"User-Agent": ["a/1", "b/2"]}})
    assert fields(parser.parse_line(line))["user_agent"] == "a/1"


def test_generic_redacted_credential_skipped():
    line = dumps({"ts": 1700000000, "status": 200, "authorization": "REDACTED", "api_key": "key-2"})
    assert fields(GENERIC.parse_line(line))["credential"] == "key-2"


def test_generic_requires_timestamp():
    with pytest.raises(FormatMismatch, match=r"no timestamp field \(time, timestamp, @timestamp, ts, \.\.\.\)"):
        GENERIC.parse_line(dumps({"status": 200}))


def test_generic_rejects_application_log_line():
    line = dumps({"level": "info", "ts": 1761019822.31, "msg": "using config from file"})
    with pytest.raises(FormatMismatch, match="not an access record"):
        GENERIC.parse_line(line)


def test_generic_bad_timestamp_reason():
    with pytest.raises(ValueError, match="time 'soon' is not epoch seconds, epoch milliseconds or an ISO 8601"):
        GENERIC.parse_line(dumps({"time": "soon", "status": 200}))


def test_generic_infinite_number_rejected():
    with pytest.raises(ValueError, match="no JSON object: number is infinity"):
        GENERIC.parse_line('{"ts": 1e999, "status": 200}')


def test_generic_bad_status_reason():
    with pytest.raises(ValueError, match="status 'abc' is not a number"):
        GENERIC.parse_line(dumps({"ts": 1700000000, "status": "abc"}))


def test_generic_status_out_of_range():
    with pytest.raises(ValueError, match="status 2000 is not an HTTP status code"):
        GENERIC.parse_line(dumps({"ts": 1700000000, "status": 2000}))


def test_generic_broken_json_reason():
    with pytest.raises(ValueError, match=r"^no JSON object: unexpected character, expected ',' or '}' at char 15$"):
        GENERIC.parse_line('{"ts": 1700000 "status": 200}')


def test_generic_deep_nesting_is_not_a_crash():
    line = '{"ts": 1700000000, "status": 200, "user_agent": ' + "[" * 300 + "]" * 300 + "}"
    assert fields(GENERIC.parse_line(line))["user_agent"] == ""


def test_mapping_unknown_field_rejected():
    with pytest.raises(ConfigError, match="unknown field 'tsx'"):
        merge_mapping({"tsx": "time"})


def test_mapping_bad_value_rejected():
    with pytest.raises(ConfigError, match="json field mapping for 'ts' is 5"):
        merge_mapping({"ts": 5})


def test_mapping_merges_over_defaults():
    merged = merge_mapping({"ts": "when"})
    assert merged["ts"] == ("when",)
    assert merged["status"][0] == "status"


CADDY_LINE = dumps(
    {
        "level": "info",
        "ts": 1716723772.6014807,
        "logger": "http.log.access.log17",
        "msg": "handled request",
        "request": {
            "remote_ip": "10.5.1.1",
            "remote_port": "38574",
            "client_ip": "10.10.10.117",
            "proto": "HTTP/2.0",
            "method": "GET",
            "host": "mirrors.example.net:400",
            "uri": "/gentoo/distfiles/x.tar.xz",
            "headers": {
                "User-Agent": ["facebookexternalhit/1.1"],
                "Authorization": ["REDACTED"],
                "X-Api-Key": ["caddy-key-1"],
                "Referer": ["https://example.net/"],
            },
        },
        "bytes_read": 7,
        "user_id": "alice",
        "duration": 0.017557019,
        "size": 3768,
        "status": 200,
        "resp_headers": {"Server": ["Caddy"]},
    }
)


def test_caddy_record_fields():
    row = fields(CADDY.parse_line(CADDY_LINE))
    assert row["ts"] == pytest.approx(1716723772.6014807)
    assert row["client_ip"] == "10.10.10.117"
    assert row["method"] == "GET"
    assert row["host"] == "mirrors.example.net:400"
    assert row["target"] == "/gentoo/distfiles/x.tar.xz"
    assert row["status"] == 200
    assert row["latency_ms"] == pytest.approx(17.557019)
    assert row["bytes_in"] == 7
    assert row["bytes_out"] == 3768
    assert row["user_agent"] == "facebookexternalhit/1.1"
    assert row["referer"] == "https://example.net/"
    assert row["account"] == "alice"
    assert row["credential"] == "caddy-key-1"


def test_caddy_remote_ip_without_client_ip():
    record = orjson.loads(CADDY_LINE)
    del record["request"]["client_ip"]
    assert fields(CADDY.parse_line(dumps(record)))["client_ip"] == "10.5.1.1"


def test_caddy_rejects_server_log_line():
    record = {"level": "debug", "ts": 1742400753.05, "logger": "http.handlers.reverse_proxy", "msg": "selected upstream"}
    line = dumps(record)
    with pytest.raises(FormatMismatch, match="no request object and status"):
        CADDY.parse_line(line)
