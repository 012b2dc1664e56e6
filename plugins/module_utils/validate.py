# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Input validation shared by the modules and the parent image.

Pure: standard library and the docker SDK only, never ``ansible.*``
(the parent image imports this file without Ansible).
"""

from __future__ import annotations

import math
import re

from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error

# Docker's own rule for container and volume names (daemon/names.RestrictedNamePattern).
_DOCKER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_NAME_MAX = 128
_MEMORY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*([kmg]b?|b)?$", re.IGNORECASE)
_BYTE_UNITS = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def validate_name(value, kind="container"):
    """Return ``value`` if Docker accepts it as a container or volume name."""
    if not isinstance(value, str) or not value:
        raise Hal9000Error(f"The {kind} name is empty: give a name such as hal9000-{kind}-1.")
    if len(value) > _NAME_MAX or not _DOCKER_NAME.match(value):
        raise Hal9000Error(
            f"Invalid {kind} name {value!r}: use 2-{_NAME_MAX} characters from "
            "a-z A-Z 0-9 _ . -, starting with a letter or digit."
        )
    return value


def parse_memory(value):
    """Return a memory size such as ``4g`` in bytes; refuse zero, negatives and junk."""
    text = str(value).strip()
    matched = _MEMORY.match(text)
    if not matched:
        raise Hal9000Error(
            f"Invalid memory size {value!r}: use a positive number with an optional unit b, k, m or g (e.g. 4g)."
        )
    number, unit = matched.groups()
    size = int(float(number) * _BYTE_UNITS[(unit or "b")[0].lower()])  # as docker.utils.parse_bytes counts
    if size <= 0:
        raise Hal9000Error(f"Invalid memory size {value!r}: it must be greater than zero (e.g. 4g).")
    return size


def parse_cpus(value):
    """Return a CPU count as a positive float."""
    try:
        cpus = float(value)
    except (TypeError, ValueError):
        raise Hal9000Error(f"Invalid cpus {value!r}: use a positive number such as 2 or 0.5.") from None
    if not math.isfinite(cpus) or cpus <= 0:
        raise Hal9000Error(f"Invalid cpus {value!r}: it must be greater than zero (e.g. 2).")
    return cpus


def parse_positive_int(value, what):
    """Return ``value`` as an int greater than zero, or explain what is wrong."""
    if isinstance(value, bool):
        raise Hal9000Error(f"Invalid {what} {value!r}: use a whole number greater than zero.")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise Hal9000Error(f"Invalid {what} {value!r}: use a whole number greater than zero.") from None
    if number <= 0:
        raise Hal9000Error(f"Invalid {what} {value!r}: it must be greater than zero.")
    return number


def validate_labels(labels):
    """Return labels as a str->str dict; Docker rejects other value types."""
    result = {}
    for key, value in (labels or {}).items():
        if isinstance(value, (bool, float, dict, list)) or value is None:
            raise Hal9000Error(
                f"Label {key!r} has the value {value!r}: labels must be strings; quote the value."
            )
        result[str(key)] = str(value)
    return result


def first_free(base, taken):
    """``base``, or ``base-1``, ``base-2``, ...: the first name ``taken(name)`` says is free (for kept-aside copies)."""
    name, number = base, 1
    while taken(name):
        name, number = f"{base}-{number}", number + 1
    return name


# Where a worker's /workspace may not come from, on the Docker host (docs/project-dirs.md). The project
# directory is bind-mounted read-write into a container where Claude Code acts on its own, so it must not be:
# a system tree (the host's programs, configuration, devices, services' state: anything inside is refused too);
# a directory that holds whole other trees (only the directory itself: /srv/projects/app, /opt/app and WSL's
# /mnt/c/Users/me/app are projects, /srv, /opt and /mnt are not); a whole user home, or the credential
# directories in one; the HAL-9000 home (backups, pools.json, claim.lock, every worker's Claude home), anything
# inside it or any directory above it. The Docker socket's directory is refused by the caller (workers.py).
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/lost+found", "/nix",
                "/proc", "/run", "/sbin", "/snap", "/sys", "/usr", "/var/backups", "/var/cache", "/var/lib",
                "/var/lock", "/var/log", "/var/mail", "/var/run", "/var/spool")
SYSTEM_DIRS = ("/", "/home", "/media", "/mnt", "/opt", "/srv", "/tmp", "/var", "/var/tmp")
HOME_SECRET_DIRS = (".aws", ".azure", ".claude", ".config", ".docker", ".gnupg", ".kube", ".ssh")


def _within(path, tree):
    return path == tree or path.startswith(tree.rstrip("/") + "/")


def refused_project_dir(real, hal9000_homes=(), user_homes=()):
    """Why the resolved host path ``real`` may not be a worker's project directory, or "" when it may.

    ``hal9000_homes``: the HAL-9000 home(s) on the host, resolved; ``user_homes``: the host's users' homes
    (/etc/passwd) besides /root and /home/NAME.
    """
    if real in SYSTEM_DIRS:
        return "a system location that holds more than one project"
    tree = next((tree for tree in SYSTEM_TREES if _within(real, tree)), None)
    if tree:
        return f"a system location (in {tree})"
    for home in hal9000_homes:
        if _within(real, home):
            return f"it is in the HAL-9000 home {home}"
        if _within(home, real):
            return f"it holds the HAL-9000 home {home}"
    parts = real.split("/")
    homes = {"/root", *user_homes} | ({"/".join(parts[:3])} if len(parts) > 2 and parts[1] == "home" else set())
    homes |= {home.rsplit("/", 1)[0] or "/" for home in hal9000_homes}  # ~/.hal9000 is in its user's home
    if real in homes:
        return "it is a whole user home"
    secret = next((f"{home}/{name}" for home in homes for name in HOME_SECRET_DIRS if _within(real, f"{home}/{name}")), None)
    if secret:
        return f"it is in {secret}, where credentials are kept"
    return ""


# Environment variables whose names say they carry a secret (case-insensitive, anywhere in the name, - and .
# read as _). A worker's environment is shown by `docker inspect` and readable by every process in it: secrets go
# in files (the Anthropic key: api_key_file, which Claude Code reads through its apiKeyHelper).
# TOKENIZER (TOKENIZERS_PARALLELISM) and AUTHOR (GIT_AUTHOR_NAME) are not secrets; AUTHORIZATION is.
SECRET_ENV_PATTERNS = ("SECRET", "PASSWORD", "PASSWD", "PASSPHRASE", "TOKEN", "API_KEY", "APIKEY", "ACCESS_KEY",
                       "ACCESSKEY", "PRIVATE_KEY", "PRIVATEKEY", "CREDENTIAL", "AUTH")
_SECRET_ENV = re.compile("|".join(
    {"TOKEN": r"TOKEN(?!IZ)", "AUTH": r"AUTH(?!OR(?!IZ))"}.get(pattern, re.escape(pattern)) for pattern in SECRET_ENV_PATTERNS
))


def secret_env_names(env):
    """The names in ``env`` that look like secrets (SECRET_ENV_PATTERNS), sorted."""
    return sorted(name for name in env if _SECRET_ENV.search(re.sub(r"[-.]", "_", str(name).upper())))


_USER_PART = re.compile(r"^(?:[0-9]+|[A-Za-z_][A-Za-z0-9_.-]*)$")


def check_worker_user(user):
    """``user`` (uid[:gid] or a name) unless it is root: no worker runs as uid 0, however it is spelled."""
    uid, sep, gid = str(user).partition(":")
    if not _USER_PART.match(uid) or (sep and not _USER_PART.match(gid)):
        raise Hal9000Error(f"user {user!r} is not uid:gid or a user name: give one such as 1000:1000.")
    if uid == "root" or (uid.isdigit() and int(uid) == 0):
        raise Hal9000Error(f"user {user!r} is root (uid 0), which workers never run as: root in a worker could reach "
                           "ChromaDB past the relay and own what it mounts; give a non-root uid:gid such as 1000:1000.")
    return str(user)
