# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An export: a named volume copied into a host directory, verified in a staging directory beside it first.

As root, from a local daemon, a helper copies the volume by ``cp`` into a bind-mounted staging directory
(see volume_bind_copy.py); otherwise, or when that copy fails or does not match, the volume is extracted
there through the archive API (see volume_archive.py). Only the verified copy is renamed into place; with
``mode=replace`` the old directory is moved aside first, never deleted.

Pure: standard library and the docker SDK only, never ``ansible.*``.
"""

from __future__ import annotations

import errno
import os
import shutil

from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.manifest import differences, manifest_of_directory
from ansible_collections.hal9000.dind.plugins.module_utils.validate import first_free
from ansible_collections.hal9000.dind.plugins.module_utils.volume_archive import extract_staged
from ansible_collections.hal9000.dind.plugins.module_utils.volume_bind_copy import copy_to_bind_mount, daemon_shares_host_paths
from ansible_collections.hal9000.dind.plugins.module_utils.volume_helpers import VOLUME_DIR, helper_container, running_users
from ansible_collections.hal9000.dind.plugins.module_utils.volume_manifest import volume_manifest
from ansible_collections.hal9000.dind.plugins.module_utils.volume_result import _counts, _result, _state, _timestamp
from ansible_collections.hal9000.dind.plugins.module_utils.volumes import inspect_volume


def export_volume(client, volume, path, mode, keep_aside, image, verify, check_mode):
    if inspect_volume(client, volume) is None:
        raise Hal9000Error(f"Volume {volume} does not exist: nothing to export. Nothing was written.")
    warnings = []
    users = running_users(client, volume)
    if users:
        warnings.append(
            f"Volume {volume} is used by running container(s) {', '.join(users)}: the export copies content that may be changing."
        )
    ownership = os.geteuid() == 0  # only root can give files back their owners
    before = manifest_of_directory(path) if os.path.isdir(path) else None
    # As root only: the helper's cp writes the files with their owners, which only root may then manage.
    bind = verify and ownership and daemon_shares_host_paths(client)
    with helper_container(client, image, {volume: (VOLUME_DIR, True)}, volume) as container:
        copy = None
        if bind and before is None and not check_mode:
            # Into a new directory nothing is decided first: cp runs while the helper computes the volume's manifest.
            copy = copy_to_bind_mount(client, image, volume, path, lambda: volume_manifest(client, container))
        source = copy.expected if copy and copy.expected is not None else volume_manifest(client, container)
        compared = before is not None
        diffs = differences(source, before, ownership=ownership, names=("source", "target")) if compared else []
        state = _state(before, diffs, compared)
        if state == "matching":
            return _result(volume, path, state, source, before, before, [], None, True, [], warnings)
        if state == "different" and mode == "into_empty":
            raise Hal9000Error(
                f"Directory {path} is not empty ({_counts(before)}) and differs from volume {volume}: set mode=replace "
                "to move it aside and export, or pick an empty or new directory. Nothing was written."
            )
        actions, aside = [], None
        if state == "different":
            aside = keep_aside or first_free(f"{path}.replaced-{_timestamp()}", os.path.lexists)
            actions.append(f"move {path} ({_counts(before)}) aside to {aside}")
        actions.append(f"export {_counts(source)} from volume {volume} into {path}")
        if check_mode:
            return _result(volume, path, state, source, before, source, actions, aside, False, diffs, warnings)
        if bind and copy is None:
            copy = copy_to_bind_mount(client, image, volume, path, source)
        if copy and copy.problem:
            warnings.append(f"Copying volume {volume} into {path} through a bind mount did not work ({copy.problem}): "
                            "extracted through the archive API instead.")
        if copy and copy.staging:
            staging, written = copy.staging, copy.written
        else:
            staging, written = extract_staged(client, container, path, source, verify=verify, ownership=ownership)
    try:
        if aside:
            os.rename(path, aside)
        elif state == "empty":
            os.rmdir(path)
        os.rename(staging, path)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if exc.errno == errno.EXDEV:
            raise Hal9000Error(f"Cannot move {path} aside to {aside}: another file system; give keep_aside on the same one.") from None
        raise
    return _result(volume, path, state, source, before, written or source, actions, aside, written is not None, diffs, warnings)
