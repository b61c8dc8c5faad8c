"""The detector set: which detectors run, in which order, with which settings.

``DetectorSettings`` is the ``detectors`` section of the settings file:

.. code-block:: yaml

    detectors:
      disabled: [hst]              # ids to leave out; default: none
      country_lookup: iptocc       # 'log' (gateway field only) or 'iptocc'
      blocklist_file: /etc/tokensentry/blocklist.txt
      params:                      # constructor arguments per detector id
        ewma_rate: {threshold: 8, seasonal: true}
        credential_stuffing: {min_failing_subjects: 10}

Unknown detector ids and unknown constructor arguments are rejected with
the valid choices.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from detectors.base import Detector
from detectors.ewma import EwmaErrors, EwmaRate
from detectors.geo import build_country_lookup
from detectors.hst import HalfSpaceTreesDetector
from detectors.rate_limit import StaticRateLimit
from detectors.rules import RULES
from pipeline.errors import ConfigError

# Report order: static limits, baselines, the model, then the rules.
DETECTOR_CLASSES: dict[str, type[Detector]] = {
    cls.detector_id: cls for cls in (StaticRateLimit, EwmaRate, EwmaErrors, HalfSpaceTreesDetector, *RULES)
}


class DetectorSettings(BaseModel):
    """The detector set's settings: detectors left out and their constructor arguments. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")

    disabled: tuple[str, ...] = Field((), description="Detector ids to leave out.")
    country_lookup: Literal["log", "iptocc"] = Field(
        "log", description="Where countries come from: the gateway's field only, or also the iptocc package."
    )
    blocklist_file: Path | None = Field(None, description="CIDR blocklist file, reloaded when it changes.")
    params: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Constructor arguments by detector id.")


def build_detectors(settings: DetectorSettings | None = None) -> list[Detector]:
    """Return the configured detector set, in report order.

    Raises:
        ConfigError: an unknown detector id or constructor argument.
    """
    settings = settings or DetectorSettings()
    known = ", ".join(DETECTOR_CLASSES)
    for detector_id in (*settings.disabled, *settings.params):
        if detector_id not in DETECTOR_CLASSES:
            raise ConfigError(f"unknown detector id {detector_id!r} in detectors settings; use one of {known}")
    detectors = []
    for detector_id, cls in DETECTOR_CLASSES.items():
        if detector_id in settings.disabled:
            continue
        params = dict(settings.params.get(detector_id, {}))
        if cls.detector_id == "ip_blocklist" and settings.blocklist_file is not None:
            params.setdefault("path", settings.blocklist_file)
        detectors.append(_construct(cls, params))
    return detectors


def build_country_lookup_from(settings: DetectorSettings | None):
    """Return the window stage's country lookup for these settings (None: logged countries only)."""
    return build_country_lookup((settings or DetectorSettings()).country_lookup)


def _construct(cls: type[Detector], params: dict[str, Any]) -> Detector:
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ConfigError(
            f"detectors.params.{cls.detector_id}: unknown argument(s) {', '.join(unknown)}; "
            f"use {', '.join(sorted(accepted)) or 'none'}"
        )
    for name in ("factor", "min_count"):
        if isinstance(params.get(name), list):
            params[name] = tuple(params[name])
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"detectors.params.{cls.detector_id} is invalid: {exc}") from None
