"""The egress rewrite a claim makes: a worker's own allowlist applied to its uid in the parent's namespace.

Starts a parent of its own (name, volumes and home from a random prefix; the real hal9000-parent is never
touched), measures, and removes everything again, also on failure:
    .venv/bin/python benchmarks/egress_claim.py

30 times, alternating between two lists: `coordinator egress register KEY UID --allow LIST` in the parent
(what a claim runs: one chain and the dispatcher rewritten with iptables-restore --noflush, nothing
restarted), timed inside the parent, and the whole `docker exec` round trip beside it.

Exit status 0 when every goal is met, 1 when one is missed, 2 when it fails (scripts/bench.sh runs them all).
"""

from __future__ import annotations

import statistics
import sys
import time

import _setup  # (the working tree as ansible_collections.hal9000.dind, and Goals)
from pool_claims import Bench, percentile

RUNS = 30
GOAL_MS = 100
LISTS = ("192.0.2.10:443", "198.51.100.0/24:8000-8100")  # documentation addresses: never contacted
TIMED = 'began=$(date +%s%N); coordinator egress register "$1" 2999 --allow "$2" >/dev/null; echo $(( ($(date +%s%N) - began) / 1000 ))'
GOALS = _setup.Goals(__file__)


def main():
    bench = Bench()
    inside, round_trips = [], []
    try:
        bench.task("hal9000.dind.parent", bench.parent_args)
        for run in range(RUNS):
            began = time.monotonic()
            created = bench.client.api.exec_create(bench.parent, ["sh", "-c", TIMED, "-", "bench-worker", LISTS[run % 2]])
            output = bench.client.api.exec_start(created["Id"]).decode().strip()
            round_trips.append((time.monotonic() - began) * 1000)
            if bench.client.api.exec_inspect(created["Id"])["ExitCode"] != 0:
                raise RuntimeError(f"coordinator egress register failed: {output}")
            inside.append(int(output.splitlines()[-1]) / 1000)
    finally:
        bench.cleanup()
    p50, p95 = statistics.median(inside), percentile(inside, 0.95)
    print(f"egress rewrite at a claim, in the parent ({RUNS} runs): p50 {p50:.1f} ms  p95 {p95:.1f} ms; "
          f"with docker exec's round trip: p50 {statistics.median(round_trips):.1f} ms")
    GOALS.at_most("egress rewrite at a claim, p95 (in the parent)", p95, GOAL_MS, "ms")


if __name__ == "__main__":
    sys.exit(GOALS.run(main))
