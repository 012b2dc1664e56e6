"""volume_data's helper containers keep only the capabilities a copy needs, and copies still keep owners and modes.

Real engine, real helpers: each helper is inspected while it exists (a spy around helper_container, nothing
stands in for Docker). A copy the helper could not make falls back to the archive API with a warning, so
``warnings == []`` proves the helpers' own cp, find and python3 did the work under those limits.
"""

from __future__ import annotations

import contextlib

import pytest

from ansible_collections.hal9000.dind.plugins.module_utils import (
    volume_bind_copy,
    volume_export,
    volume_helpers,
    volume_import,
)
from ansible_collections.hal9000.dind.plugins.module_utils.volume_data import transfer
from trees import AS_ROOT, assert_same_tree, make_tree

HELPERS = ["hal9000/parent:latest", "debian:bookworm-slim"]  # with python3, and without
WANTED_CAPS = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"]


@pytest.fixture
def inspected(docker_client, monkeypatch):
    """The docker inspect of every helper made, taken while it exists."""
    seen = []
    original = volume_helpers.helper_container

    @contextlib.contextmanager
    def spied(*args, **kwargs):
        with original(*args, **kwargs) as container:
            seen.append(docker_client.api.inspect_container(container))
            yield container

    for maker in (volume_helpers, volume_bind_copy, volume_import, volume_export):
        monkeypatch.setattr(maker, "helper_container", spied)
    return seen


@pytest.mark.parametrize("helper", HELPERS)
def test_helpers_drop_every_capability_a_copy_does_not_need_and_copies_keep_owners(docker_client, prefix, tmp_path, inspected, helper):
    assert AS_ROOT, "the copies keep owners only as root: run the integration tests as root"
    volume = f"{prefix}-sec-helper-{HELPERS.index(helper)}"
    first, second = make_tree(tmp_path / "first", 1), make_tree(tmp_path / "second", 2)
    try:
        made = transfer(docker_client, "import", volume, str(first), helper_image=helper)
        # replace: keeps the content aside in a new volume, empties this one with find, then copies again
        replaced = transfer(docker_client, "import", volume, str(second), mode="replace", helper_image=helper)
        exported = transfer(docker_client, "export", volume, str(tmp_path / "exported"), helper_image=helper)
        for result in (made, replaced, exported):
            assert result["verified"] is True and result["warnings"] == [], result
        assert replaced["kept_aside"].startswith(f"{volume}-replaced-"), replaced
        assert_same_tree(second, tmp_path / "exported")  # owners, set-id bits, read-only modes, links
    finally:
        for found in docker_client.api.volumes(filters={"name": volume}).get("Volumes") or []:
            docker_client.api.remove_volume(found["Name"], force=True)

    assert len(inspected) >= 4, [i["Name"] for i in inspected]
    for info in inspected:
        host = info["HostConfig"]
        assert host["CapDrop"] == ["ALL"], (info["Name"], host["CapDrop"])
        assert sorted(cap.removeprefix("CAP_") for cap in host["CapAdd"]) == WANTED_CAPS, (info["Name"], host["CapAdd"])
        assert host["SecurityOpt"] == ["no-new-privileges"], (info["Name"], host["SecurityOpt"])
        assert host["NetworkMode"] == "none", info["Name"]
        assert host["Privileged"] is False and not host.get("Devices"), info["Name"]
