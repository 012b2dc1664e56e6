# -*- coding: utf-8 -*-
# Copyright: HAL-9000 DinD maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The workers' egress allowlist: parsed, resolved and compiled into netfilter rules.

Design (docs/egress.md says it for users):

- **Owner-match rules in the parent's network namespace, not a filtering proxy.** Every dind
  worker runs with ``--network=container:<parent>``, so one netfilter table (the parent's) sees
  every packet a worker sends, and the kernel tags each locally sent packet with the uid of the
  socket that sent it. Rules matching ``-m owner --uid-owner`` therefore apply to every
  program in a worker (curl, git, pip, a raw socket), with no proxy variable to honour or
  ignore, no TLS interception, no extra hop for the API's streaming responses, and nothing more
  running in the parent. Keyed by uid, one worker (or one pool, whose workers share a uid) gets
  its own chain: a per-worker policy that differs from its neighbours in the same namespace,
  applied at claim by rewriting that one chain with ``iptables-restore --noflush`` (milliseconds).
  A proxy could filter by name (SNI) instead of address, but it sees only programs that use it,
  and telling workers apart would need one credential per worker on top.
- **Workers cannot change the rules.** Changing a netfilter table needs CAP_NET_ADMIN in the
  namespace's owning user namespace; workers drop every capability and run with
  no-new-privileges as a non-root uid, so ``iptables -F`` fails with permission denied, and no
  setuid program can give it back. Only the parent (CAP_NET_ADMIN, root) writes them.
- **Root is unaffected.** Packets of uid 0 (the parent's own processes, the MCP relay) never
  enter the egress chains; packets without a socket (the kernel's own replies) neither: the
  dispatcher matches the positive uid range 1-4294967294 (a negated owner match would also
  match socketless packets).
- **Host names are resolved by the parent and kept current** by re-resolving when the shortest
  TTL runs out (300 s when the resolver gives none); ``reresolve`` says whether the rules must be
  rewritten. Connections already open survive a rewrite (ESTABLISHED,RELATED is accepted first).
- **DNS is restricted** to the resolvers of the parent's /etc/resolv.conf (udp and tcp 53): a
  worker can look names up but cannot use port 53 to reach any other host. (Names still reach
  the resolver: data hidden in queries to a domain the worker controls is not stopped by
  address rules; docs/egress.md says so.)
- **Always refused**, whatever is listed and in ``egress: open`` too: link-local
  (169.254.0.0/16 with the cloud metadata address 169.254.169.254, fe80::/10) and multicast;
  these rules come before every allow rule, so a listed CIDR that covers them does not open them.
  Private ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7) only when listed
  explicitly: a host name that resolves into one is dropped with a warning unless a listed
  CIDR holds the address.
- Allowed traffic ``RETURN``s to OUTPUT rather than ACCEPTs, so the rules after the jump (the
  ChromaDB guard, chain HAL9000-CHROMADB) still apply whatever the order of the two jumps.
- Deterministic: the same policy and resolution give byte-identical restore text, so the parent
  applies only what changed (``changed_chains``).

Pure: standard library only, never ``ansible.*``. Name resolution is a function passed in
(``resolver(host) -> (addresses, ttl)``); ``system_resolver`` is the real one.
"""

from __future__ import annotations

import collections
import ipaddress
import re
import socket
import urllib.parse

MODES = ("allowlist", "open")
DEFAULT_MODE = "allowlist"
CHAIN = "HAL9000-EGRESS"              # the dispatcher, jumped to from OUTPUT
NAMESPACE_CHAIN = "HAL9000-EGRESS-NS"  # the namespace's policy: every worker uid without one of its own
WORKER_UIDS = "1-4294967294"          # every uid but root (and the overflow uid 4294967295)
DEFAULT_TTL = 300                     # seconds, when the resolver gives no TTL
RETRY_AFTER = 30                      # seconds, after a host name could not be resolved
MIN_TTL = 5                           # never re-resolve more often than this
ANTHROPIC_API = "api.anthropic.com:443"
LOOPBACK = ("127.0.0.0/8", "::1")
OPEN_WARNING = ("egress: open: workers may connect to any address (only link-local, metadata and multicast "
                "addresses are refused); set egress: allowlist to restrict them.")

ALWAYS_REFUSED = {
    4: (("169.254.0.0/16", "link-local (the cloud metadata address 169.254.169.254 among them)"),
        ("224.0.0.0/4", "multicast"), ("255.255.255.255/32", "broadcast")),
    6: (("fe80::/10", "link-local"), ("ff00::/8", "multicast")),
}
PRIVATE = {
    4: ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8"),
    6: ("fc00::/7", "::1/128"),
}
_ALWAYS = {v: tuple((ipaddress.ip_network(n), why) for n, why in nets) for v, nets in ALWAYS_REFUSED.items()}
_PRIVATE = {v: tuple(ipaddress.ip_network(n) for n in nets) for v, nets in PRIVATE.items()}
_UNSPECIFIED = (ipaddress.ip_network("0.0.0.0/8"), ipaddress.ip_network("::/128"))
_V4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_PORTS = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?$")
COMMENT_MAX = 250                     # xt_comment holds 255 characters
REJECT_WITH = {4: "icmp-admin-prohibited", 6: "icmp6-adm-prohibited"}


class EgressError(ValueError):
    """A refused egress setting; str() is one line that says what to do."""


# text: the entry as normalised (what comments and status show); host: a host name, or None;
# network: an ip_network, or None; ports: (first, last) or None for every port.
Entry = collections.namedtuple("Entry", "text host network ports")
# mode: allowlist or open; entries: sorted, unique Entry tuples (the defaults included).
Policy = collections.namedtuple("Policy", "mode entries")
# addresses: sorted address strings; ttl: seconds; error: why the name did not resolve ("" when it did).
Resolved = collections.namedtuple("Resolved", "addresses ttl error")


# ---------------------------------------------------------------- parsing and validation

def _ports(text, entry):
    match = _PORTS.match(text)
    if not match:
        raise EgressError(f"egress_allow {entry!r}: {text!r} is not a port or a port range (443, 8000-8100).")
    first = int(match.group(1))
    last = int(match.group(2) or first)
    if not 1 <= first <= last <= 65535:
        raise EgressError(f"egress_allow {entry!r}: ports must lie in 1-65535 with the first not above the last.")
    return (first, last)


def _port_text(ports):
    if ports is None:
        return ""
    return str(ports[0]) if ports[0] == ports[1] else f"{ports[0]}-{ports[1]}"


def _split(text):
    """(address or host part, port part or None) of an entry: host:port, [v6]:port, v4/cidr:port, bare v6."""
    if text.startswith("["):
        inner, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise EgressError(f"egress_allow {text!r}: write an IPv6 address with a port as [2001:db8::1]:443.")
        return inner, (rest[1:] if rest else None)
    if text.count(":") > 1:  # a bare IPv6 address or network: no port
        return text, None
    address, sep, port = text.partition(":")
    return address, (port if sep else None)


def _check_network(network, entry):
    version = network.version
    if network.prefixlen == 0:
        raise EgressError(f"egress_allow {entry!r} allows every address: use egress: open instead.")
    if any(network.subnet_of(u) for u in _UNSPECIFIED if u.version == version):
        raise EgressError(f"egress_allow {entry!r} is the unspecified address: give a real destination.")
    if version == 6 and network.subnet_of(_V4_MAPPED):
        raise EgressError(f"egress_allow {entry!r} is an IPv4-mapped IPv6 address: give the IPv4 address.")
    for refused, why in _ALWAYS[version]:
        if network.subnet_of(refused):
            raise EgressError(f"egress_allow {entry!r} is {why}: always refused.")
    for private in _PRIVATE[version]:
        if network.overlaps(private) and not network.subnet_of(private):
            raise EgressError(f"egress_allow {entry!r} covers the private range {private}: "
                              "list private ranges (or parts of them) on their own.")


def _check_host(host, entry):
    host = host.lower().rstrip(".")
    if "*" in host:
        raise EgressError(f"egress_allow {entry!r}: wildcards cannot be enforced by address rules; list each host name.")
    if len(host) > 253 or not all(_LABEL.match(label) for label in host.split(".")):
        raise EgressError(f"egress_allow {entry!r} is not a host name, an IP address or a CIDR.")
    if host.replace(".", "").isdigit():
        raise EgressError(f"egress_allow {entry!r} is not a valid IPv4 address.")
    return host


def parse_entry(text):
    """One ``egress_allow`` entry as an Entry, or EgressError with one line.

    host, host:443, host:8000-8100, 192.0.2.1, 192.0.2.0/24:443, 2001:db8::1, 2001:db8::/32,
    [2001:db8::1]:443, [2001:db8::/32]:8000-8100.
    """
    entry = str(text).strip()
    if not entry:
        raise EgressError("egress_allow has an empty entry: give a host name, an IP address or a CIDR.")
    if "://" in entry:
        raise EgressError(f"egress_allow {entry!r}: give host[:port], not a URL.")
    if any(c.isspace() or c in ",\"'\\" for c in entry):
        raise EgressError(f"egress_allow {entry!r}: one host, address or CIDR per entry, without spaces or quotes.")
    address, port = _split(entry)
    ports = _ports(port, entry) if port is not None else None
    try:
        network = ipaddress.ip_network(address, strict=True)
    except ValueError as exc:
        if "/" in address or address.count(":") > 1:
            raise EgressError(f"egress_allow {entry!r}: {exc}.") from None
        host = _check_host(address, entry)
        return Entry(host + (f":{_port_text(ports)}" if ports else ""), host, None, ports)
    _check_network(network, entry)
    if network.num_addresses == 1:
        shown = str(network.network_address)
    else:
        shown = str(network)
    if ports:
        shown = f"[{shown}]:{_port_text(ports)}" if network.version == 6 else f"{shown}:{_port_text(ports)}"
    return Entry(shown, None, network, ports)


def _sort_key(entry):
    if entry.network is not None:
        return (1, entry.network.version, int(entry.network.network_address), entry.network.prefixlen, entry.ports or (0, 0))
    return (0, 0, entry.host, 0, entry.ports or (0, 0))


def parse_allow(value):
    """``egress_allow`` (a list, or hal9000.conf's comma-separated text) as sorted, unique Entry tuples."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    entries = {}
    for item in items:
        if isinstance(item, str) and not item.strip() and isinstance(value, str):
            continue  # "a,,b" or a trailing comma in hal9000.conf
        parsed = item if isinstance(item, Entry) else parse_entry(item)
        entries[parsed.text] = parsed
    return tuple(sorted(entries.values(), key=_sort_key))


def allow_text(entries):
    """Entries as hal9000.conf spells them (comma-separated, normalised)."""
    return ",".join(entry.text for entry in entries)


def check_mode(value):
    mode = str(value if value is not None else DEFAULT_MODE).strip().lower() or DEFAULT_MODE
    if mode not in MODES:
        raise EgressError(f"egress {value!r} is unknown: use allowlist (the default) or open.")
    return mode


def warnings_for_status(mode):
    """What status shows about a policy's mode: a warning for open, nothing for allowlist."""
    return [OPEN_WARNING] if check_mode(mode) == "open" else []


def default_entries(anthropic_base_url=""):
    """What every allowlist holds: the Anthropic API, the gateway of anthropic_base_url, loopback."""
    texts = [ANTHROPIC_API, *LOOPBACK]
    if anthropic_base_url:
        url = urllib.parse.urlsplit(str(anthropic_base_url).strip())
        if url.scheme not in ("http", "https") or not url.hostname:
            raise EgressError(f"anthropic_base_url {anthropic_base_url!r} is not an http(s) URL.")
        port = url.port or (443 if url.scheme == "https" else 80)
        host = url.hostname
        texts.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return parse_allow(texts)


def make_policy(mode=DEFAULT_MODE, allow=(), anthropic_base_url=""):
    """A Policy: the defaults plus ``allow`` (entries or their texts); ``open``: no allowlist at all."""
    mode = check_mode(mode)
    if mode == "open":
        return Policy("open", ())
    merged = {e.text: e for e in default_entries(anthropic_base_url) + parse_allow(allow)}
    return Policy("allowlist", tuple(sorted(merged.values(), key=_sort_key)))


# ---------------------------------------------------------------- resolution

def system_resolver(host):
    """(addresses, None) through getaddrinfo: the system gives no TTL, so DEFAULT_TTL applies."""
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return sorted({info[4][0].split("%")[0] for info in infos}), None


def hosts_of(policies):
    """Every host name the policies name, sorted."""
    return sorted({e.host for p in policies for e in p.entries if e.host})


def resolve_hosts(hosts, resolver):
    """{host: Resolved} through ``resolver(host) -> (addresses, ttl)``; a failure is kept as its error."""
    resolution = {}
    for host in sorted(set(hosts)):
        try:
            addresses, ttl = resolver(host)
        except (OSError, UnicodeError, ValueError) as exc:
            resolution[host] = Resolved((), RETRY_AFTER, str(exc) or type(exc).__name__)
            continue
        valid = set()
        for address in addresses:
            try:
                valid.add(ipaddress.ip_address(str(address).split("%", maxsplit=1)[0]))
            except ValueError:
                continue
        texts = tuple(str(a) for a in sorted(valid, key=lambda a: (a.version, int(a))))
        ttl = DEFAULT_TTL if ttl is None else max(MIN_TTL, int(ttl))
        resolution[host] = Resolved(texts, ttl, "" if texts else "no address")
    return resolution


def reresolve(previous, current, now):
    """(rewrite, next_at): whether the rules must be rewritten (a host's addresses changed, appeared or
    went) and when to resolve again (``now`` + the smallest TTL; DEFAULT_TTL when no host is named)."""
    before = {host: r.addresses for host, r in (previous or {}).items()}
    after = {host: r.addresses for host, r in current.items()}
    ttls = [r.ttl for r in current.values()]
    return before != after, now + (min(ttls) if ttls else DEFAULT_TTL)


def resolvers_from(resolv_conf):
    """The nameserver addresses of an /etc/resolv.conf text (the parent's, passed in), in order."""
    found = []
    for line in resolv_conf.splitlines():
        fields = line.split("#")[0].split(";")[0].split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                address = str(ipaddress.ip_address(fields[1].split("%")[0]))
            except ValueError:
                continue
            if address not in found:
                found.append(address)
    return tuple(found)


def _refused_reason(address, allowed_networks):
    """Why a resolved address is dropped ("" when it is kept)."""
    version = address.version
    if version == 6 and address in _V4_MAPPED:
        return "an IPv4-mapped address"
    for refused, why in _ALWAYS[version]:
        if address in refused:
            return why.split(" (")[0]
    if any(address in u for u in _UNSPECIFIED if u.version == version):
        return "unspecified"
    private = next((p for p in _PRIVATE[version] if address in p), None)
    if private and not any(address in n for n in allowed_networks if n.version == version):
        return f"in the private range {private}, which is not listed"
    return ""


def destinations(policy, resolution):
    """([(network, ports, comment)], warnings): what a policy allows with host names replaced by
    their addresses; resolved addresses that are always refused, or private and not listed, dropped."""
    allowed = []
    warnings = []
    listed = [e.network for e in policy.entries if e.network is not None]
    for entry in policy.entries:
        if entry.network is not None:
            allowed.append((entry.network, entry.ports, entry.text))
            continue
        resolved = resolution.get(entry.host)
        if resolved is None or resolved.error:
            why = resolved.error if resolved else "not resolved yet"
            warnings.append(f"egress: {entry.host} is not allowed for now: it did not resolve ({why}).")
            continue
        for text in resolved.addresses:
            address = ipaddress.ip_address(text)
            reason = _refused_reason(address, listed)
            if reason:
                warnings.append(f"egress: {entry.host} resolves to {text}, {reason}: dropped.")
                continue
            allowed.append((ipaddress.ip_network(address), entry.ports, entry.text))
    return allowed, sorted(set(warnings))


# ---------------------------------------------------------------- compiling

def uid_chain(uid):
    uid = int(uid)
    if not 1 <= uid <= 4294967294:
        raise EgressError(f"egress: uid {uid} cannot have a policy of its own (root is never filtered).")
    return f"{CHAIN}-{uid}"


def _destination(network):
    return str(network) if network.num_addresses > 1 else f"{network.network_address}/{network.prefixlen}"


def policy_rules(chain, policy, resolution, resolvers, version):
    """The rules of one policy chain for IP ``version`` (4 or 6), and the warnings; in order:
    always refused, ESTABLISHED/RELATED, DNS to the resolvers, the allowlist, REJECT everything else."""
    rules = [f"-A {chain} -d {net} -j REJECT --reject-with {REJECT_WITH[version]}" for net, _why in _ALWAYS[version]]
    rules.append(f"-A {chain} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN")
    if policy.mode == "open":
        rules.append(f"-A {chain} -j RETURN")
        return rules, [OPEN_WARNING]
    for resolver in resolvers:
        address = ipaddress.ip_address(resolver)
        if address.version == version:
            for proto in ("udp", "tcp"):
                rules.append(f"-A {chain} -d {_destination(ipaddress.ip_network(address))} -p {proto} -m {proto} "
                             f"--dport 53 -m comment --comment \"dns\" -j RETURN")
    allowed, warnings = destinations(policy, resolution)
    seen = set()
    for network, ports, comment in sorted(allowed, key=lambda a: (int(a[0].network_address), a[0].prefixlen, a[1] or (0, 0), a[2])):
        if network.version != version or (network, ports) in seen:
            continue
        seen.add((network, ports))
        target = f"-m comment --comment \"{comment[:COMMENT_MAX]}\" -j RETURN"
        if ports is None:
            rules.append(f"-A {chain} -d {_destination(network)} {target}")
            continue
        dport = str(ports[0]) if ports[0] == ports[1] else f"{ports[0]}:{ports[1]}"
        for proto in ("tcp", "udp"):
            rules.append(f"-A {chain} -d {_destination(network)} -p {proto} -m {proto} --dport {dport} {target}")
    rules.append(f"-A {chain} -p tcp -j REJECT --reject-with tcp-reset")
    rules.append(f"-A {chain} -j REJECT --reject-with {REJECT_WITH[version]}")
    return rules, warnings


def dispatcher_rules(uids):
    """HAL9000-EGRESS: each uid with a policy of its own to its chain, every other non-root uid to the namespace's.

    ``-g`` (goto): a RETURN in the policy chain goes back to OUTPUT, not on to the next rule here.
    """
    rules = [f"-A {CHAIN} -m owner --uid-owner {int(uid)} -g {uid_chain(uid)}" for uid in sorted(int(u) for u in uids)]
    rules.append(f"-A {CHAIN} -m owner --uid-owner {WORKER_UIDS} -g {NAMESPACE_CHAIN}")
    return rules


# Compiled: per IP version, {chain: (rule, ...)} in chain order, and the warnings of all policies.
Compiled = collections.namedtuple("Compiled", "chains warnings")


def compile_policies(namespace, per_uid, resolution, resolvers):
    """Every egress chain for the namespace's Policy and ``per_uid`` ({uid: Policy}), both IP versions."""
    chains = {4: {}, 6: {}}
    warnings = []
    for version in (4, 6):
        chains[version][CHAIN] = tuple(dispatcher_rules(per_uid))
        rules, found = policy_rules(NAMESPACE_CHAIN, namespace, resolution, resolvers, version)
        chains[version][NAMESPACE_CHAIN] = tuple(rules)
        warnings += found
        for uid in sorted(int(u) for u in per_uid):
            chain = uid_chain(uid)
            rules, found = policy_rules(chain, per_uid[uid], resolution, resolvers, version)
            chains[version][chain] = tuple(rules)
            warnings += [f"uid {uid}: {w}" for w in found]
    return Compiled(chains, tuple(sorted(set(warnings))))


def restore_text(compiled, version, only=None):
    """iptables-restore (4) / ip6tables-restore (6) input for ``iptables-restore --noflush``: every chain, or
    those named in ``only``. A declared chain is created, or emptied when it exists, and refilled, in one commit;
    no other chain of the table is touched."""
    names = [name for name in compiled.chains[version] if only is None or name in only]
    if not names:
        return ""
    lines = ["*filter"]
    lines += [f":{name} - [0:0]" for name in names]
    for name in names:
        lines += compiled.chains[version][name]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def changed_chains(before, after, version):
    """The chains of ``after`` whose rules differ from ``before`` (None: nothing applied yet), in order."""
    old = before.chains[version] if before else {}
    return [name for name, rules in after.chains[version].items() if old.get(name) != rules]


def update_text(before, after, version):
    """The smallest restore text that takes the table from ``before`` to ``after`` ("" when nothing changed).
    A claim that changes one uid's policy rewrites that uid's chain alone; a new uid adds the dispatcher."""
    return restore_text(after, version, set(changed_chains(before, after, version)))


def removed_chains(before, after, version):
    """Chains of ``before`` that ``after`` no longer has: delete them (``iptables -X``) after the update."""
    if not before:
        return []
    return [name for name in before.chains[version] if name not in after.chains[version]]


def jump_commands(version):
    """argv lists that put the one jump from OUTPUT in place (check, then append when missing).
    Appended, after the ChromaDB guard's inserted jump; allowed traffic RETURNs, so the guard applies either way."""
    program = "iptables" if version == 4 else "ip6tables"
    rule = ["OUTPUT", "-j", CHAIN]
    return [program, "-w", "-C", *rule], [program, "-w", "-A", *rule]


def apply_steps(before, after):
    """What the parent runs to go from ``before`` (None at start) to ``after``: (argv, stdin text) pairs, in order.

    Per IP version: the changed chains in one ``*-restore --noflush`` commit, the jump from OUTPUT (checked,
    appended when missing; an argv with stdin None whose failure means "append"), then chains no longer used
    emptied and deleted. Nothing when nothing changed (the jump is checked only at start, ``before`` None).
    """
    steps = []
    for version in (4, 6):
        program = "iptables" if version == 4 else "ip6tables"
        text = update_text(before, after, version)
        if text:
            steps.append(([f"{program}-restore", "-w", "--noflush"], text))
        if before is None:
            check, append = jump_commands(version)
            steps.append((check, None))
            steps.append((append, None))
        for name in removed_chains(before, after, version):  # -X deletes only an empty chain (EBUSY otherwise)
            steps += [([program, "-w", "-F", name], None), ([program, "-w", "-X", name], None)]
    return steps
