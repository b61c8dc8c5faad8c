"""Parsers over real public access logs in the shared data folder, when it is present.

Expected dead-letter counts come from reading each file: they are error-log
lines, server log lines or empty lines mixed into the access logs.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

from pipeline.parsers import LineParser
from pipeline.parsers.base import FIELD_INDEX, ParsedChunk

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

pytestmark = pytest.mark.skipif(
    not DATA.is_dir(), reason=f"shared test data folder {DATA} is absent (it sits next to the repository checkout)"
)


def read_lines(relative_path: str) -> list[bytes]:
    """Split a file on newlines as a file source does, keeping line endings off."""
    lines = (DATA / relative_path).read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def parse_file(relative_path: str) -> tuple[list[bytes], ParsedChunk, LineParser]:
    lines = read_lines(relative_path)
    parser = LineParser()
    chunk = parser.parse(lines, list(range(1, len(lines) + 1)))
    return lines, chunk, parser


def row_at(chunk: ParsedChunk, position: int) -> dict:
    index = chunk.positions.index(position)
    return {name: chunk.rows[index][number] for name, number in FIELD_INDEX.items()}


def test_elastic_apache_every_line_parses():
    lines, chunk, _ = parse_file("real/elastic_apache/apache_logs")
    assert len(lines) == 10_000
    assert len(chunk.rows) == 10_000
    assert chunk.dead == []
    assert set(chunk.formats) == {"nginx_combined"}


def test_elastic_apache_first_line_fields():
    _, chunk, _ = parse_file("real/elastic_apache/apache_logs")
    row = row_at(chunk, 1)
    assert row["ts"] == datetime(2015, 5, 17, 10, 5, 3, tzinfo=timezone.utc).timestamp()
    assert row["client_ip"] == "83.149.9.216"
    assert row["target"] == "/presentations/logstash-monitorama-2013/images/kibana-search.png"
    assert row["status"] == 200
    assert row["bytes_out"] == 203023


def test_elastic_apache_cut_off_user_agent_line():
    _, chunk, _ = parse_file("real/elastic_apache/apache_logs")
    row = row_at(chunk, 8899)
    assert row["user_agent"] == "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html"
    assert row["bytes_out"] == 235


def test_elastic_apache_escaped_referer_bytes():
    _, chunk, _ = parse_file("real/elastic_apache/apache_logs")
    assert row_at(chunk, 5851)["referer"].startswith("http://\\xe4\\xe5\\xe3")


def test_ddoser_nginx_every_line_parses():
    lines, chunk, _ = parse_file("real/ddoser_nginx/access.log")
    assert len(chunk.rows) == len(lines)
    assert chunk.dead == []
    assert set(chunk.formats) == {"nginx_combined"}
    assert Counter(row[FIELD_INDEX["status"]] for row in chunk.rows)[499] > 0
    clients = Counter(row[FIELD_INDEX["client_ip"]] for row in chunk.rows)
    assert clients.most_common(1)[0][0] == "192.236.195.162"


def test_traefik_mixed_switches_format_once():
    lines, chunk, parser = parse_file("real/traefik_mixed/access.log")
    assert len(lines) == 392
    assert chunk.dead == []
    assert chunk.formats == ["traefik_clf"] * 25 + ["traefik_json"] * 367
    assert parser.format_switches == 1


def test_traefik_mixed_json_fields():
    _, chunk, _ = parse_file("real/traefik_mixed/access.log")
    row = row_at(chunk, 26)
    assert row["client_ip"] == "172.25.0.1"
    assert row["host"] == "www.first.containous.demo.com"
    assert row["route"] == "Host-www-first-containous-demo-com-2"
    assert row["status"] == 200
    assert row["latency_ms"] == pytest.approx(6.450613)
    assert row["bytes_out"] == 1606
    assert row["credential"] == "Basic dXNlcjpwYXNzd29yZA=="
    assert row["ts"] == pytest.approx(datetime(2018, 6, 8, 9, 7, 52, tzinfo=timezone.utc).timestamp() + 0.347415625)


# (file, rows per format, dead letters) for edge fixtures in formats the parsers support.
EDGE_FILES = [
    ("edge/crowdsec_hub/apache2-logs__apache2-logs.log", {"nginx_combined": 6, "clf": 1}, 2),
    ("edge/crowdsec_hub/apache2-malformed__apache2-logs.log", {"nginx_combined": 11}, 0),
    ("edge/crowdsec_hub/bunkerweb-logs__bunkerweb-logs.log", {"nginx_combined": 5}, 0),
    ("edge/crowdsec_hub/caddy-basic-auth-bf__caddy-logs.log", {"caddy_json": 6}, 0),
    ("edge/crowdsec_hub/caddy-logs__caddy-logs.log", {"caddy_json": 10}, 2),
    ("edge/crowdsec_hub/envoy-logs__envoy.log", {"envoy_json": 6, "envoy_text": 4}, 0),
    ("edge/crowdsec_hub/http-dos-invalid-http-versions__http-dos-invalid-http-versions.log", {"nginx_combined": 6}, 0),
    ("edge/crowdsec_hub/litespeed-logs__litespeed-logs.log", {"nginx_combined": 1}, 2),
    ("edge/crowdsec_hub/nginx-http-malformed__nginx_http-logs.log", {"nginx_combined": 12}, 0),
    ("edge/crowdsec_hub/nginx_http-logs__nginx_http-logs.log", {"nginx_combined": 8}, 1),
    ("edge/crowdsec_hub/traefik_clf__traefik_clf.log", {"traefik_clf": 7}, 2),
    ("edge/crowdsec_hub/traefik_json__traefik_json.log", {"traefik_json": 6}, 1),
    ("edge/envoy_sigongjoa/envoy_access.log", {"envoy_text": 23}, 0),
    ("edge/lnav/logfile_access_log.0", {"nginx_combined": 3}, 0),
    ("edge/lnav/logfile_access_log.1", {"nginx_combined": 1}, 0),
    ("edge/lnav/logfile_bad_access_log.0", {"nginx_combined": 3}, 0),
    ("edge/lnav/logfile_caddy_log.1", {"caddy_json": 4}, 0),
    ("edge/lnav/logfile_regexp_access_log.0", {"nginx_combined": 2}, 0),
    ("edge/lnav/logfile_shop_access_log.0", {"nginx_combined": 1000}, 0),
    ("edge/logstash_patterns_core/httpd_spec_messages.txt", {"nginx_combined": 3}, 6),
    ("edge/ngx-prom/access.log", {"nginx_combined": 7}, 0),
]


@pytest.mark.parametrize(("relative_path", "formats", "dead_count"), EDGE_FILES, ids=[item[0] for item in EDGE_FILES])
def test_edge_file_formats_and_dead_letters(relative_path, formats, dead_count):
    lines, chunk, _ = parse_file(relative_path)
    assert dict(Counter(chunk.formats)) == formats
    assert len(chunk.dead) == dead_count
    assert len(chunk.rows) + len(chunk.dead) == len(lines)


def test_edge_envoy_cri_prefixed_fields():
    _, chunk, _ = parse_file("edge/crowdsec_hub/envoy-logs__envoy.log")
    row = row_at(chunk, 5)
    assert row["client_ip"] == "fd00:1234:5678::5a24"
    assert row["status"] == 200
    assert row["latency_ms"] == 50.0
    assert row["host"] == "example.com"


def test_edge_unsupported_formats_are_all_dead_letters():
    for relative_path in ("edge/lnav/logfile_w3c.2", "edge/crowdsec_hub/haproxy-logs__haproxy-logs.log"):
        lines, chunk, _ = parse_file(relative_path)
        assert chunk.rows == [], relative_path
        assert len(chunk.dead) == len(lines), relative_path
