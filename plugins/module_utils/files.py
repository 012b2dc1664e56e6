# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Files in the HAL-9000 home: written whole, private, and owned by the home's owner.

The parent runs as root, and so may the modules; the home may belong to a user. Whatever root
creates in it is handed to the home's owner, so that user's own runs (a claim, a spawn, a
playbook) can still read and replace it. Pure: standard library only, never ``ansible.*``.
"""

from __future__ import annotations

import json
import os
import tempfile


def home_owner(home):
    """(uid, gid) of the home directory."""
    info = os.stat(home)
    return info.st_uid, info.st_gid


def give_to_home_owner(path, home):
    """When root writes into a user's home, the user gets what root made (a no-op otherwise)."""
    if os.geteuid() != 0:
        return
    uid, gid = home_owner(home)
    if uid != 0:
        os.lchown(path, uid, gid)


def make_private_dirs(path, home, mode=0o700):
    """``path`` and its missing parents (the home too, if missing), each made with ``mode`` and given to the home's owner."""
    missing = []
    current = path
    while not os.path.isdir(current) and current != os.path.dirname(current):
        missing.append(current)
        current = os.path.dirname(current)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            continue  # made meanwhile by another process
        os.chmod(directory, mode)  # mkdir's mode is masked by the umask
        give_to_home_owner(directory, home)
    return path


def write_atomically(path, text, mode=0o600, home=None, durable=False):
    """Write ``text`` next to ``path``, then rename: readers see the old file or the whole new one.

    With ``home``, the file belongs to the home's owner (see ``give_to_home_owner``). ``durable``
    also flushes it to disk first (a backup's manifest); run-time records skip that cost.
    """
    descriptor, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        if home:
            give_to_home_owner(temporary, home)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    if durable:  # the rename itself survives a crash only once the directory is flushed
        directory = os.open(os.path.dirname(path), os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    return path


def read_text(path):
    """The file's text, or None when there is no file."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def write_if_changed(path, text, mode, home=None):
    """``write_atomically`` unless the file already holds ``text``; True when it wrote."""
    if read_text(path) == text:
        return False
    write_atomically(path, text, mode, home)
    return True


def write_json_atomically(path, data, mode=0o600, home=None, durable=False):
    return write_atomically(path, json.dumps(data, indent=1, sort_keys=True) + "\n", mode, home, durable)
