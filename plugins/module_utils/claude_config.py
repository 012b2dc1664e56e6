# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host's Claude config (``mount_claude_config``): copied into a worker's own Claude home, never mounted.

A mount would let the worker plant settings or hooks the host's Claude Code later runs, or read the
host's credentials; read-only, Claude Code could write nothing; and on a root-run host the worker's
uid cannot read /root/.claude (0700). So the files are copied into the worker's home's .claude,
owned by the worker's uid. A file is copied again only when the host's copy changed since the last
sync (sha256 per relative path in a state file outside the worker's reach), so the worker's own
edits survive until the host changes that file.

The modules may run as root while ~/.claude and the worker's home belong to others: every path is
opened relative to an already opened directory, never following a symbolic link.
Pure: standard library only, never ``ansible.*``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import stat

from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.files import write_atomically

# The host session's own run-time state: large, private to that session, or rewritten while it runs.
# Top-level names of ~/.claude; plugins/ reaches workers through the hal9000-plugins volume instead.
SKIPPED_NAMES = frozenset((
    "projects", "todos", "shell-snapshots", "statsig", "logs", "ide", "session-env", "file-history",
    "debug", "telemetry", "backups", "plugins", "history.jsonl",
))
SKIPPED_SUFFIXES = (".lock",)  # at any depth: a lock belongs to the process that holds it
CREDENTIALS = ".credentials.json"  # copied only with include_credentials
MAX_FILE_SIZE = 20 * 1024 * 1024
MAX_DEPTH = 32  # one open directory per level
STATE_VERSION = 1

_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in after the lstat must not hang the open.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _safe_relative(path):
    """A relative path below the target, without '..', '.' or empty parts."""
    parts = str(path).split("/")
    return bool(path) and not os.path.isabs(path) and not any(part in ("", ".", "..") for part in parts)


def _inside(path, directory):
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([path, directory]) == directory


def _check_paths(source_dir, target_dir, state_path):
    for name, path in (("source_dir", source_dir), ("target_dir", target_dir), ("state_path", state_path)):
        if not path or not os.path.isabs(path):
            raise Hal9000Error(f"Claude config: {name} {path!r} must be an absolute path.")
    try:
        info = os.lstat(source_dir)
    except FileNotFoundError:
        raise Hal9000Error(
            f"Claude config: {source_dir} does not exist: run claude once on the host, or set claude_config_dir to the Claude config directory."
        ) from None
    if stat.S_ISLNK(info.st_mode):
        raise Hal9000Error(f"Claude config: {source_dir} is a symbolic link: set claude_config_dir to the real directory.")
    if not stat.S_ISDIR(info.st_mode):
        raise Hal9000Error(f"Claude config: {source_dir} is not a directory: set claude_config_dir to the Claude config directory.")
    home = os.path.dirname(target_dir)  # the worker's home: all of it is the worker's to change
    if _inside(target_dir, source_dir) or _inside(source_dir, home):
        raise Hal9000Error(f"Claude config: the worker's copy {target_dir} and the host's {source_dir} overlap: keep them apart.")
    if _inside(os.path.dirname(state_path), home):
        raise Hal9000Error(f"Claude config: the state file {state_path} is inside the worker's home {home}: keep it outside.")


def _check_owner(uid, gid):
    """Refused before anything is written: a non-root run can only give files to itself."""
    if not isinstance(uid, int) or not isinstance(gid, int) or uid < 0 or gid < 0:
        raise Hal9000Error(f"Claude config: the worker's uid and gid must be numbers, not {uid!r}:{gid!r}.")
    euid = os.geteuid()
    if euid != 0 and (uid != euid or gid not in (os.getegid(), *os.getgroups())):
        raise Hal9000Error(f"Claude config: uid {euid} cannot give files to {uid}:{gid}: run as root or as that user.")


def _load_state(state_path):
    """{relative path: sha256} of what was copied; an unreadable state only means everything is compared again."""
    try:
        descriptor = os.open(state_path, _READ_FLAGS)
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise Hal9000Error(f"Claude config: cannot read {state_path} ({error.strerror}): remove it, then run again.") from None
    try:
        with os.fdopen(descriptor, "rb") as handle:
            data = json.loads(handle.read(MAX_FILE_SIZE).decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict):
        return {}
    return {path: digest for path, digest in files.items() if _safe_relative(path) and isinstance(digest, str)}


def _give(path_or_fd, reference):
    """Root's writes next to a user's files belong to that user (the state file in a user's HAL-9000 home)."""
    if os.geteuid() != 0:
        return
    info = os.stat(reference)
    if isinstance(path_or_fd, int):
        os.fchown(path_or_fd, info.st_uid, info.st_gid)
    else:
        os.lchown(path_or_fd, info.st_uid, info.st_gid)


def _save_state(state_path, state):
    directory = os.path.dirname(state_path)
    missing = []
    while not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for path in reversed(missing):
        os.mkdir(path, 0o700)
        os.chmod(path, 0o700)  # mkdir's mode is masked by the umask
        _give(path, os.path.dirname(path))
    directory = os.path.dirname(state_path)
    temporary = os.path.join(directory, f".{os.path.basename(state_path)}.{secrets.token_hex(8)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            _give(handle.fileno(), directory)
            os.fchmod(handle.fileno(), 0o600)
            handle.write(json.dumps(state, indent=1, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, state_path)
    except BaseException:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        raise


def _read_limited(descriptor):
    """At most MAX_FILE_SIZE + 1 bytes: one more than allowed says the file grew past the limit."""
    chunks, size = [], 0
    while size <= MAX_FILE_SIZE:
        chunk = os.read(descriptor, min(1024 * 1024, MAX_FILE_SIZE + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


class _TargetDir:
    """A directory of the worker's copy, opened (never through a symbolic link) or made only when needed."""

    def __init__(self, sync, parent, name, label, announce_creation=False):
        self.sync, self.parent, self.name, self.label = sync, parent, name, label
        self.announce_creation = announce_creation  # subdirectories show in the "copied" actions of their files
        self.descriptor = None
        self.looked_up = self.prepared = False

    def lookup(self):
        """The descriptor of the existing real directory, or None; creates nothing."""
        if not self.looked_up:
            self.looked_up = True
            parent = self.parent.lookup()
            if parent is not None:
                try:
                    self.descriptor = self.sync.opened(os.open(self.name, _DIRECTORY_FLAGS, dir_fd=parent))
                except OSError as error:
                    if error.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                        raise
        return self.descriptor

    def other_entry(self):
        """Whether something that is not a real directory (a planted link, a file) sits at this name."""
        parent = self.parent.lookup()
        if parent is None:
            return False
        try:
            info = os.stat(self.name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return not stat.S_ISDIR(info.st_mode)

    def prepare(self):
        """The descriptor to write into, after making the directory (or replacing what is not one); None in check mode."""
        if self.prepared:
            return self.descriptor
        self.prepared = True
        if self.lookup() is not None:
            return self.descriptor
        parent = self.parent.prepare()
        other = self.other_entry()
        if other:
            self.sync.actions.append(f"replaced {self.label} with a directory")
        elif self.announce_creation:
            self.sync.actions.append(f"created {self.label}")
        if self.sync.check_mode:
            return None
        if other:
            os.unlink(self.name, dir_fd=parent)  # removes the link itself, never what it points to
        os.mkdir(self.name, 0o700, dir_fd=parent)
        self.descriptor = self.sync.opened(os.open(self.name, _DIRECTORY_FLAGS, dir_fd=parent))
        os.fchown(self.descriptor, self.sync.uid, self.sync.gid)
        os.fchmod(self.descriptor, 0o700)  # mkdir's mode is masked by the umask
        return self.descriptor


class _FixedDir:
    """The worker's home, the parent of the target: its path comes from the caller."""

    def __init__(self, descriptor):
        self.descriptor = descriptor

    def lookup(self):
        return self.descriptor

    def prepare(self):
        return self.descriptor


class _Sync:
    def __init__(self, uid, gid, include_credentials, check_mode, recorded, skipped):
        self.uid, self.gid = uid, gid
        self.include_credentials, self.check_mode = include_credentials, check_mode
        self.recorded, self.copied = recorded, {}
        self.actions, self.skipped = [], skipped
        self.descriptors = []
        self.owner = None

    def opened(self, descriptor):
        self.descriptors.append(descriptor)
        return descriptor

    def close(self):
        for descriptor in self.descriptors:
            os.close(descriptor)
        self.descriptors = []

    def skip(self, relative, reason):
        if self.skipped is not None:
            self.skipped.append(f"{relative}: {reason}")

    def open_or_skip(self, source, name, relative, flags):
        """``name`` in the directory ``source`` opened with ``flags`` (never following a link), or None, noted as skipped."""
        try:
            return os.open(name, flags, dir_fd=source)
        except OSError as error:
            self.skip(relative, f"cannot be opened ({error.strerror})")
            return None

    def skip_owner(self, relative, info):
        # root could otherwise copy out another user's file that the config's owner merely linked or moved in
        self.skip(relative, f"owned by uid {info.st_uid}, not by the Claude config's owner (uid {self.owner})")

    def directory(self, source, target, prefix, depth):
        for name in sorted(os.listdir(source)):
            relative = f"{prefix}{name}"
            if (not prefix and name in SKIPPED_NAMES) or name.endswith(SKIPPED_SUFFIXES):
                continue
            if not prefix and name == CREDENTIALS and not self.include_credentials:
                continue
            try:
                info = os.stat(name, dir_fd=source, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed on the host meanwhile
            if stat.S_ISLNK(info.st_mode):
                self.skip(relative, "a symbolic link")
            elif info.st_uid != self.owner:
                self.skip_owner(relative, info)
            elif stat.S_ISDIR(info.st_mode):
                self.subdirectory(source, target, name, relative, depth)
            elif stat.S_ISREG(info.st_mode):
                self.file(source, target, name, relative)
            else:
                self.skip(relative, "not a regular file")

    def subdirectory(self, source, target, name, relative, depth):
        if depth >= MAX_DEPTH:
            self.skip(relative, f"nested deeper than {MAX_DEPTH} directories")
            return
        descriptor = self.open_or_skip(source, name, relative, _DIRECTORY_FLAGS)
        if descriptor is None:
            return
        try:
            info = os.fstat(descriptor)
            if info.st_uid != self.owner:
                self.skip_owner(relative, info)  # swapped after the lstat
                return
            self.directory(descriptor, _TargetDir(self, target, name, relative), f"{relative}/", depth + 1)
        finally:
            os.close(descriptor)

    def file(self, source, target, name, relative):
        descriptor = self.open_or_skip(source, name, relative, _READ_FLAGS)
        if descriptor is None:
            return
        try:
            # Checked on what was opened, not on the earlier lstat: the user may swap the file meanwhile.
            info = os.fstat(descriptor)
            if not stat.S_ISREG(info.st_mode):
                self.skip(relative, "not a regular file")
                return
            if info.st_nlink > 1:
                # A hard link may name a file its owner cannot read (/etc/shadow) that root would copy out.
                self.skip(relative, "a hard link")
                return
            if info.st_uid != self.owner:
                self.skip_owner(relative, info)
                return
            data = _read_limited(descriptor) if info.st_size <= MAX_FILE_SIZE else None
        finally:
            os.close(descriptor)
        if data is None or len(data) > MAX_FILE_SIZE:
            self.skip(relative, "larger than 20 MiB")
            return
        digest = hashlib.sha256(data).hexdigest()
        if self.recorded.get(relative) == digest:
            self.copied[relative] = digest  # the host's file is unchanged: the worker's copy, edited or not, stays
            return
        existing = self.target_file(target, name)
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            self.skip(relative, "a directory in the worker's copy")
            return
        self.copied[relative] = digest
        if existing is not None and self.same_content(target, name, data):
            return
        descriptor = target.prepare()  # its own action, if any, comes first
        self.actions.append(f"copied {relative}")
        if not self.check_mode:
            self.write(descriptor, name, data, 0o700 if info.st_mode & stat.S_IXUSR else 0o600)

    @staticmethod
    def target_file(target, name):
        parent = target.lookup()
        if parent is None:
            return None
        try:
            return os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return None

    @staticmethod
    def same_content(target, name, data):
        try:
            descriptor = os.open(name, _READ_FLAGS, dir_fd=target.lookup())
        except OSError:
            return False  # a symbolic link (ELOOP) or unreadable: replaced
        try:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                return False
            return _read_limited(descriptor) == data
        finally:
            os.close(descriptor)

    def write(self, directory, name, data, mode):
        """A temporary file beside the target, then a rename: a link planted at ``name`` is replaced, never written through."""
        temporary = f".hal9000-sync.{secrets.token_hex(8)}"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=directory)
        try:
            try:
                os.fchown(descriptor, self.uid, self.gid)
                os.fchmod(descriptor, mode)
                view = memoryview(data)
                while view:
                    view = view[os.write(descriptor, view):]
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            os.replace(temporary, name, src_dir_fd=directory, dst_dir_fd=directory)
        except BaseException:
            try:
                os.unlink(temporary, dir_fd=directory)
            except FileNotFoundError:
                pass
            raise

    def remove_credentials(self, root):
        """The host's credentials a previous sync copied, once they are no longer allowed."""
        if self.include_credentials or CREDENTIALS not in self.recorded:
            return
        existing = self.target_file(root, CREDENTIALS)
        if existing is None or stat.S_ISDIR(existing.st_mode):
            return
        self.actions.append(f"removed {CREDENTIALS}")
        if not self.check_mode:
            os.unlink(CREDENTIALS, dir_fd=root.lookup())


def sync_claude_config(source_dir, target_dir, state_path, uid, gid, include_credentials=False, check_mode=False, skipped=None):
    """Copy the host's Claude config ``source_dir`` into a worker's ``target_dir``; returns the actions taken or planned.

    ``state_path`` (JSON, 0600) records what was copied and must be out of the worker's reach. Files the
    sync leaves out for safety (links, other owners, too large) are appended to ``skipped`` when given,
    as "<relative path>: <reason>". Everything is checked before anything is written.
    """
    source_dir, target_dir, state_path = (os.path.normpath(path) if path else path for path in (source_dir, target_dir, state_path))
    _check_paths(source_dir, target_dir, state_path)
    _check_owner(uid, gid)
    sync = _Sync(uid, gid, include_credentials, check_mode, _load_state(state_path), skipped)
    try:
        try:
            source = sync.opened(os.open(source_dir, _DIRECTORY_FLAGS))
        except OSError as error:
            raise Hal9000Error(f"Claude config: cannot open {source_dir} ({error.strerror}): set claude_config_dir to a real directory.") from None
        sync.owner = os.fstat(source).st_uid
        home = os.path.dirname(target_dir)
        try:
            home_descriptor = sync.opened(os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        except FileNotFoundError:
            if not check_mode:
                raise Hal9000Error(f"Claude config: the worker's home {home} does not exist: create it first.") from None
            home_descriptor = None  # check mode before the home is made: everything would be copied
        root = _TargetDir(sync, _FixedDir(home_descriptor), os.path.basename(target_dir), target_dir, announce_creation=True)
        root.prepare()  # made even when nothing is copied: Claude Code expects it
        sync.directory(source, root, "", 0)
        sync.remove_credentials(root)
    finally:
        sync.close()
    state = {"version": STATE_VERSION, "source": source_dir, "files": sync.copied}
    if not check_mode and (sync.copied != sync.recorded or not os.path.lexists(state_path)):
        _save_state(state_path, state)
    return sync.actions


def keep_api_key_helper(path, helper, uid, gid):
    """A copied settings.json replaces the one the worker's entrypoint writes: the key file must stay its key.

    ``path`` is in the worker's home: never read through a link the worker planted (root would copy the
    link's target into the worker's home), and replaced by a rename, never written through.
    """
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), encoding="utf-8") as handle:
            settings = json.load(handle) if stat.S_ISREG(os.fstat(handle.fileno()).st_mode) else None
    except (OSError, ValueError):
        settings = None
    if not isinstance(settings, dict) or settings.get("apiKeyHelper") == helper:
        return False
    settings["apiKeyHelper"] = helper
    write_atomically(path, json.dumps(settings, indent=2) + "\n", 0o600)
    os.chown(path, uid, gid)
    return True
