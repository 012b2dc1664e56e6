"""Session records: one file per worker run, opened, closed, pruned and listed; private and owned by the home's owner."""

from __future__ import annotations

import datetime
import json
import os
import stat

from ansible_collections.hal9000.dind.plugins.module_utils.docker_api import NotFound
from ansible_collections.hal9000.dind.plugins.module_utils.sessions import (
    FIELDS,
    close_finished,
    iso,
    prune,
    recent,
    record_end,
    record_start,
    summary,
)
from ansible_collections.hal9000.dind.plugins.module_utils.status import format_status

LIMITS = {"memory": "4g", "cpus": "2", "pids_limit": 100}
T0 = datetime.datetime(2026, 5, 1, 10, 0, 0, tzinfo=datetime.timezone.utc)
DAY = 86400


def cid(n):
    return f"{n:02d}" + "ab" * 31  # 64 hex characters, distinct in the first 12


class FakeApi:
    def __init__(self, containers):
        self.containers = containers  # id -> State
        self.asked = []

    def inspect_container(self, container_id):
        self.asked.append(container_id)
        if container_id not in self.containers:
            raise NotFound(f"No such container: {container_id}")
        return {"Id": container_id, "State": self.containers[container_id]}


class FakeClient:
    def __init__(self, containers=None):
        self.api = FakeApi(containers or {})


def read(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def start(home, n, started=T0, **kwargs):
    values = dict(worker=f"w{n}", project="/srv/webapp", image_id="sha256:feed", limits=LIMITS, claimed=False)
    values.update(kwargs)
    return record_start(str(home), cid(n), started=started, **values)


def test_a_record_holds_exactly_its_fields_and_is_private(tmp_path):
    path = start(tmp_path, 1, claimed=True, limits=dict(LIMITS, api_key="sk-secret", environment={"A": "b"}))
    assert os.path.basename(path) == f"20260501T100000000000Z-w1-{cid(1)[:12]}.json"
    record = read(path)
    assert record == {
        "worker": "w1", "project": "/srv/webapp", "image_id": "sha256:feed", "limits": LIMITS, "claimed": True,
        "started": "2026-05-01T10:00:00Z", "ended": None, "exit_code": None, "container_id": cid(1),
    }
    assert set(record) == set(FIELDS)
    assert "secret" not in open(path, encoding="utf-8").read()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "sessions").st_mode) == 0o700
    assert not [n for n in os.listdir(tmp_path / "sessions") if n.startswith(".")], "no temporary file left behind"


def test_no_limits_are_recorded_as_nulls_and_odd_names_stay_in_the_directory(tmp_path):
    path = record_start(str(tmp_path), cid(2), "/../evil name", "", "sha256:feed", None, False)
    assert os.path.dirname(path) == str(tmp_path / "sessions")
    assert read(path)["limits"] == {"memory": None, "cpus": None, "pids_limit": None}
    assert read(path)["worker"] == "../evil name"


def test_record_end_closes_the_newest_open_record_of_the_container(tmp_path):
    older = start(tmp_path, 1, started=T0)
    newer = start(tmp_path, 1, started=T0 + datetime.timedelta(minutes=5))
    assert record_end(str(tmp_path), cid(1), 3, ended=T0 + datetime.timedelta(minutes=9)) is True
    assert (read(newer)["ended"], read(newer)["exit_code"]) == ("2026-05-01T10:09:00Z", 3)
    assert read(older)["ended"] is None
    assert record_end(str(tmp_path), cid(1)[:12], 0) is True, "a short ID names the same container"
    assert read(older)["exit_code"] == 0
    assert record_end(str(tmp_path), cid(1), 0) is False, "nothing open, exit codes known: nothing to do"
    assert record_end(str(tmp_path), cid(9), 0) is False
    assert stat.S_IMODE(os.stat(newer).st_mode) == 0o600


def test_close_finished_closes_gone_and_stopped_workers_only(tmp_path):
    gone = start(tmp_path, 1)
    stopped = start(tmp_path, 2)
    running = start(tmp_path, 3)
    created = start(tmp_path, 4)
    live = start(tmp_path, 5)
    client = FakeClient({
        cid(2): {"Status": "exited", "Running": False, "ExitCode": 137, "FinishedAt": "2026-05-01T11:30:05.123456789Z"},
        cid(3): {"Status": "running", "Running": True, "ExitCode": 0, "FinishedAt": "0001-01-01T00:00:00Z"},
        cid(4): {"Status": "created", "Running": False, "ExitCode": 0, "FinishedAt": "0001-01-01T00:00:00Z"},
    })
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    assert close_finished(client, str(tmp_path), live_ids=[cid(5)]) == 2
    assert cid(5) not in client.api.asked, "a container the caller knows to run is not inspected"
    assert read(gone)["exit_code"] is None
    assert read(gone)["ended"] >= iso(before)
    assert (read(stopped)["ended"], read(stopped)["exit_code"]) == ("2026-05-01T11:30:05Z", 137)
    assert read(running)["ended"] is None and read(created)["ended"] is None and read(live)["ended"] is None
    assert close_finished(client, str(tmp_path), live_ids=[cid(5)]) == 0, "closed records are left alone"

    # The die event arrives after housekeeping found the container already removed: its exit code is kept.
    assert record_end(str(tmp_path), cid(1), 1) is True
    assert read(gone)["exit_code"] == 1


def test_prune_removes_only_old_closed_records(tmp_path):
    home = str(tmp_path)
    old_open = start(home, 1, started=T0)
    old_closed = start(home, 2, started=T0)
    young_closed = start(home, 3, started=T0)
    record_end(home, cid(2), 0, ended=T0 + datetime.timedelta(hours=1))
    record_end(home, cid(3), 0, ended=T0 + datetime.timedelta(days=29))
    corrupt_old = tmp_path / "sessions" / "20260101T000000000000Z-x-000000000000.json"
    corrupt_old.write_text("{not json")
    os.utime(corrupt_old, (T0.timestamp(), T0.timestamp()))
    corrupt_new = tmp_path / "sessions" / "20260601T000000000000Z-y-000000000000.json"
    corrupt_new.write_text("[]")
    now = T0 + datetime.timedelta(days=30, hours=2)
    os.utime(corrupt_new, (now.timestamp(), now.timestamp()))

    assert prune(home, 30 * DAY, now=now) == 2
    assert os.path.exists(old_open), "open records are never pruned"
    assert not os.path.exists(old_closed)
    assert os.path.exists(young_closed)
    assert not corrupt_old.exists() and corrupt_new.exists()
    assert prune(home, 0, now=now) == 1, "0: every closed record goes"
    assert os.path.exists(old_open)
    assert prune(str(tmp_path / "nowhere"), 0) == 0


def test_recent_is_newest_first_and_skips_what_it_cannot_read(tmp_path):
    home = str(tmp_path)
    assert recent(home) == []
    for n in range(5):
        start(home, n, started=T0 + datetime.timedelta(minutes=n))
    (tmp_path / "sessions" / "20270101T000000000000Z-bad-000000000000.json").write_text("{")
    (tmp_path / "sessions" / "20270101T000000000001Z-list-000000000000.json").write_text("[1, 2]")
    (tmp_path / "sessions" / "20270101T000000000002Z-dir-000000000000.json").mkdir()
    (tmp_path / "sessions" / ".20270101.json.tmp").write_text("{}")
    assert [r["worker"] for r in recent(home)] == ["w4", "w3", "w2", "w1", "w0"]
    assert [r["worker"] for r in recent(home, limit=2)] == ["w4", "w3"]
    record_end(home, cid(3), 0, ended=T0 + datetime.timedelta(hours=1))
    counted = summary(home, limit=3)
    assert (counted["records"], counted["open"], len(counted["recent"])) == (5, 4, 3)
    assert counted["path"] == os.path.join(home, "sessions") and "error" not in counted


def test_status_reports_the_records_in_one_line(tmp_path):
    start(tmp_path, 1)
    status = {"parent": {"name": "hal9000-parent", "state": "absent"}, "workers": [], "volumes": [],
              "sessions": summary(str(tmp_path))}
    assert f"Sessions: 1 open, 1 recorded ({tmp_path}/sessions)" in format_status(status).splitlines()


def test_root_writing_into_a_users_home_gives_the_records_to_that_user(tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    os.chown(home, 4242, 4242)
    path = start(home, 1)
    record_end(str(home), cid(1), 0)
    for made in (home / "sessions", path):
        info = os.stat(made)
        assert (info.st_uid, info.st_gid) == (4242, 4242), made
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
