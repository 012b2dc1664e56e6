# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connecting to the Docker Engine with the docker SDK, shared by the modules and the parent image.

The helpers that need no SDK (inspect_container, api_error_message, ...) live in ``engine``, which the
warm claim uses without importing the SDK; they are named here too.
Pure: standard library and the docker SDK only, never ``ansible.*``.
"""

from __future__ import annotations

import traceback

from ansible_collections.hal9000.dind.plugins.module_utils.engine import (
    DEFAULT_DOCKER_HOST,
    DEFAULT_TIMEOUT,
    api_error_message,
    inspect_container,
    resolve_docker_host,
    unreachable_message,
)
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error

try:
    import docker
    from docker.errors import APIError, DockerException, NotFound
    from requests.exceptions import RequestException

    HAS_DOCKER = True
    DOCKER_IMPORT_ERROR = None
except ImportError:
    HAS_DOCKER = False
    DOCKER_IMPORT_ERROR = traceback.format_exc()

    # Placeholders so callers can name these in except clauses without the SDK.
    class DockerException(Exception):  # type: ignore[no-redef]
        pass

    class APIError(DockerException):  # type: ignore[no-redef]
        pass

    class NotFound(APIError):  # type: ignore[no-redef]
        pass

    class RequestException(Exception):  # type: ignore[no-redef]
        pass


__all__ = [
    "APIError", "DockerException", "NotFound", "RequestException", "HAS_DOCKER", "DOCKER_IMPORT_ERROR",
    "connect", "api_error_message", "resolve_docker_host", "unreachable_message", "inspect_container",
    "DEFAULT_DOCKER_HOST", "DEFAULT_TIMEOUT",
]


def connect(docker_host=None, timeout=DEFAULT_TIMEOUT):
    """Return a pinged ``docker.DockerClient`` or raise Hal9000Error with one line."""
    if not HAS_DOCKER:
        raise Hal9000Error("The docker Python SDK is not installed: pip install docker.")
    host = resolve_docker_host(docker_host)
    try:
        client = docker.DockerClient(base_url=host, timeout=timeout, version="auto")
        client.ping()
    except (DockerException, RequestException, OSError):
        raise Hal9000Error(unreachable_message(host)) from None
    return client
