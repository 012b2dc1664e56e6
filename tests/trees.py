"""Fixture trees for the copy, backup and migration tests, and the byte-for-byte comparison of two trees.

One tree with every awkward kind of entry: random binary files, unicode, space-, tab- and dash-led names,
empty directories, setuid/setgid/read-only modes, links of every kind (to a file, to a directory,
dangling absolute and relative, a self-loop, a hard link) and, as root, foreign owners.
"""

from __future__ import annotations

import filecmp
import os
import random

from ansible_collections.hal9000.dind.plugins.module_utils.manifest import differences, manifest_of_directory

AS_ROOT = os.geteuid() == 0
OTHER_NAMES = ["with space.bin", "données été.bin", "日本語 ファイル.dat", "tab\there.bin"]


def write_random(path, size, rng):
    with open(path, "wb") as handle:
        while size > 0:
            chunk = min(size, 1 << 20)
            handle.write(rng.randbytes(chunk))
            size -= chunk


def make_tree(root, seed=7, small_files=0, big_bytes=0):
    """The tree under ``root`` (created); optionally ``small_files`` more files and one file of ``big_bytes``."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    for folder in ["", "dir with spaces", "dir with spaces/nested", "ünïcødé 日本語"]:
        (root / folder).mkdir(exist_ok=True)
        for name in ["plain.bin", "-leading-dash"] + rng.sample(OTHER_NAMES, 2):
            write_random(root / folder / name, rng.randrange(0, 300_000), rng)
    (root / "empty" / "deeper" / "deepest").mkdir(parents=True)
    (root / "zero-bytes").write_bytes(b"")
    (root / "private").mkdir(mode=0o700)
    write_random(root / "private" / "secret.key", 4096, rng)
    (root / "private" / "secret.key").chmod(0o600)
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_text("#!/bin/sh\nexit 0\n")
    (root / "bin" / "tool").chmod(0o755)
    (root / "bin" / "setuid").write_text("x")
    (root / "bin" / "setuid").chmod(0o4755)
    (root / "shared").mkdir()
    (root / "shared").chmod(0o2775)
    (root / "shared" / "group-writable").write_text("g")
    (root / "shared" / "group-writable").chmod(0o664)
    (root / "readonly").write_text("r")
    (root / "readonly").chmod(0o444)
    (root / "link-to-file").symlink_to("plain.bin")
    (root / "link-to-dir").symlink_to("dir with spaces")
    (root / "dangling-absolute").symlink_to("/nonexistent/target")
    (root / "dangling-relative").symlink_to("../outside/nothing")
    (root / "loop").symlink_to("loop")
    os.link(root / "bin" / "tool", root / "hard-link-to-tool")
    if AS_ROOT:
        os.chown(root / "private" / "secret.key", 1234, 5678)
        os.chown(root / "shared", 1000, 1000)
        os.lchown(root / "dangling-absolute", 4321, 4321)
    for index in range(small_files):
        folder = root / f"batch {index // 500:02d}"
        folder.mkdir(exist_ok=True)
        (folder / f"small-{index}.txt").write_bytes(rng.randbytes(rng.randrange(1, 2048)))
    if big_bytes:
        write_random(root / "zz big.bin", big_bytes, rng)
    root.chmod(0o750)
    return root


def assert_same_tree(a, b):
    """Manifests equal (contents, modes, link targets, owners as root) and every regular file byte for byte."""
    left, right = manifest_of_directory(str(a)), manifest_of_directory(str(b))
    assert differences(left, right, ownership=AS_ROOT, limit=5) == []
    if AS_ROOT:
        assert left == right
    files = [path for path, entry in left.items() if entry["type"] == "file"]
    match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert (mismatch, errors) == ([], []) and len(match) == len(files)
    for path, entry in left.items():
        if entry["type"] == "symlink":
            assert os.readlink(os.path.join(b, path)) == os.readlink(os.path.join(a, path))
