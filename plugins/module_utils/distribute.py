# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Images without a registry: copy images from a build host's engine to the other hosts' engines.

A host receives an image only when its image ID under that tag differs from the build host's (image IDs
survive `docker save` / `docker load`, so a host that is current receives nothing). The bytes go from the
build host's engine straight into each target engine (`docker save` streamed into `docker load`, no file
on any disk); one save stream is fanned out to every target that needs the same images, so the build host
reads and sends each image once however many hosts receive it, and one save of several images carries
their shared layers (the base image's) once.

Pure: standard library and the docker SDK only, never ``ansible.*``.
"""

from __future__ import annotations

import queue
import threading
import time

from ansible_collections.hal9000.dind.plugins.module_utils.docker_api import (
    HAS_DOCKER,
    DockerException,
    NotFound,
    RequestException,
    api_error_message,
)
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error

try:
    import docker
except ImportError:  # reported by the caller
    docker = None

CHUNK = 1 << 20
# Chunks a slow target may fall behind the fastest before the save stream waits for it (memory bound).
QUEUE_CHUNKS = 16
_END = object()


def connect_engine(docker_host, timeout):
    """A pinged client for ``docker_host``; ssh:// addresses go through the ssh command (keys, ssh config)."""
    if not HAS_DOCKER:
        raise Hal9000Error("The docker Python SDK is not installed: pip install docker.")
    try:
        client = docker.DockerClient(base_url=docker_host, timeout=timeout, version="auto",
                                     use_ssh_client=docker_host.startswith("ssh://"))
        client.ping()
    except (DockerException, RequestException, OSError) as exc:
        raise Hal9000Error(f"Cannot reach the Docker Engine at {docker_host} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}): "
                           "check the host runs and its docker_host address.") from None
    return client


def image_ids(client, names):
    """name -> image ID on this engine, None where the tag does not exist."""
    ids = {}
    for name in names:
        try:
            ids[name] = client.api.inspect_image(name)["Id"]
        except NotFound:
            ids[name] = None
    return ids


def plan(source_ids, target_ids):
    """The images a target needs: those whose ID differs from the source's (missing ones included)."""
    return [name for name, wanted in source_ids.items() if target_ids.get(name) != wanted]


def _save_stream(client, names):
    """`docker save NAME...` as a stream of raw chunks (one archive: shared layers once)."""
    # The SDK's get_image takes one name; /images/get takes several.
    response = client.api._get(client.api._url("/images/get"), params={"names": names}, stream=True)
    client.api._raise_for_status(response)
    return response.iter_content(CHUNK)


class _Target:
    def __init__(self, host, client):
        self.host = host
        self.client = client
        self.chunks = queue.Queue(QUEUE_CHUNKS)
        self.error = None
        self.sent = 0
        self.thread = None

    def body(self):
        while True:
            chunk = self.chunks.get()
            if chunk is _END:
                return
            if isinstance(chunk, BaseException):
                raise chunk
            self.sent += len(chunk)
            yield chunk

    def load(self):
        try:
            for message in self.client.api.load_image(self.body()):
                if "error" in message:
                    raise Hal9000Error(f"docker load failed: {message['error'].strip()}")
        except Hal9000Error as exc:
            self.error = str(exc)
        except (DockerException, RequestException, OSError) as exc:
            self.error = api_error_message(exc)
        finally:
            self.drain()

    def drain(self):
        """Free the producer when this target stops early."""
        while self.error:
            try:
                if self.chunks.get(timeout=0.2) is _END:
                    return
            except queue.Empty:
                continue

    def put(self, item):
        while self.thread.is_alive():
            try:
                self.chunks.put(item, timeout=0.2)
                return
            except queue.Full:
                continue


def fan_out(source, names, targets):
    """Stream one save of ``names`` from ``source`` into every target (_Target) at once; returns the bytes read."""
    for target in targets:
        target.thread = threading.Thread(target=target.load, name=f"load-{target.host}", daemon=True)
        target.thread.start()
    total = 0
    try:
        for chunk in _save_stream(source, names):
            total += len(chunk)
            live = [t for t in targets if not t.error]
            if not live:
                break
            for target in live:
                target.put(chunk)
    except (DockerException, RequestException, OSError) as exc:
        error = Hal9000Error(f"docker save on the build host failed: {api_error_message(exc)}")
        for target in targets:
            target.put(error)
    finally:
        for target in targets:
            target.put(_END)
        for target in targets:
            target.thread.join()
    return total


def distribute(source, targets, names, check_mode=False, pending=()):
    """Give every target the images ``names`` as ``source`` has them.

    ``pending`` names images the build host is about to (re)build: in check mode every target would receive
    them, as it would every image the build host does not have yet.

    ``targets`` is host -> a client, or a Hal9000Error when that host's engine could not be reached.
    Returns {"source": {name: id}, "hosts": {host: {...}}, "changed": bool}; a host that fails does not
    stop the others, it gets an ``error``.
    """
    source_ids = image_ids(source, names)
    missing = [name for name, image in source_ids.items() if image is None]
    if check_mode:
        unknown = set(missing) | set(pending)
        source_ids.update({name: "(to be built)" for name in unknown if name in source_ids})
        missing = []
    if missing:
        raise Hal9000Error(f"The build host has no image {', '.join(missing)}: build it there first (the hal9000.dind.images role).")
    hosts = {}
    groups = {}
    for host, client in targets.items():
        if isinstance(client, Exception):
            hosts[host] = {"error": str(client), "sent": [], "current": [], "before": {}, "bytes": 0, "seconds": None}
            continue
        try:
            before = image_ids(client, names)
        except (DockerException, RequestException, OSError) as exc:
            hosts[host] = {"error": api_error_message(exc), "sent": [], "current": [], "before": {}, "bytes": 0, "seconds": None}
            continue
        needed = plan(source_ids, before)
        hosts[host] = {"sent": needed, "current": [n for n in names if n not in needed], "before": before,
                       "bytes": 0, "seconds": None}
        if needed:
            groups.setdefault(tuple(needed), []).append(_Target(host, client))
    if not check_mode:
        for needed, group in groups.items():
            started = time.monotonic()
            fan_out(source, list(needed), group)
            seconds = round(time.monotonic() - started, 1)
            for target in group:
                hosts[target.host].update(bytes=target.sent, seconds=seconds)
                if not target.error:
                    after = image_ids(target.client, needed)
                    wrong = [name for name in needed if after[name] != source_ids[name]]
                    if wrong:
                        target.error = f"after docker load, {', '.join(wrong)} still differ from the build host's"
                if target.error:
                    hosts[target.host]["error"] = target.error
    return {
        "source": source_ids,
        "hosts": hosts,
        "changed": any(h["sent"] and not h.get("error") for h in hosts.values()),
    }


def describe(result, check_mode=False):
    """One line per host: what it received (or would), or that it is current, or what failed."""
    verb = "would receive" if check_mode else "received"
    lines = []
    for host, outcome in sorted(result["hosts"].items()):
        if outcome.get("error"):
            lines.append(f"{host}: FAILED: {outcome['error']}")
        elif outcome["sent"]:
            size = f" ({outcome['bytes'] / 1e6:.0f} MB in {outcome['seconds']} s)" if outcome["seconds"] is not None else ""
            lines.append(f"{host}: {verb} {', '.join(outcome['sent'])}{size}")
        else:
            lines.append(f"{host}: current")
    return lines
