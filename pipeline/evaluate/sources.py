"""Inputs of an evaluation: a simulated labelled set generated in-process, or log files with a labels file.

A source yields *streams*: each stream is an iterator of ``LineBatch`` and
is one event-time sequence, so the pipeline closes its windows at the end
of each (``Pipeline.finish``), as ``tokensentry replay`` does per file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.evaluate.batching import EventTimeCutter
from pipeline.evaluate.labels import load_labels
from pipeline.registry import TokenRegistry
from pipeline.simulate import Label, Simulation, SimulationOptions
from pipeline.simulate.files import write_blocklist, write_registry
from pipeline.sources.base import LineBatch
from pipeline.sources.files import check_readable, read_batches
from schemas.registry import TokenRecord

logger = logging.getLogger(__name__)

SIMULATION_SOURCE = "simulation"


@dataclass
class EvaluationInput:
    """The labelled set: labels, the registry and blocklist files the pipeline reads, and the log streams."""

    labels: list[Label]
    registry: TokenRegistry
    registry_file: Path | None
    blocklist_file: Path | None
    log_format: str | None
    description: dict[str, object] = field(default_factory=dict)
    simulation: Simulation | None = None
    files: tuple[str, ...] = ()
    batch_lines: int = 20_000

    def streams(self, batch_seconds: float | None = None) -> Iterator[Iterator[LineBatch]]:
        """Yield one batch iterator per event-time stream.

        With ``batch_seconds``, batches are also cut where event time crosses
        a multiple of it (see ``EventTimeCutter``).
        """
        if self.simulation is not None:
            streams: list[Iterable[LineBatch]] = [simulated_batches(self.simulation, self.batch_lines)]
        else:
            streams = [read_batches(path, self.batch_lines) for path in self.files]
        for stream in streams:
            if batch_seconds:
                yield EventTimeCutter(batch_seconds, self.log_format).cut_all(stream)
            else:
                yield iter(stream)


def simulated_input(options: SimulationOptions, work_dir: Path, batch_lines: int) -> EvaluationInput:
    """Set up a simulation and write its registry and blocklist under ``work_dir``; the traffic streams later."""
    simulation = Simulation(options)
    registry_file = work_dir / "registry.yaml"
    blocklist_file = work_dir / "blocklist.txt"
    write_registry(str(registry_file), simulation.registry_records())
    write_blocklist(str(blocklist_file), simulation.blocklist())
    return EvaluationInput(
        labels=simulation.labels,
        registry=TokenRegistry.from_records(TokenRecord.model_validate(record) for record in simulation.registry_records()),
        registry_file=registry_file,
        blocklist_file=blocklist_file,
        log_format=None,
        description={
            "kind": "simulation",
            "tokens": options.tokens,
            "duration_s": options.duration_s,
            "start": options.start,
            "seed": options.seed,
            "scenarios": list(options.scenarios),
            "rate_scale": options.rate_scale,
            "format": options.log_format,
        },
        simulation=simulation,
        batch_lines=batch_lines,
    )


def file_input(
    files: list[str],
    labels_file: Path,
    *,
    registry_file: Path | None,
    blocklist_file: Path | None,
    log_format: str | None,
    batch_lines: int,
) -> EvaluationInput:
    """Check the log files and read the labels and registry; the logs stream later."""
    for path in files:
        if path == "-":
            raise ConfigError("evaluate reads log files, not stdin; pass file paths to --access-log")
        check_readable(path)
    if blocklist_file is not None and not blocklist_file.is_file():
        raise ConfigError(f"blocklist file {blocklist_file} not found; check --blocklist")
    registry = TokenRegistry.load(registry_file) if registry_file is not None else TokenRegistry()
    return EvaluationInput(
        labels=load_labels(labels_file),
        registry=registry,
        registry_file=registry_file,
        blocklist_file=blocklist_file,
        log_format=log_format,
        description={
            "kind": "files",
            "logs": list(files),
            "labels": str(labels_file),
            "registry": str(registry_file) if registry_file else None,
            "blocklist": str(blocklist_file) if blocklist_file else None,
        },
        files=tuple(files),
        batch_lines=batch_lines,
    )


def simulated_batches(simulation: Simulation, batch_lines: int) -> Iterator[LineBatch]:
    """Yield the simulation's lines in batches of ``batch_lines`` lines (the last may be shorter), numbered from 1.

    Only the chunk being generated and the batch being filled are in memory.
    """
    lines: list[bytes] = []
    first_line = 1
    for block in simulation.iter_lines():
        lines.extend(block.split(b"\n")[:-1])
        while len(lines) >= batch_lines:
            yield _numbered_batch(lines[:batch_lines], first_line)
            first_line += batch_lines
            lines = lines[batch_lines:]
    if lines:
        yield _numbered_batch(lines, first_line)


def _numbered_batch(lines: list[bytes], first_line: int) -> LineBatch:
    return LineBatch(
        source=SIMULATION_SOURCE,
        partition=-1,
        lines=lines,
        positions=list(range(first_line, first_line + len(lines))),
        size_bytes=sum(len(line) + 1 for line in lines),
    )
