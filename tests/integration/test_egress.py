"""The workers' egress allowlist in a real parent's network namespace, with real workers (docs/egress.md).

The test hosts are this module's own: two small HTTP servers on a Docker network it creates, which its parent
joins; no other address is ever contacted. The allowed server is listed in hal9000.conf (a private address: only
reachable when listed), the refused one is not. Every probe is bash's /dev/tcp in a worker (the images carry no
curl), under a timeout: a refusal must come at once, not at the timeout.

The parent image: HAL9000_TEST_PARENT_IMAGE (default hal9000/parent:latest).
"""

from __future__ import annotations

import json
import os
import uuid

import pytest

from ansible_collections.hal9000.dind.plugins.module_utils.egress import OPEN_WARNING
from ansible_collections.hal9000.dind.plugins.module_utils.parent import read_startup
from claude_e2e import spawn
from helpers import AnsibleRunner, Parent, exec_in, one_line_refusal, parent_args, remove_containers, remove_installation, succeeded, wait_for

PARENT_IMAGE = os.environ.get("HAL9000_TEST_PARENT_IMAGE", "hal9000/parent:latest")
PORT = 8080
SERVER = """
import http.server, sys
class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(sys.argv[1].encode())
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", %d), Answer).serve_forever()
""" % PORT
PROBE = 'exec 3<>/dev/tcp/{host}/{port} && printf "GET / HTTP/1.0\\r\\n\\r\\n" >&3 && cat <&3'


class Hosts:
    """The test's servers: name -> (address, the word it answers)."""

    def __init__(self):
        self.servers = {}

    def address(self, name):
        return self.servers[name][0]

    def word(self, name):
        return self.servers[name][1]


@pytest.fixture(scope="module")
def hosts(docker_client, prefix):
    """A network of the test's own with two servers on it (allowed, refused); removed afterwards."""
    network = docker_client.networks.create(f"{prefix}-egnet", driver="bridge")
    found = Hosts()
    names = []
    try:
        for role in ("allowed", "refused"):
            name = f"{prefix}-eg-{role}"
            names.append(name)
            word = f"{role}-{uuid.uuid4().hex[:8]}"
            container = docker_client.containers.run(
                PARENT_IMAGE, ["-c", SERVER, word], entrypoint=["python3"], name=name, detach=True, network=network.name,
                user="65534:65534", cap_drop=["ALL"], security_opt=["no-new-privileges:true"], healthcheck={"test": ["NONE"]})
            container.reload()
            found.servers[role] = (container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"], word)
        yield found
    finally:
        remove_containers(docker_client, *names)
        network.remove()


@pytest.fixture(scope="module")
def parent(docker_client, prefix, hosts, tmp_path_factory):
    """One parent for the module: the allowed server in its EGRESS_ALLOW, joined to the test's network."""
    base = f"{prefix}-eg"
    workdir = tmp_path_factory.mktemp("egress")
    home = workdir / "home"
    (home / "config").mkdir(parents=True)
    # No relay (not needed here); in the file, so the worker module's specs agree with the pool's in the parent.
    (home / "config" / "hal9000.conf").write_text(f"ENABLE_MCP_RELAY=false\nEGRESS_ALLOW={hosts.address('allowed')}:{PORT}\n")
    started = Parent(docker_client, AnsibleRunner(workdir), parent_args(base, home))
    try:
        result = succeeded(started.runner.task("hal9000.dind.parent", started.args))
        assert result["parent"]["chromadb_ready"] is True, result
        docker_client.networks.get(f"{prefix}-egnet").connect(started.name)
        yield started
    finally:
        remove_installation(docker_client, base, started.name)


def probe(client, container, host, port=PORT, user=""):
    """(exit code, answer, error) of an HTTP GET from ``container`` to host:port."""
    return exec_in(client, container, ["timeout", "5", "bash", "-c", PROBE.format(host=host, port=port)], user=user)


def answers(client, container, hosts, role, user=""):
    code, out, err = probe(client, container, hosts.address(role), user=user)
    return code == 0 and hosts.word(role) in out, (code, out, err)


def refused(client, container, host, port=PORT, user=""):
    """The connection is refused by the rules (a reset or ICMP prohibited), not dropped until the probe's 5 s timeout
    (exit 124)."""
    code, out, err = probe(client, container, host, port, user)
    assert code not in (0, 124) and not out, (code, out, err)
    return err


def worker(ansible, parent, made, name, **args):
    spawn(ansible, parent, made, name, flavour="ultramin", **args)
    return name


def test_an_allowed_host_answers_a_refused_one_fails_at_once_and_metadata_is_refused(
        ansible, docker_client, parent, hosts, made, prefix):
    name = worker(ansible, parent, made, f"{prefix}-eg-plain")
    ok, detail = answers(docker_client, name, hosts, "allowed")
    assert ok, detail
    assert "Connection refused" in refused(docker_client, name, hosts.address("refused"))
    # the same address answers root in the same namespace: the rule refused the worker, not the network
    ok, detail = answers(docker_client, parent.name, hosts, "refused", user="0")
    assert ok, detail
    refused(docker_client, name, "169.254.169.254", 80)  # link-local: refused at once (no route would take seconds)
    status = read_startup(docker_client, parent.name)["egress"]
    assert status["mode"] == "allowlist" and status["allow"] == [f"{hosts.address('allowed')}:{PORT}"] and not status["error"]


def test_a_worker_cannot_flush_or_change_the_rules(ansible, docker_client, parent, hosts, made, prefix):
    name = worker(ansible, parent, made, f"{prefix}-eg-flush")
    code, out, _err = exec_in(docker_client, name, ["bash", "-c", "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status"])
    assert code == 0 and "CapEff:\t0000000000000000" in out and "CapBnd:\t0000000000000000" in out and "NoNewPrivs:\t1" in out, out
    # Worker images carry no iptables: the parent image's, run with a worker's hardening in the same namespace
    # (as the worker's uid, and as root without capabilities), is refused by the kernel.
    for user in ("1001:1001", "0:0"):
        output = docker_client.containers.run(
            PARENT_IMAGE, ["sh", "-c", "iptables -w -F; iptables -w -D OUTPUT -j HAL9000-EGRESS; true"],
            entrypoint=[], remove=True, user=user, cap_drop=["ALL"], security_opt=["no-new-privileges:true"],
            network_mode=f"container:{parent.id}", name=f"{prefix}-eg-iptables-{user.split(':', maxsplit=1)[0]}",
            healthcheck={"test": ["NONE"]}, stderr=True).decode()
        assert output.count("Permission denied") >= 2, output
    assert "Connection refused" in refused(docker_client, name, hosts.address("refused"))  # the rules are still there


def test_two_workers_with_their_own_policies_side_by_side(ansible, docker_client, parent, hosts, made, prefix):
    to_refused = worker(ansible, parent, made, f"{prefix}-eg-own-a", user="2001:2001",
                        egress_allow=[f"{hosts.address('refused')}:{PORT}"])
    to_none = worker(ansible, parent, made, f"{prefix}-eg-own-b", user="2002:2002", egress_allow=[])
    plain = worker(ansible, parent, made, f"{prefix}-eg-own-c")
    assert answers(docker_client, to_refused, hosts, "refused")[0]
    refused(docker_client, to_refused, hosts.address("allowed"))  # its own list replaces the installation's
    refused(docker_client, to_none, hosts.address("allowed"))
    refused(docker_client, to_none, hosts.address("refused"))
    assert answers(docker_client, plain, hosts, "allowed")[0]
    refused(docker_client, plain, hosts.address("refused"))
    labels = docker_client.api.inspect_container(to_refused)["Config"]["Labels"]
    assert labels["io.hal9000.egress-allow"] == f"{hosts.address('refused')}:{PORT}"

    # the same uid with another policy: refused in one line, nothing left behind
    name = f"{prefix}-eg-own-clash"
    made.append(name)
    clash = ansible.task("hal9000.dind.worker", {"name": name, "parent": parent.name, "flavour": "ultramin",
                                                 "user": "2001:2001", "egress_allow": ["192.0.2.1"]})
    one_line_refusal(clash, "uid 2001", "another egress policy")
    assert not docker_client.api.containers(all=True, filters={"name": name})

    # a change applies in place (not in the digest): the same container, the new list, at once
    before = docker_client.api.inspect_container(to_none)["Id"]
    changed = succeeded(ansible.task("hal9000.dind.worker", {"name": to_none, "parent": parent.name, "flavour": "ultramin",
                                                             "user": "2002:2002",
                                                             "egress_allow": [f"{hosts.address('allowed')}:{PORT}"]}))
    assert changed["changed"] is True and changed["worker"]["id"] == before, changed
    assert answers(docker_client, to_none, hosts, "allowed")[0]
    again = succeeded(ansible.task("hal9000.dind.worker", {"name": to_none, "parent": parent.name, "flavour": "ultramin",
                                                           "user": "2002:2002",
                                                           "egress_allow": [f"{hosts.address('allowed')}:{PORT}"]}))
    assert again["changed"] is False, again


def test_a_claim_applies_the_claimants_policy(ansible, docker_client, parent, hosts, made, prefix):
    pools = {"enabled": False, "pools": [{"name": "egpool", "user": "2003:2003", "min": 0, "max": 1, "claude_home": "ephemeral",
                                          "image": "hal9000/worker:ultramin",
                                          "egress_allow": [f"{hosts.address('refused')}:{PORT}"]}]}
    (parent.home / "config" / "pools.json").write_text(json.dumps(pools))
    code, out, err = exec_in(docker_client, parent.name, ["coordinator", "pool", "warm", "--pool", "egpool"])
    assert code == 0, out + err
    warm = docker_client.api.containers(filters={"label": ["io.hal9000.pool=egpool", f"io.hal9000.parent={parent.name}"]})
    assert len(warm) == 1 and warm[0]["Labels"]["io.hal9000.egress-allow"] == f"{hosts.address('refused')}:{PORT}"
    made.append(warm[0]["Names"][0].lstrip("/"))
    assert answers(docker_client, warm[0]["Id"], hosts, "refused")[0]  # the pool's policy from its creation on

    name = f"{prefix}-eg-claimed"
    made.append(name)
    # What a claim runs in the parent (its time is measured by benchmarks/egress_claim.py, not asserted here).
    code, out, err = exec_in(docker_client, parent.name, ["coordinator", "egress", "register", warm[0]["Id"], "2003",
                                                          "--allow", f"{hosts.address('allowed')}:{PORT}"])
    assert code == 0 and out.split()[0] == "changed", out + err
    assert answers(docker_client, warm[0]["Id"], hosts, "allowed")[0]
    refused(docker_client, warm[0]["Id"], hosts.address("refused"))

    claimed = succeeded(ansible.task("hal9000.dind.worker", {
        "name": name, "parent": parent.name, "flavour": "ultramin", "user": "2003:2003", "claude_home": "ephemeral",
        "from_pool": True, "hal9000_home": str(parent.home), "egress_allow": [f"{hosts.address('refused')}:{PORT}"]}))
    assert claimed["claimed"] is True and claimed["worker"]["id"] == warm[0]["Id"], claimed
    assert answers(docker_client, name, hosts, "refused")[0]  # the claimant's list, not the one in force before
    refused(docker_client, name, hosts.address("allowed"))


def test_egress_open_lets_workers_through_and_status_warns(ansible, docker_client, parent, hosts, made, prefix):
    name = worker(ansible, parent, made, f"{prefix}-eg-open")
    conf = parent.home / "config" / "hal9000.conf"
    written = conf.read_text()
    conf.write_text(written + "EGRESS=open\n")
    try:
        wait_for(lambda: (read_startup(docker_client, parent.name).get("egress") or {}).get("mode") == "open", 10,
                 "the parent to read EGRESS=open")
        assert answers(docker_client, name, hosts, "refused")[0]
        refused(docker_client, name, "169.254.169.254", 80)  # still refused
        code, out, _err = exec_in(docker_client, parent.name, ["coordinator", "status"])
        assert code == 0 and "Worker egress: open" in out and f"WARNING: {OPEN_WARNING}" in out, out
        result = succeeded(parent.runner.task("hal9000.dind.parent", parent.args))
        assert OPEN_WARNING in result.get("warnings", []), result
        assert f"  WARNING: {OPEN_WARNING}" in result["status_lines"], result["status_lines"]

        conf.write_text(written + "EGRESS_ALLOW=169.254.169.254\n")  # refused in one line; the rules stay

        def refusal_logged():
            logs = docker_client.api.logs(parent.name).decode()
            return "egress_allow '169.254.169.254' is link-local" in logs and logs

        logs = wait_for(refusal_logged, 15, "the parent to refuse the bad EGRESS_ALLOW")
        assert "The egress rules stay as they are." in logs, logs[-2000:]
        assert (read_startup(docker_client, parent.name).get("egress") or {}).get("mode") == "open"
    finally:
        conf.write_text(written)
    wait_for(lambda: (read_startup(docker_client, parent.name).get("egress") or {}).get("mode") == "allowlist", 10,
             "the parent to read the allowlist again")
    refused(docker_client, name, hosts.address("refused"))


def test_the_policy_survives_a_parent_restart(ansible, docker_client, parent, hosts, made, prefix):
    own = worker(ansible, parent, made, f"{prefix}-eg-restart", user="2004:2004",
                 egress_allow=[f"{hosts.address('refused')}:{PORT}"])
    docker_client.api.restart(parent.name, timeout=30)
    wait_for(lambda: read_startup(docker_client, parent.name).get("chromadb_ready"), 60, "the restarted parent")
    # the namespace is new: its rules were written again at start-up, the worker's own (kept in the home) too
    for uid, allowed, other in (("1001", "allowed", "refused"), ("2004", "refused", "allowed")):
        assert answers(docker_client, parent.name, hosts, allowed, user=uid)[0], uid
        refused(docker_client, parent.name, hosts.address(other), user=uid)
    fresh = worker(ansible, parent, made, f"{prefix}-eg-after-restart")
    assert answers(docker_client, fresh, hosts, "allowed")[0]
    refused(docker_client, fresh, hosts.address("refused"))
    assert docker_client.api.inspect_container(own)["State"]["Running"]
