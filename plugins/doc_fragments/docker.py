# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Connection options shared by every module that talks to the Docker Engine.
    DOCUMENTATION = r"""
options:
  docker_host:
    description:
      - The Docker Engine API address, for example C(unix:///var/run/docker.sock) or C(tcp://127.0.0.1:2375).
      - When not given, the E(DOCKER_HOST) environment variable is used, and then C(unix:///var/run/docker.sock).
      - Set it once for every module of this collection with C(module_defaults) and the group C(group/hal9000.dind.docker).
    type: str
    aliases:
      - docker_url
  timeout:
    description:
      - Seconds to wait for an answer from the Docker Engine API.
      - When not given, the E(DOCKER_TIMEOUT) environment variable is used, and then C(60).
    type: int
    default: 60
requirements:
  - docker (the Docker SDK for Python) >= 7.0.0
  - requests
notes:
  - The modules run on the host that reaches the Docker Engine (usually the Docker host itself).
  - When the daemon cannot be reached, the module fails with one line naming the address and what to check.
"""

    # For modules that only read: the same three attributes everywhere.
    READ_ONLY = r"""
options: {}
attributes:
  check_mode:
    description: Read-only; runs normally in check mode.
    support: full
  diff_mode:
    description: Nothing changes, so there is no diff.
    support: none
  idempotent:
    description: Read-only.
    support: full
"""

    ATTRIBUTES = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/hal9000.dind.docker) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - hal9000.dind.docker
"""
