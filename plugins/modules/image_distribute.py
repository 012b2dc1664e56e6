#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: image_distribute
short_description: Copy images from a build host's Docker Engine to other hosts' engines, without a registry
version_added: 0.2.0
description:
  - Compares, for every target host, the image ID behind each tag in O(images) with the build host's (the engine
    at O(docker_host)) and sends a host only the images whose ID differs or that it lacks. A host that is current
    receives nothing.
  - The images go from the build host's engine straight into each target engine, C(docker save) streamed into
    C(docker load), with no copy on any disk. One save stream is fanned out to all targets that need the same
    images, so the build host reads and sends each image once however many hosts receive it.
  - A target is not sent the layers it already holds (for example all but the last one of a rebuilt image), which
    C(docker load) takes from the host's own layer store. A load that still misses one is retried with every layer.
  - After the load, each target's image IDs are checked against the build host's.
  - Runs where it can reach every engine, usually on the controller (C(delegate_to=localhost), C(run_once=true)).
    The C(hal9000.dind.images) role does this for a fleet.
author:
  - HAL-9000 DinD maintainers (@hal9000-dind)
options:
  images:
    description:
      - The image references to distribute, such as C(hal9000/parent:latest). Each must exist on the build host.
    type: list
    elements: str
    required: true
  targets:
    description:
      - The hosts to bring up to date.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The host's name, used in the results.
        type: str
        required: true
      docker_host:
        description:
          - How this module reaches the host's Docker Engine API, for example C(unix:///run/node1/docker.sock),
            C(tcp://10.0.0.5:2376) or C(ssh://root@10.0.0.5) (through the C(ssh) command, which must log in without
            a prompt; the host needs the C(docker) CLI, and where this module runs the C(paramiko) package, which the
            docker SDK imports for C(ssh://)).
        type: str
        required: true
  pending:
    description:
      - Images the build host is about to build or rebuild (its build ran in check mode). In check mode every target
        is reported as receiving them, as it is for images the build host does not have yet.
    type: list
    elements: str
    default: []
  keep_going:
    description:
      - When a target fails (unreachable engine, failed load), report it in RV(hosts) and still succeed, so the
        caller can fail that host alone. With V(false) the module fails when any target fails (the others still get
        their images).
    type: bool
    default: false
extends_documentation_fragment:
  - hal9000.dind.docker
  - hal9000.dind.docker.attributes
attributes:
  check_mode:
    description: Compares the image IDs and says which host would receive which images; sends nothing.
    support: full
  diff_mode:
    description: Shows each target's image IDs before and after.
    support: full
  idempotent:
    description: A host whose image IDs match the build host's receives nothing.
    support: full
notes:
  - O(docker_host) is the build host's engine (the source), as seen from where the module runs.
"""

EXAMPLES = r"""
- name: Give every host of the play the build host's images
  hal9000.dind.image_distribute:
    docker_host: unix:///var/run/docker.sock
    images:
      - debian:bookworm-slim
      - hal9000/parent:latest
    targets:
      - name: docker2
        docker_host: ssh://root@docker2.example.internal
      - name: docker3
        docker_host: tcp://10.0.0.7:2375
  delegate_to: localhost
  run_once: true
  register: distributed
"""

RETURN = r"""
source:
  description: The build host's image ID for each image.
  returned: always
  type: dict
  sample: {"hal9000/parent:latest": "sha256:3aa8326643..."}
hosts:
  description: One entry per target host.
  returned: always
  type: dict
  sample: {"docker2": {"sent": ["hal9000/parent:latest"], "current": ["debian:bookworm-slim"],
           "before": {"debian:bookworm-slim": "sha256:9e84...", "hal9000/parent:latest": null}, "bytes": 146500000,
           "seconds": 4.3, "skipped_layers": 1}}
  contains:
    sent:
      description: The images this host received (in check mode, would receive).
      type: list
      elements: str
    current:
      description: The images this host already had, with the build host's ID.
      type: list
      elements: str
    before:
      description: The host's image ID for each image before, V(null) where it had none.
      type: dict
    bytes:
      description: Bytes streamed to this host (0 when nothing was sent).
      type: int
    seconds:
      description: How long the stream to this host took; V(null) when nothing was sent.
      type: float
    skipped_layers:
      description: Layers not sent because this host already held them.
      type: int
    error:
      description: Why this host could not be brought up to date.
      type: str
      returned: when the host failed
messages:
  description: One line per host saying what it received (or would), that it is current, or what failed.
  returned: always
  type: list
  elements: str
  sample: ["docker2: received hal9000/parent:latest (146.5 MB in 4.3 s, 1 layers it held not sent)", "docker3: current"]
"""

from ansible_collections.hal9000.dind.plugins.module_utils.ansible_docker import build_module, run_module
from ansible_collections.hal9000.dind.plugins.module_utils.distribute import connect_engine, describe, distribute
from ansible_collections.hal9000.dind.plugins.module_utils.docker_api import resolve_docker_host
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error


def validate(params):
    names = [target["name"] for target in params["targets"]]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise Hal9000Error(f"targets names {', '.join(duplicates)} more than once: give each host once.")
    if not params["images"]:
        raise Hal9000Error("images is empty: name at least one image to distribute.")


def run(module, _client):
    params = module.params
    # The source may be ssh:// too, so it is connected like the targets.
    source = connect_engine(resolve_docker_host(params["docker_host"]), params["timeout"])
    targets = {}
    for target in params["targets"]:
        try:
            targets[target["name"]] = connect_engine(target["docker_host"], params["timeout"])
        except Hal9000Error as exc:
            targets[target["name"]] = exc
    result = distribute(source, targets, params["images"], check_mode=module.check_mode, pending=params["pending"])
    result["messages"] = describe(result, module.check_mode)
    if module._diff:
        result["diff"] = dict(
            before={host: outcome["before"] for host, outcome in result["hosts"].items()},
            after={host: dict(outcome["before"], **{name: result["source"][name] for name in outcome["sent"]})
                   for host, outcome in result["hosts"].items()},
        )
    failed = sorted(host for host, outcome in result["hosts"].items() if outcome.get("error"))
    if failed and not params["keep_going"]:
        first = result["hosts"][failed[0]]["error"]
        module.fail_json(msg=f"Could not bring {', '.join(failed)} up to date ({failed[0]}: {first}); the other hosts were.",
                         **result)
    return result


def main():
    module = build_module(
        dict(
            images=dict(type="list", elements="str", required=True),
            targets=dict(type="list", elements="dict", required=True, options=dict(
                name=dict(type="str", required=True),
                docker_host=dict(type="str", required=True),
            )),
            pending=dict(type="list", elements="str", default=[]),
            keep_going=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    run_module(module, run, validate=validate, connect_to_daemon=False)


if __name__ == "__main__":
    main()
