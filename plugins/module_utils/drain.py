# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Draining a host before its parent is replaced (a rolling upgrade), and handing out warm workers again after.

Drained: the pool manager is stopped (its pools.json stays enabled, so the next parent starts it again), the
warm workers are removed (nothing left to claim) and the claimed workers are waited for. Only the coordinator
commands every parent has (`pool status|stop|cleanup|start`) are used: the parent drained is the old one.
Pure: standard library and the docker SDK only, never ``ansible.*``.
"""

from __future__ import annotations

import json
import time

from ansible_collections.hal9000.dind.plugins.module_utils.docker_api import inspect_container
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.fleet import workers_sharing_network
from ansible_collections.hal9000.dind.plugins.module_utils.parent import run_coordinator
from ansible_collections.hal9000.dind.plugins.module_utils.pool import installation_home, read_pools, save_pools, wait_for_minimum, warm_workers


def _running_parent(client, name):
    inspected = inspect_container(client, name)
    # A restarting parent (one that keeps exiting, e.g. a failed upgrade's) runs no pool manager and takes no exec.
    if inspected is None or not inspected["State"]["Running"] or inspected["State"].get("Restarting"):
        return None
    return inspected


def _pool_status(client, parent_id):
    return json.loads(run_coordinator(client, parent_id, "pool", "status", "--json"))


def drain(client, parent, wait_timeout, check_mode=False, sleep=time.sleep):
    """Stop handing out warm workers under ``parent`` and wait up to ``wait_timeout`` s for its claimed workers to end.

    Returns ``actions``, ``pool_enabled``, ``removed`` (warm workers) and ``running`` (claimed workers still running
    in the parent's network when the wait ended). A parent that does not run has nothing to drain.
    """
    inspected = _running_parent(client, parent)
    result = {"actions": [], "pool_enabled": False, "removed": [], "running": []}
    if inspected is None:
        return result
    status = _pool_status(client, inspected["Id"])
    result["pool_enabled"] = bool(status["enabled"])
    if status["running"]:
        result["actions"].append("stopped the pool manager")
        if not check_mode:
            run_coordinator(client, inspected["Id"], "pool", "stop")
            # `pool stop` saves enabled=false; the pools stay enabled for the parent that replaces this one.
            home = installation_home(client, parent)
            save_pools(home, dict(read_pools(home), enabled=status["enabled"]))
    warm = [w["name"] for w in warm_workers(client, parent)]
    if warm:
        result["actions"].append(f"removed {len(warm)} warm worker(s)")
        result["removed"] = warm
        if not check_mode:
            run_coordinator(client, inspected["Id"], "pool", "cleanup")  # under the claim lock, as the pool does it
    deadline = time.monotonic() + wait_timeout
    running = workers_sharing_network(client, inspected["Id"])
    while running and not check_mode and time.monotonic() < deadline:
        sleep(min(1.0, max(deadline - time.monotonic(), 0)))
        running = workers_sharing_network(client, inspected["Id"])
    result["running"] = running
    return result


def resume(client, parent, wait_timeout, check_mode=False):
    """Hand out warm workers under ``parent`` again: its pool manager started when its pools are enabled, and
    (unless ``wait_timeout`` is 0) every pool waited for until it holds its minimum. ``actions`` and ``pools``."""
    inspected = _running_parent(client, parent)
    if inspected is None:
        raise Hal9000Error(f"Parent {parent} is not running: start it (ansible-playbook playbooks/daemon.yml) before its pool resumes.")
    status = _pool_status(client, inspected["Id"])
    actions = []
    if status["enabled"] and not status["running"]:
        actions.append("started the pool manager")
        if not check_mode:
            run_coordinator(client, inspected["Id"], "pool", "start")
    pools = status["pools"]  # in force: hal9000.conf's settings filled in
    if status["enabled"] and wait_timeout and not check_mode:
        warm = wait_for_minimum(client, parent, pools, wait_timeout, installation_home(client, parent))
    else:
        warm = {p["name"]: p["warm"] for p in pools}
    return {"actions": actions, "pool_enabled": bool(status["enabled"]),
            "pools": [{"name": p["name"], "min": p["min"], "max": p["max"], "warm": warm[p["name"]]} for p in pools]}
