#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: worker_homes
short_description: List the workers' Claude homes and /workspace volumes, and prune the homes of removed workers
version_added: 0.1.0
description:
  - Lists every persistent Claude home under C(workers/) in the HAL-9000 home (a worker's C(/home/claude)) with its
    size and whether its worker still exists, and the parent's C(/workspace) volumes of generic workers, marking those
    no container mounts any more (orphans).
  - With O(prune=true), removes the homes whose worker no longer exists. A home in use is never removed.
  - When this user may not read or remove a home (it belongs to a worker's uid), the running parent does it as root.
author:
  - HAL-9000 DinD maintainers (@hal9000-dind)
options:
  hal9000_home:
    description: The HAL-9000 home. Defaults to the directory the parent mounts as its home.
    type: path
  parent:
    description: The parent whose home and workspace volumes these are.
    type: str
    default: hal9000-parent
  prune:
    description: Remove the homes of workers that no longer exist (check mode lists them and removes nothing).
    type: bool
    default: false
extends_documentation_fragment:
  - hal9000.dind.docker
  - hal9000.dind.docker.attributes
attributes:
  check_mode:
    description: Lists what O(prune) would remove, and removes nothing.
    support: full
  diff_mode:
    description: Shows the homes before and after a prune.
    support: full
  idempotent:
    description: A second prune removes nothing.
    support: full
"""

EXAMPLES = r"""
- name: Show the Claude homes
  hal9000.dind.worker_homes:
  register: homes

- name: Remove the homes of removed workers (workers.yml -e workers_action=prune-homes)
  hal9000.dind.worker_homes:
    prune: true
"""

RETURN = r"""
homes:
  description: The Claude homes, as they were before any prune.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Its directory below C(workers/) (C(.warm-<name>) for an unclaimed warm worker's).
      type: str
      sample: my-worker
    worker:
      description: The worker it belongs to.
      type: str
    warm:
      description: Whether it is an unclaimed warm worker's.
      type: bool
    path:
      description: Its path.
      type: str
    size:
      description: Bytes it uses.
      type: int
    worker_exists:
      description: Whether a container of that worker exists (running or not).
      type: bool
workspaces:
  description: The parent's C(/workspace) volumes of generic workers.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Volume name, C(<worker>-workspace).
      type: str
    worker:
      description: The worker it was made for.
      type: str
    orphan:
      description: No container mounts it any more.
      type: bool
removed:
  description: The homes removed (or that would be, in check mode).
  returned: always
  type: list
  elements: str
"""

import os

from ansible_collections.hal9000.dind.plugins.module_utils.ansible_docker import build_module, run_module
from ansible_collections.hal9000.dind.plugins.module_utils.claude_homes import homes_report, run_privileged
from ansible_collections.hal9000.dind.plugins.module_utils.pool import installation_home
from ansible_collections.hal9000.dind.plugins.module_utils.validate import validate_name


def manage_homes(module, client):
    params = module.params
    home = params["hal9000_home"] or installation_home(client, params["parent"])
    if not os.path.isdir(home):
        return dict(changed=False, homes=[], workspaces=[], removed=[])
    homes, workspaces = homes_report(client, params["parent"], home)
    removed = [entry["name"] for entry in homes if params["prune"] and not entry["worker_exists"]]
    if not module.check_mode:
        for name in removed:
            run_privileged(client, params["parent"], home, "purge", name)
    result = dict(changed=bool(removed), homes=homes, workspaces=workspaces, removed=removed)
    if module._diff:
        result["diff"] = dict(before={"homes": [h["name"] for h in homes]},
                              after={"homes": [h["name"] for h in homes if h["name"] not in removed]})
    return result


def main():
    module = build_module(
        dict(
            hal9000_home=dict(type="path"),
            parent=dict(type="str", default="hal9000-parent"),
            prune=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    run_module(module, manage_homes, validate=lambda params: validate_name(params["parent"], "parent"))


if __name__ == "__main__":
    main()
