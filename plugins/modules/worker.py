#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: worker
short_description: Run a hardened, limited Claude Code worker container
version_added: 0.1.0
description:
  - Starts, stops or removes one worker. Every worker, whether made by this module, by the coordinator in the parent
    or by the pool manager, comes from the same spec in the collection's module_utils.
  - In the default V(dind) mode the worker shares the parent's network namespace (C(network_mode container:<parent>)),
    so ChromaDB answers on its localhost:8000. The deprecated V(legacy) mode (the seed's v0.5.x single-container
    mode) runs it on its own network without a parent; it will be removed in 1.0.
  - Hardened by default, each relaxable by an explicit option - all capabilities dropped, no-new-privileges,
    a non-root user (the project's owner, so files written in C(/workspace) belong to them), Docker's default seccomp
    profile, never the Docker socket. The API key is mounted read-only from O(api_key_file) at
    C(/run/secrets/anthropic_key) and read by Claude Code through its C(apiKeyHelper) setting, never from the
    environment.
  - The same options change nothing. Changed limits are applied in place (C(docker update)) without a restart;
    other changes recreate the worker. A worker whose parent was recreated (its network points at a container that no
    longer runs) is recreated into the current parent's network.
author:
  - HAL-9000 DinD maintainers (@hal9000-dind)
options:
  name:
    description:
      - Worker name. When not given, a unique name C(hal9000-worker-<random>) is generated (so the task is not idempotent).
    type: str
  project_dir:
    description:
      - Project directory on the Docker host, bind-mounted read-write at C(/workspace). Symlinks are resolved on the host
        and the real path is mounted. Refused - system trees and what is in them (C(/etc), C(/usr), C(/var/lib), C(/run),
        C(/proc), ...), directories that hold other trees (C(/), C(/home), C(/opt), C(/srv), C(/mnt), C(/tmp), ... themselves),
        whole user homes (C(/root), C(/home/NAME)) and their credential directories (C(.ssh), C(.aws), C(.config), ...),
        the HAL-9000 home, anything in it and the directories above it, and the Docker socket's directory.
        The list and why - C(docs/project-dirs.md) in the collection.
      - Without it the worker gets an empty per-worker volume at C(/workspace).
    type: path
  image:
    description: Worker image. Mutually exclusive with O(flavour).
    type: str
  flavour:
    description: Bundled worker image to use - V(minimal) (C(hal9000/worker:latest), with git) or V(ultramin) (no git).
    type: str
    choices: [minimal, ultramin]
  state:
    description: V(started) creates and starts it; V(stopped) stops it (removed too when O(auto_remove)); V(absent) removes it.
    type: str
    choices: [started, stopped, absent]
    default: started
  auto_remove:
    description: Remove the container when it stops (the seed's C(--rm); V(false) is C(--no-rm)).
    type: bool
    default: true
  memory:
    description:
      - Memory limit (no swap on top).
      - Unset, E(WORKER_MEMORY) in the module's environment, then C(WORKER_MEMORY) in C(config/hal9000.conf) under
        O(hal9000_home), then C(4g). The same rule gives O(cpus) and O(pids_limit) their defaults.
    type: str
  cpus:
    description: CPU limit. Defaults to E(WORKER_CPUS), then C(WORKER_CPUS) in hal9000.conf, then C(2).
    type: str
  pids_limit:
    description: Process limit. Defaults to E(WORKER_PIDS_LIMIT), then C(WORKER_PIDS_LIMIT) in hal9000.conf, then C(100).
    type: str
  storage_size:
    description:
      - The most the worker may write outside its Claude home and C(/workspace), such as C(10g); not lifted by
        O(no_limits). Unset, E(WORKER_STORAGE_SIZE), then C(WORKER_STORAGE_SIZE) in hal9000.conf, then C(10g).
      - C(/tmp), C(/var/tmp) and C(/run/lock), the only paths of the images the worker's user may write besides its
        home and C(/workspace), are tmpfs of this size (at most C(512m) each, counted in O(memory)), so nothing it
        writes reaches the container's writable layer. Where the storage driver can cap that layer (overlay2 on xfs
        with C(pquota), btrfs, zfs; not overlay2 on ext4) it is capped at this size too; elsewhere
        O(read_only=true) closes it.
      - See C(docs/storage.md). A change recreates the worker.
    type: str
  egress_allow:
    description:
      - This worker's own egress allowlist, in place of the installation's (C(EGRESS_ALLOW)); the defaults stay
        (the Anthropic API, the host of its C(ANTHROPIC_BASE_URL), loopback). Entries as in C(EGRESS_ALLOW)
        (C(host), C(host:443), C(192.0.2.0/24:443), C([2001:db8::1]:443)); link-local and metadata addresses are
        always refused. An empty list allows only the defaults.
      - Unset, the installation's policy (C(EGRESS), C(EGRESS_ALLOW) in hal9000.conf) applies.
      - The parent applies it to the worker's uid before the worker starts, and to a claimed warm worker at the claim
        (O(from_pool=true); unset, its pool's). Workers that share a uid share a policy, so another running worker of
        the same uid with a different policy is refused. Kept in a label, not in the spec digest. Only for
        O(mode=dind). See C(docs/egress.md).
    type: list
    elements: str
  hal9000_home:
    description:
      - The HAL-9000 home whose C(config/hal9000.conf) gives the default limits, and whose claim lock O(from_pool) takes.
      - Defaults to the directory the parent mounts as its home (so it is the parent's), or C(~/.hal9000) in V(legacy) mode.
    type: path
  no_limits:
    description: Run without memory, CPU and process limits.
    type: bool
    default: false
  env:
    description:
      - Extra environment variables (shown by C(docker inspect)).
      - Names that look like secrets are refused - containing, in any case, C(SECRET), C(PASSWORD), C(PASSWD), C(PASSPHRASE),
        C(TOKEN) (not C(TOKENIZER)), C(API_KEY)/C(APIKEY), C(ACCESS_KEY), C(PRIVATE_KEY), C(CREDENTIAL) or C(AUTH) (not
        C(AUTHOR)); C(-) and C(.) count as C(_). Give the API key with O(api_key_file) (Claude Code reads it through its
        C(apiKeyHelper)), other secrets in files.
    type: dict
    default: {}
  api_key_file:
    description: Host file holding the Anthropic API key, mode 0600 or stricter, readable by the worker's user.
    type: path
  mount_claude_config:
    description:
      - Give the worker the host's Claude config (the seed's option A), safely - a private copy of O(claude_config_dir)
        in the worker's own Claude home (C(~/.claude) there), owned by the worker's user. The host directory is never
        mounted, so nothing in the worker can change the host's settings, hooks or credentials, and it works when the
        module runs as root without widening the host directory's modes.
      - Copied again at every start of the worker, file by file, when the host's file changed since the last copy;
        the worker's own changes to a file stay until the host's changes. Run-time state (C(projects/), C(todos/),
        history, ...) and symbolic links are never copied. Needs O(claude_home=persistent).
    type: bool
    default: false
  claude_config_dir:
    description: The host directory O(mount_claude_config) copies.
    type: path
    default: ~/.claude
  claude_config_credentials:
    description:
      - Also copy C(.credentials.json) (the host's Claude login) with O(mount_claude_config).
      - Off, it is never copied, and removed if an earlier run copied it.
    type: bool
    default: false
  claude_home:
    description:
      - Where the worker's Claude Code state (C(~/.claude), C(~/.claude.json), history, settings, login) lives.
      - V(persistent) - C(workers/<name>/) under O(hal9000_home) on the Docker host, owned by the worker's user, mode 0700,
        mounted as C(/home/claude); it survives a recreate of the same worker name and is kept when the worker is
        removed (unless O(purge_home)). Only one running worker may use a home.
      - V(ephemeral) - a tmpfs, gone with the container.
      - Unset, V(persistent) when O(name) is given (or O(mount_claude_config)), else V(ephemeral).
      - A claimed warm worker (O(from_pool=true)) gets its home at the claim (its pool's workers must be persistent too).
    type: str
    choices: [persistent, ephemeral]
  plugins:
    description:
      - Mount the installation's plugins volume (the parent's C(<prefix>-plugins), where the migration put the v0.5.x
        plugins) read-only at C(/opt/hal9000/plugins), linked from C(~/.claude/plugins); the parent enables its
        installed plugins through Claude Code's managed settings. V(false) leaves it out.
    type: bool
    default: true
  purge_home:
    description: With O(state=absent), also remove the worker's persistent Claude home. By default it is kept.
    type: bool
    default: false
  read_only:
    description: Read-only root file system (C(/tmp), C(/var/tmp), C(/run/lock), C(/home/claude) and the mounts stay writable).
    type: bool
    default: false
  memory_scope:
    description:
      - Whose memory the worker's MCP servers (through the parent's relay) reach.
      - V(project) - the memory of its O(project_dir) only (a worker without a project has none); V(shared) - the
        installation's common memory, where migrated v0.5.x data is; V(none) - no memory.
      - Whatever project, file or collection name the worker gives, it stays inside this scope.
      - A claimed warm worker (O(from_pool=true)) gets this scope at the claim.
    type: str
    choices: [project, shared, none]
    default: project
  anthropic_base_url:
    description:
      - Claude Code's model endpoint in the worker (C(ANTHROPIC_BASE_URL), e.g. an LLM gateway), an http(s) URL.
      - Unset, C(ANTHROPIC_BASE_URL) in hal9000.conf under O(hal9000_home) decides, else Claude Code's own default.
    type: str
  drop_capabilities:
    description: Drop every Linux capability.
    type: bool
    default: true
  no_new_privileges:
    description: Forbid gaining privileges (setuid binaries).
    type: bool
    default: true
  user:
    description:
      - C(uid:gid) to run as. Defaults to the owner of O(project_dir), or C(1001:1001) (the image's user) for root-owned or no project.
      - Root (uid 0, however spelled - C(0), C(00), C(root)) is refused, in every mode.
    type: str
  parent:
    description: The parent whose network the worker shares.
    type: str
    default: hal9000-parent
  mode:
    description: V(dind) shares the parent's network; V(legacy) (deprecated, removed in 1.0) runs without a parent.
    type: str
    choices: [dind, legacy]
    default: dind
  from_pool:
    description:
      - Take a warm worker made from exactly these options (same image, project, user, API key file, ...) from the
        parent's pool and give it O(name), instead of creating one. Limits are then applied in place.
      - When no warm worker fits, a worker is created as usual and RV(claimed) is false.
      - Claims take a lock file in the parent's home (C(run/claim.lock) under its O(hal9000.dind.parent#module:hal9000_home)),
        so two claimers never get the same worker; the module must run on the Docker host as a user who may write there.
      - A lock held longer than O(claim_timeout) (a stuck claimer) gives a warning saying so, and the worker is
        created as when none fits.
    type: bool
    default: false
  claim_timeout:
    description:
      - Seconds a claim (O(from_pool=true)) waits for the pool's claim lock.
      - Unset, C(CLAIM_TIMEOUT) in hal9000.conf under O(hal9000_home), else V(2).
    type: float
  command:
    description: Command to run instead of idling (the default idles, ready for C(docker exec -it NAME claude)).
    type: list
    elements: str
extends_documentation_fragment:
  - hal9000.dind.docker
  - hal9000.dind.docker.attributes
attributes:
  check_mode:
    description: Says what would be created, updated or removed, and does nothing.
    support: full
  diff_mode:
    description: Shows the worker's image, project, user and limits before and after.
    support: full
  idempotent:
    description: Idempotent when O(name) is given.
    support: partial
"""

EXAMPLES = r"""
- name: A background worker on a project (the seed's spawn-worker.sh -d -n my-worker /path/to/project)
  hal9000.dind.worker:
    name: my-worker
    project_dir: /srv/projects/webapp
    api_key_file: /home/alice/.hal9000/secrets/anthropic_key
  register: spawned

- name: Say how to attach
  ansible.builtin.debug:
    msg: "{{ spawned.worker.attach_command }}"

- name: More memory and processes, applied without a restart
  hal9000.dind.worker:
    name: my-worker
    project_dir: /srv/projects/webapp
    memory: 8g
    pids_limit: "200"

- name: Stop it
  hal9000.dind.worker:
    name: my-worker
    state: stopped
"""

RETURN = r"""
worker:
  description: The worker; only RV(worker.name) and RV(worker.state=absent) when it does not exist.
  returned: always
  type: dict
  contains:
    id:
      description: Container ID.
      type: str
    name:
      description: Worker name.
      type: str
      sample: hal9000-worker-3f2a9c0d1e
    state:
      description: C(running), C(exited) or C(absent).
      type: str
    image:
      description: Image reference.
      type: str
    network_mode:
      description: C(container:<parent id>) in dind mode, C(bridge) in legacy mode.
      type: str
    project:
      description: The resolved project directory, empty for a generic worker.
      type: str
    user:
      description: The C(uid:gid) the worker runs as.
      type: str
      sample: "1000:1000"
    limits:
      description: Memory in bytes, CPUs and process limit (nulls without limits).
      type: dict
      sample: {"memory": 4294967296, "cpus": 2.0, "pids_limit": 100}
    claude_home:
      description: V(persistent) (C(workers/<name>) under the home) or V(ephemeral) (a tmpfs).
      type: str
      sample: persistent
    spawn_ms:
      description: Milliseconds from create to started, when this run started it; otherwise null.
      type: float
    attach_command:
      description: How to open Claude Code in it.
      type: str
      sample: docker exec -it my-worker claude
claimed:
  description: Whether a warm worker was claimed from the pool (O(from_pool=true)).
  returned: always
  type: bool
claim_ms:
  description: Milliseconds the claim took (the pool lookup and the rename), when one was made.
  returned: when O(from_pool=true) and a worker was created or claimed
  type: float
actions:
  description: What was done, or would be done in check mode.
  returned: always
  type: list
  elements: str
"""

from ansible_collections.hal9000.dind.plugins.module_utils.ansible_docker import build_module, run_module
from ansible_collections.hal9000.dind.plugins.module_utils.worker_state import fix_name, module_argument_spec, put_worker


def manage_worker(module, client):
    return put_worker(client, module.params, module.check_mode, module._diff, warn=module.warn,
                      deprecate=lambda message: module.deprecate(message, version="1.0.0", collection_name="hal9000.dind"))


def main():
    module = build_module(
        module_argument_spec(),
        supports_check_mode=True,
        mutually_exclusive=[("image", "flavour")],
    )
    if module.params["state"] != "started" and not module.params["name"]:
        module.fail_json(msg=f"state={module.params['state']} needs the worker's name.")
    run_module(module, manage_worker, validate=fix_name)


if __name__ == "__main__":
    main()
