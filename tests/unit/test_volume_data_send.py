"""volume_data without a daemon: send_directory's tar stream (a stand-in for put_archive takes the chunks), and when to bind-mount."""

from __future__ import annotations

import io
import os
import tarfile

import docker
import pytest

from ansible_collections.hal9000.dind.plugins.module_utils import volume_archive
from ansible_collections.hal9000.dind.plugins.module_utils.manifest import iter_directory, manifest_of_directory, manifest_of_tar
from ansible_collections.hal9000.dind.plugins.module_utils.volume_bind_copy import daemon_shares_host_paths


class Api:
    def __init__(self):
        self.data = bytearray()

    def put_archive(self, container, path, chunks):
        assert (container, path) == ("helper", "/")
        for chunk in chunks:
            assert isinstance(chunk, bytes)  # urllib3 1.26 sends nothing else
            self.data += chunk
        return True


class Client:
    def __init__(self):
        self.api = Api()


def make_tree(root):
    root.mkdir()
    (root / "données été").mkdir(mode=0o700)
    (root / "données été" / "odd size.bin").write_bytes(os.urandom(1234567))
    (root / "block.bin").write_bytes(os.urandom(2 * 512))
    (root / "empty.txt").write_bytes(b"")
    (root / "empty dir").mkdir()
    (root / "link").symlink_to("block.bin")
    os.link(root / "block.bin", root / "hard")
    os.mkfifo(root / "fifo")
    (root / ("n" * 150)).write_text("a long name needs a pax header")
    return root


def test_the_stream_is_what_tarfile_writes_and_sent_is_its_manifest(tmp_path):
    tree = make_tree(tmp_path / "tree")
    client = Client()
    sent = volume_archive.send_directory(client, "helper", str(tree))
    expected = io.BytesIO()
    with tarfile.open(fileobj=expected, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        for relative, full, _st in iter_directory(str(tree)):
            info = archive.gettarinfo(full, "hal9000-volume" if relative == "." else f"hal9000-volume/{relative}")
            with open(full, "rb") if info.isreg() else io.BytesIO() as handle:
                archive.addfile(info, handle if info.isreg() else None)
    assert bytes(client.api.data) == expected.getvalue()
    assert sent == manifest_of_directory(str(tree))
    assert manifest_of_tar(io.BytesIO(bytes(client.api.data)), strip_prefix="hal9000-volume") == sent


def test_a_source_error_is_raised_not_taken_for_a_lost_connection(tmp_path, monkeypatch):
    tree = make_tree(tmp_path / "tree")

    def unreadable(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(volume_archive, "open", unreadable, raising=False)
    with pytest.raises(PermissionError, match="Permission denied"):
        volume_archive.send_directory(Client(), "helper", str(tree))


def test_a_file_that_shrinks_while_it_is_sent_fails(tmp_path, monkeypatch):
    tree = make_tree(tmp_path / "tree")
    real_open = open

    def shrinking(path, *args, **kwargs):
        handle = real_open(path, *args, **kwargs)
        handle.read = lambda size=-1: b""
        return handle

    monkeypatch.setattr(volume_archive, "open", shrinking, raising=False)
    with pytest.raises(OSError, match="shrank"):
        volume_archive.send_directory(Client(), "helper", str(tree))


@pytest.mark.parametrize("url, local", [
    ("unix:///var/run/docker.sock", True),
    ("unix:///run/user/1000/docker.sock", True),
    ("tcp://127.0.0.1:2375", False),
    ("https://docker.example.invalid:2376", False),
])
def test_only_a_daemon_on_a_local_socket_is_asked_to_mount_host_paths(url, local):
    client = docker.DockerClient(base_url=url, version="1.41")  # given a version, it connects to nothing
    assert daemon_shares_host_paths(client) is local
