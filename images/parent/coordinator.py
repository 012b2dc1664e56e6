"""coordinator: manage HAL-9000 workers from inside the parent (the seed's coordinator.sh).

    coordinator list [--json]        workers, newest first
    coordinator count [--json]       running workers
    coordinator status [--json]      parent, ChromaDB, workers and volumes
    coordinator stop NAME            stop one worker
    coordinator stop-all             stop every running worker
    coordinator logs NAME            the worker's log
    coordinator attach NAME          an interactive shell in the worker
    coordinator top                  CPU, memory and processes of the running workers

Workers are found by their io.hal9000.role=worker label, never by name.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ansible_collections.hal9000.dind.plugins.module_utils.docker_api import DockerException, api_error_message, connect
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.fleet import get_worker, list_workers
from ansible_collections.hal9000.dind.plugins.module_utils.status import format_status, installation_status

PARENT_NAME = os.environ.get("HAL9000_PARENT_NAME", "hal9000-parent")
VOLUME_PREFIX = os.environ.get("HAL9000_VOLUME_PREFIX", "hal9000")


def table(workers):
    rows = [("NAME", "STATE", "STATUS", "IMAGE", "PROJECT")]
    rows += [(w["name"], w["state"], w["status"], w["image"], w["project"] or "-") for w in workers]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def command_list(client, args):
    workers = list_workers(client)
    print(json.dumps(workers, indent=2) if args.json else (table(workers) if workers else "No workers"))


def command_count(client, args):
    running = len(list_workers(client, include_stopped=False))
    print(json.dumps({"running": running}) if args.json else running)


def command_status(client, args):
    status = installation_status(client, PARENT_NAME, VOLUME_PREFIX)
    print(json.dumps(status, indent=2) if args.json else format_status(status))


def command_stop(client, args):
    worker = get_worker(client, args.name)
    client.api.stop(worker["Id"], timeout=10)
    print(f"Stopped {args.name}")


def command_stop_all(client, _args):
    workers = list_workers(client, include_stopped=False)
    for worker in workers:
        client.api.stop(worker["id"], timeout=10)
        print(f"Stopped {worker['name']}")
    print(f"Stopped {len(workers)} worker(s)")


def command_logs(client, args):
    worker = get_worker(client, args.name)
    sys.stdout.write(client.api.logs(worker["Id"], tail=args.tail).decode("utf-8", "replace"))


def command_top(client, _args):
    ids = [w["id"] for w in list_workers(client, include_stopped=False)]
    if not ids:
        print("No running workers")
        return
    # `docker stats --no-stream` samples every container in parallel; the SDK would do it one by one.
    os.execvp("docker", ["docker", "stats", "--no-stream", "--format",
                         "table {{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.PIDs}}", *ids])


def command_attach(client, args):
    worker = get_worker(client, args.name)
    if worker["State"]["Status"] != "running":
        raise Hal9000Error(f"Worker {args.name} is {worker['State']['Status']}, not running: nothing to attach to.")
    # The docker CLI gives a real terminal (raw mode, resize); the SDK has no TTY client.
    os.execvp("docker", ["docker", "exec", "-it", args.name, "bash"])


def parser():
    main = argparse.ArgumentParser(prog="coordinator", description="Manage HAL-9000 workers.")
    sub = main.add_subparsers(dest="command", required=True)
    for name, handler, with_json in (
        ("list", command_list, True), ("count", command_count, True), ("status", command_status, True),
        ("stop-all", command_stop_all, False), ("top", command_top, False),
    ):
        command = sub.add_parser(name)
        command.set_defaults(handler=handler)
        if with_json:
            command.add_argument("--json", action="store_true", help="machine-readable output")
    for name, handler in (("stop", command_stop), ("logs", command_logs), ("attach", command_attach)):
        command = sub.add_parser(name)
        command.add_argument("name")
        command.set_defaults(handler=handler)
        if name == "logs":
            command.add_argument("--tail", default="all")
    return main


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        client = connect("unix:///var/run/docker.sock", timeout=30)
        args.handler(client, args)
    except Hal9000Error as exc:
        print(f"coordinator: {exc}", file=sys.stderr)
        return 1
    except DockerException as exc:
        print(f"coordinator: {api_error_message(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
