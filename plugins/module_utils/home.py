# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HAL-9000 home on the Docker host (~/.hal9000): its directories and config/hal9000.conf.

Used by the home module (what the volumes role runs) and by the parent's entrypoint, so the
layout is written down once. Pure: standard library only, never ``ansible.*``.
"""

from __future__ import annotations

import os

from ansible_collections.hal9000.dind.plugins.module_utils.constants import config_path
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.files import give_to_home_owner, read_text, write_atomically
from ansible_collections.hal9000.dind.plugins.module_utils.settings import check_file_settings

LAYOUT = ("sessions", "logs", "config", "workers")
CONFIG_HEADER = (
    "# HAL-9000 settings, read by the parent, the worker module, coordinator spawn and the pool manager.\n"
    "# Written by hal9000.dind.home: local changes are overwritten on the next run.\n"
)


def validate_layout(directories):
    """Relative directory names below the home; never absolute, never climbing out with '..'."""
    for directory in directories:
        parts = str(directory).split("/")
        if not directory or os.path.isabs(directory) or ".." in parts or "" in parts:
            raise Hal9000Error(f"Home directory entry {directory!r} must be a relative path below the home, without '..'.")
    return list(directories)


def config_text(settings):
    """hal9000.conf as KEY=value lines in key order, after the header."""
    lines = []
    for key in sorted(settings):
        value = "" if settings[key] is None else str(settings[key])
        if isinstance(settings[key], bool):
            value = value.lower()  # the seed's files say true/false
        if "\n" in value or "\r" in value:
            raise Hal9000Error(f"Setting {key} must be one line: remove the line break from its value.")
        lines.append(f"{key}={value}\n")
    return CONFIG_HEADER + "".join(lines)


def ensure_directory(path, mode, check_mode, home=None):
    """Create ``path`` (and missing parents) or fix its mode; returns the actions taken or planned.

    Below ``home``, what root creates belongs to the home's owner.
    """
    if not os.path.lexists(path):
        if not check_mode:
            os.makedirs(path, mode=mode, exist_ok=True)
            os.chmod(path, mode)  # makedirs' mode is masked by the umask
            if home:
                give_to_home_owner(path, home)
        return [f"created {path}"]
    if not os.path.isdir(path):
        raise Hal9000Error(f"{path} exists and is not a directory: move it away, then run again.")
    current = os.stat(path).st_mode & 0o7777
    if current != mode:
        if not check_mode:
            os.chmod(path, mode)
        return [f"changed the mode of {path} from {current:04o} to {mode:04o}"]
    return []


def ensure_file(path, text, mode, check_mode, home=None):
    """Write ``text`` to ``path`` atomically when it differs, and give it ``mode``; returns (actions, previous text)."""
    previous = read_text(path)
    if previous == text:
        current = os.stat(path).st_mode & 0o7777
        if current == mode:
            return [], previous
        if not check_mode:
            os.chmod(path, mode)
        return [f"changed the mode of {path} from {current:04o} to {mode:04o}"], previous
    if not check_mode:
        write_atomically(path, text, mode, home)  # the parent never reads half a file
    return [f"{'wrote' if previous is None else 'updated'} {path}"], previous


def ensure_home(home, directories, settings, check_mode, mode=0o700):
    """The home, its layout and hal9000.conf; returns (actions, previous config text, new config text).

    Everything is validated before the first directory is made.
    """
    text = config_text(settings)  # one line per setting, checked first
    check_file_settings(settings)
    layout = validate_layout(directories)
    if "config" not in layout:
        layout.append("config")  # where hal9000.conf lives
    actions = ensure_directory(home, mode, check_mode)
    for directory in layout:
        actions += ensure_directory(os.path.join(home, directory), mode, check_mode, home)
    config = config_path(home)
    written, previous = ensure_file(config, text, 0o600, check_mode, home)
    return actions + written, previous, text
