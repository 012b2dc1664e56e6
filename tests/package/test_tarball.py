"""The built collection tarball installs into an empty path and runs site.yml."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import docker
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture
def installed(tmp_path):
    """The tarball built and installed with ansible-galaxy, as a user would."""
    build = tmp_path / "build"
    subprocess.run(
        [BIN / "ansible-galaxy", "collection", "build", "--output-path", build, REPO_ROOT], check=True, capture_output=True
    )
    tarball = next(build.glob("hal9000-dind-*.tar.gz"))
    collections = tmp_path / "collections"
    subprocess.run(
        [BIN / "ansible-galaxy", "collection", "install", "--force", "-p", collections, tarball], check=True, capture_output=True
    )
    return collections


def run(args, collections, cwd):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_NOCOLOR="1")
    env.pop("ANSIBLE_CONFIG", None)
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)


def test_tarball_leaves_out_tests_and_ci(installed):
    root = installed / "ansible_collections" / "hal9000" / "dind"
    assert (root / "plugins" / "modules" / "volume.py").is_file()
    assert (root / "playbooks" / "site.yml").is_file()
    for absent in ("tests", ".ci", "scripts", "molecule", ".venv", ".git"):
        assert not (root / absent).exists(), absent


def test_ansible_doc_from_the_tarball(installed, tmp_path):
    proc = run([BIN / "ansible-doc", "hal9000.dind.volume"], installed, tmp_path)
    assert proc.returncode == 0, proc.stderr
    for text in ("recreate", "driver_options", "docker_host", "RETURN VALUES", "EXAMPLES"):
        assert text in proc.stdout


def test_site_playbook_from_the_tarball_is_idempotent(installed, tmp_path):
    client = docker.from_env()
    prefix = f"h9pkg-{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}-{suffix}" for suffix in ("chromadb", "memorybank", "plugins")]
    parent = f"{prefix}-parent"
    extra = {"hal9000_home": str(tmp_path / "home"), "hal9000_volume_prefix": prefix, "hal9000_parent_name": parent,
             **{f"install_claudy_{part}_dir": str(tmp_path / part) for part in ("bin", "lib", "completion")}}
    args = [
        BIN / "ansible-playbook", "-i", "localhost,", "-c", "local",
        "-e", f"ansible_python_interpreter={sys.executable}", "-e", json.dumps(extra), "hal9000.dind.site",
    ]
    try:
        first = run(args, installed, tmp_path)
        assert first.returncode == 0, first.stdout + first.stderr
        assert sorted(v.name for v in client.volumes.list(filters={"name": prefix})) == sorted(names)
        assert client.containers.get(parent).status == "running"
        assert "ChromaDB server: Running on port 8000" in first.stdout
        # claudy from the tarball: its version read from MANIFEST.json, the parent site.yml started in its status.
        claudy_env = dict(os.environ, HAL9000_PARENT=parent, HAL9000_HOME=extra["hal9000_home"], HAL9000_VOLUME_PREFIX=prefix)
        version = subprocess.run([tmp_path / "bin" / "claudy", "version", "--json"], env=claudy_env, capture_output=True,
                                 text=True, check=True)
        assert json.loads(version.stdout)["claudy"] == yaml.safe_load((REPO_ROOT / "galaxy.yml").read_text())["version"]
        status = subprocess.run([tmp_path / "bin" / "claudy", "daemon", "status"], env=claudy_env, capture_output=True,
                                text=True, check=True)
        assert f"Parent container: Running ({parent}" in status.stdout, status.stdout
        second = run(args, installed, tmp_path)
        assert second.returncode == 0, second.stdout + second.stderr
        recap = second.stdout.split("PLAY RECAP")[-1]
        assert re.findall(r"changed=(\d+)", recap) == ["0"]
        assert second.stdout.count("PLAY [") == 2  # install, and the pool (off by default)
    finally:
        for container in client.containers.list(all=True, filters={"name": prefix}):
            container.remove(force=True)
        for volume in client.volumes.list(filters={"name": prefix}):
            volume.remove()
