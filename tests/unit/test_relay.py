"""The MCP relay's own logic over HTTP: credentials, scopes, id multiplexing, refusals.

The relay (images/mcp/relay.py) runs here in a thread with a small stdio MCP server
(fake_mcp_server.py); tests/integration/test_relay.py runs the real servers in real workers.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.relay import (
    client_config,
    project_key,
    scope_text,
    set_scope,
    validate_servers,
    write_credential,
)

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "images" / "mcp"))
import relay  # noqa: E402  (the relay program itself, not a copy)

sys.path.pop(0)

RELAYS = {}  # url -> the Relay behind it, for tests that look at its instances


def relay_instances(url):
    return sorted(RELAYS[url].backends)


ID_A, ID_B, ID_C, ID_D = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)


@pytest.fixture
def served(tmp_path):
    """A running relay on a free loopback port; yields (url, home) where home holds run/relay."""
    home = tmp_path
    directory = home / "run" / "relay"
    (directory / "credentials").mkdir(parents=True)
    servers = [{"name": "memory-bank", "command": sys.executable, "args": [str(REPO / "tests" / "unit" / "fake_mcp_server.py")]},
               {"name": "notes", "command": sys.executable, "args": [str(REPO / "tests" / "unit" / "fake_mcp_server.py")]}]
    (directory / "servers.json").write_text(json.dumps({"port": 0, "servers": servers}))
    instance = relay.Relay(str(directory))
    httpd = relay.make_server(instance, 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    RELAYS[url] = instance
    yield url, home
    httpd.shutdown()
    for backend in instance.backends.values():
        backend.stop()


def credential(home, container_id, scope):
    token = hashlib.sha256(container_id.encode()).hexdigest()  # any secret will do in a test
    write_credential(str(home), container_id, hashlib.sha256(token.encode()).hexdigest(), scope)
    return token


def post(url, token, payload, server="memory-bank"):
    request = urllib.request.Request(f"{url}/mcp/{server}", data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
            return response.status, json.loads(body) if body else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def call(url, token, tool, server="memory-bank", **arguments):
    status, reply = post(url, token, {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                                      "params": {"name": tool, "arguments": arguments}}, server)
    assert status == 200, reply
    return reply["result"]


def text(result):
    return result["content"][0]["text"]


def listed(result):
    """The names a listing shows (the relay answers one text item per name, or a note when there is none)."""
    assert not result.get("isError"), result
    texts = [item["text"] for item in result["content"]]
    return [] if texts == ["(none in this worker's memory scope)"] else texts


def test_requests_without_a_known_credential_are_refused(served):
    url, home = served
    credential(home, ID_A, "shared")
    assert post(url, None, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})[0] == 401
    assert post(url, "not-a-token", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})[0] == 401
    assert post(url, credential(home, ID_B, "shared"), {"jsonrpc": "2.0", "id": 1, "method": "ping"}, server="nope")[0] == 404


def test_initialize_and_list_show_only_the_tools_the_relay_scopes(served):
    url, home = served
    token = credential(home, ID_A, scope_text("project", "/srv/a"))
    status, reply = post(url, token, {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                      "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "t"}}})
    assert status == 200 and reply["result"]["protocolVersion"] == "2025-03-26"
    assert reply["result"]["serverInfo"]["name"] == "fake-memory-bank"
    assert post(url, token, {"jsonrpc": "2.0", "method": "notifications/initialized"})[0] == 202
    tools = {t["name"] for t in post(url, token, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})[1]["result"]["tools"]}
    assert tools == set(relay.SCOPED["memory-bank"]["tools"]), "secret_tool is not in the relay's table: hidden"
    refused = call(url, token, "secret_tool")
    assert refused["isError"] is True and "not offered" in text(refused)


def test_a_projects_memory_is_its_own_whatever_names_are_given(served):
    url, home = served
    project_a = credential(home, ID_A, scope_text("project", "/srv/a"))
    also_a = credential(home, ID_B, scope_text("project", "/srv/a"))
    project_b = credential(home, ID_C, scope_text("project", "/srv/b"))
    shared = credential(home, ID_D, "shared")

    written = call(url, project_a, "memory_bank_write", projectName="notes", fileName="plan.md", content="ship it")
    assert text(written) == "File plan.md written to project notes", "the scope prefix is never shown"
    assert text(call(url, also_a, "memory_bank_read", projectName="notes", fileName="plan.md")) == "ship it"
    assert listed(call(url, also_a, "list_projects")) == ["notes"]

    # Another project, with the same name or the mapped one, reaches nothing of project a's.
    assert text(call(url, project_b, "memory_bank_read", projectName="notes", fileName="plan.md")) == ""
    assert listed(call(url, project_b, "list_projects")) == []
    mapped = f"s{project_key('/srv/a')}_notes"
    refused = call(url, project_b, "memory_bank_read", projectName=mapped, fileName="plan.md")
    assert refused["isError"] is True and "scope is its project" in text(refused)
    assert listed(call(url, shared, "list_projects")) == []
    refused = call(url, shared, "memory_bank_read", projectName=mapped, fileName="plan.md")
    assert refused["isError"] is True and "has the form of a project's memory" in text(refused)
    assert "scope is shared" in text(refused), "the refusal says which scope the worker has"

    for bad in ("../etc", "a/b", "", ".hidden", "x" * 300):
        refused = call(url, project_a, "memory_bank_write", projectName=bad, fileName="f", content="c")
        assert refused["isError"] is True and "not allowed" in text(refused), bad


def test_scope_none_and_unclaimed_workers_get_a_tool_error_naming_their_scope(served):
    url, home = served
    for container_id, scope in ((ID_A, "none"), (ID_B, scope_text("project", ""))):
        refused = call(url, credential(home, container_id, scope), "list_projects")
        assert refused["isError"] is True and "no memory scope" in text(refused)


def test_a_claim_gives_a_warm_workers_credential_its_scope_at_once(served):
    url, home = served
    token = credential(home, ID_A, "none")
    assert call(url, token, "list_projects")["isError"] is True
    assert set_scope(str(home), ID_A, scope_text("project", "/srv/a"))
    assert listed(call(url, token, "list_projects")) == []
    os.unlink(home / "run" / "relay" / "credentials" / f"{ID_A}.json")  # revoked
    assert post(url, token, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})[0] == 401


def test_many_callers_share_one_server_without_mixing_answers(served):
    url, home = served
    tokens = [credential(home, f"{i:064x}", scope_text("project", f"/srv/p{i}")) for i in range(8)]

    def write_then_read(index):
        token = tokens[index % len(tokens)]
        call(url, token, "memory_bank_write", projectName="n", fileName=f"f{index}", content=str(index))
        return text(call(url, token, "memory_bank_read", projectName="n", fileName=f"f{index}"))

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        assert list(pool.map(write_then_read, range(64))) == [str(i) for i in range(64)]


def test_other_servers_run_once_per_scope(served):
    url, home = served
    a = credential(home, ID_A, scope_text("project", "/srv/a"))
    b = credential(home, ID_B, scope_text("project", "/srv/b"))
    call(url, a, "memory_bank_write", server="notes", projectName="x", fileName="f", content="from a")
    assert text(call(url, b, "memory_bank_read", server="notes", projectName="x", fileName="f")) == ""
    assert text(call(url, a, "memory_bank_read", server="notes", projectName="x", fileName="f")) == "from a"


def test_client_config_registers_every_server_with_the_headers_helper():
    config = client_config([{"name": "memory-bank"}, {"name": "chroma"}], 8765)
    assert config["mcpServers"]["chroma"] == {"type": "http", "url": "http://127.0.0.1:8765/mcp/chroma",
                                              "headersHelper": "sh /etc/claude-code/hal9000-relay-headers"}


@pytest.mark.parametrize("servers,words", [
    ([{"name": "chroma", "command": "x"}], "already used"),
    ([{"name": "Bad Name", "command": "x"}], "lower-case"),
    ([{"name": "ok", "command": "x", "env_files": {"TOKEN": "/etc/shadow"}}], "relative to the HAL-9000 home"),
    ([{"name": "ok", "command": "x", "env_files": {"TOKEN": "../.ssh/id_rsa"}}], "relative to the HAL-9000 home"),
    ([{"name": "ok"}], "command"),
    ([{"name": "ok", "command": "x", "shell": True}], "unknown keys"),
])
def test_bad_extra_servers_are_refused_with_one_line(servers, words):
    with pytest.raises(Hal9000Error, match=words):
        validate_servers(servers)


def test_listings_are_paged_after_the_scope_filter(served):
    url, home = served
    mine = credential(home, ID_A, scope_text("project", "/srv/a"))
    theirs = credential(home, ID_B, scope_text("project", "/srv/b"))
    for token, names in ((theirs, ("b1", "b2")), (mine, ("a1", "a2", "a3"))):
        for name in names:
            call(url, token, "memory_bank_write", projectName=name, fileName="f", content="c")
    assert listed(call(url, mine, "list_projects", offset=1, limit=1)) == ["a2"]
    assert listed(call(url, mine, "list_projects", offset=2)) == ["a3"]


def test_connecting_starts_no_instance_per_scope_and_memory_servers_list_no_prompts(served):
    url, home = served
    for index in range(5):
        token = credential(home, f"{index:064x}", scope_text("project", f"/srv/q{index}"))
        for method in ("initialize", "tools/list"):
            status, _reply = post(url, token, {"jsonrpc": "2.0", "id": 1, "method": method,
                                               "params": {"protocolVersion": "2025-06-18"}}, server="notes")
            assert status == 200
        for method, key in (("prompts/list", "prompts"), ("resources/list", "resources")):
            status, reply = post(url, token, {"jsonrpc": "2.0", "id": 2, "method": method})
            assert status == 200 and reply["result"] == {key: []}, reply
    instances = [k for k in relay_instances(url) if k[0] == "notes"]
    assert instances == [("notes", "")], "five projects connected, none called: one shared instance"
