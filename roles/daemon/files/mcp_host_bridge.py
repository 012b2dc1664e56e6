"""Stdio bridge for an MCP server that must run on the Docker host itself (host-only resources).

The parent's MCP relay reaches it through a unix socket under the HAL-9000 home (mode 0600, never
a TCP port on a host address): each connection gets its own server process, whose stdin and
stdout are the connection. The daemon role starts one bridge per declared host server:

    mcp_host_bridge.py ensure --home HOME --name NAME [--env-files JSON] -- COMMAND [ARG ...]
    mcp_host_bridge.py stop --home HOME --name NAME
    mcp_host_bridge.py stop --pid-file PATH

``ensure`` prints "running" (the same bridge runs), "started" or "restarted" (its command changed).
Hand-written rather than socat: socat is not on a minimal host and has no per-connection
environment read from files. Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time


def read_pid_file(path):
    """(pid, digest) of a running bridge, or (None, None)."""
    try:
        with open(path, encoding="utf-8") as handle:
            pid_text, digest = handle.read().split()
        pid = int(pid_text)
        os.kill(pid, 0)
        return pid, digest
    except (OSError, ValueError):
        return None, None


def stop(pid_file):
    pid, _digest = read_pid_file(pid_file)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    for _attempt in range(100):
        if read_pid_file(pid_file)[0] is None:
            break
        time.sleep(0.05)
    return True


def pump(source, sink):
    try:
        while True:
            data = source.read1(65536) if hasattr(source, "read1") else source.read(65536)
            if not data:
                break
            sink.write(data)
            sink.flush()
    except (OSError, ValueError):
        pass


def serve_connection(connection, command, env, log):
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env)
    reader, writer = connection.makefile("rb"), connection.makefile("wb")
    inbound = threading.Thread(target=pump, args=(reader, process.stdin), daemon=True)
    inbound.start()
    pump(process.stdout, writer)  # until the server exits
    process.kill()
    process.wait()
    connection.close()


def serve(args, env):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if os.path.lexists(args.socket):
        os.unlink(args.socket)
    old_umask = os.umask(0o177)  # the socket is created 0600: the owner (and root) only
    try:
        listener.bind(args.socket)
    finally:
        os.umask(old_umask)
    listener.listen(64)

    def finish(_signum, _frame):
        listener.close()
        for path in (args.socket, args.pid_file):
            try:
                os.unlink(path)
            except OSError:
                pass
        os._exit(0)

    signal.signal(signal.SIGTERM, finish)
    log = open(args.log, "a", encoding="utf-8")
    while True:
        connection, _address = listener.accept()
        threading.Thread(target=serve_connection, args=(connection, args.command, env, log), daemon=True).start()


def paths(args):
    """Socket, pid file and log of the bridge ``args.name`` under the home (run/relay/host, logs)."""
    home = os.path.expanduser(args.home)
    directory = os.path.join(home, "run", "relay", "host")
    args.socket = os.path.join(directory, f"{args.name}.sock")
    args.pid_file = os.path.join(directory, f"{args.name}.pid")
    args.log = os.path.join(home, "logs", f"mcp-host-{args.name}.log")
    return home


def ensure(args):
    home = paths(args)
    env = dict(os.environ)
    env_files = json.loads(args.env_files)
    for key, relative in sorted(env_files.items()):
        with open(os.path.join(home, relative), encoding="utf-8") as handle:
            env[key] = handle.read().strip()
    digest = hashlib.sha256(json.dumps([args.command, env_files]).encode()).hexdigest()[:16]
    pid, running_digest = read_pid_file(args.pid_file)
    if pid is not None and running_digest == digest:
        print("running")
        return 0
    outcome = "restarted" if pid is not None else "started"
    if pid is not None:
        stop(args.pid_file)
    if os.fork() == 0:  # detach twice: the bridge outlives the task that started it
        os.setsid()
        if os.fork() == 0:
            devnull = os.open(os.devnull, os.O_RDWR)
            for descriptor in (0, 1, 2):
                os.dup2(devnull, descriptor)
            with open(args.pid_file, "w", encoding="utf-8") as handle:
                handle.write(f"{os.getpid()} {digest}\n")
            serve(args, env)
        os._exit(0)
    for _attempt in range(100):
        if os.path.exists(args.socket) and read_pid_file(args.pid_file)[1] == digest:
            print(outcome)
            return 0
        time.sleep(0.05)
    print(f"the bridge for {args.command[0]} did not start; see {args.log}", file=sys.stderr)
    return 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    start = sub.add_parser("ensure")
    start.add_argument("--home", required=True)
    start.add_argument("--name", required=True)
    start.add_argument("--env-files", default="{}", help="JSON: variable -> file below the home, read at start")
    start.add_argument("command", nargs="+")
    halt = sub.add_parser("stop")
    halt.add_argument("--home", required=True)
    halt.add_argument("--name", required=True)
    args = parser.parse_args()
    if args.action == "stop":
        paths(args)
        print("stopped" if stop(args.pid_file) else "not running")
        return 0
    return ensure(args)


if __name__ == "__main__":
    sys.exit(main())
