# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The parent container: its spec, its settings, and reading its health.

Pure: standard library and the docker SDK only, never ``ansible.*``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

from ansible_collections.hal9000.dind.plugins.module_utils.constants import HOME_IN_PARENT, STARTUP_FILE
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.fleet import (
    LABEL_MANAGED,
    LABEL_ROLE,
    LABEL_SPEC,
    ROLE_PARENT,
)
from ansible_collections.hal9000.dind.plugins.module_utils.settings import at_start, environment, resolve
from ansible_collections.hal9000.dind.plugins.module_utils.validate import (
    parse_cpus,
    parse_memory,
    validate_name,
)
from ansible_collections.hal9000.dind.plugins.module_utils.volumes import shared_volumes


def parent_spec(name, image, hal9000_home, docker_socket, memory, cpus, explicit, volume_prefix="hal9000", file_values=None):
    """Everything that decides what the parent container looks like, validated.

    Only the ``explicit`` settings (option name -> value, None for not given) go into the parent's
    environment, so hal9000.conf (``file_values``) decides the rest, for this parent and for one
    started by hand. The settings read at start-up are in the digest: changing them in the file
    makes a new parent.
    """
    validate_name(name, "container")
    if not os.path.isabs(hal9000_home):
        raise Hal9000Error(f"hal9000_home {hal9000_home!r} must be an absolute path on the Docker host.")
    if not os.path.isabs(docker_socket):
        raise Hal9000Error(f"docker_socket {docker_socket!r} must be an absolute path on the Docker host.")
    typed = resolve(explicit, file_values)
    env = environment(explicit)
    env["HAL9000_PARENT_NAME"] = name
    env["HAL9000_VOLUME_PREFIX"] = validate_name(volume_prefix, "volume prefix")
    binds = {
        docker_socket: {"bind": "/var/run/docker.sock", "mode": "rw"},
        hal9000_home: {"bind": HOME_IN_PARENT, "mode": "rw"},
    }
    binds.update({volume: {"bind": path, "mode": "rw"} for volume, path in shared_volumes(volume_prefix).items()})
    spec = {
        "name": name,
        "image": image,
        "environment": dict(sorted(env.items())),
        "binds": binds,
        "memory": parse_memory(memory),
        "nano_cpus": int(parse_cpus(cpus) * 1e9),
        "restart_policy": "unless-stopped",
        # Its own network namespace only: the rule that keeps workers away from ChromaDB (entrypoint.py).
        "cap_add": ["NET_ADMIN"],
        "settings_at_start": at_start(typed),
    }
    spec["digest"] = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    spec["settings"] = typed
    return spec


def create_parent(client, spec):
    """Create (not start) the parent container from ``spec``."""
    host_config = client.api.create_host_config(
        binds=spec["binds"],
        mem_limit=spec["memory"],
        nano_cpus=spec["nano_cpus"],
        restart_policy={"Name": spec["restart_policy"]},
        cap_add=spec["cap_add"],
        init=False,
    )
    labels = {LABEL_MANAGED: "true", LABEL_ROLE: ROLE_PARENT, LABEL_SPEC: spec["digest"]}
    created = client.api.create_container(
        image=spec["image"],
        name=spec["name"],
        environment=spec["environment"],
        host_config=host_config,
        labels=labels,
        detach=True,
    )
    return created["Id"]


def mounted_home(inspected):
    """The host directory a parent mounts as its home, or None."""
    for mount in (inspected or {}).get("Mounts") or []:
        if mount.get("Destination") == HOME_IN_PARENT:
            return mount["Source"]
    return None


def read_startup(client, container_id):
    """The start-up record the entrypoint keeps (phase timings, readiness), or {}."""
    result = client.api.exec_create(container_id, ["cat", STARTUP_FILE])
    output = client.api.exec_start(result["Id"])
    if client.api.exec_inspect(result["Id"])["ExitCode"] != 0:
        return {}
    try:
        return json.loads(output)
    except ValueError:
        return {}


def parent_summary(client, inspected):
    """The parent as the module, the coordinator and daemon status report it."""
    state = inspected["State"]
    summary = {
        "id": inspected["Id"],
        "name": inspected["Name"].lstrip("/"),
        "image": inspected["Config"]["Image"],
        "state": state["Status"],
        "health": (state.get("Health") or {}).get("Status", "none"),
        "started_at": state.get("StartedAt", ""),
        "exit_code": state.get("ExitCode", 0),
        "chromadb_ready": False,
        "startup": {},
    }
    if state["Status"] == "running":
        startup = read_startup(client, inspected["Id"])
        summary["startup"] = startup.get("phases_ms", {})
        summary["chromadb_ready"] = bool(startup.get("chromadb_ready"))
        summary["relay_ready"] = bool(startup.get("relay_ready"))
        summary["chromadb_guard"] = startup.get("chromadb_guard", "")
        summary["relay_error"] = startup.get("relay_error", "")
        summary["settings"] = startup.get("settings") or {}
    return summary


def wait_until_ready(client, container_id, timeout):
    """Poll the start-up record until ChromaDB answered; raise with the log tail on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        inspected = client.api.inspect_container(container_id)
        if inspected["State"]["Status"] not in ("running", "created", "restarting"):
            break
        if inspected["State"]["Status"] == "running" and read_startup(client, container_id).get("chromadb_ready"):
            return
        time.sleep(0.1)
    tail = client.api.logs(container_id, tail=15).decode("utf-8", "replace").strip().splitlines()
    raise Hal9000Error(
        f"The parent did not become ready (ChromaDB answering) within {timeout} s; its last log lines: "
        + " | ".join(tail[-15:])
    )
