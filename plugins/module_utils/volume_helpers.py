# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The helper containers behind volume_data: the image they are made from, what they mount, and the programs they run.

A helper is made from a local image (never pulled), mounts the volume at /hal9000-volume and is removed
once used. Started, it computes the manifests of its mounts with manifest.py's own code when the image has
python3 (see volume_manifest.py), or copies a bind-mounted host directory into the volume or the volume into
one with ``cp`` (see volume_bind_copy.py), or empties the volume (the archive API cannot delete). Helpers
carry labels naming their volume and the process that made them, so those a killed run left are found.

Pure: standard library and the docker SDK only, never ``ansible.*``.
"""

from __future__ import annotations

import functools
import uuid
from contextlib import contextmanager

from ansible_collections.hal9000.dind.plugins.module_utils import manifest as _manifest_module
from ansible_collections.hal9000.dind.plugins.module_utils.docker_api import NotFound
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.staging import owner_gone, owner_tag

DEFAULT_HELPER_IMAGE = "debian:bookworm-slim"
# Preferred when no helper_image is given and it is on the Docker host: its python3 computes manifests in place.
PREFERRED_HELPER_IMAGE = "hal9000/parent:latest"
VOLUME_DIR = "hal9000-volume"  # where helpers mount the volume (/hal9000-volume)
SOURCE_DIR = "hal9000-source"  # where an import's helper mounts the source directory, read-only
TARGET_DIR = "hal9000-target"  # where an export's helper mounts the staging directory
ASIDE_DIR = "hal9000-aside"
HELPER_LABELS = {"io.hal9000.managed": "true", "io.hal9000.type": "volume-data-helper"}
# "<host>:<pid>" of the process that created a helper, so a helper left by a killed run can be recognised.
HELPER_OWNER_LABEL = "io.hal9000.helper-owner"
# Helpers run as root for root's file powers and nothing else: give files their owners (CHOWN), set modes, times
# and set-id bits on files root does not own (FOWNER, FSETID), read and write every file whatever its mode
# (DAC_OVERRIDE). No network and no gaining privileges: they only copy and hash. (Not a read-only root file
# system: the engine then refuses the archive API's writes into the helper's volume mounts.)
HELPER_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID")
HELPER_HARDENING = {
    "cap_drop": ["ALL"],
    "cap_add": list(HELPER_CAPABILITIES),
    "security_opt": ["no-new-privileges"],
    "network_mode": "none",
}

# The helper's python3 runs manifest.py's own source (argv[1], its one import stubbed) on each directory named
# after it and prints the manifests as JSON, then the JSON's sha256 (a log driver that cut the output is caught).
# With --if-empty it exits 92 (NOT_EMPTY) when a directory holds anything.
# -I ignores the image's PYTHONPATH; -X utf8 decodes file names as the host does.
_MANIFEST_PROGRAM = """
import hashlib, json, sys, types
errors = types.ModuleType("errors")
errors.Hal9000Error = type("Hal9000Error", (Exception,), {})
sys.modules["ansible_collections.hal9000.dind.plugins.module_utils.errors"] = errors
manifest = types.ModuleType("manifest")
exec(compile(sys.argv[1], "manifest.py", "exec"), manifest.__dict__)
manifests = {name: manifest.manifest_of_directory("/" + name) for name in sys.argv[2:] if name != "--if-empty"}
out = json.dumps(manifests).encode("ascii")
sys.stdout.buffer.write(out + b"\\n" + hashlib.sha256(out).hexdigest().encode("ascii") + b"\\n")
if "--if-empty" in sys.argv and not all(map(manifest.is_empty, manifests.values())):
    sys.exit(92)
"""

# An import's helper: GNU cp from the bind-mounted source ("$0" is _MANIFEST_PROGRAM, "$1" manifest.py's source
# or "" without one, "$2" --if-empty to copy only into an empty volume), then the volume's manifest as above.
# The exit code says how far it got; only those in CP_RAN mean cp ran. cp keeps
# what a tar through the archive API keeps (cp -a without extended attributes), so both ways give the same copy.
COPIED, COPY_FAILED, COPIED_WITHOUT_MANIFEST, NOT_EMPTY, NOT_CHECKED = 0, 90, 91, 92, 93
CP_RAN = (COPIED, COPY_FAILED, COPIED_WITHOUT_MANIFEST)
CP_OPTIONS = ["-dR", "--preserve=mode,ownership,timestamps,links"]
_COPY_SCRIPT = f"""if [ "$2" = --if-empty ]; then
  python3 -I -X utf8 -c "$0" "$1" --if-empty {VOLUME_DIR} || exit $(( $? == {NOT_EMPTY} ? {NOT_EMPTY} : {NOT_CHECKED} ))
fi
cp {' '.join(CP_OPTIONS)} /{SOURCE_DIR}/. /{VOLUME_DIR}/ || exit {COPY_FAILED}
[ -n "$1" ] && command -v python3 >/dev/null || exit {COPIED_WITHOUT_MANIFEST}
python3 -I -X utf8 -c "$0" "$1" {VOLUME_DIR} || exit {COPIED_WITHOUT_MANIFEST}
"""


def require_local_image(client, image):
    """Fail in one line when the helper image is not on the Docker host; it is never pulled.

    Returns the image: ``image``, or with None the preferred one when present, else the default.
    """
    if image is None:
        try:
            client.api.inspect_image(PREFERRED_HELPER_IMAGE)
            return PREFERRED_HELPER_IMAGE
        except NotFound:
            image = DEFAULT_HELPER_IMAGE
    try:
        client.api.inspect_image(image)
    except NotFound:
        raise Hal9000Error(
            f"Helper image {image} is not on this Docker host and is never pulled: build or load it "
            "(ansible-playbook playbooks/base_image.yml, or docker load -i <file>), or set helper_image to a local image."
        ) from None
    return image


def remove_stale_helpers(client, volume):
    """Remove the helpers of ``volume`` left by a run that was killed (created on this host by a process now gone).

    A killed run leaves its helper (never started) holding the volume, which would
    block removing the volume later. Helpers of live processes are left alone.
    """
    removed = []
    filters = {"label": [f"io.hal9000.type={HELPER_LABELS['io.hal9000.type']}", f"io.hal9000.volume={volume}"]}
    for found in client.api.containers(all=True, filters=filters):
        if not owner_gone((found.get("Labels") or {}).get(HELPER_OWNER_LABEL, "")):
            continue
        try:
            client.api.remove_container(found["Id"], force=True)
        except NotFound:
            continue
        removed.append(found["Names"][0].lstrip("/"))
    return removed


def running_users(client, volume):
    containers = client.api.containers(filters={"volume": volume})
    return sorted(c["Names"][0].lstrip("/") for c in containers)


@functools.lru_cache(maxsize=None)
def _manifest_source():
    """manifest.py's source for the helper's python3, or None where the loader cannot give it (read once)."""
    try:
        return _manifest_module.__loader__.get_source(_manifest_module.__name__)
    except (AttributeError, ImportError, OSError):
        return None


@contextmanager
def helper_container(client, image, mounts, volume, source_dir=None, if_empty=False, target_dir=None, **extra):
    """A helper container with ``mounts`` ({volume: (dir, read_only)}), removed on the way out.

    Unless given a command, it computes the manifests of its mounts when started (see volume_manifest);
    with ``source_dir`` it first copies that host directory, mounted read-only, into the volume (only when
    the volume is empty with ``if_empty``; see copy_from_bind_mount); with ``target_dir`` it only copies the
    volume into that host directory (see copy_to_bind_mount).
    """
    binds = {name: {"bind": "/" + where, "mode": "ro" if read_only else "rw"} for name, (where, read_only) in mounts.items()}
    # The Mounts API, not a bind string: any path is safe in it (':' and ','), and a path the daemon
    # does not have fails instead of being created.
    host_mounts = [
        {"Type": "bind", "Source": host_path, "Target": "/" + where, "ReadOnly": read_only}
        for host_path, where, read_only in ((source_dir, SOURCE_DIR, True), (target_dir, TARGET_DIR, False))
        if host_path
    ]
    manifest_source = None if "command" in extra else _manifest_source()
    if target_dir:
        extra.update(
            entrypoint=["cp"],
            command=CP_OPTIONS + [f"/{VOLUME_DIR}/.", f"/{TARGET_DIR}/"],
            user="0:0",  # gives the files their owners, as an extraction by root does
        )
    elif source_dir:
        extra.update(
            entrypoint=["sh", "-c", _COPY_SCRIPT, _MANIFEST_PROGRAM],
            command=[manifest_source or ""] + (["--if-empty"] if if_empty else []),
            user="0:0",  # keeps owners, and reads every file, as the archive API does
        )
    elif manifest_source is not None:
        extra.update(
            entrypoint=["python3", "-I", "-X", "utf8", "-c", _MANIFEST_PROGRAM],
            command=[manifest_source] + [where for where, _read_only in mounts.values()],
            user="0:0",  # reads every file, whatever its mode, as get_archive does
        )
    container = client.api.create_container(
        image,
        command=extra.pop("command", ["true"]),
        name=f"hal9000-volume-data-{uuid.uuid4().hex[:12]}",
        labels=dict(HELPER_LABELS, **{"io.hal9000.volume": volume, HELPER_OWNER_LABEL: owner_tag()}),
        host_config=client.api.create_host_config(binds=binds, mounts=host_mounts or None, **HELPER_HARDENING),
        network_disabled=True,
        healthcheck={"test": ["NONE"]},  # an image's health check has nothing to check in a helper
        **extra,
    )["Id"]
    try:
        yield container
    finally:
        try:
            client.api.remove_container(container, force=True)
        except NotFound:
            pass


def _first_error(client, container):
    lines = client.api.logs(container).decode("utf-8", "replace").strip().splitlines()
    return lines[0] if lines else "no output"


def clear_volume(client, image, volume):
    """Empty a volume for mode=replace; the archive API cannot delete, so a helper runs find."""
    with helper_container(
        client, image, {volume: (VOLUME_DIR, False)}, volume,
        command=["/" + VOLUME_DIR, "-mindepth", "1", "-delete"], entrypoint=["find"], user="0:0",
    ) as container:
        client.api.start(container)
        status = client.api.wait(container).get("StatusCode")
        if status != 0:
            raise Hal9000Error(f"Emptying volume {volume} with find in {image} failed (exit {status}: {_first_error(client, container)}).")
