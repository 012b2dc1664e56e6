# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Workers: the one spec every worker is made from, validated and hardened.

The worker module, the coordinator's spawn and the pool manager all call
``worker_spec`` and ``create_worker``, so warm and cold workers cannot drift
apart. Pure: standard library and the docker SDK only, never ``ansible.*``.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import secrets
import stat
import time

from ansible_collections.hal9000.dind.plugins.module_utils.claude_homes import (
    CLAUDE_HOMES,
    HOME_IN_WORKER,
    PLUGINS_IN_WORKER,
    WORKERS_DIR,
    check_home_free,
    home_dirname,
    record_user,
    run_privileged,
)
from ansible_collections.hal9000.dind.plugins.module_utils.constants import DOCKER_SOCKET, PARENT_NAME, WORKER_IMAGE, default_home
from ansible_collections.hal9000.dind.plugins.module_utils.egress import EgressError, parse_allow
from ansible_collections.hal9000.dind.plugins.module_utils.engine import ERRORS, inspect_container
from ansible_collections.hal9000.dind.plugins.module_utils.errors import Hal9000Error
from ansible_collections.hal9000.dind.plugins.module_utils.fleet import (
    LABEL_CLAUDE_HOME,
    LABEL_EGRESS,
    LABEL_LIMITS,
    LABEL_MANAGED,
    LABEL_PARENT,
    LABEL_PARENT_STARTED,
    LABEL_POOL,
    LABEL_PROJECT,
    LABEL_ROLE,
    LABEL_SPEC,
    LABEL_WARM_NAME,
    LABEL_WORKER,
    LABEL_WORKSPACE,
    ROLE_WORKER,
    ROLE_WORKSPACE,
    limits_label,
    limits_of,
)
from ansible_collections.hal9000.dind.plugins.module_utils.images import image_id as current_image_id
from ansible_collections.hal9000.dind.plugins.module_utils.parent import mounted_home
from ansible_collections.hal9000.dind.plugins.module_utils.relay import (
    CLIENT_DIR,
    CLIENT_MOUNT,
    MEMORY_SCOPES,
    TOKEN_DIR,
    issue_credential,
    revoke,
    scope_text,
)
from ansible_collections.hal9000.dind.plugins.module_utils.sessions import record_start
from ansible_collections.hal9000.dind.plugins.module_utils.settings import resolve, typed_value
from ansible_collections.hal9000.dind.plugins.module_utils.volumes import SHARED_VOLUME_MOUNTS
from ansible_collections.hal9000.dind.plugins.module_utils.validate import (
    check_worker_user,
    parse_cpus,
    parse_memory,
    parse_positive_int,
    refused_project_dir,
    secret_env_names,
    validate_name,
)


def Mount(*args, **kwargs):  # noqa: N802 (stands for the SDK's class)
    """docker.types.Mount; the SDK is imported here, when a container is made, not by a warm claim (engine)."""
    from docker.types import Mount as SdkMount  # pylint: disable=import-outside-toplevel

    return SdkMount(*args, **kwargs)


SECRET_TARGET = "/run/secrets/anthropic_key"
API_KEY_HELPER = f"cat {SECRET_TARGET}"  # Claude Code reads the key from its file, never from the environment
CLAUDE_USER = "1001:1001"
CPU_PERIOD = 100000


# The worker options every front end offers, declared once: the worker module's argument_spec,
# spawn_worker.yml's variables, the coordinator's spawn flags and the pools' options derive from
# (or are tested against) this list. Adding an option: a line here, a worker_spec keyword and its test.
#   name: worker_spec keyword and module option; ansible: its argument_spec entry;
#   flag: `coordinator spawn` flag (None: not offered there); pool: also an option of every pool;
#   help: the flag's help.
WorkerOption = collections.namedtuple("WorkerOption", "name ansible flag pool help")
WORKER_OPTIONS = (
    WorkerOption("project_dir", {"type": "path"}, "--project", False, "project directory on the Docker host"),
    WorkerOption("memory", {"type": "str"}, "--memory", False, "memory limit (default: WORKER_MEMORY, else 4g)"),
    WorkerOption("cpus", {"type": "str"}, "--cpus", False, "CPU limit (default: WORKER_CPUS, else 2)"),
    WorkerOption("pids_limit", {"type": "str"}, "--pids-limit", False, "process limit (default: WORKER_PIDS_LIMIT, else 100)"),
    WorkerOption("no_limits", {"type": "bool", "default": False}, "--no-limits", False, "no memory, CPU or process limit"),
    WorkerOption("storage_size", {"type": "str"}, "--storage-size", True,
                 "most the worker may write outside its home and /workspace (default: WORKER_STORAGE_SIZE, else 10g)"),
    WorkerOption("auto_remove", {"type": "bool", "default": True}, "--no-rm", False, "keep the container after it stops"),
    WorkerOption("env", {"type": "dict", "default": {}}, None, False, None),
    WorkerOption("api_key_file", {"type": "path", "no_log": False}, "--api-key-file", True,
                 "host file with the API key (mode 0600)"),
    WorkerOption("read_only", {"type": "bool", "default": False}, "--read-only", True, "read-only root file system"),
    WorkerOption("drop_capabilities", {"type": "bool", "default": True}, None, False, None),
    WorkerOption("no_new_privileges", {"type": "bool", "default": True}, None, False, None),
    WorkerOption("user", {"type": "str"}, "--user", False, "uid:gid to run as (default 1001:1001)"),
    WorkerOption("mode", {"type": "str", "default": "dind", "choices": ["dind", "legacy"]}, None, False, None),
    WorkerOption("parent", {"type": "str", "default": PARENT_NAME}, None, False, None),
    WorkerOption("memory_scope", {"type": "str", "default": "project", "choices": list(MEMORY_SCOPES)}, "--memory-scope", True,
                 "whose memory the worker's MCP servers reach: its project's, the shared one, or none"),
    WorkerOption("anthropic_base_url", {"type": "str"}, "--anthropic-base-url", True,
                 "Claude Code's model endpoint, an http(s) URL (default: ANTHROPIC_BASE_URL in hal9000.conf)"),
    WorkerOption("claude_home", {"type": "str", "choices": list(CLAUDE_HOMES)}, "--claude-home", True,
                 "where Claude Code's state lives: ~/.hal9000/workers/NAME (persistent; the default for a named worker) "
                 "or a tmpfs gone with the container (ephemeral; the default when the name is generated)"),
    WorkerOption("plugins", {"type": "bool", "default": True}, "--no-plugins", True,
                 "leave out the installation's plugins volume (mounted read-only at ~/.claude/plugins)"),
    WorkerOption("egress_allow", {"type": "list", "elements": "str"}, "--egress-allow", True,
                 "this worker's own egress allowlist (host[:port], address, CIDR; comma-separated), in place of "
                 "EGRESS_ALLOW; the defaults stay (docs/egress.md)"),
    WorkerOption("command", {"type": "list", "elements": "str"}, None, False, None),
    WorkerOption("claim_timeout", {"type": "float"}, None, False, None),  # from_pool: how long to wait for the claim lock
)
POOL_OPTIONS = tuple(option for option in WORKER_OPTIONS if option.pool)


def worker_argument_spec():
    """The worker module's argument_spec entries for WORKER_OPTIONS (copies: Ansible may change them)."""
    return {option.name: dict(option.ansible) for option in WORKER_OPTIONS}


def add_spawn_flags(parser):
    """The coordinator's spawn flags for WORKER_OPTIONS; a flag of an option that defaults to true turns it off."""
    for option in WORKER_OPTIONS:
        if option.flag is None:
            continue
        if option.ansible["type"] == "bool":
            default = option.ansible["default"]
            parser.add_argument(option.flag, dest=option.name, action="store_false" if default else "store_true",
                                help=option.help)
        else:
            parser.add_argument(option.flag, dest=option.name, default=option.ansible.get("default"),
                                choices=option.ansible.get("choices"), help=option.help)


def generate_name(prefix="hal9000-worker"):
    """A unique worker name (random, not time-based: two spawns in a second never collide)."""
    return f"{prefix}-{secrets.token_hex(5)}"


def host_path_facts(paths, root=None):
    """What the Docker host's file system says of ``paths`` (real path, type, mode, owner) and its users' homes.

    Standard library only (os, stat): the parent, which sees only its home, runs this function's own source in
    a helper container with the host's / at ``root`` (``ParentView``), chrooted there so that absolute symbolic
    links resolve as they do for the Docker daemon's bind mounts.
    """
    if root:
        os.chroot(root)
        os.chdir("/")

    def facts(path):
        real = os.path.realpath(path)
        try:
            info = os.stat(real)
        except OSError:
            return {"real": real, "exists": False, "dir": False, "file": False, "mode": 0, "uid": -1, "gid": -1}
        return {"real": real, "exists": True, "dir": stat.S_ISDIR(info.st_mode), "file": stat.S_ISREG(info.st_mode),
                "mode": stat.S_IMODE(info.st_mode), "uid": info.st_uid, "gid": info.st_gid}

    homes = set()
    try:
        with open("/etc/passwd", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                fields = line.rstrip("\n").split(":")
                if len(fields) > 5 and fields[5].startswith("/") and fields[5] != "/":
                    homes.add(os.path.realpath(fields[5]))
    except OSError:
        pass
    return {"paths": {path: facts(path) for path in paths}, "user_homes": sorted(homes)}


def probe_program():
    """``python3 -c`` text running ``host_path_facts`` alone: argv[1] the paths (JSON), argv[2] the root; prints JSON."""
    import inspect  # pylint: disable=import-outside-toplevel  # here: it imports ast, which a warm claim has no use for

    return ("import json, os, stat, sys\n" + inspect.getsource(host_path_facts)
            + "print(json.dumps(host_path_facts(json.loads(sys.argv[1]), sys.argv[2])))\n")


class LocalView:
    """The Docker host's files as a process running on the host sees them (the modules)."""

    kind = "local"

    def __init__(self, homes=(), sockets=(DOCKER_SOCKET,)):
        self.homes = tuple(home for home in (default_home(), *homes) if home)
        self.sockets = tuple(sockets)

    def facts(self, paths):
        return host_path_facts(paths)


class ParentView:
    """The Docker host's files as the parent's programs can know them: the parent sees only its home, so
    ``host_path_facts`` runs in a helper container of the parent's own image with the host's / mounted
    read-only (no network, only the capabilities to chroot and to read any directory). Facts are kept for
    the view's life: make one per command or pass."""

    kind = "parent"
    ROLE = "path-check"

    def __init__(self, client, parent):
        self.client = client
        self.parent = parent
        self._inspected = None
        self._facts = {"paths": {}, "user_homes": None}

    def _parent(self):
        if self._inspected is None:
            self._inspected = inspect_container(self.client, self.parent)
            if self._inspected is None:
                raise Hal9000Error(f"Parent {self.parent} is not running: start the daemon first (ansible-playbook playbooks/daemon.yml).")
        return self._inspected

    @property
    def homes(self):
        return tuple(home for home in [mounted_home(self._parent())] if home)

    @property
    def sockets(self):
        """The host's default socket and the one the parent reaches (HAL9000_DOCKER_SOCKET: in a mounted directory)."""
        inspected = self._parent()
        env = dict(item.split("=", 1) for item in (inspected.get("Config") or {}).get("Env") or [] if "=" in item)
        inside = env.get("HAL9000_DOCKER_SOCKET", DOCKER_SOCKET)
        found = {DOCKER_SOCKET}
        for mount in inspected.get("Mounts") or []:
            target = mount.get("Destination", "")
            if target and (inside == target or inside.startswith(target.rstrip("/") + "/")):
                found.add(mount["Source"] + inside[len(target):])
        return tuple(sorted(found))

    def facts(self, paths):
        missing = [path for path in paths if path not in self._facts["paths"]]
        if missing or self._facts["user_homes"] is None:
            found = self._probe(missing)
            self._facts["paths"].update(found["paths"])
            self._facts["user_homes"] = found["user_homes"]
        return {"paths": {path: self._facts["paths"][path] for path in paths}, "user_homes": self._facts["user_homes"]}

    def _probe(self, paths):
        host_config = self.client.api.create_host_config(
            mounts=[Mount("/host", "/", type="bind", read_only=True)], network_mode="none", read_only=True,
            cap_drop=["ALL"], cap_add=["SYS_CHROOT", "DAC_READ_SEARCH"], security_opt=["no-new-privileges:true"],
            mem_limit="64m", pids_limit=16,
        )
        created = self.client.api.create_container(
            self._parent()["Image"], ["-I", "-S", "-c", probe_program(), json.dumps(paths), "/host"], entrypoint=["python3"], user="0",
            name=f"{self.parent}-{self.ROLE}-{secrets.token_hex(4)}", host_config=host_config, healthcheck={"test": ["NONE"]},
            labels={LABEL_MANAGED: "true", LABEL_ROLE: self.ROLE, LABEL_PARENT: self.parent},
        )
        try:
            self.client.api.start(created["Id"])
            status = self.client.api.wait(created["Id"], timeout=60)["StatusCode"]
            output = self.client.api.logs(created["Id"], stdout=True, stderr=status != 0).decode("utf-8", "replace")
        finally:
            self.client.api.remove_container(created["Id"], force=True)
        if status != 0:
            last = output.strip().splitlines()[-1] if output.strip() else f"exit status {status}"
            raise Hal9000Error(f"Could not look at the Docker host's paths {', '.join(paths)} from {self.parent}: {last}")
        return json.loads(output)


def project_path(path):
    """The project directory as given, normalised and checked without looking at the host (pools.json, a spec
    made in the parent): spawn_worker looks at the host before any worker is made from it."""
    if not path or not os.path.isabs(str(path)):
        raise Hal9000Error(f"project_dir {path!r} must be an absolute path to a directory on the Docker host.")
    normal = "/" + os.path.normpath(path).lstrip("/")
    reason = refused_project_dir(normal)
    if reason:
        raise Hal9000Error(f"project_dir {path} is refused: {reason}; mount a project directory (docs/project-dirs.md).")
    return normal


def checked_host_paths(view, project_dir=None, api_key_file=None, user=None, canonical=False):
    """The one check of a worker's host paths, on the Docker host's ``view`` (LocalView, ParentView).

    Every way a worker is made passes here: worker_spec (the modules, `coordinator spawn`) and spawn_worker
    (everything, with the installation's home known). Returns (the project's real path or "", the user: ``user``,
    else the project's owner, else the image's user). ``canonical``: the project must be its own real path
    (a spec made without looking at the host must mount exactly what was checked).
    """
    if project_dir:
        project_path(project_dir)
    if api_key_file and not os.path.isabs(api_key_file):
        raise Hal9000Error(f"api_key_file {api_key_file!r} must be an absolute path.")
    wanted = [path for path in (project_dir, api_key_file) if path]
    if not wanted:
        return "", user or CLAUDE_USER
    found = view.facts(wanted + [path for path in view.homes + view.sockets if path not in wanted])
    facts = found["paths"]
    project = ""
    if project_dir:
        fact = facts[project_dir]
        if not fact["exists"]:
            raise Hal9000Error(f"project_dir {project_dir} does not exist on the Docker host: create it or give another directory.")
        if not fact["dir"]:
            raise Hal9000Error(f"project_dir {project_dir} is not a directory: give the project's directory.")
        project = fact["real"]
        homes = {path for home in view.homes for path in (os.path.normpath(home), facts[home]["real"])}
        reason = refused_project_dir(project, sorted(homes), found["user_homes"])
        sockets = {facts[socket]["real"] for socket in view.sockets}
        if not reason and any(socket == project or socket.startswith(project.rstrip("/") + "/") for socket in sockets):
            reason = "it holds the Docker socket"
        if reason:
            raise Hal9000Error(f"project_dir {project_dir} resolves to {project} on the Docker host and is refused: "
                               f"{reason}; mount a project directory (docs/project-dirs.md).")
        if canonical and project != project_dir:
            raise Hal9000Error(f"project_dir {project_dir} is a symbolic link to {project} on the Docker host: give {project} "
                               "(for a pool: declare it again with hal9000.dind.pool).")
        if user is None:
            user = CLAUDE_USER if fact["uid"] == 0 else f"{fact['uid']}:{fact['gid']}"
    user = check_worker_user(user or CLAUDE_USER)
    if api_key_file:
        _check_api_key_facts(api_key_file, facts[api_key_file], user)
    return project, user


def _check_api_key_facts(path, fact, user):
    """The key file must exist, be private (0600 or stricter) and belong to the worker's user (when numeric)."""
    if not fact["exists"]:
        raise Hal9000Error(f"api_key_file {path} does not exist: write the key there (mode 0600).")
    if not fact["file"]:
        raise Hal9000Error(f"api_key_file {path} is not a regular file.")
    if fact["mode"] & 0o077:
        raise Hal9000Error(f"api_key_file {path} has mode {fact['mode']:04o}: others can read it; chmod 600 {path}.")
    uid = user.split(":")[0]
    if uid.isdigit() and int(uid) != fact["uid"]:
        raise Hal9000Error(f"api_key_file {path} belongs to uid {fact['uid']} but the worker runs as uid {uid}: chown {uid} {path}.")


def resolve_project_dir(path, home=None):
    """The project directory's real path on this host (a module's run), refused as ``checked_host_paths`` says."""
    return checked_host_paths(LocalView(homes=(home,) if home else ()), path)[0]


def check_api_key_file(path, worker_uid):
    """The key file's checks of ``checked_host_paths``, on this host."""
    if not os.path.isabs(path):
        raise Hal9000Error(f"api_key_file {path!r} must be an absolute path.")
    _check_api_key_facts(path, host_path_facts([path])["paths"][path], str(worker_uid))
    return path


def project_user(project):
    """Run as the project's owner, so files written in /workspace belong to them (root-owned: the image's user)."""
    if not project:
        return CLAUDE_USER
    info = os.stat(project)
    return CLAUDE_USER if info.st_uid == 0 else f"{info.st_uid}:{info.st_gid}"


def parse_limits(memory, cpus, pids_limit, no_limits=False):
    """Validated limits in Docker's units, or None for each when no_limits."""
    if no_limits:
        return {"memory": None, "cpus": None, "pids_limit": None}
    return {
        "memory": parse_memory(memory),
        "cpus": parse_cpus(cpus),
        "pids_limit": parse_positive_int(pids_limit, "pids_limit"),
    }


def worker_spec(
    name=None, image=WORKER_IMAGE, project_dir=None, parent=PARENT_NAME, mode="dind",
    memory=None, cpus=None, pids_limit=None, no_limits=False, env=None, command=None,
    auto_remove=True, read_only=False, api_key_file=None, claude_config_dir=None,
    pool="", user=None, drop_capabilities=True, no_new_privileges=True,
    docker_socket=DOCKER_SOCKET, check_host_paths=True, settings=None,
    memory_scope="project", anthropic_base_url=None, claude_home=None, plugins=True, storage_size=None,
    host_view=None, claim_timeout=None, egress_allow=None,
):
    """Everything that decides what a worker looks like, validated before Docker is touched.

    Limits not given here come from ``settings`` (``settings.resolve``: hal9000.conf and the seed's
    defaults), never from the environment: every caller resolves them by the same rule.
    ``claude_home`` left out: persistent for a named worker (and one with the host's Claude config),
    ephemeral when the name is generated here (nobody could ask for that worker again by name).
    Host paths are checked on ``host_view`` (default: this host, ``LocalView``) by ``checked_host_paths``;
    ``check_host_paths=False`` (a pool's spec) checks only what the paths say, and ``spawn_worker`` looks.
    """
    claude_home = claude_home or ("persistent" if name or claude_config_dir else "ephemeral")
    if claude_home not in CLAUDE_HOMES:
        raise Hal9000Error(f"claude_home {claude_home!r} is unknown: use persistent or ephemeral.")
    if claude_config_dir and claude_home != "persistent":
        raise Hal9000Error("mount_claude_config copies the host's Claude config into the worker's own home: "
                           "use claude_home=persistent.")
    name = validate_name(name, "worker") if name else generate_name()
    if mode not in ("dind", "legacy"):
        raise Hal9000Error(f"mode {mode!r} is unknown: use dind (share the parent's network) or legacy.")
    if mode == "dind":
        validate_name(parent, "parent")
    settings = settings or resolve()
    limits = parse_limits(memory or settings["memory"], cpus or settings["cpus"],
                          pids_limit or settings["pids_limit"], no_limits)
    user = check_worker_user(user) if user else None  # before the host is looked at: root is never a worker
    project = project_path(project_dir) if project_dir else ""
    if check_host_paths:
        host_view = host_view or LocalView(sockets=(docker_socket,))
        project, user = checked_host_paths(host_view, project_dir, api_key_file, user)
    user = user or CLAUDE_USER
    environment = {str(k): str(v) for k, v in (env or {}).items()}
    leaked = secret_env_names(environment)
    if leaked:
        raise Hal9000Error(
            f"env {', '.join(leaked)} looks like a secret (validate.SECRET_ENV_PATTERNS) and would be shown by docker inspect: "
            "give the API key with api_key_file (read by Claude Code's apiKeyHelper) and other secrets in files, never in env."
        )
    environment.update(HOME="/home/claude", CLAUDE_HOME="/home/claude/.claude")
    base_url = typed_value("ANTHROPIC_BASE_URL", anthropic_base_url or settings["anthropic_base_url"])
    if base_url:
        environment["ANTHROPIC_BASE_URL"] = base_url  # an address, not a secret
        # With a gateway, only the gateway: Claude Code otherwise still looks up api.anthropic.com (telemetry, flags).
        environment["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = "1"
    if claude_home == "persistent" and not all(part.isdigit() for part in user.split(":")):
        raise Hal9000Error(f"user {user!r} must be numeric (uid:gid) for a persistent Claude home: "
                           "the home on the host is given to that uid.")
    if claude_config_dir and check_host_paths and not os.path.isdir(claude_config_dir):
        raise Hal9000Error(f"mount_claude_config: {claude_config_dir} is not a directory on the Docker host.")
    spec = {
        "name": name,
        "image": image,
        "mode": mode,
        "parent": parent if mode == "dind" else "",
        "project": project,
        "pool": pool,
        "user": user,
        "environment": dict(sorted(environment.items())),
        "command": list(command) if command else None,
        "auto_remove": bool(auto_remove),
        "read_only": bool(read_only),
        "api_key_file": api_key_file or "",
        "claude_config_dir": claude_config_dir or "",
        "drop_capabilities": bool(drop_capabilities),
        "no_new_privileges": bool(no_new_privileges),
        "no_limits": bool(no_limits),
        "storage_size": parse_storage_size(storage_size or settings["storage_size"]),
        "claude_home": claude_home,
        "plugins": bool(plugins),
        # The seed's MCP servers through the parent's relay (dind workers, when the relay is on).
        "relay": mode == "dind" and bool(settings["enable_mcp_relay"]),
    }
    scope = scope_text(memory_scope, project)
    # Left out of the digest: the name and pool (a claimed warm worker is renamed but otherwise the
    # same worker), the limits (they change in place with docker update, not by recreating) and the
    # memory scope (the relay's record of the worker, rewritten at a claim).
    decisive = {k: v for k, v in spec.items() if k not in ("name", "pool")}
    spec["digest"] = hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()
    spec["limits"] = limits
    spec["memory_scope"] = scope
    # Which view of the host checked the paths ("": none yet; spawn_worker looks) and how long a claim waits.
    spec["host_view"] = host_view.kind if check_host_paths else ""
    spec["claim_timeout"] = typed_value("CLAIM_TIMEOUT", claim_timeout or settings["claim_timeout"])
    # Out of the digest too: the parent applies it to the worker's uid, also at a claim (a label, and egress_rules).
    spec["egress_allow"] = own_egress(egress_allow, mode, user)
    return spec


def own_egress(egress_allow, mode, user):
    """A worker's own allowlist as normalised texts, or None (not given: the installation's policy)."""
    if egress_allow is None:
        return None
    try:
        allow = [entry.text for entry in parse_allow(egress_allow)]
    except EgressError as exc:
        raise Hal9000Error(str(exc)) from None
    if mode != "dind":
        raise Hal9000Error("egress_allow applies to dind workers (the parent's network namespace): leave it out for mode=legacy.")
    if not str(user).split(":", maxsplit=1)[0].isdigit():
        raise Hal9000Error(f"egress_allow needs a numeric user (uid:gid), not {user!r}: the rules are keyed by uid.")
    return allow


def register_egress(client, parent, container_id, user, allow, base_url="", warm=False):
    """Have the parent apply ``allow`` to the uid of ``user`` (``coordinator egress register``, in its namespace).

    At create, before the worker starts, and at a claim. A uid already running another policy is refused (one line).
    True when the worker's policy changed.
    """
    argv = ["coordinator", "egress", "register", container_id, str(uid_gid(user)[0]), "--allow", ",".join(allow)]
    if base_url:
        argv += ["--base-url", base_url]
    if warm:
        argv.append("--warm")
    exec_id = client.api.exec_create(parent, argv, user="0")
    output = client.api.exec_start(exec_id).decode("utf-8", "replace").strip()
    if client.api.exec_inspect(exec_id)["ExitCode"] != 0:
        last = output.splitlines()[-1] if output else "no answer"
        if "invalid choice: 'egress'" in last:
            raise Hal9000Error(f"Parent {parent} runs an image without egress rules: rebuild the images (playbooks/build_images.yml) "
                               "and recreate the parent (playbooks/daemon.yml), or leave egress_allow out.")
        raise Hal9000Error(last[len("coordinator: "):] if last.startswith("coordinator: ") else last)
    return output.endswith("changed") and not output.endswith("unchanged")


def egress_of(labels):
    """A worker's own allowlist from its label, or None (the installation's policy)."""
    text = (labels or {}).get(LABEL_EGRESS)
    return None if text is None else [item for item in text.split(",") if item]


def workspace_volume(name):
    """A generic worker's /workspace: a volume named after it, so no removal path can miss it."""
    return f"{name}-workspace"


def _mounts(spec, network):
    mounts = []
    if spec["mode"] == "dind" and network.home:
        # Claude Code's managed settings for workers: the relay's MCP servers, the plugins to enable.
        mounts.append(Mount(CLIENT_MOUNT, os.path.join(network.home, CLIENT_DIR), type="bind", read_only=True))
    if spec["claude_home"] == "persistent":
        mounts.append(Mount(HOME_IN_WORKER, os.path.join(network.home, WORKERS_DIR, worker_home_dirname(spec)), type="bind"))
    if spec["plugins"] and network.plugins_volume:
        mounts.append(Mount(PLUGINS_IN_WORKER, network.plugins_volume, type="volume", read_only=True))
    if spec["project"]:
        mounts.append(Mount("/workspace", spec["project"], type="bind"))
    else:
        labels = {LABEL_MANAGED: "true", LABEL_ROLE: ROLE_WORKSPACE, LABEL_PARENT: spec["parent"], LABEL_WORKER: spec["name"]}
        mounts.append(Mount("/workspace", workspace_volume(spec["name"]), type="volume", labels=labels))
    if spec["api_key_file"]:
        mounts.append(Mount(SECRET_TARGET, spec["api_key_file"], type="bind", read_only=True))
    return mounts


def worker_home_dirname(spec):
    """Its directory below workers/: a warm worker's is renamed to its claimed name at the claim."""
    return home_dirname(spec["name"], warm=bool(spec["pool"]))


def limit_settings(limits):
    """Docker's fields for the limits; the same names serve create and update."""
    if limits["memory"] is None:
        return {"Memory": 0, "MemorySwap": 0, "CpuPeriod": 0, "CpuQuota": 0, "PidsLimit": 0}
    return {
        "Memory": limits["memory"],
        "MemorySwap": limits["memory"],  # no swap on top: a runaway worker is stopped at the limit
        "CpuPeriod": CPU_PERIOD,
        "CpuQuota": int(limits["cpus"] * CPU_PERIOD),
        "PidsLimit": limits["pids_limit"],
    }


def home_tmpfs_options(user):
    """The home tmpfs belongs to the worker's user: runc resets a tmpfs's mode to the image directory's
    (0755), so ``mode=1777`` alone leaves it root's and unwritable (no settings.json, no ~/.claude.json)."""
    uid, _sep, gid = str(user).partition(":")
    gid = gid or uid
    owner = f"uid={uid},gid={gid},mode=0700" if uid.isdigit() and gid.isdigit() else "mode=1777"
    return f"rw,nosuid,nodev,{owner},size=256m"


def parse_storage_size(value):
    try:
        return parse_memory(value)
    except Hal9000Error as exc:
        raise Hal9000Error(f"storage_size: {str(exc).replace('memory size', 'size')}") from None


# Storage (docs/storage.md). Every path of the images a non-root worker may write outside its home and /workspace
# is a tmpfs, so nothing it writes reaches the writable layer's disk; the layer itself is capped too (StorageOpt
# size, for root) where the driver has quotas: overlay2 on xfs mounted with pquota, btrfs, zfs; not overlay2 on ext4.
_QUOTA_DRIVERS = ("btrfs", "zfs", "devicemapper", "windowsfilter")
_LAYER_QUOTA = {}  # engine base URL -> whether it takes a layer size (asked once per process)
SCRATCH_PATHS = ("/tmp", "/var/tmp", "/run/lock")  # world-writable in both images
SCRATCH_MAX = 512 * 1024 ** 2  # tmpfs is memory: never more than /tmp always had


def layer_quota_possible(info):
    """From ``docker info``: whether the storage driver may cap a container's writable layer."""
    driver = info.get("Driver", "")
    backing = dict(info.get("DriverStatus") or []).get("Backing Filesystem", "")
    return driver in _QUOTA_DRIVERS or (driver == "overlay2" and backing == "xfs")


def layer_quota(client):
    key = client.api.base_url
    if key not in _LAYER_QUOTA:
        _LAYER_QUOTA[key] = layer_quota_possible(client.api.info())
    return _LAYER_QUOTA[key]


def storage_refused(exc):
    """The engine refusing a layer size ("--storage-opt is supported only for overlay over xfs with 'pquota' ...")."""
    text = str(getattr(exc, "explanation", None) or exc).lower()
    return "storage-opt" in text or "storage opt" in text or "quota" in text


def storage_settings(spec, quota):
    """(StorageOpt, tmpfs) for ``spec``'s storage_size: the scratch paths as tmpfs, and the layer capped where ``quota``."""
    scratch = f"rw,nosuid,nodev,size={min(spec['storage_size'], SCRATCH_MAX)}"
    return ({"size": str(spec["storage_size"])} if quota else None), {path: scratch for path in SCRATCH_PATHS}


# home: the parent's home on the host; plugins_volume: the volume it mounts as its plugins.
ParentNetwork = collections.namedtuple("ParentNetwork", "mode started home plugins_volume", defaults=("", ""))


def parent_network(client, spec):
    """(`container:<id>`, start time, its home on the host) of the running parent, or a one-line error.

    A parent restart gives it a new network namespace: workers joined to the old one keep only
    their loopback. The start time recorded on each worker tells which ones are stale.
    """
    if spec["mode"] == "legacy":
        return ParentNetwork("bridge", "", "")
    parent = inspect_container(client, spec["parent"])
    if parent is None or not parent["State"]["Running"]:
        raise Hal9000Error(
            f"Parent {spec['parent']} is not running: start the daemon first (ansible-playbook playbooks/daemon.yml)."
        )
    plugins = next((m.get("Name", "") for m in parent.get("Mounts") or []
                    if m.get("Destination") == SHARED_VOLUME_MOUNTS["plugins"] and m.get("Type") == "volume"), "")
    return ParentNetwork(f"container:{parent['Id']}", parent["State"]["StartedAt"], mounted_home(parent) or "", plugins)


def worker_facts(container):
    """What decides whether a worker is current, from an inspect or from a container listing."""
    inspected = "Config" in container
    labels = (container["Config"] if inspected else container).get("Labels") or {}
    return {
        "digest": labels.get(LABEL_SPEC, ""),
        "image_id": container["Image"] if inspected else container.get("ImageID", ""),
        "network_mode": (container.get("HostConfig") or {}).get("NetworkMode", ""),
        "parent_started": labels.get(LABEL_PARENT_STARTED, ""),
    }


def stale_reasons(facts, spec, image_id, network):
    """Why a worker (cold, warm or claimed) is not current for ``spec``: [] when it is.

    The one decision the worker module, the pool's Reconciler and every claim make: the spec's
    digest, the image ID the tag names now (a rebuilt image keeps its tag) and the parent's
    network (a restarted parent has a new namespace). Limits change in place and are not a reason.
    """
    reasons = []
    if facts["digest"] != spec["digest"]:
        reasons.append("options changed")
    if image_id and facts["image_id"] != image_id:
        reasons.append("image changed")
    if (facts["network_mode"], facts["parent_started"]) != tuple(network)[:2]:
        reasons.append("parent network is stale")
    return reasons


# No health check while idle in a pool: the image's runs an exec per worker a minute, which with 1,000 warm workers
# kept 2 cores busy; a warm worker is checked by the pool (running, current) and by every claim instead.
WARM_HEALTHCHECK = {"test": ["NONE"]}


def create_worker(client, spec, network=None):
    """Create (not start) a worker from ``spec``; returns its ID."""
    network = ParentNetwork(*(network or parent_network(client, spec)))
    storage_opt, tmpfs = storage_settings(spec, layer_quota(client))
    if spec["claude_home"] == "ephemeral":
        tmpfs[HOME_IN_WORKER] = home_tmpfs_options(spec["user"])
    if spec["relay"]:
        tmpfs[TOKEN_DIR] = home_tmpfs_options(spec["user"]).replace("size=256m", "size=1m")  # the relay token only
    host_config = client.api.create_host_config(
        network_mode=network.mode,
        mounts=_mounts(spec, network),
        tmpfs=tmpfs,
        auto_remove=spec["auto_remove"],
        read_only=spec["read_only"],
        cap_drop=["ALL"] if spec["drop_capabilities"] else None,
        security_opt=["no-new-privileges:true"] if spec["no_new_privileges"] else None,
        storage_opt=storage_opt,
    )
    host_config.update({k: v for k, v in limit_settings(spec["limits"]).items() if v})
    labels = {
        LABEL_MANAGED: "true", LABEL_ROLE: ROLE_WORKER, LABEL_PARENT: spec["parent"],
        LABEL_PROJECT: spec["project"], LABEL_POOL: spec["pool"], LABEL_SPEC: spec["digest"],
        LABEL_PARENT_STARTED: network.started, LABEL_LIMITS: limits_label(spec["limits"]),
        LABEL_CLAUDE_HOME: spec["claude_home"],
    }
    if not spec["project"]:
        labels[LABEL_WORKSPACE] = workspace_volume(spec["name"])
    if spec["pool"]:
        labels[LABEL_WARM_NAME] = spec["name"]
    if spec.get("egress_allow") is not None:
        labels[LABEL_EGRESS] = ",".join(spec["egress_allow"])
    try:
        created = client.api.create_container(
            image=spec["image"], name=spec["name"], command=spec["command"], user=spec["user"],
            environment=spec["environment"], working_dir="/workspace", labels=labels,
            host_config=host_config, detach=True, healthcheck=WARM_HEALTHCHECK if spec["pool"] else None,
        )
    except ERRORS.APIError as exc:
        if storage_opt is None or not storage_refused(exc):
            raise
        _LAYER_QUOTA[client.api.base_url] = False  # e.g. xfs without pquota: only a create tells
        return create_worker(client, spec, network)
    return created["Id"]


def uid_gid(user):
    uid, _sep, gid = str(user).partition(":")
    return int(uid), int(gid or uid)


def spawn_worker(client, spec, network=None, home=None, image_id=None, host_view=None):
    """Create and start a worker, with its Claude home, relay credential and session record; returns (id, milliseconds).

    ``home`` is the installation's home as this process sees it (the parent's programs: its mount
    point), where the home directories and records go; default: the parent's home on the host.
    A warm worker (``spec["pool"]``) gets no session record: its run starts at the claim.
    Every worker is made here, so its host paths are checked here (``check_spec_host_paths``) first.
    """
    started = time.monotonic()
    network = ParentNetwork(*(network or parent_network(client, spec)))
    if spec["mode"] == "legacy" and home:
        network = network._replace(home=home)  # no parent: this process's home is the host's
    check_spec_host_paths(client, spec, network, home, host_view)
    home = home or network.home
    if (spec["relay"] or spec["claude_home"] == "persistent") and not home:
        raise Hal9000Error(f"Parent {spec['parent']} has no home mounted: recreate it with hal9000.dind.parent.")
    dirname = worker_home_dirname(spec)
    if spec["claude_home"] == "persistent":
        check_home_free(client, home, dirname)
        run_privileged(client, spec["parent"], home, "prepare", dirname, *uid_gid(spec["user"]))
    container_id = create_worker(client, spec, network)
    try:
        if spec.get("egress_allow") is not None:  # its rules in place before its first packet
            register_egress(client, spec["parent"], container_id, spec["user"], spec["egress_allow"],
                            spec["environment"].get("ANTHROPIC_BASE_URL", ""), warm=bool(spec["pool"]))
        client.api.start(container_id)
        if spec["claude_home"] == "persistent":
            record_user(home, dirname, container_id)
        if spec["relay"]:
            issue_credential(client, home, container_id, spec["user"], spec["memory_scope"])
        if not spec["pool"] and home:
            record_session(client, home, container_id, spec, image_id, claimed=False)
    except Exception:
        remove_worker(client, container_id, None)  # never leave a half-made worker
        raise
    return container_id, round((time.monotonic() - started) * 1000, 1)


def check_spec_host_paths(client, spec, network, home=None, host_view=None):
    """``checked_host_paths`` for ``spec``, now that the installation's home on the host is known (``network.home``).

    The view: ``host_view``; else this host when worker_spec looked here (the modules, a legacy worker); else the
    parent's (a pool's spec, a claim's cold spawn in the parent). The project must be the path that was checked.
    """
    if not (spec["project"] or spec["api_key_file"]):
        return
    if host_view is None:
        if spec.get("host_view") == "local" or spec["mode"] == "legacy":
            host_view = LocalView(homes=(network.home, home))
        else:
            host_view = ParentView(client, spec["parent"])
    checked_host_paths(host_view, spec["project"] or None, spec["api_key_file"] or None, spec["user"], canonical=True)


def record_session(client, home, container_id, spec, image_id=None, claimed=False):
    """The run's session record (sessions.record_start): what ran, where, with which limits; never a secret."""
    record_start(home, container_id, spec["name"], spec["project"], image_id or current_image_id(client, spec["image"]) or "",
                 spec["limits"], claimed)


def remove_worker(client, container_id, home, inspected=None, purge=False):
    """Remove a worker, its /workspace volume, its relay credential and (``purge``) its Claude home."""
    inspected = inspected or inspect_container(client, container_id) or {}
    labels = (inspected.get("Config") or {}).get("Labels") or {}
    client.api.remove_container(container_id, force=True, v=True)
    remove_workspace(client, labels.get(LABEL_WORKSPACE))
    if home:
        revoke(home, container_id)
    if purge and home and labels.get(LABEL_CLAUDE_HOME) == "persistent":
        name = inspected["Name"].lstrip("/")
        warm = labels.get(LABEL_POOL) and labels.get(LABEL_WARM_NAME) == name
        run_privileged(client, labels.get(LABEL_PARENT), home, "purge", home_dirname(name, warm=bool(warm)))


def remove_workspace(client, volume):
    """Remove a removed worker's /workspace volume (absent, or still used by another container: left)."""
    if not volume:
        return False
    try:
        client.api.remove_volume(volume)
    except ERRORS.NotFound:
        return False
    except ERRORS.APIError as exc:
        if exc.status_code == 409:  # in use: a container of the same name made meanwhile
            return False
        raise
    return True


def update_limits(client, container_id, limits):
    """Apply new limits to a running worker without restarting it.

    Hand-written POST because the SDK's update_container cannot set PidsLimit.
    """
    response = client.api._post_json(client.api._url("/containers/{0}/update", container_id), data=limit_settings(limits))
    client.api._raise_for_status(response)


def current_limits(inspected):
    return limits_of(inspected["HostConfig"])


def attach_command(name):
    return f"docker exec -it {name} claude"
