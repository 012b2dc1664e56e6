"""Driving the real Claude Code CLI in real workers against a scripted stand-in for the Anthropic API.

The stand-in (standin_api.py) runs with the parent image's python3 in a container that joins the parent's
network namespace, so only the parent and its workers reach it, at http://127.0.0.1:<port>. Its script and its
request log live in a host directory bind-mounted into it.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import docker

from helpers import inspect_or_none, remove_containers, succeeded, wait_for

STANDIN_IMAGE = "hal9000/parent:latest"
STANDIN_SOURCE = Path(__file__).resolve().parent / "standin_api.py"
# How the tests run the CLI: one prompt, no permission prompts (the workers are the sandbox), plain text out.
CLAUDE_FLAGS = ("--dangerously-skip-permissions", "--output-format", "text")
# Without it the CLI also looks up api.anthropic.com (telemetry, feature flags) despite ANTHROPIC_BASE_URL.
CLAUDE_ENV = {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}

ClaudeRun = collections.namedtuple("ClaudeRun", "code out err seconds")


class StandIn:
    """A running stand-in: its container name, URL (inside the parent's namespace) and host-side files."""

    def __init__(self, name, workdir):
        self.name = name
        self.port = None
        self.workdir = Path(workdir)
        self.script_path = self.workdir / "script.json"
        self.log_path = self.workdir / "requests.jsonl"

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def requests(self):
        """Every request the stand-in received so far, oldest first (see standin_api.py for the fields)."""
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text(encoding="utf-8").splitlines() if line]

    def conversation(self, marker=None):
        """The main conversation's requests (POST /v1/messages with tools), those naming ``marker`` when given."""
        return [r for r in self.requests()
                if r["method"] == "POST" and r["path"].split("?")[0] == "/v1/messages" and isinstance(r["body"], dict)
                and r["body"].get("tools") and (marker is None or marker in json.dumps(r["body"]["messages"]))]


def spawn(ansible, parent, made, name, **args):
    """A running worker made by hal9000.dind.worker on ``parent``; its name goes into ``made`` (removed afterwards)."""
    made.append(name)
    result = succeeded(ansible.task("hal9000.dind.worker", {"name": name, "parent": parent.name, **args}))
    assert result["worker"]["state"] == "running", result
    return result


def write_task(marker, file_path, content, reply):
    """A script: the model writes ``content`` to ``file_path`` with the Write tool, then ends its turn with ``reply``."""
    return {"marker": marker, "steps": [
        {"tool_use": {"name": "Write", "input": {"file_path": file_path, "content": content}}},
        {"text": reply},
    ]}


def worker_args(standin):
    """The worker module's options that point a worker's CLI at ``standin``."""
    return {"anthropic_base_url": standin.url}


@contextlib.contextmanager
def standin_api(client, parent_name, workdir, scripts, timeout=20):
    """A stand-in answering ``scripts`` in the namespace of the running parent ``parent_name``; removed afterwards.

    It listens on a port of that namespace the kernel picks (``StandIn.port``, ``StandIn.url``); it is named after
    the parent (the parent's clean-up would catch it too) and runs as this user, without capabilities.
    """
    standin = StandIn(f"{parent_name}-standin-{uuid.uuid4().hex[:6]}", workdir)
    standin.script_path.write_text(json.dumps(scripts), encoding="utf-8")
    parent_id = client.api.inspect_container(parent_name)["Id"]
    try:
        container = client.containers.run(
            STANDIN_IMAGE, [f"/standin/{STANDIN_SOURCE.name}", "0", "/data/script.json", "/data/requests.jsonl"],
            entrypoint=["python3"], name=standin.name, detach=True, network_mode=f"container:{parent_id}",
            user=f"{os.getuid()}:{os.getgid()}", cap_drop=["ALL"], security_opt=["no-new-privileges:true"],
            read_only=True, mounts=[
                docker.types.Mount(f"/standin/{STANDIN_SOURCE.name}", str(STANDIN_SOURCE), type="bind", read_only=True),
                docker.types.Mount("/data", str(standin.workdir), type="bind"),
            ],
        )

        def listening():
            container.reload()
            logs = container.logs().decode("utf-8", "replace")
            if container.status != "running":
                raise AssertionError(f"the stand-in API stopped ({container.status}):\n{logs}")
            return re.search(r"listening on 127\.0\.0\.1:(\d+)", logs)

        standin.port = int(wait_for(listening, timeout, "the stand-in API to listen").group(1))
        yield standin
    finally:
        remove_containers(client, standin.name)


def run_claude(client, worker, prompt, base_url=None, timeout=120, user="", extra=()):
    """``claude -p PROMPT`` in ``worker`` through docker exec: a ClaudeRun (exit code, stdout, stderr, seconds).

    ``base_url`` goes into the exec's environment, for workers made without ``anthropic_base_url``.
    The CLI runs under ``timeout`` inside the worker, so a hang fails the test instead of stalling it.
    """
    env = dict(CLAUDE_ENV, **({"ANTHROPIC_BASE_URL": base_url} if base_url else {}))
    argv = ["timeout", str(timeout), "claude", *extra, "-p", prompt, *CLAUDE_FLAGS]
    began = time.monotonic()
    exec_id = client.api.exec_create(worker, argv, user=user, environment=[f"{k}={v}" for k, v in env.items()])
    out, err = client.api.exec_start(exec_id, demux=True)
    seconds = time.monotonic() - began
    code = client.api.exec_inspect(exec_id)["ExitCode"]
    return ClaudeRun(code, (out or b"").decode("utf-8", "replace"), (err or b"").decode("utf-8", "replace"), seconds)


def project_owned_by(path, uid, gid=None):
    """An empty project directory at ``path`` owned by ``uid:gid``; its real path."""
    path = Path(path)
    path.mkdir()
    os.chown(path, uid, uid if gid is None else gid)
    return os.path.realpath(path)


def onboarded_claude_home(home, uid):
    """A worker's Claude home at ``home`` (made here) whose first-run questions (theme, trust in /workspace) are answered."""
    home = Path(home)
    home.mkdir(parents=True)
    (home / ".claude.json").write_text(json.dumps(
        {"hasCompletedOnboarding": True, "theme": "dark", "projects": {"/workspace": {"hasTrustDialogAccepted": True}}}))
    for path in (home, home / ".claude.json"):
        os.chown(path, uid, uid)
    home.chmod(0o700)


class Terminal:
    """``command`` (a shell line) on a real terminal: a detached tmux session of its own, killed at the end."""

    def __init__(self, command, width=120, height=40):
        self.session = f"h9tui-{uuid.uuid4().hex[:8]}"
        subprocess.run(["tmux", "new-session", "-d", "-s", self.session, "-x", str(width), "-y", str(height), command],
                       check=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        subprocess.run(["tmux", "kill-session", "-t", self.session], check=False)

    def screen(self):
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.session], capture_output=True, text=True,
                              check=True).stdout

    def shows(self, *texts):
        screen = self.screen()
        return all(text in screen for text in texts)

    def type(self, line):
        subprocess.run(["tmux", "send-keys", "-t", self.session, line, "Enter"], check=True)


def interactive_session_removes_its_worker(client, parent_name, home, name, workdir, launch, uid=1001):
    """The worker ``name``'s interactive Claude Code session on a real terminal, started by the shell line
    ``launch(standin_url, key_path)``: the worker runs while the prompt is up, a prompt reaches the scripted model and
    its reply shows, /exit ends the command with exit code 0, and the worker is gone afterwards (removed here if not).
    """
    marker, reply = f"TUI-HELLO-{uuid.uuid4().hex[:6]}", f"TUI-REPLY-{uuid.uuid4().hex[:6]}"
    scripts = [{"marker": marker, "steps": [{"text": f"Hello from the scripted model {reply}"}]}]
    _key, key_path = key_file_for(Path(workdir) / "key", uid)
    onboarded_claude_home(Path(home) / "workers" / name, uid)
    with standin_api(client, parent_name, workdir, scripts) as standin:
        try:
            with Terminal(f"{launch(standin.url, key_path)}; echo SESSION-EXIT=$?; sleep 600") as terminal:
                wait_for(lambda: terminal.shows("Claude Code", "❯"), 90, "Claude Code's prompt")
                assert client.api.inspect_container(name)["State"]["Running"]
                terminal.type(f"say hello {marker}")
                wait_for(lambda: terminal.shows(reply), 60, "the model's reply on the screen")
                terminal.type("/exit")
                wait_for(lambda: terminal.shows("SESSION-EXIT="), 60, "the command to return")
                assert terminal.shows("SESSION-EXIT=0"), terminal.screen()
            assert inspect_or_none(client, name) is None, "the worker outlived its session"
            assert standin.conversation(marker), "the prompt never reached the model"
        finally:
            if inspect_or_none(client, name):
                client.api.remove_container(name, force=True, v=True)


def key_file_for(path, uid):
    """A random API key written to ``path`` (0600, owned by ``uid``): (key, path)."""
    key = f"sk-ant-standin-{uuid.uuid4().hex}"
    path = Path(path)
    path.write_text(key, encoding="utf-8")
    os.chown(path, uid, uid)
    path.chmod(0o600)
    return key, str(path)


PROCESS_DUMP = r"""
for p in /proc/[0-9]*; do
  pid=${p#/proc/}
  [ "$pid" = "$$" ] && continue
  { cmd=$(tr '\0' ' ' < "$p/cmdline" | base64 -w0); } 2>/dev/null || continue
  { env=$(tr '\0' '\n' < "$p/environ"); } 2>/dev/null || { [ -d "$p" ] && printf '%s %s UNREADABLE\n' "$pid" "$cmd"; continue; }
  printf '%s %s %s\n' "$pid" "$cmd" "$(printf '%s' "$env" | base64 -w0)"
done
"""


def process_environments(client, worker, user):
    """{pid: (cmdline, environ text or None when unreadable)} of every process in ``worker``, read as ``user``.

    Only the processes' own uid and gid (or CAP_SYS_PTRACE, which no worker has) may read /proc/PID/environ:
    root in a worker gets EACCES for every worker process, so they are read as the worker's user.
    """
    exec_id = client.api.exec_create(worker, ["sh", "-c", PROCESS_DUMP], user=user)
    out, err = client.api.exec_start(exec_id, demux=True)
    assert client.api.exec_inspect(exec_id)["ExitCode"] == 0, err
    found = {}
    for line in (out or b"").decode().splitlines():
        pid, cmd, env = (line.split(" ") + [""])[:3]  # base64 of an empty environ is empty
        found[int(pid)] = (decoded(cmd).strip(), None if env == "UNREADABLE" else decoded(env))
    return found


def decoded(text):
    return base64.b64decode(text).decode("utf-8", "replace")
