# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""sha256 tree manifests: what a directory tree holds, from a host directory or a tar stream.

A manifest maps each relative path (``.`` is the top directory itself) to an
entry: ``type`` (file, dir, symlink, fifo, char, block), ``mode`` (permission
bits, not for symlinks), ``size`` (files only, else 0), ``sha256`` (files),
``target`` (symlinks, never followed), ``device`` (char/block) and the numeric
``uid``/``gid``. The same tree gives the same manifest whether it is read from
disk or from the tar that Docker's ``get_archive`` returns, so a copy can be
verified on either side. Sockets are left out: tar (and Docker) cannot carry them.

Pure: standard library only, never ``ansible.*``. Files are read in chunks,
never whole. The volume_data helper runs this file's source as it is, with
python3 inside a container, so it keeps to the standard library.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import stat
import tarfile
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error

CHUNK = 1 << 20
ROOT = "."
# hashlib releases the GIL on big updates, so big files hash in parallel; more threads than cores only contend.
HASH_THREADS = max(1, min(4, os.cpu_count() or 1))
_OWNERSHIP = ("uid", "gid")


class HashingReader:
    """A read-only file wrapper that hashes what passes through it.

    Lets a tar writer read a file once and still know its sha256.
    """

    def __init__(self, fileobj):
        self._fileobj = fileobj
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, size=-1):
        data = self._fileobj.read(size)
        self._hash.update(data)
        self.size += len(data)
        return data

    def hexdigest(self):
        return self._hash.hexdigest()


def hash_file(path):
    """sha256 hex digest of a file, read in chunks."""
    with open(path, "rb") as handle:
        reader = HashingReader(handle)
        while reader.read(CHUNK):
            pass
    return reader.hexdigest()


def _entry(kind, mode, uid, gid, size=0, **extra):
    entry = {"type": kind, "size": size, "uid": uid, "gid": gid}
    if kind != "symlink":  # symlink permission bits mean nothing on Linux
        entry["mode"] = mode
    entry.update(extra)
    return entry


def entry_from_stat(st, path=None, sha256=None):
    """The entry for an lstat() result; ``path`` is read for a symlink target or a file hash."""
    mode, uid, gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
    if stat.S_ISREG(st.st_mode):
        return _entry("file", mode, uid, gid, size=st.st_size, sha256=sha256 or hash_file(path))
    if stat.S_ISDIR(st.st_mode):
        return _entry("dir", mode, uid, gid)
    if stat.S_ISLNK(st.st_mode):
        return _entry("symlink", mode, uid, gid, target=os.readlink(path))
    if stat.S_ISFIFO(st.st_mode):
        return _entry("fifo", mode, uid, gid)
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        kind = "char" if stat.S_ISCHR(st.st_mode) else "block"
        return _entry(kind, mode, uid, gid, device=f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
    return None  # a socket


def entry_from_tarinfo(member, sha256=None):
    """The entry for a tar member (not a hard link: see manifest_of_tar)."""
    mode, uid, gid = stat.S_IMODE(member.mode), member.uid, member.gid
    if member.isreg():
        return _entry("file", mode, uid, gid, size=member.size, sha256=sha256)
    if member.isdir():
        return _entry("dir", mode, uid, gid)
    if member.issym():
        return _entry("symlink", mode, uid, gid, target=member.linkname)
    if member.isfifo():
        return _entry("fifo", mode, uid, gid)
    if member.ischr() or member.isblk():
        kind = "char" if member.ischr() else "block"
        return _entry(kind, mode, uid, gid, device=f"{member.devmajor}:{member.devminor}")
    return None


def iter_directory(root):
    """(relative path, full path, lstat) for the tree, parents before children, names sorted.

    The top directory itself comes first as ``.`` (stat()ed, so a symlink to a
    directory may be given); nothing below it is followed.
    """
    yield ROOT, root, os.stat(root)
    yield from _iter_below(root, "")


def _iter_below(directory, prefix):
    with os.scandir(directory) as scan:
        entries = sorted(scan, key=lambda e: e.name)
    for entry in entries:
        relative = prefix + entry.name
        st = entry.stat(follow_symlinks=False)
        yield relative, entry.path, st
        if stat.S_ISDIR(st.st_mode):
            yield from _iter_below(entry.path, relative + "/")


def manifest_of_directory(path):
    """The manifest of a host directory tree.

    Files of CHUNK bytes or more are hashed by HASH_THREADS threads while the walk goes on and hashes the
    small ones itself: handing each small file to a thread costs more in switching than its hash.
    """
    manifest, pending = {}, []
    with ThreadPoolExecutor(HASH_THREADS) as pool:
        for relative, full, st in iter_directory(path):
            if stat.S_ISREG(st.st_mode) and st.st_size >= CHUNK:
                manifest[relative] = None  # keeps the walk's order; filled in below
                pending.append((relative, full, st, pool.submit(hash_file, full)))
                continue
            entry = entry_from_stat(st, full)
            if entry is not None:
                manifest[relative] = entry
        for relative, full, st, digest in pending:
            manifest[relative] = entry_from_stat(st, full, digest.result())
    return manifest


def tar_member_name(name, strip_prefix=""):
    """The manifest path of a tar member name: ``./a/`` -> ``a``; ``<prefix>/a`` -> ``a``."""
    relative = posixpath.normpath(name.rstrip("/") or "/")
    if strip_prefix:
        prefix = posixpath.normpath(strip_prefix.strip("/"))
        if relative == prefix:
            return ROOT
        if not relative.startswith(prefix + "/"):
            raise Hal9000Error(f"Unexpected archive member {name!r} outside {prefix}/.")
        relative = relative[len(prefix) + 1:]
    return relative


def manifest_of_tar(fileobj, strip_prefix=""):
    """The manifest of a tar stream (read once, front to back; data is hashed, not kept)."""
    manifest = {}
    with tarfile.open(fileobj=fileobj, mode="r|") as archive:
        for member in archive:
            relative = tar_member_name(member.name, strip_prefix)
            if member.islnk():
                # A hard link carries no data: it is the entry it links to.
                linked = tar_member_name(member.linkname, strip_prefix)
                if linked not in manifest:
                    raise Hal9000Error(
                        f"Archive member {member.name!r} is a hard link to {member.linkname!r}, which is not earlier in the archive."
                    )
                manifest[relative] = dict(manifest[linked])
                continue
            sha256 = None
            if member.isreg():
                reader = HashingReader(archive.extractfile(member))
                while reader.read(CHUNK):
                    pass
                sha256 = reader.hexdigest()
            entry = entry_from_tarinfo(member, sha256)
            if entry is not None:
                manifest[relative] = entry
    return manifest


def _comparable(entry, ownership):
    if ownership:
        return entry
    return {key: value for key, value in entry.items() if key not in _OWNERSHIP}


def tree_digest(manifest, ownership=False):
    """One sha256 over the sorted entries; uid/gid count only when ``ownership`` is true."""
    digest = hashlib.sha256()
    for path in sorted(manifest):
        # JSON keeps odd names (newlines, undecodable bytes) unambiguous.
        line = json.dumps([path, _comparable(manifest[path], ownership)], sort_keys=True)
        digest.update(line.encode("ascii") + b"\n")
    return digest.hexdigest()


def summary(manifest):
    """Counts and the digest: files, dirs (below the top one), symlinks, bytes, digest."""
    counts = {"file": 0, "dir": 0, "symlink": 0}
    size = 0
    for path, entry in manifest.items():
        if entry["type"] in counts and path != ROOT:
            counts[entry["type"]] += 1
        size += entry["size"]
    return {
        "files": counts["file"],
        "dirs": counts["dir"],
        "symlinks": counts["symlink"],
        "bytes": size,
        "digest": tree_digest(manifest),
    }


def is_empty(manifest):
    """True when the tree holds nothing but its top directory."""
    return all(path == ROOT for path in manifest)


def _reason(a, b):
    if a["type"] != b["type"]:
        return f"{a['type']} vs {b['type']}"
    for key, label in (("sha256", "content"), ("size", "size"), ("target", "link target"), ("device", "device")):
        if a.get(key) != b.get(key):
            return label
    if a.get("mode") != b.get("mode"):
        return f"mode {a['mode']:04o} vs {b['mode']:04o}"
    return f"owner {a['uid']}:{a['gid']} vs {b['uid']}:{b['gid']}"


def differences(a, b, ownership=False, limit=10, names=("first", "second")):
    """Up to ``limit`` lines ``path: why`` where two manifests differ, then a count of the rest."""
    found = []
    for path in sorted(set(a) | set(b)):
        if path not in b:
            found.append(f"{path}: only in the {names[0]}")
        elif path not in a:
            found.append(f"{path}: only in the {names[1]}")
        elif _comparable(a[path], ownership) != _comparable(b[path], ownership):
            found.append(f"{path}: {_reason(a[path], b[path])}")
    if len(found) > limit:
        found[limit:] = [f"... and {len(found) - limit} more"]
    return found
