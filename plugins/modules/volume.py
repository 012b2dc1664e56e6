#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: volume
short_description: Manage the named Docker volumes of a HAL-9000 installation
version_added: 0.1.0
description:
  - Creates or removes a named Docker volume, such as the shared C(hal9000-chromadb),
    C(hal9000-memorybank) and C(hal9000-plugins) volumes, or several with the same settings in one task (O(names)).
  - The name is checked against Docker's naming rules before any call to the daemon.
  - A volume that already exists is compared on the requested labels and driver options only;
    it is never recreated (which would lose its data) unless O(recreate=options-changed).
  - A volume still used by a container is never removed; the module names the containers instead. With O(names),
    every volume is checked before the first one is removed or recreated, so a refusal leaves all of them as they were.
author:
  - HAL-9000 DinD maintainers (@hal9000-dind)
options:
  name:
    description:
      - Name of the volume. Docker allows 2 to 128 characters from C(a-z A-Z 0-9 _ . -), starting with a letter or digit.
      - One of O(name) and O(names) is required.
    type: str
  names:
    description:
      - Several volumes with the same settings, handled in this order in one task (one module run instead of a loop).
    type: list
    elements: str
  state:
    description:
      - V(present) creates the volume when it is missing.
      - V(absent) removes it, and fails without removing anything when a container uses it.
    type: str
    choices: [present, absent]
    default: present
  labels:
    description:
      - Labels to set when the volume is created. Values must be strings.
      - Only the labels given here are compared with an existing volume.
    type: dict
  driver:
    description:
      - Volume driver.
    type: str
    default: local
  driver_options:
    description:
      - Options for the volume driver. Only the keys given here are compared with an existing volume.
    type: dict
  recreate:
    description:
      - What to do when an existing volume differs from the requested driver, driver options or labels.
      - V(never) keeps the volume and its data, and warns about the difference.
      - V(options-changed) removes and recreates it, losing its content; it refuses while a container uses the volume.
    type: str
    choices: [never, options-changed]
    default: never
extends_documentation_fragment:
  - hal9000.dind.docker
  - hal9000.dind.docker.attributes
attributes:
  check_mode:
    description: Reports what would be created or removed without changing anything.
    support: full
  diff_mode:
    description: Shows the volume before and after.
    support: full
  idempotent:
    description: Running twice with the same options changes nothing the second time.
    support: full
"""

EXAMPLES = r"""
- name: Create the shared ChromaDB volume
  hal9000.dind.volume:
    name: hal9000-chromadb
    labels:
      io.hal9000.managed: "true"
      io.hal9000.type: shared

- name: Create the three shared volumes in one task
  hal9000.dind.volume:
    names: [hal9000-chromadb, hal9000-memorybank, hal9000-plugins]
    labels:
      io.hal9000.managed: "true"
      io.hal9000.type: shared

- name: Remove a volume that no container uses any more
  hal9000.dind.volume:
    name: hal9000-plugins
    state: absent

- name: Talk to a remote engine for every module of the collection
  module_defaults:
    group/hal9000.dind.docker:
      docker_host: tcp://127.0.0.1:2375
  hal9000.dind.volume:
    name: hal9000-memorybank
"""

RETURN = r"""
volume:
  description:
    - The volume as C(docker volume inspect) shows it, or what would be created in check mode.
    - Empty after O(state=absent).
  returned: when O(name) is given
  type: dict
  sample:
    Name: hal9000-chromadb
    Driver: local
    Mountpoint: /var/lib/docker/volumes/hal9000-chromadb/_data
    Labels:
      io.hal9000.managed: "true"
    Options: {}
    Scope: local
actions:
  description: What was done, or would be done in check mode.
  returned: always
  type: list
  elements: str
  sample:
    - created volume hal9000-chromadb
volumes:
  description: Each volume as RV(volume) describes it, in the order of O(names) (or just O(name)).
  returned: always
  type: list
  elements: dict
  sample: [{"Name": "hal9000-chromadb", "Driver": "local", "Labels": {"io.hal9000.managed": "true"}}]
differences:
  description:
    - Requested settings that differ on an existing volume, such as C(labels.io.hal9000.type).
    - With O(names), each is prefixed with its volume name and a colon, such as C(hal9000-chromadb) followed by
      C(labels.io.hal9000.type).
  returned: always
  type: list
  elements: str
  sample: []
"""

from ansible_collections.hal9000.dind.plugins.module_utils.ansible_docker import build_module, run_module
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.validate import validate_labels, validate_name
from ansible_collections.hal9000.dind.plugins.module_utils.volumes import (
    containers_using_volume,
    current_volume,
    inspect_volume,
    volume_differences,
    wanted_volume,
)


def refuse_if_used(client, name, doing):
    users = containers_using_volume(client, name)
    if users:
        raise Hal9000Error(
            f"Cannot {doing} volume {name}: it is used by container(s) {', '.join(users)}; "
            "stop and remove them first. Nothing was removed."
        )


def validate_params(params):
    for name in params["names"] or [params["name"]]:
        validate_name(name, "volume")
    validate_labels(params["labels"])


def ensure_volume(module, client, name):
    """One volume in the requested state: (volume, before, after, actions, differences)."""
    params = module.params
    wanted = wanted_volume(name, params["driver"], params["driver_options"], validate_labels(params["labels"]))
    inspected = inspect_volume(client, name)
    before = current_volume(inspected) if inspected else {}
    actions, differences = [], []

    def create():
        actions.append(f"created volume {name}")
        if module.check_mode:
            return {"Name": name, "Driver": wanted["driver"], "Labels": wanted["labels"], "Options": wanted["driver_options"]}
        return client.api.create_volume(
            name=name, driver=wanted["driver"], driver_opts=wanted["driver_options"], labels=wanted["labels"]
        )

    def remove():
        actions.append(f"removed volume {name}")
        if not module.check_mode:
            client.api.remove_volume(name)

    if params["state"] == "absent":
        if inspected:
            remove()
        volume = {}
    elif not inspected:
        volume = create()
    else:
        volume = inspected
        differences = volume_differences(before, wanted)
        if differences and params["recreate"] == "options-changed":
            remove()
            volume = create()
        elif differences:
            module.warn(
                f"Volume {name} differs in {', '.join(differences)} but is kept with its data; "
                "set recreate=options-changed to recreate it (its content is lost)."
            )
    return volume, before, (current_volume(volume) if volume else {}), actions, differences


def refuse_removals_in_use(module, client, names):
    """Before anything is removed: no volume that would be removed (or recreated) may be in use."""
    params = module.params
    if params["state"] == "present" and params["recreate"] == "never":
        return  # nothing can be removed
    for name in names:
        inspected = inspect_volume(client, name)
        if not inspected:
            continue
        if params["state"] == "absent":
            refuse_if_used(client, name, "remove")
        elif params["recreate"] == "options-changed":
            wanted = wanted_volume(name, params["driver"], params["driver_options"], validate_labels(params["labels"]))
            if volume_differences(current_volume(inspected), wanted):
                refuse_if_used(client, name, "recreate")


def manage_volume(module, client):
    params = module.params
    names = params["names"] or [params["name"]]
    refuse_removals_in_use(module, client, names)
    volumes, befores, afters, actions, differences = [], {}, {}, [], []
    for name in names:
        volume, befores[name], afters[name], done, differs = ensure_volume(module, client, name)
        volumes.append(volume)
        actions += done
        differences += [f"{name}: {field}" for field in differs] if params["names"] else differs
    result = dict(changed=bool(actions), volumes=volumes, actions=actions, differences=differences)
    if params["name"]:
        result["volume"] = volumes[0]
    if module._diff:
        result["diff"] = dict(before=befores, after=afters) if params["names"] else dict(before=befores[names[0]], after=afters[names[0]])
    return result


def main():
    module = build_module(
        dict(
            name=dict(type="str"),
            names=dict(type="list", elements="str"),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            labels=dict(type="dict"),
            driver=dict(type="str", default="local"),
            driver_options=dict(type="dict"),
            recreate=dict(type="str", default="never", choices=["never", "options-changed"]),
        ),
        supports_check_mode=True,
        mutually_exclusive=[("name", "names")],
        required_one_of=[("name", "names")],
    )
    run_module(module, manage_volume, validate=validate_params)


if __name__ == "__main__":
    main()
