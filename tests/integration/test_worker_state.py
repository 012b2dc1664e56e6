"""Worker state that lasts, on the real engine with the real CLI: Claude homes, session records, plugins,
the host's Claude config copied safely, and /workspace volumes named after their worker.

A parent of this module's own (its home in a tmp directory); workers made by hal9000.dind.worker.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from claude_e2e import key_file_for, project_owned_by, run_claude, spawn, standin_api
from helpers import REPO_ROOT, AnsibleRunner, exec_in, one_line_refusal, remove_containers, started_parent, succeeded, wait_for

MODULE = "hal9000.dind.worker"
UID = 1234


@pytest.fixture(scope="module")
def parent(docker_client, prefix, tmp_path_factory):
    with started_parent(docker_client, tmp_path_factory, f"{prefix}-state") as started:
        yield started


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return project_owned_by(tmp_path_factory.mktemp("state-project") / "webapp", UID)


@pytest.fixture(scope="module")
def api_key(tmp_path_factory):
    return key_file_for(tmp_path_factory.mktemp("state-key") / "anthropic_key", UID)


def home_of(parent, name):
    return Path(parent.home) / "workers" / name


def records(parent, worker):
    found = []
    for path in sorted((Path(parent.home) / "sessions").glob("*.json")):
        record = json.loads(path.read_text())
        if record["worker"] == worker:
            found.append((path, record))
    return found


def test_a_named_workers_claude_state_survives_a_recreate(ansible, docker_client, parent, made, prefix, project, tmp_path,
                                                          api_key):
    name = f"{prefix}-state-keep"
    scripts = [{"marker": "remember the word KESTREL", "steps": [{"text": "Noted: KESTREL."}]},
               {"marker": "which word", "steps": [{"text": "It was KESTREL."}]}]
    with standin_api(docker_client, parent.name, tmp_path, scripts) as api:
        args = {"project_dir": project, "anthropic_base_url": api.url, "api_key_file": api_key[1]}
        first = spawn(ansible, parent, made, name, flavour="minimal", **args)
        assert first["worker"]["claude_home"] == "persistent"
        home = home_of(parent, name)
        info = home.stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (UID, 0o700), "the worker's uid, private"
        ran = run_claude(docker_client, name, "remember the word KESTREL")
        assert ran.code == 0 and "Noted: KESTREL." in ran.out, ran
        transcripts = list((home / ".claude" / "projects").glob("*/*.jsonl"))
        assert transcripts and "KESTREL" in transcripts[0].read_text(), "Claude Code wrote its session into the home"

        # Another image: the worker is recreated; `claude --continue` goes on with the same conversation.
        second = spawn(ansible, parent, made, name, flavour="ultramin", **args)
        assert second["changed"] and second["worker"]["id"] != first["worker"]["id"], second
        ran = run_claude(docker_client, name, "which word was it", extra=["--continue"])
        assert ran.code == 0 and "It was KESTREL." in ran.out, ran
        assert "remember the word KESTREL" in json.dumps(api.conversation("which word")[-1]["body"]["messages"]), \
            "the recreated worker's CLI sent the earlier conversation"


def test_a_worker_without_a_name_has_an_ephemeral_home(ansible, docker_client, parent, made):
    result = succeeded(ansible.task(MODULE, {"parent": parent.name}))
    made.append(result["worker"]["name"])
    assert result["worker"]["claude_home"] == "ephemeral"
    assert not home_of(parent, result["worker"]["name"]).exists()
    mounts = docker_client.api.inspect_container(result["worker"]["name"])["HostConfig"]["Tmpfs"]
    assert "/home/claude" in mounts


def test_a_home_is_used_by_one_running_worker_at_a_time(ansible, docker_client, parent, made, prefix, project):
    name = f"{prefix}-state-busy"
    spawn(ansible, parent, made, name, project_dir=project)
    moved = f"{prefix}-state-busy-moved"
    docker_client.api.rename(name, moved)  # still running on workers/<name>
    made.append(moved)
    refused = ansible.task(MODULE, {"name": name, "parent": parent.name, "project_dir": project})
    one_line_refusal(refused, "in use", moved)
    assert docker_client.containers.list(all=True, filters={"name": f"^/{name}$"}) == [], "nothing was created"


@pytest.mark.parametrize("bad", ["symlink-home", "escaping-name"])
def test_unsafe_homes_are_refused_before_anything_is_made(ansible, docker_client, parent, prefix, tmp_path, bad):
    name = f"{prefix}-state-{bad}"
    if bad == "symlink-home":
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        home_of(parent, name).symlink_to(elsewhere)
        result = ansible.task(MODULE, {"name": name, "parent": parent.name})
        one_line_refusal(result, "symbolic link")
        assert list(elsewhere.iterdir()) == []
        home_of(parent, name).unlink()
    else:
        result = ansible.task(MODULE, {"name": "../../escape", "parent": parent.name})
        assert result.get("failed") is True, result
        assert not (Path(parent.home).parent / "escape").exists()
    assert docker_client.containers.list(all=True, filters={"name": name}) == []


def test_removal_keeps_the_home_unless_purged_and_prune_removes_orphans(ansible, docker_client, parent, made, prefix, project):
    kept, purged, alive = f"{prefix}-state-kept", f"{prefix}-state-purged", f"{prefix}-state-alive"
    for name in (kept, purged, alive):
        spawn(ansible, parent, made, name, project_dir=project)
    succeeded(ansible.task(MODULE, {"name": kept, "parent": parent.name, "state": "absent"}))
    assert home_of(parent, kept).is_dir(), "kept by default"
    gone = succeeded(ansible.task(MODULE, {"name": purged, "parent": parent.name, "state": "absent", "purge_home": True}))
    assert gone["changed"] and not home_of(parent, purged).exists()

    listed = succeeded(ansible.task("hal9000.dind.worker_homes", {"parent": parent.name}))
    by_name = {home["name"]: home for home in listed["homes"]}
    assert by_name[kept]["worker_exists"] is False and by_name[kept]["size"] > 0, by_name[kept]
    assert by_name[alive]["worker_exists"] is True

    status = ansible.playbook(REPO_ROOT / "playbooks" / "volumes.yml", "-e", json.dumps(
        {"volumes_action": "status", "hal9000_home": str(parent.home), "hal9000_parent_name": parent.name,
         "hal9000_volume_prefix": f"{prefix}-state"}))
    assert f"workers/{kept}: " in status.stdout and f"no worker {kept} (workers.yml" in status.stdout, status.stdout
    assert f"worker {alive} exists" in status.stdout, status.stdout

    playbook = REPO_ROOT / "playbooks" / "workers.yml"
    extra = ["-e", json.dumps({"workers_action": "prune-homes", "hal9000_parent_name": parent.name,
                               "hal9000_home": str(parent.home)})]
    checked = ansible.playbook(playbook, "--check", *extra)
    assert "Would remove: " in checked.stdout and kept in checked.stdout, checked.stdout
    assert home_of(parent, kept).is_dir(), "check mode removes nothing"
    pruned = ansible.playbook(playbook, *extra)
    assert "Removed: " in pruned.stdout and not home_of(parent, kept).exists()
    assert home_of(parent, alive).is_dir(), "a home whose worker exists stays"
    again = ansible.playbook(playbook, *extra)
    assert "changed=0" in again.stdout and "No home of a removed worker" in again.stdout


def test_a_claimed_warm_worker_gets_its_home_with_what_the_name_left(ansible, docker_client, parent, made, prefix):
    name = f"{prefix}-state-claimed"
    pool = {"parent": parent.name, "hal9000_home": str(parent.home), "generic": True,
            "min_warm_workers": 1, "max_warm_workers": 2, "enabled": True}
    succeeded(ansible.task("hal9000.dind.pool", pool))
    try:
        for round_ in (1, 2):
            claimed = succeeded(ansible.task(MODULE, {"name": name, "parent": parent.name, "from_pool": True}))
            made.append(name)
            assert claimed["claimed"] is True, claimed
            assert not any(p.name.startswith(".warm-") and name in p.name for p in (Path(parent.home) / "workers").iterdir())
            assert (home_of(parent, name) / ".claude").is_dir()
            if round_ == 1:
                code, _out, err = exec_in(docker_client, name, ["sh", "-c", "echo round-one > ~/.claude/note"])
                assert code == 0, err
                assert records(parent, name)[-1][1]["claimed"] is True
                succeeded(ansible.task(MODULE, {"name": name, "parent": parent.name, "state": "absent"}))
            else:
                code, out, _err = exec_in(docker_client, name, ["cat", "/home/claude/.claude/note"])
                assert (code, out) == (0, "round-one\n"), f"the second claim of {name} did not get the first one's home"
    finally:
        succeeded(ansible.task("hal9000.dind.pool", dict(pool, enabled=False, min_warm_workers=0)))
        docker_client.api.exec_start(docker_client.api.exec_create(parent.name, ["coordinator", "pool", "cleanup"]))
    leftovers = [p.name for p in (Path(parent.home) / "workers").iterdir() if p.name.startswith(".warm-")]
    assert leftovers == [], "removed warm workers leave no home behind"


def test_every_run_writes_a_session_record_without_secrets(ansible, docker_client, parent, made, prefix, project, tmp_path):
    name = f"{prefix}-state-session"
    key, key_file = key_file_for(tmp_path / "key", UID)
    result = spawn(ansible, parent, made, name, project_dir=project, api_key_file=key_file, auto_remove=False)
    (path, record), = records(parent, name)
    assert set(record) >= {"worker", "project", "image_id", "limits", "claimed", "started", "ended", "exit_code"}
    assert (record["project"], record["claimed"], record["ended"]) == (project, False, None)
    assert record["image_id"].startswith("sha256:") and record["limits"]["pids_limit"] == 100
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key not in path.read_text() and key_file not in path.read_text()

    exec_in(docker_client, name, ["sh", "-c", "kill 1"])  # the worker's tini ends: an exit the parent sees
    wait_for(lambda: records(parent, name)[-1][1]["ended"], 30, "the parent to close the record")
    closed = records(parent, name)[-1][1]
    assert closed["exit_code"] is not None and closed["ended"] >= closed["started"]

    status = exec_in(docker_client, parent.name, ["coordinator", "status", "--json"])
    assert status[0] == 0, status
    assert any(r["worker"] == name for r in json.loads(status[1])["sessions"]["recent"])
    info = succeeded(ansible.task("hal9000.dind.info", {"parent": parent.name, "volume_prefix": f"{prefix}-state"}))
    assert any(r["worker"] == name for r in info["sessions"]["recent"]), info["sessions"]
    assert result["worker"]["name"] == name


def test_a_generic_workers_workspace_volume_goes_with_it_on_every_path(ansible, docker_client, parent, made, prefix):
    def volumes(name):
        return [v.name for v in docker_client.volumes.list(filters={"name": f"{name}-workspace"})]

    by_module, by_hand = f"{prefix}-state-ws1", f"{prefix}-state-ws2"
    for name in (by_module, by_hand):
        spawn(ansible, parent, made, name)
        assert volumes(name) == [f"{name}-workspace"]
        labels = docker_client.api.inspect_volume(f"{name}-workspace")["Labels"]
        assert (labels["io.hal9000.role"], labels["io.hal9000.worker"]) == ("workspace", name)
    succeeded(ansible.task(MODULE, {"name": by_module, "parent": parent.name, "state": "absent"}))
    assert volumes(by_module) == []
    docker_client.api.remove_container(by_hand, force=True)  # a plain docker rm -f, no -v
    wait_for(lambda: volumes(by_hand) == [], 15, "the parent to remove the workspace of a worker removed by hand")


def test_the_plugins_volume_reaches_every_worker_read_only_and_claude_uses_it(
        ansible, docker_client, parent, made, prefix, project, tmp_path, api_key):
    plugins_volume = f"{prefix}-state-plugins"
    install_plugin(docker_client, plugins_volume, tmp_path)
    settings = Path(parent.home) / "run" / "relay" / "client" / "managed-settings.json"
    wait_for(lambda: settings.exists() and "hello@team-tools" in settings.read_text(), 45,
             "the parent to enable the installed plugin in the workers' managed settings")

    name = f"{prefix}-state-plugged"
    scripts = [{"marker": "Say hello to Dave", "steps": [{"text": "Hello, Dave."}]}]
    with standin_api(docker_client, parent.name, tmp_path, scripts) as api:
        spawn(ansible, parent, made, name, project_dir=project, anthropic_base_url=api.url, api_key_file=api_key[1])
        listed = json.loads(exec_in(docker_client, name, ["claude", "plugin", "list", "--json"])[1])
        hello = next(p for p in listed if p["id"] == "hello@team-tools")
        assert hello["enabled"] is True and not hello.get("errors"), hello
        for path in ("/opt/hal9000/plugins/x", "/home/claude/.claude/plugins/x"):
            code, _out, err = exec_in(docker_client, name, ["touch", path])
            assert code != 0 and "Read-only" in err, (path, err)
        ran = run_claude(docker_client, name, "/hello:greet Dave")
        assert ran.code == 0 and "Hello, Dave." in ran.out, ran
        assert api.conversation("Say hello to Dave"), "the plugin's command reached the model"

    without = f"{prefix}-state-unplugged"
    spawn(ansible, parent, made, without, project_dir=project, plugins=False)
    assert exec_in(docker_client, without, ["test", "-e", "/opt/hal9000/plugins"])[0] != 0


def install_plugin(client, volume, workdir):
    """A real plugin layout in the parent's plugins volume: a local marketplace and one plugin installed by the CLI."""
    market = workdir / "market"
    (market / ".claude-plugin").mkdir(parents=True)
    (market / ".claude-plugin" / "marketplace.json").write_text(json.dumps(
        {"name": "team-tools", "owner": {"name": "HAL"},
         "plugins": [{"name": "hello", "source": "./plugins/hello", "description": "says hello"}]}))
    plugin = market / "plugins" / "hello"
    (plugin / ".claude-plugin").mkdir(parents=True)
    (plugin / "commands").mkdir()
    (plugin / ".claude-plugin" / "plugin.json").write_text(json.dumps({"name": "hello", "version": "1.0.0"}))
    (plugin / "commands" / "greet.md").write_text("---\ndescription: Greet someone\n---\nSay hello to $ARGUMENTS\n")
    inside = "/home/claude/.claude/plugins"
    script = (f"cp -r /market {inside}/marketplaces-src && "
              f"claude plugin marketplace add {inside}/marketplaces-src && claude plugin install hello@team-tools")
    output = client.containers.run(
        # As root (the volume's root belongs to root, as the migration leaves it), with the workers' home path.
        "hal9000/worker:latest", ["sh", "-c", script], entrypoint=[], remove=True, user="0:0",
        environment={"HOME": "/home/claude"}, tmpfs={"/home/claude": "mode=0755"},
        volumes={volume: {"bind": inside, "mode": "rw"}, str(market): {"bind": "/market", "mode": "ro"}},
    )
    assert b"Successfully installed" in output or b"installed" in output.lower(), output


def test_the_hosts_claude_config_is_copied_never_mounted(ansible, docker_client, parent, made, prefix, project, tmp_path,
                                                         api_key):
    host_config = tmp_path / "root-claude"  # like /root/.claude: root's, 0700, unreadable by the worker's uid
    host_config.mkdir(mode=0o700)
    (host_config / "settings.json").write_text(json.dumps({"model": "host-model", "env": {"FROM_HOST": "1"}}))
    (host_config / "CLAUDE.md").write_text("host memory\n")
    (host_config / ".credentials.json").write_text('{"secret": "host-login"}')
    (host_config / "projects").mkdir()
    (host_config / "projects" / "transcript.jsonl").write_text("private\n")
    name = f"{prefix}-state-config"
    args = {"project_dir": project, "mount_claude_config": True, "claude_config_dir": str(host_config), "auto_remove": False,
            "api_key_file": api_key[1]}
    spawn(ansible, parent, made, name, **args)

    def read(path):
        return exec_in(docker_client, name, ["cat", path])

    copied = json.loads(read("/home/claude/.claude/settings.json")[1])
    assert copied["model"] == "host-model" and copied["env"] == {"FROM_HOST": "1"}
    assert copied["apiKeyHelper"] == "cat /run/secrets/anthropic_key", "the worker's key file stays its key"
    assert "apiKeyHelper" not in (host_config / "settings.json").read_text()
    assert read("/home/claude/.claude/CLAUDE.md")[1] == "host memory\n"
    assert read("/home/claude/.claude/.credentials.json")[0] != 0, "credentials stay on the host unless allowed"
    assert read("/home/claude/.claude/projects/transcript.jsonl")[0] != 0, "the host's sessions are not copied"
    mounts = read("/proc/self/mountinfo")[1]
    assert str(host_config) not in mounts, "the host directory is not mounted"
    code, _out, err = exec_in(docker_client, name, ["sh", "-c", "echo '{\"hooks\": \"planted\"}' > ~/.claude/settings.json"])
    assert code == 0, err
    assert "planted" not in (host_config / "settings.json").read_text(), "the worker's writes stay in its home"
    assert stat.S_IMODE(host_config.stat().st_mode) == 0o700, "the host directory's modes are not widened"

    # The host's file changes: the next start copies it over the worker's; credentials only when allowed.
    (host_config / "settings.json").write_text(json.dumps({"model": "host-model-2"}))
    succeeded(ansible.task(MODULE, {"name": name, "parent": parent.name, "state": "stopped"}))
    succeeded(ansible.task(MODULE, {"name": name, "parent": parent.name, "claude_config_credentials": True, **args}))
    assert json.loads(read("/home/claude/.claude/settings.json")[1])["model"] == "host-model-2"
    assert json.loads(read("/home/claude/.claude/.credentials.json")[1]) == {"secret": "host-login"}
    refused = ansible.task(MODULE, {"name": f"{name}-eph", "parent": parent.name, "claude_home": "ephemeral",
                                    "mount_claude_config": True, "claude_config_dir": str(host_config)})
    one_line_refusal(refused, "persistent")


USER = 4321  # a non-root owner of a home; no account is needed for a uid


@pytest.fixture(scope="module")
def user_installation(docker_client, prefix):
    """A home owned by USER, its parent started by root: (base, workdir, home)."""
    base = Path(tempfile.mkdtemp(prefix=f"{prefix}-user-", dir="/tmp"))
    os.chmod(base, 0o755)
    home = base / "home"
    home.mkdir(mode=0o700)
    os.chown(home, USER, USER)
    runner = AnsibleRunner(base)
    args = {"name": f"{prefix}-user-parent", "volume_prefix": f"{prefix}-user", "hal9000_home": str(home)}
    try:
        succeeded(runner.task("hal9000.dind.parent", args))
        yield args, base, home
    finally:
        from helpers import remove_installation
        remove_installation(docker_client, f"{prefix}-user", args["name"])
        shutil.rmtree(base, ignore_errors=True)


def run_as_user(base, play):
    """ansible-playbook as USER (with the docker group, as a user of the engine is), in ``base``."""
    work = base / f"as-user-{len(list(base.iterdir()))}"
    work.mkdir()
    os.chown(work, USER, USER)
    book = work / "play.yml"
    book.write_text(json.dumps(play))
    docker_gid = os.stat("/var/run/docker.sock").st_gid
    # The test's interpreter may live where only root may go (a pyenv under /root): the system's Python 3.11
    # runs the same packages (pure Python, or built for the same cp311 ABI) as the user.
    env = dict(os.environ, HOME=str(work), ANSIBLE_LOCAL_TEMP=str(work / "tmp"), ANSIBLE_REMOTE_TEMP=str(work / "tmp"),
               ANSIBLE_NOCOLOR="1", PYTHONPATH=os.pathsep.join(site.getsitepackages()))
    command = ["setpriv", f"--reuid={USER}", f"--regid={USER}", f"--groups={docker_gid}", "/usr/bin/python3",
               str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(REPO_ROOT / "inventory" / "localhost.yml"),
               str(book)]
    return subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, check=False)


def test_a_users_home_stays_theirs_when_root_runs_the_parent(docker_client, prefix, user_installation):
    args, base, home = user_installation
    project = project_owned_by(base / "project", USER)
    user_config = base / "user-claude"  # the user's own ~/.claude
    user_config.mkdir(mode=0o700)
    (user_config / "settings.json").write_text(json.dumps({"model": "users-model"}))
    (user_config / ".credentials.json").write_text('{"secret": "users-login"}')
    for path in (user_config, user_config / "settings.json", user_config / ".credentials.json"):
        os.chown(path, USER, USER)
    name, claimed = f"{prefix}-user-spawned", f"{prefix}-user-claimed"
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "Pools", "hal9000.dind.pool": {"parent": args["name"], "hal9000_home": str(home), "generic": True,
                                                "min_warm_workers": 1, "max_warm_workers": 1, "enabled": True}},
        {"name": "Claim", "hal9000.dind.worker": {"name": claimed, "parent": args["name"], "from_pool": True},
         "register": "claim"},
        {"name": "Claimed", "ansible.builtin.assert": {"that": ["claim.claimed"]}},
        {"name": "Spawn, with the user's Claude config", "hal9000.dind.worker": {
            "name": name, "parent": args["name"], "project_dir": project, "mount_claude_config": True,
            "claude_config_dir": str(user_config)}},
        {"name": "Remove and purge the claimed one's home (the parent does it)", "hal9000.dind.worker": {
            "name": claimed, "parent": args["name"], "state": "absent", "purge_home": True}},
        {"name": "Pools off", "hal9000.dind.pool": {"parent": args["name"], "hal9000_home": str(home), "enabled": False,
                                                    "min_warm_workers": 0}},
    ]}]
    try:
        ran = run_as_user(base, play)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        code, out, _err = exec_in(docker_client, name, ["cat", "/home/claude/.claude/settings.json"])
        assert code == 0 and json.loads(out)["model"] == "users-model", out
        assert exec_in(docker_client, name, ["cat", "/home/claude/.claude/.credentials.json"])[0] != 0
        assert exec_in(docker_client, name, ["sh", "-c", "echo '{}' > ~/.claude/settings.json"])[0] == 0
        assert json.loads((user_config / "settings.json").read_text())["model"] == "users-model"
    finally:
        remove_containers(docker_client, name, claimed)
    assert not (home / "workers" / claimed).exists(), "purged by the parent on the user's behalf"
    assert (home / "workers" / name).stat().st_uid == USER
    foreign = []
    for root, dirs, files in os.walk(home):
        for entry in dirs + files:
            path = Path(root) / entry
            relative = path.relative_to(home)
            if relative.parts[0] == "workers" and len(relative.parts) > 1:
                continue  # a worker's home is its uid's by design
            if path.lstat().st_uid != USER:
                foreign.append(f"{relative} (uid {path.lstat().st_uid})")
    assert foreign == [], f"root left files in the user's home: {foreign}"
