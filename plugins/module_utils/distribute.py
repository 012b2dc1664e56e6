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

A target is not sent the layers it already holds: `docker load` takes a layer from its own store when it
has that layer chain and never opens the archive's copy, so the save stream is filtered per target and a
changed image costs the hosts only its new layers. A load that still misses a layer is retried whole.

Pure: standard library and the docker SDK only, never ``ansible.*``.
"""

from __future__ import annotations

import hashlib
import io
import json
import queue
import re
import tarfile
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
try:  # only whether the SDK's ssh:// support can load
    import paramiko  # noqa: F401  pylint: disable=unused-import
    _HAS_SSH = True
except ImportError:
    _HAS_SSH = False

CHUNK = 1 << 20
# A layer's v1 JSON in a save is a few KiB; anything bigger is not one and is passed on unread.
V1_JSON_MAX = 1 << 20
OCI_BLOB = "blobs/sha256/"
# Chunks a slow target may fall behind the fastest before the save stream waits for it (memory bound).
QUEUE_CHUNKS = 16
_END = object()


def connect_engine(docker_host, timeout):
    """A pinged client for ``docker_host``; ssh:// addresses go through the ssh command (keys, ssh config)."""
    if not HAS_DOCKER:
        raise Hal9000Error("The docker Python SDK is not installed: pip install docker.")
    if docker_host.startswith("ssh://") and not _HAS_SSH:
        raise Hal9000Error(f"Cannot reach the Docker Engine at {docker_host}: ssh:// addresses need the paramiko package where this "
                           "module runs (the docker SDK imports it even to run the ssh command): pip install 'docker[ssh]'.")
    try:
        client = docker.DockerClient(base_url=docker_host, timeout=timeout, version="auto",
                                     use_ssh_client=docker_host.startswith("ssh://"))
        client.ping()
    except (DockerException, RequestException, OSError) as exc:
        raise Hal9000Error(f"Cannot reach the Docker Engine at {docker_host} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}): "
                           "check the host runs and its docker_host address.") from None
    return client


def inspect_images(client, names):
    """name -> the engine's inspect of that image, None where the tag does not exist."""
    found = {}
    for name in names:
        try:
            found[name] = client.api.inspect_image(name)
        except NotFound:
            found[name] = None
    return found


def ids_of(inspected):
    """name -> image ID from inspect_images' answer, None where the tag does not exist."""
    return {name: image["Id"] if image else None for name, image in inspected.items()}


def image_ids(client, names):
    """name -> image ID on this engine, None where the tag does not exist."""
    return ids_of(inspect_images(client, names))


def chain_ids(diff_ids):
    """The layer store's key of each prefix of a layer stack (the OCI image spec's ChainID)."""
    chains = []
    for diff in diff_ids:
        chains.append("sha256:" + hashlib.sha256(f"{chains[-1]} {diff}".encode()).hexdigest() if chains else diff)
    return chains


def engine_chains(client, inspected=()):
    """Every layer chain this engine holds, from its images' layer stacks; ``inspected`` are images already
    inspected there (not asked for again)."""
    known = {image["Id"]: image for image in inspected}
    chains = set()
    for listed in client.api.images():
        image = known.get(listed["Id"])
        if image is None:
            try:
                image = client.api.inspect_image(listed["Id"])
            except NotFound:  # removed meanwhile
                continue
        chains.update(chain_ids((image.get("RootFS") or {}).get("Layers") or []))
    return chains


_SPACE = re.compile(r"[ \t\n\r]*")


def _raw_members(text):
    """The top-level members of a JSON object with each value's exact text (key order and escapes untouched)."""
    decoder, members = json.JSONDecoder(), {}
    index = _SPACE.match(text, text.index("{") + 1).end()
    while text[index] != "}":
        key, index = decoder.raw_decode(text, index)
        index = _SPACE.match(text, _SPACE.match(text, index).end() + 1).end()  # past the colon
        _value, end = decoder.raw_decode(text, index)
        members[key] = text[index:end]
        index = _SPACE.match(text, end).end()
        if text[index] == ",":
            index = _SPACE.match(text, index + 1).end()
    return members


def legacy_layer_chain(directory, v1_json, chains):
    """The chain (one of ``chains``) that a layer directory of a Docker < 25 save holds, or None.

    Those directories are named by a v1 ID: the sha256 of the layer's v1 JSON without its id, with
    layer_id = the chain and parent = "sha256:" + the parent directory, keys sorted (moby's
    image/v1.CreateID; "os" is added after it for all but the top layer). No library computes it, so it
    is matched here against the candidates; a directory that matches none is sent whole.
    """
    try:
        members = _raw_members(v1_json.decode())
        parent = json.loads(members.pop("parent", "null"))
    except (ValueError, IndexError, UnicodeDecodeError):
        return None
    members.pop("id", None)
    if parent:
        members["parent"] = json.dumps(f"sha256:{parent}")
    variants = [members, {key: value for key, value in members.items() if key != "os"}]
    for chain in chains:
        for variant in variants:
            canonical = dict(variant, layer_id=json.dumps(chain))
            body = "{" + ",".join(f"{json.dumps(key)}:{canonical[key]}" for key in sorted(canonical)) + "}"
            if hashlib.sha256(body.encode()).hexdigest() == directory:
                return chain
    return None


class SavedLayers:
    """The layers of the images in one save and which archive entries carry them, learnt as the archive streams by.

    A layer entry is identified by its name in a Docker >= 25 (OCI layout) save, ``blobs/sha256/<diff ID>``,
    and by the v1 JSON that precedes it in its directory in an older one (see legacy_layer_chain).
    """

    def __init__(self, inspected):
        self.diff_of = {}  # chain -> diff ID
        self.chains_of_diff = {}  # diff ID -> every chain whose layer has those bytes
        for image in inspected:
            diffs = (image.get("RootFS") or {}).get("Layers") or []
            for diff, chain in zip(diffs, chain_ids(diffs)):
                self.diff_of[chain] = diff
                self.chains_of_diff.setdefault(diff, set()).add(chain)
        self.legacy = {}  # "<v1 ID>/layer.tar" -> its chain

    def learn(self, name, data):
        directory, _sep, base = name.partition("/")
        if base == "json":
            chain = legacy_layer_chain(directory, data, self.diff_of)
            if chain:
                self.legacy[f"{directory}/layer.tar"] = chain

    def serves(self, name):
        """The chains whose layer bytes the entry ``name`` holds; empty for an entry that holds no known layer.

        Every chain with the same bytes counts: a save writes them once (a link or one blob) for all of them.
        """
        if name.startswith(OCI_BLOB):
            return self.chains_of_diff.get("sha256:" + name[len(OCI_BLOB):], set())
        chain = self.legacy.get(name)
        return self.chains_of_diff[self.diff_of[chain]] if chain else set()


def plan(source_ids, target_ids):
    """The images a target needs: those whose ID differs from the source's (missing ones included)."""
    return [name for name, wanted in source_ids.items() if target_ids.get(name) != wanted]


def _save_stream(client, names):
    """`docker save NAME...` as a file-like stream (one archive: shared layers once)."""
    # The SDK's get_image takes one name; /images/get takes several.
    response = client.api._get(client.api._url("/images/get"), params={"names": names}, stream=True)
    client.api._raise_for_status(response)
    return response.raw


class _Target:
    """One target's load, fed from the save stream through a bounded queue."""

    def __init__(self, host, client, chains=None):
        self.host = host
        self.client = client
        self.chains = chains  # the layer chains it holds (its entries are not sent); None: send everything
        self.sent = 0
        self.skipped = 0
        self.error = None
        self.thread = None
        self.chunks = queue.Queue(QUEUE_CHUNKS)
        self.pending = bytearray()
        self.ended = False

    def body(self):
        while True:
            chunk = self.chunks.get()
            if chunk is _END:
                self.ended = True
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
        """Free the producer when this target stops early (a load can also fail once it has read everything)."""
        while self.error and not self.ended:
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

    def send(self, data):
        """Queue ``data`` in chunks of about CHUNK bytes (tar headers and small entries are gathered)."""
        self.pending += data
        if len(self.pending) >= CHUNK:
            self.flush()

    def flush(self):
        if self.pending:
            self.put(bytes(self.pending))
            self.pending.clear()

    def wants(self, serves):
        """Whether an entry holding the layers of chains ``serves`` must be sent here."""
        return not serves or self.chains is None or not serves <= self.chains

    def again_whole(self):
        """Ready to be sent everything (a load that missed a layer it was thought to hold)."""
        self.chains, self.skipped, self.error, self.ended = None, 0, None, False
        self.chunks, self.pending = queue.Queue(QUEUE_CHUNKS), bytearray()


class _Counted:
    """A stream that counts what is read from it (the bytes the build host sent)."""

    def __init__(self, stream):
        self.stream, self.count = stream, 0

    def read(self, size=-1):
        data = self.stream.read(size)
        self.count += len(data)
        return data


def _live(targets):
    return [target for target in targets if not target.error]


def _pass_through(stream, targets):
    while True:
        chunk = stream.read(CHUNK)
        live = _live(targets)
        if not chunk or not live:
            return
        for target in live:
            target.send(chunk)


def _filtered(stream, targets, layers):
    """Entry by entry: each target gets every entry of the archive but the layers it holds.

    tarfile re-makes each header; the entries' bytes, layer tars included, pass unchanged.
    """
    archive = tarfile.open(fileobj=stream, mode="r|")
    for member in archive:
        live = _live(targets)
        if not live:
            return
        data = archive.extractfile(member) if member.isfile() else None
        if data and member.name.endswith("/json") and member.size <= V1_JSON_MAX:
            body = data.read()
            layers.learn(member.name, body)
            data = io.BytesIO(body)
        serves = layers.serves(member.name)
        receivers = [target for target in live if target.wants(serves)]
        for target in live:
            target.skipped += target not in receivers
        if not receivers:
            continue  # tarfile reads past the skipped bytes
        header = member.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        for target in receivers:
            target.send(header)
        for chunk in iter(lambda: data.read(CHUNK), b"") if data else ():
            for target in receivers:
                target.send(chunk)
        padding = tarfile.NUL * (-member.size % tarfile.BLOCKSIZE) if data else b""
        for target in receivers:
            target.send(padding)
    for target in _live(targets):
        target.send(tarfile.NUL * (2 * tarfile.BLOCKSIZE))  # the end of the archive


def fan_out(source, names, targets, layers=None):
    """Stream one save of ``names`` from ``source`` into every target (_Target) at once; returns the bytes read.

    With ``layers`` (SavedLayers of ``names``), targets that hold some of those layers are not sent them.
    """
    for target in targets:
        target.thread = threading.Thread(target=target.load, name=f"load-{target.host}", daemon=True)
        target.thread.start()
    stream = None
    try:
        stream = _Counted(_save_stream(source, names))
        if layers and any(target.chains for target in targets):
            _filtered(stream, targets, layers)
        else:
            _pass_through(stream, targets)
        for target in _live(targets):
            target.flush()
    except (DockerException, RequestException, OSError, tarfile.TarError) as exc:
        error = Hal9000Error(f"docker save on the build host failed: {api_error_message(exc)}")
        for target in targets:
            target.put(error)
    finally:
        for target in targets:
            target.put(_END)
        for target in targets:
            target.thread.join()
    return stream.count if stream else 0


def _bring_up_to_date(source, needed, group, layers):
    """One fan-out to ``group``; a target whose filtered load failed is sent everything once more."""
    fan_out(source, needed, group, layers)
    again = [target for target in group if target.error and target.skipped]
    for target in again:
        target.again_whole()
    if again:
        fan_out(source, needed, again)


def distribute(source, targets, names, check_mode=False, pending=()):
    """Give every target the images ``names`` as ``source`` has them.

    ``pending`` names images the build host is about to (re)build: in check mode every target would receive
    them, as it would every image the build host does not have yet.

    ``targets`` is host -> a client, or a Hal9000Error when that host's engine could not be reached.
    Returns {"source": {name: id}, "hosts": {host: {...}}, "changed": bool}; a host that fails does not
    stop the others, it gets an ``error``.
    """
    source_images = inspect_images(source, names)
    source_ids = ids_of(source_images)
    missing = [name for name, image in source_ids.items() if image is None]
    if check_mode:
        unknown = set(missing) | set(pending)
        source_ids.update({name: "(to be built)" for name in unknown if name in source_ids})
        missing = []
    if missing:
        raise Hal9000Error(f"The build host has no image {', '.join(missing)}: build it there first (the hal9000.dind.images role).")
    hosts = {}
    groups = {}
    held_by_host = {}  # the inspects that compared IDs, kept for the layer scan below
    for host, client in targets.items():
        if isinstance(client, Exception):
            hosts[host] = {"error": str(client), "sent": [], "current": [], "before": {}, "bytes": 0, "seconds": None,
                           "skipped_layers": 0}
            continue
        try:
            held = inspect_images(client, names)
        except (DockerException, RequestException, OSError) as exc:
            hosts[host] = {"error": api_error_message(exc), "sent": [], "current": [], "before": {}, "bytes": 0,
                           "seconds": None, "skipped_layers": 0}
            continue
        before = ids_of(held)
        needed = plan(source_ids, before)
        hosts[host] = {"sent": needed, "current": [n for n in names if n not in needed], "before": before,
                       "bytes": 0, "seconds": None, "skipped_layers": 0}
        if needed:
            held_by_host[host] = [image for image in held.values() if image]
            groups.setdefault(tuple(needed), []).append(_Target(host, client))
    if not check_mode:
        for needed, group in groups.items():
            layers = SavedLayers([source_images[name] for name in needed])
            for target in group:
                try:
                    target.chains = engine_chains(target.client, held_by_host[target.host]) & set(layers.diff_of)
                except (DockerException, RequestException, OSError):
                    target.chains = None  # the load tells what is wrong with this engine
            started = time.monotonic()
            _bring_up_to_date(source, list(needed), group, layers)
            seconds = round(time.monotonic() - started, 1)
            for target in group:
                hosts[target.host].update(bytes=target.sent, seconds=seconds, skipped_layers=target.skipped)
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
            size = ""
            if outcome["seconds"] is not None:
                held = f", {outcome['skipped_layers']} layers it held not sent" if outcome.get("skipped_layers") else ""
                size = f" ({outcome['bytes'] / 1e6:.1f} MB in {outcome['seconds']} s{held})"
            lines.append(f"{host}: {verb} {', '.join(outcome['sent'])}{size}")
        else:
            lines.append(f"{host}: current")
    return lines
