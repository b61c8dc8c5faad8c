"""Timestamp conversion, value helpers and the CRI prefix used by the parsers."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import pytest

from pipeline.parsers import LineParser, timestamps
from pipeline.parsers.base import RAW_FIELDS
from pipeline.parsers.container import has_cri_prefix, strip_cri_prefix
from pipeline.parsers.fields import (
    EMPTY_ROW,
    credential_value,
    duration_ms,
    first_forwarded_address,
    int_value,
    quote_value,
    strip_port,
    text_value,
)
from pipeline.parsers.timestamps import (
    clf_time_to_epoch,
    days_from_civil,
    epoch_number_to_seconds,
    iso8601_to_epoch,
    timestamp_value_to_epoch,
)


def utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10/Oct/2000:13:55:36 -0700", utc(2000, 10, 10, 20, 55, 36)),
        ("17/May/2015:10:05:03 +0000", utc(2015, 5, 17, 10, 5, 3)),
        ("22/Jan/2019:03:56:14 +0330", utc(2019, 1, 22, 0, 26, 14)),
        ("29/Feb/2024:00:00:00 +0000", utc(2024, 2, 29, 0, 0, 0)),
        ("1/jan/1970:00:00:00 +0000", 0.0),
        ("31/Dec/1969:23:59:59 +0000", -1.0),
    ],
)
def test_clf_time_to_epoch_values(text, expected):
    assert clf_time_to_epoch(text) == expected


def test_clf_time_matches_strptime_over_many_dates():
    for year in (1999, 2000, 2024, 2100):
        for month in range(1, 13):
            text = f"28/{datetime(2000, month, 1).strftime('%b')}/{year}:23:59:58 +0130"
            expected = datetime.strptime(text, "%d/%b/%Y:%H:%M:%S %z").timestamp()
            assert clf_time_to_epoch(text) == expected, text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10/Oct/2000:13:55:36", "is not in dd/Mon/yyyy:HH:MM:SS"),
        ("10/Foo/2000:13:55:36 -0700", "unknown month 'Foo'"),
        ("29/Feb/2023:00:00:00 +0000", "day 29, out of range for 2023-02"),
        ("10/Oct/2000:24:00:00 +0000", "time of day out of range"),
    ],
)
def test_clf_time_invalid(text, message):
    with pytest.raises(ValueError, match=message):
        clf_time_to_epoch(text)


def test_clf_cache_cleared_at_limit(monkeypatch):
    monkeypatch.setattr(timestamps, "CACHE_MAX_ENTRIES", 3)
    timestamps.clf_epoch_cache.clear()
    for second in range(5):
        clf_time_to_epoch(f"01/Jan/2020:00:00:0{second} +0000")
    assert len(timestamps.clf_epoch_cache) <= 3
    assert clf_time_to_epoch("01/Jan/2020:00:00:04 +0000") == utc(2020, 1, 1, 0, 0, 4)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2018-06-08T09:07:52.347415625Z", utc(2018, 6, 8, 9, 7, 52) + 0.347415625),
        ("2026-01-14T10:45:33.759014877+01:00", utc(2026, 1, 14, 9, 45, 33) + 0.759014877),
        ("2018-06-08 09:07:52+0530", utc(2018, 6, 8, 3, 37, 52)),
        ("2018-06-08T09:07:52-07", utc(2018, 6, 8, 16, 7, 52)),
        ("2018-06-08T09:07:52", utc(2018, 6, 8, 9, 7, 52)),
        ("2018-06-08T09:07:52,5z", utc(2018, 6, 8, 9, 7, 52) + 0.5),
    ],
)
def test_iso8601_to_epoch_values(text, expected):
    assert iso8601_to_epoch(text) == pytest.approx(expected, abs=1e-6)


def test_iso8601_invalid():
    with pytest.raises(ValueError, match="is not an ISO 8601 date-time"):
        iso8601_to_epoch("2018-06-08")


def test_days_from_civil_matches_datetime():
    epoch = datetime(1970, 1, 1)
    for year in (1, 1600, 1899, 1970, 2000, 2400, 9999):
        for month in (1, 2, 3, 12):
            assert days_from_civil(year, month, 1) == (datetime(year, month, 1) - epoch).days


@pytest.mark.parametrize(
    ("number", "seconds"),
    [(1.7e9, 1.7e9), (1.7e12, 1.7e9), (1.7e15, 1.7e9), (1.7e18, 1.7e9), (0, 0.0)],
)
def test_epoch_number_units(number, seconds):
    assert epoch_number_to_seconds(number) == pytest.approx(seconds)


def test_timestamp_value_rejects_bool_and_nan():
    with pytest.raises(ValueError, match="is not epoch seconds"):
        timestamp_value_to_epoch("ts", True)
    with pytest.raises(ValueError, match="not a finite timestamp"):
        timestamp_value_to_epoch("ts", math.nan)


def test_empty_row_has_every_field():
    assert len(EMPTY_ROW) == len(RAW_FIELDS)


@pytest.mark.parametrize(
    ("address", "host"),
    [
        ("10.0.0.1:5555", "10.0.0.1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("10.0.0.1", "10.0.0.1"),
        ("-", ""),
        ("", ""),
    ],
)
def test_strip_port(address, host):
    assert strip_port(address) == host


def test_first_forwarded_address():
    assert first_forwarded_address("203.0.113.9, 10.0.0.1") == "203.0.113.9"
    assert first_forwarded_address("[fd00::1]:80, 10.0.0.1") == "fd00::1"


def test_text_value_types():
    assert text_value(None) == ""
    assert text_value("-") == ""
    assert text_value(["a", "b"]) == "a"
    assert text_value([["nested"]]) == ""
    assert text_value(12) == "12"
    assert text_value({"k": 1}) == ""


def test_credential_value_redacted():
    assert credential_value("REDACTED") == ""
    assert credential_value(["<redacted>"]) == ""
    assert credential_value(" Bearer x ") == "Bearer x"


def test_int_value_rejects_negative_and_text():
    with pytest.raises(ValueError, match="size -5 is negative"):
        int_value("size", -5, -1)
    with pytest.raises(ValueError, match="size '5kb' is not a number"):
        int_value("size", "5kb", -1)
    assert int_value("size", "-", -1) == -1


def test_duration_ms_negative_is_unknown():
    assert math.isnan(duration_ms("proxy", -1, 1.0))


def test_quote_value_truncates():
    quoted = quote_value("x" * 100)
    assert len(quoted) == 40
    assert quoted.endswith("...")


def test_cri_prefix_stripped():
    line = '2025-12-31T17:37:40.493035218+01:00 stdout F {"a": 1}'
    assert has_cri_prefix(line)
    assert strip_cri_prefix(line) == '{"a": 1}'


def test_cri_prefix_absent_leaves_line():
    line = '1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 1'
    assert not has_cri_prefix(line)
    assert strip_cri_prefix(line) is line


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('203.0.113.9 - - [02/Nov/2026:10:00:00 +0000] "GET /a HTTP/1.1" 200 99999999999999999999999 "-" "ua"', "bytes"),
        (
            '203.0.113.9 - - [02/Nov/2026:10:00:00 +0000] "GET /a HTTP/1.1" 200 5 "-" "ua" '
            "request_length=99999999999999999999999",
            "request_length",
        ),
        ('203.0.113.9 - - [02/Nov/2026:10:00:00 +0000] "GET /a HTTP/1.1" 200 5 "-" "ua" asn=AS99999999999', "asn"),
    ],
)
def test_oversized_number_becomes_dead_letter(line, field):
    for columnar in (True, False):
        chunk = LineParser(columnar=columnar).parse([line.encode()], [1])
        assert chunk.rows == []
        assert len(chunk.dead) == 1
        assert field in chunk.dead[0][2]
