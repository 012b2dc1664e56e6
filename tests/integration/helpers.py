"""Small helpers the integration tests share."""

from __future__ import annotations

import contextlib

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def snapshot(client):
    """Names of every container and volume, to prove nothing was created."""
    return (
        sorted(c.name for c in client.containers.list(all=True)),
        sorted(v.name for v in client.volumes.list()),
    )


def remove_installation(client, base, parent_name=None):
    """Containers named after ``base`` or labelled as ``parent_name``'s workers (workers first), then volumes."""
    found = {c.id: c for c in client.containers.list(all=True, filters={"name": base})}
    if parent_name:
        found.update({c.id: c for c in client.containers.list(all=True, filters={"label": f"io.hal9000.parent={parent_name}"})})
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
