# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Copy a host directory into a named volume, or a volume into a host directory.

A helper container made from a local image (never pulled) mounts the volume at
/hal9000-volume. An import from a local daemon is copied by ``cp`` in the
helper from a read-only bind mount of the source (the daemon's untar behind the
archive API alone takes as long as that whole copy), and an export as root into
a bind-mounted staging directory; when the daemon cannot mount the directory (a
remote daemon, a daemon in a VM, user namespaces) or the copy does not match,
the tree goes through Docker's archive API instead. Tar streams are never held
whole in memory. Every copy, including the copy of old content kept aside, is
checked against a sha256 tree manifest (see manifest.py). A volume's manifest
is computed inside the helper, next to the data, by manifest.py's own code when
the helper image has python3 (only the manifest crosses the API); otherwise, or
when that manifest disagrees with what was sent, the volume is read back
through the archive API. Emptying a volume for ``mode=replace`` also takes a
helper (the archive API cannot delete).

Pure: standard library and the docker SDK only, never ``ansible.*``.
"""

from __future__ import annotations

import errno
import os
import shutil
import tarfile
import time

from ansible_collections.hal9000.dind.plugins.module_utils.docker_api import DockerException, RequestException, api_error_message
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.manifest import differences, is_empty, manifest_of_directory, summary
from ansible_collections.hal9000.dind.plugins.module_utils.staging import leftover_staging
from ansible_collections.hal9000.dind.plugins.module_utils.validate import first_free, validate_name
from ansible_collections.hal9000.dind.plugins.module_utils.volume_archive import (
    STAGING_INFIX,
    _rebase,
    extract_staged,
    open_archive,
    put_tar,
    send_directory,
)
from ansible_collections.hal9000.dind.plugins.module_utils.volume_bind_copy import (
    copy_from_bind_mount,
    copy_to_bind_mount,
    daemon_shares_host_paths,
)
from ansible_collections.hal9000.dind.plugins.module_utils.volume_helpers import (
    ASIDE_DIR,
    VOLUME_DIR,
    _manifest_source,
    clear_volume,
    helper_container,
    remove_stale_helpers,
    require_local_image,
    running_users,
)
from ansible_collections.hal9000.dind.plugins.module_utils.volume_manifest import volume_manifest
from ansible_collections.hal9000.dind.plugins.module_utils.volumes import inspect_volume

DIRECTIONS = ("import", "export")
MODES = ("into_empty", "replace")
REPLACED_FROM_LABEL = "io.hal9000.replaced-from"


def validate_request(direction, volume, path, mode="into_empty", keep_aside=None, helper_image=None):
    """Every check that needs no daemon; returns the normalised ``(path, keep_aside)``."""
    if direction not in DIRECTIONS:
        raise Hal9000Error(f"Invalid direction {direction!r}: use import or export.")
    if mode not in MODES:
        raise Hal9000Error(f"Invalid mode {mode!r}: use into_empty or replace.")
    validate_name(volume, "volume")
    if helper_image is not None and (not isinstance(helper_image, str) or not helper_image.strip()):
        raise Hal9000Error("helper_image is empty: give a local image such as debian:bookworm-slim.")
    path = _absolute(path, "path")
    if path == os.sep:
        raise Hal9000Error("path / is not allowed: give a directory below it.")
    if direction == "import":
        if not os.path.lexists(path):
            raise Hal9000Error(f"Source directory {path} does not exist. Nothing was written.")
        if not os.path.isdir(path):
            raise Hal9000Error(f"Source {path} is not a directory. Nothing was written.")
    else:
        if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
            raise Hal9000Error(f"Target {path} exists and is not a directory: give a directory path. Nothing was written.")
        _require_parent(path, "path")
    if keep_aside is not None:
        keep_aside = _absolute(keep_aside, "keep_aside")
        if keep_aside == path or keep_aside.startswith(path + os.sep) or path.startswith(keep_aside + os.sep):
            raise Hal9000Error(f"keep_aside {keep_aside} must lie outside path {path}, and path outside it.")
        if os.path.lexists(keep_aside):
            raise Hal9000Error(f"keep_aside {keep_aside} already exists: give a new path, so nothing is merged or overwritten.")
        _require_parent(keep_aside, "keep_aside")
        if direction == "export" and os.path.isdir(path) and os.stat(path).st_dev != os.stat(os.path.dirname(keep_aside)).st_dev:
            raise Hal9000Error(f"keep_aside {keep_aside} must be on the same file system as {path}: it is moved there, not copied.")
    return path, keep_aside


def _absolute(value, option):
    if not isinstance(value, str) or not os.path.isabs(value):
        raise Hal9000Error(f"{option} {value!r} is not an absolute path: give a path starting with /.")
    return os.path.normpath(value)


def _require_parent(path, option):
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise Hal9000Error(f"The parent directory {parent} of {option} does not exist: create it first.")


# --- the two directions ------------------------------------------------------------------------


def _timestamp():
    return time.strftime("%Y%m%d-%H%M%S")


def _has_entries(directory):
    with os.scandir(directory) as scan:
        return next(scan, None) is not None


def _counts(manifest):
    info = summary(manifest)
    return f"{info['files']} files, {info['bytes']} bytes"


def _state(before, diffs, compared):
    if before is None:
        return "missing"
    if compared and not diffs:
        return "matching"
    return "empty" if is_empty(before) else "different"


def _one_line(exc):
    if isinstance(exc, Hal9000Error):
        return str(exc)
    if isinstance(exc, (DockerException, RequestException)):
        return api_error_message(exc)
    return _os_message(exc)


def _os_message(exc):
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror or exc}: {exc.filename}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _result(volume, path, state, source, before, after, actions, kept, verified, diffs, warnings):
    return {
        "changed": bool(actions),
        "volume": volume,
        "path": path,
        "target_state": state,
        "source": summary(source),
        "target_before": summary(before) if before is not None else None,
        "target": summary(after),
        "verified": verified,
        "kept_aside": kept,
        "actions": actions,
        "differences": diffs,
        "warnings": warnings,
    }


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


def transfer(client, direction, volume, path, mode="into_empty", keep_aside=None,
             helper_image=None, verify=True, check_mode=False):
    """Import ``path`` into ``volume`` or export ``volume`` into ``path``; returns the result dict.

    Raises Hal9000Error (one line) for anything a user can cause.
    """
    started = time.monotonic()
    path, keep_aside = validate_request(direction, volume, path, mode, keep_aside, helper_image)
    helper_image = require_local_image(client, helper_image)
    stale = [] if check_mode else remove_stale_helpers(client, volume)
    # An export killed before its rename leaves its staging directory; it never holds the only copy.
    leftovers = leftover_staging(path, STAGING_INFIX) if direction == "export" else []
    run = import_directory if direction == "import" else export_volume
    try:
        if not check_mode:
            for leftover in leftovers:
                shutil.rmtree(leftover)
        result = run(client, volume, path, mode, keep_aside, helper_image, verify, check_mode)
    except (DockerException, RequestException, Hal9000Error):
        raise
    except (OSError, tarfile.TarError) as exc:
        raise Hal9000Error(f"Copying between volume {volume} and {path} failed: {_os_message(exc)}.") from None
    if leftovers:
        result["actions"][:0] = [f"remove {leftover}, left by an interrupted export" for leftover in leftovers]
        result["changed"] = True
    if stale:
        result["warnings"].append(f"Removed helper container(s) {', '.join(stale)} of volume {volume}, left by an interrupted run.")
    seconds = max(time.monotonic() - started, 1e-6)
    result["seconds"] = round(seconds, 3)
    result["throughput_mb_s"] = round(result["source"]["bytes"] / 1e6 / seconds, 1)
    return result
