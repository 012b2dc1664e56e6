"""Warm-pool claims against cold spawns, end to end through the worker module, and the refill time.

Starts a parent of its own (name, volumes and home from a random prefix; the real hal9000-parent is
never touched), measures, and removes everything again, also on failure:
    .venv/bin/python benchmarks/pool_claims.py

1. 100 claims at the library call the worker module and the coordinator use (``pool.claim``), each a
   real claim-locked rename of a real running warm worker; the pool is kept fed in batches made with
   ``pool.spawn_warm`` (what the pool manager calls) while the manager is off. Only the claim is timed.
2. 20 cold spawns through ``workers.spawn_worker`` in the same run.
3. The worker module with from_pool=true through ansible-playbook (a few runs; median), and cold.
4. After a burst of 5 claims from a pool of 5, the seconds until the manager has it back at 5.

Exit status 0 when every goal is met, 1 when one is missed, 2 when it fails (scripts/bench.sh runs them all).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import _setup  # (the working tree as ansible_collections.hal9000.dind, and Goals)
import docker
import yaml

from ansible_collections.hal9000.dind.plugins.module_utils.images import image_id
from ansible_collections.hal9000.dind.plugins.module_utils.pool import claim, spawn_warm, validate_pools, warm_workers
from ansible_collections.hal9000.dind.plugins.module_utils.settings import resolve_in_home
from ansible_collections.hal9000.dind.plugins.module_utils.workers import parent_network, spawn_worker, worker_spec

CLAIMS = 100
BATCH = 10
COLD = 20
E2E_RUNS = 5
GOAL_P50_MS, GOAL_P95_MS, GOAL_REFILL_S = 10, 25, 10
GOALS = _setup.Goals(__file__)


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


class Bench:
    def __init__(self):
        self.client = docker.from_env()
        self.prefix = f"h9bench-{uuid.uuid4().hex[:8]}"
        self.parent = f"{self.prefix}-parent"
        self.workdir = Path(tempfile.mkdtemp(prefix="hal9000-bench-"))
        self.home = str(self.workdir / "home")
        # HAL9000_TEST_PARENT_IMAGE (as in the tests) measures a parent built under another tag.
        self.parent_args = {"name": self.parent, "volume_prefix": self.prefix, "hal9000_home": self.home,
                            "image": os.environ.get("HAL9000_TEST_PARENT_IMAGE", "hal9000/parent:latest")}

    # ------------------------------------------------------------------ helpers ----
    def task(self, module, args):
        """One module task through ansible-playbook: (result, wall seconds)."""
        out = self.workdir / f"result-{uuid.uuid4().hex}.json"
        book = self.workdir / f"play-{uuid.uuid4().hex}.yml"
        book.write_text(yaml.safe_dump([{"name": "Bench", "hosts": "localhost", "gather_facts": False, "tasks": [
            {"name": "Run", module: args, "register": "result", "ignore_errors": True},
            {"name": "Save", "ansible.builtin.copy": {"content": "{{ result | to_json }}", "dest": str(out), "mode": "0600"}},
        ]}]))
        env = dict(os.environ, ANSIBLE_NOCOLOR="1")
        env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(_setup.COLLECTIONS_ROOT))
        started = time.monotonic()
        proc = subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i",
             str(_setup.REPO_ROOT / "inventory" / "localhost.yml"), str(book)],
            cwd=self.workdir, env=env, capture_output=True, text=True, check=False,
        )
        elapsed = time.monotonic() - started
        if not out.exists():
            raise RuntimeError(f"{module} produced no result:\n{proc.stdout}\n{proc.stderr}")
        result = json.loads(out.read_text())
        if result.get("failed"):
            raise RuntimeError(f"{module} failed: {result.get('msg')}")
        return result, elapsed

    def configure_pool(self, enabled, size=5):
        return self.task("hal9000.dind.pool", {
            "parent": self.parent, "hal9000_home": self.home, "enabled": enabled,
            "min_warm_workers": size, "max_warm_workers": size,
        })[0]

    def settings(self):
        """The settings the worker module resolves for this installation (hal9000.conf in its home)."""
        return resolve_in_home(self.home)

    def generic_pool(self, settings):
        return validate_pools({"pools": [{"name": "generic", "min": 5, "max": 5}]}, settings)["pools"][0]

    def remove(self, *names):
        for name in names:
            try:
                self.client.api.remove_container(name, force=True, v=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:  # 409: a removal already in progress (the parent's, say) does it
                if exc.status_code != 409:
                    raise

    def cleanup(self):
        self.remove(self.parent)  # first: its pool manager stops creating
        for _attempt in range(2):
            for summary in self.client.api.containers(all=True, filters={"label": f"io.hal9000.parent={self.parent}"}):
                self.remove(summary["Id"])
            time.sleep(1)
        # The workers' /workspace volumes too: the parent that removes them with their workers went first.
        workspaces = self.client.api.volumes(filters={"label": f"io.hal9000.parent={self.parent}"}).get("Volumes") or []
        for name in [f"{self.prefix}-{suffix}" for suffix in ("chromadb", "memorybank", "plugins")] + [v["Name"] for v in workspaces]:
            try:
                self.client.api.remove_volume(name, force=True)
            except docker.errors.NotFound:
                pass
        shutil.rmtree(self.workdir, ignore_errors=True)

    # ------------------------------------------------------------- measurements ----
    def library_claims(self):
        """Milliseconds of each of CLAIMS real claims, the pool refilled in batches between them."""
        settings = self.settings()
        pool = self.generic_pool(settings)
        # Looked up before the claim, as the worker module does (its claim_ms leaves them out too).
        reference = worker_spec(name=f"{self.prefix}-claim", parent=self.parent, settings=settings)
        network, current_image = parent_network(self.client, reference), image_id(self.client, reference["image"])
        timings, index = [], 0
        while index < CLAIMS:
            for _made in range(BATCH):
                spawn_warm(self.client, pool, self.parent, settings, network)
            claimed = []
            for _claim in range(BATCH):
                name = f"{self.prefix}-claim-{index}"
                spec = worker_spec(name=name, parent=self.parent, settings=settings)  # what the worker module builds
                began = time.perf_counter()
                container_id = claim(self.client, spec, name, self.home, network, current_image)
                timings.append((time.perf_counter() - began) * 1000)
                if container_id is None:
                    raise RuntimeError(f"claim {index} found no warm worker")
                claimed.append(name)
                index += 1
            self.remove(*claimed)
        return timings

    def cold_spawns(self):
        timings = []
        for index in range(COLD):
            spec = worker_spec(name=f"{self.prefix}-cold-{index}", parent=self.parent, settings=self.settings())
            timings.append(spawn_worker(self.client, spec)[1])
            self.remove(spec["name"])
        return timings

    def module_runs(self, from_pool):
        walls, claim_ms = [], []
        for index in range(E2E_RUNS):
            if from_pool:
                self.wait_warm(5, 60)
            name = f"{self.prefix}-module-{'pool' if from_pool else 'cold'}-{index}"
            result, wall = self.task("hal9000.dind.worker", {"name": name, "parent": self.parent, "from_pool": from_pool})
            if result["claimed"] is not from_pool:
                raise RuntimeError(f"worker module run {index}: claimed={result['claimed']}, expected {from_pool}")
            walls.append(wall)
            claim_ms.append(result.get("claim_ms") or 0)
            self.remove(name)
        return walls, claim_ms

    def wait_warm(self, count, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(warm_workers(self.client, self.parent)) >= count:
                return
            time.sleep(0.1)
        raise RuntimeError(f"the pool did not reach {count} warm workers in {timeout} s")

    def refill_seconds(self):
        """A burst of 5 claims from a full pool of 5, then the seconds until it holds 5 again."""
        self.wait_warm(5, 60)
        names = [f"{self.prefix}-burst-{index}" for index in range(5)]
        settings = self.settings()
        for name in names:
            if claim(self.client, worker_spec(name=name, parent=self.parent, settings=settings), name, self.home) is None:
                raise RuntimeError("the burst found the pool empty")
        began = time.monotonic()
        while len(warm_workers(self.client, self.parent)) < 5:
            if time.monotonic() - began > 120:
                raise RuntimeError("the pool did not refill within 120 s")
            time.sleep(0.05)
        seconds = time.monotonic() - began
        self.remove(*names)
        return seconds


def main():
    bench = Bench()
    try:
        bench.task("hal9000.dind.parent", bench.parent_args)
        bench.configure_pool(enabled=False)  # the batches below feed the pool by hand
        claims = bench.library_claims()
        cold = bench.cold_spawns()
        bench.configure_pool(enabled=True)
        pool_walls, pool_claim_ms = bench.module_runs(from_pool=True)
        cold_walls, _unused = bench.module_runs(from_pool=False)
        refill = bench.refill_seconds()
    finally:
        bench.cleanup()

    p50, p95 = statistics.median(claims), percentile(claims, 0.95)
    cold50, cold95 = statistics.median(cold), percentile(cold, 0.95)
    p50_met = GOALS.at_most("claim p50 (pool.claim)", p50, GOAL_P50_MS, "ms")
    p95_met = GOALS.at_most("claim p95 (pool.claim)", p95, GOAL_P95_MS, "ms")
    verdict = "meets" if p50_met and p95_met else "MISSES"
    print(f"claim   pool.claim          ({len(claims)} real claims): p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  "
          f"(goal p50 <= {GOAL_P50_MS} ms, p95 <= {GOAL_P95_MS} ms: {verdict})")
    print(f"cold    workers.spawn_worker ({len(cold)} spawns):      p50 {cold50:6.1f} ms  p95 {cold95:6.1f} ms  "
          f"(claim is {cold50 / p50:.0f}x faster at p50)")
    print(f"worker module from_pool=true, ansible-playbook end to end ({E2E_RUNS} runs): median "
          f"{statistics.median(pool_walls):.2f} s (claim_ms in the module: median {statistics.median(pool_claim_ms):.1f})")
    print(f"worker module cold spawn, ansible-playbook end to end ({E2E_RUNS} runs):    median {statistics.median(cold_walls):.2f} s")
    refill_met = GOALS.at_most("refill after a burst of 5 claims", refill, GOAL_REFILL_S, "s")
    print(f"refill after a burst of 5 claims from a pool of 5: {refill:.1f} s "
          f"(goal <= {GOAL_REFILL_S} s: {'meets' if refill_met else 'MISSES'})")
    print(f"host: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (Docker API latencies grow with load)")


if __name__ == "__main__":
    sys.exit(GOALS.run(main))
