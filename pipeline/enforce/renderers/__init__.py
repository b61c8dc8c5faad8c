"""Renderers turn the decisions in force into one gateway's configuration.

A renderer has ``apply(decisions) -> bool``: it makes the gateway enforce
exactly ``decisions`` and returns True when the configuration changed. It
raises ``RenderError`` when the gateway rejects the new configuration and
keeps the previous one in force.
"""

from __future__ import annotations

from typing import Protocol

from pipeline.enforce.state import Decision
from pipeline.errors import TokenSentryError


class RenderError(TokenSentryError):
    """The gateway rejected the rendered configuration, or could not be reloaded."""

    retriable = True


class Renderer(Protocol):
    def apply(self, decisions: list[Decision]) -> bool: ...
