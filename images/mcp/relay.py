"""MCP relay of a hal9000 parent: the seed's MCP servers once per parent, for every worker.

Runs in the hal9000/mcp sidecar, which shares the parent's network namespace, so every worker
reaches it at http://127.0.0.1:<port>/mcp/<server> (MCP Streamable HTTP, JSON responses).
Each MCP server is a stdio child of this process, started once (or, for a server that must run on
the Docker host, a unix socket under the home, behind the role's stdio bridge there); requests from
many workers are multiplexed onto it with their JSON-RPC ids renumbered.

Why hand-written rather than mcp-proxy or supergateway: those expose a stdio server as it is, to
anyone who can connect. Here every request must carry a worker's credential, the credential
names the worker's memory scope, and every name a worker passes to a memory server (a memory-bank
project, a Chroma collection) is mapped into that scope, so that no name reaches another
project's memory. That is a rewrite of tool arguments and results, which no proxy offers.

Standard library only. Layout of its directory (the parent writes all but status.json):
  servers.json       the servers to run: name, command, args, env, scoping
  credentials/*.json one per worker: {"token_sha256": ..., "scope": ...}
  status.json        written here: each server's state, read by the parent and the info module
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

RELAY_DIR = os.environ.get("HAL9000_RELAY_DIR", "/run/hal9000/relay")
LOG_DIR = os.environ.get("HAL9000_RELAY_LOG_DIR", os.path.join(RELAY_DIR, "logs"))
PROTOCOL_VERSION = "2025-06-18"
CALL_TIMEOUT = 120
MAX_BODY = 8 * 1024 * 1024
# Memory servers whose names are mapped into the caller's scope: the argument keys that carry a
# name, the tool whose result lists names, and the tools allowed at all. A tool not listed here
# is neither shown nor callable: a new tool with a name argument under another key cannot slip by.
SCOPED = {
    "memory-bank": {
        "keys": ("projectName",),
        "list_tool": "list_projects",
        "tools": ("list_projects", "list_project_files", "memory_bank_read", "memory_bank_write", "memory_bank_update"),
    },
    "chroma": {
        "keys": ("collection_name", "new_name", "new_collection_name"),
        "list_tool": "chroma_list_collections",
        "tools": (
            "chroma_list_collections", "chroma_create_collection", "chroma_peek_collection",
            "chroma_get_collection_info", "chroma_get_collection_count", "chroma_modify_collection",
            "chroma_delete_collection", "chroma_add_documents", "chroma_query_documents",
            "chroma_get_documents", "chroma_update_documents", "chroma_delete_documents",
            "chroma_fork_collection",
        ),
    },
}
# A scoped name: "s" + 12 hex digits of the project's key + "_" + the name the worker gave.
# What the relay answers for the memory servers' other listings (Claude Code asks for them on connect).
EMPTY_LISTS = {"prompts/list": "prompts", "resources/list": "resources", "resources/templates/list": "resourceTemplates"}
IDLE_INSTANCE_SECONDS = 600
SCOPED_NAME = re.compile(r"^s[0-9a-f]{12}_")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


class ScopeError(Exception):
    """A request outside the caller's scope: answered as an MCP tool error."""


def log(message):
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} [relay] {message}", flush=True)


def give_to_owner(path):
    """The relay runs as root; what it writes in a user's home is the user's: module_utils' files.give_to_home_owner
    rule, written again because this image carries the relay alone, not the collection's module_utils."""
    try:
        owner = os.stat(RELAY_DIR)
        if os.geteuid() == 0 and owner.st_uid != 0:
            os.lchown(path, owner.st_uid, owner.st_gid)
    except OSError:
        pass  # never fatal: the file is still written and readable


def write_json(path, data):
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
    give_to_owner(tmp)
    os.replace(tmp, path)


class Scope:
    """What a worker's credential allows: kind project (with its key), shared, or none."""

    def __init__(self, text):
        kind, _sep, key = str(text).partition(":")
        if kind == "project" and re.fullmatch(r"[0-9a-f]{12}", key):
            self.kind, self.prefix = "project", f"s{key}_"
        elif kind in ("shared", "none"):
            self.kind, self.prefix = kind, ""
        else:
            self.kind, self.prefix = "none", ""  # unknown or not yet claimed: no memory
        self.text = str(text)

    def describe(self):
        if self.kind == "project":
            return f"this worker's memory scope is its project ({self.text}); names are kept inside it"
        if self.kind == "shared":
            return "this worker's memory scope is shared (the installation's common memory)"
        return "this worker has no memory scope (memory_scope: none, or a warm worker not yet claimed)"

    def map_name(self, name):
        if not isinstance(name, str) or not SAFE_NAME.match(name) or ".." in name:
            raise ScopeError(f"name {name!r} is not allowed: use letters, digits, '.', '_' and '-' only; {self.describe()}")
        if self.kind == "none":
            raise ScopeError(f"memory is not available to this worker: {self.describe()}")
        if SCOPED_NAME.match(name):
            raise ScopeError(f"name {name!r} has the form of a project's memory, which no worker may name: {self.describe()}")
        return name if self.kind == "shared" else self.prefix + name

    def visible(self, name):
        """The name as the worker sees it, or None when it is outside the scope."""
        if self.kind == "project":
            return name[len(self.prefix):] if name.startswith(self.prefix) else None
        if self.kind == "shared":
            return None if SCOPED_NAME.match(name) else name
        return None


class Credentials:
    """credentials/*.json, reloaded when the directory changes (a claim rewrites one file)."""

    def __init__(self, directory):
        self.directory = directory
        self.stamp = None
        self.by_hash = {}
        self.lock = threading.Lock()

    def scope_of(self, token):
        digest = hashlib.sha256(token.encode()).hexdigest()
        with self.lock:
            try:
                info = os.stat(self.directory)
                stamp = (info.st_mtime_ns, info.st_ino)
            except OSError:
                stamp = None
            if stamp != self.stamp:
                self.by_hash = self._load()
                self.stamp = stamp
            record = self.by_hash.get(digest)
            if record is None:
                # A rewrite within the same mtime tick is possible: read once more before refusing.
                self.by_hash = self._load()
                record = self.by_hash.get(digest)
        return Scope(record["scope"]) if record else None

    def _load(self):
        found = {}
        try:
            names = os.listdir(self.directory)
        except OSError:
            return found
        for name in names:
            if not name.endswith(".json"):
                continue
            try:
                with open(os.path.join(self.directory, name), encoding="utf-8") as handle:
                    record = json.load(handle)
                found[record["token_sha256"]] = record
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return found


class SocketProcess:
    """A server the role runs on the Docker host behind its stdio bridge, reached through a unix socket
    under the home: the subset of Popen that Backend uses, so both kinds of server are driven alike."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.stdin = self.sock.makefile("wb")
        self.stdout = self.sock.makefile("rb")
        self.pid = f"socket {path}"
        self.returncode = None
        self.closed = threading.Event()

    def poll(self):
        return self.returncode

    def wait(self, timeout=None):
        self.closed.wait(timeout)
        if self.returncode is None:
            self.returncode = 0
        return self.returncode

    def terminate(self):
        self.kill()

    def kill(self):
        self.returncode = -1 if self.returncode is None else self.returncode
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.closed.set()


class Backend:
    """One MCP server over stdio, shared by many callers (JSON-RPC ids renumbered)."""

    def __init__(self, server, instance=""):
        self.server = server
        self.name = server["name"] + (f"[{instance}]" if instance else "")
        self.process = None
        self.pending = {}
        self.next_id = 0
        self.lock = threading.Lock()
        self.start_lock = threading.Lock()
        self.write_lock = threading.Lock()
        self.initialize_result = None
        self.state = "stopped"
        self.error = ""
        self.failures = 0
        self.retry_at = 0.0

    def ready(self):
        return self.process is not None and self.process.poll() is None and self.initialize_result is not None

    def ensure(self):
        """Start (or restart after a crash, with backoff) and initialize, once for all callers; raises RuntimeError."""
        if self.ready():
            return
        with self.start_lock:
            if self.ready():
                return
            if time.monotonic() < self.retry_at:
                raise RuntimeError(f"{self.name} failed ({self.error}); retrying in {self.retry_at - time.monotonic():.0f} s")
            self._start()
            try:
                result = self.call("initialize", {
                    "protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                    "clientInfo": {"name": "hal9000-relay", "version": "1"},
                }, timeout=60)
                self.notify("notifications/initialized")
            except RuntimeError as exc:
                self._failed(str(exc))
                raise
            self.initialize_result = result
            self.state, self.error, self.failures = "ready", "", 0

    def _start(self):
        env = dict(os.environ)
        env.update(self.server.get("env") or {})
        os.makedirs(LOG_DIR, mode=0o700, exist_ok=True)
        give_to_owner(LOG_DIR)
        stderr = open(os.path.join(LOG_DIR, f"{self.server['name']}.log"), "a", encoding="utf-8")
        give_to_owner(stderr.name)
        self.state = "starting"
        try:
            if self.server.get("socket"):
                self.process = SocketProcess(self.server["socket"])
            else:
                self.process = subprocess.Popen(
                    [self.server["command"], *self.server.get("args", [])], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=stderr, env=env, cwd=self.server.get("cwd") or "/", start_new_session=True,
                )
        except OSError as exc:
            what = f"reach the host's bridge at {self.server['socket']}" if self.server.get("socket") else f"start {self.server['command']}"
            self._failed(f"cannot {what}: {exc.strerror}")
            raise RuntimeError(self.error) from None
        finally:
            stderr.close()
        self.initialize_result = None
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()
        log(f"{self.name} started (pid {self.process.pid})")

    def _failed(self, message):
        self.state, self.error = "failed", message
        self.failures += 1
        self.retry_at = time.monotonic() + min(60, 2 ** self.failures)
        log(f"{self.name} failed: {message}")
        if self.process and self.process.poll() is None:
            self.process.kill()

    def _read(self, process):
        for line in process.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "method" in message and "id" in message:
                # A request from the server (roots, sampling): the relay offers none of them.
                self._send({"jsonrpc": "2.0", "id": message["id"],
                            "error": {"code": -32601, "message": "not offered by the hal9000 relay"}})
                continue
            waiter = self.pending.pop(message.get("id"), None)
            if waiter:
                waiter["response"] = message
                waiter["done"].set()
        if isinstance(process, SocketProcess):
            process.kill()  # the bridge closed the connection: the host's server is gone
        code = process.wait()
        for waiter in list(self.pending.values()):
            waiter["done"].set()
        self.pending.clear()
        if self.state == "ready":
            self._failed(f"exited with code {code}")

    def _send(self, message):
        data = (json.dumps(message) + "\n").encode()
        with self.write_lock:
            self.process.stdin.write(data)
            self.process.stdin.flush()

    def notify(self, method, params=None):
        message = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self._send(message)

    def call(self, method, params, timeout=CALL_TIMEOUT):
        with self.lock:
            self.next_id += 1
            request_id = self.next_id
        waiter = {"done": threading.Event(), "response": None}
        self.pending[request_id] = waiter
        try:
            self._send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}})
        except (OSError, ValueError) as exc:
            self.pending.pop(request_id, None)
            raise RuntimeError(f"{self.name} is not running ({exc})") from None
        if not waiter["done"].wait(timeout):
            self.pending.pop(request_id, None)
            raise RuntimeError(f"{self.name} did not answer {method} within {timeout} s")
        response = waiter["response"]
        if response is None:
            raise RuntimeError(f"{self.name} exited while answering {method}")
        if "error" in response:
            raise RuntimeError(response["error"].get("message", "error"))
        return response.get("result", {})

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()


class Relay:
    def __init__(self, directory):
        self.directory = directory
        with open(os.path.join(directory, "servers.json"), encoding="utf-8") as handle:
            config = json.load(handle)
        self.port = int(config["port"])
        self.servers = {server["name"]: server for server in config["servers"]}
        self.credentials = Credentials(os.path.join(directory, "credentials"))
        self.backends = {}
        self.lock = threading.Lock()
        self.started = time.time()
        self.last_status = None

    def backend(self, name, scope):
        """Memory servers are shared (names are mapped); any other server runs once per scope that calls it."""
        instance = "" if name in SCOPED or scope.kind == "none" else scope.text
        with self.lock:
            backend = self.backends.get((name, instance))
            if backend is None:
                backend = self.backends[(name, instance)] = Backend(self.servers[name], instance)
        backend.ensure()
        backend.used = time.monotonic()
        return backend

    def reap_idle(self, now=None):
        """Stop per-scope instances unused for IDLE_INSTANCE_SECONDS (their scope's workers went quiet)."""
        now = now or time.monotonic()
        with self.lock:
            idle = [key for key, backend in self.backends.items()
                    if key[1] and now - getattr(backend, "used", now) > IDLE_INSTANCE_SECONDS]
            stopped = [self.backends.pop(key) for key in idle]
        for backend in stopped:
            backend.stop()
            log(f"{backend.name} stopped after {IDLE_INSTANCE_SECONDS} s unused")

    def start_all(self):
        """Start every server once (their first scope-free instance), so health reflects them all."""
        for name in self.servers:
            try:
                self.backend(name, Scope("none"))
            except RuntimeError:
                pass
        self.write_status()

    def status(self):
        servers = {}
        for name in self.servers:
            instances = [b for (server, _i), b in self.backends.items() if server == name]
            ready = [b for b in instances if b.state == "ready"]
            failed = [b for b in instances if b.state == "failed"]
            state = "ready" if ready else ("failed" if failed else "starting")
            servers[name] = {"state": state, "instances": len(instances),
                             "error": failed[0].error if failed and not ready else ""}
        return {"port": self.port, "pid": os.getpid(), "started": self.started, "servers": servers}

    def write_status(self):
        """Rewrite status.json when what it says changed (an unchanged home stays byte-for-byte the same)."""
        status = self.status()
        if status != self.last_status:
            write_json(os.path.join(self.directory, "status.json"), status)
            self.last_status = status

    # --- requests ------------------------------------------------------------------------
    def handle(self, server, scope, message):
        """One JSON-RPC message from a worker; returns the response, or None for a notification."""
        method, request_id = message.get("method"), message.get("id")
        if request_id is None:
            return None  # notifications (initialized, cancelled) concern the relay's own session
        try:
            result = self.dispatch(server, scope, method, message.get("params") or {})
        except RuntimeError as exc:
            self.write_status()
            return {"jsonrpc": "2.0", "id": request_id, "error": {"code": -32603, "message": str(exc)}}
        except LookupError as exc:
            return {"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": str(exc)}}
        return {"jsonrpc": "2.0", "id": request_id, "result": result}

    def dispatch(self, server, scope, method, params):
        if method == "ping":
            return {}
        if server in SCOPED and method in EMPTY_LISTS:
            return {EMPTY_LISTS[method]: []}  # the memory servers offer tools only through the relay
        # Connecting and listing need no state of the caller's scope: the shared instance answers, and a
        # per-scope one (for a server that is not a memory server) is started at the scope's first call.
        backend = self.backend(server, scope if method == "tools/call" else Scope("none"))
        if method == "initialize":
            result = dict(backend.initialize_result)
            result["protocolVersion"] = params.get("protocolVersion") or result.get("protocolVersion")
            return result
        if method == "tools/list":
            result = backend.call("tools/list", params)
            if server in SCOPED:
                allowed = SCOPED[server]["tools"]
                result = dict(result, tools=[t for t in result.get("tools", []) if t.get("name") in allowed])
            return result
        if method == "tools/call":
            if server not in SCOPED:
                return backend.call("tools/call", params)
            try:
                return self.scoped_call(server, scope, backend, params)
            except ScopeError as exc:
                return {"content": [{"type": "text", "text": f"Refused by the hal9000 relay: {exc}."}], "isError": True}
        if server in SCOPED:
            raise LookupError(f"{method} is not offered for {server} through the hal9000 relay")
        return backend.call(method, params)

    def scoped_call(self, server, scope, backend, params):
        rules = SCOPED[server]
        tool = params.get("name")
        if tool not in rules["tools"]:
            raise ScopeError(f"tool {tool!r} is not offered")
        if scope.kind == "none":
            raise ScopeError(f"memory is not available to this worker: {scope.describe()}")
        arguments = dict(params.get("arguments") or {})
        for key in rules["keys"]:
            if key in arguments:
                arguments[key] = scope.map_name(arguments[key])
        listing = tool == rules["list_tool"]
        # A listing is filtered here, so paging must be too: the server lists everything.
        window = (arguments.pop("offset", None), arguments.pop("limit", None)) if listing else (None, None)
        result = backend.call("tools/call", dict(params, arguments=arguments))
        if listing and not result.get("isError"):
            return listing_result(result, scope, *window)
        return unmap_result(result, scope, False)


def unmap_value(value, scope, listing):
    """Names in a result as the worker sees them; other scopes' names dropped from lists."""
    if isinstance(value, str):
        if listing:
            return scope.visible(value)
        return value.replace(scope.prefix, "") if scope.prefix else value
    if isinstance(value, list):
        mapped = [unmap_value(item, scope, listing) for item in value]
        return [item for item in mapped if item is not None]
    if isinstance(value, dict):
        return {key: unmap_value(item, scope, listing) for key, item in value.items()}
    return value


def unmap_text(text, scope, listing):
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, (list, dict)):
        return json.dumps(unmap_value(parsed, scope, listing))
    if listing:
        # A plain-text listing: one name per line, possibly "- name" bullets.
        kept = []
        for line in text.splitlines():
            bare = line.strip().lstrip("-* ").strip()
            if not bare:
                continue
            visible = scope.visible(bare)
            if visible is not None:
                kept.append(line.replace(bare, visible))
            elif not SAFE_NAME.match(bare):
                kept.append(line)  # a heading, not a name
        return "\n".join(kept)
    return text.replace(scope.prefix, "") if scope.prefix else text


def listing_result(result, scope, offset=None, limit=None):
    """A list of names (one per text item, one per line, or a JSON list) cut down to the caller's scope."""
    names = []
    for item in result.get("content", []):
        if item.get("type") != "text":
            continue
        try:
            parsed = json.loads(item.get("text", ""))
        except ValueError:
            parsed = None
        found = parsed if isinstance(parsed, list) else item.get("text", "").splitlines()
        names += [str(name).strip() for name in found if str(name).strip()]
    visible = [v for v in (scope.visible(name) for name in names) if v]
    start = int(offset or 0)
    visible = visible[start:start + int(limit)] if limit else visible[start:]
    content = [{"type": "text", "text": name} for name in visible]
    return dict(result, content=content or [{"type": "text", "text": "(none in this worker's memory scope)"}])


def unmap_result(result, scope, listing):
    content = []
    for item in result.get("content", []):
        if item.get("type") == "text":
            text = unmap_text(item.get("text", ""), scope, listing)
            if listing and not text and len(result.get("content", [])) > 1:
                continue  # one name per content item: an item of another scope
            item = dict(item, text=text)
        content.append(item)
    mapped = dict(result, content=content)
    if "structuredContent" in result:
        mapped["structuredContent"] = unmap_value(result["structuredContent"], scope, listing)
    return mapped


def handler_class(relay):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one connection per worker session

        def log_message(self, fmt, *args):  # quiet: one line per request would flood the log
            return

        def reply(self, status, body=None, content_type="application/json", extra=None):
            data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
            self.send_response(status)
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            if data:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def server_name(self):
            match = re.fullmatch(r"/mcp/([A-Za-z0-9._-]+)/?", self.path.split("?")[0])
            return match.group(1) if match and match.group(1) in relay.servers else None

        def do_GET(self):  # noqa: N802 (http.server's naming)
            if self.path == "/health":
                status = relay.status()
                ok = all(s["state"] == "ready" for s in status["servers"].values())
                self.reply(200 if ok else 503, status)
                return
            # No server-initiated stream: Streamable HTTP allows 405 here.
            self.reply(405, {"error": "POST only"}, extra={"Allow": "POST"})

        def do_DELETE(self):  # noqa: N802
            self.reply(405, {"error": "sessions are not kept"}, extra={"Allow": "POST"})

        def do_POST(self):  # noqa: N802
            server = self.server_name()
            if server is None:
                self.reply(404, {"error": f"no MCP server at {self.path}; see /health"})
                return
            auth = self.headers.get("Authorization", "")
            scope = relay.credentials.scope_of(auth[7:].strip()) if auth.startswith("Bearer ") else None
            if scope is None:
                self.reply(401, {"error": "a hal9000 worker credential is required (Authorization: Bearer)"},
                           extra={"WWW-Authenticate": 'Bearer realm="hal9000-relay"'})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self.reply(413, {"error": "request too large"})
                return
            try:
                payload = json.loads(self.rfile.read(length))
            except ValueError:
                self.reply(400, {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}})
                return
            messages = payload if isinstance(payload, list) else [payload]
            responses = [r for r in (relay.handle(server, scope, m) for m in messages if isinstance(m, dict)) if r]
            if not responses:
                self.reply(202)
            else:
                self.reply(200, responses if isinstance(payload, list) else responses[0])

    return Handler


def report_status(relay, every=5):
    """Keep status.json current (a server that crashed shows as failed within ``every`` seconds)."""
    while True:
        time.sleep(every)
        relay.reap_idle()
        relay.write_status()


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # many workers connect at once after a pool fills; 5 would reset them


def make_server(relay, port):
    """The HTTP server, on loopback only: the parent's namespace, which the workers share."""
    return Server(("127.0.0.1", port), handler_class(relay))


def main():
    relay = Relay(RELAY_DIR)
    httpd = make_server(relay, relay.port)

    def stop(_signum, _frame):
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(f"listening on 127.0.0.1:{relay.port}: {', '.join(relay.servers)}")
    threading.Thread(target=relay.start_all, daemon=True).start()
    threading.Thread(target=report_status, args=(relay,), daemon=True).start()
    httpd.serve_forever()
    for backend in list(relay.backends.values()):
        backend.stop()
    status = relay.status()
    for server in status["servers"].values():
        server["state"] = "stopped"
    write_json(os.path.join(relay.directory, "status.json"), status)
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
