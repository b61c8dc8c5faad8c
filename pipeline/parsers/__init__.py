"""Access-log parsers: raw lines to rows in ``RAW_FIELDS`` order.

``LineParser`` is the entry point for a stream of lines. ``detect_format``
names the format of a sample, and ``registry.PARSER_CLASSES`` lists the
supported formats in detection order.
"""

from pipeline.parsers.base import FIELD_INDEX, RAW_FIELDS, ParsedChunk, Parser
from pipeline.parsers.detect import detect_format
from pipeline.parsers.driver import LineParser
from pipeline.parsers.registry import FORMAT_IDS, build_parsers

__all__ = [
    "FIELD_INDEX",
    "FORMAT_IDS",
    "RAW_FIELDS",
    "LineParser",
    "ParsedChunk",
    "Parser",
    "build_parsers",
    "detect_format",
]
