"""engine.EngineClient, the SDK-free Engine API client of claudy's warm claim, against a real HTTP server on a
unix socket made here (the engine's answers as the Engine API documents them), and the import path of a warm
claim run in a subprocess: no docker SDK, no requests, no urllib3.

The claim against the real engine is in tests/integration/test_claudy.py.
"""

from __future__ import annotations

import http.server
import json
import os
import socketserver
import struct
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path

import pytest

from ansible_collections.hal9000.dind.plugins.module_utils import engine
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.parent import run_coordinator
from ansible_collections.hal9000.dind.plugins.module_utils.workers import register_egress, update_limits

HEAVY = ("docker", "requests", "urllib3")
COLLECTIONS = str(Path(__file__).resolve().parents[2] / ".ansible" / "collections")


def frame(stream, data):
    return struct.pack(">BxxxI", stream, len(data)) + data


class Engine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Answers like the engine: JSON bodies, {"message": ...} errors, a raw stream for an exec, keep-alive."""

    daemon_threads = True

    def __init__(self, path):
        self.requests, self.connections = [], 0
        super().__init__(path, Handler)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def setup(self):
        super().setup()
        self.server.connections += 1

    def answer(self, status, body=b"", content_type="application/json", close=False):
        data = json.dumps(body).encode() if content_type == "application/json" else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if close:  # a hijacked stream: no length, it ends with the connection
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_one(self):
        url = urllib.parse.urlsplit(self.path)
        path = url.path.split("/", 2)[2] if url.path.startswith("/v1.") else url.path.lstrip("/")  # the SDK's /v1.41/...
        query = urllib.parse.parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.server.requests.append((self.command, "/" + path, query, body))
        key = (self.command, "/" + path)
        if key == ("GET", "/_ping"):
            self.answer(200, b"OK", "text/plain")
            if "quiet-close" in query:  # closes the kept-alive connection without saying so
                self.close_connection = True
        elif key == ("GET", "/version"):
            self.answer(200, {"ApiVersion": "1.41", "Version": "test"})
        elif key == ("GET", "/info"):
            self.answer(200, {"Name": "unit-engine"})
        elif key == ("GET", "/containers/w1/json"):
            self.answer(200, {"Id": "abc", "Name": "/w1", "State": {"Running": True}})
        elif key == ("GET", "/containers/json"):
            self.answer(200, [{"Id": "abc", "Names": ["/w1"], "Query": {k: v[0] for k, v in query.items()}}])
        elif key == ("POST", "/containers/abc/rename"):
            name = query["name"][0]
            if name == "taken":
                self.answer(409, {"message": f'Conflict. The container name "/{name}" is already in use'})
            else:
                self.answer(204, b"", "text/plain")
        elif key == ("POST", "/containers/abc/update"):
            self.answer(200, {"Warnings": []})
        elif key == ("POST", "/containers/abc/exec"):
            self.answer(201, {"Id": "e1"})
        elif key == ("POST", "/exec/e1/start"):
            self.answer(200, frame(1, b'{"moved": ') + frame(2, b"") + frame(1, b"true}\n"),
                        "application/vnd.docker.raw-stream", close=True)
        elif key == ("GET", "/exec/e1/json"):
            self.answer(200, {"ExitCode": 0})
        elif key == ("DELETE", "/containers/abc"):
            self.answer(204, b"", "text/plain")
        else:
            self.answer(404, {"message": f"No such container: {path.split('/')[1] if '/' in path else path}"})

    do_GET = do_POST = do_DELETE = handle_one


@pytest.fixture
def server(tmp_path):
    path = str(tmp_path / "engine.sock")
    served = Engine(path)
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    yield served, path
    served.shutdown()
    served.server_close()


@pytest.fixture
def client(server):
    client = engine.connect_light(f"unix://{server[1]}", timeout=5)
    yield client
    client.close()


def test_the_claims_calls_in_the_sdks_shapes(server, client):
    served, _path = server
    assert client.api.inspect_container("w1")["Name"] == "/w1"
    listed = client.api.containers(filters={"label": ["io.hal9000.role=worker", "io.hal9000.pool"], "status": "running"})
    sent = json.loads(listed[0]["Query"]["filters"])
    assert sent == {"label": ["io.hal9000.role=worker", "io.hal9000.pool"], "status": ["running"]}, sent
    assert listed[0]["Query"]["all"] == "0"
    client.api.rename("abc", "w2")
    assert served.requests[-1][:3] == ("POST", "/containers/abc/rename", {"name": ["w2"]})
    # The shared code the claim runs, on this client: limits in place, and an operation by the parent's coordinator.
    update_limits(client, "abc", {"memory": 1 << 30, "cpus": 1.5, "pids_limit": 50})
    assert served.requests[-1][3] == {"Memory": 1 << 30, "MemorySwap": 1 << 30, "CpuPeriod": 100000, "CpuQuota": 150000,
                                      "PidsLimit": 50}
    assert json.loads(run_coordinator(client, "abc", "homes", "adopt", "x", user="0")) == {"moved": True}
    create = [r for r in served.requests if r[1] == "/containers/abc/exec"][0]
    assert create[3]["Cmd"] == ["coordinator", "homes", "adopt", "x"] and create[3]["User"] == "0", create
    # A pool's egress_allow at a claim: the exec_create answer (a dict, as the SDK takes it) names the exec.
    register_egress(client, "abc", "abc", "1001:1001", ["192.0.2.1"])
    assert [r[:2] for r in served.requests[-3:]] == [("POST", "/containers/abc/exec"), ("POST", "/exec/e1/start"),
                                                     ("GET", "/exec/e1/json")]
    client.api.remove_container("abc", force=True, v=True)
    assert served.requests[-1][2] == {"v": ["true"], "link": ["false"], "force": ["true"]}


def test_one_connection_is_kept_and_a_stream_gets_its_own(server, client):
    served, _path = server
    for _call in range(3):
        client.api.inspect_container("w1")
    assert served.connections == 1, "every call on the one kept-alive connection"
    client.api.exec_start("e1")  # the engine ends a hijacked stream by closing its connection
    client.api.inspect_container("w1")
    assert served.connections == 3


def test_an_idle_connection_the_engine_closed_is_opened_again(server, client):
    client.api._call("GET", "/_ping", params={"quiet-close": "1"})
    assert client.api.inspect_container("w1")["Id"] == "abc"


def test_errors_as_the_claim_code_expects_them(client):
    assert engine.inspect_container(client, "missing") is None
    with pytest.raises(engine.ERRORS.NotFound):
        client.api.inspect_image("missing:latest")
    with pytest.raises(engine.ERRORS.APIError) as raised:
        client.api.rename("abc", "taken")
    assert raised.value.status_code == 409 and "taken" in str(raised.value)  # what pool._rename_warm looks for
    message = engine.api_error_message(raised.value)
    assert message.startswith("Docker API error: Conflict.") and "\n" not in message, message


def test_no_engine_one_line_and_remote_engines_left_to_the_sdk(tmp_path):
    with pytest.raises(Hal9000Error, match=r"^Cannot connect to the Docker daemon at unix://.*no\.sock"):
        engine.connect_light(f"unix://{tmp_path}/no.sock", timeout=2)
    assert engine.connect_light("tcp://127.0.0.1:2375") is None
    assert engine.connect_light("ssh://user@host") is None


def run_python(code, env):
    """``code`` in a fresh interpreter with -X importtime; (process, the modules it imported)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    return proc, imported


def heavy(imported):
    return sorted(name for name in imported if name.split(".")[0] in HEAVY)


def test_a_launch_imports_neither_the_sdk_nor_requests(server, tmp_path):
    """claudy --via-parent --detach up to the engine's answer, and every module a warm claim runs: no docker SDK."""
    _served, path = server
    project = tmp_path / "app"
    project.mkdir()
    env = dict(os.environ, DOCKER_HOST=f"unix://{path}", HAL9000_PARENT="no-such-parent", HAL9000_HOME=str(tmp_path / "home"),
               PYTHONPATH=COLLECTIONS)
    code = ("import sys\n"
            "from ansible_collections.hal9000.dind.plugins.module_utils import claudy, worker_state, pool\n"
            f"sys.exit(claudy.main(['--via-parent', '--detach', '--name', 'w9', {str(project)!r}]))\n")
    proc, imported = run_python(code, env)
    assert proc.returncode == claudy_exit_no_engine(), proc.stderr[-2000:]
    assert "No parent no-such-parent is running" in proc.stderr
    assert "ansible_collections.hal9000.dind.plugins.module_utils.pool" in imported
    assert heavy(imported) == [], heavy(imported)


def claudy_exit_no_engine():
    from ansible_collections.hal9000.dind.plugins.module_utils.claudy import EXIT_NO_ENGINE

    return EXIT_NO_ENGINE


def test_a_call_the_small_client_does_not_make_imports_the_sdk_then(server):
    """The fallback: anything else (a cold spawn's calls) goes to a docker SDK client made on first use."""
    _served, path = server
    code = ("import sys\n"
            "from ansible_collections.hal9000.dind.plugins.module_utils.engine import connect_light\n"
            f"client = connect_light('unix://{path}')\n"
            "client.api.inspect_container('w1')\n"
            "assert 'docker' not in sys.modules\n"
            "print(client.api.info()['Name'], client.api.base_url)\n")
    proc, imported = run_python(code, dict(os.environ, PYTHONPATH=COLLECTIONS))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[0] == "unit-engine" and "docker" in imported and "requests" in imported
