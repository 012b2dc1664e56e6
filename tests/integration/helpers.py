"""Small helpers the integration tests share."""

from __future__ import annotations

import contextlib
import time

from pathlib import Path

import docker

REPO_ROOT = Path(__file__).resolve().parents[2]


def snapshot(client):
    """Names of every container and volume, to prove nothing was created."""
    return (
        sorted(c.name for c in client.containers.list(ignore_removed=True, all=True)),
        sorted(v.name for v in client.volumes.list()),
    )


def remove_installation(client, base, parent_name=None):
    """Containers named after ``base`` or labelled as ``parent_name``'s workers (workers first), then volumes."""
    found = {c.id: c for c in client.containers.list(ignore_removed=True, all=True, filters={"name": base})}
    if parent_name:
        found.update({c.id: c for c in client.containers.list(ignore_removed=True, all=True, filters={"label": f"io.hal9000.parent={parent_name}"})})
    for container in sorted(found.values(), key=lambda c: not c.attrs["HostConfig"]["NetworkMode"].startswith("container:")):
        container.remove(force=True, v=True)
    for volume in client.volumes.list(filters={"name": base}):
        volume.remove(force=True)


@contextlib.contextmanager
def started_parent(client, runner, base, home):
    """A parent named ``<base>-parent`` with ``<base>-*`` volumes, removed with its workers afterwards."""
    name = f"{base}-parent"
    try:
        result = runner.task("hal9000.dind.parent", {"name": name, "volume_prefix": base, "hal9000_home": str(home)})
        assert result.get("failed") is not True and result["parent"]["chromadb_ready"] is True, result
        yield name
    finally:
        remove_installation(client, base, name)


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
