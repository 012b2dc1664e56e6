# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backups of the v0.5.x host directories: create, list, verify, restore, and a read-only inspection.

A backup is ``<home>/backups/pre-dind-YYYYmmdd-HHMMSS/`` holding one copy per
source directory and ``manifest.json``. The manifest is written last and
atomically, so a backup without one was interrupted and is reported as
incomplete; it records, per directory, the source path, counts, bytes, the
sha256 tree digest (see manifest.py) and every entry, so verify and restore can
name what differs.

Restore replaces, never merges: the backup is copied beside the target and
verified, the existing directory is renamed aside to
``<dir>.before-rollback-YYYYmmdd-HHMMSS`` (never deleted) and the copy renamed
into place. Each directory goes back to ``<home>/<name>`` (the v0.5.x layout),
never to a place its manifest names: a manifest naming another one is refused.

Pure: standard library only, never ``ansible.*`` or docker.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import tempfile

from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.files import write_json_atomically
from ansible_collections.hal9000.dind.plugins.module_utils.manifest import (
    differences,
    iter_directory,
    manifest_of_directory,
    summary,
)
from ansible_collections.hal9000.dind.plugins.module_utils.staging import leftover_staging, owner_gone, owner_tag, staging_name
from ansible_collections.hal9000.dind.plugins.module_utils.validate import first_free

ACTIONS = ("create", "list", "verify", "restore", "inspect")
V05_DIRECTORIES = ("chromadb", "membank", "plugins")
SOURCE_VERSION = "v0.5.x"
TARGET_VERSION = "0.6.x-dind"
BACKUP_PREFIX = "pre-dind-"
MANIFEST = "manifest.json"
# "<host>:<pid>" of the run writing a backup, removed once its manifest is written: an incomplete backup
# whose writer is gone was interrupted, and the next backup removes it.
WRITER = ".writer"
ASIDE_INFIX = ".before-rollback-"
STAGING_INFIX = ".hal9000-restore-partial-"
CHROMA_DB = "chroma.sqlite3"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_BACKUP_NAME = re.compile(r"^pre-dind-(\d{8}-\d{6})(?:-(\d+))?$")
_SUMMARY_KEYS = ("files", "dirs", "symlinks", "bytes", "digest")


# --- small helpers -----------------------------------------------------------------------------


def _now():
    return datetime.datetime.now().astimezone()


def _stamp(moment):
    return moment.strftime("%Y%m%d-%H%M%S")


def _absolute(value, what):
    value = os.path.expanduser(str(value))
    if not os.path.isabs(value):
        raise Hal9000Error(f"{what} {value!r} is not an absolute path: give a path starting with / or ~.")
    value = os.path.normpath(value)
    if value == os.sep:
        raise Hal9000Error(f"{what} / is not allowed: give a directory below it.")
    return value


def _ownership():
    """Only root can give copied files their owners back, so only root compares them."""
    return os.geteuid() == 0


def _first_line(text, default):
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines else default


def copy_tree(source, dest):
    """Copy the tree ``source`` to the new path ``dest`` exactly.

    ``cp -a`` (GNU coreutils) rather than shutil.copytree: copytree does not keep
    owners, turns hard links into separate files, and cannot copy fifos or device
    nodes; cp -a keeps contents, modes (setuid/setgid/sticky too), symlinks as
    symlinks (dangling ones too), hard links, empty directories, owners (as root)
    and times. ``-T`` makes ``dest`` the copy itself, never a directory inside it.
    The top of ``source`` is resolved first, so a symlinked v0.5.x directory is
    copied as the directory it points to.
    """
    proc = subprocess.run(
        ["cp", "-a", "-T", "--", os.path.realpath(source), dest], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise Hal9000Error(f"Copying {source} to {dest} failed: {_first_line(proc.stderr, f'cp exit {proc.returncode}')}.")


def sizes_of(path):
    """Counts and bytes of a tree, from lstat() alone (no hashing): for plans and reports."""
    counts = {"files": 0, "dirs": 0, "symlinks": 0, "bytes": 0}
    for relative, _full, st in iter_directory(path):
        if relative == ".":
            continue
        if stat.S_ISREG(st.st_mode):
            counts["files"] += 1
            counts["bytes"] += st.st_size
        elif stat.S_ISDIR(st.st_mode):
            counts["dirs"] += 1
        elif stat.S_ISLNK(st.st_mode):
            counts["symlinks"] += 1
    return counts


def human(size):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024.0
    return f"{size} B"  # not reached


def chroma_collections(directory):
    """Names of the collections a ChromaDB directory holds (its chroma.sqlite3), sorted; None without one.

    The database is copied (with its write-ahead log) to a temporary directory and
    read there: opening it in place could write ``-shm``/``-wal`` files or
    checkpoint the log, and the source must never change.
    """
    database = os.path.join(directory, CHROMA_DB)
    if not os.path.isfile(database):
        return None
    with tempfile.TemporaryDirectory(prefix="hal9000-chroma-") as scratch:
        copy = os.path.join(scratch, CHROMA_DB)
        shutil.copyfile(database, copy)
        if os.path.isfile(database + "-wal"):
            shutil.copyfile(database + "-wal", copy + "-wal")
        try:
            connection = sqlite3.connect(copy)
            try:
                rows = connection.execute("SELECT name FROM collections ORDER BY name").fetchall()
            finally:
                connection.close()
        except sqlite3.Error as exc:
            raise Hal9000Error(f"Cannot read the ChromaDB collections in {database}: {exc}.") from None
    return [row[0] for row in rows]


# --- sources ----------------------------------------------------------------------------------


def normalise_sources(home, sources=None):
    """``{name: absolute path}``; the v0.5.x directories under ``home`` when ``sources`` is empty."""
    home = _absolute(home, "hal9000_home")
    if not sources:
        sources = {name: os.path.join(home, name) for name in V05_DIRECTORIES}
    result = {}
    for name, path in sources.items():
        if not isinstance(name, str) or not _NAME.match(name) or name == MANIFEST:
            raise Hal9000Error(
                f"Source name {name!r} is not allowed: use letters, digits, '_', '.' or '-', starting with a letter or digit."
            )
        result[name] = _absolute(path, f"Source {name}")
    paths = sorted(result.values())
    for first, second in zip(paths, paths[1:]):
        if second == first or second.startswith(first + os.sep):
            raise Hal9000Error(f"Source directories {first} and {second} overlap: give separate directories.")
    return home, result


def inspect_sources(home, sources=None):
    """What a migration would take: existence, counts, bytes and ChromaDB collections of each source."""
    home, sources = normalise_sources(home, sources)
    report = {}
    for name, path in sources.items():
        entry = {"path": path, "exists": os.path.isdir(path), "files": 0, "dirs": 0, "symlinks": 0, "bytes": 0}
        if entry["exists"]:
            entry.update(sizes_of(path))
        entry["size_human"] = human(entry["bytes"])
        entry["chromadb_collections"] = chroma_collections(path) if entry["exists"] else None
        report[name] = entry
    return {"changed": False, "hal9000_home": home, "sources": report}


# --- backups ----------------------------------------------------------------------------------


def backups_dir(home):
    return os.path.join(home, "backups")


def read_manifest(path):
    """The manifest.json of a backup, or raise (one line) when it is missing, unreadable or incomplete."""
    file_name = os.path.join(path, MANIFEST)
    if not os.path.isdir(path):
        raise Hal9000Error(f"Backup {path} does not exist.")
    if not os.path.isfile(file_name):
        raise Hal9000Error(f"Backup {path} is incomplete (no {MANIFEST}): it was interrupted. Use a complete backup.")
    try:
        with open(file_name, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError) as exc:
        raise Hal9000Error(f"Cannot read {file_name}: {exc}.") from None
    if not isinstance(manifest, dict) or manifest.get("complete") is not True or not isinstance(manifest.get("directories"), dict):
        raise Hal9000Error(f"Backup {path} is incomplete ({MANIFEST} does not say complete: true). Use a complete backup.")
    return manifest


def _public_directories(directories):
    return {name: {key: record.get(key) for key in ("source",) + _SUMMARY_KEYS} for name, record in directories.items()}


def describe_backup(path):
    """name, path, created_at, complete, contents, bytes (and directories when complete) of one backup."""
    name = os.path.basename(path)
    try:
        manifest = read_manifest(path)
    except Hal9000Error:
        manifest = None
    if manifest is not None:
        directories = manifest["directories"]
        size = sum(int(record.get("bytes", 0)) for record in directories.values())
        return {
            "name": name,
            "path": path,
            "created_at": manifest.get("created_at"),
            "complete": True,
            "contents": sorted(directories),
            "bytes": size,
            "size_human": human(size),
            "source_version": manifest.get("source_version"),
            "target_version": manifest.get("target_version"),
            "directories": _public_directories(directories),
        }
    contents, size = [], 0
    with os.scandir(path) as scan:
        for entry in scan:
            if entry.is_dir(follow_symlinks=False):
                contents.append(entry.name)
                size += sizes_of(entry.path)["bytes"]
    match = _BACKUP_NAME.match(name)
    created = None
    if match:
        moment = datetime.datetime.strptime(match.group(1), "%Y%m%d-%H%M%S")
        created = moment.astimezone().isoformat(timespec="seconds")
    return {
        "name": name,
        "path": path,
        "created_at": created,
        "complete": False,
        "contents": sorted(contents),
        "bytes": size,
        "size_human": human(size),
        "source_version": None,
        "target_version": None,
        "directories": {},
    }


def _newest_first(name):
    match = _BACKUP_NAME.match(name)
    if not match:
        return (0, "", 0, name)
    return (1, match.group(1), int(match.group(2) or 0), name)


def _backup_paths(home):
    """The ``pre-dind-*`` directories under ``<home>/backups``, newest first."""
    root = backups_dir(_absolute(home, "hal9000_home"))
    if not os.path.isdir(root):
        return []
    with os.scandir(root) as scan:
        names = [e.name for e in scan if e.is_dir(follow_symlinks=False) and e.name.startswith(BACKUP_PREFIX)]
    return [os.path.join(root, name) for name in sorted(names, key=_newest_first, reverse=True)]


def list_backups(home):
    """Every ``pre-dind-*`` backup under ``<home>/backups``, newest first; an empty list when there are none."""
    return [describe_backup(path) for path in _backup_paths(home)]


def abandoned_backups(home):
    """Incomplete backups whose writer, a process on this host, is gone (sorted paths).

    Only a backup that still names its writer is read further, so complete backups are not opened.
    """
    abandoned = []
    for path in _backup_paths(home):
        try:
            with open(os.path.join(path, WRITER), encoding="utf-8") as handle:
                writer = handle.read()
        except OSError:
            continue  # complete, or written before writers were recorded: left to the user
        if not owner_gone(writer):
            continue
        try:
            read_manifest(path)  # killed after its manifest was written: complete
        except Hal9000Error:
            abandoned.append(path)
    return sorted(abandoned)


def newest_complete(home):
    for backup in list_backups(home):
        if backup["complete"]:
            return backup["path"]
    raise Hal9000Error(f"No complete backup in {backups_dir(_absolute(home, 'hal9000_home'))}: nothing to restore.")


def create_backup(home, sources=None, source_version=SOURCE_VERSION, target_version=TARGET_VERSION, check_mode=False):
    """Copy each existing source into a new ``pre-dind-*`` backup, verify each copy, write manifest.json last."""
    home, sources = normalise_sources(home, sources)
    present = {name: path for name, path in sources.items() if os.path.isdir(path)}
    missing = {name: path for name, path in sources.items() if name not in present}
    if not present:
        raise Hal9000Error(f"None of the source directories exists ({', '.join(sources.values())}): nothing to back up.")
    moment = _now()
    path = first_free(os.path.join(backups_dir(home), BACKUP_PREFIX + _stamp(moment)), os.path.lexists)
    abandoned = abandoned_backups(home)
    actions = [f"remove incomplete backup {old} (its run was interrupted)" for old in abandoned]
    actions.append(f"create backup {path}")
    actions += [f"skip {name}: {source} does not exist" for name, source in missing.items()]
    directories = {}
    if check_mode:
        for name, source in present.items():
            record = summary(manifest_of_directory(source))
            directories[name] = dict(source=source, **record)
            actions.append(f"copy {source} ({record['files']} files, {record['bytes']} bytes) to {path}/{name} and verify it")
        actions.append(f"write {path}/{MANIFEST}")
        return _backup_result(True, home, path, moment, directories, missing, actions, False, source_version, target_version)

    for old in abandoned:
        shutil.rmtree(old)  # a partial copy of sources that are never modified: nothing is lost
    os.makedirs(backups_dir(home), mode=0o700, exist_ok=True)
    os.mkdir(path, 0o700)
    with open(os.path.join(path, WRITER), "w", encoding="utf-8") as handle:
        handle.write(owner_tag() + "\n")
    ownership = _ownership()
    for name, source in present.items():
        dest = os.path.join(path, name)
        # The source is hashed before it is copied; any change while copying shows up below.
        expected = manifest_of_directory(source)
        copy_tree(source, dest)
        copied = manifest_of_directory(dest)
        problems = differences(expected, copied, ownership=ownership, limit=3, names=("source", "backup"))
        if problems:
            raise Hal9000Error(
                f"The copy of {source} in {dest} differs from its source ({'; '.join(problems)}): did something write to it "
                f"while it was copied? Stop it and run again. Backup {path} stays incomplete (no {MANIFEST})."
            )
        record = summary(copied)
        directories[name] = dict(source=source, entries=copied, **record)
        actions.append(f"copy {source} ({record['files']} files, {record['bytes']} bytes) to {dest} and verify it")
    manifest = {
        "created_at": moment.isoformat(timespec="seconds"),
        "hal9000_home": home,
        "source_version": source_version,
        "target_version": target_version,
        "complete": True,
        "directories": directories,
        "missing": missing,
    }
    write_json_atomically(os.path.join(path, MANIFEST), manifest, durable=True)  # last: its presence means complete
    os.unlink(os.path.join(path, WRITER))
    actions.append(f"write {path}/{MANIFEST}")
    return _backup_result(True, home, path, moment, directories, missing, actions, True, source_version, target_version)


def _backup_result(changed, home, path, moment, directories, missing, actions, complete, source_version, target_version):
    size = sum(record["bytes"] for record in directories.values())
    return {
        "changed": changed,
        "hal9000_home": home,
        "backup": {
            "name": os.path.basename(path),
            "path": path,
            "created_at": moment.isoformat(timespec="seconds"),
            "complete": complete,
            "contents": sorted(directories),
            "bytes": size,
            "size_human": human(size),
            "source_version": source_version,
            "target_version": target_version,
            "directories": _public_directories(directories),
        },
        "missing": missing,
        "actions": actions,
        "verified": complete,
    }


def _check_directory(backup, name, record):
    """Problems of one backed-up directory against its manifest record (empty when it matches)."""
    directory = os.path.join(backup, name)
    if not os.path.isdir(directory) or os.path.islink(directory):
        return [f"{name}: missing from the backup"]
    current = manifest_of_directory(directory)
    problems = []
    if isinstance(record.get("entries"), dict):
        found_differences = differences(record["entries"], current, ownership=True, limit=5, names=("manifest", "backup"))
        problems = [f"{name}/{line}" for line in found_differences]
    found = summary(current)
    if not problems and any(found[key] != record.get(key) for key in _SUMMARY_KEYS):
        problems = [f"{name}: digest {found['digest']} vs {record.get('digest')} in {MANIFEST}"]
    return problems


def resolve_backup(home, backup=None):
    if backup:
        return _absolute(backup, "backup")
    return newest_complete(home)


def restore_targets(home, path, manifest):
    """``{name: <home>/<name>}``: where each directory of a backup goes back to, never where its manifest says.

    Anyone who can write into backups/ (or name a backup with rollback_backup) writes the manifest, and restoring
    renames each destination aside, as root too: a manifest naming /etc or ~/.ssh is refused, not followed.
    """
    home = _absolute(home, "hal9000_home")
    recorded = {}
    for name, record in manifest["directories"].items():
        if not isinstance(record, dict) or not isinstance(record.get("entries"), dict):
            raise Hal9000Error(f"Backup {path} was not written by hal9000.dind.backup ({MANIFEST} has no entries for {name!r}): "
                               "use a backup of this collection. Nothing was changed.")
        recorded[name] = record.get("source")
    missing = manifest.get("missing") or {}
    if not isinstance(missing, dict):
        raise Hal9000Error(f"Backup {path} was not written by hal9000.dind.backup ({MANIFEST} has a malformed missing): "
                           "use a backup of this collection. Nothing was changed.")
    recorded.update({name: source for name, source in missing.items() if name not in recorded})
    targets = {}
    for name, source in sorted(recorded.items()):
        target = os.path.join(home, name) if name in V05_DIRECTORIES else None
        if target is None or source != target:
            where = f"puts {name!r} at {source!r}" if target else f"names {name!r}"
            raise Hal9000Error(
                f"Backup {path} cannot be restored here: its {MANIFEST} {where}, but a backup restores only to the v0.5.x "
                f"directories {', '.join(V05_DIRECTORIES)} of {home}. Use a backup made for this home. Nothing was changed."
            )
        targets[name] = target
    return targets


def verify_backup(home, backup=None):
    """Recompute every directory of a backup and compare with its manifest.json; refuse one that restores elsewhere."""
    path = resolve_backup(home, backup)
    manifest = read_manifest(path)
    restore_targets(home, path, manifest)  # refused here already: rollback verifies before it removes anything
    problems = []
    for name, record in sorted(manifest["directories"].items()):
        problems += _check_directory(path, name, record)
    result = {"changed": False, "backup": describe_backup(path), "verified": not problems, "problems": problems}
    return result


def restore_backup(home, backup=None, paths=None, check_mode=False):
    """Make each directory of a backup exactly its copy again: replace, never merge; old content kept aside."""
    path = resolve_backup(home, backup)
    manifest = read_manifest(path)
    targets = restore_targets(home, path, manifest)
    problems = []
    for name, record in sorted(manifest["directories"].items()):
        problems += _check_directory(path, name, record)
    if problems:
        raise Hal9000Error(f"Backup {path} does not match its {MANIFEST} ({'; '.join(problems[:3])}): nothing was restored.")
    paths = {name: _absolute(value, f"paths.{name}") for name, value in (paths or {}).items()}
    unknown = sorted(set(paths) - set(manifest["directories"]) - set(manifest.get("missing") or {}))
    if unknown:
        raise Hal9000Error(f"paths names {', '.join(unknown)}, which backup {path} does not know. Nothing was restored.")
    ownership = _ownership()
    stamp = _stamp(_now())
    plan = []
    for name, record in sorted(manifest["directories"].items()):
        plan.append((name, paths.get(name) or targets[name], record))
    for name in sorted(set(targets) - set(manifest["directories"])):
        plan.append((name, paths.get(name) or targets[name], None))

    restored, actions = {}, []
    for name, target, record in plan:
        parent = os.path.dirname(target)
        if not os.path.isdir(parent):
            raise Hal9000Error(f"The parent directory {parent} of {target} does not exist: create it first. Nothing was restored.")
        state = "missing"
        if os.path.lexists(target):
            state = "different"
            if record is not None and os.path.isdir(target) and not os.path.islink(target):
                current = manifest_of_directory(target)
                if not differences(record["entries"], current, ownership=ownership, limit=1):
                    state = "matching"
        aside = first_free(f"{target}{ASIDE_INFIX}{stamp}", os.path.lexists) if state == "different" else None
        entry = {"path": target, "state": state, "kept_aside": aside, "in_backup": record is not None}
        if record is not None:
            entry.update({key: record[key] for key in ("files", "bytes", "digest")})
        restored[name] = entry
        if aside:
            actions.append(f"move {target} aside to {aside}")
        if record is not None and state != "matching":
            actions.append(f"copy {path}/{name} ({record['files']} files, {record['bytes']} bytes) to {target} and verify it")

    if not check_mode:
        for name, target, record in plan:
            entry = restored[name]
            for leftover in leftover_staging(target, STAGING_INFIX):
                shutil.rmtree(leftover)  # our own copy from an interrupted restore; the backup still holds it
            if entry["state"] == "matching":
                continue
            staging = None
            if record is not None:
                # Copied and verified beside the target first, so an interruption never leaves a half-written target.
                staging = staging_name(target, STAGING_INFIX)
                copy_tree(os.path.join(path, name), staging)
                problems = differences(record["entries"], manifest_of_directory(staging), ownership=ownership, limit=3,
                                       names=("backup", "copy"))
                if problems:
                    shutil.rmtree(staging, ignore_errors=True)
                    raise Hal9000Error(f"The copy of {path}/{name} failed verification ({'; '.join(problems)}): {target} was not changed.")
            if entry["kept_aside"]:
                os.rename(target, entry["kept_aside"])
            if staging:
                os.rename(staging, target)
    return {
        "changed": bool(actions),
        "backup": describe_backup(path),
        "restored": restored,
        "actions": actions,
        "verified": not check_mode or not actions,
    }
