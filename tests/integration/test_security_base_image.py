"""The base image role's import task, taken from the role as it is and run by ansible-playbook on a tiny root file system.

A value with shell syntax in it must stay a value: it reaches the shell only through the environment.
"""

from __future__ import annotations

import yaml

from helpers import REPO_ROOT

TASKS = REPO_ROOT / "roles" / "base_image" / "tasks" / "debootstrap.yml"


def import_task():
    (block,) = [task for task in yaml.safe_load(TASKS.read_text()) if "block" in task]
    (task,) = [task for task in block["block"] if task["name"] == "Import the root file system as the base image"]
    return task


def test_the_import_runs_and_a_value_cannot_inject_a_command(ansible, docker_client, prefix, tmp_path):
    (tmp_path / "scratch" / "rootfs" / "etc").mkdir(parents=True)
    (tmp_path / "scratch" / "rootfs" / "etc" / "hello").write_text("hello\n")
    marker = tmp_path / "injected"
    image = f"{prefix}-base/slim:sec"
    runs = [
        {"base_image_socket": "/var/run/docker.sock", "base_image_name": image},
        {"base_image_socket": f"/var/run/docker.sock; touch {marker}; echo", "base_image_name": image + "x"},
        {"base_image_socket": "/var/run/docker.sock", "base_image_name": f"{image}y; touch {marker}"},
    ]
    task = dict(import_task(), loop=runs, ignore_errors=True, register="imported",
                vars={"base_image_socket": "{{ item.base_image_socket }}", "base_image_name": "{{ item.base_image_name }}"})
    save = {"name": "Save", "ansible.builtin.copy": {"content": "{{ imported.results | to_json }}",
                                                     "dest": str(tmp_path / "results.json"), "mode": "0600"}}
    play = [{"name": "Import", "hosts": "localhost", "gather_facts": False,
             "vars": {"__base_image_tmp": {"path": str(tmp_path / "scratch")}}, "tasks": [task, save]}]
    book = tmp_path / "import.yml"
    book.write_text(yaml.safe_dump(play))
    try:
        ansible.playbook(book)
        results = yaml.safe_load((tmp_path / "results.json").read_text())
        assert results[0].get("failed") is not True, results[0]
        assert docker_client.api.inspect_image(image)["Config"]["Cmd"] == ["bash"]
        assert results[1]["failed"] is True and results[2]["failed"] is True, results
        assert not marker.exists(), "a value was run as a shell command"
    finally:
        for name in (image, image + "x"):
            if docker_client.api.images(name=name):
                docker_client.api.remove_image(name, force=True)
