"""Small helpers the integration tests share."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import docker
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WORKER_IMAGE = "hal9000/worker:latest"


class AnsibleRunner:
    """Runs tasks and playbooks through ansible-playbook, the way users do."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0")

    def playbook(self, path, *args, check=True, env=None):
        cmd = [str(BIN / "ansible-playbook"), "-i", str(REPO_ROOT / "inventory" / "localhost.yml"), str(path), *args]
        proc = subprocess.run(cmd, cwd=self.workdir, env=env or self.env, capture_output=True, text=True, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def tasks(self, tasks, check_mode=False, diff=False, python=None):
        """Run (module, args) tasks in ONE ansible-playbook run; return every task's result (failed or not)."""
        out = self.workdir / f"results-{uuid.uuid4().hex}.json"
        steps = [
            {"name": f"Task {i}: {module}", module: args, "check_mode": check_mode, "diff": diff, "ignore_errors": True}
            for i, (module, args) in enumerate(tasks)
        ]
        play = [{
            "name": "Tasks", "hosts": "localhost", "gather_facts": False,
            "vars": {"ansible_python_interpreter": python} if python else {},
            "tasks": steps,
        }]
        book = self.workdir / f"play-{uuid.uuid4().hex}.yml"
        book.write_text(yaml.safe_dump(play))
        env = dict(self.env, HAL9000_TEST_RESULTS=str(out), ANSIBLE_CALLBACKS_ENABLED="task_results",
                   ANSIBLE_CALLBACK_PLUGINS=str(Path(__file__).resolve().parent / "callback_plugins"))
        proc = self.playbook(book, check=False, env=env)
        if not out.exists():
            raise AssertionError(f"the play produced no results:\n{proc.stdout}\n{proc.stderr}")
        results = json.loads(out.read_text())
        if len(results) != len(tasks):
            raise AssertionError(f"{len(tasks)} tasks gave {len(results)} results:\n{proc.stdout}\n{proc.stderr}")
        for result in results:
            result["_stdout"] = proc.stdout
        return results

    def task(self, module, args, check_mode=False, diff=False, python=None):
        """Run one module task and return its result dict (failed or not)."""
        return self.tasks([(module, args)], check_mode=check_mode, diff=diff, python=python)[0]


OWNER = 1000  # uid/gid of the project directories the tests hand to workers


def snapshot(client, base=None):
    """Names of the containers and volumes (every one, or those named after ``base``), to prove nothing was created.

    Two list calls and nothing inspected in between: a container another session removes meanwhile cannot fail it.
    """
    filters = {"name": base} if base else None
    return (
        sorted(c["Names"][0].lstrip("/") for c in client.api.containers(all=True, filters=filters)),
        sorted(v["Name"] for v in client.api.volumes(filters=filters).get("Volumes") or []),
    )


def inspect_or_none(client, name):
    """docker inspect of a container, or None when there is none of that name."""
    try:
        return client.api.inspect_container(name)
    except docker.errors.NotFound:
        return None


def stable(inspected):
    """docker inspect without what the health check changes on its own (its log, its exec) and the mounts in one order."""
    if inspected is None:
        return None
    result = copy.deepcopy(inspected)
    result["State"].pop("Health", None)
    result.pop("ExecIDs", None)
    result["Mounts"] = sorted(result["Mounts"], key=lambda mount: mount["Destination"])
    return result


def succeeded(result):
    """A task result that did not fail, returned for further assertions."""
    assert result.get("failed") is not True, result
    return result


def owned_project(path):
    """A project directory at ``path`` holding README.md ("hello from the host"), both owned by OWNER; its real path."""
    path = Path(path)
    path.mkdir()
    (path / "README.md").write_text("hello from the host\n")
    for item in (path, path / "README.md"):
        os.chown(item, OWNER, OWNER)
    return os.path.realpath(path)


def parent_args(base, home, **extra):
    """Parent module arguments for a parent named ``<base>-parent`` with ``<base>-*`` volumes and its own home.

    HAL9000_TEST_PARENT_IMAGE, when set, is the parent image (one built from a branch under a private tag)."""
    image = {"image": os.environ["HAL9000_TEST_PARENT_IMAGE"]} if os.environ.get("HAL9000_TEST_PARENT_IMAGE") else {}
    return {"name": f"{base}-parent", "volume_prefix": base, "hal9000_home": str(home), **image, **extra}


def remove_installation(client, base, parent_name=None):
    """Containers named after ``base`` or labelled as ``parent_name``'s workers, then the volumes named after ``base``.

    The parent goes first: a pool manager runs inside it and would replace the workers removed here. A worker
    create it had in flight may still land afterwards, so its workers are looked for once more a moment later.
    """
    def containers():
        found = {c["Id"]: c for c in client.api.containers(all=True, filters={"name": base})}
        if parent_name:
            found.update({c["Id"]: c for c in client.api.containers(all=True, filters={"label": f"io.hal9000.parent={parent_name}"})})
        # Without a parent named, workers first: they hold the network namespace of a parent named after base.
        return [c["Id"] for c in sorted(found.values(), key=lambda c: not c["HostConfig"]["NetworkMode"].startswith("container:"))]

    if parent_name:
        remove_containers(client, parent_name)
    remove_containers(client, *containers())
    if parent_name:
        time.sleep(1)
        remove_containers(client, *containers())
    # The workers' /workspace volumes are named after the workers (hal9000-warm-*), not after base; the parent,
    # which removes them when a worker goes, went first.
    workspaces = client.api.volumes(filters={"label": "io.hal9000.role=workspace"}).get("Volumes") or []
    for volume in (client.api.volumes(filters={"name": base}).get("Volumes") or []) + [
            v for v in workspaces if (v.get("Labels") or {}).get("io.hal9000.parent", "").startswith(base)]:
        try:
            client.api.remove_volume(volume["Name"], force=True)
        except docker.errors.NotFound:
            pass


class Parent:
    """A test parent started with the parent module: its name, module arguments, home and the runner that started it."""

    def __init__(self, client, runner, args):
        self.client = client
        self.runner = runner
        self.args = args
        self.name = args["name"]
        self.home = Path(args["hal9000_home"])

    def inspect(self):
        return self.client.api.inspect_container(self.name)

    @property
    def id(self):
        return self.inspect()["Id"]


@contextlib.contextmanager
def started_parent(client, tmp_path_factory, base):
    """A running parent named ``<base>-parent`` with ``<base>-*`` volumes and a home of its own (a :class:`Parent`).

    Afterwards it is removed with its workers, its volumes and its home, whatever happened.
    """
    workdir = tmp_path_factory.mktemp(base)
    parent = Parent(client, AnsibleRunner(workdir), parent_args(base, workdir / "home"))
    try:
        started = succeeded(parent.runner.task("hal9000.dind.parent", parent.args))
        assert started["parent"]["chromadb_ready"] is True, started
        yield parent
    finally:
        remove_installation(client, base, parent.name)
        shutil.rmtree(parent.home, ignore_errors=True)


class Fleet:
    """Containers a test starts next to a parent, all named after ``base``; as a context manager, removed at its end."""

    def __init__(self, client, parent_name):
        self.client = client
        self.parent = parent_name
        self.base = f"{parent_name}-{uuid.uuid4().hex[:6]}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        remove_installation(self.client, self.base)

    def worker(self, suffix, command=None, running=True, warm=False):
        """A worker of this parent: its labels, in its network namespace (the image idles with no command).

        ``warm``: labelled as an unclaimed warm worker of the generic pool.
        """
        parent_id = self.client.api.inspect_container(self.parent)["Id"]
        name = f"{self.base}-{suffix}"
        labels = {"io.hal9000.role": "worker", "io.hal9000.parent": self.parent}
        if warm:
            labels.update({"io.hal9000.pool": "generic", "io.hal9000.warm-name": name})
        container = self.client.containers.run(
            WORKER_IMAGE, command, detach=True, name=name, network_mode=f"container:{parent_id}", labels=labels,
        )
        if not running:
            container.stop(timeout=5)
        return container

    def imposter(self):
        """'worker' in its name, but no label at all."""
        return self.client.containers.run("debian:bookworm-slim", ["sleep", "infinity"], detach=True,
                                          name=f"{self.base}-worker-imposter")

    def foreign(self):
        """A worker of another parent."""
        return self.client.containers.run(WORKER_IMAGE, detach=True, name=f"{self.base}-worker-foreign",
                                          labels={"io.hal9000.role": "worker", "io.hal9000.parent": f"{self.base}-other"})

    def unowned(self):
        """A container of the worker image run by hand: no parent label."""
        return self.client.containers.run(WORKER_IMAGE, detach=True, name=f"{self.base}-worker-unowned")


def status_of(container):
    """The container's current status (running, exited, ...)."""
    container.reload()
    return container.status


def wait_for(predicate, timeout, what):
    """Poll ``predicate`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last value {value!r})")


def remove_containers(client, *names):
    """Remove containers (with their anonymous volumes) that may or may not exist."""
    for name in names:
        try:
            client.api.remove_container(name, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:  # removal already in progress
            if exc.status_code != 409:
                raise


def exec_in(client, container, argv, user=""):
    """Exec ``argv`` in a container: (exit code, stdout, stderr)."""
    exec_id = client.api.exec_create(container, argv, user=user)
    out, err = client.api.exec_start(exec_id, demux=True)
    code = client.api.exec_inspect(exec_id)["ExitCode"]
    return code, (out or b"").decode("utf-8", "replace"), (err or b"").decode("utf-8", "replace")


def one_line_refusal(result, *words):
    """A failed task whose message is one line, without a traceback, naming ``words``."""
    assert result.get("failed") is True, result
    msg = result["msg"]
    assert "\n" not in msg and "Traceback" not in msg, msg
    for word in words:
        assert word in msg, (word, msg)
