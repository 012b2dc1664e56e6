# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An import: a host directory copied into a named volume, verified, the volume's old content kept aside first.

From a local daemon the tree is copied by ``cp`` in a helper from a bind mount of the source (see
volume_bind_copy.py), else sent through the archive API (see volume_archive.py). With ``mode=replace``
the volume's old content is copied to a new volume or host directory and verified before the volume is
emptied. A failed import removes the volume it created, or empties again the one that was empty.

Pure: standard library and the docker SDK only, never ``ansible.*``.
"""

from __future__ import annotations

import os
import tarfile

from ansible_collections.hal9000.dind.plugins.module_utils.docker_api import DockerException, RequestException, api_error_message
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.manifest import differences, is_empty, manifest_of_directory
from ansible_collections.hal9000.dind.plugins.module_utils.validate import first_free, validate_name
from ansible_collections.hal9000.dind.plugins.module_utils.volume_archive import _rebase, extract_staged, open_archive, put_tar, send_directory
from ansible_collections.hal9000.dind.plugins.module_utils.volume_bind_copy import copy_from_bind_mount, daemon_shares_host_paths
from ansible_collections.hal9000.dind.plugins.module_utils.volume_helpers import (
    ASIDE_DIR,
    VOLUME_DIR,
    _manifest_source,
    clear_volume,
    helper_container,
    running_users,
)
from ansible_collections.hal9000.dind.plugins.module_utils.volume_manifest import volume_manifest
from ansible_collections.hal9000.dind.plugins.module_utils.volume_result import _counts, _os_message, _result, _state, _timestamp
from ansible_collections.hal9000.dind.plugins.module_utils.volumes import inspect_volume

REPLACED_FROM_LABEL = "io.hal9000.replaced-from"


def _has_entries(directory):
    with os.scandir(directory) as scan:
        return next(scan, None) is not None


def _one_line(exc):
    if isinstance(exc, Hal9000Error):
        return str(exc)
    if isinstance(exc, (DockerException, RequestException)):
        return api_error_message(exc)
    return _os_message(exc)


def import_directory(client, volume, path, mode, keep_aside, image, verify, check_mode):
    source_dir = os.path.realpath(path)
    # Only a verified copy proves that the daemon mounted this host's directory: verify=false streams.
    bind = verify and daemon_shares_host_paths(client)
    before, source, warnings = None, None, []
    if inspect_volume(client, volume) is not None:
        users = running_users(client, volume)
        if users:
            raise Hal9000Error(
                f"Cannot import into volume {volume}: running container(s) {', '.join(users)} use it; stop them first. Nothing was written."
            )
        if bind and not check_mode and _manifest_source() is not None and _has_entries(source_dir):
            # One helper looks and, if the volume is empty, copies.
            attempt = copy_from_bind_mount(client, image, volume, source_dir, if_empty=True)
            source = attempt.source
            if attempt.copied:
                actions = [f"import {_counts(source)} from {path} into volume {volume}"]
                return _result(volume, path, "empty", source, attempt.before, source, actions, None, True, [], [])
            bind = _after_bind_copy_failed(client, image, volume, path, attempt, warnings)
            before = attempt.before
        if before is None:
            with helper_container(client, image, {volume: (VOLUME_DIR, True)}, volume) as container:
                before = volume_manifest(client, container)
    # Hash the source up front only when needed to compare; otherwise it is hashed while copied.
    if source is None and (check_mode or (before is not None and (not is_empty(before) or not _has_entries(source_dir)))):
        source = manifest_of_directory(source_dir)
    compared = source is not None and before is not None
    diffs = differences(source, before, ownership=True, names=("source", "target")) if compared else []
    state = _state(before, diffs, compared)
    if state == "matching":
        return _result(volume, path, state, source, before, before, [], None, True, [], warnings)
    if state == "different" and mode == "into_empty":
        raise Hal9000Error(
            f"Volume {volume} is not empty ({_counts(before)}) and differs from {path}: set mode=replace to keep its "
            "content aside and import, or pick an empty volume. Nothing was written."
        )

    actions, aside, where = [], None, None
    if state == "missing":
        actions.append(f"create volume {volume}")
    if state == "different":
        if keep_aside:
            aside, where = keep_aside, f"directory {keep_aside}"
        else:
            aside = first_free(f"{volume}-replaced-{_timestamp()}", lambda name: inspect_volume(client, name) is not None)
            try:
                validate_name(aside, "volume")
            except Hal9000Error:
                raise Hal9000Error(
                    f"Volume name {volume} is too long to keep its old content in {volume}-replaced-<time>: "
                    "give keep_aside (a new host directory). Nothing was written."
                ) from None
            where = f"volume {aside}"
        actions += [f"keep the old content of volume {volume} ({_counts(before)}) in {where}", f"empty volume {volume}"]
    if check_mode:
        actions.append(f"import {_counts(source)} from {path} into volume {volume}")
        return _result(volume, path, state, source, before, source, actions, aside, False, diffs, [])

    created = False
    try:
        if state == "missing":
            client.api.create_volume(name=volume)
            created = True
        if aside:
            _keep_volume_aside(client, image, volume, before, aside, bool(keep_aside))
            clear_volume(client, image, volume)
        sent, after = _copy_into_empty_volume(client, image, volume, path, source_dir, source, bind, verify, warnings)
    except BaseException as exc:
        _undo_import(client, image, volume, created, state == "empty")
        if aside and not isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise Hal9000Error(f"{_one_line(exc)} (the old content of volume {volume} is kept in {where})") from exc
        raise
    actions.append(f"import {_counts(sent)} from {path} into volume {volume}")
    return _result(volume, path, state, sent, before, after or sent, actions, aside, after is not None, diffs, warnings)


def _copy_into_empty_volume(client, image, volume, path, source_dir, source, bind, verify, warnings):
    """Copy from a bind mount when ``bind``, else (or when that fails) through the archive API.

    Returns the manifest of what was copied and the volume's manifest (None when not verified).
    """
    if bind:
        attempt = copy_from_bind_mount(client, image, volume, source_dir, source)
        if attempt.copied:
            return attempt.source, attempt.source
        _after_bind_copy_failed(client, image, volume, path, attempt, warnings)
    with helper_container(client, image, {volume: (VOLUME_DIR, False)}, volume) as container:
        sent = send_directory(client, container, source_dir)
        after = volume_manifest(client, container, expected=sent) if verify else None
    if after is not None:
        problems = differences(sent, after, ownership=True, limit=3, names=("source", "volume"))
        if problems:
            raise Hal9000Error(f"Verification of the import of {path} into volume {volume} failed: {'; '.join(problems)}.")
    return sent, after


def _after_bind_copy_failed(client, image, volume, path, attempt, warnings):
    """Warn about a failed bind-mount copy and empty the volume again if it wrote; True when worth trying again."""
    if attempt.problem:
        warnings.append(
            f"Copying {path} into volume {volume} from a bind mount did not work ({attempt.problem}): sent through the archive API instead."
        )
    if attempt.wrote:
        clear_volume(client, image, volume)  # it was empty: the copy starts only then
    return attempt.problem is None


def _undo_import(client, image, volume, created, was_empty):
    """Best effort after a failed import: remove the volume it created, or empty again the one that was empty."""
    try:
        if created:
            client.api.remove_volume(volume)
        elif was_empty:
            clear_volume(client, image, volume)
    except (DockerException, RequestException, Hal9000Error):
        pass


def _keep_volume_aside(client, image, volume, old, aside, to_directory):
    """Copy the volume's content to a new host directory or a new volume, verified, before it is emptied."""
    if to_directory:
        with helper_container(client, image, {volume: (VOLUME_DIR, True)}, volume) as container:
            staging, _written = extract_staged(client, container, aside, old, verify=True, ownership=os.geteuid() == 0)
        os.rename(staging, aside)
        return
    client.api.create_volume(name=aside, labels={"io.hal9000.managed": "true", REPLACED_FROM_LABEL: volume})
    # Two helpers: the daemon locks a container for the whole of one archive call.
    with helper_container(client, image, {volume: (VOLUME_DIR, True)}, volume) as reader_container:
        with helper_container(client, image, {aside: (ASIDE_DIR, False)}, aside) as writer_container:
            with open_archive(client, reader_container, VOLUME_DIR) as source:

                def produce(archive):
                    with tarfile.open(fileobj=source, mode="r|") as old_archive:
                        for member in old_archive:
                            _rebase(member, VOLUME_DIR, ASIDE_DIR)
                            archive.addfile(member, old_archive.extractfile(member) if member.isreg() else None)

                put_tar(client, writer_container, produce)
            copied = volume_manifest(client, writer_container, ASIDE_DIR, expected=old)
    problems = differences(old, copied, ownership=True, limit=3, names=("volume", "copy"))
    if problems:
        raise Hal9000Error(
            f"The copy of volume {volume} in volume {aside} failed verification: {'; '.join(problems)}. Volume {volume} was not changed."
        )
