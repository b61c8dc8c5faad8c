"""Detection of the log format of a sample of lines."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from pipeline.parsers.base import Parser
from pipeline.parsers.container import strip_cri_prefix
from pipeline.parsers.decoding import decode_line
from pipeline.parsers.registry import CATCH_ALL_FORMATS, build_parsers

logger = logging.getLogger(__name__)

DETECTION_SAMPLE_LINES = 20


def accepts(parser: Parser, line: str) -> bool:
    """Return True when ``parser`` matches ``line`` and parses it without error.

    An exception other than ValueError is a parser bug. It is logged without
    the line, which may hold a credential, and counts as not accepted.
    """
    if not parser.matches(line):
        return False
    try:
        parser.parse_line(line)
    except ValueError:
        return False
    except Exception as error:  # noqa: BLE001 - a parser bug must not stop detection
        logger.error("parser %s raised %s during format detection", parser.format_id, type(error).__name__)
        return False
    return True


def detect_format(
    sample_lines: Iterable[bytes | str], parsers: Mapping[str, Parser] | None = None
) -> str | None:
    """Return the format id that parses the most of the first non-empty sample lines.

    Up to ``DETECTION_SAMPLE_LINES`` lines are scored, after decoding and
    removing any CRI container prefix. Ties go to the format listed first in
    the registry. A catch-all format such as ``json`` wins only when no
    other format parses any line. Returns None when no format parses any.
    """
    if parsers is None:
        parsers = build_parsers()
    texts: list[str] = []
    for raw in sample_lines:
        text = strip_cri_prefix(decode_line(raw))
        if text.strip():
            texts.append(text)
            if len(texts) >= DETECTION_SAMPLE_LINES:
                break

    best_format: str | None = None
    best_score = 0
    catch_all_format: str | None = None
    catch_all_score = 0
    for format_id, parser in parsers.items():
        score = sum(1 for text in texts if accepts(parser, text))
        if format_id in CATCH_ALL_FORMATS:
            if score > catch_all_score:
                catch_all_format, catch_all_score = format_id, score
        elif score > best_score:
            best_format, best_score = format_id, score
    return best_format if best_format is not None else catch_all_format
