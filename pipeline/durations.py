"""Parsing of human durations such as ``90s``, ``10m``, ``2h``, ``3d``."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}


def parse_duration(value: str | float | int) -> float:
    """Return a duration in seconds; a bare number is seconds.

    >>> parse_duration("10m"), parse_duration("1.5h"), parse_duration(30)
    (600.0, 5400.0, 30.0)
    """
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"duration {value!r} is negative; use a number of seconds >= 0")
        return float(value)
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"invalid duration {value!r}; use a number with a unit: ms, s, m, h, d or w (e.g. '10m')")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
