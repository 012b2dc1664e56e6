"""Faults the parent must survive, against the real engine: two starts at once, a restarted Docker daemon,
a full disk, a worker writing more than its storage limit.

One parent for the module (its own name, volumes and home): started by two module runs at once, its home a
32 MiB tmpfs the last test fills, and its Docker socket a forwarder of the engine's that the tests stop and
start again - what a restart of dockerd does to the socket file - so the host's dockerd is never touched.
The tests run in file order: the disk is filled last.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import threading
import time

import docker
import pytest

from helpers import AnsibleRunner, exec_in, parent_args, remove_containers, remove_installation, succeeded, wait_for

from ansible_collections.hal9000.dind.plugins.module_utils.parent import create_parent, health_detail, parent_spec
from ansible_collections.hal9000.dind.plugins.module_utils.workers import layer_quota_possible, storage_refused

MODULE = "hal9000.dind.parent"
ENGINE_SOCKET = "/var/run/docker.sock"
MANAGER = ["/opt/hal9000/bin/pool_manager.py", "run"]
COUNT_MANAGERS = (
    "import glob; print(sum(open(p, 'rb').read().split(b'\\0')[1:3] == [b'%s', b'%s'] "
    "for p in glob.glob('/proc/[0-9]*/cmdline')))" % tuple(MANAGER)
)
FULL_HOME = "disk full: /root/.hal9000, free space needed"


class SocketForwarder:
    """A Docker socket of our own at ``path``, forwarding to the engine's. ``stop`` leaves a socket file nobody
    answers on and ``start`` makes a new one at the same path: what a restart of dockerd does to its socket."""

    def __init__(self, path):
        self.path = str(path)
        self.server = None
        self.connections = []

    def start(self):
        if os.path.lexists(self.path):
            os.unlink(self.path)
        self.server = socket.socket(socket.AF_UNIX)
        self.server.bind(self.path)
        self.server.listen(64)
        threading.Thread(target=self._accept, args=(self.server,), daemon=True).start()

    def stop(self):
        self.server.shutdown(socket.SHUT_RDWR)  # wakes the accept
        self.server.close()
        for connection in self.connections:  # streams (events) break, as they do when dockerd goes
            connection.close()
        self.connections = []

    def _accept(self, server):
        while True:
            try:
                client, _address = server.accept()
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX)
            engine.connect(ENGINE_SOCKET)
            self.connections += [client, engine]
            for source, target in ((client, engine), (engine, client)):
                threading.Thread(target=self._copy, args=(source, target), daemon=True).start()

    @staticmethod
    def _copy(source, target):
        try:
            while data := source.recv(65536):
                target.sendall(data)
            target.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class Installation:
    def __init__(self, client, base, workdir):
        self.client = client
        self.base = base
        self.runner = AnsibleRunner(workdir)
        self.home = workdir / "home"
        self.forwarder = SocketForwarder(workdir / "engine" / "docker.sock")
        self.args = parent_args(base, self.home, docker_socket=self.forwarder.path, min_warm_workers=0)
        self.name = self.args["name"]
        self.started = []

    def inspect(self):
        return self.client.api.inspect_container(self.name)

    def run(self, *argv, user=""):
        return exec_in(self.client, self.name, list(argv), user=user)


@pytest.fixture(scope="module")
def installation(docker_client, prefix, tmp_path_factory):
    base = f"{prefix}-sec"
    workdir = tmp_path_factory.mktemp(base)
    inst = Installation(docker_client, base, workdir)
    inst.home.mkdir(mode=0o700)
    (workdir / "engine").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs", str(inst.home)], check=True)
    inst.forwarder.start()
    try:
        # Two daemon starts at once: both must succeed with the one parent.
        threads = [threading.Thread(target=lambda: inst.started.append(inst.runner.task(MODULE, inst.args)))
                   for _start in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        yield inst
    finally:
        remove_installation(docker_client, base, inst.name)
        inst.forwarder.stop()
        subprocess.run(["umount", "-l", str(inst.home)], check=False)
        shutil.rmtree(workdir, ignore_errors=True)


# -------------------------------------------------------------------------- two starts at once ----

def test_two_daemon_starts_at_once_make_one_parent_and_both_succeed(installation):
    results = [succeeded(result) for result in installation.started]
    assert len(results) == 2
    ids = {result["parent"]["id"] for result in results}
    assert ids == {installation.inspect()["Id"]} and all(r["parent"]["chromadb_ready"] for r in results), results
    named = installation.client.api.containers(all=True, filters={"name": f"^/{installation.name}$"})
    assert len(named) == 1


def test_a_create_racing_another_adopts_the_parent_it_made(docker_client, prefix, tmp_path):
    """Both creates at the same instant (a barrier): one makes it, the other gets 409 and adopts it."""
    base = f"{prefix}-race"
    spec = parent_spec(f"{base}-parent", "hal9000/parent:latest", str(tmp_path), ENGINE_SOCKET, "256m", 1, {}, base)
    barrier, ids, errors = threading.Barrier(2), [], []

    def create():
        barrier.wait()
        try:
            ids.append(create_parent(docker_client, spec))
        except Exception as exc:  # the failure before the fix: a 409 name conflict
            errors.append(exc)

    threads = [threading.Thread(target=create) for _start in range(2)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        assert len(ids) == 2 and ids[0] == ids[1] == docker_client.api.inspect_container(spec["name"])["Id"]
    finally:
        remove_installation(docker_client, base)


def test_two_pool_starts_at_once_run_one_manager(installation):
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(installation.run("coordinator", "pool", "start")))
               for _start in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert [code for code, _out, _err in answers] == [0, 0], answers
        said = sorted(out.strip() for _code, out, _err in answers)
        assert said[0].startswith("Pool manager already running (pid ") and said[1].startswith("Pool manager started (pid ")
        assert said[0].split("(pid ")[1] == said[1].split("(pid ")[1], "the second start names the first's manager"
        time.sleep(1)  # a second manager would be up by now
        code, out, err = installation.run("python3", "-c", COUNT_MANAGERS)
        assert (code, out.strip()) == (0, "1"), err
    finally:
        code, out, err = installation.run("coordinator", "pool", "stop")
        assert code == 0, err


# ------------------------------------------------------------------ a restarted Docker daemon ----

def test_the_parent_reaches_a_restarted_daemon_through_the_sockets_directory(installation):
    inspected = installation.inspect()
    mounts = {mount["Destination"]: mount for mount in inspected["Mounts"]}
    assert "/var/run/docker.sock" not in mounts, "never the socket file: it stays the dead one"
    socket_dir = mounts["/run/hal9000-docker"]
    assert (socket_dir["Source"], socket_dir["RW"]) == (os.path.dirname(installation.forwarder.path), False)
    code, out, err = installation.run("readlink", "/var/run/docker.sock")
    assert (code, out.strip()) == (0, "/run/hal9000-docker/docker.sock"), err
    assert installation.run("coordinator", "count")[0] == 0

    # The daemon goes: its socket file stays, nobody answers. The module says so and would recreate the parent.
    installation.forwarder.stop()
    assert installation.run("python3", "/opt/hal9000/bin/healthcheck.py", "socket")[0] != 0
    planned = succeeded(installation.runner.task(MODULE, installation.args, check_mode=True))
    assert planned["changed"] is True and any("Docker socket does not answer" in a for a in planned["actions"]), planned

    # It comes back with a new socket at the same path: the running parent reaches it, nothing to recreate.
    installation.forwarder.start()
    code, out, err = installation.run("coordinator", "count")
    assert code == 0, f"the parent does not reach the restarted daemon: {out} {err}"
    again = succeeded(installation.runner.task(MODULE, installation.args))
    assert again["changed"] is False and again["parent"]["id"] == inspected["Id"], again


# ----------------------------------------------------------------------------- worker storage ----

def test_a_worker_cannot_write_more_than_its_storage_size_outside_its_home_and_workspace(installation, made):
    names = [f"{installation.base}-w-storage", f"{installation.base}-w-storage-ro"]
    made.extend(names)
    results = installation.runner.tasks([
        ("hal9000.dind.worker", {"name": name, "parent": installation.name, "storage_size": "8m",
                                 "claude_home": "ephemeral", "read_only": read_only})
        for name, read_only in zip(names, (False, True))
    ])
    for result in results:
        succeeded(result)
    for name in names:
        for path in ("/tmp", "/var/tmp", "/run/lock"):
            code, _out, err = exec_in(installation.client, name,
                                      ["dd", "if=/dev/zero", f"of={path}/fill", "bs=1M", "count=16"])
            assert code != 0 and ("No space left on device" in err or "Disk quota exceeded" in err), (name, path, err)
        code, _out, err = exec_in(installation.client, name, ["sh", "-c", "echo x > /fill || echo x > /usr/fill"])
        assert code != 0 and ("Permission denied" in err or "Read-only file system" in err), err
        listed = installation.client.api.containers(all=True, size=True, filters={"name": f"^/{name}$"})
        size = listed[0].get("SizeRw", 0)
        assert size < 1024 * 1024, f"{name}: {size} bytes reached its writable layer"
    # Read-only root: the entrypoint still idles, Claude Code still runs, the root refuses even root.
    read_only = installation.client.api.inspect_container(names[1])
    assert read_only["HostConfig"]["ReadonlyRootfs"] is True and read_only["State"]["Running"] is True
    code, out, err = exec_in(installation.client, names[1], ["claude", "--version"])
    assert code == 0 and "Claude Code" in out, err
    code, _out, err = exec_in(installation.client, names[1], ["touch", "/probe"], user="0")
    assert code != 0 and "Read-only file system" in err


def test_the_engines_answer_to_a_layer_size_is_the_one_the_workers_expect(docker_client, prefix):
    """Whether this engine caps a layer (docker info) and how it refuses one: what create_worker decides by."""
    possible = layer_quota_possible(docker_client.api.info())
    name = f"{prefix}-storage-probe"
    try:
        docker_client.api.create_container("hal9000/worker:latest", name=name,
                                           host_config=docker_client.api.create_host_config(storage_opt={"size": "1G"}))
    except docker.errors.APIError as exc:
        assert storage_refused(exc) and not possible, exc
    else:
        assert possible
    finally:
        remove_containers(docker_client, name)


# ---------------------------------------------------------------------------------- a full disk ----

def fill(directory):
    """Fill the file system under ``directory``: a file until no block is left, then the last block of every log."""
    def write_until_full(path, chunk):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        finally:
            os.close(fd)

    write_until_full(directory / "filler", b"\0" * (1024 * 1024))
    write_until_full(directory / "filler", b"\0" * 512)
    for log in (directory / "logs").glob("*.log"):  # no room left in a log's last block either
        write_until_full(log, b"\n")


def test_a_full_home_is_said_plainly_and_the_parent_serves_on(installation):
    before = installation.inspect()["State"]
    fill(installation.home)
    # SIGHUP: the relay restarts with the declared servers, and the parent logs it - into the full home.
    installation.client.api.kill(installation.name, signal="SIGHUP")

    def said_or_stopped():
        state = installation.inspect()["State"]
        return FULL_HOME in health_detail(state) or not state["Running"] or state["StartedAt"] != before["StartedAt"]

    wait_for(said_or_stopped, 40, "the health check to name the full home")
    inspected = installation.inspect()
    assert inspected["State"]["Running"] and inspected["State"]["StartedAt"] == before["StartedAt"], "it stopped"
    assert inspected["RestartCount"] == 0
    assert health_detail(inspected["State"]) == FULL_HOME
    logs = installation.client.api.logs(installation.name).decode("utf-8", "replace")
    assert "Traceback" not in logs
    assert len([line for line in logs.splitlines() if FULL_HOME in line]) == 1, logs[-3000:]
    # It still serves: the coordinator answers, and its status says what the health check says.
    code, out, err = installation.run("coordinator", "status", "--json")
    assert code == 0, err
    assert json.loads(out)["parent"]["health_detail"] == FULL_HOME
