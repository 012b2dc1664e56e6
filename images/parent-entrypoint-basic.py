"""Temporary, basic entrypoint of the hal9000 parent container.

Runs under tini (PID 1). It creates the data directories, starts the ChromaDB
server (`chroma run`), logs how long the server took to answer its heartbeat,
forwards SIGTERM/SIGINT/SIGHUP to it, waits for it to exit and exits with its
code. The phased entrypoint (tmux, coordinator, pool manager) replaces it.

Environment:
  CHROMADB_PATH  data directory             (default /data/chromadb)
  CHROMADB_HOST  listen address             (default 0.0.0.0, so the port can be
                 published; workers share this netns and use localhost anyway)
  CHROMADB_PORT  listen port                (default 8000)
  HAL9000_HOME   parent state dir           (default /root/.hal9000)
"""
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

CHROMA = "/usr/local/bin/chroma"


def log(msg):
    print("[parent-entrypoint] %s" % msg, file=sys.stderr, flush=True)


def wait_ready(port, started, child, deadline_s=60.0):
    url = "http://127.0.0.1:%s/api/v2/heartbeat" % port
    while child.poll() is None and time.monotonic() - started < deadline_s:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    log("chromadb ready in %d ms" % ((time.monotonic() - started) * 1000))
                    return
        except OSError:
            pass
        time.sleep(0.05)
    if child.poll() is None:
        log("chromadb not ready after %.0f s" % deadline_s)


def main():
    path = os.environ.get("CHROMADB_PATH", "/data/chromadb")
    host = os.environ.get("CHROMADB_HOST", "0.0.0.0")
    port = os.environ.get("CHROMADB_PORT", "8000")
    home = os.environ.get("HAL9000_HOME", "/root/.hal9000")
    for d in (path, home, *(os.path.join(home, s) for s in ("sessions", "logs", "config", "workers"))):
        os.makedirs(d, exist_ok=True)

    started = time.monotonic()
    child = subprocess.Popen([sys.executable, CHROMA, "run", "--path", path, "--host", host, "--port", port])
    log("started chromadb pid %d on %s:%s, data %s" % (child.pid, host, port, path))

    def forward(signum, _frame):
        if child.poll() is None:
            log("forwarding signal %d to chromadb" % signum)
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)

    threading.Thread(target=wait_ready, args=(port, started, child), daemon=True).start()

    while True:
        try:
            rc = child.wait()
            break
        except InterruptedError:
            continue
    if rc < 0:  # killed by a signal: report it the way a shell would
        rc = 128 - rc
    log("chromadb exited with code %d" % rc)
    return rc


if __name__ == "__main__":
    sys.exit(main())
