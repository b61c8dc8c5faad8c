"""The batch loop: the only module that calls every stage.

``Pipeline.process`` takes one ``LineBatch`` through the stages in order:

1. parse: raw lines -> rows + dead letters (``pipeline.parsers``);
2. identify: raw credentials -> keyed token ids, rows -> event columns;
3. window: events -> closed per-subject windows with features (late events flagged);
4. state: each window's subject -> its slot in the per-subject arrays;
5. detect: windows -> detections, each detector scoring then learning;
6. decide: detections -> actions under the policy;
7. sink: events, dead letters, windows, detections and actions to the audit
   store, then actions to the action sinks (published unless dry-run).

When ``process`` returns, every write of the batch is acknowledged; the
caller commits the batch's source positions only then (step 8). A crash
before the commit replays the batch: deterministic ids and the store's
deduplication make that replay leave no duplicate audit rows or actions,
which gives effectively-once results on top of at-least-once delivery.
"""

from __future__ import annotations

import gc
import logging
import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from detectors.base import DetectionContext, Detector
from pipeline.identity import TokenHasher, identify, scrub_text
from pipeline.parsers import LineParser
from pipeline.policy import Policy
from pipeline.sinks.actions import ActionSink
from pipeline.sinks.coalesce import CoalescedWrites
from pipeline.sinks.write_behind import WriteBehind
from pipeline.sources.base import LineBatch
from pipeline.state import SubjectIndex
from pipeline.windows import TumblingWindows, WindowBatch
from schemas.actions import Action
from schemas.deadletters import DeadLetter
from schemas.detections import Detection

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 2

# Collect the young generation after this many net allocations of container
# objects (CPython's default is 700). A 20,000-line batch allocates hundreds of
# thousands of short-lived tuples, so the default ran the collector hundreds of
# times per batch.
GC_YOUNG_THRESHOLD = 50_000


def prepare_gc_for_batches() -> None:
    """Freeze the objects built so far and collect young objects less often.

    Call it once after the pipeline is built, because the cyclic garbage
    collector never traverses frozen objects (modules, parsers, start-up
    state) again. On 500,000 lines written by ``benchmarks/bench_replay.py``
    it raised replay from about 73,000 to 82,000 events/s (2-vCPU AMD EPYC,
    one run each).
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
    logger.debug("garbage collector: %d objects frozen, young threshold %d", gc.get_freeze_count(), GC_YOUNG_THRESHOLD)


@dataclass(slots=True)
class RunStats:
    """Counters over a whole run. Invariant: lines_read == events_accepted + dead_lettered."""

    lines_read: int = 0
    bytes_read: int = 0
    events_accepted: int = 0
    events_already_stored: int = 0
    """Accepted events whose ids the store already held (a file replayed again); not written twice."""
    dead_lettered: int = 0
    late_events: int = 0
    windows: int = 0
    detections: int = 0
    actions: int = 0
    actions_published: int = 0
    detections_by_detector: dict[str, int] = field(default_factory=dict)
    actions_by_kind: dict[str, int] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    """Wall time spent in each stage id (parse, identify, window, detect, decide, sink)."""

    def add_time(self, stage: str, seconds: float) -> None:
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds


@dataclass(slots=True)
class BatchResult:
    """The output of one batch, for callers that publish or report it."""

    events: int
    dead_letters: list[DeadLetter]
    windows: WindowBatch
    detections: list[Detection]
    actions: list[Action]


class Pipeline:
    """Runs batches through parse, identify, window, detect, decide and sink.

    One ``Pipeline`` serves one ordered stream of batches (a replayed file or
    a set of Kafka partitions): windows and detector state are kept between
    calls.
    """

    def __init__(
        self,
        *,
        parser: LineParser,
        hasher: TokenHasher,
        windows: TumblingWindows,
        index: SubjectIndex,
        detectors: Sequence[Detector],
        context: DetectionContext,
        policy: Policy,
        store,
        action_sinks: Sequence[ActionSink] = (),
        dead_letter_sinks: Sequence = (),
        writer: WriteBehind | None = None,
    ) -> None:
        self.parser = parser
        self.hasher = hasher
        self.windows = windows
        self.index = index
        self.detectors = list(detectors)
        self.context = context
        self.policy = policy
        self.store = store
        self.action_sinks = list(action_sinks)
        self.dead_letter_sinks = list(dead_letter_sinks)
        self.writer = writer
        """With a writer, step 7 runs on its thread and writes are acknowledged at ``flush``."""
        # Only with a writer: without one, every write is acknowledged when ``process`` returns.
        self._coalesced = CoalescedWrites(store) if writer is not None else None
        self.stats = RunStats()
        for detector in self.detectors:
            detector.attach(index)

    def process(self, batch: LineBatch) -> BatchResult:
        """Run one batch through every stage.

        Without a writer all its writes are acknowledged on return; with one
        (replay) they are acknowledged once ``flush`` returns.
        """
        clock = time.perf_counter
        started = clock()
        # 1. parse
        chunk = self.parser.parse(batch.lines, batch.positions)
        dead_letters = [
            DeadLetter(
                source=batch.source,
                partition=batch.partition,
                offset=position,
                stage="parser",
                reason=scrub_text(reason),
                raw=scrub_text(raw),
                format=format_id,
            )
            for position, raw, reason, format_id in chunk.dead
        ]
        parsed = clock()
        self.stats.add_time("parse", parsed - started)
        # 2. identify
        events = identify(chunk, self.hasher, batch.source, batch.partition, batch.stream_id)
        identified = clock()
        self.stats.add_time("identify", identified - parsed)
        # 3. window
        closed = self.windows.add(events)
        self.stats.add_time("window", clock() - identified)
        result = self._detect_and_decide(closed, len(events["ts"]), dead_letters)
        # 7. sink
        self._write(events, result)
        self._count(batch, result)
        return result

    def checkpoint(self) -> bytes:
        """Serialize the learned state: open windows, subject slots, detector arrays, cooldowns.

        The blob is a pickle, so restore only blobs this project wrote to its
        own store or topic; never restore one from an untrusted source.
        """
        state = {
            "version": CHECKPOINT_VERSION,
            "windows": self.windows,
            "index": self.index,
            "detectors": self.detectors,
            "policy_state": self.policy.state(),
        }
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, blob: bytes) -> None:
        """Replace the learned state with a ``checkpoint`` blob of the same version."""
        state = pickle.loads(blob)  # noqa: S301 - only blobs written by checkpoint()
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(
                f"checkpoint version {state.get('version')!r} is not {CHECKPOINT_VERSION}; "
                "discard it and let the baselines relearn"
            )
        self.windows = state["windows"]
        self.index = state["index"]
        self.detectors = state["detectors"]
        self.policy.restore_state(state["policy_state"])

    def finish(self) -> BatchResult:
        """Close every open window (end of input) and process what they yield."""
        closed = self.windows.flush()
        result = self._detect_and_decide(closed, 0, [])
        self._write(None, result, drain=True)
        self._count(None, result)
        return result

    def _detect_and_decide(self, closed: WindowBatch, events: int, dead_letters: list[DeadLetter]) -> BatchResult:
        detections: list[Detection] = []
        actions: list[Action] = []
        if closed.size:
            started = time.perf_counter()
            # A changed registry file applies from this batch on.
            self.context.refresh()
            # 4. state
            closed.slots = self.index.assign(closed.keys["subject_id"], closed.keys["window_end"])
            # 5. detect
            for detector in self.detectors:
                detections.extend(detector.detect(closed, self.context))
            detected = time.perf_counter()
            self.stats.add_time("detect", detected - started)
            # 6. decide; the newest window end is the event time that ends expired throttles and blocks
            actions = self.policy.decide(detections, now=float(closed.keys["window_end"].max()))
            self.stats.add_time("decide", time.perf_counter() - detected)
            self.index.expire(float(closed.keys["window_end"].max()))
        return BatchResult(events=events, dead_letters=dead_letters, windows=closed, detections=detections, actions=actions)

    def flush(self) -> None:
        """Wait for every write handed to the writer, held windows and detections included, and raise the first failure."""
        if self.writer is not None:
            self.writer.submit(self._drain)
            self.writer.flush()

    def _write(self, events: dict[str, np.ndarray] | None, result: BatchResult, drain: bool = False) -> None:
        if self.writer is None:
            self._write_now(events, result)
        else:
            self.writer.submit(self._write_now, events, result, drain)

    def write_held(self) -> None:
        """Queue the insert of held windows and detections without waiting or raising.

        Replay calls it when a run stops early, on an interrupt or a failed
        write. The writer then runs what it has queued, the held rows
        included, before it closes. An earlier write failure is logged, not raised.
        """
        if self.writer is None or not self.writer.running:
            return
        try:
            self.writer.submit(self._drain)
        except Exception as error:  # noqa: BLE001 - the writer re-raises whatever its write raised
            logger.warning("held windows and detections were not written, because an earlier write failed: %s", error)

    def _drain(self) -> None:
        if self._coalesced is not None:
            started = time.perf_counter()
            self._coalesced.write_all()
            self.stats.add_time("sink", time.perf_counter() - started)

    def _write_now(self, events: dict[str, np.ndarray] | None, result: BatchResult, drain: bool = False) -> None:
        started = time.perf_counter()
        coalesced = self._coalesced
        if events is not None and len(events["ts"]):
            inserted = self.store.write_events(events)
            if isinstance(inserted, int):
                self.stats.events_already_stored += len(events["ts"]) - inserted
        if result.dead_letters:
            self.store.write_dead_letters(result.dead_letters)
            for sink in self.dead_letter_sinks:
                sink.publish(result.dead_letters)
        if result.windows.size:
            if coalesced is None:
                self.store.write_windows(result.windows.columns())
            else:
                coalesced.add_windows(result.windows.columns())
        if result.detections:
            if coalesced is None:
                self.store.write_detections(result.detections)
            else:
                coalesced.add_detections(result.detections)
        if coalesced is not None and (drain or result.actions):
            # An action's windows and detections are stored before the action itself.
            coalesced.write_all()
        if result.actions:
            live = [action for action in result.actions if not action.dry_run]
            shadow = [action for action in result.actions if action.dry_run]
            # Store first: an action on a topic always has its audit row.
            if live:
                self.store.write_actions(live, published=True)
                for sink in self.action_sinks:
                    sink.publish(live)
            if shadow:
                self.store.write_actions(shadow, published=False)
        elapsed = time.perf_counter() - started
        self.stats.add_time("sink", elapsed)
        logger.debug("batch written in %.3f s", elapsed)

    def _count(self, batch: LineBatch | None, result: BatchResult) -> None:
        stats = self.stats
        if batch is not None:
            stats.lines_read += len(batch)
            stats.bytes_read += batch.size_bytes
        stats.events_accepted += result.events
        stats.dead_lettered += len(result.dead_letters)
        stats.late_events = self.windows.late_events
        stats.windows += result.windows.size
        stats.detections += len(result.detections)
        stats.actions += len(result.actions)
        stats.actions_published += sum(1 for action in result.actions if not action.dry_run)
        for detection in result.detections:
            stats.detections_by_detector[detection.detector] = stats.detections_by_detector.get(detection.detector, 0) + 1
        for action in result.actions:
            stats.actions_by_kind[action.kind.value] = stats.actions_by_kind.get(action.kind.value, 0) + 1
