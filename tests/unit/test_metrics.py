"""The Metrics object, the health state and the HTTP endpoint, without Kafka."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections import namedtuple

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.errors import ConfigError, PublishError
from pipeline.health import HealthState, main as probe_main
from pipeline.metrics import Metrics, MetricsServer, partition_key
from pipeline.runner import RunStats

TopicPartition = namedtuple("TopicPartition", ["topic", "partition"])


class FakeClock:
    """Monotonic seconds that move only when a test sets ``now``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeStore:
    """An audit store double: ``write_events`` succeeds, ``write_windows`` always fails."""

    label = "fake://store"

    def __init__(self) -> None:
        self.events: list[int] = []

    def write_events(self, columns: dict) -> int:
        self.events.append(len(columns))
        return len(columns)

    def write_windows(self, columns: dict) -> int:
        raise RuntimeError("server gone")


class FailingSink:
    """An action sink whose every publish raises ``PublishError``."""

    sink_id = "failing"

    def publish(self, items: list) -> None:
        raise PublishError("broker unreachable")


class CollectingSink:
    """An action sink that keeps what it was given."""

    sink_id = "collecting"

    def __init__(self) -> None:
        self.items: list = []

    def publish(self, items: list) -> None:
        self.items.extend(items)

    def close(self) -> None:
        self.items.append("closed")


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def stats(**values) -> RunStats:
    result = RunStats()
    for name, item in values.items():
        setattr(result, name, item)
    return result


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def metrics(clock: FakeClock) -> Metrics:
    return Metrics(stall_timeout_s=60.0, ready_max_lag=100, process_metrics=False, clock=clock)


def test_observe_batch_counts_increments(metrics: Metrics) -> None:
    run = stats(lines_read=10, bytes_read=500, events_accepted=8, dead_lettered=2, windows=3)
    run.detections_by_detector = {"rate_limit": 2}
    run.actions_by_kind = {"throttle": 1}
    metrics.observe_batch(run, 0.2)
    run.lines_read, run.events_accepted, run.dead_lettered = 25, 22, 3
    run.detections_by_detector["ewma_rate"] = 1
    run.actions_by_kind["throttle"] = 3
    metrics.observe_batch(run, 0.4)
    assert value(metrics, "tokensentry_records_in_total") == 25
    assert value(metrics, "tokensentry_records_accepted_total") == 22
    assert value(metrics, "tokensentry_records_dead_lettered_total") == 3
    assert value(metrics, "tokensentry_bytes_in_total") == 500
    assert value(metrics, "tokensentry_windows_closed_total") == 3
    assert value(metrics, "tokensentry_detections_total", detector="rate_limit") == 2
    assert value(metrics, "tokensentry_detections_total", detector="ewma_rate") == 1
    assert value(metrics, "tokensentry_actions_total", kind="throttle") == 3
    assert value(metrics, "tokensentry_batches_total") == 2
    assert value(metrics, "tokensentry_batch_duration_seconds_count") == 2
    assert value(metrics, "tokensentry_batch_duration_seconds_sum") == pytest.approx(0.6)
    assert value(metrics, "tokensentry_batch_records_sum") == 25


def test_observe_batch_separate_pipelines(metrics: Metrics) -> None:
    first, second = stats(lines_read=5), stats(lines_read=7)
    metrics.observe_batch(first, 0.1)
    metrics.observe_batch(second, 0.1)
    first.lines_read = 6
    metrics.observe_batch(first, 0.1)
    assert value(metrics, "tokensentry_records_in_total") == 13


def test_observe_batch_after_reset(metrics: Metrics) -> None:
    run = stats(lines_read=50)
    metrics.observe_batch(run, 0.1)
    run.lines_read = 4  # a RunStats reused from zero: all 4 are new
    metrics.observe_batch(run, 0.1)
    assert value(metrics, "tokensentry_records_in_total") == 54


def test_forget_drops_snapshot(metrics: Metrics) -> None:
    run = stats(lines_read=5)
    metrics.observe_batch(run, 0.1)
    metrics.forget(run)
    metrics.observe_batch(run, 0.1)
    assert value(metrics, "tokensentry_records_in_total") == 10


def test_lag_series_follow_assignment(metrics: Metrics) -> None:
    metrics.set_assigned([TopicPartition("logs", 0), TopicPartition("logs", 1)])
    metrics.set_lag(TopicPartition("logs", 0), 5)
    metrics.set_lag(("logs", 1), 7)
    assert value(metrics, "tokensentry_consumer_lag", topic="logs", partition="1") == 7
    metrics.set_assigned([("logs", 0)])
    assert value(metrics, "tokensentry_consumer_lag", topic="logs", partition="1") is None
    assert value(metrics, "tokensentry_consumer_lag", topic="logs", partition="0") == 5
    assert value(metrics, "tokensentry_assigned_partitions") == 1
    assert value(metrics, "tokensentry_rebalances_total") == 2


def test_negative_lag_clamped(metrics: Metrics) -> None:
    metrics.set_lag(("logs", 0), -3)
    assert value(metrics, "tokensentry_consumer_lag", topic="logs", partition="0") == 0


def test_partition_key_forms() -> None:
    assert partition_key(TopicPartition("a", 3)) == ("a", 3)
    assert partition_key(("a", "4")) == ("a", 4)


def test_readiness_waits_for_assignment(metrics: Metrics) -> None:
    result = metrics.readiness()
    assert not result.ok
    assert result.detail["status"] == "waiting for the consumer group to assign partitions"
    metrics.set_assigned([("logs", 0)])
    assert metrics.readiness().ok


def test_readiness_empty_assignment_is_ready(metrics: Metrics) -> None:
    metrics.set_assigned([])
    result = metrics.readiness()
    assert result.ok
    assert "no partitions assigned" in result.detail["status"]


def test_readiness_fails_on_lag(metrics: Metrics) -> None:
    metrics.set_assigned([("logs", 0), ("logs", 1)])
    metrics.set_lag(("logs", 0), 100)
    assert metrics.readiness().ok
    metrics.set_lag(("logs", 1), 101)
    result = metrics.readiness()
    assert not result.ok
    assert "logs/1 lags by 101" in result.detail["status"]
    assert result.detail["max_lag"] == 101


def test_readiness_without_lag_bound(clock: FakeClock) -> None:
    state = HealthState(ready_max_lag=None, clock=clock)
    state.set_assigned([("logs", 0)])
    state.set_lag(("logs", 0), 10**9)
    assert state.readiness().ok


def test_liveness_fails_when_loop_stalls(metrics: Metrics, clock: FakeClock) -> None:
    assert metrics.liveness().ok
    clock.now += 61
    result = metrics.liveness()
    assert not result.ok
    assert "has not ticked for 61.0 s" in result.detail["status"]
    metrics.set_assigned([("logs", 0)])
    assert not metrics.readiness().ok
    metrics.tick()
    assert metrics.liveness().ok


def test_observe_batch_ticks(metrics: Metrics, clock: FakeClock) -> None:
    clock.now += 61
    metrics.observe_batch(stats(), 0.01)
    assert metrics.liveness().ok


def test_stopping_fails_readiness_only(metrics: Metrics) -> None:
    metrics.set_assigned([("logs", 0)])
    metrics.set_stopping()
    assert metrics.readiness().detail["status"] == "stopping"
    assert metrics.liveness().ok


def test_health_state_rejects_bad_limits() -> None:
    with pytest.raises(ValueError, match="stall_timeout_s must be > 0"):
        HealthState(stall_timeout_s=0)
    with pytest.raises(ValueError, match="ready_max_lag must be >= 0"):
        HealthState(ready_max_lag=-1)


def test_instrumented_store_times_and_counts(metrics: Metrics) -> None:
    store = FakeStore()
    wrapped = metrics.instrument_store(store)
    assert wrapped.write_events({"ts": 1}) == 1
    with pytest.raises(RuntimeError, match="server gone"):
        wrapped.write_windows({})
    assert wrapped.label == "fake://store"
    assert wrapped.wrapped is store
    assert value(metrics, "tokensentry_clickhouse_write_duration_seconds_count", table="events") == 1
    assert value(metrics, "tokensentry_clickhouse_write_duration_seconds_count", table="windows") == 1
    assert value(metrics, "tokensentry_clickhouse_write_errors_total", table="windows") == 1
    assert value(metrics, "tokensentry_clickhouse_write_errors_total", table="events") is None


def test_instrumented_sink_counts_errors(metrics: Metrics) -> None:
    failing = metrics.instrument_sink(FailingSink(), "actions")
    with pytest.raises(PublishError):
        failing.publish(["a"])
    collecting = CollectingSink()
    working = metrics.instrument_sink(collecting, "dead_letters")
    working.publish(["x", "y"])
    working.close()
    assert collecting.items == ["x", "y", "closed"]
    assert working.sink_id == "collecting"
    assert value(metrics, "tokensentry_producer_errors_total", sink="failing", role="actions") == 1
    assert value(metrics, "tokensentry_published_messages_total", sink="collecting", role="dead_letters") == 2


def test_commit_counters(metrics: Metrics) -> None:
    metrics.observe_commit()
    metrics.observe_commit(RuntimeError("rebalanced"))
    assert value(metrics, "tokensentry_offset_commits_total") == 1
    assert value(metrics, "tokensentry_offset_commit_errors_total") == 1


def test_every_metric_prefixed() -> None:
    metrics = Metrics(process_metrics=False)
    names = [family.name for family in metrics.registry.collect()]
    assert names
    assert all(name.startswith("tokensentry_") for name in names), names


def test_process_metrics_exported() -> None:
    metrics = Metrics()
    assert value(metrics, "process_resident_memory_bytes") is not None


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_server_endpoints(metrics: Metrics) -> None:
    metrics.observe_batch(stats(lines_read=3, events_accepted=3), 0.05)
    with MetricsServer(metrics, "127.0.0.1", 0) as server:
        status, headers, body = get(server.url + "/metrics")
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain")
        families = {family.name: family for family in text_string_to_metric_families(body.decode())}
        assert families["tokensentry_records_in"].samples[0].value == 3

        status, headers, body = get(server.url + "/healthz")
        assert status == 200
        assert headers["Content-Type"] == "application/json"
        assert json.loads(body)["status"] == "ok"

        status, _, body = get(server.url + "/readyz")
        assert status == 503
        metrics.set_assigned([("logs", 0)])
        status, _, body = get(server.url + "/readyz")
        assert status == 200
        assert json.loads(body)["partitions"] == ["logs/0"]

        assert get(server.url + "/nothing")[0] == 404


def test_server_openmetrics_negotiation(metrics: Metrics) -> None:
    with MetricsServer(metrics, "127.0.0.1", 0) as server:
        request = urllib.request.Request(server.url + "/metrics", headers={"Accept": "application/openmetrics-text"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.headers["Content-Type"].startswith("application/openmetrics-text")
            assert response.read().rstrip().endswith(b"# EOF")


def test_server_port_in_use(metrics: Metrics) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"cannot serve metrics on 127.0.0.1:{port}: .*metrics.port"):
            MetricsServer(metrics, "127.0.0.1", port).start()


def test_server_close_twice(metrics: Metrics) -> None:
    server = MetricsServer(metrics, "127.0.0.1", 0).start()
    port = server.port
    server.close()
    server.close()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))


def test_server_ipv6_loopback(metrics: Metrics) -> None:
    if not socket.has_ipv6:
        pytest.fail("this host has no IPv6 support; the test needs ::1")
    with MetricsServer(metrics, "::1", 0) as server:
        assert server.url.startswith("http://[::1]:")
        assert get(server.url + "/healthz")[0] == 200


def test_probe_command(metrics: Metrics, capsys: pytest.CaptureFixture[str]) -> None:
    with MetricsServer(metrics, "127.0.0.1", 0) as server:
        assert probe_main(["healthz", "--url", server.url + "/healthz"]) == 0
        assert probe_main(["readyz", "--url", server.url + "/readyz"]) == 1
    captured = capsys.readouterr()
    assert "HTTP 200" in captured.out
    assert "HTTP 503" in captured.err


def test_probe_command_port_from_environment(metrics: Metrics, monkeypatch: pytest.MonkeyPatch) -> None:
    with MetricsServer(metrics, "127.0.0.1", 0) as server:
        monkeypatch.setenv("TOKENSENTRY_METRICS__PORT", str(server.port))
        assert probe_main([]) == 0


def test_probe_command_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    assert probe_main(["--url", f"http://127.0.0.1:{port}/healthz", "--timeout", "2"]) == 1
    assert "request failed" in capsys.readouterr().err
