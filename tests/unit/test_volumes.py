"""Pure volume comparison helpers."""

from __future__ import annotations

from ansible_collections.hal9000.dind.plugins.module_utils.volumes import (
    shared_volumes,
    current_volume,
    volume_differences,
    wanted_volume,
)


def inspected(labels=None, options=None, driver="local"):
    return {"Name": "v1", "Driver": driver, "Labels": labels, "Options": options}


def test_same_requested_keys_means_no_difference():
    current = current_volume(inspected(labels={"a": "1", "extra": "x"}, options={"o": "1"}))
    assert volume_differences(current, wanted_volume("v1", "local", None, {"a": "1"})) == []


def test_each_difference_is_named():
    current = current_volume(inspected(labels={"a": "1"}, options={"type": "tmpfs"}))
    wanted = wanted_volume("v1", "other", {"type": "nfs", "o": "x"}, {"a": "2", "b": "3"})
    assert volume_differences(current, wanted) == [
        "driver", "driver_options.type", "driver_options.o", "labels.a", "labels.b",
    ]


def test_null_labels_and_options_from_the_daemon():
    current = current_volume(inspected(labels=None, options=None, driver=""))
    assert current == {"name": "v1", "driver": "local", "driver_options": {}, "labels": {}}


def test_option_values_compare_as_strings():
    current = current_volume(inspected(options={"size": "10"}))
    assert volume_differences(current, wanted_volume("v1", "local", {"size": 10}, None)) == []


def test_shared_volume_mounts_match_the_seed():
    assert shared_volumes("h9") == {"h9-chromadb": "/data/chromadb", "h9-memorybank": "/data/membank", "h9-plugins": "/data/plugins"}
    assert shared_volumes() == {
        "hal9000-chromadb": "/data/chromadb",
        "hal9000-memorybank": "/data/membank",
        "hal9000-plugins": "/data/plugins",
    }
