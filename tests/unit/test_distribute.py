"""Image distribution: who needs what, and one save stream fanned out without a slow or failed target blocking it.

The engines here are stand-ins (the fan-out's threading is what is tested); the real engines are in
tests/integration/test_fleet.py.
"""

from __future__ import annotations

import io
import json
import tarfile
import threading

import pytest

from ansible_collections.hal9000.dind.plugins.module_utils import distribute as dist
from ansible_collections.hal9000.dind.plugins.module_utils.docker_api import APIError
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error


class Api:
    def __init__(self, images=None, fail_after=None, chunks=()):
        self.tags = dict(images or {})
        self.fail_after = fail_after
        self.received = b""
        self.chunks = list(chunks)

    def inspect_image(self, name):
        if name not in self.tags:
            raise dist.NotFound(name)
        return {"Id": self.tags[name]}

    def load_image(self, body):
        for count, chunk in enumerate(body, 1):
            self.received += chunk
            if self.fail_after and count >= self.fail_after:
                raise APIError("no space left on device")
        yield {"stream": "Loaded image"}

    def images(self):
        return [{"Id": image} for image in self.tags.values()]


class Client:
    def __init__(self, **kwargs):
        self.api = Api(**kwargs)


@pytest.fixture
def saved(monkeypatch):
    data = bytes(range(256)) * 4096 * 20  # 20 MiB: more chunks than a queue holds
    monkeypatch.setattr(dist, "_save_stream", lambda client, names: io.BytesIO(data))
    return data


def test_plan_sends_only_what_differs():
    assert dist.plan({"a": "1", "b": "2"}, {"a": "1", "b": "3"}) == ["b"]
    assert dist.plan({"a": "1"}, {"a": None}) == ["a"]
    assert dist.plan({"a": "1"}, {"a": "1"}) == []


def test_one_stream_reaches_every_target_and_a_failing_one_does_not_block_the_others(saved):
    good, bad = dist._Target("good", Client()), dist._Target("bad", Client(fail_after=3))
    total = dist.fan_out(Client(), ["img"], [good, bad])
    assert total == len(saved)
    assert good.client.api.received == saved and good.error is None and good.sent == len(saved)
    assert "no space left on device" in bad.error
    assert not [t for t in threading.enumerate() if t.name.startswith("load-")]


def test_distribute_reports_each_host_and_checks_ids_after_load(saved):
    source = Client(images={"base": "sha256:b", "parent": "sha256:p"})
    current = Client(images={"base": "sha256:b", "parent": "sha256:p"})
    stale = Client(images={"base": "sha256:b", "parent": "sha256:old"})  # its load does not change the ID
    result = dist.distribute(source, {"current": current, "stale": stale, "down": Hal9000Error("no engine")},
                             ["base", "parent"])
    assert result["hosts"]["current"]["sent"] == [] and current.api.received == b""
    assert result["hosts"]["stale"]["sent"] == ["parent"] and stale.api.received == saved
    assert "still differ" in result["hosts"]["stale"]["error"]
    assert result["hosts"]["down"]["error"] == "no engine"
    assert dist.describe(result) == [
        "current: current", "down: FAILED: no engine", "stale: FAILED: after docker load, parent still differ from the build host's"]


def test_check_mode_sends_nothing_and_counts_images_to_be_built(saved):
    source = Client(images={"base": "sha256:b"})
    target = Client(images={"base": "sha256:b"})
    result = dist.distribute(source, {"t": target}, ["base", "parent"], check_mode=True, pending=["base"])
    assert result["hosts"]["t"]["sent"] == ["base", "parent"] and target.api.received == b""
    assert dist.describe(result, check_mode=True) == ["t: would receive base, parent"]
    with pytest.raises(Hal9000Error, match="has no image parent"):
        dist.distribute(source, {"t": target}, ["base", "parent"])


# A real layer stack, read from an engine's layer store (layerdb/sha256/<chain>/diff and parent).
DIFFS = ["sha256:c1d9766fa6ecaa228ba4c030625e4a89f8c7aaf212ab15a0e3310dfc3ae6ff22",
         "sha256:7a518ba52cdd717242c1d32ef174f111b1ede7b23cb443601bef4f0bbd5afec2",
         "sha256:19a8152e227b0394cdeb99db4af3e352a8c319536b0b76185b48204f707d16ca"]
CHAINS = ["sha256:c1d9766fa6ecaa228ba4c030625e4a89f8c7aaf212ab15a0e3310dfc3ae6ff22",
          "sha256:2946a6eb115c2399dcf030feb6a5c50a853b353f30d7fcf7cc857f90093d56da",
          "sha256:105caf95905ae817dace9336ddc1a8f55fc487580c60e480e4e14c0614aa04de"]

# Two layer directories of a `docker save` by dockerd 20.10 (their names are the v1 IDs), over a layer stack that
# starts with DIFFS[0] and then PARENT_DIFF.
PARENT_DIFF = "sha256:6cacde0e8d456214708f7bed71516c5207e7452b4812078c1d0ee2ef9ea3f7c8"
CONFIG = ('"created":"1970-01-01T00:00:00Z","container_config":{"Hostname":"","Domainname":"","User":"",'
          '"AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"Tty":false,"OpenStdin":false,"StdinOnce":false,'
          '"Env":null,"Cmd":null,"Image":"","Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":null},'
          '"os":"linux"')
ROOT_DIR = "bc156ed1413247920ab3dc8ab7c884e6df6fc47e0546cb62b2fc806ae408b144"
CHILD_DIR = "65c5df03f87fa375f6097fca8122df0665fb21dd4415b00b5de51bdf8e1022af"
V1_JSON = {ROOT_DIR: f'{{"id":"{ROOT_DIR}",{CONFIG}}}',
           CHILD_DIR: f'{{"id":"{CHILD_DIR}","parent":"{ROOT_DIR}",{CONFIG}}}'}


def test_chain_ids_are_the_layer_stores_keys():
    assert dist.chain_ids(DIFFS) == CHAINS
    assert dist.chain_ids([]) == []


def test_an_engines_chains_come_from_every_image_and_inspects_already_made_are_not_repeated():
    class Stacks:
        def __init__(self, stacks):
            self.stacks, self.asked = stacks, []

        def images(self):
            return [{"Id": image} for image in self.stacks]

        def inspect_image(self, image):
            self.asked.append(image)
            return {"Id": image, "RootFS": {"Layers": self.stacks[image]}}

    client = Client()
    client.api = Stacks({"sha256:old": DIFFS, "sha256:base": DIFFS[:1], "sha256:other": [PARENT_DIFF]})
    chains = dist.engine_chains(client, [{"Id": "sha256:old", "RootFS": {"Layers": DIFFS}}])
    assert chains == set(CHAINS) | {PARENT_DIFF}
    assert sorted(client.api.asked) == ["sha256:base", "sha256:other"]


def test_a_legacy_layer_directory_is_matched_to_its_chain_by_its_v1_id():
    chains = dist.chain_ids([DIFFS[0], PARENT_DIFF])
    assert dist.legacy_layer_chain(ROOT_DIR, V1_JSON[ROOT_DIR].encode(), chains) == chains[0]
    assert dist.legacy_layer_chain(CHILD_DIR, V1_JSON[CHILD_DIR].encode(), chains[::-1]) == chains[1]
    # Not a candidate, a changed JSON or no JSON at all: unknown, so the layer is sent.
    assert dist.legacy_layer_chain(CHILD_DIR, V1_JSON[CHILD_DIR].encode(), chains[:1]) is None
    assert dist.legacy_layer_chain(CHILD_DIR, V1_JSON[CHILD_DIR].replace("\"Hostname\":\"\"", "\"Hostname\":\"x\"").encode(), chains) is None
    assert dist.legacy_layer_chain(CHILD_DIR, b"not json", chains) is None


def archive(entries):
    """A tar of (name, bytes) entries; None makes a directory."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def entries(data):
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {member.name: tar.extractfile(member).read() if member.isfile() else None for member in tar}


def legacy_save():
    layers = [(ROOT_DIR, b"R" * 3000), (CHILD_DIR, b"C" * 5000)]
    listed = []
    for directory, layer in layers:
        listed += [(directory, None), (f"{directory}/VERSION", b"1.0"), (f"{directory}/json", V1_JSON[directory].encode()),
                   (f"{directory}/layer.tar", layer)]
    manifest = [{"Config": "c.json", "Layers": [f"{d}/layer.tar" for d, _layer in layers]}]
    return archive(listed + [("c.json", b"{}"), ("manifest.json", json.dumps(manifest).encode())])


def test_each_target_is_sent_the_whole_archive_but_the_layers_it_holds(monkeypatch):
    save = legacy_save()
    monkeypatch.setattr(dist, "_save_stream", lambda client, names: io.BytesIO(save))
    layers = dist.SavedLayers([{"RootFS": {"Layers": [DIFFS[0], PARENT_DIFF]}}])
    chains = dist.chain_ids([DIFFS[0], PARENT_DIFF])
    fresh, has_base, has_all = (dist._Target(name, Client(), held) for name, held in
                                (("fresh", set()), ("base", {chains[0]}), ("all", set(chains))))
    assert dist.fan_out(Client(), ["img"], [fresh, has_base, has_all], layers) == len(save)
    whole = entries(save)
    assert entries(fresh.client.api.received) == whole and fresh.skipped == 0
    assert entries(has_base.client.api.received) == {k: v for k, v in whole.items() if k != f"{ROOT_DIR}/layer.tar"}
    assert has_base.skipped == 1
    assert entries(has_all.client.api.received) == {k: v for k, v in whole.items() if not k.endswith("layer.tar")}
    assert has_all.skipped == 2 and len(save) - has_all.sent >= 3000 + 5000


def test_an_oci_layout_blob_is_known_by_its_digest_and_kept_while_any_chain_with_those_bytes_is_missing():
    # The same bytes at two places of the stack (two chains): one blob serves both.
    layers = dist.SavedLayers([{"RootFS": {"Layers": [DIFFS[0], DIFFS[1], DIFFS[0]]}}])
    chains = dist.chain_ids([DIFFS[0], DIFFS[1], DIFFS[0]])
    blob = "blobs/sha256/" + DIFFS[0].split(":")[1]
    assert layers.serves(blob) == {chains[0], chains[2]}
    assert layers.serves("blobs/sha256/" + "0" * 64) == set() and layers.serves("index.json") == set()
    assert dist._Target("t", Client(), {chains[0]}).wants(layers.serves(blob))
    assert not dist._Target("t", Client(), {chains[0], chains[2]}).wants(layers.serves(blob))


def test_a_target_whose_filtered_load_fails_is_sent_everything_again(monkeypatch):
    save = legacy_save()
    monkeypatch.setattr(dist, "_save_stream", lambda client, names: io.BytesIO(save))
    chains = dist.chain_ids([DIFFS[0], PARENT_DIFF])

    class ForgetfulApi(Api):
        """Claims the base layer but no longer has it: a load without it fails, as dockerd's would."""

        def load_image(self, body):
            received = b"".join(body)
            if f"{ROOT_DIR}/layer.tar" not in entries(received):
                raise APIError(f"open /var/lib/docker/tmp/docker-import-1/{ROOT_DIR}/layer.tar: no such file or directory")
            self.received = received
            yield {"stream": "Loaded image: img"}

    target = Client()
    target.api = ForgetfulApi()
    group = [dist._Target("t", target, {chains[0]})]
    dist._bring_up_to_date(Client(), ["img"], group, dist.SavedLayers([{"RootFS": {"Layers": [DIFFS[0], PARENT_DIFF]}}]))
    assert group[0].error is None and group[0].skipped == 0
    assert entries(target.api.received) == entries(save)
