"""The warm-pool manager of the hal9000 parent (`pool_manager.py run`).

Keeps every pool declared in ~/.hal9000/config/pools.json (or the seed's
MIN_WARM_WORKERS/MAX_WARM_WORKERS) between its minimum and maximum. It reacts
to Docker events (a claim or a death refills within a second or two) and
reconciles every CHECK_INTERVAL seconds as a safety net. Its housekeeping closes
the session records of workers that ended unseen and prunes old ones. Logs to
~/.hal9000/logs/pool-manager.log.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import sys
import threading
import time

from ansible_collections.hal9000.dind.plugins.module_utils.docker_api import connect
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.fleet import LABEL_PARENT, LABEL_POOL, LABEL_ROLE, ROLE_WORKER
from ansible_collections.hal9000.dind.plugins.module_utils.constants import (
    HOME_IN_PARENT,
    PARENT_NAME as DEFAULT_PARENT_NAME,
    POOL_PID_FILE as PID_FILE,
    POOL_SCALE_FILE as SCALE_FILE,
    POOL_STATUS_FILE as STATUS_FILE,
)
from ansible_collections.hal9000.dind.plugins.module_utils.files import give_to_home_owner
from ansible_collections.hal9000.dind.plugins.module_utils.pool import Reconciler, load_pools
from ansible_collections.hal9000.dind.plugins.module_utils.sessions import close_finished, prune as prune_sessions
from ansible_collections.hal9000.dind.plugins.module_utils.settings import resolve_in_parent

PARENT_NAME = os.environ.get("HAL9000_PARENT_NAME", DEFAULT_PARENT_NAME)
CHECK_INTERVAL = float(os.environ.get("POOL_CHECK_INTERVAL", "10"))
# A new image under a pool's tag (a rebuild, a load): its warm workers are replaced at once.
IMAGE_EVENTS = {"type": "image", "event": ["tag", "load", "pull"]}
# Session records need no haste: at most one pass a minute, whatever wakes the loop.
HOUSEKEEPING_INTERVAL = 60
# Held for the manager's life: a second manager (two `pool start`s at once, or one racing the entrypoint's) stops.
LOCK_FILE = os.path.join(os.path.dirname(PID_FILE), "pool-manager.lock")


def hold_lock(path=LOCK_FILE):
    """The open, exclusively locked ``path``, or None when another process holds it."""
    handle = open(path, "a", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def write_atomically(path, text):
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(path + ".tmp", path)


class Manager:
    def __init__(self):
        self.log_path = os.path.join(HOME_IN_PARENT, "logs", "pool-manager.log")
        self.log_file = None
        self.log_failed = False
        self.client = connect("unix:///var/run/docker.sock", timeout=60)
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.reconciler = Reconciler(self.client, PARENT_NAME, HOME_IN_PARENT, self.log)
        self.next_housekeeping = 0.0

    def log(self, message):
        """A line in the log; one it cannot write (a full disk) is dropped and said once on stderr: the pool runs on."""
        try:
            if self.log_file is None:
                self.log_file = open(self.log_path, "a", encoding="utf-8")
                give_to_home_owner(self.log_path, HOME_IN_PARENT)
            self.log_file.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}\n")
            self.log_file.flush()
            self.log_failed = False
        except OSError as exc:
            handle, self.log_file = self.log_file, None  # reopened for the next line, without what it could not write
            if handle is not None:
                try:
                    handle.close()
                except OSError:
                    pass
            if not self.log_failed:
                self.log_failed = True
                reason = (f"disk full: {HOME_IN_PARENT}, free space needed" if exc.errno in (errno.ENOSPC, errno.EDQUOT)
                          else f"cannot write {self.log_path}: {exc.strerror or exc}")
                print(f"pool manager: {reason}", file=sys.stderr, flush=True)

    def watch_events(self, filters, wakes_on):
        """Wake the loop on these events (``wakes_on``: actions, None for all); a rename of a warm worker is a claim."""
        while not self.stopping.is_set():
            try:
                for event in self.client.events(decode=True, filters=filters):
                    if event.get("Action") == "rename":
                        self.reconciler.note_claim(event["Actor"]["Attributes"].get(LABEL_POOL, ""))
                    if wakes_on is None or event.get("Action") in wakes_on:
                        self.wake.set()
            except Exception as exc:  # the stream breaks when the daemon restarts; reconnect
                self.log(f"event stream interrupted ({exc}); reconnecting")
                time.sleep(1)

    def housekeeping(self):
        """Session records: close those of workers that ended unseen, remove closed ones past their age."""
        if time.monotonic() < self.next_housekeeping:
            return
        self.next_housekeeping = time.monotonic() + HOUSEKEEPING_INTERVAL
        try:
            max_age = resolve_in_parent()["session_records_max_age"] * 86400
            closed = close_finished(self.client, HOME_IN_PARENT)
            removed = prune_sessions(HOME_IN_PARENT, max_age)
            if closed or removed:
                self.log(f"session records: {closed} closed, {removed} removed")
        except Exception as exc:  # records are bookkeeping: never a reason to stop managing the pool
            self.log(f"ERROR: session records: {(str(exc) or repr(exc)).splitlines()[0]}")

    def read_scale(self):
        if os.path.exists(SCALE_FILE):
            with open(SCALE_FILE, encoding="utf-8") as handle:
                for pool, target in json.load(handle).items():
                    self.reconciler.scale(pool, target)
            os.remove(SCALE_FILE)

    def run(self):
        write_atomically(PID_FILE, str(os.getpid()))  # after the lock (__main__): the pid of the one manager
        signal.signal(signal.SIGTERM, lambda *_args: (self.stopping.set(), self.wake.set()))
        signal.signal(signal.SIGHUP, lambda *_args: self.wake.set())  # `coordinator pool reload`: settings changed
        workers = {"type": "container", "label": [f"{LABEL_ROLE}={ROLE_WORKER}", f"{LABEL_PARENT}={PARENT_NAME}"]}
        threading.Thread(target=self.watch_events, args=(workers, ("rename", "die", "destroy", "stop", "kill")),
                         daemon=True).start()
        threading.Thread(target=self.watch_events, args=(IMAGE_EVENTS, None), daemon=True).start()
        self.log(f"pool manager started for parent {PARENT_NAME}")
        while not self.stopping.is_set():
            try:
                settings = resolve_in_parent()
                config = load_pools(HOME_IN_PARENT, settings)
                self.read_scale()
                counts = self.reconciler.reconcile(config, settings)
                write_atomically(STATUS_FILE, json.dumps({"pid": os.getpid(), "warm": counts, "at": time.time()}))
            except Hal9000Error as exc:
                self.log(f"ERROR: {exc}")
            except Exception as exc:  # keep managing the pool; the log says what went wrong
                self.log(f"ERROR: reconcile failed: {exc}")
            self.housekeeping()
            self.wake.wait(CHECK_INTERVAL)
            self.wake.clear()
            time.sleep(0.2)  # coalesce a burst of events into one pass
        self.log("pool manager stopped (warm and claimed workers left as they are)")
        for path in (PID_FILE, STATUS_FILE):
            if os.path.exists(path):
                os.remove(path)
        return 0


if __name__ == "__main__":
    if sys.argv[1:] != ["run"]:
        print("usage: pool_manager.py run   (start it with `coordinator pool start`)", file=sys.stderr)
        sys.exit(2)
    LOCK = hold_lock()  # kept open (and locked) until this process ends
    if LOCK is None:
        print("pool manager: another one runs in this parent; not starting a second", file=sys.stderr)
        sys.exit(0)
    sys.exit(Manager().run())
