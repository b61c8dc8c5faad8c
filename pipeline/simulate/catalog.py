"""Static tables of the simulated API: countries, plans, routes and user agents.

Everything here is fictional but shaped like a typical SaaS REST API. It
has a handful of services under ``/v1/<service>``, each with list, get,
create and update routes. Admin routes are in no token's scopes, and some
paths are requested only by vulnerability scanners.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

API_HOST = "api.example.com"


@dataclass(frozen=True)
class Country:
    """A client country with its share of benign tokens and its UTC offset in hours."""

    code: str
    benign_share: float
    utc_offset_h: float


# Shares sum to 1 over the benign countries; countries with share 0 appear
# only as sources of abuse (leaked-token use, proxies, bad hosting).
COUNTRIES: tuple[Country, ...] = (
    Country("US", 0.30, -5.0),
    Country("GB", 0.07, 0.0),
    Country("DE", 0.08, 1.0),
    Country("FR", 0.05, 1.0),
    Country("NL", 0.03, 1.0),
    Country("ES", 0.03, 1.0),
    Country("PL", 0.02, 1.0),
    Country("SE", 0.02, 1.0),
    Country("IN", 0.08, 5.5),
    Country("JP", 0.05, 9.0),
    Country("KR", 0.02, 9.0),
    Country("SG", 0.03, 8.0),
    Country("AU", 0.03, 10.0),
    Country("BR", 0.05, -3.0),
    Country("CA", 0.04, -5.0),
    Country("MX", 0.03, -6.0),
    Country("CN", 0.07, 8.0),
    Country("RU", 0.0, 3.0),
    Country("VN", 0.0, 7.0),
    Country("NG", 0.0, 1.0),
    Country("RO", 0.0, 2.0),
    Country("UA", 0.0, 2.0),
    Country("ID", 0.0, 7.0),
    Country("TR", 0.0, 3.0),
)
COUNTRY_CODES: tuple[str, ...] = tuple(country.code for country in COUNTRIES)
COUNTRY_INDEX: dict[str, int] = {code: i for i, code in enumerate(COUNTRY_CODES)}


@dataclass(frozen=True)
class Plan:
    """A billing plan and its static rate limit in requests per second."""

    name: str
    rate_limit_rps: float


PLANS: tuple[Plan, ...] = (
    Plan("free", 2.0),
    Plan("starter", 10.0),
    Plan("pro", 50.0),
    Plan("enterprise", 250.0),
)
PLAN_LIMITS = np.array([plan.rate_limit_rps for plan in PLANS])


class ParamKind(IntEnum):
    """Placement of the per-request number in the request target."""

    NONE = 0
    """No number: the target is the path head as is."""
    ID = 1
    """An object id appended to the path head: ``/v1/orders/1234``."""
    PAGE = 2
    """A page number in the query: ``/v1/orders?page=3``."""


@dataclass(frozen=True)
class Route:
    """One gateway route.

    ``path_head`` is the request target up to the per-request number (see
    ``ParamKind``). ``name`` and ``service`` are the Kong route and service
    names, empty for paths no gateway route matches. ``scope`` is the route
    prefix a token needs in its registry scopes, empty for public routes.
    """

    name: str
    service: str
    method: str
    path_head: str
    param: ParamKind
    scope: str
    response_bytes: int
    latency_ms: float


SERVICES: tuple[str, ...] = (
    "orders",
    "products",
    "customers",
    "payments",
    "inventory",
    "shipments",
    "reports",
    "webhooks",
    "users",
)


def _service_routes(service: str) -> list[Route]:
    scope = f"/v1/{service}"
    return [
        Route(f"{service}-list", service, "GET", f"{scope}?page=", ParamKind.PAGE, scope, 9000, 45.0),
        Route(f"{service}-get", service, "GET", f"{scope}/", ParamKind.ID, scope, 1400, 18.0),
        Route(f"{service}-create", service, "POST", scope, ParamKind.NONE, scope, 600, 70.0),
        Route(f"{service}-update", service, "PATCH", f"{scope}/", ParamKind.ID, scope, 650, 60.0),
    ]


def _build_routes() -> tuple[Route, ...]:
    routes: list[Route] = []
    for service in SERVICES:
        routes.extend(_service_routes(service))
    routes.extend(
        [
            Route("admin-users-list", "admin", "GET", "/v1/admin/users?page=", ParamKind.PAGE, "/v1/admin", 12000, 80.0),
            Route("admin-config", "admin", "GET", "/v1/admin/config", ParamKind.NONE, "/v1/admin", 3000, 25.0),
            Route("admin-keys-create", "admin", "POST", "/v1/admin/keys", ParamKind.NONE, "/v1/admin", 400, 90.0),
            Route("status", "status", "GET", "/v1/status", ParamKind.NONE, "", 60, 2.0),
            Route("", "", "GET", "/.env", ParamKind.NONE, "", 150, 1.0),
            Route("", "", "GET", "/wp-login.php", ParamKind.NONE, "", 150, 1.0),
            Route("", "", "GET", "/.git/config", ParamKind.NONE, "", 150, 1.0),
            Route("", "", "GET", "/actuator/env", ParamKind.NONE, "", 150, 1.0),
            Route("", "", "GET", "/server-status", ParamKind.NONE, "", 150, 1.0),
            Route("", "", "GET", "/api/swagger.json", ParamKind.NONE, "", 150, 1.0),
        ]
    )
    return tuple(routes)


ROUTES: tuple[Route, ...] = _build_routes()
ROUTE_INDEX: dict[str, int] = {route.name: i for i, route in enumerate(ROUTES) if route.name}
ROUTES_PER_SERVICE = 4
LIST_ROUTE_OFFSET = 0  # position of "<service>-list" inside a service's routes
ADMIN_ROUTES = np.array([i for i, route in enumerate(ROUTES) if route.service == "admin"])
SCANNER_ROUTES = np.array([i for i, route in enumerate(ROUTES) if not route.name] + [ROUTE_INDEX["admin-config"]])
STATUS_ROUTE = ROUTE_INDEX["status"]

ROUTE_PARAM = np.array([route.param for route in ROUTES], dtype=np.int8)
ROUTE_IS_WRITE = np.array([route.method != "GET" for route in ROUTES])
ROUTE_RESPONSE_BYTES = np.array([route.response_bytes for route in ROUTES], dtype=np.float64)
ROUTE_LATENCY_MS = np.array([route.latency_ms for route in ROUTES], dtype=np.float64)
# Request body sizes in bytes for write routes, used for Kong's request.size.
ROUTE_BODY_BYTES = np.where(ROUTE_IS_WRITE, 420, 0).astype(np.int64)


# User agents, grouped by the kind of client that sends them.
SERVER_AGENTS: tuple[str, ...] = (
    "python-requests/2.31.0",
    "python-httpx/0.27.0",
    "Go-http-client/2.0",
    "okhttp/4.12.0",
    "axios/1.6.8",
    "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
    "Java/17.0.10",
    "Ruby",
    "Faraday v2.9.0",
    "Apache-HttpClient/5.3 (Java/21.0.2)",
)
BROWSER_AGENTS: tuple[str, ...] = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0",
)
MOBILE_AGENTS: tuple[str, ...] = (
    "ShopApp/5.12.0 (iPhone; iOS 17.4.1; Scale/3.00)",
    "ShopApp/5.11.2 (iPhone; iOS 16.7.7; Scale/3.00)",
    "ShopApp/5.12.0 (Linux; Android 14; Pixel 8)",
    "ShopApp/5.12.0 (Linux; Android 13; SM-S911B)",
    "ShopApp/5.10.4 (Linux; Android 12; M2101K6G)",
    "FieldOps/2.3.1 CFNetwork/1494.0.7 Darwin/23.4.0",
)
TOOL_AGENTS: tuple[str, ...] = (
    "curl/8.7.1",
    "python-requests/2.32.3",
    "Go-http-client/1.1",
    "Wget/1.21.4",
    "PostmanRuntime/7.37.3",
    "insomnia/8.6.1",
)
SCANNER_AGENTS: tuple[str, ...] = (
    "Mozilla/5.0 zgrab/0.x",
    "Nuclei - Open-source project (github.com/projectdiscovery/nuclei)",
    "sqlmap/1.8.4#stable (https://sqlmap.org)",
    "Mozilla/5.0 (compatible; CensysInspect/1.1; +https://about.censys.io/)",
)
MONITOR_AGENT = "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)"

USER_AGENTS: tuple[str, ...] = SERVER_AGENTS + BROWSER_AGENTS + MOBILE_AGENTS
SERVER_AGENT_RANGE = (0, len(SERVER_AGENTS))
BROWSER_AGENT_RANGE = (SERVER_AGENT_RANGE[1], SERVER_AGENT_RANGE[1] + len(BROWSER_AGENTS))
MOBILE_AGENT_RANGE = (BROWSER_AGENT_RANGE[1], BROWSER_AGENT_RANGE[1] + len(MOBILE_AGENTS))

# Benign response status codes and their probabilities, for read (GET) and
# write routes. A write's 200 becomes 201 for POST in ``benign_statuses``.
READ_STATUSES = (np.array([200, 304, 404, 400, 500, 502, 503]), np.array([0.962, 0.012, 0.015, 0.004, 0.004, 0.002, 0.001]))
WRITE_STATUSES = (np.array([200, 400, 409, 422, 500, 502]), np.array([0.955, 0.02, 0.008, 0.012, 0.004, 0.001]))
