"""Parent HEALTHCHECK: the Docker socket answers and ChromaDB's heartbeat is 200.

Standard library only, so the check stays cheap every 10 s.
"""

import json
import socket
import sys
import urllib.request

STARTUP_FILE = "/run/hal9000/startup.json"  # constants.STARTUP_FILE; not imported, to keep the check cheap


def docker_answers(path="/var/run/docker.sock"):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(3)
        sock.connect(path)
        sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
        return b" 200 " in sock.recv(64)


def main():
    try:
        if not docker_answers():
            print("docker socket does not answer")
            return 1
        # The port the entrypoint resolved (hal9000.conf or the environment), not only the environment's.
        try:
            with open(STARTUP_FILE, encoding="utf-8") as handle:
                port = (json.load(handle).get("settings") or {}).get("chromadb_port", 8000)
        except (OSError, ValueError):
            port = 8000
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=4) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
