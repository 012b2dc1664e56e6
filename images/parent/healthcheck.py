"""Parent HEALTHCHECK: no disk the parent writes is full, the Docker socket answers, ChromaDB's heartbeat
is 200, ChromaDB is guarded, and no MCP relay server has failed (its state per server is printed, so
`docker inspect` shows it). `healthcheck.py socket` checks the Docker socket only (the parent module asks).

Standard library only, so the check stays cheap every 10 s.
"""

import json
import os
import socket
import sys
import urllib.request

STARTUP_FILE = "/run/hal9000/startup.json"  # constants.STARTUP_FILE; not imported, to keep the check cheap
RELAY_STATUS = "/root/.hal9000/run/relay/status.json"  # HOME_IN_PARENT + relay.STATUS_FILE
# What the parent writes to: the home, ChromaDB's and the memory bank's volumes, its run-time files.
WRITTEN = ("/root/.hal9000", os.environ.get("CHROMADB_PATH", "/data/chromadb"), "/data/membank", "/run/hal9000")
MIN_FREE = 1024 * 1024  # less than this left for unprivileged writers (the home owner, workers): full


def written_root(path, roots=None):
    """The entry of WRITTEN that holds ``path`` (how a full disk is named), else ``path`` itself."""
    for root in roots or WRITTEN:
        if path == root or path.startswith(root.rstrip("/") + "/"):
            return root
    return path


def full_disk(paths=None, statvfs=os.statvfs):
    """The first of ``paths`` on a full file system (no space or no inodes left), or None."""
    for path in paths or WRITTEN:
        try:
            stats = statvfs(path)
        except OSError:  # not mounted here (a parent started by hand): nothing to say about it
            continue
        if stats.f_bavail * stats.f_frsize < MIN_FREE or (stats.f_files and not stats.f_favail):
            return path
    return None


def docker_answers(path="/var/run/docker.sock"):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(3)
        sock.connect(path)
        sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
        return b" 200 " in sock.recv(64)


def read_json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def main(argv=()):
    try:
        if list(argv) == ["socket"]:
            return 0 if docker_answers() else 1
        full = full_disk()
        if full:
            print(f"disk full: {full}, free space needed")
            return 1
        if not docker_answers():
            print("docker socket does not answer")
            return 1
        # The port the entrypoint resolved (hal9000.conf or the environment), not only the environment's.
        startup = read_json(STARTUP_FILE)
        settings = startup.get("settings") or {}
        port = settings.get("chromadb_port", 8000)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=4) as response:
            if response.status != 200:
                return 1
        if startup.get("chromadb_guard", "root only") != "root only":
            print(f"ChromaDB is not guarded from workers: {startup['chromadb_guard']}")
            return 1
        if settings.get("enable_mcp_relay"):
            servers = read_json(RELAY_STATUS).get("servers") or {}
            print("relay " + ("ready" if startup.get("relay_ready") else "starting") + ": "
                  + ", ".join(f"{name} {server.get('state')}" for name, server in sorted(servers.items())))
            if any(server.get("state") == "failed" for server in servers.values()):
                return 1
        return 0
    except OSError as exc:
        print(exc)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
