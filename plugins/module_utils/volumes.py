# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Named volumes: the shared HAL-9000 volumes and how a volume is compared.

Pure: standard library and the docker SDK only, never ``ansible.*``.
"""

from __future__ import annotations

from ansible_collections.hal9000.dind.plugins.module_utils.engine import ERRORS

# The shared volumes (named <prefix>-<kind>) and where the parent mounts them (seed: init-volumes.sh).
SHARED_VOLUME_MOUNTS = {
    "chromadb": "/data/chromadb",
    "memorybank": "/data/membank",
    "plugins": "/data/plugins",
}
DEFAULT_VOLUME_PREFIX = "hal9000"
SHARED_VOLUME_LABELS = {
    "io.hal9000.managed": "true",
    "io.hal9000.type": "shared",
}


def shared_volumes(prefix=DEFAULT_VOLUME_PREFIX):
    """Volume name -> mount point in the parent; a prefix keeps test installations apart."""
    return {f"{prefix}-{kind}": path for kind, path in SHARED_VOLUME_MOUNTS.items()}


def wanted_volume(name, driver, driver_options, labels):
    """The comparable shape of a volume as the user asked for it."""
    return {
        "name": name,
        "driver": driver,
        # The daemon stores option values as strings.
        "driver_options": {key: str(value) for key, value in (driver_options or {}).items()},
        "labels": dict(labels or {}),
    }


def current_volume(inspected):
    """The same shape, read from ``docker volume inspect``."""
    return {
        "name": inspected["Name"],
        "driver": inspected.get("Driver") or "local",
        "driver_options": dict(inspected.get("Options") or {}),
        "labels": dict(inspected.get("Labels") or {}),
    }


def volume_differences(current, wanted):
    """Keys that differ, comparing only what the user requested.

    Labels and driver options set on the volume but not requested are left
    alone, so volumes created by other tools are not reported as drifted.
    """
    differences = []
    if current["driver"] != wanted["driver"]:
        differences.append("driver")
    for section in ("driver_options", "labels"):
        for key, value in wanted[section].items():
            if current[section].get(key) != value:
                differences.append(f"{section}.{key}")
    return differences


def inspect_volume(client, name):
    """The inspected volume, or None when it does not exist."""
    try:
        return client.api.inspect_volume(name)
    except ERRORS.NotFound:
        return None


def containers_using_volume(client, name):
    """Names of all containers (running or not) that mount the volume."""
    containers = client.api.containers(all=True, filters={"volume": name})
    return sorted(c["Names"][0].lstrip("/") for c in containers)


def volume_sizes(client):
    """Bytes used per volume name, from the daemon's disk-usage report."""
    usage = client.api.df()
    return {
        volume["Name"]: (volume.get("UsageData") or {}).get("Size", -1)
        for volume in usage.get("Volumes") or []
    }
