"""Labelled abuse benchmark: the pipeline against two baselines on the same events.

``tokensentry evaluate`` runs the TokenSentry pipeline in-process over a
labelled set: simulated on the fly, or log files with a labels file. It
taps the parsed events for two baselines, a static rate limit and
CrowdSec-style leaky buckets. The report states per label whether each
system acted and how long after the abuse started (in event time), and
counts each system's false positives on benign traffic.
"""

from pipeline.evaluate.baselines import (
    CROWDSEC_HTTP_SCENARIOS,
    BucketScenario,
    LeakyBucketBaseline,
    StaticLimitBaseline,
    SubjectLimits,
    run_buckets,
)
from pipeline.evaluate.evaluation import Evaluation, EvaluationResult
from pipeline.evaluate.labels import LabelIndex, load_labels
from pipeline.evaluate.report import build_report, render_text
from pipeline.evaluate.scoring import ACTION, DETECTION, Finding, Scorer, SystemScore
from pipeline.evaluate.sources import EvaluationInput, file_input, simulated_input

__all__ = [
    "ACTION",
    "CROWDSEC_HTTP_SCENARIOS",
    "DETECTION",
    "BucketScenario",
    "Evaluation",
    "EvaluationInput",
    "EvaluationResult",
    "Finding",
    "LabelIndex",
    "LeakyBucketBaseline",
    "Scorer",
    "StaticLimitBaseline",
    "SubjectLimits",
    "SystemScore",
    "build_report",
    "file_input",
    "load_labels",
    "render_text",
    "run_buckets",
    "simulated_input",
]
