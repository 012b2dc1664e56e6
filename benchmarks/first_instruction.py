"""Time to first instruction: from the start of a warm claim or a cold spawn to the model's first request.

What a user of the pool waits for: a worker is claimed (warm) or spawned (cold), then the task runs in it at
once, `claude -p "<prompt>"` through docker exec, and the real Claude Code CLI sends its first request to the
model. The model is the scripted stand-in (tests/integration/standin_api.py) in the parent's network
namespace, which logs every request with its wall-clock time (time.time() in its container, the host's clock):
first instruction = the first logged request's time - time.time() taken on this host at the claim's or the
spawn's start. Split into its parts: the claim or spawn call, then the exec's start to that first request.

Starts a parent of its own (name, volumes and home from a random prefix; the real hal9000-parent is never
touched), waits for its MCP relay (`relay_ready` in /run/hal9000/startup.json: the CLI connects its MCP servers
at start), and removes everything again, also on failure:
    .venv/bin/python benchmarks/first_instruction.py

1. warm: RUNS claims at the library call the worker module uses with from_pool=true (``pool.claim``), of warm
   workers made with ``pool.spawn_warm`` in batches (the pool manager is off, as in pool_claims.py);
2. cold: RUNS spawns through ``workers.spawn_worker``;
3. for scale, RUNS cold spawns of workers without the relay (no managed MCP configuration): the CLI's start
   without MCP servers, i.e. what the relay's three connections add to it;
interleaved, one run of each in turn, so all see the same engine load. Every worker gets the stand-in as
anthropic_base_url and a dummy key file (0600, owned by the worker's uid) as api_key_file.
Goal: warm p50 <= 0.6 x cold p50 (the CLI's own start, the same in both, dominates: likely missed).

Exit status 0 when every goal is met, 1 when one is missed, 2 when it fails (scripts/bench.sh runs them all).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import _setup  # (the working tree as ansible_collections.hal9000.dind, the test helpers, and Goals)
import docker
from claude_e2e import key_file_for, run_claude, standin_api
from helpers import AnsibleRunner, exec_in, parent_args, remove_installation, succeeded, wait_for

from ansible_collections.hal9000.dind.plugins.module_utils.images import image_id
from ansible_collections.hal9000.dind.plugins.module_utils.pool import claim, spawn_warm, validate_pools
from ansible_collections.hal9000.dind.plugins.module_utils.settings import resolve_in_home
from ansible_collections.hal9000.dind.plugins.module_utils.workers import (
    CLAUDE_USER, parent_network, remove_worker, spawn_worker, worker_spec,
)

RUNS = 30
BATCH = 10
GOAL_RATIO = 0.6
MARKER = "FIRST-INSTRUCTION"
BASE = f"h9bench-{uuid.uuid4().hex[:8]}"
PARENT = f"{BASE}-parent"
GOALS = _setup.Goals(__file__)


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def startup(client):
    code, out, _err = exec_in(client, PARENT, ["cat", "/run/hal9000/startup.json"])
    return json.loads(out) if code == 0 else {}


class Bench:
    def __init__(self, client, workdir, standin, key_path):
        self.client = client
        self.standin = standin
        self.home = str(workdir / "home")
        self.settings = resolve_in_home(self.home)
        # Every worker alike, warm or cold: the stand-in as its model endpoint, the dummy key file.
        self.options = {"api_key_file": key_path, "anthropic_base_url": standin.url}
        self.pool = validate_pools({"pools": [{"name": "bench", "min": BATCH, "max": BATCH, **self.options}]},
                                   self.settings)["pools"][0]
        reference = self.spec(f"{BASE}-reference")
        # Looked up once, before the timed calls, for both (the worker module, too, looks them up before its claim).
        self.network = parent_network(client, reference)
        self.image_id = image_id(client, reference["image"])
        self.warm_left = 0

    def spec(self, name, relay=True):
        settings = self.settings if relay else dict(self.settings, enable_mcp_relay=False)
        return worker_spec(name=name, parent=PARENT, settings=settings, **self.options)

    def first_request(self, seen, timeout=10):
        """The first request the stand-in logged after its first ``seen`` entries."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            requests = self.standin.requests()
            if len(requests) > seen:
                return requests[seen], requests[seen:]
            time.sleep(0.05)
        raise RuntimeError(f"the stand-in got no request within {timeout} s of the CLI's end")

    def instruct(self, worker, began, call_ms, run):
        """``claude -p`` in ``worker`` right after its claim or spawn: the figures of this run, in ms."""
        seen = len(self.standin.requests())
        exec_at = time.time()
        result = run_claude(self.client, worker, f"{MARKER}-{run}: reply with one word.", timeout=60)
        if result.code != 0 or result.out.strip() != "done":
            raise RuntimeError(f"claude -p in {worker} did not finish its task: {result}")
        first, made = self.first_request(seen)
        main = next((r for r in made if r["method"] == "POST" and isinstance(r["body"], dict) and r["body"].get("tools")), None)
        return {"call": call_ms, "exec_to_first": (first["time"] - exec_at) * 1000, "total": (first["time"] - began) * 1000,
                "first": f"{first['method']} {first['path'].split('?')[0]}",
                "main": (main["time"] - began) * 1000 if main else None, "cli": result.seconds * 1000}

    def warm(self, run):
        if not self.warm_left:
            for _made in range(BATCH):
                spawn_warm(self.client, self.pool, PARENT, self.settings, self.network)
            self.warm_left = BATCH
            time.sleep(3)  # settled, as warm workers are when a claim comes
        name = f"{BASE}-warm-{run}"
        spec = self.spec(name)  # what the worker module builds before its claim
        began, clock = time.time(), time.perf_counter()
        container_id = claim(self.client, spec, name, self.home, self.network, self.image_id)
        call_ms = (time.perf_counter() - clock) * 1000
        if container_id is None:
            raise RuntimeError(f"claim {run} found no warm worker")
        self.warm_left -= 1
        try:
            return self.instruct(name, began, call_ms, run)
        finally:
            remove_worker(self.client, container_id, self.home)

    def cold(self, run, relay=True):
        spec = self.spec(f"{BASE}-cold-{run}" if relay else f"{BASE}-norelay-{run}", relay)
        began, clock = time.time(), time.perf_counter()
        container_id = spawn_worker(self.client, spec, self.network)[0]
        call_ms = (time.perf_counter() - clock) * 1000
        try:
            return self.instruct(spec["name"], began, call_ms, run)
        finally:
            remove_worker(self.client, container_id, self.home)


def summary(label, runs, what):
    def line(name, key):
        values = [r[key] for r in runs if r[key] is not None]
        return f"    {name:<38} p50 {statistics.median(values):7.1f} ms  p95 {percentile(values, 0.95):7.1f} ms"
    firsts = sorted({r["first"] for r in runs})
    print(f"{label} ({len(runs)} runs; {what})")
    print(line("first instruction (start -> request)", "total"))
    print(line("  claim / spawn call", "call"))
    print(line("  exec -> first request", "exec_to_first"))
    print(line("first main-conversation request", "main"))
    print(line("whole claude -p run (exec round trip)", "cli"))
    print(f"    first request: {', '.join(firsts)}")


def main():
    client = docker.from_env()
    workdir = Path(tempfile.mkdtemp(prefix=f"{BASE}-"))
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"host: {os.cpu_count()} CPUs, load average {load} (every figure below grows with the load)")
    try:
        began = time.monotonic()
        succeeded(AnsibleRunner(workdir).task("hal9000.dind.parent", parent_args(BASE, workdir / "home")))
        wait_for(lambda: startup(client).get("relay_ready"), 180, "the MCP relay to answer")
        print(f"parent {PARENT} and its MCP relay ready in {time.monotonic() - began:.1f} s")
        uid = int(CLAUDE_USER.split(":", maxsplit=1)[0])  # workers without a project run as the image's user
        key_path = key_file_for(workdir / "anthropic_key", uid)[1]
        (workdir / "standin").mkdir()
        script = [{"marker": MARKER, "steps": [{"text": "done"}]}]
        with standin_api(client, PARENT, workdir / "standin", script) as standin:
            bench = Bench(client, workdir, standin, key_path)
            bench.cold("untimed")  # the first CLI start ever on this parent (its files into the page cache): not counted
            warm, cold, bare = [], [], []
            for run in range(RUNS):
                warm.append(bench.warm(run))
                cold.append(bench.cold(run))
                bare.append(bench.cold(run, relay=False))
    finally:
        remove_installation(client, BASE, PARENT)
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    summary("warm: pool.claim, then docker exec claude -p", warm, "a warm worker claimed")
    summary("cold: workers.spawn_worker, then docker exec claude -p", cold, "a worker created and started")
    summary("cold without the relay (for scale)", bare, "no MCP servers: the CLI's start alone")
    warm50, cold50 = statistics.median(r["total"] for r in warm), statistics.median(r["total"] for r in cold)
    ratio = warm50 / cold50
    verdict = "meets" if GOALS.at_most("first instruction, warm p50 / cold p50", ratio, GOAL_RATIO, "", digits=2) else "MISSES"
    print(f"\nfirst instruction p50: warm {warm50:.0f} ms, cold {cold50:.0f} ms: warm / cold = {ratio:.2f} "
          f"(goal <= {GOAL_RATIO}: {verdict} it)")
    saved = statistics.median(r["call"] for r in cold) - statistics.median(r["call"] for r in warm)
    cli = statistics.median(r["exec_to_first"] for r in warm + cold)
    alone = statistics.median(r["exec_to_first"] for r in bare)
    print(f"the claim saves {saved:.0f} ms of the spawn; exec -> first request takes {cli:.0f} ms (p50 of all {2 * RUNS} "
          f"runs with the relay), the same warm or cold: {alone:.0f} ms of it is the CLI's start without MCP servers, "
          f"{cli - alone:.0f} ms its three MCP connections through the relay")


if __name__ == "__main__":
    sys.exit(GOALS.run(main))
