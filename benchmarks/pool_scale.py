"""How the cost of the warm pool grows with its size on one host: 10, 100 and 1,000 idle warm workers.

Starts a parent of its own (name, volumes and home from a random prefix; the real hal9000-parent is never
touched), measures, and removes everything again, also on failure:
    .venv/bin/python benchmarks/pool_scale.py [--image TAG] [SIZE ...]        (default: 10 100 1000)

--image: the workers' image (WORKER_IMAGE in the installation's hal9000.conf; default hal9000/worker:latest), e.g. one
built from a branch under a private tag.

At each size, with that many idle warm workers of the generic pool made by ``pool.spawn_warm`` (what the pool manager
calls) while the manager is off:
1. host memory per idle worker: MemAvailable before any worker and after all of them (containerd shims,
   cgroups and page cache included), divided by the count, and the two parts that can be read alone: each worker's
   containerd shim (the engine's, one per container) and the worker's own cgroup (what its image and spec cost);
2. claim p50 / p95 over 100 real claims (at most the size) at the library call the worker module and the coordinator use,
   once the fill's writes are flushed, with the engine's rename alone (inside each claim) beside it;
3. the info module's own work (and its whole ansible-playbook run) and `coordinator list --json` in the parent;
   the engine's own container list, alone, beside them (the part no code of ours can remove);
4. with the pool manager on at that size: the seconds until it is full again after 20 claims, and the
   manager's own memory (RSS) and CPU time.

Exit status 0 when every goal is met, 1 when one is missed, 2 when it fails (scripts/bench.sh runs them all).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import _setup  # (the working tree as ansible_collections.hal9000.dind, and Goals)
from pool_claims import Bench, percentile

from ansible_collections.hal9000.dind.plugins.module_utils.constants import config_path
from ansible_collections.hal9000.dind.plugins.module_utils.images import image_id
from ansible_collections.hal9000.dind.plugins.module_utils.pool import claim, spawn_warm, validate_pools, warm_workers
from ansible_collections.hal9000.dind.plugins.module_utils.status import installation_status
from ansible_collections.hal9000.dind.plugins.module_utils.workers import parent_network, worker_spec

SIZES = (10, 100, 1000)
CLAIMS = 20
# Claims timed at each size (at most the size): with 20, p95 is nearly the slowest single claim.
CLAIM_SAMPLES = 100
GOAL_MIB_PER_WORKER, GOAL_CLAIM_P95_MS, GOAL_INFO_S = 4, 25, 1
GOALS = _setup.Goals(__file__)


def mem_available_mib():
    with open("/proc/meminfo", encoding="utf-8") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def shims_mib():
    """container ID -> the host memory of its containerd shim: anonymous memory, page tables and threads' kernel
    stacks (16 KiB each on x86_64)."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                argv = cmdline.read().decode(errors="replace").split("\0")
            if not argv[0].endswith("containerd-shim-runc-v2") or "-id" not in argv[:-1]:
                continue
            with open(f"/proc/{pid}/smaps_rollup", encoding="utf-8") as rollup:
                anonymous = next(int(line.split()[1]) for line in rollup if line.startswith("Anonymous:"))
            with open(f"/proc/{pid}/status", encoding="utf-8") as status:
                fields = dict(line.split(":", 1) for line in status)
        except (OSError, StopIteration):  # gone meanwhile, or not ours to read
            continue
        found[argv[argv.index("-id") + 1]] = (anonymous + int(fields["VmPTE"].split()[0]) + 16 * int(fields["Threads"])) / 1024
    return found


def cgroup_mib(container_id):
    """Memory charged to the container's own cgroup (its processes and the kernel memory for them); None if unknown."""
    for path in (f"/sys/fs/cgroup/memory/docker/{container_id}/memory.usage_in_bytes",  # v1, cgroupfs driver
                 f"/sys/fs/cgroup/docker/{container_id}/memory.current",  # v2, cgroupfs driver
                 f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/memory.current"):  # v2, systemd driver
        try:
            with open(path, encoding="utf-8") as usage:
                return int(usage.read()) / 2**20
        except OSError:
            continue
    return None


def mean_of_known(values):
    known = [value for value in values if value is not None]
    return statistics.mean(known) if known else None


class Scale(Bench):
    def spec(self, name):
        settings = self.settings()
        return worker_spec(name=name, parent=self.parent, settings=settings, image=settings["worker_image"])

    def pool(self, size):
        return validate_pools({"pools": [{"name": "generic", "min": size, "max": size}]},
                              self.settings())["pools"][0]

    def fill(self, size):
        """Warm workers up to ``size``; seconds per worker made."""
        settings, pool = self.settings(), self.pool(size)
        network = parent_network(self.client, self.spec(f"{self.prefix}-ref"))
        missing = size - len(warm_workers(self.client, self.parent))
        began = time.monotonic()
        for _made in range(missing):
            spawn_warm(self.client, pool, self.parent, settings, network)
        return (time.monotonic() - began) / max(missing, 1)

    def memory_parts(self):
        """MiB per warm worker: (its containerd shim, its cgroup), each None where this host does not show it."""
        ids = [worker["id"] for worker in warm_workers(self.client, self.parent)]
        shims = shims_mib()
        return mean_of_known(shims.get(each) for each in ids), mean_of_known(map(cgroup_mib, ids))

    def claims(self, size):
        """Milliseconds of CLAIM_SAMPLES claims (at most ``size``) from a pool of ``size`` (the claimed ones removed
        afterwards), and of the engine's rename in each (the call no code of ours can make cheaper: it writes and
        fsyncs the container's configuration)."""
        reference = self.spec(f"{self.prefix}-ref")
        network, current = parent_network(self.client, reference), image_id(self.client, reference["image"])
        # The fill just wrote 1,000 containers' files; a pool the manager keeps full has no such write-back
        # pending, which every rename's fsync would otherwise wait behind.
        os.sync()
        timings, renames, names = [], [], []
        engine_rename = self.client.api.rename

        def timed_rename(*args, **kwargs):
            began = time.perf_counter()
            try:
                return engine_rename(*args, **kwargs)
            finally:
                renames.append((time.perf_counter() - began) * 1000)

        self.client.api.rename = timed_rename
        try:
            for index in range(min(CLAIM_SAMPLES, size)):
                name = f"{self.prefix}-c{size}-{index}"
                spec = self.spec(name)
                began = time.perf_counter()
                if claim(self.client, spec, name, self.home, network, current) is None:
                    raise RuntimeError(f"claim {index} at size {size} found no warm worker")
                timings.append((time.perf_counter() - began) * 1000)
                names.append(name)
        finally:
            del self.client.api.rename  # the method again
        self.remove(*names)
        return timings, renames

    def listing_seconds(self):
        """(the info module's own work, its whole ansible-playbook run, coordinator list in the parent, the
        engine's own list of every container), in seconds."""
        began = time.monotonic()
        installation_status(self.client, self.parent, self.prefix)  # what the info module runs
        info = time.monotonic() - began
        _result, playbook = self.task("hal9000.dind.info", {"parent": self.parent, "volume_prefix": self.prefix})
        began = time.monotonic()
        created = self.client.api.exec_create(self.parent, ["coordinator", "list", "--json"])
        self.client.api.exec_start(created["Id"])
        listed = time.monotonic() - began
        began = time.monotonic()
        self.client.api.containers(all=True)
        return info, playbook, listed, time.monotonic() - began

    def refill_and_manager(self, size):
        """With the manager on at ``size``: seconds to refill after CLAIMS claims; its RSS (MiB) and CPU seconds."""
        self.task("hal9000.dind.pool", {"parent": self.parent, "hal9000_home": self.home, "enabled": True,
                                        "min_warm_workers": size, "max_warm_workers": size, "wait_timeout": 600})
        names = []
        for index in range(min(CLAIMS, size)):
            name = f"{self.prefix}-r{size}-{index}"
            spec = self.spec(name)
            if claim(self.client, spec, name, self.home) is None:
                raise RuntimeError("the refill burst found the pool empty")
            names.append(name)
        began = time.monotonic()
        while len(warm_workers(self.client, self.parent)) < size:
            if time.monotonic() - began > 600:
                raise RuntimeError(f"the pool did not refill to {size} within 600 s")
            time.sleep(0.2)
        refill = time.monotonic() - began
        created = self.client.api.exec_create(self.parent, ["sh", "-c",
                                                            "pid=$(cat /run/hal9000/pool-manager.pid); "
                                                            "grep VmRSS /proc/$pid/status; cut -d' ' -f14,15 /proc/$pid/stat"])
        rss_line, cpu_line = self.client.api.exec_start(created["Id"]).decode().strip().splitlines()[-2:]
        ticks = sum(int(value) for value in cpu_line.split())
        self.task("hal9000.dind.pool", {"parent": self.parent, "hal9000_home": self.home, "enabled": False})
        self.remove(*names)
        return refill, int(rss_line.split()[1]) / 1024, ticks / 100  # clock ticks: USER_HZ is 100 on Linux


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0].replace("\n", " "))
    parser.add_argument("sizes", type=int, nargs="*", metavar="SIZE", help=f"warm workers (default: {' '.join(map(str, SIZES))})")
    parser.add_argument("--image", help="the workers' image (default: the installation's, hal9000/worker:latest)")
    args = parser.parse_args(argv)
    if any(size < 1 for size in args.sizes):
        parser.error("every SIZE must be at least 1")
    return args


def main(args):
    image, sizes = args.image, args.sizes or SIZES
    bench = Scale()
    rows = []
    try:
        bench.task("hal9000.dind.parent", bench.parent_args)
        if image:  # read by this benchmark's specs and by the pool manager in the parent alike
            with open(config_path(bench.home), "a", encoding="utf-8") as config:
                config.write(f"WORKER_IMAGE={image}\n")
        bench.task("hal9000.dind.pool", {"parent": bench.parent, "hal9000_home": bench.home, "enabled": False})
        time.sleep(2)
        baseline = mem_available_mib()
        for size in sizes:
            per_worker_s = bench.fill(size)
            time.sleep(5)  # the new containers' first page faults settle
            used = baseline - mem_available_mib()
            shim, cgroup = bench.memory_parts()
            parts = ("" if shim is None or cgroup is None else
                     f"; of it the engine's containerd shim {shim:.2f} MiB (anonymous memory, page tables, kernel stacks), "
                     f"the worker's own cgroup {cgroup:.2f} MiB, the rest {used / size - shim - cgroup:.2f} MiB (dockerd, "
                     "containerd, kernel objects outside the cgroup)")
            print(f"{size:5d} warm: {used / size:5.2f} MiB each ({used:.0f} MiB){parts}", flush=True)
            claims, renames = bench.claims(size)
            bench.fill(size)
            info, playbook, listed, engine_list = bench.listing_seconds()
            refill, rss, cpu = bench.refill_and_manager(size)
            rows.append((size, used / size, per_worker_s, statistics.median(claims), percentile(claims, 0.95),
                         info, listed, engine_list, refill, rss, cpu))
            print(f"{size:5d} warm: {used / size:5.2f} MiB each ({used:.0f} MiB), made in {per_worker_s * 1000:.0f} ms each; "
                  f"claim p50 {statistics.median(claims):.1f} ms p95 {percentile(claims, 0.95):.1f} ms ({len(claims)} claims; the engine's "
                  f"rename alone p50 {statistics.median(renames):.1f} ms p95 {percentile(renames, 0.95):.1f} ms); info {info:.2f} s "
                  f"({playbook:.1f} s through ansible-playbook), "
                  f"coordinator list {listed:.2f} s (the engine's list alone {engine_list * 1000:.0f} ms); "
                  f"refill after {min(CLAIMS, size)} claims {refill:.1f} s; pool manager {rss:.0f} MiB RSS, {cpu:.1f} s CPU", flush=True)
    finally:
        bench.cleanup()
    largest = rows[-1]
    # At the largest size only: at 10 workers the rest of the machine moves MemAvailable by more than they use.
    GOALS.at_most(f"host memory per idle warm worker at {largest[0]}", largest[1], GOAL_MIB_PER_WORKER, "MiB", 2)
    GOALS.at_most(f"claim p95 at {largest[0]} warm workers", largest[4], GOAL_CLAIM_P95_MS, "ms")
    GOALS.at_most(f"info module at {largest[0]} warm workers", largest[5], GOAL_INFO_S, "s", 2)


if __name__ == "__main__":
    ARGS = parse()
    sys.exit(GOALS.run(lambda: main(ARGS)))
