"""The workers' egress allowlist, applied in the parent's network namespace (docs/egress.md).

Two writers share one state: the entrypoint (the installation's policy from hal9000.conf, read live, host
names re-resolved on TTL) and ``coordinator egress`` (a worker's or a pool's own policy, registered at create
before the worker starts and at a claim, through docker exec). Both take one lock, compile the whole state
with module_utils/egress.py and apply only the chains that changed (iptables-restore --noflush), so neither
undoes the other's rules.

Light on purpose (the standard library and egress.py, no docker SDK, no DNS): a claim waits for it. A host
name the last resolution does not know is left to the entrypoint, which resolves it within a second.

    coordinator egress register ID UID [--allow TEXT] [--base-url URL] [--warm]
    coordinator egress forget ID...
    coordinator egress show
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time

from ansible_collections.hal9000.dind.plugins.module_utils.constants import HOME_IN_PARENT, RUN_DIR_IN_PARENT
from ansible_collections.hal9000.dind.plugins.module_utils.egress import (
    Compiled,
    EgressError,
    Resolved,
    apply_steps,
    compile_policies,
    hosts_of,
    make_policy,
    parse_allow,
    reresolve,
    resolvers_from,
)

STATE_FILE = os.path.join(RUN_DIR_IN_PARENT, "egress.json")  # tmpfs: gone with the namespace (and its rules) at a restart
LOCK_FILE = os.path.join(RUN_DIR_IN_PARENT, "egress.lock")
# The workers' own policies outlive the parent: a restarted parent writes them again.
WORKERS_FILE = os.path.join(HOME_IN_PARENT, "run", "egress-workers.json")
RESOLV_CONF = "/etc/resolv.conf"


@contextlib.contextmanager
def locked():
    with open(LOCK_FILE, "a", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # held for milliseconds: one restore at a time
        yield


def _read_json(path, empty):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return empty
    except (OSError, ValueError):
        return empty  # a torn or foreign file: rebuilt from what is known now


def _write_json(path, data, home=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(data, handle, sort_keys=True)
    if home:  # root writes in the user's home: the user keeps owning what is there
        info = os.stat(home)
        os.chown(temporary, info.st_uid, info.st_gid)
    os.replace(temporary, path)


def read_state():
    return _read_json(STATE_FILE, {})


def read_workers(path=None):
    """{container ID: {uid, allow, base_url, warm, at}} of the workers with a policy of their own; entries checked."""
    found = {}
    for container_id, entry in (_read_json(path or WORKERS_FILE, {}).get("workers") or {}).items():
        try:
            uid = int(entry["uid"])
            allow = [e.text for e in parse_allow(entry.get("allow") or [])]
            make_policy("allowlist", allow, entry.get("base_url") or "")
        except (EgressError, KeyError, TypeError, ValueError):
            continue  # not ours, or not valid any more: that worker falls back to the installation's policy
        found[str(container_id)] = {"uid": uid, "allow": allow, "base_url": entry.get("base_url") or "",
                                    "warm": bool(entry.get("warm")), "at": float(entry.get("at") or 0)}
    return found


def write_workers(workers, path=None):
    _write_json(path or WORKERS_FILE, {"workers": workers}, HOME_IN_PARENT if os.path.isdir(HOME_IN_PARENT) else None)


def per_uid_policies(workers):
    """{uid: Policy}: a uid's claimed or cold worker decides (conflicts are refused at registration), else its
    newest warm worker (warm workers of one pool share a uid and a policy)."""
    chosen = {}
    for entry in sorted(workers.values(), key=lambda e: (not e["warm"], e["at"])):
        chosen[entry["uid"]] = entry  # later wins: non-warm after warm, newer after older
    return {uid: make_policy("allowlist", e["allow"], e["base_url"]) for uid, e in chosen.items()}


def conflict(workers, container_id, entry):
    """One line when another worker (not an idle warm one) of the same uid has a different policy, else ""."""
    for other_id, other in sorted(workers.items()):
        if other_id == container_id or other["uid"] != entry["uid"] or other["warm"]:
            continue
        if (other["allow"], other["base_url"]) != (entry["allow"], entry["base_url"]):
            return (f"egress_allow: uid {entry['uid']} already runs worker {other_id[:12]} with another egress policy "
                    f"({','.join(other['allow']) or 'the defaults only'}); workers that share a uid share a policy: "
                    "give this worker a user of its own (user: UID:GID) or the same egress_allow.")
    return ""


def run_steps(steps, runner=subprocess.run):
    """Run apply_steps' commands in order; a successful check (-C) skips the append after it. The errors."""
    errors = []
    skip = False
    for argv, text in steps:
        if skip:
            skip = False
            continue
        result = runner(argv, input=text, capture_output=True, text=True, check=False)
        if "-C" in argv:
            skip = result.returncode == 0
            continue
        if result.returncode != 0:
            lines = (result.stderr or result.stdout or "").strip().splitlines()
            errors.append(f"{argv[0]}: {lines[-1] if lines else f'exit status {result.returncode}'}")
    return errors


def _compiled_from(state):
    chains = state.get("chains")
    if not chains:
        return None
    return Compiled({int(v): {name: tuple(rules) for name, rules in c.items()} for v, c in chains.items()}, ())


def due_hosts(namespace_policy, now=None):
    """The host names to resolve now: all of them when the shortest TTL ran out, else those never resolved."""
    now = time.time() if now is None else now
    state = read_state()
    hosts = hosts_of([namespace_policy, *per_uid_policies(read_workers()).values()])
    if now >= state.get("next_at", 0) or set(hosts) - set(state.get("resolution") or {}):
        return hosts
    return []


def refresh(namespace=None, resolved=None, now=None, force=False, workers=None, runner=subprocess.run):
    """Compile the whole state and apply what changed; the new state (with ``warnings`` and ``error``). Under ``locked``.

    ``namespace``: the installation's (mode, allow, base_url) when it changed (default: the state's);
    ``resolved``: host names just resolved ({host: Resolved}, resolve_hosts), the next resolution due at their
    shortest TTL; ``force``: apply every chain (start-up: the namespace has no rules yet).
    """
    now = time.time() if now is None else now
    state = read_state()
    if namespace is not None:
        state["namespace"] = dict(zip(("mode", "allow", "base_url"), namespace))
    spec = state.get("namespace") or {"mode": "allowlist", "allow": [], "base_url": ""}
    policy = make_policy(spec["mode"], spec["allow"], spec["base_url"])
    workers = read_workers() if workers is None else workers
    per_uid = per_uid_policies(workers)
    hosts = hosts_of([policy, *per_uid.values()])
    previous = {h: Resolved(tuple(r[0]), r[1], r[2]) for h, r in (state.get("resolution") or {}).items()}
    resolution = {h: r for h, r in previous.items() if h in hosts}
    if resolved is not None:
        resolution.update({h: r for h, r in resolved.items() if h in hosts})
        state["next_at"] = reresolve(previous, resolution, now)[1]
    state["resolution"] = {h: list(r) for h, r in resolution.items()}
    try:
        with open(RESOLV_CONF, encoding="utf-8") as handle:
            resolvers = resolvers_from(handle.read())
    except OSError:
        resolvers = ()
    compiled = compile_policies(policy, per_uid, resolution, resolvers)
    before = None if force else _compiled_from(state)
    errors = run_steps(apply_steps(before, compiled), runner)
    # After a failure what the table holds is unknown: the next refresh writes every chain again.
    state["chains"] = None if errors else {str(v): {n: list(r) for n, r in c.items()} for v, c in compiled.chains.items()}
    state.update(warnings=list(compiled.warnings), error=errors[0] if errors else "", applied_at=now,
                 uids=sorted(per_uid))
    _write_json(STATE_FILE, state)
    return state


def register(container_id, uid, allow, base_url="", warm=False, runner=subprocess.run):
    """A worker's own policy (at create, before it starts; at a claim): recorded and applied; EgressError on a conflict.
    The state has ``changed``: whether the worker's policy was new."""
    entry = {"uid": int(uid), "allow": [e.text for e in parse_allow(allow)], "base_url": base_url or "",
             "warm": bool(warm), "at": time.time()}
    make_policy("allowlist", entry["allow"], entry["base_url"])  # a bad base URL is refused here, not at compile
    with locked():
        workers = read_workers()
        why = conflict(workers, container_id, entry)
        if why:
            raise EgressError(why)
        known = workers.get(container_id)
        changed = known is None or [known[k] for k in ("uid", "allow", "base_url", "warm")] != [
            entry[k] for k in ("uid", "allow", "base_url", "warm")]
        if changed:
            workers[container_id] = entry
            write_workers(workers)
        return dict(refresh(workers=workers, runner=runner), changed=changed)


def forget(container_ids, runner=subprocess.run):
    """Drop the policies of removed workers (their uid falls back to the installation's policy)."""
    with locked():
        workers = read_workers()
        gone = [i for i in workers if any(i.startswith(c) for c in container_ids)]
        if not gone:
            return None
        for container_id in gone:
            del workers[container_id]
        write_workers(workers)
        return refresh(workers=workers, runner=runner)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="coordinator egress", description="The workers' egress rules (docs/egress.md).")
    sub = parser.add_subparsers(dest="action", required=True)
    reg = sub.add_parser("register", help="a worker's own egress_allow, applied to its uid")
    reg.add_argument("container_id")
    reg.add_argument("uid", type=int)
    reg.add_argument("--allow", default="", help="comma-separated entries")
    reg.add_argument("--base-url", default="")
    reg.add_argument("--warm", action="store_true")
    drop = sub.add_parser("forget", help="drop removed workers' policies")
    drop.add_argument("container_ids", nargs="+")
    sub.add_parser("show", help="the applied state (JSON)")
    args = parser.parse_args(argv)
    try:
        if args.action == "register":
            state = register(args.container_id, args.uid, args.allow, args.base_url, args.warm)
        elif args.action == "forget":
            state = forget(args.container_ids)
        else:
            state = dict(read_state(), workers=read_workers())
            print(json.dumps(state, indent=1, sort_keys=True))
            return 0
    except EgressError as exc:
        print(f"coordinator: {exc}", file=sys.stderr)
        return 1
    if state and state.get("error"):
        print(f"coordinator: egress rules not applied: {state['error']}", file=sys.stderr)
        return 1
    if args.action == "register":
        print("changed" if state["changed"] else "unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
