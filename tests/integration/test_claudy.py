"""claudy, installed by the install role, against the real engine: every sub-command, as a user types them.

The command is installed into a directory of the test's own (install_claudy_*_dir) and pointed at a parent of
the test's own through its environment (HAL9000_PARENT, HAL9000_HOME, HAL9000_VOLUME_PREFIX), so nothing of a
real installation is touched. The interactive path runs for real in tmux, with Claude Code talking to the
scripted stand-in API in the parent's network namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from claude_e2e import interactive_session_removes_its_worker, project_owned_by
from helpers import REPO_ROOT, AnsibleRunner, inspect_or_none, remove_installation, wait_for

WORKER_UID = 1001


def claudy_play(root, **extra):
    """A play running the install role's claudy tasks into directories under ``root``: (play, {bin, lib, completion})."""
    dirs = {"bin": root / "bin", "lib": root / "lib", "completion": root / "completion"}
    play = root / "install.yml"
    play.write_text(json.dumps([{
        "hosts": "localhost", "gather_facts": False,
        "tasks": [{"ansible.builtin.include_role": {"name": "hal9000.dind.install",
                                                    "tasks_from": "claudy"},
                   "vars": {"install_claudy_bin_dir": str(dirs["bin"]), "install_claudy_lib_dir": str(dirs["lib"]),
                            "install_claudy_completion_dir": str(dirs["completion"]), **extra}}],
    }]))
    return play, dirs


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The install role's claudy tasks run into a directory of this module: (runner, play, {bin, lib, completion})."""
    root = tmp_path_factory.mktemp("claudy")
    runner = AnsibleRunner(root)
    play, dirs = claudy_play(root)
    runner.playbook(play)
    again = runner.playbook(play).stdout
    assert "changed=0" in again and "failed=0" in again, again
    yield runner, play, dirs


@pytest.fixture(scope="module")
def install(docker_client, prefix, installed, tmp_path_factory):
    """claudy's command line and environment for a parent of this module's own; everything it made is removed."""
    _runner, _play, dirs = installed
    base = f"{prefix}-claudy"
    home = tmp_path_factory.mktemp("claudy-home") / "home"
    env = dict(os.environ, HAL9000_PARENT=f"{base}-parent", HAL9000_HOME=str(home), HAL9000_VOLUME_PREFIX=base)
    env.pop("DOCKER_HOST", None)
    install = Claudy(dirs["bin"] / "claudy", env, base, home)
    yield install
    remove_installation(docker_client, base, install.parent)
    shutil.rmtree(home, ignore_errors=True)


class Claudy:
    def __init__(self, command, env, base, home):
        self.command, self.env, self.base, self.home = str(command), env, base, Path(home)
        self.parent = env["HAL9000_PARENT"]

    def __call__(self, *args, stdin=None, timeout=120, **env):
        return subprocess.run([self.command, *args], env=dict(self.env, **env), input=stdin, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def imports(self, *args):
        """claudy ARGS under ``python -X importtime`` (the launcher's own Python): (its output, the modules it imported)."""
        python = Path(self.command).read_text().splitlines()[0][2:].strip()
        proc = subprocess.run([python, "-X", "importtime", self.command, *args], env=self.env, capture_output=True,
                              text=True, timeout=120, check=False)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr[-3000:])
        return proc.stdout, {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}

    def ok(self, *args, **kwargs):
        proc = self(*args, **kwargs)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc.stdout

    def refused(self, code, *args, words=()):
        proc = self(*args)
        message = proc.stderr.strip()
        assert proc.returncode == code, (args, proc.returncode, proc.stdout, proc.stderr)
        assert message.startswith("claudy: ") and "\n" not in message and "Traceback" not in message, message
        for word in words:
            assert word in message, (word, message)
        return message


def sdk_modules(imported):
    return sorted(module for module in imported if module.split(".")[0] in ("docker", "requests", "urllib3"))


def our_containers(client, base):
    return sorted(c["Names"][0] for c in client.api.containers(all=True, filters={"name": base}))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return project_owned_by(tmp_path_factory.mktemp("claudy-project") / "app", WORKER_UID)


def test_installed_command_completion_and_version(installed, install):
    _runner, _play, dirs = installed
    launcher = (dirs["bin"] / "claudy").read_text()
    assert launcher.startswith("#!/") and str(dirs["lib"]) in launcher
    module_utils = dirs["lib"] / "ansible_collections/hal9000/dind/plugins/module_utils"
    assert (module_utils / "claudy.py").is_file()
    compiled = {path.name.split(".")[0] for path in (module_utils / "__pycache__").glob("*.pyc")}
    assert compiled >= {path.stem for path in module_utils.glob("*.py")}, "claudy's library is precompiled"
    completion = dirs["completion"] / "claudy"
    words = subprocess.run(
        ["bash", "-c", f"source {completion}; COMP_WORDS=(claudy da); COMP_CWORD=1; _claudy; echo ${{COMPREPLY[@]}}"],
        capture_output=True, text=True, check=True).stdout.split()
    assert "daemon" in words, words
    version = json.loads(install.ok("version", "--json"))
    assert version["claudy"] and version["engine"] and version["images"]["hal9000/parent:latest"], version
    for command in ("daemon", "ps", "attach", "logs", "stop", "pool", "version"):
        assert "usage: claudy " + command in install.ok(command, "--help")
    assert "--via-parent" in install.ok("--help")


def test_without_a_parent_a_clear_message_and_nothing_made(docker_client, install, project):
    status = install("daemon", "status")
    assert status.returncode == 3, (status.stdout, status.stderr)  # a script or a monitor can tell
    assert f"Parent container: Not found ({install.parent})" in status.stdout and "claudy daemon start" in status.stdout
    install.refused(3, "--via-parent", "--detach", "--name", f"{install.base}-early", project, words=["claudy daemon start"])
    assert our_containers(docker_client, install.base) == []


def test_daemon_start_and_status(docker_client, install):
    lines = install.ok("daemon", "start").splitlines()
    assert lines[0] == "HAL-9000 Orchestrator Status", lines
    assert any(line.startswith(f"Parent container: Running ({install.parent}") for line in lines), lines
    assert "ChromaDB server: Running on port 8000" in lines, lines
    status = json.loads(install.ok("daemon", "status", "--json"))
    assert status["parent"]["state"] == "running" and status["parent"]["chromadb_ready"], status
    again = json.loads(install.ok("daemon", "start", "--json"))
    assert again["changed"] is False and again["actions"] == [], again


@pytest.mark.parametrize("args, words", [
    (["--name", "bad name"], ["Invalid worker name"]),
    (["--memory", "4x"], ["Invalid memory size '4x'"]),
    (["--cpus", "lots"], ["cpus"]),
], ids=["name", "memory", "cpus"])
def test_bad_input_is_refused_in_one_line_and_nothing_made(docker_client, install, project, args, words):
    before = our_containers(docker_client, install.base)
    install.refused(2, "--via-parent", "--detach", *args, project, words=words)
    assert our_containers(docker_client, install.base) == before


def test_a_missing_project_dir_is_refused(docker_client, install, tmp_path):
    before = our_containers(docker_client, install.base)
    install.refused(2, "--detach", str(tmp_path / "no-such-project"), words=["does not exist"])
    assert our_containers(docker_client, install.base) == before


def test_detach_ps_logs_stop(docker_client, install, project):
    name = f"{install.base}-w1"
    out = install.ok("--via-parent", "--detach", "--name", name, "--memory", "3g", "--cpus", "1", "--pids-limit", "90", project)
    assert out.splitlines() == [out.splitlines()[0], f"Attach with: claudy attach {name}"] and "spawned" in out, out
    inspected = docker_client.api.inspect_container(name)
    assert inspected["HostConfig"]["NetworkMode"] == f"container:{docker_client.api.inspect_container(install.parent)['Id']}"
    assert inspected["HostConfig"]["Memory"] == 3 << 30 and inspected["HostConfig"]["PidsLimit"] == 90

    out, imported = install.imports("ps", "--json")
    assert not sdk_modules(imported), sdk_modules(imported)  # ps lists on engine.EngineClient too
    listed = {w["name"]: w for w in json.loads(out)}
    worker = listed[name]
    assert worker["state"] == "running" and worker["project"] == project and worker["pool"] == "", worker
    assert (worker["memory"], worker["cpus"], worker["pids_limit"]) == (3 << 30, 1.0, 90), worker
    assert worker["started"].startswith(time.strftime("%Y-", time.gmtime())), worker
    table = install.ok("ps").splitlines()
    assert table[0].split() == ["NAME", "POOL", "PROJECT", "STATE", "AGE", "MEMORY", "CPUS", "PIDS"], table
    assert any(row.split()[:4] == [name, "-", project, "running"] and row.split()[5:] == ["3g", "1.0", "90"] for row in table), table
    assert name in install.ok("ps", "--quiet").split()

    install.ok("logs", "--tail", "5", name)
    assert install.ok("stop", name).strip() == f"Stopped {name}"
    wait_for(lambda: inspect_or_none(docker_client, name) is None, 30, "the stopped worker to be removed (auto_remove)")
    install.refused(5, "stop", name, words=[f"No worker named {name}", "claudy ps"])
    install.refused(5, "logs", name, words=["claudy ps"])
    install.refused(5, "attach", name)


def test_attach_runs_in_the_worker_and_stop_all(docker_client, install, project):
    names = [f"{install.base}-a{i}" for i in (1, 2)]
    install.ok("--detach", "--name", names[0], project)
    install.ok("--detach", "--rm", "-i", "hal9000/worker:ultramin", "--name", names[1], project)  # the seed's flags
    assert docker_client.api.inspect_container(names[1])["Config"]["Image"] == "hal9000/worker:ultramin"
    out = install.ok("attach", "--shell", names[0], stdin="echo attached-as-$(id -u) in $PWD\nexit\n")
    assert f"attached-as-{WORKER_UID} in /workspace" in out, out
    stopped = json.loads(install.ok("stop", "--all", "--json"))
    assert sorted(stopped) == sorted(names), stopped
    wait_for(lambda: all(inspect_or_none(docker_client, n) is None for n in names), 30, "the stopped workers to go")


def test_settings_come_from_hal9000_conf_and_the_environment(docker_client, install, project):
    config = install.home / "config" / "hal9000.conf"
    original = config.read_text() if config.exists() else None
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text((original or "") + "\nWORKER_MEMORY=2g\n")
    try:
        from_file, from_env = f"{install.base}-sf", f"{install.base}-se"
        install.ok("--detach", "--name", from_file, project)
        install.ok("--detach", "--name", from_env, project, WORKER_MEMORY="1g")
        assert docker_client.api.inspect_container(from_file)["HostConfig"]["Memory"] == 2 << 30
        assert docker_client.api.inspect_container(from_env)["HostConfig"]["Memory"] == 1 << 30
        install.ok("stop", from_file)
        install.ok("stop", from_env)
    finally:
        if original is None:
            config.unlink()
        else:
            config.write_text(original)


def test_pool_on_scale_claim_off(docker_client, install, project):
    install.ok("pool", "on")
    install.ok("pool", "scale", "2")
    wait_for(lambda: json.loads(install.ok("pool", "status", "--json"))["pools"][0]["warm"] >= 2, 90, "two warm workers")
    status = json.loads(install.ok("pool", "status", "--json"))
    assert status["running"] is True and status["enabled"] is True, status
    assert "Pool manager: Running" in install.ok("pool", "status")
    listed = json.loads(install.ok("ps", "--json"))
    assert sum(1 for w in listed if w["warm"] and w["state"] == "warm" and w["pool"] == "generic") >= 2, listed
    install.refused(2, "pool", "scale", "many", words=["whole number"])
    off = install.ok("pool", "off")
    assert "Pool manager stopped" in off and "Cleanup: removed" in off, off
    status = json.loads(install.ok("pool", "status", "--json"))
    assert status["running"] is False and status["pools"][0]["warm"] == 0, status


def test_a_warm_worker_of_the_project_pool_is_claimed(docker_client, install, project):
    pools = {"enabled": True, "pools": [{"name": "app", "project": project, "min": 1, "max": 1, "user": f"{WORKER_UID}:{WORKER_UID}",
                                         "image": "hal9000/worker:latest"}]}
    pools_file = install.home / "config" / "pools.json"
    pools_file.write_text(json.dumps(pools))
    install.ok("pool", "on")
    try:
        wait_for(lambda: any(w["pool"] == "app" and w["warm"] for w in json.loads(install.ok("ps", "--json"))), 90,
                 "a warm worker of the project's pool")
        # Named, so with a persistent Claude home like the pool's warm workers (an unnamed one is ephemeral).
        name = f"{install.base}-claimed"
        out, imported = install.imports("--detach", "--json", "--name", name, project)
        claimed = json.loads(out)
        assert claimed["claimed"] is True and claimed["name"] == name and claimed["project"] == project, claimed
        # A warm claim is done without the docker SDK (engine.EngineClient): its import alone would cost 0.24 s.
        assert not sdk_modules(imported) and "ansible_collections.hal9000.dind.plugins.module_utils.engine" in imported, imported
        assert claimed["state"] == "running" and claimed["claude_home"] == "persistent", claimed
        install.ok("stop", name)
    finally:
        install.ok("pool", "off")


def test_legacy_mode_warns_and_runs_without_the_parent(docker_client, install, project):
    name = f"{install.base}-legacy"
    proc = install("--legacy", "--detach", "--name", name, project)
    assert proc.returncode == 0, proc.stderr
    assert "deprecated" in proc.stderr and "v1.0" in proc.stderr, proc.stderr
    mode = docker_client.api.inspect_container(name)["HostConfig"]["NetworkMode"]
    assert not mode.startswith("container:"), mode
    docker_client.api.remove_container(name, force=True, v=True)


def test_interactive_session_in_tmux_and_the_worker_removed_on_exit(docker_client, install, project, tmp_path):
    name = f"{install.base}-tui"
    env = " ".join(f"{k}={install.env[k]}" for k in ("HAL9000_PARENT", "HAL9000_HOME", "HAL9000_VOLUME_PREFIX"))
    interactive_session_removes_its_worker(
        docker_client, install.parent, install.home, name, tmp_path, lambda url, key_path: (
            f"env {env} {install.command} --via-parent --name {name} --anthropic-base-url {url} --api-key-file {key_path} {project}"),
        uid=WORKER_UID)


def test_daemon_stop_and_restart_refuse_while_workers_are_attached(docker_client, install, project):
    name = f"{install.base}-busy"
    install.ok("--detach", "--name", name, project)
    install.refused(1, "daemon", "stop", words=[name, "--force"])
    install.refused(1, "daemon", "restart", words=[name])
    assert docker_client.api.inspect_container(install.parent)["State"]["Running"]
    lines = install.ok("daemon", "stop", "--force").splitlines()
    assert any(line.startswith("Parent container: Stopped") for line in lines), lines
    assert docker_client.api.inspect_container(install.parent)["State"]["Running"] is False
    assert install("daemon", "status").returncode == 3


def test_daemon_commands_keep_the_options_and_home_the_parent_was_made_with(docker_client, installed, install, tmp_path):
    """A parent made by daemon.yml with its own home and options: claudy, given none of them, keeps them all."""
    runner, _play, dirs = installed
    base = f"{install.base}-made"
    home = tmp_path / "elsewhere"
    made = {"daemon_name": f"{base}-parent", "daemon_hal9000_home": str(home), "daemon_volume_prefix": base,
            "daemon_memory": "3g", "daemon_idle_timeout": 77, "daemon_enable_mcp_relay": False}
    daemon = [REPO_ROOT / "playbooks" / "daemon.yml", "-e", json.dumps(made)]
    env = {key: value for key, value in install.env.items() if key not in ("HAL9000_HOME", "HAL9000_VOLUME_PREFIX")}
    claudy = Claudy(dirs["bin"] / "claudy", dict(env, HAL9000_PARENT=made["daemon_name"]), base, home)
    try:
        runner.playbook(*daemon)
        first = docker_client.api.inspect_container(claudy.parent)
        assert claudy("daemon", "status").returncode == 0
        assert claudy.ok("daemon", "stop")
        assert claudy("daemon", "status").returncode == 3
        started = json.loads(claudy.ok("daemon", "start", "--json"))
        assert started["actions"] == [f"started {claudy.parent}"], started
        restarted = json.loads(claudy.ok("daemon", "restart", "--json"))
        assert restarted["actions"] == [f"restarted {claudy.parent}"], restarted
        now = docker_client.api.inspect_container(claudy.parent)
        assert now["Id"] == first["Id"] and now["State"]["Running"], "claudy recreated the parent"
        assert now["HostConfig"]["Memory"] == 3 << 30
        assert [m["Source"] for m in now["Mounts"] if m["Destination"] == "/root/.hal9000"] == [str(home)]
        status = json.loads(claudy.ok("daemon", "status", "--json"))
        assert {v["name"] for v in status["volumes"] if v["exists"]} >= {f"{base}-chromadb"}, status["volumes"]
        # And the role finds the parent as it left it; its other actions work on it too.
        assert "changed=0" in runner.playbook(*daemon).stdout

        def role(action):
            return runner.playbook(daemon[0], "-e", json.dumps(dict(made, daemon_action=action))).stdout

        assert f"Parent container: Running ({claudy.parent}" in role("status")
        role("restart")
        again = docker_client.api.inspect_container(claudy.parent)
        assert again["Id"] == first["Id"] and again["State"]["StartedAt"] != now["State"]["StartedAt"]
        role("stop")
        assert docker_client.api.inspect_container(claudy.parent)["State"]["Running"] is False
    finally:
        remove_installation(docker_client, base, claudy.parent)


def test_claudy_runs_with_the_python_given_and_one_without_the_sdk_is_refused_first(tmp_path):
    bare = tmp_path / "bare"  # a Python without the docker SDK: a venv sees none of the packages around it
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    runner = AnsibleRunner(tmp_path)
    play, dirs = claudy_play(tmp_path, install_claudy_python=str(bare / "bin" / "python"))
    refused = runner.playbook(play, check=False)
    assert refused.returncode != 0 and f"install_claudy_python {bare}/bin/python cannot import the docker SDK" in refused.stdout
    assert not dirs["bin"].exists() and not dirs["lib"].exists(), "something was installed before the refusal"

    play, dirs = claudy_play(tmp_path, install_claudy_python=sys.executable)
    runner.playbook(play)
    assert (dirs["bin"] / "claudy").read_text().splitlines()[0] == f"#!{sys.executable}"
    version = subprocess.run([str(dirs["bin"] / "claudy"), "version", "--json"], capture_output=True, text=True, check=True)
    assert json.loads(version.stdout)["python"] == sys.version.split()[0]


def test_install_claudy_false_removes_it(installed):
    runner, play, dirs = installed
    runner.playbook(play, "-e", "install_claudy=false")
    assert not (dirs["bin"] / "claudy").exists() and not (dirs["lib"]).exists() and not (dirs["completion"] / "claudy").exists()
