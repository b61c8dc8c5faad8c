"""NGINX / Apache combined and common log format parsers, with their variants."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import pytest

from pipeline.parsers.base import RAW_FIELDS
from pipeline.parsers.clf import CombinedParser, CommonParser, split_request_line
from pipeline.parsers.errors import FormatMismatch

COMBINED = CombinedParser()
COMMON = CommonParser()


def utc(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc).timestamp()


def fields(row: tuple) -> dict:
    assert len(row) == len(RAW_FIELDS)
    return dict(zip(RAW_FIELDS, row))


def test_combined_plain_line_fields():
    line = (
        '83.149.9.216 - - [17/May/2015:10:05:03 +0000] "GET /presentations/kibana-search.png HTTP/1.1" '
        '200 203023 "http://semicomplete.com/presentations/" "Mozilla/5.0 (Macintosh)"'
    )
    row = fields(COMBINED.parse_line(line))
    assert row["ts"] == utc(2015, 5, 17, 10, 5, 3)
    assert row["client_ip"] == "83.149.9.216"
    assert row["method"] == "GET"
    assert row["target"] == "/presentations/kibana-search.png"
    assert row["status"] == 200
    assert row["bytes_out"] == 203023
    assert row["bytes_in"] == -1
    assert math.isnan(row["latency_ms"])
    assert row["referer"] == "http://semicomplete.com/presentations/"
    assert row["user_agent"] == "Mozilla/5.0 (Macintosh)"
    assert row["host"] == ""
    assert row["account"] == ""
    assert row["credential"] == ""
    assert row["asn"] == 0


def test_combined_timezone_offset_to_utc():
    line = '127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 "-" "-"'
    row = fields(COMBINED.parse_line(line))
    assert row["ts"] == utc(2000, 10, 10, 20, 55, 36)
    assert row["account"] == "frank"


def test_combined_dash_fields():
    line = '10.0.0.1 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 304 - "-" "-"'
    row = fields(COMBINED.parse_line(line))
    assert row["bytes_out"] == -1
    assert row["referer"] == ""
    assert row["user_agent"] == ""
    assert row["status"] == 304


def test_combined_dash_status_is_zero():
    line = '10.0.0.1 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" - - "-" "curl/8"'
    row = fields(COMBINED.parse_line(line))
    assert row["status"] == 0
    assert row["bytes_out"] == -1


def test_combined_ipv6_client():
    line = '2001:db8::1 - - [17/May/2015:10:05:03 +0000] "GET /v1/items?id=3 HTTP/2.0" 200 12 "-" "curl/8"'
    row = fields(COMBINED.parse_line(line))
    assert row["client_ip"] == "2001:db8::1"
    assert row["target"] == "/v1/items?id=3"


def test_combined_escaped_quotes_in_user_agent():
    line = (
        '1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 5 "-" '
        '"Mozilla/5.0 \\"evil\\" agent"'
    )
    row = fields(COMBINED.parse_line(line))
    assert row["user_agent"] == 'Mozilla/5.0 "evil" agent'
    assert row["status"] == 200


def test_combined_escaped_quote_at_user_agent_end():
    line = '1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 5 "-" "agent \\""'
    row = fields(COMBINED.parse_line(line))
    assert row["user_agent"] == 'agent "'


def test_combined_escaped_quotes_in_referer_and_request():
    line = (
        '1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET /a\\"b HTTP/1.1" 404 5 '
        '"http://x/\\" \\"y" "curl/8"'
    )
    row = fields(COMBINED.parse_line(line))
    assert row["target"] == '/a\\"b'
    assert row["referer"] == 'http://x/" "y'
    assert row["user_agent"] == "curl/8"
    assert row["status"] == 404


def test_combined_hex_escapes_kept_as_logged():
    line = (
        '1.2.3.4 - - [17/Oct/2023:05:57:49 +1100] "\\x16\\x03\\x01\\x01 \\x02" 400 226 "-" '
        '"Mozilla/5.0 \\xE4\\xE5"'
    )
    row = fields(COMBINED.parse_line(line))
    assert row["method"] == ""
    assert row["target"] == ""
    assert row["status"] == 400
    assert row["user_agent"] == "Mozilla/5.0 \\xE4\\xE5"
    assert row["ts"] == utc(2023, 10, 16, 18, 57, 49)


@pytest.mark.parametrize(
    ("request_line", "method", "target"),
    [
        ("-", "", ""),
        ("GET /", "GET", "/"),
        ("HELP", "HELP", ""),
        ("batman", "", ""),
        ("GET /a b HTTP/1.1", "GET", "/a b"),
        ("M-SEARCH * HTTP/1.1", "M-SEARCH", "*"),
        ("lv|'|'|VHJvamFu|'|'|MARK", "", ""),
    ],
)
def test_combined_non_http_request_lines(request_line, method, target):
    line = f'1.2.3.4 - - [29/Jul/2023:10:26:06 -0700] "{request_line}" 400 157 "-" "-"'
    row = fields(COMBINED.parse_line(line))
    assert row["method"] == method
    assert row["target"] == target
    assert row["status"] == 400


def test_split_request_line_empty():
    assert split_request_line("") == ("", "")


def test_combined_vhost_prefix():
    line = (
        'website.com:443 1.2.3.4 - - [25/Oct/2021:11:05:52 +0200] "GET /web HTTP/1.1" 403 6963 '
        '"abc.com" "agent"'
    )
    row = fields(COMBINED.parse_line(line))
    assert row["host"] == "website.com:443"
    assert row["client_ip"] == "1.2.3.4"
    assert row["ts"] == utc(2021, 10, 25, 9, 5, 52)
    assert row["referer"] == "abc.com"


def test_combined_missing_ident_field():
    line = '192.168.1.1 - [08/Jun/2020:08:04:43 +0000] "GET /api/test HTTP/1.1" 200 100 "-" "curl/7.68.0"'
    row = fields(COMBINED.parse_line(line))
    assert row["client_ip"] == "192.168.1.1"
    assert row["account"] == ""
    assert row["bytes_out"] == 100


def test_combined_user_agent_cut_off():
    line = '46.118.127.106 - - [20/May/2015:12:05:17 +0000] "GET /x.py HTTP/1.1" 200 235 "-" "Mozilla/5.0 (compatible'
    row = fields(COMBINED.parse_line(line))
    assert row["user_agent"] == "Mozilla/5.0 (compatible"
    assert row["status"] == 200


def test_combined_named_extras():
    line = (
        '1.2.3.4 - - [17/May/2015:10:05:03 +0000] "POST /v1/pay HTTP/1.1" 201 17 "-" "sdk/2" '
        'rt=0.125 urt="0.100" key=sk_live_abc Country=de asn=AS13335 req_id=r-1 ja3=771,4865 '
        'host=api.example.com consumer=acme key_id=kid-9 route=payments request_length=512 '
        'origin="https://app.example.com" device_id=dev-7'
    )
    row = fields(COMBINED.parse_line(line))
    assert row["latency_ms"] == pytest.approx(125.0)
    assert row["credential"] == "sk_live_abc"
    assert row["country"] == "DE"
    assert row["asn"] == 13335
    assert row["request_id"] == "r-1"
    assert row["device_id"] == "dev-7"
    assert row["host"] == "api.example.com"
    assert row["account"] == "acme"
    assert row["key_id"] == "kid-9"
    assert row["route"] == "payments"
    assert row["bytes_in"] == 512
    assert row["origin"] == "https://app.example.com"
    assert row["user_agent"] == "sdk/2"


def test_combined_quoted_authorization_extra():
    line = (
        '1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET /v1 HTTP/1.1" 200 2 "-" "sdk" '
        'auth="Bearer eyJ.a \\"b\\""'
    )
    row = fields(COMBINED.parse_line(line))
    assert row["credential"] == 'Bearer eyJ.a "b"'


def test_combined_redacted_credential_extra_is_empty():
    line = '1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET /v1 HTTP/1.1" 200 2 "-" "sdk" authorization=REDACTED'
    row = fields(COMBINED.parse_line(line))
    assert row["credential"] == ""


def test_combined_upstream_time_used_without_request_time():
    line = '1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET /v1 HTTP/1.1" 200 2 "-" "sdk" urt="0.004, 0.010 : 0.002"'
    row = fields(COMBINED.parse_line(line))
    assert row["latency_ms"] == pytest.approx(16.0)


def test_combined_request_time_wins_over_upstream():
    line = '1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET /v1 HTTP/1.1" 200 2 "-" "sdk" urt=0.5 request_time=0.75'
    row = fields(COMBINED.parse_line(line))
    assert row["latency_ms"] == pytest.approx(750.0)


def test_combined_unnamed_extras_ignored():
    line = (
        '1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET /v1 HTTP/1.1" 200 2 "-" "sdk" '
        '"10.0.0.1, 10.0.0.2" 116075 12ms - "unterminated'
    )
    row = fields(COMBINED.parse_line(line))
    assert row["client_ip"] == "1.2.3.4"
    assert row["user_agent"] == "sdk"
    assert math.isnan(row["latency_ms"])


def test_combined_unknown_named_extras_ignored():
    line = '1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET /v1 HTTP/1.1" 200 2 "-" "sdk" gzip_ratio=2.5 uct="0.000"'
    row = fields(COMBINED.parse_line(line))
    assert math.isnan(row["latency_ms"])
    assert row["credential"] == ""


def test_combined_extra_with_escaped_quote_in_line():
    line = (
        '1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET /v1 HTTP/1.1" 200 2 "-" "a \\" b" '
        'rt=0.010 key="k\\"1"'
    )
    row = fields(COMBINED.parse_line(line))
    assert row["user_agent"] == 'a " b'
    assert row["latency_ms"] == pytest.approx(10.0)
    assert row["credential"] == 'k"1'


def test_combined_bad_request_time_rejected():
    line = '1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET /v1 HTTP/1.1" 200 2 "-" "sdk" rt=fast'
    with pytest.raises(ValueError, match="rt 'fast' is not a number"):
        COMBINED.parse_line(line)


def test_combined_bad_status_reason():
    line = '1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" abc 5 "-" "-"'
    with pytest.raises(ValueError, match="status 'abc' is not a 3-digit number"):
        COMBINED.parse_line(line)


def test_combined_bad_status_is_not_a_mismatch():
    line = '1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" abc 5 "-" "-"'
    with pytest.raises(ValueError) as caught:
        COMBINED.parse_line(line)
    assert not isinstance(caught.value, FormatMismatch)


def test_combined_bad_bytes_reason():
    line = '1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 12k "-" "-"'
    with pytest.raises(ValueError, match="bytes '12k' is not a number"):
        COMBINED.parse_line(line)


def test_combined_bad_timestamp_reason():
    line = '1.2.3.4 - - [31/Feb/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1 "-" "-"'
    with pytest.raises(ValueError, match="day 31, out of range for 2015-02"):
        COMBINED.parse_line(line)


def test_combined_rejects_common_line():
    line = '1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1'
    with pytest.raises(FormatMismatch, match="no quoted referer"):
        COMBINED.parse_line(line)


def test_combined_rejects_json():
    with pytest.raises(FormatMismatch):
        COMBINED.parse_line('{"time": "2020-01-01T00:00:00Z"}')


def test_combined_rejects_empty_line():
    with pytest.raises(FormatMismatch):
        COMBINED.parse_line("")


def test_common_line_fields():
    line = '116.203.1.1 - alice [05/Mar/2021:09:01:38 +0100] "GET /test/lists/sip_30d.txt HTTP/1.0" 200 1513'
    row = fields(COMMON.parse_line(line))
    assert row["ts"] == utc(2021, 3, 5, 8, 1, 38)
    assert row["client_ip"] == "116.203.1.1"
    assert row["method"] == "GET"
    assert row["target"] == "/test/lists/sip_30d.txt"
    assert row["status"] == 200
    assert row["bytes_out"] == 1513
    assert row["account"] == "alice"
    assert row["user_agent"] == ""
    assert row["referer"] == ""


def test_common_with_named_extras():
    line = '116.203.1.1 - - [05/Mar/2021:09:01:38 +0100] "GET / HTTP/1.0" 200 15 rt=0.002 api_key=k-1'
    row = fields(COMMON.parse_line(line))
    assert row["latency_ms"] == pytest.approx(2.0)
    assert row["credential"] == "k-1"


def test_common_rejects_combined_line():
    line = '1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1 "-" "curl"'
    with pytest.raises(FormatMismatch, match="combined format"):
        COMMON.parse_line(line)


def test_fast_and_slow_paths_agree():
    # The vhost prefix forces the slow path. Without it the same fields take the fast path.
    tail = '[17/May/2015:10:05:03 +0000] "GET /x?y=1 HTTP/1.1" 200 12 "http://r/" "agent/1" rt=0.5'
    fast = fields(COMBINED.parse_line("9.9.9.9 - bob " + tail))
    slow = fields(COMBINED.parse_line("vhost:80 9.9.9.9 - bob " + tail))
    assert slow["host"] == "vhost:80"
    del slow["host"], fast["host"]
    assert slow == fast


def test_matches_needs_bracket_and_quote():
    assert COMBINED.matches('1.2.3.4 - - [x] "GET /"')
    assert not COMBINED.matches("plain text line")


def test_combined_crafted_request_not_misparsed():
    # A request that embeds an escaped copy of the fields after it.
    line = (
        '1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET /x\\" 200 1 \\"a\\" \\"b HTTP/1.1" 404 5 '
        '"ref" "ua"'
    )
    row = fields(COMBINED.parse_line(line))
    assert row["status"] == 404
    assert row["bytes_out"] == 5
    assert row["referer"] == "ref"
    assert row["user_agent"] == "ua"
    assert row["target"] == '/x\\" 200 1 \\"a\\" \\"b'
