#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: backup
short_description: Back up, list, verify and restore the v0.5.x HAL-9000 data directories
version_added: 0.1.0
description:
  - Manages the backups taken before a migration from v0.5.x (host directories C(chromadb), C(membank) and
    C(plugins) under the HAL-9000 home) to the DinD volumes, and restores them for a rollback.
  - A backup is a directory C(<home>/backups/pre-dind-YYYYmmdd-HHMMSS) with one copy per source directory and a
    C(manifest.json) (C(created_at), C(hal9000_home), C(source_version), C(target_version), C(complete), and per
    directory its C(source), C(files), C(dirs), C(symlinks), C(bytes), sha256 C(digest) and every entry).
  - Copies are made with C(cp -a), which keeps contents, modes, symlinks, hard links, empty directories, and owners
    when run as root. Every copy is verified against a sha256 manifest of its source.
  - C(manifest.json) is written last and atomically, so an interrupted backup has none and is listed as incomplete.
    The next O(action=create) removes an incomplete backup whose writing process on this host is gone (it is a
    partial copy of sources that are never modified).
  - Works on local files only; it does not talk to Docker.
author:
  - HAL-9000 DinD maintainers (@hal9000-dind)
options:
  action:
    description:
      - V(create) copies the existing O(sources) into a new backup, verifies each copy and writes C(manifest.json) last.
        Missing sources are skipped and reported in RV(missing); when none exists the module fails.
      - V(list) returns the backups under C(<home>/backups), newest first, complete or not. None is not an error.
      - V(verify) recomputes the manifests of a backup's directories and compares them with its C(manifest.json);
        the module fails, naming the differences, when they differ.
      - V(verify) and V(restore) refuse, before anything is changed, a backup whose C(manifest.json) records
        another place for a directory than C(<hal9000_home>/<name>), or a directory other than C(chromadb),
        C(membank) and C(plugins); a restore goes back only to those v0.5.x directories, whatever a manifest says.
      - V(restore) makes each directory of a backup exactly its copy again (replace, never merge). The backup is first
        verified; each copy is written beside its target and verified; then the existing directory is renamed aside to
        C(<dir>.before-rollback-YYYYmmdd-HHMMSS) (never deleted) and the copy renamed into place. A directory that
        already matches is left alone. Sources the backup skipped (they did not exist) are moved aside too when they
        exist now, so the home is as it was. Each directory goes back to C(<hal9000_home>/<name>) unless O(paths) says
        otherwise.
      - V(inspect) reports, read-only, which sources exist with their counts and sizes, and the collection names in a
        ChromaDB C(chroma.sqlite3) at the top of a source (read from a temporary copy, so the source never changes).
    type: str
    required: true
    choices: [create, list, verify, restore, inspect]
  hal9000_home:
    description: The HAL-9000 home; backups live in C(<hal9000_home>/backups).
    type: path
    default: ~/.hal9000
  sources:
    description:
      - Directories to back up or inspect, a dictionary from a name to a path; the name is the directory's name in the backup.
      - Defaults to the v0.5.x layout, C(chromadb), C(membank) and C(plugins) under O(hal9000_home).
      - Used by O(action=create) and O(action=inspect).
    type: dict
  backup:
    description:
      - Path of the backup for O(action=verify) and O(action=restore). Defaults to the newest complete backup.
    type: path
  paths:
    description:
      - For O(action=restore), where to restore some directories, a dictionary from the directory name to a path.
        By default each directory goes back to C(<hal9000_home>/<name>), where the backup took it from.
    type: dict
  source_version:
    description: Recorded as C(source_version) in C(manifest.json) by O(action=create).
    type: str
    default: v0.5.x
  target_version:
    description: Recorded as C(target_version) in C(manifest.json) by O(action=create).
    type: str
    default: 0.6.x-dind
attributes:
  check_mode:
    description:
      - Every action reports its plan and touches nothing. V(create) still hashes the sources to report what would be
        recorded; V(restore) still verifies the backup and compares the targets.
    support: full
  diff_mode:
    description: Not supported; RV(actions) lists what is done.
    support: none
  idempotent:
    description:
      - V(list), V(verify) and V(inspect) never change anything. V(restore) changes nothing when every target already
        matches the backup. V(create) always makes a new backup.
    support: partial
notes:
  - Owners are kept and compared only when the module runs as root.
  - Stop whatever writes to the sources before a backup; a source that changes while it is copied fails the
    verification and leaves the backup incomplete.
"""

EXAMPLES = r"""
- name: Back up the v0.5.x data of ~/.hal9000
  hal9000.dind.backup:
    action: create
  register: hal9000_backup

- name: List the backups, newest first
  hal9000.dind.backup:
    action: list
  register: hal9000_backups

- name: Verify the newest complete backup
  hal9000.dind.backup:
    action: verify

- name: Roll the host directories back to a given backup
  hal9000.dind.backup:
    action: restore
    backup: /root/.hal9000/backups/pre-dind-20260101-120000

- name: See what a migration would take, and the ChromaDB collections
  hal9000.dind.backup:
    action: inspect
    hal9000_home: /srv/hal9000
"""

RETURN = r"""
hal9000_home:
  description: The HAL-9000 home, with C(~) expanded.
  returned: when O(action) is V(create), V(list) or V(inspect)
  type: str
  sample: /root/.hal9000
backup:
  description:
    - The backup created, verified or restored; with O(action=create) in check mode, the one that would be created.
  returned: when O(action) is V(create), V(verify) or V(restore)
  type: dict
  contains:
    name:
      description: Directory name of the backup.
      type: str
      sample: pre-dind-20260101-120000
    path:
      description: Path of the backup.
      type: str
      sample: /root/.hal9000/backups/pre-dind-20260101-120000
    created_at:
      description: When it was created (ISO 8601 with the offset), from C(manifest.json).
      type: str
      sample: "2026-01-01T12:00:00+00:00"
    complete:
      description: Whether it has a C(manifest.json) saying C(complete=true).
      type: bool
      sample: true
    contents:
      description: Names of the directories it holds.
      type: list
      elements: str
      sample: [chromadb, membank, plugins]
    bytes:
      description: Total size of its regular files.
      type: int
      sample: 52428800
    size_human:
      description: RV(backup.bytes) for people.
      type: str
      sample: 50.0 MiB
    source_version:
      description: Recorded source version.
      type: str
      sample: v0.5.x
    target_version:
      description: Recorded target version.
      type: str
      sample: 0.6.x-dind
    directories:
      description: Per directory, C(source), C(files), C(dirs), C(symlinks), C(bytes) and C(digest) (sha256 tree digest).
      type: dict
      sample: {"chromadb": {"source": "/root/.hal9000/chromadb", "files": 3, "dirs": 1, "symlinks": 0, "bytes": 167936,
               "digest": "5f0c3e4b8f1d2a7c9e6b3d0a1f4c7e2b5d8a0c3f6e9b2d5a8c1f4e7b0d3a6c9f"}}
backups:
  description: Every C(pre-dind-*) backup, newest first, with the same keys as RV(backup); empty when there is none.
  returned: when O(action=list)
  type: list
  elements: dict
  sample:
    - name: pre-dind-20260101-120000
      path: /root/.hal9000/backups/pre-dind-20260101-120000
      created_at: "2026-01-01T12:00:00+00:00"
      complete: true
      contents: [chromadb, membank]
      bytes: 4096
      size_human: 4.0 KiB
sources:
  description:
    - Per source name, C(path), C(exists), C(files), C(dirs), C(symlinks), C(bytes), C(size_human) and
      C(chromadb_collections) (the names in its C(chroma.sqlite3), or null when it has none).
  returned: when O(action=inspect)
  type: dict
  sample: {"chromadb": {"path": "/root/.hal9000/chromadb", "exists": true, "files": 3, "dirs": 1, "symlinks": 0,
           "bytes": 167936, "size_human": "164.0 KiB", "chromadb_collections": ["notes", "code"]}}
missing:
  description: Sources that did not exist and were not backed up, a dictionary from the name to the path (recorded as C(missing) in C(manifest.json)).
  returned: when O(action=create)
  type: dict
  sample: {"plugins": "/root/.hal9000/plugins"}
restored:
  description:
    - Per directory, C(path), C(state) before the run (V(missing), V(matching) or V(different)), C(kept_aside) (where the
      old content went, or null), C(in_backup), and for directories in the backup C(files), C(bytes) and C(digest).
  returned: when O(action=restore)
  type: dict
  sample: {"chromadb": {"path": "/root/.hal9000/chromadb", "state": "different", "in_backup": true,
           "kept_aside": "/root/.hal9000/chromadb.before-rollback-20260102-090000", "files": 3, "bytes": 167936,
           "digest": "5f0c3e4b8f1d2a7c9e6b3d0a1f4c7e2b5d8a0c3f6e9b2d5a8c1f4e7b0d3a6c9f"}}
actions:
  description: What was done, or would be done in check mode.
  returned: when O(action) is V(create) or V(restore)
  type: list
  elements: str
  sample: ["create backup /root/.hal9000/backups/pre-dind-20260101-120000"]
verified:
  description: True when every copy was compared with its manifest and matched (false in check mode when work was planned).
  returned: when O(action) is V(create), V(verify) or V(restore)
  type: bool
  sample: true
problems:
  description: Where a backup differs from its C(manifest.json) (up to a few lines per directory).
  returned: when O(action=verify)
  type: list
  elements: str
  sample: ["chromadb/chroma.sqlite3: content"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hal9000.dind.plugins.module_utils.backup import (
    ACTIONS,
    SOURCE_VERSION,
    TARGET_VERSION,
    create_backup,
    inspect_sources,
    list_backups,
    restore_backup,
    verify_backup,
)
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error


def run(module):
    params = module.params
    action, home = params["action"], params["hal9000_home"]
    if action == "create":
        return create_backup(home, params["sources"], params["source_version"], params["target_version"], module.check_mode)
    if action == "list":
        return {"changed": False, "hal9000_home": home, "backups": list_backups(home)}
    if action == "verify":
        result = verify_backup(home, params["backup"])
        if not result["verified"]:
            module.fail_json(
                msg=f"Backup {result['backup']['path']} does not match its manifest.json: {'; '.join(result['problems'][:5])}.",
                **result,
            )
        return result
    if action == "restore":
        return restore_backup(home, params["backup"], params["paths"], module.check_mode)
    return inspect_sources(home, params["sources"])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            action=dict(type="str", required=True, choices=list(ACTIONS)),
            hal9000_home=dict(type="path", default="~/.hal9000"),
            sources=dict(type="dict"),
            backup=dict(type="path"),
            paths=dict(type="dict"),
            source_version=dict(type="str", default=SOURCE_VERSION),
            target_version=dict(type="str", default=TARGET_VERSION),
        ),
        supports_check_mode=True,
    )
    try:
        result = run(module)
    except Hal9000Error as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        module.fail_json(msg=f"{module.params['action']} failed: {exc.strerror or exc}{where}.")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
