# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Trees through Docker's archive API, streamed both ways: tar streams are never held whole in memory.

An import sends a host tree into a helper's volume (send_directory, hashing each file as it is sent);
an export extracts the volume into a staging directory beside its target, refusing members that would
leave it, and verifies it there (extract_staged); the caller renames it into place.

Pure: standard library and the docker SDK only, never ``ansible.*``.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import posixpath
import shutil
import tarfile
import threading
from contextlib import contextmanager

from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.manifest import (
    CHUNK,
    ROOT,
    differences,
    entry_from_tarinfo,
    iter_directory,
    manifest_of_directory,
    tar_member_name,
)
from ansible_collections.hal9000.dind.plugins.module_utils.staging import staging_name
from ansible_collections.hal9000.dind.plugins.module_utils.volume_helpers import VOLUME_DIR

STAGING_INFIX = ".hal9000-partial-"  # an export's copy beside its directory, renamed into place once verified

# Members are checked by _safe_members; tarfile's own 'tar'/'data' filters would
# drop group/other write bits, and a copy must keep modes exactly.
_TRUSTED = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}


class _ChunkReader(io.RawIOBase):
    """A readable file over the SDK's iterator of archive chunks (tarfile's stream mode wants read())."""

    def __init__(self, chunks):
        super().__init__()
        self._chunks = iter(chunks)
        self._view = memoryview(b"")

    def readable(self):
        return True

    def readinto(self, buffer):
        while not self._view:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._view = memoryview(chunk)
        count = min(len(buffer), len(self._view))
        buffer[:count] = self._view[:count]
        self._view = self._view[count:]
        return count


@contextmanager
def open_archive(client, container, directory):
    """get_archive of /<directory> as a file; drained afterwards so the daemon releases the container."""
    chunks, _stat = client.api.get_archive(container, "/" + directory)
    reader = io.BufferedReader(_ChunkReader(chunks), buffer_size=CHUNK)
    yield reader
    while reader.read(CHUNK):
        pass


class _TarPipe:
    """A tar writer in a thread, handed to put_archive as an iterator of chunks.

    The SDK sends an iterator body chunk by chunk; the pipe keeps memory flat
    for trees of any size, and the writer's errors come back on close().
    """

    def __init__(self, produce):
        read_fd, write_fd = os.pipe()
        try:  # a bigger pipe means fewer thread switches; optional (Linux only)
            import fcntl  # pylint: disable=import-outside-toplevel

            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, CHUNK)
        except (ImportError, AttributeError, OSError):
            pass
        self._reader = os.fdopen(read_fd, "rb", buffering=0)
        self._error = None
        self._thread = threading.Thread(target=self._write, args=(produce, write_fd), daemon=True)
        self._thread.start()

    def _write(self, produce, write_fd):
        try:
            with os.fdopen(write_fd, "wb", buffering=CHUNK) as sink:
                with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as archive:
                    produce(archive)
        except BrokenPipeError:
            pass  # the reading side stopped; it reports why
        except BaseException as exc:  # pylint: disable=broad-exception-caught
            self._error = exc  # re-raised in the caller's thread by close()

    def chunks(self):
        while True:
            chunk = self._reader.read(CHUNK)
            if not chunk:
                return
            yield chunk

    def close(self):
        self._reader.close()
        self._thread.join()
        if self._error is not None:
            raise self._error


def put_tar(client, container, produce):
    """put_archive at / of the container, the tar written by ``produce(tarfile)``."""
    pipe = _TarPipe(produce)
    try:
        client.api.put_archive(container, "/", pipe.chunks())
    finally:
        pipe.close()  # the writer's error, if any, explains more than the daemon's


def send_directory(client, container, source_dir):
    """Stream a host tree into the volume; return the manifest of exactly what was sent.

    Files are hashed while they are sent, so the source is read once. The tar is made
    in the thread that sends it, straight from tarfile's headers and the files' chunks:
    no pipe and no tarfile stream to copy every byte through (a quarter less CPU, which
    the daemon's own untar needs on a small host).
    """
    sent, failed = {}, []
    archive = tarfile.open(fileobj=io.BytesIO(), mode="w", format=tarfile.PAX_FORMAT)  # for gettarinfo (and its hard links)

    def file_chunks(full, info):
        digest = hashlib.sha256()
        with open(full, "rb", buffering=0) as handle:
            left = info.size
            while left:
                data = handle.read(min(CHUNK, left))  # bytes: urllib3 1.26 takes nothing else
                if not data:
                    raise OSError(errno.EIO, "File shrank while it was sent", full)
                digest.update(data)
                left -= len(data)
                yield data
        if info.size % tarfile.BLOCKSIZE:
            yield tarfile.NUL * (tarfile.BLOCKSIZE - info.size % tarfile.BLOCKSIZE)
        return entry_from_tarinfo(info, digest.hexdigest())

    def chunks():
        offset = 0
        try:
            for relative, full, _st in iter_directory(source_dir):
                info = archive.gettarinfo(full, VOLUME_DIR if relative == ROOT else f"{VOLUME_DIR}/{relative}")
                if info is None:
                    continue  # a socket: tar cannot carry it
                header = info.tobuf(archive.format, archive.encoding, archive.errors)
                offset += len(header)
                yield header
                if info.islnk():
                    sent[relative] = dict(sent[tar_member_name(info.linkname, VOLUME_DIR)])
                elif info.isreg():
                    sent[relative] = yield from file_chunks(full, info)
                    offset += -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
                else:
                    sent[relative] = entry_from_tarinfo(info)
            # The end of the archive, padded to a whole record, as tarfile writes it.
            offset += 2 * tarfile.BLOCKSIZE
            yield tarfile.NUL * (2 * tarfile.BLOCKSIZE + -offset % tarfile.RECORDSIZE)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            failed.append(exc)  # the HTTP client would report it as a lost connection: raised below instead

    try:
        client.api.put_archive(container, "/", chunks())
    finally:
        if failed:
            raise failed[0]
    return sent


def _rebase(member, old, new):
    relative = tar_member_name(member.name, old)
    member.name = new if relative == ROOT else f"{new}/{relative}"
    if member.islnk():
        member.linkname = f"{new}/{tar_member_name(member.linkname, old)}"
    # Path headers read from the old archive would override the new names.
    member.pax_headers = {k: v for k, v in member.pax_headers.items() if k not in ("path", "linkpath")}


def _inside(top, relative, name, follow_last=True):
    """Refuse a member path that leaves ``top``, also through symlinks already extracted."""
    if posixpath.isabs(relative) or relative == ".." or relative.startswith("../"):
        raise Hal9000Error(f"Refusing archive member {name!r}: it points outside the target directory.")
    full = os.path.join(top, relative)
    checked = os.path.realpath(full if follow_last else os.path.dirname(full))
    if checked != top and not checked.startswith(top + os.sep):
        raise Hal9000Error(f"Refusing archive member {name!r}: it resolves to {checked}, outside the target directory.")


def _safe_members(archive, dest, strip_prefix):
    """Members renamed below ``dest`` and checked: no absolute paths, no '..', nothing through symlinks."""
    top = os.path.realpath(dest)
    for member in archive:
        relative = tar_member_name(member.name, strip_prefix)
        _inside(top, relative, member.name, follow_last=not member.issym())
        if member.islnk():
            member.linkname = tar_member_name(member.linkname, strip_prefix)
            _inside(top, member.linkname, member.name)
        member.name = relative
        yield member


def _new_staging(final_path):
    """A new private directory beside ``final_path``, renamed into place once its content is verified."""
    staging = staging_name(final_path, STAGING_INFIX)
    os.mkdir(staging, 0o700)
    return staging


def extract_staged(client, container, final_path, expected, verify=True, ownership=False):
    """Extract the volume beside ``final_path`` into a staging directory and verify it.

    Returns the staging path (the caller renames it into place) and the manifest
    written, or None when not verified. The staging directory is removed on failure.
    """
    staging = _new_staging(final_path)
    try:
        with open_archive(client, container, VOLUME_DIR) as reader:
            with tarfile.open(fileobj=reader, mode="r|") as archive:
                archive.extractall(staging, members=_safe_members(archive, staging, VOLUME_DIR), numeric_owner=True, **_TRUSTED)
        written = None
        if verify:
            written = manifest_of_directory(staging)
            problems = differences(expected, written, ownership=ownership, limit=3, names=("volume", "directory"))
            if problems:
                raise Hal9000Error(f"Verification of the copy in {final_path} failed: {'; '.join(problems)}. Nothing was written.")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging, written
