# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A worker brought to the state asked of it: claimed, spawned, recreated, stopped or removed.

The worker module and claudy call ``put_worker`` with the module's options.
Pure: standard library and the docker SDK only, never ``ansible.*``.
"""

from __future__ import annotations

import os
import time

from ansible_collections.hal9000.dind.plugins.module_utils.claude_config import keep_api_key_helper, sync_claude_config
from ansible_collections.hal9000.dind.plugins.module_utils.claude_homes import (
    USERS_DIR,
    check_home_free,
    home_path,
    record_user,
    run_privileged,
)
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.constants import FLAVOUR_IMAGES, default_home
from ansible_collections.hal9000.dind.plugins.module_utils.engine import inspect_container
from ansible_collections.hal9000.dind.plugins.module_utils.fleet import LABEL_CLAUDE_HOME, LABEL_MANAGED, LABEL_ROLE, ROLE_WORKER
from ansible_collections.hal9000.dind.plugins.module_utils.images import inspect_image
from ansible_collections.hal9000.dind.plugins.module_utils.pool import claim, installation_home
from ansible_collections.hal9000.dind.plugins.module_utils.relay import issue_credential, read_scope, set_scope
from ansible_collections.hal9000.dind.plugins.module_utils.settings import resolve, resolve_in_home
from ansible_collections.hal9000.dind.plugins.module_utils.validate import validate_name
from ansible_collections.hal9000.dind.plugins.module_utils.workers import (
    API_KEY_HELPER,
    WORKER_OPTIONS,
    attach_command,
    current_limits,
    parent_network,
    record_session,
    register_egress,
    remove_worker,
    spawn_worker,
    stale_reasons,
    uid_gid,
    update_limits,
    worker_argument_spec,
    worker_facts,
    worker_spec,
)


NO_WARM_FIT = "No warm worker fits these options"


def module_argument_spec():
    """The worker module's options; claudy starts from their defaults too."""
    return dict(
        name=dict(type="str"),
        image=dict(type="str"),
        flavour=dict(type="str", choices=list(FLAVOUR_IMAGES)),
        state=dict(type="str", default="started", choices=["started", "stopped", "absent"]),
        mount_claude_config=dict(type="bool", default=False),
        claude_config_dir=dict(type="path", default="~/.claude"),
        claude_config_credentials=dict(type="bool", default=False),
        purge_home=dict(type="bool", default=False),
        from_pool=dict(type="bool", default=False),
        hal9000_home=dict(type="path"),
        **worker_argument_spec(),
    )


def spec_from_params(params, settings):
    """Validated before any call to the daemon."""
    return worker_spec(
        name=params["name"], image=params["image"] or FLAVOUR_IMAGES[params["flavour"] or "minimal"],
        claude_config_dir=params["claude_config_dir"] if params["mount_claude_config"] else None,
        settings=settings, **{option.name: params[option.name] for option in WORKER_OPTIONS},
    )


def fix_name(params):
    """Validate a start before Docker is touched (hal9000.conf is read later), and keep a generated name for the run."""
    if params["state"] == "started":
        spec = spec_from_params(params, resolve(environ=os.environ))
        params["name"], params["claude_home"] = spec["name"], spec["claude_home"]  # a generated name: ephemeral


def copy_claude_config(client, params, spec, home, check_mode, replacing=None):
    """mount_claude_config: the host's config copied into the worker's home (claude_config.sync_claude_config)."""
    if not spec["claude_config_dir"]:
        return []
    uid, gid = uid_gid(spec["user"])
    check_home_free(client, home, spec["name"], replacing)  # never into the home of another running worker
    if not check_mode:
        run_privileged(client, spec["parent"], home, "prepare", spec["name"], uid, gid)
    target = os.path.join(home_path(home, spec["name"]), ".claude")
    state = os.path.join(home, USERS_DIR, f"{spec['name']}.claude-config.json")  # out of the worker's reach
    try:
        actions = sync_claude_config(spec["claude_config_dir"], target, state, uid, gid,
                                     include_credentials=params["claude_config_credentials"], check_mode=check_mode)
        if spec["api_key_file"] and not check_mode:
            keep_api_key_helper(os.path.join(target, "settings.json"), API_KEY_HELPER, uid, gid)
    except PermissionError:
        raise Hal9000Error(f"mount_claude_config: no permission to copy into the home of uid {uid}: "
                           "run as root, or let the worker run as you (user: your uid:gid).") from None
    return actions


def home_of(client, params):
    """The installation's home: given, else the one the parent mounts (legacy workers have no parent)."""
    if params["hal9000_home"]:
        return params["hal9000_home"]
    if params["mode"] == "legacy":
        return default_home()
    return installation_home(client, params["parent"])


def removal_home(client, params):
    """Where a removed worker's relay credential is; None when the parent is gone (it prunes the record at its next start)."""
    try:
        return home_of(client, params)
    except Hal9000Error:
        return None


def describe(inspected, spec, spawn_ms=None):
    if inspected is None:
        return {"name": spec["name"], "state": "absent"}
    labels = inspected["Config"].get("Labels") or {}
    return {
        "id": inspected["Id"],
        "name": inspected["Name"].lstrip("/"),
        "state": inspected["State"]["Status"],
        "image": inspected["Config"]["Image"],
        "network_mode": inspected["HostConfig"]["NetworkMode"],
        "project": labels.get("io.hal9000.project", ""),
        "user": inspected["Config"].get("User", ""),
        "limits": current_limits(inspected),
        "claude_home": labels.get(LABEL_CLAUDE_HOME, "ephemeral"),
        "spawn_ms": spawn_ms,
        "attach_command": attach_command(inspected["Name"].lstrip("/")),
    }


def comparable(worker):
    return {k: worker.get(k) for k in ("state", "image", "project", "user", "limits", "network_mode")} if worker.get("id") else {}


def planned(before, spec, actions, network, state):
    """What a check run expects afterwards, in the shape a real run's diff has."""
    if not actions:
        return comparable(before)
    if state == "absent" or (state == "stopped" and "auto_remove" in actions[0]):
        return {}
    if state == "stopped":
        return dict(comparable(before), state="exited")
    return {"state": "running", "image": spec["image"], "project": spec["project"], "user": spec["user"],
            "limits": dict(spec["limits"]), "network_mode": network[0]}


def put_worker(client, params, check_mode=False, diff=False, warn=None, deprecate=None):
    """Bring the worker ``params`` describe (the worker module's options) to its state; the module's result.

    Shared by the worker module and claudy. ``warn`` and ``deprecate`` take one message each.
    """
    warn = warn or (lambda message: None)
    deprecate = deprecate or warn
    home = None
    if params["state"] == "started":
        home = home_of(client, params)  # its hal9000.conf here, its claim lock below
        # The explicit limits go to worker_spec itself (it names them in its errors); the environment and the file here.
        settings = resolve_in_home(home, environ=os.environ)
        spec = spec_from_params(params, settings)
    else:
        spec = {"name": validate_name(params["name"], "worker"), "mode": params["mode"]}
    if params["state"] == "started" and spec["mode"] == "legacy":
        deprecate("mode=legacy (the v0.5.x single-container mode) is deprecated: use the default dind mode with a parent.")
    name = spec["name"]
    current = inspect_container(client, name)
    labels = (current or {}).get("Config", {}).get("Labels") or {}
    # The worker image itself carries io.hal9000.role=worker, so any container started from it has that label:
    # only containers this collection made (io.hal9000.managed=true) are workers it may replace or remove.
    if current is not None and (labels.get(LABEL_ROLE) != ROLE_WORKER or labels.get(LABEL_MANAGED) != "true"):
        raise Hal9000Error(f"A container named {name} exists and is not a HAL-9000 worker: choose another name.")
    actions, spawn_ms, claimed_id, claim_ms, network = [], None, None, None, ("", "")
    state = params["state"]
    # Taken now: a recreate forgets `current`, and the diff must still show the worker that was there.
    before = describe(current, spec) if current else {"name": name, "state": "absent"}

    if state == "started":
        image = inspect_image(client, spec["image"])
        if image is None:
            raise Hal9000Error(f"Worker image {spec['image']} is missing: build it with playbooks/build_images.yml.")
        network = parent_network(client, spec)
        if current is not None:
            reasons = stale_reasons(worker_facts(current), spec, image["Id"], network)
            if reasons:
                actions.append(f"recreated {name} ({', '.join(reasons)})")
                if not check_mode:
                    remove_worker(client, current["Id"], home, inspected=current)
                current = None
        if current is None and params["from_pool"] and not check_mode:
            began = time.monotonic()
            lock_timeout = []  # a stuck claim lock: said instead, and a cold spawn all the same
            claimed_id = claim(client, spec, name, home, network, image["Id"], warn=lock_timeout.append)
            claim_ms = round((time.monotonic() - began) * 1000, 1)
            if claimed_id:
                actions.append(f"claimed a warm worker as {name}")
                current = inspect_container(client, name)
            else:
                warn(lock_timeout[0] if lock_timeout else f"{NO_WARM_FIT}: {name} is a cold spawn.")
        if current is None or not current["State"]["Running"]:
            actions += copy_claude_config(client, params, spec, home, check_mode, current and current["Id"])
        if current is None:
            actions.append(f"started {name}")
            if not check_mode:
                spawn_ms = spawn_worker(client, spec, network, home, image["Id"])[1]
        else:
            if current_limits(current) != spec["limits"]:
                actions.append(f"updated limits of {name} in place")
                if not check_mode:
                    update_limits(client, current["Id"], spec["limits"])
            if not current["State"]["Running"]:
                actions.append(f"started {name}")
                if not check_mode:
                    if spec["claude_home"] == "persistent":
                        check_home_free(client, home, name, replacing=current["Id"])
                    client.api.start(current["Id"])
                    if spec["claude_home"] == "persistent":
                        record_user(home, name, current["Id"])
                    if spec["relay"]:  # its tmpfs lost the token when it stopped: a new credential
                        issue_credential(client, home, current["Id"], spec["user"], spec["memory_scope"])
                    record_session(client, home, current["Id"], spec, image["Id"])
            elif spec["relay"] and (recorded := read_scope(home, current["Id"])) != spec["memory_scope"]:
                actions.append(f"set the memory scope of {name} to {spec['memory_scope']}" if recorded
                               else f"gave {name} a relay credential")
                if not check_mode and recorded:
                    set_scope(home, current["Id"], spec["memory_scope"])
                elif not check_mode:
                    issue_credential(client, home, current["Id"], spec["user"], spec["memory_scope"])
            if spec["egress_allow"] is not None and not claimed_id and not check_mode and register_egress(
                    client, spec["parent"], current["Id"], spec["user"], spec["egress_allow"],
                    spec["environment"].get("ANTHROPIC_BASE_URL", "")):  # not in the digest: applied in place
                actions.append(f"applied the egress_allow of {name}")
    elif current is not None and state == "stopped" and current["State"]["Running"]:
        actions.append(f"stopped {name}" + (" (removed: auto_remove)" if current["HostConfig"].get("AutoRemove") else ""))
        if not check_mode:
            client.api.stop(current["Id"], timeout=10)
    elif current is not None and state == "absent":
        actions.append(f"removed {name}" + (" and its Claude home" if params["purge_home"] else ""))
        if not check_mode:
            remove_worker(client, current["Id"], removal_home(client, params), inspected=current, purge=params["purge_home"])
    elif state == "absent" and params["purge_home"]:
        home = removal_home(client, params)
        if home and os.path.isdir(home_path(home, name)):
            actions.append(f"removed the Claude home of {name}")
            if not check_mode:
                run_privileged(client, params["parent"], home, "purge", name)

    after = describe(inspect_container(client, name), spec, spawn_ms) if not check_mode else before
    result = dict(changed=bool(actions), worker=after, actions=actions, claimed=claimed_id is not None)
    if claim_ms is not None:
        result["claim_ms"] = claim_ms
    if diff:
        result["diff"] = dict(before=comparable(before),
                              after=planned(before, spec, actions, network, state) if check_mode else comparable(after))
    return result
