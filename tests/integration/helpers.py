"""Small helpers the integration tests share."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def snapshot(client):
    """Names of every container and volume, to prove nothing was created."""
    return (
        sorted(c.name for c in client.containers.list(all=True)),
        sorted(v.name for v in client.volumes.list()),
    )
