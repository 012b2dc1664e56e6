#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: drain
short_description: Stop handing out warm workers on a host and wait for its claimed workers, or resume
version_added: 0.2.0
description:
  - What a rolling upgrade (C(playbooks/upgrade.yml)) does to a host before and after its parent is replaced.
  - V(drained) stops the pool manager in the parent (the pools stay enabled in C(config/pools.json), so the next
    parent starts it again), removes the warm workers (under the claim lock, nothing is left to claim) and waits up
    to O(wait_timeout) seconds for the claimed workers (every running container in the parent's network but the
    relay) to end. Those still running are returned in RV(running); the module does not fail for them.
  - V(resumed) starts the pool manager when the pools are enabled and it does not run, and waits up to
    O(wait_timeout) seconds until every pool holds its minimum of warm workers (failing, naming the short pools).
  - Only the coordinator commands every parent has are used, so an old parent can be drained.
author:
  - HAL-9000 DinD maintainers (@hal9000-dind)
options:
  parent:
    description: The parent container whose pools and workers are drained or resumed.
    type: str
    default: hal9000-parent
  state:
    description: V(drained) or V(resumed).
    type: str
    choices: [drained, resumed]
    default: drained
  wait_timeout:
    description:
      - V(drained) - seconds to wait for the claimed workers to end (V(0) - do not wait).
      - V(resumed) - seconds to wait for the pools to reach their minimum (V(0) - do not wait).
    type: int
    default: 300
extends_documentation_fragment:
  - hal9000.dind.docker
  - hal9000.dind.docker.attributes
attributes:
  check_mode:
    description: Says what would be stopped, removed or started, and changes nothing (it does not wait).
    support: full
  diff_mode:
    description: No diff.
    support: none
  idempotent:
    description: A drained host drains to nothing more; a resumed one starts nothing more.
    support: full
"""

EXAMPLES = r"""
- name: Stop handing out warm workers and wait ten minutes for the claimed ones
  hal9000.dind.drain:
    wait_timeout: 600
  register: drained

- name: Say which workers still run
  ansible.builtin.debug:
    msg: "Still running: {{ drained.running | join(', ') }}"
  when: drained.running

- name: Hand out warm workers again once the pools are full
  hal9000.dind.drain:
    state: resumed
    wait_timeout: 120
"""

RETURN = r"""
actions:
  description: What was done, or would be done in check mode.
  returned: always
  type: list
  elements: str
  sample: ["stopped the pool manager", "removed 2 warm worker(s)"]
pool_enabled:
  description: Whether the parent's pools are enabled (the pool manager is to run).
  returned: always
  type: bool
removed:
  description: The warm workers removed.
  returned: when O(state=drained)
  type: list
  elements: str
running:
  description: The claimed workers still running in the parent's network when the wait ended.
  returned: when O(state=drained)
  type: list
  elements: str
  sample: ["my-worker"]
pools:
  description: Every pool with C(name), C(min), C(max) and C(warm) (its warm workers now).
  returned: when O(state=resumed)
  type: list
  elements: dict
"""

from ansible_collections.hal9000.dind.plugins.module_utils.ansible_docker import build_module, run_module
from ansible_collections.hal9000.dind.plugins.module_utils.drain import drain, resume
from ansible_collections.hal9000.dind.plugins.module_utils.validate import validate_name


def run(module, client):
    params = module.params
    act = drain if params["state"] == "drained" else resume
    result = act(client, params["parent"], params["wait_timeout"], check_mode=module.check_mode)
    return dict(result, changed=bool(result["actions"]))


def main():
    module = build_module(
        dict(
            parent=dict(type="str", default="hal9000-parent"),
            state=dict(type="str", default="drained", choices=["drained", "resumed"]),
            wait_timeout=dict(type="int", default=300),
        ),
        supports_check_mode=True,
    )
    run_module(module, run, validate=lambda params: validate_name(params["parent"], "parent"))


if __name__ == "__main__":
    main()
