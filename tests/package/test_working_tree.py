"""Every step of scripts/test.sh runs the working tree, whatever copy of hal9000.dind a user installed.

A decoy hal9000.dind (version 0.0.1, no roles, a volume_info module that fails with DECOY) is
installed where a user's install lives: ~/.ansible/collections, with HOME a temporary directory. Each
tool then runs in the environment scripts/lib.sh sets up for test.sh: it must resolve the working tree
and leave the decoy as it was (ansible-lint and molecule used to put ~/.ansible/collections first and
reinstall the project over it).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

DECOY_MODULE = '''\
#!/usr/bin/python
from __future__ import annotations

DOCUMENTATION = r"""
module: volume_info
short_description: DECOY installed copy
description: [DECOY installed copy]
author: [DECOY]
options:
  decoy_probe:
    description: [Accepted, so only the working tree's module rejects it.]
    type: bool
"""
EXAMPLES = ""
RETURN = ""

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec=dict(decoy_probe=dict(type="bool")))
    module.fail_json(msg="DECOY: the installed copy of hal9000.dind ran")


if __name__ == "__main__":
    main()
'''

PROBE_PLAY = """\
---
- name: Probe which hal9000.dind runs
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Call volume_info with an option only the decoy accepts
      hal9000.dind.volume_info:
        decoy_probe: true
"""

LINT_PLAY = """\
---
- name: Probe which hal9000.dind ansible-lint reads
  hosts: localhost
  gather_facts: false
  roles:
    - role: hal9000.dind.volumes
"""


def snapshot(root):
    """Every file under root with its digest, to prove nothing rewrote it."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def user_env(home):
    """A user's shell: none of the Ansible settings test.sh made, HOME is home."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ANSIBLE_", "MOLECULE_"))}
    return dict(env, HOME=str(home), NO_COLOR="1")


@pytest.fixture
def decoy_home(tmp_path):
    """A HOME whose ~/.ansible/collections holds the decoy, installed by ansible-galaxy as a user would."""
    src = tmp_path / "decoy"
    (src / "plugins" / "modules").mkdir(parents=True)
    (src / "galaxy.yml").write_text(
        "namespace: hal9000\nname: dind\nversion: 0.0.1\nreadme: README.md\nauthors: [DECOY]\n"
    )
    (src / "README.md").write_text("DECOY\n")
    (src / "plugins" / "modules" / "volume_info.py").write_text(DECOY_MODULE)
    home = tmp_path / "home"
    env = user_env(home)
    subprocess.run([BIN / "ansible-galaxy", "collection", "build", "--output-path", tmp_path, src], check=True, capture_output=True, env=env)
    subprocess.run(
        [BIN / "ansible-galaxy", "collection", "install", tmp_path / "hal9000-dind-0.0.1.tar.gz"],
        check=True, capture_output=True, env=env, cwd=tmp_path,
    )
    installed = home / ".ansible" / "collections" / "ansible_collections" / "hal9000" / "dind"
    assert (installed / "MANIFEST.json").is_file()
    before = snapshot(installed)
    yield home
    assert snapshot(installed) == before, "a step rewrote the installed copy in ~/.ansible/collections"


def with_lib_env(home, *args):
    """Run args as test.sh does: in lib.sh's environment, from the project root."""
    script = 'source scripts/lib.sh; use_working_tree_collection; cd "$REPO_ROOT"; "$@"'
    return subprocess.run(
        ["bash", "-c", script, "probe", *map(str, args)],
        cwd=REPO_ROOT, env=user_env(home), capture_output=True, text=True, check=False,
    )


def assert_working_tree_only(proc):
    output = proc.stdout + proc.stderr
    assert "DECOY" not in output, output
    assert "Another version of 'hal9000.dind'" not in output, output


def test_pytest_imports_the_working_tree(decoy_home, tmp_path):
    """The unit and integration runs: imports and the ansible-playbook runs they start (tests/conftest.py)."""
    from ansible_collections.hal9000.dind.plugins.modules import volume_info

    assert Path(volume_info.__file__).resolve() == REPO_ROOT / "plugins" / "modules" / "volume_info.py"
    play = tmp_path / "probe.yml"
    play.write_text(PROBE_PLAY)
    env = dict(os.environ, HOME=str(decoy_home), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(
        [BIN / "ansible-playbook", "-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}", play],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )
    assert "Unsupported parameters for (hal9000.dind.volume_info) module: decoy_probe" in proc.stdout, proc.stdout
    assert_working_tree_only(proc)


def test_only_the_working_tree_is_searched(tmp_path):
    """Not ~/.ansible/collections nor /usr/share/ansible/collections, even when the user's shell names them."""
    env = dict(user_env(tmp_path), ANSIBLE_COLLECTIONS_PATH="~/.ansible/collections:/usr/share/ansible/collections")
    proc = subprocess.run(
        ["bash", "-c", "source scripts/lib.sh; use_working_tree_collection; ansible-config dump"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True,
    )
    paths = re.search(r"^COLLECTIONS_PATHS\(.*\) = (.*)$", proc.stdout, re.MULTILINE).group(1)
    assert paths == repr([str(REPO_ROOT / ".ansible" / "collections")])


def test_ansible_doc_reads_the_working_tree(decoy_home):
    proc = with_lib_env(decoy_home, "ansible-doc", "hal9000.dind.volume_info")
    assert proc.returncode == 0, proc.stderr
    path = re.search(r"^> MODULE hal9000\.dind\.volume_info \((.+)\)$", proc.stdout, re.MULTILINE).group(1)
    assert Path(path).resolve() == REPO_ROOT / "plugins" / "modules" / "volume_info.py"
    assert_working_tree_only(proc)


def test_ansible_playbook_runs_the_working_tree(decoy_home, tmp_path):
    play = tmp_path / "probe.yml"
    play.write_text(PROBE_PLAY)
    proc = with_lib_env(
        decoy_home, "ansible-playbook", "-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}", play
    )
    assert "Unsupported parameters for (hal9000.dind.volume_info) module: decoy_probe" in proc.stdout, proc.stdout
    assert_working_tree_only(proc)


def test_ansible_lint_reads_the_working_tree(decoy_home, tmp_path):
    """With the decoy first, the syntax check finds no volumes role (errors inside the decoy are not reported)."""
    play = tmp_path / "probe.yml"
    play.write_text(LINT_PLAY)
    proc = with_lib_env(decoy_home, "ansible-lint", "--project-dir", REPO_ROOT, play)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_working_tree_only(proc)


def test_molecule_runs_the_working_tree(decoy_home):
    """Its prerun, and the syntax check of the default scenario's converge.yml (the decoy has no roles)."""
    proc = with_lib_env(decoy_home, "molecule", "syntax", "-s", "default")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_working_tree_only(proc)
    assert "playbook: " in proc.stdout
