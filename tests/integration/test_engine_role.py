"""The engine role starts a real dockerd when none answers, and only then reports changed.

The test daemon has its own socket, data and state directories, so the
host's engine is left alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import docker
import pytest

from helpers import REPO_ROOT


@pytest.fixture
def second_engine():
    # Short path: containerd's socket under --exec-root must fit in 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="h9e-", dir="/tmp"))
    bridge = f"h9e{os.getpid() % 100000}"
    extra = {
        "engine_socket": str(root / "docker.sock"),
        "engine_pidfile": str(root / "dockerd.pid"),
        "engine_logfile": str(root / "dockerd.log"),
        "engine_dockerd_args": [
            f"--data-root={root / 'data'}", f"--exec-root={root / 'exec'}",
            # A bridge of its own: --bridge=none would delete the host engine's docker0.
            f"--bridge={bridge}", "--iptables=false", "--ip-masq=false",
        ],
    }
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "addr", "add", "10.213.0.1/24", "dev", bridge], check=True)
    yield extra
    pidfile = root / "dockerd.pid"
    if pidfile.exists():
        pid = int(pidfile.read_text())
        os.kill(pid, signal.SIGTERM)
        for _attempt in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run(["ip", "link", "delete", bridge], check=False)


def changed_count(stdout):
    return int(re.findall(r"changed=(\d+)", stdout.split("PLAY RECAP")[-1])[0])


def test_engine_role_starts_dockerd_once(ansible, second_engine):
    playbook = REPO_ROOT / "playbooks" / "engine.yml"
    first = ansible.playbook(playbook, "-e", json.dumps(second_engine))
    assert changed_count(first.stdout) >= 1
    client = docker.DockerClient(base_url=f"unix://{second_engine['engine_socket']}")
    assert client.ping() is True
    assert "API listen on" in open(second_engine["engine_logfile"]).read()

    again = ansible.playbook(playbook, "-e", json.dumps(second_engine))
    assert changed_count(again.stdout) == 0


def test_engine_role_opt_out_fails_plainly(ansible, tmp_path):
    extra = {"engine_manage": False, "engine_socket": str(tmp_path / "none.sock")}
    proc = ansible.playbook(REPO_ROOT / "playbooks" / "engine.yml", "-e", json.dumps(extra), check=False)
    assert proc.returncode != 0
    assert f"Cannot connect to the Docker daemon at unix://{tmp_path / 'none.sock'}" in proc.stdout
