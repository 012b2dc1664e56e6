# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Workers' Claude homes on the Docker host: ~/.hal9000/workers/<worker>/, the worker's /home/claude.

The whole home is mounted, not only ~/.claude: Claude Code keeps its state in ~/.claude/ and in
~/.claude.json beside it (onboarding, trusted projects, MCP approvals), and a worker recreated
with only one of them is not the worker it was. A home belongs to the worker's uid, mode 0700.

A warm worker runs on workers/.warm-<warm name>; a claim renames that directory to
workers/<name> (the bind mount follows the directory: a rename keeps the inode) and moves in
what an earlier worker of that name left. A home is used by one running worker at a time: the
container using it is recorded in run/homes/<home>.

When this process may not do an operation itself (a user's run acting on a home another uid owns),
the parent, which runs as root with the home mounted, does it: ``coordinator homes ...``.
Pure: standard library and the docker SDK only, never ``ansible.*``.
"""

from __future__ import annotations

import json
import os
import shutil

from ansible_collections.hal9000.dind.plugins.module_utils.engine import inspect_container
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.files import make_private_dirs, write_atomically, write_if_changed
from ansible_collections.hal9000.dind.plugins.module_utils.parent import run_coordinator
from ansible_collections.hal9000.dind.plugins.module_utils.fleet import LABEL_PARENT, LABEL_ROLE, LABEL_WORKER, ROLE_WORKER, ROLE_WORKSPACE
from ansible_collections.hal9000.dind.plugins.module_utils.relay import CLIENT_DIR, prepare_directories
from ansible_collections.hal9000.dind.plugins.module_utils.validate import validate_name

WORKERS_DIR = "workers"
USERS_DIR = os.path.join("run", "homes")
WARM_HOME_PREFIX = ".warm-"
CLAUDE_HOMES = ("persistent", "ephemeral")
HOME_IN_WORKER = "/home/claude"
PLUGINS_IN_WORKER = "/opt/hal9000/plugins"  # the plugins volume, read-only; ~/.claude/plugins links to it


def home_dirname(name, warm=False):
    """The directory below workers/ of a worker (``warm``: of a warm worker, until it is claimed)."""
    validate_name(name, "worker")
    return f"{WARM_HOME_PREFIX}{name}" if warm else name


def home_path(home, dirname):
    """workers/<dirname> below ``home``, refused when it is (or would be reached through) a symbolic link."""
    bare = dirname[len(WARM_HOME_PREFIX):] if dirname.startswith(WARM_HOME_PREFIX) else dirname
    validate_name(bare, "worker")
    workers = os.path.join(home, WORKERS_DIR)
    path = os.path.join(workers, dirname)
    for candidate in (workers, path):
        if os.path.islink(candidate):
            raise Hal9000Error(f"{candidate} is a symbolic link: a Claude home must be a real directory; remove the link.")
        if os.path.lexists(candidate) and not os.path.isdir(candidate):
            raise Hal9000Error(f"{candidate} exists and is not a directory: move it away, then run again.")
    if os.path.dirname(os.path.realpath(path)) != os.path.realpath(workers):
        raise Hal9000Error(f"Worker home {dirname!r} would be outside {workers}: give the worker another name.")
    return path


def _chown_tree(path, uid, gid):
    """Give a home and everything in it to the worker's uid (links themselves, never their targets)."""
    os.lchown(path, uid, gid)
    for root, directories, files in os.walk(path):
        for entry in directories + files:
            os.lchown(os.path.join(root, entry), uid, gid)


def prepare_home(home, dirname, uid, gid):
    """Create (or hand over) workers/<dirname> and its .claude for ``uid``; returns its path.

    Raises PermissionError when only root could do it (see ``run_privileged``).
    """
    path = home_path(home, dirname)
    if os.geteuid() not in (0, uid):  # checked first: nothing is made that could not be handed over
        raise PermissionError(1, f"only root can give a home to uid {uid}")
    make_private_dirs(os.path.join(home, WORKERS_DIR), home)
    if not os.path.isdir(path):
        os.mkdir(path, 0o700)
        os.chmod(path, 0o700)
        claude = os.path.join(path, ".claude")
        os.mkdir(claude, 0o700)
        os.chmod(claude, 0o700)
        plugins = os.path.join(claude, "plugins")
        os.symlink(PLUGINS_IN_WORKER, plugins)  # as the worker's entrypoint links it, before any session starts
        for made in (plugins, claude, path):
            os.lchown(made, uid, gid)
    elif (os.stat(path).st_uid, os.stat(path).st_gid) != (uid, gid):
        _chown_tree(path, uid, gid)  # the worker now runs as another user (e.g. the project changed hands)
    return path


def adopt_home(home, warm_dirname, name, uid, gid):
    """At a claim: the warm worker's home becomes workers/<name>, holding what an earlier <name> left."""
    source = home_path(home, warm_dirname)
    target = home_path(home, name)
    if os.path.isdir(target):
        earlier = os.stat(target)
        for entry in os.listdir(target):
            replaced = os.path.join(source, entry)
            if os.path.isdir(replaced) and not os.path.islink(replaced):
                shutil.rmtree(replaced)  # the idle warm worker's own files: nothing of value
            elif os.path.lexists(replaced):
                os.unlink(replaced)
            os.rename(os.path.join(target, entry), replaced)
        os.rmdir(target)
        if (earlier.st_uid, earlier.st_gid) != (uid, gid):  # an earlier worker of that name ran as another user
            _chown_tree(source, uid, gid)
    os.rename(source, target)
    return target


def purge_home(home, dirname):
    """Remove workers/<dirname> and its user record; True when there was one."""
    path = home_path(home, dirname)
    record = os.path.join(home, USERS_DIR, dirname)
    if os.path.lexists(record):
        os.unlink(record)
    if not os.path.isdir(path):
        return False
    shutil.rmtree(path)
    return True


def managed_settings(plugins_dir):
    """Claude Code's managed settings for workers: every plugin installed in the plugins volume enabled.

    Claude Code loads an installed plugin only when a settings file enables it; the user's own
    settings.json is the worker's, so the installation's plugins are enabled where every worker
    reads and none can write: /etc/claude-code/managed-settings.json.
    """
    try:
        with open(os.path.join(plugins_dir, "installed_plugins.json"), encoding="utf-8") as handle:
            installed = json.load(handle).get("plugins") or {}
    except (OSError, ValueError, AttributeError):
        installed = {}
    return {"enabledPlugins": {plugin: True for plugin in sorted(installed)}}


def write_managed_settings(home, plugins_dir):
    """Write run/relay/client/managed-settings.json when it changes; True when written."""
    prepare_directories(home)
    path = os.path.join(home, CLIENT_DIR, "managed-settings.json")
    return write_if_changed(path, json.dumps(managed_settings(plugins_dir), indent=2, sort_keys=True) + "\n", 0o644, home)


def _raise(error):
    raise error


def home_sizes(home):
    """{home directory: bytes} of every Claude home (warm ones included)."""
    workers = os.path.join(home, WORKERS_DIR)
    sizes = {}
    if not os.path.isdir(workers):
        return sizes
    for entry in sorted(os.listdir(workers)):
        path = os.path.join(workers, entry)
        if os.path.islink(path) or not os.path.isdir(path):
            continue
        total = os.lstat(path).st_size
        for root, directories, files in os.walk(path, onerror=_raise):
            for name in directories + files:
                total += os.lstat(os.path.join(root, name)).st_size
        sizes[entry] = total
    return sizes


def record_user(home, dirname, container_id):
    """Note which container uses a home (the one-running-worker-per-home check reads it)."""
    directory = make_private_dirs(os.path.join(home, USERS_DIR), home)
    write_atomically(os.path.join(directory, dirname), container_id, 0o600, home)


def recorded_user(home, dirname):
    try:
        with open(os.path.join(home, USERS_DIR, dirname), encoding="utf-8") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def check_home_free(client, home, dirname, replacing=None):
    """Refuse a home a running worker (other than ``replacing``) uses: two Claude Codes on one home corrupt it."""
    user = recorded_user(home, dirname)
    if not user or user == replacing:
        return
    inspected = inspect_container(client, user)
    if inspected is not None and inspected["State"]["Running"]:
        holder = inspected["Name"].lstrip("/")
        raise Hal9000Error(
            f"The Claude home {os.path.join(home, WORKERS_DIR, dirname)} is in use by the running worker {holder}: "
            f"stop {holder}, or give this worker another name or claude_home=ephemeral."
        )


def homes_report(client, parent, home):
    """Every Claude home below ``home`` with its size and whether its worker exists, and ``parent``'s
    /workspace volumes with whether a container still mounts them (orphans: none does)."""
    containers = client.api.containers(all=True, filters={"label": f"{LABEL_ROLE}={ROLE_WORKER}"})
    names = {summary["Names"][0].lstrip("/") for summary in containers}
    ids = {summary["Id"] for summary in containers}
    mounted = {mount.get("Name") for summary in containers for mount in summary.get("Mounts") or []}
    homes = []
    for dirname, size in sorted(run_privileged(client, parent, home, "sizes").items()):
        warm = dirname.startswith(WARM_HOME_PREFIX)
        worker = dirname[len(WARM_HOME_PREFIX):] if warm else dirname
        homes.append({"name": dirname, "worker": worker, "warm": warm, "size": size,
                      "path": os.path.join(home, WORKERS_DIR, dirname),
                      "worker_exists": worker in names or recorded_user(home, dirname) in ids})
    volumes = client.api.volumes(filters={"label": [f"{LABEL_ROLE}={ROLE_WORKSPACE}", f"{LABEL_PARENT}={parent}"]})
    workspaces = [{"name": volume["Name"], "worker": (volume.get("Labels") or {}).get(LABEL_WORKER, ""),
                   "orphan": volume["Name"] not in mounted}
                  for volume in sorted((volumes or {}).get("Volumes") or [], key=lambda v: v["Name"])]
    return homes, workspaces


# The operations the parent does on a caller's behalf, by name (coordinator homes <operation> ...).
OPERATIONS = {"prepare": prepare_home, "adopt": adopt_home, "purge": purge_home, "sizes": home_sizes}


def run_privileged(client, parent, home, operation, *args):
    """``operation`` here, or (without the permission) by the parent, as root on the same home."""
    try:
        return OPERATIONS[operation](home, *args)
    except PermissionError as exc:
        denied = exc
    running = inspect_container(client, parent) if client is not None and parent else None
    if running is None or not running["State"]["Running"]:
        raise Hal9000Error(
            f"No permission to {operation} a Claude home in {home} ({denied.strerror}) and no running parent to do it: "
            "run as root or as the home's owner, or start the parent."
        )
    return json.loads(run_coordinator(client, running["Id"], "homes", operation, *args, user="0"))
