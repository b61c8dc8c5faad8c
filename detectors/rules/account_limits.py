"""Account rate limit: all tokens of one account together above the account's static limit.

The limit is the account's ``rate_limit_rps`` in the registry, else the
``account_limit_rps`` of its tokens' plan, else ``default_limit_rps`` of
this detector (None: accounts without a limit are not checked). Requests
are summed over the account's tokens in one window (``detectors.accounts``),
so ten tokens each under their own limit can still exceed the account's.

Score: rate / limit, 1.0 is exactly at the limit. Severity: MEDIUM above
the limit, HIGH from twice, CRITICAL from five times. Stateless.
"""

from __future__ import annotations

import numpy as np

from detectors.accounts import account_windows
from detectors.base import Detection, DetectionContext, Detector, build_detection, explain, severity_from_score
from pipeline.windows import WindowBatch
from schemas.detections import Evidence


class AccountRateLimit(Detector):
    """Flags accounts whose tokens together exceed the account's limit.

    Args:
        default_limit_rps: Limit for accounts without one in the registry,
            requests per second; None leaves them unchecked.
    """

    detector_id = "account_rate_limit"
    version = "1"
    scope = "account"

    def __init__(self, default_limit_rps: float | None = None) -> None:
        self.default_limit_rps = default_limit_rps

    def detect(self, windows: WindowBatch, context: DetectionContext) -> list[Detection]:
        accounts = account_windows(windows, context)
        if accounts is None:
            return []
        tokens = context.tokens
        limits = np.array(
            [
                tokens.account_limit_rps(account, plan) or self.default_limit_rps or np.nan
                for account, plan in zip(accounts.keys["account"], accounts.keys["plan"], strict=True)
            ],
            dtype=np.float64,
        )
        rate = accounts.feature("requests") / context.window_s
        with np.errstate(invalid="ignore"):
            score = rate / limits
            flagged = score > 1.0
        detections = []
        for row in np.flatnonzero(flagged).tolist():
            evidence = (
                Evidence(feature="request_rate_rps", observed=rate[row], expected=limits[row], threshold=limits[row]),
                Evidence(feature="tokens", observed=accounts.feature("tokens")[row]),
            )
            summary = f"account {accounts.keys['account'][row]} exceeded its limit over all its tokens"
            detections.append(
                build_detection(
                    self,
                    accounts,
                    row,
                    score=score[row],
                    threshold=1.0,
                    severity=severity_from_score(score[row], 1.0, 2.0, 5.0),
                    explanation=explain(summary, evidence),
                    evidence=evidence,
                    context=context,
                )
            )
        return detections
