"""Draining a host for an upgrade: what is asked of the old parent's coordinator, and what pools.json says after.

The coordinator and the engine's listings are stand-ins here (the order of the steps is what is tested);
the real ones are in tests/integration/test_fleet.py.
"""

from __future__ import annotations

import json

import pytest

from ansible_collections.hal9000.dind.plugins.module_utils import drain as drain_utils
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.pool import read_pools, save_pools


class Parent:
    """The old parent: its coordinator's pool commands and what runs in its network."""

    def __init__(self, home, running=True, enabled=True, warm=("hal9000-warm-a",), claimed=()):
        self.home, self.running, self.enabled = str(home), running, enabled
        self.warm, self.claimed, self.asked = list(warm), list(claimed), []
        save_pools(self.home, {"enabled": enabled, "pools": [{"name": "generic", "min": 1, "max": 2}]})

    def coordinator(self, _client, _parent_id, *args):
        self.asked.append(" ".join(args))
        if args[1] == "status":
            return json.dumps({"running": self.running, "enabled": read_pools(self.home)["enabled"],
                               "pools": [{"name": "generic", "min": 1, "max": 2, "warm": len(self.warm)}]})
        if args[1] == "stop":  # as the coordinator does: saved disabled
            self.running = False
            save_pools(self.home, dict(read_pools(self.home), enabled=False))
        elif args[1] == "start":
            self.running = True
            save_pools(self.home, dict(read_pools(self.home), enabled=True))
        elif args[1] == "cleanup":
            self.warm = []
        return ""


@pytest.fixture
def parent(tmp_path, monkeypatch):
    made = Parent(tmp_path)
    monkeypatch.setattr(drain_utils, "_running_parent", lambda client, name: {"Id": "p1"} if made else None)
    monkeypatch.setattr(drain_utils, "run_coordinator", made.coordinator)
    monkeypatch.setattr(drain_utils, "installation_home", lambda client, name: made.home)
    monkeypatch.setattr(drain_utils, "warm_workers", lambda client, name, **kw: [{"name": n} for n in made.warm])
    monkeypatch.setattr(drain_utils, "workers_sharing_network", lambda client, parent_id: list(made.claimed))
    monkeypatch.setattr(drain_utils, "wait_for_minimum", lambda client, name, pools, timeout, home: {"generic": 1})
    return made


def test_drain_stops_the_manager_removes_warm_workers_and_keeps_the_pools_enabled_for_the_next_parent(parent):
    result = drain_utils.drain(None, "hal9000-parent", 0)
    assert parent.asked == ["pool status --json", "pool stop", "pool cleanup"]
    assert result == {"actions": ["stopped the pool manager", "removed 1 warm worker(s)"], "pool_enabled": True,
                      "removed": ["hal9000-warm-a"], "running": []}
    assert read_pools(parent.home)["enabled"] is True and not parent.running and not parent.warm


def test_drain_says_which_claimed_workers_still_run_after_the_timeout(parent):
    parent.claimed = ["ada", "bob"]
    slept = []
    result = drain_utils.drain(None, "hal9000-parent", 0.05, sleep=slept.append)
    assert result["running"] == ["ada", "bob"] and slept


def test_check_mode_asks_only_for_the_status_and_does_not_wait(parent):
    parent.claimed = ["ada"]
    result = drain_utils.drain(None, "hal9000-parent", 60, check_mode=True, sleep=pytest.fail)
    assert parent.asked == ["pool status --json"]
    assert result["actions"] == ["stopped the pool manager", "removed 1 warm worker(s)"] and result["running"] == ["ada"]


def test_resume_starts_the_manager_only_when_the_pools_are_enabled(parent):
    drain_utils.drain(None, "hal9000-parent", 0)
    result = drain_utils.resume(None, "hal9000-parent", 30)
    assert parent.asked[-2:] == ["pool status --json", "pool start"]
    assert result == {"actions": ["started the pool manager"], "pool_enabled": True,
                      "pools": [{"name": "generic", "min": 1, "max": 2, "warm": 1}]}
    save_pools(parent.home, dict(read_pools(parent.home), enabled=False))
    parent.running = False
    assert drain_utils.resume(None, "hal9000-parent", 30)["actions"] == []


def test_a_parent_that_does_not_run_has_nothing_to_drain_and_cannot_resume(parent, monkeypatch):
    monkeypatch.setattr(drain_utils, "_running_parent", lambda client, name: None)
    assert drain_utils.drain(None, "hal9000-parent", 10)["actions"] == []
    with pytest.raises(Hal9000Error, match="Parent hal9000-parent is not running"):
        drain_utils.resume(None, "hal9000-parent", 10)


@pytest.mark.parametrize("state, running", [
    ({"Running": True, "Restarting": False}, True),
    ({"Running": True, "Restarting": True}, False),  # a parent that keeps exiting (a failed upgrade's): no exec there
    ({"Running": False}, False),
])
def test_only_a_parent_that_runs_and_is_not_restarting_counts_as_running(monkeypatch, state, running):
    monkeypatch.setattr(drain_utils, "inspect_container", lambda client, name: {"Id": "p1", "State": state})
    assert (drain_utils._running_parent(None, "hal9000-parent") is not None) is running
