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

try:
    from docker.utils import parse_bytes as _docker_parse_bytes
except ImportError:  # reported by the caller through missing_required_lib
    _docker_parse_bytes = None

# Docker's own rule for container and volume names (daemon/names.RestrictedNamePattern).
_DOCKER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_NAME_MAX = 128
_MEMORY = re.compile(r"^[0-9]+(\.[0-9]+)?\s*([kmg]b?|b)?$", re.IGNORECASE)


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
    if not _MEMORY.match(text):
        raise Hal9000Error(
            f"Invalid memory size {value!r}: use a positive number with an optional unit b, k, m or g (e.g. 4g)."
        )
    if _docker_parse_bytes is None:
        raise Hal9000Error("The docker Python SDK is required to parse memory sizes: pip install docker.")
    size = _docker_parse_bytes(text.replace(" ", "").lower())
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
