# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Copies by ``cp`` in a helper container, between the volume and a host directory bind-mounted into it.

When the daemon runs on this host, an import is copied by ``cp`` from a read-only bind mount of the source
(the daemon's untar behind the archive API alone takes as long as that whole copy), and an export as root
into a bind-mounted staging directory. The daemon may still not see this host's directories (a daemon in a
VM, a forwarded socket, user namespaces): every copy is verified, and the caller sends the tree through the
archive API instead when the copy fails or does not match.

Pure: standard library and the docker SDK only, never ``ansible.*``.
"""

from __future__ import annotations

import shutil

from ansible_collections.hal9000.dind.plugins.module_utils.docker_api import APIError, api_error_message
from ansible_collections.hal9000.dind.plugins.module_utils.manifest import differences, manifest_of_directory
from ansible_collections.hal9000.dind.plugins.module_utils.volume_archive import _new_staging
from ansible_collections.hal9000.dind.plugins.module_utils.volume_helpers import (
    COPIED,
    COPIED_WITHOUT_MANIFEST,
    COPY_FAILED,
    CP_RAN,
    NOT_EMPTY,
    VOLUME_DIR,
    _first_error,
    clear_volume,
    helper_container,
)
from ansible_collections.hal9000.dind.plugins.module_utils.volume_manifest import _manifest_from_logs, archive_manifest


def daemon_shares_host_paths(client):
    """True when the daemon answers on a local socket, so it can probably bind-mount this host's directories.

    Only probably (a daemon in a VM, a socket forwarded from another machine): copy_from_bind_mount's copy is
    verified, and streamed through the archive API when it does not match.
    """
    return client.api.base_url == "http+docker://localhost"


class StagedCopy:
    """What copy_to_bind_mount did: ``staging`` and its manifest ``written`` (equal to ``expected``), else a
    ``problem`` (one line). ``expected`` is None when it was to be computed and cp could not start."""

    def __init__(self, expected):
        self.expected, self.staging, self.written, self.problem = expected, None, None, None


def copy_to_bind_mount(client, image, volume, final_path, expected):
    """``cp`` the volume in a helper into a staging directory beside ``final_path``, mounted read-write.

    ``expected`` is the volume's manifest, or a function computing it, called while cp runs. Returns a
    StagedCopy; when the copy does not equal ``expected`` the staging directory is gone.
    """
    copy = StagedCopy(None if callable(expected) else expected)
    staging = _new_staging(final_path)
    try:
        with helper_container(client, image, {volume: (VOLUME_DIR, True)}, volume, target_dir=staging) as container:
            client.api.start(container)
            if callable(expected):
                copy.expected = expected()
            if client.api.wait(container, timeout=None).get("StatusCode") != 0:
                copy.problem = f"cp in {image} failed: {_first_error(client, container)}"
        if copy.problem is None:
            written = manifest_of_directory(staging)
            problems = differences(copy.expected, written, ownership=True, limit=3, names=("volume", "directory"))
            copy.problem = f"the copy differs: {'; '.join(problems)}" if problems else None
    except APIError as exc:  # the daemon cannot mount the directory, or the image has no cp
        copy.problem = api_error_message(exc)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if copy.problem:
        shutil.rmtree(staging, ignore_errors=True)
    else:
        copy.staging, copy.written = staging, written
    return copy


class BindCopy:
    """What copy_from_bind_mount did: ``copied`` (verified), else a ``problem`` (one line), else found the volume
    not empty (``before`` is its manifest when the helper could compute it). ``wrote``: cp ran in the volume."""

    def __init__(self, source):
        self.source, self.before, self.copied, self.problem, self.wrote = source, None, False, None, False


def copy_from_bind_mount(client, image, volume, source_dir, source=None, if_empty=False):
    """``cp`` the host directory into the volume in a helper and verify the copy; returns a BindCopy.

    The source's manifest is made on the host while the helper copies, unless given. The caller knows the
    volume is empty, or sets ``if_empty``: the helper's python3 then computes the volume's manifest first and
    copies only into an empty volume (one helper instead of two).
    """
    outcome = BindCopy(source)
    try:
        with helper_container(client, image, {volume: (VOLUME_DIR, False)}, volume, source_dir=source_dir, if_empty=if_empty) as container:
            client.api.start(container)
            try:
                if outcome.source is None:
                    outcome.source = manifest_of_directory(source_dir)
            except BaseException:
                # An unreadable source file, say: once the helper is done, a volume that was empty is emptied again.
                wrote = client.api.wait(container, timeout=None).get("StatusCode") in CP_RAN
                if if_empty and wrote:
                    clear_volume(client, image, volume)
                raise
            status = client.api.wait(container, timeout=None).get("StatusCode")
            if if_empty and status in (COPIED, COPIED_WITHOUT_MANIFEST, NOT_EMPTY):
                outcome.before = _manifest_from_logs(client, container, VOLUME_DIR, run=0)
            outcome.wrote = status in CP_RAN or not if_empty
            if not outcome.wrote:
                return outcome  # not empty, or not known to be: nothing was written
            if status == COPY_FAILED:
                outcome.problem = f"cp in {image} failed: {_first_error(client, container)}"
                return outcome
            copied = _manifest_from_logs(client, container, VOLUME_DIR) if status == COPIED else None
            if copied is None:  # no python3 in the image: read the volume back
                copied = archive_manifest(client, container)
    except APIError as exc:  # the daemon cannot mount the source, or the image has no sh
        outcome.problem = api_error_message(exc)
        return outcome
    problems = differences(outcome.source, copied, ownership=True, limit=3, names=("source", "volume"))
    outcome.problem = f"the copy differs: {'; '.join(problems)}" if problems else None
    outcome.copied = not problems
    return outcome
