"""Everything derived from a declaration is checked against it, so a missed place fails here.

- every role's meta/argument_specs.yml against its defaults/main.yml;
- hal9000.conf's settings (settings.SETTINGS) against the volumes, daemon and pool roles and the modules' docs;
- the worker options (workers.WORKER_OPTIONS) against the worker module's docs, spawn_worker.yml,
  the coordinator's spawn flags, the pool module and the pools' settings.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml

from ansible_collections.hal9000.dind.plugins.module_utils.pool import validate_pools
from ansible_collections.hal9000.dind.plugins.module_utils.settings import ANSIBLE_TYPES, PARENT_OPTIONS, SETTINGS, file_defaults, resolve
from ansible_collections.hal9000.dind.plugins.module_utils.workers import POOL_OPTIONS, WORKER_OPTIONS

REPO = Path(__file__).resolve().parents[2]
ROLES = sorted(path.parent.parent.name for path in REPO.glob("roles/*/meta/argument_specs.yml"))
_FALLBACK = re.compile(r"^\{\{ *[a-z0-9_]+ *\| *default\('([^']*)'\) *\}\}$")


def load(path):
    return yaml.safe_load((REPO / path).read_text()) or {}


def documented(module):
    """The options of a module's DOCUMENTATION (read from the source, as ansible-doc does)."""
    tree = ast.parse((REPO / "plugins" / "modules" / f"{module}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "DOCUMENTATION":
            return yaml.safe_load(node.value.value)["options"]
    raise AssertionError(f"{module} has no DOCUMENTATION")


def role_options(role):
    return load(f"roles/{role}/meta/argument_specs.yml")["argument_specs"]["main"]["options"]


@pytest.mark.parametrize("role", ROLES)
def test_every_role_documents_exactly_its_defaults(role):
    defaults = load(f"roles/{role}/defaults/main.yml")
    options = role_options(role)
    assert set(defaults) <= set(options), f"{role}: defaults without argument_specs: {sorted(set(defaults) - set(options))}"
    for name, spec in options.items():
        assert name.startswith(f"{role}_"), f"{role}: {name} is not prefixed with the role's name"
        assert ("default" in spec) == (name in defaults), f"{role}: {name} has a default in only one of the two files"
        if name in defaults:
            value = defaults[name]
            fallback = _FALLBACK.match(value) if isinstance(value, str) else None
            value = fallback.group(1) if fallback else value
            if isinstance(value, str) and "{{" in value:
                continue  # derived from other variables: nothing literal to compare
            assert value == spec["default"], f"{role}: {name} defaults to {value!r}, argument_specs say {spec['default']!r}"


def test_the_volumes_role_writes_every_declared_setting_with_its_default():
    assert load("roles/volumes/defaults/main.yml")["volumes_config"] == file_defaults()
    assert role_options("volumes")["volumes_config"]["default"] == file_defaults()


@pytest.mark.parametrize("role,variables", [
    ("daemon", {f"daemon_{option}": option for option in PARENT_OPTIONS}),
    ("pool", {"pool_min_warm_workers": "min_warm_workers", "pool_max_warm_workers": "max_warm_workers",
              "pool_idle_timeout": "idle_timeout"}),
])
def test_role_settings_are_left_to_hal9000_conf(role, variables):
    """No default in the role: unset, the module leaves the setting to the file (a default would silently win)."""
    options = role_options(role)
    tasks = (REPO / "roles" / role / "tasks" / "main.yml").read_text()
    for variable, option in variables.items():
        assert "default" not in options[variable], f"{variable} has a default: it would override hal9000.conf"
        assert options[variable]["type"] == ANSIBLE_TYPES[next(s.kind for s in SETTINGS if s.option == option)]
        assert f"{{{{ {variable} | default(omit) }}}}" in tasks, f"{role} does not leave {variable} out when unset"


@pytest.mark.parametrize("module,options", [
    ("parent", PARENT_OPTIONS),
    ("worker", ("memory", "cpus", "pids_limit", "claim_timeout")),
    ("pool", ("min_warm_workers", "max_warm_workers", "idle_timeout")),
])
def test_setting_options_have_no_default_in_the_module_docs(module, options):
    docs = documented(module)
    for option in options:
        assert "default" not in docs[option], f"{module}: {option} documents a default; hal9000.conf decides"


def test_the_worker_modules_docs_cover_every_worker_option():
    docs = documented("worker")
    for option in WORKER_OPTIONS:
        assert option.name in docs, f"worker module does not document {option.name}"
        assert docs[option.name]["type"] == option.ansible["type"], option.name
        assert docs[option.name].get("default") == option.ansible.get("default"), option.name
        assert docs[option.name].get("choices") == option.ansible.get("choices"), option.name


def test_spawn_worker_yml_passes_every_worker_option():
    play = load("playbooks/spawn_worker.yml")[0]
    task = next(t for t in play["tasks"] if "hal9000.dind.worker" in t)
    passed = task["hal9000.dind.worker"]
    missing = [option.name for option in WORKER_OPTIONS if option.name not in passed]
    assert not missing, f"spawn_worker.yml does not pass {missing}"
    for name in passed:
        assert name in documented("worker"), f"spawn_worker.yml passes {name}, which the module does not have"


def test_the_coordinator_offers_a_flag_for_every_worker_option_with_one():
    sys.path.insert(0, str(REPO / "images" / "parent"))
    try:
        import coordinator
    finally:
        sys.path.pop(0)
    spawn = coordinator.parser()._subparsers._group_actions[0].choices["spawn"]
    flags = {string: action.dest for action in spawn._actions for string in action.option_strings}
    for option in WORKER_OPTIONS:
        if option.flag:
            assert flags.get(option.flag) == option.name, f"coordinator spawn lacks {option.flag}"
    args = spawn.parse_args(["--read-only", "--no-rm", "--memory", "6g"])
    assert (args.read_only, args.auto_remove, args.memory, args.no_limits) == (True, False, "6g", False)


def test_pools_offer_and_keep_every_pool_option():
    docs = documented("pool")["pools"]["suboptions"]
    for option in POOL_OPTIONS:
        assert docs[option.name]["type"] == option.ansible["type"], option.name
    given = {"pools": [{"name": "webapp", "project": "/srv/webapp", "read_only": True, "api_key_file": "/k"}]}
    kept = validate_pools(given, resolve())["pools"][0]
    assert (kept["read_only"], kept["api_key_file"]) == (True, "/k")
    assert (kept["min"], kept["max"], kept["image"]) == (2, 5, "hal9000/worker:latest"), "unset: hal9000.conf's settings"
    assert validate_pools(given)["pools"][0]["min"] is None, "as saved, the unset minimum stays unset"
