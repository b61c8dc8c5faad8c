"""Geofence: flags token windows with requests from countries outside the token's allowed list.

The allowed list is the token's ``allowed_countries`` in the registry, or
its plan's when the token has none. A request's country is the one the
gateway logged or, with a country lookup in the window stage, the country
of its client IP (see ``detectors.geo``). Requests of unknown country are
not counted unless ``unknown_is_violation`` is set.

Score: the share of the window's requests from countries outside the list,
in (0, 1]. Severity: HIGH when at least half the window's requests and
``min_requests`` requests came from outside, MEDIUM otherwise. Stateless.
"""

from __future__ import annotations

from detectors.base import Detection, DetectionContext, Detector
from detectors.rules.common import find_violations, list_text, violation_detections
from pipeline.windows import WindowBatch


class Geofence(Detector):
    """Flags windows with requests from countries a token's registry entry does not allow.

    Args:
        min_requests: Requests from outside the list that make a detection HIGH.
        unknown_is_violation: Count requests of unknown country as outside the list.
    """

    detector_id = "geofence"
    version = "1"
    score_range = (0.0, 1.0)

    def __init__(self, min_requests: float = 5.0, unknown_is_violation: bool = False) -> None:
        self.min_requests = min_requests
        self.unknown_is_violation = unknown_is_violation

    def detect(self, windows: WindowBatch, context: DetectionContext) -> list[Detection]:
        if windows.size == 0:
            return []
        tokens = context.tokens
        allowed_sets = [frozenset(countries) for countries in tokens.allowed_countries]

        def allowed(record: int, country: str) -> bool:
            if not country:
                return not self.unknown_is_violation
            return country.upper() in allowed_sets[record]

        found = find_violations(
            windows, context, "country", tokens.has_countries, allowed, skip_empty=not self.unknown_is_violation
        )
        if found is None:
            return []
        subjects = windows.keys["subject_id"]

        def summarize(row: int, countries: list[str], record: int) -> str:
            named = [country or "unknown" for country in countries]
            allowed_text = ", ".join(tokens.allowed_countries[record])
            return f"{subjects[row]} was used from {list_text(named)}, outside its allowed countries ({allowed_text})"

        return violation_detections(
            self,
            windows,
            context,
            found,
            features=("requests_outside_allowed_countries", "share_outside_allowed_countries"),
            summarize=summarize,
            is_high=lambda outside, share: share >= 0.5 and outside >= self.min_requests,
        )
