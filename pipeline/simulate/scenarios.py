"""The catalogue of labelled abuse scenarios and their setup for one run."""

from __future__ import annotations

import numpy as np

from pipeline.simulate.client_abuse import BlocklistedNetwork, BruteForce, CredentialStuffing
from pipeline.simulate.population import Population
from pipeline.simulate.profiles import ClientProfiles
from pipeline.simulate.scenario_base import Scenario, ScenarioContext
from pipeline.simulate.token_abuse import ExpiredToken, LeakedToken, ScopeProbing, SlowScraping, SpamBurst

STREAM_SCENARIO_SETUP = 3
STREAM_SCENARIO_CHUNK = 100
"""Chunk streams of scenario ``i`` use id ``STREAM_SCENARIO_CHUNK + i``."""

# Canonical order: setup runs in this order and output lists labels in it.
SCENARIO_CLASSES: tuple[type[Scenario], ...] = (
    SpamBurst,
    SlowScraping,
    CredentialStuffing,
    BruteForce,
    LeakedToken,
    ScopeProbing,
    ExpiredToken,
    BlocklistedNetwork,
)
SCENARIO_NAMES: tuple[str, ...] = tuple(cls.name for cls in SCENARIO_CLASSES)


def build_scenarios(
    population: Population,
    profiles: ClientProfiles,
    *,
    start: int,
    end: int,
    seed: int,
    rate_scale: float,
    selected: tuple[str, ...],
) -> list[tuple[int, Scenario]]:
    """Set up the selected scenarios and return them with their stream numbers.

    Every scenario is set up, selected or not, each from its own random
    stream, so a scenario picks the same tokens, window and clients whatever
    else is selected. Only the selected ones are returned; with none
    selected nothing is set up, so tiny populations need no spare tokens.
    """
    if not selected:
        return []
    context = ScenarioContext(
        population=population, profiles=profiles, start=start, end=end, seed=seed, rate_scale=rate_scale
    )
    chosen: list[tuple[int, Scenario]] = []
    for number, scenario_class in enumerate(SCENARIO_CLASSES):
        rng = np.random.default_rng([seed, STREAM_SCENARIO_SETUP, number])
        scenario = scenario_class(context, rng)
        if scenario.name in selected:
            chosen.append((number, scenario))
    return chosen
