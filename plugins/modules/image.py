#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: image
short_description: Build, pull, load or remove the HAL-9000 parent, worker and MCP sidecar images
version_added: 0.1.0
description:
  - Builds one of the bundled images (O(flavour)) or any Dockerfile inside a build context, pulls an image, or loads
    a C(docker save) archive for air-gapped hosts.
  - A built image carries the label C(io.hal9000.build-digest), a sha256 over its build inputs (the Dockerfile,
    every file of the build context that C(.dockerignore) lets through, their modes, the build arguments and the
    base image ID). When an image with that digest exists, nothing is built.
  - The C(hal9000.dind.images) role ships the build context to the Docker host, so this works for remote hosts too.
author:
  - HAL-9000 DinD maintainers (@hal9000-dind)
options:
  name:
    description:
      - The image reference to produce or remove, such as C(hal9000/worker:latest).
      - Defaults to the flavour's tag (C(hal9000/parent:latest), C(hal9000/worker:latest), C(hal9000/worker:ultramin),
        C(hal9000/mcp:latest)).
    type: str
  flavour:
    description:
      - Which bundled image to build. V(minimal) is the worker with git, V(ultramin) the worker without git, V(mcp)
        the MCP sidecar (memory-bank, sequential-thinking and chroma MCP servers behind the relay).
    type: str
    choices: [parent, minimal, ultramin, mcp]
  dockerfile:
    description:
      - A Dockerfile path relative to O(context), instead of a bundled flavour.
    type: str
  context:
    description:
      - The build context directory on the Docker host (the collection root, holding C(images/) and C(plugins/module_utils/)).
      - Required when O(source=build) and O(state=present).
    type: path
  build_args:
    description:
      - Build arguments. Values are passed as strings.
    type: dict
    default: {}
  extra_ca_dir:
    description:
      - A directory on the Docker host whose C(*.crt) files (PEM, searched recursively, in path order) become the build
        argument C(EXTRA_CA_CERTS), trusted by the builder stages only (apt, pip and npm behind a TLS-intercepting
        proxy); the final images never contain them. A missing directory means no extra certificates.
      - A C(EXTRA_CA_CERTS) given in O(build_args) wins over this.
    type: path
  base_image:
    description:
      - The image the Dockerfile starts from (build argument C(BASE_IMAGE)).
    type: str
    default: debian:bookworm-slim
  source:
    description:
      - V(build) builds from O(context). V(pull) pulls O(name) (or O(pull_from)) from its registry, with the
        credentials of O(registry_auth_file) when given; nothing is pulled while O(name) exists, unless O(force=true),
        and a pull that brings the same image ID is no change. V(load) loads O(load_path).
    type: str
    choices: [build, pull, load]
    default: build
  load_path:
    description:
      - A C(docker save) archive on the Docker host, for O(source=load).
    type: path
  pull_from:
    description:
      - For O(source=pull), the reference to pull when it is not O(name), such as a registry's copy
        C(registry.example.internal:5000/hal9000/worker:latest); the pulled image is then tagged O(name) too.
    type: str
  registry_auth_file:
    description:
      - For O(source=pull), a file on the Docker host with the registry's credentials, so that no password is ever
        a task argument. It is JSON (or YAML when PyYAML is installed) with C(username) and C(password) and
        optionally C(registry), which must then be the registry of the image pulled.
      - The file must be readable by its owner only (C(chmod 600)); a file group or others may read or write is refused.
      - The credentials go with the pull request only and are stored nowhere (no C(~/.docker/config.json) entry);
        the password is kept out of the results, warnings and error messages.
      - Without it the pull is anonymous.
    type: path
  force:
    description:
      - Build, pull or load even when an up-to-date image exists.
    type: bool
    default: false
  state:
    description:
      - V(present) makes the image exist; V(absent) removes the tag, and refuses while a container uses the image.
    type: str
    choices: [present, absent]
    default: present
  build_timeout:
    description:
      - Seconds a build may go without output before it is abandoned (package installs can be quiet for minutes).
    type: int
    default: 1800
extends_documentation_fragment:
  - hal9000.dind.docker
  - hal9000.dind.docker.attributes
attributes:
  check_mode:
    description: Says what would be built, pulled, loaded or removed, and does nothing.
    support: full
  diff_mode:
    description: Shows the image ID and digest before and after.
    support: full
  idempotent:
    description: Builds only when the inputs' digest is new, unless O(force=true).
    support: full
"""

EXAMPLES = r"""
- name: Build the default worker (with git)
  hal9000.dind.image:
    flavour: minimal
    context: /var/cache/hal9000/build

- name: Build the worker without git from a local mirror of Debian
  hal9000.dind.image:
    flavour: ultramin
    context: /var/cache/hal9000/build
    base_image: registry.example.internal/debian:bookworm-slim

- name: Pull the worker from a private registry, tagged as the collection expects it
  hal9000.dind.image:
    name: hal9000/worker:latest
    source: pull
    pull_from: registry.example.internal:5000/hal9000/worker:latest
    # {"registry": "registry.example.internal:5000", "username": "ci", "password": "..."}, mode 0600
    registry_auth_file: /etc/hal9000/registry-auth.json

- name: Load the parent image saved on another host
  hal9000.dind.image:
    name: hal9000/parent:latest
    source: load
    load_path: /tmp/hal9000-parent.tar

- name: Remove the worker image
  hal9000.dind.image:
    name: hal9000/worker:latest
    state: absent
"""

RETURN = r"""
name:
  description: The image reference this task produced or removed (O(name), or the flavour's tag).
  returned: always
  type: str
  sample: hal9000/parent:latest
image:
  description: The image, or an empty dict after O(state=absent) or in check mode before a first build.
  returned: always
  type: dict
  contains:
    id:
      description: Image ID.
      type: str
      sample: sha256:1e0fe44cff2e...
    tags:
      description: Repository tags of the image.
      type: list
      elements: str
      sample: [hal9000/parent:latest]
    size:
      description: Size in bytes.
      type: int
      sample: 215000000
    digest:
      description: The build-input digest label, empty for pulled or loaded images without one.
      type: str
    created:
      description: Creation time.
      type: str
    build_seconds:
      description: How long the build, pull or load took; null when nothing was done.
      type: float
actions:
  description: What was done, or would be done in check mode.
  returned: always
  type: list
  elements: str
  sample: ["built hal9000/worker:latest from images/Dockerfile.worker-minimal"]
build_log:
  description: The last lines of the build output.
  returned: when an image was built
  type: list
  elements: str
"""

import os
import time

from ansible_collections.hal9000.dind.plugins.module_utils.ansible_docker import build_module, run_module
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.images import (
    FLAVOURS,
    build_digest,
    build_image,
    containers_using_image,
    image_summary,
    image_registry,
    image_with_digest,
    inspect_image,
    pull_image,
    read_ca_certificates,
    read_registry_auth,
    resolve_dockerfile,
    saved_image_id,
)


ARRIVALS = {"build": "built", "pull": "pulled", "load": "loaded"}


def image_state(inspected):
    return {"id": inspected["Id"], "tags": inspected.get("RepoTags") or []} if inspected else {}


def remove(module, client, name, current):
    if not current:
        return dict(changed=False, image={}, actions=[])
    users = containers_using_image(client, name)
    if users:
        raise Hal9000Error(
            f"Cannot remove image {name}: container(s) {', '.join(users)} use it; remove them first. Nothing was removed."
        )
    if not module.check_mode:
        client.api.remove_image(name)
    return dict(changed=True, image={}, actions=[f"removed image {name}"])


def build(module, client, name, current):
    params = module.params
    context = params["context"]
    if module.check_mode and not os.path.isdir(context):
        # A check run before the context was ever shipped there (the images role ships it first): a build is what would happen.
        return dict(changed=True, digest="", image=image_summary(current) if current else {},
                    actions=[f"built {name} once its build context is shipped to {context}"])
    dockerfile = resolve_dockerfile(context, params["flavour"], params["dockerfile"])
    base = inspect_image(client, params["base_image"])
    if not base:
        raise Hal9000Error(
            f"Base image {params['base_image']} is missing: run the hal9000.dind.base_image role (or docker pull it) first."
        )
    build_args = {key: str(value) for key, value in params["build_args"].items()}
    if params["extra_ca_dir"] and "EXTRA_CA_CERTS" not in build_args:
        build_args["EXTRA_CA_CERTS"] = read_ca_certificates(params["extra_ca_dir"])
    build_args["BASE_IMAGE"] = params["base_image"]
    digest = build_digest(context, dockerfile, build_args, base["Id"])
    result = dict(changed=False, actions=[], digest=digest)
    existing = image_with_digest(client, digest, current)
    if existing and not params["force"]:
        if name not in (existing.get("RepoTags") or []):
            result["actions"].append(f"tagged {existing['Id'][:19]} as {name}")
            if not module.check_mode:
                repository, tag = name.rsplit(":", 1)
                client.api.tag(existing["Id"], repository, tag)
                existing = inspect_image(client, name)
        result.update(changed=bool(result["actions"]), image=image_summary(existing))
        return result
    result["actions"].append(f"built {name} from {dockerfile}")
    result["changed"] = True
    if module.check_mode:
        result["image"] = image_summary(current) if current else {}
        return result
    inspected, seconds, log = build_image(client, context, dockerfile, name, build_args, digest)
    result.update(image=image_summary(inspected, seconds), build_log=log)
    return result


def pull(module, client, name, current):
    params = module.params
    source = params["pull_from"] or name
    auth_config = None
    if params["registry_auth_file"]:
        auth_config = read_registry_auth(params["registry_auth_file"], image_registry(source))
        module.no_log_values.add(auth_config["password"])  # masked in anything Ansible prints or returns
    if current and not params["force"]:
        return dict(changed=False, image=image_summary(current), actions=[])
    actions = [f"pulled {source}" + (f" and tagged it {name}" if source != name else "")]
    if module.check_mode:
        return dict(changed=True, image=image_summary(current) if current else {}, actions=actions)
    started = time.monotonic()
    pulled = pull_image(client, source, auth_config, params["registry_auth_file"])
    if source != name:
        repository, tag = name.rsplit(":", 1)
        client.api.tag(pulled, repository, tag)
    after = inspect_image(client, name)
    changed = not current or current["Id"] != after["Id"]
    return dict(changed=changed, image=image_summary(after, round(time.monotonic() - started, 1)), actions=actions)


def load(module, client, name, current):
    path = module.params["load_path"]
    wanted_id = saved_image_id(path)
    if current and current["Id"] == wanted_id and not module.params["force"]:
        return dict(changed=False, image=image_summary(current), actions=[])
    if module.check_mode:
        return dict(changed=True, image=image_summary(current) if current else {}, actions=[f"loaded {name} from {path}"])
    started = time.monotonic()
    with open(path, "rb") as archive:
        client.api.load_image(archive)
    after = inspect_image(client, name)
    if not after or after["Id"] != wanted_id:
        raise Hal9000Error(f"{path} does not contain {name}: check the archive was saved from that image.")
    return dict(changed=True, image=image_summary(after, round(time.monotonic() - started, 1)), actions=[f"loaded {name} from {path}"])


def manage_image(module, client):
    params = module.params
    name = params["name"]
    current = inspect_image(client, name)
    if params["state"] == "absent":
        result = remove(module, client, name, current)
    else:
        result = {"build": build, "pull": pull, "load": load}[params["source"]](module, client, name, current)
    result["name"] = name
    if module._diff:
        after = {} if params["state"] == "absent" else {"id": result["image"].get("id", f"(to be {ARRIVALS[params['source']]})"), "tags": [name]}
        result["diff"] = dict(before=image_state(current), after=after)
    return result


def main():
    module = build_module(
        dict(
            name=dict(type="str"),
            flavour=dict(type="str", choices=list(FLAVOURS)),
            dockerfile=dict(type="str"),
            context=dict(type="path"),
            build_args=dict(type="dict", default={}),
            extra_ca_dir=dict(type="path"),
            base_image=dict(type="str", default="debian:bookworm-slim"),
            source=dict(type="str", default="build", choices=["build", "pull", "load"]),
            load_path=dict(type="path"),
            pull_from=dict(type="str"),
            registry_auth_file=dict(type="path"),
            force=dict(type="bool", default=False),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            build_timeout=dict(type="int", default=1800),
        ),
        supports_check_mode=True,
        mutually_exclusive=[("flavour", "dockerfile")],
        required_if=[("source", "load", ("load_path", "name")), ("source", "pull", ("name",))],
        required_one_of=[("name", "flavour")],
    )
    params = module.params
    if not params["name"]:
        params["name"] = FLAVOURS[params["flavour"]][1]
    for key in ("name", "pull_from"):
        if params[key] and ":" not in params[key].rsplit("/", 1)[-1]:
            params[key] += ":latest"
    if params["state"] == "present" and params["source"] == "build":
        if not params["context"]:
            module.fail_json(msg="source=build needs context: the directory holding images/ on the Docker host.")
        if not (params["flavour"] or params["dockerfile"]):
            module.fail_json(msg="source=build needs flavour (parent, minimal, ultramin or mcp) or dockerfile.")
        params["timeout"] = max(params["timeout"], params["build_timeout"])
    run_module(module, manage_image)


if __name__ == "__main__":
    main()
