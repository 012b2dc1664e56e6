"""Faults of the parent, without Docker: a full disk, a restarted daemon's socket, two starts at once, worker storage.

The parent's programs (images/parent) are imported as they run in the image; their paths are pointed at
a temporary home. A full disk is /dev/full (every write: ENOSPC), never a mock of the file system.
"""

from __future__ import annotations

import errno
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from docker.errors import APIError
from docker.types import HostConfig

from ansible_collections.hal9000.dind.plugins.module_utils import parent as parent_utils
from ansible_collections.hal9000.dind.plugins.module_utils import workers
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.fleet import LABEL_SPEC
from ansible_collections.hal9000.dind.plugins.module_utils.settings import resolve
from ansible_collections.hal9000.dind.plugins.module_utils.status import format_status

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "images" / "parent"))
try:
    import entrypoint
    import healthcheck
    import pool_manager
finally:
    sys.path.pop(0)

FULL = OSError(errno.ENOSPC, "No space left on device")


# ------------------------------------------------------------------------------------ a full disk ----

@pytest.fixture
def home(tmp_path, monkeypatch):
    """The parent's home and run directory in tmp_path; its logs and start-up record written to /dev/full."""
    home, run = tmp_path / "home", tmp_path / "run"
    (home / "logs").mkdir(parents=True)
    run.mkdir()
    for name in ("parent.log", "chromadb.log", "image-pull.log"):
        (home / "logs" / name).symlink_to("/dev/full")
    (run / "startup.json.tmp").symlink_to("/dev/full")
    monkeypatch.setattr(entrypoint, "HOME_IN_PARENT", str(home))
    monkeypatch.setattr(entrypoint, "STARTUP_FILE", str(run / "startup.json"))
    monkeypatch.setattr(healthcheck, "WRITTEN", (str(home), str(run)))
    return home


def full_parent():
    parent = entrypoint.Parent()
    parent.log_file = entrypoint.HomeLog("parent.log", parent.cannot_write, parent.written)
    return parent


def said(capsys, words):
    return [line for line in capsys.readouterr().out.splitlines() if words in line]


def test_log_lines_on_a_full_disk_are_dropped_and_the_disk_named_once(home, capsys):
    parent = full_parent()
    for number in range(3):
        parent.log(f"line {number}")
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if "line " in line and "[parent]" in line][-1].endswith("line 2")
    full = [line for line in out.splitlines() if "disk full" in line]
    assert len(full) == 1 and full[0].endswith(f"ERROR: disk full: {home}, free space needed; "
                                               "the parent serves on without writing there"), out


def test_the_start_up_record_on_a_full_disk_never_stops_the_parent(home, capsys):
    parent = full_parent()
    parent.record(chromadb_ready=True)  # raised OSError before: the restart policy looped
    parent.record(relay_ready=True)
    assert parent.state["chromadb_ready"] and parent.state["relay_ready"], "kept in memory"
    run = os.path.dirname(entrypoint.STARTUP_FILE)  # named as the health check names it: the run directory
    assert len(said(capsys, f"disk full: {run}, free space needed")) == 1


class FullApi:
    """Every call fails as a full disk under the home would (the daemon's answers are not the point here)."""

    def __init__(self, home):
        self.home = home

    def containers(self, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", os.path.join(self.home, "run", "relay", "tokens", "x"))

    def inspect_container(self, _container_id):
        raise OSError(errno.ENOSPC, "No space left on device", os.path.join(self.home, "sessions", "x.json"))


class FullClient:
    def __init__(self, home, events=()):
        self.api = FullApi(home)
        self._events = list(events)

    def events(self, **_kwargs):
        yield from self._events


def test_housekeeping_session_records_and_managed_settings_on_a_full_disk(home, capsys, monkeypatch, tmp_path):
    parent = full_parent()
    parent.client = FullClient(str(home))
    parent.settings = {"session_records_max_age": 30}
    monkeypatch.setattr(entrypoint, "POOL_PID_FILE", str(tmp_path / "no-pool.pid"))
    (home / "sessions").mkdir()
    (home / "sessions" / "0123.json").write_text('{"container_id": "0123", "ended": null}')

    def no_space(*_args):
        raise OSError(errno.ENOSPC, "No space left on device", str(home / "run" / "relay" / "client" / "m.json"))

    monkeypatch.setattr(entrypoint, "write_managed_settings", no_space)
    for _round in range(2):
        parent.housekeeping()  # prune, managed settings, session records: each hits the full disk
        parent.refresh_managed_settings()
    assert len(said(capsys, f"disk full: {home}, free space needed")) == 1


def test_a_session_record_on_a_full_disk_keeps_the_events_followed(home, capsys, monkeypatch):
    parent = full_parent()
    die = {"Action": "die", "Actor": {"ID": "ab" * 32, "Attributes": {"exitCode": "0"}}, "timeNano": 1e18}

    def record_end(*_args):
        parent.stopping.set()  # one event is enough
        raise OSError(errno.ENOSPC, "No space left on device", str(home / "sessions" / "x.json"))

    monkeypatch.setattr(entrypoint, "record_end", record_end)
    parent.client = FullClient(str(home), [die])
    parent.follow_worker_deaths()
    out = capsys.readouterr().out
    assert "disk full: " + str(home) in out and "worker events interrupted" not in out, out


def test_chromadbs_output_is_drained_even_when_its_log_cannot_be_written(home):
    """ChromaDB exits when it cannot write its output: it writes into a pipe the parent drains."""
    parent = full_parent()
    child = subprocess.Popen([sys.executable, "-c", "import sys\nfor i in range(20000): print('x' * 100)"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    entrypoint.copy_lines(child.stdout, entrypoint.HomeLog("chromadb.log", parent.cannot_write, parent.written))
    assert child.wait(timeout=30) == 0
    assert parent.unwritable == {str(home)}


def test_the_pool_managers_log_on_a_full_disk(home, monkeypatch, capsys):
    (home / "logs" / "pool-manager.log").symlink_to("/dev/full")
    monkeypatch.setattr(pool_manager, "HOME_IN_PARENT", str(home))  # the log's owner is the home's
    manager = pool_manager.Manager.__new__(pool_manager.Manager)  # no Docker: only its log
    manager.log_path, manager.log_file, manager.log_failed = str(home / "logs" / "pool-manager.log"), None, False
    for number in range(3):
        manager.log(f"line {number}")
    err = capsys.readouterr().err.splitlines()
    assert err == [f"pool manager: disk full: {home}, free space needed"]


def test_the_health_check_names_the_full_disk(tmp_path, monkeypatch, capsys):
    class Stats:
        def __init__(self, blocks, inodes=100):
            self.f_bavail, self.f_frsize, self.f_files, self.f_favail = blocks, 4096, 100, inodes

    stats = {"/a": Stats(10_000), "/b": Stats(0), "/c": Stats(10_000, inodes=0)}
    assert healthcheck.full_disk(["/a", "/b"], stats.__getitem__) == "/b"
    assert healthcheck.full_disk(["/a", "/c"], stats.__getitem__) == "/c", "no inodes left is full too"
    assert healthcheck.full_disk(["/a", "/missing"], lambda p: stats[p] if p in stats else os.statvfs(p)) is None
    assert healthcheck.written_root("/root/.hal9000/logs/parent.log") == "/root/.hal9000"

    monkeypatch.setattr(healthcheck, "WRITTEN", (str(tmp_path),))
    monkeypatch.setattr(healthcheck, "MIN_FREE", 2 ** 62)  # tmp_path's file system counts as full
    assert healthcheck.main() == 1
    assert capsys.readouterr().out.strip() == f"disk full: {tmp_path}, free space needed"


# ------------------------------------------------------------------ the Docker socket's directory ----

def parent_spec(socket_path="/var/run/docker.sock"):
    return parent_utils.parent_spec("h9unit-parent", "hal9000/parent:latest", "/srv/h9", socket_path, "4g", 2, {}, "h9unit")


def test_the_parent_mounts_the_sockets_directory_read_only_never_the_socket_file():
    spec = parent_spec("/run/user/1000/docker.sock")
    assert "/run/user/1000/docker.sock" not in spec["binds"]
    assert all(bind["bind"] != "/var/run/docker.sock" for bind in spec["binds"].values())
    assert spec["environment"]["HAL9000_DOCKER_SOCKET"] == "/run/hal9000-docker/docker.sock"
    assert parent_utils.socket_dir_mount(spec["socket_dir"]) == {
        "Type": "bind", "Source": "/run/user/1000", "Target": "/run/hal9000-docker", "ReadOnly": True,
        "BindOptions": {"NonRecursive": True}}
    assert spec["tmpfs"] == {"/run/hal9000": "rw,nosuid,nodev,size=16m"}
    assert parent_spec("/run/podman/podman.sock")["digest"] != parent_spec()["digest"]


def test_the_entrypoint_links_the_socket_in_the_mounted_directory(tmp_path):
    link = tmp_path / "docker.sock"
    entrypoint.link_docker_socket("/run/hal9000-docker/docker.sock", str(link))
    assert os.readlink(link) == "/run/hal9000-docker/docker.sock"
    entrypoint.link_docker_socket("/run/hal9000-docker/podman.sock", str(link))
    assert os.readlink(link) == "/run/hal9000-docker/podman.sock", "a changed socket name is followed"
    link.unlink()
    with socket.socket(socket.AF_UNIX) as bound:  # a socket bound there by hand (docker run -v ...) stays
        bound.bind(str(link))
        entrypoint.link_docker_socket("/run/hal9000-docker/docker.sock", str(link))
        assert not link.is_symlink()


class ExecApi:
    """Execs in the parent: the health check's socket probe answers ``code`` (after ``busy`` timed-out probes);
    the start-up record has ``phases``."""

    def __init__(self, code, phases=("critical_init",), busy=0):
        self.code, self.phases, self.commands, self.busy = code, phases, [], busy

    def exec_create(self, _container, command):
        self.commands.append(command)
        return {"Id": len(self.commands) - 1}

    def exec_start(self, exec_id):
        if self.commands[exec_id][0] == "cat":
            return json.dumps({"phases_ms": {phase: 5 for phase in self.phases}}).encode()
        return b""

    def exec_inspect(self, exec_id):
        if self.commands[exec_id][0] == "cat":
            return {"ExitCode": 0}
        if self.busy:
            self.busy -= 1
            return {"ExitCode": 1}
        return {"ExitCode": self.code}


class Client:
    def __init__(self, api):
        self.api = api


def test_a_running_parent_whose_socket_is_dead_is_recreated(monkeypatch):
    monkeypatch.setattr(parent_utils.time, "sleep", lambda _seconds: None)
    spec = parent_spec()
    current = {"Id": "p1", "Image": "sha256:i", "Config": {"Labels": {LABEL_SPEC: spec["digest"]}},
               "State": {"Running": True}}
    dead, alive = ExecApi(1), ExecApi(0)
    assert "Docker socket does not answer" in parent_utils.stale_reason(Client(dead), current, spec, "sha256:i")
    assert dead.commands[0] == ["python3", "/opt/hal9000/bin/healthcheck.py", "socket"]
    assert dead.commands.count(dead.commands[0]) == 3, "asked three times before judged dead"
    starting = ExecApi(1, phases=())  # its socket not linked yet: another start made it a moment ago
    assert parent_utils.stale_reason(Client(starting), current, spec, "sha256:i") is None
    assert parent_utils.stale_reason(Client(alive), current, spec, "sha256:i") is None
    assert parent_utils.stale_reason(Client(alive), current, spec, "sha256:new") == "options or image changed"


def test_one_probe_timing_out_on_a_busy_host_does_not_recreate_the_parent(monkeypatch):
    """The CI failure: a second start judged the first's new parent dead on one slow probe and replaced it."""
    monkeypatch.setattr(parent_utils.time, "sleep", lambda _seconds: None)
    spec = parent_spec()
    current = {"Id": "p1", "Image": "sha256:i", "Config": {"Labels": {LABEL_SPEC: spec["digest"]}},
               "State": {"Running": True}}
    assert parent_utils.stale_reason(Client(ExecApi(0, busy=2)), current, spec, "sha256:i") is None


# --------------------------------------------------------------------------- two starts at once ----

class ReplacedApi(ExecApi):
    """p1 is being removed (another start replaced it); the name now holds p2, which becomes ready."""

    def __init__(self):
        super().__init__(0)
        self.removed = set()

    def inspect_container(self, name):
        if name == "p1":
            return {"Id": "p1", "State": {"Status": "removing"}}
        return {"Id": "p2", "State": {"Status": "running"}}

    def exec_create(self, container, command):
        if container == "p1":
            raise APIError("Conflict", response=type("R", (), {"status_code": 409, "reason": "Conflict"})(),
                           explanation="container is marked for removal")
        self.commands.append(command)
        return {"Id": len(self.commands)}

    def exec_start(self, _exec_id):
        return json.dumps({"chromadb_ready": True}).encode()

    def exec_inspect(self, _exec_id):
        return {"ExitCode": 0}

    def logs(self, _container, tail):
        raise APIError("Conflict", response=type("R", (), {"status_code": 409, "reason": "Conflict"})(),
                       explanation="can not get logs from container which is dead or marked for removal")


def test_a_start_waiting_for_a_parent_another_start_replaced_follows_the_name():
    api = ReplacedApi()
    assert parent_utils.wait_until_ready(Client(api), "p1", 5, name="h9unit-parent") == "p2"
    with pytest.raises(Hal9000Error) as caught:  # without the name there is nothing to follow
        parent_utils.wait_until_ready(Client(api), "p1", 1)
    assert "removed while starting" in str(caught.value) and "\n" not in str(caught.value)


class ExitingApi:
    """A parent whose entrypoint exits at once: exited, or restarted by its restart policy again and again."""

    def __init__(self, state, restarts=0):
        self.state, self.restarts = state, restarts

    def inspect_container(self, _name):
        return {"Id": "p1", "State": self.state, "RestartCount": self.restarts}

    def logs(self, _container, tail):
        return b"starting\nno such setting: X\n"


def test_a_parent_that_exits_while_starting_is_reported_as_such(monkeypatch):
    monkeypatch.setattr(parent_utils.time, "sleep", lambda _seconds: None)
    with pytest.raises(Hal9000Error) as caught:  # no restart policy: it is over at once
        parent_utils.wait_until_ready(Client(ExitingApi({"Status": "exited", "ExitCode": 3})), "p1", 60)
    assert str(caught.value) == ("The parent exited (code 3) before it was ready (ChromaDB answering); "
                                 "its last log lines: starting | no such setting: X")
    with pytest.raises(Hal9000Error) as caught:  # restarted meanwhile: the whole wait, then how often it exited
        parent_utils.wait_until_ready(Client(ExitingApi({"Status": "restarting", "ExitCode": 3}, restarts=4)), "p1", 0.2)
    assert str(caught.value).startswith("The parent did not become ready (ChromaDB answering) within 0.2 s "
                                        "(it exited 4 times, last with code 3); its last log lines: starting")


class CreateApi:
    """create_container answers 409 (another start made it first); inspect shows what that start made."""

    def __init__(self, digest):
        self.digest = digest

    def create_host_config(self, **kwargs):
        return HostConfig("1.41", **kwargs)

    def create_container(self, **_kwargs):
        raise APIError("Conflict", response=type("R", (), {"status_code": 409, "reason": "Conflict"})(),
                       explanation='The container name "/h9unit-parent" is already in use')

    def inspect_container(self, name):
        return {"Id": "other-start", "Name": f"/{name}", "Config": {"Labels": {LABEL_SPEC: self.digest}}}


def test_a_parent_made_meanwhile_by_another_start_is_adopted_when_it_is_the_same():
    spec = parent_spec()
    assert parent_utils.create_parent(Client(CreateApi(spec["digest"])), spec) == "other-start"
    with pytest.raises(Hal9000Error) as caught:
        parent_utils.create_parent(Client(CreateApi("another-digest")), spec)
    assert "at the same time by another start" in str(caught.value) and "\n" not in str(caught.value)


# ------------------------------------------------------------------------ a killed pool manager ----

def watched_parent(monkeypatch, tmp_path, enabled, capsys):
    """A parent whose pool manager (a real child process) has died; starting another is recorded."""
    monkeypatch.setattr(entrypoint, "POOL_PID_FILE", str(tmp_path / "pool.pid"))
    parent = entrypoint.Parent()
    parent.pool = subprocess.Popen([sys.executable, "-c", "raise SystemExit(137)"])
    parent.pool.wait()
    parent.pool_seen = True  # it ran at the last look
    started = []
    monkeypatch.setattr(parent, "pool_enabled", lambda say=False: enabled)
    monkeypatch.setattr(parent, "start_pool_manager", lambda: started.append(True))
    capsys.readouterr()
    return parent, started


def test_a_dead_pool_manager_is_started_again_while_the_pool_is_enabled(monkeypatch, tmp_path, capsys):
    parent, started = watched_parent(monkeypatch, tmp_path, True, capsys)
    parent.keep_pool_manager()
    assert started == [True]
    assert said(capsys, "the pool manager is not running (exit code 137); starting it again")


def test_a_pool_stopped_on_purpose_stays_stopped(monkeypatch, tmp_path, capsys):
    parent, started = watched_parent(monkeypatch, tmp_path, False, capsys)  # `coordinator pool stop` disabled it
    parent.keep_pool_manager()
    assert started == [] and not said(capsys, "starting it again")


def test_a_pool_just_enabled_is_left_to_whoever_enabled_it(monkeypatch, tmp_path, capsys):
    """The pool module writes pools.json, then starts the manager: no second start in between."""
    parent, started = watched_parent(monkeypatch, tmp_path, True, capsys)
    parent.pool, parent.pool_seen = None, False
    parent.keep_pool_manager()
    assert started == [] and not said(capsys, "starting it again")
    (tmp_path / "pool.pid").write_text(str(os.getpid()))  # now it runs: from here on it is watched
    parent.keep_pool_manager()
    assert parent.pool_seen is True


def test_a_manager_another_command_started_is_left_alone(monkeypatch, tmp_path, capsys):
    parent, started = watched_parent(monkeypatch, tmp_path, True, capsys)
    (tmp_path / "pool.pid").write_text(str(os.getpid()))  # `coordinator pool start`'s manager runs
    parent.keep_pool_manager()
    assert started == []


def test_only_one_pool_manager_holds_the_lock(tmp_path):
    lock = str(tmp_path / "pool-manager.lock")
    first = pool_manager.hold_lock(lock)
    assert first is not None
    assert pool_manager.hold_lock(lock) is None, "a second manager stops"
    first.close()
    again = pool_manager.hold_lock(lock)
    assert again is not None, "free again once the first is gone"
    again.close()


# ------------------------------------------------------------------------------- worker storage ----

def worker(**args):
    return workers.worker_spec(**dict({"name": "h9unit-w", "check_host_paths": False}, **args))


def test_storage_size_comes_from_the_settings_and_changes_the_digest():
    assert worker()["storage_size"] == 10 * 1024 ** 3
    assert worker(settings=resolve(file_values={"WORKER_STORAGE_SIZE": "2g"}))["storage_size"] == 2 * 1024 ** 3
    assert worker(storage_size="64m")["storage_size"] == 64 * 1024 ** 2
    assert worker(storage_size="64m")["digest"] != worker()["digest"], "a new size recreates the worker"
    assert worker(no_limits=True)["storage_size"] == 10 * 1024 ** 3, "no_limits never lifts the storage limit"
    with pytest.raises(Hal9000Error) as caught:
        worker(storage_size="lots")
    assert str(caught.value).startswith("storage_size: Invalid size 'lots'")


@pytest.mark.parametrize("info,possible", [
    ({"Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "extfs"]]}, False),
    ({"Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "xfs"]]}, True),
    ({"Driver": "btrfs", "DriverStatus": []}, True),
    ({"Driver": "overlayfs", "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]}, False),
    ({"Driver": "vfs"}, False),
])
def test_which_storage_drivers_may_cap_the_layer(info, possible):
    assert workers.layer_quota_possible(info) is possible


def test_every_scratch_path_is_a_tmpfs_of_the_storage_size_and_the_layer_capped_where_it_can_be():
    spec = worker(storage_size="8m")
    storage_opt, tmpfs = workers.storage_settings(spec, quota=False)
    assert storage_opt is None
    assert tmpfs == {path: f"rw,nosuid,nodev,size={8 * 1024 ** 2}" for path in ("/tmp", "/var/tmp", "/run/lock")}
    storage_opt, tmpfs = workers.storage_settings(worker(), quota=True)
    assert storage_opt == {"size": str(10 * 1024 ** 3)}
    assert tmpfs["/tmp"] == f"rw,nosuid,nodev,size={512 * 1024 ** 2}", "tmpfs is memory: never more than 512m"


class QuotaApi:
    """An engine whose driver looks able to cap the layer (xfs) but refuses it at create (no pquota)."""

    base_url = "http+docker://h9unit-xfs-without-pquota"

    def __init__(self):
        self.created = []

    def info(self):
        return {"Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "xfs"]]}

    def create_host_config(self, **kwargs):
        return HostConfig("1.41", **kwargs)

    def create_container(self, host_config, **_kwargs):
        if "StorageOpt" in host_config:
            raise APIError("500", explanation="--storage-opt is supported only for overlay over xfs with 'pquota' mount option")
        self.created.append(host_config)
        return {"Id": "w1"}


def test_a_layer_size_the_engine_refuses_falls_back_to_the_tmpfs_scratch_paths():
    api = QuotaApi()
    spec = worker(storage_size="8m", mode="legacy")
    assert workers.create_worker(Client(api), spec, workers.ParentNetwork("bridge", "", "")) == "w1"
    assert "StorageOpt" not in api.created[0] and set(api.created[0]["Tmpfs"]) >= {"/tmp", "/var/tmp", "/run/lock"}
    assert workers.layer_quota(Client(api)) is False, "learnt: the next worker is not refused first"


def test_the_status_text_says_why_the_parent_is_unhealthy():
    parent = {"name": "hal9000-parent", "state": "running", "health": "unhealthy", "started_at": "2026-11-30T05:00:00Z",
              "chromadb_ready": True, "startup": {}, "health_detail": "disk full: /root/.hal9000, free space needed"}
    lines = format_status({"parent": parent, "workers": [], "volumes": [], "relay": {}}).splitlines()
    assert lines[1:4] == ["Parent container: Running (hal9000-parent, health unhealthy)", "  Started: 2026-11-30T05:00:00Z",
                          "  disk full: /root/.hal9000, free space needed"], lines
    healthy = format_status({"parent": dict(parent, health="healthy"), "workers": [], "volumes": [], "relay": {}})
    assert "disk full" not in healthy


# ----------------------------------------------------------------------------- a slow ChromaDB ----

class Heartbeat(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802  (the handler's name is http.server's)
        self.send_response(200 if self.path == "/api/v2/heartbeat" else 404)
        self.end_headers()

    def log_message(self, *_args):
        pass


def test_a_chromadb_that_answers_after_the_wait_is_recorded_ready_then(tmp_path, monkeypatch):
    """Before, the parent said "still waiting" and never looked again: status said Not responding until a restart."""
    monkeypatch.setattr(entrypoint, "STARTUP_FILE", str(tmp_path / "startup.json"))
    with socket.socket() as probe:  # a free loopback port; nothing answers there yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    parent = entrypoint.Parent()
    parent.settings = {"chromadb_port": port}
    parent.chroma = subprocess.Popen(["sleep", "60"])  # pylint: disable=consider-using-with  # a ChromaDB still opening its data
    try:
        assert parent.wait_for_chromadb(timeout=0.3) is False
        assert parent.late_chromadb() is False
        assert not os.path.exists(entrypoint.STARTUP_FILE) or not json.loads(Path(entrypoint.STARTUP_FILE).read_text())["chromadb_ready"]
        server = http.server.HTTPServer(("127.0.0.1", port), Heartbeat)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            assert parent.late_chromadb() is True
        finally:
            server.shutdown()
            server.server_close()
        assert json.loads(Path(entrypoint.STARTUP_FILE).read_text())["chromadb_ready"] is True
    finally:
        parent.chroma.kill()
        parent.chroma.wait()
