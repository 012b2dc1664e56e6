"""The pure validation helpers (no Docker, no Ansible)."""

from __future__ import annotations

import pytest

from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.validate import (
    parse_cpus,
    parse_memory,
    parse_positive_int,
    validate_labels,
    validate_name,
)


@pytest.mark.parametrize("name", ["hal9000-parent", "w1", "a.b_c-d", "A" * 128])
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", "x", "../x", "a b", "-a", ".a", "a/b", "a;b", "$(id)", "`id`", "A" * 129, None, 5])
def test_invalid_names(name):
    with pytest.raises(Hal9000Error) as err:
        validate_name(name, "volume")
    assert "volume name" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "text,expected",
    [("4g", 4 * 1024**3), ("512m", 512 * 1024**2), ("1.5g", int(1.5 * 1024**3)), ("100", 100), ("2GB", 2 * 1024**3), ("64k", 65536)],
)
def test_memory_sizes(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["4g", "4gb", "4 GB", "0.25g", "1.5m", "3k", "7b", "12345", "2.75G"])
def test_memory_sizes_count_as_the_docker_sdk_does(text):
    """parse_memory does without the SDK (claudy's warm claim never imports it) and must agree with it."""
    from docker.utils import parse_bytes  # pylint: disable=import-outside-toplevel

    assert parse_memory(text) == parse_bytes(text.replace(" ", "").lower())


@pytest.mark.parametrize("text", ["4x", "0", "-1g", "", "g", "4 gigs", "0g", "1e3"])
def test_bad_memory_sizes(text):
    with pytest.raises(Hal9000Error) as err:
        parse_memory(text)
    assert "memory size" in str(err.value)


@pytest.mark.parametrize("value,expected", [("2", 2.0), (0.5, 0.5), (4, 4.0)])
def test_cpus(value, expected):
    assert parse_cpus(value) == expected


@pytest.mark.parametrize("value", [0, "0", -1, "-0.5", "two", None, "nan"])
def test_bad_cpus(value):
    with pytest.raises(Hal9000Error):
        parse_cpus(value)


@pytest.mark.parametrize("value", [0, -5, "abc", "1.5", True, None])
def test_bad_positive_ints(value):
    with pytest.raises(Hal9000Error) as err:
        parse_positive_int(value, "pids_limit")
    assert "pids_limit" in str(err.value)


def test_positive_int():
    assert parse_positive_int("100", "pids_limit") == 100


def test_labels_must_be_strings():
    assert validate_labels({"a": "1", "b": 2}) == {"a": "1", "b": "2"}
    assert validate_labels(None) == {}
    for bad in (True, 1.5, None, ["x"], {"y": 1}):
        with pytest.raises(Hal9000Error):
            validate_labels({"k": bad})
