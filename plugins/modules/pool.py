#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pool
short_description: Configure the warm-worker pools of a HAL-9000 parent
version_added: 0.1.0
description:
  - Writes the pool settings (C(config/pools.json) under O(hal9000_home), read by the pool manager in the parent),
    starts or stops the pool manager, and waits until every pool holds at least its minimum of warm workers.
  - The generic pool's warm workers have no project (an empty per-worker volume at C(/workspace)); a per-project pool's
    warm workers have the project bind-mounted and run as its owner, so a claimed worker is complete.
  - Claim a warm worker with M(hal9000.dind.worker) and O(hal9000.dind.worker#module:from_pool=true), or
    C(docker exec hal9000-parent coordinator claim NAME).
author:
  - HAL-9000 DinD maintainers (@hal9000-dind)
options:
  parent:
    description: The parent whose pool manager is configured.
    type: str
    default: hal9000-parent
  hal9000_home:
    description: The HAL-9000 home on the Docker host (mounted in the parent).
    type: path
    default: ~/.hal9000
  enabled:
    description: Run the pool manager.
    type: bool
    default: true
  generic:
    description: Keep the generic pool (workers without a project).
    type: bool
    default: true
  min_warm_workers:
    description:
      - Minimum warm workers of the generic pool.
      - Unset, C(MIN_WARM_WORKERS) in C(config/hal9000.conf) decides, else V(2); the pool manager follows later changes of the
        file. The same holds for O(max_warm_workers) (C(MAX_WARM_WORKERS), else V(5)) and O(idle_timeout)
        (C(IDLE_TIMEOUT), else V(300)).
    type: int
  max_warm_workers:
    description: Maximum warm workers of the generic pool.
    type: int
  idle_timeout:
    description: Seconds without a claim after which warm workers above a pool's minimum are removed.
    type: int
  pools:
    description: Per-project pools.
    type: list
    elements: dict
    default: []
    suboptions:
      name:
        description: Pool name.
        type: str
        required: true
      project_dir:
        description:
          - Project directory on the Docker host, bind-mounted into every warm worker of the pool; its real path is saved.
          - Refused as O(hal9000.dind.worker#module:project_dir) is (system trees, whole homes, the HAL-9000 home, ...;
            C(docs/project-dirs.md)); the pool manager looks again, on the host, before it makes each batch of warm workers.
        type: path
        required: true
      min:
        description: Minimum warm workers.
        type: int
        default: 1
      max:
        description: Maximum warm workers.
        type: int
        default: 3
      flavour:
        description: Worker image flavour.
        type: str
        choices: [minimal, ultramin]
        default: minimal
      api_key_file:
        description: Host file with the Anthropic API key (mode 0600), mounted into the pool's workers.
        type: path
      read_only:
        description:
          - Warm workers with a read-only root file system (C(/tmp) and C(/home/claude) stay writable), claimed by
            M(hal9000.dind.worker) with O(hal9000.dind.worker#module:read_only=true).
        type: bool
        default: false
      memory_scope:
        description: Memory scope of the pool's workers (see O(hal9000.dind.worker#module:memory_scope)); a claim may give another.
        type: str
        choices: [project, shared, none]
        default: project
      anthropic_base_url:
        description: Claude Code's model endpoint in the pool's workers (unset - C(ANTHROPIC_BASE_URL) in hal9000.conf).
        type: str
      claude_home:
        description:
          - Where the pool's workers keep Claude Code's state (see O(hal9000.dind.worker#module:claude_home)); unset, V(persistent).
          - A persistent warm worker's home is C(workers/.warm-<warm name>) until a claim renames it to the claimed name.
        type: str
        choices: [persistent, ephemeral]
      plugins:
        description: Mount the installation's plugins volume read-only in the pool's workers (see O(hal9000.dind.worker#module:plugins)).
        type: bool
        default: true
      storage_size:
        description:
          - The most each of the pool's workers may write outside its Claude home and C(/workspace)
            (see O(hal9000.dind.worker#module:storage_size)); unset, C(WORKER_STORAGE_SIZE) in hal9000.conf, else C(10g).
        type: str
      egress_allow:
        description:
          - The pool's own egress allowlist (see O(hal9000.dind.worker#module:egress_allow)), applied to its workers' uid
            when each is made and again at each claim; unset, the installation's policy.
          - Workers that share a uid share a policy - pools with the same user (their project's owner) must not
            differ in it. See C(docs/egress.md).
        type: list
        elements: str
  wait:
    description: Wait until every pool holds its minimum of warm workers.
    type: bool
    default: true
  wait_timeout:
    description: Seconds to wait.
    type: int
    default: 120
extends_documentation_fragment:
  - hal9000.dind.docker
  - hal9000.dind.docker.attributes
attributes:
  check_mode:
    description: Says whether the settings or the manager's state would change, and changes nothing.
    support: full
  diff_mode:
    description: Shows the pool settings before and after.
    support: full
  idempotent:
    description: The same settings change nothing.
    support: full
"""

EXAMPLES = r"""
- name: Keep three generic warm workers ready
  hal9000.dind.pool:
    min_warm_workers: 3

- name: Add a pool for one project
  hal9000.dind.pool:
    pools:
      - name: webapp
        project_dir: /srv/projects/webapp
        min: 2
        max: 4

- name: Turn the pool off (warm and claimed workers are left as they are)
  hal9000.dind.pool:
    enabled: false
"""

RETURN = r"""
pools:
  description: Every pool with its settings and how many warm workers it holds.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "generic", "project": "", "min": 2, "max": 5, "warm": 2}]
manager_running:
  description: Whether the pool manager runs in the parent afterwards.
  returned: always
  type: bool
actions:
  description: What was done, or would be done in check mode.
  returned: always
  type: list
  elements: str
"""

import json

from ansible_collections.hal9000.dind.plugins.module_utils.ansible_docker import build_module, run_module
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.constants import DEFAULT_HOME, FLAVOUR_IMAGES, PARENT_NAME
from ansible_collections.hal9000.dind.plugins.module_utils.docker_api import inspect_container
from ansible_collections.hal9000.dind.plugins.module_utils.parent import run_coordinator
from ansible_collections.hal9000.dind.plugins.module_utils.pool import (
    GENERIC_POOL,
    read_pools,
    save_pools,
    validate_pools,
    wait_for_minimum,
    warm_counts,
)
from ansible_collections.hal9000.dind.plugins.module_utils.settings import resolve_in_home
from ansible_collections.hal9000.dind.plugins.module_utils.workers import (
    POOL_OPTIONS,
    check_api_key_file,
    project_user,
    resolve_project_dir,
)


def wanted_config(params):
    """The pools.json the options describe, with host paths resolved and checked here on the Docker host."""
    pools = []
    if params["generic"]:
        pools.append({"name": GENERIC_POOL, "min": params["min_warm_workers"], "max": params["max_warm_workers"]})
    for pool in params["pools"]:
        project = resolve_project_dir(pool["project_dir"], home=params["hal9000_home"])
        user = project_user(project)
        if pool["api_key_file"]:
            check_api_key_file(pool["api_key_file"], int(user.split(":", maxsplit=1)[0]))
        pools.append(dict({option.name: pool[option.name] for option in POOL_OPTIONS},
                          name=pool["name"], project=project, min=pool["min"], max=pool["max"], user=user,
                          image=FLAVOUR_IMAGES[pool["flavour"]]))
    return validate_pools({"enabled": params["enabled"], "idle_timeout": params["idle_timeout"], "pools": pools})


def current_config(home):
    try:
        return read_pools(home)
    except (ValueError, Hal9000Error):
        return {}


def manage_pool(module, client):
    params = module.params
    home = params["hal9000_home"]
    wanted = wanted_config(params)  # as saved: None where hal9000.conf decides
    in_force = validate_pools(wanted, resolve_in_home(home))
    before = current_config(home)
    parent = inspect_container(client, params["parent"])
    if parent is None or not parent["State"]["Running"]:
        raise Hal9000Error(f"Parent {params['parent']} is not running: start the daemon first (ansible-playbook playbooks/daemon.yml).")
    actions = []
    if before != wanted:
        actions.append("wrote the pool settings")
        if not module.check_mode:
            save_pools(home, wanted)  # makes config/ too
    running = json.loads(run_coordinator(client, parent["Id"], "pool", "status", "--json"))["running"]
    if wanted["enabled"] and not running:
        actions.append("started the pool manager")
        if not module.check_mode:
            run_coordinator(client, parent["Id"], "pool", "start")
    elif not wanted["enabled"] and running:
        actions.append("stopped the pool manager")
        if not module.check_mode:
            run_coordinator(client, parent["Id"], "pool", "stop")
    elif running and actions and not module.check_mode:
        run_coordinator(client, parent["Id"], "pool", "reload")

    if params["wait"] and wanted["enabled"] and not module.check_mode:
        warm = wait_for_minimum(client, params["parent"], in_force["pools"], params["wait_timeout"], home)
    else:
        warm = warm_counts(client, params["parent"], in_force["pools"])
    result = dict(
        changed=bool(actions), actions=actions, manager_running=wanted["enabled"] if not module.check_mode else running,
        pools=[dict(p, warm=warm[p["name"]]) for p in in_force["pools"]],
    )
    if module._diff:
        result["diff"] = dict(before=before or {}, after=wanted)
    return result


def main():
    module = build_module(
        dict(
            parent=dict(type="str", default=PARENT_NAME),
            hal9000_home=dict(type="path", default=DEFAULT_HOME),
            enabled=dict(type="bool", default=True),
            generic=dict(type="bool", default=True),
            min_warm_workers=dict(type="int"),
            max_warm_workers=dict(type="int"),
            idle_timeout=dict(type="int"),
            pools=dict(type="list", elements="dict", default=[], options=dict(
                name=dict(type="str", required=True),
                project_dir=dict(type="path", required=True),
                min=dict(type="int", default=1),
                max=dict(type="int", default=3),
                flavour=dict(type="str", default="minimal", choices=list(FLAVOUR_IMAGES)),
                **{option.name: dict(option.ansible) for option in POOL_OPTIONS},
            )),
            wait=dict(type="bool", default=True),
            wait_timeout=dict(type="int", default=120),
        ),
        supports_check_mode=True,
    )
    run_module(module, manage_pool, validate=wanted_config)


if __name__ == "__main__":
    main()
