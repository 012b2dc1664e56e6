"""playbooks/volumes.yml (the seed's init-volumes.sh) on the real engine."""

from __future__ import annotations

import json
import re
import stat

from helpers import REPO_ROOT, snapshot

PLAYBOOK = "playbooks/volumes.yml"


def run(ansible, repo_root, prefix, home, action, check=True):
    extra = {
        "volumes_action": action,
        "hal9000_home": str(home),
        "hal9000_volume_prefix": prefix,
    }
    return ansible.playbook(repo_root / PLAYBOOK, "-e", json.dumps(extra), check=check)


def recap_changed(stdout):
    return [int(n) for n in re.findall(r"changed=(\d+)", stdout.split("PLAY RECAP")[-1])]


def test_init_status_clean_remove(ansible, docker_client, prefix, tmp_path):
    home = tmp_path / "hal9000-home"
    (home / "backups" / "pre-dind-20260101-000000").mkdir(parents=True)
    (home / "secrets").mkdir()
    (home / "secrets" / "anthropic_key").write_text("sk-test")

    first = run(ansible, REPO_ROOT, prefix, home, "init")
    assert recap_changed(first.stdout) == [2]  # the volumes (one task), the home layout with its config (one task)
    for suffix in ("chromadb", "memorybank", "plugins"):
        labels = docker_client.volumes.get(f"{prefix}-{suffix}").attrs["Labels"]
        assert labels == {"io.hal9000.managed": "true", "io.hal9000.type": "shared"}
    for sub in ("sessions", "logs", "config", "workers"):
        assert stat.S_IMODE((home / sub).stat().st_mode) == 0o700
    conf = home / "config" / "hal9000.conf"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert "WORKER_MEMORY=4g" in conf.read_text().splitlines()

    again = run(ansible, REPO_ROOT, prefix, home, "init")
    assert recap_changed(again.stdout) == [0]

    status = run(ansible, REPO_ROOT, prefix, home, "status")
    assert re.search(rf"{prefix}-chromadb: exists, [0-9.]+ Bytes, unused", status.stdout)
    assert f"{home}/sessions: present" in status.stdout

    # A container using a volume blocks clean before anything is removed.
    user = docker_client.containers.create(
        "debian:bookworm-slim", name=f"{prefix}-holder", volumes={f"{prefix}-plugins": {"bind": "/p"}}
    )
    before = snapshot(docker_client)
    refused = run(ansible, REPO_ROOT, prefix, home, "clean", check=False)
    assert refused.returncode != 0
    assert f"still used by {prefix}-holder" in refused.stdout
    assert snapshot(docker_client) == before
    assert (home / "sessions").is_dir()
    user.remove()

    # clean is the seed's --clean: the volumes and the layout removed, then made anew, empty.
    in_volume = {f"{prefix}-chromadb": {"bind": "/v", "mode": "rw"}}
    docker_client.containers.run("debian:bookworm-slim", ["sh", "-c", "echo old > /v/old"], volumes=in_volume, remove=True)
    (home / "sessions" / "old.json").write_text("{}")
    cleaned = run(ansible, REPO_ROOT, prefix, home, "clean")
    assert recap_changed(cleaned.stdout) == [4]  # removed (volumes, layout), then made (volumes, layout)
    assert docker_client.containers.run("debian:bookworm-slim", ["ls", "-A", "/v"], volumes=in_volume, remove=True) == b""
    assert docker_client.volumes.get(f"{prefix}-plugins").attrs["Labels"]["io.hal9000.managed"] == "true"
    assert sorted(p.name for p in home.iterdir()) == ["backups", "config", "logs", "secrets", "sessions", "workers"]
    assert not (home / "sessions" / "old.json").exists() and "WORKER_MEMORY=4g" in conf.read_text().splitlines()

    removed = run(ansible, REPO_ROOT, prefix, home, "remove")
    assert recap_changed(removed.stdout) == [2]
    names = snapshot(docker_client)[1]
    assert not {f"{prefix}-chromadb", f"{prefix}-memorybank", f"{prefix}-plugins"} & set(names)
    assert sorted(p.name for p in home.iterdir()) == ["backups", "secrets"]
    assert (home / "secrets" / "anthropic_key").read_text() == "sk-test"

    missing = run(ansible, REPO_ROOT, prefix, home, "status")
    assert f"{prefix}-plugins: not created" in missing.stdout
