"""The real Claude Code CLI in real workers, end to end, against a scripted stand-in for the Anthropic API.

A real test parent (its own name, volumes and home from the session prefix) and workers made by
hal9000.dind.worker; the stand-in (standin_api.py) runs in the parent's network namespace, so nothing
leaves the host's loopback. Every test's workers and stand-in are removed after it, the parent at the end.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from claude_e2e import (
    STANDIN_SOURCE, key_file_for, process_environments, project_owned_by, run_claude, spawn, standin_api, worker_args,
    write_task,
)
from helpers import exec_in, remove_containers, started_parent, succeeded, wait_for

UID = 1234  # the projects' owner: the workers run as this uid, not root and not the image's 1001


# ---------------------------------------------------------------------------- fixtures ----

@pytest.fixture(scope="module")
def parent(docker_client, prefix, tmp_path_factory):
    """A parent of this module's own (a helpers.Parent); it, its workers, volumes and home go at the end."""
    with started_parent(docker_client, tmp_path_factory, f"{prefix}-claude") as started:
        yield started


@pytest.fixture
def project(tmp_path_factory):
    """An empty project directory owned by UID:UID; removed afterwards."""
    base = tmp_path_factory.mktemp("claude-project")
    yield project_owned_by(base / "project", UID)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def api_key(tmp_path_factory):
    """(key, path): a random API key in a 0600 file owned by UID; removed afterwards."""
    base = tmp_path_factory.mktemp("claude-key")
    yield key_file_for(base / "anthropic_key", UID)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def marker():
    return f"TASK-{uuid.uuid4().hex[:10]}"


@contextlib.contextmanager
def standin(docker_client, parent, tmp_path, *scripts):
    """The stand-in answering ``scripts`` in the parent's namespace; it and its directory go afterwards."""
    workdir = tmp_path / "standin"
    workdir.mkdir()
    try:
        with standin_api(docker_client, parent.name, workdir, list(scripts)) as api:
            yield api
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def assert_notes_task(api, run, project, marker, content, reply):
    """The CLI ran the scripted Write task: its output, the file on the host and the conversation it had."""
    assert run.code == 0, run
    assert run.out.strip() == reply, run
    notes = Path(project) / "notes.txt"
    assert notes.read_text(encoding="utf-8") == content
    assert (notes.stat().st_uid, notes.stat().st_gid) == (UID, UID)
    turns = api.conversation(marker)
    assert len(turns) == 2, [r["body"].get("messages") for r in turns]
    assert "Write" in [tool["name"] for tool in turns[0]["body"]["tools"]]
    results = [block for message in turns[1]["body"]["messages"] if isinstance(message["content"], list)
               for block in message["content"] if block.get("type") == "tool_result"]
    assert len(results) == 1 and not results[0].get("is_error"), results


def ask(port, path, body, key="sk-ant-standin-test"):
    """POST ``body`` to the stand-in: (status, content type, parsed JSON or the list of SSE (event, data))."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json", "x-api-key": key})
    response = connection.getresponse()
    text = response.read().decode()
    connection.close()
    if response.getheader("Content-Type") == "text/event-stream":
        events = re.findall(r"event: (\S+)\ndata: (.*)\n\n", text)
        return response.status, "sse", [(event, json.loads(data)) for event, data in events]
    return response.status, "json", json.loads(text)


# ------------------------------------------------------------------------------- tests ----

def test_the_standin_follows_its_script_and_answers_side_requests_apart(tmp_path):
    """The stand-in alone, on this host's loopback: the script of the last marker, the step numbered by the tool
    results, any tool name passed through, side requests answered apart."""
    call = {"name": "mcp__memory__store", "input": {"key": "k1", "value": {"nested": [1, 2]}}}
    (tmp_path / "script.json").write_text(json.dumps([
        {"marker": "OTHER-TASK", "steps": [{"text": "an earlier marker"}]},
        {"marker": "MCP-TASK", "steps": [{"text": "a shorter marker at the same place"}]},
        {"marker": "MCP-TASK-2", "steps": [{"text": "Storing.", "tool_use": call}, {"text": "Stored."}]},
    ]))
    log = tmp_path / "requests.jsonl"
    server = subprocess.Popen([sys.executable, str(STANDIN_SOURCE), "0", str(tmp_path / "script.json"), str(log)],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(re.search(r"127\.0\.0\.1:(\d+)", server.stdout.readline()).group(1))
        tools = [{"name": "mcp__memory__store", "input_schema": {"type": "object"}}]
        prompt = {"role": "user", "content": [{"type": "text", "text": "first OTHER-TASK, now MCP-TASK-2 please"}]}
        # A side request (no tools), even one quoting the prompt, gets a short text and uses no step.
        status, kind, side = ask(port, "/v1/messages?beta=true", {"model": "small", "max_tokens": 1, "messages": [prompt]})
        assert (status, kind, side["content"], side["stop_reason"]) == (200, "json", [{"type": "text", "text": "OK"}], "end_turn")

        status, kind, events = ask(port, "/v1/messages?beta=true", {"model": "m", "stream": True, "tools": tools,
                                                                    "messages": [prompt]})
        assert (status, kind) == (200, "sse")
        block = ["content_block_start", "content_block_delta", "content_block_stop"]
        assert [e for e, _d in events] == ["message_start", *block, *block, "message_delta", "message_stop"]
        assert events[1][1]["content_block"] == {"type": "text", "text": ""}
        assert events[2][1]["delta"] == {"type": "text_delta", "text": "Storing."}
        started = events[4][1]["content_block"]
        assert (started["type"], started["name"], started["input"]) == ("tool_use", call["name"], {})
        assert started["id"].startswith("toolu_")
        assert events[5][1]["delta"]["type"] == "input_json_delta"
        assert json.loads(events[5][1]["delta"]["partial_json"]) == call["input"]
        assert events[7][1]["delta"]["stop_reason"] == "tool_use" and "output_tokens" in events[7][1]["usage"]

        result = {"type": "tool_result", "tool_use_id": started["id"], "content": "ok"}
        answered = [prompt, {"role": "assistant", "content": [dict(started, input=call["input"])]},
                    {"role": "user", "content": [result]}]
        status, kind, events = ask(port, "/v1/messages", {"model": "m", "stream": True, "tools": tools, "messages": answered})
        assert events[2][1]["delta"] == {"type": "text_delta", "text": "Stored."}
        assert events[-2][1]["delta"]["stop_reason"] == "end_turn"
        status, kind, counted = ask(port, "/v1/messages/count_tokens", {"model": "m", "messages": answered})
        assert status == 200 and isinstance(counted["input_tokens"], int)
    finally:
        server.terminate()
        server.wait(10)
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["method"], r["path"]) for r in logged] == [("POST", "/v1/messages?beta=true")] * 2 + [
        ("POST", "/v1/messages"), ("POST", "/v1/messages/count_tokens")]
    assert all(r["headers"]["x-api-key"] == "sk-ant-standin-test" for r in logged)
    assert logged[2]["body"]["messages"] == answered


def test_claude_writes_a_file_in_the_project_as_its_owner(
        ansible, docker_client, parent, made, prefix, project, api_key, marker, tmp_path):
    content = f"notes from the scripted model {marker}\nsecond line\n"
    reply = f"Wrote notes.txt ({marker})."
    with standin(docker_client, parent, tmp_path, write_task(marker, "/workspace/notes.txt", content, reply)) as api:
        name = f"{prefix}-claude-w-notes"
        spawn(ansible, parent, made, name, project_dir=project, api_key_file=api_key[1], **worker_args(api))
        assert not (Path(project) / "notes.txt").exists()
        run = run_claude(docker_client, name, f"{marker}: write notes.txt")
        assert_notes_task(api, run, project, marker, content, reply)


def test_the_api_key_reaches_the_cli_only_through_the_key_file(
        ansible, docker_client, parent, made, prefix, project, api_key, marker, tmp_path):
    key, key_path = api_key
    running, release = f"/tmp/{marker}.running", f"/tmp/{marker}.release"
    wait_inside = f"touch {running}; for i in $(seq 600); do [ -e {release} ] && break; sleep 0.1; done; echo released"
    script = {"marker": marker, "steps": [
        {"tool_use": {"name": "Bash", "input": {"command": wait_inside, "description": "Wait for the test"}}},
        {"text": f"done {marker}"},
    ]}
    with standin(docker_client, parent, tmp_path, script) as api:
        name = f"{prefix}-claude-w-key"
        spawn(ansible, parent, made, name, project_dir=project, api_key_file=key_path, **worker_args(api))
        user = docker_client.api.inspect_container(name)["Config"]["User"]
        assert user == f"{UID}:{UID}"

        runs = []
        cli = threading.Thread(target=lambda: runs.append(run_claude(docker_client, name, f"{marker}: wait")))
        cli.start()
        try:
            wait_for(lambda: exec_in(docker_client, name, ["test", "-e", running])[0] == 0 or not cli.is_alive(),
                     60, "the CLI to run the scripted Bash command")
            assert cli.is_alive(), runs
            # While the CLI, its shell and the tool's command run: every process in the worker, environ and cmdline.
            processes = process_environments(docker_client, name, user)
        finally:
            exec_in(docker_client, name, ["touch", release], user=user)
            cli.join(150)
        assert runs and runs[0].code == 0 and runs[0].out.strip() == f"done {marker}", runs

        assert [pid for pid, (_cmd, env) in processes.items() if env is None] == [], processes
        clis = [env for cmd, env in processes.values() if cmd.startswith("claude -p")]
        assert len(clis) == 1 and f"ANTHROPIC_BASE_URL={api.url}" in clis[0].splitlines(), processes
        assert any(wait_inside in cmd for cmd, _env in processes.values()), "the tool's shell was running"
        for pid, (cmd, env) in processes.items():
            assert key not in cmd and key not in env, pid
        assert key not in json.dumps(docker_client.api.inspect_container(name))
        assert key.encode() not in docker_client.api.logs(name)

        posts = [r for r in api.requests() if r["method"] == "POST"]
        assert len(api.conversation(marker)) == 2, posts
        for request in posts:
            headers = {k.lower(): v for k, v in request["headers"].items()}
            # From apiKeyHelper the CLI sends the key in both headers.
            assert headers.get("x-api-key") == key and headers.get("authorization", f"Bearer {key}") == f"Bearer {key}", headers
    assert Path(key_path).read_text(encoding="utf-8") == key and os.stat(key_path).st_mode & 0o777 == 0o600


def test_a_claimed_warm_worker_runs_the_cli(ansible, docker_client, parent, made, prefix, project, api_key, marker, tmp_path):
    content = f"written by a claimed worker {marker}\n"
    reply = f"Claimed and wrote ({marker})."
    pool_task = {"parent": parent.name, "hal9000_home": str(parent.home), "generic": False}
    with standin(docker_client, parent, tmp_path, write_task(marker, "/workspace/notes.txt", content, reply)) as api:
        pool = {"name": "claude-e2e", "project_dir": project, "api_key_file": api_key[1], "min": 1, "max": 1,
                **worker_args(api)}
        try:
            configured = succeeded(ansible.task("hal9000.dind.pool", dict(pool_task, pools=[pool])))
            assert [(p["name"], p["warm"]) for p in configured["pools"]] == [("claude-e2e", 1)], configured

            name = f"{prefix}-claude-w-claimed"
            claimed = spawn(ansible, parent, made, name, project_dir=project, api_key_file=api_key[1], from_pool=True,
                            **worker_args(api))
            assert claimed["claimed"] is True, claimed
            labels = docker_client.api.inspect_container(name)["Config"]["Labels"]
            assert labels["io.hal9000.pool"] == "claude-e2e" and labels["io.hal9000.warm-name"] != name
            run = run_claude(docker_client, name, f"{marker}: write notes.txt")
            assert_notes_task(api, run, project, marker, content, reply)
        finally:
            # The manager stops, then its warm workers (on this test's project and key) go.
            succeeded(ansible.task("hal9000.dind.pool", dict(pool_task, enabled=False)))
            pooled = docker_client.api.containers(all=True, filters={
                "label": [f"io.hal9000.parent={parent.name}", "io.hal9000.pool=claude-e2e"]})
            remove_containers(docker_client, *[c["Id"] for c in pooled])
