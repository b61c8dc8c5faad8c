"""Rule detectors: one module per rule, each registered by one line in ``RULES``.

Rules compare windows with fixed facts (the token registry, a blocklist,
geography) or with simple per-token and per-account baselines. They read
what the window stage prepared (pair tables and client windows, see
``pipeline.windows``) and never loop over events.
"""

from detectors.rules.account_limits import AccountRateLimit
from detectors.rules.account_profile import AccountProfile
from detectors.rules.blocklist import IpBlocklist
from detectors.rules.brute_force import BruteForce
from detectors.rules.credential_stuffing import CredentialStuffing
from detectors.rules.expired import ExpiredToken
from detectors.rules.geofence import Geofence
from detectors.rules.impossible_travel import ImpossibleTravel
from detectors.rules.origins import AllowedOrigins
from detectors.rules.scopes import ScopeViolation
from detectors.rules.token_sharing import TokenSharing

RULES = (
    IpBlocklist,
    ExpiredToken,
    ScopeViolation,
    AllowedOrigins,
    Geofence,
    ImpossibleTravel,
    TokenSharing,
    CredentialStuffing,
    BruteForce,
    AccountRateLimit,
    AccountProfile,
)

__all__ = [cls.__name__ for cls in RULES] + ["RULES"]
