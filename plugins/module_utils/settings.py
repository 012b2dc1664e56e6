# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every setting of an installation, declared once, and the one rule that picks its value.

The seed's environment variables (WORKER_MEMORY, ENABLE_POOL_MANAGER, ...) and ours
are declared in ``SETTINGS`` with their type, default and meaning. Every reader (the
modules, the coordinator, the pool manager, the parent's entrypoint) calls ``resolve``:

    explicit value > the same variable in the caller's environment > hal9000.conf > default

An explicit value is a module option or a command-line flag. The caller's environment
is the seed's way of giving one for a single command (``WORKER_MEMORY=8g spawn-worker.sh``);
the parent module puts only the options it was explicitly given in the parent's
environment, so hal9000.conf decides everything else.
Pure: standard library and the docker SDK only, never ``ansible.*``.
"""

from __future__ import annotations

import collections
import math
import os
import urllib.parse

from ansible_collections.hal9000.dind.plugins.module_utils.constants import HOME_IN_PARENT, MCP_IMAGE, WORKER_IMAGE, config_path
from ansible_collections.hal9000.dind.plugins.module_utils.egress import EgressError, check_mode, parse_allow
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.validate import parse_cpus, parse_memory, parse_positive_int

# key: the variable's name (in hal9000.conf and the environment); option: the module option and
# typed name; kind: how values are checked; at_start: read once when the parent starts (a change
# needs a new parent), else read on every use.
Setting = collections.namedtuple("Setting", "key option kind default at_start description")

SETTINGS = (
    Setting("WORKER_IMAGE", "worker_image", "str", WORKER_IMAGE, True,
            "The image workers are started from; the parent checks it at start-up."),
    Setting("WORKER_MEMORY", "memory", "memory", "4g", False, "Memory limit of a worker (no swap on top)."),
    Setting("WORKER_CPUS", "cpus", "cpus", "2", False, "CPU limit of a worker."),
    Setting("WORKER_PIDS_LIMIT", "pids_limit", "positive", 100, False, "Process limit of a worker."),
    Setting("WORKER_STORAGE_SIZE", "storage_size", "memory", "10g", False,
            "Most a worker may write outside its Claude home and /workspace (docs/storage.md)."),
    Setting("SKIP_IMAGE_PULL", "skip_image_pull", "bool", False, True,
            "Do not pull a missing worker image at start-up (only warn)."),
    Setting("LAZY_IMAGE_PULL", "lazy_image_pull", "bool", False, True,
            "Pull a missing worker image in the background instead of before ChromaDB is waited for."),
    Setting("ENABLE_POOL_MANAGER", "enable_pool_manager", "bool", False, True,
            "Run the warm-worker pool manager in the parent (pools.json, once written, decides)."),
    Setting("MIN_WARM_WORKERS", "min_warm_workers", "count", 2, False, "Warm workers the generic pool keeps ready."),
    Setting("MAX_WARM_WORKERS", "max_warm_workers", "count", 5, False, "Most warm workers the generic pool keeps."),
    Setting("IDLE_TIMEOUT", "idle_timeout", "count", 300, False,
            "Seconds without a claim after which warm workers above a pool's minimum are removed."),
    Setting("CHROMADB_PORT", "chromadb_port", "port", 8000, True,
            "Port ChromaDB listens on, on the parent's loopback; only the MCP relay may connect to it."),
    Setting("ENABLE_MCP_RELAY", "enable_mcp_relay", "bool", True, True,
            "Run the MCP relay (the seed's MCP servers for every worker) in the hal9000/mcp sidecar."),
    Setting("MCP_IMAGE", "mcp_image", "str", MCP_IMAGE, True, "The image of the MCP relay's sidecar."),
    Setting("MCP_RELAY_PORT", "mcp_relay_port", "port", 8765, True,
            "Port the MCP relay listens on, on the parent's loopback (every worker's localhost)."),
    Setting("ANTHROPIC_BASE_URL", "anthropic_base_url", "url", "", False,
            "Claude Code's model endpoint in workers (an LLM gateway); empty: Claude Code's own default."),
    Setting("SESSION_RECORDS_MAX_AGE", "session_records_max_age", "count", 30, False,
            "Days a closed session record (~/.hal9000/sessions) is kept before housekeeping removes it; 0: at once."),
    Setting("CLAIM_TIMEOUT", "claim_timeout", "seconds", 2, False,
            "Seconds a claim (or the pool manager) waits for the warm pool's claim lock before giving up."),
    # Live: the parent re-reads both whenever it re-resolves the allowlist's host names, and rewrites its rules
    # only when they change (no restart, which would interrupt ChromaDB and the relay for every worker).
    Setting("EGRESS", "egress", "egress", "allowlist", False,
            "Where workers may connect: allowlist (the Anthropic API, loopback and EGRESS_ALLOW) or open (anywhere "
            "but link-local and metadata addresses; status warns). docs/egress.md."),
    Setting("EGRESS_ALLOW", "egress_allow", "allowlist", "", False,
            "Hosts (host[:port]), addresses and CIDRs (with optional :port or :first-last) every worker may reach "
            "besides the defaults; comma-separated in hal9000.conf. docs/egress.md."),
)
BY_KEY = {setting.key: setting for setting in SETTINGS}
BY_OPTION = {setting.option: setting for setting in SETTINGS}
WORKER_LIMIT_OPTIONS = ("memory", "cpus", "pids_limit")
# Settings that are also options of every worker (its default comes from the file).
WORKER_SETTING_OPTIONS = WORKER_LIMIT_OPTIONS + ("anthropic_base_url", "storage_size", "claim_timeout")
PARENT_OPTIONS = tuple(s.option for s in SETTINGS if s.option not in WORKER_SETTING_OPTIONS)
# Ansible's type for each kind: what the modules' argument_specs derive from.
ANSIBLE_TYPES = {"seconds": "float", "url": "str", "str": "str", "memory": "str", "cpus": "str", "positive": "str",
                 "egress": "str", "allowlist": "list", "bool": "bool", "count": "int", "port": "int"}


def _bool(value, key):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise Hal9000Error(f"{key}={value!r} is not a boolean: use true or false.")


def _count(value, key):
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit():  # also refuses "-1" and "1.5"
        raise Hal9000Error(f"{key}={value!r} must be a whole number, 0 or more.")
    return int(text)


def _port(value, key):
    port = _count(value, key)
    if not 1 <= port <= 65535:
        raise Hal9000Error(f"{key}={port} is not a TCP port (1-65535).")
    return port


def _checked_text(parse):
    """Limits stay as the user wrote them (4g, 0.5): workers parse them into Docker's units."""
    def check(value, key):
        try:
            parse(value)
        except Hal9000Error as exc:
            raise Hal9000Error(f"{key}: {exc}") from None
        return str(value).strip()
    return check


def _text(value, key):
    text = str(value).strip()
    if not text:
        raise Hal9000Error(f"{key} is empty: give a value or leave it out for the default.")
    return text


def _seconds(value, key):
    """A positive, finite number of seconds (0.5, 2)."""
    try:
        seconds = float(str(value).strip())
    except ValueError:
        seconds = 0.0
    if isinstance(value, bool) or not math.isfinite(seconds) or seconds <= 0:
        raise Hal9000Error(f"{key}={value!r} must be a number of seconds greater than zero (e.g. 2 or 0.5).")
    return seconds


def _url(value, key):
    """An http(s) URL with a host, or "" (unset); nothing else reaches ANTHROPIC_BASE_URL."""
    text = str(value or "").strip()
    if not text:
        return ""
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname or any(c.isspace() for c in text):
        raise Hal9000Error(f"{key}={text!r} is not an http(s) URL: give one such as https://gateway.example:8443.")
    return text


def _egress(value, key):
    try:
        return check_mode(value)
    except EgressError as exc:
        raise Hal9000Error(f"{key}: {exc}") from None


def _allowlist(value, key):
    """Entries normalised and sorted (a tuple of texts): a list, or hal9000.conf's comma-separated text."""
    try:
        return tuple(entry.text for entry in parse_allow(value))
    except EgressError as exc:
        raise Hal9000Error(f"{key}: {exc}") from None


_PARSERS = {
    "egress": _egress, "allowlist": _allowlist,
    "seconds": _seconds, "url": _url, "str": _text, "bool": _bool, "count": _count, "port": _port,
    "memory": _checked_text(parse_memory), "cpus": _checked_text(parse_cpus),
    "positive": parse_positive_int,
}


def declared(key):
    setting = BY_KEY.get(key)
    if setting is None:
        raise Hal9000Error(f"Unknown setting {key}: known settings are {', '.join(sorted(BY_KEY))}.")
    return setting


def typed_value(key, value):
    """``value`` of setting ``key`` checked and typed, or a one-line error naming the setting."""
    return _PARSERS[declared(key).kind](value, key)


def read_config(path):
    """KEY=value lines of a hal9000.conf (comments and blanks ignored); {} when there is no file."""
    values = {}
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.readlines()
    except FileNotFoundError:
        return values
    except OSError as exc:
        raise Hal9000Error(f"Cannot read {path}: {exc.strerror}; run as the owner of the HAL-9000 home.") from None
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def read_home_config(home):
    return read_config(config_path(home))


def resolve(explicit=None, file_values=None, environ=None):
    """Every setting typed, by option name: explicit > environ > hal9000.conf > default.

    ``explicit`` is keyed by option name (None means not given); ``file_values`` and ``environ``
    by variable name. Unknown keys in the file are ignored (the file may be newer than the reader).
    """
    explicit = explicit or {}
    file_values = file_values or {}
    environ = {} if environ is None else environ
    typed = {}
    for setting in SETTINGS:
        for value in (explicit.get(setting.option), environ.get(setting.key), file_values.get(setting.key)):
            if value is not None and value != "":
                break
        else:
            value = setting.default
        typed[setting.option] = typed_value(setting.key, value)
    if typed["min_warm_workers"] > typed["max_warm_workers"]:
        raise Hal9000Error(
            f"MIN_WARM_WORKERS={typed['min_warm_workers']} is more than MAX_WARM_WORKERS={typed['max_warm_workers']}: "
            "the minimum must not exceed the maximum."
        )
    if typed["mcp_relay_port"] == typed["chromadb_port"]:
        raise Hal9000Error(f"MCP_RELAY_PORT and CHROMADB_PORT are both {typed['chromadb_port']}: give them different ports.")
    return typed


def resolve_in_home(home, explicit=None, environ=None):
    """``resolve`` with the hal9000.conf of the installation whose home is ``home``."""
    return resolve(explicit, read_home_config(home), environ)


def resolve_in_parent():
    """For the programs in the parent: its environment (only what it was explicitly given) and the home it mounts."""
    return resolve_in_home(HOME_IN_PARENT, environ=os.environ)


def as_text(value):
    """A typed value as hal9000.conf and the environment spell it (true/false, not True/False)."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def environment(explicit):
    """The parent's environment for the options it was explicitly given (option name -> value)."""
    return {BY_OPTION[option].key: as_text(typed_value(BY_OPTION[option].key, value))
            for option, value in explicit.items() if value is not None}


def at_start(typed):
    """The settings the parent reads once at start-up: a change of these needs a new parent."""
    return {s.option: typed[s.option] for s in SETTINGS if s.at_start}


def check_file_settings(values):
    """hal9000.conf's settings as the home module writes them: known keys and valid values (min <= max too)."""
    for key in values:
        declared(str(key))
    resolve(file_values={str(k): ("" if v is None else as_text(v)) for k, v in values.items()})


def file_defaults():
    """Every setting with its default, as hal9000.conf spells it (what the volumes role writes)."""
    return {s.key: as_text(s.default) for s in SETTINGS}


def argument_spec(options):
    """Ansible argument_spec entries for the setting ``options``: no default, so hal9000.conf decides when unset."""
    specs = {option: {"type": ANSIBLE_TYPES[BY_OPTION[option].kind]} for option in options}
    for spec in specs.values():
        if spec["type"] == "list":
            spec["elements"] = "str"
    return specs
