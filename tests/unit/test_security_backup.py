"""A backup restores only to the v0.5.x directories of the home it is restored into, whatever its manifest says.

Real files, no mocks: the "victims" are directories outside the home that a planted or foreign manifest names.
"""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.hal9000.dind.plugins.module_utils.backup import MANIFEST, create_backup, restore_backup, verify_backup
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.manifest import manifest_of_directory
from trees import make_tree


@pytest.fixture
def home(tmp_path):
    home = tmp_path / "home"
    make_tree(home / "chromadb", 1)
    return home


@pytest.fixture
def victim(tmp_path):
    """Stands for /etc or ~/.ssh: a directory outside the home that must never be renamed aside or replaced."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "authorized_keys").write_text("ssh-ed25519 AAAA owner\n")
    return victim


def untouched(tmp_path, victim, before):
    assert manifest_of_directory(str(victim)) == before
    assert not [p for p in os.listdir(tmp_path) if ".before-rollback-" in p or ".hal9000-restore-partial-" in p]


def refused(call, *words):
    with pytest.raises(Hal9000Error) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message and "Nothing was changed" in message, message
    for word in words:
        assert word in message, message
    return message


def test_a_foreign_backup_naming_another_destination_is_refused(home, victim, tmp_path):
    # A complete, self-consistent backup whose manifest says chromadb came from the victim (rollback_backup=PATH).
    foreign = tmp_path / "foreign"
    make_tree(foreign / "payload", 2)
    backup = create_backup(str(foreign), {"chromadb": str(foreign / "payload")})["backup"]["path"]
    manifest = json.loads(open(os.path.join(backup, MANIFEST), encoding="utf-8").read())
    manifest["directories"]["chromadb"]["source"] = str(victim)
    with open(os.path.join(backup, MANIFEST), "w", encoding="utf-8") as out:
        json.dump(manifest, out)
    before, home_before = manifest_of_directory(str(victim)), manifest_of_directory(str(home))
    refused(lambda: restore_backup(str(home), backup), str(victim), str(home))
    refused(lambda: restore_backup(str(home), backup, check_mode=True), str(victim))
    refused(lambda: verify_backup(str(home), backup), str(victim))
    untouched(tmp_path, victim, before)
    assert manifest_of_directory(str(home)) == home_before


def test_a_planted_backup_in_backups_is_refused_even_as_the_newest(home, victim, tmp_path):
    create_backup(str(home))
    # Anything that can write into backups/ plants a newer backup whose manifest names the victim.
    planted = create_backup(str(home))["backup"]["path"]
    newest = os.path.join(str(home / "backups"), "pre-dind-29991231-235959")
    os.rename(planted, newest)
    manifest_file = os.path.join(newest, MANIFEST)
    manifest = json.loads(open(manifest_file, encoding="utf-8").read())
    manifest["directories"]["chromadb"]["source"] = str(victim)
    with open(manifest_file, "w", encoding="utf-8") as out:
        json.dump(manifest, out)
    before = manifest_of_directory(str(victim))
    refused(lambda: restore_backup(str(home)), newest, str(victim))
    untouched(tmp_path, victim, before)


@pytest.mark.parametrize("tamper, word", [
    (lambda m, victim: m["missing"].update(plugins=victim), "victim"),  # a skipped source is moved aside when it exists
    (lambda m, victim: m["missing"].update(ssh=victim), "'ssh'"),
    (lambda m, victim: m["directories"].update(ssh=dict(m["directories"]["chromadb"], source=victim)), "'ssh'"),
    (lambda m, victim: m["directories"]["chromadb"].update(source=victim + "/../home/chromadb"), "chromadb"),
    (lambda m, victim: m["directories"]["chromadb"].pop("entries"), "no entries"),
])
def test_any_manifest_naming_another_place_or_name_is_refused(home, victim, tmp_path, tamper, word):
    backup = create_backup(str(home))["backup"]["path"]
    manifest_file = os.path.join(backup, MANIFEST)
    manifest = json.loads(open(manifest_file, encoding="utf-8").read())
    tamper(manifest, str(victim))
    with open(manifest_file, "w", encoding="utf-8") as out:
        json.dump(manifest, out)
    (home / "chromadb" / "added later").write_text("x")  # so a restore would have work to do
    before = manifest_of_directory(str(victim))
    home_before = manifest_of_directory(str(home))
    refused(lambda: restore_backup(str(home), backup), word)
    untouched(tmp_path, victim, before)
    assert manifest_of_directory(str(home)) == home_before


def test_a_backup_of_another_home_is_refused_and_this_homes_own_restores(home, tmp_path):
    other = tmp_path / "other home"
    make_tree(other / "membank", 3)
    theirs = create_backup(str(other))["backup"]["path"]
    refused(lambda: restore_backup(str(home), theirs), str(other / "chromadb"), "Use a backup made for this home")
    assert not (home / "membank").exists()
    ours = create_backup(str(home))["backup"]["path"]
    (home / "chromadb" / "added later").write_text("x")
    result = restore_backup(str(home), ours)
    assert result["restored"]["chromadb"]["path"] == str(home / "chromadb") and result["verified"]
    assert not (home / "chromadb" / "added later").exists()
