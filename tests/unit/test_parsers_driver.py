"""LineParser chunk driver and format detection."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import orjson
import pytest

from pipeline.errors import ConfigError
from pipeline.parsers import FORMAT_IDS, RAW_FIELDS, LineParser, build_parsers, detect_format
from pipeline.parsers.base import FIELD_INDEX, ParsedChunk

COMBINED_LINE = '203.0.113.5 - - [17/May/2015:10:05:03 +0000] "GET /v1/a HTTP/1.1" 200 12 "-" "sdk/1"'
COMMON_LINE = '203.0.113.6 - - [17/May/2015:10:05:04 +0000] "GET /v1/b HTTP/1.1" 404 7'
TRAEFIK_CLF_LINE = (
    '172.25.0.1 - - [08/Jun/2018:08:51:23 +0000] "GET / HTTP/2.0" 200 44 "-" "Mozilla/5.0" 1 '
    '"Host-api-2" "http://172.25.0.5:80" 3ms'
)
TRAEFIK_JSON_LINE = orjson.dumps(
    {
        "ClientHost": "172.25.0.1",
        "DownstreamStatus": 200,
        "Duration": 6450613,
        "FrontendName": "Host-www-2",
        "RequestMethod": "GET",
        "RequestPath": "/",
        "StartUTC": "2018-06-08T09:07:52.347415625Z",
        "request_Authorization": "Basic dXNlcjpwYXNzd29yZA==",
    }
).decode()
KONG_LINE = orjson.dumps(
    {
        "started_at": 1726783839539,
        "client_ip": "192.168.65.1",
        "request": {"method": "GET", "uri": "/anything", "headers": {"x-api-key": "kong-key"}},
        "response": {"status": 200},
        "authenticated_entity": {"id": "cred-1"},
        "consumer": {"id": "consumer-1"},
    }
).decode()
ENVOY_JSON_LINE = orjson.dumps(
    {"start_time": "2025-12-31T16:37:40.479Z", "method": "GET", "path": "/", "response_code": 200}
).decode()
ENVOY_TEXT_LINE = (
    '[2025-10-01T13:31:23.251Z] "GET / HTTP/1.1" 200 - 0 0 103 102 "-" "curl/8.5.0" '
    '"64598e1a-3c65-4ad2-b666-1055670895a9" "localhost:8080" "127.0.0.1:50052"'
)
CADDY_LINE = orjson.dumps(
    {
        "ts": 1716723772.6,
        "logger": "http.log.access.log0",
        "msg": "handled request",
        "request": {"client_ip": "10.0.0.9", "method": "GET", "uri": "/"},
        "status": 200,
    }
).decode()
GENERIC_JSON_LINE = orjson.dumps({"time": "2024-03-01T12:00:05Z", "remote_addr": "10.0.0.1", "status": 200}).decode()

SAMPLES = {
    "nginx_combined": COMBINED_LINE,
    "clf": COMMON_LINE,
    "traefik_clf": TRAEFIK_CLF_LINE,
    "traefik_json": TRAEFIK_JSON_LINE,
    "kong_json": KONG_LINE,
    "envoy_json": ENVOY_JSON_LINE,
    "envoy_text": ENVOY_TEXT_LINE,
    "caddy_json": CADDY_LINE,
    "json": GENERIC_JSON_LINE,
}


def encode(*lines: str) -> list[bytes]:
    return [line.encode() + b"\n" for line in lines]


def parse(parser: LineParser, lines: list[bytes], first_position: int = 1) -> ParsedChunk:
    return parser.parse(lines, list(range(first_position, first_position + len(lines))))


def column(chunk: ParsedChunk, name: str) -> list:
    return [row[FIELD_INDEX[name]] for row in chunk.rows]


def test_samples_cover_every_registered_format():
    assert set(SAMPLES) == set(FORMAT_IDS)


@pytest.mark.parametrize("format_id", sorted(SAMPLES))
def test_detect_format_each_format(format_id):
    lines = encode(*[SAMPLES[format_id]] * 3)
    assert detect_format(lines) == format_id


def test_detect_format_majority_wins():
    lines = encode(COMMON_LINE, COMMON_LINE, COMBINED_LINE, COMMON_LINE)
    assert detect_format(lines) == "clf"


def test_detect_format_skips_empty_lines():
    assert detect_format([b"\n", b"   \n", COMBINED_LINE.encode()]) == "nginx_combined"


def test_detect_format_unknown_returns_none():
    assert detect_format(encode("hello world", "#Fields: date time")) is None


def test_detect_format_catch_all_loses_to_specific():
    lines = encode(GENERIC_JSON_LINE, GENERIC_JSON_LINE, KONG_LINE)
    assert detect_format(lines) == "kong_json"


def test_detect_format_strips_cri_prefix():
    prefix = "2026-01-24T01:34:36.743000000+00:00 stdout F "
    assert detect_format([prefix + ENVOY_JSON_LINE, prefix + ENVOY_JSON_LINE]) == "envoy_json"


def test_detect_format_parser_bug_ignored(monkeypatch, caplog):
    parsers = build_parsers()

    def broken_parse_line(line: str) -> tuple:
        raise IndexError("Bearer secret-token")

    monkeypatch.setattr(parsers["traefik_clf"], "parse_line", broken_parse_line)
    with caplog.at_level(logging.ERROR, logger="pipeline.parsers.detect"):
        detected = detect_format(encode(TRAEFIK_CLF_LINE), parsers)
    assert detected == "nginx_combined"
    assert "IndexError" in caplog.text
    assert "secret-token" not in caplog.text


def test_detect_format_accepts_text():
    assert detect_format([ENVOY_TEXT_LINE]) == "envoy_text"


@pytest.mark.parametrize("format_id", sorted(SAMPLES))
def test_line_parser_auto_detects_each_format(format_id):
    parser = LineParser()
    chunk = parse(parser, encode(SAMPLES[format_id], SAMPLES[format_id]))
    assert chunk.formats == [format_id, format_id]
    assert chunk.dead == []
    assert parser.format == format_id


def test_line_parser_rows_have_raw_fields_length():
    chunk = parse(LineParser(), encode(*SAMPLES.values()))
    assert chunk.dead == []
    for row in chunk.rows:
        assert len(row) == len(RAW_FIELDS)


def test_line_parser_mixed_chunk_formats_per_row():
    parser = LineParser()
    lines = encode(TRAEFIK_CLF_LINE, TRAEFIK_CLF_LINE, TRAEFIK_JSON_LINE, TRAEFIK_JSON_LINE, TRAEFIK_CLF_LINE)
    chunk = parse(parser, lines)
    assert chunk.formats == ["traefik_clf", "traefik_clf", "traefik_json", "traefik_json", "traefik_clf"]
    assert chunk.positions == [1, 2, 3, 4, 5]
    assert parser.format_switches == 2


def test_line_parser_switch_carries_over_chunks():
    parser = LineParser()
    parse(parser, encode(TRAEFIK_CLF_LINE, TRAEFIK_JSON_LINE))
    chunk = parse(parser, encode(TRAEFIK_JSON_LINE), first_position=3)
    assert chunk.formats == ["traefik_json"]
    assert parser.format == "traefik_json"
    assert parser.format_switches == 1


def test_line_parser_credential_from_traefik_json():
    chunk = parse(LineParser(), encode(TRAEFIK_JSON_LINE))
    assert column(chunk, "credential") == ["Basic dXNlcjpwYXNzd29yZA=="]


def test_line_parser_kong_key_id_and_account():
    chunk = parse(LineParser(), encode(KONG_LINE))
    assert column(chunk, "key_id") == ["cred-1"]
    assert column(chunk, "account") == ["consumer-1"]
    assert column(chunk, "credential") == ["kong-key"]


def test_line_parser_pinned_rejects_other_format():
    parser = LineParser("nginx_combined")
    chunk = parse(parser, encode(COMBINED_LINE, KONG_LINE, COMBINED_LINE))
    assert len(chunk.rows) == 2
    assert chunk.positions == [1, 3]
    assert len(chunk.dead) == 1
    position, raw, reason, format_id = chunk.dead[0]
    assert position == 2
    assert raw == KONG_LINE
    assert reason.startswith("does not match the pinned format nginx_combined (")
    assert format_id == "nginx_combined"
    assert parser.format == "nginx_combined"


def test_line_parser_pinned_keeps_specific_reason():
    bad = COMBINED_LINE.replace(" 200 12 ", " abc 12 ")
    chunk = parse(LineParser("nginx_combined"), encode(bad))
    assert chunk.dead[0][2] == "status 'abc' is not a 3-digit number"


def test_line_parser_unknown_line_reason():
    chunk = parse(LineParser(), encode(COMBINED_LINE, "hello world"))
    assert chunk.dead == [(2, "hello world", "does not match nginx_combined or any known format", "nginx_combined")]


def test_line_parser_nothing_detected_reason():
    chunk = parse(LineParser(), encode("hello world"))
    assert chunk.dead == [(1, "hello world", "does not match any known format", "")]


def test_line_parser_bad_value_reason():
    bad = COMBINED_LINE.replace(" 200 12 ", " 200 12k ")
    chunk = parse(LineParser(), encode(COMBINED_LINE, bad))
    assert chunk.dead == [(2, bad, "bytes '12k' is not a number", "nginx_combined")]


def test_line_parser_broken_json_reason():
    broken = TRAEFIK_JSON_LINE[:40]
    chunk = parse(LineParser(), encode(TRAEFIK_JSON_LINE, broken))
    assert len(chunk.dead) == 1
    assert chunk.dead[0][2].startswith("no JSON object: ")
    assert chunk.dead[0][3] == "traefik_json"


def test_line_parser_empty_lines_are_dead_letters():
    chunk = parse(LineParser(), [b"\n", COMBINED_LINE.encode() + b"\n", b"\r\n", b"  \n"])
    assert [dead[2] for dead in chunk.dead] == ["empty line", "empty line", "empty line"]
    assert [dead[0] for dead in chunk.dead] == [1, 3, 4]
    assert chunk.positions == [2]


def test_line_parser_counts_add_up():
    lines = encode(COMBINED_LINE, "", "garbage", KONG_LINE, "{not json", COMMON_LINE, ENVOY_TEXT_LINE, "[x]")
    lines.append(b"\xff\xfe\x00binary")
    chunk = parse(LineParser(), lines)
    assert len(chunk.rows) + len(chunk.dead) == len(lines)
    assert len(chunk.positions) == len(chunk.rows)
    assert len(chunk.formats) == len(chunk.rows)
    assert sorted(chunk.positions + [dead[0] for dead in chunk.dead]) == list(range(1, len(lines) + 1))


def test_line_parser_non_utf8_bytes_escaped():
    line = b'1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET /caf\xe9 HTTP/1.1" 200 5 "-" "agent \xff"\n'
    chunk = parse(LineParser(), [line])
    assert column(chunk, "target") == ["/caf\\xe9"]
    assert column(chunk, "user_agent") == ["agent \\xff"]


def test_line_parser_strips_crlf():
    chunk = parse(LineParser(), [COMMON_LINE.encode() + b"\r\n"])
    assert column(chunk, "bytes_out") == [7]
    assert chunk.formats == ["clf"]


def test_line_parser_combined_and_common_alternate():
    parser = LineParser()
    chunk = parse(parser, encode(COMBINED_LINE, COMBINED_LINE, COMMON_LINE, COMBINED_LINE))
    assert chunk.formats == ["nginx_combined", "nginx_combined", "clf", "nginx_combined"]
    assert column(chunk, "status") == [200, 200, 404, 200]


def test_line_parser_cri_prefixed_lines():
    prefix = "2025-12-31T17:37:40.493035218+01:00 stdout F "
    lines = encode(prefix + ENVOY_JSON_LINE, prefix + ENVOY_TEXT_LINE, prefix + ENVOY_JSON_LINE)
    chunk = parse(LineParser(), lines)
    assert chunk.dead == []
    assert chunk.formats == ["envoy_json", "envoy_text", "envoy_json"]


def test_line_parser_cri_prefix_with_pinned_format():
    prefix = "2026-01-24T01:34:36.743000000+00:00 stdout F "
    chunk = parse(LineParser("envoy_text"), encode(prefix + ENVOY_TEXT_LINE))
    assert chunk.dead == []
    assert column(chunk, "ts") == [datetime(2025, 10, 1, 13, 31, 23, 251000, tzinfo=timezone.utc).timestamp()]


def test_line_parser_json_mapping():
    parser = LineParser("json", mapping={"ts": "when", "client_ip": "peer.ip", "credential": "hdr.x-api-key"})
    line = orjson.dumps({"when": 1700000000, "peer": {"ip": "10.9.8.7"}, "hdr": {"x-api-key": "k-1"}}).decode()
    chunk = parse(parser, encode(line))
    assert column(chunk, "client_ip") == ["10.9.8.7"]
    assert column(chunk, "credential") == ["k-1"]


def test_line_parser_unknown_format_rejected():
    with pytest.raises(ConfigError, match="unknown log format 'apache'"):
        LineParser("apache")


def test_line_parser_mapping_with_other_format_rejected():
    with pytest.raises(ConfigError, match="applies only to the json format"):
        LineParser("kong_json", mapping={"ts": "time"})


def test_line_parser_positions_length_mismatch():
    with pytest.raises(ValueError, match="got 1 lines but 2 positions"):
        LineParser().parse([b"x"], [1, 2])


def test_line_parser_empty_chunk():
    chunk = LineParser().parse([], [])
    assert chunk.rows == []
    assert chunk.dead == []


def test_line_parser_bug_becomes_dead_letter(monkeypatch, caplog):
    parser = LineParser("nginx_combined", columnar=False)

    def broken_parse_line(line: str) -> tuple:
        raise KeyError("Bearer secret-token")

    monkeypatch.setattr(parser._parsers["nginx_combined"], "parse_line", broken_parse_line)
    with caplog.at_level(logging.ERROR, logger="pipeline.parsers.driver"):
        chunk = parse(parser, encode(COMBINED_LINE))
    reason = "internal error in the nginx_combined parser (KeyError)"
    assert chunk.dead == [(1, COMBINED_LINE, reason, "nginx_combined")]
    assert parser.internal_errors == 1
    assert "KeyError" in caplog.text
    assert "secret-token" not in caplog.text


def test_column_parser_bug_falls_back_to_line_parser(monkeypatch, caplog):
    parser = LineParser("nginx_combined")

    def broken_parse_block(*args) -> tuple:
        raise KeyError("Bearer secret-token")

    monkeypatch.setattr(parser._column_parsers["nginx_combined"], "parse_block", broken_parse_block)
    with caplog.at_level(logging.ERROR, logger="pipeline.parsers.driver"):
        chunk = parse(parser, encode(COMBINED_LINE, COMBINED_LINE))
    assert len(chunk.rows) == 2
    assert chunk.dead == []
    assert parser.internal_errors == 1
    assert "KeyError" in caplog.text
    assert "secret-token" not in caplog.text
