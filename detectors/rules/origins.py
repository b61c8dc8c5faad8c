"""Allowed origins: flags token windows with requests whose ``Origin`` header the token does not allow.

Browser-side keys are usually bound to a few web origins. An origin matches
an entry of the token's ``allowed_origins`` when it is equal ignoring case
and a trailing slash, or when the entry is ``scheme://*.domain`` and the
origin is a subdomain of that domain. Requests without an ``Origin`` header
(server-to-server calls, which browsers do not make) are allowed unless
``require_origin`` is set, because non-browser clients do not send one.

Score: the share of the window's requests from origins outside the list.
Severity: MEDIUM, HIGH when at least half of the requests and
``min_requests`` requests came from other origins. Stateless.
"""

from __future__ import annotations

from functools import lru_cache

from detectors.base import Detection, DetectionContext, Detector
from detectors.rules.common import find_violations, list_text, violation_detections
from pipeline.windows import WindowBatch


@lru_cache(maxsize=65536)
def origin_allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    """Return True when ``origin`` matches an entry of ``allowed`` (exact or ``scheme://*.domain``)."""
    value = origin.strip().rstrip("/").lower()
    for entry in allowed:
        pattern = entry.strip().rstrip("/").lower()
        if pattern == "*" or pattern == value:
            return True
        scheme, separator, host = pattern.partition("://*.")
        if separator and value.startswith(scheme + "://") and value.endswith("." + host):
            return True
    return False


class AllowedOrigins(Detector):
    """Flags windows with requests from web origins a token's registry entry does not allow.

    Args:
        min_requests: Requests from other origins that make a detection HIGH.
        require_origin: Count requests without an Origin header as violations.
    """

    detector_id = "origin_not_allowed"
    version = "1"
    score_range = (0.0, 1.0)

    def __init__(self, min_requests: float = 5.0, require_origin: bool = False) -> None:
        self.min_requests = min_requests
        self.require_origin = require_origin

    def detect(self, windows: WindowBatch, context: DetectionContext) -> list[Detection]:
        if windows.size == 0:
            return []
        tokens = context.tokens

        def allowed(record: int, origin: str) -> bool:
            if not origin:
                return not self.require_origin
            return origin_allowed(origin, tokens.allowed_origins[record])

        found = find_violations(
            windows, context, "origin", tokens.has_origins, allowed, skip_empty=not self.require_origin
        )
        if found is None:
            return []
        subjects = windows.keys["subject_id"]

        def summarize(row: int, origins: list[str], record: int) -> str:
            named = [origin or "(no Origin header)" for origin in origins]
            allowed_text = ", ".join(tokens.allowed_origins[record])
            return f"{subjects[row]} was called from {list_text(named)}, not among its allowed origins ({allowed_text})"

        return violation_detections(
            self,
            windows,
            context,
            found,
            features=("requests_from_other_origins", "share_from_other_origins"),
            summarize=summarize,
            is_high=lambda outside, share: share >= 0.5 and outside >= self.min_requests,
        )
