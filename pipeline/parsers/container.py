"""The prefix that Kubernetes container runtimes add to every log line.

CRI runtimes (containerd, CRI-O) store a container's output as
``<RFC 3339 time> <stdout|stderr> <F|P> <message>``, where ``P`` marks a
partial line continued by the next one and ``F`` a full line. Access logs
read from such files need the prefix removed before format detection.
"""

from __future__ import annotations

import re

_CRI_PREFIX = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:Z|[+-][0-9]{2}:[0-9]{2})"
    r" (?:stdout|stderr) [FP] "
)


def has_cri_prefix(line: str) -> bool:
    """Return True when ``line`` starts with a CRI log prefix."""
    return _CRI_PREFIX.match(line) is not None


def strip_cri_prefix(line: str) -> str:
    """Return ``line`` without its CRI log prefix, or unchanged when it has none.

    NOTE: partial (``P``) lines are not joined with their continuation, so a
    log line longer than the runtime's limit (16 KiB in containerd) arrives
    as pieces that each fail to parse.
    """
    match = _CRI_PREFIX.match(line)
    return line[match.end() :] if match is not None else line
