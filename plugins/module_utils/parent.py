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

from ansible_collections.hal9000.dind.plugins.module_utils.docker_api import NotFound
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.fleet import (
    LABEL_MANAGED,
    LABEL_ROLE,
    LABEL_SPEC,
    ROLE_PARENT,
)
from ansible_collections.hal9000.dind.plugins.module_utils.validate import (
    parse_cpus,
    parse_memory,
    validate_name,
)
from ansible_collections.hal9000.dind.plugins.module_utils.volumes import shared_volumes

PARENT_NAME = "hal9000-parent"
PARENT_IMAGE = "hal9000/parent:latest"
HOME_IN_PARENT = "/root/.hal9000"
STARTUP_FILE = "/run/hal9000/startup.json"

# Settings the parent reads from its environment (the seed's variables) and their defaults.
SETTINGS_DEFAULTS = {
    "CHROMADB_PORT": "8000",
    "WORKER_IMAGE": "hal9000/worker:latest",
    "SKIP_IMAGE_PULL": "false",
    "LAZY_IMAGE_PULL": "false",
    "ENABLE_POOL_MANAGER": "false",
    "MIN_WARM_WORKERS": "2",
    "MAX_WARM_WORKERS": "5",
    "IDLE_TIMEOUT": "300",
}


def _bool_setting(value, name):
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise Hal9000Error(f"{name}={value!r} is not a boolean: use true or false.")


def _count_setting(value, name):
    text = str(value).strip()
    if not text.isdigit():
        raise Hal9000Error(f"{name}={value!r} must be a whole number, 0 or more.")
    return int(text)


def validate_settings(settings):
    """Check the seed's settings and return them typed; say plainly what is wrong."""
    merged = dict(SETTINGS_DEFAULTS)
    merged.update({k: str(v) for k, v in settings.items() if v is not None})
    port = _count_setting(merged["CHROMADB_PORT"], "CHROMADB_PORT")
    if not 1 <= port <= 65535:
        raise Hal9000Error(f"CHROMADB_PORT={port} is not a TCP port (1-65535).")
    typed = {
        "chromadb_port": port,
        "worker_image": merged["WORKER_IMAGE"],
        "skip_image_pull": _bool_setting(merged["SKIP_IMAGE_PULL"], "SKIP_IMAGE_PULL"),
        "lazy_image_pull": _bool_setting(merged["LAZY_IMAGE_PULL"], "LAZY_IMAGE_PULL"),
        "enable_pool_manager": _bool_setting(merged["ENABLE_POOL_MANAGER"], "ENABLE_POOL_MANAGER"),
        "min_warm_workers": _count_setting(merged["MIN_WARM_WORKERS"], "MIN_WARM_WORKERS"),
        "max_warm_workers": _count_setting(merged["MAX_WARM_WORKERS"], "MAX_WARM_WORKERS"),
        "idle_timeout": _count_setting(merged["IDLE_TIMEOUT"], "IDLE_TIMEOUT"),
    }
    if typed["min_warm_workers"] > typed["max_warm_workers"]:
        raise Hal9000Error(
            f"MIN_WARM_WORKERS={typed['min_warm_workers']} is more than MAX_WARM_WORKERS={typed['max_warm_workers']}: "
            "the minimum must not exceed the maximum."
        )
    return typed


def settings_environment(typed):
    """The typed settings back as the environment the parent reads."""
    return {
        "CHROMADB_PORT": str(typed["chromadb_port"]),
        "WORKER_IMAGE": typed["worker_image"],
        "SKIP_IMAGE_PULL": str(typed["skip_image_pull"]).lower(),
        "LAZY_IMAGE_PULL": str(typed["lazy_image_pull"]).lower(),
        "ENABLE_POOL_MANAGER": str(typed["enable_pool_manager"]).lower(),
        "MIN_WARM_WORKERS": str(typed["min_warm_workers"]),
        "MAX_WARM_WORKERS": str(typed["max_warm_workers"]),
        "IDLE_TIMEOUT": str(typed["idle_timeout"]),
    }


def read_config_file(path):
    """KEY=value lines of ~/.hal9000/config/hal9000.conf (comments and blanks ignored)."""
    values = {}
    if not os.path.isfile(path):
        return values
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                values[key.strip()] = value.strip()
    return values


def parent_spec(name, image, hal9000_home, docker_socket, memory, cpus, settings, volume_prefix="hal9000"):
    """Everything that decides what the parent container looks like, validated."""
    validate_name(name, "container")
    if not os.path.isabs(hal9000_home):
        raise Hal9000Error(f"hal9000_home {hal9000_home!r} must be an absolute path on the Docker host.")
    if not os.path.isabs(docker_socket):
        raise Hal9000Error(f"docker_socket {docker_socket!r} must be an absolute path on the Docker host.")
    typed = validate_settings(settings)
    environment = settings_environment(typed)
    environment["HAL9000_HOME_HOST"] = hal9000_home
    environment["HAL9000_PARENT_NAME"] = name
    environment["HAL9000_VOLUME_PREFIX"] = validate_name(volume_prefix, "volume prefix")
    binds = {
        docker_socket: {"bind": "/var/run/docker.sock", "mode": "rw"},
        hal9000_home: {"bind": HOME_IN_PARENT, "mode": "rw"},
    }
    binds.update({volume: {"bind": path, "mode": "rw"} for volume, path in shared_volumes(volume_prefix).items()})
    spec = {
        "name": name,
        "image": image,
        "environment": dict(sorted(environment.items())),
        "binds": binds,
        "memory": parse_memory(memory),
        "nano_cpus": int(parse_cpus(cpus) * 1e9),
        "restart_policy": "unless-stopped",
    }
    spec["digest"] = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    return spec


def create_parent(client, spec):
    """Create (not start) the parent container from ``spec``."""
    host_config = client.api.create_host_config(
        binds=spec["binds"],
        mem_limit=spec["memory"],
        nano_cpus=spec["nano_cpus"],
        restart_policy={"Name": spec["restart_policy"]},
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


def inspect_container(client, name):
    try:
        return client.api.inspect_container(name)
    except NotFound:
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
