# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The bundled images: which Dockerfile makes which tag, and when a build is needed.

Pure: standard library and the docker SDK only, never ``ansible.*``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shlex
import time

from ansible_collections.hal9000.dind.plugins.module_utils.engine import ERRORS
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error

# flavour -> (Dockerfile inside the build context, default tag)
FLAVOURS = {
    "parent": ("images/Dockerfile.parent", "hal9000/parent:latest"),
    "minimal": ("images/Dockerfile.worker-minimal", "hal9000/worker:latest"),
    "ultramin": ("images/Dockerfile.worker-ultramin", "hal9000/worker:ultramin"),
    "mcp": ("images/Dockerfile.mcp", "hal9000/mcp:latest"),
}
DIGEST_LABEL = "io.hal9000.build-digest"
DEFAULT_BASE_IMAGE = "debian:bookworm-slim"


def dockerignore_patterns(context):
    path = os.path.join(context, ".dockerignore")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        lines = (line.strip() for line in handle)
        return [line for line in lines if line and not line.startswith("#")]


def context_files(context, dockerfile):
    """The files Docker sends for this context, by the SDK's own .dockerignore rules."""
    from docker.utils.build import exclude_paths  # pylint: disable=import-outside-toplevel  # not at import: claudy's warm claim

    included = exclude_paths(context, dockerignore_patterns(context), dockerfile=dockerfile)
    return sorted(p for p in included if os.path.isfile(os.path.join(context, p)))


def copied_sources(dockerfile_text):
    """Source paths of the COPY and ADD instructions that read the build context."""
    joined = re.sub(r"\\\n", " ", dockerfile_text)
    sources = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True) if line.strip() else []
        if not words or words[0].upper() not in ("COPY", "ADD"):
            continue
        flags = [w for w in words[1:] if w.startswith("--")]
        if any(flag.startswith("--from") for flag in flags):
            continue  # copies from another stage, not from the context
        paths = [w for w in words[1:] if not w.startswith("--")][:-1]
        sources += [os.path.normpath(p).lstrip("/") or "." for p in paths if "://" not in p]
    return sources


def input_files(context, dockerfile):
    """The context files this Dockerfile copies: other files in the context do not change the image."""
    with open(os.path.join(context, dockerfile), encoding="utf-8") as handle:
        sources = copied_sources(handle.read())
    selected = []
    for relative in context_files(context, dockerfile):
        for source in sources:
            if source == "." or relative == source or relative.startswith(source + "/") or fnmatch.fnmatch(relative, source):
                selected.append(relative)
                break
    return [dockerfile] + [f for f in selected if f != dockerfile]


def build_digest(context, dockerfile, build_args, base_image_id):
    """sha256 over everything that decides the image: the Dockerfile, the files it copies, args and the base."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"dockerfile": dockerfile, "args": build_args, "base": base_image_id}, sort_keys=True).encode())
    for relative in input_files(context, dockerfile):
        path = os.path.join(context, relative)
        digest.update(f"\0{relative}\0{os.stat(path).st_mode & 0o777:o}\0".encode())
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def resolve_dockerfile(context, flavour, dockerfile):
    """The Dockerfile path relative to the context, checked to exist."""
    relative = dockerfile or FLAVOURS[flavour][0]
    if not os.path.isdir(context):
        raise Hal9000Error(f"Build context {context} is not a directory: give the directory holding images/.")
    full = os.path.realpath(os.path.join(context, relative))
    if not full.startswith(os.path.realpath(context) + os.sep) or not os.path.isfile(full):
        raise Hal9000Error(f"Dockerfile {relative} not found inside the build context {context}.")
    return relative


def read_ca_certificates(directory):
    """The PEM text of every *.crt under ``directory`` (recursive, in path order), one per line; "" when there is none."""
    paths = []
    for root, _dirs, files in os.walk(directory):
        paths += [os.path.join(root, name) for name in files if name.endswith(".crt")]
    texts = []
    for path in sorted(paths):
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                texts.append(handle.read())
        except OSError as exc:
            raise Hal9000Error(f"Cannot read the CA certificate {path}: {exc.strerror}; fix its permissions or leave it out of extra_ca_dir.") from None
    return "\n".join(texts)


def inspect_image(client, name):
    try:
        return client.api.inspect_image(name)
    except ERRORS.NotFound:
        return None


def image_id(client, name):
    """The ID of the image a tag names now, or None when there is none."""
    inspected = inspect_image(client, name)
    return inspected["Id"] if inspected else None


def image_summary(inspected, build_seconds=None):
    labels = (inspected.get("Config") or {}).get("Labels") or {}
    return {
        "id": inspected["Id"],
        "tags": inspected.get("RepoTags") or [],
        "size": inspected.get("Size", 0),
        "digest": labels.get(DIGEST_LABEL, ""),
        "created": inspected.get("Created", ""),
        "build_seconds": build_seconds,
    }


def image_with_digest(client, digest, current=None):
    """An existing image built from exactly these inputs, if any; ``current`` (the tag's image) is tried first."""
    if current and ((current.get("Config") or {}).get("Labels") or {}).get(DIGEST_LABEL) == digest:
        return current  # the usual converged case: no image listing (it grows with every layer on the host)
    images = client.api.images(filters={"label": f"{DIGEST_LABEL}={digest}"})
    return inspect_image(client, images[0]["Id"]) if images else None


def containers_using_image(client, name):
    containers = client.api.containers(all=True, filters={"ancestor": name})
    return sorted(c["Names"][0].lstrip("/") for c in containers)


def build_image(client, context, dockerfile, tag, build_args, digest):
    """Build with the classic API builder; return (inspected image, seconds, log tail)."""
    started = time.monotonic()
    log = []
    stream = client.api.build(
        path=context, dockerfile=dockerfile, tag=tag, buildargs=build_args,
        labels={DIGEST_LABEL: digest}, rm=True, forcerm=True, pull=False, decode=True,
    )
    for chunk in stream:
        if "stream" in chunk:
            log.extend(line for line in chunk["stream"].splitlines() if line.strip())
            del log[:-40]
        if "error" in chunk:
            tail = " | ".join(log[-5:])
            raise Hal9000Error(f"Building {tag} failed: {chunk['error'].strip()} (last output: {tail})")
    return inspect_image(client, tag), round(time.monotonic() - started, 1), log[-10:]


def saved_image_id(tar_path):
    """The image ID inside a `docker save` archive, read from its manifest."""
    import tarfile  # pylint: disable=import-outside-toplevel  # here: claudy's warm claim imports this module

    try:
        with tarfile.open(tar_path) as archive:
            manifest = json.load(archive.extractfile("manifest.json"))
    except (OSError, KeyError, tarfile.TarError, ValueError):
        raise Hal9000Error(f"{tar_path} is not a `docker save` archive (no readable manifest.json).") from None
    config = manifest[0]["Config"]
    return "sha256:" + os.path.basename(config).replace(".json", "")


def image_registry(name):
    """The registry ``name`` is pulled from (the SDK's INDEX_NAME for Docker Hub), by the docker SDK's own rule."""
    from docker.auth import resolve_repository_name  # pylint: disable=import-outside-toplevel  # claudy's warm claim imports this module
    from docker.utils import parse_repository_tag  # pylint: disable=import-outside-toplevel

    return resolve_repository_name(parse_repository_tag(name)[0])[0]


def _parse_auth_text(text):
    """The mapping in an auth file: JSON, else YAML when PyYAML is there; None when it is neither."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        import yaml  # pylint: disable=import-outside-toplevel  # optional: JSON needs nothing
    except ImportError:
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def read_registry_auth(path, registry):
    """The docker SDK ``auth_config`` for ``registry`` from ``path``, a file only its owner may read or change.

    The file holds ``username``, ``password`` and optionally ``registry`` (JSON, or YAML when PyYAML is installed).
    No message raised here contains the file's text: parser errors quote lines, and a line may be the password.
    """
    what = f"Registry auth file {path} (for {registry})"
    try:
        mode = os.stat(path).st_mode
        if mode & 0o077:
            raise Hal9000Error(
                f"{what} has mode {mode & 0o777:04o}: other users could read or change the password; "
                f"run chmod 600 {path} and run again."
            )
        with open(path, encoding="utf-8") as handle:
            data = _parse_auth_text(handle.read())
    except FileNotFoundError:
        raise Hal9000Error(f"{what} does not exist: create it on the Docker host (username and password, chmod 600).") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise Hal9000Error(f"{what} cannot be read ({getattr(exc, 'strerror', None) or 'not UTF-8 text'}): fix it and run again.") from None
    if not isinstance(data, dict) or set(data) - {"username", "password", "registry"} or not all(
            isinstance(data.get(key), str) and data[key] for key in ("username", "password")):
        raise Hal9000Error(
            f"{what} must be a JSON or YAML mapping of username and password (strings: quote a numeric one), "
            "optionally registry, and nothing else."
        )
    if "registry" in data:
        from docker.auth import resolve_index_name  # pylint: disable=import-outside-toplevel

        named = resolve_index_name(str(data["registry"]).rsplit("://", maxsplit=1)[-1].rstrip("/"))
        if named != registry:
            raise Hal9000Error(f"{what} is for the registry {named}, not {registry}: give the file for {registry}.")
    return {"username": data["username"], "password": data["password"], "serveraddress": registry}


def pull_image(client, reference, auth_config=None, auth_file=None):
    """Pull ``reference``; the ID of what was pulled. Errors are one line that never holds the password.

    The credentials go with this one request (the X-Registry-Auth header), never through login: the SDK's
    login keeps them in the client for later requests and the docker CLI's writes them to ~/.docker/config.json.
    """
    from docker.utils import parse_repository_tag  # pylint: disable=import-outside-toplevel

    repository, tag = parse_repository_tag(reference)
    failure = None
    try:
        for chunk in client.api.pull(repository, tag=tag or "latest", auth_config=auth_config, stream=True, decode=True):
            failure = failure or chunk.get("error")
    except ERRORS.APIError as exc:
        failure = getattr(exc, "explanation", None) or str(exc)
    if failure:
        raise Hal9000Error(pull_failure_message(reference, failure, auth_config, auth_file))
    return image_id(client, reference)


def pull_failure_message(reference, failure, auth_config=None, auth_file=None):
    """One line saying why a pull failed and what to do; the password, should the engine echo it, is masked."""
    if isinstance(failure, bytes):
        failure = failure.decode("utf-8", "replace")
    detail = (str(failure).strip().splitlines() or ["no reason given"])[0]
    if auth_config:
        detail = detail.replace(auth_config["password"], "********")
    registry = image_registry(reference)
    if re.search(r"unauthorized|authentication required|no basic auth credentials", detail, re.I):
        if auth_config:
            return (
                f"Registry {registry} refused the credentials of {auth_config['username']} in {auth_file} for {reference} "
                f"({detail}): correct the username or password there and run again."
            )
        return (
            f"Registry {registry} wants credentials to pull {reference} ({detail}): give registry_auth_file, "
            "a file with username and password (chmod 600)."
        )
    return f"Cannot pull {reference}: {detail}. Build it (source=build) or load it (source=load)."
