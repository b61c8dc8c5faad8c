"""``--since`` values and UTC time formatting for the analyst commands.

A ``--since`` value is either a duration (``90m``, ``24h``, ``7d``) counted
back from the newest stored record the command looks at, or a UTC time in
ISO 8601 (``2026-03-02T10:00:00Z``). Counting back from the newest record,
not from the wall clock, keeps replays of old logs usable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from pipeline.durations import parse_duration
from pipeline.errors import ConfigError


@dataclass(frozen=True)
class Since:
    """A parsed ``--since`` value: ``span_s`` seconds back, or a fixed ``start_s``."""

    text: str
    span_s: float | None = None
    start_s: float | None = None

    def start(self, latest: float) -> float:
        """Return the start time in epoch seconds, given the newest stored time ``latest``."""
        if self.start_s is not None:
            return self.start_s
        return latest - (self.span_s or 0.0)

    def describe(self) -> str:
        if self.start_s is not None:
            return f"since {format_time(self.start_s)}"
        return f"the last {self.text}"


def parse_since(text: str, option: str = "--since") -> Since:
    """Parse a duration or an ISO 8601 time; a time without a zone is taken as UTC.

    Raises:
        ConfigError: ``text`` is neither; the message names ``option`` and the value.
    """
    try:
        return Since(text=text, span_s=parse_duration(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"invalid {option} {text!r}; use a duration such as 90m, 24h or 7d, "
            "or a UTC time such as 2026-03-02T10:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return Since(text=text, start_s=moment.timestamp())


def format_time(seconds: float) -> str:
    """Format epoch seconds as ``YYYY-MM-DD HH:MM:SSZ`` (UTC; milliseconds only when present)."""
    moment = datetime.fromtimestamp(seconds, UTC)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if moment.microsecond // 1000:
        text += f".{moment.microsecond // 1000:03d}"
    return text + "Z"


def format_clock(seconds: float) -> str:
    """Format epoch seconds as ``HH:MM:SSZ`` (UTC), for times on the same day as one already shown."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%H:%M:%SZ")


def iso_time(seconds: float) -> str:
    """Format epoch seconds as ISO 8601 UTC with milliseconds, for JSON output."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_span(seconds: float) -> str:
    """Format a duration in seconds as ``45s``, ``10m``, ``2h30m`` or ``3d4h``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s" if seconds else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"
