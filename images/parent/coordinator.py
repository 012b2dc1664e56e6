"""coordinator: manage HAL-9000 workers from inside the parent (the seed's coordinator.sh).

    coordinator list [--json]        workers, newest first
    coordinator count [--json]       running workers
    coordinator status [--json]      parent, ChromaDB, workers and volumes
    coordinator stop NAME            stop one worker
    coordinator stop-all             stop every running worker
    coordinator logs NAME            the worker's log
    coordinator attach NAME          an interactive shell in the worker
    coordinator top                  CPU, memory and processes of the running workers
    coordinator spawn [-d] [-n NAME] [-i IMAGE] [--memory 4g --cpus 2 --pids-limit 100 | --no-limits] [--rm | --no-rm]
                      [PROJECT_DIR]     Claude Code in a new worker on a terminal (without -d), else in the background
    coordinator claim NAME [--project DIR | --pool POOL] [--json]   a warm worker, or a cold spawn
    coordinator pool start|stop|status [--json]|reload|scale N|warm|cleanup [--pool POOL]
    coordinator homes prepare|adopt|purge|sizes ...   Claude homes, as root (the modules ask when they may not)
    coordinator egress register|forget|show ...       a worker's own egress_allow (egress_rules.py; docs/egress.md)

Workers are found by their labels, never by name: io.hal9000.role=worker and
io.hal9000.parent=$HAL9000_PARENT_NAME (this parent's workers only).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import subprocess
import sys
import time

from ansible_collections.hal9000.dind.plugins.module_utils.claude_homes import OPERATIONS as HOME_OPERATIONS
from ansible_collections.hal9000.dind.plugins.module_utils.constants import (
    HOME_IN_PARENT,
    PARENT_NAME as DEFAULT_PARENT_NAME,
    POOL_PID_FILE,
    POOL_SCALE_FILE,
)
from ansible_collections.hal9000.dind.plugins.module_utils.docker_api import DockerException, api_error_message, connect
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.fleet import get_worker, list_workers, workers_to_stop
from ansible_collections.hal9000.dind.plugins.module_utils.pool import (
    GENERIC_POOL,
    claim,
    load_pools,
    pool_spec,
    read_pools,
    remove_warm,
    save_pools,
    spawn_warm,
    warm_workers,
)
from ansible_collections.hal9000.dind.plugins.module_utils.settings import resolve_in_parent
from ansible_collections.hal9000.dind.plugins.module_utils.status import format_status, installation_status
from ansible_collections.hal9000.dind.plugins.module_utils.validate import validate_name
from ansible_collections.hal9000.dind.plugins.module_utils.workers import (
    WORKER_OPTIONS,
    ParentView,
    add_spawn_flags,
    remove_worker,
    spawn_worker,
    worker_spec,
)

POOL_MANAGER = "/opt/hal9000/bin/pool_manager.py"

PARENT_NAME = os.environ.get("HAL9000_PARENT_NAME", DEFAULT_PARENT_NAME)
VOLUME_PREFIX = os.environ.get("HAL9000_VOLUME_PREFIX", "hal9000")


def table(workers):
    rows = [("NAME", "STATE", "STATUS", "IMAGE", "PROJECT")]
    rows += [(w["name"], w["state"], w["status"], w["image"], w["project"] or "-") for w in workers]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def command_list(client, args):
    workers = list_workers(client, parent=PARENT_NAME)
    print(json.dumps(workers, indent=2) if args.json else (table(workers) if workers else "No workers"))


def command_count(client, args):
    running = len(list_workers(client, include_stopped=False, parent=PARENT_NAME))
    print(json.dumps({"running": running}) if args.json else running)


def command_status(client, args):
    status = installation_status(client, PARENT_NAME, VOLUME_PREFIX, HOME_IN_PARENT)
    print(json.dumps(status, indent=2) if args.json else format_status(status))


def command_stop(client, args):
    worker = get_worker(client, args.name, PARENT_NAME)
    client.api.stop(worker["Id"], timeout=10)
    print(f"Stopped {args.name}")


def command_stop_all(client, _args):
    workers = workers_to_stop(list_workers(client, include_stopped=False, parent=PARENT_NAME), PARENT_NAME)
    for worker in workers:
        client.api.stop(worker["id"], timeout=10)
        print(f"Stopped {worker['name']}")
    print(f"Stopped {len(workers)} worker(s)")


def command_logs(client, args):
    worker = get_worker(client, args.name, PARENT_NAME)
    sys.stdout.write(client.api.logs(worker["Id"], tail=args.tail).decode("utf-8", "replace"))


def command_top(client, _args):
    ids = [w["id"] for w in list_workers(client, include_stopped=False, parent=PARENT_NAME)]
    if not ids:
        print("No running workers")
        return
    # `docker stats --no-stream` samples every container in parallel; the SDK would do it one by one.
    os.execvp("docker", ["docker", "stats", "--no-stream", "--format",
                         "table {{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.PIDs}}", *ids])


def command_attach(client, args):
    worker = get_worker(client, args.name, PARENT_NAME)
    if worker["State"]["Status"] != "running":
        raise Hal9000Error(f"Worker {args.name} is {worker['State']['Status']}, not running: nothing to attach to.")
    # The docker CLI gives a real terminal (raw mode, resize); the SDK has no TTY client.
    # Without a terminal (a script piping commands in) it runs the shell on plain stdin.
    os.execvp("docker", ["docker", "exec", "-it" if sys.stdin.isatty() else "-i", args.name, "bash"])


def command_spawn(client, args):
    spawn_options = {option.name: getattr(args, option.name) for option in WORKER_OPTIONS if option.flag}
    if args.project and args.project_dir and args.project != args.project_dir:
        raise Hal9000Error(f"Two project directories ({args.project_dir} and {args.project}): give one.")
    spawn_options["project_dir"] = args.project or args.project_dir
    resolved = resolve_in_parent()  # flags beat it: worker_spec takes the explicit limits itself
    host_view = ParentView(client, PARENT_NAME)  # host paths are not visible in here: a helper looks at them on the host
    spec = worker_spec(
        name=args.name, image=args.image or resolved["worker_image"], parent=PARENT_NAME, settings=resolved,
        host_view=host_view, **spawn_options,
    )
    container_id, milliseconds = spawn_worker(client, spec, home=HOME_IN_PARENT, host_view=host_view)
    # The seed's spawn-worker.sh without -d is a Claude Code session in the worker, removed when it ends (--rm).
    # It takes a terminal (docker exec -it); without one (a script, the dashboard) the worker stays in the background.
    if not args.detach and sys.stdin.isatty() and sys.stdout.isatty():
        code = subprocess.call(["docker", "exec", "-it", spec["name"], "claude"])
        if spec["auto_remove"]:
            remove_worker(client, container_id, HOME_IN_PARENT)
        sys.exit(code)
    print(f"Worker spawned in background: {spec['name']} ({milliseconds:.0f} ms)")
    if not args.detach:
        print("No terminal for a Claude Code session here (docker exec -it gives one), so it runs in the background.")
    print(f"Attach with: docker exec -it {spec['name']} claude")


def find_pool(config, name=None, project=None):
    for pool in config["pools"]:
        if (name and pool["name"] == name) or (not name and (pool["project"] or None) == project):
            return pool
    raise Hal9000Error(f"No pool {'named ' + name if name else 'for project ' + str(project or '(none)')}: see `coordinator pool status`.")


def command_claim(client, args):
    resolved = resolve_in_parent()
    config = load_pools(HOME_IN_PARENT, resolved)
    pool = find_pool(config, args.pool, args.project)
    spec = pool_spec(pool, PARENT_NAME, resolved)
    started = time.monotonic()
    claimed_id = claim(client, spec, args.name, HOME_IN_PARENT,
                       warn=lambda message: print(f"coordinator: {message}", file=sys.stderr))  # a stuck claim lock
    if claimed_id is None:
        # A cold spawn is no warm worker: without the pool label it carries no warm-name either,
        # so the pool manager never counts, trims or hands it out.
        spec.update(name=validate_name(args.name, "worker"), pool="")
        spawn_worker(client, spec, home=HOME_IN_PARENT)
    milliseconds = round((time.monotonic() - started) * 1000, 1)
    result = {"name": args.name, "claimed": claimed_id is not None, "pool": pool["name"], "ms": milliseconds}
    print(json.dumps(result) if args.json else
          f"{args.name}: {'claimed a warm worker' if result['claimed'] else 'no warm worker fitted: cold spawn'} in {milliseconds} ms")


# One `pool start` at a time, returning once the manager it started is up: a second start finds it running.
START_LOCK = os.path.join(os.path.dirname(POOL_PID_FILE), "pool-start.lock")


def start_manager(timeout=30):
    """(pid, started): the running pool manager, or the one started now (the manager's own lock refuses a second)."""
    with open(START_LOCK, "a", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        pid = manager_pid()
        if pid is not None:
            return pid, False
        process = subprocess.Popen([sys.executable, POOL_MANAGER, "run"], start_new_session=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = manager_pid()
            if pid is not None:
                return pid, pid == process.pid
            if process.poll() not in (None, 0):
                raise Hal9000Error(f"The pool manager exited at start (code {process.returncode}): see logs/pool-manager.log.")
            time.sleep(0.05)
        raise Hal9000Error(f"The pool manager did not start within {timeout} s: see logs/pool-manager.log.")


def manager_pid():
    try:
        with open(POOL_PID_FILE, encoding="utf-8") as handle:
            pid = int(handle.read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def set_enabled(enabled):
    # As saved: what was left to hal9000.conf stays so.
    saved = read_pools(HOME_IN_PARENT) or {"pools": [{"name": GENERIC_POOL}]}
    save_pools(HOME_IN_PARENT, dict(saved, enabled=enabled))


def command_pool(client, args):
    resolved = resolve_in_parent()
    config = load_pools(HOME_IN_PARENT, resolved)
    action = args.action
    if action == "start":
        set_enabled(True)
        pid, started = start_manager()
        print(f"Pool manager started (pid {pid})" if started else f"Pool manager already running (pid {pid})")
    elif action == "reload":
        pid = manager_pid()
        if pid:
            os.kill(pid, signal.SIGHUP)
        print("Pool manager reloading its settings" if pid else "Pool manager not running")
    elif action == "stop":
        set_enabled(False)
        pid = manager_pid()
        if pid:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30  # gone before we return: a `pool start` right after never finds it
            while manager_pid() == pid and time.monotonic() < deadline:
                time.sleep(0.1)
        print("Pool manager stopped; warm and claimed workers are left as they are" if pid else "Pool manager not running")
    elif action == "status":
        warm = {p["name"]: len(warm_workers(client, PARENT_NAME, pool=p["name"])) for p in config["pools"]}
        status = {"running": manager_pid() is not None, "enabled": config["enabled"], "idle_timeout": config["idle_timeout"],
                  "pools": [dict(p, warm=warm[p["name"]]) for p in config["pools"]]}
        if args.json:
            print(json.dumps(status, indent=2))
        else:
            print("Worker Pool Status")
            print(f"Pool manager: {'Running' if status['running'] else 'Not running'} ({'enabled' if config['enabled'] else 'disabled'})")
            print(f"Idle timeout: {config['idle_timeout']} s")
            for pool in status["pools"]:
                print(f"  {pool['name']}: warm {pool['warm']} (min {pool['min']}, max {pool['max']}) {pool['project'] or '(no project)'}")
    elif action == "scale":
        pool = find_pool(config, args.pool)
        target = parse_count(args.count)
        if target > pool["max"]:
            print(f"Target {target} exceeds max ({pool['max']}), capping")
            target = pool["max"]
        with open(POOL_SCALE_FILE + ".tmp", "w", encoding="utf-8") as handle:
            json.dump({pool["name"]: target}, handle)
        os.replace(POOL_SCALE_FILE + ".tmp", POOL_SCALE_FILE)  # the manager never reads half a file
        pid = manager_pid()
        if pid:
            os.kill(pid, signal.SIGHUP)  # act now, not at the next periodic check
        print(f"Pool {pool['name']}: scaling to {target} warm workers")
    elif action == "warm":
        pool = find_pool(config, args.pool)
        if len(warm_workers(client, PARENT_NAME, pool=pool["name"])) >= pool["max"]:
            raise Hal9000Error(f"Pool {pool['name']} already has its maximum of {pool['max']} warm workers.")
        spec = spawn_warm(client, pool, PARENT_NAME, resolved, home=HOME_IN_PARENT)  # as the manager makes them
        print(f"Warm worker {spec['name']} ready in pool {pool['name']}")
    elif action == "cleanup":
        removed = 0
        for pool in config["pools"]:
            for worker in warm_workers(client, PARENT_NAME, pool=pool["name"]):
                removed += remove_warm(client, HOME_IN_PARENT, worker, resolved["claim_timeout"])
        print(f"Cleanup: removed {removed} warm worker(s); claimed workers untouched")


def command_homes(_client, args):
    """What claude_homes.run_privileged asks of the parent; the answer is JSON on stdout."""
    values = list(args.values)
    if args.operation in ("prepare", "adopt"):  # ..., uid, gid
        values[-2:] = [int(value) for value in values[-2:]]
    print(json.dumps(HOME_OPERATIONS[args.operation](HOME_IN_PARENT, *values)))


def parse_count(text):
    if not str(text).isdigit():
        raise Hal9000Error(f"Invalid scale target {text!r}: use a whole number, 0 or more.")
    return int(text)


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
    spawn = sub.add_parser("spawn", help="start a worker: Claude Code in it on a terminal, else in the background "
                           "(the seed's spawn-worker.sh; dashboard prefix+w)")
    spawn.set_defaults(handler=command_spawn)
    spawn.add_argument("-n", "--name")
    spawn.add_argument("-d", "--detach", action="store_true", help="in the background even on a terminal")
    spawn.add_argument("-i", "--image")
    add_spawn_flags(spawn)
    spawn.add_argument("--rm", dest="auto_remove", action="store_true", default=True,
                       help="remove it when it stops (the default; the seed's flag)")
    spawn.add_argument("project", nargs="?", metavar="PROJECT_DIR", help="the project directory on the Docker host "
                       "(the same as --project)")
    claim_parser = sub.add_parser("claim", help="take a warm worker and name it (cold spawn when none fits)")
    claim_parser.set_defaults(handler=command_claim)
    claim_parser.add_argument("name")
    claim_parser.add_argument("--project")
    claim_parser.add_argument("--pool")
    claim_parser.add_argument("--json", action="store_true")
    pool = sub.add_parser("pool", help="the warm pool: start, stop, status, scale N, warm, cleanup")
    pool.set_defaults(handler=command_pool)
    pool.add_argument("action", choices=["start", "stop", "status", "reload", "scale", "warm", "cleanup"])
    pool.add_argument("count", nargs="?", default="0")
    pool.add_argument("--pool", default="generic")
    pool.add_argument("--json", action="store_true")
    homes = sub.add_parser("homes", help="Claude homes in ~/.hal9000/workers, as root (used by the modules)")
    homes.set_defaults(handler=command_homes)
    homes.add_argument("operation", choices=sorted(HOME_OPERATIONS))
    homes.add_argument("values", nargs="*")
    egress = sub.add_parser("egress", help="a worker's own egress policy (the image's coordinator runs egress_rules.py at once)")
    egress.set_defaults(handler=None)
    egress.add_argument("rest", nargs=argparse.REMAINDER)
    for name, handler in (("stop", command_stop), ("logs", command_logs), ("attach", command_attach)):
        command = sub.add_parser(name)
        command.add_argument("name")
        command.set_defaults(handler=handler)
        if name == "logs":
            command.add_argument("--tail", default="all")
    return main


def main(argv=None):
    args = parser().parse_args(argv)
    if args.command == "egress":
        import egress_rules  # pylint: disable=import-outside-toplevel  # same directory; needs no Docker client
        return egress_rules.main(args.rest)
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
