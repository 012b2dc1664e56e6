"""sha256 tree manifests of host directories and tar streams (no Docker)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
import tracemalloc

import pytest

from ansible_collections.hal9000.dind.plugins.module_utils import manifest as manifest_module
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.manifest import (
    differences,
    hash_file,
    is_empty,
    manifest_of_directory,
    manifest_of_tar,
    summary,
    tar_member_name,
    tree_digest,
)
from ansible_collections.hal9000.dind.plugins.module_utils.volume_archive import _safe_members
from ansible_collections.hal9000.dind.plugins.module_utils.volume_helpers import _MANIFEST_PROGRAM, _manifest_source

BLOB = bytes(range(256)) * 40


def make_tree(root):
    """A small tree with every kind of entry the manifest records."""
    root.mkdir()
    (root / "données été").mkdir(mode=0o700)
    (root / "données été" / "blob with space.bin").write_bytes(BLOB)
    (root / "données été" / "blob with space.bin").chmod(0o600)
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    (root / "shared").mkdir()
    (root / "shared").chmod(0o2775)
    (root / "shared" / "group-writable").write_text("x")
    (root / "shared" / "group-writable").chmod(0o664)
    (root / "empty" / "deeper").mkdir(parents=True)
    (root / "link").symlink_to("run.sh")
    (root / "dangling").symlink_to("/nonexistent/target")
    (root / "dir-link").symlink_to("données été")
    os.link(root / "run.sh", root / "hard")
    os.mkfifo(root / "fifo")
    return root


def test_directory_manifest_records_every_kind(tmp_path):
    tree = make_tree(tmp_path / "tree")
    manifest = manifest_of_directory(str(tree))
    blob = manifest["données été/blob with space.bin"]
    assert blob == {
        "type": "file", "mode": 0o600, "size": len(BLOB), "sha256": hashlib.sha256(BLOB).hexdigest(),
        "uid": os.getuid(), "gid": os.getgid(),
    }
    assert manifest["données été"]["type"] == "dir" and manifest["données été"]["mode"] == 0o700
    assert manifest["shared"]["mode"] == 0o2775
    assert manifest["shared/group-writable"]["mode"] == 0o664
    assert manifest["empty/deeper"]["type"] == "dir"
    assert manifest["dangling"] == {"type": "symlink", "size": 0, "target": "/nonexistent/target", "uid": os.getuid(), "gid": os.getgid()}
    assert manifest["dir-link"]["target"] == "données été"
    assert "données été/blob with space.bin" not in [p for p in manifest if p.startswith("dir-link/")], "links are not followed"
    assert manifest["hard"] == manifest["run.sh"]
    assert manifest["fifo"]["type"] == "fifo"
    assert manifest["."]["type"] == "dir"


@pytest.mark.parametrize("threads", [1, 3])
def test_hashing_threads_change_nothing(tmp_path, monkeypatch, threads):
    tree = make_tree(tmp_path / "tree")
    for index in range(40):
        (tree / "empty" / f"f{index:02d}").write_bytes(BLOB * index)
    expected = manifest_of_directory(str(tree))
    monkeypatch.setattr(manifest_module, "HASH_THREADS", threads)
    found = manifest_of_directory(str(tree))
    assert found == expected and list(found) == list(expected), "same entries in the same order"


def test_the_helper_program_computes_the_same_manifest(tmp_path):
    """volume_data runs manifest.py's source with the helper's python3; here the host's stands in."""
    tree = make_tree(tmp_path / "tree")
    (tree / "undecodable-\udcff").write_bytes(b"odd name")
    name = str(tree).lstrip("/")  # the program reads /<name>
    out = subprocess.run(
        [sys.executable, "-I", "-X", "utf8", "-c", _MANIFEST_PROGRAM, _manifest_source(), name],
        check=True, capture_output=True,
    ).stdout
    body, digest = out.rstrip(b"\n").rsplit(b"\n", 1)
    assert hashlib.sha256(body).hexdigest().encode() == digest
    assert json.loads(body) == {name: manifest_of_directory(str(tree))}


def test_sockets_are_left_out(tmp_path):
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(tmp_path / "sock"))
        assert "sock" not in manifest_of_directory(str(tmp_path))
    finally:
        server.close()


class Unseekable(io.RawIOBase):
    """A pipe-like reader: proves manifest_of_tar reads front to back only."""

    def __init__(self, data):
        super().__init__()
        self._data = io.BytesIO(data)

    def readable(self):
        return True

    def readinto(self, buffer):
        chunk = self._data.read(min(len(buffer), 7000))
        buffer[:len(chunk)] = chunk
        return len(chunk)


def tar_of(tree, arcname):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        archive.add(str(tree), arcname=arcname)
    return buffer.getvalue()


@pytest.mark.parametrize("arcname", ["hal9000-volume", "."])
def test_tar_manifest_equals_directory_manifest(tmp_path, arcname):
    tree = make_tree(tmp_path / "tree")
    from_disk = manifest_of_directory(str(tree))
    data = tar_of(tree, arcname)
    strip = "hal9000-volume" if arcname != "." else ""
    from_tar = manifest_of_tar(io.BufferedReader(Unseekable(data)), strip_prefix=strip)
    assert from_tar == from_disk
    assert differences(from_disk, from_tar, ownership=True) == []
    assert tree_digest(from_tar, ownership=True) == tree_digest(from_disk, ownership=True)


def test_hard_link_may_come_before_its_data_name(tmp_path):
    """Docker names the first path it meets the file and later ones links, in its own order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        data = tarfile.TarInfo("v/b-first")
        data.size, data.mode = 3, 0o640
        archive.addfile(data, io.BytesIO(b"abc"))
        link = tarfile.TarInfo("v/a-second")
        link.type, link.linkname, link.mode = tarfile.LNKTYPE, "v/b-first", 0o640
        archive.addfile(link)
    buffer.seek(0)
    manifest = manifest_of_tar(buffer, strip_prefix="v")
    assert manifest["a-second"] == manifest["b-first"]
    assert manifest["a-second"]["sha256"] == hashlib.sha256(b"abc").hexdigest()


def test_hard_link_to_nothing_is_an_error():
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        link = tarfile.TarInfo("a")
        link.type, link.linkname = tarfile.LNKTYPE, "missing"
        archive.addfile(link)
    buffer.seek(0)
    with pytest.raises(Hal9000Error, match="hard link"):
        manifest_of_tar(buffer)


@pytest.mark.parametrize("name, prefix, expected", [
    ("./a/b/", "", "a/b"),
    (".", "", "."),
    ("./", "", "."),
    ("hal9000-volume", "hal9000-volume", "."),
    ("hal9000-volume/x y/é", "hal9000-volume", "x y/é"),
    ("hal9000-volume/a", "/hal9000-volume/", "a"),
])
def test_tar_member_names(name, prefix, expected):
    assert tar_member_name(name, prefix) == expected


@pytest.mark.parametrize("name", ["other/a", "hal9000-volume/../../etc/passwd", "/etc/passwd"])
def test_tar_member_outside_the_prefix_is_refused(name):
    with pytest.raises(Hal9000Error, match="outside"):
        tar_member_name(name, "hal9000-volume")


def test_digest_is_stable_and_sensitive(tmp_path):
    tree = make_tree(tmp_path / "tree")
    first = manifest_of_directory(str(tree))
    assert tree_digest(first) == tree_digest(dict(reversed(list(first.items()))))
    (tree / "run.sh").chmod(0o700)
    assert tree_digest(manifest_of_directory(str(tree))) != tree_digest(first)
    (tree / "run.sh").chmod(0o755)
    (tree / "shared" / "group-writable").write_text("y")
    changed = manifest_of_directory(str(tree))
    assert tree_digest(changed) != tree_digest(first)
    assert differences(first, changed) == ["shared/group-writable: content"]


def test_ownership_counts_only_when_asked(tmp_path):
    tree = make_tree(tmp_path / "tree")
    before = manifest_of_directory(str(tree))
    after = {path: dict(entry, uid=entry["uid"] + 1) for path, entry in before.items()}
    assert tree_digest(before) == tree_digest(after)
    assert differences(before, after) == []
    assert tree_digest(before, ownership=True) != tree_digest(after, ownership=True)
    assert differences(before, after, ownership=True)[0].endswith(f"owner {os.getuid()}:{os.getgid()} vs {os.getuid() + 1}:{os.getgid()}")


def test_differences_name_each_kind_and_stop_at_the_limit(tmp_path):
    a = {".": {"type": "dir", "mode": 0o755, "size": 0, "uid": 0, "gid": 0}}
    b = dict(a)
    a.update({
        "gone": {"type": "file", "mode": 0o644, "size": 1, "sha256": "x", "uid": 0, "gid": 0},
        "kind": {"type": "dir", "mode": 0o755, "size": 0, "uid": 0, "gid": 0},
        "mode": {"type": "dir", "mode": 0o700, "size": 0, "uid": 0, "gid": 0},
        "link": {"type": "symlink", "size": 0, "target": "a", "uid": 0, "gid": 0},
    })
    b.update({
        "kind": {"type": "file", "mode": 0o644, "size": 0, "sha256": "y", "uid": 0, "gid": 0},
        "mode": {"type": "dir", "mode": 0o755, "size": 0, "uid": 0, "gid": 0},
        "link": {"type": "symlink", "size": 0, "target": "b", "uid": 0, "gid": 0},
        "new": {"type": "fifo", "mode": 0o644, "size": 0, "uid": 0, "gid": 0},
    })
    assert differences(a, b, names=("source", "target")) == [
        "gone: only in the source", "kind: dir vs file", "link: link target", "mode: mode 0700 vs 0755", "new: only in the target",
    ]
    assert differences(a, b, limit=2) == ["gone: only in the first", "kind: dir vs file", "... and 3 more"]


def test_summary_counts_below_the_top(tmp_path):
    tree = make_tree(tmp_path / "tree")
    info = summary(manifest_of_directory(str(tree)))
    assert info["files"] == 4  # blob, run.sh, group-writable, hard (a hard link counts per path)
    assert info["dirs"] == 4  # données été, shared, empty, empty/deeper
    assert info["symlinks"] == 3
    assert info["bytes"] == len(BLOB) + 2 * len("#!/bin/sh\necho hi\n") + 1
    assert len(info["digest"]) == 64


def test_empty_means_only_the_top_directory(tmp_path):
    assert is_empty(manifest_of_directory(str(tmp_path)))
    (tmp_path / "empty-dir").mkdir()
    assert not is_empty(manifest_of_directory(str(tmp_path)))


def test_a_50_mb_file_is_streamed_not_read_whole(tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as handle:
        for _megabyte in range(50):
            handle.write(os.urandom(1 << 20))
    tracemalloc.start()
    try:
        digest = hash_file(str(big))
        manifest = manifest_of_directory(str(tmp_path))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    with open(big, "rb") as handle:
        assert digest == hashlib.file_digest(handle, "sha256").hexdigest()
    assert manifest["big.bin"]["sha256"] == digest
    assert peak < 8 << 20, f"peak {peak} bytes: the file was read whole"


def test_5000_small_files_quickly(tmp_path):
    for index in range(5000):
        folder = tmp_path / f"d{index % 20:02d}"
        folder.mkdir(exist_ok=True)
        (folder / f"f{index}.txt").write_bytes(b"%d" % index)
    started = time.monotonic()
    manifest = manifest_of_directory(str(tmp_path))
    seconds = time.monotonic() - started
    assert summary(manifest)["files"] == 5000
    assert seconds < 5, f"{seconds:.1f} s for 5,000 files"


# Safe extraction in volume_data: members that would leave the target are refused.


def crafted_tar(*members):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, kind, linkname in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, linkname
            archive.addfile(info)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("members, message", [
    ([("hal9000-volume/../escape", tarfile.REGTYPE, "")], "outside"),
    ([("/etc/passwd", tarfile.REGTYPE, "")], "outside"),
    ([("hal9000-volume/up", tarfile.SYMTYPE, "/"), ("hal9000-volume/up/etc/x", tarfile.REGTYPE, "")], "outside the target"),
    ([("hal9000-volume/hard", tarfile.LNKTYPE, "hal9000-volume/../../etc/shadow")], "outside"),
])
def test_unsafe_members_are_refused(tmp_path, members, message):
    target = tmp_path / "target"
    target.mkdir()
    with tarfile.open(fileobj=crafted_tar(*members), mode="r|") as archive:
        with pytest.raises(Hal9000Error, match=message):
            archive.extractall(target, members=_safe_members(archive, str(target), "hal9000-volume"))
    assert not (tmp_path / "escape").exists()


def test_safe_members_keep_absolute_symlinks_as_data(tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    tar = crafted_tar(("hal9000-volume", tarfile.DIRTYPE, ""), ("hal9000-volume/abs", tarfile.SYMTYPE, "/etc/passwd"))
    with tarfile.open(fileobj=tar, mode="r|") as archive:
        archive.extractall(target, members=_safe_members(archive, str(target), "hal9000-volume"))
    assert os.readlink(target / "abs") == "/etc/passwd"
