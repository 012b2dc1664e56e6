"""Image distribution: who needs what, and one save stream fanned out without a slow or failed target blocking it.

The engines here are stand-ins (the fan-out's threading is what is tested); the real engines are in
tests/integration/test_fleet.py.
"""

from __future__ import annotations

import threading

import pytest

from ansible_collections.hal9000.dind.plugins.module_utils import distribute as dist
from ansible_collections.hal9000.dind.plugins.module_utils.docker_api import APIError
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error


class Api:
    def __init__(self, images=None, fail_after=None, chunks=()):
        self.images = dict(images or {})
        self.fail_after = fail_after
        self.received = b""
        self.chunks = list(chunks)

    def inspect_image(self, name):
        if name not in self.images:
            raise dist.NotFound(name)
        return {"Id": self.images[name]}

    def load_image(self, body):
        for count, chunk in enumerate(body, 1):
            self.received += chunk
            if self.fail_after and count >= self.fail_after:
                raise APIError("no space left on device")
        yield {"stream": "Loaded image"}


class Client:
    def __init__(self, **kwargs):
        self.api = Api(**kwargs)


@pytest.fixture
def saved(monkeypatch):
    chunks = [bytes([i]) * 1000 for i in range(200)]  # more chunks than a queue holds
    monkeypatch.setattr(dist, "_save_stream", lambda client, names: iter(chunks))
    return b"".join(chunks)


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
