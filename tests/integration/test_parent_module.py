"""hal9000.dind.parent and hal9000.dind.info against the real Docker Engine and the real parent image.

Every parent here has a name, a volume prefix and a home of its own (derived from the
session prefix); the real hal9000-parent and the hal9000-* volumes are never touched.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest

from helpers import (
    Fleet, inspect_or_none, one_line_refusal, parent_args, remove_installation, snapshot, stable, status_of, wait_for,
)

MODULE = "hal9000.dind.parent"
PHASES = {"critical_init", "parallel_init", "service_ready", "background_services"}
COLLECTIONS_URL = "http://127.0.0.1:8000/api/v2/tenants/default_tenant/databases/default_database/collections"
CREATE_COLLECTION = (
    "import json, sys, urllib.request; "
    f"r = urllib.request.Request('{COLLECTIONS_URL}', data=json.dumps({{'name': sys.argv[1]}}).encode(), "
    "headers={'Content-Type': 'application/json'}); print(urllib.request.urlopen(r, timeout=10).status)"
)
LIST_COLLECTIONS = (
    "import json, urllib.request; "
    f"print(json.dumps([c['name'] for c in json.load(urllib.request.urlopen('{COLLECTIONS_URL}', timeout=10))]))"
)


@pytest.fixture
def own(docker_client, prefix, tmp_path):
    """Names for one test: (base name, home directory); everything named after base is removed afterwards."""
    base = f"{prefix}-{uuid.uuid4().hex[:6]}"
    try:
        yield base, tmp_path / "home"
    finally:
        remove_installation(docker_client, base)


def docker_exec(container, *argv, stdin=None):
    return subprocess.run(
        ["docker", "exec", "-i", container, *argv], input=stdin, capture_output=True, text=True, timeout=60, check=False,
    )


def test_every_state_transition_with_check_and_diff(ansible, docker_client, own):
    base, home = own
    name = f"{base}-parent"
    args = parent_args(base, home)

    # absent -> started: check mode first changes nothing, not even the home directory.
    planned = ansible.task(MODULE, args, check_mode=True, diff=True)
    assert planned["changed"] is True and planned["actions"] == [f"created {name}", f"started {name}"], planned
    assert planned["diff"]["before"] == {} and planned["diff"]["after"]["state"] == "running"
    assert inspect_or_none(docker_client, name) is None and not home.exists()

    started = ansible.task(MODULE, args, diff=True)
    assert started["changed"] is True, started
    assert started["actions"] == [f"created {name}", f"started {name}"]
    parent = started["parent"]
    assert parent["state"] == "running" and parent["chromadb_ready"] is True, parent
    # The relay's phase comes later, in the background: present or not yet.
    assert PHASES <= set(parent["startup"]) <= PHASES | {"relay"} and all(isinstance(v, int) and v >= 0 for v in parent["startup"].values())
    assert parent["settings"]["min_warm_workers"] == 2 and parent["settings"]["max_warm_workers"] == 5
    assert started["diff"]["before"] == {}
    assert started["diff"]["after"]["memory"] == 4 * 1024 ** 3
    assert started["diff"]["after"]["environment"]["HAL9000_PARENT_NAME"] == name
    first = docker_client.api.inspect_container(name)
    assert first["Id"] == parent["id"] and first["State"]["Running"]
    assert first["Config"]["Labels"]["io.hal9000.role"] == "parent"
    assert first["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    mounts = {m["Destination"]: m.get("Name") or m["Source"] for m in first["Mounts"]}
    assert mounts["/data/chromadb"] == f"{base}-chromadb" and mounts["/root/.hal9000"] == str(home)
    assert home.is_dir()
    # What daemon.yml prints after a start, read by the same call.
    assert started["status_lines"][:2] == ["HAL-9000 Orchestrator Status", f"Parent container: Running ({name}, health {parent['health']})"]
    assert "ChromaDB server: Running on port 8000" in started["status_lines"]
    assert f"  {base}-chromadb: exists" in started["status_lines"], started["status_lines"]

    # started again: no change, no restart.
    for check_mode in (True, False):
        again = ansible.task(MODULE, args, check_mode=check_mode, diff=True)
        assert again["changed"] is False and again["actions"] == [], again
        assert again["diff"]["before"] == again["diff"]["after"] and again["diff"]["before"]["state"] == "running"
    same = docker_client.api.inspect_container(name)
    assert same["Id"] == first["Id"] and same["State"]["StartedAt"] == first["State"]["StartedAt"]

    # restarted: a new start time, the same container.
    before = stable(docker_client.api.inspect_container(name))
    planned = ansible.task(MODULE, dict(args, state="restarted"), check_mode=True)
    assert planned["changed"] is True and planned["actions"] == [f"restarted {name}"], planned
    assert stable(docker_client.api.inspect_container(name)) == before
    restarted = ansible.task(MODULE, dict(args, state="restarted"), diff=True)
    assert restarted["changed"] is True and restarted["actions"] == [f"restarted {name}"], restarted
    assert restarted["parent"]["chromadb_ready"] is True
    assert restarted["diff"]["before"]["state"] == "running" and restarted["diff"]["after"]["state"] == "running"
    after_restart = docker_client.api.inspect_container(name)
    assert after_restart["Id"] == first["Id"]
    assert after_restart["State"]["StartedAt"] > first["State"]["StartedAt"]

    # stopped
    before = stable(after_restart)
    planned = ansible.task(MODULE, dict(args, state="stopped"), check_mode=True)
    assert planned["changed"] is True and planned["actions"] == [f"stopped {name}"], planned
    assert stable(docker_client.api.inspect_container(name)) == before
    stopped = ansible.task(MODULE, dict(args, state="stopped"), diff=True)
    assert stopped["changed"] is True and stopped["parent"]["state"] == "exited", stopped
    assert stopped["diff"]["before"]["state"] == "running" and stopped["diff"]["after"]["state"] == "exited"
    assert docker_client.api.inspect_container(name)["State"]["Running"] is False
    assert ansible.task(MODULE, dict(args, state="stopped"))["changed"] is False

    # stopped -> started starts the same container again (check mode first).
    before = stable(docker_client.api.inspect_container(name))
    planned = ansible.task(MODULE, args, check_mode=True)
    assert planned["actions"] == [f"started {name}"], planned
    assert stable(docker_client.api.inspect_container(name)) == before
    again = ansible.task(MODULE, args)
    assert again["actions"] == [f"started {name}"] and again["parent"]["id"] == first["Id"], again
    assert ansible.task(MODULE, dict(args, state="stopped"))["changed"] is True

    # absent
    before = stable(docker_client.api.inspect_container(name))
    planned = ansible.task(MODULE, dict(args, state="absent"), check_mode=True, diff=True)
    assert planned["changed"] is True and planned["actions"] == [f"removed {name}"], planned
    assert stable(docker_client.api.inspect_container(name)) == before
    removed = ansible.task(MODULE, dict(args, state="absent"), diff=True)
    assert removed["changed"] is True and removed["parent"] == {"name": name, "state": "absent"}, removed
    assert removed["diff"]["before"]["state"] == "exited" and removed["diff"]["after"] == {}
    assert inspect_or_none(docker_client, name) is None
    assert ansible.task(MODULE, dict(args, state="absent"))["changed"] is False


def test_changed_options_recreate_the_parent(ansible, docker_client, own):
    base, home = own
    name = f"{base}-parent"
    first = ansible.task(MODULE, parent_args(base, home, memory="1g", min_warm_workers=1))
    assert first["changed"] is True, first

    bigger = parent_args(base, home, memory="2g", min_warm_workers=1)
    before = stable(docker_client.api.inspect_container(name))
    planned = ansible.task(MODULE, bigger, check_mode=True)
    assert planned["changed"] is True and planned["actions"][0].startswith(f"recreated {name}"), planned
    assert stable(docker_client.api.inspect_container(name)) == before
    second = ansible.task(MODULE, bigger, diff=True)
    assert second["changed"] is True and second["actions"][0].startswith(f"recreated {name}"), second
    assert second["parent"]["id"] != first["parent"]["id"] and second["parent"]["chromadb_ready"] is True
    assert second["diff"]["before"]["spec_digest"] != second["diff"]["after"]["spec_digest"]
    assert (second["diff"]["before"]["memory"], second["diff"]["after"]["memory"]) == (1024 ** 3, 2 * 1024 ** 3)
    assert second["diff"]["before"]["environment"] == second["diff"]["after"]["environment"]
    assert docker_client.api.inspect_container(name)["HostConfig"]["Memory"] == 2 * 1024 ** 3

    third = ansible.task(MODULE, parent_args(base, home, memory="2g", min_warm_workers=2))
    assert third["changed"] is True and third["parent"]["id"] != second["parent"]["id"], third
    assert third["parent"]["settings"]["min_warm_workers"] == 2
    assert "MIN_WARM_WORKERS=2" in docker_client.api.inspect_container(name)["Config"]["Env"]
    assert [n for n in snapshot(docker_client, base)[0] if n != f"{name}-mcp"] == [name]


@pytest.mark.parametrize(
    "extra,words",
    [
        ({"min_warm_workers": 5, "max_warm_workers": 2}, ["MIN_WARM_WORKERS=5", "MAX_WARM_WORKERS=2"]),
        ({"min_warm_workers": -1}, ["MIN_WARM_WORKERS", "whole number"]),
        ({"max_warm_workers": -2}, ["MAX_WARM_WORKERS", "whole number"]),
        ({"idle_timeout": -5}, ["IDLE_TIMEOUT", "whole number"]),
        ({"memory": "4x"}, ["Invalid memory size", "4x"]),
        ({"cpus": 0}, ["Invalid cpus"]),
        ({"chromadb_port": 70000}, ["CHROMADB_PORT=70000"]),
        ({"name": "a b"}, ["Invalid container name", "a b"]),
    ],
)
def test_invalid_settings_are_refused_before_anything_is_created(ansible, docker_client, own, extra, words):
    base, home = own
    for check_mode in (True, False):
        one_line_refusal(ansible.task(MODULE, parent_args(base, home, **extra), check_mode=check_mode), *words)
    assert snapshot(docker_client, base) == ([], [])
    assert extra.get("name") not in snapshot(docker_client)[0]
    assert not home.exists()


def test_missing_socket_is_refused_before_anything_is_created(ansible, docker_client, own):
    base, home = own
    result = ansible.task(MODULE, parent_args(base, home, docker_socket="/nonexistent.sock"))
    one_line_refusal(result, "/nonexistent.sock", "does not exist")
    assert snapshot(docker_client, base) == ([], [])
    assert not home.exists()


def test_missing_image_is_refused_before_anything_is_created(ansible, docker_client, own):
    base, home = own
    image = f"{base}-nope:1"
    result = ansible.task(MODULE, parent_args(base, home, image=image))
    one_line_refusal(result, image, "missing")
    assert snapshot(docker_client, base) == ([], [])
    assert not home.exists()


def test_image_without_socket_exits_at_once_with_the_troubleshooting_line(docker_client, own):
    base, _home = own
    began = time.monotonic()
    container = docker_client.containers.run("hal9000/parent:latest", detach=True, name=f"{base}-nosock")
    status = container.wait(timeout=30)
    assert status["StatusCode"] == 1
    assert time.monotonic() - began < 10
    log = container.logs().decode()
    assert "Cannot connect to Docker daemon" in log and "Ensure the Docker socket is mounted" in log, log
    assert "ChromaDB starting" not in log


def test_workers_attached_refuse_recreate_restart_stop_and_remove(ansible, docker_client, own):
    base, home = own
    name = f"{base}-parent"
    args = parent_args(base, home)
    assert ansible.task(MODULE, args)["changed"] is True
    worker = Fleet(docker_client, name).worker("worker")
    before = stable(docker_client.api.inspect_container(name))
    attempts = [
        (dict(args, memory="3g"), "recreate"),
        (dict(args, state="restarted"), "restart"),
        (dict(args, state="stopped"), "stop"),
        (dict(args, state="absent"), "remove"),
    ]
    for task_args, verb in attempts:
        for check_mode in (True, False):
            result = ansible.task(MODULE, task_args, check_mode=check_mode)
            one_line_refusal(result, f"Not going to {verb} {name}", worker.name, "force=true")
            assert stable(docker_client.api.inspect_container(name)) == before, verb
            assert status_of(worker) == "running"

    forced = ansible.task(MODULE, dict(args, state="restarted", force=True))
    assert forced["changed"] is True and forced["affected_workers"] == [worker.name], forced
    assert any(worker.name in warning for warning in forced.get("warnings", [])), forced
    assert docker_client.api.inspect_container(name)["State"]["StartedAt"] > before["State"]["StartedAt"]

    removed = ansible.task(MODULE, dict(args, state="absent", force=True))
    assert removed["changed"] is True and removed["affected_workers"] == [worker.name], removed
    assert inspect_or_none(docker_client, name) is None
    assert status_of(worker) == "running"


def test_chromadb_data_survives_restart_and_recreate(ansible, docker_client, own):
    base, home = own
    name = f"{base}-parent"
    args = parent_args(base, home)
    assert ansible.task(MODULE, args)["parent"]["chromadb_ready"] is True
    created = docker_exec(name, "python3", "-c", CREATE_COLLECTION, "kept-notes")
    assert created.returncode == 0 and created.stdout.strip() == "200", created.stderr

    restarted = ansible.task(MODULE, dict(args, state="restarted"))
    assert restarted["changed"] is True and restarted["parent"]["chromadb_ready"] is True, restarted
    listed = docker_exec(name, "python3", "-c", LIST_COLLECTIONS)
    assert listed.returncode == 0 and "kept-notes" in json.loads(listed.stdout), listed.stderr

    recreated = ansible.task(MODULE, dict(args, memory="3g"))
    assert recreated["parent"]["id"] != restarted["parent"]["id"] and recreated["parent"]["chromadb_ready"], recreated
    listed = docker_exec(name, "python3", "-c", LIST_COLLECTIONS)
    assert "kept-notes" in json.loads(listed.stdout), listed.stderr


def test_info_reports_parent_workers_counts_and_volumes(ansible, docker_client, own):
    base, home = own
    name = f"{base}-parent"
    info_args = {"parent": name, "volume_prefix": base}
    absent = ansible.task("hal9000.dind.info", info_args)
    assert absent["changed"] is False and absent["parent"] == {"name": name, "state": "absent"}, absent
    assert absent["counts"]["running"] == absent["counts"]["total"] - len([w for w in absent["workers"] if w["state"] != "running"])
    assert not [w for w in absent["workers"] if w["parent"] == name]

    assert ansible.task(MODULE, parent_args(base, home))["changed"] is True
    fleet = Fleet(docker_client, name)  # named after base: the own fixture removes them
    running, idle = fleet.worker("worker-a"), fleet.worker("worker-b", running=False)
    # Not this parent's workers: a container with no labels, and a worker of another parent.
    fleet.imposter()
    fleet.foreign()
    wait_for(lambda: docker_client.api.inspect_container(name)["State"]["Health"]["Status"] == "healthy", 40,
             "the parent's health check")

    info = ansible.task("hal9000.dind.info", info_args, check_mode=True)
    assert info["changed"] is False
    assert info["parent"]["state"] == "running" and info["parent"]["health"] == "healthy", info["parent"]
    assert info["parent"]["chromadb_ready"] is True
    assert sorted(w["name"] for w in info["workers"] if w["parent"] == name) == [running.name, idle.name]
    # Besides its own, a parent lists only parent-less workers (containers of the worker image run by hand).
    assert all(w["parent"] in (name, "") for w in info["workers"]), info["workers"]
    legacy = [w for w in info["workers"] if w["parent"] == ""]
    legacy_running = len([w for w in legacy if w["state"] == "running"])
    assert info["counts"] == {"total": 2 + len(legacy), "running": 1 + legacy_running, "stale_network": 0}, info["workers"]
    assert info["volumes"] == [{"name": f"{base}-{kind}", "exists": True} for kind in ("chromadb", "memorybank", "plugins")]
    assert info["status_lines"][0] == "HAL-9000 Orchestrator Status"
    assert f"Active workers: {1 + legacy_running}" in info["status_lines"]
    assert not any("imposter" in line or "foreign" in line for line in info["status_lines"])

    # Recreating the parent (forced) leaves both workers pointing at a namespace that is gone.
    assert ansible.task(MODULE, parent_args(base, home, memory="3g", force=True))["changed"] is True
    stale = ansible.task("hal9000.dind.info", info_args)
    own_workers = {w["name"]: w for w in stale["workers"] if w["parent"] == name}
    assert sorted(own_workers) == [running.name, idle.name]
    assert not any(w["network_ok"] for w in own_workers.values()), own_workers
    assert stale["counts"]["stale_network"] >= 2
    assert any(running.name in line and "network stale" in line for line in stale["status_lines"])


def test_sigterm_stops_chromadb_and_leaves_workers_running(ansible, docker_client, own):
    base, home = own
    name = f"{base}-parent"
    assert ansible.task(MODULE, parent_args(base, home))["parent"]["chromadb_ready"] is True
    worker = Fleet(docker_client, name).worker("worker")
    began = time.monotonic()
    stop = subprocess.run(["docker", "stop", "-t", "30", name], capture_output=True, text=True, timeout=60, check=False)
    assert stop.returncode == 0, stop.stderr
    assert time.monotonic() - began < 25
    state = docker_client.api.inspect_container(name)["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 0, state
    log = docker_client.api.logs(name).decode()
    assert "Received signal 15: stopping" in log
    assert "ChromaDB stopped (exit code 0)" in log, log
    assert f"Workers left running: {worker.name}\n" in log, log
    assert status_of(worker) == "running"
