# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An index of warm workers in the installation's home, so a claim need not list every container.

The engine's container list walks all containers, whatever its filters (about 1 s with 1,000 warm workers),
while inspecting one container costs the same at any size. So every warm worker gets an empty file
``run/warm/<spec digest>/<nanoseconds>-<container ID>`` when it starts (oldest first by name), a claim
inspects the entries of its digest in that order, and a claim or a removal drops the entry.

The index is only a hint: a claim checks every entry against the engine (running, still under its warm
name, this parent's), drops entries whose worker is gone, and falls back to the container list when the
index offers no worker. The pool manager adds what is missing and drops what is gone at every pass.
Pure: standard library only, never ``ansible.*``.
"""

from __future__ import annotations

import contextlib
import os
import time

from ansible_collections.hal9000.dind.plugins.module_utils.files import give_to_home_owner, make_private_dirs

INDEX_DIR = os.path.join("run", "warm")


def _directory(home, digest):
    return os.path.join(home, INDEX_DIR, digest)


def add(home, digest, container_id):
    """Index a started warm worker of spec ``digest``."""
    directory = _directory(home, digest)
    path = os.path.join(directory, f"{time.time_ns():020d}-{container_id}")
    for attempt in range(2):
        make_private_dirs(directory, home)
        try:
            with open(path, "x", encoding="utf-8"):
                break
        except FileNotFoundError:  # the pool manager removed the directory when it emptied: once more
            if attempt:
                raise
    give_to_home_owner(path, home)


def indexed(home, digest):
    """(entry, container ID) of every indexed warm worker of spec ``digest``, oldest first."""
    try:
        names = sorted(os.listdir(_directory(home, digest)))
    except OSError:  # nothing indexed yet, or a home this process cannot read: the caller lists instead
        return []
    return [(name, name.split("-", 1)[1]) for name in names if "-" in name]


def forget(home, digest, container_id, entry=None):
    """Drop the entry of ``container_id`` (gone, claimed or removed); given its ``entry`` name, without a listing."""
    directory = _directory(home, digest)
    with contextlib.suppress(OSError):
        for name in [entry] if entry else os.listdir(directory):
            if name.endswith("-" + container_id):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(directory, name))


def sync(home, warm, listed_at):
    """Make the index match ``warm`` (``pool.warm_workers`` entries: id, digest), listed at ``listed_at`` (time.time()).

    Entries made after the listing (workers started since) are kept; empty directories of old specs go.
    """
    root = os.path.join(home, INDEX_DIR)
    wanted = {(worker["digest"], worker["id"]) for worker in warm}
    indexed = set()
    with contextlib.suppress(FileNotFoundError):
        for digest in os.listdir(root):
            directory = os.path.join(root, digest)
            if not os.path.isdir(directory):
                continue  # not the index's: left alone
            for name in os.listdir(directory):
                container_id = name.split("-", 1)[-1]
                indexed.add((digest, container_id))
                path = os.path.join(directory, name)
                with contextlib.suppress(FileNotFoundError):
                    if (digest, container_id) not in wanted and os.stat(path).st_mtime < listed_at:
                        os.unlink(path)
            with contextlib.suppress(OSError):
                os.rmdir(directory)  # only when empty
    for digest, container_id in wanted - indexed:
        add(home, digest, container_id)
