# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The warm pool: its settings, claiming a warm worker, and keeping each pool between min and max.

A warm worker is an ordinary worker made by ``workers.create_worker`` from the
pool's spec, labelled with its pool and the name it was created with; it runs
idle until a claim renames it, so name != warm-name means claimed. Claims and
removals of warm workers take the installation's claim lock (``claim_lock``).
Pure: standard library and the docker SDK only, never ``ansible.*``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time

from ansible_collections.hal9000.dind.plugins.module_utils.docker_api import APIError, NotFound
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.fleet import (
    LABEL_PARENT,
    LABEL_PARENT_STARTED,
    LABEL_POOL,
    LABEL_ROLE,
    LABEL_SPEC,
    LABEL_WARM_NAME,
    ROLE_WORKER,
)
from ansible_collections.hal9000.dind.plugins.module_utils.parent import HOME_IN_PARENT
from ansible_collections.hal9000.dind.plugins.module_utils.validate import validate_name
from ansible_collections.hal9000.dind.plugins.module_utils.workers import generate_name, spawn_worker, worker_spec

GENERIC_POOL = "generic"
WARM_PREFIX = "hal9000-warm"
POOLS_FILE = os.path.join("config", "pools.json")
CLAIM_LOCK_FILE = os.path.join("run", "claim.lock")


def _count(value, what):
    if isinstance(value, bool) or not str(value).strip().isdigit():  # also refuses "-1" and "1.5"
        raise Hal9000Error(f"{what}={value!r} must be a whole number, 0 or more.")
    return int(value)


def validate_pools(config):
    """The pool settings typed and checked: min <= max, non-negative integers, unique names."""
    pools, seen = [], set()
    for pool in config.get("pools") or []:
        name = validate_name(str(pool.get("name", "")), "pool")
        if name in seen:
            raise Hal9000Error(f"Pool {name} is declared twice: give each pool its own name.")
        seen.add(name)
        low = _count(pool.get("min", 2), f"pool {name} min")
        high = _count(pool.get("max", 5), f"pool {name} max")
        if low > high:
            raise Hal9000Error(f"Pool {name}: min {low} is more than max {high}; the minimum must not exceed the maximum.")
        project = str(pool.get("project") or "")
        if project and not os.path.isabs(project):
            raise Hal9000Error(f"Pool {name}: project {project!r} must be an absolute path on the Docker host.")
        pools.append({
            "name": name, "project": project, "min": low, "max": high,
            "user": str(pool.get("user") or "1001:1001"), "image": str(pool.get("image") or "hal9000/worker:latest"),
            "api_key_file": str(pool.get("api_key_file") or ""),
        })
    return {
        "enabled": bool(config.get("enabled", False)),
        "idle_timeout": _count(config.get("idle_timeout", 300), "idle_timeout"),
        "pools": pools,
    }


def default_pools(settings):
    """The seed's single pool from MIN_WARM_WORKERS / MAX_WARM_WORKERS / IDLE_TIMEOUT."""
    return validate_pools({
        "enabled": settings["enable_pool_manager"],
        "idle_timeout": settings["idle_timeout"],
        "pools": [{"name": GENERIC_POOL, "min": settings["min_warm_workers"], "max": settings["max_warm_workers"],
                   "image": settings["worker_image"]}],
    })


def load_pools(home, settings):
    path = os.path.join(home, POOLS_FILE)
    if not os.path.exists(path):
        return default_pools(settings)
    with open(path, encoding="utf-8") as handle:
        return validate_pools(json.load(handle))


def save_pools(home, config):
    path = os.path.join(home, POOLS_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(validate_pools(config), handle, indent=2, sort_keys=True)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def pool_spec(pool, parent):
    """The spec every warm worker of ``pool`` is made from (host paths were checked when the pool was declared)."""
    return worker_spec(
        name=generate_name(WARM_PREFIX), image=pool["image"], project_dir=pool["project"] or None,
        parent=parent, pool=pool["name"], user=pool["user"], api_key_file=pool["api_key_file"] or None,
        check_host_paths=False,
    )


def spawn_warm(client, pool, parent):
    """Create and start one warm worker of ``pool``; returns its spec."""
    spec = pool_spec(pool, parent)
    spawn_worker(client, spec)
    return spec


def installation_home(client, parent):
    """The host directory the parent mounts as its home: where the claim lock of its pools lives."""
    try:
        mounts = client.api.inspect_container(parent)["Mounts"]
    except NotFound:
        raise Hal9000Error(f"Parent {parent} does not exist: start the daemon first (ansible-playbook playbooks/daemon.yml).") from None
    for mount in mounts:
        if mount.get("Destination") == HOME_IN_PARENT:
            return mount["Source"]
    raise Hal9000Error(f"Parent {parent} has no home mounted at {HOME_IN_PARENT}: recreate it with hal9000.dind.parent.")


@contextlib.contextmanager
def claim_lock(home):
    """Exclusive lock over the warm workers of the installation whose home is ``home``.

    Docker has no atomic "rename if still named X": it resolves a container's name before it locks
    the container, so two claimers renaming the same warm worker can both succeed (seen with 10
    concurrent claims). Every claimer (the worker module on the host, the coordinator in the parent)
    and every remover of warm workers therefore takes this flock on a file in the shared home,
    which the parent bind-mounts: one inode, one lock, for processes on the host and in the parent.
    """
    path = os.path.join(home, CLAIM_LOCK_FILE)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise Hal9000Error(
            f"Cannot open the warm pool's claim lock {path}: {exc.strerror}; run as the owner of {home}, or claim with from_pool=false."
        ) from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the flock


def warm_workers(client, parent, digest=None, pool=None):
    """Running, unclaimed warm workers of ``parent`` (optionally of one spec digest or pool), oldest first."""
    filters = [f"{LABEL_ROLE}={ROLE_WORKER}", f"{LABEL_PARENT}={parent}"]
    if digest:
        filters.append(f"{LABEL_SPEC}={digest}")
    if pool:
        filters.append(f"{LABEL_POOL}={pool}")
    # The name filter keeps claimed workers (renamed, same labels) out of the daemon's answer: its
    # cost grows with every container it returns. The labels below still decide what is warm.
    summaries = client.api.containers(filters={"label": filters, "status": "running", "name": f"^/{WARM_PREFIX}-"})
    warm = []
    for summary in summaries:
        labels = summary.get("Labels") or {}
        name = summary["Names"][0].lstrip("/")
        if labels.get(LABEL_POOL) and labels.get(LABEL_WARM_NAME) == name:
            warm.append({"id": summary["Id"], "name": name, "pool": labels[LABEL_POOL], "created": summary["Created"],
                         "parent_started": labels.get(LABEL_PARENT_STARTED, ""), "digest": labels.get(LABEL_SPEC, "")})
    return sorted(warm, key=lambda w: w["created"])


def claim(client, spec, new_name, home, parent_started=None):
    """Rename a warm worker made from exactly ``spec`` to ``new_name``; returns its ID or None.

    Under the claim lock of the installation whose home is ``home``: one container list and one
    rename. With ``parent_started``, warm workers from an earlier start of the parent (a dead network)
    are skipped.
    """
    validate_name(new_name, "worker")
    with claim_lock(home):
        for candidate in warm_workers(client, spec["parent"], digest=spec["digest"]):
            if parent_started is not None and candidate["parent_started"] != parent_started:
                continue
            try:
                client.api.rename(candidate["id"], new_name)
            except NotFound:
                continue  # removed since the listing (by a remover that does not share this lock)
            except APIError as exc:
                if exc.status_code == 409 and new_name in str(exc):
                    raise Hal9000Error(f"A container named {new_name} already exists: choose another name.") from None
                continue  # e.g. its removal is in progress: the next candidate
            return candidate["id"]
    return None


def remove_warm(client, home, name):
    """Remove the warm worker named ``name`` (and its /workspace volume) unless a claim took it; True if removed.

    By its warm name and under the claim lock: a worker claimed meanwhile has another name and is spared.
    """
    with claim_lock(home):
        try:
            client.api.remove_container(name, force=True, v=True)
        except NotFound:
            return False
    return True


class Reconciler:
    """Keeps every pool between its minimum and maximum warm workers.

    Idle time is measured per pool from its last claim (or from when the pool
    last grew), so a busy pool keeps its extra workers and a quiet one is trimmed
    to its minimum after idle_timeout, never below it.
    """

    def __init__(self, client, parent, home, log, clock=time.monotonic):
        self.client = client
        self.parent = parent
        self.home = home
        self.log = log
        self.clock = clock
        self.last_activity = {}
        self.backoff = {}  # pool -> (failures, next attempt time)
        self.targets = {}  # pool -> temporary target set by `pool scale`
        self.scaled = set()  # pools scaled since the last pass: trimmed down to the new target at once

    def scale(self, pool, target):
        """`coordinator pool scale`: keep ``target`` warm (within min and max) until the pool is idle."""
        self.targets[pool] = int(target)
        self.scaled.add(pool)

    def note_claim(self, pool):
        self.last_activity[pool] = self.clock()

    def reconcile(self, config, parent_started):
        """One pass over every pool; returns {pool: warm count after the pass}."""
        configured = {pool["name"] for pool in config["pools"]}
        for worker in warm_workers(self.client, self.parent):
            if worker["pool"] not in configured:  # its pool was removed from the settings
                self._remove(worker, "its pool is no longer configured")
        counts = {}
        for pool in config["pools"]:
            counts[pool["name"]] = self._reconcile_pool(pool, config["idle_timeout"], parent_started)
        return counts

    def _reconcile_pool(self, pool, idle_timeout, parent_started):
        name = pool["name"]
        now = self.clock()
        self.last_activity.setdefault(name, now)
        warm = warm_workers(self.client, self.parent, pool=name)
        digest = pool_spec(pool, self.parent)["digest"]
        stale = [w for w in warm if w["parent_started"] != parent_started or w["digest"] != digest]
        for worker in stale:  # joined a previous network namespace of the parent, or the pool's settings changed
            self._remove(worker, "its network belongs to a previous start of the parent"
                         if worker["parent_started"] != parent_started else "the pool's settings changed")
        warm = [w for w in warm if w not in stale]
        target = min(max(self.targets.get(name, pool["min"]), pool["min"]), pool["max"])
        if len(warm) > pool["max"]:
            for worker in warm[pool["max"]:]:
                self._remove(worker, f"above the maximum of {pool['max']}")
            warm = warm[:pool["max"]]
        elif name in self.scaled and len(warm) > target:  # `pool scale` to fewer: at once
            for worker in warm[target:]:
                self._remove(worker, f"scaled down to {target}")
            warm = warm[:target]
        elif len(warm) > pool["min"] and now - self.last_activity[name] >= idle_timeout:
            # A scale target holds only while the pool is busy: idle, it goes back to its minimum.
            target = pool["min"]
            for worker in warm[target:]:
                self._remove(worker, f"idle for {idle_timeout} s above the minimum of {target}")
            warm = warm[:target]
            self.targets.pop(name, None)
        self.scaled.discard(name)
        missing = target - len(warm)
        failures, next_try = self.backoff.get(name, (0, 0))
        if missing > 0 and now >= next_try:
            made = self._create(pool, missing)
            if made < missing:
                failures += 1
                delay = min(2 ** failures, 60)
                self.backoff[name] = (failures, now + delay)
                self.log(f"pool {name}: created {made} of {missing} warm workers; retrying in {delay} s")
            else:
                self.backoff.pop(name, None)
            if made:
                self.last_activity[name] = now  # the pool grew: idle time counts from here
            return len(warm) + made
        return len(warm)

    def _create(self, pool, count):
        made = 0
        for _attempt in range(count):
            try:
                spec = spawn_warm(self.client, pool, self.parent)
            except (Hal9000Error, APIError) as exc:
                self.log(f"pool {pool['name']}: creating a warm worker failed: {str(exc).splitlines()[0]}")
                break
            made += 1
            self.log(f"pool {pool['name']}: warm worker {spec['name']} ready")
        return made

    def _remove(self, worker, why):
        try:
            if remove_warm(self.client, self.home, worker["name"]):
                self.log(f"pool {worker['pool']}: removed warm worker {worker['name']} ({why})")
        except APIError as exc:  # e.g. 409: its removal is already in progress
            self.log(f"pool {worker['pool']}: could not remove warm worker {worker['name']}: {str(exc).splitlines()[0]}")
