"""claudy's command line: parsing, one-line errors with their exit codes, input refused before Docker is asked.

The engine these tests point claudy at is a socket path that does not exist: a missing daemon is a real
outcome here, not a stand-in. Everything that needs a running engine is in tests/integration/test_claudy.py.
"""

from __future__ import annotations

import pytest

from ansible_collections.hal9000.dind.plugins.module_utils import claudy


@pytest.fixture
def no_engine(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such-docker.sock")
    monkeypatch.delenv("HAL9000_HOME", raising=False)
    return tmp_path


def one_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("claudy: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_the_seed_commands_parse():
    common = claudy.common_options()
    launch = claudy.launch_parser(common).parse_args(["--via-parent", "--detach", "--name", "my-worker", "/srv/app"])
    assert (launch.via_parent, launch.detach, launch.name, launch.project) == (True, True, "my-worker", "/srv/app")
    assert launch.auto_remove is True and claudy.launch_parser(common).parse_args(["--no-rm"]).auto_remove is False
    seed = claudy.launch_parser(common).parse_args(["--via-parent", "--rm", "-i", "hal9000/worker:ultramin", "-d", "/srv/app"])
    assert (seed.auto_remove, seed.image, seed.detach, seed.project) == (True, "hal9000/worker:ultramin", True, "/srv/app")
    for argv in (["daemon", "start"], ["daemon", "stop", "--force"], ["pool", "scale", "3"], ["stop", "--all"],
                 ["logs", "-f", "w1"], ["ps", "--json"], ["version"]):
        assert claudy.command_parser(common).parse_args(argv).command == argv[0]


@pytest.mark.parametrize("argv", [["--via-parent", "--legacy"], ["--flavour", "ultramin", "-i", "x/y:z"]], ids=["mode", "image"])
def test_exclusive_options_are_a_usage_error(capsys, argv):
    with pytest.raises(SystemExit) as exited:
        claudy.launch_parser(claudy.common_options()).parse_args([*argv, "/srv/app"])
    assert exited.value.code == claudy.EXIT_USAGE
    assert "not allowed with argument" in capsys.readouterr().err


def test_every_command_has_help(capsys):
    for command in claudy.COMMANDS:
        with pytest.raises(SystemExit) as exited:
            claudy.main([command, "--help"])
        assert exited.value.code == 0
        assert f"usage: claudy {command}" in capsys.readouterr().out


def test_no_engine_is_exit_3_in_one_line(no_engine, capsys):
    assert claudy.main(["ps"]) == claudy.EXIT_NO_ENGINE
    assert "Cannot connect to the Docker daemon" in one_line(capsys)
    assert claudy.main(["--detach", str(no_engine)]) == claudy.EXIT_NO_ENGINE
    one_line(capsys)


@pytest.mark.parametrize("args, words", [
    (["--name", "bad name"], "Invalid worker name"),
    (["--memory", "4x"], "Invalid memory size '4x'"),
    (["--pids-limit", "-3"], "pids"),
], ids=["name", "memory", "pids"])
def test_bad_input_is_refused_before_the_engine_is_asked(no_engine, capsys, args, words):
    # No engine answers here: exit 2 (not 3) shows the input was checked first.
    assert claudy.main(["--detach", *args, str(no_engine)]) == claudy.EXIT_USAGE
    assert words in one_line(capsys)


def test_a_missing_project_dir_is_refused(no_engine, capsys):
    assert claudy.main(["--detach", str(no_engine / "nowhere")]) == claudy.EXIT_USAGE
    assert "does not exist" in one_line(capsys)


def test_listing_rows_and_human_units():
    worker = {"name": "w1", "id": "abc", "pool": "generic", "warm": True, "project": "", "state": "running",
              "status": "Up 5 minutes", "image": "hal9000/worker:latest", "created": 1000,
              "limits": {"memory": 3 << 30, "cpus": 1.5, "pids_limit": 90}}
    row = claudy.worker_row(worker, now=1000 + 3 * 3600 + 5)
    assert row["state"] == "warm" and row["age_s"] == 3 * 3600 + 5 and row["started"] == "1970-01-01T00:16:40+00:00"
    assert (row["memory"], row["cpus"], row["pids_limit"]) == (3 << 30, 1.5, 90)
    assert claudy.human_age(row["age_s"]) == "3h" and claudy.human_age(42) == "42s"
    assert claudy.human_bytes(3 << 30) == "3g" and claudy.human_bytes(512 << 20) == "512m" and claudy.human_bytes(None) == "-"
