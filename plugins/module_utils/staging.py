# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Staging directories: a copy is written beside its target and renamed into place once verified.

Their names carry the writing process's pid, so the next run can tell the ones a killed run left
(its process is gone) from one another run is still writing. Helper containers and backups being
written name their writer as ``<host>:<pid>`` (owner_tag) for the same reason.
"""

from __future__ import annotations

import os
import socket
import uuid


def process_alive(pid):
    """True while a process with this pid runs on this host (also one of another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_tag():
    """``<host>:<pid>`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_gone(tag):
    """True when ``tag`` (from owner_tag) names a process of this host that no longer runs."""
    host, _sep, pid = tag.strip().rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not process_alive(int(pid))


def staging_name(target, infix):
    """A new name beside ``target``: ``<target><infix><pid>-<random>``."""
    return f"{target}{infix}{os.getpid()}-{uuid.uuid4().hex[:8]}"


def leftover_staging(target, infix):
    """The staging directories of ``target`` whose writing process is gone (sorted paths)."""
    parent, base = os.path.split(target)
    prefix = base + infix
    try:
        with os.scandir(parent) as scan:
            found = [e for e in scan if e.name.startswith(prefix) and e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    left = []
    for entry in found:
        pid = entry.name[len(prefix):].split("-", 1)[0]
        if not (pid.isdigit() and process_alive(int(pid))):
            left.append(entry.path)
    return sorted(left)
