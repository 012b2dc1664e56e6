"""The home layout through real ansible-playbook runs: names stay below the home and links are never followed.

As root (how these tests run), a planted name or link would reach whatever it names: "outside" stands for the
user's ~/.ssh or /etc and must come out of every refused run exactly as it went in.
"""

from __future__ import annotations

import json
import os
import stat

from ansible_collections.hal9000.dind.plugins.module_utils.manifest import manifest_of_directory
from helpers import REPO_ROOT, snapshot

MODULE = "hal9000.dind.home"


def user_home(tmp_path):
    """A user's home with .ssh and a laid-out HAL-9000 home holding backups and secrets (under tmp_path/data)."""
    user = tmp_path / "data" / "user"
    (user / ".ssh").mkdir(parents=True, mode=0o700)
    (user / ".ssh" / "authorized_keys").write_text("ssh-ed25519 AAAA owner\n")
    home = user / ".hal9000"
    for sub in ("sessions", "logs", "config", "workers", "backups", "secrets"):
        (home / sub).mkdir(parents=True, mode=0o700)
    (home / "secrets" / "anthropic_key").write_text("sk-test")
    return user, home


def test_clean_with_a_layout_name_outside_the_home_removes_nothing(ansible, docker_client, prefix, tmp_path):
    user, home = user_home(tmp_path)
    data = tmp_path / "data"  # tmp_path itself holds the runner's files
    before, engine = manifest_of_directory(str(data)), snapshot(docker_client, prefix)
    extra = {"volumes_action": "clean", "hal9000_home": str(home), "hal9000_volume_prefix": f"{prefix}-clean",
             "volumes_layout_dirs": ["sessions", ".."]}
    run = ansible.playbook(REPO_ROOT / "playbooks" / "volumes.yml", "-e", json.dumps(extra), check=False)
    assert run.returncode != 0, run.stdout
    assert "Home directory entry '..' must be a relative path below the home" in run.stdout, run.stdout
    assert manifest_of_directory(str(data)) == before, "a refused clean changed the user's files"
    assert (user / ".ssh" / "authorized_keys").read_text() == "ssh-ed25519 AAAA owner\n"
    assert snapshot(docker_client, prefix) == engine


def test_the_home_module_refuses_planted_links_in_every_state(ansible, tmp_path):
    _user, home = user_home(tmp_path)
    data = tmp_path / "data"  # tmp_path itself holds the runner's files
    outside = data / "outside"
    outside.mkdir()
    outside.chmod(0o755)
    (outside / "keep").write_text("keep")
    for sub in ("logs", "config"):
        (home / sub).rmdir()
        (home / sub).symlink_to(outside)
    before = manifest_of_directory(str(data))
    results = ansible.tasks([
        (MODULE, {"path": str(home), "settings": {"WORKER_MEMORY": "4g"}}),
        (MODULE, {"path": str(home), "state": "absent"}),
    ])
    for result in results:
        assert result["failed"] is True and "\n" not in result["msg"], result
        assert f"{home}/logs is a symbolic link (to {outside})" in result["msg"], result
        assert "Remove the link" in result["msg"], result
    assert manifest_of_directory(str(data)) == before
    assert stat.S_IMODE(os.stat(outside).st_mode) == 0o755
    assert sorted(os.listdir(outside)) == ["keep"]
