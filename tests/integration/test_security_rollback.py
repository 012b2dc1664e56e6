"""playbooks/rollback.yml against a planted backup and against a running warm pool; real engine, real runs.

Each test has a home, volume prefix and parent name of its own; whatever it made is removed afterwards.
"""

from __future__ import annotations

import json
import time

from ansible_collections.hal9000.dind.plugins.module_utils.backup import MANIFEST, create_backup
from ansible_collections.hal9000.dind.plugins.module_utils.manifest import manifest_of_directory
from helpers import AnsibleRunner, REPO_ROOT, snapshot, started_parent, succeeded, wait_for

ROLLBACK = REPO_ROOT / "playbooks" / "rollback.yml"


def rollback(runner, home, base, parent, **extra):
    variables = dict(hal9000_home=str(home), hal9000_volume_prefix=base, hal9000_parent_name=parent, **extra)
    return runner.playbook(ROLLBACK, "-e", json.dumps(variables), check=False)


def test_a_backup_whose_manifest_names_another_place_is_refused_before_anything(ansible, docker_client, prefix, tmp_path):
    data = tmp_path / "data"  # tmp_path itself holds the runner's files
    home, victim, foreign = data / "home", data / "victim", data / "foreign"
    victim.mkdir(parents=True)
    (victim / "authorized_keys").write_text("ssh-ed25519 AAAA owner\n")
    (foreign / "payload").mkdir(parents=True)
    (foreign / "payload" / "planted").write_text("planted")
    # A complete, verifiable backup whose manifest says its chromadb belongs at the victim (rollback_backup=PATH).
    backup = create_backup(str(foreign), {"chromadb": str(foreign / "payload")})["backup"]["path"]
    manifest = json.loads((foreign / "backups").joinpath(backup, MANIFEST).read_text())
    manifest["directories"]["chromadb"]["source"] = str(victim)
    (foreign / "backups").joinpath(backup, MANIFEST).write_text(json.dumps(manifest))
    home.mkdir()
    (home / "migration").mkdir()
    (home / "migration" / "dind.json").write_text("{}")
    before, engine = manifest_of_directory(str(data)), snapshot(docker_client)

    run = rollback(ansible, home, f"{prefix}-planted", f"{prefix}-planted-parent", rollback_backup=backup)
    assert run.returncode != 0, run.stdout
    assert f"its {MANIFEST} puts 'chromadb' at '{victim}'" in run.stdout and "Nothing was changed" in run.stdout, run.stdout
    assert manifest_of_directory(str(data)) == before, "a refused rollback changed files"
    assert snapshot(docker_client) == engine


def test_rollback_stops_the_pool_before_it_removes_the_workers(docker_client, prefix, tmp_path_factory):
    base = f"{prefix}-rbpool"
    with started_parent(docker_client, tmp_path_factory, base) as parent:
        labelled = {"label": ["io.hal9000.role=worker", f"io.hal9000.parent={parent.name}"]}

        def workers():
            return [c["Names"][0].lstrip("/") for c in docker_client.api.containers(all=True, filters=labelled)]

        pool = succeeded(parent.runner.task("hal9000.dind.pool", {
            "parent": parent.name, "hal9000_home": str(parent.home), "min_warm_workers": 2, "max_warm_workers": 2}))
        assert pool["manager_running"] is True and len(workers()) == 2, pool
        (parent.home / "chromadb").mkdir()
        (parent.home / "chromadb" / "chroma.sqlite3").write_bytes(b"v0.5.x data")
        create_backup(str(parent.home))

        run = rollback(AnsibleRunner(parent.runner.workdir), parent.home, base, parent.name, rollback_keep_volumes=True)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "Stop the pool manager of" in run.stdout, run.stdout
        assert docker_client.api.containers(all=True, filters={"name": parent.name}) == []
        # A worker the manager made between the removals would be left here, its parent gone.
        assert workers() == [], "the pool manager replaced removed workers during the rollback"
        time.sleep(2)
        assert workers() == []
        assert wait_for(lambda: not (parent.home / "migration" / "dind.json").exists(), 1, "the marker removed")
