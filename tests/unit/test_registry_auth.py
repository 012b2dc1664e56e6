"""Registry credentials for source=pull: read from an owner-only file, never shown."""

from __future__ import annotations

import json

import pytest
from docker.auth import INDEX_NAME

from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.images import image_registry, pull_failure_message, read_registry_auth

REGISTRY = "127.0.0.1:5000"
SECRET = "pa55:w#rd"


def auth_file(tmp_path, text, mode=0o600):
    path = tmp_path / "auth"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def refusal(path, registry=REGISTRY):
    with pytest.raises(Hal9000Error) as caught:
        read_registry_auth(path, registry)
    message = str(caught.value)
    assert "\n" not in message and SECRET not in message
    return message


@pytest.mark.parametrize("name, registry", [
    ("127.0.0.1:5000/team/small:1", "127.0.0.1:5000"),
    ("registry.example.internal/hal9000/worker:latest", "registry.example.internal"),
    ("hal9000/parent:latest", INDEX_NAME),  # Docker Hub, by the SDK's name for it
])
def test_image_registry(name, registry):
    assert image_registry(name) == registry


def test_json_and_yaml_give_the_auth_config(tmp_path):
    wanted = {"username": "alice", "password": SECRET, "serveraddress": REGISTRY}
    as_json = auth_file(tmp_path, json.dumps({"username": "alice", "password": SECRET, "registry": f"http://{REGISTRY}/"}))
    assert read_registry_auth(as_json, REGISTRY) == wanted
    as_yaml = auth_file(tmp_path, f"username: alice\npassword: '{SECRET}'\n")
    assert read_registry_auth(as_yaml, REGISTRY) == wanted


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o644])
def test_group_or_other_permissions_are_refused(tmp_path, mode):
    path = auth_file(tmp_path, json.dumps({"username": "alice", "password": SECRET}), mode)
    message = refusal(path)
    assert f"mode {mode:04o}" in message and f"chmod 600 {path}" in message and REGISTRY in message


def test_a_missing_file_names_the_registry(tmp_path):
    message = refusal(str(tmp_path / "nowhere.json"))
    assert "does not exist" in message and REGISTRY in message


@pytest.mark.parametrize("text", [
    f"username: alice\npassword: [{SECRET}\n",  # broken YAML: its parser's message would quote the line
    json.dumps({"username": "alice"}),
    json.dumps({"username": "alice", "password": 1234}),
    json.dumps({"username": "alice", "password": SECRET, "email": "a@example.invalid"}),
    json.dumps(["alice", SECRET]),
])
def test_malformed_files_are_refused_without_their_text(tmp_path, text):
    assert "must be a JSON or YAML mapping of username and password" in refusal(auth_file(tmp_path, text))


def test_a_file_for_another_registry_is_refused(tmp_path):
    path = auth_file(tmp_path, json.dumps({"username": "alice", "password": SECRET, "registry": "127.0.0.1:6000"}))
    message = refusal(path)
    assert "is for the registry 127.0.0.1:6000, not 127.0.0.1:5000" in message


def test_refused_credentials_name_the_registry_and_mask_the_password():
    auth = {"username": "alice", "password": SECRET, "serveraddress": REGISTRY}
    message = pull_failure_message(f"{REGISTRY}/team/small:1", f"unauthorized: {SECRET} is wrong\nmore", auth, "/etc/auth.json")
    assert message.startswith(f"Registry {REGISTRY} refused the credentials of alice in /etc/auth.json")
    assert SECRET not in message and "\n" not in message
    anonymous = pull_failure_message(f"{REGISTRY}/team/small:1", b"no basic auth credentials")
    assert "wants credentials" in anonymous and "registry_auth_file" in anonymous
    other = pull_failure_message(f"{REGISTRY}/team/small:1", "manifest unknown")
    assert other.startswith(f"Cannot pull {REGISTRY}/team/small:1: manifest unknown.")
