#!/usr/bin/env bash
# Runs the benchmarks (all, or the ones named) and prints one table of figure, value, goal and met or missed.
# Needs a Docker Engine and the images, as the benchmarks do. Never run by .ci/run or scripts/test.sh:
# the figures depend on the host's load.
#   scripts/bench.sh [NAME]...      e.g. scripts/bench.sh pool_claims worker_spawn
# Every benchmarks/NAME.py but _setup.py is one, among them first_instruction (claim or spawn to the real CLI's
# first request at a stand-in API) and relay_memory (the MCP relay with 1, 10 and 30 ultramin workers against
# the seed's servers in each worker): these two also need hal9000/mcp and hal9000/worker:ultramin, and take
# several minutes each.
# Exit status: 0 every goal met; 1 a goal missed or a benchmark failed; 2 an unknown benchmark name.
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

all=()
for path in benchmarks/[!_]*.py; do
  all+=("$(basename "$path" .py)")
done
names=()
for arg in "$@"; do
  name=$(basename "$arg" .py)  # also takes benchmarks/NAME.py
  if [[ $name == _* ]] || [ ! -f "benchmarks/$name.py" ]; then
    echo "unknown benchmark: $arg (one of: ${all[*]})" >&2
    exit 2
  fi
  names+=("$name")
done
[ ${#names[@]} -gt 0 ] || names=("${all[@]}")

ensure_venv
use_working_tree_collection
# Fails rather than starting an engine: a benchmark is measured where one already runs.
if ! docker_answers; then
  echo "FAIL: no Docker Engine answers on /var/run/docker.sock; run scripts/quickstart.sh --engine-only" >&2
  exit 1
fi

results=$(mktemp)
statuses=$(mktemp)
trap 'rm -f "$results" "$statuses"' EXIT
export HAL9000_BENCH_RESULTS=$results

# Every benchmark runs even after one fails or misses a goal.
for name in "${names[@]}"; do
  log "benchmarks/$name.py"
  set +e
  "$VENV/bin/python" "benchmarks/$name.py"
  status=$?
  set -e
  printf '%s %s\n' "$name" "$status" >> "$statuses"
done

log "Benchmark goals"
"$VENV/bin/python" - "$results" "$statuses" <<'PY'
import json
import sys

results_path, statuses_path = sys.argv[1:3]
with open(results_path, encoding="utf-8") as handle:
    lines = [json.loads(line) for line in handle if line.strip()]
rows, bad = [], 0
for entry in open(statuses_path, encoding="utf-8").read().split("\n"):
    if not entry:
        continue
    script, status = entry.rsplit(" ", 1)
    status = int(status)
    own = [line for line in lines if line["script"] == script]
    goals = [line for line in own if "failed" not in line]
    for goal in goals:
        rows.append((script, goal["figure"], goal["value"], goal["goal"], "met" if goal["met"] else "missed"))
    failures = [line["failed"] for line in own if "failed" in line]
    # A crash the script did not report itself (killed, bad arguments), or a run that recorded no goal.
    if not failures and status != 0 and all(goal["met"] for goal in goals):
        failures.append(f"exit status {status}")
    if not failures and not goals:
        failures.append("no goal recorded")
    for failure in failures:
        rows.append((script, "(did not finish)", failure[:70], "", "failed"))
    bad += bool(failures) or status != 0 or not all(goal["met"] for goal in goals)

header = ("script", "figure", "value", "goal", "result")
widths = [max(len(str(row[column])) for row in [header] + rows) for column in range(len(header))]
for row in [header, tuple("-" * width for width in widths)] + rows:
    print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
count = {result: sum(row[4] == result for row in rows) for result in ("met", "missed", "failed")}
print(f"\n{count['met']} met, {count['missed']} missed, {count['failed']} failed")
sys.exit(1 if bad else 0)
PY
