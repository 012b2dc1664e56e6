"""The host's Claude config copied into a worker's home: what is copied, what never is, and the refresh."""

from __future__ import annotations

import json
import os
import stat

import pytest

from ansible_collections.hal9000.dind.plugins.module_utils.claude_config import MAX_FILE_SIZE, SKIPPED_NAMES, keep_api_key_helper, sync_claude_config
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error

UID, GID = 4242, 4343  # the worker's; the tests run as root


@pytest.fixture(autouse=True)
def as_root():
    if os.geteuid() != 0:
        pytest.skip("gives files to another uid: needs root")


@pytest.fixture()
def paths(tmp_path):
    """(host ~/.claude, the worker's .claude, the state file): the worker's home exists, its .claude not yet."""
    source = tmp_path / "host" / ".claude"
    source.mkdir(parents=True)
    os.chmod(source, 0o700)
    home = tmp_path / "workers" / "w1"
    home.mkdir(parents=True)
    state = tmp_path / "state" / "w1.json"
    return source, home / ".claude", state


def write(path, text, mode=0o600):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
    return path


def sync(paths, **options):
    source, target, state = paths
    return sync_claude_config(str(source), str(target), str(state), UID, GID, **options)


def tree(root):
    """Every entry below ``root`` (relative path: kind), links not followed."""
    found = {}
    for directory, directories, files in os.walk(root):
        for name in directories + files:
            path = os.path.join(directory, name)
            kind = "link" if os.path.islink(path) else "dir" if os.path.isdir(path) else "file"
            found[os.path.relpath(path, root)] = kind
    return found


def test_first_copy_copies_files_and_directories(paths):
    source, target, state = paths
    write(source / "settings.json", '{"theme": "dark"}')
    write(source / "CLAUDE.md", "# memory")
    write(source / "agents" / "reviewer.md", "review")
    write(source / "commands" / "deep" / "x.md", "x")
    assert sync(paths) == [
        f"created {target}", "copied CLAUDE.md", "copied agents/reviewer.md", "copied commands/deep/x.md", "copied settings.json",
    ]
    assert (target / "settings.json").read_text() == '{"theme": "dark"}'
    assert (target / "commands" / "deep" / "x.md").read_text() == "x"
    recorded = json.loads(state.read_text())["files"]
    assert sorted(recorded) == ["CLAUDE.md", "agents/reviewer.md", "commands/deep/x.md", "settings.json"]
    assert sync(paths) == []  # converged


def test_ownership_and_modes_of_what_is_written(paths):
    source, target, state = paths
    write(source / "settings.json", "{}", mode=0o644)
    write(source / "hooks" / "check.sh", "#!/bin/sh\n", mode=0o755)
    umask = os.umask(0)  # the modes come from the sync, not from the umask
    try:
        sync(paths)
    finally:
        os.umask(umask)
    for path, mode in ((target, 0o700), (target / "hooks", 0o700), (target / "settings.json", 0o600), (target / "hooks" / "check.sh", 0o700)):
        info = os.lstat(path)
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (UID, GID, mode), path
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(source).st_mode) == 0o700  # the host's directory keeps its modes
    assert not [name for name in os.listdir(target) if name.startswith(".hal9000")]  # no temporary file left


def test_skip_list(paths):
    source, target = paths[:2]
    for name in SKIPPED_NAMES:
        write(source / name if "." in name else source / name / "x", "private")
    write(source / "settings.json.lock", "")
    write(source / "agents" / "a.lock", "")
    write(source / "agents" / "projects" / "kept.md", "only top-level names are run-time state")
    assert sync(paths) == [f"created {target}", "copied agents/projects/kept.md"]
    assert tree(target) == {"agents": "dir", "agents/projects": "dir", "agents/projects/kept.md": "file"}


def test_credentials_excluded_then_included_then_removed(paths):
    source, target, state = paths
    write(source / ".credentials.json", '{"token": "secret"}')
    write(source / "settings.json", "{}")
    assert sync(paths) == [f"created {target}", "copied settings.json"]
    assert not (target / ".credentials.json").exists()
    assert sync(paths, include_credentials=True) == ["copied .credentials.json"]
    assert (target / ".credentials.json").read_text() == '{"token": "secret"}'
    assert stat.S_IMODE(os.stat(target / ".credentials.json").st_mode) == 0o600
    assert sync(paths, include_credentials=False, check_mode=True) == ["removed .credentials.json"]
    assert (target / ".credentials.json").exists()
    assert sync(paths, include_credentials=False) == ["removed .credentials.json"]
    assert not (target / ".credentials.json").exists()
    assert ".credentials.json" not in json.loads(state.read_text())["files"]
    assert sync(paths) == []


def test_worker_login_of_its_own_is_not_removed(paths):
    target = paths[1]
    sync(paths)
    write(target / ".credentials.json", "the worker's own login")
    assert sync(paths) == []
    assert (target / ".credentials.json").exists()


def test_worker_edit_kept_until_the_host_changes_the_file(paths):
    source, target = paths[:2]
    write(source / "settings.json", "host 1")
    sync(paths)
    (target / "settings.json").write_text("worker's edit")
    assert sync(paths) == []
    assert (target / "settings.json").read_text() == "worker's edit"
    write(source / "settings.json", "host 2")
    assert sync(paths) == ["copied settings.json"]
    assert (target / "settings.json").read_text() == "host 2"


def test_file_deleted_on_the_host_stays_in_the_worker(paths):
    source, target, state = paths
    write(source / "a.md", "a")
    sync(paths)
    (source / "a.md").unlink()
    assert sync(paths) == []
    assert (target / "a.md").read_text() == "a"
    assert json.loads(state.read_text())["files"] == {}
    write(source / "a.md", "a")
    (target / "a.md").write_text("worker")
    assert sync(paths) == ["copied a.md"]  # no record left: the host's file is new again


def test_lost_state_with_identical_copies_copies_nothing(paths):
    source, state = paths[0], paths[2]
    write(source / "settings.json", "{}")
    sync(paths)
    recorded = state.read_text()
    state.unlink()
    assert sync(paths) == []
    assert state.read_text() == recorded


def test_symlinks_in_the_source_are_skipped(paths, tmp_path):
    source, target = paths[:2]
    secret = write(tmp_path / "secret", "root only")
    write(tmp_path / "elsewhere" / "x.md", "x")
    os.symlink(secret, source / "settings.json")
    os.symlink(tmp_path / "elsewhere", source / "agents")
    skipped = []
    assert sync(paths, skipped=skipped) == [f"created {target}"]
    assert tree(target) == {}
    assert skipped == ["agents: a symbolic link", "settings.json: a symbolic link"]


def test_hard_links_are_skipped(paths, tmp_path):
    source, target = paths[:2]
    secret = write(tmp_path / "shadow", "root:$6$hash")
    os.link(secret, source / "settings.json")
    skipped = []
    sync(paths, skipped=skipped)
    assert not (target / "settings.json").exists()
    assert skipped == ["settings.json: a hard link"]


def test_files_of_another_owner_are_skipped(paths):
    source, target = paths[:2]
    write(source / "mine.md", "mine")
    os.chown(write(source / "theirs.md", "theirs"), 1234, 1234)
    os.chown(write(source / "agents" / "a.md", "a").parent, 1234, 1234)
    skipped = []
    assert sync(paths, skipped=skipped) == [f"created {target}", "copied mine.md"]
    assert tree(target) == {"mine.md": "file"}
    assert skipped == [
        "agents: owned by uid 1234, not by the Claude config's owner (uid 0)",
        "theirs.md: owned by uid 1234, not by the Claude config's owner (uid 0)",
    ]


def test_special_and_large_files_are_skipped(paths):
    source, target = paths[:2]
    os.mkfifo(source / "fifo")
    with open(source / "big.bin", "wb") as handle:
        handle.truncate(MAX_FILE_SIZE + 1)
    skipped = []
    assert sync(paths, skipped=skipped) == [f"created {target}"]
    assert skipped == ["big.bin: larger than 20 MiB", "fifo: not a regular file"]


def test_planted_symlink_in_the_target_is_replaced_not_followed(paths, tmp_path):
    source, target = paths[:2]
    outside = write(tmp_path / "outside.json", "untouched")
    write(source / "settings.json", "host 1")
    sync(paths)
    (target / "settings.json").unlink()
    os.symlink(outside, target / "settings.json")
    write(source / "settings.json", "host 2")
    assert sync(paths) == ["copied settings.json"]
    assert not os.path.islink(target / "settings.json")
    assert (target / "settings.json").read_text() == "host 2"
    assert outside.read_text() == "untouched"


def test_planted_directory_symlink_in_the_target_is_replaced(paths, tmp_path):
    source, target = paths[:2]
    outside = tmp_path / "outside"
    outside.mkdir()
    write(source / "agents" / "a.md", "a")
    target.mkdir(mode=0o700)
    os.symlink(outside, target / "agents")
    assert sync(paths, check_mode=True) == ["replaced agents with a directory", "copied agents/a.md"]
    assert os.path.islink(target / "agents")
    assert sync(paths) == ["replaced agents with a directory", "copied agents/a.md"]
    assert tree(target) == {"agents": "dir", "agents/a.md": "file"}
    assert os.listdir(outside) == []


def test_planted_symlink_as_the_target_itself_is_replaced(paths, tmp_path):
    source, target = paths[:2]
    outside = tmp_path / "outside"
    outside.mkdir()
    write(source / "settings.json", "{}")
    os.symlink(outside, target)
    assert sync(paths) == [f"replaced {target} with a directory", "copied settings.json"]
    assert not os.path.islink(target) and os.listdir(outside) == []


def test_check_mode_writes_nothing_and_plans_the_same(paths):
    source, target, state = paths
    write(source / "settings.json", "{}")
    write(source / "agents" / "a.md", "a")
    planned = sync(paths, check_mode=True)
    assert not os.path.lexists(target) and not os.path.lexists(state)
    assert sync(paths) == planned
    write(source / "settings.json", "changed")
    before = (tree(target), state.read_text())
    assert sync(paths, check_mode=True) == ["copied settings.json"]
    assert (tree(target), state.read_text()) == before
    assert (target / "settings.json").read_text() == "{}"


def test_check_mode_before_the_worker_home_exists(paths):
    source, target = paths[:2]
    write(source / "settings.json", "{}")
    os.rmdir(target.parent)
    assert sync(paths, check_mode=True) == [f"created {target}", "copied settings.json"]
    with pytest.raises(Hal9000Error, match="does not exist: create it first"):
        sync(paths)


def test_source_that_is_a_symlink_is_refused_and_nothing_is_created(paths, tmp_path):
    source, target, state = paths
    link = tmp_path / "linked-claude"
    os.symlink(source, link)
    with pytest.raises(Hal9000Error, match="is a symbolic link: set claude_config_dir") as raised:
        sync_claude_config(str(link), str(target), str(state), UID, GID)
    assert "\n" not in str(raised.value)
    assert not os.path.lexists(target) and not os.path.lexists(state)


@pytest.mark.parametrize("case", ["missing", "file", "relative", "state in the home", "source in the home"])
def test_bad_paths_are_refused_before_anything_is_created(paths, tmp_path, case):
    source, target, state = paths
    if case == "missing":
        source = tmp_path / "nowhere"
    elif case == "file":
        source = write(tmp_path / "file", "")
    elif case == "relative":
        target = "w1/.claude"
    elif case == "state in the home":
        state = target.parent / "state.json"
    else:
        source = target.parent / "host-claude"
        source.mkdir()
    with pytest.raises(Hal9000Error):
        sync_claude_config(str(source), str(target), str(state), UID, GID)
    assert not os.path.lexists(paths[1]) and not os.path.lexists(state)


def test_unsafe_state_entries_are_dropped(paths):
    source, target, state = paths
    write(source / "settings.json", "{}")
    state.parent.mkdir()
    state.write_text(json.dumps({"files": {"../escape": "x", "/abs": "y", ".credentials.json": "z"}}))
    assert sync(paths) == [f"created {target}", "copied settings.json"]
    assert sorted(json.loads(state.read_text())["files"]) == ["settings.json"]


def test_a_non_root_run_cannot_give_files_to_another_uid(paths, monkeypatch):
    source, target, state = paths
    write(source / "settings.json", "{}")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(Hal9000Error, match="uid 1000 cannot give files to 4242:4343: run as root or as that user"):
        sync(paths)
    assert not os.path.lexists(target) and not os.path.lexists(state)


def test_the_api_key_helper_stays_and_a_planted_link_is_never_read(tmp_path):
    secret = tmp_path / "roots-secret.json"
    secret.write_text('{"auths": "root only"}')
    settings = tmp_path / "settings.json"
    settings.symlink_to(secret)  # planted by the worker in its own home
    assert keep_api_key_helper(str(settings), "cat /run/secrets/anthropic_key", 4242, 4242) is False
    assert settings.is_symlink() and secret.read_text() == '{"auths": "root only"}'
    settings.unlink()
    settings.write_text('{"model": "host-model"}')
    assert keep_api_key_helper(str(settings), "cat /run/secrets/anthropic_key", 4242, 4242) is True
    assert json.loads(settings.read_text()) == {"model": "host-model", "apiKeyHelper": "cat /run/secrets/anthropic_key"}
    assert settings.stat().st_uid == 4242
    assert keep_api_key_helper(str(settings), "cat /run/secrets/anthropic_key", 4242, 4242) is False
