"""The warm pool's claim lock: one holder at a time, across processes, and a plain refusal when it cannot be taken."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import time

import pytest

from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.pool import CLAIM_LOCK_FILE, claim_lock


def hold(home, seconds, entered, log):
    with claim_lock(home):
        entered.set()
        log.put(("in", time.monotonic()))
        time.sleep(seconds)
        log.put(("out", time.monotonic()))


def test_a_second_process_waits_until_the_first_releases(tmp_path):
    home = str(tmp_path)
    entered = multiprocessing.Event()
    log = multiprocessing.Queue()
    first = multiprocessing.Process(target=hold, args=(home, 0.5, entered, log))
    first.start()
    assert entered.wait(10)
    with claim_lock(home):
        taken = time.monotonic()
    first.join(10)
    events = dict(log.get(timeout=5) for _event in range(2))
    assert taken >= events["out"], "the lock was taken while the other process still held it"
    assert os.path.isfile(tmp_path / CLAIM_LOCK_FILE)


def test_released_after_an_exception(tmp_path):
    with pytest.raises(RuntimeError):
        with claim_lock(str(tmp_path)):
            raise RuntimeError("claimer failed")
    descriptor = os.open(tmp_path / CLAIM_LOCK_FILE, os.O_RDWR)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if still held
    finally:
        os.close(descriptor)


def test_an_unusable_home_is_a_one_line_refusal(tmp_path):
    home = tmp_path / "home"
    home.write_text("a file, not a directory")
    with pytest.raises(Hal9000Error) as err:
        with claim_lock(str(home)):
            pass
    message = str(err.value)
    assert "claim lock" in message and str(home) in message and "from_pool=false" in message
    assert "\n" not in message
