#!/usr/bin/env bash
# Replay gateway logs on the embedded defaults (chDB store, no servers) and show the result.
# Uses the real public logs in ../shared/data/real when present, else simulated traffic.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
DATA_DIR=${DEMO_DATA_DIR:-.tokensentry/demo}
mkdir -p "$DATA_DIR"

inputs=()
for file in ../shared/data/real/elastic_apache/apache_logs \
            ../shared/data/real/ddoser_nginx/access.log \
            ../shared/data/real/traefik_mixed/access.log; do
  [ -f "$file" ] && inputs+=("$file")
done
if [ ${#inputs[@]} -eq 0 ]; then
  echo "no real logs in ../shared/data/real; simulating one hour of traffic instead" >&2
  "$BIN/tokensentry" simulate --tokens 200 --duration 1h --seed 7 --out "$DATA_DIR/simulated.log"
  inputs=("$DATA_DIR/simulated.log")
fi

echo "== replay ${inputs[*]}"
"$BIN/tokensentry" replay "${inputs[@]}" --data-dir "$DATA_DIR" --actions "$DATA_DIR/actions.jsonl"

echo
echo "== actions by kind"
"$BIN/tokensentry" query --data-dir "$DATA_DIR" \
  "SELECT kind, count() AS actions, uniqExact(subject) AS subjects FROM actions FINAL GROUP BY kind ORDER BY actions DESC"
echo
echo "== top flagged subjects"
"$BIN/tokensentry" query --data-dir "$DATA_DIR" \
  "SELECT subject_id, detector, count() AS detections, round(max(score), 1) AS max_score FROM detections FINAL GROUP BY subject_id, detector ORDER BY detections DESC LIMIT 10"
echo
echo "actions written to $DATA_DIR/actions.jsonl; query the store with:"
echo "  $BIN/tokensentry query --data-dir $DATA_DIR \"SELECT ... FROM events FINAL ...\""
