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

from ansible_collections.hal9000.dind.plugins.module_utils.claude_homes import check_home_free, home_dirname, purge_home, record_user, run_privileged
from ansible_collections.hal9000.dind.plugins.module_utils.constants import CLAIM_LOCK_FILE, HOME_IN_PARENT, POOLS_FILE
from ansible_collections.hal9000.dind.plugins.module_utils.engine import ERRORS, inspect_container
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.files import give_to_home_owner, make_private_dirs, write_json_atomically
from ansible_collections.hal9000.dind.plugins.module_utils.fleet import (
    LABEL_CLAUDE_HOME,
    LABEL_LIMITS,
    LABEL_PARENT,
    LABEL_POOL,
    LABEL_ROLE,
    LABEL_SPEC,
    LABEL_WARM_NAME,
    LABEL_WORKSPACE,
    ROLE_WORKER,
    limits_label,
)
from ansible_collections.hal9000.dind.plugins.module_utils.images import image_id
from ansible_collections.hal9000.dind.plugins.module_utils.parent import mounted_home
from ansible_collections.hal9000.dind.plugins.module_utils.relay import revoke, set_scope
from ansible_collections.hal9000.dind.plugins.module_utils.settings import BY_KEY
from ansible_collections.hal9000.dind.plugins.module_utils.validate import check_worker_user, validate_name
from ansible_collections.hal9000.dind.plugins.module_utils import warm_index
from ansible_collections.hal9000.dind.plugins.module_utils.workers import (
    CLAUDE_USER,
    POOL_OPTIONS,
    ParentNetwork,
    egress_of,
    own_egress,
    register_egress,
    ParentView,
    generate_name,
    parent_network,
    project_path,
    record_session,
    remove_worker,
    remove_workspace,
    spawn_worker,
    stale_reasons,
    uid_gid,
    update_limits,
    worker_facts,
    worker_spec,
)

GENERIC_POOL = "generic"
WARM_PREFIX = "hal9000-warm"


def _count(value, what):
    if value is None:
        return None  # not given: hal9000.conf's setting decides when the pools are loaded
    if isinstance(value, bool) or not str(value).strip().isdigit():  # also refuses "-1" and "1.5"
        raise Hal9000Error(f"{what}={value!r} must be a whole number, 0 or more.")
    return int(value)


def validate_pools(config, settings=None):
    """The pool settings typed and checked: min <= max, non-negative integers, unique names.

    A pool's min, max and image and the idle timeout may be left out (None): with ``settings``
    (``settings.resolve``) they take MIN_WARM_WORKERS, MAX_WARM_WORKERS, WORKER_IMAGE and
    IDLE_TIMEOUT, so pools.json keeps following hal9000.conf; without, they stay None (as saved).
    """
    pools, seen = [], set()
    for pool in config.get("pools") or []:
        name = validate_name(str(pool.get("name", "")), "pool")
        if name in seen:
            raise Hal9000Error(f"Pool {name} is declared twice: give each pool its own name.")
        seen.add(name)
        low = _count(pool.get("min"), f"pool {name} min")
        high = _count(pool.get("max"), f"pool {name} max")
        image = pool.get("image") or None
        if settings is not None:
            low = settings["min_warm_workers"] if low is None else low
            high = settings["max_warm_workers"] if high is None else high
            image = image or settings["worker_image"]
        if low is not None and high is not None and low > high:
            raise Hal9000Error(f"Pool {name}: min {low} is more than max {high}; the minimum must not exceed the maximum.")
        project = str(pool.get("project") or "")
        try:  # what the paths and the user say; spawn_worker looks at the host before a worker is made
            if project and project_path(project) != project:
                raise Hal9000Error(f"project {project!r} is not a normalised path: give it as hal9000.dind.pool writes it.")
            user = check_worker_user(str(pool.get("user") or CLAUDE_USER))
        except Hal9000Error as exc:
            raise Hal9000Error(f"Pool {name}: {exc}") from None
        entry = {"name": name, "project": project, "min": low, "max": high, "image": image, "user": user}
        for option in POOL_OPTIONS:  # the worker options pools offer (workers.WORKER_OPTIONS)
            value = pool.get(option.name)
            default = option.ansible.get("default")
            if option.name == "egress_allow":  # None (not given: the installation's policy) stays None
                try:
                    entry[option.name] = own_egress(value, "dind", user)
                except Hal9000Error as exc:
                    raise Hal9000Error(f"Pool {name}: {exc}") from None
            elif option.ansible["type"] == "bool":
                entry[option.name] = bool(default if value is None else value)
            else:
                entry[option.name] = str(value or default or "")
        pools.append(entry)
    for first in pools:  # warm workers of one uid share its egress rules (docs/egress.md)
        other = next((p for p in pools if p is not first and p["user"].split(":")[0] == first["user"].split(":")[0]
                      and p["egress_allow"] != first["egress_allow"]), None)
        if other:
            raise Hal9000Error(f"Pools {first['name']} and {other['name']} run as uid {first['user'].split(':')[0]} with different "
                               "egress_allow: workers that share a uid share a policy; give one of them a user of its own "
                               "(a pool runs as its project's owner).")
    idle_timeout = _count(config.get("idle_timeout"), "idle_timeout")
    if settings is not None and idle_timeout is None:
        idle_timeout = settings["idle_timeout"]
    return {"enabled": bool(config.get("enabled", False)), "idle_timeout": idle_timeout, "pools": pools}


def default_pools(settings):
    """Without pools.json: the seed's single pool, all from hal9000.conf's settings."""
    return validate_pools({"enabled": settings["enable_pool_manager"], "pools": [{"name": GENERIC_POOL}]}, settings)


def read_pools(home):
    """pools.json as saved (None where hal9000.conf decides), or None when there is none."""
    path = os.path.join(home, POOLS_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return validate_pools(json.load(handle))


def load_pools(home, settings):
    """The pools in force: pools.json with hal9000.conf's settings filled in, or the seed's single pool."""
    saved = read_pools(home)
    return default_pools(settings) if saved is None else validate_pools(saved, settings)


def save_pools(home, config):
    path = os.path.join(home, POOLS_FILE)
    make_private_dirs(os.path.dirname(path), home)
    write_json_atomically(path, validate_pools(config), 0o600, home)


def pool_spec(pool, parent, settings):
    """The spec every warm worker of ``pool`` is made from (host paths were checked when the pool was declared).

    Its limits are hal9000.conf's worker limits, as for every other worker made without explicit ones.
    """
    return worker_spec(
        name=generate_name(WARM_PREFIX), image=pool["image"], project_dir=pool["project"] or None,
        parent=parent, pool=pool["name"], user=pool["user"], check_host_paths=False, settings=settings,
        **{option.name: pool[option.name] for option in POOL_OPTIONS},
    )


def spawn_warm(client, pool, parent, settings, network=None, home=None, host_view=None):
    """Create and start one warm worker of ``pool``; returns its spec. Its host paths are looked at on
    ``host_view`` (default: the parent's, ``workers.ParentView``), as for every worker, by spawn_worker."""
    spec = pool_spec(pool, parent, settings)
    network = ParentNetwork(*(network or parent_network(client, spec)))
    container_id, _milliseconds = spawn_worker(client, spec, network, home, host_view=host_view)
    if home or network.home:
        warm_index.add(home or network.home, spec["digest"], container_id)
    return spec


def installation_home(client, parent):
    """The host directory the parent mounts as its home: where the claim lock of its pools lives."""
    inspected = inspect_container(client, parent)
    if inspected is None:
        raise Hal9000Error(f"Parent {parent} is not running: start the daemon first (claudy daemon start, or ansible-playbook playbooks/daemon.yml).")
    home = mounted_home(inspected)
    if home is None:
        raise Hal9000Error(f"Parent {parent} has no home mounted at {HOME_IN_PARENT}: recreate it with hal9000.dind.parent.")
    return home


class ClaimLockTimeout(Hal9000Error):
    """The claim lock stayed taken for the whole claim_timeout (CLAIM_TIMEOUT)."""


@contextlib.contextmanager
def claim_lock(home, timeout=None):
    """Exclusive lock over the warm workers of the installation whose home is ``home``, waited for at most
    ``timeout`` seconds (default: CLAIM_TIMEOUT's), then ``ClaimLockTimeout``.

    Docker has no atomic "rename if still named X": it resolves a container's name before it locks
    the container, so two claimers renaming the same warm worker can both succeed (seen with 10
    concurrent claims). Every claimer (the worker module on the host, the coordinator in the parent)
    and every remover of warm workers therefore takes this flock on a file in the shared home,
    which the parent bind-mounts: one inode, one lock, for processes on the host and in the parent.
    flock itself never gives up: one stuck holder would freeze every claim and the pool manager, so
    the lock is tried without blocking until the timeout.
    """
    timeout = BY_KEY["CLAIM_TIMEOUT"].default if timeout is None else timeout
    path = os.path.join(home, CLAIM_LOCK_FILE)
    try:
        make_private_dirs(os.path.dirname(path), home)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        give_to_home_owner(path, home)
    except OSError as exc:
        raise Hal9000Error(
            f"Cannot open the warm pool's claim lock {path}: {exc.strerror}; run as the owner of {home}, or claim with from_pool=false."
        ) from None
    try:
        deadline, pause = time.monotonic() + timeout, 0.001
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ClaimLockTimeout(
                        f"The warm pool's claim lock {path} stayed taken for {timeout:g} s (CLAIM_TIMEOUT): another claim "
                        "or the pool manager is stuck holding it (it is freed when that process ends)."
                    ) from None
                time.sleep(min(pause, left))
                pause = min(pause * 2, 0.05)  # a claim holds it for milliseconds: look again soon
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
    warm = [_warm_entry(summary, summary["Names"][0], summary.get("Labels") or {}, summary["Created"]) for summary in summaries]
    return sorted((worker for worker in warm if worker), key=lambda w: w["created"])


def _warm_entry(container, name, labels, created):
    """A ``warm_workers`` entry from a listing's summary or an inspect; None when it was claimed (renamed)."""
    name = name.lstrip("/")
    if not labels.get(LABEL_POOL) or labels.get(LABEL_WARM_NAME) != name:
        return None
    return dict(worker_facts(container), id=container["Id"], name=name, pool=labels[LABEL_POOL], created=created,
                limits_label=labels.get(LABEL_LIMITS, ""), claude_home=labels.get(LABEL_CLAUDE_HOME, ""),
                workspace=labels.get(LABEL_WORKSPACE, ""), egress_allow=egress_of(labels))


def _listed_warm(client, parent, digest):
    """``warm_workers`` of ``digest``, listed only when first asked for (a generator)."""
    yield from warm_workers(client, parent, digest=digest)


def _indexed_warm(client, home, parent, digest):
    """The warm workers of ``digest`` that ``warm_index`` names, oldest first, each checked by an inspect
    (one call whatever the number of containers); entries of workers gone or claimed are dropped."""
    for entry, container_id in warm_index.indexed(home, digest):
        inspected = inspect_container(client, container_id)
        labels = ((inspected or {}).get("Config") or {}).get("Labels") or {}
        running = inspected and inspected["State"]["Running"] and labels.get(LABEL_PARENT) == parent
        worker = _warm_entry(inspected, inspected["Name"], labels, inspected["Created"]) if running else None
        if worker is None or worker["digest"] != digest:
            warm_index.forget(home, digest, container_id, entry)
            continue
        yield dict(worker, index_entry=entry)


def warm_counts(client, parent, pools):
    """Running warm workers of each pool (name -> count)."""
    return {p["name"]: len(warm_workers(client, parent, pool=p["name"])) for p in pools}


def wait_for_minimum(client, parent, pools, timeout, home, sleep=time.sleep):
    """Wait up to ``timeout`` s until every pool (in force: min filled in) holds its minimum; the warm counts.

    Pools still short then raise Hal9000Error naming them and the pool manager's log.
    """
    deadline = time.monotonic() + timeout
    warm = warm_counts(client, parent, pools)
    while any(warm[p["name"]] < p["min"] for p in pools) and time.monotonic() < deadline:
        sleep(0.25)
        warm = warm_counts(client, parent, pools)
    short = [f"{p['name']} has {warm[p['name']]} of {p['min']}" for p in pools if warm[p["name"]] < p["min"]]
    if short:
        raise Hal9000Error(
            f"Pools not at their minimum after {timeout} s ({'; '.join(short)}): see {os.path.join(home, 'logs', 'pool-manager.log')}."
        )
    return warm


def claim(client, spec, new_name, home, network=None, current_image_id=None, warn=None):
    """Rename a warm worker that is current for ``spec`` to ``new_name``; returns its ID or None.

    Current as ``workers.stale_reasons`` decides for every worker: the spec's digest, the image ID
    the spec's tag names now and the parent's ``network`` (both looked up when not given). Under the
    claim lock of the installation whose home is ``home``: one container list and one rename. The
    spec's limits are applied in place when the warm worker was made with others.
    The lock is waited for ``spec["claim_timeout"]`` seconds: then, with ``warn`` (a caller with a cold
    spawn to fall back on), ``warn(why)`` and None; without, ``ClaimLockTimeout``.
    """
    validate_name(new_name, "worker")
    network = network or parent_network(client, spec)
    current_image_id = current_image_id or image_id(client, spec["image"])
    persistent = spec["claude_home"] == "persistent"
    try:
        candidate = _rename_warm(client, spec, new_name, home, network, current_image_id)
    except ClaimLockTimeout as exc:
        if warn is None:
            raise
        warn(f"{exc} No warm worker claimed: {new_name} is a cold spawn.")
        return None
    if candidate is None:
        return None
    if persistent:
        try:  # its home takes the claimed name, with what an earlier worker of that name left
            run_privileged(client, spec["parent"], home, "adopt", home_dirname(candidate["name"], warm=True), new_name,
                           *uid_gid(spec["user"]))
        except Exception:
            remove_worker(client, candidate["id"], home)  # a claimed worker without its home would lose its work
            raise
        record_user(home, new_name, candidate["id"])
    if candidate["limits_label"] != limits_label(spec["limits"]):
        update_limits(client, candidate["id"], spec["limits"])
    # The claimant's own allowlist, else its pool's (the label): the uid's chain rewritten, nothing restarted.
    allow = spec.get("egress_allow") if spec.get("egress_allow") is not None else candidate.get("egress_allow")
    if allow is not None:
        try:
            register_egress(client, spec["parent"], candidate["id"], spec["user"], allow,
                            spec["environment"].get("ANTHROPIC_BASE_URL", ""))
        except Exception:
            remove_worker(client, candidate["id"], home)  # never a claimed worker under a policy it was not given
            raise
    if spec["relay"]:
        set_scope(home, candidate["id"], spec["memory_scope"])  # the claimant's scope, from its next request on
    record_session(client, home, candidate["id"], dict(spec, name=new_name), current_image_id, claimed=True)
    return candidate["id"]


def _rename_warm(client, spec, new_name, home, network, current_image_id):
    """Under the claim lock: the first current warm worker renamed to ``new_name`` (its ``warm_workers`` entry), or None."""
    with claim_lock(home, spec.get("claim_timeout")):
        if spec["claude_home"] == "persistent":
            check_home_free(client, home, new_name)
        # The index first; the container list (whose cost grows with every container) only when it offers none.
        for candidates in (_indexed_warm(client, home, spec["parent"], spec["digest"]),
                           _listed_warm(client, spec["parent"], spec["digest"])):
            for candidate in candidates:
                if stale_reasons(candidate, spec, current_image_id, network):
                    continue
                try:
                    client.api.rename(candidate["id"], new_name)
                except ERRORS.NotFound:
                    continue  # removed since the listing (by a remover that does not share this lock)
                except ERRORS.APIError as exc:
                    if exc.status_code == 409 and new_name in str(exc):
                        raise Hal9000Error(f"A container named {new_name} already exists: choose another name.") from None
                    continue  # e.g. its removal is in progress: the next candidate
                warm_index.forget(home, spec["digest"], candidate["id"], candidate.get("index_entry"))
                return candidate
    return None


def remove_warm(client, home, worker, timeout=None):
    """Remove the warm worker ``worker`` (and its /workspace volume) unless a claim took it; True if removed.

    By its warm name and under the claim lock (waited for ``timeout`` s, default CLAIM_TIMEOUT's): a worker
    claimed meanwhile has another name and is spared. ``worker`` is its entry in ``warm_workers``.
    """
    with claim_lock(home, timeout):
        try:
            client.api.remove_container(worker["name"], force=True, v=True)
        except ERRORS.NotFound:
            return False
    warm_index.forget(home, worker["digest"], worker["id"])
    revoke(home, worker["id"])
    remove_workspace(client, worker.get("workspace"))
    if worker.get("claude_home") == "persistent":
        purge_home(home, home_dirname(worker["name"], warm=True))  # an idle warm worker's home holds nothing of value
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
        self.claim_timeout = None  # CLAIM_TIMEOUT, read at every pass

    def scale(self, pool, target):
        """`coordinator pool scale`: keep ``target`` warm (within min and max) until the pool is idle."""
        self.targets[pool] = int(target)
        self.scaled.add(pool)

    def note_claim(self, pool):
        self.last_activity[pool] = self.clock()

    def reconcile(self, config, settings):
        """One pass over every pool; returns {pool: warm count after the pass}."""
        self.claim_timeout = settings["claim_timeout"]
        configured = {pool["name"] for pool in config["pools"]}
        listed_at = time.time()
        every_warm = warm_workers(self.client, self.parent)
        warm_index.sync(self.home, every_warm, listed_at)  # before this pass adds or removes any
        for worker in every_warm:
            if worker["pool"] not in configured:  # its pool was removed from the settings
                self._remove(worker, "its pool is no longer configured")
        counts = {}
        for pool in config["pools"]:
            counts[pool["name"]] = self._reconcile_pool(pool, config["idle_timeout"], settings)
        return counts

    def _reconcile_pool(self, pool, idle_timeout, settings):
        name = pool["name"]
        now = self.clock()
        self.last_activity.setdefault(name, now)
        spec = pool_spec(pool, self.parent, settings)
        network = parent_network(self.client, spec)
        current_image_id = image_id(self.client, spec["image"])
        warm, outdated = [], []
        for worker in warm_workers(self.client, self.parent, pool=name):
            reasons = stale_reasons(worker, spec, current_image_id, network)
            if reasons == ["image changed"]:
                outdated.append(worker)  # replaced below, once its successors run
            elif reasons:  # joined a previous network namespace of the parent, or the pool's settings changed
                self._remove(worker, " and ".join(reasons))
            else:
                warm.append(worker)
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
        made = self._fill(pool, target - len(warm), settings, network, now)
        # Claims never take a worker on an older image, so the old ones go as soon as the new ones run
        # (the pool is never emptied first, and at most its target is made at once).
        for worker in outdated:
            self._remove(worker, "its image was rebuilt")
        return len(warm) + made

    def _fill(self, pool, missing, settings, network, now):
        """Create ``missing`` warm workers unless backing off; returns how many were made."""
        name = pool["name"]
        failures, next_try = self.backoff.get(name, (0, 0))
        if missing <= 0 or now < next_try:
            return 0
        made = self._create(pool, missing, settings, network)
        if made < missing:
            failures += 1
            delay = min(2 ** failures, 60)
            self.backoff[name] = (failures, now + delay)
            self.log(f"pool {name}: created {made} of {missing} warm workers; retrying in {delay} s")
        else:
            self.backoff.pop(name, None)
        if made:
            self.last_activity[name] = now  # the pool grew: idle time counts from here
        return made

    def _create(self, pool, count, settings, network):
        made = 0
        host_view = ParentView(self.client, self.parent)  # the host looked at once for the whole batch
        for _attempt in range(count):
            try:
                spec = spawn_warm(self.client, pool, self.parent, settings, network, self.home, host_view)
            except (Hal9000Error, *ERRORS.APIError) as exc:
                self.log(f"pool {pool['name']}: creating a warm worker failed: {str(exc).splitlines()[0]}")
                break
            made += 1
            self.log(f"pool {pool['name']}: warm worker {spec['name']} ready")
        return made

    def _remove(self, worker, why):
        try:
            if remove_warm(self.client, self.home, worker, self.claim_timeout):
                self.log(f"pool {worker['pool']}: removed warm worker {worker['name']} ({why})")
        except (*ERRORS.APIError, ClaimLockTimeout) as exc:  # e.g. 409: its removal is already in progress; a stuck claim
            self.log(f"pool {worker['pool']}: could not remove warm worker {worker['name']}: {str(exc).splitlines()[0]}")
