# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HAL-9000 home on the Docker host (~/.hal9000): its directories and config/hal9000.conf.

Used by the home module (what the volumes role runs) and by the parent's entrypoint, so the
layout is written down once. Pure: standard library only, never ``ansible.*``.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import stat

from ansible_collections.hal9000.dind.plugins.module_utils.constants import config_path
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.settings import check_file_settings

LAYOUT = ("sessions", "logs", "config", "workers")
CONFIG_HEADER = (
    "# HAL-9000 settings, read by the parent, the worker module, coordinator spawn and the pool manager.\n"
    "# Written by hal9000.dind.home: local changes are overwritten on the next run.\n"
)


# Never removed with the layout, whatever a directories list says: backups, secrets, the migration's records and
# exports, the v0.5.x data and what a rollback kept aside.
KEPT = ("backups", "secrets", "migration", "claude", "chromadb", "membank", "plugins")
KEPT_PATTERN = re.compile(r"^volume-exports-|\.before-rollback-|\.replaced-")
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def validate_layout(directories):
    """Relative directory names below the home; never absolute, never '.' (the home itself) or '..' (out of it)."""
    for directory in directories:
        parts = str(directory).split("/")
        if not directory or os.path.isabs(directory) or any(part in ("", ".", "..") for part in parts):
            raise Hal9000Error(
                f"Home directory entry {directory!r} must be a relative path below the home, without '.' or '..'."
            )
    return [str(directory) for directory in directories]


def validate_removal(directories):
    """``validate_layout``, and none of them holds data that is kept (see KEPT)."""
    layout = validate_layout(directories)
    for directory in layout:
        top = directory.split("/")[0]
        if top in KEPT or KEPT_PATTERN.search(top):
            raise Hal9000Error(
                f"Home directory entry {directory!r} is never removed ({top} holds data that is kept): "
                "take it out of the directories (volumes_layout_dirs)."
            )
    return layout


def _link_error(path):
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return Hal9000Error(
        f"{path} is a symbolic link (to {target}): the HAL-9000 home's layout never follows links. "
        "Remove the link (make it a real directory if it should be one), then run again."
    )


def _lstat(name, dir_fd=None):
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _open_directory(name, path, dir_fd=None):
    """An fd of the directory ``name`` (in ``dir_fd``), never through a link; ``path`` names it in errors."""
    try:
        return os.open(name, _DIRECTORY, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        info = _lstat(name, dir_fd)
        if info is not None and stat.S_ISLNK(info.st_mode):
            raise _link_error(path) from None
        raise Hal9000Error(f"{path} exists and is not a directory: move it away, then run again.") from None


def _give(fd, owner):
    """What root makes in a user's home belongs to that user (files.give_to_home_owner, by fd)."""
    if owner and os.geteuid() == 0 and owner[0] != 0:
        os.fchown(fd, *owner)


class _Walk:
    """Directories below the home opened one level at a time without following links; closes them all."""

    def __init__(self, home):
        self.home = home
        self.fds = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for fd in self.fds.values():
            os.close(fd)

    def open(self, relative, missing_ok=True):
        """The fd of ``relative`` ('' is the home), or None when it (or a level above it) does not exist."""
        if relative in self.fds:
            return self.fds[relative]
        path = os.path.join(self.home, relative) if relative else self.home
        if relative:
            parent = self.open(os.path.dirname(relative), missing_ok)
            if parent is None:
                return None
            name = os.path.basename(relative)
        else:
            parent, name = None, self.home
        if _lstat(name, parent) is None:
            if missing_ok:
                return None
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        self.fds[relative] = _open_directory(name, path, parent)
        return self.fds[relative]

    def make(self, relative, mode, owner):
        """Create ``relative`` ('' the home) and the levels above it that are missing, each with ``mode`` and ``owner``."""
        if relative:
            parent = self.open(os.path.dirname(relative))
            if parent is None:
                parent = self.make(os.path.dirname(relative), mode, owner)
            name = os.path.basename(relative)
        else:
            if os.path.dirname(self.home):
                os.makedirs(os.path.dirname(self.home), mode=mode, exist_ok=True)  # above the home: the caller's path
            parent, name = None, self.home
        try:
            os.mkdir(name, mode, dir_fd=parent)
        except FileExistsError:
            pass  # made meanwhile; opened without following a link below
        fd = self.open(relative, missing_ok=False)
        os.fchmod(fd, mode)  # mkdir's mode is masked by the umask
        _give(fd, owner)
        return fd


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


def _ensure_directories(walk, layout, mode, check_mode, owner):
    """Each entry of ``layout`` below the walked home made or given ``mode``; the actions taken or planned."""
    actions = []
    for directory in layout:
        path = os.path.join(walk.home, directory) if directory else walk.home
        fd = walk.open(directory)
        if fd is None:
            if not check_mode:
                walk.make(directory, mode, owner)
            actions.append(f"created {path}")
            continue
        current = stat.S_IMODE(os.fstat(fd).st_mode)
        if current != mode:
            if not check_mode:
                os.fchmod(fd, mode)
            actions.append(f"changed the mode of {path} from {current:04o} to {mode:04o}")
    return actions


def _read_file(dir_fd, name, path):
    """(text, mode) of the regular file ``name`` in ``dir_fd``, or (None, None); never through a link."""
    if dir_fd is None:
        return None, None
    info = _lstat(name, dir_fd)
    if info is None:
        return None, None
    if stat.S_ISLNK(info.st_mode):
        raise _link_error(path)
    if not stat.S_ISREG(info.st_mode):
        raise Hal9000Error(f"{path} exists and is not a regular file: move it away, then run again.")
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    with os.fdopen(fd, encoding="utf-8") as handle:
        return handle.read(), stat.S_IMODE(os.fstat(fd).st_mode)


def _write_file(dir_fd, name, text, mode, owner):
    """Write ``text`` beside ``name`` in ``dir_fd``, then rename: readers see the old file or the whole new one."""
    temporary = f".{name}.{secrets.token_hex(4)}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            os.fchmod(fd, mode)
            _give(fd, owner)
        os.replace(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)  # replaces a link itself, never its target
    except BaseException:
        try:
            os.unlink(temporary, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        raise


def _ensure_file(dir_fd, name, path, text, mode, check_mode, owner):
    """``text`` in ``name`` with ``mode``, written only when it differs; returns (actions, previous text)."""
    previous, current = _read_file(dir_fd, name, path)
    if previous == text:
        if current == mode:
            return [], previous
        if not check_mode:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
            try:
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
        return [f"changed the mode of {path} from {current:04o} to {mode:04o}"], previous
    if not check_mode:
        _write_file(dir_fd, name, text, mode, owner)
    return [f"{'wrote' if previous is None else 'updated'} {path}"], previous


def ensure_home(home, directories, settings, check_mode, mode=0o700):
    """The home, its layout and hal9000.conf; returns (actions, previous config text, new config text).

    Everything is validated before the first directory is made. No symbolic link is followed: the home, a
    directory of its layout or hal9000.conf that is one is refused (as root, a planted link would be chmodded
    or written through).
    """
    text = config_text(settings)  # one line per setting, checked first
    check_file_settings(settings)
    layout = validate_layout(directories)
    if "config" not in layout:
        layout.append("config")  # where hal9000.conf lives
    home = os.path.normpath(home)
    config = config_path(home)
    config_dir, config_name = os.path.split(os.path.relpath(config, home))
    with _Walk(home) as walk:
        for directory in [""] + layout:  # every link is refused before anything is made
            walk.open(directory)
        _read_file(walk.open(config_dir), config_name, config)
        actions = _ensure_directories(walk, [""], mode, check_mode, None)
        fd = walk.open("")
        owner = (os.fstat(fd).st_uid, os.fstat(fd).st_gid) if fd is not None else None
        actions += _ensure_directories(walk, layout, mode, check_mode, owner)
        written, previous = _ensure_file(walk.open(config_dir), config_name, config, text, 0o600, check_mode, owner)
    return actions + written, previous, text


def remove_layout(home, directories, check_mode):
    """Remove the ``directories`` below the home, never kept data and never through a link; the actions taken or planned.

    Every entry is checked (names, then each level for links) before the first one is removed.
    """
    layout = validate_removal(directories)
    home = os.path.normpath(home)
    actions = []
    with _Walk(home) as walk:
        found = [directory for directory in layout if walk.open(directory) is not None]
        for directory in found:
            actions.append(f"removed {os.path.join(home, directory)}")
            parent, name = walk.open(os.path.dirname(directory)), os.path.basename(directory)
            if not check_mode and _lstat(name, parent) is not None:  # not already gone with an entry above it
                shutil.rmtree(name, dir_fd=parent)  # by fd: nothing below is followed either
    return actions
