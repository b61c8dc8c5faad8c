#!/usr/bin/env bash
# Replay gateway logs on the embedded defaults (chDB store, no servers) and show the result.
# Replays the real public logs in ../shared/data/real when present, then one simulated
# hour of traffic with planted abuse (and its token registry and blocklist).
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
if [ ${#inputs[@]} -gt 0 ]; then
  echo "== replay of real public logs: ${inputs[*]}"
  "$BIN/tokensentry" replay "${inputs[@]}" --data-dir "$DATA_DIR" --actions "$DATA_DIR/actions-real.jsonl"
  echo
else
  echo "no real logs in ../shared/data/real; replaying simulated traffic only" >&2
fi

echo "== replay of one simulated hour: 300 tokens with planted abuse"
"$BIN/tokensentry" simulate --tokens 300 --duration 1h --seed 7 --out "$DATA_DIR/simulated.log" \
  --labels "$DATA_DIR/labels.jsonl" --registry "$DATA_DIR/registry.yaml" --blocklist "$DATA_DIR/blocklist.txt"
"$BIN/tokensentry" replay "$DATA_DIR/simulated.log" --data-dir "$DATA_DIR" --actions "$DATA_DIR/actions.jsonl" \
  --registry "$DATA_DIR/registry.yaml" --blocklist "$DATA_DIR/blocklist.txt"
echo
echo "== planted abuse (ground truth in $DATA_DIR/labels.jsonl)"
cut -c1-160 "$DATA_DIR/labels.jsonl" | sed 's/"description":/\n    /' | grep -o '"scenario":"[a-z_]*"\|"subject_ids":\["[^"]*"' | paste - - | sed 's/"scenario"://; s/"subject_ids":\[/  first subject /'

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
