"""benchmarks/_setup.py's Goals: met and missed goals, the exit status, and the JSON lines for scripts/bench.sh."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[2] / "benchmarks" / "_setup.py"


@pytest.fixture(scope="module", name="bench_setup")
def fixture_bench_setup():
    """benchmarks/_setup.py, loaded by path; the sys.path entries it adds are taken back afterwards."""
    saved = list(sys.path)
    spec = importlib.util.spec_from_file_location("bench_setup", SETUP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.path[:] = saved
    return module


def lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_all_met_exits_0(bench_setup, tmp_path):
    goals = bench_setup.Goals("/x/benchmarks/pool_claims.py", results_path=str(tmp_path / "r.jsonl"))
    assert goals.at_most("claim p50", 3.24, 10, "ms") is True
    assert goals.check("second run", "4.2 s, changed=0", "<= 10 s and changed=0", True) is True
    assert goals.run(lambda: None) == 0
    assert lines(tmp_path / "r.jsonl") == [
        {"script": "pool_claims", "figure": "claim p50", "value": "3.2 ms", "goal": "<= 10 ms", "met": True},
        {"script": "pool_claims", "figure": "second run", "value": "4.2 s, changed=0", "goal": "<= 10 s and changed=0", "met": True},
    ]


def test_a_missed_goal_exits_1_and_is_printed(bench_setup, tmp_path, capsys):
    goals = bench_setup.Goals("image_sizes", results_path=str(tmp_path / "r.jsonl"))

    def main():
        goals.at_most("parent", 215.6, 264, "MB")
        assert goals.at_most("ratio", 1.62, 1.5, "", digits=2) is False

    assert goals.run(main) == 1
    out = capsys.readouterr().out
    assert "goals of image_sizes: 1 of 2 met" in out
    assert "MISSED ratio: 1.62 (goal <= 1.5)" in out
    assert [line["met"] for line in lines(tmp_path / "r.jsonl")] == [True, False]


def test_at_most_includes_the_limit(bench_setup):
    goals = bench_setup.Goals("x", results_path="")
    assert goals.at_most("refill", 10.0, 10, "s") is True
    assert goals.exit_status() == 0


def test_a_crash_exits_2_and_keeps_the_goals_so_far(bench_setup, tmp_path, capsys):
    goals = bench_setup.Goals("worker_spawn", results_path=str(tmp_path / "r.jsonl"))

    def main():
        goals.at_most("cold spawn ratio", 0.86, 1.1, "", digits=2)
        raise RuntimeError("ansible-playbook failed:\nmore detail")

    assert goals.run(main) == 2
    captured = capsys.readouterr()
    assert "Traceback" in captured.err
    assert "FAILED before it finished: RuntimeError: ansible-playbook failed:" in captured.out
    assert lines(tmp_path / "r.jsonl") == [
        {"script": "worker_spawn", "figure": "cold spawn ratio", "value": "0.86", "goal": "<= 1.1", "met": True},
        {"script": "worker_spawn", "failed": "RuntimeError: ansible-playbook failed:"},
    ]


def test_results_are_appended_from_the_environment(bench_setup, tmp_path, monkeypatch):
    path = tmp_path / "r.jsonl"
    path.write_text('{"script": "earlier", "figure": "f", "value": "1 s", "goal": "<= 2 s", "met": true}\n', encoding="utf-8")
    monkeypatch.setenv(bench_setup.RESULTS_ENV, str(path))
    goals = bench_setup.Goals("later")
    goals.check("f", "3 s", "<= 2 s", False)
    goals.report(out=io.StringIO())
    assert [(line["script"], line["met"]) for line in lines(path)] == [("earlier", True), ("later", False)]


def test_nothing_is_written_without_a_results_file(bench_setup, tmp_path, monkeypatch):
    monkeypatch.delenv(bench_setup.RESULTS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    goals = bench_setup.Goals("x")
    goals.check("f", "1", "<= 2", True)
    goals.report(out=io.StringIO())
    assert not list(tmp_path.iterdir())
