#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: worker
short_description: Run a hardened, limited Claude Code worker container
version_added: 0.1.0
description:
  - Starts, stops or removes one worker. Every worker, whether made by this module, by the coordinator in the parent
    or by the pool manager, comes from the same spec in the collection's module_utils.
  - In the default V(dind) mode the worker shares the parent's network namespace (C(network_mode container:<parent>)),
    so ChromaDB answers on its localhost:8000. The deprecated V(legacy) mode (the seed's v0.5.x single-container
    mode) runs it on its own network without a parent; it will be removed in 1.0.
  - Hardened by default, each relaxable by an explicit option - all capabilities dropped, no-new-privileges,
    a non-root user (the project's owner, so files written in C(/workspace) belong to them), Docker's default seccomp
    profile, never the Docker socket. The API key is mounted read-only from O(api_key_file) at
    C(/run/secrets/anthropic_key) and read by Claude Code through its C(apiKeyHelper) setting, never from the
    environment.
  - The same options change nothing. Changed limits are applied in place (C(docker update)) without a restart;
    other changes recreate the worker. A worker whose parent was recreated (its network points at a container that no
    longer runs) is recreated into the current parent's network.
author:
  - HAL-9000 DinD maintainers (@hal9000-dind)
options:
  name:
    description:
      - Worker name. When not given, a unique name C(hal9000-worker-<random>) is generated (so the task is not idempotent).
    type: str
  project_dir:
    description:
      - Project directory on the Docker host, bind-mounted read-write at C(/workspace). Symlinks are resolved; system
        locations (C(/), C(/etc), C(/usr), the Docker socket, ...) are refused.
      - Without it the worker gets an empty per-worker volume at C(/workspace).
    type: path
  image:
    description: Worker image. Mutually exclusive with O(flavour).
    type: str
  flavour:
    description: Bundled worker image to use - V(minimal) (C(hal9000/worker:latest), with git) or V(ultramin) (no git).
    type: str
    choices: [minimal, ultramin]
  state:
    description: V(started) creates and starts it; V(stopped) stops it (removed too when O(auto_remove)); V(absent) removes it.
    type: str
    choices: [started, stopped, absent]
    default: started
  auto_remove:
    description: Remove the container when it stops (the seed's C(--rm); V(false) is C(--no-rm)).
    type: bool
    default: true
  memory:
    description:
      - Memory limit (no swap on top).
      - Unset, E(WORKER_MEMORY) in the module's environment, then C(WORKER_MEMORY) in C(config/hal9000.conf) under
        O(hal9000_home), then C(4g). The same rule gives O(cpus) and O(pids_limit) their defaults.
    type: str
  cpus:
    description: CPU limit. Defaults to E(WORKER_CPUS), then C(WORKER_CPUS) in hal9000.conf, then C(2).
    type: str
  pids_limit:
    description: Process limit. Defaults to E(WORKER_PIDS_LIMIT), then C(WORKER_PIDS_LIMIT) in hal9000.conf, then C(100).
    type: str
  hal9000_home:
    description:
      - The HAL-9000 home whose C(config/hal9000.conf) gives the default limits, and whose claim lock O(from_pool) takes.
      - Defaults to the directory the parent mounts as its home (so it is the parent's), or C(~/.hal9000) in V(legacy) mode.
    type: path
  no_limits:
    description: Run without memory, CPU and process limits.
    type: bool
    default: false
  env:
    description: Extra environment variables. Names containing C(API_KEY) or C(TOKEN) are refused (use O(api_key_file)).
    type: dict
    default: {}
  api_key_file:
    description: Host file holding the Anthropic API key, mode 0600 or stricter, readable by the worker's user.
    type: path
  mount_claude_config:
    description:
      - Give the worker the host's Claude config (the seed's option A), safely - a private copy of O(claude_config_dir)
        in the worker's own Claude home (C(~/.claude) there), owned by the worker's user. The host directory is never
        mounted, so nothing in the worker can change the host's settings, hooks or credentials, and it works when the
        module runs as root without widening the host directory's modes.
      - Copied again at every start of the worker, file by file, when the host's file changed since the last copy;
        the worker's own changes to a file stay until the host's changes. Run-time state (C(projects/), C(todos/),
        history, ...) and symbolic links are never copied. Needs O(claude_home=persistent).
    type: bool
    default: false
  claude_config_dir:
    description: The host directory O(mount_claude_config) copies.
    type: path
    default: ~/.claude
  claude_config_credentials:
    description:
      - Also copy C(.credentials.json) (the host's Claude login) with O(mount_claude_config).
      - Off, it is never copied, and removed if an earlier run copied it.
    type: bool
    default: false
  claude_home:
    description:
      - Where the worker's Claude Code state (C(~/.claude), C(~/.claude.json), history, settings, login) lives.
      - V(persistent) - C(workers/<name>/) under O(hal9000_home) on the Docker host, owned by the worker's user, mode 0700,
        mounted as C(/home/claude); it survives a recreate of the same worker name and is kept when the worker is
        removed (unless O(purge_home)). Only one running worker may use a home.
      - V(ephemeral) - a tmpfs, gone with the container.
      - Unset, V(persistent) when O(name) is given (or O(mount_claude_config)), else V(ephemeral).
      - A claimed warm worker (O(from_pool=true)) gets its home at the claim (its pool's workers must be persistent too).
    type: str
    choices: [persistent, ephemeral]
  plugins:
    description:
      - Mount the installation's plugins volume (the parent's C(<prefix>-plugins), where the migration put the v0.5.x
        plugins) read-only at C(/opt/hal9000/plugins), linked from C(~/.claude/plugins); the parent enables its
        installed plugins through Claude Code's managed settings. V(false) leaves it out.
    type: bool
    default: true
  purge_home:
    description: With O(state=absent), also remove the worker's persistent Claude home. By default it is kept.
    type: bool
    default: false
  read_only:
    description: Read-only root file system (C(/tmp), C(/home/claude) and the mounts stay writable).
    type: bool
    default: false
  memory_scope:
    description:
      - Whose memory the worker's MCP servers (through the parent's relay) reach.
      - V(project) - the memory of its O(project_dir) only (a worker without a project has none); V(shared) - the
        installation's common memory, where migrated v0.5.x data is; V(none) - no memory.
      - Whatever project, file or collection name the worker gives, it stays inside this scope.
      - A claimed warm worker (O(from_pool=true)) gets this scope at the claim.
    type: str
    choices: [project, shared, none]
    default: project
  anthropic_base_url:
    description:
      - Claude Code's model endpoint in the worker (C(ANTHROPIC_BASE_URL), e.g. an LLM gateway), an http(s) URL.
      - Unset, C(ANTHROPIC_BASE_URL) in hal9000.conf under O(hal9000_home) decides, else Claude Code's own default.
    type: str
  drop_capabilities:
    description: Drop every Linux capability.
    type: bool
    default: true
  no_new_privileges:
    description: Forbid gaining privileges (setuid binaries).
    type: bool
    default: true
  user:
    description: C(uid:gid) to run as. Defaults to the owner of O(project_dir), or C(1001:1001) (the image's user) for root-owned or no project.
    type: str
  parent:
    description: The parent whose network the worker shares.
    type: str
    default: hal9000-parent
  mode:
    description: V(dind) shares the parent's network; V(legacy) (deprecated, removed in 1.0) runs without a parent.
    type: str
    choices: [dind, legacy]
    default: dind
  from_pool:
    description:
      - Take a warm worker made from exactly these options (same image, project, user, API key file, ...) from the
        parent's pool and give it O(name), instead of creating one. Limits are then applied in place.
      - When no warm worker fits, a worker is created as usual and RV(claimed) is false.
      - Claims take a lock file in the parent's home (C(run/claim.lock) under its O(hal9000.dind.parent#module:hal9000_home)),
        so two claimers never get the same worker; the module must run on the Docker host as a user who may write there.
    type: bool
    default: false
  command:
    description: Command to run instead of idling (the default idles, ready for C(docker exec -it NAME claude)).
    type: list
    elements: str
extends_documentation_fragment:
  - hal9000.dind.docker
  - hal9000.dind.docker.attributes
attributes:
  check_mode:
    description: Says what would be created, updated or removed, and does nothing.
    support: full
  diff_mode:
    description: Shows the worker's image, project, user and limits before and after.
    support: full
  idempotent:
    description: Idempotent when O(name) is given.
    support: partial
"""

EXAMPLES = r"""
- name: A background worker on a project (the seed's spawn-worker.sh -d -n my-worker /path/to/project)
  hal9000.dind.worker:
    name: my-worker
    project_dir: /srv/projects/webapp
    api_key_file: /home/alice/.hal9000/secrets/anthropic_key
  register: spawned

- name: Say how to attach
  ansible.builtin.debug:
    msg: "{{ spawned.worker.attach_command }}"

- name: More memory and processes, applied without a restart
  hal9000.dind.worker:
    name: my-worker
    project_dir: /srv/projects/webapp
    memory: 8g
    pids_limit: "200"

- name: Stop it
  hal9000.dind.worker:
    name: my-worker
    state: stopped
"""

RETURN = r"""
worker:
  description: The worker; only RV(worker.name) and RV(worker.state=absent) when it does not exist.
  returned: always
  type: dict
  contains:
    id:
      description: Container ID.
      type: str
    name:
      description: Worker name.
      type: str
      sample: hal9000-worker-3f2a9c0d1e
    state:
      description: C(running), C(exited) or C(absent).
      type: str
    image:
      description: Image reference.
      type: str
    network_mode:
      description: C(container:<parent id>) in dind mode, C(bridge) in legacy mode.
      type: str
    project:
      description: The resolved project directory, empty for a generic worker.
      type: str
    user:
      description: The C(uid:gid) the worker runs as.
      type: str
      sample: "1000:1000"
    limits:
      description: Memory in bytes, CPUs and process limit (nulls without limits).
      type: dict
      sample: {"memory": 4294967296, "cpus": 2.0, "pids_limit": 100}
    claude_home:
      description: V(persistent) (C(workers/<name>) under the home) or V(ephemeral) (a tmpfs).
      type: str
      sample: persistent
    spawn_ms:
      description: Milliseconds from create to started, when this run started it; otherwise null.
      type: float
    attach_command:
      description: How to open Claude Code in it.
      type: str
      sample: docker exec -it my-worker claude
claimed:
  description: Whether a warm worker was claimed from the pool (O(from_pool=true)).
  returned: always
  type: bool
claim_ms:
  description: Milliseconds the claim took (the pool lookup and the rename), when one was made.
  returned: when O(from_pool=true) and a worker was created or claimed
  type: float
actions:
  description: What was done, or would be done in check mode.
  returned: always
  type: list
  elements: str
"""

import os
import time

from ansible_collections.hal9000.dind.plugins.module_utils.ansible_docker import build_module, run_module
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
from ansible_collections.hal9000.dind.plugins.module_utils.docker_api import inspect_container
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
    remove_worker,
    spawn_worker,
    stale_reasons,
    uid_gid,
    update_limits,
    worker_argument_spec,
    worker_facts,
    worker_spec,
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


def manage_worker(module, client):
    params = module.params
    home = None
    if params["state"] == "started":
        home = home_of(client, params)  # its hal9000.conf here, its claim lock below
        # The explicit limits go to worker_spec itself (it names them in its errors); the environment and the file here.
        settings = resolve_in_home(home, environ=os.environ)
        spec = spec_from_params(params, settings)
    else:
        spec = {"name": validate_name(params["name"], "worker"), "mode": params["mode"]}
    if params["state"] == "started" and spec["mode"] == "legacy":
        module.deprecate(
            "mode=legacy (the v0.5.x single-container mode) is deprecated: use the default dind mode with a parent.",
            version="1.0.0", collection_name="hal9000.dind",
        )
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
                if not module.check_mode:
                    remove_worker(client, current["Id"], home, inspected=current)
                current = None
        if current is None and params["from_pool"] and not module.check_mode:
            began = time.monotonic()
            claimed_id = claim(client, spec, name, home, network, image["Id"])
            claim_ms = round((time.monotonic() - began) * 1000, 1)
            if claimed_id:
                actions.append(f"claimed a warm worker as {name}")
                current = inspect_container(client, name)
            else:
                module.warn(f"No warm worker fits these options: {name} is a cold spawn.")
        if current is None or not current["State"]["Running"]:
            actions += copy_claude_config(client, params, spec, home, module.check_mode, current and current["Id"])
        if current is None:
            actions.append(f"started {name}")
            if not module.check_mode:
                spawn_ms = spawn_worker(client, spec, network, home, image["Id"])[1]
        else:
            if current_limits(current) != spec["limits"]:
                actions.append(f"updated limits of {name} in place")
                if not module.check_mode:
                    update_limits(client, current["Id"], spec["limits"])
            if not current["State"]["Running"]:
                actions.append(f"started {name}")
                if not module.check_mode:
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
                if not module.check_mode and recorded:
                    set_scope(home, current["Id"], spec["memory_scope"])
                elif not module.check_mode:
                    issue_credential(client, home, current["Id"], spec["user"], spec["memory_scope"])
    elif current is not None and state == "stopped" and current["State"]["Running"]:
        actions.append(f"stopped {name}" + (" (removed: auto_remove)" if current["HostConfig"].get("AutoRemove") else ""))
        if not module.check_mode:
            client.api.stop(current["Id"], timeout=10)
    elif current is not None and state == "absent":
        actions.append(f"removed {name}" + (" and its Claude home" if params["purge_home"] else ""))
        if not module.check_mode:
            remove_worker(client, current["Id"], removal_home(client, params), inspected=current, purge=params["purge_home"])
    elif state == "absent" and params["purge_home"]:
        home = removal_home(client, params)
        if home and os.path.isdir(home_path(home, name)):
            actions.append(f"removed the Claude home of {name}")
            if not module.check_mode:
                run_privileged(client, params["parent"], home, "purge", name)

    after = describe(inspect_container(client, name), spec, spawn_ms) if not module.check_mode else before
    result = dict(changed=bool(actions), worker=after, actions=actions, claimed=claimed_id is not None)
    if claim_ms is not None:
        result["claim_ms"] = claim_ms
    if module._diff:
        result["diff"] = dict(before=comparable(before),
                              after=planned(before, spec, actions, network, state) if module.check_mode else comparable(after))
    return result


def main():
    module = build_module(
        dict(
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
        ),
        supports_check_mode=True,
        mutually_exclusive=[("image", "flavour")],
    )
    if module.params["state"] != "started" and not module.params["name"]:
        module.fail_json(msg=f"state={module.params['state']} needs the worker's name.")
    run_module(module, manage_worker, validate=fix_name)


if __name__ == "__main__":
    main()
