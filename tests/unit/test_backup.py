"""The backup library (create, list, verify, restore, inspect) on real files; no Docker, no mocks."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import subprocess

import pytest

from ansible_collections.hal9000.dind.plugins.module_utils.backup import (
    MANIFEST,
    chroma_collections,
    create_backup,
    inspect_sources,
    list_backups,
    restore_backup,
    verify_backup,
)
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.manifest import differences, manifest_of_directory, summary
from trees import AS_ROOT, assert_same_tree, make_tree


@pytest.fixture
def home(tmp_path):
    home = tmp_path / "home"
    make_tree(home / "chromadb", 1)
    make_tree(home / "membank", 2)
    return home


def test_create_copies_exactly_and_writes_a_complete_manifest(home):
    result = create_backup(str(home))
    backup = result["backup"]
    assert result["changed"] and result["verified"] and backup["complete"]
    assert result["missing"] == {"plugins": str(home / "plugins")}
    assert backup["contents"] == ["chromadb", "membank"]
    assert backup["name"].startswith("pre-dind-") and os.path.dirname(backup["path"]) == str(home / "backups")
    for name in ("chromadb", "membank"):
        assert_same_tree(home / name, os.path.join(backup["path"], name))
    manifest = json.loads(open(os.path.join(backup["path"], MANIFEST), encoding="utf-8").read())
    assert manifest["complete"] is True
    assert manifest["source_version"] == "v0.5.x" and manifest["target_version"] == "0.6.x-dind"
    assert manifest["hal9000_home"] == str(home)
    record = manifest["directories"]["chromadb"]
    expected = summary(manifest_of_directory(str(home / "chromadb")))
    assert {k: record[k] for k in expected} == expected
    assert record["source"] == str(home / "chromadb")
    assert stat.S_IMODE(os.stat(backup["path"]).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(backup["path"], MANIFEST)).st_mode) == 0o600


def test_create_in_check_mode_touches_nothing_but_reports_the_plan(home):
    before = manifest_of_directory(str(home))
    result = create_backup(str(home), check_mode=True)
    assert manifest_of_directory(str(home)) == before
    assert not (home / "backups").exists()
    assert result["changed"] and not result["verified"] and not result["backup"]["complete"]
    assert result["backup"]["directories"]["membank"]["digest"] == summary(manifest_of_directory(str(home / "membank")))["digest"]
    assert any("skip plugins" in line for line in result["actions"])


def interrupted_backup(home, name, writer):
    path = home / "backups" / name
    (path / "chromadb").mkdir(parents=True)
    (path / "chromadb" / "half").write_text("half")
    if writer is not None:
        (path / ".writer").write_text(f"{writer}\n")
    return path


def test_create_removes_the_incomplete_backups_of_interrupted_runs_only(home):
    gone = subprocess.Popen(["true"])
    gone.wait()
    host = socket.gethostname()
    abandoned = interrupted_backup(home, "pre-dind-20250101-000000", f"{host}:{gone.pid}")
    kept = {
        "writing now": interrupted_backup(home, "pre-dind-20250102-000000", f"{host}:{os.getppid()}"),
        "another host": interrupted_backup(home, "pre-dind-20250103-000000", f"elsewhere:{gone.pid}"),
        "no writer recorded": interrupted_backup(home, "pre-dind-20250104-000000", None),
    }
    plan = create_backup(str(home), check_mode=True)
    assert plan["actions"][0] == f"remove incomplete backup {abandoned} (its run was interrupted)", plan["actions"]
    assert abandoned.exists()
    result = create_backup(str(home))
    assert result["actions"][0] == plan["actions"][0] and not abandoned.exists()
    assert all(path.exists() for path in kept.values())
    assert not os.path.exists(os.path.join(result["backup"]["path"], ".writer")), "a complete backup names no writer"
    assert [b["complete"] for b in list_backups(str(home))] == [True, False, False, False]
    # Killed after its manifest was written, before the writer was removed: complete, so kept.
    (home / "backups" / result["backup"]["name"] / ".writer").write_text(f"{host}:{gone.pid}\n")
    assert create_backup(str(home))["actions"][0].startswith("create backup "), "complete backups are never removed"
    assert os.path.isdir(result["backup"]["path"])


def test_create_with_no_source_fails_and_writes_nothing(tmp_path):
    with pytest.raises(Hal9000Error, match="nothing to back up"):
        create_backup(str(tmp_path))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "sources, message",
    [
        ({"../x": "/tmp/x"}, "not allowed"),
        ({"manifest.json": "/tmp/x"}, "not allowed"),
        ({"a": "relative/path"}, "not an absolute path"),
        ({"a": "/srv/data", "b": "/srv/data/inner"}, "overlap"),
        ({"a": "/"}, "not allowed"),
    ],
)
def test_bad_sources_are_refused(tmp_path, sources, message):
    with pytest.raises(Hal9000Error, match=message):
        create_backup(str(tmp_path), sources)


def test_list_is_newest_first_marks_incomplete_and_is_empty_without_backups(home, tmp_path):
    assert list_backups(str(tmp_path / "nowhere")) == []
    assert list_backups(str(home)) == []
    first = create_backup(str(home))["backup"]
    second = create_backup(str(home))["backup"]  # same second: a -1 suffix keeps the order
    interrupted = home / "backups" / "pre-dind-29991231-235959"
    (interrupted / "chromadb").mkdir(parents=True)
    (interrupted / "chromadb" / "half").write_bytes(b"x" * 1000)
    (home / "backups" / "not-a-backup").mkdir()
    listed = list_backups(str(home))
    assert [b["path"] for b in listed] == [str(interrupted), second["path"], first["path"]]
    assert [b["complete"] for b in listed] == [False, True, True]
    assert listed[0]["contents"] == ["chromadb"] and listed[0]["bytes"] == 1000
    assert listed[0]["created_at"].startswith("2999-12-31T23:59:59")
    assert listed[1]["contents"] == ["chromadb", "membank"]
    assert listed[1]["bytes"] == second["bytes"] > 0
    assert listed[1]["created_at"] == second["created_at"]
    # The interrupted backup is never chosen, nor restorable.
    assert verify_backup(str(home))["backup"]["path"] == second["path"]
    with pytest.raises(Hal9000Error, match="incomplete"):
        verify_backup(str(home), str(interrupted))
    with pytest.raises(Hal9000Error, match="incomplete"):
        restore_backup(str(home), str(interrupted))


def test_a_manifest_without_complete_true_is_incomplete(home):
    path = create_backup(str(home))["backup"]["path"]
    manifest_file = os.path.join(path, MANIFEST)
    data = json.loads(open(manifest_file, encoding="utf-8").read())
    data["complete"] = False
    with open(manifest_file, "w", encoding="utf-8") as out:
        json.dump(data, out)
    assert list_backups(str(home))[0]["complete"] is False
    with pytest.raises(Hal9000Error, match="No complete backup"):
        restore_backup(str(home))


@pytest.mark.parametrize("damage", ["content", "mode", "extra", "missing"])
def test_verify_finds_any_change(home, damage):
    path = create_backup(str(home))["backup"]["path"]
    assert verify_backup(str(home), path)["verified"]
    target = os.path.join(path, "membank", "dir with spaces", "plain.bin")
    if damage == "content":
        with open(target, "r+b") as handle:
            first = handle.read(1)
            handle.seek(0)
            handle.write(bytes([first[0] ^ 1]) if first else b"z")
    elif damage == "mode":
        os.chmod(target, 0o666)
    elif damage == "extra":
        open(os.path.join(path, "membank", "new file"), "w", encoding="utf-8").close()
    else:
        os.unlink(target)
    result = verify_backup(str(home), path)
    assert not result["verified"]
    assert any(line.startswith("membank/") for line in result["problems"]), result["problems"]
    with pytest.raises(Hal9000Error, match="nothing was restored"):
        restore_backup(str(home), path)


def test_restore_replaces_keeps_the_old_content_aside_and_is_idempotent(home):
    backup = create_backup(str(home))["backup"]["path"]
    pristine = {name: manifest_of_directory(os.path.join(backup, name)) for name in ("chromadb", "membank")}
    # After the migration: one directory changed (a file added, one modified), one removed, a new plugins dir.
    (home / "chromadb" / "added after").write_text("new")
    (home / "chromadb" / "plain.bin").write_bytes(b"changed")
    changed_chromadb = manifest_of_directory(str(home / "chromadb"))
    os.rename(home / "membank", home / "membank-gone")
    (home / "plugins").mkdir()
    (home / "plugins" / "p").write_text("plugin")

    plan = restore_backup(str(home), check_mode=True)
    assert plan["changed"] and not plan["verified"]
    assert {n: e["state"] for n, e in plan["restored"].items()} == {
        "chromadb": "different", "membank": "missing", "plugins": "different"}
    assert manifest_of_directory(str(home / "chromadb")) == changed_chromadb
    assert not (home / "membank").exists()

    result = restore_backup(str(home))
    assert result["changed"] and result["verified"]
    for name in ("chromadb", "membank"):
        assert_same_tree(os.path.join(backup, name), home / name)
        assert not differences(pristine[name], manifest_of_directory(str(home / name)), ownership=AS_ROOT)
    # Replaced, not merged: the file added after the backup is gone from the target, kept aside.
    aside = result["restored"]["chromadb"]["kept_aside"]
    assert ".before-rollback-" in aside and not (home / "chromadb" / "added after").exists()
    assert manifest_of_directory(aside) == changed_chromadb
    assert not (home / "plugins").exists()
    assert (home / (os.path.basename(result["restored"]["plugins"]["kept_aside"])) / "p").read_text() == "plugin"
    assert result["restored"]["membank"]["kept_aside"] is None
    assert not [p for p in os.listdir(home) if ".hal9000-restore-partial-" in p]

    again = restore_backup(str(home))
    assert not again["changed"] and again["actions"] == [] and again["verified"]
    assert {e["state"] for e in again["restored"].values()} == {"matching", "missing"}


def test_restore_removes_its_own_leftover_from_an_interrupted_restore(home):
    backup = create_backup(str(home))["backup"]["path"]
    leftover = home / "chromadb.hal9000-restore-partial-deadbeef"
    (leftover / "half").mkdir(parents=True)
    (home / "membank" / "plain.bin").write_bytes(b"changed")
    result = restore_backup(str(home), backup, paths={"membank": str(home / "membank")})
    assert not leftover.exists()
    assert result["restored"]["chromadb"]["state"] == "matching"
    assert_same_tree(os.path.join(backup, "membank"), home / "membank")


def test_restore_into_other_paths_and_unknown_names(home, tmp_path):
    backup = create_backup(str(home))["backup"]["path"]
    other = tmp_path / "elsewhere"
    other.mkdir()
    restore_backup(str(home), backup, paths={"chromadb": str(other / "c"), "membank": str(other / "m"),
                                             "plugins": str(other / "p")})
    assert_same_tree(home / "chromadb", other / "c")
    assert_same_tree(home / "membank", other / "m")
    with pytest.raises(Hal9000Error, match="does not know"):
        restore_backup(str(home), backup, paths={"nope": str(other / "n")})
    with pytest.raises(Hal9000Error, match="parent directory"):
        restore_backup(str(home), backup, paths={"chromadb": str(other / "no" / "such")})


def make_chroma(directory, names, wal=False):
    directory.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(directory / "chroma.sqlite3")
    if wal:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA wal_autocheckpoint=0")
    connection.execute("CREATE TABLE collections (id TEXT PRIMARY KEY, name TEXT NOT NULL)")
    connection.executemany("INSERT INTO collections VALUES (?, ?)", [(str(i), n) for i, n in enumerate(names)])
    connection.commit()
    return connection  # kept open: with WAL the rows stay in the -wal file


@pytest.mark.parametrize("wal", [False, True])
def test_inspect_reads_chroma_collections_without_touching_the_source(tmp_path, wal):
    home = tmp_path / "home"
    connection = make_chroma(home / "chromadb", ["notes", "code-index"], wal=wal)
    try:
        if wal:
            assert (home / "chromadb" / "chroma.sqlite3-wal").stat().st_size > 0
        (home / "plugins").mkdir()
        (home / "plugins" / "a").write_bytes(b"12345")
        before = manifest_of_directory(str(home))
        report = inspect_sources(str(home))
        assert manifest_of_directory(str(home)) == before
    finally:
        connection.close()
    sources = report["sources"]
    assert not report["changed"] and report["hal9000_home"] == str(home)
    assert sources["chromadb"]["exists"] and sources["chromadb"]["chromadb_collections"] == ["code-index", "notes"]
    assert sources["membank"] == {"path": str(home / "membank"), "exists": False, "files": 0, "dirs": 0, "symlinks": 0,
                                  "bytes": 0, "size_human": "0 B", "chromadb_collections": None}
    assert sources["plugins"]["files"] == 1 and sources["plugins"]["bytes"] == 5


def test_an_unreadable_chroma_database_is_one_line(tmp_path):
    (tmp_path / "chroma.sqlite3").write_bytes(b"not a database at all" * 100)
    with pytest.raises(Hal9000Error, match="Cannot read the ChromaDB collections"):
        chroma_collections(str(tmp_path))
    assert chroma_collections(str(tmp_path / "missing")) is None
