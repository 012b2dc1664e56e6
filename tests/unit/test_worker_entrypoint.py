"""The worker image's entrypoint: an idle worker is tini and one sleep, nothing else (host memory per warm worker)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "images" / "worker-entrypoint.sh"
DOCKERFILES = [ROOT / "images" / f"Dockerfile.worker-{flavour}" for flavour in ("minimal", "ultramin")]


def run_entrypoint(tmp_path, *args):
    """The entrypoint, with a `sleep` on PATH that reports its PID and arguments: (status, [the shell's PID, sleep's PID,
    sleep's arguments...])."""
    fake = tmp_path / "bin" / "sleep"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$$ $*"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}:/usr/bin:/bin", "HOME": str(tmp_path)}  # no CLAUDE_HOME: nothing to prepare
    proc = subprocess.run(["sh", "-c", f'echo "$$"; exec sh {ENTRYPOINT} "$@"', "sh", *args],
                          env=env, capture_output=True, text=True, timeout=10, check=False)
    return proc.returncode, proc.stdout.split()


def test_idle_worker_sleeps_in_place_of_the_shell(tmp_path):
    """The sleep replaces the shell (same PID): no shell waits beside it (~0.2 MiB of host memory per idle worker)."""
    status, (shell, sleep, *arguments) = run_entrypoint(tmp_path)
    assert (status, sleep, arguments) == (0, shell, ["infinity"])


def test_arguments_run_in_place_of_the_shell(tmp_path):
    status, (shell, sleep, *arguments) = run_entrypoint(tmp_path, "sleep", "5")
    assert (status, sleep, arguments) == (0, shell, ["5"])


def test_tini_turns_the_stop_signal_into_status_0_in_both_flavours():
    """`docker stop` TERMs the sleep (exit 143 through tini): -e 143 keeps the clean stop's status 0."""
    entrypoints = []
    for dockerfile in DOCKERFILES:
        lines = [line for line in dockerfile.read_text().splitlines() if line.startswith("ENTRYPOINT ")]
        entrypoints.append(json.loads(lines[-1][len("ENTRYPOINT "):]))
    assert entrypoints[0] == entrypoints[1]
    tini, *options = entrypoints[0][:entrypoints[0].index("--")]
    assert os.path.basename(tini).startswith("tini") and options == ["-e", "143"]
