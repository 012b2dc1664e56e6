# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who is who in a HAL-9000 installation: the parent and its workers, found by labels.

Identity is always a label, never a name substring (the reference's
`name=hal9000-worker` filters missed every worker named otherwise).
Pure: standard library and the docker SDK only, never ``ansible.*``.
"""

from __future__ import annotations

import json

from ansible_collections.hal9000.dind.plugins.module_utils.engine import ERRORS
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.validate import validate_name

LABEL_MANAGED = "io.hal9000.managed"
LABEL_ROLE = "io.hal9000.role"
LABEL_PARENT = "io.hal9000.parent"
LABEL_PROJECT = "io.hal9000.project"
LABEL_POOL = "io.hal9000.pool"
LABEL_SPEC = "io.hal9000.spec-digest"
# When the parent whose network a worker joined had started; differs after a parent restart.
LABEL_PARENT_STARTED = "io.hal9000.parent-started"
# The name a warm worker was created with; a claim renames it, so name != warm-name means claimed.
LABEL_WARM_NAME = "io.hal9000.warm-name"
# The limits a worker was created with: a warm worker's are read from its listing, without an inspect.
LABEL_LIMITS = "io.hal9000.limits"
# persistent (a home in ~/.hal9000/workers) or ephemeral (a tmpfs).
LABEL_CLAUDE_HOME = "io.hal9000.claude-home"
# On a worker: the named volume that is its /workspace (a generic worker's); on that volume: the worker.
LABEL_WORKSPACE = "io.hal9000.workspace"
LABEL_WORKER = "io.hal9000.worker"
# A worker's own egress allowlist (comma-separated; present but empty: the defaults only), not in the spec digest:
# the parent applies it to the worker's uid (docs/egress.md); absent: the installation's policy.
LABEL_EGRESS = "io.hal9000.egress-allow"
# On a parent: the options it was made with (JSON), so that `claudy daemon start` keeps them.
LABEL_OPTIONS = "io.hal9000.options"

ROLE_PARENT = "parent"
ROLE_WORKER = "worker"
# The MCP relay's sidecar: in the parent's network namespace, but the parent's own (it replaces it on every start).
ROLE_RELAY = "relay"
ROLE_WORKSPACE = "workspace"


def _name(summary):
    return summary["Names"][0].lstrip("/")


def worker_summary(summary, parent_ids=None):
    """A worker as the coordinator, the info module and the dashboard show it."""
    labels = summary.get("Labels") or {}
    network_mode = (summary.get("HostConfig") or {}).get("NetworkMode", "")
    network_ok = True
    if network_mode.startswith("container:") and parent_ids is not None:
        target = network_mode.split(":", 1)[1]
        recorded = labels.get(LABEL_PARENT_STARTED)
        network_ok = target in parent_ids and recorded in (None, parent_ids[target])
    return {
        "name": _name(summary),
        "id": summary["Id"][:12],
        "state": summary.get("State", ""),
        "status": summary.get("Status", ""),
        "image": summary.get("Image", ""),
        "project": labels.get(LABEL_PROJECT, ""),
        "pool": labels.get(LABEL_POOL, ""),
        "warm": bool(labels.get(LABEL_POOL)) and labels.get(LABEL_WARM_NAME) == _name(summary),
        "parent": labels.get(LABEL_PARENT, ""),
        "created": summary.get("Created", 0),
        "network_mode": network_mode,
        "network_ok": network_ok,
    }


def running_parent_ids(client, summaries=None):
    """Running parents' IDs and names (what a worker's `container:` mode may point at) -> start time.

    From ``summaries`` (a listing that holds the parents, as list_workers' does), else from a listing of the parents.
    """
    if summaries is None:
        summaries = client.api.containers(filters={"label": f"{LABEL_ROLE}={ROLE_PARENT}"})
    started = {}
    for summary in summaries:
        if (summary.get("Labels") or {}).get(LABEL_ROLE) != ROLE_PARENT or summary.get("State") != "running":
            continue
        started_at = client.api.inspect_container(summary["Id"])["State"]["StartedAt"]
        started.update({summary["Id"]: started_at, _name(summary): started_at})
    return started


# What `docker ps` without --all shows: containers whose process is up.
UP_STATES = ("running", "paused", "restarting")


def list_workers(client, include_stopped=True, parent=None, with_limits=False):
    """HAL-9000 workers, newest first: all, or those of one parent plus the parent-less legacy ones."""
    # One listing for the workers and the parents: the engine walks every container for each list, whatever its
    # filters (0.76 s with 1,000 warm workers), and the parents' start times decide whether a worker's network is current.
    every = client.api.containers(all=True, filters={"label": LABEL_ROLE})
    parents = running_parent_ids(client, every)
    summaries = [s for s in every if (s.get("Labels") or {}).get(LABEL_ROLE) == ROLE_WORKER
                 and (include_stopped or s.get("State") in UP_STATES)]
    if parent:
        summaries = [s for s in summaries if (s.get("Labels") or {}).get(LABEL_PARENT, "") in (parent, "")]
    workers = [worker_summary(s, parents) for s in summaries]
    if with_limits:
        for worker, summary in zip(workers, summaries):
            # A warm worker still has the limits it was made with (its label); a claim may have changed the others'.
            label = (summary.get("Labels") or {}).get(LABEL_LIMITS) if worker["warm"] else None
            worker["limits"] = json.loads(label) if label else limits_of(client.api.inspect_container(worker["id"])["HostConfig"])
    return workers


def limits_of(host_config):
    """Memory bytes, CPUs and process limit of a container (None where unlimited)."""
    if not host_config.get("Memory"):
        return {"memory": None, "cpus": None, "pids_limit": None}
    period = host_config.get("CpuPeriod")
    return {
        "memory": host_config["Memory"],
        "cpus": round(host_config["CpuQuota"] / period, 3) if period else None,
        "pids_limit": host_config.get("PidsLimit") or None,
    }


def workers_to_stop(workers, parent):
    """What stop-all stops, in every front end: the running workers labelled as ``parent``'s, claimed or spawned.

    Parent-less ones (any container of the worker image) may belong to another installation; warm workers are the
    pool's (its manager would only replace them; `pool off` removes them).
    """
    return [w for w in workers if w["state"] in UP_STATES and w["parent"] == parent and not w["warm"]]


def get_worker(client, name, parent=None):
    """The inspected worker called ``name`` (of ``parent`` when given); anything else with that name is refused."""
    validate_name(name, "worker")
    try:
        inspected = client.api.inspect_container(name)
    except ERRORS.NotFound:
        raise Hal9000Error(f"No worker named {name}: list them with `coordinator list`.") from None
    labels = inspected["Config"].get("Labels") or {}
    if labels.get(LABEL_ROLE) != ROLE_WORKER:
        raise Hal9000Error(f"{name} is not a HAL-9000 worker (it has no {LABEL_ROLE}={ROLE_WORKER} label); not touching it.")
    if parent and labels.get(LABEL_PARENT) != parent:
        raise Hal9000Error(f"{name} is not a worker of {parent} (it has no {LABEL_PARENT}={parent} label); not touching it.")
    return inspected


def workers_sharing_network(client, parent_id):
    """Names of running containers in the parent's network namespace, except unclaimed warm workers and the relay.

    Warm workers are the pool's to replace: the pool manager swaps out those a parent restart left stale;
    the relay's sidecar is the parent's, made anew at its every start.
    """
    names = []
    for summary in client.api.containers():
        mode = (summary.get("HostConfig") or {}).get("NetworkMode", "")
        labels = summary.get("Labels") or {}
        warm = bool(labels.get(LABEL_POOL)) and labels.get(LABEL_WARM_NAME) == _name(summary)
        if mode == f"container:{parent_id}" and not warm and labels.get(LABEL_ROLE) != ROLE_RELAY:
            names.append(_name(summary))
    return sorted(names)


def limits_label(limits):
    return json.dumps(limits, sort_keys=True)
