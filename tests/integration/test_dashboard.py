"""The tmux dashboard, for real, inside a test parent started with the parent module.

Key bindings act on keys a tmux *client* types: `tmux send-keys -t hal9000 C-b s` would hand the
keys to the program in the pane and never reach the key table. So each test attaches a real
client (`tmux -L hal9000 attach`, running in a pane of a second tmux server inside the parent)
and types into that client; the dashboard session reacts exactly as it does for a user.
"""

from __future__ import annotations

import subprocess
import uuid

import pytest

from helpers import Fleet, started_parent, status_of, wait_for


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
        wait_for(self.clients, 10, "a client on the dashboard")

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
def fleet(docker_client, parent):
    with Fleet(docker_client, parent) as made:
        yield made


def test_session_has_three_panes_showing_status_workers_and_usage(parent, fleet):
    panes = tmux(parent, "list-panes", "-a").stdout.splitlines()
    assert len(panes) == 3 and all(line.startswith("hal9000:0.") for line in panes), panes
    commands = tmux(parent, "list-panes", "-a", "-F", "#{session_name} #{window_name} #{pane_id} #{pane_start_command}")
    rows = [line.split(" ", 3) for line in commands.stdout.splitlines()]
    assert {(row[0], row[1]) for row in rows} == {("hal9000", "dashboard")}
    by_command = {row[3].strip('"'): row[2] for row in rows}
    assert sorted(by_command) == ["watch -t -n 2 coordinator list", "watch -t -n 5 coordinator status",
                                  "watch -t -n 5 coordinator top"], by_command

    status = wait_for(lambda: screen_of(parent, by_command["watch -t -n 5 coordinator status"], "HAL-9000 Orchestrator Status"),
                      15, "the status pane")
    assert f"Parent container: Running ({parent}" in status and "ChromaDB server: Running on port 8000" in status

    worker = fleet.worker("w1")
    listing = wait_for(lambda: screen_of(parent, by_command["watch -t -n 2 coordinator list"], worker.name), 15,
                       "the worker table to show the new worker")
    assert listing.lstrip().startswith("NAME")


def test_prefix_r_reloads_the_dashboards_own_file(parent, client):
    """Reloads /opt/hal9000/bin/tmux-dashboard.conf (the reference reloaded another file): a setting changed since comes back."""
    assert tmux(parent, "set-option", "-g", "status-interval", "99").returncode == 0
    client.press("C-b", "r")
    wait_for(lambda: tmux(parent, "show-options", "-gv", "status-interval").stdout.strip() == "5", 10,
             "the file's status-interval back")
    wait_for(lambda: "dashboard configuration reloaded" in client.screen(), 10, "the reload's message")


def test_prefix_s_shows_the_status(parent, client):
    client.press("C-b", "s")
    wait_for(lambda: "status" in windows(parent), 10, "the status window")
    text = wait_for(lambda: screen_of(parent, "hal9000:status", "Press Enter to close"), 15, "the status text")
    assert text.startswith("HAL-9000 Orchestrator Status") and f"Running ({parent}" in text, text
    tmux(parent, "send-keys", "-t", "hal9000:status", "Enter")
    wait_for(lambda: "status" not in windows(parent), 10, "the status window to close on Enter")


def test_prefix_l_lists_the_workers(parent, client, fleet):
    worker = fleet.worker("w1")
    imposter = fleet.imposter()
    client.press("C-b", "l")
    text = wait_for(lambda: screen_of(parent, "hal9000:workers", "Press Enter to close"), 15, "the workers window")
    assert worker.name in text and imposter.name not in text, text
    tmux(parent, "send-keys", "-t", "hal9000:workers", "Enter")
    wait_for(lambda: "workers" not in windows(parent), 10, "the workers window to close on Enter")


def test_prefix_shift_s_asks_then_stops_all_workers(parent, client, fleet):
    own = [fleet.worker("w1"), fleet.worker("w2")]
    imposter = fleet.imposter()

    client.press("C-b", "S")
    wait_for(lambda: "Stop all workers? (y/n)" in client.screen(), 10, "the confirmation prompt")
    client.press("n")
    wait_for(lambda: "Stop all workers? (y/n)" not in client.screen(), 10, "the prompt to go on n")
    assert [status_of(w) for w in own] == ["running", "running"]

    client.press("C-b", "S")
    wait_for(lambda: "Stop all workers? (y/n)" in client.screen(), 10, "the confirmation prompt")
    client.press("y")
    wait_for(lambda: [status_of(w) for w in own] == ["exited", "exited"], 30, "both workers to stop")
    assert status_of(imposter) == "running"
    wait_for(lambda: "Stopped 2 worker(s)" in client.screen(), 10, "stop-all's report on the screen")


def test_prefix_w_spawns_a_worker(docker_client, parent, client):
    help_text = in_parent(parent, "coordinator", "spawn", "--help")
    assert help_text.returncode == 0, help_text.stderr
    label = {"label": [f"io.hal9000.parent={parent}", "io.hal9000.role=worker"]}
    before = {c.id for c in docker_client.containers.list(ignore_removed=True, all=True, filters=label)}

    client.press("C-b", "w")
    spawned = wait_for(lambda: [c for c in docker_client.containers.list(ignore_removed=True, filters=label) if c.id not in before], 30,
                       "a spawned worker")
    assert len(spawned) == 1
    worker = spawned[0]
    assert worker.attrs["HostConfig"]["NetworkMode"] == f"container:{docker_client.api.inspect_container(parent)['Id']}"
    assert wait_for(lambda: f"Worker spawned in background: {worker.name}" in client.screen(), 10, "spawn's report")
    worker.remove(force=True, v=True)
