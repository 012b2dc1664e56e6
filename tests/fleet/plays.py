"""Playbooks against test nodes, run from a snapshot of the collection (shared by the fleet and fault tests).

The snapshot is taken once per module: others may edit the working tree while tests run, and a file changed
between two plays would, for example, make a build host rebuild.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import docker

from nodes import BASE_IMAGE

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def collection_snapshot(root):
    """A copy of the working tree (what git would commit, tracked or new) as ROOT/ansible_collections/hal9000/dind."""
    root = Path(root)
    tree = root / "ansible_collections" / "hal9000" / "dind"
    tree.mkdir(parents=True)
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO_ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    files = [f for f in files if not f.startswith(".ansible/") and (REPO_ROOT / f).is_file()]
    subprocess.run(["tar", "-cf", root / "tree.tar", "-C", REPO_ROOT, *files], check=True)
    subprocess.run(["tar", "-xf", root / "tree.tar", "-C", tree], check=True)
    return tree


def play(collection, workdir, playbook, inventory, extra_vars=None, check=False):
    """Run a playbook (a path, or a list of plays) from the collection snapshot; the JSON callback's result."""
    workdir = Path(workdir)
    if not isinstance(playbook, (str, Path)):
        path = workdir / f"play-{time.monotonic_ns()}.yml"
        path.write_text(json.dumps(playbook))
        playbook = path
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collection.parents[2]), ANSIBLE_STDOUT_CALLBACK="fleet_json",
               ANSIBLE_CALLBACK_PLUGINS=str(REPO_ROOT / "tests" / "fleet" / "callback_plugins"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_HOST_KEY_CHECKING="0")
    cmd = [str(BIN / "ansible-playbook"), "-i", str(inventory), str(playbook), "-e", json.dumps(extra_vars or {})]
    if check:
        cmd.append("--check")
    proc = subprocess.run(cmd, cwd=collection, env=env, capture_output=True, text=True, check=False)
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"{' '.join(cmd)} printed no JSON:\n{proc.stdout}\n{proc.stderr}") from None
    result["rc"] = proc.returncode
    return result


def distribute(collection, workdir, docker_host, images, targets, **task_options):
    """hal9000.dind.image_distribute on the controller, from ``docker_host`` to ``targets`` (name -> docker_host):
    (the play's result, the task's result or {} when it did not run)."""
    task = {"hal9000.dind.image_distribute": {
        "docker_host": docker_host, "images": images,
        "targets": [{"name": name, "docker_host": host} for name, host in targets.items()]}, **task_options}
    result = play(collection, workdir, [{"hosts": "localhost", "gather_facts": False, "tasks": [task]}],
                  REPO_ROOT / "inventory" / "localhost.yml")
    return result, task_results(result, "image_distribute").get("localhost", {})


def task_results(result, name):
    """host -> result of the (last) task whose name ends with ``name``."""
    found = {}
    for each in result["plays"]:
        for task in each["tasks"]:
            if task["task"]["name"].endswith(name):
                found = task["hosts"]
    return found


def batch_results(result, name):
    """host -> result of the task whose name ends with ``name``, across a serial play's batches (each starts the task anew)."""
    found = {}
    for each in result["plays"]:
        for task in each["tasks"]:
            if task["task"]["name"].endswith(name):
                for host, outcome in task["hosts"].items():
                    if not outcome.get("skipped") or host not in found:
                        found[host] = outcome
    return found


def seed_build_host(nodes, collection, workdir):
    """node1 gets the base image and a parent image with the snapshot's build digest, built here under a private tag
    (removed here again), so its build finds that digest and needs no network; the tag's name."""
    seed = f"{nodes.prefix}/parent:seed"
    try:
        result = play(collection, workdir, [{"hosts": "localhost", "gather_facts": False, "tasks": [
            {"hal9000.dind.image": {"name": seed, "flavour": "parent", "context": str(collection),
                                    "extra_ca_dir": "/usr/local/share/ca-certificates"}}]}],
            REPO_ROOT / "inventory" / "localhost.yml")
        if result["rc"] != 0:
            raise RuntimeError(f"building {seed} failed: {json.dumps(task_results(result, 'image'))}")
        nodes.load(nodes[0], BASE_IMAGE, seed)
    finally:
        with contextlib.suppress(docker.errors.APIError):
            nodes.client.api.remove_image(seed)  # the tag only (never built: nothing to remove)
    return seed
