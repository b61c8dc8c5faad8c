"""Scopes: flags token windows with requests to routes outside the token's scopes.

A token's ``scopes`` in the registry are route prefixes. A route is inside
a scope when it equals the scope or continues it after a ``/``, so
``/v1/orders`` covers ``/v1/orders/42`` but not ``/v1/orders-export``. A
scope ending in ``*`` covers every route starting with the text before the
``*``. The route is the gateway's route or service name when logged, else
the request path without its query string.

Score: the share of the window's requests outside the scopes. Severity:
HIGH when at least ``min_requests`` requests went outside, MEDIUM
otherwise (one stray request is often a client bug). Stateless; decisions
per (scopes, route) are cached.
"""

from __future__ import annotations

from functools import lru_cache

from detectors.base import Detection, DetectionContext, Detector
from detectors.rules.common import find_violations, list_text, violation_detections
from pipeline.windows import WindowBatch


@lru_cache(maxsize=65536)
def route_in_scopes(route: str, scopes: tuple[str, ...]) -> bool:
    """Return True when ``route`` falls under one of ``scopes`` (see the module docstring)."""
    for scope in scopes:
        if scope.endswith("*"):
            if route.startswith(scope[:-1]):
                return True
            continue
        prefix = scope.rstrip("/")
        if route == prefix or route.startswith(prefix + "/") or (not prefix and route.startswith("/")):
            return True
    return False


class ScopeViolation(Detector):
    """Flags windows with requests to routes outside a token's registry scopes.

    Args:
        min_requests: Requests outside the scopes that make a detection HIGH.
    """

    detector_id = "scope_violation"
    version = "1"
    score_range = (0.0, 1.0)

    def __init__(self, min_requests: float = 3.0) -> None:
        self.min_requests = min_requests

    def detect(self, windows: WindowBatch, context: DetectionContext) -> list[Detection]:
        if windows.size == 0:
            return []
        tokens = context.tokens

        def allowed(record: int, route: str) -> bool:
            return route_in_scopes(route, tokens.scopes[record])

        found = find_violations(windows, context, "route", tokens.has_scopes, allowed, skip_empty=False)
        if found is None:
            return []
        subjects = windows.keys["subject_id"]

        def summarize(row: int, routes: list[str], record: int) -> str:
            named = [route or "(empty route)" for route in routes]
            return f"{subjects[row]} called {list_text(named)}, outside its scopes ({', '.join(tokens.scopes[record])})"

        return violation_detections(
            self,
            windows,
            context,
            found,
            features=("requests_outside_scopes", "share_outside_scopes"),
            summarize=summarize,
            is_high=lambda outside, share: outside >= self.min_requests,
        )
