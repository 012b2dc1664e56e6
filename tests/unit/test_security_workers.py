"""Security of the ways a worker is made: project directories checked on the host, no root, no secrets in env,
and a claim lock that a stuck holder cannot freeze (a real process holds the flock here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.hal9000.dind.plugins.module_utils import workers
from ansible_collections.hal9000.dind.plugins.module_utils.constants import CLAIM_LOCK_FILE
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.pool import Reconciler, claim, pool_spec, validate_pools
from ansible_collections.hal9000.dind.plugins.module_utils.workers import resolve_project_dir, worker_spec

from test_reconciler import PARENT, FakeClient, resolve


def one_line(caught, *words):
    message = str(caught.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, (word, message)
    return message


# ---- project directories -------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/etc", "/etc/ssh", "/usr/local/src", "/var/lib", "/var/lib/docker/volumes",
                                  "/opt", "/srv", "/mnt", "/boot", "/proc", "/sys", "/dev", "/run", "/var/log", "/root",
                                  "/root/.ssh", "/home", "/var", "/tmp"])
def test_system_locations_are_refused_on_this_host(path):
    with pytest.raises(Hal9000Error) as caught:
        resolve_project_dir(path)
    one_line(caught, "project_dir", "docs/project-dirs.md")


def test_a_project_below_srv_opt_or_mnt_is_accepted(tmp_path):
    """Only the top-level directories are refused: /srv/projects/app is what the module's own example mounts."""
    for path in ("/srv/projects/app", "/opt/app", "/mnt/c/Users/me/app", "/home/alice/src/app"):
        assert workers.project_path(path) == path
    project = tmp_path / "app"
    project.mkdir()
    assert resolve_project_dir(str(project)) == str(project.resolve())


def home_layout(tmp_path, monkeypatch):
    """A user's home under tmp_path with its ~/.hal9000 (the default HAL-9000 home of whoever runs the module)."""
    home = tmp_path / "alice"
    (home / ".hal9000" / "backups").mkdir(parents=True)
    (home / ".ssh").mkdir()
    (home / "src" / "app").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    return home


def test_the_hal9000_home_what_is_in_it_and_what_is_above_it_are_refused(tmp_path, monkeypatch):
    home = home_layout(tmp_path, monkeypatch)
    for path, words in ((home / ".hal9000", "HAL-9000 home"), (home / ".hal9000" / "backups", "HAL-9000 home"),
                        (home, "holds the HAL-9000 home"), (tmp_path, "holds the HAL-9000 home")):
        with pytest.raises(Hal9000Error) as caught:
            worker_spec(name="h9unit-w", project_dir=str(path))
        one_line(caught, words)
    assert worker_spec(name="h9unit-w", project_dir=str(home / "src" / "app"))["project"] == str(home / "src" / "app")


def test_a_link_into_the_home_or_to_root_is_refused_where_it_points(tmp_path, monkeypatch):
    home = home_layout(tmp_path, monkeypatch)
    for name, target in (("to-root", "/"), ("to-backups", home / ".hal9000" / "backups"), ("to-ssh", home / ".ssh")):
        (home / "src" / name).symlink_to(target)
        with pytest.raises(Hal9000Error) as caught:
            worker_spec(name="h9unit-w", project_dir=str(home / "src" / name))
        one_line(caught, "resolves to", str(target).rstrip("/") or "/")


def test_a_home_given_to_the_pool_module_is_refused_too(tmp_path, monkeypatch):
    home_layout(tmp_path, monkeypatch)
    other = tmp_path / "elsewhere" / "h9"
    (other / "config").mkdir(parents=True)
    with pytest.raises(Hal9000Error) as caught:
        resolve_project_dir(str(other / "config"), home=str(other))
    one_line(caught, "HAL-9000 home")


def test_the_probe_resolves_links_as_the_host_does_under_its_root(tmp_path):
    """What the parent's helper container runs, run here on a fake host root: /home/bob/link -> / is the root."""
    root = tmp_path / "host"
    (root / "home" / "bob" / "app").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("bob:x:1000:1000::/home/bob:/bin/sh\nsync:x:4:65534::/bin:/bin/sync\n")
    (root / "home" / "bob" / "link").symlink_to("/")
    (root / "home" / "bob" / "applink").symlink_to("/home/bob/app")
    paths = ["/home/bob/link", "/home/bob/applink", "/home/bob/missing"]
    done = subprocess.run([sys.executable, "-I", "-S", "-c", workers.probe_program(), json.dumps(paths), str(root)],
                          capture_output=True, text=True, timeout=30, check=True)
    found = json.loads(done.stdout)
    assert found["paths"]["/home/bob/link"]["real"] == "/"
    assert found["paths"]["/home/bob/applink"]["real"] == "/home/bob/app" and found["paths"]["/home/bob/applink"]["dir"]
    assert found["paths"]["/home/bob/missing"]["exists"] is False
    assert found["user_homes"] == ["/bin", "/home/bob"]


class FakeView:
    """A host seen from the parent: facts as the helper container would return them."""

    kind = "parent"

    def __init__(self, facts, homes=("/home/bob/.hal9000",), user_homes=("/home/bob",)):
        self.known, self.homes, self.sockets, self.user_homes = facts, tuple(homes), ("/var/run/docker.sock",), list(user_homes)

    def facts(self, paths):
        default = {"exists": True, "dir": True, "file": False, "mode": 0o755, "uid": 0, "gid": 0}
        return {"paths": {path: {**default, "real": path, **self.known.get(path, {})} for path in paths},
                "user_homes": self.user_homes}


def test_the_parents_view_decides_not_what_the_parent_itself_sees():
    """`coordinator spawn --project /home/bob/link` where, on the host, the link points at /."""
    view = FakeView({"/home/bob/link": {"real": "/"}, "/home/bob/hal": {"real": "/home/bob/.hal9000/backups"},
                     "/srv/app": {"uid": 1000, "gid": 1000}})
    for path in ("/home/bob/link", "/home/bob/hal"):
        with pytest.raises(Hal9000Error) as caught:
            worker_spec(name="h9unit-w", project_dir=path, host_view=view)
        one_line(caught, "on the Docker host")
    made = worker_spec(name="h9unit-w", project_dir="/srv/app", host_view=view)
    assert (made["project"], made["user"], made["host_view"]) == ("/srv/app", "1000:1000", "parent"), \
        "the project's owner on the host, as the worker module gives"


def test_spawn_worker_looks_at_the_host_before_creating_a_pool_workers_spec(monkeypatch):
    """A pool's spec is made without looking (claims must be fast); spawn_worker looks before anything is created."""
    client = FakeClient()
    views = []

    def parent_view(_client, parent):
        views.append(parent)
        return FakeView({"/srv/evil": {"real": "/"}})

    monkeypatch.setattr(workers, "ParentView", parent_view)
    pool = validate_pools({"pools": [{"name": "evil", "project": "/srv/evil"}]}, resolve())["pools"][0]
    with pytest.raises(Hal9000Error) as caught:
        workers.spawn_worker(client, pool_spec(pool, PARENT, resolve()))
    one_line(caught, "/srv/evil", "resolves to /")
    assert views == [PARENT] and client.api.containers_by_id == {}, "nothing created"


@pytest.mark.parametrize("pool,words", [
    ({"project": "/"}, ["Pool webapp", "/"]),
    ({"project": "/etc/x"}, ["Pool webapp", "/etc"]),
    ({"project": "/srv/app/../other"}, ["Pool webapp", "normalised"]),
    ({"project": "/srv/app", "user": "0:0"}, ["Pool webapp", "root"]),
])
def test_pools_json_refuses_what_no_worker_may_have(pool, words):
    with pytest.raises(Hal9000Error) as caught:
        validate_pools({"pools": [dict({"name": "webapp"}, **pool)]})
    one_line(caught, *words)


# ---- users -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("user", ["0", "0:0", "00:0", "000", "root", "root:root", "+0", "-0", "0:1001", "1000:1000:0"])
@pytest.mark.parametrize("mode", ["dind", "legacy"])
def test_root_is_refused_however_it_is_spelled(user, mode):
    with pytest.raises(Hal9000Error) as caught:
        worker_spec(name="h9unit-w", user=user, mode=mode, check_host_paths=False, claude_home="ephemeral")
    one_line(caught, "user")


def test_a_pool_made_with_a_root_user_is_refused():
    with pytest.raises(Hal9000Error):
        pool_spec({"name": "p", "project": "", "image": "hal9000/worker:latest", "user": "00:00", "read_only": False,
                   "api_key_file": "", "memory_scope": "project", "anthropic_base_url": "", "claude_home": "ephemeral",
                   "plugins": True, "storage_size": "", "egress_allow": None}, PARENT, resolve())


def test_ordinary_users_pass():
    for user in ("1000:1000", "1001", "claude", "alice:staff"):
        assert worker_spec(name="h9unit-w", user=user, check_host_paths=False, claude_home="ephemeral")["user"] == user


# ---- secrets in env ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "DB_PASSWORD", "MYSQL_PASSWD", "GH_TOKEN",
                                  "ANTHROPIC_API_KEY", "openai_apikey", "ANTHROPIC_AUTH_TOKEN", "HTTP_AUTHORIZATION",
                                  "GOOGLE_APPLICATION_CREDENTIALS", "SSH_PRIVATE_KEY", "gpg-passphrase", "client.secret",
                                  "BASIC_AUTH", "accessKey"])
def test_secret_looking_names_are_refused(name):
    with pytest.raises(Hal9000Error) as caught:
        worker_spec(name="h9unit-w", env={name: "x", "LANG": "C.UTF-8"}, check_host_paths=False)
    message = one_line(caught, name, "api_key_file", "apiKeyHelper")
    assert "LANG" not in message


def test_ordinary_names_pass():
    env = {"GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@b", "TOKENIZERS_PARALLELISM": "false", "LANG": "C", "KEYMAP": "us",
           "PATH_EXTRA": "/x"}
    assert set(env) <= set(worker_spec(name="h9unit-w", env=env, check_host_paths=False)["environment"])


# ---- the claim lock ----------------------------------------------------------------------------------------------

HOLD = "import fcntl, os, sys, time\nfd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n" \
       "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(600)\n"


@pytest.fixture
def stuck_holder(tmp_path):
    """A real process holding the claim lock of the home tmp_path and never letting go (until the test ends)."""
    lock = tmp_path / CLAIM_LOCK_FILE
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    yield holder
    holder.kill()
    holder.wait()


CLAIMER = """
import sys, time
sys.path.insert(0, sys.argv[2])
from ansible_collections.hal9000.dind.plugins.module_utils.pool import claim_lock
began = time.monotonic()
try:
    with claim_lock(sys.argv[1]):
        print("taken")
except Exception as exc:
    print(type(exc).__name__, round(time.monotonic() - began, 1), str(exc))
"""


def test_a_stuck_holder_makes_the_lock_time_out_with_one_line(tmp_path, stuck_holder):
    """The default (CLAIM_TIMEOUT's 2 s), in a process of its own: before, flock waited for ever."""
    collections = next(path for path in sys.path if path.endswith(os.path.join(".ansible", "collections")))
    try:
        done = subprocess.run([sys.executable, "-c", CLAIMER, str(tmp_path), collections],
                              capture_output=True, text=True, timeout=20, check=True)
    except subprocess.TimeoutExpired:
        pytest.fail("the claim lock never gave up while another process held it")
    kind, seconds, message = done.stdout.strip().split(" ", 2)
    assert kind == "ClaimLockTimeout" and 1.9 <= float(seconds) < 5, done.stdout
    assert "CLAIM_TIMEOUT" in message and str(tmp_path / CLAIM_LOCK_FILE) in message and "\n" not in message
    stuck_holder.kill()
    stuck_holder.wait()
    assert subprocess.run([sys.executable, "-c", CLAIMER, str(tmp_path), collections],
                          capture_output=True, text=True, timeout=20, check=True).stdout.strip() == "taken"


def in_thread(function, seconds):
    """Run ``function`` in a thread; fail if it has not returned after ``seconds`` (it stays blocked until the holder dies)."""
    result = {}

    def run():
        try:
            result["value"] = function()
        except Exception as exc:  # handed to the test
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    began = time.monotonic()
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting for the claim lock after {seconds} s"
    result["seconds"] = time.monotonic() - began
    return result


def test_a_claim_with_a_fallback_warns_and_gives_way_to_a_cold_spawn(tmp_path, stuck_holder):
    client = FakeClient()
    settings = resolve(file_values={"CLAIM_TIMEOUT": "0.5"})
    config = validate_pools({"pools": [{"name": "generic", "min": 1, "max": 2}]}, settings)
    Reconciler(client, PARENT, str(tmp_path), log=lambda message: None).reconcile(config, settings)
    assert len(client.api.containers_by_id) == 1, "a warm worker that would fit"
    spec = pool_spec(config["pools"][0], PARENT, settings)
    warnings = []
    done = in_thread(lambda: claim(client, spec, "h9unit-claimer", str(tmp_path), warn=warnings.append), 10)
    assert done.get("value", "error") is None and 0.4 < done["seconds"] < 3, done
    assert len(warnings) == 1 and "CLAIM_TIMEOUT" in warnings[0] and "cold spawn" in warnings[0]
    without = in_thread(lambda: claim(client, spec, "h9unit-claimer", str(tmp_path)), 10)
    assert type(without.get("error")).__name__ == "ClaimLockTimeout", "no fallback: the error itself"
    assert [c["Names"][0] for c in client.api.containers_by_id.values()][0].startswith("/hal9000-warm-"), "not claimed"


def test_the_pool_manager_logs_a_stuck_lock_and_carries_on(tmp_path, stuck_holder):
    client = FakeClient()
    log = []
    reconciler = Reconciler(client, PARENT, str(tmp_path), log=log.append)
    settings = resolve(file_values={"CLAIM_TIMEOUT": "0.5"})
    two = validate_pools({"idle_timeout": 60, "pools": [{"name": "generic", "min": 2, "max": 2}]}, settings)
    reconciler.reconcile(two, settings)  # creating takes no lock
    assert len(client.api.containers_by_id) == 2
    # The generic pool shrinks to one (its extra worker must go, under the lock) and a second pool appears.
    shrunk = validate_pools({"idle_timeout": 60, "pools": [{"name": "generic", "min": 1, "max": 1},
                                                           {"name": "other", "min": 1, "max": 1}]}, settings)
    done = in_thread(lambda: reconciler.reconcile(shrunk, settings), 10)
    assert "error" not in done and done["seconds"] < 3, done
    assert done["value"]["other"] == 1, "the other pool was still filled"
    assert any("could not remove warm worker" in line and "CLAIM_TIMEOUT" in line for line in log), log
