"""Replay throughput end to end and per stage, on simulated gateway traffic.

Writes the traffic of ``tokensentry simulate --tokens N --duration D --seed 1``
(NGINX lines with the labelled abuse scenarios) to a file once, then runs
``tokensentry replay FILE --json`` ``--repeat`` times, each in a child
process on a fresh embedded chDB store. From each replay summary it takes

* end to end: ``events_per_s`` (accepted events over the wall time of the
  whole command, store start-up and migrations included);
* per stage: accepted events divided by the stage's wall time in
  ``stage_seconds`` (parse, identify, window, detect, decide, and sink,
  which writes events, windows, detections and actions to the store), and
  for detect and decide also closed windows per second;
* the share of each stage in the sum of the stage times.

By default replay writes to the store on a background thread while it
parses the next batch, so the sink's time overlaps the other stages and
the stage times add up to more than the wall time. ``--sync-writes``
passes replay's option of the same name, which writes each batch before
parsing the next; then the stages run one after another.

Prints medians over the repeats, the load averages (``os.getloadavg``)
before and after every replay, and the replay's peak RSS.

Usage: .venv/bin/python benchmarks/bench_throughput.py [--tokens 10000] [--duration 2h] [--repeat 3] [--sync-writes] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
STAGES = ("parse", "identify", "window", "detect", "decide", "sink")
WINDOW_STAGES = ("detect", "decide")
MIN_RATE_SECONDS = 0.05
PEAK_RSS_PROBE = (
    "import resource, sys, json; from pipeline.cli import main; code = main(sys.argv[1:]); "
    "print(json.dumps({'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), file=sys.stderr); "
    "sys.exit(code)"
)


def load_averages() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def simulate(path: Path, tokens: int, duration: str) -> int:
    """Write the simulated log once, as ``tokensentry simulate --seed 1`` does; return its line count."""
    from pipeline.simulate import SimulationOptions, iter_lines, parse_duration_seconds

    options = SimulationOptions(tokens=tokens, duration_s=parse_duration_seconds(duration), seed=1)
    lines = 0
    with path.open("wb") as out:
        for block in iter_lines(options):
            out.write(block)
            lines += block.count(b"\n")
    return lines


def replay(path: Path, data_dir: Path, sync_writes: bool) -> dict:
    """Run ``tokensentry replay --json`` on a fresh store in a child process; return its summary and peak RSS."""
    shutil.rmtree(data_dir, ignore_errors=True)
    command = [sys.executable, "-c", PEAK_RSS_PROBE, "replay", str(path), "--data-dir", str(data_dir), "--json", "--no-progress"]
    if sync_writes:
        command.append("--sync-writes")
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    summary.update(json.loads(done.stderr.strip().splitlines()[-1]))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=10_000, help="simulated tokens (default 10000)")
    parser.add_argument("--duration", default="2h", help="simulated event time (default 2h)")
    parser.add_argument("--repeat", type=int, default=3, help="replays; medians are printed (default 3)")
    parser.add_argument("--sync-writes", action="store_true", help="pass --sync-writes to replay (see above)")
    parser.add_argument("--keep", type=Path, help="work directory to keep (default: a temporary one)")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="tokensentry-bench-throughput-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / f"simulated-{args.tokens}-{args.duration}.log"
    if not log.exists():
        print(f"simulating {args.tokens:,} tokens for {args.duration} into {log}", file=sys.stderr)
    lines = simulate(log, args.tokens, args.duration) if not log.exists() else sum(1 for _ in log.open("rb"))

    summaries = []
    for attempt in range(args.repeat):
        before = load_averages()
        summary = replay(log, work / "store", args.sync_writes)
        summaries.append(summary)
        print(
            f"run {attempt + 1}: {summary['events_per_s']:,.0f} events/s end to end; "
            f"load averages before {before}, after {load_averages()}",
            file=sys.stderr,
        )

    def median(values) -> float:
        return statistics.median(list(values))

    last = summaries[-1]
    print(f"store writes: {'synchronous (--sync-writes)' if args.sync_writes else 'background thread, overlapping the stages'}")
    print(f"input: {lines:,} lines ({log.stat().st_size / 2**20:,.0f} MiB), {args.tokens:,} simulated tokens, {args.duration}")
    print(
        f"last replay: {last['events_accepted']:,} events, {last['windows']:,} windows, "
        f"{last['detections']:,} detections, {last['actions']:,} actions, {last['dead_lettered']:,} dead-lettered"
    )
    print(f"end to end (replay --json events_per_s): median {median(s['events_per_s'] for s in summaries):,.0f} events/s")
    print(f"replay peak RSS: median {median(s['peak_rss_mib'] for s in summaries):,.0f} MiB")
    print(f"{'stage':<10}{'seconds':>9}{'events/s':>12}{'windows/s':>12}{'share':>8}")
    totals = [sum(s["stage_seconds"].get(stage, 0.0) for stage in STAGES) for s in summaries]
    for stage in STAGES:
        seconds = [s["stage_seconds"].get(stage, 0.0) for s in summaries]
        share = median(t / total for t, total in zip(seconds, totals, strict=True))
        if median(seconds) < MIN_RATE_SECONDS:
            # replay rounds stage times to milliseconds, so a rate computed from a few of them is noise.
            print(f"{stage:<10}{median(seconds):>9.3f}{'-':>12}{'-':>12}{share:>8.0%}")
            continue
        events_rate = median(s["events_accepted"] / t for s, t in zip(summaries, seconds, strict=True) if t > 0)
        windows = ""
        if stage in WINDOW_STAGES:
            windows = f"{median(s['windows'] / t for s, t in zip(summaries, seconds, strict=True) if t > 0):,.0f}"
        print(f"{stage:<10}{median(seconds):>9.2f}{events_rate:>12,.0f}{windows:>12}{share:>8.0%}")
    outside = median(s["elapsed_s"] - total for s, total in zip(summaries, totals, strict=True))
    if outside >= 0:
        print(f"wall time outside the stages (reading, store start-up, bookkeeping): median {outside:.1f} s per replay")
    else:
        print(f"the stage times add up to {-outside:.1f} s more than the wall time (median), because the sink overlaps")
    print(f"load averages at the end: {load_averages()}")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
