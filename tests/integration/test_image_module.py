"""hal9000.dind.image on a small build context, against the real engine."""

from __future__ import annotations

import pytest

from helpers import snapshot

MODULE = "hal9000.dind.image"


@pytest.fixture
def small_context(tmp_path, docker_client, prefix):
    context = tmp_path / "context"
    (context / "images").mkdir(parents=True)
    (context / "images" / "Dockerfile.small").write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nARG GREETING=hello\nCOPY images/payload.txt /payload.txt\n"
        "RUN echo $GREETING > /greeting\n"
    )
    (context / "images" / "payload.txt").write_text("one\n")
    (context / "ignored.txt").write_text("not sent\n")
    (context / ".dockerignore").write_text("*\n!images/\n")
    tag = f"{prefix}-img:small"
    yield context, tag
    for image in docker_client.images.list(name=f"{prefix}-img"):
        for container in docker_client.containers.list(ignore_removed=True, all=True, filters={"ancestor": image.id}):
            container.remove(force=True, v=True)
        docker_client.images.remove(image.id, force=True)


def args(context, tag, **extra):
    return {"name": tag, "dockerfile": "images/Dockerfile.small", "context": str(context), **extra}


def test_build_then_nothing_to_do(ansible, docker_client, small_context):
    context, tag = small_context
    checked = ansible.task(MODULE, args(context, tag), check_mode=True)
    assert checked["changed"] is True
    assert checked["actions"] == [f"built {tag} from images/Dockerfile.small"]
    assert not docker_client.images.list(name=tag)

    first = ansible.task(MODULE, args(context, tag), diff=True)
    assert first["changed"] is True, first
    image = docker_client.images.get(tag)
    assert image.labels["io.hal9000.build-digest"] == first["image"]["digest"] == first["digest"]
    assert first["image"]["id"] == image.id and first["image"]["build_seconds"] > 0
    assert first["diff"]["before"] == {} and first["diff"]["after"]["id"] == image.id

    second = ansible.task(MODULE, args(context, tag))
    assert second["changed"] is False and second["actions"] == []
    assert second["image"]["id"] == image.id


def test_ignored_files_do_not_trigger_a_build(ansible, small_context):
    context, tag = small_context
    first = ansible.task(MODULE, args(context, tag))
    (context / "ignored.txt").write_text("changed, but .dockerignore keeps it out\n")
    again = ansible.task(MODULE, args(context, tag))
    assert again["changed"] is False
    assert again["digest"] == first["digest"]


def test_changed_inputs_rebuild(ansible, docker_client, small_context):
    context, tag = small_context
    first = ansible.task(MODULE, args(context, tag))
    (context / "images" / "payload.txt").write_text("two\n")
    changed_file = ansible.task(MODULE, args(context, tag))
    assert changed_file["changed"] is True and changed_file["digest"] != first["digest"]
    changed_arg = ansible.task(MODULE, args(context, tag, build_args={"GREETING": "hi"}))
    assert changed_arg["changed"] is True and changed_arg["digest"] != changed_file["digest"]
    out = docker_client.containers.run(tag, ["cat", "/payload.txt", "/greeting"], remove=True)
    assert out == b"two\nhi\n"


def test_force_rebuilds(ansible, small_context):
    context, tag = small_context
    ansible.task(MODULE, args(context, tag))
    forced = ansible.task(MODULE, args(context, tag, force=True))
    assert forced["changed"] is True and forced["actions"]


def test_same_inputs_other_tag_is_tagged_not_built(ansible, docker_client, small_context):
    context, tag = small_context
    first = ansible.task(MODULE, args(context, tag))
    other = tag.replace(":small", ":copy")
    second = ansible.task(MODULE, args(context, other))
    assert second["changed"] is True
    assert second["actions"][0].startswith("tagged ")
    assert docker_client.images.get(other).id == first["image"]["id"]


def test_absent_refuses_while_used_then_removes(ansible, docker_client, small_context, prefix):
    context, tag = small_context
    ansible.task(MODULE, args(context, tag))
    user = docker_client.containers.create(tag, name=f"{prefix}-img-user")
    refused = ansible.task(MODULE, {"name": tag, "state": "absent"})
    assert refused["failed"] is True and f"{prefix}-img-user" in refused["msg"]
    assert docker_client.images.list(name=tag)
    user.remove()
    removed = ansible.task(MODULE, {"name": tag, "state": "absent"})
    assert removed["changed"] is True
    assert not docker_client.images.list(name=tag)
    again = ansible.task(MODULE, {"name": tag, "state": "absent"})
    assert again["changed"] is False


def test_load_a_saved_archive(ansible, docker_client, small_context, tmp_path):
    context, tag = small_context
    built = ansible.task(MODULE, args(context, tag))
    archive = tmp_path / "small.tar"
    with archive.open("wb") as handle:
        for chunk in docker_client.images.get(tag).save(named=True):
            handle.write(chunk)
    docker_client.images.remove(tag)
    loaded = ansible.task(MODULE, {"name": tag, "source": "load", "load_path": str(archive)})
    assert loaded["changed"] is True and loaded["image"]["id"] == built["image"]["id"]
    again = ansible.task(MODULE, {"name": tag, "source": "load", "load_path": str(archive)})
    assert again["changed"] is False


def test_pull_failure_is_plain(ansible, prefix):
    result = ansible.task(MODULE, {"name": f"{prefix}-nowhere/none:1", "source": "pull"})
    assert result["failed"] is True
    assert result["msg"].startswith(f"Cannot pull {prefix}-nowhere/none:1")
    assert "\n" not in result["msg"]


@pytest.mark.parametrize(
    "extra,message",
    [
        ({"dockerfile": "images/missing"}, "not found inside the build context"),
        ({"dockerfile": "../../etc/passwd"}, "not found inside the build context"),
        ({"base_image": "h9-no-such-base:1"}, "Base image h9-no-such-base:1 is missing"),
    ],
)
def test_bad_build_input_is_refused(ansible, docker_client, small_context, extra, message):
    context, tag = small_context
    before = snapshot(docker_client)
    result = ansible.task(MODULE, {**args(context, tag), **extra})
    assert result["failed"] is True and message in result["msg"]
    assert not docker_client.images.list(name=tag)
    assert snapshot(docker_client) == before


def test_missing_context_is_refused(ansible, tmp_path):
    result = ansible.task(MODULE, {"flavour": "minimal", "context": str(tmp_path / "nope")})
    assert result["failed"] is True and "is not a directory" in result["msg"]
