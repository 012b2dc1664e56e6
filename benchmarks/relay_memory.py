"""The MCP relay's resident memory with 1, 10 and 30 workers connected, beside what the seed's way costs.

The relay (images/mcp/relay.py in the `<parent>-mcp` sidecar) runs the seed's three MCP servers once per
parent for every worker; the seed started all three inside every worker. Measured:

(a) the seed's way, one set: memory-bank-mcp, mcp-server-sequential-thinking and chroma-mcp started once as
    stdio processes (the relay's own commands, arguments and environment) in a container of hal9000/mcp:latest
    joined to the parent's network namespace (chroma-mcp reaches the parent's ChromaDB, as in a worker),
    each after initialize + tools/list; the sum of their RSS.
(b) the relay with 0, 1, 10 and 30 ultramin workers connected (memory 512m each), each of which has run the
    real `claude mcp list` once (all three servers connected) and keeps an MCP session open: one keep-alive
    connection per server, with initialize, notifications/initialized and tools/list on it (a bash client
    on /dev/tcp in the worker, with the worker's own relay credential), so every per-worker and
    per-connection state the relay keeps exists while it is measured. Twice, with a fresh relay each time
    (SIGHUP to the parent restarts only the relay): all workers on one project (one memory scope), and each
    on a project of its own (a scope each: the relay runs servers other than the memory servers, here
    sequential-thinking, once per scope).

The relay's memory is the sum of VmRSS over every process in the sidecar (read from /proc/<pid>/status by one
`sh` exec'd in it, which leaves itself out): what the relay and its servers hold, without the page cache
the cgroup's figure carries (the memory bank's files, the logs, tmpfs) and comparable with the seed's way,
measured the same way. The cgroup's usage minus inactive file (what `docker stats` shows) is printed beside
it. RSS counts pages two processes share twice (e.g. several node processes' code), so the sum is an upper bound.
Goal: each extra worker adds at most 1 MB to the relay: (rss_30 - rss_1) / 29 <= 1 MB, for each run.

Starts a parent of its own (name, volumes and home from a random prefix; the real hal9000-parent is never
touched), waits for its relay, and removes the parent, its sidecar, the workers, volumes and temp home at
the end, also on failure:
    .venv/bin/python benchmarks/relay_memory.py
Exit status 0 when every goal is met, 1 when one is missed, 2 when it fails (scripts/bench.sh runs them all).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import _setup  # (the working tree as ansible_collections.hal9000.dind, the test helpers, and Goals)
import docker
from helpers import AnsibleRunner, exec_in, parent_args, remove_containers, remove_installation, succeeded, wait_for

from ansible_collections.hal9000.dind.plugins.module_utils.constants import FLAVOUR_IMAGES, MCP_IMAGE
from ansible_collections.hal9000.dind.plugins.module_utils.relay import builtin_servers, sidecar_name
from ansible_collections.hal9000.dind.plugins.module_utils.settings import resolve_in_home
from ansible_collections.hal9000.dind.plugins.module_utils.workers import remove_worker, spawn_worker, worker_spec

LEVELS = (1, 10, 30)
GOAL_PER_WORKER_MB = 1
WORKER_LIMITS = {"memory": "512m", "cpus": "1"}
SERVERS = ("memory-bank", "sequential-thinking", "chroma")
SETTLE_S = 5
SAMPLES = 3
KB, MB = 1024, 1024 * 1024
UID = 1001  # the projects' owner, so the workers run as the image's user
BASE = f"h9bench-{uuid.uuid4().hex[:8]}"
PARENT = f"{BASE}-parent"
SIDECAR = sidecar_name(PARENT)
GOALS = _setup.Goals(__file__)

# Every process of the container but this shell: pid, VmRSS and RssAnon in kB, command line. The glob is expanded before
# the loop, so the processes the command substitutions fork are never in it.
PROCESSES = r"""
for p in /proc/[0-9]*; do
  [ "${p#/proc/}" = "$$" ] && continue
  rss=0 anon=0
  while read -r key value _unit; do
    case $key in VmRSS:) rss=$value ;; RssAnon:) anon=$value ;; esac
  done 2>/dev/null < "$p/status" || continue
  cmd=$(tr '\0' ' ' 2>/dev/null < "$p/cmdline") || continue
  printf '%s %s %s %s\n' "${p#/proc/}" "$rss" "$anon" "$cmd"
done
"""

# An MCP session held open from a worker: one keep-alive connection per relay server, with initialize,
# notifications/initialized and tools/list on it; then a background sleep keeps the sockets open.
SESSION = r"""
export LC_ALL=C  # read -N counts bytes
token=$(cat /run/hal9000/relay-token) || exit 1
rpc() {  # rpc FD SERVER BODY: one request on the open connection FD, its answer read to the end
  fd=$1 server=$2 body=$3 length=0 answer= crlf=$'\r\n'
  head="POST /mcp/$server HTTP/1.1${crlf}Host: 127.0.0.1:8765${crlf}Authorization: Bearer $token${crlf}"
  head+="Content-Type: application/json${crlf}Accept: application/json, text/event-stream${crlf}"
  printf '%sContent-Length: %d\r\n\r\n%s' "$head" "${#body}" "$body" >&"$fd"
  IFS= read -r -t 60 line <&"$fd" || { echo "$server: no answer" >&2; return 1; }
  case $line in "HTTP/1.1 200"* | "HTTP/1.1 202"*) ;; *) echo "$server: $line" >&2; return 1 ;; esac
  while IFS= read -r -t 60 line <&"$fd"; do
    line=${line%$'\r'}
    [ -z "$line" ] && break
    case $line in [Cc]ontent-[Ll]ength:*) length=${line#*:} length=${length// /} ;; esac
  done
  if [ "$length" -gt 0 ]; then IFS= read -r -t 60 -N "$length" answer <&"$fd" || return 1; fi
  case $answer in *'"error"'*) echo "$server: $answer" >&2; return 1 ;; esac
}
initialize='{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},'
initialize+='"clientInfo":{"name":"bench","version":"1"}}}'
fd=3
for server in memory-bank sequential-thinking chroma; do
  eval "exec $fd<>/dev/tcp/127.0.0.1/8765" || exit 1
  rpc $fd $server "$initialize" || exit 1
  rpc $fd $server '{"jsonrpc":"2.0","method":"notifications/initialized"}' || exit 1
  rpc $fd $server '{"jsonrpc":"2.0","id":2,"method":"tools/list"}' || exit 1
  fd=$((fd + 1))
done
sleep infinity </dev/null >/dev/null 2>&1 &
echo "session held"
"""

# The seed's way: the three servers as one worker's stdio children, initialize + tools/list each, then
# the RSS of each one's process tree (in kB) as JSON.
SEED_WAY = r"""
import json, os, subprocess, sys, time

def send(process, message):
    process.stdin.write((json.dumps(message) + "\n").encode())
    process.stdin.flush()

def answer(name, process, request_id):
    for line in process.stdout:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if message.get("id") == request_id:
            if "error" in message:
                raise SystemExit(f"{name}: {message['error']}")
            return message["result"]
    with open(f"/tmp/{name}.log", encoding="utf-8", errors="replace") as log:
        raise SystemExit(f"{name} exited (code {process.wait()}): {log.read()[-1500:]}")

def tree_rss(root):
    parents = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                parents[int(pid)] = int(stat.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            pass
    tree, total = {root}, 0
    while True:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        if not more:
            break
        tree |= more
    for pid in tree:
        with open(f"/proc/{pid}/status") as status:
            total += next((int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0)
    return total

servers, settle = json.loads(sys.argv[1]), float(sys.argv[2])
processes = {s["name"]: subprocess.Popen([s["command"], *s["args"]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=open(f"/tmp/{s['name']}.log", "w"), env=dict(os.environ, **s["env"]))
             for s in servers}
tools = {}
for name, process in processes.items():
    send(process, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}})
    answer(name, process, 1)
    send(process, {"jsonrpc": "2.0", "method": "notifications/initialized"})
    send(process, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    tools[name] = len(answer(name, process, 2)["tools"])
time.sleep(settle)
print(json.dumps({name: {"rss_kb": tree_rss(process.pid), "tools": tools[name]} for name, process in processes.items()}))
for process in processes.values():
    process.terminate()
"""


def startup(client):
    code, out, _err = exec_in(client, PARENT, ["cat", "/run/hal9000/startup.json"])
    return json.loads(out) if code == 0 else {}


def kind_of(cmd):
    """Which part of the sidecar a process is, from its command line."""
    if cmd.startswith("/usr/bin/tini "):
        return "tini"
    for name in SERVERS:
        if name in cmd:
            return name
    if "relay.py" in cmd:
        return "relay"
    return cmd.split(" ", 1)[0].rsplit("/", 1)[-1] or "?"


def sidecar_processes(client):
    """[(kind, rss bytes, anonymous rss bytes)] of every process in the sidecar."""
    code, out, err = exec_in(client, SIDECAR, ["sh", "-c", PROCESSES])
    if code != 0:
        raise RuntimeError(f"cannot read the processes of {SIDECAR}: {err.strip()}")
    found = []
    for line in out.splitlines():
        _pid, rss, anon, cmd = (line.split(" ", 3) + [""])[:4]
        found.append((kind_of(cmd), int(rss) * KB, int(anon) * KB))
    return found


def relay_memory(client):
    """The sidecar's memory in bytes: "rss" (the median of SAMPLES sums of RSS), "anon" (their anonymous part),
    "parts" ({kind: (processes, rss)} of that sample) and "cgroup" (usage minus inactive file)."""
    time.sleep(SETTLE_S)
    samples = []
    for sample in range(SAMPLES):
        if sample:
            time.sleep(1)
        samples.append(sidecar_processes(client))
    sums = [sum(rss for _kind, rss, _anon in processes) for processes in samples]
    middle = samples[sums.index(sorted(sums)[len(sums) // 2])]
    parts = {}
    for kind, rss, _anon in middle:
        count, total = parts.get(kind, (0, 0))
        parts[kind] = (count + 1, total + rss)
    stats = client.api.stats(SIDECAR, stream=False)["memory_stats"]
    inner = stats.get("stats", {})
    cgroup = stats["usage"] - inner.get("total_inactive_file", inner.get("inactive_file", 0))
    return {"rss": sum(rss for _kind, rss, _anon in middle), "anon": sum(anon for _kind, _rss, anon in middle),
            "parts": parts, "cgroup": cgroup}


def describe_parts(parts):
    order = ["relay", *SERVERS]
    kinds = order + sorted(kind for kind in parts if kind not in order)
    return ", ".join(f"{kind} {parts[kind][1] / MB:.1f}" + (f" ({parts[kind][0]} processes)" if parts[kind][0] > 1 else "")
                     for kind in kinds if kind in parts)


def seed_way(client, home):
    """{server: {"rss_kb", "tools"}} of one set of the three servers started the seed's way."""
    servers = []
    for server in builtin_servers(resolve_in_home(home)["chromadb_port"]):
        env = dict(server["env"])
        if "MEMORY_BANK_ROOT" in env:
            env["MEMORY_BANK_ROOT"] = "/tmp/memory-bank"  # a worker's own, not the installation's memory bank
        servers.append(dict(server, env=env))
    name = f"{BASE}-seed-way"
    try:
        container = client.containers.run(
            MCP_IMAGE, ["python3", "-c", SEED_WAY, json.dumps(servers), str(SETTLE_S)], entrypoint=["/usr/bin/tini", "--"],
            name=name, detach=True, network_mode=f"container:{client.api.inspect_container(PARENT)['Id']}",
            # Root without root's powers, as the sidecar: in the parent's namespace only uid 0 reaches ChromaDB.
            user="0:0", environment={"HOME": "/tmp"}, cap_drop=["ALL"], security_opt=["no-new-privileges:true"],
            read_only=True, tmpfs={"/tmp": "rw,nosuid,nodev,size=256m"},
        )
        code = container.wait(timeout=180)["StatusCode"]
        out = container.logs(stdout=True, stderr=False).decode("utf-8", "replace").strip().splitlines()
        if code != 0 or not out:
            raise RuntimeError(f"the seed's way did not start its servers (exit code {code}): "
                               f"{container.logs().decode('utf-8', 'replace')[-1500:]}")
        return json.loads(out[-1])
    finally:
        remove_containers(client, name)


class Run:
    """Workers of one run (one project for all, or a project each), connected one level after another."""

    def __init__(self, client, workdir, label, shared_project):
        self.client = client
        self.home = str(workdir / "home")
        self.settings = resolve_in_home(self.home)
        self.workdir = workdir / label.replace(" ", "-")
        self.workdir.mkdir()
        self.shared = self.project("shared") if shared_project else None
        self.label = label
        self.workers = []  # (name, id)

    def project(self, name):
        path = self.workdir / name
        path.mkdir()
        os.chown(path, UID, UID)
        return str(path)

    def spawn(self, index):
        name = f"{BASE}-{'one' if self.shared else 'each'}-{index}"
        project = self.shared or self.project(f"project-{index}")
        spec = worker_spec(name=name, image=FLAVOUR_IMAGES["ultramin"], parent=PARENT, project_dir=project,
                           settings=self.settings, **WORKER_LIMITS)
        container_id = spawn_worker(self.client, spec)[0]
        self.workers.append((name, container_id))
        return name

    def connect(self, name):
        """`claude mcp list` once (every server connected), then the session kept open."""
        code, out, err = exec_in(self.client, name, ["timeout", "120", "claude", "mcp", "list"])
        if code != 0 or out.count("✔ Connected") != len(SERVERS):
            raise RuntimeError(f"claude mcp list in {name} (exit code {code}): {out.strip()} {err.strip()[-500:]}")
        code, out, err = exec_in(self.client, name, ["bash", "-c", SESSION])
        if code != 0 or "session held" not in out:
            raise RuntimeError(f"the MCP session from {name} failed (exit code {code}): {err.strip()[-500:]}")

    def grow_to(self, count):
        names = [self.spawn(index) for index in range(len(self.workers), count)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
            list(pool.map(self.connect, names))

    def remove(self):
        for _name, container_id in self.workers:
            remove_worker(self.client, container_id, self.home)
        self.workers = []


def restart_relay(client):
    """SIGHUP to the parent restarts only the relay (a new sidecar): a fresh relay for the next run."""
    before = client.api.inspect_container(SIDECAR)["Id"]
    client.api.kill(PARENT, signal="SIGHUP")

    def restarted():
        try:
            current = client.api.inspect_container(SIDECAR)["Id"]
        except docker.errors.NotFound:
            return False
        return current != before and startup(client).get("relay_ready")

    wait_for(restarted, 180, "the MCP relay to restart")


def measure_run(client, run):
    """{level: relay_memory(...)} with 0 and each of LEVELS workers connected."""
    figures = {0: relay_memory(client)}
    for level in LEVELS:
        began = time.monotonic()
        run.grow_to(level)
        figures[level] = relay_memory(client)
        print(f"  {run.label}: {level:2d} worker(s) connected in {time.monotonic() - began:5.1f} s; relay "
              f"{figures[level]['rss'] / MB:6.1f} MB ({describe_parts(figures[level]['parts'])})", flush=True)
    run.remove()
    return figures


def main():
    client = docker.from_env()
    workdir = Path(tempfile.mkdtemp(prefix=f"{BASE}-"))
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"host: {os.cpu_count()} CPUs, load average {load}")
    runs = {}
    try:
        began = time.monotonic()
        succeeded(AnsibleRunner(workdir).task("hal9000.dind.parent", parent_args(BASE, workdir / "home")))
        wait_for(lambda: startup(client).get("relay_ready"), 180, "the MCP relay to answer")
        print(f"parent {PARENT} and its MCP relay ready in {time.monotonic() - began:.1f} s")
        seed = seed_way(client, str(workdir / "home"))
        for label, shared in (("one project", True), ("a project each", False)):
            if runs:
                restart_relay(client)
            runs[label] = measure_run(client, Run(client, workdir, label, shared))
    finally:
        remove_installation(client, BASE, PARENT)
        shutil.rmtree(workdir, ignore_errors=True)

    seed_mb = sum(server["rss_kb"] for server in seed.values()) * KB / MB
    parts = ", ".join(f"{name} {server['rss_kb'] / KB:.1f} MB ({server['tools']} tools)" for name, server in seed.items())
    print(f"\n(a) the seed's way, the three servers in one worker: {seed_mb:.1f} MB RSS ({parts})")
    print(f"    for {LEVELS[-1]} workers: {LEVELS[-1]} x {seed_mb:.1f} = {LEVELS[-1] * seed_mb:.0f} MB")
    print("\n(b) the relay: the sum of RSS over the sidecar's processes; its anonymous part (RssAnon: heaps, stacks, not"
          "\n    shared code); the cgroup's usage minus inactive file (docker stats)")
    print(f"    {'workers connected':<22}" + "".join(f"{level:>10d}" for level in (0, *LEVELS)) + "    per extra worker, 1 -> 30")
    for label, figures in runs.items():
        for row, key in ((label, "rss"), ("  anonymous", "anon"), ("  cgroup", "cgroup")):
            extra = (figures[LEVELS[-1]][key] - figures[LEVELS[0]][key]) / (LEVELS[-1] - LEVELS[0]) / MB
            print(f"    {row:<22}" + "".join(f"{figures[level][key] / MB:7.1f} MB" for level in (0, *LEVELS))
                  + f"    {extra:6.2f} MB")
        per_worker = (figures[LEVELS[-1]]["rss"] - figures[LEVELS[0]]["rss"]) / (LEVELS[-1] - LEVELS[0]) / MB
        top = figures[LEVELS[-1]]
        print(f"    at {LEVELS[-1]}: {describe_parts(top['parts'])}; the seed's way: {LEVELS[-1] * seed_mb:.0f} MB, "
              f"{LEVELS[-1] * seed_mb / (top['rss'] / MB):.1f}x the relay")
        # Its own share, without the servers' garbage collection swinging by megabytes: a thread per held connection.
        own = (top["parts"]["relay"][1] - figures[LEVELS[0]]["parts"]["relay"][1]) / (LEVELS[-1] - LEVELS[0]) / MB
        print(f"    the relay process alone (python, {3 * LEVELS[-1]} connections held at {LEVELS[-1]}): {own:.2f} MB per extra worker")
        met = GOALS.at_most(f"relay memory per extra worker, {label}", per_worker, GOAL_PER_WORKER_MB, "MB", digits=2)
        print(f"    {label}: each extra worker adds {per_worker:.2f} MB (goal <= {GOAL_PER_WORKER_MB} MB: "
              f"{'meets' if met else 'MISSES'} it)")


if __name__ == "__main__":
    sys.exit(GOALS.run(main))
