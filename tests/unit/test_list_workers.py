"""fleet.list_workers: the workers and their parents from one container listing (the engine walks every container per list)."""

from __future__ import annotations

from ansible_collections.hal9000.dind.plugins.module_utils.fleet import list_workers


def summary(name, role, state="running", **labels):
    return {"Id": f"id-{name}", "Names": [f"/{name}"], "State": state, "Status": state, "Image": "img", "Created": 1,
            "Labels": {"io.hal9000.role": role, **labels},
            "HostConfig": {"NetworkMode": "container:id-parent" if role == "worker" else "bridge"}}


class FakeAPI:
    def __init__(self, containers):
        self.listed = []
        self.all = containers

    def containers(self, all=False, filters=None):  # pylint: disable=redefined-builtin  # the SDK's name
        self.listed.append((all, filters))
        key, _sep, value = filters["label"].partition("=")
        return [c for c in self.all if key in c["Labels"] and (not value or c["Labels"][key] == value)
                and (all or c["State"] in ("running", "paused"))]

    def inspect_container(self, container_id):
        return {"State": {"StartedAt": "t1"}, "HostConfig": {"Memory": 0}, "Id": container_id}


class FakeClient:
    def __init__(self, containers):
        self.api = FakeAPI(containers)


def fleet():
    return FakeClient([
        summary("parent", "parent"),
        summary("old-parent", "parent", state="exited"),
        summary("busy", "worker", **{"io.hal9000.parent": "parent", "io.hal9000.parent-started": "t1"}),
        summary("stale", "worker", **{"io.hal9000.parent": "parent", "io.hal9000.parent-started": "t0"}),
        summary("ended", "worker", state="exited", **{"io.hal9000.parent": "parent"}),
        summary("paused", "worker", state="paused", **{"io.hal9000.parent": "parent", "io.hal9000.parent-started": "t1"}),
        summary("elsewhere", "worker", **{"io.hal9000.parent": "other-parent"}),
    ])


def test_one_listing_gives_the_workers_and_their_parents():
    client = fleet()
    workers = {w["name"]: w for w in list_workers(client, parent="parent", with_limits=True)}
    assert len(client.api.listed) == 1, client.api.listed
    assert sorted(workers) == ["busy", "ended", "paused", "stale"]
    assert workers["busy"]["network_ok"] and not workers["stale"]["network_ok"], "the running parent's start time decides"


def test_without_stopped_workers_the_up_ones_as_docker_ps_shows_them():
    client = fleet()
    assert sorted(w["name"] for w in list_workers(client, include_stopped=False)) == ["busy", "elsewhere", "paused", "stale"]
    assert len(client.api.listed) == 1
