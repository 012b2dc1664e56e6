"""Fleet performance in one run: a converged site.yml on 3 nodes against one, an image distributed to 3 nodes against
one `docker save | docker load`, and nothing sent when every node is current.

Starts a test fleet of 4 real engines (tests/fleet/nodes.py: node containers running their own dockerd, reached by
Ansible over ssh; node1 is the build host, seeded with the base image and a parent image built here from a snapshot of
the collection under a private tag, as tests/integration/test_fleet.py does), measures, and removes the nodes, their
volumes and the private tag again, also on failure or Ctrl-C:
    .venv/bin/python benchmarks/fleet_perf.py [--repeat N]        (default 3: 10 minutes with 1, 32 with 3 on a busy 2-CPU machine)

1. Distribution (node1 to node2, node3, node4), N times each, alternating, the median kept:
   a. a changed image (the parent plus one small layer) to nodes that have the parent's layers (the goal);
   b. for scale, the whole parent image to nodes that have none of it;
   the baseline is one `docker save IMG | docker load` (the docker CLI, node1's engine to node2's), the measured one
   the image_distribute module's own work (the library call it makes: comparing image IDs and layers, the fan-out,
   the check after the load) to the three nodes; the image is removed from the targets between runs. Then the module
   through ansible-playbook with every node current: 0 bytes and no `load` event anywhere, and its run time (what
   ansible-playbook adds to any distribution).
2. site.yml on node1-node3 (hal9000_hosts; images_mcp and worker images off, relay off, as the site.yml test of test_fleet.py):
   a first run installs, then N converged runs on the 3 nodes and N on node1 alone (the build host, so the single
   host does everything a lone Docker host does), alternating, each one changed=0 with no image byte sent.

Exit status 0 when every goal is met, 1 when one is missed, 2 when it fails (scripts/bench.sh runs them all).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import shutil
import tempfile
import time
from pathlib import Path

import _setup  # (the working tree as ansible_collections.hal9000.dind, and Goals)
import docker

sys.path.insert(0, str(_setup.REPO_ROOT / "tests" / "fleet"))
from nodes import fleet  # noqa: E402  (tests/fleet is not a package)
from ansible_collections.hal9000.dind.plugins.module_utils.distribute import connect_engine, distribute as distribute_images  # noqa: E402
from plays import collection_snapshot, distribute as distribute_play, play, seed_build_host, task_results  # noqa: E402
from test_fleet import build_in, events  # noqa: E402

SITE = {"images_mcp": False, "install_worker_flavours": [], "daemon_enable_mcp_relay": False}
COPY_TASK = "Copy the images from the build host to the hosts whose images differ"
GOAL_SITE_RATIO, GOAL_DISTRIBUTE_RATIO = 1.5, 1.3
GOALS = _setup.Goals(__file__)


# Per-task wall time of a playbook run (the profile_tasks callback is not installed here): a callback of a tiny
# collection beside the snapshot, so the snapshot itself (and its build digest) stays as it is.
TASK_TIMES_ENV = "H9BENCH_TASK_TIMES"
TASK_TIMES = r"""
import json, os, time
from ansible.plugins.callback import CallbackBase
DOCUMENTATION = "name: task_times\ntype: aggregate\nshort_description: wall seconds per task\ndescription: [benchmark only]\n"


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "h9bench.timer.task_times"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.times, self.current = {}, None

    def _close(self):
        if self.current:
            name, began = self.current
            self.times[name] = self.times.get(name, 0) + time.monotonic() - began
        self.current = None

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._close()
        self.current = (task.get_name(), time.monotonic())

    v2_playbook_on_handler_task_start = v2_playbook_on_task_start

    def v2_playbook_on_stats(self, stats):
        self._close()
        with open(os.environ["H9BENCH_TASK_TIMES"], "a", encoding="utf-8") as handle:
            handle.write(json.dumps(self.times) + "\n")
"""


def install_task_timer(collection, workdir):
    """Enable the task timer for every play run from ``collection``; returns the file its lines go to."""
    plugin = collection.parents[2] / "ansible_collections" / "h9bench" / "timer" / "plugins" / "callback"
    plugin.mkdir(parents=True)
    (plugin / "task_times.py").write_text(TASK_TIMES)
    os.environ["ANSIBLE_CALLBACKS_ENABLED"] = "h9bench.timer.task_times"
    os.environ[TASK_TIMES_ENV] = str(workdir / "task-times.jsonl")
    return Path(os.environ[TASK_TIMES_ENV])


def last_task_times(path):
    return json.loads(path.read_text().splitlines()[-1])


def cpu_seconds(nodes, ids):
    """CPU seconds used so far by each node container (its dockerd, loads included) and by this process's children
    (ansible-playbook and its workers, the docker CLI): None where the cgroup cannot be read."""
    used = {}
    for node in nodes:
        path = Path(f"/sys/fs/cgroup/cpuacct/docker/{ids[node.name]}/cpuacct.usage")
        used[node.name] = int(path.read_text()) / 1e9 if path.exists() else None
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    used["controller"] = children.ru_utime + children.ru_stime
    return used


class CPU:
    """CPU seconds of the build host, the targets and the controller, summed over the runs of one kind."""

    def __init__(self, nodes):
        self.nodes, self.totals, self.runs = nodes, {}, 0
        self.ids = {node.name: nodes.client.api.inspect_container(node.name)["Id"] for node in nodes}

    @contextlib.contextmanager
    def measure(self):
        before = cpu_seconds(self.nodes, self.ids)
        yield
        after = cpu_seconds(self.nodes, self.ids)
        parts = {"build host": [self.nodes[0].name], "targets": [node.name for node in self.nodes[1:]],
                 "controller": ["controller"]}
        for part, names in parts.items():
            if all(after[name] is not None for name in names):
                self.totals[part] = self.totals.get(part, 0) + sum(after[name] - before[name] for name in names)
        self.runs += 1

    def __str__(self):
        return ", ".join(f"{part} {total / self.runs:.1f}" for part, total in self.totals.items()) + " CPU-s per run"


def save_load(source, target, image):
    """Seconds of one `docker save IMAGE | docker load` from one node's engine into another's (the docker CLI)."""
    began = time.monotonic()
    subprocess.run(["bash", "-o", "pipefail", "-c", 'docker -H "$1" save "$3" | docker -H "$2" load -q >/dev/null', "-",
                    source.docker_host, target.docker_host, image], check=True, timeout=900)
    return time.monotonic() - began


def distribute(nodes, collection, workdir, images, targets):
    """hal9000.dind.image_distribute from node1 to ``targets`` through ansible-playbook: (wall seconds, its result)."""
    began = time.monotonic()
    result, copied = distribute_play(collection, workdir, nodes[0].docker_host, images,
                                     {node.name: node.docker_host for node in targets})
    seconds = time.monotonic() - began
    if result["rc"] != 0:
        raise RuntimeError(f"image_distribute failed: {copied.get('msg')}")
    return seconds, copied


def distribute_work(nodes, images, targets):
    """The module's own work (its library call, from connecting to the engines to the check after the load):
    (wall seconds, its result)."""
    began = time.monotonic()
    source = connect_engine(nodes[0].docker_host, 600)
    clients = {node.name: connect_engine(node.docker_host, 600) for node in targets}
    try:
        result = distribute_images(source, clients, images)
    finally:
        for client in [source, *clients.values()]:
            client.close()
    seconds = time.monotonic() - began
    failed = {host: outcome["error"] for host, outcome in result["hosts"].items() if outcome.get("error")}
    if failed:
        raise RuntimeError(f"distribute failed: {failed}")
    return seconds, result


def remove_from(targets, image):
    for node in targets:
        with contextlib.closing(node.client()) as client, contextlib.suppress(docker.errors.NotFound):
            client.api.remove_image(image)


def measure_distribution(nodes, collection, workdir, repeat, raw):
    """Both distribution cases, then the run with every node current; the ratios of the medians."""
    source, targets = nodes[0], nodes[1:]
    seed = f"{nodes.prefix}/parent:seed"
    changed = f"{nodes.prefix}/parent:changed"
    build_in(source, changed, f"FROM {seed}\nUSER root\nRUN date +%s%N > /etc/bench-fleet-changed\n")
    # The whole image first: the targets keep its last copy, which the changed image then builds on.
    ratios = {}
    for case, image in (("whole image", seed), ("changed image", changed)):
        baseline, sequential, fleet_runs, streams, sizes = [], [], [], [], []
        cpu = {kind: CPU(nodes) for kind in ("save|load", "image_distribute")}
        for index in range(repeat):
            with cpu["save|load"].measure():
                baseline.append(save_load(source, targets[0], image))
            # For scale (no goal): the naive alternative, one save|load per target, one after the other.
            sequential.append(baseline[-1] + sum(save_load(source, target, image) for target in targets[1:]))
            remove_from(targets, image)
            with cpu["image_distribute"].measure():
                seconds, result = distribute_work(nodes, [image], targets)
            hosts = result["hosts"]
            if sorted(name for name, host in hosts.items() if host["sent"] == [image]) != sorted(n.name for n in targets):
                raise RuntimeError(f"{case}: not every target received {image}: {hosts}")
            fleet_runs.append(seconds)
            streams.append(max(host["seconds"] for host in hosts.values()))
            sizes.append(max(host["bytes"] for host in hosts.values()))
            if index < repeat - 1:  # the last copy stays: the changed image needs the parent's layers, the last check both
                remove_from(targets, image)
        ratios[case] = statistics.median(fleet_runs) / statistics.median(baseline)
        raw[f"save|load, {case}, to 1 node"] = baseline
        raw[f"image_distribute's work, {case}, to 3 nodes"] = fleet_runs
        raw[f"  of which the fan-out stream ({case})"] = streams
        raw[f"3 save|loads one after the other, {case}"] = sequential
        print(f"{case} (the module sent at most {max(sizes) / 1e6:.1f} MB per node): save|load to 1 node "
              f"{statistics.median(baseline):.1f} s ({cpu['save|load']}); image_distribute's work to 3 nodes "
              f"{statistics.median(fleet_runs):.1f} s, its fan-out stream {statistics.median(streams):.1f} s "
              f"({cpu['image_distribute']}); ratio {ratios[case]:.2f}; "
              f"3 save|loads one after the other {statistics.median(sequential):.1f} s", flush=True)
    # Every target now holds both images: nothing may be sent, nothing loaded.
    since = time.time_ns()
    seconds, copied = distribute(nodes, collection, workdir, [seed, changed], targets)
    until = int(time.time()) + 1
    sent = sum(host["bytes"] for host in copied["hosts"].values())
    loads = sum(1 for node in nodes for event in events(node, since, until) if event["Action"] == "load")
    raw["image_distribute through ansible-playbook, every node current"] = [seconds]
    print(f"every node current: image_distribute through ansible-playbook {seconds:.1f} s (what ansible-playbook adds "
          f"to any distribution, and the image ID comparison), {sent} bytes sent, {loads} load events", flush=True)
    return ratios, sent, loads


def site(nodes, collection, workdir, hosts):
    """One site.yml run on ``hosts``: (seconds, result, bytes sent, load events)."""
    since, began = time.time_ns(), time.monotonic()
    result = play(collection, workdir, collection / "playbooks" / "site.yml", nodes.inventory_path,
                  dict(SITE, hal9000_hosts=",".join(node.name for node in hosts)))
    seconds, until = time.monotonic() - began, int(time.time()) + 1
    if result["rc"] != 0:
        raise RuntimeError(f"site.yml on {len(hosts)} node(s) failed: {json.dumps(result['stats'])}")
    copied = next(iter(task_results(result, COPY_TASK).values()), {})
    sent = sum(host["bytes"] for host in copied.get("hosts", {}).values())
    loads = sum(1 for node in hosts for event in events(node, since, until) if event["Action"] == "load")
    return seconds, result, sent, loads


def converged(result):
    return all(stats["changed"] == 0 and stats["failures"] == 0 for stats in result["stats"].values())


def measure_site(nodes, collection, workdir, repeat, raw, timer):
    three, one = nodes[:3], nodes[:1]
    first, _result, sent, _loads = site(nodes, collection, workdir, three)
    print(f"site.yml on 3 nodes, first run (installs): {first:.1f} s, {sent / 1e6:.0f} MB sent", flush=True)
    runs, tasks = {3: [], 1: []}, {3: {}, 1: {}}
    sent_converged, loads_converged = 0, 0
    for index in range(repeat):
        for hosts in (three, one):
            seconds, result, sent, loads = site(nodes, collection, workdir, hosts)
            if not converged(result):
                raise RuntimeError(f"site.yml on {len(hosts)} node(s), converged run {index + 1}, changed something: "
                                   f"{json.dumps(result['stats'])}")
            runs[len(hosts)].append(seconds)
            for name, task_seconds in last_task_times(timer).items():
                tasks[len(hosts)][name] = tasks[len(hosts)].get(name, 0) + task_seconds / repeat
            if len(hosts) == 3:
                sent_converged, loads_converged = sent_converged + sent, loads_converged + loads
    raw["site.yml first run, 3 nodes"] = [first]
    raw["site.yml converged (changed=0), 3 nodes"] = runs[3]
    raw["site.yml converged (changed=0), node1 alone"] = runs[1]
    print(f"site.yml converged (changed=0 on every node, every run): 3 nodes {statistics.median(runs[3]):.1f} s, "
          f"node1 alone {statistics.median(runs[1]):.1f} s; {sent_converged} bytes sent, {loads_converged} load events",
          flush=True)
    print("  where a converged run's time goes (mean seconds per run; 3 nodes, node1 alone):")
    slowest = sorted(tasks[3], key=lambda name: tasks[3][name] - tasks[1].get(name, 0), reverse=True)[:8]
    for name in slowest:
        print(f"    {tasks[3][name]:5.1f} {tasks[1].get(name, 0):5.1f}  {name}")
    outside = {count: statistics.mean(runs[count]) - sum(tasks[count].values()) for count in (3, 1)}
    print(f"    {outside[3]:5.1f} {outside[1]:5.1f}  (ansible-playbook start-up and end, outside any task)")
    print(f"    {sum(tasks[3].values()):5.1f} {sum(tasks[1].values()):5.1f}  (all {len(tasks[3])} tasks)", flush=True)
    return statistics.median(runs[3]) / statistics.median(runs[1]), sent_converged, loads_converged


def main(args):
    began, load_before = time.monotonic(), os.getloadavg()
    print(f"load average at start: {' '.join(f'{value:.2f}' for value in load_before)} ({os.cpu_count()} CPUs); "
          f"--repeat {args.repeat}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="h9bench-fleet-"))
    raw = {}
    try:
        collection = collection_snapshot(workdir / "collection")
        timer = install_task_timer(collection, workdir)
        with fleet(4, client=docker.from_env()) as nodes:
            seed_build_host(nodes, collection, workdir)
            nodes.inventory_path = nodes.write_inventory(workdir / "fleet.json")
            print(f"fleet {nodes.prefix}: 4 nodes up, node1 seeded ({time.monotonic() - began:.0f} s)", flush=True)
            ratios, sent, loads = measure_distribution(nodes, collection, workdir, args.repeat, raw)
            site_ratio, site_sent, site_loads = measure_site(nodes, collection, workdir, args.repeat, raw, timer)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        print("\nraw seconds (each run, in order):")
        for name, values in raw.items():
            print(f"  {name:<62} {' '.join(f'{value:6.1f}' for value in values)}")
        load_after = os.getloadavg()
        print(f"load average at end: {' '.join(f'{value:.2f}' for value in load_after)}; "
              f"whole run {(time.monotonic() - began) / 60:.1f} min", flush=True)
    GOALS.at_most("converged site.yml: 3 nodes / node1 alone", site_ratio, GOAL_SITE_RATIO, "", 2)
    GOALS.at_most("changed image to 3 nodes (image_distribute's work) / one save|load to 1 node", ratios["changed image"],
                  GOAL_DISTRIBUTE_RATIO, "", 2)
    # No goal for the whole image: on one machine the three targets unpack on the same CPUs.
    print(f"for scale: whole image to 3 nodes / one save|load to 1 node {ratios['whole image']:.2f}")
    GOALS.check("sent when every node is current (image_distribute; converged site.yml)",
                f"{sent + site_sent} bytes, {loads + site_loads} load events", "0 bytes, 0 load events",
                sent + site_sent == 0 and loads + site_loads == 0)


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0].replace("\n", " "))
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement, the median kept (default 3)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


if __name__ == "__main__":
    ARGS = parse()
    # SIGTERM unwinds like Ctrl-C, so the fleet and the private tag are removed.
    signal.signal(signal.SIGTERM, lambda _signal, _frame: sys.exit(143))
    sys.exit(GOALS.run(lambda: main(ARGS)))
