# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The manifest of a volume mounted in a helper container, to compare with a source or check a copy by.

Computed inside the helper, next to the data, by manifest.py's own code when the helper image has python3
(only the manifest crosses the API); otherwise, or when that manifest disagrees with what was expected,
the volume is read back through the archive API.

Pure: standard library and the docker SDK only, never ``ansible.*``.
"""

from __future__ import annotations

import hashlib
import json

from ansible_collections.hal9000.dind.plugins.module_utils.docker_api import DockerException, RequestException
from ansible_collections.hal9000.dind.plugins.module_utils.manifest import manifest_of_tar
from ansible_collections.hal9000.dind.plugins.module_utils.volume_archive import open_archive
from ansible_collections.hal9000.dind.plugins.module_utils.volume_helpers import VOLUME_DIR


def archive_manifest(client, container, directory=VOLUME_DIR):
    """The manifest of /<directory> of a helper container, read back through get_archive."""
    with open_archive(client, container, directory) as reader:
        return manifest_of_tar(reader, strip_prefix=directory)


def _manifest_in_helper(client, container, directory):
    """The manifest of /<directory> computed by the helper itself, or None when it cannot (no python3, say)."""
    try:
        client.api.start(container)
        if client.api.wait(container, timeout=None).get("StatusCode") != 0:
            return None
    except (DockerException, RequestException):
        return None
    return _manifest_from_logs(client, container, directory)


def _manifest_from_logs(client, container, directory, run=-1):
    """The manifest of /<directory> printed by a finished helper's ``run`` (-1: the last), or None when not there."""
    try:
        # Logs answer at once (a get_archive of a file would mount the container first). Each run printed two
        # lines: its JSON (one line) and the JSON's sha256.
        lines = client.api.logs(container, stdout=True, stderr=False).rstrip(b"\n").split(b"\n")
        out, digest = lines[2 * run: 2 * run + 2 or None]
        if hashlib.sha256(out).hexdigest().encode("ascii") != digest:
            return None
        manifest = json.loads(out)[directory]
    except (DockerException, RequestException, KeyError, TypeError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def volume_manifest(client, container, directory=VOLUME_DIR, expected=None):
    """The manifest of a volume mounted at /<directory> of a helper container.

    Computed in the helper when it can, so only the manifest crosses the API. Read back
    through get_archive when it cannot, or when it differs from ``expected``: a copy
    then fails verification only on what the archive API itself reads.
    """
    manifest = _manifest_in_helper(client, container, directory)
    if manifest is None or (expected is not None and manifest != expected):
        manifest = archive_manifest(client, container, directory)
    return manifest
