# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One picture of an installation: the data behind every status, list and count.

Used by the coordinator in the parent, the info module and `daemon.yml status`.
Pure: standard library and the docker SDK only, never ``ansible.*``.
"""

from __future__ import annotations

from ansible_collections.hal9000.dind.plugins.module_utils.constants import FLAVOUR_IMAGES, PARENT_IMAGE, PARENT_NAME
from ansible_collections.hal9000.dind.plugins.module_utils.docker_api import inspect_container
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.fleet import list_workers
from ansible_collections.hal9000.dind.plugins.module_utils.images import inspect_image
from ansible_collections.hal9000.dind.plugins.module_utils.parent import mounted_home, parent_summary
from ansible_collections.hal9000.dind.plugins.module_utils.pool import load_pools
from ansible_collections.hal9000.dind.plugins.module_utils.relay import read_status as read_relay_status
from ansible_collections.hal9000.dind.plugins.module_utils.sessions import summary as sessions_summary
from ansible_collections.hal9000.dind.plugins.module_utils.settings import resolve, resolve_in_home
from ansible_collections.hal9000.dind.plugins.module_utils.volumes import DEFAULT_VOLUME_PREFIX, inspect_volume, shared_volumes


def pool_status(home, workers):
    """The pools in force (pools.json and hal9000.conf under ``home``) with their running warm workers."""
    try:
        settings = resolve_in_home(home)
        config = load_pools(home, settings)
    except (Hal9000Error, OSError, ValueError) as exc:
        return {"enabled": False, "idle_timeout": None, "pools": [], "error": str(exc).splitlines()[0]}
    warm = [w for w in workers if w["warm"] and w["state"] == "running"]
    pools = [{"name": p["name"], "project": p["project"], "min": p["min"], "max": p["max"], "image": p["image"],
              "warm": len([w for w in warm if w["pool"] == p["name"]])} for p in config["pools"]]
    return {"enabled": config["enabled"], "idle_timeout": config["idle_timeout"], "pools": pools}


def worker_limits(home):
    """The limits a worker made without explicit ones gets here: hal9000.conf under ``home``, else the seed's."""
    try:
        settings = resolve_in_home(home) if home else resolve()
    except (Hal9000Error, OSError, ValueError) as exc:
        return {"memory": None, "cpus": None, "pids_limit": None, "error": str(exc).splitlines()[0]}
    return {"memory": settings["memory"], "cpus": settings["cpus"], "pids_limit": settings["pids_limit"]}


def relay_status(home, parent):
    """The MCP relay: whether it runs and answers, and each server's state (what the relay last wrote)."""
    settings = (parent.get("settings") or {})
    reported = read_relay_status(home) if home else {}
    running = parent.get("state") == "running"
    return {
        "enabled": bool(settings.get("enable_mcp_relay", running)),
        "ready": bool(parent.get("relay_ready")),
        "port": settings.get("mcp_relay_port", reported.get("port")),
        "servers": {name: server.get("state", "unknown") if running else "stopped"
                    for name, server in sorted((reported.get("servers") or {}).items())},
        "errors": {name: server["error"] for name, server in (reported.get("servers") or {}).items() if server.get("error")},
        "error": parent.get("relay_error", ""),
    }


def image_status(client, references):
    """Each image reference: whether it exists, its ID, creation time and size."""
    images = []
    for reference in references:
        inspected = inspect_image(client, reference)
        images.append({"name": reference, "exists": False} if inspected is None else
                      {"name": reference, "exists": True, "id": inspected["Id"], "created": inspected["Created"],
                       "size": inspected["Size"]})
    return images


def installation_status(client, parent_name=PARENT_NAME, volume_prefix=DEFAULT_VOLUME_PREFIX, home=None):
    """Everything status reports; ``home`` is the installation's home as the caller sees it (default: the parent's mount)."""
    inspected = inspect_container(client, parent_name)
    parent = parent_summary(client, inspected) if inspected else {"name": parent_name, "state": "absent"}
    # Only this parent's workers: other installations on the host (and containers that merely
    # inherit the worker image's role label) are not part of it.
    workers = list_workers(client, parent=parent_name, with_limits=True)
    running = [w for w in workers if w["state"] == "running"]
    home = home or mounted_home(inspected)
    pool = pool_status(home, workers) if home else {"enabled": False, "idle_timeout": None, "pools": []}
    parent_image = inspected["Config"]["Image"] if inspected else PARENT_IMAGE
    references = [parent_image] + sorted({*FLAVOUR_IMAGES.values(), *(p["image"] for p in pool["pools"])})
    return {
        "parent": parent,
        "workers": workers,
        "counts": {
            "total": len(workers),
            "running": len(running),
            "stale_network": len([w for w in workers if not w["network_ok"]]),
        },
        "volumes": [{"name": name, "exists": inspect_volume(client, name) is not None} for name in shared_volumes(volume_prefix)],
        "pool": pool,
        "worker_limits": worker_limits(home),
        "relay": relay_status(home, parent),
        "images": image_status(client, list(dict.fromkeys(references))),
        "sessions": sessions_summary(home, limit=10) if home else {"path": None, "records": 0, "open": 0, "recent": []},
    }


def egress_lines(egress):
    """The workers' egress as the parent applied it: the mode, then a warning for open and whatever went wrong."""
    if not egress:
        return []
    lines = [f"Worker egress: {egress.get('mode') or 'unknown'}" + (
        f" (also allowed: {', '.join(egress['allow'])})" if egress.get("mode") == "allowlist" and egress.get("allow") else "")]
    if egress.get("error"):
        lines.append(f"  WARNING: egress rules not applied: {egress['error']}")
    lines += [f"  WARNING: {warning}" for warning in egress.get("warnings") or []]
    return lines


def format_status(status):
    """The text `claudy daemon status` printed, from the same data."""
    parent = status["parent"]
    lines = ["HAL-9000 Orchestrator Status"]
    if parent["state"] == "absent":
        lines += [f"Parent container: Not found ({parent['name']})", "  Start it with: claudy daemon start (or ansible-playbook playbooks/daemon.yml)"]
    elif parent["state"] == "running":
        lines += [f"Parent container: Running ({parent['name']}, health {parent['health']})", f"  Started: {parent['started_at']}"]
        if parent["health"] == "unhealthy" and parent.get("health_detail"):
            lines.append(f"  {parent['health_detail']}")  # e.g. disk full: <path>, free space needed
        port = (parent.get("settings") or {}).get("chromadb_port", 8000)
        lines.append(f"ChromaDB server: {'Running on port ' + str(port) if parent['chromadb_ready'] else 'Not responding'}")
        if parent.get("chromadb_guard") and parent["chromadb_guard"] != "root only":
            lines.append(f"  WARNING: ChromaDB is reachable by workers: {parent['chromadb_guard']}")
        relay = status.get("relay") or {}
        if relay.get("enabled"):
            servers = ", ".join(f"{name} {state}" for name, state in relay["servers"].items()) or "no report yet"
            lines.append(f"MCP relay: {'Ready on port ' + str(relay['port']) if relay['ready'] else 'Not ready'} ({servers})")
            lines += [f"  {name}: {error}" for name, error in sorted(relay["errors"].items())]
            if relay["error"] and not relay["ready"]:
                lines.append(f"  {relay['error']}")
        else:
            lines.append("MCP relay: Disabled (ENABLE_MCP_RELAY=false)")
        lines += egress_lines(parent.get("egress") or {})
        if parent["startup"]:
            lines.append("  Start-up: " + ", ".join(f"{k} {v}ms" for k, v in parent["startup"].items()))
    else:
        lines += [f"Parent container: Stopped ({parent['name']}, state {parent['state']})", f"  Exit code: {parent['exit_code']}"]
    running = [w for w in status["workers"] if w["state"] == "running"]
    lines.append(f"Active workers: {len(running)}")
    for worker in status["workers"]:
        note = "" if worker["network_ok"] else " [network stale: parent was recreated]"
        lines.append(f"  {worker['name']}: {worker['status']}{' (' + worker['project'] + ')' if worker['project'] else ''}{note}")
    lines.append("Shared volumes:")
    lines += [f"  {v['name']}: {'exists' if v['exists'] else 'not created'}" for v in status["volumes"]]
    sessions = status.get("sessions")
    if sessions and sessions["path"]:
        lines.append(f"Sessions: {sessions['open']} open, {sessions['records']} recorded ({sessions['path']})")
        if sessions.get("error"):
            lines.append(f"  {sessions['error']}")
    return "\n".join(lines)
