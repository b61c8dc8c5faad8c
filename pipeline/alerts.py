"""Alert delivery to a webhook: plain JSON, or the Slack-compatible ``{"text": ...}`` shape.

``WebhookAlertSink`` is an action sink (``pipeline.sinks.actions.ActionSink``)
for the runner's live actions. ``publish`` only queues. A background thread
posts each alert with a timeout and retries with exponential backoff, so a
slow or failing webhook never stalls the pipeline. Alerts are best effort:
an alert that still fails after its retries is logged and dropped, and
``publish`` never raises for delivery failures.

Repeats are rate-limited per subject: at most one alert per subject every
``min_interval_s`` seconds. The repeats in between are counted and the next
alert for the subject reports how many were suppressed.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pipeline import __version__
from schemas.actions import Action, ActionKind

logger = logging.getLogger(__name__)

AlertFormat = Literal["json", "slack"]
DEFAULT_ALERT_KINDS = frozenset(
    {ActionKind.ALERT, ActionKind.THROTTLE, ActionKind.REVOKE, ActionKind.ROTATE, ActionKind.BLOCK}
)
# HTTP statuses worth retrying: rate limiting and server-side failures.
RETRIABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(slots=True)
class AlertStats:
    """Counters over the sink's lifetime."""

    queued: int = 0
    delivered: int = 0
    failed: int = 0
    suppressed: int = 0
    dropped: int = 0
    retries: int = 0


def alert_text(action: Action, suppressed_repeats: int = 0) -> str:
    """Return a one-paragraph, human-readable summary of an action."""
    issued = datetime.fromtimestamp(action.issued_at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    parts = [f"TokenSentry {action.kind.value} for {action.subject}"]
    if action.account:
        parts.append(f"(account {action.account})")
    if action.limit_rps is not None:
        parts.append(f"at {action.limit_rps:g} requests/s")
    if action.expires_at:
        parts.append(f"for {action.expires_at - action.issued_at:.0f} s")
    text = " ".join(parts) + f", issued {issued} by rule {action.rule or '-'}: {action.reason}"
    if suppressed_repeats:
        text += f" ({suppressed_repeats} earlier alerts for this subject were suppressed)"
    return text


def alert_payload(action: Action, alert_format: AlertFormat, suppressed_repeats: int = 0) -> dict[str, Any]:
    """Return the JSON body posted for ``action``."""
    text = alert_text(action, suppressed_repeats)
    if alert_format == "slack":
        return {"text": text}
    return {
        "type": "tokensentry.action",
        "text": text,
        "suppressed_repeats": suppressed_repeats,
        "action": action.model_dump(mode="json"),
    }


class AlertRateLimiter:
    """Allows one alert per subject every ``min_interval_s`` seconds and counts the rest."""

    def __init__(self, min_interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.min_interval_s = min_interval_s
        self.clock = clock
        self._last_sent: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def admit(self, subject: str) -> int | None:
        """Return the count of suppressed repeats to report when an alert may go out, else None."""
        now = self.clock()
        last = self._last_sent.get(subject)
        if last is not None and now - last < self.min_interval_s:
            self._suppressed[subject] = self._suppressed.get(subject, 0) + 1
            return None
        self._last_sent[subject] = now
        if len(self._last_sent) > 100_000:
            self._forget_before(now - self.min_interval_s)
        return self._suppressed.pop(subject, 0)

    def _forget_before(self, cutoff: float) -> None:
        self._last_sent = {subject: sent for subject, sent in self._last_sent.items() if sent >= cutoff}


class WebhookAlertSink:
    """Posts alerts for selected action kinds to a webhook URL from a background thread."""

    sink_id = "webhook"

    def __init__(
        self,
        url: str,
        *,
        alert_format: AlertFormat = "json",
        kinds: Iterable[ActionKind] = DEFAULT_ALERT_KINDS,
        min_interval_s: float = 600.0,
        timeout_s: float = 5.0,
        retries: int = 3,
        backoff_s: float = 1.0,
        queue_size: int = 1000,
    ) -> None:
        if alert_format not in ("json", "slack"):
            raise ValueError(f"unknown alert format {alert_format!r}; use 'json' or 'slack'")
        self.url = url
        self.alert_format = alert_format
        self.kinds = frozenset(kinds)
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.stats = AlertStats()
        self.limiter = AlertRateLimiter(min_interval_s)
        self._endpoint = _mask_url(url)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="alert-webhook", daemon=True)
        self._thread.start()

    def publish(self, actions: list[Action]) -> None:
        """Queue alerts for ``actions`` of the configured kinds; never blocks on the network."""
        for action in actions:
            if action.kind not in self.kinds or action.dry_run:
                continue
            suppressed = self.limiter.admit(action.subject)
            if suppressed is None:
                self.stats.suppressed += 1
                continue
            try:
                self._queue.put_nowait(alert_payload(action, self.alert_format, suppressed))
                self.stats.queued += 1
            except queue.Full:
                self.stats.dropped += 1
                if self.stats.dropped in (1, 10, 100) or self.stats.dropped % 1000 == 0:
                    logger.warning("alert queue full: %d alerts dropped so far (webhook %s)", self.stats.dropped, self._endpoint)

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued, waiting at most ``timeout_s`` seconds, then stop the thread."""
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            logger.warning("alert queue still full at close; %d alerts not delivered", self._queue.qsize())
            return
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            logger.warning("alert delivery did not finish within %.0f s; %d alerts not delivered", timeout_s, self._queue.qsize())

    def _run(self) -> None:
        while True:
            payload = self._queue.get()
            if payload is None:
                return
            self.deliver(payload)

    def deliver(self, payload: dict[str, Any]) -> bool:
        """Post one payload, retrying with exponential backoff; return True once accepted (2xx)."""
        body = json.dumps(payload).encode("utf-8")
        request_headers = {"Content-Type": "application/json", "User-Agent": f"tokensentry/{__version__}"}
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.url, data=body, headers=request_headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 - URL from settings
                    response.read()
                self.stats.delivered += 1
                return True
            except urllib.error.HTTPError as exc:
                error = f"HTTP {exc.code}"
                retriable = exc.code in RETRIABLE_STATUSES
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                error = str(getattr(exc, "reason", exc))
                retriable = True
            if not retriable or attempt == self.retries:
                break
            delay = self.backoff_s * 2**attempt
            self.stats.retries += 1
            logger.warning(
                "alert webhook %s failed (%s); retry %d of %d in %.1f s", self._endpoint, error, attempt + 1, self.retries, delay
            )
            time.sleep(delay)
        self.stats.failed += 1
        logger.error("alert webhook %s failed (%s); alert dropped after %d attempts", self._endpoint, error, attempt + 1)
        return False


def _mask_url(url: str) -> str:
    """Return scheme and host only: webhook paths often embed a secret (Slack does)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}/..."
