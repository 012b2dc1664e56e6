"""The whole site.yml across a fleet of three real engines, twice (slow: about 8 minutes on a busy 2-CPU machine).

Kept apart from test_fleet.py (the images and the status, about 5 minutes), and out of CI for its time: run it with
`.venv/bin/python -m pytest -q tests/fleet/test_fleet_site.py` (docs/fleet.md). The parent starts on every node from
images only node1 built; the second run changes nothing and sends no image. The MCP sidecar and the worker images
are left out (about 450 MB each per node) and the relay is off, so the parent runs without them.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))  # test_fleet and its helpers

import test_fleet  # noqa: E402
from test_fleet import events, play, task_results  # noqa: E402

# The same fixtures as test_fleet.py (three nodes, node1 seeded, a snapshot of the collection).
collection = test_fleet.collection
nodes = test_fleet.nodes

SITE = {"hal9000_hosts": "fleet", "images_mcp": False, "install_worker_flavours": [], "daemon_enable_mcp_relay": False}


def test_site_installs_every_node_from_one_build_and_converges(nodes, collection, tmp_path):
    first = play(collection, tmp_path, collection / "playbooks" / "site.yml", nodes.inventory_path, SITE)
    assert first["rc"] == 0, first["stats"]
    built = task_results(first, "Build the images")
    assert [host for host, result in built.items() if not result.get("skipped")] == [nodes[0].name]
    for node in nodes:
        with contextlib.closing(node.client()) as client:
            parent = client.api.inspect_container("hal9000-parent")
        assert parent["State"]["Running"], (node.name, parent["State"])

    since = time.time_ns()
    again = play(collection, tmp_path, collection / "playbooks" / "site.yml", nodes.inventory_path, SITE)
    until = int(time.time()) + 1
    assert again["rc"] == 0 and all(stats["changed"] == 0 for stats in again["stats"].values()), again["stats"]
    assert not [e for node in nodes for e in events(node, since, until) if e["Action"] in ("load", "create", "destroy")]
