"""Start-up of the hal9000 parent container (runs under tini as PID 1's child).

The seed's phases, each timed and logged, the timings also kept in
/run/hal9000/startup.json for the parent module and the coordinator:
  1. critical init: directories, Docker socket check (no socket: exit at once);
  2. parallel init: ChromaDB started, tmux dashboard and worker-image check in parallel;
  3. service ready: wait for ChromaDB's /api/v2/heartbeat;
  4. background services: the pool manager when ENABLE_POOL_MANAGER is true.
SIGTERM stops ChromaDB cleanly (no data lost) and the pool manager; workers
are left running and listed in the log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from ansible_collections.hal9000.dind.plugins.module_utils.constants import (
    DOCKER_SOCKET as SOCKET,
    HOME_IN_PARENT,
    PARENT_NAME,
    POOL_PID_FILE,
    STARTUP_FILE,
)
from ansible_collections.hal9000.dind.plugins.module_utils.docker_api import connect
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.fleet import list_workers
from ansible_collections.hal9000.dind.plugins.module_utils.home import LAYOUT as HOME_LAYOUT
from ansible_collections.hal9000.dind.plugins.module_utils.pool import load_pools
from ansible_collections.hal9000.dind.plugins.module_utils.settings import resolve_in_parent

DASHBOARD = "/opt/hal9000/bin/dashboard.sh"
POOL_MANAGER = "/opt/hal9000/bin/pool_manager.py"
CHROMADB_PATH = os.environ.get("CHROMADB_PATH", "/data/chromadb")
SOCKET_HELP = (
    "Error: Cannot connect to Docker daemon at unix:///var/run/docker.sock. "
    "Ensure the Docker socket is mounted: docker run -v /var/run/docker.sock:/var/run/docker.sock ..."
)


def signal_pid_file(path, signum):
    """Send ``signum`` to the process in a pid file; its pid, or None when it is gone."""
    try:
        with open(path, encoding="utf-8") as handle:
            pid = int(handle.read().strip())
        os.kill(pid, signum)
    except (OSError, ValueError):
        return None
    return pid


class Parent:
    def __init__(self):
        self.started = time.monotonic()
        self.phases = {}
        self.chroma = None
        self.pool = None
        self.settings = None
        self.client = None
        self.stopping = threading.Event()
        self.log_file = None
        self.state = {"chromadb_ready": False}
        self.pool_pid = None

    def log(self, message):
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} [parent] {message}"
        print(line, flush=True)
        if self.log_file:
            self.log_file.write(line + "\n")
            self.log_file.flush()

    def record(self, **extra):
        """Rewrite the start-up record atomically (readers never see half a file)."""
        self.state.update(extra, phases_ms=self.phases, settings=self.settings)
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
            os.makedirs(os.path.join(HOME_IN_PARENT, sub), mode=0o700, exist_ok=True)
        os.makedirs(CHROMADB_PATH, exist_ok=True)
        self.log_file = open(os.path.join(HOME_IN_PARENT, "logs", "parent.log"), "a", encoding="utf-8")
        # The environment holds only what the parent was explicitly given; hal9000.conf decides the rest.
        self.settings = resolve_in_parent()
        if not os.path.exists(SOCKET):
            raise Hal9000Error(SOCKET_HELP)
        try:
            self.client = connect(f"unix://{SOCKET}", timeout=30)
        except Hal9000Error:
            raise Hal9000Error(SOCKET_HELP) from None
        self.phase("critical_init", began)

    # 2. parallel init
    def parallel_init(self):
        began = time.monotonic()
        chroma_log = open(os.path.join(HOME_IN_PARENT, "logs", "chromadb.log"), "a", encoding="utf-8")
        self.chroma = subprocess.Popen(
            [sys.executable, "/usr/local/bin/chroma", "run", "--path", CHROMADB_PATH,
             "--host", os.environ.get("CHROMADB_HOST", "0.0.0.0"), "--port", str(self.settings["chromadb_port"])],
            stdout=chroma_log, stderr=subprocess.STDOUT, start_new_session=True,
        )
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
        with open(os.path.join(HOME_IN_PARENT, "logs", "image-pull.log"), "a", encoding="utf-8") as pull_log:
            pull_log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} pulling {image}\n")
            try:
                self.client.images.pull(image)
            except Exception as exc:  # any failure is reported as it is; nothing else is attempted
                message = str(exc).splitlines()[0]
                pull_log.write(f"failed: {message}\n")
                self.log(f"ERROR: pulling worker image {image} failed: {message}. Build it with playbooks/build_images.yml.")
                return
            pull_log.write("done\n")
        self.log(f"Worker image {image} pulled")

    # 3. service ready
    def wait_for_chromadb(self, timeout=60):
        began = time.monotonic()
        url = f"http://127.0.0.1:{self.settings['chromadb_port']}/api/v2/heartbeat"
        while time.monotonic() - began < timeout and not self.stopping.is_set():
            if self.chroma.poll() is not None:
                raise Hal9000Error(f"ChromaDB exited with code {self.chroma.returncode}; see logs/chromadb.log")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        self.phase("service_ready", began)
                        self.record(chromadb_ready=True, ready_ms=round((time.monotonic() - self.started) * 1000))
                        return
            except OSError:
                pass
            time.sleep(0.02)
        # Not fatal: exiting would only make the restart policy loop (the reference's crash-loop).
        self.log(f"WARNING: ChromaDB did not answer {url} within {timeout} s; still waiting for it")

    # 4. background services
    def background_services(self):
        began = time.monotonic()
        try:
            # pools.json (written by the pool role or `coordinator pool start|stop`) wins over ENABLE_POOL_MANAGER.
            enabled = load_pools(HOME_IN_PARENT, self.settings)["enabled"]
        except (Hal9000Error, ValueError) as exc:
            enabled = False
            self.log(f"ERROR: the pool settings are invalid, pool manager not started: {exc}")
        if enabled:
            self.pool = subprocess.Popen([sys.executable, POOL_MANAGER, "run"], start_new_session=True)
            self.log(f"Pool manager started (pid {self.pool.pid})")
        self.phase("background_services", began)
        self.log(f"Parent container ready in {round((time.monotonic() - self.started) * 1000)}ms")

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
        try:
            running = [w["name"] for w in list_workers(
                self.client, include_stopped=False, parent=os.environ.get("HAL9000_PARENT_NAME", PARENT_NAME))]
            self.log(f"Workers left running: {', '.join(running) if running else 'none'}")
        except Exception as exc:  # the daemon may be gone too; the log must still be written
            self.log(f"Could not list workers: {exc}")
        self.record(chromadb_ready=False, stopped=True)

    def run(self):
        signal.signal(signal.SIGTERM, self.shutdown)
        signal.signal(signal.SIGINT, self.shutdown)
        try:
            self.critical_init()
        except Hal9000Error as exc:
            self.log(str(exc))
            return 1
        self.parallel_init()
        try:
            self.wait_for_chromadb()
        except Hal9000Error as exc:
            self.log(f"ERROR: {exc}")
            return 1
        self.background_services()
        while not self.stopping.is_set():
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
