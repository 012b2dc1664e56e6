"""hal9000.dind.home through ansible-playbook: the home layout and hal9000.conf on the (local) Docker host."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.hal9000.dind.plugins.module_utils.settings import read_config

MODULE = "hal9000.dind.home"
SETTINGS = {"WORKER_MEMORY": "4g", "ENABLE_POOL_MANAGER": False, "MIN_WARM_WORKERS": 2}


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_lays_out_the_home_once_and_the_parent_can_read_the_settings(ansible, tmp_path):
    home = tmp_path / "hal9000"
    first = ansible.task(MODULE, {"path": str(home), "settings": SETTINGS})
    assert first["changed"] is True, first
    for sub in ("", "sessions", "logs", "config", "workers"):
        assert (home / sub).is_dir() and mode_of(home / sub) == 0o700, sub
    config = home / "config" / "hal9000.conf"
    assert first["config_file"] == str(config) and mode_of(config) == 0o600
    # What the parent's entrypoint reads back.
    assert read_config(str(config)) == {"WORKER_MEMORY": "4g", "ENABLE_POOL_MANAGER": "false", "MIN_WARM_WORKERS": "2"}

    again = ansible.task(MODULE, {"path": str(home), "settings": SETTINGS})
    assert again["changed"] is False and again["actions"] == [], again


def test_check_mode_creates_nothing_and_diff_shows_the_config(ansible, tmp_path):
    home = tmp_path / "hal9000"
    planned = ansible.task(MODULE, {"path": str(home), "settings": SETTINGS}, check_mode=True, diff=True)
    assert planned["changed"] is True and f"wrote {home}/config/hal9000.conf" in planned["actions"], planned
    assert not home.exists()
    assert planned["diff"]["before"] == "" and "WORKER_MEMORY=4g" in planned["diff"]["after"]

    ansible.task(MODULE, {"path": str(home), "settings": SETTINGS})
    changed = dict(SETTINGS, WORKER_MEMORY="8g")
    diff = ansible.task(MODULE, {"path": str(home), "settings": changed}, check_mode=True, diff=True)
    assert diff["changed"] is True and "WORKER_MEMORY=4g" in diff["diff"]["before"] and "WORKER_MEMORY=8g" in diff["diff"]["after"]
    assert read_config(str(home / "config" / "hal9000.conf"))["WORKER_MEMORY"] == "4g", "check mode wrote the file"


def test_modes_are_put_right_and_other_files_are_left_alone(ansible, tmp_path):
    home = tmp_path / "hal9000"
    ansible.task(MODULE, {"path": str(home)})
    os.chmod(home / "logs", 0o755)
    (home / "secrets").mkdir(mode=0o700)
    (home / "secrets" / "anthropic_key").write_text("sk-test")
    fixed = ansible.task(MODULE, {"path": str(home)})
    assert fixed["actions"] == [f"changed the mode of {home}/logs from 0755 to 0700"], fixed
    assert mode_of(home / "logs") == 0o700
    assert (home / "secrets" / "anthropic_key").read_text() == "sk-test"


@pytest.mark.parametrize("args, words", [
    ({"settings": {"worker_memory": "4g"}}, "Unknown setting worker_memory"),
    ({"settings": {"WORKER_MEMORY": "lots"}}, "WORKER_MEMORY"),
    ({"settings": {"MIN_WARM_WORKERS": 9}}, "MAX_WARM_WORKERS=5"),
    ({"settings": {"WORKER_MEMORY": "4g\nEVIL=1"}}, "one line"),
    ({"directories": ["../outside"]}, "relative path"),
    ({"directories": ["/etc/hal9000"]}, "relative path"),
    ({"mode": "rwx"}, "octal"),
])
def test_bad_input_is_refused_before_anything_is_made(ansible, tmp_path, args, words):
    home = tmp_path / "hal9000"
    result = ansible.task(MODULE, dict({"path": str(home)}, **args))
    assert result["failed"] is True and words in result["msg"] and "\n" not in result["msg"], result
    assert not home.exists()
    assert not (tmp_path / "outside").exists()


def test_a_file_in_the_way_is_a_one_line_refusal(ansible, tmp_path):
    home = tmp_path / "hal9000"
    home.write_text("not a directory")
    result = ansible.task(MODULE, {"path": str(home)})
    assert result["failed"] is True and "is not a directory" in result["msg"] and "\n" not in result["msg"], result
    assert home.read_text() == "not a directory"
