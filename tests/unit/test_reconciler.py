"""The pool's Reconciler and claims, with a fake clock and a small in-memory Docker API.

Unit tests only: the integration tests (tests/integration/test_pool.py, test_settings.py) run the
same code against the real engine. Here the clock and the order of Docker calls can be checked.
"""

from __future__ import annotations

import itertools
import re

import pytest
from docker.errors import APIError, NotFound
from docker.types import HostConfig

from ansible_collections.hal9000.dind.plugins.module_utils.pool import Reconciler, claim, validate_pools
from ansible_collections.hal9000.dind.plugins.module_utils.settings import resolve as resolve_settings


def resolve(file_values=None):
    """The settings without the MCP relay: its credential is handed over by an exec into a real
    worker, which this fake API has not (tests/integration/test_relay.py covers it)."""
    return resolve_settings(file_values={"ENABLE_MCP_RELAY": "false", **(file_values or {})})


PARENT = "h9unit-parent"


class FakeAPI:
    """The few Engine API calls the pool makes, over a dict of containers."""

    def __init__(self):
        self.images = {"hal9000/worker:latest": "sha256:old"}
        self.parent = {"Id": "parent-1", "State": {"Running": True, "StartedAt": "t1"}, "Mounts": []}
        self.containers_by_id = {}
        self.calls = []
        self.reads = []  # inspects and listings, apart from the calls that change something
        self.ids = itertools.count(1)
        self.fail_creates = 0
        self.removed_volumes = []

    def inspect_container(self, name):
        self.reads.append(("inspect", name))
        if name in (PARENT, self.parent["Id"]):
            return self.parent
        if name not in self.containers_by_id:
            raise NotFound(f"No such container: {name}")
        summary = self.containers_by_id[name]  # an inspect's shape, from the listing's
        return {"Id": name, "Name": summary["Names"][0], "Config": {"Labels": summary["Labels"]}, "Image": summary["ImageID"],
                "HostConfig": summary["HostConfig"], "State": {"Running": True}, "Created": summary["Created"]}

    def inspect_image(self, reference):
        return {"Id": self.images[reference]}

    base_url = "http+docker://fake"

    def info(self):  # workers.layer_quota: overlay2 on ext4, no layer quota
        return {"Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "extfs"]]}

    def create_host_config(self, **kwargs):
        return HostConfig("1.41", **kwargs)

    def create_container(self, image, name, labels, host_config, healthcheck=None, **_kwargs):
        if self.fail_creates:
            self.fail_creates -= 1
            raise APIError("no room")
        container_id = f"c{next(self.ids)}"
        self.containers_by_id[container_id] = {
            "Id": container_id, "Names": [f"/{name}"], "Labels": dict(labels), "ImageID": self.images[image],
            "HostConfig": {"NetworkMode": host_config["NetworkMode"]}, "Created": len(self.containers_by_id),
            "Healthcheck": healthcheck,
        }
        self.calls.append(("create", name))
        return {"Id": container_id}

    def start(self, container_id):
        self.calls.append(("start", container_id))

    def remove_container(self, name_or_id, force=False, v=False):
        found = [c for c in self.containers_by_id.values() if name_or_id in (c["Id"], c["Names"][0][1:])]
        assert found, name_or_id
        del self.containers_by_id[found[0]["Id"]]
        self.calls.append(("remove", found[0]["Names"][0][1:]))

    def remove_volume(self, name):
        self.removed_volumes.append(name)  # kept apart from calls: the tests compare those

    def rename(self, container_id, new_name):
        self.containers_by_id[container_id]["Names"] = [f"/{new_name}"]
        self.calls.append(("rename", new_name))

    def containers(self, filters):
        self.reads.append(("list",))
        wanted = [label.split("=", 1) for label in filters["label"]]
        pattern = re.compile(filters["name"])
        return [c for c in self.containers_by_id.values()
                if all(c["Labels"].get(k) == v for k, v in wanted) and pattern.match(c["Names"][0])]

    # What update_limits posts to.
    def _url(self, path, *args):
        return path.format(*args)

    def _post_json(self, url, data):
        self.calls.append(("update", url, data["Memory"]))
        return url

    def _raise_for_status(self, _response):
        return None


class FakeClient:
    def __init__(self):
        self.api = FakeAPI()


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def client():
    return FakeClient()


@pytest.fixture
def reconciler(client, tmp_path):
    clock = Clock()
    made = Reconciler(client, PARENT, str(tmp_path), log=lambda message: None, clock=clock)
    made.clock_value = clock
    return made


def config(min_warm=2, max_warm=4, idle_timeout=60):
    return validate_pools({"enabled": True, "idle_timeout": idle_timeout,
                           "pools": [{"name": "generic", "min": min_warm, "max": max_warm}]}, resolve())


def warm_names(client):
    return sorted(c["Names"][0][1:] for c in client.api.containers_by_id.values())


def test_fills_each_pool_to_its_minimum_with_the_settings_limits(client, reconciler):
    settings = resolve(file_values={"WORKER_MEMORY": "6g"})
    assert reconciler.reconcile(config(min_warm=2), settings) == {"generic": 2}
    assert [call[0] for call in client.api.calls] == ["create", "start", "create", "start"]
    assert all('"memory": 6442450944' in c["Labels"]["io.hal9000.limits"] for c in client.api.containers_by_id.values())
    assert all(c["Healthcheck"] == {"test": ["NONE"]} for c in client.api.containers_by_id.values()), "no health check while idle"
    client.api.calls.clear()
    assert reconciler.reconcile(config(min_warm=2), settings) == {"generic": 2}
    assert client.api.calls == [], "a full pool is left alone"


def test_a_parent_restart_replaces_every_warm_worker(client, reconciler):
    reconciler.reconcile(config(), resolve())
    before = warm_names(client)
    client.api.parent["State"]["StartedAt"] = "t2"
    reconciler.reconcile(config(), resolve())
    assert set(warm_names(client)).isdisjoint(before) and len(warm_names(client)) == 2


def test_after_an_image_rebuild_the_new_workers_are_made_before_the_old_ones_go(client, reconciler):
    reconciler.reconcile(config(), resolve())
    old = warm_names(client)
    client.api.images["hal9000/worker:latest"] = "sha256:new"
    client.api.calls.clear()
    assert reconciler.reconcile(config(), resolve()) == {"generic": 2}
    kinds = [call[0] for call in client.api.calls]
    assert kinds == ["create", "start", "create", "start", "remove", "remove"], kinds
    assert {c["ImageID"] for c in client.api.containers_by_id.values()} == {"sha256:new"}
    assert set(warm_names(client)).isdisjoint(old)


def test_changed_settings_replace_the_warm_workers(client, reconciler):
    reconciler.reconcile(config(), resolve())
    old = warm_names(client)
    client.api.images["hal9000/worker:ultramin"] = "sha256:ultra"
    ultramin = validate_pools({"idle_timeout": 60, "pools": [{"name": "generic", "min": 2, "max": 4}]},
                              resolve(file_values={"WORKER_IMAGE": "hal9000/worker:ultramin"}))
    reconciler.reconcile(ultramin, resolve())
    assert set(warm_names(client)).isdisjoint(old)
    assert {c["ImageID"] for c in client.api.containers_by_id.values()} == {"sha256:ultra"}


def test_extra_warm_workers_go_only_after_the_idle_timeout(client, reconciler):
    reconciler.scale("generic", 4)
    assert reconciler.reconcile(config(min_warm=1, idle_timeout=60), resolve()) == {"generic": 4}
    reconciler.clock_value.now += 59
    assert reconciler.reconcile(config(min_warm=1, idle_timeout=60), resolve()) == {"generic": 4}
    reconciler.clock_value.now += 1
    assert reconciler.reconcile(config(min_warm=1, idle_timeout=60), resolve()) == {"generic": 1}


def test_a_claim_counts_as_activity(client, reconciler):
    reconciler.scale("generic", 3)
    reconciler.reconcile(config(min_warm=1, idle_timeout=60), resolve())
    reconciler.clock_value.now += 50
    reconciler.note_claim("generic")
    reconciler.clock_value.now += 50
    assert reconciler.reconcile(config(min_warm=1, idle_timeout=60), resolve()) == {"generic": 3}


def test_failed_creations_back_off(client, reconciler):
    client.api.fail_creates = 10
    assert reconciler.reconcile(config(min_warm=2), resolve()) == {"generic": 0}
    client.api.fail_creates = 0
    reconciler.clock_value.now += 1
    assert reconciler.reconcile(config(min_warm=2), resolve()) == {"generic": 0}, "still backing off (2 s)"
    reconciler.clock_value.now += 1
    assert reconciler.reconcile(config(min_warm=2), resolve()) == {"generic": 2}


def test_a_claim_never_takes_a_worker_on_an_older_image_and_applies_the_limits(client, reconciler, tmp_path):
    from ansible_collections.hal9000.dind.plugins.module_utils.pool import pool_spec

    reconciler.reconcile(config(), resolve())
    spec = pool_spec(config()["pools"][0], PARENT, resolve(file_values={"WORKER_MEMORY": "6g"}))
    client.api.images["hal9000/worker:latest"] = "sha256:new"
    assert claim(client, spec, "h9unit-claimed", str(tmp_path)) is None, "both warm workers are on the old image"
    client.api.images["hal9000/worker:latest"] = "sha256:old"
    claimed = claim(client, spec, "h9unit-claimed", str(tmp_path))
    assert client.api.containers_by_id[claimed]["Names"] == ["/h9unit-claimed"]
    assert ("update", f"/containers/{claimed}/update", 6 * 1024 ** 3) in client.api.calls, "the claim applied 6g"


def listings(client):
    return sum(1 for read in client.api.reads if read == ("list",))


def claimable_spec():
    from ansible_collections.hal9000.dind.plugins.module_utils.pool import pool_spec

    return pool_spec(config()["pools"][0], PARENT, resolve())


def test_a_claim_takes_the_oldest_indexed_worker_without_listing_the_containers(client, reconciler, tmp_path):
    reconciler.reconcile(config(min_warm=3, max_warm=3), resolve())
    oldest = min(client.api.containers_by_id.values(), key=lambda c: c["Created"])["Id"]
    client.api.reads.clear()
    claimed = claim(client, claimable_spec(), "h9unit-claimed", str(tmp_path))
    assert claimed == oldest and listings(client) == 0, client.api.reads
    assert ("inspect", oldest) in client.api.reads
    indexed = [p.name for p in (tmp_path / "run" / "warm").glob("*/*")]
    assert len(indexed) == 2 and not [name for name in indexed if name.endswith(oldest)], "the claim dropped its entry"


def test_entries_of_workers_gone_or_claimed_elsewhere_are_skipped_and_dropped(client, reconciler, tmp_path):
    reconciler.reconcile(config(min_warm=3, max_warm=3), resolve())
    first, second, third = sorted(client.api.containers_by_id, key=lambda i: client.api.containers_by_id[i]["Created"])
    del client.api.containers_by_id[first]  # removed by hand
    client.api.containers_by_id[second]["Names"] = ["/someone-else"]  # claimed by a claimer that left its entry
    client.api.reads.clear()
    assert claim(client, claimable_spec(), "h9unit-claimed", str(tmp_path)) == third
    assert listings(client) == 0
    assert list((tmp_path / "run" / "warm").glob("*/*")) == []


def test_without_an_index_a_claim_lists_and_the_next_pass_indexes_again(client, reconciler, tmp_path):
    import shutil

    reconciler.reconcile(config(min_warm=2, max_warm=2), resolve())
    shutil.rmtree(tmp_path / "run" / "warm")  # workers made by a version without the index
    client.api.reads.clear()
    assert claim(client, claimable_spec(), "h9unit-claimed", str(tmp_path)) is not None
    assert listings(client) == 1
    reconciler.reconcile(config(min_warm=2, max_warm=2), resolve())  # indexes the one left and the one it adds
    assert len(list((tmp_path / "run" / "warm").glob("*/*"))) == 2
    client.api.reads.clear()
    assert claim(client, claimable_spec(), "h9unit-claimed-2", str(tmp_path)) is not None
    assert listings(client) == 0


def indexed_ids(home, digest):
    from ansible_collections.hal9000.dind.plugins.module_utils import warm_index

    return [container_id for _entry, container_id in warm_index.indexed(home, digest)]


def test_sync_keeps_entries_newer_than_the_listing_and_drops_older_ones_of_gone_workers(tmp_path):
    import os

    from ansible_collections.hal9000.dind.plugins.module_utils import warm_index

    home = str(tmp_path)
    warm_index.add(home, "d1", "gone")
    warm_index.add(home, "d1", "kept")
    os.utime(next((tmp_path / "run" / "warm" / "d1").glob("*-gone")), (1, 1))
    warm_index.sync(home, [{"digest": "d1", "id": "kept"}, {"digest": "d2", "id": "unindexed"}], listed_at=100)
    assert indexed_ids(home, "d1") == ["kept"] and indexed_ids(home, "d2") == ["unindexed"]
    warm_index.add(home, "d1", "started-since")  # after the listing: a sync with an older listing keeps it
    os.utime(next((tmp_path / "run" / "warm" / "d2").glob("*-unindexed")), (1, 1))
    warm_index.sync(home, [{"digest": "d1", "id": "kept"}], listed_at=100)
    assert indexed_ids(home, "d1") == ["kept", "started-since"]
    assert indexed_ids(home, "d2") == [] and not (tmp_path / "run" / "warm" / "d2").exists()


def test_forget_drops_the_named_entry_alone(tmp_path):
    from ansible_collections.hal9000.dind.plugins.module_utils import warm_index

    home = str(tmp_path)
    warm_index.add(home, "d1", "first")
    warm_index.add(home, "d1", "second")
    (entry, container_id), _second = warm_index.indexed(home, "d1")
    assert container_id == "first"
    warm_index.forget(home, "d1", "second", entry)  # an entry that is not that worker's: nothing goes
    assert indexed_ids(home, "d1") == ["first", "second"]
    warm_index.forget(home, "d1", "first", entry)
    assert indexed_ids(home, "d1") == ["second"]
    warm_index.forget(home, "d1", "second")  # without the entry name: found by listing
    assert indexed_ids(home, "d1") == []
