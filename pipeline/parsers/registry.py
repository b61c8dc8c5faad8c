"""The registry of log-format parsers, in detection priority order.

Adding a format is one module with a parser class and one line in
``PARSER_CLASSES``. Order matters where formats overlap: a more specific
format comes before one that would also accept its lines, and ``json``
comes last because it accepts any JSON object with a timestamp.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.errors import ConfigError
from pipeline.parsers.base import Parser
from pipeline.parsers.caddy_json import CaddyJsonParser
from pipeline.parsers.clf import CombinedParser, CommonParser
from pipeline.parsers.envoy_json import EnvoyJsonParser
from pipeline.parsers.envoy_text import EnvoyTextParser
from pipeline.parsers.json_generic import GenericJsonParser
from pipeline.parsers.kong import KongJsonParser
from pipeline.parsers.traefik_clf import TraefikClfParser
from pipeline.parsers.traefik_json import TraefikJsonParser

PARSER_CLASSES: tuple[type, ...] = (
    TraefikClfParser,  # before nginx_combined, which takes its extra fields as unnamed extras
    CombinedParser,
    CommonParser,
    EnvoyTextParser,
    TraefikJsonParser,
    KongJsonParser,
    EnvoyJsonParser,
    CaddyJsonParser,
    GenericJsonParser,
)
FORMAT_IDS: tuple[str, ...] = tuple(parser_class.format_id for parser_class in PARSER_CLASSES)
# Formats that accept lines of many others. Detection picks one only when no
# other format accepts any sample line.
CATCH_ALL_FORMATS: frozenset[str] = frozenset({GenericJsonParser.format_id})


def build_parsers(mapping: Mapping[str, Any] | None = None) -> dict[str, Parser]:
    """Return one parser per format id, in priority order.

    ``mapping`` configures the ``json`` parser (see ``json_generic``).

    Raises:
        ConfigError: the mapping is invalid.
    """
    parsers: dict[str, Parser] = {}
    for parser_class in PARSER_CLASSES:
        if parser_class is GenericJsonParser:
            parsers[parser_class.format_id] = GenericJsonParser(mapping)
        else:
            parsers[parser_class.format_id] = parser_class()
    return parsers


def check_format_id(format_id: str) -> None:
    """Raise ConfigError unless ``format_id`` is a registered format."""
    if format_id not in FORMAT_IDS:
        raise ConfigError(f"unknown log format {format_id!r}: expected one of {', '.join(FORMAT_IDS)}")
