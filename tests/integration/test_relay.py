"""Shared memory through the parent's MCP relay, with the real servers, the real CLI and real workers.

A parent of this module's own starts the hal9000/mcp sidecar (the seed's memory-bank, sequential-thinking
and chroma MCP servers); workers made by hal9000.dind.worker reach it on their localhost. The model is the
scripted stand-in (standin_api.py) in the parent's namespace: nothing leaves the host's loopback.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import sys
import uuid
from pathlib import Path

import pytest

from ansible_collections.hal9000.dind.plugins.module_utils.parent import read_startup
from claude_e2e import key_file_for, project_owned_by, run_claude, spawn, standin_api
from helpers import exec_in, remove_containers, started_parent, succeeded, wait_for

MODULE = "hal9000.dind.worker"
UID = 1234
SERVERS = ("memory-bank", "sequential-thinking", "chroma")


@pytest.fixture(scope="module")
def parent(docker_client, prefix, tmp_path_factory):
    with started_parent(docker_client, tmp_path_factory, f"{prefix}-relay") as started:
        wait_for(lambda: read_startup(docker_client, started.name).get("relay_ready"), 120, "the MCP relay to answer")
        yield started


@pytest.fixture(scope="module")
def api_key(tmp_path_factory):
    return key_file_for(tmp_path_factory.mktemp("relay-key") / "anthropic_key", UID)


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    """Two projects of the same owner: their memories must stay apart."""
    base = tmp_path_factory.mktemp("relay-projects")
    return project_owned_by(base / "alpha", UID), project_owned_by(base / "beta", UID)


def relay_reports(parent):
    """Each server's state as the relay last wrote it ({} before it did)."""
    try:
        status = json.loads((Path(parent.home) / "run" / "relay" / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return {name: server["state"] for name, server in status.get("servers", {}).items()}


def tool_results(api, marker):
    """(text, is_error) of every tool result the CLI sent back in the conversation naming ``marker``."""
    last = api.conversation(marker)[-1]["body"]["messages"]
    found = []
    for message in last:
        for block in message["content"] if isinstance(message["content"], list) else []:
            if block.get("type") == "tool_result":
                content = block.get("content")
                text = content if isinstance(content, str) else "".join(c.get("text", "") for c in content or [])
                found.append((text, bool(block.get("is_error"))))
    return found


def script(marker, *calls, reply="done"):
    """The model calls each (server, tool, arguments) in turn through the relay, then ends with ``reply``."""
    steps = [{"tool_use": {"name": f"mcp__{server}__{tool}", "input": arguments}} for server, tool, arguments in calls]
    return {"marker": marker, "steps": steps + [{"text": reply}]}


def test_every_worker_lists_the_relays_servers_connected(ansible, docker_client, parent, made, prefix, projects):
    for flavour in ("ultramin", "minimal"):
        name = f"{prefix}-relay-{flavour}"
        spawn(ansible, parent, made, name, flavour=flavour, project_dir=projects[0])
        code, out, err = exec_in(docker_client, name, ["timeout", "60", "claude", "mcp", "list"])
        assert code == 0, out
        for server in SERVERS:
            assert f"{server}: http://127.0.0.1:8765/mcp/{server} (HTTP) - ✔ Connected" in out, out


def test_the_credential_is_in_the_workers_tmpfs_only(ansible, docker_client, parent, made, prefix, projects):
    name = f"{prefix}-relay-cred"
    spawn(ansible, parent, made, name, flavour="ultramin", project_dir=projects[0])
    code, token, _err = exec_in(docker_client, name, ["cat", "/run/hal9000/relay-token"])
    assert code == 0 and len(token.strip()) >= 40
    inspected = json.dumps(docker_client.api.inspect_container(name))
    assert token.strip() not in inspected
    code, mode, _err = exec_in(docker_client, name, ["stat", "-c", "%a %u", "/run/hal9000/relay-token"])
    assert mode.split() == ["600", str(UID)]
    code, out, err = exec_in(docker_client, name, ["sh", "-c", "echo x > /etc/claude-code/managed-mcp.json"])
    assert code != 0 and "Read-only file system" in err, "a worker cannot change its MCP configuration"


def test_chromadb_and_the_relay_listen_on_loopback_only_and_workers_cannot_reach_chromadb(
        ansible, docker_client, parent, made, prefix, projects):
    for container in (parent.name, f"{parent.name}-mcp"):
        listening = []
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            code, out, err = exec_in(docker_client, container, ["cat", table])
            assert code == 0, out
            listening += [line.split()[1] for line in out.splitlines()[1:] if line.split()[3] == "0A"]
        ports = {int(address.split(":")[1], 16) for address in listening}
        assert {8000, 8765} <= ports, listening
        for address in listening:
            host = address.split(":")[0]
            assert host in ("0100007F", "00000000000000000000000001000000"), f"{container} listens on {address}"
    name = f"{prefix}-relay-probe"
    spawn(ansible, parent, made, name, flavour="ultramin", project_dir=projects[0])
    probe = "exec 3<>/dev/tcp/127.0.0.1/{port} && echo open"
    code, out, err = exec_in(docker_client, name, ["bash", "-c", probe.format(port=8000)])
    assert code != 0 and "open" not in out and "Connection refused" in err, f"a worker reached ChromaDB: {out} {err}"
    code, out, err = exec_in(docker_client, name, ["bash", "-c", probe.format(port=8765)])
    assert code == 0 and "open" in out, "the relay is on every worker's localhost"


def test_memory_is_shared_within_a_project_and_refused_across_projects(
        ansible, docker_client, parent, made, prefix, projects, api_key, tmp_path):
    fact = f"The release train leaves on Thursdays ({uuid.uuid4().hex[:8]})."
    alpha, beta = projects
    markers = {step: f"{step.upper()}-{uuid.uuid4().hex[:8]}" for step in ("store", "recall", "cross")}
    collection = "decisions"
    scripts = [
        script(markers["store"],
               ("memory-bank", "memory_bank_write", {"projectName": "team", "fileName": "release.md", "content": fact}),
               ("chroma", "chroma_create_collection", {"collection_name": collection}),
               ("chroma", "chroma_add_documents", {"collection_name": collection, "documents": [fact, "Lunch is at noon."],
                                                   "ids": ["release", "lunch"]})),
        script(markers["recall"],
               ("memory-bank", "memory_bank_read", {"projectName": "team", "fileName": "release.md"}),
               ("chroma", "chroma_query_documents", {"collection_name": collection, "query_texts": ["when does the train depart?"],
                                                     "n_results": 1})),
        script(markers["cross"],
               ("memory-bank", "memory_bank_read", {"projectName": "team", "fileName": "release.md"}),
               ("chroma", "chroma_query_documents", {"collection_name": collection, "query_texts": ["train"], "n_results": 1}),
               ("memory-bank", "list_projects", {}),
               ("memory-bank", "memory_bank_read", {"projectName": f"s{'0' * 12}_team", "fileName": "release.md"})),
    ]
    workdir = tmp_path / "standin"
    workdir.mkdir()
    with standin_api(docker_client, parent.name, workdir, scripts) as api:
        common = {"flavour": "ultramin", "api_key_file": api_key[1], "anthropic_base_url": api.url}
        writer, reader, stranger = (f"{prefix}-relay-{role}" for role in ("writer", "reader", "stranger"))
        spawn(ansible, parent, made, writer, project_dir=alpha, **common)
        spawn(ansible, parent, made, reader, project_dir=alpha, **common)
        spawn(ansible, parent, made, stranger, project_dir=beta, **common)

        run = run_claude(docker_client, writer, f"Remember this. {markers['store']}")
        assert run.code == 0 and run.out.strip() == "done", run
        assert all(not error for _text, error in tool_results(api, markers["store"])), tool_results(api, markers["store"])

        run = run_claude(docker_client, reader, f"What do we know? {markers['recall']}")
        assert run.code == 0, run
        (bank, bank_error), (search, search_error) = tool_results(api, markers["recall"])
        assert not bank_error and fact in bank, "another worker of the same project recalls it"
        assert not search_error and fact in search, f"semantic search finds it offline: {search}"

        run = run_claude(docker_client, stranger, f"What do we know? {markers['cross']}")
        assert run.code == 0, run
        results = tool_results(api, markers["cross"])
        assert len(results) == 4, results
        assert all(fact not in text for text, _error in results), results
        assert results[0][1] and results[1][1], "another project's file and collection do not exist for it"
        assert "team" not in results[2][0], "its project list does not show another project's"
        refused, error = results[3]
        assert error and "Refused by the hal9000 relay" in refused and "memory scope" in refused, refused
    # The memory bank keeps its data on the memorybank volume, under the project's scope.
    code, out, err = exec_in(docker_client, f"{parent.name}-mcp", ["sh", "-c", "ls /memorybank"])
    assert code == 0 and any(line.endswith("_team") for line in out.split()), out


def test_a_claimed_warm_worker_has_the_servers_and_gets_its_scope_at_the_claim(
        ansible, docker_client, parent, made, prefix):
    configured = succeeded(ansible.task("hal9000.dind.pool", {
        "parent": parent.name, "hal9000_home": str(parent.home), "enabled": True,
        "min_warm_workers": 1, "max_warm_workers": 1, "wait_timeout": 120}))
    try:
        assert configured["changed"], configured
        name = f"{prefix}-relay-claimed"
        claimed = spawn(ansible, parent, made, name, from_pool=True, memory_scope="shared")
        assert claimed["claimed"] is True, claimed
        worker_id = claimed["worker"]["id"]
        record = json.loads((Path(parent.home) / "run" / "relay" / "credentials" / f"{worker_id}.json").read_text())
        assert record["scope"] == "shared"
        code, out, err = exec_in(docker_client, name, ["timeout", "60", "claude", "mcp", "list"])
        assert code == 0 and out.count("✔ Connected") == len(SERVERS), out
    finally:
        succeeded(ansible.task("hal9000.dind.pool", {"parent": parent.name, "hal9000_home": str(parent.home), "enabled": False}))
    # Removing a worker revokes its credential.
    succeeded(ansible.task(MODULE, {"name": name, "parent": parent.name, "state": "absent"}))
    assert not (Path(parent.home) / "run" / "relay" / "credentials" / f"{worker_id}.json").exists()


def test_status_reports_each_server(ansible, parent):
    info = succeeded(ansible.task("hal9000.dind.info", {"parent": parent.name, "volume_prefix": parent.name.rsplit("-parent", 1)[0]}))
    assert info["relay"]["ready"] is True and info["relay"]["servers"] == {s: "ready" for s in sorted(SERVERS)}, info["relay"]
    assert any(line.startswith("MCP relay: Ready on port 8765") for line in info["status_lines"]), info["status_lines"]
    assert "relay" in info["parent"]["startup"], "the relay is a timed start-up phase"


def test_extra_servers_declared_on_the_parent_reach_every_worker_without_a_parent_restart(
        ansible, docker_client, parent, made, prefix, projects):
    servers_dir = Path(parent.home) / "mcp-servers"
    servers_dir.mkdir(exist_ok=True)
    (servers_dir / "notes.py").write_text((Path(__file__).parents[1] / "unit" / "fake_mcp_server.py").read_text())
    started_at = docker_client.api.inspect_container(parent.name)["State"]["StartedAt"]
    declared = [{"name": "notes", "command": "python3", "args": ["/opt/hal9000/servers/notes.py"]}]
    # The sidecar mounts mcp-servers/ when it starts: the first declaration restarts it, and it mounts the directory then.
    changed = succeeded(ansible.task("hal9000.dind.parent", dict(parent.args, mcp_servers=declared)))
    assert changed["changed"] and "updated the MCP relay's servers (relay restarted)" in changed["actions"], changed
    assert docker_client.api.inspect_container(parent.name)["State"]["StartedAt"] == started_at, "the parent kept running"
    wait_for(lambda: relay_reports(parent).get("notes") == "ready", 120, "the relay to run the new server")
    again = succeeded(ansible.task("hal9000.dind.parent", dict(parent.args, mcp_servers=declared)))
    assert not again["changed"], again
    try:
        name = f"{prefix}-relay-extra"
        spawn(ansible, parent, made, name, flavour="ultramin", project_dir=projects[0])
        code, out, err = exec_in(docker_client, name, ["timeout", "60", "claude", "mcp", "list"])
        assert code == 0 and "notes: http://127.0.0.1:8765/mcp/notes (HTTP) - ✔ Connected" in out, out + err
        assert out.count("✔ Connected") == len(SERVERS) + 1, out
    finally:
        succeeded(ansible.task("hal9000.dind.parent", dict(parent.args, mcp_servers=[])))
        wait_for(lambda: sorted(relay_reports(parent)) == sorted(SERVERS), 120, "the relay to drop the server")


def test_a_server_on_the_docker_host_is_reached_through_a_unix_socket_under_the_home(
        ansible, docker_client, parent, made, prefix, projects):
    declared = [{"name": "hostnotes", "command": sys.executable,
                 "args": [str(Path(__file__).parents[1] / "unit" / "fake_mcp_server.py")], "on_host": True}]
    daemon = ["-e", json.dumps({"daemon_name": parent.name, "daemon_hal9000_home": str(parent.home),
                                "daemon_volume_prefix": parent.args["volume_prefix"], "daemon_mcp_servers": declared})]
    playbook = Path(__file__).parents[2] / "playbooks" / "daemon.yml"
    sockets = Path(parent.home) / "run" / "relay" / "host"
    try:
        first = ansible.playbook(playbook, *daemon)
        assert "changed: [localhost] => (item=hostnotes)" in first.stdout, first.stdout
        socket_path = sockets / "hostnotes.sock"
        assert stat.S_ISSOCK(socket_path.stat().st_mode) and stat.S_IMODE(socket_path.stat().st_mode) == 0o600
        wait_for(lambda: relay_reports(parent).get("hostnotes") == "ready", 120, "the relay to reach the host's server")
        second = ansible.playbook(playbook, *daemon)
        assert re.search(r"localhost\s*:.*changed=0", second.stdout), second.stdout
        name = f"{prefix}-relay-host"
        spawn(ansible, parent, made, name, flavour="ultramin", project_dir=projects[0])
        code, out, err = exec_in(docker_client, name, ["timeout", "60", "claude", "mcp", "list"])
        assert code == 0 and "hostnotes: http://127.0.0.1:8765/mcp/hostnotes (HTTP) - ✔ Connected" in out, out + err
        # The server is a process of the host, not of any container: its parent is the bridge started by the role.
        bridge_pid = int((sockets / "hostnotes.pid").read_text().split()[0])
        # Each connection's server is forked by one of the bridge's threads: /proc lists children per thread.
        children = [child for task in Path(f"/proc/{bridge_pid}/task").iterdir() for child in (task / "children").read_text().split()]
        assert any("fake_mcp_server.py" in Path(f"/proc/{child}/cmdline").read_text() for child in children), children
    finally:
        undeclared = ["-e", json.dumps({"daemon_name": parent.name, "daemon_hal9000_home": str(parent.home),
                                        "daemon_volume_prefix": parent.args["volume_prefix"], "daemon_mcp_servers": []})]
        ansible.playbook(playbook, *undeclared, check=False)
        stopped = not (sockets / "hostnotes.pid").exists()
        if not stopped:  # never leave a host process behind, whatever failed
            os.kill(int((sockets / "hostnotes.pid").read_text().split()[0]), signal.SIGTERM)
    assert stopped and not (sockets / "hostnotes.sock").exists(), "the role stopped the bridge"


def test_a_scope_change_applies_in_place_and_a_restarted_worker_gets_a_new_credential(
        ansible, docker_client, parent, made, prefix, projects):
    name = f"{prefix}-relay-inplace"
    first = spawn(ansible, parent, made, name, flavour="ultramin", project_dir=projects[0], auto_remove=False)
    record = Path(parent.home) / "run" / "relay" / "credentials" / f"{first['worker']['id']}.json"
    assert json.loads(record.read_text())["scope"].startswith("project:")
    shared = succeeded(ansible.task(MODULE, {"name": name, "parent": parent.name, "flavour": "ultramin",
                                             "project_dir": projects[0], "auto_remove": False, "memory_scope": "shared"}))
    assert shared["changed"] and shared["actions"] == [f"set the memory scope of {name} to shared"], shared
    assert shared["worker"]["id"] == first["worker"]["id"] and json.loads(record.read_text())["scope"] == "shared"
    again = succeeded(ansible.task(MODULE, {"name": name, "parent": parent.name, "flavour": "ultramin",
                                            "project_dir": projects[0], "auto_remove": False, "memory_scope": "shared"}))
    assert not again["changed"], again

    old_token = exec_in(docker_client, name, ["cat", "/run/hal9000/relay-token"])[1]
    docker_client.api.stop(name, timeout=5)
    restarted = succeeded(ansible.task(MODULE, {"name": name, "parent": parent.name, "flavour": "ultramin",
                                                "project_dir": projects[0], "auto_remove": False, "memory_scope": "shared"}))
    assert restarted["actions"] == [f"started {name}"], restarted
    code, new_token, _err = exec_in(docker_client, name, ["cat", "/run/hal9000/relay-token"])
    assert code == 0 and new_token and new_token != old_token
    code, out, err = exec_in(docker_client, name, ["timeout", "60", "claude", "mcp", "list"])
    assert code == 0 and out.count("✔ Connected") == len(SERVERS), out + err


def test_the_parent_drops_credentials_of_removed_workers_and_brings_a_removed_relay_back(
        ansible, docker_client, parent, made, prefix, projects):
    name = f"{prefix}-relay-gone"
    worker_id = spawn(ansible, parent, made, name, flavour="ultramin", project_dir=projects[0])["worker"]["id"]
    record = Path(parent.home) / "run" / "relay" / "credentials" / f"{worker_id}.json"
    assert record.exists()
    remove_containers(docker_client, name)  # behind the collection's back
    wait_for(lambda: not record.exists(), 90, "the parent to drop the removed worker's credential")
    sidecar = f"{parent.name}-mcp"
    old_id = docker_client.api.inspect_container(sidecar)["Id"]
    remove_containers(docker_client, sidecar)

    def replaced():
        found = docker_client.api.containers(filters={"name": f"^/{sidecar}$"})
        return found and found[0]["Id"] != old_id
    wait_for(replaced, 90, "the parent to start its relay again")
    wait_for(lambda: relay_reports(parent) and set(relay_reports(parent).values()) == {"ready"} and
             read_startup(docker_client, parent.name).get("relay_ready"), 120, "the new relay to answer")
