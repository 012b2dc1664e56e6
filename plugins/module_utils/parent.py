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

from ansible_collections.hal9000.dind.plugins.module_utils.constants import HOME_IN_PARENT, RUN_DIR_IN_PARENT, STARTUP_FILE
from ansible_collections.hal9000.dind.plugins.module_utils.engine import ERRORS, inspect_container
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.fleet import (
    LABEL_MANAGED,
    LABEL_OPTIONS,
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

# The directory of the host's Docker socket, not the socket file: a restarted daemon (live-restore keeps the parent
# running) makes a new socket there, which a bound file would never show. The entrypoint links /var/run/docker.sock
# to it (HAL9000_DOCKER_SOCKET).
DOCKER_DIR_IN_PARENT = "/run/hal9000-docker"
# The parent's run-time files (start-up record, pool manager's pid and lock) in memory: a full disk cannot stop
# them, and a restart never finds a dead process's pid.
RUN_TMPFS = {RUN_DIR_IN_PARENT: "rw,nosuid,nodev,size=16m"}


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
    socket_dir, socket_name = os.path.split(os.path.normpath(docker_socket))
    typed = resolve(explicit, file_values)
    env = environment(explicit)
    env["HAL9000_PARENT_NAME"] = name
    env["HAL9000_VOLUME_PREFIX"] = validate_name(volume_prefix, "volume prefix")
    env["HAL9000_DOCKER_SOCKET"] = f"{DOCKER_DIR_IN_PARENT}/{socket_name}"
    binds = {
        hal9000_home: {"bind": HOME_IN_PARENT, "mode": "rw"},
    }
    binds.update({volume: {"bind": path, "mode": "rw"} for volume, path in shared_volumes(volume_prefix).items()})
    spec = {
        "name": name,
        "image": image,
        "environment": dict(sorted(env.items())),
        "binds": binds,
        "socket_dir": socket_dir,
        "tmpfs": RUN_TMPFS,
        "memory": parse_memory(memory),
        "nano_cpus": int(parse_cpus(cpus) * 1e9),
        "restart_policy": "unless-stopped",
        # Its own network namespace only: the rule that keeps workers away from ChromaDB (entrypoint.py).
        "cap_add": ["NET_ADMIN"],
        "settings_at_start": at_start(typed),
    }
    spec["digest"] = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    spec["settings"] = typed
    # The options given, kept on the container (outside the digest): `claudy daemon start` starts it again as it was made.
    spec["options"] = dict(
        image=image, hal9000_home=hal9000_home, docker_socket=docker_socket, memory=memory, cpus=cpus,
        volume_prefix=volume_prefix, **{option: value for option, value in explicit.items() if value is not None},
    )
    return spec


def create_parent(client, spec):
    """Create (not start) the parent container from ``spec``; its ID.

    A start running at the same time (a second ``daemon start``) may create it first: that parent is
    adopted when it is the one ``spec`` describes, not reported as a name conflict.
    """
    host_config = client.api.create_host_config(
        binds=spec["binds"],
        mounts=[socket_dir_mount(spec["socket_dir"])],
        tmpfs=spec["tmpfs"],
        mem_limit=spec["memory"],
        nano_cpus=spec["nano_cpus"],
        restart_policy={"Name": spec["restart_policy"]},
        cap_add=spec["cap_add"],
        init=False,
    )
    labels = {LABEL_MANAGED: "true", LABEL_ROLE: ROLE_PARENT, LABEL_SPEC: spec["digest"],
              LABEL_OPTIONS: json.dumps(spec["options"], sort_keys=True)}
    try:
        created = client.api.create_container(
            image=spec["image"],
            name=spec["name"],
            environment=spec["environment"],
            host_config=host_config,
            labels=labels,
            detach=True,
        )
    except ERRORS.APIError as exc:
        if exc.status_code != 409:
            raise
        other = None
        deadline = time.monotonic() + 10
        while other is None and time.monotonic() < deadline:  # the name is taken a moment before it can be inspected
            other = inspect_container(client, spec["name"])
            time.sleep(0 if other else 0.05)
        if other is None or (other["Config"].get("Labels") or {}).get(LABEL_SPEC) != spec["digest"]:
            raise Hal9000Error(f"{spec['name']} was made at the same time by another start, with other options: "
                               "run this again to bring it to these options.") from None
        return other["Id"]
    return created["Id"]


def stale_reason(client, current, spec, image_id):
    """Why the existing parent ``current`` must be recreated for ``spec``, or None.

    A running parent whose Docker socket no longer answers is recreated too: a parent made before the socket's
    directory was mounted keeps the socket file of a daemon that has since restarted. One still starting (its
    socket not yet linked: a start running at the same time made it) is not judged.
    """
    if (current["Config"].get("Labels") or {}).get(LABEL_SPEC) != spec["digest"] or current["Image"] != image_id:
        return "options or image changed"
    if (current["State"]["Running"] and not docker_socket_answers(client, current["Id"])
            and "critical_init" in read_startup(client, current["Id"]).get("phases_ms", {})):
        return "its Docker socket does not answer: the Docker daemon restarted since it started"
    return None


def socket_dir_mount(socket_dir):
    """Read-only (connecting to a socket is no write) and non-recursive: none of the mounts below it."""
    return {"Type": "bind", "Source": socket_dir, "Target": DOCKER_DIR_IN_PARENT, "ReadOnly": True,
            "BindOptions": {"NonRecursive": True}}


def docker_socket_answers(client, container_id, attempts=3):
    """Whether the Docker socket answers inside the running parent (the health check's own probe).

    Asked up to ``attempts`` times a second apart: on a busy host one probe can time out, and a "no" here
    recreates the parent under a start that is still waiting for it. A dead socket fails every time at once.
    """
    for attempt in range(attempts):
        if attempt:
            time.sleep(1)
        created = client.api.exec_create(container_id, ["python3", "/opt/hal9000/bin/healthcheck.py", "socket"])
        client.api.exec_start(created["Id"])
        if client.api.exec_inspect(created["Id"])["ExitCode"] == 0:
            return True
    return False


def mounted_home(inspected):
    """The host directory a parent mounts as its home, or None."""
    for mount in (inspected or {}).get("Mounts") or []:
        if mount.get("Destination") == HOME_IN_PARENT:
            return mount["Source"]
    return None


def made_with(inspected):
    """The options the parent ``inspected`` was made with (see parent_spec), or {} when there is none.

    A parent made before they were kept on it gives its mounted home only.
    """
    if inspected is None:
        return {}
    saved = (inspected["Config"].get("Labels") or {}).get(LABEL_OPTIONS)
    if saved:
        return json.loads(saved)
    home = mounted_home(inspected)
    return {"hal9000_home": home} if home else {}


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


def health_detail(state):
    log = (state.get("Health") or {}).get("Log") or []
    lines = (log[-1].get("Output") or "").strip().splitlines() if log else []
    return lines[0] if lines else ""


def parent_summary(client, inspected):
    """The parent as the module, the coordinator and daemon status report it."""
    state = inspected["State"]
    summary = {
        "id": inspected["Id"],
        "name": inspected["Name"].lstrip("/"),
        "image": inspected["Config"]["Image"],
        "image_id": inspected["Image"],  # what it runs, whatever the tag names now
        "state": state["Status"],
        "health": (state.get("Health") or {}).get("Status", "none"),
        # What the last health check said ("disk full: <path>, free space needed", "docker socket does not answer").
        "health_detail": health_detail(state),
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
        summary["egress"] = startup.get("egress") or {}  # mode, allow, warnings, error (images/parent/egress_rules.py)
        summary["settings"] = startup.get("settings") or {}
    return summary


def wait_until_ready(client, container_id, timeout, name=None):
    """Poll the start-up record until ChromaDB answered; raise with the log tail on timeout.

    With ``name``, a parent replaced meanwhile under that name (a start running at the same time recreated it)
    is followed rather than reported as failed.
    """
    deadline = time.monotonic() + timeout
    inspected = None
    while time.monotonic() < deadline:
        inspected = inspect_container(client, container_id)
        status = inspected["State"]["Status"] if inspected else "removed"
        if status in ("removed", "removing", "dead") and name:
            replacement = inspect_container(client, name)
            if replacement and replacement["Id"] != container_id:
                container_id = replacement["Id"]
                continue
        if status not in ("running", "created", "restarting"):
            break
        try:
            if status == "running" and read_startup(client, container_id).get("chromadb_ready"):
                return container_id
        except ERRORS.APIError:  # removed between the inspect and the read: the next pass looks again
            pass
        time.sleep(0.1)
    try:
        tail = client.api.logs(container_id, tail=15).decode("utf-8", "replace").strip().splitlines()
    except ERRORS.APIError:  # removed meanwhile: there are no logs to show
        tail = ["(the container was removed while starting)"]
    state, restarts = (inspected or {}).get("State") or {}, (inspected or {}).get("RestartCount", 0)
    if state.get("Status") == "exited":
        why = f"exited (code {state.get('ExitCode')}) before it was ready (ChromaDB answering)"
    else:  # a parent that keeps exiting is restarted by its restart policy until the timeout
        why = f"did not become ready (ChromaDB answering) within {timeout} s" + (
            f" (it exited {restarts} times, last with code {state.get('ExitCode')})" if restarts else "")
    raise Hal9000Error(f"The parent {why}; its last log lines: " + " | ".join(tail[-15:]))


def run_coordinator(client, parent_id, *args, user=""):
    """``coordinator ARGS`` in the running parent, its output; one line naming the command when it fails."""
    created = client.api.exec_create(parent_id, ["coordinator", *[str(arg) for arg in args]], user=user)
    output = client.api.exec_start(created["Id"]).decode("utf-8", "replace")
    if client.api.exec_inspect(created["Id"])["ExitCode"] != 0:
        last = output.strip().splitlines()[-1] if output.strip() else "no output"
        raise Hal9000Error(f"coordinator {' '.join(str(arg) for arg in args)} failed in the parent: {last}")
    return output
