"""Run the pipeline and both baselines over one labelled set and score them against the labels."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from pipeline.assemble import load_policy_config, open_store
from pipeline.config import Settings
from pipeline.evaluate.baselines import LeakyBucketBaseline, StaticLimitBaseline, SubjectLimits
from pipeline.evaluate.labels import IP_PREFIX, LabelIndex
from pipeline.evaluate.scoring import ACTION, DETECTION, Finding, Scorer, SystemScore
from pipeline.evaluate.sources import EvaluationInput
from pipeline.evaluate.traffic import TrafficTracker
from pipeline.evaluate.wiring import TappedStore, build_evaluation_pipeline, with_input_files
from pipeline.policy import PolicyConfig
from pipeline.registry import TokenRegistry
from pipeline.runner import BatchResult, Pipeline
from pipeline.sinks.write_behind import WriteBehind
from schemas.actions import Action, ActionKind
from schemas.detections import Detection

logger = logging.getLogger(__name__)

PIPELINE_SYSTEM = "tokensentry"
LIFTING_KINDS = frozenset({ActionKind.RESTORE, ActionKind.UNBLOCK})
_PROGRESS_INTERVAL_S = 1.0


@dataclass
class EvaluationResult:
    """Everything the report needs: scores per system, traffic facts, timings and notes."""

    scores: dict[str, SystemScore]
    tracker: TrafficTracker
    index: LabelIndex
    data: EvaluationInput
    settings: Settings
    grace_s: float
    enforcing_only: bool
    batch_seconds: float | None
    detectors: list[str]
    policy_version: str
    dry_run_actions: int
    dead_lettered: int
    stage_seconds: dict[str, float]
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sync_writes: bool = False


def detection_finding(detection: Detection) -> Finding:
    """Reduce a pipeline detection to a ``Finding``; ``ip:`` subjects also name their address."""
    network = detection.client_ip
    if not network and detection.subject_id.startswith(IP_PREFIX):
        network = detection.subject_id[len(IP_PREFIX) :]
    return Finding(
        DETECTION,
        detection.subject_id,
        network,
        detection.window_start,
        detection.window_end,
        detection.window_end,
        detection.detector,
    )


def action_finding(action: Action, window_s: float) -> Finding:
    """Reduce a pipeline action to a ``Finding`` spanning the windows of its reasons.

    An action whose reasons carry no window spans the window that ends at
    ``issued_at``.
    """
    starts = [reason.window_start for reason in action.reasons if reason.window_start is not None]
    ends = [reason.window_end for reason in action.reasons if reason.window_end is not None]
    start = min(starts) if starts else action.issued_at - window_s
    end = max(ends) if ends else action.issued_at
    network = "" if action.token_id else action.subject
    return Finding(ACTION, action.token_id, network, start, end, action.issued_at, action.kind.value)


class Evaluation:
    """One evaluation run: stream the input once through the pipeline, tapping its events for the baselines."""

    def __init__(
        self,
        settings: Settings,
        data: EvaluationInput,
        *,
        grace_s: float,
        enforcing_only: bool = False,
        batch_seconds: float | None = None,
        sync_writes: bool = False,
        show_progress: bool = False,
    ) -> None:
        self.data = data
        self.batch_seconds = batch_seconds
        self.sync_writes = sync_writes
        self.grace_s = grace_s
        self.enforcing_only = enforcing_only
        self.show_progress = show_progress
        self.settings = with_input_files(settings, data.registry_file, data.blocklist_file)
        self.notes: list[str] = []

        self.index = LabelIndex(data.labels)
        self.tracker = TrafficTracker(self.index)
        policy_config = load_policy_config(self.settings)
        self.policy_version = policy_config.version
        self.static_limit = self._static_limit(policy_config)
        self.leaky_bucket = LeakyBucketBaseline()

        self.findings: list[Finding] = []
        self.dry_run_actions = 0
        self.seconds = {"input": 0.0, "pipeline": 0.0, "baselines": 0.0}
        self._last_progress = 0.0

    def _static_limit(self, policy_config: PolicyConfig) -> StaticLimitBaseline:
        """Return the static-limit baseline with the limits the pipeline's ``rate_limit`` detector uses."""
        registry = self.data.registry
        if self.data.registry_file is None and self.settings.registry_file is not None:
            # The pipeline reads the registry the settings name, so the static limit must read it too.
            registry = TokenRegistry.load(self.settings.registry_file)
        limits = SubjectLimits(
            registry,
            default_rps=policy_config.default_limit_rps,
            client_rps=policy_config.client_limit_rps,
            plan_limits_rps=policy_config.plan_limits_rps,
        )
        return StaticLimitBaseline(
            limits, window_s=self.settings.window_s, allowed_lateness_s=self.settings.allowed_lateness_s
        )

    def run(self) -> EvaluationResult:
        """Stream every batch through the pipeline and the baselines, then score all findings."""
        started = time.perf_counter()
        store = open_store(self.settings)
        # As in replay, a background writer overlaps store writes, and with them the baselines, with parsing.
        writer = None if self.sync_writes else WriteBehind(max_pending=2)
        pipeline: Pipeline | None = None
        try:
            tapped = TappedStore(store, self._observe_events)
            pipeline = build_evaluation_pipeline(
                self.settings, store=tapped, log_format=self.data.log_format, writer=writer
            )
            for stream in self.data.streams(self.batch_seconds):
                self._run_stream(pipeline, stream)
            if writer is not None:
                writer.close()
        finally:
            if writer is not None:
                if pipeline is not None:
                    pipeline.write_held()
                writer.close(flush=False)
            store.close()
        self._finish_progress(pipeline)
        self.leaky_bucket.finish()
        self.seconds["total"] = time.perf_counter() - started
        return self._score(pipeline)

    def _run_stream(self, pipeline: Pipeline, stream: Iterable) -> None:
        clock = time.perf_counter
        iterator = iter(stream)
        while True:
            began = clock()
            batch = next(iterator, None)
            self.seconds["input"] += clock() - began
            if batch is None:
                break
            began = clock()
            result = pipeline.process(batch)
            self.seconds["pipeline"] += clock() - began
            self._collect(result)
            self._progress(pipeline)
        began = clock()
        self._collect(pipeline.finish())
        self.seconds["pipeline"] += clock() - began
        # The pipeline closed every open window at the end of the stream. The static limit does the same,
        # after the writer has handed it the stream's last events.
        pipeline.flush()
        self.static_limit.finish()

    def _observe_events(self, events: dict[str, np.ndarray]) -> None:
        # Runs where the pipeline writes events: inside Pipeline.process with synchronous writes, so
        # its time is taken out of the pipeline's share, else on the writer thread, in batch order.
        began = time.perf_counter()
        self.tracker.observe(events)
        self.static_limit.observe(events)
        self.leaky_bucket.observe(events)
        spent = time.perf_counter() - began
        self.seconds["baselines"] += spent
        if self.sync_writes:
            self.seconds["pipeline"] -= spent

    def _collect(self, result: BatchResult) -> None:
        window_s = self.settings.window_s
        self.findings.extend(detection_finding(detection) for detection in result.detections)
        for action in result.actions:
            if action.kind in LIFTING_KINDS:
                continue
            self.dry_run_actions += int(action.dry_run)
            self.findings.append(action_finding(action, window_s))

    def _score(self, pipeline: Pipeline) -> EvaluationResult:
        attributed = self.tracker.attributed()
        scores = {}
        for system, findings in (
            (PIPELINE_SYSTEM, self.findings),
            (StaticLimitBaseline.name, self.static_limit.findings),
            (LeakyBucketBaseline.name, self.leaky_bucket.findings),
        ):
            scorer = Scorer(
                system, self.index, grace_s=self.grace_s, attributed=attributed, enforcing_only=self.enforcing_only
            )
            scorer.add_all(findings)
            scores[system] = scorer.score
        stage_seconds = dict(getattr(pipeline.stats, "stage_seconds", {}))
        if "sink" in stage_seconds:
            # The baselines run inside the store tap, so the pipeline timed them as part of its sink stage.
            stage_seconds["sink"] = max(0.0, stage_seconds["sink"] - self.seconds["baselines"])
        if self.dry_run_actions:
            self.notes.append(f"{self.dry_run_actions} tokensentry actions were dry-run or allowlisted and are counted")
        return EvaluationResult(
            scores=scores,
            tracker=self.tracker,
            index=self.index,
            data=self.data,
            settings=self.settings,
            grace_s=self.grace_s,
            enforcing_only=self.enforcing_only,
            batch_seconds=self.batch_seconds,
            detectors=[detector.detector_id for detector in pipeline.detectors],
            policy_version=self.policy_version,
            dry_run_actions=self.dry_run_actions,
            dead_lettered=pipeline.stats.dead_lettered,
            stage_seconds=stage_seconds,
            seconds=dict(self.seconds),
            notes=self.notes,
            sync_writes=self.sync_writes,
        )

    def _progress(self, pipeline: Pipeline) -> None:
        if not self.show_progress:
            return
        now = time.perf_counter()
        if now - self._last_progress < _PROGRESS_INTERVAL_S:
            return
        self._last_progress = now
        sys.stderr.write(
            f"\r{pipeline.stats.lines_read:>12,} lines  {self.tracker.span_s / 3600:>7.1f} h of event time  "
            f"{len(self.findings):,} tokensentry findings"
        )
        sys.stderr.flush()

    def _finish_progress(self, pipeline: Pipeline) -> None:
        if self.show_progress:
            self._last_progress = 0.0
            self._progress(pipeline)
            sys.stderr.write("\n")
