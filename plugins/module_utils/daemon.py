# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The parent brought to the state asked of it: started, restarted, stopped or removed, never cutting workers off unasked.

The parent module and ``claudy daemon`` call ``put_parent`` with the module's options.
Pure: standard library and the docker SDK only, never ``ansible.*``.
"""

from __future__ import annotations

import os

from ansible_collections.hal9000.dind.plugins.module_utils.constants import DEFAULT_HOME, DOCKER_SOCKET, PARENT_IMAGE, PARENT_NAME
from ansible_collections.hal9000.dind.plugins.module_utils.docker_api import inspect_container, resolve_docker_host
from ansible_collections.hal9000.dind.plugins.module_utils.egress import warnings_for_status
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.fleet import LABEL_SPEC, workers_sharing_network
from ansible_collections.hal9000.dind.plugins.module_utils.images import inspect_image
from ansible_collections.hal9000.dind.plugins.module_utils.parent import create_parent, parent_spec, stale_reason, wait_until_ready
from ansible_collections.hal9000.dind.plugins.module_utils.relay import remove_sidecar, save_extra_servers, validate_servers
from ansible_collections.hal9000.dind.plugins.module_utils.settings import PARENT_OPTIONS, argument_spec, read_home_config
from ansible_collections.hal9000.dind.plugins.module_utils.status import format_status, installation_status


def module_argument_spec():
    """The parent module's options; ``claudy daemon`` starts from their defaults too."""
    return dict(
        name=dict(type="str", default=PARENT_NAME),
        image=dict(type="str", default=PARENT_IMAGE),
        state=dict(type="str", default="started", choices=["started", "stopped", "restarted", "absent"]),
        hal9000_home=dict(type="path", default=DEFAULT_HOME),
        volume_prefix=dict(type="str", default="hal9000"),
        docker_socket=dict(type="path", default=DOCKER_SOCKET),
        memory=dict(type="str", default="4g"),
        cpus=dict(type="float", default=2),
        **argument_spec(PARENT_OPTIONS),
        force=dict(type="bool", default=False),
        wait=dict(type="bool", default=True),
        wait_timeout=dict(type="int", default=60),
        mcp_servers=dict(type="list", elements="dict", options=dict(
            name=dict(type="str", required=True),
            command=dict(type="str", required=True),
            args=dict(type="list", elements="str"),
            env_files=dict(type="dict"),
            on_host=dict(type="bool", default=False),
        )),
    )


def comparable(spec, inspected=None):
    """What --diff shows: the parent's state, image and settings, as ``spec`` wants them or as ``inspected`` has them.

    Both sides have the same keys, so an unchanged parent shows no difference and a recreate shows what changed.
    """
    if inspected is None:
        return {"state": "running", "image": spec["image"], "environment": spec["environment"],
                "memory": spec["memory"], "nano_cpus": spec["nano_cpus"], "spec_digest": spec["digest"]}
    env = dict(item.split("=", 1) for item in inspected["Config"].get("Env") or [] if "=" in item)
    return {
        "state": inspected["State"]["Status"],
        "image": inspected["Config"]["Image"],
        "environment": {key: env[key] for key in spec["environment"] if key in env},
        "memory": inspected["HostConfig"].get("Memory", 0),
        "nano_cpus": inspected["HostConfig"].get("NanoCpus", 0),
        "spec_digest": (inspected["Config"].get("Labels") or {}).get(LABEL_SPEC, ""),
    }


def spec_from_params(params):
    """Validated before any call to the daemon; hal9000.conf is read here, on the Docker host."""
    validate_servers(params["mcp_servers"])
    return parent_spec(
        params["name"], params["image"], params["hal9000_home"], params["docker_socket"], params["memory"],
        params["cpus"], {option: params[option] for option in PARENT_OPTIONS}, params["volume_prefix"],
        read_home_config(params["hal9000_home"]),
    )


def put_parent(client, params, check_mode=False, diff=False, warn=None):
    """Bring the parent ``params`` describe (the parent module's options) to its state; the module's result.

    Shared by the parent module (the daemon role) and ``claudy daemon``. ``warn`` takes one message.
    """
    warn = warn or (lambda message: None)
    spec = spec_from_params(params)
    state = params["state"]
    current = inspect_container(client, params["name"])
    actions, affected = [], []
    name = params["name"]

    def cutting_workers(doing):
        """Refuse (or, with force, record) an action that cuts the attached workers' network."""
        running_attached = workers_sharing_network(client, current["Id"]) if current else []
        if running_attached and not params["force"]:
            raise Hal9000Error(
                f"Not going to {doing} {name}: workers {', '.join(running_attached)} share its network and would lose it. "
                "Stop them first, or force it (force=true; claudy daemon --force)."
            )
        affected.extend(running_attached)

    if state in ("started", "restarted"):
        image = inspect_image(client, params["image"])
        if image is None:
            raise Hal9000Error(f"Image {params['image']} is missing: build it with playbooks/build_images.yml first.")
        local_daemon = resolve_docker_host(params["docker_host"]).startswith("unix://")
        if local_daemon and not os.path.exists(params["docker_socket"]):
            raise Hal9000Error(f"Docker socket {params['docker_socket']} does not exist on the Docker host: give docker_socket.")
        outdated = current is not None and stale_reason(client, current, spec, image["Id"])
        if outdated:
            cutting_workers("recreate")
            actions.append(f"recreated {name} ({outdated})")
        elif current is None:
            actions.append(f"created {name}")
        running = current is not None and current["State"]["Running"] and not outdated
        # The relay reads the servers when it starts: a change restarts only the relay (SIGHUP), never the parent.
        servers_changed = params["mcp_servers"] is not None and save_extra_servers(
            params["hal9000_home"], params["mcp_servers"], check_mode=check_mode)
        if servers_changed:
            actions.append("updated the MCP relay's servers" + (" (relay restarted)" if running else ""))
        if state == "restarted" and running:
            cutting_workers("restart")
            actions.append(f"restarted {name}")
        elif not running:
            actions.append(f"started {name}")
        if not check_mode and actions:
            if not os.path.isdir(params["hal9000_home"]):
                os.makedirs(params["hal9000_home"], mode=0o700, exist_ok=True)  # a concurrent start may make it
            if outdated:
                client.api.remove_container(current["Id"], force=True)
                remove_sidecar(client, name)
            if current is None or outdated:
                container_id = create_parent(client, spec)
                client.api.start(container_id)
            elif state == "restarted" and running:
                container_id = current["Id"]
                client.api.restart(container_id, timeout=30)
            elif running:
                container_id = current["Id"]
                client.api.kill(container_id, signal="SIGHUP")
            else:
                container_id = current["Id"]
                client.api.start(container_id)
            if params["wait"]:
                wait_until_ready(client, container_id, params["wait_timeout"], name)
        elif not check_mode and params["wait"] and running:  # a start running at the same time may not be ready yet
            wait_until_ready(client, current["Id"], params["wait_timeout"], name)
    elif current is not None and state == "stopped" and current["State"]["Running"]:
        cutting_workers("stop")
        actions.append(f"stopped {name}")
        if not check_mode:
            client.api.stop(current["Id"], timeout=30)
    elif current is not None and state == "absent":
        cutting_workers("remove")
        actions.append(f"removed {name}")
        if not check_mode:
            client.api.remove_container(current["Id"], force=True)
            remove_sidecar(client, name)

    # The status the daemon playbook prints, read once here instead of by a second task.
    status = installation_status(client, name, params["volume_prefix"], params["hal9000_home"])
    result = dict(changed=bool(actions), parent=status["parent"], actions=actions, affected_workers=affected,
                  status_lines=format_status(status).splitlines())
    if state in ("started", "restarted"):
        for warning in warnings_for_status(spec["settings"]["egress"]):  # egress: open, said on every run
            warn(warning)
    if affected:
        warn(
            f"Workers {', '.join(affected)} shared the old parent's network and have none now: "
            "recreate them with hal9000.dind.worker."
        )
    if diff:
        before = comparable(spec, current) if current else {}
        if state == "absent":
            wanted = {}
        elif state == "stopped":
            wanted = dict(before, state="exited") if before.get("state") == "running" else before
        else:
            wanted = comparable(spec)
        result["diff"] = dict(before=before, after=wanted)
    return result
