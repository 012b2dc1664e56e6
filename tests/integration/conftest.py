"""Integration fixtures: a real Docker Engine and real ansible-playbook runs.

Nothing here stands in for Docker. Every object a test creates carries the
session's unique prefix and is removed at the end, whatever happened.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import docker
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def docker_client():
    """The real engine; the suite fails (never skips) when none answers."""
    client = docker.from_env()
    try:
        client.ping()
    except Exception as exc:  # any failure to reach it is fatal for the suite
        pytest.fail(f"No Docker Engine answers ({exc}); run scripts/quickstart.sh --engine-only first.")
    return client


@pytest.fixture(scope="session")
def prefix(docker_client):
    """A unique name prefix; everything left with it is removed at the end."""
    value = f"h9test-{uuid.uuid4().hex[:8]}"
    yield value
    for container in docker_client.containers.list(ignore_removed=True, all=True, filters={"name": value}):
        container.remove(force=True, v=True)
    for volume in docker_client.volumes.list(filters={"name": value}):
        volume.remove(force=True)


class AnsibleRunner:
    """Runs tasks and playbooks through ansible-playbook, the way users do."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0")

    def playbook(self, path, *args, check=True):
        cmd = [str(BIN / "ansible-playbook"), "-i", str(REPO_ROOT / "inventory" / "localhost.yml"), str(path), *args]
        proc = subprocess.run(cmd, cwd=self.workdir, env=self.env, capture_output=True, text=True, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def task(self, module, args, check_mode=False, diff=False, python=None):
        """Run one module task and return its result dict (failed or not)."""
        out = self.workdir / f"result-{uuid.uuid4().hex}.json"
        play = [
            {
                "name": "One task",
                "hosts": "localhost",
                "gather_facts": False,
                "vars": {"ansible_python_interpreter": python} if python else {},
                "tasks": [
                    {
                        "name": "Run the module",
                        module: args,
                        "register": "result",
                        "check_mode": check_mode,
                        "diff": diff,
                        "ignore_errors": True,
                    },
                    {
                        "name": "Save the result",
                        "ansible.builtin.copy": {"content": "{{ result | to_json }}", "dest": str(out), "mode": "0600"},
                        "check_mode": False,
                    },
                ],
            }
        ]
        book = self.workdir / f"task-{uuid.uuid4().hex}.yml"
        book.write_text(yaml.safe_dump(play))
        proc = self.playbook(book, check=False)
        if not out.exists():
            raise AssertionError(f"the task produced no result:\n{proc.stdout}\n{proc.stderr}")
        result = json.loads(out.read_text())
        result["_stdout"] = proc.stdout
        return result


@pytest.fixture
def ansible(tmp_path):
    return AnsibleRunner(tmp_path)
