"""Traffic simulator: determinism, ordering, formats and the planted abuse behind each label."""

from __future__ import annotations

import argparse
import gzip
import ipaddress
import json
import re
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from pipeline.commands import simulate as simulate_command
from pipeline.errors import ConfigError
from pipeline.simulate import Label, Simulation, SimulationOptions, parse_scenarios
from schemas.registry import TokenRecord

OPTIONS = SimulationOptions(tokens=300, duration_s=6 * 3600, seed=11)
SMALL = SimulationOptions(tokens=60, duration_s=1800, seed=5)

NGINX_LINE = re.compile(
    r'^(?P<ip>\S+) - - \[(?P<time>[^\]]+)\] "(?P<method>\S+) (?P<target>\S+) HTTP/1\.1" (?P<status>\d+) (?P<bytes>\d+) '
    r'"(?P<referer>[^"]*)" "(?P<agent>[^"]*)" rt=(?P<rt>\d+\.\d{3}) key="(?P<key>[^"]*)" key_id="(?P<key_id>[^"]*)" '
    r'origin="(?P<origin>[^"]*)" country="(?P<country>[^"]*)" req_id=(?P<req_id>[0-9a-f]{16})$'
)


@dataclass(frozen=True)
class Request:
    ts: int
    ip: str
    path: str
    status: int
    key: str
    key_id: str
    country: str


@dataclass(frozen=True)
class Run:
    text: str
    requests: list[Request]
    labels: list[Label]
    registry: list[dict]
    blocklist: list[str]


def render(options: SimulationOptions) -> bytes:
    return b"".join(Simulation(options).iter_lines())


def parse_nginx(text: str) -> list[Request]:
    times: dict[str, int] = {}
    requests = []
    for line in text.splitlines():
        match = NGINX_LINE.match(line)
        assert match is not None, f"line does not match the nginx format: {line}"
        stamp = match["time"]
        if stamp not in times:
            times[stamp] = int(datetime.strptime(stamp, "%d/%b/%Y:%H:%M:%S %z").timestamp())
        requests.append(
            Request(
                ts=times[stamp],
                ip=match["ip"],
                path=match["target"],
                status=int(match["status"]),
                key=match["key"],
                key_id=match["key_id"],
                country=match["country"],
            )
        )
    return requests


@pytest.fixture(scope="module")
def run() -> Run:
    simulation = Simulation(OPTIONS)
    text = b"".join(simulation.iter_lines()).decode()
    return Run(
        text=text,
        requests=parse_nginx(text),
        labels=simulation.labels,
        registry=list(simulation.registry_records()),
        blocklist=simulation.blocklist(),
    )


def label_of(run: Run, scenario: str, kind: str = "token") -> Label:
    matches = [label for label in run.labels if label.scenario == scenario and label.kind == kind]
    assert len(matches) == 1, f"expected one {kind} label for {scenario}, got {len(matches)}"
    return matches[0]


def key_of(label: Label) -> str:
    (subject,) = label.subject_ids
    assert subject.startswith("key:")
    return subject.removeprefix("key:")


def in_window(request: Request, label: Label) -> bool:
    return label.start <= request.ts < label.end


def blocklisted_requests(run: Run) -> list[Request]:
    networks = [ipaddress.ip_network(cidr) for cidr in run.blocklist]
    blocked_ips = {ip for ip in {r.ip for r in run.requests} if any(ipaddress.ip_address(ip) in net for net in networks)}
    return [r for r in run.requests if r.ip in blocked_ips]


# Determinism and order


def test_simulate_same_seed_identical_bytes():
    assert render(SMALL) == render(SMALL)


def test_simulate_other_seed_differs():
    assert render(SMALL) != render(replace(SMALL, seed=6))


def test_simulate_kong_same_seed_identical_bytes():
    kong = replace(SMALL, log_format="kong")
    assert render(kong) == render(kong)


def test_simulate_nginx_event_time_non_decreasing(run):
    times = [request.ts for request in run.requests]
    assert all(a <= b for a, b in zip(times, times[1:]))


def test_simulate_event_time_inside_run(run):
    assert run.requests[0].ts >= OPTIONS.start
    assert run.requests[-1].ts < OPTIONS.end


def test_simulate_kong_started_at_non_decreasing():
    text = render(replace(SMALL, log_format="kong")).decode()
    started = [json.loads(line)["started_at"] for line in text.splitlines()]
    assert all(a <= b for a, b in zip(started, started[1:]))


def test_simulate_chunks_cover_run_in_order():
    chunks = list(Simulation(SMALL).iter_chunks())
    assert chunks[0].start == SMALL.start
    assert chunks[-1].end == SMALL.end
    assert all(a.end == b.start for a, b in zip(chunks, chunks[1:]))


def test_simulate_scenarios_none_keeps_benign_lines(run):
    """Benign traffic is drawn from its own streams, so dropping the abuse leaves it unchanged."""
    benign = render(replace(OPTIONS, scenarios=())).decode()
    without_ids = {line.rsplit(" req_id=", 1)[0] for line in run.text.splitlines()}
    missing = [line for line in benign.splitlines() if line.rsplit(" req_id=", 1)[0] not in without_ids]
    assert missing == []


# Formats


def test_nginx_every_line_parses(run):
    assert len(run.requests) == run.text.count("\n")


def test_nginx_empty_values_are_dashes(run):
    monitor = next(request for request in run.requests if request.path == "/v1/status")
    assert monitor.key == "-"
    assert monitor.key_id == "-"


def test_nginx_header_credential_not_in_target(run):
    assert not any("api_key=" in request.path for request in run.requests)


def test_nginx_credential_in_query_moves_secret():
    text = render(replace(SMALL, credential_in_query=True, scenarios=())).decode()
    requests = parse_nginx(text)
    with_key = [request for request in requests if request.key_id != "-"]
    assert all("api_key=sk_live_" in request.path for request in with_key)
    assert all(request.key == "-" for request in requests)


def test_kong_lines_have_file_log_fields():
    text = render(replace(SMALL, log_format="kong")).decode()
    records = [json.loads(line) for line in text.splitlines()]
    authenticated = [record for record in records if "authenticated_entity" in record]
    assert authenticated, "no authenticated requests in the Kong output"
    for record in authenticated:
        assert record["request"]["headers"]["x-api-key"].startswith("sk_live_")
        assert record["authenticated_entity"]["id"].startswith("key_")
        assert record["consumer"]["username"].startswith("acct_")
        assert isinstance(record["latencies"]["request"], int)
        assert len(record["country"]) == 2


def test_kong_invalid_credentials_have_no_consumer():
    text = render(replace(SMALL, log_format="kong", scenarios=("brute_force",))).decode()
    records = [json.loads(line) for line in text.splitlines()]
    rejected = [record for record in records if record["response"]["status"] == 401]
    assert rejected, "brute force produced no 401 in the Kong output"
    assert all("consumer" not in record for record in rejected)
    assert all(record["latencies"]["proxy"] == -1 for record in rejected)


def test_kong_credential_in_query_fills_querystring():
    text = render(replace(SMALL, log_format="kong", credential_in_query=True, scenarios=())).decode()
    records = [json.loads(line) for line in text.splitlines()]
    authenticated = [record for record in records if "authenticated_entity" in record]
    assert all("api_key" in record["request"]["querystring"] for record in authenticated)
    assert all("x-api-key" not in record["request"]["headers"] for record in authenticated)
    assert all("api_key=" in record["request"]["uri"] for record in authenticated)


# Labels and the planted traffic


def test_labels_cover_every_scenario(run):
    assert {label.scenario for label in run.labels} == set(OPTIONS.scenarios)


def test_labels_windows_inside_run(run):
    for label in run.labels:
        assert OPTIONS.start <= label.start < label.end <= OPTIONS.end, label.label_id


def test_labels_token_subjects_are_distinct(run):
    keys = [key_of(label) for label in run.labels if label.kind == "token"]
    assert len(keys) == len(set(keys))


def test_labels_client_ips_carry_no_benign_key(run):
    """Client labels name addresses that only the planted abuse uses."""
    client_ips = {ip for label in run.labels if label.kind == "client" for ip in label.client_ips}
    from_them = [request for request in run.requests if request.ip in client_ips]
    assert from_them, "no traffic from the labelled client addresses"
    assert all(request.key_id == "-" for request in from_them)


def test_labels_client_traffic_inside_windows(run):
    windows = [(label, set(label.client_ips)) for label in run.labels if label.kind == "client"]
    for request in run.requests:
        for label, ips in windows:
            if request.ip in ips:
                assert in_window(request, label), f"{request} outside {label.label_id}"


def test_spam_burst_window_ten_times_before(run):
    label = label_of(run, "spam_burst")
    key_id = key_of(label)
    length = label.end - label.start
    inside = sum(1 for r in run.requests if r.key_id == key_id and in_window(r, label))
    before = sum(1 for r in run.requests if r.key_id == key_id and label.start - length <= r.ts < label.start)
    assert inside >= 10 * max(before, 1)


def test_spam_burst_from_labelled_addresses(run):
    label = label_of(run, "spam_burst")
    key_id = key_of(label)
    ips = {r.ip for r in run.requests if r.key_id == key_id and in_window(r, label)}
    assert ips <= set(label.client_ips)


def test_slow_scraping_distinct_paths_below_limit(run):
    label = label_of(run, "slow_scraping")
    key_id = key_of(label)
    scraped = [r for r in run.requests if r.key_id == key_id and r.ip in label.client_ips and in_window(r, label)]
    limit = next(record["rate_limit_rps"] for record in run.registry if record["subject_id"] == f"key:{key_id}")
    rate = len(scraped) / (label.end - label.start)
    assert len({r.path for r in scraped}) >= 0.99 * len(scraped)
    assert rate < limit
    assert rate > 0.5 * limit


def test_slow_scraping_no_minute_over_limit(run):
    label = label_of(run, "slow_scraping")
    key_id = key_of(label)
    limit = next(record["rate_limit_rps"] for record in run.registry if record["subject_id"] == f"key:{key_id}")
    per_minute = Counter(r.ts // 60 for r in run.requests if r.key_id == key_id and in_window(r, label))
    assert max(per_minute.values()) <= limit * 60


def test_credential_stuffing_mostly_rejected(run):
    label = label_of(run, "credential_stuffing", kind="client")
    ips = set(label.client_ips)
    attempts = [r for r in run.requests if r.ip in ips]
    rejected = sum(1 for r in attempts if r.status in (401, 403))
    assert len(attempts) > 1000
    assert rejected >= 0.9 * len(attempts)


def test_credential_stuffing_many_credentials_and_ips(run):
    label = label_of(run, "credential_stuffing", kind="client")
    attempts = [r for r in run.requests if r.ip in set(label.client_ips)]
    assert len({r.key for r in attempts}) >= 1000
    assert len({r.ip for r in attempts}) >= 100
    assert all(subject.startswith("ip:") for subject in label.subject_ids)


def test_credential_stuffing_ips_inside_networks(run):
    label = label_of(run, "credential_stuffing", kind="client")
    networks = [ipaddress.ip_network(cidr) for cidr in label.networks]
    assert all(any(ipaddress.ip_address(ip) in net for net in networks) for ip in label.client_ips)


def test_brute_force_one_client_many_credentials(run):
    label = label_of(run, "brute_force", kind="client")
    (ip,) = label.client_ips
    attempts = [r for r in run.requests if r.ip == ip]
    assert len(attempts) > 1000
    assert sum(1 for r in attempts if r.status == 401) >= 0.95 * len(attempts)
    assert len({r.key for r in attempts}) >= 0.95 * len(attempts)


def test_leaked_token_three_countries_in_window(run):
    label = label_of(run, "leaked_token")
    key_id = key_of(label)
    countries = {r.country for r in run.requests if r.key_id == key_id and in_window(r, label)}
    assert len(countries) >= 3


def test_leaked_token_many_addresses_in_window(run):
    label = label_of(run, "leaked_token")
    key_id = key_of(label)
    ips = {r.ip for r in run.requests if r.key_id == key_id and in_window(r, label)}
    assert len(ips) >= 20


def test_scope_probing_calls_outside_scopes(run):
    label = label_of(run, "scope_probing")
    key_id = key_of(label)
    scopes = next(record["scopes"] for record in run.registry if record["subject_id"] == f"key:{key_id}")
    outside = [
        r for r in run.requests if r.key_id == key_id and in_window(r, label) and not r.path.startswith(tuple(scopes))
    ]
    assert len(outside) >= 50
    assert sum(1 for r in outside if r.status == 403) >= 0.8 * len(outside)


def test_expired_token_calls_after_expiry(run):
    label = label_of(run, "expired_token")
    key_id = key_of(label)
    expires_at = next(record["expires_at"] for record in run.registry if record["subject_id"] == f"key:{key_id}")
    after = [r for r in run.requests if r.key_id == key_id and r.ts >= expires_at]
    assert expires_at == label.start
    assert len(after) >= 10


def test_blocklisted_network_traffic_inside_cidrs(run):
    blocked = blocklisted_requests(run)
    labels = [label for label in run.labels if label.scenario == "blocklisted_network"]
    assert len(blocked) >= 100
    assert all(any(in_window(r, label) for label in labels) for r in blocked)


def test_blocklisted_network_token_and_anonymous(run):
    blocked = blocklisted_requests(run)
    token_label = label_of(run, "blocklisted_network", kind="token")
    assert any(r.key_id == key_of(token_label) for r in blocked)
    assert any(r.key == "-" for r in blocked)


def test_blocklist_no_benign_address(run):
    networks = [ipaddress.ip_network(cidr) for cidr in run.blocklist]
    labelled = {ip for label in run.labels for ip in label.client_ips}
    benign_ips = {r.ip for r in run.requests} - labelled
    assert not any(any(ipaddress.ip_address(ip) in net for net in networks) for ip in benign_ips)


# Registry


def test_registry_one_entry_per_token(run):
    assert len(run.registry) == OPTIONS.tokens
    assert len({record["subject_id"] for record in run.registry}) == OPTIONS.tokens


def test_registry_entries_validate(run):
    for record in run.registry:
        TokenRecord.model_validate(record)


def test_registry_covers_logged_key_ids(run):
    registered = {record["subject_id"] for record in run.registry}
    logged = {f"key:{r.key_id}" for r in run.requests if r.key_id != "-"}
    assert logged <= registered


def test_registry_secret_not_stored(run):
    assert not any("sk_live_" in json.dumps(record) for record in run.registry)


# Options


def test_parse_scenarios_canonical_order():
    assert parse_scenarios("brute_force,spam_burst") == ("spam_burst", "brute_force")


def test_parse_scenarios_unknown_rejected():
    with pytest.raises(ConfigError, match="unknown scenario"):
        parse_scenarios("spam_burst,ddos")


def test_options_too_few_tokens_for_scenarios():
    with pytest.raises(ConfigError, match="--tokens 5"):
        SimulationOptions(tokens=5)


def test_options_few_tokens_without_scenarios():
    assert SimulationOptions(tokens=5, scenarios=()).tokens == 5


def test_options_invalid_format_rejected():
    with pytest.raises(ConfigError, match="--format"):
        SimulationOptions(log_format="apache")


# Command line


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    simulate_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["simulate", *argv])
    return args.func(args)


def test_cli_writes_all_files(tmp_path: Path):
    out = tmp_path / "traffic.log"
    code = run_cli(
        "--tokens", "60", "--duration", "30m", "--seed", "5",
        "--out", str(out),
        "--labels", str(tmp_path / "labels.jsonl"),
        "--registry", str(tmp_path / "registry.yaml"),
        "--blocklist", str(tmp_path / "blocklist.txt"),
    )  # fmt: skip
    labels = [Label.model_validate_json(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    registry = yaml.safe_load((tmp_path / "registry.yaml").read_text())
    blocklist = (tmp_path / "blocklist.txt").read_text().split()
    assert code == 0
    assert out.read_bytes() == render(SMALL)
    assert len(labels) == 9
    assert len(registry) == 60
    assert all(ipaddress.ip_network(cidr) for cidr in blocklist)


def test_cli_gzip_matches_plain(tmp_path: Path):
    run_cli("--tokens", "60", "--duration", "30m", "--seed", "5", "--out", str(tmp_path / "a.log.gz"))
    run_cli("--tokens", "60", "--duration", "30m", "--seed", "5", "--out", str(tmp_path / "b.log.gz"))
    compressed = (tmp_path / "a.log.gz").read_bytes()
    assert gzip.decompress(compressed) == render(SMALL)
    assert compressed == (tmp_path / "b.log.gz").read_bytes()


def test_cli_scenarios_none_writes_no_labels(tmp_path: Path):
    labels = tmp_path / "labels.jsonl"
    code = run_cli("--tokens", "60", "--duration", "30m", "--scenarios", "none", "--out", str(tmp_path / "t.log"), "--labels", str(labels))
    assert code == 0
    assert labels.read_text() == ""


def test_cli_invalid_duration_names_option(tmp_path: Path):
    with pytest.raises(ConfigError, match="--duration"):
        run_cli("--duration", "soon", "--out", str(tmp_path / "t.log"))


def test_cli_missing_directory_names_option(tmp_path: Path):
    with pytest.raises(ConfigError, match="--out"):
        run_cli("--tokens", "60", "--duration", "30m", "--out", str(tmp_path / "missing" / "t.log"))


def test_simulate_command_line_writes_lines(tmp_path):
    """Through the real command line, where global options share the namespace."""
    from pipeline.cli import main

    out = tmp_path / "sim.log"
    assert main(["simulate", "--tokens", "30", "--duration", "10m", "--format", "kong", "--out", str(out)]) == 0
    assert out.read_text().startswith("{")
