"""hal9000.dind.volume and volume_info against the real Docker Engine."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import snapshot

MODULE = "hal9000.dind.volume"


def test_present_twice_changes_once(ansible, docker_client, prefix):
    name = f"{prefix}-vol-a"
    first = ansible.task(MODULE, {"name": name, "labels": {"io.hal9000.test": "yes"}})
    assert first["changed"] is True, first
    assert first["volume"]["Name"] == name
    assert docker_client.volumes.get(name).attrs["Labels"] == {"io.hal9000.test": "yes"}

    second = ansible.task(MODULE, {"name": name, "labels": {"io.hal9000.test": "yes"}})
    assert second["changed"] is False, second
    assert second["volume"]["Name"] == name


def test_check_mode_creates_nothing(ansible, docker_client, prefix):
    name = f"{prefix}-vol-check"
    result = ansible.task(MODULE, {"name": name}, check_mode=True)
    assert result["changed"] is True
    assert result["actions"] == [f"created volume {name}"]
    assert name not in snapshot(docker_client)[1]


def test_diff_shows_before_and_after(ansible, docker_client, prefix):
    name = f"{prefix}-vol-diff"
    created = ansible.task(MODULE, {"name": name, "labels": {"a": "1"}}, diff=True)
    assert created["diff"]["before"] == {}
    assert created["diff"]["after"]["labels"] == {"a": "1"}
    assert created["diff"]["after"]["name"] == name

    removed = ansible.task(MODULE, {"name": name, "state": "absent"}, diff=True)
    assert removed["changed"] is True
    assert removed["diff"]["before"]["name"] == name
    assert removed["diff"]["after"] == {}


def test_labels_compared_on_requested_keys_only(ansible, docker_client, prefix):
    name = f"{prefix}-vol-labels"
    docker_client.volumes.create(name, labels={"a": "1", "other.tool": "x"})
    same = ansible.task(MODULE, {"name": name, "labels": {"a": "1"}})
    assert same["changed"] is False
    assert same["differences"] == []

    drift = ansible.task(MODULE, {"name": name, "labels": {"a": "2"}})
    assert drift["changed"] is False, "a volume with data is never recreated by default"
    assert drift["differences"] == ["labels.a"]
    assert any("recreate=options-changed" in w for w in drift.get("warnings", []))
    assert docker_client.volumes.get(name).attrs["Labels"]["a"] == "1"


def test_recreate_when_options_changed(ansible, docker_client, prefix):
    name = f"{prefix}-vol-recreate"
    docker_client.volumes.create(name, labels={"a": "1"})
    result = ansible.task(MODULE, {"name": name, "labels": {"a": "2"}, "recreate": "options-changed"})
    assert result["changed"] is True
    assert result["actions"] == [f"removed volume {name}", f"created volume {name}"]
    assert docker_client.volumes.get(name).attrs["Labels"] == {"a": "2"}


def test_absent_removes_then_is_unchanged(ansible, docker_client, prefix):
    name = f"{prefix}-vol-gone"
    docker_client.volumes.create(name)
    first = ansible.task(MODULE, {"name": name, "state": "absent"})
    assert first["changed"] is True
    assert name not in snapshot(docker_client)[1]
    second = ansible.task(MODULE, {"name": name, "state": "absent"})
    assert second["changed"] is False


def test_absent_refuses_a_volume_in_use(ansible, docker_client, prefix):
    name = f"{prefix}-vol-used"
    user = f"{prefix}-user"
    docker_client.volumes.create(name)
    docker_client.containers.create("debian:bookworm-slim", name=user, volumes={name: {"bind": "/data"}})
    for check_mode in (True, False):
        result = ansible.task(MODULE, {"name": name, "state": "absent"}, check_mode=check_mode)
        assert result["failed"] is True
        assert user in result["msg"] and "Nothing was removed" in result["msg"]
        assert "\n" not in result["msg"]
    assert name in snapshot(docker_client)[1]


@pytest.mark.parametrize("bad", ["../x", "a b", "", "x", "-lead", "a/b", "$(id)"])
def test_bad_names_are_refused_before_any_call(ansible, docker_client, bad):
    before = snapshot(docker_client)
    result = ansible.task(MODULE, {"name": bad})
    assert result["failed"] is True
    assert "name" in result["msg"] and "\n" not in result["msg"]
    assert "Traceback" not in result["msg"]
    assert snapshot(docker_client) == before


def test_non_string_label_is_refused(ansible, docker_client, prefix):
    before = snapshot(docker_client)
    result = ansible.task(MODULE, {"name": f"{prefix}-vol-badlabel", "labels": {"flag": True}})
    assert result["failed"] is True
    assert "must be strings" in result["msg"]
    assert snapshot(docker_client) == before


def test_unreachable_daemon_gives_one_line(ansible, tmp_path):
    socket = tmp_path / "missing.sock"
    result = ansible.task(MODULE, {"name": "hal9000-never", "docker_host": f"unix://{socket}"})
    assert result["failed"] is True
    assert result["msg"] == (
        f"Cannot connect to the Docker daemon at unix://{socket}: is it running, and is the socket mounted?"
    )


def test_docker_host_from_environment(ansible, tmp_path):
    socket = tmp_path / "env.sock"
    ansible.env["DOCKER_HOST"] = f"unix://{socket}"
    result = ansible.task(MODULE, {"name": "hal9000-never"})
    assert result["failed"] is True
    assert f"unix://{socket}" in result["msg"]


def test_missing_sdk_names_the_library(ansible, tmp_path):
    bare = tmp_path / "bare-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    result = ansible.task(MODULE, {"name": "hal9000-never"}, python=str(bare / "bin" / "python"))
    assert result["failed"] is True
    assert "Failed to import the required Python library (docker)" in result["msg"]


def test_volume_info_reports_existence_size_and_users(ansible, docker_client, prefix):
    used = f"{prefix}-info-used"
    missing = f"{prefix}-info-missing"
    docker_client.volumes.create(used)
    docker_client.containers.run(
        "debian:bookworm-slim", ["sh", "-c", "head -c 100000 /dev/zero > /data/blob"],
        name=f"{prefix}-info-writer", volumes={used: {"bind": "/data"}},
    )
    result = ansible.task("hal9000.dind.volume_info", {"names": [used, missing]}, check_mode=True)
    assert result["changed"] is False
    first, second = result["volumes"]
    assert first["exists"] is True and first["used_by"] == [f"{prefix}-info-writer"]
    assert first["size"] >= 100000
    assert second == {**second, "exists": False, "used_by": [], "size": -1}


def test_names_handles_several_volumes_in_one_task(ansible, docker_client, prefix):
    names = [f"{prefix}-vols-{kind}" for kind in ("a", "b", "c")]
    docker_client.volumes.create(names[1], labels={"io.hal9000.test": "yes"})
    check = ansible.task(MODULE, {"names": names, "labels": {"io.hal9000.test": "yes"}}, check_mode=True, diff=True)
    assert check["actions"] == [f"created volume {names[0]}", f"created volume {names[2]}"], check
    assert check["diff"]["before"][names[1]]["name"] == names[1] and check["diff"]["before"][names[0]] == {}
    assert not {names[0], names[2]} & set(snapshot(docker_client)[1])

    first = ansible.task(MODULE, {"names": names, "labels": {"io.hal9000.test": "yes"}})
    assert first["changed"] is True and "volume" not in first
    assert [v["Name"] for v in first["volumes"]] == names
    for name in names:
        assert docker_client.volumes.get(name).attrs["Labels"] == {"io.hal9000.test": "yes"}
    again = ansible.task(MODULE, {"names": names, "labels": {"io.hal9000.test": "yes"}})
    assert again["changed"] is False and again["actions"] == []

    drift = ansible.task(MODULE, {"names": names, "labels": {"io.hal9000.test": "no"}})
    assert drift["differences"] == [f"{name}: labels.io.hal9000.test" for name in names]


def test_names_refuses_all_removals_when_one_volume_is_in_use(ansible, docker_client, prefix):
    names = [f"{prefix}-volr-{kind}" for kind in ("a", "b")]
    user = f"{prefix}-volr-user"
    for name in names:
        docker_client.volumes.create(name)
    docker_client.containers.create("debian:bookworm-slim", name=user, volumes={names[1]: {"bind": "/data"}})
    result = ansible.task(MODULE, {"names": names, "state": "absent"})
    assert result["failed"] is True and user in result["msg"] and "\n" not in result["msg"]
    assert set(names) <= set(snapshot(docker_client)[1]), "the unused volume went although the task was refused"


def test_name_and_names_together_are_refused(ansible, prefix):
    result = ansible.task(MODULE, {"name": f"{prefix}-x1", "names": [f"{prefix}-x2"]})
    assert result["failed"] is True and "mutually exclusive" in result["msg"]
