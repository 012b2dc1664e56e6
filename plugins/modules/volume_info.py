#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: volume_info
short_description: Report on HAL-9000 volumes, their sizes and the containers using them
version_added: 0.1.0
description:
  - Reads the named volumes, whether they exist, their labels, size and the containers that mount them.
  - Never changes anything, so it runs the same in check mode.
author:
  - HAL-9000 DinD maintainers (@hal9000-dind)
options:
  names:
    description:
      - The volumes to report on; missing ones are reported with RV(volumes[].exists=false).
      - When not given, the shared volumes C(hal9000-chromadb), C(hal9000-memorybank) and C(hal9000-plugins).
    type: list
    elements: str
  sizes:
    description:
      - Also report the bytes each volume uses. This asks the daemon for its disk usage, which takes longer on busy hosts.
    type: bool
    default: true
extends_documentation_fragment:
  - hal9000.dind.docker
  - hal9000.dind.docker.attributes
  - hal9000.dind.docker.read_only
"""

EXAMPLES = r"""
- name: Show the shared volumes with their sizes
  hal9000.dind.volume_info:
  register: hal9000_volumes

- name: Print them
  ansible.builtin.debug:
    msg: "{{ item.name }}: {{ item.size_human if item.exists else 'not created' }}"
  loop: "{{ hal9000_volumes.volumes }}"
"""

RETURN = r"""
volumes:
  description: One entry per requested volume, in the order asked.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Volume name.
      type: str
      sample: hal9000-chromadb
    exists:
      description: Whether the volume exists.
      type: bool
      sample: true
    driver:
      description: Volume driver, empty when missing.
      type: str
      sample: local
    labels:
      description: Volume labels.
      type: dict
      sample: {"io.hal9000.type": "shared"}
    mountpoint:
      description: Where the data lives on the Docker host.
      type: str
      sample: /var/lib/docker/volumes/hal9000-chromadb/_data
    created:
      description: Creation time as the daemon reports it.
      type: str
      sample: "2026-11-27T15:00:00Z"
    size:
      description: Bytes used, or -1 when unknown or not asked for.
      type: int
      sample: 4096
    size_human:
      description: The size for people, such as C(4.0 KiB).
      type: str
      sample: 4.0 KiB
    used_by:
      description: Containers (running or not) that mount the volume.
      type: list
      elements: str
      sample: [hal9000-parent]
"""

from ansible.module_utils.common.text.formatters import bytes_to_human

from ansible_collections.hal9000.dind.plugins.module_utils.ansible_docker import build_module, run_module
from ansible_collections.hal9000.dind.plugins.module_utils.validate import validate_name
from ansible_collections.hal9000.dind.plugins.module_utils.volumes import (
    shared_volumes,
    containers_using_volume,
    inspect_volume,
    volume_sizes,
)


def describe_volumes(module, client):
    names = module.params["names"] or list(shared_volumes())
    sizes = volume_sizes(client) if module.params["sizes"] else {}
    volumes = []
    for name in names:
        inspected = inspect_volume(client, name) or {}
        size = sizes.get(name, -1) if inspected else -1
        volumes.append(
            dict(
                name=name,
                exists=bool(inspected),
                driver=inspected.get("Driver", ""),
                labels=inspected.get("Labels") or {},
                mountpoint=inspected.get("Mountpoint", ""),
                created=inspected.get("CreatedAt", ""),
                size=size,
                size_human=bytes_to_human(size) if size >= 0 else "unknown",
                used_by=containers_using_volume(client, name) if inspected else [],
            )
        )
    return dict(changed=False, volumes=volumes)


def main():
    module = build_module(
        dict(
            names=dict(type="list", elements="str"),
            sizes=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    run_module(module, describe_volumes, validate=lambda p: [validate_name(name, "volume") for name in p["names"] or []])


if __name__ == "__main__":
    main()
