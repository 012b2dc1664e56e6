# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""claudy: the seed's commands on the Docker host, on the library the modules use.

``claudy daemon start``, ``claudy --via-parent [--detach] [--name NAME] [PROJECT_DIR]``, ``claudy ps`` and
friends call the same functions as the parent, worker and info modules (put_parent, put_worker,
installation_status), so a worker made here is the one the worker module would make.
The install role puts a launcher at /usr/local/bin/claudy that imports ``main`` from here.

Exit codes: 0 done; 1 refused or failed (one line on stderr); 2 bad input (usage, names, sizes, paths);
3 no Docker Engine answers or no parent runs; 5 no such worker. An interactive session exits with
Claude Code's own exit code. ``claudy daemon status`` prints the status, then exits 0 when the parent runs
and is ready, 1 when it runs but is not (ChromaDB not answering yet, or its health check failing), 3 when
no parent runs.
A launch (``claudy --via-parent``) and ``claudy ps`` talk to the engine with ``engine.EngineClient``, which
imports no docker SDK: a warm claim is done without it, and only a cold spawn imports it (the SDK's import
alone costs 0.24 s, nearly the whole of a warm claim's budget). The other commands use the SDK.
Pure: standard library and the docker SDK only, never ``ansible.*``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import sys
import time

from ansible_collections.hal9000.dind.plugins.module_utils.constants import (
    DEFAULT_HOME,
    FLAVOUR_IMAGES,
    PARENT_IMAGE,
    PARENT_NAME,
)
from ansible_collections.hal9000.dind.plugins.module_utils.engine import ERRORS, api_error_message, connect_light, inspect_container
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error

EXIT_ERROR, EXIT_USAGE, EXIT_NO_ENGINE, EXIT_NOT_FOUND = 1, 2, 3, 5
COMMANDS = ("daemon", "ps", "attach", "logs", "stop", "pool", "version")
VERSION = "0.0.0"  # the install role writes the collection's version into the launcher's environment


class ClaudyError(Hal9000Error):
    """A one-line refusal with its exit code."""

    def __init__(self, message, code=EXIT_ERROR):
        super().__init__(message)
        self.code = code


def common_options():
    """The options every command takes; the environment gives their defaults (tests point them at their own parent)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--parent", default=os.environ.get("HAL9000_PARENT", PARENT_NAME),
                        help="the parent container's name (default: $HAL9000_PARENT, else hal9000-parent)")
    common.add_argument("--home", default=os.environ.get("HAL9000_HOME"),
                        help="the installation's home on this host (default: $HAL9000_HOME, else the one the "
                             "running parent mounts, else ~/.hal9000)")
    common.add_argument("--volume-prefix", default=os.environ.get("HAL9000_VOLUME_PREFIX"),
                        help="prefix of the shared volumes (default: $HAL9000_VOLUME_PREFIX, else the running parent's, "
                             "else hal9000)")
    return common


def launch_parser(common):
    from ansible_collections.hal9000.dind.plugins.module_utils.workers import add_spawn_flags

    parser = argparse.ArgumentParser(
        prog="claudy", parents=[common],
        description="Claude Code in a fresh worker of the HAL-9000 parent (a warm one when the pool has one).",
        epilog="Commands: " + ", ".join(COMMANDS) + " (claudy COMMAND --help). Exit codes: 0 done, 1 refused or failed, "
               "2 bad input, 3 no engine or no parent, 5 no such worker; an interactive session exits with Claude Code's code.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--via-parent", action="store_true", help="run in a worker of the parent (the default)")
    mode.add_argument("--legacy", action="store_true",
                      help="deprecated: the v0.5.x single-container mode (no parent, no shared memory)")
    parser.add_argument("-d", "--detach", action="store_true", help="start the worker in the background and return")
    parser.add_argument("-n", "--name", help="the worker's name (default: generated; a named worker keeps its Claude home)")
    image = parser.add_mutually_exclusive_group()
    image.add_argument("--flavour", choices=list(FLAVOUR_IMAGES), help="worker image flavour (default: WORKER_IMAGE)")
    image.add_argument("-i", "--image", help="the worker image (the seed's spawn-worker.sh -i)")
    parser.add_argument("--json", action="store_true", help="with --detach: print the worker as JSON")
    add_spawn_flags(parser)
    parser.add_argument("--rm", dest="auto_remove", action="store_true", default=True,
                        help="remove the worker when it stops (the default; the seed's flag)")
    parser.add_argument("project", nargs="?", metavar="PROJECT_DIR", help="the project directory (default: the current one)")
    return parser


def command_parser(common):
    parser = argparse.ArgumentParser(prog="claudy", description="HAL-9000 workers on this Docker host.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    daemon = sub.add_parser(
        "daemon", parents=[common], help="start, stop or check the parent (orchestrator)",
        description="Start, restart, stop or check the parent. An existing parent keeps the options it was made with "
                    "(site.yml's, its home) unless given here.",
        epilog="status exits 0 when the parent runs and is ready, 1 when it runs but is not ready, 3 when no parent runs.")
    daemon.add_argument("action", choices=["start", "status", "restart", "stop"])
    daemon.add_argument("--force", action="store_true", help="stop or restart even while workers use the parent's network")
    daemon.add_argument("--image", help=f"the parent image (default: the one the parent was made with, else {PARENT_IMAGE})")
    daemon.add_argument("--wait-timeout", type=int, default=60, help="seconds to wait for ChromaDB (default 60)")
    daemon.add_argument("--json", action="store_true", help="the status as JSON")

    ps = sub.add_parser("ps", parents=[common], help="list the parent's workers")
    ps.add_argument("-a", "--all", action="store_true", help="stopped workers too")
    ps.add_argument("-q", "--quiet", action="store_true", help="names only")
    ps.add_argument("--json", action="store_true", help="a JSON list")

    attach = sub.add_parser("attach", parents=[common], help="run Claude Code (or --shell) in a running worker")
    attach.add_argument("name")
    attach.add_argument("--shell", action="store_true", help="a bash shell instead of Claude Code")

    logs = sub.add_parser("logs", parents=[common], help="a worker's output")
    logs.add_argument("name")
    logs.add_argument("-f", "--follow", action="store_true", help="keep following it")
    logs.add_argument("--tail", default="all", help="only the last N lines")

    stop = sub.add_parser("stop", parents=[common], help="stop a worker, or --all of them (warm workers are the pool's)")
    which = stop.add_mutually_exclusive_group(required=True)
    which.add_argument("name", nargs="?")
    which.add_argument("--all", action="store_true", help="every claimed or spawned worker of the parent")
    stop.add_argument("--json", action="store_true", help="the stopped workers as a JSON list")

    pool = sub.add_parser("pool", parents=[common],
                          help="the warm pool: status, scale N, on (start the manager), off (stop it, remove the warm workers)")
    pool.add_argument("action", choices=["status", "scale", "on", "off"])
    pool.add_argument("count", nargs="?", help="with scale: the number of warm workers wanted")
    pool.add_argument("--pool", help="which pool to scale (default: the generic one)")
    pool.add_argument("--json", action="store_true", help="the status as JSON")

    version = sub.add_parser("version", parents=[common], help="versions of claudy, the SDK, the engine and the images")
    version.add_argument("--json", action="store_true", help="as JSON")
    return parser


def connect_engine(light=False):
    """The docker SDK's client; ``light``: the SDK-free ``engine.EngineClient`` when the engine is a local socket."""
    try:
        client = connect_light() if light else None
        if client is None:
            from ansible_collections.hal9000.dind.plugins.module_utils.docker_api import connect

            client = connect()
        return client
    except Hal9000Error as exc:
        raise ClaudyError(f"{exc} Start it (scripts/quickstart.sh --engine-only, or your service manager).",
                          EXIT_NO_ENGINE) from None


def running_parent(client, args):
    parent = inspect_container(client, args.parent)
    if parent is None or not parent["State"]["Running"]:
        raise ClaudyError(f"No parent {args.parent} is running: start it with `claudy daemon start`.", EXIT_NO_ENGINE)
    return parent


def home_of(args, parent=None):
    """--home, else the parent's mounted home, else ~/.hal9000."""
    from ansible_collections.hal9000.dind.plugins.module_utils.parent import mounted_home

    return args.home or (parent and mounted_home(parent)) or os.path.expanduser(DEFAULT_HOME)


def say(text, stream=None):
    """One line (or several) to the terminal: claudy is a command, its output is its interface."""
    stream = stream or sys.stdout
    stream.write(f"{text}\n")
    stream.flush()


def defaults(argument_spec):
    """A module's parameters as Ansible would fill them when no option is given."""
    return {key: spec.get("default") for key, spec in argument_spec.items()}


def emit(args, data, text):
    say(json.dumps(data, indent=2) if getattr(args, "json", False) else text)


# -- daemon -------------------------------------------------------------------------------------------------

def command_daemon(client, args):
    from ansible_collections.hal9000.dind.plugins.module_utils.daemon import module_argument_spec, put_parent
    from ansible_collections.hal9000.dind.plugins.module_utils.parent import made_with
    from ansible_collections.hal9000.dind.plugins.module_utils.status import format_status, installation_status

    # An existing parent is started, restarted or stopped as it was made (site.yml's options, its home): only
    # what is given here changes it. The settings never given: hal9000.conf and the environment decide.
    spec = module_argument_spec()
    made = {key: value for key, value in made_with(inspect_container(client, args.parent)).items() if key in spec}
    home = os.path.abspath(args.home or made.get("hal9000_home") or os.path.expanduser(DEFAULT_HOME))
    volume_prefix = args.volume_prefix or made.get("volume_prefix") or spec["volume_prefix"]["default"]
    if args.action == "status":
        status = installation_status(client, args.parent, volume_prefix, home)
        emit(args, status, format_status(status))
        parent = status["parent"]
        if parent["state"] != "running":
            return EXIT_NO_ENGINE
        return 0 if parent["chromadb_ready"] and parent["health"] != "unhealthy" else EXIT_ERROR
    params = defaults(spec)
    params.update(made)
    params.update(name=args.parent, image=args.image or made.get("image") or PARENT_IMAGE, hal9000_home=home,
                  volume_prefix=volume_prefix, force=args.force,
                  state={"start": "started", "restart": "restarted", "stop": "stopped"}[args.action],
                  wait_timeout=args.wait_timeout, docker_host=None)
    result = put_parent(client, params, warn=warn)
    emit(args, result, "\n".join(result["status_lines"]))
    return 0


# -- workers --------------------------------------------------------------------------------------------------

def worker_params(args, mode):
    """The worker module's options for this launch: its defaults, then the flags given."""
    from ansible_collections.hal9000.dind.plugins.module_utils.worker_state import module_argument_spec
    from ansible_collections.hal9000.dind.plugins.module_utils.workers import WORKER_OPTIONS

    params = defaults(module_argument_spec())
    params.update({option.name: getattr(args, option.name) for option in WORKER_OPTIONS if option.flag})
    project = args.project or args.project_dir or os.getcwd()  # checked by fix_name, as for the worker module
    params.update(
        name=args.name, flavour=args.flavour, image=args.image, mode=mode, parent=args.parent, from_pool=mode == "dind",
        project_dir=os.path.abspath(project), hal9000_home=args.home, state="started",
        claude_config_dir=os.path.expanduser(params["claude_config_dir"]),
        # The interactive session's end removes the worker; a detached one goes when it stops, unless --no-rm.
        auto_remove=args.auto_remove,
    )
    return params


def warn(message):
    say(f"claudy: warning: {message}", sys.stderr)


def command_launch(args):
    from ansible_collections.hal9000.dind.plugins.module_utils.worker_state import NO_WARM_FIT, fix_name, put_worker

    mode = "legacy" if args.legacy else "dind"
    if args.legacy:
        warn("--legacy (the v0.5.x single-container mode) is deprecated and will be removed in v1.0: "
             "use claudy --via-parent.")
    params = worker_params(args, mode)
    try:
        fix_name(params)  # names, sizes and paths checked before the engine is asked anything
    except Hal9000Error as exc:
        raise ClaudyError(str(exc), EXIT_USAGE) from None
    interactive = not args.detach
    if interactive and not shutil.which("docker"):
        raise ClaudyError("An interactive session needs the docker CLI on this host: install it, or use --detach.")
    client = connect_engine(light=True)  # a warm claim without the SDK; a cold spawn imports it (engine.EngineClient)
    parent = running_parent(client, args) if mode == "dind" else None
    began = time.monotonic()
    # "No warm worker fits" is what the output says anyway ("spawned"); a stuck claim lock is worth a warning.
    result = put_worker(client, params, warn=lambda message: None if message.startswith(NO_WARM_FIT) else warn(message))
    worker = dict(result["worker"], claimed=result["claimed"], ms=round((time.monotonic() - began) * 1000, 1))
    if args.detach:
        how = "claimed a warm worker" if worker["claimed"] else "spawned"
        emit(args, worker, f"Worker {worker['name']} {how} in {worker['ms']:.0f} ms\n"
                           f"Attach with: claudy attach {worker['name']}")
        return 0
    code = run_in_terminal(worker["name"], ["claude"])
    if args.auto_remove:
        remove(client, worker["name"], home_of(args, parent))
    return code


def remove(client, name, home):
    from ansible_collections.hal9000.dind.plugins.module_utils.workers import remove_worker

    inspected = inspect_container(client, name)
    if inspected is not None:
        remove_worker(client, inspected["Id"], home, inspected=inspected)


def run_in_terminal(name, argv):
    """``argv`` in the worker with this terminal; its exit code.

    The docker CLI does the terminal work (raw mode, window size and its changes, detach keys);
    the SDK has no TTY client. Keys like Ctrl-C reach the session as input; a SIGTERM or SIGHUP sent to
    claudy is passed on to the CLI, which passes it into the session.
    """
    import subprocess  # pylint: disable=import-outside-toplevel  # here: a detached claim runs no program

    tty = sys.stdin.isatty() and sys.stdout.isatty()
    process = subprocess.Popen(["docker", "exec", "-it" if tty else "-i", name, *argv])  # pylint: disable=consider-using-with

    def forward(signum, _frame):
        process.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT)}
    try:
        return process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def worker_row(worker, now):
    limits = worker.get("limits") or {}
    started = datetime.datetime.fromtimestamp(worker["created"], datetime.timezone.utc)
    return dict(
        name=worker["name"], id=worker["id"], pool=worker["pool"], warm=worker["warm"], project=worker["project"],
        state="warm" if worker["warm"] and worker["state"] == "running" else worker["state"], status=worker["status"],
        image=worker["image"], started=started.isoformat(), age_s=int(now - worker["created"]),
        memory=limits.get("memory"), cpus=limits.get("cpus"), pids_limit=limits.get("pids_limit"),
    )


def human_bytes(value):
    if not value:
        return "-"
    for unit, size in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
        if value % size == 0:
            return f"{value // size}{unit}"
    return str(value)


def human_age(seconds):
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def table(rows):
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def list_rows(client, args, include_stopped):
    from ansible_collections.hal9000.dind.plugins.module_utils.fleet import list_workers

    now = time.time()
    return [worker_row(worker, now) for worker in list_workers(client, include_stopped, args.parent, with_limits=True)]


def command_ps(client, args):
    rows = list_rows(client, args, args.all)
    if args.quiet:
        say("\n".join(row["name"] for row in rows))
    elif args.json:
        say(json.dumps(rows, indent=2))
    elif not rows:
        say("No workers")
    else:
        say(table([("NAME", "POOL", "PROJECT", "STATE", "AGE", "MEMORY", "CPUS", "PIDS")] + [
            (r["name"], r["pool"] or "-", r["project"] or "-", r["state"], human_age(r["age_s"]),
             human_bytes(r["memory"]), r["cpus"] or "-", r["pids_limit"] or "-") for r in rows]))
    return 0


def existing_worker(client, args):
    from ansible_collections.hal9000.dind.plugins.module_utils.fleet import get_worker

    try:
        return get_worker(client, args.name, args.parent)
    except Hal9000Error as exc:
        code = EXIT_NOT_FOUND if str(exc).startswith("No worker") else EXIT_USAGE
        raise ClaudyError(str(exc).replace("`coordinator list`", "`claudy ps`"), code) from None


def command_attach(client, args):
    worker = existing_worker(client, args)
    if worker["State"]["Status"] != "running":
        raise ClaudyError(f"Worker {args.name} is {worker['State']['Status']}, not running: start another with claudy --via-parent.")
    return run_in_terminal(args.name, ["bash"] if args.shell else ["claude"])


def command_logs(client, args):
    worker = existing_worker(client, args)
    tail = args.tail if args.tail == "all" else int(args.tail) if args.tail.isdigit() else None
    if tail is None:
        raise ClaudyError(f"--tail {args.tail}: give a number of lines, or all.", EXIT_USAGE)
    if not args.follow:
        sys.stdout.buffer.write(client.api.logs(worker["Id"], tail=tail))
        return 0
    try:
        for chunk in client.api.logs(worker["Id"], stream=True, follow=True, tail=tail):
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
    except KeyboardInterrupt:
        return 130
    return 0


def command_stop(client, args):
    if args.all:
        from ansible_collections.hal9000.dind.plugins.module_utils.fleet import list_workers, workers_to_stop

        names = [w["name"] for w in workers_to_stop(list_workers(client, False, args.parent), args.parent)]
    else:
        names = [existing_worker(client, args)["Name"].lstrip("/")]
    for name in names:
        client.api.stop(name, timeout=10)
    lines = [f"Stopped {name}" for name in names]
    if args.all:
        lines.append(f"Stopped {len(names)} worker(s)")
    emit(args, names, "\n".join(lines))
    return 0


def command_pool(client, args):
    from ansible_collections.hal9000.dind.plugins.module_utils.parent import run_coordinator

    parent = running_parent(client, args)
    if args.action == "scale":
        if args.count is None or not args.count.isdigit():
            raise ClaudyError(f"claudy pool scale N: N must be a whole number, 0 or more (got {args.count}).", EXIT_USAGE)
        extra = ["--pool", args.pool] if args.pool else []
        say(run_coordinator(client, parent["Id"], "pool", "scale", *extra, args.count).strip())
    elif args.action == "status":
        say(run_coordinator(client, parent["Id"], "pool", "status", *(["--json"] if args.json else [])).rstrip())
    elif args.action == "on":
        say(run_coordinator(client, parent["Id"], "pool", "start").strip())
    else:  # off: no manager, and no idle warm workers holding memory; claimed ones are left alone
        say(run_coordinator(client, parent["Id"], "pool", "stop").strip())
        say(run_coordinator(client, parent["Id"], "pool", "cleanup").strip())
    return 0


def command_version(client, args):
    import docker  # pylint: disable=import-outside-toplevel

    from ansible_collections.hal9000.dind.plugins.module_utils.images import inspect_image

    info = {"claudy": os.environ.get("CLAUDY_VERSION", VERSION), "python": sys.version.split()[0],
            "docker_sdk": docker.__version__, "engine": client.version().get("Version"), "images": {}}
    for reference in (PARENT_IMAGE, *FLAVOUR_IMAGES.values()):
        image = inspect_image(client, reference)
        info["images"][reference] = image["Id"][7:19] if image else None
    emit(args, info, "\n".join([f"claudy {info['claudy']} (hal9000.dind)", f"Python {info['python']}, docker SDK "
                                f"{info['docker_sdk']}, Docker Engine {info['engine']}"]
                               + [f"{ref}: {short or 'not built'}" for ref, short in info["images"].items()]))
    return 0


HANDLERS = {"daemon": command_daemon, "ps": command_ps, "attach": command_attach, "logs": command_logs,
            "stop": command_stop, "pool": command_pool, "version": command_version}


def run(argv):
    common = common_options()
    if argv and argv[0] in COMMANDS:
        args = command_parser(common).parse_args(argv)
        # ps makes only calls engine.EngineClient makes itself (a list, inspections): no SDK import for it either.
        return HANDLERS[args.command](connect_engine(light=args.command == "ps"), args)
    return command_launch(launch_parser(common).parse_args(argv))


def main(argv=None):
    """claudy's entry point: the exit code (argparse exits 2 itself on bad usage)."""
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except ClaudyError as exc:
        say(f"claudy: {exc}", sys.stderr)
        return exc.code
    except Hal9000Error as exc:
        say(f"claudy: {exc}", sys.stderr)
        return EXIT_ERROR
    except ERRORS.failures as exc:  # the engine's errors, of the SDK or of engine.EngineClient
        say(f"claudy: {api_error_message(exc)}", sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
