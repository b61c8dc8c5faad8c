"""Options of one simulation run and the parsing of their command-line forms."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pipeline.durations import parse_duration
from pipeline.errors import ConfigError
from pipeline.simulate.scenarios import SCENARIO_NAMES

LOG_FORMATS: tuple[str, ...] = ("nginx", "kong")

DEFAULT_START = "2026-03-02T00:00:00Z"
"""A Monday, fixed so that output without --start is reproducible."""

MIN_TOKENS_FOR_SCENARIOS = 20
"""Scenarios need distinct tokens with steady habits; smaller populations have too few."""

MIN_DURATION_FOR_SCENARIOS_S = 600
MAX_TOKENS = 50_000_000
MAX_RATE_SCALE = 10_000.0


def parse_start(text: str) -> int:
    """Parse an ISO 8601 time (naive means UTC) into whole epoch seconds."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"invalid --start {text!r}; use an ISO 8601 time such as {DEFAULT_START}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return math.floor(moment.timestamp())


def parse_duration_seconds(text: str) -> int:
    """Parse ``--duration`` (``90s``, ``2h``, ``3d``, ``1w``) into whole seconds."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"invalid --duration: {exc}") from None
    return math.ceil(seconds)


def parse_scenarios(text: str) -> tuple[str, ...]:
    """Parse ``all``, ``none`` or a comma-separated list of scenario names.

    The result is in the canonical order of ``SCENARIO_NAMES``, whatever the
    order given, so two spellings of one selection produce the same output.
    """
    value = text.strip().lower()
    if value == "all":
        return SCENARIO_NAMES
    if value in ("none", ""):
        return ()
    requested = {name.strip() for name in value.split(",") if name.strip()}
    unknown = sorted(requested - set(SCENARIO_NAMES))
    if unknown:
        raise ConfigError(
            f"unknown scenario(s) {', '.join(unknown)} in --scenarios; "
            f"use all, none or a comma list of: {', '.join(SCENARIO_NAMES)}"
        )
    return tuple(name for name in SCENARIO_NAMES if name in requested)


@dataclass(frozen=True)
class SimulationOptions:
    """Everything that determines the simulated traffic.

    Two runs with equal options produce byte-identical output. Times are
    whole seconds since the Unix epoch (UTC).
    """

    tokens: int = 1000
    duration_s: int = 86_400
    start: int = field(default_factory=lambda: parse_start(DEFAULT_START))
    seed: int = 1
    log_format: str = "nginx"
    scenarios: tuple[str, ...] = SCENARIO_NAMES
    rate_scale: float = 1.0
    """Multiplier on every benign and abuse request rate (1.0 is the built-in volume)."""
    credential_in_query: bool = False
    """Send credentials as ``?api_key=`` in the request target instead of the X-API-Key header."""
    chunk_s: int | None = None
    """Event-time length of one generated chunk in seconds; None sizes it from the population's volume."""

    def __post_init__(self) -> None:
        if not 1 <= self.tokens <= MAX_TOKENS:
            raise ConfigError(f"--tokens {self.tokens} is out of range; use 1 to {MAX_TOKENS}")
        if self.duration_s < 1:
            raise ConfigError(f"--duration {self.duration_s}s is too short; use at least 1s")
        if self.seed < 0:
            raise ConfigError(f"--seed {self.seed} is negative; use an integer >= 0")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"invalid --format {self.log_format!r}; use one of: {', '.join(LOG_FORMATS)}")
        if not (0.0 < self.rate_scale <= MAX_RATE_SCALE):
            raise ConfigError(f"--rate-scale {self.rate_scale} is out of range; use a number > 0 and <= {MAX_RATE_SCALE:g}")
        if self.chunk_s is not None and not 1 <= self.chunk_s <= 3600:
            raise ConfigError(f"chunk length {self.chunk_s}s is out of range; use 1 to 3600 seconds")
        unknown = sorted(set(self.scenarios) - set(SCENARIO_NAMES))
        if unknown:
            raise ConfigError(f"unknown scenario(s) {', '.join(unknown)}; use names from: {', '.join(SCENARIO_NAMES)}")
        if self.scenarios and self.tokens < MIN_TOKENS_FOR_SCENARIOS:
            raise ConfigError(
                f"--tokens {self.tokens} is too small for abuse scenarios; "
                f"use --tokens {MIN_TOKENS_FOR_SCENARIOS} or more, or --scenarios none"
            )
        if self.scenarios and self.duration_s < MIN_DURATION_FOR_SCENARIOS_S:
            raise ConfigError(
                f"--duration {self.duration_s}s is too short for abuse scenarios; "
                f"use at least {MIN_DURATION_FOR_SCENARIOS_S}s, or --scenarios none"
            )

    @property
    def end(self) -> int:
        """End of the simulated event time (exclusive), epoch seconds."""
        return self.start + self.duration_s
