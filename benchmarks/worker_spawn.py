"""Worker spawn time and idle memory, against the goals.

(a) a cold spawn through the library (`spawn_worker(client, worker_spec(...))`) against a plain
    `docker run -d` with the same spec (median of 10 each; goal: ratio <= 1.1);
(b) 1, 5 and 10 workers spawned by ONE ansible-playbook run looping over the worker module;
(c) the memory of 5 idle workers after 3 s (goal: <= 10 MB each).

It starts a parent of its own (names h9bench-<random>) and removes everything it made.
Run after the images exist:  .venv/bin/python benchmarks/worker_spawn.py
Exit status 0 when every goal is met, 1 when one is missed, 2 when it fails (scripts/bench.sh runs them all).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import _setup  # (makes ansible_collections.hal9000.dind and the test helpers importable, and Goals)
import docker
import yaml
from helpers import remove_containers

from ansible_collections.hal9000.dind.plugins.module_utils.workers import spawn_worker, worker_spec

RUNS = 10
MB = 1024 * 1024
BASE = f"h9bench-{uuid.uuid4().hex[:8]}"
PARENT = f"{BASE}-parent"
ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
INVENTORY = str(_setup.REPO_ROOT / "inventory" / "localhost.yml")
GOALS = _setup.Goals(__file__)


def playbook(workdir, tasks):
    """Run one play of ``tasks`` on localhost; return the wall time in seconds."""
    book = os.path.join(workdir, f"play-{uuid.uuid4().hex}.yml")
    with open(book, "w", encoding="utf-8") as handle:
        yaml.safe_dump([{"name": "Benchmark", "hosts": "localhost", "gather_facts": False, "tasks": tasks}], handle)
    started = time.monotonic()
    proc = subprocess.run([ANSIBLE_PLAYBOOK, "-i", INVENTORY, book], capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"ansible-playbook failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    return elapsed


def cli_command(client, inspected, name):
    """`docker run -d` with everything the library's worker has: image, network, limits, hardening, user, mounts."""
    host, config = inspected["HostConfig"], inspected["Config"]
    cmd = ["docker", "run", "-d", "--name", name, "--network", host["NetworkMode"],
           "--memory", str(host["Memory"]), "--memory-swap", str(host["MemorySwap"]),
           "--cpu-period", str(host["CpuPeriod"]), "--cpu-quota", str(host["CpuQuota"]),
           "--pids-limit", str(host["PidsLimit"]), "--user", config["User"], "--workdir", config["WorkingDir"]]
    cmd += [arg for cap in host["CapDrop"] or [] for arg in ("--cap-drop", cap)]
    cmd += [arg for opt in host["SecurityOpt"] or [] for arg in ("--security-opt", opt)]
    cmd += [arg for path, opts in (host["Tmpfs"] or {}).items() for arg in ("--tmpfs", f"{path}:{opts}")]
    cmd += [arg for mount in inspected["Mounts"] if mount["Type"] == "volume"
            for arg in ("--mount", f"type=volume,dst={mount['Destination']}")]
    cmd += [arg for key, value in (config["Labels"] or {}).items() for arg in ("--label", f"{key}={value}")]
    image_env = set(client.api.inspect_image(config["Image"])["Config"]["Env"] or [])
    cmd += [arg for item in config["Env"] if item not in image_env for arg in ("--env", item)]
    if host["AutoRemove"]:
        cmd.append("--rm")
    if host["ReadonlyRootfs"]:
        cmd.append("--read-only")
    cmd.append(config["Image"])
    return cmd


def cold_spawns(client):
    """(library ms list, CLI ms list), interleaved so both see the same engine load."""
    library, cli = [], []
    reference = f"{BASE}-ref"
    spawn_worker(client, worker_spec(name=reference, parent=PARENT))
    command = cli_command(client, client.api.inspect_container(reference), "NAME")
    remove_containers(client, reference)
    for run in range(RUNS):
        name = f"{BASE}-lib-{run}"
        started = time.monotonic()
        spawn_worker(client, worker_spec(name=name, parent=PARENT))
        library.append((time.monotonic() - started) * 1000)
        remove_containers(client, name)

        name = f"{BASE}-cli-{run}"
        argv = [name if arg == "NAME" else arg for arg in command]
        started = time.monotonic()
        subprocess.run(argv, check=True, capture_output=True)
        cli.append((time.monotonic() - started) * 1000)
        remove_containers(client, name)
    return library, cli


def playbook_spawns(client, workdir, count):
    names = [f"{BASE}-pb{count}-{i}" for i in range(count)]
    task = {"name": "Spawn workers", "hal9000.dind.worker": {"name": "{{ item }}", "parent": PARENT}, "loop": names}
    try:
        return playbook(workdir, [task])
    finally:
        remove_containers(client, *names)


def idle_memory(client, count=5):
    """Per worker: (usage minus inactive file cache as `docker stats` shows it, RSS), in MB."""
    names = [f"{BASE}-idle-{i}" for i in range(count)]
    try:
        for name in names:
            spawn_worker(client, worker_spec(name=name, parent=PARENT))
        time.sleep(3)
        figures = []
        for name in names:
            stats = client.api.stats(name, stream=False)["memory_stats"]
            inner = stats.get("stats", {})
            cache = inner.get("total_inactive_file", inner.get("inactive_file", 0))
            rss = inner.get("total_rss", inner.get("anon", 0))
            figures.append((name, (stats["usage"] - cache) / MB, rss / MB))
        return figures
    finally:
        remove_containers(client, *names)


def main():
    client = docker.from_env()
    workdir = tempfile.mkdtemp(prefix="h9bench-")
    parent_args = {"name": PARENT, "volume_prefix": BASE, "hal9000_home": os.path.join(workdir, "home")}
    try:
        print(f"Parent {PARENT}: started in {playbook(workdir, [{'hal9000.dind.parent': parent_args}]):.1f} s")

        library, cli = cold_spawns(client)
        lib_ms, cli_ms = statistics.median(library), statistics.median(cli)
        ratio = lib_ms / cli_ms
        print(f"\n(a) Cold spawn, median of {RUNS}    library spawn_worker   docker run -d (CLI)")
        print(f"    create + start                {lib_ms:10.1f} ms         {cli_ms:10.1f} ms")
        print(f"    min / max                     {min(library):6.1f} / {max(library):6.1f}    {min(cli):6.1f} / {max(cli):6.1f}")
        verdict = "meets goal" if GOALS.at_most("cold spawn, library / docker run -d", ratio, 1.1, "", digits=2) else "MISSES goal"
        print(f"    ratio library / CLI           {ratio:.2f} (goal <= 1.1: {verdict})")

        print("\n(b) Workers spawned by ONE ansible-playbook run (loop over hal9000.dind.worker)")
        totals = {}
        for count in (1, 5, 10):
            totals[count] = playbook_spawns(client, workdir, count)
            print(f"    {count:2d} worker(s): {totals[count]:6.2f} s total, {totals[count] / count:5.2f} s per worker")
        per_extra = (totals[10] - totals[1]) / 9
        print(f"    growth: each worker after the first adds {per_extra:.2f} s "
              f"(fixed playbook cost about {totals[1] - per_extra:.2f} s)")

        print("\n(c) Idle workers after 3 s    memory (docker stats)    RSS        goal <= 10 MB")
        idle = idle_memory(client)
        for name, used, rss in idle:
            print(f"    {name:<30} {used:8.1f} MB         {rss:6.1f} MB  {'meets goal' if used <= 10 else 'MISSES goal'}")
        # The goal is per worker: every one meets it when the largest does.
        GOALS.at_most(f"idle worker memory, largest of {len(idle)}", max(used for _name, used, _rss in idle), 10, "MB")
    finally:
        for container in client.containers.list(ignore_removed=True, all=True, filters={"name": BASE}):
            container.remove(force=True, v=True)
        for volume in client.volumes.list(filters={"name": BASE}):
            volume.remove(force=True)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(GOALS.run(main))
