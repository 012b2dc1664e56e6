#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: placement
short_description: Choose the fleet host a new worker goes to
version_added: 0.2.0
description:
  - Picks, among the hosts of a fleet, the one with a warm worker of the right pool (the pool for the worker's image
    and project), else the one with the most free memory against its workers' limits, where the new worker fits.
  - A host's free memory is C(min(MemAvailable, MemTotal - the memory limits of its running workers)); the new worker
    fits when that is at least its memory limit (O(memory), else the host's C(WORKER_MEMORY) from hal9000.conf).
    A host that is unreachable, or whose parent is not running, is never chosen.
  - When no host has a warm worker or room, it fails with one line saying why for each host.
  - Decides only; C(playbooks/spawn_worker.yml) with C(worker_host=auto) then claims or spawns there with
    M(hal9000.dind.worker). Runs anywhere, usually on the controller; it contacts no host.
author:
  - HAL-9000 DinD maintainers (@hal9000-dind)
options:
  hosts:
    description: The candidate hosts, in order of preference for a tie.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The host's name.
        type: str
        required: true
      info:
        description: What M(hal9000.dind.info) returned on the host (its registered result, unreachable or failed ones included).
        type: dict
        default: {}
      meminfo:
        description: The host's C(/proc/meminfo).
        type: str
        default: ''
      error:
        description: Why the host cannot be used, when known otherwise.
        type: str
        default: ''
  image:
    description: The worker's image. Mutually exclusive with O(flavour).
    type: str
  flavour:
    description: The worker's bundled image (see M(hal9000.dind.worker)). Neither this nor O(image) - V(minimal).
    type: str
    choices: [minimal, ultramin]
  project_dir:
    description: The worker's project directory (a pool's project is compared with its normalised path); none for a generic worker.
    type: str
  memory:
    description: The worker's memory limit; unset, each host's C(WORKER_MEMORY).
    type: str
  no_limits:
    description: The worker runs without limits, so any host with a running parent has room.
    type: bool
    default: false
attributes:
  check_mode:
    description: Decides the same in check mode.
    support: full
  diff_mode:
    description: Nothing changes.
    support: none
  idempotent:
    description: Changes nothing.
    support: full
requirements:
  - docker (the Docker SDK for Python), to read memory sizes
"""

EXAMPLES = r"""
- name: Read every host
  hal9000.dind.info:
  register: info

- name: Read free memory
  ansible.builtin.slurp:
    src: /proc/meminfo
  register: meminfo

- name: Put each host's facts together
  ansible.builtin.set_fact:
    placement_row:
      name: "{{ inventory_hostname }}"
      info: "{{ info }}"
      meminfo: "{{ meminfo.content | b64decode }}"

- name: Choose the host
  hal9000.dind.placement:
    hosts: "{{ ansible_play_hosts | map('extract', hostvars, 'placement_row') | list }}"
    flavour: minimal
  delegate_to: localhost
  run_once: true
  register: placed
"""

RETURN = r"""
host:
  description: The chosen host.
  returned: success
  type: str
  sample: node2
action:
  description: V(claim) (a warm worker of the pool is there) or V(spawn) (a new worker is made there).
  returned: success
  type: str
reason:
  description: Why this host, in words.
  returned: success
  type: str
  sample: "1 warm worker(s) of the pool for hal9000/worker:latest without a project"
hosts:
  description:
    - Every candidate with C(name), C(warm) (warm workers of the pool), C(free) and C(needed) (bytes; null when not
      looked at) and C(why_not) (empty when it had room).
  returned: success
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hal9000.dind.plugins.module_utils.constants import FLAVOUR_IMAGES
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.placement import choose_host, host_facts


def main():
    module = AnsibleModule(
        argument_spec=dict(
            hosts=dict(type="list", elements="dict", required=True, options=dict(
                name=dict(type="str", required=True),
                info=dict(type="dict", default={}),
                meminfo=dict(type="str", default=""),
                error=dict(type="str", default=""),
            )),
            image=dict(type="str"),
            flavour=dict(type="str", choices=list(FLAVOUR_IMAGES)),
            project_dir=dict(type="str"),
            memory=dict(type="str"),
            no_limits=dict(type="bool", default=False),
        ),
        mutually_exclusive=[("image", "flavour")],
        supports_check_mode=True,
    )
    params = module.params
    image = params["image"] or FLAVOUR_IMAGES[params["flavour"] or "minimal"]
    hosts = [host_facts(h["name"], h["info"], h["meminfo"], h["error"]) for h in params["hosts"]]
    try:
        chosen = choose_host(hosts, image, params["project_dir"] or "", params["memory"], params["no_limits"])
    except Hal9000Error as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, **chosen)


if __name__ == "__main__":
    main()
