"""Webhook alerts: payload shapes, retries with backoff, per-subject rate limiting."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from pipeline.alerts import AlertRateLimiter, WebhookAlertSink, alert_payload
from schemas.actions import Action, ActionKind

T0 = 1_767_225_600.0


def action(subject="key:a", kind=ActionKind.ALERT, action_id="a1", dry_run=False):
    return Action(
        action_id=action_id,
        kind=kind,
        token_id=subject,
        subject=subject,
        issued_at=T0,
        expires_at=T0 + 600 if kind is ActionKind.THROTTLE else 0.0,
        limit_rps=5.0 if kind is ActionKind.THROTTLE else None,
        reason="request rate 40/s against a baseline of 4/s",
        rule="spike-alert",
        dry_run=dry_run,
    )


class Webhook:
    """A local HTTP server that records posted JSON bodies and responds with scripted statuses."""

    def __init__(self, statuses=()):
        self.bodies = []
        self.statuses = list(statuses)
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = webhook.statuses.pop(0) if webhook.statuses else 200
                if status == 200:
                    webhook.bodies.append(json.loads(body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/secret-token"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook():
    server = Webhook()
    yield server
    server.close()


def test_json_payload_carries_action():
    payload = alert_payload(action(), "json", suppressed_repeats=3)
    assert payload["action"]["action_id"] == "a1"
    assert payload["suppressed_repeats"] == 3
    assert "3 earlier alerts" in payload["text"]


def test_slack_payload_is_text_only():
    payload = alert_payload(action(kind=ActionKind.THROTTLE), "slack")
    assert list(payload) == ["text"]
    assert "throttle for key:a at 5 requests/s for 600 s" in payload["text"]


def test_sink_posts_to_webhook(webhook):
    sink = WebhookAlertSink(webhook.url, alert_format="slack")
    sink.publish([action()])
    sink.close()
    assert len(webhook.bodies) == 1
    assert webhook.bodies[0]["text"].startswith("TokenSentry alert for key:a")
    assert sink.stats.delivered == 1


def test_sink_retries_server_errors_with_backoff(caplog):
    server = Webhook(statuses=[503, 500])
    try:
        sink = WebhookAlertSink(server.url, retries=3, backoff_s=0.01)
        sink.publish([action()])
        sink.close()
    finally:
        server.close()
    assert len(server.bodies) == 1
    assert sink.stats.retries == 2
    assert "retry 1 of 3" in caplog.text
    assert "secret-token" not in caplog.text


def test_sink_gives_up_after_retries(caplog):
    server = Webhook(statuses=[500] * 10)
    try:
        sink = WebhookAlertSink(server.url, retries=1, backoff_s=0.01)
        sink.publish([action()])
        sink.close()
    finally:
        server.close()
    assert sink.stats.failed == 1
    assert "dropped after 2 attempts" in caplog.text


def test_client_error_not_retried():
    server = Webhook(statuses=[404])
    try:
        sink = WebhookAlertSink(server.url, retries=3, backoff_s=0.01)
        sink.publish([action()])
        sink.close()
    finally:
        server.close()
    assert sink.stats.retries == 0
    assert sink.stats.failed == 1


def test_repeats_rate_limited_per_subject(webhook):
    sink = WebhookAlertSink(webhook.url, min_interval_s=3600)
    sink.publish([action(action_id=f"a{i}") for i in range(5)] + [action(subject="key:b", action_id="b1")])
    sink.close()
    assert [body["action"]["subject"] for body in webhook.bodies] == ["key:a", "key:b"]
    assert sink.stats.suppressed == 4


def test_suppressed_count_reported_on_next_alert():
    now = [0.0]
    limiter = AlertRateLimiter(600.0, clock=lambda: now[0])
    assert limiter.admit("key:a") == 0
    now[0] = 10.0
    assert limiter.admit("key:a") is None
    assert limiter.admit("key:a") is None
    now[0] = 700.0
    assert limiter.admit("key:a") == 2


def test_kinds_and_dry_run_filtered(webhook):
    sink = WebhookAlertSink(webhook.url, kinds={ActionKind.REVOKE})
    sink.publish([action(), action(kind=ActionKind.REVOKE, dry_run=True), action(kind=ActionKind.REVOKE, action_id="r")])
    sink.close()
    assert [body["action"]["action_id"] for body in webhook.bodies] == ["r"]
