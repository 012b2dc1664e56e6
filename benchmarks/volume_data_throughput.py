# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Migration throughput: volume_data's import and export against a plain `cp -a` in a container.

Generates a mixed tree (default 200 MB: two 50 MB files, ten 5 MB files and
small files), imports it with the library call the hal9000.dind.volume_data
module makes (verification included) into a new volume, and into a volume
created just before (as the migrate role does), copies the same tree into
another new volume with
``docker run --rm -v SRC:/s:ro -v VOL:/d debian:bookworm-slim cp -a /s/. /d/``,
and prints the times and the ratios to cp -a (goal: <= 1.5). The export (as
rollback makes it) is compared the same way: the volume into a new host
directory, against ``cp -a`` from the volume into a bind-mounted new directory.
Every run uses fresh volumes and directories and starts after a sync; the best of --runs is compared, and the
median ratio of the paired runs is printed too. Everything it creates is removed.
The import uses the module's helper image (hal9000/parent:latest when present,
whose python3 computes the volume's manifest in place) unless --helper-image
names another (debian:bookworm-slim has no python3: the volume is read back).
With --tmpfs every volume is a bind mount of a directory in /dev/shm, which
takes the disk's write speed out of both copies.

    .venv/bin/python benchmarks/volume_data_throughput.py [--mb 200] [--runs 3] [--helper-image IMAGE] [--tmpfs]

Exit status 0 when every goal is met, 1 when one is missed, 2 when it fails (scripts/bench.sh runs them all).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import _setup  # (links this checkout as ansible_collections.hal9000.dind, and Goals)
import docker

from ansible_collections.hal9000.dind.plugins.module_utils.volume_data import transfer
from ansible_collections.hal9000.dind.plugins.module_utils.volume_helpers import DEFAULT_HELPER_IMAGE, require_local_image

MB = 1000 * 1000
GOALS = _setup.Goals(__file__)


def make_tree(root, total_mb):
    """Two 50 MB files, ten 5 MB files, the rest as 20 kB files in 50 directories (scaled to total_mb)."""
    scale = total_mb / 200
    sizes = [50 * MB] * 2 + [5 * MB] * 10
    sizes = [max(1, int(size * scale)) for size in sizes]
    small = max(0, total_mb * MB - sum(sizes)) // (20 * 1000)
    for index, size in enumerate(sizes):
        with open(os.path.join(root, f"big-{index}.bin"), "wb") as handle:
            for offset in range(0, size, MB):
                handle.write(os.urandom(min(MB, size - offset)))
    for index in range(small):
        directory = os.path.join(root, f"dir-{index % 50:02d}")
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, f"small-{index}.dat"), "wb") as handle:
            handle.write(os.urandom(20 * 1000))
    return sum(sizes) + small * 20 * 1000, len(sizes) + small


def run_ours(client, source, volume, helper_image, existing=False):
    started = time.monotonic()
    if existing:  # created first, as the migrate role does (with the hal9000.dind.volume module)
        client.api.create_volume(name=volume)
    result = transfer(client, "import", volume, source, helper_image=helper_image)
    assert result["verified"] and result["source"]["digest"] == result["target"]["digest"], result
    return time.monotonic() - started


def run_export(client, volume, target, helper_image):
    started = time.monotonic()
    result = transfer(client, "export", volume, target, helper_image=helper_image)
    assert result["verified"] and result["source"]["digest"] == result["target"]["digest"], result
    return time.monotonic() - started


def run_cp(client, source, target, image, into_volume=True):
    """``cp -a`` in a container from ``source`` (a directory, or a volume) into a new volume (or directory)."""
    started = time.monotonic()
    if into_volume:
        client.api.create_volume(name=target)  # as transfer does (timed too), so --tmpfs applies to both
    else:
        os.mkdir(target)
    subprocess.run(
        ["docker", "run", "--rm", "-v", f"{source}:/s:ro", "-v", f"{target}:/d", image, "cp", "-a", "/s/.", "/d/"],
        check=True,
    )
    return time.monotonic() - started


def remove_volume(client, name):
    try:
        client.volumes.get(name).remove(force=True)
    except docker.errors.NotFound:
        pass
    shutil.rmtree(f"/dev/shm/{name}", ignore_errors=True)


def on_tmpfs(client):
    """Every volume the client creates from now on is a bind mount of a new /dev/shm directory."""
    create = client.api.create_volume

    def create_on_tmpfs(name=None, **kwargs):
        os.mkdir(f"/dev/shm/{name}")
        return create(name=name, driver_opts={"type": "none", "device": f"/dev/shm/{name}", "o": "bind"}, **kwargs)

    client.api.create_volume = create_on_tmpfs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="size of the generated tree in MB (default 200)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each copy; the best is kept (default 3)")
    parser.add_argument("--image", default=DEFAULT_HELPER_IMAGE, help="image for cp -a (default %(default)s)")
    parser.add_argument("--helper-image", help="helper image for the import (default: the module's choice)")
    parser.add_argument("--tmpfs", action="store_true", help="volumes on tmpfs: compare without the disk's write speed")
    args = parser.parse_args()

    client = docker.from_env()
    if args.tmpfs:
        on_tmpfs(client)
    helper = require_local_image(client, args.helper_image)
    tag = f"h9bench-{uuid.uuid4().hex[:8]}"
    source = tempfile.mkdtemp(prefix=f"{tag}-")
    exports = tempfile.mkdtemp(prefix=f"{tag}-out-", dir="/dev/shm" if args.tmpfs else None)
    exported = f"{tag}-exported"  # the volume the exports read
    copies = {
        "import, new volume": lambda v: run_ours(client, source, v, args.helper_image),
        "import, existing volume": lambda v: run_ours(client, source, v, args.helper_image, existing=True),
        "cp -a into a volume": lambda v: run_cp(client, source, v, args.image),
        "export": lambda d: run_export(client, exported, os.path.join(exports, d), args.helper_image),
        "cp -a out of a volume": lambda d: run_cp(client, exported, os.path.join(exports, d), args.image, into_volume=False),
    }
    times = {label: [] for label in copies}
    try:
        size, files = make_tree(source, args.mb)
        print(f"tree: {files} files, {size / MB:.0f} MB in {source}; helper image {helper}")
        transfer(client, "import", exported, source, helper_image=args.helper_image)
        for run in range(args.runs):
            # Rotate which copy goes first, so drifting load on the host hits all alike.
            order = list(copies)[run % len(copies):] + list(copies)[:run % len(copies)]
            for label in order:
                name = f"{tag}-{''.join(c for c in label if c.isalnum())}-{run}"
                os.sync()  # earlier runs' write-back would otherwise land in this run's time
                try:
                    times[label].append(copies[label](name))
                finally:
                    remove_volume(client, name)
                    shutil.rmtree(os.path.join(exports, name), ignore_errors=True)
                print(f"run {run + 1}: {label:23} {times[label][-1]:6.2f} s  {size / MB / times[label][-1]:7.1f} MB/s")
        for ours, baseline in (("import, new volume", "cp -a into a volume"), ("import, existing volume", "cp -a into a volume"),
                               ("export", "cp -a out of a volume")):
            best, best_cp = min(times[ours]), min(times[baseline])
            paired = sorted(a / b for a, b in zip(times[ours], times[baseline]))
            ratio = best / best_cp
            met = GOALS.at_most(f"{ours} / {baseline}", ratio, 1.5, "", digits=2)
            print(f"volume_data {ours + ':':24} {best:.2f} s, {size / MB / best:.1f} MB/s (best of {args.runs}, verified); "
                  f"{baseline}: {best_cp:.2f} s")
            print(f"  ratio to cp -a: {ratio:.2f}, median of paired runs {paired[len(paired) // 2]:.2f} "
                  f"(goal <= 1.5: {'met' if met else 'NOT met'})")
    finally:
        shutil.rmtree(source, ignore_errors=True)
        shutil.rmtree(exports, ignore_errors=True)
        for volume in client.volumes.list(filters={"name": tag}):
            remove_volume(client, volume.name)


if __name__ == "__main__":
    sys.exit(GOALS.run(main))
