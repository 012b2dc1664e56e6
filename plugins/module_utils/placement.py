# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a new worker goes in a fleet: a host with a warm worker of its pool, else the most free memory.

A host's free memory is counted against the limits of the workers already running there (warm ones included,
each may grow to its limit): ``min(MemAvailable, MemTotal - their memory limits)``. A host has room when that
is at least the new worker's memory limit (the one asked for, else the host's configured WORKER_MEMORY).
Pure: standard library and the docker SDK (memory sizes) only, never ``ansible.*``.
"""

from __future__ import annotations

import os

from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.validate import parse_memory

CLAIM = "claim"
SPAWN = "spawn"


def read_meminfo(text):
    """MemTotal and MemAvailable of a /proc/meminfo text, in bytes (None when missing)."""
    found = {}
    for line in (text or "").splitlines():
        key, _sep, rest = line.partition(":")
        fields = rest.split()
        if key in ("MemTotal", "MemAvailable") and fields and fields[0].isdigit():
            found[key] = int(fields[0]) * 1024
    return {"total": found.get("MemTotal"), "available": found.get("MemAvailable")}


def host_facts(name, info=None, meminfo="", error=""):
    """One host as placement sees it, from hal9000.dind.info's result and its /proc/meminfo.

    ``info`` is the registered result (unreachable or failed ones say so in ``error``).
    """
    info = info or {}
    if not error and (info.get("unreachable") or info.get("failed") or "parent" not in info):  # failed_when: false keeps failed off
        error = ("unreachable: " if info.get("unreachable") else "") + str(info.get("msg") or "no answer").splitlines()[0]
    memory = read_meminfo(meminfo)
    workers = [w for w in info.get("workers") or [] if w.get("state") == "running"]
    committed = sum(((w.get("limits") or {}).get("memory") or 0) for w in workers)
    pools = [{"name": p["name"], "project": p.get("project") or "", "image": p.get("image") or "", "warm": p.get("warm") or 0}
             for p in (info.get("pool") or {}).get("pools") or []]
    return {
        "name": name,
        "error": error,
        "parent": (info.get("parent") or {}).get("state") or ("unknown" if error else "absent"),
        "pools": pools,
        "committed": committed,
        "total": memory["total"],
        "available": memory["available"],
        "worker_memory": (info.get("worker_limits") or {}).get("memory"),
    }


def free_memory(host):
    """Bytes free on ``host`` against its running workers' limits; None when its memory is unknown."""
    if host["total"] is None or host["available"] is None:
        return None
    return min(host["available"], host["total"] - host["committed"])


def _gib(size):
    return f"{size / 2**30:.1f} GiB"


def warm_count(host, image, project=""):
    """Warm workers of the pool that serves ``image`` for ``project`` ("" for a worker without one)."""
    project = os.path.normpath(project) if project else ""
    return sum(p["warm"] for p in host["pools"] if p["project"] == project and p["image"] == image)


def choose_host(hosts, image, project="", memory=None, no_limits=False):
    """The host a worker of ``image`` (on ``project``) goes to, as {"host", "action", "reason", "hosts"}.

    ``hosts`` are ``host_facts`` in inventory order (the first wins a tie). ``action`` is ``claim`` (a warm
    worker of the right pool is there) or ``spawn``. A fleet without room raises Hal9000Error naming each host.
    """
    rows = []
    for host in hosts:
        row = {"name": host["name"], "warm": 0, "free": None, "needed": None, "why_not": ""}
        rows.append(row)
        if host["error"]:
            row["why_not"] = host["error"]
            continue
        if host["parent"] != "running":
            row["why_not"] = f"parent {host['parent']}"
            continue
        row["warm"] = warm_count(host, image, project)
        row["free"] = free_memory(host)
        row["needed"] = 0 if no_limits else parse_memory(memory or host["worker_memory"] or "4g")
        if row["free"] is None:
            row["why_not"] = "free memory unknown"
        elif row["free"] < row["needed"]:
            row["why_not"] = f"{_gib(max(row['free'], 0))} free against its workers' limits, {_gib(row['needed'])} needed"

    def by_free(row):
        return -(row["free"] or 0)

    warm = sorted((r for r in rows if r["warm"]), key=by_free)  # a claim needs no new memory: any warm host will do
    if warm:
        chosen = warm[0]
        return _choice(chosen, CLAIM, f"{chosen['warm']} warm worker(s) of the pool for {image} {_for(project)}", rows)
    room = sorted((r for r in rows if not r["why_not"]), key=by_free)
    if room:
        chosen = room[0]
        return _choice(chosen, SPAWN, f"no warm worker of that pool in the fleet; the most free memory ({_gib(chosen['free'])} "
                                      f"against its workers' limits, {_gib(chosen['needed'])} needed)", rows)
    raise Hal9000Error(
        f"No host of the fleet can take the worker: none has a warm worker for {image} {_for(project)} nor room for it ("
        + "; ".join(f"{r['name']}: {r['why_not']}" for r in rows)
        + "). Stop workers, add a host, or ask for less memory (worker_memory)."
    )


def _for(project):
    return f"on {project}" if project else "without a project"


def _choice(row, action, reason, rows):
    return {"host": row["name"], "action": action, "reason": reason, "hosts": rows}
