"""Placement in a fleet: the warm worker's host first, else the most free memory against the workers' limits."""

from __future__ import annotations

import pytest

from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.placement import choose_host, free_memory, host_facts, read_meminfo

GIB = 2**30
IMAGE = "hal9000/worker:latest"


def meminfo(total_gib, available_gib):
    return f"MemTotal:       {int(total_gib * GIB / 1024)} kB\nMemFree:  1 kB\nMemAvailable:   {int(available_gib * GIB / 1024)} kB\n"


def info(workers=(), pools=(), parent="running", worker_memory="4g"):
    return {
        "parent": {"name": "hal9000-parent", "state": parent},
        "workers": [{"name": f"w{i}", "state": state, "warm": warm, "limits": {"memory": int(limit * GIB) if limit else None}}
                    for i, (state, warm, limit) in enumerate(workers)],
        "pool": {"enabled": True, "pools": [dict({"name": "generic", "project": "", "image": IMAGE, "warm": 0}, **p) for p in pools]},
        "worker_limits": {"memory": worker_memory},
    }


def host(name, total=16, available=12, **kwargs):
    return host_facts(name, info(**kwargs), meminfo(total, available))


def test_meminfo_is_read_in_bytes_and_missing_lines_are_none():
    assert read_meminfo(meminfo(16, 12)) == {"total": 16 * GIB, "available": 12 * GIB}
    assert read_meminfo("") == {"total": None, "available": None}


def test_free_memory_counts_running_workers_limits_warm_included_but_never_more_than_available():
    facts = host("a", total=16, available=15, workers=[("running", False, 4), ("running", True, 4), ("exited", False, 4)])
    assert facts["committed"] == 8 * GIB
    assert free_memory(facts) == 8 * GIB  # 16 - 8, less than the 15 available
    assert free_memory(host("b", total=16, available=3)) == 3 * GIB  # available is less than 16 - 0
    unlimited = host("c", total=16, available=15, workers=[("running", False, None)])
    assert free_memory(unlimited) == 15 * GIB


def test_a_host_with_a_warm_worker_of_the_right_pool_wins_over_more_free_memory():
    hosts = [host("a", available=14), host("b", available=2, pools=[{"warm": 1}]), host("c", available=10)]
    chosen = choose_host(hosts, IMAGE)
    assert (chosen["host"], chosen["action"]) == ("b", "claim")
    assert "1 warm worker" in chosen["reason"]


def test_a_warm_worker_of_another_pool_or_image_does_not_count():
    hosts = [host("a", available=4, pools=[{"name": "web", "project": "/srv/web", "warm": 2}]),
             host("b", available=5, pools=[{"image": "hal9000/worker:ultramin", "warm": 2}]),
             host("c", available=6)]
    assert choose_host(hosts, IMAGE)["host"] == "c"
    chosen = choose_host(hosts, IMAGE, project="/srv/web/")  # the project as the pool saved it, normalised
    assert (chosen["host"], chosen["action"]) == ("a", "claim")
    assert choose_host(hosts, "hal9000/worker:ultramin")["host"] == "b"


def test_among_warm_hosts_the_most_free_memory_wins():
    hosts = [host("a", available=3, pools=[{"warm": 1}]), host("b", available=9, pools=[{"warm": 1}])]
    assert choose_host(hosts, IMAGE)["host"] == "b"


def test_without_warm_workers_the_most_free_memory_against_the_limits_wins():
    hosts = [
        host("a", total=16, available=15, workers=[("running", False, 12)]),  # 4 GiB free against the limits
        host("b", total=16, available=6),
        host("c", total=32, available=30, workers=[("running", True, 4)] * 6),  # 8 GiB
    ]
    chosen = choose_host(hosts, IMAGE)
    assert (chosen["host"], chosen["action"]) == ("c", "spawn")
    assert [row["free"] for row in chosen["hosts"]] == [4 * GIB, 6 * GIB, 8 * GIB]
    assert "most free memory (8.0 GiB" in chosen["reason"]


def test_a_tie_goes_to_the_first_host():
    assert choose_host([host("a"), host("b")], IMAGE)["host"] == "a"


def test_the_memory_asked_for_or_the_hosts_own_limit_decides_who_has_room():
    hosts = [host("a", available=3, worker_memory="2g"), host("b", available=5, worker_memory="8g")]
    chosen = choose_host(hosts, IMAGE)  # b has more memory but its workers get 8g each
    assert chosen["host"] == "a"
    assert chosen["hosts"][1]["why_not"] == "5.0 GiB free against its workers' limits, 8.0 GiB needed"
    assert choose_host(hosts, IMAGE, memory="1g")["host"] == "b"
    assert choose_host([host("a", available=1)], IMAGE, no_limits=True)["host"] == "a"


def test_unreachable_hosts_and_hosts_without_a_running_parent_are_never_chosen():
    unreachable = host_facts("a", {"unreachable": True, "msg": "Failed to connect to the host via ssh\nmore"}, "")
    failed = host_facts("b", {"failed": False, "msg": "Cannot reach the Docker Engine at unix:///var/run/docker.sock"}, "")
    stopped = host("c", available=20, parent="exited", pools=[{"warm": 3}])
    chosen = choose_host([unreachable, failed, stopped, host("d", available=5)], IMAGE)
    assert chosen["host"] == "d"
    assert [row["why_not"] for row in chosen["hosts"][:3]] == [
        "unreachable: Failed to connect to the host via ssh", "Cannot reach the Docker Engine at unix:///var/run/docker.sock",
        "parent exited"]


def test_a_full_fleet_is_one_line_naming_every_host():
    hosts = [host("a", available=2), host("b", total=8, available=7, workers=[("running", False, 6)]),
             host_facts("c", {"unreachable": True, "msg": "timed out"}, "")]
    with pytest.raises(Hal9000Error) as raised:
        choose_host(hosts, IMAGE)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"No host of the fleet can take the worker: none has a warm worker for {IMAGE} without a project nor room for it")
    for part in ("a: 2.0 GiB free against its workers' limits, 4.0 GiB needed",
                 "b: 2.0 GiB free against its workers' limits, 4.0 GiB needed", "c: unreachable: timed out"):
        assert part in message
    assert message.endswith("ask for less memory (worker_memory).")


def test_a_host_whose_memory_is_unknown_has_no_room_but_may_still_hand_out_a_warm_worker():
    unknown = host_facts("a", info(pools=[{"warm": 1}]), "")
    assert choose_host([unknown], IMAGE)["action"] == "claim"
    with pytest.raises(Hal9000Error, match="a: free memory unknown"):
        choose_host([host_facts("a", info(), "")], IMAGE)
