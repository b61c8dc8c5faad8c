"""Benchmark the access-log parsers: bare regex or JSON decoding against LineParser.parse.

For each supported format the script builds a workload of real sample lines
repeated to the requested size, writes it to a temporary file, reads it
back as raw lines and times two loops, each the median of ``--repeats``
runs. Times are CPU seconds of this process (``time.process_time``),
which equal wall-clock seconds for these single-threaded loops on an idle
machine and stay comparable on a busy one:

- bare: the format's fast-path regex ``match`` (text formats) or
  ``orjson.loads`` (JSON formats) on lines decoded beforehand;
- parse: ``LineParser().parse`` on raw bytes in chunks of ``--chunk-lines``,
  with format detection, decoding and row building included.

Samples are real public logs from the data folder given by ``--data``
(default: ``shared/data`` beside the repository) and the Kong fixture in
tests/unit/fixtures/parsers. A format whose sample file is missing is
skipped, except nginx_combined and clf, which fall back to generated lines.

Usage: .venv/bin/python benchmarks/bench_parsers.py [--lines 1000000] [--json-lines 200000]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from pipeline.parsers import LineParser
from pipeline.parsers.clf import COMBINED_FAST_PATTERN, COMMON_FAST_PATTERN
from pipeline.parsers.container import strip_cri_prefix
from pipeline.parsers.envoy_text import FAST_PATTERN as ENVOY_TEXT_FAST_PATTERN
from pipeline.parsers.traefik_clf import FAST_PATTERN as TRAEFIK_CLF_FAST_PATTERN

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
KONG_FIXTURE = REPO / "tests" / "unit" / "fixtures" / "parsers" / "kong_file_log.jsonl"

_REFERER_AND_AGENT = re.compile(rb' "[^"]*" "[^"]*"$')


def read_lines(path: Path) -> list[bytes]:
    lines = path.read_bytes().split(b"\n")
    return [line for line in lines if line.strip()]


def generated_combined_lines(count: int) -> list[bytes]:
    """Combined lines with varied clients, paths and seconds, for runs without the shared data."""
    lines = []
    for number in range(count):
        minute, second = number // 60 % 60, number % 60
        lines.append(
            f"198.51.{number % 200}.{number % 250} - - [17/May/2015:10:{minute:02d}:{second:02d} +0000] "
            f'"GET /api/v1/items/{number % 997}?page={number % 7} HTTP/1.1" 200 {number % 50000} '
            f'"https://app.example.com/" "Mozilla/5.0 (X11; Linux x86_64) sdk/{number % 9}"'.encode()
        )
    return lines


def sample_lines(data: Path) -> dict[str, list[bytes]]:
    """Return sample lines per format id, from real files where present."""
    samples: dict[str, list[bytes]] = {}
    apache = data / "real" / "elastic_apache" / "apache_logs"
    combined = read_lines(apache) if apache.is_file() else generated_combined_lines(10_000)
    samples["nginx_combined"] = combined
    samples["clf"] = [_REFERER_AND_AGENT.sub(b"", line) for line in combined]

    traefik = data / "real" / "traefik_mixed" / "access.log"
    if traefik.is_file():
        lines = read_lines(traefik)
        samples["traefik_clf"] = [line for line in lines if not line.startswith(b"{")]
        samples["traefik_json"] = [line for line in lines if line.startswith(b"{")]
    if KONG_FIXTURE.is_file():
        samples["kong_json"] = read_lines(KONG_FIXTURE)
    envoy_text = data / "edge" / "envoy_sigongjoa" / "envoy_access.log"
    if envoy_text.is_file():
        samples["envoy_text"] = read_lines(envoy_text)
    envoy_json = data / "edge" / "crowdsec_hub" / "envoy-logs__envoy.log"
    if envoy_json.is_file():
        stripped = [strip_cri_prefix(line.decode()).encode() for line in read_lines(envoy_json)]
        samples["envoy_json"] = [line for line in stripped if line.startswith(b"{")]
    caddy = data / "edge" / "lnav" / "logfile_caddy_log.1"
    if caddy.is_file():
        samples["caddy_json"] = read_lines(caddy)
    samples["json"] = [_combined_to_nginx_json(line) for line in combined[:2000]]
    return samples


def _combined_to_nginx_json(line: bytes) -> bytes:
    """Rewrite a combined line as an NGINX ``escape=json`` record with common variable names."""
    match = COMBINED_FAST_PATTERN.match(line.decode("utf-8", "backslashreplace"))
    if match is None:
        return b'{"time_local": "17/May/2015:10:05:03 +0000", "remote_addr": "192.0.2.1", "status": 400}'
    client, user, time_text, request, status, size, referer, agent, _ = match.groups()
    method, _, rest = request.partition(" ")
    record = {
        "time_local": time_text,
        "remote_addr": client,
        "remote_user": user,
        "request_method": method,
        "request_uri": rest.partition(" ")[0],
        "status": status,
        "body_bytes_sent": size,
        "request_time": "0.004",
        "http_referer": referer,
        "http_user_agent": agent,
    }
    return orjson.dumps(record)


BARE_LOOPS: dict[str, Callable[[str], object]] = {
    "nginx_combined": COMBINED_FAST_PATTERN.match,
    "clf": COMMON_FAST_PATTERN.fullmatch,
    "traefik_clf": TRAEFIK_CLF_FAST_PATTERN.fullmatch,
    "envoy_text": ENVOY_TEXT_FAST_PATTERN.fullmatch,
}


def repeat_to(lines: list[bytes], count: int) -> list[bytes]:
    copies = count // len(lines) + 1
    return (lines * copies)[:count]


def through_temp_file(lines: list[bytes]) -> list[bytes]:
    """Write the workload to a temporary file and read it back split on newlines, as the file source does."""
    with tempfile.NamedTemporaryFile(prefix="bench_parsers_", suffix=".log", delete=False) as handle:
        path = Path(handle.name)
        handle.write(b"\n".join(lines) + b"\n")
    try:
        raw = path.read_bytes().split(b"\n")
    finally:
        path.unlink()
    raw.pop()
    return raw


def median_seconds(run: Callable[[], None], repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        start = time.process_time()
        run()
        timings.append(time.process_time() - start)
    return statistics.median(timings)


def bare_run(format_id: str, texts: list[str]) -> Callable[[], None]:
    step = BARE_LOOPS.get(format_id, orjson.loads)

    def run() -> None:
        for text in texts:
            step(text)

    return run


def parse_run(raw: list[bytes], chunk_lines: int, check: dict) -> Callable[[], None]:
    positions = list(range(1, len(raw) + 1))

    def run() -> None:
        parser = LineParser()
        rows = dead = 0
        for start in range(0, len(raw), chunk_lines):
            chunk = parser.parse(raw[start : start + chunk_lines], positions[start : start + chunk_lines])
            rows += len(chunk)  # chunk.rows would build a tuple per row of a columnar chunk
            dead += len(chunk.dead)
        check["rows"], check["dead"], check["format"] = rows, dead, parser.format

    return run


def rate(seconds: float, count: int) -> str:
    return f"{count / seconds:>11,.0f} lines/s {seconds / count * 1e6:6.2f} µs/line"


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, or the machine type where that is missing."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.machine()


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder (default: %(default)s)")
    options.add_argument("--lines", type=int, default=1_000_000, help="lines for nginx_combined and clf")
    options.add_argument("--json-lines", type=int, default=200_000, help="lines for each other format")
    options.add_argument(
        "--chunk-lines", type=int, default=20_000, help="lines per LineParser.parse call, as in the file source"
    )
    options.add_argument("--repeats", type=int, default=3, help="runs per measurement; the median is shown")
    args = options.parse_args()

    print(f"python {platform.python_version()} on {cpu_model()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"median CPU time of {args.repeats} runs; parse in chunks of {args.chunk_lines:,} lines")
    for format_id, lines in sample_lines(args.data).items():
        if not lines:
            print(f"{format_id:15s} skipped: no sample lines found")
            continue
        count = args.lines if format_id in ("nginx_combined", "clf") else args.json_lines
        raw = through_temp_file(repeat_to(lines, count))
        texts = [line.decode("utf-8", "backslashreplace") for line in raw]
        check: dict = {}
        bare = median_seconds(bare_run(format_id, texts), args.repeats)
        parsed = median_seconds(parse_run(raw, args.chunk_lines, check), args.repeats)
        del texts
        bare_label = "regex" if format_id in BARE_LOOPS else "orjson"
        print(
            f"{format_id:15s} {count:>9,} lines | bare {bare_label:6s} {rate(bare, count)} | "
            f"parse {rate(parsed, count)} | detected {check['format']}, dead {check['dead']:,}"
        )


if __name__ == "__main__":
    main()
