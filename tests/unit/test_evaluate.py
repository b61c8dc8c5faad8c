"""tokensentry evaluate: label matching, both baselines on hand-computed input, and a small run end to end."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

from pipeline.cli import build_parser
from pipeline.commands import evaluate as evaluate_command
from pipeline.config import load_settings
from pipeline.errors import ConfigError
from pipeline.evaluate import (
    ACTION,
    DETECTION,
    BucketScenario,
    Finding,
    LabelIndex,
    LeakyBucketBaseline,
    Scorer,
    StaticLimitBaseline,
    SubjectLimits,
    load_labels,
    run_buckets,
)
from pipeline.evaluate.baselines import CROWDSEC_HTTP_SCENARIOS
from pipeline.evaluate.batching import EventTimeCutter
from pipeline.evaluate.scoring import overlaps
from pipeline.evaluate.sources import simulated_batches
from pipeline.evaluate.traffic import TrafficTracker
from pipeline.evaluate.wiring import with_input_files
from pipeline.parsers import LineParser
from pipeline.parsers.base import FIELD_INDEX
from pipeline.registry import TokenRegistry
from pipeline.simulate import Label, Simulation, SimulationOptions
from pipeline.simulate.catalog import PLAN_LIMITS
from pipeline.sources.base import LineBatch
from schemas.registry import PlanRecord, TokenRecord
from tests.unit.helpers import events

SPAM = Label(
    label_id="spam_burst-1",
    scenario="spam_burst",
    kind="token",
    subject_ids=("key:a",),
    client_ips=("10.0.0.1",),
    start=1000,
    end=1600,
    description="spam burst",
)
STUFFING = Label(
    label_id="credential_stuffing-1",
    scenario="credential_stuffing",
    kind="client",
    subject_ids=("ip:203.0.113.5", "ip:203.0.113.6"),
    client_ips=("203.0.113.5", "203.0.113.6"),
    networks=("203.0.113.0/24",),
    start=2000,
    end=2600,
    description="credential stuffing",
)
EXPIRED = Label(
    label_id="expired_token-1",
    scenario="expired_token",
    kind="token",
    subject_ids=("key:e",),
    start=3000,
    end=4000,
    description="use after expiry",
)
LABELS = (SPAM, STUFFING, EXPIRED)


def action(subject: str = "", network: str = "", start: float = 0.0, end: float = 10.0, kind: str = "throttle") -> Finding:
    return Finding(ACTION, subject, network, start, end, end, kind)


def detection(subject: str = "", network: str = "", start: float = 0.0, end: float = 10.0, kind: str = "rate_limit") -> Finding:
    return Finding(DETECTION, subject, network, start, end, end, kind)


def scorer(grace_s: float = 300.0, **kwargs) -> Scorer:
    return Scorer("tokensentry", LabelIndex(LABELS), grace_s=grace_s, **kwargs)


# ---- matching -----------------------------------------------------------------


def test_overlaps_window_and_point():
    assert overlaps(990.0, 1000.0, 1000.0, 1600.0) is False
    assert overlaps(995.0, 1005.0, 1000.0, 1600.0) is True
    assert overlaps(1600.0, 1610.0, 1000.0, 1600.0) is True
    assert overlaps(1000.0, 1000.0, 1000.0, 1600.0) is True
    assert overlaps(1600.5, 1600.5, 1000.0, 1600.0) is False


def test_scorer_caught_with_time_to_action():
    score = scorer()
    score.add(detection("key:a", start=1010, end=1020))
    score.add(action("key:a", start=1030, end=1040))
    score.add(action("key:a", start=1010, end=1020, kind="alert"))
    outcome = score.score.outcomes[0]
    assert outcome.caught
    assert outcome.first_action_s == 20.0
    assert outcome.first_action_kind == "alert"
    assert outcome.first_detection_s == 20.0
    assert outcome.actions == 2
    assert score.score.fp_actions == 0


def test_scorer_missed_label_has_no_times():
    score = scorer()
    score.add(action("key:a", start=1030, end=1040))
    outcome = score.score.outcomes[2]
    assert outcome.label_id == "expired_token-1"
    assert not outcome.caught
    assert outcome.first_action_s is None
    assert outcome.first_detection_s is None


def test_scorer_grace_after_label_end():
    score = scorer(grace_s=300.0)
    score.add(action("key:a", start=1890, end=1900))
    score.add(action("key:a", start=1910, end=1920))
    assert score.score.outcomes[0].first_action_s == 900.0
    assert score.score.outcomes[0].actions == 1
    assert score.score.fp_actions == 1


def test_scorer_counts_false_positives():
    score = scorer()
    score.add(action("key:b", start=1010, end=1020))
    score.add(action("key:b", start=2010, end=2020, kind="alert"))
    score.add(action("key:a", start=5000, end=5010))
    score.add(action(network="198.51.100.0/24", start=2010, end=2020, kind="block"))
    score.add(detection("key:b", start=1010, end=1020))
    result = score.score
    assert result.actions == 4
    assert result.fp_actions == 4
    assert result.fp_enforcing_actions == 3
    assert result.fp_subjects == {"key:b", "key:a", "198.51.100.0/24"}
    assert result.fp_actions_by_kind == {"throttle": 2, "alert": 1, "block": 1}
    assert result.fp_detections == 1
    assert not any(outcome.caught for outcome in result.outcomes)


def test_scorer_fp_rate_per_1000_tokens_per_day():
    score = scorer()
    for _ in range(3):
        score.add(action("key:b", start=10, end=20))
    assert score.score.fp_rate_per_1000_tokens_per_day(benign_tokens=500, span_s=43200.0) == pytest.approx(12.0)
    assert score.score.fp_rate_per_1000_tokens_per_day(benign_tokens=0, span_s=43200.0) is None


def test_scorer_matches_client_networks():
    score = scorer()
    score.add(action(network="203.0.113.0/24", start=2090, end=2100, kind="block"))
    score.add(action(network="203.0.113.6", start=2050, end=2050, kind="ban"))
    score.add(action(network="203.0.0.0/16", start=2200, end=2210, kind="block"))
    outcome = score.score.outcomes[1]
    assert outcome.first_action_s == 50.0
    assert outcome.first_action_kind == "ban"
    assert outcome.actions == 3
    assert score.score.fp_actions == 0


def test_scorer_matches_ip_subject_and_attributed_token():
    score = scorer(attributed={"tk_0123456789abcdef": {1}})
    score.add(detection("ip:203.0.113.5", start=2000, end=2010, kind="brute_force"))
    score.add(action("tk_0123456789abcdef", start=2020, end=2030))
    outcome = score.score.outcomes[1]
    assert outcome.first_detection_s == 10.0
    assert outcome.first_action_s == 30.0
    assert score.score.fp_actions == 0


def test_scorer_enforcing_only_skips_alerts():
    score = scorer(enforcing_only=True)
    score.add(action("key:a", start=1010, end=1020, kind="alert"))
    score.add(action("key:b", start=1010, end=1020, kind="alert"))
    assert not score.score.outcomes[0].caught
    assert score.score.actions == 0
    assert score.score.fp_actions == 0


def test_label_index_networks():
    index = LabelIndex(LABELS)
    assert index.for_network("203.0.113.5") == (1,)
    assert index.for_network("203.0.113.77/32") == (1,)
    assert index.for_network("203.0.112.0/23") == (1,)
    assert index.for_network("10.0.0.0/8") == (0,)
    assert index.for_network("198.51.100.7") == ()
    assert index.for_network("2001:db8::1") == ()
    assert index.for_network("not an address") == ()
    assert index.for_subject("key:a") == (0,)
    assert index.for_subject("ip:203.0.113.6") == (1,)
    assert index.client_label_addresses == {"203.0.113.5": (1,), "203.0.113.6": (1,)}


def test_load_labels_from_json_lines(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text("\n".join(label.model_dump_json() for label in LABELS) + "\n\n", encoding="utf-8")
    assert load_labels(path) == list(LABELS)


def test_load_labels_rejects_bad_line(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text(SPAM.model_dump_json() + "\n{\"label_id\": \"x\"}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="line 2"):
        load_labels(path)


def test_traffic_tracker_attributes_attack_only_tokens():
    tracker = TrafficTracker(LabelIndex(LABELS))
    tracker.observe(
        events(
            ts=[10.0, 11.0, 12.0, 13.0, 14.0],
            subject_id=["tk_attack", "tk_shared", "tk_shared", "key:a", "ip:203.0.113.5"],
            subject_kind=[1, 1, 1, 0, 2],
            client_ip=["203.0.113.5", "203.0.113.6", "192.0.2.1", "10.0.0.1", "203.0.113.5"],
        )
    )
    assert tracker.attributed() == {"tk_attack": {1}}
    assert tracker.benign_subjects == {"tk_shared", "key:a"}
    assert tracker.benign_tokens() == 1
    assert tracker.span_s == 4.0


# ---- leaky bucket -------------------------------------------------------------

BF = BucketScenario("bf", capacity=5, leak_s=10.0, blackhole_s=60.0, statuses=(401,))


def pour(scenario: BucketScenario, times: list[float], distinct: list[str] | None = None, state=None):
    buckets, blackholes = state if state is not None else ({}, {})
    clients = np.array(["192.0.2.1"] * len(times), dtype=object)
    values = np.array(distinct, dtype=object) if distinct is not None else None
    return run_buckets(scenario, clients, np.array(times, dtype=np.float64), values, buckets, blackholes)


def test_leaky_bucket_overflows_on_sixth_event():
    # Tokens before each pour: 5, 4.1, 3.2, 2.3, 1.4, then 0.5 < 1 at t=5.
    assert pour(BF, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]) == [("192.0.2.1", 5.0)]
    assert pour(BF, [0.0, 1.0, 2.0, 3.0, 4.0]) == []


def test_leaky_bucket_leak_refills_one_per_leak_interval():
    # Five pours empty the bucket at t=0; at t=10 one token has leaked back, at t=10 again none is left.
    assert pour(BF, [0.0] * 5 + [10.0]) == []
    assert pour(BF, [0.0] * 5 + [10.0, 10.0]) == [("192.0.2.1", 10.0)]
    assert pour(BF, [10.0 * i for i in range(100)]) == []


def test_leaky_bucket_older_event_refills_nothing():
    # Five pours empty the bucket at t=10; an event stamped earlier finds no token, as with Go's limiter.
    assert pour(BF, [10.0] * 5 + [5.0]) == [("192.0.2.1", 5.0)]


def test_leaky_bucket_state_carries_over_batches():
    state = ({}, {})
    assert pour(BF, [0.0, 1.0, 2.0], state=state) == []
    assert pour(BF, [3.0, 4.0, 5.0], state=state) == [("192.0.2.1", 5.0)]


def test_leaky_bucket_blackhole_discards_repeat_overflows():
    burst = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    times = burst + [20.0 + t for t in burst] + [100.0 + t for t in burst]
    assert pour(BF, times) == [("192.0.2.1", 0.5), ("192.0.2.1", 100.5)]


def test_leaky_bucket_distinct_pours_each_value_once():
    crawl = BucketScenario("crawl", capacity=2, leak_s=100.0, blackhole_s=60.0, distinct="path")
    assert pour(crawl, [0.0, 1.0, 2.0, 3.0], ["/a", "/a", "/a", "/a"]) == []
    assert pour(crawl, [0.0, 1.0, 2.0], ["/a", "/b", "/c"]) == [("192.0.2.1", 2.0)]


def test_leaky_bucket_underflow_forgets_distinct_values():
    # An idle bucket dies after (capacity + 1) * leak_s = 30 s, so "/a" pours again in a new bucket.
    crawl = BucketScenario("crawl", capacity=2, leak_s=10.0, blackhole_s=60.0, distinct="path")
    assert pour(crawl, [0.0, 1.0, 40.0, 40.5, 40.6], ["/a", "/b", "/a", "/b", "/c"]) == [("192.0.2.1", 40.6)]


def test_leaky_bucket_baseline_bans_once_per_ban():
    baseline = LeakyBucketBaseline([BF], ban_s=3600.0)
    times = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 100.0, 100.1, 100.2, 100.3, 100.4, 100.5, 4000.0, 4000.1, 4000.2, 4000.3, 4000.4, 4000.5]
    baseline.observe(events(ts=times, client_ip=["192.0.2.9"] * len(times), status=[401] * len(times), method=["GET"] * len(times)))
    kinds = [(finding.stage, finding.at) for finding in baseline.findings]
    assert kinds == [
        (DETECTION, 0.5),
        (ACTION, 0.5),
        (DETECTION, 100.5),
        (DETECTION, 4000.5),
        (ACTION, 4000.5),
    ]
    assert baseline.findings[1].network == "192.0.2.9"
    assert baseline.findings[1].kind == "ban"


def test_crowdsec_scenario_filters():
    crawl, bf401, bf403, probing = CROWDSEC_HTTP_SCENARIOS
    batch = events(
        ts=[1.0, 2.0, 3.0, 4.0, 5.0],
        method=["GET", "GET", "POST", "OPTIONS", "HEAD"],
        path=["/v1/orders/7", "/static/app.JS", "/v1/login", "/v1/login", "/admin/"],
        status=[200, 404, 401, 401, 403],
    )
    assert crawl.select(batch).tolist() == [True, False, False, False, True]
    assert bf401.select(batch).tolist() == [False, False, True, False, False]
    assert bf403.select(batch).tolist() == [False, False, False, False, True]
    assert probing.select(batch).tolist() == [False, False, False, False, True]
    assert crawl.distinct_values(batch, crawl.select(batch)).tolist() == ["7", ""]


# ---- static limit -------------------------------------------------------------


def static_baseline(**kwargs) -> StaticLimitBaseline:
    registry = TokenRegistry.from_records(
        [
            TokenRecord(subject_id="key:a", account="acme", plan="free", rate_limit_rps=1.0),
            TokenRecord(subject_id="key:b", account="acme", plan="pro"),
        ],
        plans={"pro": PlanRecord(rate_limit_rps=3.0)},
    )
    limits = SubjectLimits(registry, default_rps=20.0, client_rps=5.0, plan_limits_rps={"gold": 100.0})
    return StaticLimitBaseline(limits, window_s=10.0, allowed_lateness_s=5.0, **kwargs)


def window_events(subject: str, window: int, count: int) -> dict:
    ts = (window * 10.0 + np.linspace(0.0, 9.9, count)).tolist()
    return events(ts=ts, subject_id=[subject] * count)


def test_subject_limits_order():
    limits = static_baseline().limits
    subjects = np.array(["key:a", "key:b", "tk_unknown", "ip:192.0.2.1"], dtype=object)
    assert limits(subjects).tolist() == [1.0, 3.0, 20.0, 5.0]


def test_static_limit_acts_only_above_limit():
    baseline = static_baseline()
    batch = [window_events("key:a", 0, 11), window_events("key:b", 0, 30), window_events("ip:192.0.2.1", 0, 51)]
    baseline.observe({name: np.concatenate([b[name] for b in batch]) for name in batch[0]})
    assert baseline.findings == []  # the window is still open
    baseline.finish()
    acted = sorted((f.subject, f.network, f.start, f.end) for f in baseline.findings if f.stage == ACTION)
    assert acted == [("ip:192.0.2.1", "192.0.2.1", 0.0, 10.0), ("key:a", "", 0.0, 10.0)]


def test_static_limit_closes_windows_at_watermark():
    baseline = static_baseline()
    baseline.observe(window_events("key:a", 0, 11))
    baseline.observe(events(ts=[14.9], subject_id=["key:z"]))
    assert baseline.findings == []
    baseline.observe(events(ts=[15.0], subject_id=["key:z"]))
    assert [(f.stage, f.at) for f in baseline.findings] == [(DETECTION, 10.0), (ACTION, 10.0)]


def test_static_limit_throttle_suppresses_repeat_actions():
    baseline = static_baseline(throttle_s=600.0)
    for window in (0, 1, 61):
        baseline.observe(window_events("key:a", window, 12))
    baseline.finish()
    detected = [f.at for f in baseline.findings if f.stage == DETECTION]
    acted = [f.at for f in baseline.findings if f.stage == ACTION]
    assert detected == [10.0, 20.0, 620.0]
    assert acted == [10.0, 620.0]


def test_static_limit_ignores_late_events():
    baseline = static_baseline()
    baseline.observe(window_events("key:a", 0, 10))
    baseline.observe(events(ts=[30.0], subject_id=["key:z"]))
    baseline.observe(events(ts=[5.0, 6.0], subject_id=["key:a", "key:a"]))
    baseline.finish()
    assert baseline.late_events == 2
    assert baseline.findings == []


# ---- event-time batches -------------------------------------------------------


def test_event_time_cutter_keeps_lines_and_slots():
    simulation = Simulation(SimulationOptions(tokens=60, duration_s=1800, seed=5, scenarios=("brute_force",)))
    lines = b"".join(simulation.iter_lines()).split(b"\n")[:-1]
    batch = LineBatch(source="test", partition=-1, lines=lines, positions=list(range(1, len(lines) + 1)), size_bytes=0)
    pieces = list(EventTimeCutter(10.0).cut(batch))

    assert [line for piece in pieces for line in piece.lines] == lines
    assert [position for piece in pieces for position in piece.positions] == batch.positions
    parser = LineParser()
    slots = []
    for piece in pieces:
        times = [row[FIELD_INDEX["ts"]] for row in parser.parse(piece.lines, piece.positions).rows]
        assert len({math.floor(ts / 10.0) for ts in times}) == 1
        slots.append(math.floor(times[0] / 10.0))
    assert slots == sorted(set(slots))


def test_event_time_cutter_keeps_unparsable_tail():
    batch = LineBatch(source="test", partition=-1, lines=[b"junk"] * 3, positions=[1, 2, 3], size_bytes=15)
    assert [piece.lines for piece in EventTimeCutter(10.0).cut(batch)] == [[b"junk"] * 3]


# ---- end to end ---------------------------------------------------------------


def spam_above_limit(tokens: int, duration_s: int) -> tuple[int, float]:
    """Return a seed and the smallest rate scale (at least 1) that put its spam burst at twice its plan's static limit.

    The default detector set guarantees an action only on a burst above the
    static limit, through ``rate_limit`` and the built-in throttle rule.
    Bursts below it depend on the anomaly detectors. Of the first 40 seeds,
    the one that needs the least scaling keeps the run small.
    """
    choices = []
    for seed in range(1, 41):
        simulation = Simulation(SimulationOptions(tokens=tokens, duration_s=duration_s, seed=seed, scenarios=("spam_burst",)))
        ((_, spam),) = simulation.scenarios
        limit = float(PLAN_LIMITS[simulation.population.plan[spam.token]])
        choices.append((max(1.0, 2.0 * limit / spam.rate), seed))
    scale, seed = min(choices)
    return seed, math.ceil(scale * 10) / 10


def run_command(capsys, argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="tokensentry")
    evaluate_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    return json.loads(capsys.readouterr().out)


def test_evaluate_simulated_end_to_end(capsys, tmp_path):
    seed, rate_scale = spam_above_limit(tokens=200, duration_s=3600)
    argv = ["evaluate", "--simulate", "--tokens", "200", "--duration", "1h", "--seed", str(seed), "--rate-scale", str(rate_scale)]
    # One-minute batches keep the run short; detection times do not depend on the batch size.
    report = run_command(capsys, [*argv, "--batch-seconds", "60", "--json", "--data-dir", str(tmp_path)])

    assert set(report) == {"input", "settings", "traffic", "labels", "systems", "throughput", "notes"}
    assert report["input"]["seed"] == seed
    assert set(report["systems"]) == {"tokensentry", "static_limit", "leaky_bucket"}
    simulation = Simulation(SimulationOptions(tokens=200, duration_s=3600, seed=seed, rate_scale=rate_scale))
    assert [entry["label_id"] for entry in report["labels"]] == [label.label_id for label in simulation.labels]
    for entry in report["labels"]:
        assert set(entry["systems"]) == {"tokensentry", "static_limit", "leaky_bucket"}
        for outcome in entry["systems"].values():
            assert outcome["caught"] == (outcome["first_action_s"] is not None)
            if outcome["caught"]:
                assert outcome["first_action_s"] >= 0
    for system in report["systems"].values():
        assert 0 <= system["fp_actions"] <= system["actions"]
        assert system["fp_enforcing_actions"] <= system["fp_actions"]
    assert report["traffic"]["events"] > 0
    assert report["traffic"]["dead_lettered"] == 0
    assert report["throughput"]["events_per_s"] > 0

    by_label = {entry["label_id"]: entry["systems"] for entry in report["labels"]}
    assert by_label["spam_burst-1"]["tokensentry"]["caught"]
    # rate_limit judges the same windows against the same limits as the static baseline.
    # So tokensentry detects every label the baseline acts on, no later than the baseline.
    for label_id, systems in by_label.items():
        static = systems["static_limit"]["first_action_s"]
        if static is not None:
            detected = systems["tokensentry"]["first_detection_s"]
            assert detected is not None, label_id
            assert detected <= static, label_id


def test_evaluate_requires_labels_with_logs(capsys, tmp_path):
    log = tmp_path / "access.log"
    log.write_text("", encoding="utf-8")
    parser = argparse.ArgumentParser(prog="tokensentry")
    evaluate_command.register(parser.add_subparsers(dest="command", required=True))
    with pytest.raises(ConfigError, match="--labels"):
        evaluate_command.run(parser.parse_args(["evaluate", "--access-log", str(log)]))
    with pytest.raises(ConfigError, match="no input"):
        evaluate_command.run(parser.parse_args(["evaluate"]))
    with pytest.raises(ConfigError, match="--grace"):
        evaluate_command.run(parser.parse_args(["evaluate", "--simulate", "--grace", "soon"]))
    with pytest.raises(ConfigError, match="--batch-seconds"):
        evaluate_command.run(parser.parse_args(["evaluate", "--simulate", "--batch-seconds", "-1"]))
    with pytest.raises(ConfigError, match="--simulate generates"):
        evaluate_command.run(parser.parse_args(["evaluate", "--simulate", "--access-log", str(log)]))


def test_evaluate_log_files_match_simulation(capsys, tmp_path):
    options = SimulationOptions(tokens=60, duration_s=1800, seed=5, scenarios=("brute_force", "scope_probing"))
    simulation = Simulation(options)
    log = tmp_path / "access.log"
    log.write_bytes(b"".join(simulation.iter_lines()))
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(label.model_dump_json() + "\n" for label in simulation.labels), encoding="utf-8")
    report = run_command(
        capsys, ["evaluate", "--access-log", str(log), "--labels", str(labels), "--json", "--data-dir", str(tmp_path / "data")]
    )
    assert report["input"]["kind"] == "files"
    assert report["traffic"]["events"] == len(log.read_bytes().splitlines())
    by_label = {entry["label_id"]: entry["systems"] for entry in report["labels"]}
    assert by_label["brute_force-1"]["leaky_bucket"]["caught"]
    assert by_label["brute_force-1"]["leaky_bucket"]["first_action_kind"] == "ban"


def test_with_input_files_points_settings_at_labelled_set(tmp_path):
    settings = load_settings(None, data_dir=tmp_path)
    updated = with_input_files(settings, tmp_path / "registry.yaml", tmp_path / "blocklist.txt")
    assert updated.registry_file == tmp_path / "registry.yaml"
    assert updated.detectors.blocklist_file == tmp_path / "blocklist.txt"
    assert settings.registry_file is None
    assert settings.detectors.blocklist_file is None
    assert with_input_files(settings, None, None) == settings


def test_simulated_batches_number_every_line():
    simulation = Simulation(SimulationOptions(tokens=60, duration_s=1800, seed=5, scenarios=("brute_force",)))
    lines = b"".join(simulation.iter_lines()).split(b"\n")[:-1]
    batches = list(simulated_batches(simulation, batch_lines=1000))
    assert [len(batch) for batch in batches[:-1]] == [1000] * (len(batches) - 1)
    assert 0 < len(batches[-1]) <= 1000
    assert [line for batch in batches for line in batch.lines] == lines
    assert [position for batch in batches for position in batch.positions] == list(range(1, len(lines) + 1))


def test_cli_parses_evaluate_file_options():
    # The top-level parser matches abbreviations of its own options (--log-level, --log-format) in every argument.
    args = build_parser().parse_args(["evaluate", "--access-log", "a.log", "--access-log", "b.log", "--labels", "labels.jsonl"])
    assert args.access_log == ["a.log", "b.log"]
    assert args.labels.name == "labels.jsonl"
