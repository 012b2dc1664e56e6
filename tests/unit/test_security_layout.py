"""The home layout stays below the home and never follows a link; removing it never reaches kept data.

Real files in a temporary directory, no mocks. "outside" stands for what a planted name or link would reach
(the user's ~/.ssh, /etc): it must come out of every refused call exactly as it went in.
"""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.home import LAYOUT, ensure_home, remove_layout
from ansible_collections.hal9000.dind.plugins.module_utils.manifest import manifest_of_directory

SETTINGS = {"WORKER_MEMORY": "4g"}


@pytest.fixture
def user(tmp_path):
    """A user's home holding .ssh and the HAL-9000 home, laid out."""
    user = tmp_path / "user"
    (user / ".ssh").mkdir(parents=True, mode=0o700)
    (user / ".ssh" / "authorized_keys").write_text("ssh-ed25519 AAAA owner\n")
    ensure_home(str(user / ".hal9000"), LAYOUT, SETTINGS, False)
    (user / ".hal9000" / "backups" / "pre-dind-20260101-000000").mkdir(parents=True)
    (user / ".hal9000" / "secrets").mkdir()
    (user / ".hal9000" / "secrets" / "anthropic_key").write_text("sk-test")
    return user


@pytest.fixture
def outside(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    outside.chmod(0o755)
    (outside / "passwd").write_text("root:x:0:0\n")
    (outside / "passwd").chmod(0o644)
    return outside


def snapshot(*paths):
    return {str(path): manifest_of_directory(str(path)) for path in paths}


def refusal(call, *words):
    with pytest.raises(Hal9000Error) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, message
    return message


# --- names: below the home, on every path ---------------------------------------------------------------


@pytest.mark.parametrize("entry", ["..", ".", "../.ssh", "logs/../..", "logs/.", "/etc", "", "a//b"])
def test_removing_a_name_outside_the_home_is_refused_and_removes_nothing(user, entry):
    before = snapshot(user)
    for check_mode in (True, False):
        refusal(lambda: remove_layout(str(user / ".hal9000"), ["sessions", entry], check_mode), "below the home")
    assert snapshot(user) == before


@pytest.mark.parametrize("entry", [".", "..", "logs/.."])
def test_laying_out_a_name_outside_the_home_is_refused(user, entry):
    before = snapshot(user)
    refusal(lambda: ensure_home(str(user / ".hal9000"), [entry], SETTINGS, False, 0o755), "below the home")
    assert snapshot(user) == before


@pytest.mark.parametrize("entry", ["backups", "secrets", "secrets/keys", "migration", "chromadb", "membank", "plugins",
                                   "claude", "volume-exports-20260101-000000", "chromadb.before-rollback-20260101-000000"])
def test_removing_kept_data_is_refused(user, entry):
    before = snapshot(user)
    refusal(lambda: remove_layout(str(user / ".hal9000"), ["logs", entry], False), "never removed", entry.split("/")[0])
    assert snapshot(user) == before


def test_remove_takes_exactly_the_layout_and_check_mode_nothing(user):
    home = user / ".hal9000"
    (home / "logs" / "parent.log").write_text("log")
    before = snapshot(user)
    planned = remove_layout(str(home), list(LAYOUT) + ["never/made"], True)
    assert planned == [f"removed {home / name}" for name in LAYOUT]
    assert snapshot(user) == before
    assert remove_layout(str(home), list(LAYOUT), False) == planned
    assert sorted(os.listdir(home)) == ["backups", "secrets"]
    assert (home / "secrets" / "anthropic_key").read_text() == "sk-test"
    assert remove_layout(str(home), list(LAYOUT), False) == []
    assert remove_layout(str(user / "never made"), list(LAYOUT), False) == []


# --- links: never followed -------------------------------------------------------------------------------


def plant(link, target):
    if os.path.isdir(link) and not os.path.islink(link):
        for entry in os.listdir(link):
            os.unlink(os.path.join(link, entry))
        os.rmdir(link)
    elif os.path.lexists(link):
        os.unlink(link)
    os.symlink(target, link)


@pytest.mark.parametrize("name", ["logs", "config", "sessions", "workers"])
def test_a_planted_directory_link_is_refused_by_lay_out_and_remove(user, outside, name):
    home = user / ".hal9000"
    plant(home / name, outside)
    before = snapshot(user, outside)
    mode = stat.S_IMODE(os.stat(outside).st_mode)
    for call in (lambda: ensure_home(str(home), LAYOUT, dict(SETTINGS, WORKER_MEMORY="8g"), False),
                 lambda: ensure_home(str(home), LAYOUT, SETTINGS, True),
                 lambda: remove_layout(str(home), LAYOUT, False),
                 lambda: remove_layout(str(home), LAYOUT, True)):
        refusal(call, f"{home / name} is a symbolic link (to {outside})", "Remove the link")
    assert snapshot(user, outside) == before
    assert stat.S_IMODE(os.stat(outside).st_mode) == mode == 0o755
    assert not (outside / "hal9000.conf").exists()


def test_a_link_refused_before_anything_is_made(tmp_path, outside):
    home = tmp_path / "fresh"
    home.mkdir()
    (home / "workers").symlink_to(outside)
    refusal(lambda: ensure_home(str(home), LAYOUT, SETTINGS, False), "workers is a symbolic link")
    assert sorted(os.listdir(home)) == ["workers"], "nothing made before the refusal"


def test_a_planted_config_file_link_is_refused(user, outside):
    home = user / ".hal9000"
    plant(home / "config" / "hal9000.conf", outside / "passwd")
    before = snapshot(user, outside)
    refusal(lambda: ensure_home(str(home), LAYOUT, dict(SETTINGS, WORKER_MEMORY="8g"), False), "hal9000.conf is a symbolic link")
    assert snapshot(user, outside) == before
    assert (outside / "passwd").read_text() == "root:x:0:0\n"
    assert stat.S_IMODE(os.stat(outside / "passwd").st_mode) == 0o644


def test_a_link_above_a_nested_entry_and_a_linked_home_are_refused(user, outside):
    home = user / ".hal9000"
    plant(home / "workers", outside)
    (outside / "deeper").mkdir()
    linked = user / "linked-home"
    linked.symlink_to(outside)
    before = snapshot(user, outside)
    refusal(lambda: ensure_home(str(home), ["workers/deeper"], SETTINGS, False, 0o700), "workers is a symbolic link")
    refusal(lambda: remove_layout(str(home), ["workers/deeper"], False), "workers is a symbolic link")
    refusal(lambda: ensure_home(str(linked), LAYOUT, SETTINGS, False), "linked-home is a symbolic link")
    refusal(lambda: remove_layout(str(linked), ["deeper"], False), "linked-home is a symbolic link")
    assert snapshot(user, outside) == before


def test_links_inside_a_removed_directory_are_removed_not_followed(user, outside):
    home = user / ".hal9000"
    (home / "sessions" / "to-outside").symlink_to(outside)
    before = snapshot(outside)
    remove_layout(str(home), ["sessions"], False)
    assert not (home / "sessions").exists()
    assert snapshot(outside) == before


def test_lay_out_still_makes_fixes_and_writes_as_before(tmp_path):
    home = tmp_path / "a" / "b" / "hal9000"
    actions, previous, text = ensure_home(str(home), ["logs", "nested/deeper"], SETTINGS, False, 0o750)
    assert previous is None and (home / "config" / "hal9000.conf").read_text() == text
    assert actions == [f"created {home}", f"created {home / 'logs'}", f"created {home / 'nested/deeper'}",
                       f"created {home / 'config'}", f"wrote {home / 'config' / 'hal9000.conf'}"]
    for sub in ("", "logs", "nested", "nested/deeper", "config"):
        assert stat.S_IMODE(os.stat(home / sub).st_mode) == 0o750, sub
    assert stat.S_IMODE(os.stat(home / "config" / "hal9000.conf").st_mode) == 0o600
    os.chmod(home / "config" / "hal9000.conf", 0o644)
    assert ensure_home(str(home), ["logs", "nested/deeper"], SETTINGS, False, 0o750)[0] == [
        f"changed the mode of {home / 'config' / 'hal9000.conf'} from 0644 to 0600"]
    assert ensure_home(str(home), ["logs", "nested/deeper"], SETTINGS, False, 0o750)[0] == []
    assert not [p for p in os.listdir(home / "config") if p != "hal9000.conf"], "no temporary file left"
