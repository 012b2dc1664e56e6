"""A real test fleet on this machine: N node containers, each running its own Docker Engine.

Each node has its own network namespace (a node container on the host's bridge), its own storage
(/var/lib/docker on a named volume) and its own socket. Ansible reaches a node over ssh to the node's
own bridge address, as an ordinary inventory host, so the modules run with the node's Python and
docker SDK. ssh rather than community.docker's docker connection: that collection is not installed and
would have to be downloaded; ssh needs nothing but a key made here, and works offline.

dockerd in a node also listens on a socket in a host directory bind-mounted at /run/node, so code on
the controller (the image distribution, the tests) reaches every node's engine without any network.

Only loopback and the nodes' own addresses are contacted. Everything is named after one unique prefix
and removed at the end (containers, their volumes, the key and socket directory), whatever happened.

    with fleet(3) as nodes:             # or the pytest fixture `fleet_nodes` (module scope)
        nodes.write_inventory(path)
        nodes.load(nodes[0], "debian:bookworm-slim")

Manual use: `python tests/fleet/nodes.py up 3 --inventory /tmp/fleet.yml` keeps a fleet running;
`python tests/fleet/nodes.py down PREFIX` removes it (molecule/fleet gives --prefix, so that its destroy step
finds the fleet even when create stopped halfway).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import docker

HERE = Path(__file__).resolve().parent
BASE_IMAGE = "debian:bookworm-slim"
NODE_REPOSITORY = "hal9000-fleet/node"
LABEL_FLEET = "io.hal9000.test-fleet"
# --privileged fails on hosts whose capability bounding set lacks CAP_SYS_RESOURCE ("unable to apply caps"):
# every other capability, no seccomp/apparmor profile and unmasked /proc and /sys paths (the CLI's
# systempaths=unconfined, which the SDK spells as empty MaskedPaths/ReadonlyPaths) are what dockerd needs.
CAP_DROP = ["SYS_RESOURCE"]
SECURITY_OPT = ["seccomp=unconfined", "apparmor=unconfined"]
READY_TIMEOUT = 60
# The nodes sit behind this machine's network, so they trust its extra CAs (the images role hands them to the
# builder stages); the same certificates also give a node the same build digests as this machine's images.
EXTRA_CA_DIR = "/usr/local/share/ca-certificates"


def node_image(client):
    """The node image's tag, built from Dockerfile.node when no image has these inputs (base image ID included)."""
    base = client.api.inspect_image(BASE_IMAGE)["Id"]
    digest = hashlib.sha256(base.encode())
    for name in ("Dockerfile.node", "node-entrypoint.sh"):
        digest.update(name.encode() + b"\0" + (HERE / name).read_bytes())
    tag = f"{NODE_REPOSITORY}:{digest.hexdigest()[:12]}"
    try:
        client.api.inspect_image(tag)
    except docker.errors.NotFound:
        for chunk in client.api.build(path=str(HERE), dockerfile="Dockerfile.node", tag=tag, pull=False, rm=True,
                                      forcerm=True, decode=True, buildargs={"BASE_IMAGE": BASE_IMAGE}):
            if "error" in chunk:
                raise RuntimeError(f"building the fleet node image failed: {chunk['error']}")
    return tag


class Node:
    def __init__(self, name, run_dir):
        self.name = name
        self.volume = f"{name}-docker"
        self.socket_dir = Path(run_dir) / name
        self.socket = self.socket_dir / "docker.sock"
        self.address = None

    @property
    def docker_host(self):
        return f"unix://{self.socket}"

    def client(self, timeout=120):
        return docker.DockerClient(base_url=self.docker_host, timeout=timeout, version="auto")

    def __repr__(self):
        return f"Node({self.name}, {self.address})"


class Fleet(list):
    """The started nodes (a list of Node) and what reaching them takes."""

    def __init__(self, prefix, run_dir, client):
        super().__init__()
        self.prefix = prefix
        self.run_dir = Path(run_dir)
        self.key = self.run_dir / "key" / "id_ed25519"
        self.client = client

    def host_vars(self, node):
        return {
            "ansible_host": node.address,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.key),
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
            "ansible_python_interpreter": "/usr/bin/python3",
            # How the controller reaches this node's engine (image distribution).
            "fleet_docker_host": node.docker_host,
        }

    def inventory(self, group="fleet", **group_vars):
        return {"all": {"children": {group: {
            "hosts": {node.name: self.host_vars(node) for node in self},
            "vars": group_vars,
        }}}}

    def write_inventory(self, path, group="fleet", **group_vars):
        Path(path).write_text(json.dumps(self.inventory(group, **group_vars), indent=2))  # JSON is YAML
        return Path(path)

    def load(self, node, *images):
        """Stream images from this machine's engine into a node's (docker save | docker load, no file)."""
        target = node.client()
        for image in images:
            for message in target.api.load_image(self.client.api.get_image(image)):
                if "error" in message:
                    raise RuntimeError(f"loading {image} into {node.name} failed: {message['error']}")

    def stop(self, node):
        self.client.api.stop(node.name, timeout=5)

    def kill(self, node):
        """Every process of the node at once (a host that goes down): no engine or module outlives its sshd."""
        self.client.api.kill(node.name)

    def start(self, node):
        self.client.api.start(node.name)
        _wait_ready(node, self.client)


def _wait_ready(node, client):
    """Until the node's dockerd answers on its socket and its sshd accepts connections."""
    deadline = time.monotonic() + READY_TIMEOUT
    node.address = client.api.inspect_container(node.name)["NetworkSettings"]["IPAddress"]
    while time.monotonic() < deadline:
        state = client.api.inspect_container(node.name)["State"]
        if not state["Running"]:
            logs = client.api.logs(node.name, tail=10).decode(errors="replace")
            raise RuntimeError(f"fleet node {node.name} exited ({state['ExitCode']}): {logs}")
        try:
            node.client(timeout=5).ping()
            with socket.create_connection((node.address, 22), timeout=2):
                return
        except (OSError, docker.errors.DockerException):
            time.sleep(0.3)
    raise RuntimeError(f"fleet node {node.name}: dockerd or sshd not ready after {READY_TIMEOUT} s")


def _start_node(client, fleet, node, image):
    node.socket_dir.mkdir(mode=0o700)
    binds = {
        "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
        str(node.socket_dir): {"bind": "/run/node", "mode": "rw"},
        str(fleet.key.parent / "authorized"): {"bind": "/run/node-key", "mode": "ro"},
        node.volume: {"bind": "/var/lib/docker", "mode": "rw"},
    }
    if os.path.isdir(EXTRA_CA_DIR):
        binds[EXTRA_CA_DIR] = {"bind": EXTRA_CA_DIR, "mode": "ro"}
    host_config = client.api.create_host_config(cap_add=["ALL"], cap_drop=CAP_DROP, security_opt=SECURITY_OPT, binds=binds)
    host_config.update(MaskedPaths=[], ReadonlyPaths=[])
    client.api.create_volume(node.volume, labels={LABEL_FLEET: fleet.prefix})
    # dockerd may pull over plain HTTP from registries on this machine's default bridge: the registry tests'
    # own container (a registry elsewhere needs TLS as usual).
    bridge = client.api.inspect_network("bridge")["IPAM"]["Config"][0]["Subnet"]
    container = client.api.create_container(
        image, name=node.name, hostname=node.name, host_config=host_config, labels={LABEL_FLEET: fleet.prefix},
        command=["--insecure-registry", bridge],
    )
    client.api.start(container)


def remove_fleet(client, prefix, run_dir=None):
    """Remove the nodes labelled with this prefix, their volumes and the run directory; never anything else."""
    for summary in client.api.containers(all=True, filters={"label": f"{LABEL_FLEET}={prefix}"}):
        with contextlib.suppress(docker.errors.NotFound):
            client.api.remove_container(summary["Id"], force=True, v=True)
    for volume in client.api.volumes(filters={"label": f"{LABEL_FLEET}={prefix}"}).get("Volumes") or []:
        with contextlib.suppress(docker.errors.NotFound):
            client.api.remove_volume(volume["Name"], force=True)
    if run_dir:
        shutil.rmtree(run_dir, ignore_errors=True)


def start_fleet(count=3, prefix=None, client=None):
    """Start ``count`` nodes named <prefix>-node<i> and wait until each answers; on failure nothing is left."""
    client = client or docker.from_env()
    prefix = prefix or f"h9fleet-{uuid.uuid4().hex[:8]}"
    image = node_image(client)
    run_dir = tempfile.mkdtemp(prefix=f"{prefix}-")
    nodes = Fleet(prefix, run_dir, client)
    try:
        nodes.key.parent.mkdir(mode=0o700)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", prefix, "-f", str(nodes.key)], check=True)
        (nodes.key.parent / "authorized").mkdir(mode=0o755)
        shutil.copy(f"{nodes.key}.pub", nodes.key.parent / "authorized" / "authorized_keys")
        for index in range(1, count + 1):
            node = Node(f"{prefix}-node{index}", run_dir)
            nodes.append(node)
            _start_node(client, nodes, node, image)
        for node in nodes:
            _wait_ready(node, client)
    except BaseException:
        remove_fleet(client, prefix, run_dir)
        raise
    return nodes


@contextlib.contextmanager
def fleet(count=3, prefix=None, client=None):
    """A started fleet (see start_fleet), removed at the end whatever happened: nodes, volumes, key, sockets."""
    nodes = start_fleet(count, prefix, client)
    try:
        yield nodes
    finally:
        remove_fleet(nodes.client, nodes.prefix, nodes.run_dir)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a fleet and keep it running")
    up.add_argument("count", type=int, nargs="?", default=3)
    up.add_argument("--inventory", required=True, help="where to write the inventory")
    up.add_argument("--load", action="append", default=[], help="image to load into the first node")
    up.add_argument("--prefix", help="the fleet's name prefix, known before anything starts (default: h9fleet-<random>)")
    down = sub.add_parser("down", help="remove a fleet started with up")
    down.add_argument("prefix")
    args = parser.parse_args(argv)
    client = docker.from_env()
    if args.command == "down":
        run_dirs = list(Path(tempfile.gettempdir()).glob(f"{args.prefix}-*"))
        remove_fleet(client, args.prefix)
        for run_dir in run_dirs:
            shutil.rmtree(run_dir, ignore_errors=True)
        return 0
    nodes = start_fleet(args.count, prefix=args.prefix, client=client)
    try:
        nodes.load(nodes[0], *args.load)
        nodes.write_inventory(args.inventory)
    except BaseException:
        remove_fleet(client, nodes.prefix, nodes.run_dir)
        raise
    print(f"fleet {nodes.prefix}: {', '.join(f'{n.name} ({n.address})' for n in nodes)}; inventory {args.inventory}")
    print(f"remove it with: python {__file__} down {nodes.prefix}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
