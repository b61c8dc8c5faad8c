"""Columnar parsing of combined lines: the same rows, positions and dead letters as the line parser."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pipeline.parsers import RAW_FIELDS, LineParser
from pipeline.parsers.base import FIELD_INDEX, ParsedChunk
from pipeline.parsers.clf_columns import CombinedColumnParser
from pipeline.parsers.clf_vector import parse_vector
from pipeline.parsers.extras import build_layout

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "real"

EXTRAS = (
    '203.0.113.{n} - - [02/Nov/2026:10:00:0{s} +0000] "GET /v1/orders/{n}?page=2 HTTP/1.1" {status} {size} "-" '
    '"okhttp/4.12.0" rt=0.0{n} key="sk_live_{n:04d}abcdef" key_id="-" origin="https://app.example" country="de" '
    "req_id={n:016x}"
)
PLAIN = '203.0.113.{n} - alice [02/Nov/2026:10:00:0{s} +0100] "POST /login HTTP/2.0" {status} {size} "https://ref/" "curl/8.5"'

# Lines the columnar parser must either parse as the line parser does or hand over to it.
EDGE_CASES = [
    "",
    "   ",
    '2001:db8::1 - - [02/Nov/2026:10:00:01 +0000] "GET /v6 HTTP/1.1" 200 5 "-" "curl/8" rt=0.010 key="k6" '
    'key_id="-" origin="-" country="FR" req_id=ab',
    '203.0.113.9 - - [02/Nov/2026:10:00:01 +0000] "-" 400 0 "-" "-" rt=0.000 key="-" key_id="-" origin="-" '
    'country="-" req_id=-',
    '203.0.113.9 - - [02/Nov/2026:10:00:01 +0000] "\\x16\\x03\\x01\\x00" 400 - "-" "-" rt=- key="" key_id="" '
    'origin="" country="" req_id=',
    '203.0.113.9 - - [02/Nov/2026:10:00:01 +0000] "GET / FOO" - - "-" "-" rt=0.001 key="a" key_id="id-7" '
    'origin="-" country="US" req_id=1',
    '203.0.113.9 - - [02/Nov/2026:10:00:01 +0000] "GET /a HTTP/1.1" 200 5 "-" "say \\"hi\\"" rt=0.001 key="b" '
    'key_id="-" origin="-" country="US" req_id=2',
    '203.0.113.9 - - [02/Nov/2026:10:00:01 +0000] "GET /a HTTP/1.1" 200 5 "-" "ua" rt=fast key="c" key_id="-" '
    'origin="-" country="US" req_id=3',
    '203.0.113.9 - - [31/Feb/2026:10:00:01 +0000] "GET /a HTTP/1.1" 200 5 "-" "ua" rt=0.001 key="d" key_id="-" '
    'origin="-" country="US" req_id=4',
    '203.0.113.9 - - [02/Nov/2026:10:00:01 +0000] "GET /a HTTP/1.1" 200 5 "-" "ua" rt=0.001 key="REDACTED" '
    'key_id="-" origin="-" country="US" req_id=5',
    '203.0.113.9 - - [02/Nov/2026:10:00:01 +0000] "GET /a HTTP/1.1" 200 5 "-" "ua" urt="0.004, 0.010" '
    'consumer=acme',
    '203.0.113.9 - - [02/Nov/2026:10:00:01 +0000] "GET /a HTTP/1.1" 200 5 "-" "ua"',
    'vhost.example 203.0.113.9 - - [02/Nov/2026:10:00:01 +0000] "GET /a HTTP/1.1" 200 5 "-" "ua"',
    '{"time": "2026-11-02T10:00:01Z", "remote_addr": "10.0.0.1", "status": 200}',
    '203.0.113.9 - - [02/Nov/2026:10:00:01 +0000] "GET /a HTTP/1.1" 200 5 "-" "ua" rt=0.001 key="e" '
    'key_id="-" origin="-" country="US" req_id=6\r',
]


def extras_lines(count: int, start: int = 0) -> list[str]:
    return [
        EXTRAS.format(n=n, s=n % 10, status=(200, 401, 404, 429, 500)[n % 5], size=n * 7) for n in range(start, start + count)
    ]


def parse_both(lines: list[bytes]) -> tuple[ParsedChunk, ParsedChunk]:
    positions = list(range(101, 101 + len(lines)))
    return LineParser(columnar=True).parse(lines, positions), LineParser(columnar=False).parse(lines, positions)


def same_value(left, right) -> bool:
    if isinstance(left, float) and isinstance(right, float) and math.isnan(left) and math.isnan(right):
        return True
    return left == right and type(left) is type(right)


def assert_same_chunks(columnar: ParsedChunk, by_line: ParsedChunk) -> None:
    assert columnar.dead == by_line.dead
    assert columnar.positions == by_line.positions
    assert columnar.formats == by_line.formats
    assert len(columnar.rows) == len(by_line.rows)
    for number, (left, right) in enumerate(zip(columnar.rows, by_line.rows, strict=True)):
        for name, a, b in zip(RAW_FIELDS, left, right, strict=True):
            assert same_value(a, b), f"row {number} field {name}: {a!r} != {b!r}"


def test_column_parser_takes_clean_chunk_whole():
    lines = [line.encode() for line in extras_lines(50)]
    chunk = LineParser().parse(lines, list(range(1, 51)))
    assert chunk.block is not None
    assert len(chunk.block) == 50
    assert chunk.line_rows == []


def test_column_parser_matches_line_parser_with_extras():
    assert_same_chunks(*parse_both([line.encode() for line in extras_lines(200)]))


def test_column_parser_matches_line_parser_plain_combined():
    lines = [PLAIN.format(n=n, s=n % 10, status=200 + n % 3, size=n).encode() for n in range(100)]
    assert_same_chunks(*parse_both(lines))


@pytest.mark.parametrize("index", range(len(EDGE_CASES)))
def test_column_parser_matches_line_parser_edge_case(index):
    lines = extras_lines(20) + [EDGE_CASES[index]] + extras_lines(20, start=20)
    assert_same_chunks(*parse_both([line.encode() for line in lines]))


def test_column_parser_all_edge_cases_together():
    lines = extras_lines(10) + EDGE_CASES + extras_lines(10, start=10)
    columnar, by_line = parse_both([line.encode() for line in lines])
    assert_same_chunks(columnar, by_line)
    assert len(columnar.dead) >= 4


def test_column_parser_non_utf8_bytes():
    line = extras_lines(1)[0].encode().replace(b"okhttp", b"ok\xff\xfehttp")
    assert_same_chunks(*parse_both([line] + [text.encode() for text in extras_lines(5, start=1)]))


def test_column_parser_newline_terminated_lines():
    lines = [line.encode() + b"\n" for line in extras_lines(30)]
    columnar, by_line = parse_both(lines)
    assert_same_chunks(columnar, by_line)
    assert columnar.block is not None


def test_column_parser_keeps_line_order_with_misfits():
    lines = extras_lines(5) + [EDGE_CASES[-4]] + extras_lines(5, start=5)
    chunk = LineParser().parse([line.encode() for line in lines], list(range(1, 12)))
    assert chunk.positions == list(range(1, 12))
    request_ids = [row[FIELD_INDEX["request_id"]] for row in chunk.rows]
    assert request_ids[5] == ""
    assert request_ids[6] == f"{5:016x}"


def test_column_parser_bad_latency_dead_letter():
    bad = EDGE_CASES[7]
    chunk = LineParser().parse([line.encode() for line in [*extras_lines(3), bad]], [1, 2, 3, 4])
    assert len(chunk.rows) == 3
    assert len(chunk.dead) == 1
    position, raw, reason, format_id = chunk.dead[0]
    assert position == 4
    assert "rt" in reason
    assert "fast" in reason
    assert format_id == "nginx_combined"


def test_column_parser_record_with_newline_uses_line_parser():
    lines = [line.encode() for line in extras_lines(3)]
    lines[1] = lines[1] + b"\n" + lines[2]
    chunk = LineParser().parse(lines, [1, 2, 3])
    assert chunk.block is None
    assert len(chunk.rows) + len(chunk.dead) == 3


def test_column_parser_chooses_pattern_again_after_layout_change():
    parser = CombinedColumnParser()
    _, taken, misfits = parser.parse_block(extras_lines(10))
    assert len(taken) == 10
    plain = [PLAIN.format(n=n, s=1, status=200, size=n) for n in range(10)]
    _, taken, misfits = parser.parse_block(plain)
    assert len(misfits) == 10
    _, taken, misfits = parser.parse_block(plain)
    assert len(taken) == 10
    assert misfits == []


@pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder {DATA} is absent")
@pytest.mark.parametrize("relative_path", ["elastic_apache/apache_logs", "ddoser_nginx/access.log"])
def test_column_parser_matches_on_real_logs(relative_path):
    lines = (DATA / relative_path).read_bytes().split(b"\n")
    if not lines[-1]:
        lines.pop()
    columnar_parser, line_parser = LineParser(columnar=True), LineParser(columnar=False)
    for start in range(0, len(lines), 2000):
        chunk_lines = lines[start : start + 2000]
        positions = list(range(start + 1, start + 1 + len(chunk_lines)))
        assert_same_chunks(columnar_parser.parse(chunk_lines, positions), line_parser.parse(chunk_lines, positions))


def vector_rows(lines: list[str], layout_tail: str | None) -> tuple[list[tuple], list[int]]:
    layout = build_layout(layout_tail) if layout_tail else None
    blob = "".join(line + "\n" for line in lines).encode()
    columns, taken = parse_vector(blob, len(lines), layout)
    rows = list(zip(*(columns[name].tolist() for name in RAW_FIELDS), strict=True))
    return rows, taken.tolist()


def test_vector_parser_takes_clean_extras_lines():
    lines = extras_lines(40)
    rows, taken = vector_rows(lines, lines[0].partition('okhttp/4.12.0"')[2])
    expected = LineParser(columnar=False).parse([line.encode() for line in lines], list(range(40))).rows
    assert taken == list(range(40))
    for left, right in zip(rows, expected, strict=True):
        for name, a, b in zip(RAW_FIELDS, left, right, strict=True):
            assert same_value(a, b), f"field {name}: {a!r} != {b!r}"


def test_vector_parser_takes_clean_plain_lines():
    lines = [PLAIN.format(n=n, s=n % 10, status=200 + n % 3, size=n) for n in range(30)]
    rows, taken = vector_rows(lines, None)
    expected = LineParser(columnar=False).parse([line.encode() for line in lines], list(range(30))).rows
    assert taken == list(range(30))
    assert [row[FIELD_INDEX["ts"]] for row in rows] == [row[FIELD_INDEX["ts"]] for row in expected]
    assert [row[FIELD_INDEX["account"]] for row in rows] == ["alice"] * 30


@pytest.mark.parametrize(
    "line",
    [
        EDGE_CASES[3],  # request line "-"
        EDGE_CASES[6],  # escaped quote
        EDGE_CASES[-1],  # trailing carriage return
        extras_lines(1)[0].replace(" rt=", "  rt="),  # two spaces
        extras_lines(1)[0].replace("02/Nov/2026:10:00:00", "2/Nov/2026:10:00:00"),  # one-digit day
        extras_lines(1)[0].replace("/Nov/", "/Nox/"),  # unknown month
        extras_lines(1)[0].replace("req_id=", "req_id=\t"),  # tab in an unquoted value
        extras_lines(1)[0] + " ",  # trailing space
    ],
)
def test_vector_parser_leaves_inexact_lines(line):
    tail = extras_lines(1)[0].partition('okhttp/4.12.0"')[2]
    _, taken = vector_rows([extras_lines(1)[0], line], tail)
    assert taken == [0]


@pytest.mark.parametrize(
    "time_text",
    ["29/Feb/2024:23:59:60 -0130", "29/Feb/2023:10:00:00 +0000", "01/JAN/2000:00:00:00 +1400", "31/dec/1969:23:59:59 +0000"],
)
def test_column_parser_time_edge_cases(time_text):
    lines = [line.replace("02/Nov/2026:10:00:0", "XX", 1) for line in extras_lines(12)]
    lines = [line.replace(line[line.index("[") + 1 : line.index("]")], time_text, 1) for line in lines]
    columnar, by_line = parse_both([line.encode() for line in lines])
    assert_same_chunks(columnar, by_line)


P = '203.0.113.9 - - [02/Nov/2026:10:00:00 +0000] "GET /v1/x HTTP/1.1" 200 12 "-" "curl/8"'
JSON_LINE = '{"time": "2026-11-02T10:00:01Z", "remote_addr": "10.0.0.1", "status": 200}'


def parse_both_with_parsers(lines: list[str]) -> tuple[ParsedChunk, ParsedChunk, LineParser, LineParser]:
    columnar_parser, line_parser = LineParser(columnar=True), LineParser(columnar=False)
    encoded = [line.encode() for line in lines]
    positions = list(range(1, len(lines) + 1))
    return columnar_parser.parse(encoded, positions), line_parser.parse(encoded, positions), columnar_parser, line_parser


def test_quoted_value_in_unquoted_layout_slot_loses_quotes():
    columnar, by_line, _, _ = parse_both_with_parsers([P + " key=abc", P + " foo=1 key=x", P + ' key="abc"'])
    assert_same_chunks(columnar, by_line)
    assert columnar.rows[2][FIELD_INDEX["credential"]] == "abc"


def test_unquoted_slot_redacted_value_ignored():
    columnar, by_line, _, _ = parse_both_with_parsers([P + " key=abc", P + ' key="REDACTED"'])
    assert_same_chunks(columnar, by_line)
    assert columnar.rows[1][FIELD_INDEX["credential"]] == ""


def test_quoted_latency_in_unquoted_layout_slot_parses():
    columnar, by_line, _, _ = parse_both_with_parsers([P + " rt=0.004", P + ' rt="0.004"'])
    assert_same_chunks(columnar, by_line)
    assert columnar.dead == []
    assert columnar.rows[1][FIELD_INDEX["latency_ms"]] == 4.0


def test_trailing_carriage_return_stripped_as_line_parser_does():
    columnar, by_line, _, _ = parse_both_with_parsers([P + " 12ms origin=x\r", P + ' 12ms origin="abc\r'])
    assert_same_chunks(columnar, by_line)


@pytest.mark.parametrize(
    "lines",
    [
        [JSON_LINE, P, P + ' 7 "r" "u" 3ms'],
        [P, JSON_LINE, P, "not a log line"],
        [P, P, JSON_LINE, JSON_LINE, P, P + ' 7 "r" "u" 3ms', P],
    ],
)
def test_format_switches_happen_in_line_order(lines):
    columnar, by_line, columnar_parser, line_parser = parse_both_with_parsers(lines)
    assert_same_chunks(columnar, by_line)
    assert columnar_parser.format == line_parser.format
    assert columnar_parser.format_switches == line_parser.format_switches


@pytest.mark.parametrize("time_text", ["01/Jan/0001:00:00:00 +0000", "31/Dec/9999:23:59:59 +0000", "01/Jan/1970:00:30:00 +0100"])
def test_event_time_out_of_range_dead_letter(time_text):
    line = P.replace("02/Nov/2026:10:00:00 +0000", time_text)
    columnar, by_line, _, _ = parse_both_with_parsers([P, line])
    assert_same_chunks(columnar, by_line)
    assert len(columnar.dead) == 1
    assert "outside 1970-01-01 to 2106-02-07" in columnar.dead[0][2]


def test_vector_parser_chunk_without_spaces_takes_nothing():
    columns, taken = parse_vector(b'""""""\n', 1, None)
    assert taken.tolist() == []
    assert len(columns["ts"]) == 0
