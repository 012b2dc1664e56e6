"""playbooks/migrate.yml and playbooks/rollback.yml (the seed's migrate-to-dind.sh and rollback-dind.sh).

Real engine, real ansible-playbook runs, a home, volume prefix and parent name of each test's own; the
v0.5.x ChromaDB data is made by a real ChromaDB server from the parent image.
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from ansible_collections.hal9000.dind.plugins.module_utils.manifest import differences, manifest_of_directory, summary
from ansible_collections.hal9000.dind.plugins.module_utils.volume_helpers import helper_container
from ansible_collections.hal9000.dind.plugins.module_utils.volume_manifest import volume_manifest
from helpers import REPO_ROOT
from trees import assert_same_tree, make_tree

MIGRATE = REPO_ROOT / "playbooks" / "migrate.yml"
ROLLBACK = REPO_ROOT / "playbooks" / "rollback.yml"
IMAGE = "debian:bookworm-slim"
PARENT_IMAGE = "hal9000/parent:latest"
SOURCES = {"chromadb": "chromadb", "membank": "memorybank", "plugins": "plugins"}
COLLECTIONS_URL = "http://127.0.0.1:8000/api/v2/tenants/default_tenant/databases/default_database/collections"


class Installation:
    """One test installation: home, volume prefix and parent name; removed afterwards, whatever happened."""

    def __init__(self, ansible, client, prefix, tmp_path):
        self.ansible, self.client = ansible, client
        self.tag = f"{prefix}-m{uuid.uuid4().hex[:6]}"
        self.home = tmp_path / "hal9000 home"
        self.home.mkdir()
        self.parent = f"{self.tag}-parent"

    def volume(self, source):
        return f"{self.tag}-{SOURCES[source]}"

    def extra(self, **extra):
        return json.dumps(dict(hal9000_home=str(self.home), hal9000_volume_prefix=self.tag, hal9000_parent_name=self.parent, **extra))

    def migrate(self, *args, check=True, **extra):
        return self.ansible.playbook(MIGRATE, "-e", self.extra(**extra), *args, check=check)

    def rollback(self, *args, check=True, **extra):
        return self.ansible.playbook(ROLLBACK, "-e", self.extra(**extra), *args, check=check)

    def volumes(self):
        return sorted(v.name for v in self.client.volumes.list(filters={"name": self.tag}))

    def containers(self):
        return sorted(c.name for c in self.client.containers.list(ignore_removed=True, all=True, filters={"name": self.tag}))

    def helpers(self):
        found = self.client.containers.list(ignore_removed=True, all=True, filters={"label": "io.hal9000.type=volume-data-helper"})
        return [c for c in found if c.labels.get("io.hal9000.volume", "").startswith(self.tag)]

    def volume_manifest(self, volume):
        with helper_container(self.client, IMAGE, {volume: ("hal9000-volume", True)}, volume) as container:
            return volume_manifest(self.client, container)

    def marker(self):
        path = self.home / "migration" / "dind.json"
        return json.loads(path.read_text()) if path.exists() else None

    def backups(self):
        root = self.home / "backups"
        return sorted(root.iterdir(), reverse=True) if root.exists() else []

    def cleanup(self):
        for container in self.helpers():
            container.remove(force=True, v=True)
        for container in self.client.containers.list(ignore_removed=True, all=True, filters={"name": self.tag}):
            container.remove(force=True, v=True)
        for volume in self.client.volumes.list(filters={"name": self.tag}):
            volume.remove(force=True)
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture
def inst(ansible, docker_client, prefix, tmp_path):
    installation = Installation(ansible, docker_client, prefix, tmp_path)
    try:
        yield installation
    finally:
        installation.cleanup()


def recap_changed(stdout):
    return [int(n) for n in re.findall(r"changed=(\d+)", stdout.split("PLAY RECAP")[-1])]


def manifests(root, names=tuple(SOURCES)):
    return {name: manifest_of_directory(str(root / name)) for name in names if (root / name).is_dir()}


def make_sessions(home):
    sessions = home / "claude" / "sessions"
    sessions.mkdir(parents=True)
    (sessions / "session-1.json").write_text('{"id": 1}')
    return manifest_of_directory(str(home / "claude"))


def test_big_trees_migrate_and_roll_back_byte_for_byte(inst):
    """The big one: a 50 MB file and 5,000 small files with every odd kind of entry, there and back."""
    make_tree(inst.home / "chromadb", 1, big_bytes=50 * 1000 * 1000)
    make_tree(inst.home / "membank", 2, small_files=5000)
    make_tree(inst.home / "plugins", 3)
    sessions = make_sessions(inst.home)
    sources = manifests(inst.home)

    started = time.monotonic()
    first = inst.migrate(migrate_start_daemon="false")
    migrate_seconds = time.monotonic() - started
    assert recap_changed(first.stdout) == [8], first.stdout
    assert manifests(inst.home) == sources  # the sources are never modified
    (backup,) = inst.backups()
    for name in SOURCES:
        assert_same_tree(inst.home / name, backup / name)
        assert differences(sources[name], inst.volume_manifest(inst.volume(name)), ownership=True) == []
    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["source_version"] == "v0.5.x"
    marker = inst.marker()
    assert marker["backup"] == str(backup)
    for name in SOURCES:
        assert marker["volumes"][inst.volume(name)]["digest"] == summary(sources[name])["digest"]
        assert manifest["directories"][name]["digest"] == summary(sources[name])["digest"]
    assert not (inst.home / "migration" / "progress.json").exists()

    # After the migration, the host directories drift; rollback must replace them, not merge.
    (inst.home / "chromadb" / "written after").write_text("later")
    (inst.home / "membank" / "batch 00" / "small-0.txt").write_bytes(b"changed")
    drifted = manifests(inst.home, ["chromadb", "membank"])

    started = time.monotonic()
    back = inst.rollback()
    rollback_seconds = time.monotonic() - started
    assert back.returncode == 0
    assert inst.volumes() == [] and inst.marker() is None
    (exports,) = inst.home.glob("volume-exports-*")
    assert sorted(p.name for p in exports.iterdir()) == ["chromadb", "membank", "plugins"]
    for name in SOURCES:
        assert differences(sources[name], manifest_of_directory(str(exports / name)), ownership=True) == []
        assert_same_tree(backup / name, inst.home / name)
        assert_same_tree(exports / name, inst.home / name)
    assert filecmp.cmp(exports / "chromadb" / "zz big.bin", inst.home / "chromadb" / "zz big.bin", shallow=False)
    asides = {p.name.split(".before-rollback-")[0]: p for p in inst.home.glob("*.before-rollback-*")}
    assert sorted(asides) == ["chromadb", "membank"]  # plugins did not change: left alone
    for name, path in asides.items():
        assert manifest_of_directory(str(path)) == drifted[name]
    assert manifest_of_directory(str(inst.home / "claude")) == sessions
    print(f"\nmigrate {migrate_seconds:.1f} s, rollback {rollback_seconds:.1f} s for {summary(sources['chromadb'])['bytes'] / 1e6:.0f} MB "
          f"+ {summary(sources['membank'])['files']} files", file=sys.stderr)


def exec_python(container, code):
    result = container.exec_run(["python3", "-c", code])
    assert result.exit_code == 0, result.output.decode()
    return result.output.decode()


CREATE_COLLECTIONS = f"""
import json, urllib.request
def call(url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={{"Content-Type": "application/json"}}, method="POST" if data else "GET")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)
ids = {{}}
for name in ("notes", "code-index"):
    ids[name] = call("{COLLECTIONS_URL}", {{"name": name}})["id"]
call("{COLLECTIONS_URL}/" + ids["notes"] + "/add",
     {{"ids": ["a", "b", "c"], "embeddings": [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], "documents": ["one", "two", "three"]}})
print(json.dumps(ids))
"""

READ_COLLECTIONS = f"""
import json, urllib.request
with urllib.request.urlopen("{COLLECTIONS_URL}", timeout=10) as response:
    collections = json.load(response)
counts = {{}}
for c in collections:
    with urllib.request.urlopen("{COLLECTIONS_URL}/" + c["id"] + "/count", timeout=10) as response:
        counts[c["name"]] = json.load(response)
print(json.dumps(counts))
"""

HEARTBEAT = """
import sys, time, urllib.request
for attempt in range(150):
    try:
        urllib.request.urlopen("http://127.0.0.1:8000/api/v2/heartbeat", timeout=2)
        sys.exit(0)
    except OSError:
        time.sleep(0.2)
sys.exit(1)
"""


def make_v05_chromadb(client, inst):
    """A real v0.5.x ChromaDB directory, written by a ChromaDB server of the same major version."""
    data = inst.home / "chromadb"
    data.mkdir()
    server = client.containers.run(
        PARENT_IMAGE, name=f"{inst.tag}-chroma-v05", detach=True, network_disabled=False,
        entrypoint=["python3", "/usr/local/bin/chroma", "run", "--path", "/data/chromadb", "--host", "127.0.0.1", "--port", "8000"],
        volumes={str(data): {"bind": "/data/chromadb", "mode": "rw"}},
    )
    try:
        exec_python(server, HEARTBEAT)
        ids = json.loads(exec_python(server, CREATE_COLLECTIONS))
        assert sorted(ids) == ["code-index", "notes"]
        assert json.loads(exec_python(server, READ_COLLECTIONS)) == {"notes": 3, "code-index": 0}
        server.stop(timeout=20)
    finally:
        server.remove(force=True, v=True)
    assert (data / "chroma.sqlite3").is_file()


def test_chromadb_data_is_served_after_migration_then_rolled_back(inst, docker_client):
    make_v05_chromadb(docker_client, inst)
    (inst.home / "membank").mkdir()
    (inst.home / "membank" / "memory.md").write_text("# remember\n")
    sessions = make_sessions(inst.home)
    sources = manifests(inst.home)

    first = inst.migrate()
    assert "lists every migrated collection (code-index, notes)" in first.stdout, first.stdout
    assert "plugins: " + str(inst.home / "plugins") + " not found (skipped)" in first.stdout
    parent = docker_client.containers.get(inst.parent)
    assert parent.status == "running"
    assert json.loads(exec_python(parent, READ_COLLECTIONS)) == {"notes": 3, "code-index": 0}
    assert manifests(inst.home) == sources
    assert inst.marker()["chromadb_collections"] == ["code-index", "notes"]
    assert sorted(inst.volumes()) == sorted(inst.volume(n) for n in SOURCES)

    again = inst.migrate()
    assert recap_changed(again.stdout) == [0]
    assert "Already migrated" in again.stdout

    listed = inst.rollback(rollback_action="list")
    (backup,) = inst.backups()
    assert re.search(rf"{re.escape(str(backup))}: created \S+, contains chromadb membank, [0-9.]+ KiB", listed.stdout), listed.stdout
    assert recap_changed(listed.stdout) == [0]

    inst.rollback()
    assert inst.containers() == [] and inst.volumes() == [] and inst.marker() is None
    (exports,) = inst.home.glob("volume-exports-*")
    assert sorted(p.name for p in exports.iterdir()) == ["chromadb", "membank", "plugins"]
    assert (exports / "chromadb" / "chroma.sqlite3").is_file()
    assert (exports / "membank" / "memory.md").read_text() == "# remember\n"
    assert manifest_of_directory(str(exports / "plugins")).keys() == {"."}
    # The directories never changed, so the restore matched them and kept nothing aside.
    assert manifests(inst.home) == sources
    assert not list(inst.home.glob("*.before-rollback-*"))
    assert manifest_of_directory(str(inst.home / "claude")) == sessions

    assert recap_changed(inst.rollback().stdout) == [0]


def test_check_mode_changes_nothing_and_keep_volumes(inst):
    make_tree(inst.home / "membank", 4)
    make_tree(inst.home / "plugins", 5)
    before_home = manifest_of_directory(str(inst.home))

    dry = inst.migrate("--check")
    assert "DRY RUN" in dry.stdout
    assert re.search(r"Would back up membank, plugins \([0-9.]+ [KM]iB\)", dry.stdout), dry.stdout
    assert "import " in dry.stdout or "Copy the v0.5.x data" in dry.stdout
    assert manifest_of_directory(str(inst.home)) == before_home
    assert not (inst.home / "backups").exists() and not (inst.home / "migration").exists()
    assert inst.volumes() == [] and inst.containers() == []

    inst.migrate(migrate_start_daemon="false")
    (backup,) = inst.backups()
    (inst.home / "plugins" / "added later").write_text("x")
    volumes, marker = inst.volumes(), inst.marker()
    state = manifest_of_directory(str(inst.home))
    assert len(volumes) == 3 and marker

    dry_back = inst.rollback("--check")
    assert "DRY RUN" in dry_back.stdout and "Would export" in dry_back.stdout
    assert manifest_of_directory(str(inst.home)) == state
    assert inst.volumes() == volumes and inst.marker() == marker
    assert not list(inst.home.glob("volume-exports-*"))

    kept = inst.rollback(rollback_keep_volumes="true")
    assert kept.returncode == 0
    assert inst.volumes() == volumes and inst.marker() is None
    assert not list(inst.home.glob("volume-exports-*"))
    for name in ("membank", "plugins"):
        assert_same_tree(backup / name, inst.home / name)
        assert differences(manifest_of_directory(str(backup / name)), inst.volume_manifest(inst.volume(name)), ownership=True) == []
    (aside,) = inst.home.glob("plugins.before-rollback-*")
    assert (aside / "added later").read_text() == "x"


def test_refuses_a_volume_with_different_data_unless_forced(inst, docker_client):
    make_tree(inst.home / "chromadb", 6)
    (inst.home / "membank").mkdir()
    (inst.home / "membank" / "memory.md").write_text("from v0.5.x\n")
    sources = manifests(inst.home)
    occupied = inst.volume("membank")
    docker_client.volumes.create(occupied)
    docker_client.containers.run(IMAGE, ["sh", "-c", "echo other > /v/other.txt"], remove=True,
                                 volumes={occupied: {"bind": "/v"}}, network_disabled=True)
    before = inst.volumes()

    refused = inst.migrate(check=False)
    assert refused.returncode != 0
    assert f"Not migrating: {occupied} already holds different data" in refused.stdout, refused.stdout
    assert "Nothing was changed" in refused.stdout and "migrate_force=true" in refused.stdout
    assert inst.volumes() == before and inst.backups() == [] and inst.marker() is None
    assert not (inst.home / "migration").exists()
    assert manifests(inst.home) == sources

    forced = inst.migrate(migrate_force="true", migrate_start_daemon="false")
    assert forced.returncode == 0
    assert differences(sources["membank"], inst.volume_manifest(occupied), ownership=True) == []
    (aside,) = [v for v in inst.volumes() if v.startswith(f"{occupied}-replaced-")]
    old = inst.volume_manifest(aside)
    assert sorted(old) == [".", "other.txt"] and old["other.txt"]["size"] == len("other\n")
    assert manifests(inst.home) == sources


@pytest.mark.parametrize("missing, message", [
    (dict(daemon_image="hal9000/not-built:never"), "Image hal9000/not-built:never is not on this Docker host: build it first"),
    (dict(migrate_start_daemon="false", migrate_helper_image="hal9000/not-built:never"),
     "No image for the volume copies is on this Docker host (looked for hal9000/not-built:never; never pulled)"),
])
def test_refuses_to_start_without_its_images_before_anything_changes(inst, missing, message):
    make_tree(inst.home / "chromadb", 9)
    sources = manifests(inst.home)
    for check in (["--check"], []):
        refused = inst.migrate(*check, check=False, **missing)
        assert refused.returncode != 0
        assert message in refused.stdout, refused.stdout
        assert "Nothing was changed" in refused.stdout
        assert inst.volumes() == [] and inst.backups() == [] and not (inst.home / "migration").exists()
    assert manifests(inst.home) == sources
    if "daemon_image" in missing:
        done = inst.migrate(migrate_start_daemon="false", **missing)
        assert recap_changed(done.stdout) != [0] and inst.marker() is not None, "not needed when the daemon is not started"


def process_tree(pid):
    """``pid`` and every descendant (from /proc): Ansible runs modules in sessions of their own."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, []))
    return tree


def kill_tree(pid):
    """SIGKILL a process and all its descendants at once, like a crash (stopped first, so none escapes)."""
    tree = process_tree(pid)
    for member in tree:
        try:
            os.kill(member, signal.SIGSTOP)
        except ProcessLookupError:
            pass
    for member in process_tree(pid) + tree:
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass


def killed_when(inst, reached, before_kill=lambda found: None, playbook=MIGRATE, **extra):
    """Start a playbook (a migration without the daemon unless told) and SIGKILL it as soon as ``reached()``
    returns something; returns that."""
    extra.setdefault("migrate_start_daemon", False)
    cmd = [str(shutil.which("ansible-playbook", path=os.path.dirname(sys.executable))), "-i",
           str(REPO_ROOT / "inventory" / "localhost.yml"), str(playbook), "-e", inst.extra(**extra)]
    proc = subprocess.Popen(cmd, cwd=inst.ansible.workdir, env=inst.ansible.env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        found = None
        while time.monotonic() < deadline and proc.poll() is None and not found:
            found = reached()
            time.sleep(0 if found else 0.002)
        assert found and proc.poll() is None, "the migration ended before it could be interrupted there"
        before_kill(found)
        kill_tree(proc.pid)
        return found
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
        proc.wait()


def test_killed_during_the_backup_completes_when_run_again(inst):
    make_tree(inst.home / "chromadb", 5, small_files=3000, big_bytes=40 * 1000 * 1000)
    make_tree(inst.home / "membank", 6)
    sources = manifests(inst.home)

    def backup_being_copied():
        return [b for b in (inst.home / "backups").glob("pre-dind-*/chromadb") if any(b.iterdir())]

    (copying,) = killed_when(inst, backup_being_copied)
    incomplete = copying.parent
    assert not (incomplete / "manifest.json").exists() and inst.marker() is None
    assert inst.volumes() == [] and not (inst.home / "migration" / "progress.json").exists()

    assert "INCOMPLETE (interrupted; cannot be restored)" in inst.rollback(rollback_action="list").stdout

    rerun = inst.migrate(migrate_start_daemon="false")
    assert "Completing the migration" not in rerun.stdout, "nothing was recorded before the backup was complete"
    assert f"verified; removed incomplete backup {incomplete} (its run was interrupted)" in rerun.stdout, rerun.stdout
    (complete,) = inst.backups()
    assert complete != incomplete and inst.marker()["backup"] == str(complete)
    assert manifests(inst.home) == sources
    for name in ("chromadb", "membank"):
        assert differences(sources[name], inst.volume_manifest(inst.volume(name)), ownership=True) == []
        assert differences(sources[name], manifest_of_directory(str(complete / name)), ownership=True) == []
    listed = inst.rollback(rollback_action="list").stdout
    assert f"{complete}: created " in listed and "INCOMPLETE" not in listed, listed
    assert recap_changed(inst.migrate(migrate_start_daemon="false").stdout) == [0]


def test_killed_while_the_daemon_starts_completes_when_run_again(inst, docker_client):
    make_v05_chromadb(docker_client, inst)
    sources = manifests(inst.home)
    killed_when(inst, inst.containers, migrate_start_daemon=True)  # the parent exists: the imports are done
    progress = json.loads((inst.home / "migration" / "progress.json").read_text())
    assert progress["imported"] is True and inst.marker() is None
    volumes = inst.volumes()
    assert inst.volume("chromadb") in volumes

    rerun = inst.migrate()
    assert "Completing the migration started" in rerun.stdout
    assert "lists every migrated collection (code-index, notes)" in rerun.stdout, rerun.stdout
    # The running ChromaDB writes to its volume, so it no longer equals the source; it is not imported again.
    assert inst.volumes() == volumes, "no volume replaced"
    assert inst.marker()["chromadb_collections"] == ["code-index", "notes"] and len(inst.backups()) == 1
    assert manifests(inst.home) == sources
    assert recap_changed(inst.migrate().stdout) == [0]


@pytest.mark.parametrize("helper_too", [True, False], ids=["crash: the copy stops too", "playbook killed: the copy runs on"])
def test_killed_during_an_import_completes_when_run_again(inst, docker_client, helper_too):
    make_tree(inst.home / "chromadb", 7, small_files=3000, big_bytes=40 * 1000 * 1000)
    make_tree(inst.home / "membank", 8)
    sources = manifests(inst.home)
    target = inst.volume("chromadb")

    def helpers_writing():
        """The running helpers once the first volume holds something (watched on the engine's disk)."""
        running = [c for c in inst.helpers() if c.status == "running"]
        mountpoint = Path(docker_client.api.inspect_volume(target)["Mountpoint"]) if target in inst.volumes() else None
        return running if running and mountpoint and any(mountpoint.iterdir()) else None

    def freeze(helpers):  # frozen at once, then killed with the playbook: a crash stops the copy too
        for helper in helpers if helper_too else []:
            helper.pause()

    written = killed_when(inst, helpers_writing, freeze)
    for helper in written if helper_too else []:
        helper.kill()

    # Killed half-way through: a complete backup, the progress record, a written volume, no marker.
    progress = json.loads((inst.home / "migration" / "progress.json").read_text())
    (backup,) = inst.backups()
    assert progress["backup"] == str(backup) and progress["imported"] is False
    assert target in progress["imports"]
    assert (backup / "manifest.json").is_file() and inst.marker() is None
    (helper,) = inst.helpers()  # the killed run could not remove its helper
    helper.wait(timeout=120)  # a helper left running finishes its copy
    partial = inst.volume_manifest(target)
    if helper_too:
        assert 1 < len(partial) < len(sources["chromadb"]), f"{len(partial)} entries"
    else:
        assert partial == sources["chromadb"], "the copy the killed run left running completed"

    rerun = inst.migrate(migrate_start_daemon="false")
    assert "Completing the migration started" in rerun.stdout
    assert inst.backups() == [backup]  # the verified backup of the first run was used
    assert manifests(inst.home) == sources
    for name in ("chromadb", "membank"):
        assert differences(sources[name], inst.volume_manifest(inst.volume(name)), ownership=True) == []
    marker = inst.marker()
    assert marker["backup"] == str(backup)
    assert marker["volumes"][target]["digest"] == summary(sources["chromadb"])["digest"]
    assert not (inst.home / "migration" / "progress.json").exists()
    assert inst.helpers() == []  # the stale helper was removed by the re-run
    replaced = [v for v in inst.volumes() if v.startswith(f"{target}-replaced-")]
    if helper_too:
        assert [inst.volume_manifest(v) for v in replaced] == [partial]  # the partial content is kept, not merged
    else:
        assert replaced == [], "a volume already holding the source is kept as it is"
    assert recap_changed(inst.migrate(migrate_start_daemon="false").stdout) == [0]


def test_rollback_killed_during_an_export_completes_it_in_the_same_directory(inst):
    make_tree(inst.home / "chromadb", 11, small_files=3000, big_bytes=40 * 1000 * 1000)
    make_tree(inst.home / "plugins", 12)
    sources = manifests(inst.home)
    inst.migrate(migrate_start_daemon="false")
    (backup,) = inst.backups()
    (inst.home / "plugins" / "added after the migration").write_text("kept aside by the rollback")

    def export_being_copied():
        return [p for p in inst.home.glob("volume-exports-*/chromadb.hal9000-partial-*") if any(p.iterdir())]

    (partial,) = killed_when(inst, export_being_copied, playbook=ROLLBACK)
    exports = partial.parent
    assert inst.marker() is not None and inst.volume("chromadb") in inst.volumes(), "killed before the volumes were removed"
    (exports / "plugins").mkdir()  # as if exported then, and the volume changed since
    (exports / "plugins" / "stale").write_text("an older export")

    rerun = inst.rollback()
    assert "Rolled back to " in rerun.stdout
    assert list(inst.home.glob("volume-exports-*")) == [exports], "the interrupted rollback's directory is completed"
    (stale,) = exports.glob("plugins.replaced-*")
    assert (stale / "stale").read_text() == "an older export"
    assert sorted(p.name for p in exports.iterdir()) == ["chromadb", "membank", "plugins", stale.name], "no partial copy is left"
    assert differences(sources["chromadb"], manifest_of_directory(str(exports / "chromadb")), ownership=True) == []
    assert differences(sources["plugins"], manifest_of_directory(str(exports / "plugins")), ownership=True) == []
    assert inst.volumes() == [] and inst.marker() is None
    assert not (inst.home / "migration" / "rollback.json").exists()
    for name in ("chromadb", "plugins"):
        assert_same_tree(backup / name, inst.home / name)
    (aside,) = inst.home.glob("plugins.before-rollback-*")
    assert (aside / "added after the migration").read_text() == "kept aside by the rollback"
    assert recap_changed(inst.rollback().stdout) == [0]


def test_rollback_list_is_newest_first_and_empty_is_fine(inst):
    empty = inst.rollback(rollback_action="list")
    assert f"No backups in {inst.home}/backups" in empty.stdout and recap_changed(empty.stdout) == [0]
    no_backup = inst.rollback(check=False)
    assert no_backup.returncode != 0 and "No complete backup" in no_backup.stdout

    root = inst.home / "backups"
    for name, complete in (("pre-dind-20250101-090000", True), ("pre-dind-20250301-090000", False), ("pre-dind-20250201-090000", True)):
        (root / name / "membank").mkdir(parents=True)
        (root / name / "membank" / "m").write_bytes(b"12345")
        if complete:
            manifest = {"created_at": name, "complete": True, "directories": {"membank": {"bytes": 5}}}
            (root / name / "manifest.json").write_text(json.dumps(manifest))
    listed = inst.rollback(rollback_action="list").stdout
    lines = [line for line in listed.splitlines() if "pre-dind-" in line and '"msg"' in line]
    assert [re.search(r"pre-dind-\d{8}-\d{6}", line).group(0) for line in lines] == [
        "pre-dind-20250301-090000", "pre-dind-20250201-090000", "pre-dind-20250101-090000"]
    assert "INCOMPLETE" in lines[0] and "INCOMPLETE" not in lines[1] + lines[2]
    assert "contains membank, 5 B" in lines[1]


# ------------------------------------------------------------------------- a disk filling up ----

@pytest.fixture
def small_home(inst):
    """The installation's home on a file system of its own that a migration can fill (a real tmpfs, never a mock)."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m,mode=0755", "tmpfs", str(inst.home)], check=True)
    yield inst.home
    subprocess.run(["umount", "--lazy", str(inst.home)], check=False)


def test_a_disk_filling_up_during_the_backup_loses_nothing_and_completes_once_there_is_room(inst, small_home):
    make_tree(small_home / "chromadb", 5, big_bytes=6 * 1000 * 1000)  # about 8 MB: a second copy does not fit
    sources = manifests(small_home)

    full = inst.migrate(migrate_start_daemon="false", check=False)
    assert full.returncode != 0
    (said,) = [line for line in full.stdout.splitlines() if line.startswith("fatal:")]
    assert f"Copying {small_home / 'chromadb'} to {small_home / 'backups'}/pre-dind-" in said, said
    assert said.endswith('No space left on device."}'), said
    assert manifests(small_home) == sources and inst.marker() is None and inst.volumes() == []

    subprocess.run(["mount", "-o", "remount,size=40m", str(small_home)], check=True)  # room made
    done = inst.migrate(migrate_start_daemon="false")
    assert done.returncode == 0
    (backup,) = inst.backups()
    assert differences(sources["chromadb"], manifest_of_directory(str(backup / "chromadb")), ownership=True) == []
    assert differences(sources["chromadb"], inst.volume_manifest(inst.volume("chromadb")), ownership=True) == []
    assert manifests(small_home) == sources


def test_a_volume_filling_up_during_the_copy_loses_nothing_and_completes_once_there_is_room(inst, docker_client):
    make_tree(inst.home / "membank", 6, big_bytes=3 * 1000 * 1000)
    sources = manifests(inst.home)
    small = inst.volume("membank")  # made by the user beforehand on a small file system
    docker_client.volumes.create(small, driver="local", driver_opts={"type": "tmpfs", "device": "tmpfs", "o": "size=1m"})

    full = inst.migrate(migrate_start_daemon="false", migrate_skip_backup="true", check=False)
    assert full.returncode != 0
    assert f"no space left on device (volume {small} is full): make room there and run this again." in full.stdout, full.stdout
    assert manifests(inst.home) == sources and inst.marker() is None

    docker_client.volumes.get(small).remove()  # room made: a volume on the Docker host's disk
    done = inst.migrate(migrate_start_daemon="false", migrate_skip_backup="true")
    assert done.returncode == 0
    assert differences(sources["membank"], inst.volume_manifest(small), ownership=True) == []
    assert manifests(inst.home) == sources and inst.marker() is not None
