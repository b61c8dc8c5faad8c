"""Simulated API-gateway traffic with labelled token abuse.

``tokensentry simulate`` writes it to files; other commands stream it
directly::

    from pipeline.simulate import SimulationOptions, iter_lines

    for block in iter_lines(SimulationOptions(tokens=5000, duration_s=3600, seed=7)):
        producer.send(block)  # newline-terminated lines, in event-time order

``Simulation`` also exposes the labels, registry records and blocklist of
the same run.
"""

from pipeline.simulate.engine import Chunk, Simulation, iter_lines
from pipeline.simulate.labels import Label
from pipeline.simulate.options import LOG_FORMATS, SimulationOptions, parse_duration_seconds, parse_scenarios, parse_start
from pipeline.simulate.scenarios import SCENARIO_NAMES

__all__ = [
    "LOG_FORMATS",
    "SCENARIO_NAMES",
    "Chunk",
    "Label",
    "Simulation",
    "SimulationOptions",
    "iter_lines",
    "parse_duration_seconds",
    "parse_scenarios",
    "parse_start",
]
