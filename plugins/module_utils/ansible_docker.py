# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The thin Ansible side of the client layer: common options and clean failures.

Everything that decides what Docker objects look like lives in the pure
module_utils; this file only turns their results and errors into AnsibleModule
calls.
"""

from __future__ import annotations

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

from ansible_collections.hal9000.dind.plugins.module_utils.docker_api import (
    DEFAULT_TIMEOUT,
    DOCKER_IMPORT_ERROR,
    HAS_DOCKER,
    DockerException,
    RequestException,
    api_error_message,
    connect,
)
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error

DOCKER_COMMON_ARGS = dict(
    docker_host=dict(type="str", aliases=["docker_url"], fallback=(env_fallback, ["DOCKER_HOST"])),
    timeout=dict(type="int", default=DEFAULT_TIMEOUT, fallback=(env_fallback, ["DOCKER_TIMEOUT"])),
)


def build_module(argument_spec, **kwargs):
    """An AnsibleModule with the common Docker options merged in."""
    spec = dict(DOCKER_COMMON_ARGS)
    spec.update(argument_spec)
    return AnsibleModule(argument_spec=spec, **kwargs)


def require_sdk(module):
    if not HAS_DOCKER:
        module.fail_json(msg=missing_required_lib("docker"), exception=DOCKER_IMPORT_ERROR)


def run_module(module, handler, validate=None, connect_to_daemon=True):
    """Validate, connect and call ``handler(module, client)``, failing in one line.

    ``validate(params)`` runs before the daemon is contacted, so bad input never
    touches Docker; ``handler`` returns the result dict for exit_json.
    """
    require_sdk(module)
    try:
        if validate:
            validate(module.params)
        client = connect(module.params["docker_host"], module.params["timeout"]) if connect_to_daemon else None
        result = handler(module, client)
    except Hal9000Error as exc:
        module.fail_json(msg=str(exc))
    except (DockerException, RequestException) as exc:
        module.fail_json(msg=api_error_message(exc))
    module.exit_json(**result)
