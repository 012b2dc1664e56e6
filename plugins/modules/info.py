#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: info
short_description: Report on a HAL-9000 installation (parent, workers, volumes)
version_added: 0.1.0
description:
  - Reads the parent, its workers (found by the labels C(io.hal9000.role=worker) and C(io.hal9000.parent=<parent>),
    plus parent-less legacy workers), the counts, the shared volumes, the warm pools, the images and the session
    records in C(sessions/) under the parent's home.
  - It is the data behind every status, list and count of the playbooks and of the coordinator in the parent.
  - Never changes anything.
author:
  - HAL-9000 DinD maintainers (@hal9000-dind)
options:
  parent:
    description: Name of the parent container.
    type: str
    default: hal9000-parent
  volume_prefix:
    description: Prefix of the shared volume names.
    type: str
    default: hal9000
  logs_of:
    description:
      - Also return the output of this worker of O(parent) in RV(logs) (the seed's C(coordinator.sh logs NAME)).
      - A container that is not a worker of O(parent) is refused.
    type: str
  log_lines:
    description: With O(logs_of), only the last this many lines of its output; V(0) for all of it.
    type: int
    default: 200
extends_documentation_fragment:
  - hal9000.dind.docker
  - hal9000.dind.docker.attributes
  - hal9000.dind.docker.read_only
"""

EXAMPLES = r"""
- name: Read the installation
  hal9000.dind.info:
  register: hal9000

- name: Print what `claudy daemon status` printed
  ansible.builtin.debug:
    msg: "{{ hal9000.status_lines }}"

- name: Read the last 50 lines a worker wrote
  hal9000.dind.info:
    logs_of: my-worker
    log_lines: 50
  register: my_worker
"""

RETURN = r"""
parent:
  description: The parent; its C(state) is C(absent) when it does not exist.
  returned: always
  type: dict
  sample: {"name": "hal9000-parent", "state": "running", "health": "healthy", "chromadb_ready": true}
workers:
  description: Every worker, running or not, with name, id, state, status, image, project, pool, parent, created, network_mode and network_ok.
  returned: always
  type: list
  elements: dict
counts:
  description: Numbers of workers (C(total), C(running)) and of workers whose network points at a parent that no longer runs (C(stale_network)).
  returned: always
  type: dict
  sample: {"total": 2, "running": 2, "stale_network": 0}
volumes:
  description: The shared volumes and whether they exist.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "hal9000-chromadb", "exists": true}]
pool:
  description:
    - The warm pools in force (C(config/pools.json), else the seed's single pool, with C(hal9000.conf)'s settings where
      they were left out), each with its running warm workers; C(enabled) says whether the pool manager is to run.
    - C(error) says why they could not be read (for example the home is not readable by this user).
  returned: always
  type: dict
  sample: {"enabled": true, "idle_timeout": 300, "pools": [{"name": "generic", "project": "", "min": 2, "max": 5,
           "image": "hal9000/worker:latest", "warm": 2}]}
worker_limits:
  description:
    - The limits a worker started without explicit ones gets here (C(WORKER_MEMORY), C(WORKER_CPUS) and C(WORKER_PIDS_LIMIT) in
      hal9000.conf, else the seed's); C(error) says why hal9000.conf could not be read.
  returned: always
  type: dict
  sample: {"memory": "4g", "cpus": "2", "pids_limit": 100}
relay:
  description:
    - The MCP relay (the seed's MCP servers for every worker, in the parent's sidecar) - whether it is C(enabled), C(ready)
      (answering on its loopback C(port)), each server's state (C(ready), C(starting), C(failed), C(stopped)) and the
      C(errors) of servers that failed.
  returned: always
  type: dict
  sample: {"enabled": true, "ready": true, "port": 8765, "servers": {"chroma": "ready", "memory-bank": "ready",
           "sequential-thinking": "ready"}, "errors": {}}
images:
  description: The parent's image, the worker flavours and every pool's image, each with C(exists), C(id), C(created) and C(size).
  returned: always
  type: list
  elements: dict
  sample: [{"name": "hal9000/parent:latest", "exists": true, "id": "sha256:0a1b...", "created": "2026-11-29T10:00:00Z",
            "size": 215600000}]
sessions:
  description:
    - The session records in C(sessions/) under the home the parent mounts (one JSON file per worker run, opened when a
      worker starts or a warm worker is claimed, closed when it ends; closed records are removed after
      C(SESSION_RECORDS_MAX_AGE) days). Records never hold the environment, a key or a path to one.
  returned: always
  type: dict
  contains:
    path:
      description: The directory of the records; V(null) when the parent has no home mounted.
      type: str
      returned: always
    records:
      description: How many records there are.
      type: int
      returned: always
    open:
      description: How many records are open (their worker has not ended yet).
      type: int
      returned: always
    recent:
      description:
        - The newest ten records, newest first, each with C(worker), C(project) (the project directory, empty for a generic
          warm worker), C(image_id), C(limits) (C(memory), C(cpus), C(pids_limit)), C(claimed) (true for a warm worker
          claimed), C(started) and C(ended) (ISO 8601 in UTC; C(ended) is V(null) while the worker runs), C(exit_code)
          (V(null) while it runs or when it was removed unseen) and C(container_id).
      type: list
      elements: dict
      returned: always
    error:
      description: Why the directory could not be read (for example the home is not readable by this user).
      type: str
      returned: when the directory could not be read
  sample: {"path": "/home/ada/.hal9000/sessions", "records": 2, "open": 1,
           "recent": [{"worker": "my-worker", "project": "/home/ada/webapp", "image_id": "sha256:5c1d...",
                       "limits": {"memory": "4g", "cpus": "2", "pids_limit": 100}, "claimed": true,
                       "started": "2026-05-01T10:00:00Z", "ended": null, "exit_code": null,
                       "container_id": "3f2a..."}]}
status_lines:
  description: The same as text, one line per item.
  returned: always
  type: list
  elements: str
workers_to_stop:
  description: The names of the workers a stop-all stops - the running workers of O(parent), claimed or spawned (not warm ones).
  returned: always
  type: list
  elements: str
  sample: ["my-worker"]
logs:
  description: The output of the worker O(logs_of) names (its standard output and error), one line per item.
  returned: when O(logs_of) is given
  type: list
  elements: str
  sample: ["Worker ready", "..."]
"""

from ansible_collections.hal9000.dind.plugins.module_utils.ansible_docker import build_module, run_module
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.fleet import get_worker, workers_to_stop
from ansible_collections.hal9000.dind.plugins.module_utils.status import format_status, installation_status


def check_log_lines(params):
    if params["log_lines"] < 0:
        raise Hal9000Error(f"log_lines is {params['log_lines']}: give 0 (all of the output) or more.")


def describe(module, client):
    params = module.params
    status = installation_status(client, params["parent"], params["volume_prefix"])
    result = dict(changed=False, status_lines=format_status(status).splitlines(), **status)
    result["workers_to_stop"] = [worker["name"] for worker in workers_to_stop(status["workers"], params["parent"])]
    if params["logs_of"]:
        worker = get_worker(client, params["logs_of"], params["parent"])
        output = client.api.logs(worker["Id"], tail=params["log_lines"] or "all")
        result["logs"] = output.decode("utf-8", "replace").splitlines()
    return result


def main():
    module = build_module(
        dict(
            parent=dict(type="str", default="hal9000-parent"),
            volume_prefix=dict(type="str", default="hal9000"),
            logs_of=dict(type="str"),
            log_lines=dict(type="int", default=200),
        ),
        supports_check_mode=True,
    )
    run_module(module, describe, validate=check_log_lines)


if __name__ == "__main__":
    main()
