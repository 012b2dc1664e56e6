#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: parent
short_description: Run the HAL-9000 parent container (ChromaDB, coordinator, dashboard, pool manager)
version_added: 0.1.0
description:
  - Starts, stops, restarts or removes the parent container that workers share their network with.
  - It mounts the Docker socket's directory (so a restarted Docker daemon's new socket reaches it), O(hal9000_home)
    at C(/root/.hal9000) and the shared volumes C(hal9000-chromadb),
    C(hal9000-memorybank) and C(hal9000-plugins) at C(/data/chromadb), C(/data/membank) and C(/data/plugins), with
    the restart policy C(unless-stopped) and the label C(io.hal9000.role=parent).
  - The same options on a running parent change nothing. Changed options, or a rebuilt image, recreate it; so does a
    Docker socket that no longer answers inside it (a parent made before the socket's directory was mounted keeps a
    restarted daemon's old socket).
  - A start running at the same time (another play, C(claudy daemon start)) that made the parent first is adopted.
  - Workers share the parent's network namespace, so recreating, restarting, stopping or removing the parent cuts
    their network. While workers are attached the module refuses and names them, unless O(force=true).
  - With O(wait=true), O(state=started) and O(state=restarted) return once ChromaDB answers its heartbeat inside
    the parent; on timeout the module fails with the parent's last log lines.
author:
  - HAL-9000 DinD maintainers (@hal9000-dind)
options:
  name:
    description: Name of the parent container.
    type: str
    default: hal9000-parent
  image:
    description: The parent image (built by the C(hal9000.dind.images) role).
    type: str
    default: hal9000/parent:latest
  state:
    description:
      - V(started) creates and starts the parent (recreating it when its options changed).
      - V(stopped) stops it; V(restarted) restarts it (a new start time); V(absent) removes it.
    type: str
    choices: [started, stopped, restarted, absent]
    default: started
  hal9000_home:
    description: Directory on the Docker host mounted at C(/root/.hal9000) (logs, config, sessions). Created when missing.
    type: path
    default: ~/.hal9000
  volume_prefix:
    description:
      - The shared volumes mounted are C(<prefix>-chromadb), C(<prefix>-memorybank) and C(<prefix>-plugins).
    type: str
    default: hal9000
  docker_socket:
    description:
      - Path of the Docker socket on the Docker host. Its directory is mounted read-only (without the mounts below it)
        at C(/run/hal9000-docker) and the parent's C(/var/run/docker.sock) links to the socket there.
    type: path
    default: /var/run/docker.sock
  memory:
    description: Memory limit of the parent, such as C(4g).
    type: str
    default: 4g
  cpus:
    description: CPU limit of the parent.
    type: float
    default: 2
  chromadb_port:
    description:
      - Port ChromaDB listens on inside the parent (and so on every worker's localhost).
      - Unset, C(CHROMADB_PORT) in C(config/hal9000.conf) under O(hal9000_home) decides, else V(8000). The same rule
        holds for every setting below; only the options given here are put in the parent's environment.
    type: int
  worker_image:
    description: The image workers are started from; the parent checks it at start-up. Unset, C(WORKER_IMAGE) in hal9000.conf, else C(hal9000/worker:latest).
    type: str
  skip_image_pull:
    description: Do not pull a missing worker image at start-up (only warn). Unset, C(SKIP_IMAGE_PULL) in hal9000.conf, else V(false).
    type: bool
  lazy_image_pull:
    description:
      - Pull a missing worker image in the background instead of before ChromaDB is waited for.
      - Unset, C(LAZY_IMAGE_PULL) in hal9000.conf, else V(false).
    type: bool
  enable_pool_manager:
    description: Run the warm-worker pool manager in the parent. Unset, C(ENABLE_POOL_MANAGER) in hal9000.conf, else V(false).
    type: bool
  min_warm_workers:
    description: Warm workers the pool manager keeps ready. Unset, C(MIN_WARM_WORKERS) in hal9000.conf, else V(2).
    type: int
  max_warm_workers:
    description: Most warm workers the pool manager keeps. Unset, C(MAX_WARM_WORKERS) in hal9000.conf, else V(5).
    type: int
  idle_timeout:
    description:
      - Seconds a warm worker above the minimum may stay idle before the pool manager removes it.
      - Unset, C(IDLE_TIMEOUT) in hal9000.conf, else V(300).
    type: int
  enable_mcp_relay:
    description:
      - Run the MCP relay (the seed's memory-bank, sequential-thinking and chroma MCP servers, once for every worker)
        in a sidecar container that shares the parent's network namespace.
      - Unset, C(ENABLE_MCP_RELAY) in hal9000.conf, else V(true).
    type: bool
  mcp_image:
    description:
      - Image of the MCP relay's sidecar (built by the images role).
      - Unset, C(MCP_IMAGE) in hal9000.conf, else V(hal9000/mcp:latest).
    type: str
  mcp_relay_port:
    description:
      - Port the MCP relay listens on, on the parent's loopback (every worker's localhost).
      - Unset, C(MCP_RELAY_PORT) in hal9000.conf, else V(8765).
    type: int
  session_records_max_age:
    description:
      - Days a closed session record (C(sessions/) under O(hal9000_home)) is kept before the parent's housekeeping
        removes it; V(0) removes closed records at the next pass. Open records are never removed.
      - Unset, C(SESSION_RECORDS_MAX_AGE) in hal9000.conf, else V(30).
    type: int
  egress:
    description:
      - Where workers in the parent's network namespace may connect. V(allowlist) - the Anthropic API host,
        the host of C(ANTHROPIC_BASE_URL), loopback and O(egress_allow); V(open) - anywhere but link-local,
        metadata and multicast addresses, with a warning in status. See docs/egress.md.
      - The parent re-reads it without a restart.
      - Unset, C(EGRESS) in hal9000.conf, else V(allowlist).
    type: str
  egress_allow:
    description:
      - Host names (C(host), C(host:443), C(host:8000-8100)), IP addresses and CIDRs (C(192.0.2.0/24:443),
        C([2001:db8::/32]:443)) every worker may reach besides the defaults. Private ranges only when listed;
        a host name that resolves into an unlisted private range is dropped with a warning; link-local and
        metadata addresses are always refused. See docs/egress.md.
      - The parent re-reads it without a restart.
      - Unset, C(EGRESS_ALLOW) in hal9000.conf, else none.
    type: list
    elements: str
  force:
    description:
      - Recreate, restart, stop or remove the parent even though workers share its network namespace.
      - Those workers keep running but lose their network; the result names them.
    type: bool
    default: false
  wait:
    description: Wait until ChromaDB answers inside the parent.
    type: bool
    default: true
  mcp_servers:
    description:
      - Extra MCP servers for every worker, run by the relay like the seed's three (in the hal9000/mcp sidecar,
        once per memory scope) and registered in every worker's Claude Code.
      - Their files (scripts, data) go in C(mcp-servers/) under O(hal9000_home), mounted read-only at
        C(/opt/hal9000/servers) in the sidecar.
      - Written to C(config/mcp_servers.json); a change restarts the relay only, not the parent. Unset, the file is
        left as it is; V([]) removes every extra server.
    type: list
    elements: dict
    suboptions:
      name:
        description: The server's name (lower-case letters, digits and C(-)), as workers see it.
        type: str
        required: true
      command:
        description: The program, in the hal9000/mcp image (for example C(python3) or C(node)).
        type: str
        required: true
      args:
        description: Its arguments.
        type: list
        elements: str
      env_files:
        description:
          - Environment variables read from files below O(hal9000_home) when the relay starts (variable name to
            relative path), so secret values never pass through the module's arguments.
        type: dict
      on_host:
        description:
          - Run the server on the Docker host itself (it needs host-only resources), behind the stdio bridge that
            the M(hal9000.dind.daemon) role starts; the relay reaches it through the unix socket
            C(run/relay/host/<name>.sock) under O(hal9000_home), never through a TCP port.
          - This module only declares it; the daemon role (O(hal9000.dind.daemon#role:main:daemon_mcp_servers)) runs it.
        type: bool
        default: false
  wait_timeout:
    description: Seconds to wait for ChromaDB.
    type: int
    default: 60
extends_documentation_fragment:
  - hal9000.dind.docker
  - hal9000.dind.docker.attributes
attributes:
  check_mode:
    description: Says what would be created, started, stopped or removed, and does nothing.
    support: full
  diff_mode:
    description: Shows the parent's state, image and settings before and after.
    support: full
  idempotent:
    description: The same options on a parent in the requested state change nothing (no restart).
    support: full
"""

EXAMPLES = r"""
- name: Start the parent (the seed's `claudy daemon start`)
  hal9000.dind.parent:

- name: Start it with the warm pool and three warm workers
  hal9000.dind.parent:
    enable_pool_manager: true
    min_warm_workers: 3

- name: Restart it (a new start time) even though workers are attached
  hal9000.dind.parent:
    state: restarted
    force: true

- name: Stop it
  hal9000.dind.parent:
    state: stopped
"""

RETURN = r"""
parent:
  description: The parent after the change; only RV(parent.name) and RV(parent.state=absent) when it does not exist.
  returned: always
  type: dict
  contains:
    id:
      description: Container ID.
      type: str
    name:
      description: Container name.
      type: str
      sample: hal9000-parent
    image:
      description: Image reference.
      type: str
      sample: hal9000/parent:latest
    state:
      description: C(running), C(exited), C(created) or C(absent).
      type: str
      sample: running
    health:
      description: Docker health status (C(starting), C(healthy), C(unhealthy) or C(none)).
      type: str
      sample: healthy
    health_detail:
      description:
        - "The first line the last health check printed, such as C(disk full: /root/.hal9000, free space needed) or
          C(docker socket does not answer)."
      type: str
      sample: "relay ready: chroma ready, memory-bank ready, sequential-thinking ready"
    chromadb_ready:
      description: Whether ChromaDB answered its heartbeat inside the parent.
      type: bool
      sample: true
    started_at:
      description: When the container last started.
      type: str
      sample: "2026-11-27T15:00:00.123456789Z"
    exit_code:
      description: Exit code of the last run.
      type: int
      sample: 0
    startup:
      description: Start-up phase timings in milliseconds.
      type: dict
      sample: {"critical_init": 40, "parallel_init": 120, "service_ready": 300, "background_services": 0}
    settings:
      description: The settings the parent runs with (read at its start-up).
      type: dict
actions:
  description: What was done, or would be done in check mode.
  returned: always
  type: list
  elements: str
  sample: ["created hal9000-parent", "started hal9000-parent"]
affected_workers:
  description: Workers whose network was cut because O(force=true) allowed it.
  returned: always
  type: list
  elements: str
  sample: []
status_lines:
  description:
    - The installation's status after the change, as C(claudy daemon status) printed it (parent, ChromaDB, workers,
      shared volumes of O(volume_prefix)); the same lines as RV(hal9000.dind.info#module:status_lines).
  returned: always
  type: list
  elements: str
  sample: ["HAL-9000 Orchestrator Status", "Parent container: Running (hal9000-parent, health healthy)"]
"""

from ansible_collections.hal9000.dind.plugins.module_utils.ansible_docker import build_module, run_module
from ansible_collections.hal9000.dind.plugins.module_utils.daemon import module_argument_spec, put_parent, spec_from_params


def manage_parent(module, client):
    return put_parent(client, module.params, module.check_mode, module._diff, warn=module.warn)


def main():
    module = build_module(
        module_argument_spec(),
        supports_check_mode=True,
    )
    run_module(module, manage_parent, validate=spec_from_params)


if __name__ == "__main__":
    main()
