"""Run a golden scenario folder through identity, windows, state and detectors.

A folder holds:

* ``input.log``: NGINX combined lines with fixed event timestamps and
  extra ``name="value"`` fields (``key``, ``key_id``, ``country``,
  ``origin``, ``route``, ``device``, ``account``);
* ``config.yaml``: ``window_s`` and the ``detectors`` settings
  (``detectors.catalog.DetectorSettings``); a ``blocklist_file`` is
  relative to the folder;
* ``registry.yaml`` (optional): the token registry;
* ``expected.json``: ``{"detections": [{"detector", "subject", "count"}],
  "exclusive": bool}``. A subject written ``credential:<raw>`` means the
  token id of that raw credential under ``SCENARIO_SECRET``. With
  ``exclusive``, no other (detector, subject) pair may be detected.

Lines are parsed by ``pipeline.parsers.LineParser`` (format
``nginx_combined``) when that package is present, else by the small parser
below, which gives the same rows for these files
(``test_fallback_parser_matches_line_parser`` checks it).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import datetime
from pathlib import Path

import yaml

from detectors.base import DetectionContext
from detectors.catalog import DetectorSettings, build_country_lookup_from, build_detectors
from pipeline.identity import TokenHasher, identify
from pipeline.parsers.base import RAW_FIELDS, ParsedChunk
from pipeline.registry import TokenRegistry
from pipeline.state import SubjectIndex
from pipeline.windows import TumblingWindows

try:
    from pipeline.parsers import LineParser
except ImportError:  # a checkout without the parser package
    LineParser = None

SCENARIO_SECRET = b"golden-scenario-secret-000000000"
SCENARIOS = Path(__file__).parent

_COMBINED = re.compile(r'(\S+) \S+ (\S+) \[([^\]]+)\] "(\S+) (\S+) [^"]*" (\d{3}) (\d+|-) "([^"]*)" "([^"]*)"(.*)')
_EXTRA = re.compile(r'(\w+)="([^"]*)"')
_EXTRA_FIELDS = {
    "key": "credential",
    "key_id": "key_id",
    "country": "country",
    "origin": "origin",
    "route": "route",
    "device": "device_id",
    "account": "account",
}


def parse_line(line: str) -> tuple:
    """Parse one scenario line into a row in ``RAW_FIELDS`` order."""
    match = _COMBINED.fullmatch(line)
    if match is None:
        raise ValueError(f"not an NGINX combined line: {line!r}")
    client, user, time_text, method, target, status, size, referer, agent, tail = match.groups()
    row = dict.fromkeys(RAW_FIELDS, "")
    row.update(
        ts=datetime.strptime(time_text, "%d/%b/%Y:%H:%M:%S %z").timestamp(),
        client_ip=client,
        method=method,
        target=target,
        status=int(status),
        latency_ms=float("nan"),
        bytes_in=-1,
        bytes_out=-1 if size == "-" else int(size),
        user_agent="" if agent == "-" else agent,
        referer="" if referer == "-" else referer,
        asn=0,
        account="" if user == "-" else user,
    )
    for name, value in _EXTRA.findall(tail):
        row[_EXTRA_FIELDS[name]] = value
    return tuple(row[name] for name in RAW_FIELDS)


def parse_lines(lines: list[str], use_line_parser: bool = True) -> ParsedChunk:
    """Parse scenario lines with ``LineParser`` when available, else with ``parse_line``."""
    positions = list(range(1, len(lines) + 1))
    if use_line_parser and LineParser is not None:
        return LineParser(format="nginx_combined").parse([line.encode() for line in lines], positions)
    chunk = ParsedChunk()
    chunk.rows = [parse_line(line) for line in lines]
    chunk.positions = positions
    chunk.formats = ["nginx_combined"] * len(lines)
    return chunk


def run_scenario(folder: Path) -> tuple[Counter, dict]:
    """Return (Counter of (detector, subject) detected, expected.json with subjects resolved)."""
    config = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8")) or {}
    settings = dict(config.get("detectors") or {})
    if settings.get("blocklist_file"):
        settings["blocklist_file"] = folder / settings["blocklist_file"]
    detector_settings = DetectorSettings.model_validate(settings)
    registry_path = folder / "registry.yaml"
    registry = TokenRegistry.load(registry_path) if registry_path.exists() else TokenRegistry()
    context = DetectionContext(window_s=float(config.get("window_s", 10.0)), registry=registry)
    hasher = TokenHasher(SCENARIO_SECRET)

    lines = (folder / "input.log").read_text(encoding="utf-8").splitlines()
    events = identify(parse_lines(lines), hasher, source=str(folder / "input.log"))

    detectors = build_detectors(detector_settings)
    index = SubjectIndex()
    for detector in detectors:
        detector.attach(index)
    windows = TumblingWindows(context.window_s, 0.0, country_lookup=build_country_lookup_from(detector_settings))
    found: Counter = Counter()
    for closed in (windows.add(events), windows.flush()):
        if closed.size == 0:
            continue
        context.refresh()
        closed.slots = index.assign(closed.keys["subject_id"], closed.keys["window_end"])
        for detector in detectors:
            for detection in detector.detect(closed, context):
                found[(detection.detector, detection.subject_id)] += 1

    expected = json.loads((folder / "expected.json").read_text(encoding="utf-8"))
    for item in expected["detections"]:
        if item["subject"].startswith("credential:"):
            item["subject"] = hasher.token_id(item["subject"].removeprefix("credential:"))
    return found, expected


def scenario_folders() -> list[Path]:
    return sorted(path.parent for path in SCENARIOS.glob("*/expected.json"))
