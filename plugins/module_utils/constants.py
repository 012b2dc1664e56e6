# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Names and paths of an installation, written down once.

Labels live in fleet.py (identity); settings and their defaults in settings.py.
Pure: standard library only, never ``ansible.*``.
"""

from __future__ import annotations

import os

PARENT_NAME = "hal9000-parent"
PARENT_IMAGE = "hal9000/parent:latest"
WORKER_IMAGE = "hal9000/worker:latest"
MCP_IMAGE = "hal9000/mcp:latest"
FLAVOUR_IMAGES = {"minimal": WORKER_IMAGE, "ultramin": "hal9000/worker:ultramin"}
DEFAULT_HOME = "~/.hal9000"
DOCKER_SOCKET = "/var/run/docker.sock"

# Inside the parent: where the host's home is mounted, and the parent's own run-time files.
HOME_IN_PARENT = "/root/.hal9000"
RUN_DIR_IN_PARENT = "/run/hal9000"
STARTUP_FILE = f"{RUN_DIR_IN_PARENT}/startup.json"
POOL_PID_FILE = f"{RUN_DIR_IN_PARENT}/pool-manager.pid"
POOL_SCALE_FILE = f"{RUN_DIR_IN_PARENT}/pool-scale.json"
POOL_STATUS_FILE = f"{RUN_DIR_IN_PARENT}/pool-status.json"

# Below the home (on the host, and at HOME_IN_PARENT in the parent).
CONFIG_FILE = os.path.join("config", "hal9000.conf")
POOLS_FILE = os.path.join("config", "pools.json")
CLAIM_LOCK_FILE = os.path.join("run", "claim.lock")


def default_home():
    """~/.hal9000 of the user running this (for callers without a parent to ask)."""
    return os.path.expanduser(DEFAULT_HOME)


def config_path(home):
    """hal9000.conf of the installation whose home is ``home``."""
    return os.path.join(home, CONFIG_FILE)
