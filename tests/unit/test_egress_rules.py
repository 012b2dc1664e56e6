"""The parent's egress applier (images/parent/egress_rules.py): per-uid policies, conflicts, minimal rewrites.

The commands it would run are recorded by a fake runner (the real iptables-restore runs in the parent image:
tests/integration/test_egress.py); its files live in a temporary directory.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.hal9000.dind.plugins.module_utils.egress import CHAIN, NAMESPACE_CHAIN, OPEN_WARNING, EgressError, Resolved

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "images" / "parent"))
try:
    import egress_rules
finally:
    sys.path.pop(0)


class Runner:
    """Records argv and stdin; ``fail`` maps a program to its exit code (the jump check fails at first: missing)."""

    def __init__(self, fail=None):
        self.calls = []
        self.fail = fail or {}
        self.jumps = set()

    def __call__(self, argv, input=None, **_kwargs):  # noqa: A002 (subprocess.run's keyword)
        self.calls.append((list(argv), input))
        code = self.fail.get(argv[0], 0)
        if "-C" in argv:
            code = 0 if argv[0] in self.jumps else 1
        elif "-A" in argv and code == 0:
            self.jumps.add(argv[0])
        return subprocess.CompletedProcess(argv, code, "", "iptables: Permission denied (you must be root)." if code else "")

    def restored(self):
        """The restore texts written, by program."""
        return [(argv[0], text) for argv, text in self.calls if argv[0].endswith("-restore")]


@pytest.fixture(name="files")
def fixture_files(tmp_path, monkeypatch):
    monkeypatch.setattr(egress_rules, "STATE_FILE", str(tmp_path / "run" / "egress.json"))
    monkeypatch.setattr(egress_rules, "LOCK_FILE", str(tmp_path / "egress.lock"))
    monkeypatch.setattr(egress_rules, "WORKERS_FILE", str(tmp_path / "home" / "run" / "egress-workers.json"))
    monkeypatch.setattr(egress_rules, "HOME_IN_PARENT", str(tmp_path / "home"))
    (tmp_path / "resolv.conf").write_text("nameserver 127.0.0.11\n", encoding="utf-8")
    monkeypatch.setattr(egress_rules, "RESOLV_CONF", str(tmp_path / "resolv.conf"))
    return tmp_path


def entry(uid, allow=(), warm=False, at=1.0, base_url=""):
    return {"uid": uid, "allow": list(allow), "base_url": base_url, "warm": warm, "at": at}


def test_a_claimed_worker_decides_its_uid_over_idle_warm_ones():
    workers = {"a": entry(2001, ["192.0.2.1"], warm=True, at=1), "b": entry(2001, ["192.0.2.2"], at=0),
               "c": entry(2002, ["192.0.2.3"], warm=True, at=1), "d": entry(2002, ["192.0.2.4"], warm=True, at=2)}
    policies = egress_rules.per_uid_policies(workers)
    assert "192.0.2.2" in [e.text for e in policies[2001].entries]
    assert "192.0.2.4" in [e.text for e in policies[2002].entries]  # the newest warm worker
    assert all(p.mode == "allowlist" for p in policies.values())


def test_a_second_policy_for_a_running_uid_is_refused_in_one_line():
    workers = {"a": entry(2001, ["192.0.2.1"]), "w": entry(2002, ["192.0.2.9"], warm=True)}
    why = egress_rules.conflict(workers, "b", entry(2001, ["192.0.2.2"]))
    assert why.startswith("egress_allow: uid 2001 already runs worker a with another egress policy (192.0.2.1)")
    assert "user: UID:GID" in why and "\n" not in why
    assert egress_rules.conflict(workers, "b", entry(2001, ["192.0.2.1"])) == ""  # the same policy: shared
    assert egress_rules.conflict(workers, "a", entry(2001, ["192.0.2.2"])) == ""  # itself (a claim changing it)
    assert egress_rules.conflict(workers, "b", entry(2002, [])) == ""  # an idle warm worker follows


def test_rules_are_written_whole_at_start_then_only_what_changed(files):
    runner = Runner()
    with egress_rules.locked():
        state = egress_rules.refresh(("allowlist", ["192.0.2.0/24:443"], ""), force=True, workers={}, runner=runner)
    assert state["error"] == "" and state["uids"] == []
    programs = [argv[0] for argv, _text in runner.calls]
    assert programs == ["iptables-restore", "iptables", "iptables", "ip6tables-restore", "ip6tables", "ip6tables"]
    v4 = runner.restored()[0][1]
    assert f":{CHAIN} - [0:0]" in v4 and f":{NAMESPACE_CHAIN} - [0:0]" in v4 and "-d 192.0.2.0/24 -p tcp -m tcp --dport 443" in v4
    assert "-d 127.0.0.11/32 -p udp -m udp --dport 53" in v4
    assert ["iptables", "-w", "-A", "OUTPUT", "-j", CHAIN] in [call[0] for call in runner.calls]
    # api.anthropic.com is not resolved yet: it allows nothing, with a warning
    assert any("api.anthropic.com is not allowed for now" in w for w in state["warnings"])

    runner.calls.clear()
    with egress_rules.locked():
        egress_rules.refresh(workers={}, runner=runner)
    assert runner.calls == []  # nothing changed: nothing written

    resolved = {"api.anthropic.com": Resolved(("160.79.104.10",), 60, "")}
    with egress_rules.locked():
        state = egress_rules.refresh(resolved=resolved, now=1000.0, workers={}, runner=runner)
    assert [(p, t.count(":HAL9000")) for p, t in runner.restored()] == [("iptables-restore", 1)]  # the namespace chain alone
    assert "-d 160.79.104.10/32 -p tcp -m tcp --dport 443" in runner.restored()[0][1]
    assert state["next_at"] == 1060.0 and state["warnings"] == []


def test_a_workers_policy_rewrites_its_chain_and_the_dispatcher_and_goes_with_it(files):
    runner = Runner()
    with egress_rules.locked():
        egress_rules.refresh(("allowlist", [], ""), force=True, workers={}, runner=runner)
    runner.calls.clear()
    state = egress_rules.register("c1", 2001, "198.51.100.7:8080", runner=runner)
    assert state["uids"] == [2001]
    v4 = dict(runner.restored())["iptables-restore"]
    assert f":{CHAIN}-2001 - [0:0]" in v4 and f"-A {CHAIN} -m owner --uid-owner 2001 -g {CHAIN}-2001" in v4
    assert f":{NAMESPACE_CHAIN}" not in v4  # untouched
    assert egress_rules.read_workers()["c1"]["allow"] == ["198.51.100.7:8080"]  # kept in the home: survives a restart

    with pytest.raises(EgressError, match="uid 2001 already runs worker c1"):
        egress_rules.register("c2", 2001, "203.0.113.1", runner=runner)
    assert "c2" not in egress_rules.read_workers()

    runner.calls.clear()
    egress_rules.forget(["c1"], runner=runner)
    assert ["iptables", "-w", "-X", f"{CHAIN}-2001"] in [call[0] for call in runner.calls]
    assert egress_rules.read_workers() == {}
    assert egress_rules.forget(["c1"], runner=runner) is None  # nothing of it left


def test_open_keeps_the_refusals_and_warns(files):
    with egress_rules.locked():
        state = egress_rules.refresh(("open", [], ""), force=True, workers={}, runner=Runner())
    assert OPEN_WARNING in state["warnings"]


def test_a_failed_restore_is_reported_and_everything_rewritten_next_time(files):
    runner = Runner(fail={"iptables-restore": 4})
    with egress_rules.locked():
        state = egress_rules.refresh(("allowlist", [], ""), force=True, workers={}, runner=runner)
    assert state["error"] == "iptables-restore: iptables: Permission denied (you must be root)." and state["chains"] is None
    runner = Runner()
    with egress_rules.locked():
        egress_rules.refresh(workers={}, runner=runner)
    assert len(runner.restored()) == 2  # both versions, whole


def test_a_bad_workers_file_entry_is_skipped(files):
    Path(egress_rules.WORKERS_FILE).parent.mkdir(parents=True)
    Path(egress_rules.WORKERS_FILE).write_text(
        '{"workers": {"a": {"uid": 2001, "allow": ["169.254.169.254"]}, "b": {"uid": 2002, "allow": ["192.0.2.1"]}}}',
        encoding="utf-8")
    assert list(egress_rules.read_workers()) == ["b"]


# ---------------------------------------------------------------- the worker and pool option egress_allow

def test_a_workers_own_allowlist_is_normalised_kept_out_of_the_digest_and_labelled():
    from ansible_collections.hal9000.dind.plugins.module_utils.settings import resolve
    from ansible_collections.hal9000.dind.plugins.module_utils.workers import egress_of, worker_spec

    common = {"name": "h9unit-eg", "check_host_paths": False, "claude_home": "ephemeral", "settings": resolve(),
              "user": "2001:2001"}
    plain = worker_spec(**common)
    own = worker_spec(egress_allow=["Pkgs.Example:443", "192.0.2.0/24"], **common)
    assert plain["egress_allow"] is None and own["egress_allow"] == ["pkgs.example:443", "192.0.2.0/24"]
    assert own["digest"] == plain["digest"]  # a claim may take a warm worker of another policy and apply its own
    assert worker_spec(egress_allow=[], **common)["egress_allow"] == []  # the defaults only
    assert egress_of({"io.hal9000.egress-allow": "pkgs.example:443,192.0.2.0/24"}) == own["egress_allow"]
    assert egress_of({"io.hal9000.egress-allow": ""}) == [] and egress_of({}) is None


@pytest.mark.parametrize("args,message", [
    ({"egress_allow": ["169.254.169.254"]}, "always refused"),
    ({"egress_allow": ["https://example.com"]}, "not a URL"),
    ({"egress_allow": ["192.0.2.1"], "user": "claude"}, "numeric user"),
    ({"egress_allow": ["192.0.2.1"], "mode": "legacy"}, "dind workers"),
])
def test_a_bad_egress_allow_is_refused_before_docker_is_touched(args, message):
    from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
    from ansible_collections.hal9000.dind.plugins.module_utils.settings import resolve
    from ansible_collections.hal9000.dind.plugins.module_utils.workers import worker_spec

    with pytest.raises(Hal9000Error, match=message):
        worker_spec(**dict({"name": "h9unit-eg", "check_host_paths": False, "claude_home": "ephemeral",
                            "settings": resolve()}, **args))


def test_pools_of_one_uid_must_agree_on_egress_allow():
    from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
    from ansible_collections.hal9000.dind.plugins.module_utils.pool import validate_pools

    kept = validate_pools({"pools": [{"name": "pa", "user": "2001:2001", "egress_allow": ["pkgs.example"]},
                                     {"name": "pb"}]})["pools"]
    assert [p["egress_allow"] for p in kept] == [["pkgs.example"], None]
    with pytest.raises(Hal9000Error, match="Pools pa and pb run as uid 1001 with different egress_allow"):
        validate_pools({"pools": [{"name": "pa", "egress_allow": ["pkgs.example"]}, {"name": "pb"}]})
    with pytest.raises(Hal9000Error, match="Pool pa: egress_allow '10.0.0.0/7'"):
        validate_pools({"pools": [{"name": "pa", "user": "2001", "egress_allow": ["10.0.0.0/7"]}]})


def test_status_shows_the_mode_and_warns_for_open_and_for_missing_rules():
    from ansible_collections.hal9000.dind.plugins.module_utils.status import egress_lines

    assert egress_lines({}) == []
    assert egress_lines({"mode": "allowlist", "allow": ["pkgs.example:443"], "warnings": [], "error": ""}) == [
        "Worker egress: allowlist (also allowed: pkgs.example:443)"]
    assert egress_lines({"mode": "open", "allow": [], "warnings": [OPEN_WARNING], "error": ""}) == [
        "Worker egress: open", f"  WARNING: {OPEN_WARNING}"]
    assert egress_lines({"mode": "allowlist", "allow": [], "warnings": [], "error": "iptables-restore: Permission denied"}) == [
        "Worker egress: allowlist", "  WARNING: egress rules not applied: iptables-restore: Permission denied"]
