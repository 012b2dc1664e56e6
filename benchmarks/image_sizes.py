"""Image sizes against the seed's numbers, and the time of a second (no-op) build.

Run after the images exist (site.yml or playbooks/build_images.yml):
    .venv/bin/python benchmarks/image_sizes.py
Exit status 0 when every goal is met, 1 when one is missed, 2 when it fails (scripts/bench.sh runs them all).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import _setup
import docker

MB = 1_000_000
SEED = {"parent": 264, "ultramin_without_cli": 469 - 206, "git": 588 - 469}
TARGET = {"parent": 264, "ultramin_without_cli": 150, "git": 60}
GOALS = _setup.Goals(__file__)


def claude_binary_size(client, tag):
    out = client.containers.run(tag, ["stat", "-c", "%s", "/usr/local/bin/claude"], remove=True)
    return int(out.decode().strip())


def image_size(client, tag):
    """Bytes of a local image, or None when it was not built (images_mcp=false)."""
    try:
        return client.images.get(tag).attrs["Size"]
    except docker.errors.ImageNotFound:
        return None


def line(label, value_mb, target_mb, seed_mb):
    met = GOALS.at_most(label, value_mb, target_mb, "MB")
    verdict = "meets target" if met else f"MISSES target by {value_mb - target_mb:.1f} MB"
    print(f"{label:<34} {value_mb:8.1f} MB   target <= {target_mb} MB ({verdict}); ratio to seed {value_mb / seed_mb:.2f}")


def second_build_seconds(mcp_built):
    env = dict(os.environ)
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(_setup.COLLECTIONS_ROOT))
    started = time.monotonic()
    subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i",
         str(_setup.REPO_ROOT / "inventory" / "localhost.yml"),
         str(_setup.REPO_ROOT / "playbooks" / "build_images.yml"),
         "-e", json.dumps({"images_worker_flavours": ["minimal", "ultramin"], "images_mcp": mcp_built})],
        check=True, capture_output=True, env=env,
    )
    return time.monotonic() - started


def noop_module_seconds(flavour):
    """One image module run with the role's arguments, outside ansible-playbook: the no-op check itself."""
    ca_dir = "/usr/local/share/ca-certificates"
    ca_files = sorted(os.path.join(root, name) for root, _dirs, names in os.walk(ca_dir) for name in names if name.endswith(".crt"))
    pems = [open(path).read() for path in ca_files]
    args = {"ANSIBLE_MODULE_ARGS": {
        "flavour": flavour, "context": str(_setup.REPO_ROOT),  # what the images role uses on the controller
        "build_args": {"EXTRA_CA_CERTS": "\n".join(pems)},
    }}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(_setup.REPO_ROOT / "plugins" / "modules" / "image.py")],
        input=json.dumps(args), capture_output=True, text=True, check=True,
        env=dict(os.environ, PYTHONPATH=str(_setup.COLLECTIONS_ROOT)),
    )
    elapsed = time.monotonic() - started
    result = json.loads(proc.stdout)
    return elapsed, result["changed"]


def main():
    client = docker.from_env()
    sizes = {tag: client.images.get(tag).attrs["Size"] for tag in
             ("hal9000/parent:latest", "hal9000/worker:ultramin", "hal9000/worker:latest")}
    cli = claude_binary_size(client, "hal9000/worker:ultramin")
    parent = sizes["hal9000/parent:latest"] / MB
    ultramin = (sizes["hal9000/worker:ultramin"] - cli) / MB
    git = (sizes["hal9000/worker:latest"] - sizes["hal9000/worker:ultramin"]) / MB
    print(f"Claude Code CLI binary: {cli / MB:.1f} MB (the seed's CLI: 206 MB)")
    print(f"worker ultramin total {sizes['hal9000/worker:ultramin'] / MB:.1f} MB, minimal total {sizes['hal9000/worker:latest'] / MB:.1f} MB")
    line("parent (with ChromaDB server)", parent, TARGET["parent"], SEED["parent"])
    line("worker ultramin minus CLI", ultramin, TARGET["ultramin_without_cli"], SEED["ultramin_without_cli"])
    line("git in minimal (minimal - ultramin)", git, TARGET["git"], SEED["git"])
    mcp = image_size(client, "hal9000/mcp:latest")
    label = "MCP sidecar (hal9000/mcp)"
    if mcp is None:
        print(f"{label:<34} not built (images_mcp: false)")
    else:  # no goal: the seed ran its MCP servers on the host
        print(f"{label:<34} {mcp / MB:8.1f} MB   (no target; includes the 91 MB all-MiniLM-L6-v2 weights)")
    for flavour in ("parent", "minimal", "ultramin"):
        seconds, changed = noop_module_seconds(flavour)
        print(f"second build of {flavour:<9}: {seconds:.2f} s (changed={changed}; goal < 2 s)")
        GOALS.check(f"second build of {flavour} (no-op)", f"{seconds:.2f} s", "< 2 s", seconds < 2)
    print(f"second build_images.yml run (nothing to build): {second_build_seconds(mcp is not None):.1f} s for the whole playbook")


if __name__ == "__main__":
    sys.exit(GOALS.run(main))
