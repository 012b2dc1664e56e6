"""Parent HEALTHCHECK: the Docker socket answers and ChromaDB's heartbeat is 200.

Standard library only, so the check stays cheap every 10 s.
"""

import os
import socket
import sys
import urllib.request


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
        port = os.environ.get("CHROMADB_PORT", "8000")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=4) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
