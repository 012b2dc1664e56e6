"""Staging directories: which ones a killed run left."""

from __future__ import annotations

import os
import socket
import subprocess

from ansible_collections.hal9000.dind.plugins.module_utils.staging import (
    leftover_staging,
    owner_gone,
    owner_tag,
    process_alive,
    staging_name,
)

INFIX = ".hal9000-test-partial-"


def dead_pid():
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


def test_only_the_staging_of_gone_processes_is_left_over(tmp_path):
    target = str(tmp_path / "target")
    mine = staging_name(target, INFIX)
    assert mine.startswith(f"{target}{INFIX}{os.getpid()}-") and mine != staging_name(target, INFIX)
    left = f"{target}{INFIX}{dead_pid()}-0123abcd"
    unnamed = f"{target}{INFIX}deadbeef"  # no pid: nobody can be writing it
    for path in (mine, left, unnamed, f"{target}-other{INFIX}{dead_pid()}-x", f"{target}.replaced-1"):
        os.mkdir(path)
    (tmp_path / f"target{INFIX}{dead_pid()}-file").write_text("not a directory")
    os.symlink(left, f"{target}{INFIX}{dead_pid()}-link")
    assert leftover_staging(target, INFIX) == sorted([left, unnamed])


def test_no_parent_directory_means_no_leftovers(tmp_path):
    assert leftover_staging(str(tmp_path / "missing" / "target"), INFIX) == []


def test_process_alive():
    assert process_alive(os.getpid()) and process_alive(1)
    assert not process_alive(dead_pid())


def test_only_an_owner_of_this_host_that_is_gone_is_gone():
    assert owner_tag() == f"{socket.gethostname()}:{os.getpid()}" and not owner_gone(owner_tag())
    assert owner_gone(f"{socket.gethostname()}:{dead_pid()}\n")
    for other in (f"elsewhere:{dead_pid()}", "", "no pid", f"{socket.gethostname()}:x"):
        assert not owner_gone(other), other
