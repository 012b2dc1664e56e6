"""The tmux dashboard, for real, inside a test parent started with the parent module.

Key bindings act on keys a tmux *client* types: `tmux send-keys -t hal9000 C-b s` would hand the
keys to the program in the pane and never reach the key table. So each test attaches a real
client (`tmux -L hal9000 attach`, running in a pane of a second tmux server inside the parent)
and types into that client; the dashboard session reacts exactly as it does for a user.
"""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest

from helpers import remove_installation, started_parent

WORKER_IMAGE = "hal9000/worker:latest"


@pytest.fixture(scope="module")
def parent(docker_client, prefix, tmp_path_factory):
    """A parent of this module's own (name, volumes and home), removed with its workers at the end."""
    with started_parent(docker_client, tmp_path_factory, f"{prefix}-dash") as started:
        yield started.name


def in_parent(parent, *argv, env=None):
    options = [item for key, value in (env or {}).items() for item in ("-e", f"{key}={value}")]
    return subprocess.run(["docker", "exec", *options, parent, *argv], capture_output=True, text=True, timeout=60, check=False)


def tmux(parent, *args):
    return in_parent(parent, "tmux", "-L", "hal9000", *args)


def until(probe, timeout, what):
    """Poll ``probe`` every 0.2 s until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last seen: {last!r}")


def windows(parent):
    return tmux(parent, "list-windows", "-t", "hal9000", "-F", "#{window_name}").stdout.split()


def screen_of(parent, target, containing):
    """The text of a pane once it shows ``containing`` (else falsy)."""
    text = tmux(parent, "capture-pane", "-p", "-t", target).stdout
    return text if containing in text else None


class Client:
    """A real tmux client attached to the dashboard; typing into it triggers the key bindings."""

    def __init__(self, parent):
        self.parent = parent
        self.server = f"driver-{uuid.uuid4().hex[:6]}"

    def driver(self, *args, env=None):
        return in_parent(self.parent, "tmux", "-L", self.server, *args, env=env)

    def attach(self):
        started = self.driver("new-session", "-d", "-s", "driver", "-x", "200", "-y", "50",
                              "tmux -L hal9000 attach -t hal9000", env={"TERM": "xterm"})
        assert started.returncode == 0, started.stderr
        until(self.clients, 10, "a client on the dashboard")

    def clients(self):
        return tmux(self.parent, "list-clients", "-t", "hal9000").stdout.split("\n")[0]

    def press(self, *keys):
        pressed = self.driver("send-keys", "-t", "driver", *keys)
        assert pressed.returncode == 0, pressed.stderr

    def screen(self):
        """What the user sees: the client's whole screen, status line and prompts included."""
        return self.driver("capture-pane", "-p", "-t", "driver").stdout

    def close(self):
        self.driver("kill-server")
        for window in windows(self.parent):
            if window != "dashboard":
                tmux(self.parent, "kill-window", "-t", f"hal9000:{window}")
        # Leave no view mode (run-shell output) on the dashboard pane for the next test.
        tmux(self.parent, "send-keys", "-t", "hal9000:dashboard", "-X", "cancel")


@pytest.fixture
def client(parent):
    attached = Client(parent)
    try:
        attached.attach()
        yield attached
    finally:
        attached.close()


@pytest.fixture
def workers(docker_client, parent):
    """start(suffix) starts a worker of this parent; every container the test made is removed after it."""
    base = f"{parent}-{uuid.uuid4().hex[:6]}"
    parent_id = docker_client.api.inspect_container(parent)["Id"]

    def start(suffix, labels=True, image=WORKER_IMAGE, command=None):
        return docker_client.containers.run(
            image, command, detach=True, name=f"{base}-{suffix}",
            network_mode=f"container:{parent_id}" if labels else None,
            labels={"io.hal9000.role": "worker", "io.hal9000.parent": parent} if labels else {},
        )

    try:
        yield start
    finally:
        remove_installation(docker_client, base)


def status_of(container):
    container.reload()
    return container.status


def test_session_has_three_panes_showing_status_workers_and_usage(parent, workers):
    panes = tmux(parent, "list-panes", "-a").stdout.splitlines()
    assert len(panes) == 3 and all(line.startswith("hal9000:0.") for line in panes), panes
    commands = tmux(parent, "list-panes", "-a", "-F", "#{session_name} #{window_name} #{pane_id} #{pane_start_command}")
    rows = [line.split(" ", 3) for line in commands.stdout.splitlines()]
    assert {(row[0], row[1]) for row in rows} == {("hal9000", "dashboard")}
    by_command = {row[3].strip('"'): row[2] for row in rows}
    assert sorted(by_command) == ["watch -t -n 2 coordinator list", "watch -t -n 5 coordinator status",
                                  "watch -t -n 5 coordinator top"], by_command

    status = until(lambda: screen_of(parent, by_command["watch -t -n 5 coordinator status"], "HAL-9000 Orchestrator Status"),
                   15, "the status pane")
    assert f"Parent container: Running ({parent}" in status and "ChromaDB server: Running on port 8000" in status

    worker = workers("w1")
    listing = until(lambda: screen_of(parent, by_command["watch -t -n 2 coordinator list"], worker.name), 15,
                    "the worker table to show the new worker")
    assert listing.lstrip().startswith("NAME")


def test_prefix_s_shows_the_status(parent, client):
    client.press("C-b", "s")
    until(lambda: "status" in windows(parent), 10, "the status window")
    text = until(lambda: screen_of(parent, "hal9000:status", "Press Enter to close"), 15, "the status text")
    assert text.startswith("HAL-9000 Orchestrator Status") and f"Running ({parent}" in text, text
    tmux(parent, "send-keys", "-t", "hal9000:status", "Enter")
    until(lambda: "status" not in windows(parent), 10, "the status window to close on Enter")


def test_prefix_l_lists_the_workers(parent, client, workers):
    worker = workers("w1")
    imposter = workers("worker-imposter", labels=False, image="debian:bookworm-slim", command=["sleep", "infinity"])
    client.press("C-b", "l")
    text = until(lambda: screen_of(parent, "hal9000:workers", "Press Enter to close"), 15, "the workers window")
    assert worker.name in text and imposter.name not in text, text
    tmux(parent, "send-keys", "-t", "hal9000:workers", "Enter")
    until(lambda: "workers" not in windows(parent), 10, "the workers window to close on Enter")


def test_prefix_shift_s_asks_then_stops_all_workers(parent, client, workers):
    own = [workers("w1"), workers("w2")]
    imposter = workers("worker-imposter", labels=False, image="debian:bookworm-slim", command=["sleep", "infinity"])

    client.press("C-b", "S")
    until(lambda: "Stop all workers? (y/n)" in client.screen(), 10, "the confirmation prompt")
    client.press("n")
    until(lambda: "Stop all workers? (y/n)" not in client.screen(), 10, "the prompt to go on n")
    assert [status_of(w) for w in own] == ["running", "running"]

    client.press("C-b", "S")
    until(lambda: "Stop all workers? (y/n)" in client.screen(), 10, "the confirmation prompt")
    client.press("y")
    until(lambda: [status_of(w) for w in own] == ["exited", "exited"], 30, "both workers to stop")
    assert status_of(imposter) == "running"
    until(lambda: "Stopped 2 worker(s)" in client.screen(), 10, "stop-all's report on the screen")


def test_prefix_w_spawns_a_worker(docker_client, parent, client):
    help_text = in_parent(parent, "coordinator", "spawn", "--help")
    assert help_text.returncode == 0, help_text.stderr
    label = {"label": [f"io.hal9000.parent={parent}", "io.hal9000.role=worker"]}
    before = {c.id for c in docker_client.containers.list(ignore_removed=True, all=True, filters=label)}

    client.press("C-b", "w")
    spawned = until(lambda: [c for c in docker_client.containers.list(ignore_removed=True, filters=label) if c.id not in before], 30,
                    "a spawned worker")
    assert len(spawned) == 1
    worker = spawned[0]
    assert worker.attrs["HostConfig"]["NetworkMode"] == f"container:{docker_client.api.inspect_container(parent)['Id']}"
    assert until(lambda: f"Worker spawned in background: {worker.name}" in client.screen(), 10, "spawn's report")
    worker.remove(force=True, v=True)
