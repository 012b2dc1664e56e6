"""worker_spec, parent_spec and stale_reasons: pure functions, so checked here without Docker."""

from __future__ import annotations

import json

import pytest

from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.parent import made_with, parent_spec
from ansible_collections.hal9000.dind.plugins.module_utils.settings import PARENT_OPTIONS, resolve
from ansible_collections.hal9000.dind.plugins.module_utils.workers import stale_reasons, worker_spec

GIB = 1024 ** 3


def spec(**args):
    return worker_spec(**dict({"name": "h9unit-w", "check_host_paths": False}, **args))


def test_limits_come_from_the_settings_never_from_the_environment(monkeypatch):
    monkeypatch.setenv("WORKER_MEMORY", "9g")
    assert spec()["limits"] == {"memory": 4 * GIB, "cpus": 2.0, "pids_limit": 100}
    from_file = resolve(file_values={"WORKER_MEMORY": "6g", "WORKER_PIDS_LIMIT": "77"})
    assert spec(settings=from_file)["limits"] == {"memory": 6 * GIB, "cpus": 2.0, "pids_limit": 77}
    assert spec(settings=from_file, memory="1g")["limits"]["memory"] == GIB, "an explicit limit wins"
    assert spec(settings=from_file, no_limits=True)["limits"] == {"memory": None, "cpus": None, "pids_limit": None}


def test_the_digest_ignores_name_pool_and_limits_but_not_what_needs_a_new_container():
    base = spec()["digest"]
    assert spec(name="h9unit-other", pool="generic", memory="8g")["digest"] == base
    for change in ({"image": "x/y:z"}, {"user": "1000:1000"}, {"env": {"A": "b"}}, {"read_only": True},
                   {"auto_remove": False}, {"command": ["sleep", "1"]}, {"parent": "h9unit-other"}):
        assert spec(**change)["digest"] != base, change


@pytest.mark.parametrize("args,words", [
    ({"env": {"ANTHROPIC_API_KEY": "sk"}}, "api_key_file"),
    ({"mode": "host"}, "mode 'host'"),
    ({"memory": "lots"}, "memory size"),
    ({"name": "bad name"}, "Invalid worker name"),
])
def test_bad_worker_options_are_one_line(args, words):
    with pytest.raises(Hal9000Error) as caught:
        spec(**args)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def parent(explicit=None, file_values=None):
    return parent_spec("h9unit-parent", "hal9000/parent:latest", "/srv/h9", "/var/run/docker.sock", "4g", 2,
                       explicit or {}, "h9unit", file_values)


def test_the_parents_environment_holds_only_explicit_settings():
    made = parent({"min_warm_workers": 3, "chromadb_port": None}, {"CHROMADB_PORT": "8100"})
    assert made["environment"] == {"HAL9000_PARENT_NAME": "h9unit-parent", "HAL9000_VOLUME_PREFIX": "h9unit",
                                   "HAL9000_DOCKER_SOCKET": "/run/hal9000-docker/docker.sock", "MIN_WARM_WORKERS": "3"}
    assert made["settings"]["chromadb_port"] == 8100 and made["settings"]["min_warm_workers"] == 3


def test_the_parent_keeps_the_options_it_was_made_with_and_they_make_the_same_parent_again():
    made = parent({"min_warm_workers": 3, "chromadb_port": None})
    assert made["options"] == {"image": "hal9000/parent:latest", "hal9000_home": "/srv/h9", "docker_socket": "/var/run/docker.sock",
                               "memory": "4g", "cpus": 2, "volume_prefix": "h9unit", "min_warm_workers": 3}
    options = json.loads(json.dumps(made["options"]))  # as the label gives them back
    explicit = {key: value for key, value in options.items() if key in PARENT_OPTIONS}
    again = parent_spec("h9unit-parent", options["image"], options["hal9000_home"], options["docker_socket"], options["memory"],
                        options["cpus"], explicit, options["volume_prefix"])
    assert again["digest"] == made["digest"]
    inspected = {"Config": {"Labels": {"io.hal9000.options": json.dumps(options)}}, "Mounts": []}
    assert made_with(inspected) == options
    older = {"Config": {"Labels": {}}, "Mounts": [{"Destination": "/root/.hal9000", "Source": "/srv/old"}]}
    assert made_with(older) == {"hal9000_home": "/srv/old"} and made_with(None) == {}


def test_only_start_up_settings_in_the_file_make_a_new_parent():
    base = parent()["digest"]
    assert parent(file_values={"WORKER_MEMORY": "6g", "MIN_WARM_WORKERS": "1", "IDLE_TIMEOUT": "5"})["digest"] == base
    for key, value in (("CHROMADB_PORT", "8100"), ("WORKER_IMAGE", "x/y:z"), ("SKIP_IMAGE_PULL", "true"),
                       ("LAZY_IMAGE_PULL", "true"), ("ENABLE_POOL_MANAGER", "true")):
        assert parent(file_values={key: value})["digest"] != base, key


def test_bad_settings_in_the_file_refuse_the_parent():
    with pytest.raises(Hal9000Error, match="CHROMADB_PORT"):
        parent(file_values={"CHROMADB_PORT": "0"})


def facts(**changes):
    current = {"digest": spec()["digest"], "image_id": "sha256:a", "network_mode": "container:p1", "parent_started": "t1"}
    return dict(current, **changes)


@pytest.mark.parametrize("changes,reasons", [
    ({}, []),
    ({"digest": "other"}, ["options changed"]),
    ({"image_id": "sha256:older"}, ["image changed"]),
    ({"parent_started": "t0"}, ["parent network is stale"]),
    ({"network_mode": "container:p0", "image_id": "sha256:older"}, ["image changed", "parent network is stale"]),
])
def test_stale_reasons(changes, reasons):
    assert stale_reasons(facts(**changes), spec(), "sha256:a", ("container:p1", "t1")) == reasons
