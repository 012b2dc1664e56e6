"""claudy's speed as a user sees it: the wall time of whole commands, in one run.

Installs claudy with the install role into a temporary directory, starts a parent of its own with
`claudy daemon start` (name, volumes and home from a random prefix; the real hal9000-parent is never
touched), measures, and removes everything again, also on failure:
    .venv/bin/python benchmarks/claudy_speed.py

1. `claudy --via-parent --detach --name NAME PROJECT` with a warm worker of the project's pool waiting,
   30 runs (the pool manager refills between runs, untimed).
2. The same with the pool off: a cold spawn each time, 30 runs.
3. `claudy ps` with 50 workers, 10 runs.

Exit status 0 when every goal is met, 1 when one is missed, 2 when it fails (scripts/bench.sh runs them all).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import _setup  # (the working tree as ansible_collections.hal9000.dind, and Goals)
import docker

from helpers import AnsibleRunner, remove_installation, wait_for

RUNS, PS_WORKERS, PS_RUNS = 30, 50, 10
GOAL_WARM_S, GOAL_RATIO, GOAL_PS_S = 0.3, 0.5, 0.5
WORKER_UID = 1001
GOALS = _setup.Goals(__file__)


def install_claudy(root):
    """The install role's claudy tasks into ``root``; the installed command."""
    play = root / "install.yml"
    play.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [{
        "ansible.builtin.include_role": {"name": "hal9000.dind.install", "tasks_from": "claudy"},
        "vars": {"install_claudy_bin_dir": str(root / "bin"), "install_claudy_lib_dir": str(root / "lib"),
                 "install_claudy_completion_dir": str(root / "completion")}}]}]))
    AnsibleRunner(root).playbook(play)
    return str(root / "bin" / "claudy")


def main():
    client = docker.from_env()
    base = f"h9bench-{uuid.uuid4().hex[:6]}"
    root = Path(tempfile.mkdtemp(prefix=base))
    home = root / "home"
    env = dict(os.environ, HAL9000_PARENT=f"{base}-parent", HAL9000_HOME=str(home), HAL9000_VOLUME_PREFIX=base)
    try:
        command = install_claudy(root)

        def claudy(*args):
            began = time.monotonic()
            proc = subprocess.run([command, *args], env=env, capture_output=True, text=True, timeout=120, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"claudy {' '.join(args)} failed: {proc.stderr.strip()}")
            return time.monotonic() - began, proc.stdout

        project = root / "project"
        project.mkdir()
        os.chown(project, WORKER_UID, WORKER_UID)
        claudy("daemon", "start")
        pools = {"enabled": True, "pools": [{"name": "bench", "project": str(project), "min": 2, "max": 3,
                                             "user": f"{WORKER_UID}:{WORKER_UID}", "image": "hal9000/worker:latest"}]}
        (home / "config" / "pools.json").write_text(json.dumps(pools))
        claudy("pool", "on")

        def warm():
            return json.loads(claudy("pool", "status", "--json")[1])["pools"][0]["warm"]

        def launch(kind, runs):
            times = []
            for index in range(runs):
                if kind == "warm":
                    wait_for(lambda: warm() >= 1, 60, "a warm worker")
                name = f"{base}-{kind}-{index}"
                seconds, out = claudy("--via-parent", "--detach", "--json", "--name", name, str(project))
                if json.loads(out)["claimed"] != (kind == "warm"):
                    raise RuntimeError(f"{name}: expected {'a claim' if kind == 'warm' else 'a cold spawn'}: {out}")
                times.append(seconds)
                client.api.remove_container(name, force=True, v=True)
            return statistics.median(times)

        warm_p50 = launch("warm", RUNS)
        claudy("pool", "off")
        cold_p50 = launch("cold", RUNS)
        print(f"claudy --via-parent --detach: warm p50 {warm_p50:.3f} s, cold p50 {cold_p50:.3f} s ({RUNS} runs each)")
        GOALS.at_most("claudy --detach with a warm worker, p50", warm_p50, GOAL_WARM_S, "s", 3)
        GOALS.at_most("warm p50 / cold p50", warm_p50 / cold_p50, GOAL_RATIO, "", 2)

        for index in range(PS_WORKERS):
            claudy("--detach", "--name", f"{base}-ps-{index}", str(project))
        ps_times = []
        for _run in range(PS_RUNS):
            seconds, out = claudy("ps")
            ps_times.append(seconds)
        if len(out.splitlines()) < PS_WORKERS + 1:
            raise RuntimeError(f"claudy ps listed fewer than {PS_WORKERS} workers:\n{out}")
        ps_p50 = statistics.median(ps_times)
        print(f"claudy ps with {PS_WORKERS}+ workers: p50 {ps_p50:.3f} s ({PS_RUNS} runs)")
        GOALS.at_most(f"claudy ps with {PS_WORKERS} workers, p50", ps_p50, GOAL_PS_S, "s", 3)
    finally:
        remove_installation(client, base, f"{base}-parent")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(GOALS.run(main))
