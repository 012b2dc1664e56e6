"""The coordinator CLI, for real, inside a test parent started with the parent module.

`docker exec <parent> coordinator ...` against real worker-labelled containers in the parent's
network namespace. The coordinator reads HAL9000_PARENT_NAME and HAL9000_VOLUME_PREFIX, which
the parent module sets, so it manages only this parent's workers.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest

from helpers import Fleet, started_parent, status_of


@pytest.fixture(scope="module")
def parent(docker_client, prefix, tmp_path_factory):
    """A parent of this module's own (name, volumes and home), removed with its workers at the end."""
    with started_parent(docker_client, tmp_path_factory, f"{prefix}-coord") as started:
        yield started.name


@pytest.fixture
def fleet(docker_client, parent):
    with Fleet(docker_client, parent) as made:
        yield made


def coordinator(parent, *args, stdin=None):
    return subprocess.run(["docker", "exec", "-i", parent, "coordinator", *args], input=stdin,
                          capture_output=True, text=True, timeout=60, check=False)


def ok(proc):
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    return proc.stdout


def refused(proc, *words):
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    message = proc.stderr.strip()
    assert message.startswith("coordinator: ") and "\n" not in message and "Traceback" not in message, message
    for word in words:
        assert word in message, message
    return message


def test_list_count_and_status_with_and_without_json(fleet, parent):
    running = [fleet.worker("w1"), fleet.worker("w2")]
    stopped = fleet.worker("w3", running=False)
    imposter, foreign = fleet.imposter(), fleet.foreign()

    listing = json.loads(ok(coordinator(parent, "list", "--json")))
    own = {w["name"]: w for w in listing if w["parent"] == parent}
    assert sorted(own) == sorted(c.name for c in running + [stopped]), listing
    assert {own[c.name]["state"] for c in running} == {"running"} and own[stopped.name]["state"] == "exited"
    assert all(w["network_ok"] and w["network_mode"].startswith("container:") for w in own.values())
    # Besides its own, only parent-less workers (the worker image run by hand) are listed; never these two.
    assert all(w["parent"] in (parent, "") for w in listing), listing
    assert imposter.name not in json.dumps(listing) and foreign.name not in json.dumps(listing)
    legacy_running = len([w for w in listing if w["parent"] == "" and w["state"] == "running"])

    count = json.loads(ok(coordinator(parent, "count", "--json")))
    assert count == {"running": 2 + legacy_running}
    assert ok(coordinator(parent, "count")).strip() == str(2 + legacy_running)

    text = ok(coordinator(parent, "list"))
    lines = text.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "STATUS", "IMAGE", "PROJECT"]
    for container in running + [stopped]:
        assert any(line.startswith(container.name + " ") for line in lines), text
    assert imposter.name not in text and foreign.name not in text

    status = json.loads(ok(coordinator(parent, "status", "--json")))
    assert status["parent"]["name"] == parent and status["parent"]["state"] == "running"
    assert status["parent"]["chromadb_ready"] is True
    base = parent[: -len("-parent")]
    assert status["volumes"] == [{"name": f"{base}-{kind}", "exists": True} for kind in ("chromadb", "memorybank", "plugins")]
    assert sorted(w["name"] for w in status["workers"] if w["parent"] == parent) == sorted(own)
    legacy = [w for w in status["workers"] if w["parent"] == ""]
    assert status["counts"]["total"] == 3 + len(legacy)
    assert status["counts"]["running"] == 2 + len([w for w in legacy if w["state"] == "running"])
    assert status["counts"]["stale_network"] == 0

    text = ok(coordinator(parent, "status"))
    assert text.startswith("HAL-9000 Orchestrator Status\n")
    assert f"Parent container: Running ({parent}, health " in text
    assert "ChromaDB server: Running on port 8000" in text
    assert f"Active workers: {status['counts']['running']}" in text
    assert f"  {running[0].name}: Up " in text and imposter.name not in text and foreign.name not in text


def test_logs_of_a_worker(fleet, parent):
    talker = fleet.worker("talker", ["sh", "-c", "echo hello-from-worker; exec sleep infinity"])
    deadline = time.monotonic() + 15
    while b"hello-from-worker" not in talker.logs() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "hello-from-worker" in ok(coordinator(parent, "logs", talker.name))
    refused(coordinator(parent, "logs", fleet.imposter().name), "is not a HAL-9000 worker")


def test_stop_one_worker_and_refuse_anything_else(fleet, parent):
    first, second = fleet.worker("w1"), fleet.worker("w2")
    imposter, foreign = fleet.imposter(), fleet.foreign()

    assert ok(coordinator(parent, "stop", first.name)).strip() == f"Stopped {first.name}"
    assert status_of(first) == "exited" and status_of(second) == "running"

    refused(coordinator(parent, "stop", imposter.name), imposter.name, "is not a HAL-9000 worker")
    refused(coordinator(parent, "stop", foreign.name), foreign.name, f"is not a worker of {parent}")
    refused(coordinator(parent, "stop", f"{fleet.base}-none"), "No worker named")
    for bad in ("../x", "a;b"):
        refused(coordinator(parent, "stop", bad), "Invalid worker name", bad)
    assert status_of(imposter) == "running" and status_of(foreign) == "running" and status_of(second) == "running"


def test_stop_all_stops_only_this_parents_workers(fleet, parent):
    workers = [fleet.worker("w1"), fleet.worker("w2")]
    already = fleet.worker("w3", running=False)
    warm = fleet.worker("w4", warm=True)  # the pool's: its manager would only replace it
    imposter, foreign = fleet.imposter(), fleet.foreign()
    unowned = fleet.unowned()

    lines = ok(coordinator(parent, "stop-all")).splitlines()
    assert sorted(lines[:-1]) == sorted(f"Stopped {w.name}" for w in workers)
    assert lines[-1] == "Stopped 2 worker(s)"
    assert [status_of(w) for w in workers] == ["exited", "exited"] and status_of(already) == "exited"
    assert [status_of(c) for c in (warm, imposter, foreign, unowned)] == ["running"] * 4

    listing = json.loads(ok(coordinator(parent, "list", "--json")))
    assert [w["name"] for w in listing if w["parent"] == parent and w["state"] == "running"] == [warm.name]
    assert ok(coordinator(parent, "stop-all")).splitlines()[-1] == "Stopped 0 worker(s)"


def test_attach_runs_a_shell_in_the_worker(fleet, parent):
    worker = fleet.worker("w1")
    # In the worker, not the parent: uid 1001 and the Claude Code CLI (the parent has neither).
    shell = ok(coordinator(parent, "attach", worker.name, stdin="echo hi-from-$((40 + 2)); id -u; command -v claude; exit\n"))
    assert shell.split() == ["hi-from-42", "1001", "/usr/local/bin/claude"], shell

    stopped = fleet.worker("w2", running=False)
    refused(coordinator(parent, "attach", stopped.name), "not running")
    refused(coordinator(parent, "attach", fleet.imposter().name), "is not a HAL-9000 worker")


def test_attach_with_a_terminal_through_tmux(fleet, parent):
    """The interactive path (docker exec -it) in a real terminal: a tmux window inside the parent."""
    worker = fleet.worker("w1")
    window = f"attach-{uuid.uuid4().hex[:6]}"

    def tmux(*args):
        return subprocess.run(["docker", "exec", parent, "tmux", "-L", "hal9000", *args],
                              capture_output=True, text=True, timeout=30, check=False)

    assert tmux("new-window", "-d", "-n", window, f"coordinator attach {worker.name}").returncode == 0
    try:
        deadline = time.monotonic() + 20
        screen = ""
        while "tty-42" not in screen and time.monotonic() < deadline:
            tmux("send-keys", "-t", f"hal9000:{window}", "echo tty-$((6 * 7)) $(tty)", "Enter")
            time.sleep(0.5)
            screen = tmux("capture-pane", "-p", "-t", f"hal9000:{window}").stdout
        assert "tty-42 /dev/pts/" in screen, screen
        tmux("send-keys", "-t", f"hal9000:{window}", "exit", "Enter")
        deadline = time.monotonic() + 10
        while window in tmux("list-windows", "-F", "#{window_name}").stdout and time.monotonic() < deadline:
            time.sleep(0.2)
        assert window not in tmux("list-windows", "-F", "#{window_name}").stdout
    finally:
        tmux("kill-window", "-t", f"hal9000:{window}")
    assert status_of(worker) == "running"
