#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: volume_data
short_description: Copy data between a host directory and a named Docker volume, verified by checksums
version_added: 0.1.0
description:
  - Imports a host directory into a named volume, or exports a named volume into a host directory,
    for example to migrate the data of a v0.5.x installation into the C(hal9000-*) volumes, or to back a volume up.
  - A helper container is created from a local image with the volume mounted at C(/hal9000-volume) and always
    removed. The helper image is never pulled. A helper left behind by a run that was killed (its process on this
    host is gone) is removed by the next run on the same volume.
  - An import through the Docker Engine's local socket is copied by GNU C(cp) in the helper, from O(path) mounted
    read-only (the fastest way into a volume). An export run as root through the local socket is copied the same
    way into a new directory beside O(path), mounted read-write. The data is streamed through the Docker Engine
    archive API instead (which works with remote engines too) with O(verify=false), with a remote engine, for an
    export not run as root (the copy's owners could not be managed), and, with a warning, when the engine cannot
    mount the directory (an engine in a VM, say), the helper image has no C(sh) or GNU C(cp), or the copy does not
    match the source (it is cleared first). An export is renamed into place only once verified; the directory
    C(<path>.hal9000-partial-<pid>-<id>) an export left when it was killed (its process is gone) is removed by the
    next export to O(path).
  - Contents, permission bits (including setuid, setgid and sticky), symlinks (kept as symlinks, never followed,
    dangling ones too), hard links, empty directories, modification times and numeric owners are kept. The top
    directory's mode and owner are copied too, like C(cp -a src/. dest/). Sockets are left out of the manifests
    (the archive API cannot carry them). Extended attributes are not copied, nor are ACLs through the archive API.
  - Every copy is verified with a sha256 manifest of both sides (type, mode, size, content, link target and, where
    they can be kept, owners). When the target already holds exactly the source, nothing is done.
  - A volume's manifest is computed by the collection's own manifest code run with the helper image's C(python3),
    so only the manifest crosses the API. Without C(python3) in the helper image, or when that manifest differs
    from the expected one, the volume is read back through the archive API instead, which is slower.
  - Emptying a volume for O(mode=replace) also starts the helper briefly (it runs C(find)).
  - The volume name and the paths are checked before any call to the Docker Engine.
author:
  - HAL-9000 DinD maintainers (@hal9000-dind)
options:
  direction:
    description:
      - V(import) copies O(path) into O(volume). A missing volume is created (with the C(local) driver and no labels;
        create it first with M(hal9000.dind.volume) to set labels). Importing into a volume that a running container
        uses is refused.
      - V(export) copies O(volume) into O(path). The volume must exist. The parent directory of O(path) must exist;
        O(path) itself is created. The copy is written beside O(path), verified, and only then renamed into place.
    type: str
    required: true
    choices: [import, export]
  volume:
    description:
      - Name of the volume. Docker allows 2 to 128 characters from C(a-z A-Z 0-9 _ . -), starting with a letter or digit.
    type: str
    required: true
  path:
    description:
      - Absolute path of the host directory (the source for V(import), the target for V(export)), on the machine where
        the module runs, usually the Docker host.
    type: path
    required: true
  mode:
    description:
      - What to do when the target is not empty and differs from the source.
      - V(into_empty) refuses in one line, before anything is written.
      - V(replace) keeps the old content aside and then writes the source; old and new content are never merged.
        For V(import), the old content of the volume is first copied (and verified) to O(keep_aside) when given,
        otherwise to a new volume C(<volume>-replaced-YYYYmmdd-HHMMSS) labelled C(io.hal9000.replaced-from=<volume>);
        then the volume is emptied by starting the helper briefly (it runs C(find), so the helper image needs it).
        For V(export), the old directory is renamed to O(keep_aside) when given, otherwise to C(<path>.replaced-YYYYmmdd-HHMMSS).
    type: str
    choices: [into_empty, replace]
    default: into_empty
  keep_aside:
    description:
      - Absolute path of a new host directory for the old content with O(mode=replace). It must not exist yet and its
        parent must exist. For V(export) it must be on the same file system as O(path) (the old directory is renamed).
      - Only used when the target holds different content and O(mode=replace).
    type: path
  helper_image:
    description:
      - Local image for the helper container. It is never pulled; when it is missing the module fails and says so.
      - An image with C(python3) verifies faster (see the description).
      - When not set, C(hal9000/parent:latest) if it is on the Docker host (it has C(python3)), otherwise
        C(debian:bookworm-slim).
    type: str
  verify:
    description:
      - Compute the target's manifest after the copy and compare it with the source's; fail when they differ.
      - Copies of old content kept aside are always verified.
    type: bool
    default: true
extends_documentation_fragment:
  - hal9000.dind.docker
  - hal9000.dind.docker.attributes
attributes:
  check_mode:
    description:
      - Computes the source manifest and reports the plan (files, bytes, target state, what would be kept aside) without
        writing anything. Reading a volume's content needs a short-lived helper container with the volume mounted
        read-only; it is removed before the module returns.
    support: full
  diff_mode:
    description: Shows summaries (files, dirs, symlinks, bytes, digest) of the target before and after.
    support: full
  idempotent:
    description: When the target already matches the source, nothing is written and the task reports no change.
    support: full
notes:
  - Owners are kept on import (the Docker Engine writes them) and on export when the module runs as root; otherwise
    exported files belong to the user running the module and owners are not compared.
  - Stop the containers that write to a volume before exporting it; the module warns when a running container uses it.
"""

EXAMPLES = r"""
- name: Migrate the v0.5.x ChromaDB data into its volume
  hal9000.dind.volume_data:
    direction: import
    volume: hal9000-chromadb
    path: /root/.hal9000/chromadb

- name: Back a volume up into a host directory
  hal9000.dind.volume_data:
    direction: export
    volume: hal9000-memorybank
    path: /root/.hal9000/backups/memorybank

- name: Roll back, keeping the content being replaced in a directory
  hal9000.dind.volume_data:
    direction: import
    volume: hal9000-memorybank
    path: /root/.hal9000/backups/memorybank
    mode: replace
    keep_aside: /root/.hal9000/backups/memorybank-before-rollback

- name: Use another local image for the helper container (this one has no python3, so verifying reads the volume back)
  hal9000.dind.volume_data:
    direction: export
    volume: hal9000-plugins
    path: /srv/plugins-copy
    helper_image: debian:bookworm-slim
"""

RETURN = r"""
volume:
  description: The volume name.
  returned: always
  type: str
  sample: hal9000-chromadb
path:
  description: The normalised host directory.
  returned: always
  type: str
  sample: /root/.hal9000/chromadb
target_state:
  description:
    - The target before the run. V(missing) (no such volume or directory), V(empty) (only its top directory),
      V(matching) (already holds the source; nothing done) or V(different).
  returned: always
  type: str
  sample: empty
source:
  description: Summary of the source tree. RV(source.digest) is a sha256 over every entry except owners.
  returned: always
  type: dict
  contains:
    files:
      description: Regular files (hard links count once per path).
      type: int
    dirs:
      description: Directories below the top one.
      type: int
    symlinks:
      description: Symbolic links.
      type: int
    bytes:
      description: Total size of the regular files.
      type: int
    digest:
      description: sha256 tree digest.
      type: str
  sample:
    files: 5012
    dirs: 40
    symlinks: 3
    bytes: 209715200
    digest: 0f3c9a0d5b1f2e7c4a6d8b9e1f0a2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3
target:
  description:
    - Summary of the target after the run, with the same keys as RV(source); in check mode, what it would be.
    - Equal to RV(source) after a successful copy (the digests match).
  returned: always
  type: dict
  sample:
    files: 5012
    dirs: 40
    symlinks: 3
    bytes: 209715200
    digest: 0f3c9a0d5b1f2e7c4a6d8b9e1f0a2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3
target_before:
  description: Summary of the target before the run, or null when it did not exist.
  returned: always
  type: dict
  sample: null
verified:
  description:
    - True when the manifest of the target after the copy equals the source's (also when nothing needed doing).
    - False in check mode and with O(verify=false).
  returned: always
  type: bool
  sample: true
kept_aside:
  description:
    - Where the old content went with O(mode=replace) (a host directory or a volume name), or would go in check mode.
    - Null when nothing was kept aside.
  returned: always
  type: str
  sample: hal9000-chromadb-replaced-20250101-120000
actions:
  description: What was done, or would be done in check mode.
  returned: always
  type: list
  elements: str
  sample:
    - create volume hal9000-chromadb
    - import 5012 files, 209715200 bytes from /root/.hal9000/chromadb into volume hal9000-chromadb
differences:
  description: Up to ten paths where a non-empty target differed from the source before the run, with the reason.
  returned: always
  type: list
  elements: str
  sample:
    - "chroma.sqlite3: content"
seconds:
  description: Wall-clock seconds the module spent, including the verification.
  returned: always
  type: float
  sample: 2.41
throughput_mb_s:
  description: Source bytes divided by RV(seconds), in megabytes (10^6 bytes) per second.
  returned: always
  type: float
  sample: 87.0
"""

from ansible_collections.hal9000.dind.plugins.module_utils.ansible_docker import build_module, run_module
from ansible_collections.hal9000.dind.plugins.module_utils.volume_data import (
    DIRECTIONS,
    MODES,
    transfer,
    validate_request,
)


def copy_data(module, client):
    params = module.params
    result = transfer(
        client, params["direction"], params["volume"], params["path"], mode=params["mode"],
        keep_aside=params["keep_aside"], helper_image=params["helper_image"], verify=params["verify"],
        check_mode=module.check_mode,
    )
    for warning in result.pop("warnings"):
        module.warn(warning)
    if module._diff:
        result["diff"] = dict(before=result["target_before"] or {}, after=result["target"])
    return result


def main():
    module = build_module(
        dict(
            direction=dict(type="str", required=True, choices=list(DIRECTIONS)),
            volume=dict(type="str", required=True),
            path=dict(type="path", required=True),
            mode=dict(type="str", default="into_empty", choices=list(MODES)),
            keep_aside=dict(type="path"),
            helper_image=dict(type="str"),
            verify=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    run_module(module, copy_data, validate=lambda p: validate_request(
        p["direction"], p["volume"], p["path"], p["mode"], p["keep_aside"], p["helper_image"]))


if __name__ == "__main__":
    main()
