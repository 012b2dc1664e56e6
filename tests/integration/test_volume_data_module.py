"""hal9000.dind.volume_data against the real Docker Engine: import, export, verify, keep aside."""

from __future__ import annotations

import filecmp
import hashlib
import os
import random
import re
import shutil
import subprocess
import time

import pytest

from ansible_collections.hal9000.dind.plugins.module_utils import (
    volume_archive,
    volume_bind_copy,
    volume_export,
    volume_helpers,
    volume_import,
    volume_manifest,
)
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.manifest import manifest_of_directory, summary
from ansible_collections.hal9000.dind.plugins.module_utils.volume_data import transfer
from ansible_collections.hal9000.dind.plugins.module_utils.volume_helpers import VOLUME_DIR, helper_container
from ansible_collections.hal9000.dind.plugins.module_utils.volume_manifest import archive_manifest
from trees import assert_same_tree, make_tree, write_random

MODULE = "hal9000.dind.volume_data"
IMAGE = "debian:bookworm-slim"
HELPER_FILTER = {"label": "io.hal9000.type=volume-data-helper"}


@pytest.fixture(autouse=True)
def no_helper_left(docker_client):
    yield
    left = docker_client.containers.list(ignore_removed=True, all=True, filters=HELPER_FILTER)
    assert not left, f"helper containers left behind: {[c.name for c in left]}"


def snapshot(client, prefix):
    """This session's containers and volumes, and every volume_data helper (others' objects come and go)."""
    containers = client.containers.list(ignore_removed=True, all=True, filters={"name": prefix})
    containers += client.containers.list(ignore_removed=True, all=True, filters=HELPER_FILTER)
    return (
        sorted(c.name for c in containers),
        sorted(v.name for v in client.volumes.list(filters={"name": prefix})),
    )


def volume_files(volume, *command):
    """Run a command in a throwaway container over the volume: an independent look at its content."""
    return subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-v", f"{volume}:/v:ro", IMAGE, *command],
        check=True, capture_output=True, text=True,
    ).stdout


def one_line_failure(result, *words):
    assert result["failed"] is True, result
    assert "\n" not in result["msg"] and "Traceback" not in result["msg"], result["msg"]
    for word in words:
        assert word in result["msg"], result["msg"]


def test_import_then_export_is_byte_for_byte(ansible, docker_client, prefix, tmp_path):
    source = make_tree(tmp_path / "source")
    volume = f"{prefix}-data-roundtrip"

    first = ansible.task(MODULE, {"direction": "import", "volume": volume, "path": str(source)}, diff=True)
    assert first["changed"] is True and first["verified"] is True, first
    assert first["target_state"] == "missing"
    assert first["actions"][0] == f"create volume {volume}"
    assert first["source"] == first["target"] == summary(manifest_of_directory(str(source)))
    assert first["diff"]["before"] == {} and first["diff"]["after"] == first["target"]
    assert first["kept_aside"] is None and first["throughput_mb_s"] > 0

    # An independent look: sha256sum and stat inside a plain container.
    key = source / "private" / "secret.key"
    listed = volume_files(volume, "sha256sum", "/v/private/secret.key")
    assert listed.split()[0] == hashlib.sha256(key.read_bytes()).hexdigest()
    modes = volume_files(volume, "stat", "-c", "%a %u %g %F", "/v", "/v/private/secret.key", "/v/shared", "/v/bin/setuid", "/v/loop")
    assert modes.splitlines() == [
        "750 0 0 directory", "600 1234 5678 regular file", "2775 1000 1000 directory", "4755 0 0 regular file", "777 0 0 symbolic link",
    ]

    again = ansible.task(MODULE, {"direction": "import", "volume": volume, "path": str(source)})
    assert again["changed"] is False and again["target_state"] == "matching" and again["actions"] == [], again

    exported = tmp_path / "exported"
    out = ansible.task(MODULE, {"direction": "export", "volume": volume, "path": str(exported)})
    assert out["changed"] is True and out["verified"] is True, out
    assert out["source"]["digest"] == first["source"]["digest"]
    assert_same_tree(source, exported)
    assert not list(tmp_path.glob("exported.hal9000-partial-*"))

    out_again = ansible.task(MODULE, {"direction": "export", "volume": volume, "path": str(exported)})
    assert out_again["changed"] is False and out_again["target_state"] == "matching", out_again


def test_check_mode_creates_and_writes_nothing(ansible, docker_client, prefix, tmp_path):
    source = make_tree(tmp_path / "source")
    volume = f"{prefix}-data-check"
    before = snapshot(docker_client, prefix)
    planned = ansible.task(MODULE, {"direction": "import", "volume": volume, "path": str(source)}, check_mode=True, diff=True)
    assert planned["changed"] is True and planned["verified"] is False, planned
    assert planned["target_state"] == "missing"
    assert planned["actions"][0] == f"create volume {volume}" and planned["actions"][1].startswith("import ")
    assert planned["target"] == planned["source"] == summary(manifest_of_directory(str(source)))
    assert snapshot(docker_client, prefix) == before

    # A volume with other content, mode=replace: the plan names where the old content would go.
    docker_client.volumes.create(volume)
    volume_files_rw(volume, "sh", "-c", "echo old > /v/old.txt")
    before = snapshot(docker_client, prefix)
    planned = ansible.task(
        MODULE, {"direction": "import", "volume": volume, "path": str(source), "mode": "replace"}, check_mode=True, diff=True,
    )
    assert planned["changed"] is True and planned["target_state"] == "different", planned
    assert planned["kept_aside"].startswith(f"{volume}-replaced-")
    assert planned["diff"]["before"]["files"] == 1
    assert planned["differences"][1] == ".: mode 0750 vs 0755" and planned["differences"][-1].startswith("... and ")
    assert snapshot(docker_client, prefix) == before
    assert volume_files(volume, "ls", "-A", "/v") == "old.txt\n"

    target = tmp_path / "not-created"
    planned = ansible.task(MODULE, {"direction": "export", "volume": volume, "path": str(target)}, check_mode=True)
    assert planned["changed"] is True and planned["source"]["files"] == 1, planned
    assert not list(tmp_path.glob("not-created*")), "neither the target nor a staging directory"
    assert snapshot(docker_client, prefix) == before


def volume_files_rw(volume, *command):
    subprocess.run(["docker", "run", "--rm", "--network", "none", "-v", f"{volume}:/v", IMAGE, *command], check=True)


def test_into_empty_refuses_and_writes_nothing(ansible, docker_client, prefix, tmp_path):
    first = make_tree(tmp_path / "first")
    second = tmp_path / "second"
    second.mkdir()
    (second / "other.txt").write_text("other")
    volume = f"{prefix}-data-refuse"
    assert ansible.task(MODULE, {"direction": "import", "volume": volume, "path": str(first)})["changed"] is True
    before = snapshot(docker_client, prefix)
    refused = ansible.task(MODULE, {"direction": "import", "volume": volume, "path": str(second)})
    one_line_failure(refused, volume, "not empty", "mode=replace", "Nothing was written")
    assert snapshot(docker_client, prefix) == before
    copy = tmp_path / "copy"
    ansible.task(MODULE, {"direction": "export", "volume": volume, "path": str(copy)})
    assert_same_tree(first, copy)

    # Export into a directory holding something else.
    refused = ansible.task(MODULE, {"direction": "export", "volume": volume, "path": str(second)})
    one_line_failure(refused, str(second), "not empty", "Nothing was written")
    assert sorted(os.listdir(second)) == ["other.txt"]
    assert not list(tmp_path.glob("second.*"))


def test_import_replace_keeps_old_content_in_a_volume(ansible, docker_client, prefix, tmp_path):
    old = make_tree(tmp_path / "old", seed=1)
    new = make_tree(tmp_path / "new", seed=2)
    volume = f"{prefix}-data-replace"
    ansible.task(MODULE, {"direction": "import", "volume": volume, "path": str(old)})
    result = ansible.task(MODULE, {"direction": "import", "volume": volume, "path": str(new), "mode": "replace"}, diff=True)
    assert result["changed"] is True and result["verified"] is True, result
    aside = result["kept_aside"]
    assert aside.startswith(f"{volume}-replaced-")
    assert docker_client.volumes.get(aside).attrs["Labels"]["io.hal9000.replaced-from"] == volume
    assert result["actions"][:2] == [
        f"keep the old content of volume {volume} ({result['diff']['before']['files']} files, "
        f"{result['diff']['before']['bytes']} bytes) in volume {aside}",
        f"empty volume {volume}",
    ]
    for name, tree in ((volume, new), (aside, old)):
        copy = tmp_path / f"copy-{name}"
        ansible.task(MODULE, {"direction": "export", "volume": name, "path": str(copy)})
        assert_same_tree(tree, copy)


def test_import_replace_keeps_old_content_in_a_directory(ansible, docker_client, prefix, tmp_path):
    old = make_tree(tmp_path / "old", seed=3)
    new = tmp_path / "new"
    new.mkdir()
    (new / "only.txt").write_text("new")
    volume = f"{prefix}-data-replace-dir"
    keep = tmp_path / "kept" / "old content"
    keep.parent.mkdir()
    ansible.task(MODULE, {"direction": "import", "volume": volume, "path": str(old)})
    before = snapshot(docker_client, prefix)
    result = ansible.task(
        MODULE, {"direction": "import", "volume": volume, "path": str(new), "mode": "replace", "keep_aside": str(keep)},
    )
    assert result["changed"] is True and result["kept_aside"] == str(keep), result
    assert snapshot(docker_client, prefix) == before, "no aside volume when keep_aside is given"
    assert_same_tree(old, keep)
    assert volume_files(volume, "ls", "-A", "/v") == "only.txt\n"


def test_export_replace_moves_the_old_directory_aside(ansible, docker_client, prefix, tmp_path):
    tree = make_tree(tmp_path / "tree", seed=4)
    volume = f"{prefix}-data-export-replace"
    ansible.task(MODULE, {"direction": "import", "volume": volume, "path": str(tree)})
    target = tmp_path / "target"
    target.mkdir()
    (target / "precious.txt").write_text("keep me")
    result = ansible.task(MODULE, {"direction": "export", "volume": volume, "path": str(target), "mode": "replace"})
    assert result["changed"] is True and result["verified"] is True, result
    aside = result["kept_aside"]
    assert aside.startswith(f"{target}.replaced-")
    assert os.listdir(aside) == ["precious.txt"] and open(os.path.join(aside, "precious.txt")).read() == "keep me"
    assert_same_tree(tree, target)


def test_import_refuses_a_volume_used_by_a_running_container(ansible, docker_client, prefix, tmp_path):
    volume = f"{prefix}-data-busy"
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_text("x")
    docker_client.volumes.create(volume)
    user = docker_client.containers.run(
        IMAGE, ["sleep", "60"], name=f"{prefix}-busy-user", volumes={volume: {"bind": "/data"}}, detach=True, network_mode="none",
    )
    try:
        refused = ansible.task(MODULE, {"direction": "import", "volume": volume, "path": str(source)})
        one_line_failure(refused, f"{prefix}-busy-user", "stop them first", "Nothing was written")
    finally:
        user.remove(force=True)
    assert volume_files(volume, "ls", "-A", "/v") == ""


@pytest.mark.parametrize("args, words", [
    ({"volume": "../x"}, ["Invalid volume name"]),
    ({"volume": "a b"}, ["Invalid volume name"]),
    ({"volume": "x"}, ["Invalid volume name"]),
    ({"volume": "$(id)"}, ["Invalid volume name"]),
    ({"path": "relative/dir"}, ["not an absolute path"]),
    ({"direction": "export", "path": "relative"}, ["not an absolute path"]),
    ({"keep_aside": "kept", "mode": "replace"}, ["keep_aside", "not an absolute path"]),
])
def test_bad_input_is_refused_before_any_api_call(ansible, docker_client, prefix, tmp_path, args, words):
    source = tmp_path / "src"
    source.mkdir()
    task = {"direction": "import", "volume": f"{prefix}-data-never", "path": str(source),
            # No daemon answers here: a message about the input proves no API call was tried.
            "docker_host": f"unix://{tmp_path}/no-daemon.sock"}
    task.update(args)
    before = snapshot(docker_client, prefix)
    one_line_failure(ansible.task(MODULE, task), *words)
    assert snapshot(docker_client, prefix) == before


def test_missing_helper_image_is_refused_in_one_line(ansible, docker_client, prefix, tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    before = snapshot(docker_client, prefix)
    result = ansible.task(MODULE, {
        "direction": "import", "volume": f"{prefix}-data-noimage", "path": str(source), "helper_image": "hal9000/not-built:never",
    })
    one_line_failure(result, "hal9000/not-built:never", "never pulled")
    assert snapshot(docker_client, prefix) == before
    assert "hal9000/not-built:never" not in [tag for image in docker_client.images.list() for tag in image.tags]


def test_missing_or_wrong_paths_and_volumes_create_nothing(ansible, docker_client, prefix, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    before = snapshot(docker_client, prefix)
    one_line_failure(
        ansible.task(MODULE, {"direction": "import", "volume": f"{prefix}-data-x", "path": str(tmp_path / "missing")}),
        "does not exist",
    )
    one_line_failure(ansible.task(MODULE, {"direction": "import", "volume": f"{prefix}-data-x", "path": str(a_file)}), "not a directory")
    one_line_failure(
        ansible.task(MODULE, {"direction": "export", "volume": f"{prefix}-data-missing", "path": str(tmp_path / "out")}),
        f"Volume {prefix}-data-missing does not exist",
    )
    docker_client.volumes.create(f"{prefix}-data-exists")
    before = snapshot(docker_client, prefix)
    one_line_failure(
        ansible.task(MODULE, {"direction": "export", "volume": f"{prefix}-data-exists", "path": str(a_file)}),
        "not a directory",
    )
    one_line_failure(
        ansible.task(MODULE, {"direction": "export", "volume": f"{prefix}-data-exists", "path": str(tmp_path / "no" / "parent")}),
        "does not exist",
    )
    assert snapshot(docker_client, prefix) == before
    assert a_file.read_text() == "x" and not (tmp_path / "out").exists() and not (tmp_path / "no").exists()


# The large test: one 50 MB file and 5,000 small files, through the module both ways.
def test_large_tree_50_mb_file_and_5000_small_files(ansible, docker_client, prefix, tmp_path):
    rng = random.Random(50)
    source = tmp_path / "large"
    source.mkdir()
    write_random(source / "fifty-mb.bin", 50 * 1000 * 1000, rng)
    for index in range(5000):
        folder = source / f"batch {index // 500:02d}"
        folder.mkdir(exist_ok=True)
        (folder / f"small-{index}.txt").write_bytes(rng.randbytes(rng.randrange(1, 2048)))
    volume = f"{prefix}-data-large"
    result = ansible.task(MODULE, {"direction": "import", "volume": volume, "path": str(source)})
    assert result["changed"] is True and result["verified"] is True, result
    assert result["source"]["files"] == 5001 and result["source"]["bytes"] > 50 * 1000 * 1000
    assert result["seconds"] > 0 and result["throughput_mb_s"] > 0
    exported = tmp_path / "large-copy"
    out = ansible.task(MODULE, {"direction": "export", "volume": volume, "path": str(exported)})
    assert out["verified"] is True and out["target"]["digest"] == result["source"]["digest"], out
    assert filecmp.cmp(source / "fifty-mb.bin", exported / "fifty-mb.bin", shallow=False)
    assert_same_tree(source, exported)
    shutil.rmtree(exported)


# --- verification must be able to fail, whether the helper computes the manifest (python3) or the volume is read back.

HELPERS = ["hal9000/parent:latest", IMAGE]  # with python3, and without (debian:bookworm-slim has none)


def small_tree(root):
    root.mkdir()
    content = bytearray(os.urandom(100_000))
    content[500] = 0  # so that TAMPERING's "flipped byte" (an X at 500) always changes it
    (root / "a.bin").write_bytes(content)
    (root / "a.bin").chmod(0o644)
    (root / "dir").mkdir()
    (root / "dir" / "b.txt").write_text("b")
    (root / "empty").mkdir()
    (root / "link").symlink_to("a.bin")
    return root


# Each changes what is in the volume after the copy; the reason the verification must give.
TAMPERING = {
    "flipped byte": ("printf X | dd of=/v/a.bin bs=1 seek=500 conv=notrunc status=none", "a.bin: content"),
    "mode": ("chmod 600 /v/a.bin", "a.bin: mode 0644 vs 0600"),
    "owner": ("chown 7:7 /v/dir/b.txt", "dir/b.txt: owner 0:0 vs 7:7"),
    "extra file": ("touch /v/dir/extra", "dir/extra: only in the volume"),
    "missing file": ("rm /v/dir/b.txt", "dir/b.txt: only in the source"),
    "link target": ("ln -sfn dir /v/link", "link: link target"),
    "empty dir gone": ("rmdir /v/empty", "empty: only in the source"),
}


def tamper(client, volume, command):
    client.containers.run(IMAGE, ["sh", "-c", command], volumes={volume: {"bind": "/v"}}, remove=True, network_disabled=True)


def spy_in_helper(monkeypatch):
    """Record what the helper computed, to prove which side decided."""
    seen = []
    original = volume_manifest._manifest_in_helper

    def spy(*args):
        seen.append(original(*args))
        return seen[-1]

    monkeypatch.setattr(volume_manifest, "_manifest_in_helper", spy)
    return seen


@pytest.mark.parametrize("helper", HELPERS)
def test_manifest_computed_in_the_helper_equals_the_read_back(docker_client, prefix, tmp_path, helper):
    source = make_tree(tmp_path / "source")
    os.mkfifo(source / "fifo")
    volume = f"{prefix}-data-inplace-{helper.split('/')[0].split(':')[0]}"
    result = transfer(docker_client, "import", volume, str(source), helper_image=helper)
    assert result["verified"] is True, result
    with helper_container(docker_client, helper, {volume: (VOLUME_DIR, True)}, volume) as container:
        in_helper = volume_manifest._manifest_in_helper(docker_client, container, VOLUME_DIR)
        read_back = archive_manifest(docker_client, container)
    assert read_back == manifest_of_directory(str(source))
    assert in_helper == (read_back if helper != IMAGE else None)


@pytest.mark.parametrize("bind_mount", [True, False], ids=["bind-mount copy", "archive API copy"])
def test_the_helper_verifies_without_reading_the_volume_back(docker_client, prefix, tmp_path, monkeypatch, bind_mount):
    source = small_tree(tmp_path / "source")
    monkeypatch.setattr(volume_import, "daemon_shares_host_paths", lambda client: bind_mount)
    for reader in (volume_manifest, volume_bind_copy):
        monkeypatch.setattr(reader, "archive_manifest", lambda *args: pytest.fail("the volume was read back"))
    result = transfer(docker_client, "import", f"{prefix}-data-no-read-back-{int(bind_mount)}", str(source), helper_image=HELPERS[0])
    assert result["verified"] is True and result["target"] == result["source"], result


@pytest.mark.parametrize("change", sorted(TAMPERING))
@pytest.mark.parametrize("helper", HELPERS)
def test_a_bind_mount_copy_that_differs_is_replaced_by_the_archive_api(docker_client, prefix, tmp_path, monkeypatch, helper, change):
    command, reason = TAMPERING[change]
    source = small_tree(tmp_path / "source")
    volume = f"{prefix}-data-bind-tampered-{sorted(TAMPERING).index(change)}-{HELPERS.index(helper)}"
    # The helper's copy step changes the volume right after cp, as a daemon seeing another tree would.
    monkeypatch.setattr(volume_helpers, "_COPY_SCRIPT", volume_helpers._COPY_SCRIPT.replace(
        f"/{VOLUME_DIR}/ || exit", f"/{VOLUME_DIR}/ && {command.replace('/v/', f'/{VOLUME_DIR}/')} || exit", 1))
    sends = []
    send = volume_archive.send_directory
    monkeypatch.setattr(volume_import, "send_directory", lambda *args: sends.append(args) or send(*args))
    result = transfer(docker_client, "import", volume, str(source), helper_image=helper)
    (warning,) = result["warnings"]
    assert "from a bind mount did not work (the copy differs: " in warning and reason in warning, warning
    assert len(sends) == 1 and result["verified"] is True, result
    with helper_container(docker_client, helper, {volume: (VOLUME_DIR, True)}, volume) as container:
        assert archive_manifest(docker_client, container) == manifest_of_directory(str(source)), "the tampered copy was cleared first"


def test_an_import_from_a_local_daemon_is_copied_from_a_bind_mount(docker_client, prefix, tmp_path, monkeypatch):
    source = make_tree(tmp_path / "source: with a colon, and a comma")
    monkeypatch.setattr(volume_import, "send_directory", lambda *args: pytest.fail("streamed through the archive API"))
    volume = f"{prefix}-data-bind"
    result = transfer(docker_client, "import", volume, str(source))
    assert result["verified"] is True and result["warnings"] == [] and result["target"] == result["source"], result
    with helper_container(docker_client, IMAGE, {volume: (VOLUME_DIR, True)}, volume) as container:
        assert archive_manifest(docker_client, container) == manifest_of_directory(str(source))
    assert os.listdir(source.parent) == [source.name], "the read-only source was not written to"


def count_helpers(monkeypatch):
    started = []
    helper = volume_helpers.helper_container

    def counted(*args, **kwargs):
        started.append(kwargs.get("if_empty", False))
        return helper(*args, **kwargs)

    for maker in (volume_helpers, volume_bind_copy, volume_import):  # every module an import makes helpers in
        monkeypatch.setattr(maker, "helper_container", counted)
    return started


def test_one_helper_looks_into_an_existing_volume_and_copies_if_it_is_empty(docker_client, prefix, tmp_path, monkeypatch):
    source = make_tree(tmp_path / "source")
    volume = f"{prefix}-data-existing-empty"
    docker_client.volumes.create(volume)
    helpers = count_helpers(monkeypatch)
    result = transfer(docker_client, "import", volume, str(source))
    assert helpers == [True], "one helper, copying only into an empty volume"
    assert result["target_state"] == "empty" and result["verified"] is True and result["target"] == result["source"], result
    assert result["target_before"]["files"] == 0 and result["target_before"]["dirs"] == 0, result
    with helper_container(docker_client, IMAGE, {volume: (VOLUME_DIR, True)}, volume) as container:
        assert archive_manifest(docker_client, container) == manifest_of_directory(str(source))

    # Not empty any more: the same helper writes nothing, and the content it saw decides.
    other = small_tree(tmp_path / "other")
    with pytest.raises(Hal9000Error, match="is not empty .* and differs from"):
        transfer(docker_client, "import", volume, str(other))
    assert helpers == [True, True], "the manifest the helper printed was used"
    again = transfer(docker_client, "import", volume, str(source))
    assert again["changed"] is False and again["target_state"] == "matching", again
    with helper_container(docker_client, IMAGE, {volume: (VOLUME_DIR, True)}, volume) as container:
        assert archive_manifest(docker_client, container) == manifest_of_directory(str(source))


def test_a_source_that_cannot_be_read_leaves_an_empty_volume_empty(docker_client, prefix, tmp_path, monkeypatch):
    source = small_tree(tmp_path / "source")
    volume = f"{prefix}-data-unreadable"
    docker_client.volumes.create(volume)

    def unreadable(path):  # the host's hash of the source, while the helper copies
        time.sleep(0.5)
        raise PermissionError(13, "Permission denied", f"{path}/a.bin")

    monkeypatch.setattr(volume_bind_copy, "manifest_of_directory", unreadable)
    with pytest.raises(Hal9000Error, match=r"failed: Permission denied: .*/a\.bin\.$"):
        transfer(docker_client, "import", volume, str(source))
    assert volume_files(volume, "find", "/v", "-mindepth", "1") == "", "the volume was emptied again"


def engine_without_the_directory(monkeypatch, keyword):
    """Helpers get a host directory (``keyword``: source_dir or target_dir) the engine does not have, as an engine in a VM would."""
    helper = volume_helpers.helper_container

    def elsewhere(*args, **kwargs):
        if kwargs.get(keyword):
            kwargs[keyword] += "-not-on-the-daemon"
        return helper(*args, **kwargs)

    monkeypatch.setattr(volume_bind_copy, "helper_container", elsewhere)  # only its helpers mount host directories


def test_a_source_the_daemon_cannot_mount_is_streamed_instead(docker_client, prefix, tmp_path, monkeypatch):
    source = small_tree(tmp_path / "source")
    engine_without_the_directory(monkeypatch, "source_dir")
    result = transfer(docker_client, "import", f"{prefix}-data-unmountable", str(source))
    (warning,) = result["warnings"]
    assert "did not work (Docker API error: " in warning and "-not-on-the-daemon" in warning, warning
    assert result["verified"] is True and result["target"] == result["source"], result
    assert not (tmp_path / "source-not-on-the-daemon").exists(), "the daemon created nothing on the host"


def test_a_helper_whose_cp_fails_is_replaced_by_the_archive_api(docker_client, prefix, tmp_path, monkeypatch):
    source = small_tree(tmp_path / "source")
    # As with a cp without GNU options (busybox): the copy step fails before writing.
    monkeypatch.setattr(volume_helpers, "_COPY_SCRIPT", volume_helpers._COPY_SCRIPT.replace("cp -dR", "cp --no-such-option -dR", 1))
    result = transfer(docker_client, "import", f"{prefix}-data-cp-fails", str(source))
    (warning,) = result["warnings"]
    assert "did not work (cp in hal9000/parent:latest failed: cp: unrecognized option" in warning, warning
    assert result["verified"] is True and result["target"] == result["source"], result


def test_an_unverified_import_is_streamed(docker_client, prefix, tmp_path, monkeypatch):
    source = small_tree(tmp_path / "source")
    monkeypatch.setattr(volume_import, "copy_from_bind_mount", lambda *args: pytest.fail("copied without a check that the daemon saw the source"))
    result = transfer(docker_client, "import", f"{prefix}-data-unverified", str(source), verify=False)
    assert result["verified"] is False and result["changed"] is True, result


@pytest.mark.parametrize("change", sorted(TAMPERING))
@pytest.mark.parametrize("helper", HELPERS)
def test_import_fails_when_the_volume_changes_between_copy_and_verify(docker_client, prefix, tmp_path, monkeypatch, helper, change):
    command, reason = TAMPERING[change]
    source = small_tree(tmp_path / "source")
    volume = f"{prefix}-data-tampered"
    monkeypatch.setattr(volume_import, "daemon_shares_host_paths", lambda client: False)  # the archive API path
    send = volume_archive.send_directory

    def send_then_tamper(client, container, source_dir):
        sent = send(client, container, source_dir)
        tamper(client, volume, command)
        return sent

    monkeypatch.setattr(volume_import, "send_directory", send_then_tamper)
    seen = spy_in_helper(monkeypatch)
    with pytest.raises(Hal9000Error, match=f"Verification of the import of {source} into volume {volume} failed: .*{re.escape(reason)}"):
        transfer(docker_client, "import", volume, str(source), helper_image=helper)
    if helper != IMAGE:
        assert seen[-1] is not None and seen[-1] != manifest_of_directory(str(source)), "the helper saw the change too"
    assert volume not in [v.name for v in docker_client.volumes.list(filters={"name": volume})], "the volume it created is removed"


@pytest.mark.parametrize("helper", HELPERS)
def test_a_corrupted_volume_is_not_taken_for_the_source(docker_client, prefix, tmp_path, helper):
    source = small_tree(tmp_path / "source")
    volume = f"{prefix}-data-corrupt-{helper.split('/')[0].split(':')[0]}"
    transfer(docker_client, "import", volume, str(source), helper_image=helper)
    tamper(docker_client, volume, TAMPERING["flipped byte"][0])
    plan = transfer(docker_client, "import", volume, str(source), mode="replace", helper_image=helper, check_mode=True)
    assert plan["target_state"] == "different" and plan["differences"] == ["a.bin: content"], plan
    with pytest.raises(Hal9000Error, match="differs from"):
        transfer(docker_client, "import", volume, str(source), helper_image=helper)
    fixed = transfer(docker_client, "import", volume, str(source), mode="replace", helper_image=helper)
    assert fixed["verified"] is True and fixed["kept_aside"], fixed
    again = transfer(docker_client, "import", volume, str(source), helper_image=helper)
    assert again["changed"] is False and again["target_state"] == "matching", again
    docker_client.volumes.get(fixed["kept_aside"]).remove()


@pytest.mark.parametrize("first_step", ["copy_to_bind_mount", "extract_staged"])
@pytest.mark.parametrize("helper", HELPERS)
def test_export_fails_when_the_volume_changes_before_it_is_extracted(docker_client, prefix, tmp_path, monkeypatch, helper, first_step):
    source = small_tree(tmp_path / "source")
    volume = f"{prefix}-data-export-tampered-{HELPERS.index(helper)}-{len(first_step)}"
    transfer(docker_client, "import", volume, str(source), helper_image=helper)
    if first_step == "extract_staged":
        monkeypatch.setattr(volume_export, "daemon_shares_host_paths", lambda client: False)
    step = getattr(volume_export, first_step)

    def tamper_then_copy(client, *args, **kwargs):
        if first_step == "copy_to_bind_mount":  # the volume's manifest, computed before the change instead of during cp
            *args, expected = args
            args.append(expected() if callable(expected) else expected)
        tamper(client, volume, TAMPERING["flipped byte"][0])
        return step(client, *args, **kwargs)

    monkeypatch.setattr(volume_export, first_step, tamper_then_copy)
    target = tmp_path / "exported"
    # The bind-mount copy differs from the volume's manifest, so the archive API reads the volume again: it differs too.
    with pytest.raises(Hal9000Error, match="Verification of the copy in .* failed: a.bin: content"):
        transfer(docker_client, "export", volume, str(target), helper_image=helper)
    assert sorted(os.listdir(tmp_path)) == ["source"], "nothing is left beside the target"


def test_an_export_as_root_is_copied_into_a_bind_mount(docker_client, prefix, tmp_path, monkeypatch):
    source = make_tree(tmp_path / "source")
    volume = f"{prefix}-data-export-bind"
    transfer(docker_client, "import", volume, str(source))
    monkeypatch.setattr(volume_export, "extract_staged", lambda *args, **kwargs: pytest.fail("extracted through the archive API"))
    helpers_while_hashing = []
    manifest = volume_manifest.volume_manifest

    def seen_helpers_then_manifest(*args, **kwargs):
        helpers_while_hashing.append(docker_client.api.containers(all=True, filters=HELPER_FILTER))
        return manifest(*args, **kwargs)

    monkeypatch.setattr(volume_export, "volume_manifest", seen_helpers_then_manifest)
    target = tmp_path / "exported: with a colon, and a comma"
    result = transfer(docker_client, "export", volume, str(target))
    (helpers,) = helpers_while_hashing
    assert any(h["Command"].startswith("cp ") for h in helpers), "into a new directory, cp runs while the volume is hashed"
    assert result["verified"] is True and result["warnings"] == [] and result["target"] == result["source"], result
    assert_same_tree(source, target)
    assert sorted(os.listdir(tmp_path)) == sorted(["source", target.name]), "no staging directory is left"


def test_the_staging_directory_of_a_killed_export_is_removed_by_the_next_run(docker_client, prefix, tmp_path):
    source = small_tree(tmp_path / "source")
    volume = f"{prefix}-data-export-leftover"
    transfer(docker_client, "import", volume, str(source))
    target = tmp_path / "exported"
    gone = subprocess.Popen(["true"])
    gone.wait()
    leftover = tmp_path / f"exported{volume_archive.STAGING_INFIX}{gone.pid}-0123abcd"
    running = tmp_path / f"exported{volume_archive.STAGING_INFIX}{os.getppid()}-4567cdef"  # a process still alive
    for partial in (leftover, running):
        (partial / "dir").mkdir(parents=True)
        (partial / "dir" / "half.bin").write_bytes(b"half")
        os.chmod(partial / "dir", 0o500)  # as cp leaves a directory whose mode it set before the kill
    plan = transfer(docker_client, "export", volume, str(target), check_mode=True)
    assert plan["actions"][0] == f"remove {leftover}, left by an interrupted export" and len(plan["actions"]) == 2, plan
    assert leftover.exists()
    done = transfer(docker_client, "export", volume, str(target))
    assert done["actions"] == plan["actions"] and done["verified"] is True, done
    assert sorted(os.listdir(tmp_path)) == sorted(["exported", "source", running.name])
    assert_same_tree(source, target)
    again = transfer(docker_client, "export", volume, str(target))
    assert again["changed"] is False and again["actions"] == [], again


@pytest.mark.parametrize("failure", ["copy differs", "cannot mount"])
def test_an_export_whose_bind_mount_copy_fails_is_extracted_instead(docker_client, prefix, tmp_path, monkeypatch, failure):
    source = make_tree(tmp_path / "source")
    volume = f"{prefix}-data-export-fallback-{len(failure)}"
    transfer(docker_client, "import", volume, str(source))
    if failure == "copy differs":  # cp that keeps no modes, owners or times
        monkeypatch.setattr(volume_helpers, "CP_OPTIONS", ["-dR"])
    else:
        engine_without_the_directory(monkeypatch, "target_dir")
    target = tmp_path / "exported"
    result = transfer(docker_client, "export", volume, str(target))
    (warning,) = result["warnings"]
    reason = "the copy differs: " if failure == "copy differs" else "Docker API error: "
    assert f"through a bind mount did not work ({reason}" in warning, warning
    assert result["verified"] is True and result["target"] == result["source"], result
    assert_same_tree(source, target)
    assert sorted(os.listdir(tmp_path)) == ["exported", "source"], "no staging directory is left"
