"""Claude homes on the host: made for the worker's uid, adopted at a claim, refused when unsafe (no Docker here)."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.hal9000.dind.plugins.module_utils.claude_homes import (
    PLUGINS_IN_WORKER,
    adopt_home,
    home_path,
    home_sizes,
    managed_settings,
    prepare_home,
    purge_home,
    record_user,
    recorded_user,
    write_managed_settings,
)
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.files import make_private_dirs, write_atomically


@pytest.fixture
def home(tmp_path):
    path = tmp_path / "home"
    path.mkdir(mode=0o700)
    os.chown(path, 4242, 4242)  # a user's home, written into by root
    return str(path)


def owner(path):
    info = os.lstat(path)
    return info.st_uid, info.st_gid


def test_a_home_belongs_to_the_worker_and_links_the_plugins(home):
    path = prepare_home(home, "alpha", 1001, 1001)
    assert path == os.path.join(home, "workers", "alpha")
    assert owner(path) == (1001, 1001) and os.stat(path).st_mode & 0o777 == 0o700
    assert owner(os.path.join(path, ".claude")) == (1001, 1001)
    assert os.readlink(os.path.join(path, ".claude", "plugins")) == PLUGINS_IN_WORKER
    assert owner(os.path.join(home, "workers")) == (4242, 4242), "workers/ is the home owner's"


def test_a_home_of_another_uid_is_handed_over_whole(home):
    path = prepare_home(home, "alpha", 1001, 1001)
    with open(os.path.join(path, ".claude.json"), "w", encoding="utf-8") as handle:
        handle.write("{}")
    prepare_home(home, "alpha", 2002, 2002)
    assert {owner(os.path.join(root, entry)) for root, dirs, files in os.walk(path) for entry in dirs + files} == {(2002, 2002)}


@pytest.mark.parametrize("name", ["../escape", "a/b", "", "-x", ".warm-"])
def test_names_that_would_leave_the_workers_directory_are_refused(home, name):
    with pytest.raises(Hal9000Error):
        prepare_home(home, name, 1001, 1001)
    assert not os.path.exists(os.path.join(home, "workers")), "refused before anything is made"


def test_a_home_that_is_a_symlink_is_refused_and_nothing_is_made(home, tmp_path):
    os.makedirs(os.path.join(home, "workers"))
    os.symlink(str(tmp_path), os.path.join(home, "workers", "alpha"))
    with pytest.raises(Hal9000Error, match="symbolic link"):
        prepare_home(home, "alpha", 1001, 1001)
    assert not os.path.exists(tmp_path / ".claude")


def test_a_workers_directory_that_is_a_symlink_is_refused(home, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    os.symlink(str(target), os.path.join(home, "workers"))
    with pytest.raises(Hal9000Error, match="symbolic link"):
        home_path(home, "alpha")
    with pytest.raises(Hal9000Error):
        prepare_home(home, "alpha", 1001, 1001)
    assert os.listdir(target) == []


def test_a_claim_renames_the_warm_home_and_keeps_what_the_name_left(home):
    earlier = prepare_home(home, "alpha", 1001, 1001)
    with open(os.path.join(earlier, ".claude", "history.jsonl"), "w", encoding="utf-8") as handle:
        handle.write("earlier session\n")
    warm = prepare_home(home, ".warm-hal9000-warm-1", 1001, 1001)
    inode = os.stat(warm).st_ino  # the inode the warm container has mounted
    with open(os.path.join(warm, ".claude", "idle"), "w", encoding="utf-8") as handle:
        handle.write("warm worker's own")
    adopted = adopt_home(home, ".warm-hal9000-warm-1", "alpha", 1001, 1001)
    assert os.stat(adopted).st_ino == inode, "the running container keeps its mount"
    with open(os.path.join(adopted, ".claude", "history.jsonl"), encoding="utf-8") as handle:
        assert handle.read() == "earlier session\n"
    assert not os.path.exists(os.path.join(adopted, ".claude", "idle"))
    assert sorted(os.listdir(os.path.join(home, "workers"))) == ["alpha"]


def test_a_claim_under_a_new_name_is_a_rename(home):
    warm = prepare_home(home, ".warm-hal9000-warm-2", 1001, 1001)
    inode = os.stat(warm).st_ino
    assert os.stat(adopt_home(home, ".warm-hal9000-warm-2", "beta", 1001, 1001)).st_ino == inode


def test_purge_sizes_and_user_records(home):
    path = prepare_home(home, "alpha", 1001, 1001)
    with open(os.path.join(path, "data"), "wb") as handle:
        handle.write(b"x" * 5000)
    record_user(home, "alpha", "c" * 64)
    assert recorded_user(home, "alpha") == "c" * 64
    assert owner(os.path.join(home, "run", "homes", "alpha")) == (4242, 4242)
    assert home_sizes(home)["alpha"] >= 5000
    assert purge_home(home, "alpha") is True
    assert not os.path.exists(path) and recorded_user(home, "alpha") is None
    assert purge_home(home, "alpha") is False


def test_an_unprivileged_caller_is_told_before_anything_is_made(home, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    with pytest.raises(PermissionError):
        prepare_home(home, "alpha", 1001, 1001)
    assert not os.path.exists(os.path.join(home, "workers"))


def test_managed_settings_enable_every_installed_plugin(home, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    assert managed_settings(str(plugins)) == {"enabledPlugins": {}}
    (plugins / "installed_plugins.json").write_text(json.dumps(
        {"version": 2, "plugins": {"hello@team-tools": [{"scope": "user"}], "lint@team-tools": []}}))
    assert managed_settings(str(plugins)) == {"enabledPlugins": {"hello@team-tools": True, "lint@team-tools": True}}
    assert write_managed_settings(home, str(plugins)) is True
    assert write_managed_settings(home, str(plugins)) is False, "unchanged: not rewritten"
    written = os.path.join(home, "run", "relay", "client", "managed-settings.json")
    assert os.stat(written).st_mode & 0o777 == 0o644 and owner(written) == (4242, 4242)
    (plugins / "installed_plugins.json").write_text("not json")
    assert managed_settings(str(plugins)) == {"enabledPlugins": {}}


def test_files_root_writes_belong_to_the_home_owner(home):
    directory = make_private_dirs(os.path.join(home, "run", "deep", "er"), home)
    write_atomically(os.path.join(directory, "f"), "text", 0o600, home)
    for path in ("run", "run/deep", "run/deep/er", "run/deep/er/f"):
        assert owner(os.path.join(home, path)) == (4242, 4242), path
    assert os.stat(os.path.join(directory, "f")).st_mode & 0o777 == 0o600


def test_a_claim_takes_over_a_home_an_earlier_worker_of_another_uid_left(home):
    earlier = prepare_home(home, "gamma", 2002, 2002)
    with open(os.path.join(earlier, ".claude.json"), "w", encoding="utf-8") as handle:
        handle.write("{}")
    os.chown(os.path.join(earlier, ".claude.json"), 2002, 2002)
    prepare_home(home, ".warm-hal9000-warm-3", 1001, 1001)
    adopted = adopt_home(home, ".warm-hal9000-warm-3", "gamma", 1001, 1001)
    owners = {owner(os.path.join(root, entry)) for root, dirs, files in os.walk(adopted) for entry in dirs + files}
    assert owners == {(1001, 1001)} and owner(adopted) == (1001, 1001), "the claimant's uid can use all of it"
