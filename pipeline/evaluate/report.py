"""The evaluation report: one JSON-ready dict, and its rendering as text tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from pipeline.evaluate.baselines import CROWDSEC_HTTP_SCENARIOS, DEFAULT_BAN_S
from pipeline.evaluate.evaluation import PIPELINE_SYSTEM, EvaluationResult
from pipeline.evaluate.scoring import SystemScore

SYSTEM_DESCRIPTIONS = {
    PIPELINE_SYSTEM: "the TokenSentry pipeline with the configured detectors and policy",
    "static_limit": "static per-subject rate limit (registry or plan limit) over tumbling windows, throttle for 600 s",
    "leaky_bucket": "per-client-IP leaky buckets like CrowdSec's "
    + ", ".join(scenario.name for scenario in CROWDSEC_HTTP_SCENARIOS)
    + f"; ban for {DEFAULT_BAN_S / 3600:g} h on overflow",
}


def build_report(result: EvaluationResult) -> dict:
    """Return the report as plain JSON types; times are event-time seconds after each label's start."""
    tracker = result.tracker
    benign_tokens = tracker.benign_tokens()
    total_s = result.seconds.get("total", 0.0)
    return {
        "input": result.data.description,
        "settings": {
            "grace_s": result.grace_s,
            "window_s": result.settings.window_s,
            "allowed_lateness_s": result.settings.allowed_lateness_s,
            "policy_version": result.policy_version,
            "enforcing_only": result.enforcing_only,
            "batch_seconds": result.batch_seconds,
            "sync_writes": result.sync_writes,
            "detectors": result.detectors,
        },
        "traffic": {
            "events": tracker.events,
            "dead_lettered": result.dead_lettered,
            "span_s": round(tracker.span_s, 3),
            "benign_tokens": benign_tokens,
            "attack_only_subjects": len(tracker.attributed()),
            "labels": len(result.index),
        },
        "labels": [_label_entry(result, number) for number in range(len(result.index))],
        "systems": {
            name: _system_entry(name, score, benign_tokens, tracker.span_s) for name, score in result.scores.items()
        },
        "throughput": {
            "elapsed_s": round(total_s, 3),
            "events_per_s": round(tracker.events / total_s, 1) if total_s > 0 else 0.0,
            "seconds": {name: round(value, 3) for name, value in result.seconds.items()},
            "pipeline_stage_seconds": {name: round(value, 3) for name, value in result.stage_seconds.items()},
        },
        "notes": list(result.notes),
    }


def _label_entry(result: EvaluationResult, number: int) -> dict:
    label = result.index.labels[number]
    systems = {}
    for name, score in result.scores.items():
        outcome = score.outcomes[number]
        systems[name] = {
            "caught": outcome.caught,
            "first_action_s": _round(outcome.first_action_s),
            "first_action_kind": outcome.first_action_kind or None,
            "first_detection_s": _round(outcome.first_detection_s),
            "actions": outcome.actions,
        }
    return {
        "label_id": label.label_id,
        "scenario": label.scenario,
        "kind": label.kind,
        "start": label.start,
        "end": label.end,
        "description": label.description,
        "systems": systems,
    }


def _system_entry(name: str, score: SystemScore, benign_tokens: int, span_s: float) -> dict:
    rate = score.fp_rate_per_1000_tokens_per_day(benign_tokens, span_s)
    caught = sum(outcome.caught for outcome in score.outcomes)
    return {
        "description": SYSTEM_DESCRIPTIONS.get(name, name),
        "labels_caught": caught,
        "labels": len(score.outcomes),
        "actions": score.actions,
        "detections": score.detections,
        "fp_actions": score.fp_actions,
        "fp_enforcing_actions": score.fp_enforcing_actions,
        "fp_subjects": len(score.fp_subjects),
        "fp_detections": score.fp_detections,
        "fp_actions_per_1000_tokens_per_day": None if rate is None else round(rate, 3),
        "fp_actions_by_kind": dict(sorted(score.fp_actions_by_kind.items())),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def render_text(report: dict, out: TextIO) -> None:
    """Print the report as two tables (labels x systems, false positives) and the throughput."""
    traffic = report["traffic"]
    settings = report["settings"]
    print(
        f"{traffic['events']:,} events over {traffic['span_s'] / 3600:.1f} h of event time, "
        f"{traffic['benign_tokens']:,} benign tokens, {traffic['labels']} labels; "
        f"grace {settings['grace_s']:g} s, policy {settings['policy_version']}",
        file=out,
    )
    print(file=out)
    print("Time from abuse start to first action (event-time seconds; '-' = not caught):", file=out)
    _print_table(_label_rows(report), out)
    print(file=out)
    print("False positives (actions that match no label):", file=out)
    _print_table(_false_positive_rows(report), out)
    print(file=out)
    print(_throughput_line(report["throughput"], bool(settings.get("sync_writes"))), file=out)
    for note in report["notes"]:
        print(f"note: {note}", file=out)


def _label_rows(report: dict) -> list[list[str]]:
    systems = list(report["systems"])
    rows = [["label", *systems, f"{PIPELINE_SYSTEM} detection"]]
    for entry in report["labels"]:
        cells = [entry["label_id"]]
        cells.extend(_action_cell(entry["systems"][system]) for system in systems)
        cells.append(_seconds(entry["systems"][PIPELINE_SYSTEM]["first_detection_s"]))
        rows.append(cells)
    totals = [f"{report['systems'][system]['labels_caught']}/{report['systems'][system]['labels']}" for system in systems]
    rows.append(["caught", *totals, ""])
    return rows


def _false_positive_rows(report: dict) -> list[list[str]]:
    rows = [["system", "actions", "fp actions", "fp enforcing", "fp subjects", "fp /1000 tokens/day", "fp detections"]]
    for system, entry in report["systems"].items():
        rate = entry["fp_actions_per_1000_tokens_per_day"]
        rows.append(
            [
                system,
                f"{entry['actions']:,}",
                f"{entry['fp_actions']:,}",
                f"{entry['fp_enforcing_actions']:,}",
                f"{entry['fp_subjects']:,}",
                "-" if rate is None else f"{rate:.2f}",
                f"{entry['fp_detections']:,}",
            ]
        )
    return rows


def _throughput_line(throughput: dict, sync_writes: bool) -> str:
    seconds = throughput["seconds"]
    where = "" if sync_writes else " on the writer thread, overlapping the pipeline"
    return (
        f"throughput: {throughput['events_per_s']:,.0f} events/s over {throughput['elapsed_s']:.1f} s "
        f"(input {seconds.get('input', 0):.1f} s, pipeline {seconds.get('pipeline', 0):.1f} s, "
        f"baselines {seconds.get('baselines', 0):.1f} s{where})"
    )


def _action_cell(outcome: dict) -> str:
    if not outcome["caught"]:
        return "-"
    return f"{outcome['first_action_kind']} {_seconds(outcome['first_action_s'])}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} s"


def _print_table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for number, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        print("  ".join(cells).rstrip(), file=out)
        if number == 0:
            print("  ".join("-" * width for width in widths), file=out)
