"""Start-up of the hal9000 parent container (runs under tini as PID 1's child).

The seed's phases, each timed and logged, the timings also kept in
/run/hal9000/startup.json for the parent module and the coordinator:
  1. critical init: directories, Docker socket check (no socket: exit at once);
  2. parallel init: ChromaDB started, tmux dashboard and worker-image check in parallel;
  3. service ready: wait for ChromaDB's /api/v2/heartbeat;
  4. background services: the pool manager when ENABLE_POOL_MANAGER is true, and the MCP relay
     (phase ``relay``, timed until it answers, in the background: ChromaDB is ready before it).
ChromaDB listens on loopback, and a netfilter rule in the parent's namespace (which every worker
shares) lets only root connect to it: the relay's servers and the parent's own tools run as root,
workers never do. ChromaDB 1.x's server has no token authentication of its own (only a no-op
provider), so the kernel, not a header, keeps workers away from every project's memory.
SIGTERM stops ChromaDB cleanly (no data lost) and the pool manager; workers
are left running and listed in the log.
A full disk never stops the parent (the restart policy would only loop): it is said once per path
("disk full: <path>, free space needed", also by the health check) and what can still run runs on.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from docker.types import Mount

from ansible_collections.hal9000.dind.plugins.module_utils.constants import (
    DOCKER_SOCKET as SOCKET,
    HOME_IN_PARENT,
    PARENT_NAME,
    POOL_PID_FILE,
    STARTUP_FILE,
)
from ansible_collections.hal9000.dind.plugins.module_utils.docker_api import connect, inspect_container
from ansible_collections.hal9000.dind.plugins.module_utils.egress import EgressError, make_policy, resolve_hosts, system_resolver
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.fleet import (
    LABEL_MANAGED,
    LABEL_PARENT,
    LABEL_ROLE,
    ROLE_RELAY,
    LABEL_WORKSPACE,
    ROLE_WORKER,
    list_workers,
)
from ansible_collections.hal9000.dind.plugins.module_utils.claude_homes import write_managed_settings
from ansible_collections.hal9000.dind.plugins.module_utils.files import give_to_home_owner, make_private_dirs
from ansible_collections.hal9000.dind.plugins.module_utils.home import LAYOUT as HOME_LAYOUT
from ansible_collections.hal9000.dind.plugins.module_utils.parent import mounted_home
from ansible_collections.hal9000.dind.plugins.module_utils.pool import load_pools
from ansible_collections.hal9000.dind.plugins.module_utils.relay import (
    MEMORYBANK_IN_SIDECAR,
    RELAY_DIR,
    RELAY_IN_SIDECAR,
    SERVERS_DIR,
    SERVERS_IN_SIDECAR,
    prepare as prepare_relay,
    prune_credentials,
    read_status as read_relay_status,
    relay_servers,
    remove_sidecar,
    sidecar_name,
)
from ansible_collections.hal9000.dind.plugins.module_utils.sessions import close_finished, prune as prune_sessions, record_end
from ansible_collections.hal9000.dind.plugins.module_utils.settings import resolve_in_parent
from ansible_collections.hal9000.dind.plugins.module_utils.workers import remove_workspace

import egress_rules  # the egress rules' one writer besides `coordinator egress` (same directory)
from healthcheck import full_disk, written_root  # the health check's rule of a full disk (same directory)

DASHBOARD = "/opt/hal9000/bin/dashboard.sh"
POOL_MANAGER = "/opt/hal9000/bin/pool_manager.py"
CHROMADB_PATH = os.environ.get("CHROMADB_PATH", "/data/chromadb")
MEMORYBANK_PATH = "/data/membank"  # volumes.SHARED_VOLUMES["memorybank"]
PLUGINS_PATH = "/data/plugins"
GUARD_CHAIN = "HAL9000-CHROMADB"
SOCKET_HELP = (
    "Error: Cannot connect to Docker daemon at unix:///var/run/docker.sock. "
    "Ensure the Docker socket is mounted: docker run -v /var/run/docker.sock:/var/run/docker.sock ..."
)


def open_log(name):
    """A log under the home's logs/, the home owner's when root made it."""
    path = os.path.join(HOME_IN_PARENT, "logs", name)
    handle = open(path, "a", encoding="utf-8")
    give_to_home_owner(path, HOME_IN_PARENT)
    return handle


def link_docker_socket(target, link=SOCKET):
    """``link`` (/var/run/docker.sock, where every program here looks) -> ``target``, the socket in the host's
    mounted socket directory, where a restarted daemon's new socket shows. A socket bound there by hand stays."""
    if not target or (os.path.lexists(link) and not os.path.islink(link)):
        return
    if os.path.islink(link) and os.readlink(link) == target:
        return
    temporary = f"{link}.{os.getpid()}"
    if os.path.lexists(temporary):
        os.remove(temporary)
    os.symlink(target, temporary)
    os.replace(temporary, link)


def disk_full(exc):
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class HomeLog:
    """A log under the home's logs/ whose write never raises: a line it cannot write is dropped and
    ``on_error(path, exc)`` told; the file is opened again for the next line (there may be space by then)."""

    def __init__(self, name, on_error, on_written=None):
        self.name = name
        self.path = os.path.join(HOME_IN_PARENT, "logs", name)
        self.on_error = on_error
        self.on_written = on_written or (lambda path: None)
        self.handle = None

    def write(self, text):
        # No lock, as with a plain file: a signal handler logging while the main thread writes would wait forever.
        try:
            if self.handle is None:
                self.handle = open_log(self.name)
            self.handle.write(text)
            self.handle.flush()
        except (OSError, ValueError) as exc:  # ValueError: closed meanwhile by another writer's failure
            self.close()
            self.on_error(self.path, exc if isinstance(exc, OSError) else OSError(errno.EIO, str(exc)))
        else:
            self.on_written(self.path)

    def close(self):
        """Close the file, discarding what it could not write (a retried buffer would fail again)."""
        handle, self.handle = self.handle, None
        if handle is not None:
            try:
                handle.close()
            except (OSError, ValueError):
                pass


def signal_pid_file(path, signum):
    """Send ``signum`` to the process in a pid file; its pid, or None when it is gone."""
    try:
        with open(path, encoding="utf-8") as handle:
            pid = int(handle.read().strip())
        os.kill(pid, signum)
    except (OSError, ValueError):
        return None
    return pid


def copy_lines(pipe, log):
    """A child's output into ``log`` until it ends; lines that cannot be written are dropped, the pipe always drained."""
    for line in iter(pipe.readline, b""):
        log.write(line.decode("utf-8", "replace"))
    log.close()


class Parent:
    def __init__(self):
        self.started = time.monotonic()
        self.phases = {}
        self.chroma = None
        self.pool = None
        self.pool_seen = False  # a pool manager was running at the last look (keep_pool_manager)
        self.settings = None
        self.client = None
        self.stopping = threading.Event()
        self.log_file = None
        self.state = {"chromadb_ready": False, "relay_ready": False}
        self.parent_name = os.environ.get("HAL9000_PARENT_NAME", PARENT_NAME)
        self.sidecar = None
        self.egress_settings = None  # the installation's egress policy last applied (mode, allow, base URL)
        self.relay_lock = threading.Lock()  # one start of the relay at a time (start-up, SIGHUP, housekeeping)
        self.pool_pid = None
        self.unwritable = set()  # paths already reported: one log line each until they take writes again

    def log(self, message):
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} [parent] {message}"
        print(line, flush=True)
        if self.log_file:
            self.log_file.write(line + "\n")

    def cannot_write(self, path, exc):
        """Say once that ``path`` (its volume or the home, as the health check names them) takes no writes."""
        path = written_root(path)
        if path in self.unwritable:
            return
        self.unwritable.add(path)
        if disk_full(exc):
            self.log(f"ERROR: disk full: {path}, free space needed; the parent serves on without writing there")
        else:
            self.log(f"ERROR: cannot write {path}: {exc.strerror or exc}; the parent serves on without it")

    def written(self, path):
        """A write went through: with free space again (not only a last block's room), say so once."""
        path = written_root(path)
        if path in self.unwritable and not full_disk([path]):
            self.unwritable.discard(path)
            self.log(f"{path} takes writes again")

    def failed(self, what, exc):
        """An error of bookkeeping (housekeeping, session records): logged, a full disk as such."""
        if disk_full(exc):
            self.cannot_write(exc.filename or HOME_IN_PARENT, exc)
        else:
            self.log(f"{what}: {(str(exc) or repr(exc)).splitlines()[0]}")

    def writing(self, path, action, *args):
        """``action(*args)``, or None when the disk under ``path`` is full (said once): never a reason to stop."""
        try:
            return action(*args)
        except OSError as exc:
            if not disk_full(exc):
                raise
            self.cannot_write(path, exc)
            return None

    def record(self, **extra):
        """Rewrite the start-up record atomically (readers never see half a file)."""
        self.state.update(extra, phases_ms=self.phases, settings=self.settings)
        self.writing(STARTUP_FILE, self._write_record)

    def _write_record(self):
        tmp = STARTUP_FILE + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(self.state, handle)
        os.replace(tmp, STARTUP_FILE)

    def phase(self, name, began):
        self.phases[name] = round((time.monotonic() - began) * 1000)
        self.log(f"Startup timing: {name} completed in {self.phases[name]}ms")
        self.record()

    # 1. critical init
    def critical_init(self):
        began = time.monotonic()
        os.makedirs(os.path.dirname(STARTUP_FILE), exist_ok=True)
        self.record()  # replaces the record a previous run of this container left
        for sub in HOME_LAYOUT:
            self.writing(HOME_IN_PARENT, make_private_dirs, os.path.join(HOME_IN_PARENT, sub), HOME_IN_PARENT)
        os.makedirs(CHROMADB_PATH, exist_ok=True)
        self.log_file = HomeLog("parent.log", self.cannot_write, self.written)
        # The environment holds only what the parent was explicitly given; hal9000.conf decides the rest.
        self.settings = resolve_in_parent()
        link_docker_socket(os.environ.get("HAL9000_DOCKER_SOCKET"))
        if not os.path.exists(SOCKET):
            raise Hal9000Error(SOCKET_HELP)
        try:
            self.client = connect(f"unix://{SOCKET}", timeout=30)
        except Hal9000Error:
            raise Hal9000Error(SOCKET_HELP) from None
        self.guard_chromadb()
        self.start_egress()  # before any worker can be made: a worker's first packet meets the allowlist
        self.refresh_managed_settings()  # before any worker can be made: every worker mounts run/relay/client
        if self.settings["enable_mcp_relay"]:
            try:
                self.prepare_relay_files()  # before any worker can be made: workers mount run/relay/client
            except (Hal9000Error, OSError) as exc:
                self.settings["enable_mcp_relay"] = False
                self.log(f"ERROR: the MCP relay is not started: {exc}")
                self.record(relay_error=str(exc))
        self.phase("critical_init", began)

    def refresh_managed_settings(self):
        """Workers' managed settings: the plugins installed in the plugins volume, enabled (rewritten on change)."""
        try:
            if write_managed_settings(HOME_IN_PARENT, PLUGINS_PATH):
                self.log("workers' managed settings written (plugins enabled: run/relay/client/managed-settings.json)")
        except OSError as exc:
            if disk_full(exc):
                self.cannot_write(exc.filename or HOME_IN_PARENT, exc)
            else:
                self.log(f"ERROR: the workers' managed settings were not written: {exc}")

    def guard_chromadb(self):
        """Only root may connect to ChromaDB's port: a chain of our own, emptied and refilled on every start."""
        port = str(self.settings["chromadb_port"])
        commands = (
            ["iptables", "-w", "-N", GUARD_CHAIN],
            ["iptables", "-w", "-F", GUARD_CHAIN],
            ["iptables", "-w", "-A", GUARD_CHAIN, "-o", "lo", "-p", "tcp", "--dport", port,
             "-m", "owner", "!", "--uid-owner", "0", "-j", "REJECT", "--reject-with", "tcp-reset"],
        )
        errors = []
        for command in commands:
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0 and command[2] != "-N":  # -N fails when the chain exists: fine
                errors.append(result.stderr.strip())
        jump = ["OUTPUT", "-j", GUARD_CHAIN]
        if subprocess.run(["iptables", "-w", "-C", *jump], capture_output=True, check=False).returncode != 0:
            result = subprocess.run(["iptables", "-w", "-I", *jump], capture_output=True, text=True, check=False)
            if result.returncode != 0:
                errors.append(result.stderr.strip())
        if errors:
            guard = f"failed: {errors[0]}"
            self.log(f"ERROR: ChromaDB is not protected from workers ({errors[0]}): the parent needs the NET_ADMIN "
                     "capability; recreate it with hal9000.dind.parent (playbooks/daemon.yml)")
        else:
            guard = "root only"
        self.record(chromadb_guard=guard)

    @staticmethod
    def egress_namespace(settings):
        """The installation's egress policy as egress_rules keeps it: (mode, allow, ANTHROPIC_BASE_URL)."""
        return (settings["egress"], list(settings["egress_allow"]), settings["anthropic_base_url"])

    def start_egress(self):
        """The installation's egress rules, and the workers' own policies again (a restarted parent has a new,
        empty namespace); host names are resolved by the egress thread, never here (no DNS wait at start-up)."""
        try:
            live = {c["Id"] for c in self.client.api.containers(all=True)}
            with egress_rules.locked():
                workers = egress_rules.read_workers()
                kept = {i: w for i, w in workers.items() if i in live}
                if kept != workers:
                    egress_rules.write_workers(kept)
                self.egress_applied(egress_rules.refresh(self.egress_namespace(self.settings), force=True, workers=kept))
        except Exception as exc:  # the parent serves on; status says the rules are missing
            self.egress_applied({"error": (str(exc) or repr(exc)).splitlines()[0]})
        self.egress_settings = self.egress_namespace(self.settings)
        threading.Thread(target=self.follow_egress, daemon=True).start()

    def egress_applied(self, state):
        """Record what the rules are (status shows it) and log what changed in their warnings or errors."""
        namespace = state.get("namespace") or {}
        summary = {"mode": namespace.get("mode", ""), "allow": namespace.get("allow", []),
                   "warnings": state.get("warnings", []), "error": state.get("error", ""), "uids": state.get("uids", [])}
        before = self.state.get("egress") or {}
        if summary == before:
            return
        if summary["mode"] and (summary["mode"], summary["allow"]) != (before.get("mode"), before.get("allow")):
            self.log(f"egress: {summary['mode']}" + (f", also allowed: {', '.join(summary['allow'])}" if summary["allow"] else ""))
        for warning in sorted(set(summary["warnings"]) - set(before.get("warnings", []))):
            self.log(f"WARNING: {warning}")
        if summary["error"] and summary["error"] != before.get("error"):
            self.log(f"ERROR: the egress rules were not applied ({summary['error']}): the parent needs the NET_ADMIN "
                     "capability; recreate it with hal9000.dind.parent (playbooks/daemon.yml)")
        self.record(egress=summary)

    def follow_egress(self):
        """Every second: EGRESS and EGRESS_ALLOW read again (live: no restart), host names resolved when their TTL
        ran out or when a worker's policy named a new one; the rules rewritten only where they changed.
        Names are resolved in a thread of their own: a resolver that does not answer never delays a change of policy."""
        refused = ""
        failed_at = None  # a failed apply (no NET_ADMIN) is tried again every 30 s, or at once when the policy changes
        answer = {}  # the resolving thread's result, taken by the next pass
        resolving = None
        while not self.stopping.wait(1):
            try:
                settings = resolve_in_parent()
            except Hal9000Error as exc:
                if str(exc) != refused:
                    refused = str(exc)
                    self.log(f"ERROR: {exc} The egress rules stay as they are.")
                continue
            refused = ""
            namespace = self.egress_namespace(settings)
            resolved = answer.pop("resolved", None)
            if failed_at is not None and namespace == self.egress_settings and resolved is None and time.monotonic() - failed_at < 30:
                continue
            try:
                if resolved is None and (resolving is None or not resolving.is_alive()):
                    hosts = egress_rules.due_hosts(make_policy(*namespace))
                    if hosts:
                        resolving = threading.Thread(target=lambda names=hosts: answer.update(
                            resolved=resolve_hosts(names, system_resolver)), daemon=True)
                        resolving.start()
                with egress_rules.locked():
                    state = egress_rules.refresh(namespace if namespace != self.egress_settings else None, resolved=resolved)
                self.egress_settings = namespace
                self.egress_applied(state)
                failed_at = time.monotonic() if state.get("error") else None
            except (EgressError, OSError) as exc:
                self.failed("egress", exc)

    # 2. parallel init
    def parallel_init(self):
        began = time.monotonic()
        # Through a pipe, not straight into the file: ChromaDB exits when it cannot write its output (a full disk).
        self.chroma = subprocess.Popen(
            [sys.executable, "/usr/local/bin/chroma", "run", "--path", CHROMADB_PATH,
             "--host", "127.0.0.1", "--port", str(self.settings["chromadb_port"])],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        threading.Thread(target=copy_lines, daemon=True,
                         args=(self.chroma.stdout, HomeLog("chromadb.log", self.cannot_write, self.written))).start()
        self.log(f"ChromaDB starting (pid {self.chroma.pid}) on port {self.settings['chromadb_port']}, data {CHROMADB_PATH}")
        tasks = [threading.Thread(target=self.start_dashboard), threading.Thread(target=self.check_worker_image)]
        for task in tasks:
            task.start()
        for task in tasks:
            task.join()
        self.phase("parallel_init", began)

    def start_dashboard(self):
        result = subprocess.run(["sh", DASHBOARD], capture_output=True, text=True, check=False)
        if result.returncode == 0:
            self.log("tmux dashboard ready: docker exec -it <parent> tmux -L hal9000 attach")
        else:
            self.log(f"WARNING: tmux dashboard failed: {(result.stderr or result.stdout).strip()}")

    def check_worker_image(self):
        image = self.settings["worker_image"]
        if self.client.images.list(name=image):
            self.log(f"Worker image {image} present")
            return
        if self.settings["skip_image_pull"]:
            self.log(f"WARNING: worker image {image} is missing and SKIP_IMAGE_PULL is set: workers cannot start until it exists")
            return
        if self.settings["lazy_image_pull"]:
            self.log(f"Worker image {image} missing: pulling in the background (logs/image-pull.log)")
            threading.Thread(target=self.pull_worker_image, args=(image,), daemon=True).start()
            return
        self.pull_worker_image(image)

    def pull_worker_image(self, image):
        pull_log = HomeLog("image-pull.log", self.cannot_write, self.written)
        pull_log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} pulling {image}\n")
        try:
            self.client.images.pull(image)
        except Exception as exc:  # any failure is reported as it is; nothing else is attempted
            message = str(exc).splitlines()[0]
            pull_log.write(f"failed: {message}\n")
            pull_log.close()
            self.log(f"ERROR: pulling worker image {image} failed: {message}. Build it with playbooks/build_images.yml.")
            return
        pull_log.write("done\n")
        pull_log.close()
        self.log(f"Worker image {image} pulled")

    # 3. service ready
    def chromadb_answers(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.settings['chromadb_port']}/api/v2/heartbeat", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def wait_for_chromadb(self, timeout=60):
        """Whether ChromaDB answered within ``timeout``; the start-up record says so when it does."""
        began = time.monotonic()
        while time.monotonic() - began < timeout and not self.stopping.is_set():
            if self.chroma.poll() is not None:
                raise Hal9000Error(f"ChromaDB exited with code {self.chroma.returncode}; see logs/chromadb.log")
            if self.chromadb_answers():
                self.phase("service_ready", began)
                self.record(chromadb_ready=True, ready_ms=round((time.monotonic() - self.started) * 1000))
                return True
            time.sleep(0.02)
        # Not fatal: exiting would only make the restart policy loop (the reference's crash-loop). The main loop
        # keeps asking (late_chromadb), so a ChromaDB slow to open a large database is ready once it answers.
        self.log(f"WARNING: ChromaDB did not answer within {timeout} s; still waiting for it")
        return False

    def late_chromadb(self):
        """Once a second after wait_for_chromadb gave up: whether ChromaDB answers now (then it is recorded ready)."""
        if not self.chromadb_answers():
            return False
        self.record(chromadb_ready=True, ready_ms=round((time.monotonic() - self.started) * 1000))
        self.log("ChromaDB answers now: ready")
        return True

    # 4. background services
    def background_services(self):
        began = time.monotonic()
        if self.pool_enabled(say=True):
            self.start_pool_manager()
        if self.settings["enable_mcp_relay"]:
            threading.Thread(target=self.start_relay, daemon=True).start()
        else:
            self.log("MCP relay disabled (ENABLE_MCP_RELAY=false): workers get no MCP servers")
        self.phase("background_services", began)
        self.log(f"Parent container ready in {round((time.monotonic() - self.started) * 1000)}ms")

    def pool_enabled(self, say=False):
        # pools.json (written by the pool role or `coordinator pool start|stop`) wins over ENABLE_POOL_MANAGER.
        try:
            return load_pools(HOME_IN_PARENT, self.settings)["enabled"]
        except (Hal9000Error, ValueError) as exc:
            if say:
                self.log(f"ERROR: the pool settings are invalid, pool manager not started: {exc}")
            return False

    def start_pool_manager(self):
        self.pool = subprocess.Popen([sys.executable, POOL_MANAGER, "run"], start_new_session=True)
        self.log(f"Pool manager started (pid {self.pool.pid})")

    def keep_pool_manager(self):
        """Start the pool manager again when it died while the pool is enabled (killed, out of memory, a crash).

        Only one seen running before, whoever started it (this entrypoint or `coordinator pool start`): a pool
        just enabled is started by whoever enabled it. `coordinator pool stop` disables the pool before it stops
        the manager, so a deliberate stop is never undone here.
        """
        code = self.pool.poll() if self.pool is not None else None  # also reaps our own child
        our_child_runs = self.pool is not None and code is None
        if our_child_runs or signal_pid_file(POOL_PID_FILE, 0) is not None:
            self.pool_seen = True
            return
        if self.pool_seen and self.pool_enabled() and not self.stopping.is_set():
            self.log("WARNING: the pool manager is not running" + (f" (exit code {code})" if code is not None else "")
                     + "; starting it again")
            self.start_pool_manager()
            return
        self.pool_seen = False

    # 5. the MCP relay (in the background)
    def prepare_relay_files(self):
        prepare_relay(HOME_IN_PARENT, relay_servers(HOME_IN_PARENT, self.settings["chromadb_port"]),
                      self.settings["mcp_relay_port"])

    def start_relay(self, timeout=120, reread=False):
        with self.relay_lock:
            if reread:  # the declared servers changed (SIGHUP): critical_init wrote the files at start-up
                try:
                    self.prepare_relay_files()
                except (Hal9000Error, OSError) as exc:
                    self.log(f"ERROR: the MCP relay keeps its servers: {exc}")
                    self.record(relay_error=str(exc))
                    return
            self._start_relay(timeout)

    def _start_relay(self, timeout):
        began = time.monotonic()
        try:
            self.sidecar = self.create_sidecar()
        except Exception as exc:  # reported in the log and the record; the parent serves on without it
            self.log(f"ERROR: the MCP relay did not start: {str(exc).splitlines()[0]}")
            self.record(relay_error=str(exc).splitlines()[0])
            return
        url = f"http://127.0.0.1:{self.settings['mcp_relay_port']}/health"
        while time.monotonic() - began < timeout and not self.stopping.is_set():
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        self.phase("relay", began)
                        self.record(relay_ready=True)
                        self.log(f"MCP relay ready on 127.0.0.1:{self.settings['mcp_relay_port']}: "
                                 + ", ".join(sorted(read_relay_status(HOME_IN_PARENT).get("servers", {}))))
                        return
            except OSError:
                pass
            time.sleep(0.1)
        status = read_relay_status(HOME_IN_PARENT).get("servers", {})
        failed = {name: s.get("error") for name, s in status.items() if s.get("state") != "ready"}
        self.log(f"WARNING: the MCP relay is not ready after {timeout} s: {failed or 'no answer'}; "
                 f"see docker logs {sidecar_name(self.parent_name)} and run/relay/logs/ in the home")

    def create_sidecar(self):
        """The relay's container, in this parent's network namespace; replaced on every start
        (a restarted parent has a new namespace, and the old sidecar would be in the old one)."""
        own = self.client.api.inspect_container(self.parent_name)
        home = mounted_home(own)
        memorybank = next((m for m in own["Mounts"] if m["Destination"] == MEMORYBANK_PATH), None)
        if home is None or memorybank is None:
            raise Hal9000Error("the parent has no home or memory bank mounted; recreate it with hal9000.dind.parent")
        name = sidecar_name(self.parent_name)
        remove_sidecar(self.client, self.parent_name)
        mounts = [Mount(RELAY_IN_SIDECAR, os.path.join(home, RELAY_DIR), type="bind"),
                  Mount(MEMORYBANK_IN_SIDECAR, memorybank.get("Name") or memorybank["Source"], type=memorybank["Type"])]
        if os.path.isdir(os.path.join(HOME_IN_PARENT, SERVERS_DIR)):
            mounts.append(Mount(SERVERS_IN_SIDECAR, os.path.join(home, SERVERS_DIR), type="bind", read_only=True))
        host_config = self.client.api.create_host_config(
            network_mode=f"container:{own['Id']}",
            mounts=mounts,
            tmpfs={"/tmp": "rw,nosuid,nodev,size=256m"},
            # Root without the rest of root's powers: DAC_OVERRIDE reads run/relay when a user owns the home, CHOWN gives them its logs.
            cap_drop=["ALL"], cap_add=["DAC_OVERRIDE", "CHOWN"], security_opt=["no-new-privileges:true"],
            read_only=True, restart_policy={"Name": "no"},
        )
        labels = {LABEL_MANAGED: "true", LABEL_ROLE: ROLE_RELAY, LABEL_PARENT: self.parent_name}
        created = self.client.api.create_container(
            image=self.settings["mcp_image"], name=name, labels=labels, host_config=host_config,
            environment={"HOME": "/tmp", "HAL9000_RELAY_LOG_DIR": "/run/hal9000/relay/logs"}, detach=True,
        )
        self.client.api.start(created["Id"])
        self.log(f"MCP relay starting in {name} ({self.settings['mcp_image']})")
        return name

    def housekeeping(self):
        """Every 30 s: the relay's sidecar restarted if it died, credentials of removed workers dropped, session records."""
        try:
            live = {c["Id"] for c in self.client.api.containers(all=True, filters={"label": f"{LABEL_PARENT}={self.parent_name}"})}
            gone = prune_credentials(HOME_IN_PARENT, live)
            self.refresh_managed_settings()
            if gone:
                self.log(f"relay: dropped the credentials of {gone} removed worker(s)")
            if self.sidecar and not self.stopping.is_set():
                inspected = inspect_container(self.client, self.sidecar)
                state = inspected["State"] if inspected else {"Running": False, "ExitCode": "none: it was removed"}
                if not state["Running"]:
                    self.log(f"WARNING: the MCP relay exited (code {state['ExitCode']}); starting it again")
                    self.record(relay_ready=False)
                    threading.Thread(target=self.start_relay, daemon=True).start()
        except Exception as exc:  # housekeeping must never stop the parent
            self.failed("housekeeping", exc)
        self.session_housekeeping()

    def session_housekeeping(self):
        """Close the records of workers that ended unseen; prune old ones unless the pool manager does."""
        try:
            closed = close_finished(self.client, HOME_IN_PARENT)
            removed = 0
            if signal_pid_file(POOL_PID_FILE, 0) is None:
                removed = prune_sessions(HOME_IN_PARENT, resolve_in_parent()["session_records_max_age"] * 86400)
            if closed or removed:
                self.log(f"session records: {closed} closed, {removed} removed")
        except Exception as exc:  # records are bookkeeping: never a reason to stop the parent
            self.failed("session records", exc)

    def follow_worker_deaths(self):
        """Close a worker's session record when it dies; the event carries its exit code."""
        filters = {"type": "container", "event": ["die", "destroy"],
                   "label": [f"{LABEL_ROLE}={ROLE_WORKER}", f"{LABEL_PARENT}={self.parent_name}"]}
        while not self.stopping.is_set():
            try:
                for event in self.client.events(decode=True, filters=filters):
                    container_id = (event.get("Actor") or {}).get("ID") or event.get("id")
                    attributes = (event.get("Actor") or {}).get("Attributes") or {}
                    if event.get("Action") == "destroy":  # however it went (auto-remove, docker rm -f): its /workspace too
                        self.remove_workspace(attributes.get(LABEL_WORKSPACE))
                        self.forget_egress(container_id)
                        continue
                    if not container_id:
                        continue
                    code = attributes.get("exitCode")
                    ended = event["timeNano"] / 1e9 if event.get("timeNano") else event.get("time")
                    try:
                        record_end(HOME_IN_PARENT, container_id, None if code is None else int(code), ended)
                    except (OSError, ValueError) as exc:
                        self.failed(f"session records: {container_id[:12]}", exc)
            except Exception as exc:  # the stream breaks when the daemon restarts; housekeeping covers the gap
                if not self.stopping.is_set():
                    self.log(f"worker events interrupted ({(str(exc) or repr(exc)).splitlines()[0]}); reconnecting")
                    self.stopping.wait(1)

    def forget_egress(self, container_id):
        """A removed worker's own egress policy goes with it: its uid falls back to the installation's."""
        if not container_id:
            return
        try:
            state = egress_rules.forget([container_id])
            if state is not None:
                self.egress_applied(state)
        except (EgressError, OSError) as exc:
            self.failed("egress", exc)

    def remove_workspace(self, volume):
        try:
            if remove_workspace(self.client, volume):
                self.log(f"removed {volume}: its worker is gone")
        except Exception as exc:  # listed as an orphan by volumes.yml status
            self.log(f"could not remove {volume}: {(str(exc) or repr(exc)).splitlines()[0]}")

    def reload_relay(self, _signum, _frame):
        """SIGHUP (the parent module after a change of mcp_servers): the relay again, with the servers now declared."""
        if self.settings and self.settings["enable_mcp_relay"] and not self.stopping.is_set():
            self.log("SIGHUP: restarting the MCP relay with the declared servers")
            self.record(relay_ready=False)
            threading.Thread(target=self.start_relay, kwargs={"reread": True}, daemon=True).start()

    def shutdown(self, signum, _frame):
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.log(f"Received signal {signum}: stopping")
        if self.pool and self.pool.poll() is None:
            self.pool.terminate()
        elif self.pool is None:
            self.pool_pid = signal_pid_file(POOL_PID_FILE, signal.SIGTERM)  # started by `coordinator pool start`
        if self.chroma and self.chroma.poll() is None:
            self.chroma.terminate()

    def stop_children(self):
        if self.pool_pid:
            for _attempt in range(100):
                if signal_pid_file(POOL_PID_FILE, 0) is None:
                    break
                time.sleep(0.1)
            self.log("pool manager stopped")
        for child, name in ((self.pool, "pool manager"), (self.chroma, "ChromaDB")):
            if child is None:
                continue
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.log(f"WARNING: {name} did not stop in 20 s; killing it")
                child.kill()
                child.wait()
            self.log(f"{name} stopped (exit code {child.returncode})")
        subprocess.run(["tmux", "-L", "hal9000", "kill-server"], capture_output=True, check=False)
        if self.sidecar:
            try:
                remove_sidecar(self.client, self.parent_name)
                self.log("MCP relay stopped")
            except Exception as exc:  # the daemon may be gone too
                self.log(f"Could not remove the MCP relay {self.sidecar}: {exc}")
        try:
            running = [w["name"] for w in list_workers(
                self.client, include_stopped=False, parent=os.environ.get("HAL9000_PARENT_NAME", PARENT_NAME))]
            self.log(f"Workers left running: {', '.join(running) if running else 'none'}")
        except Exception as exc:  # the daemon may be gone too; the log must still be written
            self.log(f"Could not list workers: {exc}")
        self.record(chromadb_ready=False, relay_ready=False, stopped=True)

    def run(self):
        signal.signal(signal.SIGTERM, self.shutdown)
        signal.signal(signal.SIGINT, self.shutdown)
        signal.signal(signal.SIGHUP, self.reload_relay)
        try:
            self.critical_init()
        except Hal9000Error as exc:
            self.log(str(exc))
            return 1
        self.parallel_init()
        try:
            chromadb_ready = self.wait_for_chromadb()
        except Hal9000Error as exc:
            self.log(f"ERROR: {exc}")
            return 1
        self.background_services()
        threading.Thread(target=self.follow_worker_deaths, daemon=True).start()
        ticks = 0
        while not self.stopping.is_set():
            ticks += 1
            if ticks % 30 == 0:
                self.housekeeping()
            if ticks % 5 == 0:
                self.keep_pool_manager()
            if not chromadb_ready:
                chromadb_ready = self.late_chromadb()
            if self.chroma.poll() is not None:
                self.log(f"ERROR: ChromaDB exited with code {self.chroma.returncode}; see logs/chromadb.log")
                self.stopping.set()
                break
            self.stopping.wait(1)
        self.stop_children()
        code = self.chroma.returncode if self.chroma else 1
        return 0 if code in (0, -signal.SIGTERM) else code


if __name__ == "__main__":
    sys.exit(Parent().run())
