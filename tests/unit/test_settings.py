"""The settings declaration and its one precedence rule: explicit > environment > hal9000.conf > default."""

from __future__ import annotations

import pytest

from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.home import config_text
from ansible_collections.hal9000.dind.plugins.module_utils.settings import (
    SETTINGS,
    check_file_settings,
    environment,
    file_defaults,
    read_config,
    resolve,
    resolve_in_home,
    typed_value,
)

# A valid value for every setting that differs from its default: (in the file, typed).
CHANGED = {
    "WORKER_IMAGE": ("example/worker:2", "example/worker:2"),
    "WORKER_MEMORY": ("6g", "6g"),
    "WORKER_CPUS": ("1.5", "1.5"),
    "WORKER_PIDS_LIMIT": ("250", 250),
    "WORKER_STORAGE_SIZE": ("20g", "20g"),
    "SKIP_IMAGE_PULL": ("true", True),
    "LAZY_IMAGE_PULL": ("yes", True),
    "ENABLE_POOL_MANAGER": ("on", True),
    "MIN_WARM_WORKERS": ("1", 1),
    "MAX_WARM_WORKERS": ("9", 9),
    "IDLE_TIMEOUT": ("30", 30),
    "CHROMADB_PORT": ("8100", 8100),
    "ENABLE_MCP_RELAY": ("false", False),
    "MCP_IMAGE": ("example/mcp:2", "example/mcp:2"),
    "MCP_RELAY_PORT": ("8200", 8200),
    "ANTHROPIC_BASE_URL": ("https://gateway.example:8443/anthropic", "https://gateway.example:8443/anthropic"),
    "SESSION_RECORDS_MAX_AGE": ("7", 7),
    "CLAIM_TIMEOUT": ("0.5", 0.5),
    "EGRESS": ("open", "open"),
    "EGRESS_ALLOW": ("pypi.org:443, 192.0.2.0/24", ("pypi.org:443", "192.0.2.0/24")),
}
# A valid, non-empty value for the settings whose default is empty (the environment must override the file).
NOT_EMPTY = {"ANTHROPIC_BASE_URL": "http://127.0.0.1:9", "EGRESS_ALLOW": "registry.npmjs.org:443"}


def test_every_setting_has_a_changed_value_here():
    assert set(CHANGED) == {s.key for s in SETTINGS}


def test_defaults_are_the_seeds():
    assert resolve() == {
        "worker_image": "hal9000/worker:latest", "memory": "4g", "cpus": "2", "pids_limit": 100, "storage_size": "10g",
        "skip_image_pull": False, "lazy_image_pull": False, "enable_pool_manager": False,
        "min_warm_workers": 2, "max_warm_workers": 5, "idle_timeout": 300, "chromadb_port": 8000,
        "enable_mcp_relay": True, "mcp_image": "hal9000/mcp:latest", "mcp_relay_port": 8765, "anthropic_base_url": "",
        "session_records_max_age": 30, "claim_timeout": 2.0,
        "egress": "allowlist", "egress_allow": (),
    }


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.key)
def test_the_file_beats_the_default_the_environment_beats_the_file_an_option_beats_both(setting, tmp_path):
    in_file, typed = CHANGED[setting.key]
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "hal9000.conf").write_text(config_text({setting.key: in_file}))
    assert resolve_in_home(str(tmp_path))[setting.option] == typed
    assert resolve()[setting.option] == typed_value(setting.key, setting.default)

    # An empty value means "not given": a setting whose default is empty is overridden with another value.
    in_environment = file_defaults()[setting.key] or NOT_EMPTY[setting.key]
    from_environment = resolve_in_home(str(tmp_path), environ={setting.key: in_environment})
    assert from_environment[setting.option] == typed_value(setting.key, in_environment), "the environment wins over the file"

    given = in_environment if setting.default == "" else setting.default
    explicit = resolve_in_home(str(tmp_path), {setting.option: given}, {setting.key: in_file})
    assert explicit[setting.option] == typed_value(setting.key, given), "an explicit value wins over everything"


def test_none_and_empty_mean_not_given():
    assert resolve({"memory": None}, {"WORKER_MEMORY": ""}, {"WORKER_MEMORY": ""})["memory"] == "4g"


@pytest.mark.parametrize("values,words", [
    ({"WORKER_MEMORY": "lots"}, ["WORKER_MEMORY", "lots"]),
    ({"WORKER_CPUS": "0"}, ["WORKER_CPUS"]),
    ({"WORKER_PIDS_LIMIT": "-3"}, ["WORKER_PIDS_LIMIT"]),
    ({"ENABLE_POOL_MANAGER": "maybe"}, ["ENABLE_POOL_MANAGER", "true or false"]),
    ({"CHROMADB_PORT": "70000"}, ["CHROMADB_PORT", "1-65535"]),
    ({"MIN_WARM_WORKERS": "6"}, ["MIN_WARM_WORKERS=6", "MAX_WARM_WORKERS=5"]),
    ({"IDLE_TIMEOUT": "1.5"}, ["IDLE_TIMEOUT", "whole number"]),
    ({"SESSION_RECORDS_MAX_AGE": "-1"}, ["SESSION_RECORDS_MAX_AGE", "whole number"]),
    ({"CLAIM_TIMEOUT": "0"}, ["CLAIM_TIMEOUT", "greater than zero"]),
    ({"CLAIM_TIMEOUT": "soon"}, ["CLAIM_TIMEOUT", "seconds"]),
    ({"EGRESS": "closed"}, ["EGRESS", "allowlist", "open"]),
    ({"EGRESS_ALLOW": "pypi.org,169.254.169.254"}, ["EGRESS_ALLOW", "169.254.169.254", "always refused"]),
    ({"EGRESS_ALLOW": "0.0.0.0/0"}, ["EGRESS_ALLOW", "egress: open"]),
])
def test_bad_values_fail_in_one_line_naming_the_setting(values, words):
    with pytest.raises(Hal9000Error) as caught:
        resolve(file_values=values)
    message = str(caught.value)
    assert "\n" not in message and all(word in message for word in words), message
    with pytest.raises(Hal9000Error):
        check_file_settings(values)


def test_the_file_may_not_name_unknown_settings_but_readers_ignore_them():
    with pytest.raises(Hal9000Error, match="Unknown setting WORKER_MEMROY"):
        check_file_settings({"WORKER_MEMROY": "6g"})
    assert resolve(file_values={"SOMETHING_NEWER": "1"}) == resolve()


def test_the_parents_environment_holds_only_explicit_options():
    assert environment({"min_warm_workers": 3, "skip_image_pull": True, "chromadb_port": None}) == {
        "MIN_WARM_WORKERS": "3", "SKIP_IMAGE_PULL": "true",
    }


def test_egress_allow_is_a_list_as_option_and_comma_separated_text_in_the_file():
    as_option = resolve({"egress_allow": ["Example.ORG.", "10.1.0.0/16:5432"]})["egress_allow"]
    assert as_option == ("example.org", "10.1.0.0/16:5432")
    assert environment({"egress_allow": ["Example.ORG.", "10.1.0.0/16:5432"]}) == {"EGRESS_ALLOW": "example.org,10.1.0.0/16:5432"}
    assert resolve(file_values={"EGRESS_ALLOW": "example.org, 10.1.0.0/16:5432,"})["egress_allow"] == as_option
    assert typed_value("EGRESS_ALLOW", as_option) == as_option, "normalised text reads back the same"


def test_read_config_skips_comments_and_blank_lines(tmp_path):
    path = tmp_path / "hal9000.conf"
    path.write_text("# a comment\n\nWORKER_MEMORY = 6g\nnot a setting\n")
    assert read_config(str(path)) == {"WORKER_MEMORY": "6g"}
    assert read_config(str(tmp_path / "missing.conf")) == {}


def test_an_unreadable_file_is_one_line(tmp_path):
    with pytest.raises(Hal9000Error, match="Cannot read"):
        read_config(str(tmp_path))  # a directory: not readable as a file
