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

The steps live beside this file: volume_helpers.py (helper containers), volume_archive.py (tar streams
through the archive API), volume_manifest.py (a volume's manifest, in its helper or read back),
volume_bind_copy.py (``cp`` through bind mounts), volume_import.py and volume_export.py (the two
directions) and volume_result.py (what both report). This file checks a request and runs one direction.

Pure: standard library and the docker SDK only, never ``ansible.*``.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import time

from ansible_collections.hal9000.dind.plugins.module_utils.docker_api import APIError, DockerException, RequestException
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.staging import leftover_staging
from ansible_collections.hal9000.dind.plugins.module_utils.validate import validate_name
from ansible_collections.hal9000.dind.plugins.module_utils.volume_archive import STAGING_INFIX
from ansible_collections.hal9000.dind.plugins.module_utils.volume_export import export_volume
from ansible_collections.hal9000.dind.plugins.module_utils.volume_helpers import remove_stale_helpers, require_local_image
from ansible_collections.hal9000.dind.plugins.module_utils.volume_import import import_directory
from ansible_collections.hal9000.dind.plugins.module_utils.volume_result import _os_message

DIRECTIONS = ("import", "export")
MODES = ("into_empty", "replace")


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
    except APIError as exc:
        if "no space left on device" not in str(exc).lower():
            raise
        full = f"volume {volume}" if direction == "import" else path
        raise Hal9000Error(f"Copying between volume {volume} and {path} failed: no space left on device ({full} is full): "
                           "make room there and run this again.") from None
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
