"""Rule detectors: each flags its planted case and leaves its benign look-alike alone."""

from __future__ import annotations

import os

import numpy as np
import pytest

from detectors.base import DetectionContext
from detectors.geo import IptoccCountryLookup
from detectors.rules.account_limits import AccountRateLimit
from detectors.rules.account_profile import AccountProfile
from detectors.rules.blocklist import IpBlocklist
from detectors.rules.brute_force import BruteForce
from detectors.rules.credential_stuffing import CredentialStuffing
from detectors.rules.expired import ExpiredToken
from detectors.rules.geofence import Geofence
from detectors.rules.impossible_travel import ImpossibleTravel
from detectors.rules.origins import AllowedOrigins, origin_allowed
from detectors.rules.scopes import ScopeViolation, route_in_scopes
from detectors.rules.token_sharing import TokenSharing
from pipeline.registry import TokenRegistry
from schemas.detections import ACCOUNT_SUBJECT_KIND, Severity
from schemas.registry import AccountRecord, PlanRecord, TokenRecord
from tests.scenarios.traffic import T0, Traffic, run_pipeline_stages


def context(records=(), **registry) -> DetectionContext:
    return DetectionContext(window_s=10.0, registry=TokenRegistry.from_records(records, **registry))


def detect(detector, traffic: Traffic, ctx: DetectionContext | None = None, **kwargs):
    return run_pipeline_stages([detector], traffic.batches(), ctx or context(), **kwargs)


def subjects(found) -> set[str]:
    return {detection.subject_id for detection in found}


# -- blocklist ---------------------------------------------------------------


def test_blocklist_flags_client_in_network_and_sets_cidr():
    traffic = Traffic().add("key:a", [5, 5], client_ip=["198.51.100.1", "203.0.113.77"])
    found = detect(IpBlocklist(networks=["203.0.113.0/24 scanners"]), traffic)
    assert subjects(found) == {"ip:203.0.113.77"}
    assert found[0].client_ip == "203.0.113.0/24"
    assert "(scanners)" in found[0].explanation


def test_blocklist_reloads_file_when_mtime_changes(tmp_path):
    path = tmp_path / "blocklist.txt"
    path.write_text("# feed\n192.0.2.0/24\n", encoding="utf-8")
    blocklist = IpBlocklist(path=path)
    address = np.array(["203.0.113.5"], dtype=object)
    assert blocklist.match(address).tolist() == [-1]
    path.write_text("203.0.113.0/24 new\n", encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert blocklist.reload_if_changed()
    assert blocklist.network_of(int(blocklist.match(address)[0])) == "203.0.113.0/24"
    assert not blocklist.reload_if_changed()


def test_blocklist_keeps_list_when_file_disappears(tmp_path):
    path = tmp_path / "blocklist.txt"
    path.write_text("203.0.113.0/24\n", encoding="utf-8")
    blocklist = IpBlocklist(path=path)
    path.unlink()
    assert not blocklist.reload_if_changed()
    assert blocklist.size == 1


def test_blocklist_loads_query_rows_and_ipv6():
    blocklist = IpBlocklist()
    blocklist.load_rows([("2001:db8::/32", "lab"), ("198.51.100.0/25",)])
    found = blocklist.match(np.array(["2001:db8::9", "198.51.100.200", "198.51.100.1", "::ffff:198.51.100.2"], dtype=object))
    assert [blocklist.network_of(int(i)) for i in found] == ["2001:db8::/32", None, "198.51.100.0/25", "198.51.100.0/25"]


def test_blocklist_nested_networks_report_broadest():
    blocklist = IpBlocklist(networks=["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24"])
    assert blocklist.network_of(int(blocklist.match(np.array(["10.1.2.3"], dtype=object))[0])) == "10.0.0.0/8"


# -- registry rules ---------------------------------------------------------------


def test_geofence_flags_country_outside_token_list():
    traffic = Traffic().add("key:g", [10, 10, 10], country=["DE", "DE", "BR"])
    found = detect(Geofence(), traffic, context([TokenRecord(subject_id="key:g", allowed_countries=("DE",))]))
    assert len(found) == 1
    assert "BR" in found[0].explanation
    assert found[0].severity == Severity.HIGH


def test_geofence_uses_plan_countries_and_skips_unknown():
    traffic = Traffic().add("key:p", [10, 10], country=["", "FR"])
    ctx = context(
        [TokenRecord(subject_id="key:p", plan="eu")], plans={"eu": PlanRecord(allowed_countries=("DE", "FR"))}
    )
    assert detect(Geofence(), traffic, ctx) == []
    assert len(detect(Geofence(unknown_is_violation=True), traffic, ctx)) == 1


def test_geofence_with_ip_lookup_when_gateway_logs_no_country():
    pytest.importorskip("iptocc", reason="the optional iptocc package is not installed")
    traffic = Traffic().add("key:g", [5, 5], client_ip=["81.2.69.142", "8.8.8.8"])
    ctx = context([TokenRecord(subject_id="key:g", allowed_countries=("GB",))])
    found = detect(Geofence(), traffic, ctx, country_lookup=IptoccCountryLookup())
    assert len(found) == 1
    assert "US" in found[0].explanation


def test_scope_violation_flags_route_outside_scopes():
    traffic = Traffic().add("key:s", [4, 4], route=["/v1/orders/7", "/v1/admin"])
    found = detect(ScopeViolation(), traffic, context([TokenRecord(subject_id="key:s", scopes=("/v1/orders",))]))
    assert len(found) == 1
    assert "/v1/admin" in found[0].explanation
    assert found[0].evidence[0].observed == 4


def test_scopes_leave_unscoped_tokens_alone():
    traffic = Traffic().add("key:free", [4], route="/anything")
    assert detect(ScopeViolation(), traffic, context([TokenRecord(subject_id="key:free")])) == []


@pytest.mark.parametrize(
    ("route", "inside"),
    [("/v1/orders", True), ("/v1/orders/1", True), ("/v1/orders-export", False), ("/v1/users", False)],
)
def test_route_in_scopes_on_segment_boundary(route, inside):
    assert route_in_scopes(route, ("/v1/orders/",)) is inside


def test_route_in_scopes_with_star():
    assert route_in_scopes("/v1/orders-export", ("/v1/orders*",))


def test_origin_rule_flags_foreign_origin_and_allows_missing_header():
    traffic = Traffic().add("key:w", [5, 5, 5], origin=["https://app.example.com", "", "https://evil.example.net"])
    ctx = context([TokenRecord(subject_id="key:w", allowed_origins=("https://app.example.com",))])
    found = detect(AllowedOrigins(), traffic, ctx)
    assert len(found) == 1
    assert "https://evil.example.net" in found[0].explanation
    assert len(detect(AllowedOrigins(require_origin=True), traffic, ctx)) == 2


def test_origin_wildcard_matches_subdomains_only():
    assert origin_allowed("https://eu.example.com", ("https://*.example.com",))
    assert not origin_allowed("https://example.com.evil.net", ("https://*.example.com",))
    assert not origin_allowed("http://eu.example.com", ("https://*.example.com",))


def test_expired_token_flagged_after_grace_with_severity():
    traffic = Traffic().add("key:old", [5, 5, 5], status=[200, 200, 401])
    ctx = context([TokenRecord(subject_id="key:old", expires_at=T0 + 5.0)])
    found = detect(ExpiredToken(grace_s=10.0), traffic, ctx)
    assert [round(d.window_start - T0) for d in found] == [10, 20]
    assert [d.severity for d in found] == [Severity.HIGH, Severity.MEDIUM]


# -- client rules -------------------------------------------------------------------


def stuffing_traffic(tokens: int, failing: int, requests_each: int = 3) -> Traffic:
    traffic = Traffic()
    for i in range(tokens):
        traffic.add(f"tk_{i:016x}", [requests_each], client_ip="192.0.2.10", status=401 if i < failing else 200)
    return traffic


def test_credential_stuffing_flags_many_failing_tokens():
    found = detect(CredentialStuffing(), stuffing_traffic(tokens=30, failing=30))
    assert subjects(found) == {"ip:192.0.2.10"}
    assert found[0].client_ip == "192.0.2.10"
    assert found[0].severity == Severity.CRITICAL


def test_office_nat_many_users_few_failures_not_stuffing():
    traffic = stuffing_traffic(tokens=200, failing=4, requests_each=10)
    assert detect(CredentialStuffing(), traffic) == []
    assert detect(BruteForce(), traffic) == []


def test_brute_force_flags_one_token_hammered():
    traffic = Traffic().add("key:victim", [60], client_ip="192.0.2.20", status=403)
    found = detect(BruteForce(), traffic)
    assert subjects(found) == {"ip:192.0.2.20"}
    assert detect(CredentialStuffing(), traffic) == []


def test_brute_force_ignores_busy_client_with_some_failures():
    status = lambda w, c, r: np.where(np.arange(c) % 10 == 0, 401, 200)  # noqa: E731
    traffic = Traffic().add("key:busy", [500], client_ip="192.0.2.30", status=status)
    assert detect(BruteForce(), traffic) == []


# -- token sharing and travel ---------------------------------------------------------


def many(prefix: str, n: int):
    return lambda w, c, r: [f"{prefix}{i % n}" for i in range(c)]


def test_token_sharing_flags_new_networks_and_clients():
    rng = np.random.default_rng(1)
    counts = rng.poisson(30, 40)
    ips = lambda w, c, r: [f"100.{64 + i % 20}.1.{i}" for i in range(c)] if w == 30 else ["198.51.100.1"] * c  # noqa: E731
    agents = lambda w, c, r: [f"agent/{i % 12}" for i in range(c)] if w == 30 else ["app/1"] * c  # noqa: E731
    traffic = Traffic().add("key:leak", counts, client_ip=ips, user_agent=agents, country="DE")
    found = detect(TokenSharing(), traffic)
    assert [round((d.window_start - T0) / 10) for d in found] == [30]
    features = {evidence.feature for evidence in found[0].evidence}
    assert {"distinct_ips", "distinct_user_agents"} <= features


def test_mobile_client_changing_ips_in_one_country_not_shared():
    rng = np.random.default_rng(2)
    hop = lambda w, c, r: [f"100.{64 + (w * 7 + i) % 40}.{i % 3}.9" for i in range(c)]  # noqa: E731
    traffic = Traffic().add("key:phone", rng.poisson(40, 60), client_ip=hop, country="FR", device_id="dev-1")
    assert detect(TokenSharing(), traffic) == []
    assert detect(ImpossibleTravel(), traffic) == []


def test_office_nat_shared_team_token_not_shared_after_warmup():
    rng = np.random.default_rng(3)
    traffic = Traffic().add(
        "key:team", rng.poisson(60, 60), client_ip="192.0.2.50", user_agent=many("browser/", 25), country="DE"
    )
    assert detect(TokenSharing(), traffic) == []


def test_token_sharing_many_countries_alone_flags():
    rng = np.random.default_rng(4)
    countries = lambda w, c, r: (["DE", "BR", "JP", "US"] * c)[:c] if w == 20 else ["DE"] * c  # noqa: E731
    traffic = Traffic().add("key:world", rng.poisson(20, 30), country=countries)
    assert len(detect(TokenSharing(), traffic)) == 1


def test_impossible_travel_flags_far_country_in_next_window():
    traffic = Traffic().add("key:t", [5] * 20 + [5], country=["DE"] * 20 + ["JP"])
    found = detect(ImpossibleTravel(), traffic)
    assert len(found) == 1
    assert "DE and JP" in found[0].explanation
    assert found[0].evidence[0].observed > 8000


def test_impossible_travel_ignores_neighbours_and_slow_trips():
    neighbour = Traffic().add("key:n", [5] * 10, country=["DE"] * 5 + ["NL"] * 5)
    assert detect(ImpossibleTravel(), neighbour) == []
    slow = Traffic(window_s=10.0).add("key:s", [5], country="DE").add("key:s", [5], first_window=24 * 360, country="JP")
    assert detect(ImpossibleTravel(), slow) == []


def test_impossible_travel_exempts_multi_region_tokens():
    countries = lambda w, c, r: (["US", "DE"] * c)[:c]  # noqa: E731
    traffic = Traffic().add("key:cdn", [6] * 10, country=countries)
    found = detect(ImpossibleTravel(exempt_after=3), traffic)
    assert len(found) == 3


# -- accounts ---------------------------------------------------------------------------------


def account_traffic(tokens: int, spike_window: int | None) -> Traffic:
    rng = np.random.default_rng(5)
    traffic = Traffic()
    for i in range(tokens):
        counts = rng.poisson(4, 40)
        if spike_window is not None:
            counts[spike_window] = 25
        traffic.add(f"key:acct{i}", counts, client_ip=f"198.51.100.{i}", account="shop")
    return traffic


def test_account_limit_sums_tokens_under_their_own_limits():
    ctx = context(accounts={"shop": AccountRecord(rate_limit_rps=30.0)})
    found = detect(AccountRateLimit(), account_traffic(20, spike_window=30), ctx)
    assert subjects(found) == {"account:shop"}
    assert found[0].subject_kind == ACCOUNT_SUBJECT_KIND
    assert found[0].evidence[1].observed == 20


def test_account_limit_uses_registry_account_over_logged_one():
    traffic = Traffic().add("key:x", [400], account="logged-name")
    ctx = context(
        [TokenRecord(subject_id="key:x", account="real", plan="pro")],
        plans={"pro": PlanRecord(account_limit_rps=10.0)},
    )
    assert subjects(detect(AccountRateLimit(), traffic, ctx)) == {"account:real"}


def test_account_profile_flags_spread_spike_not_steady_account():
    assert subjects(detect(AccountProfile(), account_traffic(20, spike_window=30))) == {"account:shop"}
    assert detect(AccountProfile(), account_traffic(20, spike_window=None)) == []
