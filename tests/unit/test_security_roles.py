"""No shell command of roles/base_image is built from a variable: values reach the shell only through its environment."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLE = Path(__file__).resolve().parents[2] / "roles" / "base_image"
SHELLS = ("ansible.builtin.shell", "ansible.builtin.command", "ansible.builtin.raw", "shell", "command", "raw")


def tasks(items):
    for task in items or []:
        yield task
        for key in ("block", "rescue", "always"):
            yield from tasks(task.get(key))


def command_text(task):
    for module in SHELLS:
        if module in task:
            args = task[module]
            return args if isinstance(args, str) else (args or {}).get("cmd")
    return None


@pytest.mark.parametrize("path", sorted(ROLE.glob("tasks/*.yml")), ids=lambda p: p.name)
def test_no_shell_command_templates_a_variable(path):
    found = [(task.get("name"), command_text(task)) for task in tasks(yaml.safe_load(path.read_text()))]
    assert [name for name, text in found if text and ("{{" in text or "{%" in text)] == []


def test_the_import_takes_its_values_from_the_environment():
    (task,) = [t for t in tasks(yaml.safe_load((ROLE / "tasks" / "debootstrap.yml").read_text()))
               if t.get("name") == "Import the root file system as the base image"]
    assert '"$HAL9000_BASE_IMAGE"' in task["ansible.builtin.shell"]["cmd"]
    assert task["environment"] == {"DOCKER_HOST": "unix://{{ base_image_socket }}", "HAL9000_BASE_IMAGE": "{{ base_image_name }}"}
