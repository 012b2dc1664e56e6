# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Session records: one JSON file per worker run in ~/.hal9000/sessions/ (the seed's session metadata).

A record is opened when a worker starts (or a warm worker is claimed) and closed when it ends:
by the parent on the worker's "die" event, or by housekeeping, which also closes the records of
workers that went while nobody watched and prunes closed records past their age. Records carry
only the fields in ``FIELDS``: never the environment, a key or a path to one.
Pure: standard library and the docker SDK only, never ``ansible.*``.
"""

from __future__ import annotations

import datetime
import json
import os
import re

from ansible_collections.hal9000.dind.plugins.module_utils.engine import ERRORS
from ansible_collections.hal9000.dind.plugins.module_utils.files import make_private_dirs, write_json_atomically

SESSIONS_DIR = "sessions"
FIELDS = ("worker", "project", "image_id", "limits", "claimed", "started", "ended", "exit_code", "container_id")
LIMIT_KEYS = ("memory", "cpus", "pids_limit")
# Docker states of a container that is not (or not yet) over: its record stays open.
NOT_OVER = ("created", "running", "paused", "restarting")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_DOCKER_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$")


def sessions_dir(home):
    return os.path.join(home, SESSIONS_DIR)


def _utc(value=None):
    """A datetime in UTC from None (now), a datetime, epoch seconds or an ISO 8601 string (Docker's nanoseconds too)."""
    if value is None:
        return datetime.datetime.now(datetime.timezone.utc)
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.timezone.utc) if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
    match = _DOCKER_TIME.match(str(value).strip())
    if not match:
        raise ValueError(f"not an ISO 8601 time: {value!r}")
    seconds, fraction, zone = match.groups()
    text = seconds + (f".{(fraction + '000000')[:6]}" if fraction else "") + ("+00:00" if zone in (None, "Z") else zone)
    return datetime.datetime.fromisoformat(text).astimezone(datetime.timezone.utc)


def iso(value=None):
    """ISO 8601 in UTC to the second, as records spell times: 2026-05-01T10:00:00Z."""
    return _utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def _limits(limits):
    """Only the three limits, as plain values: nothing else of the worker's options reaches a record."""
    limits = limits or {}
    return {key: (limits.get(key) if isinstance(limits.get(key), (str, int, float)) else None) for key in LIMIT_KEYS}


def _text(value):
    return "" if value is None else str(value)


def record_start(home, container_id, worker, project, image_id, limits, claimed, started=None):
    """Open the record of one run of ``worker`` (container ``container_id``); its path.

    The name sorts by time and names the container: <UTC time>-<worker>-<id[:12]>.json.
    """
    when = _utc(started)
    directory = make_private_dirs(sessions_dir(home), home)
    name = f"{when.strftime('%Y%m%dT%H%M%S%fZ')}-{_UNSAFE.sub('_', _text(worker).lstrip('/'))}-{_text(container_id)[:12]}.json"
    record = {
        "worker": _text(worker).lstrip("/"),
        "project": _text(project),
        "image_id": _text(image_id),
        "limits": _limits(limits),
        "claimed": bool(claimed),
        "started": iso(when),
        "ended": None,
        "exit_code": None,
        "container_id": _text(container_id),
    }
    return write_json_atomically(os.path.join(directory, name), record, 0o600, home)


def _read(path):
    """A record, or None when the file is unreadable or not one (never raises)."""
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("started"), str):
        return None
    return record


def _paths(home, errors=None):
    """Record files, oldest first (names start with the start time); [] when the directory is missing or unreadable."""
    try:
        names = os.listdir(sessions_dir(home))
    except FileNotFoundError:
        return []
    except OSError as exc:
        if errors is not None:
            errors.append(f"Cannot read {sessions_dir(home)}: {exc.strerror}; run as the owner of the HAL-9000 home.")
        return []
    return [os.path.join(sessions_dir(home), name) for name in sorted(names)
            if name.endswith(".json") and not name.startswith(".")]


def _same_container(record, container_id):
    """Full or short IDs (at least 12 characters) name the same container."""
    recorded = _text(record.get("container_id"))
    wanted = _text(container_id)
    if len(recorded) < 12 or len(wanted) < 12:
        return recorded == wanted and bool(wanted)
    return recorded.startswith(wanted) or wanted.startswith(recorded)


def _close(path, home, ended, exit_code):
    """Close the record at ``path`` unless someone else closed it meanwhile; whether it was closed."""
    record = _read(path)  # read again just before writing: the event thread and housekeeping may race
    if record is None or record.get("ended") is not None:
        return False
    record["ended"] = iso(ended)
    record["exit_code"] = exit_code
    write_json_atomically(path, {key: record.get(key) for key in FIELDS}, 0o600, home)
    return True


def record_end(home, container_id, exit_code, ended=None):
    """Close the newest open record of ``container_id``; True when one was closed.

    When its newest record was already closed without an exit code (housekeeping found the
    container gone), the exit code is filled in and True is returned too.
    """
    suffix = f"-{_text(container_id)[:12]}.json"
    code = None if exit_code is None else int(exit_code)
    newest = None
    for path in reversed(_paths(home)):
        if not path.endswith(suffix):
            continue
        record = _read(path)
        if record is None or not _same_container(record, container_id):
            continue
        if record.get("ended") is None:
            return _close(path, home, ended, code)
        if newest is None:
            newest = (path, record)
    if newest and newest[1].get("exit_code") is None and code is not None:
        path, record = newest
        record["exit_code"] = code
        write_json_atomically(path, {key: record.get(key) for key in FIELDS}, 0o600, home)
        return True
    return False


def close_finished(client, home, live_ids=None):
    """Close the open records of workers that are gone or no longer running; how many were closed.

    ``live_ids``: IDs of containers the caller knows to be running; their records stay open
    without asking Docker. The end is the container's FinishedAt (now when it is gone), the
    exit code its ExitCode (None when it is gone).
    """
    live = {_text(i) for i in (live_ids or ())}
    closed = 0
    for path in _paths(home):
        record = _read(path)
        if record is None or record.get("ended") is not None:
            continue
        container_id = _text(record.get("container_id"))
        if not container_id or any(_same_container(record, i) for i in live):
            continue
        try:
            inspected = client.api.inspect_container(container_id)
        except ERRORS.NotFound:
            inspected = None
        if inspected is None:
            closed += _close(path, home, None, None)
            continue
        state = inspected.get("State") or {}
        if state.get("Status") in NOT_OVER or state.get("Running"):
            continue
        try:
            ended = _utc(state.get("FinishedAt"))
            if ended.year < 2000:  # Docker's zero time: it never ran to an end
                ended = None
        except ValueError:
            ended = None
        code = state.get("ExitCode")
        closed += _close(path, home, ended, code if isinstance(code, int) and not isinstance(code, bool) else None)
    return closed


def prune(home, max_age_seconds, now=None):
    """Remove closed records whose end is older than ``max_age_seconds``; how many were removed.

    Open records are never removed. Files that are not records, and leftovers of interrupted
    writes, go when their modification time is that old.
    """
    limit = _utc(now).timestamp() - max_age_seconds
    removed = 0
    try:
        names = os.listdir(sessions_dir(home))
    except OSError:
        return 0
    for name in sorted(names):
        path = os.path.join(sessions_dir(home), name)
        if not os.path.isfile(path) or os.path.islink(path):
            continue
        record = _read(path) if name.endswith(".json") and not name.startswith(".") else None
        try:
            if record is None:
                old = os.path.getmtime(path) < limit
            elif record.get("ended") is None:
                continue
            else:
                old = _utc(record["ended"]).timestamp() < limit
        except (OSError, ValueError):
            continue
        if old:
            try:
                os.unlink(path)
                removed += 1
            except OSError:
                continue
    return removed


def recent(home, limit=20):
    """The newest ``limit`` records, newest first; unreadable files are skipped (never raises)."""
    records = []
    for path in reversed(_paths(home)):
        if len(records) >= limit:
            break
        record = _read(path)
        if record is not None:
            records.append({key: record.get(key) for key in FIELDS})
    return records


def summary(home, limit=10):
    """What status reports: how many records there are, how many are open, and the newest ``limit``.

    ``error`` says why the directory could not be read (never raises).
    """
    errors = []
    records = [r for r in (_read(p) for p in reversed(_paths(home, errors))) if r is not None]
    result = {
        "path": sessions_dir(home),
        "records": len(records),
        "open": len([r for r in records if r.get("ended") is None]),
        "recent": [{key: r.get(key) for key in FIELDS} for r in records[:limit]],
    }
    if errors:
        result["error"] = errors[0]
    return result
