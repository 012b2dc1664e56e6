# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The MCP relay's side of every worker: which servers it runs, how workers are told, and credentials.

The relay (images/mcp/relay.py, in the hal9000/mcp sidecar in the parent's network namespace)
serves the seed's MCP servers on 127.0.0.1. Below the home, in ``run/relay``:
  client/        mounted read-only at /etc/claude-code in every worker: Claude Code's managed-mcp.json
                 (each server as an http server) and the headers helper that reads the worker's token;
  credentials/   one record per worker (its container ID): the sha256 of its token and its scope;
  servers.json   what the relay runs; status.json: what it reports.
A worker's token lives only in its own tmpfs (/run/hal9000/relay-token, mode 0600, its user's), put
there through `docker exec` with the token on stdin: never in the environment, a label or a command
line, so `docker inspect` shows none of it. Pure: standard library and the docker SDK only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import socket
import time

from ansible_collections.hal9000.dind.plugins.module_utils.engine import ERRORS
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.files import make_private_dirs, read_text, write_atomically, write_if_changed
from ansible_collections.hal9000.dind.plugins.module_utils.validate import validate_name

RELAY_DIR = os.path.join("run", "relay")
CLIENT_DIR = os.path.join(RELAY_DIR, "client")
CREDENTIALS_DIR = os.path.join(RELAY_DIR, "credentials")
SERVERS_FILE = os.path.join(RELAY_DIR, "servers.json")
STATUS_FILE = os.path.join(RELAY_DIR, "status.json")
MCP_SERVERS_FILE = os.path.join("config", "mcp_servers.json")
# The user's own servers' files (scripts, data), mounted read-only in the sidecar.
SERVERS_DIR = "mcp-servers"
SERVERS_IN_SIDECAR = "/opt/hal9000/servers"
# Below run/relay: the unix sockets of servers run on the Docker host (mcp_servers with on_host).
HOST_SOCKETS = "host"
CLIENT_MOUNT = "/etc/claude-code"
TOKEN_DIR = "/run/hal9000"
TOKEN_FILE = f"{TOKEN_DIR}/relay-token"
HEADERS_HELPER = "hal9000-relay-headers"
RELAY_IN_SIDECAR = "/run/hal9000/relay"
MEMORYBANK_IN_SIDECAR = "/memorybank"
MEMORY_SCOPES = ("project", "shared", "none")
SIDECAR_SUFFIX = "-mcp"

# Waits briefly for the token: a worker whose command starts Claude Code at once may ask before
# the token has been handed over (a few ms after start).
HEADERS_HELPER_SCRIPT = f"""#!/bin/sh
# Claude Code's headersHelper for the hal9000 MCP relay: this worker's credential, from its tmpfs.
i=0
while [ ! -s {TOKEN_FILE} ] && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
printf '{{"Authorization": "Bearer %s"}}' "$(cat {TOKEN_FILE})"
"""


def builtin_servers(chromadb_port):
    """The seed's three MCP servers, as the relay runs them (commands of the hal9000/mcp image)."""
    return [
        {"name": "memory-bank", "command": "memory-bank-mcp", "args": [],
         "env": {"MEMORY_BANK_ROOT": MEMORYBANK_IN_SIDECAR}},
        {"name": "sequential-thinking", "command": "mcp-server-sequential-thinking", "args": [], "env": {}},
        {"name": "chroma", "command": "chroma-mcp",
         "args": ["--client-type", "http", "--host", "127.0.0.1", "--port", str(chromadb_port), "--ssl", "false"],
         "env": {}},
    ]


SERVER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


def validate_servers(servers):
    """The user's extra servers (``mcp_servers``): name, command, args, env_files; one-line errors.

    ``env_files`` maps a variable to a file below the HAL-9000 home, read when the relay starts:
    values never pass through a module's arguments or the file this writes.
    """
    builtin = {server["name"] for server in builtin_servers(8000)}
    checked, seen = [], set()
    for index, server in enumerate(servers or []):
        if not isinstance(server, dict):
            raise Hal9000Error(f"mcp_servers[{index}] must be a mapping with name and command.")
        unknown = set(server) - {"name", "command", "args", "env_files", "on_host"}
        if unknown:
            raise Hal9000Error(f"mcp_servers[{index}] has unknown keys {', '.join(sorted(unknown))}: "
                               "use name, command, args, env_files, on_host.")
        name = str(server.get("name") or "")
        if not SERVER_NAME.match(name):
            raise Hal9000Error(f"mcp_servers[{index}] name {name!r} must be lower-case letters, digits and '-' (at most 40).")
        if name in builtin or name in seen:
            raise Hal9000Error(f"mcp_servers name {name!r} is already used: choose another name.")
        seen.add(name)
        if not server.get("command") or not isinstance(server["command"], str):
            raise Hal9000Error(f"mcp_servers {name}: command must be the program to run in the hal9000/mcp image.")
        args = server.get("args") or []
        if not isinstance(args, list) or not all(isinstance(arg, (str, int, float)) for arg in args):
            raise Hal9000Error(f"mcp_servers {name}: args must be a list of strings.")
        env_files = server.get("env_files") or {}
        if not isinstance(env_files, dict):
            raise Hal9000Error(f"mcp_servers {name}: env_files must map variable names to files.")
        for key, path in env_files.items():
            parts = str(path).split("/")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(key)) or os.path.isabs(str(path)) or ".." in parts or not path:
                raise Hal9000Error(f"mcp_servers {name}: env_files {key}={path!r} needs a variable name and a path relative "
                                   "to the HAL-9000 home (e.g. secrets/github_token), which the parent mounts.")
        checked.append({"name": name, "command": server["command"], "args": [str(a) for a in args],
                        "env_files": {str(k): str(v) for k, v in sorted(env_files.items())},
                        "on_host": bool(server.get("on_host"))})
    return checked


def save_extra_servers(home, servers, check_mode=False):
    """Write config/mcp_servers.json (0600) when it differs; True when it did (or would)."""
    text = json.dumps(validate_servers(servers), indent=2, sort_keys=True) + "\n"
    path = os.path.join(home, MCP_SERVERS_FILE)
    if check_mode:
        return read_text(path) != text
    make_private_dirs(os.path.dirname(path), home)
    return write_if_changed(path, text, 0o600, home)


def read_extra_servers(home):
    path = os.path.join(home, MCP_SERVERS_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            return validate_servers(json.load(handle))
    except FileNotFoundError:
        return []
    except ValueError as exc:
        raise Hal9000Error(f"{path} is not valid JSON ({exc}): fix it or remove it.") from None


def relay_servers(home, chromadb_port):
    """Every server the relay runs: the builtin ones, then the user's, their env read from files."""
    servers = builtin_servers(chromadb_port)
    for extra in read_extra_servers(home):
        if extra["on_host"]:
            # Run on the Docker host by the daemon role's bridge (its env_files read there).
            servers.append({"name": extra["name"], "socket": f"{RELAY_IN_SIDECAR}/{HOST_SOCKETS}/{extra['name']}.sock"})
            continue
        env = {}
        for key, relative in extra["env_files"].items():
            path = os.path.join(home, relative)
            try:
                with open(path, encoding="utf-8") as handle:
                    env[key] = handle.read().strip()
            except OSError as exc:
                raise Hal9000Error(f"mcp_servers {extra['name']}: cannot read {path} for {key} ({exc.strerror}).") from None
        servers.append({"name": extra["name"], "command": extra["command"], "args": extra["args"], "env": env})
    return servers


def client_config(servers, port):
    """Claude Code's managed-mcp.json: every relay server as an http server on the worker's localhost."""
    helper = f"{CLIENT_MOUNT}/{HEADERS_HELPER}"
    return {"mcpServers": {
        server["name"]: {"type": "http", "url": f"http://127.0.0.1:{port}/mcp/{server['name']}",
                         "headersHelper": f"sh {helper}"}
        for server in servers
    }}


def prepare_directories(home):
    """run/relay (0711), its client directory (0755: workers read it) and credentials (0700), the home owner's."""
    for directory, mode in ((RELAY_DIR, 0o711), (CLIENT_DIR, 0o755), (CREDENTIALS_DIR, 0o700)):
        path = make_private_dirs(os.path.join(home, directory), home)
        os.chmod(path, mode)


def prepare(home, servers, port):
    """Write run/relay for a relay start: servers.json (0600), the workers' client files (0644)."""
    prepare_directories(home)
    write_atomically(os.path.join(home, SERVERS_FILE), json.dumps({"port": port, "servers": servers}, indent=2), 0o600, home)
    write_atomically(os.path.join(home, CLIENT_DIR, "managed-mcp.json"),
                     json.dumps(client_config(servers, port), indent=2), 0o644, home)
    write_atomically(os.path.join(home, CLIENT_DIR, HEADERS_HELPER), HEADERS_HELPER_SCRIPT, 0o755, home)


def read_status(home):
    """What the relay last reported ({} when it never ran)."""
    try:
        with open(os.path.join(home, STATUS_FILE), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def project_key(project):
    """12 hex digits naming a project's memory: the same project directory, the same memory."""
    return hashlib.sha256(os.path.normpath(project).encode()).hexdigest()[:12]


def scope_text(memory_scope, project):
    """The scope a worker's credential carries. A generic worker (no project) in scope project
    has none until a claim gives it a project."""
    if memory_scope not in MEMORY_SCOPES:
        raise Hal9000Error(f"memory_scope {memory_scope!r} is unknown: use project, shared or none.")
    if memory_scope == "project":
        return f"project:{project_key(project)}" if project else "none"
    return memory_scope


def _credential_path(home, container_id):
    if not re.fullmatch(r"[0-9a-f]{64}", container_id or ""):
        raise Hal9000Error(f"{container_id!r} is not a container ID.")
    return os.path.join(home, CREDENTIALS_DIR, f"{container_id}.json")


def write_credential(home, container_id, token_sha256, scope):
    path = _credential_path(home, container_id)
    make_private_dirs(os.path.dirname(path), home)
    write_atomically(path, json.dumps({"token_sha256": token_sha256, "scope": scope, "written": time.time()}), 0o600, home)


def read_scope(home, container_id):
    """The scope a worker's credential carries, or None when it has none."""
    try:
        with open(_credential_path(home, container_id), encoding="utf-8") as handle:
            return json.load(handle)["scope"]
    except (OSError, ValueError, KeyError):
        return None


def set_scope(home, container_id, scope):
    """Give a worker's credential another scope (a claim): one small file rewritten, atomically."""
    path = _credential_path(home, container_id)
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return False
    write_credential(home, container_id, record["token_sha256"], scope)
    return True


def revoke(home, container_id):
    if not home or not re.fullmatch(r"[0-9a-f]{64}", container_id or ""):
        return  # nothing was issued under such a name
    try:
        os.unlink(_credential_path(home, container_id))
    except FileNotFoundError:
        pass


def prune_credentials(home, live_ids):
    """Remove the records of workers that no longer exist; returns how many went."""
    directory = os.path.join(home, CREDENTIALS_DIR)
    removed = 0
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        if name.endswith(".json") and name[:-5] not in live_ids:
            os.unlink(os.path.join(directory, name))
            removed += 1
    return removed


def hand_token(client, container_id, user, token):
    """Write ``token`` to the running worker's /run/hal9000/relay-token through stdin of an exec."""
    command = ["sh", "-c", f"umask 077 && cat > {TOKEN_FILE}.new && mv {TOKEN_FILE}.new {TOKEN_FILE}"]
    exec_id = client.api.exec_create(container_id, command, stdin=True, user=user)["Id"]
    sock = client.api.exec_start(exec_id, socket=True)
    raw = getattr(sock, "_sock", sock)  # the SDK hands a SocketIO wrapper over the unix socket
    try:
        raw.sendall(token.encode())
        raw.shutdown(socket.SHUT_WR)
        while raw.recv(4096):
            pass
    finally:
        sock.close()
    code = client.api.exec_inspect(exec_id)["ExitCode"]
    if code != 0:
        raise Hal9000Error(f"Could not hand the relay credential to worker {container_id[:12]} (exit code {code}).")


def issue_credential(client, home, container_id, user, scope):
    """A new credential for a started worker: its record under ``home``, its token in the worker."""
    token = secrets.token_urlsafe(32)
    write_credential(home, container_id, hashlib.sha256(token.encode()).hexdigest(), scope)
    try:
        hand_token(client, container_id, user, token)
    except Exception:
        revoke(home, container_id)
        raise


def sidecar_name(parent):
    return validate_name(f"{parent}{SIDECAR_SUFFIX}", "container")


def remove_sidecar(client, parent):
    """Remove the relay's container of ``parent`` (a parent removed with force never got to do it)."""
    try:
        client.api.remove_container(sidecar_name(parent), force=True)
    except ERRORS.NotFound:
        pass
