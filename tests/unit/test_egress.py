"""The egress allowlist's pure core: validation, default policy, per-uid chains, resolution, minimal updates.

Name resolution is a fake resolver (a dict of answers), never the network; the rules are text compared
as text. Applying them (iptables-restore in the parent's namespace) is for the integration tests.
"""

from __future__ import annotations

import ipaddress

import pytest

from ansible_collections.hal9000.dind.plugins.module_utils import egress
from ansible_collections.hal9000.dind.plugins.module_utils.egress import (
    CHAIN,
    NAMESPACE_CHAIN,
    OPEN_WARNING,
    EgressError,
    Resolved,
    compile_policies,
    default_entries,
    make_policy,
    parse_allow,
    parse_entry,
    removed_chains,
    reresolve,
    resolve_hosts,
    resolvers_from,
    restore_text,
    update_text,
    warnings_for_status,
)

ANSWERS = {
    "api.anthropic.com": (["160.79.104.10", "2607:6bc0::10"], 60),
    "pkgs.example": (["198.51.100.23", "198.51.100.64"], 120),
    "gw.example": (["198.51.100.7"], None),
    "intranet.example": (["10.20.30.40"], 300),
    "rebind.example": (["169.254.169.254", "203.0.113.9"], 30),
    "mapped.example": (["::ffff:169.254.169.254"], 30),
    "cgnat.example": (["100.64.1.1"], 30),
    "ula.example": (["fd00::5"], 30),
}
RESOLVERS = ("127.0.0.11",)


def fake_resolver(answers=None):
    answers = ANSWERS if answers is None else answers

    def resolve(host):
        if host not in answers:
            raise OSError(f"[Errno -2] Name or service not known: {host}")
        return answers[host]
    return resolve


def compiled(namespace=None, per_uid=None, answers=None, resolvers=RESOLVERS):
    namespace = namespace or make_policy()
    per_uid = per_uid or {}
    hosts = egress.hosts_of([namespace, *per_uid.values()])
    return compile_policies(namespace, per_uid, resolve_hosts(hosts, fake_resolver(answers)), resolvers)


def rules_of(result, chain, version=4):
    return list(result.chains[version][chain])


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("text,shown,host,network,ports", [
    ("pkgs.example", "pkgs.example", "pkgs.example", None, None),
    ("Pkgs.Example.", "pkgs.example", "pkgs.example", None, None),
    ("pkgs.example:443", "pkgs.example:443", "pkgs.example", None, (443, 443)),
    ("git.example:8000-8100", "git.example:8000-8100", "git.example", None, (8000, 8100)),
    ("192.0.2.7", "192.0.2.7", None, "192.0.2.7/32", None),
    ("192.0.2.7/32:22", "192.0.2.7:22", None, "192.0.2.7/32", (22, 22)),
    ("192.0.2.0/24:443", "192.0.2.0/24:443", None, "192.0.2.0/24", (443, 443)),
    ("2001:db8::1", "2001:db8::1", None, "2001:db8::1/128", None),
    ("2001:DB8::/32", "2001:db8::/32", None, "2001:db8::/32", None),
    ("[2001:db8::1]:443", "[2001:db8::1]:443", None, "2001:db8::1/128", (443, 443)),
    ("[2001:db8::/32]:1-1024", "[2001:db8::/32]:1-1024", None, "2001:db8::/32", (1, 1024)),
    ("10.1.0.0/16:5432", "10.1.0.0/16:5432", None, "10.1.0.0/16", (5432, 5432)),
    ("fd00::/8", "fd00::/8", None, "fd00::/8", None),
    ("169.0.0.0/8", "169.0.0.0/8", None, "169.0.0.0/8", None),  # covers link-local: carved out by the rules
])
def test_valid_entries_are_normalised(text, shown, host, network, ports):
    entry = parse_entry(text)
    assert entry.text == shown
    assert entry.host == host
    assert (str(entry.network) if entry.network else None) == network
    assert entry.ports == ports
    assert parse_entry(entry.text) == entry, "the normalised text reads back as the same entry"


@pytest.mark.parametrize("text,words", [
    ("", ["empty"]),
    ("169.254.169.254", ["169.254.169.254", "link-local", "always refused"]),
    ("169.254.169.254:80", ["169.254.169.254:80", "always refused"]),
    ("169.254.0.0/16", ["link-local", "always refused"]),
    ("fe80::1", ["link-local", "always refused"]),
    ("[fe80::/10]:22", ["link-local", "always refused"]),
    ("224.0.0.251", ["multicast", "always refused"]),
    ("ff02::1", ["multicast", "always refused"]),
    ("0.0.0.0/0", ["egress: open"]),
    ("::/0", ["egress: open"]),
    ("0.0.0.0", ["unspecified"]),
    ("::ffff:169.254.169.254", ["IPv4-mapped", "IPv4 address"]),
    ("0.0.0.0/1", ["covers the private range 10.0.0.0/8", "on their own"]),
    ("100.0.0.0/8", ["covers the private range 100.64.0.0/10"]),
    ("192.0.2.1/24", ["host bits"]),
    ("https://pkgs.example", ["not a URL"]),
    ("*.example.com", ["wildcards"]),
    ("pkgs.example:0", ["1-65535"]),
    ("pkgs.example:70000", ["1-65535"]),
    ("pkgs.example:443-80", ["first not above the last"]),
    ("pkgs.example:https", ["not a port"]),
    ("pkgs .example", ["without spaces"]),
    ("a,b", ["one host"]),
    ("-bad-.example", ["not a host name"]),
    ("999.1.1.1", ["not a valid IPv4 address"]),
    ("[2001:db8::1", ["[2001:db8::1]:443"]),
    ("2001:db8::1:443:x", ["egress_allow"]),
])
def test_refusals_are_one_line_naming_the_entry(text, words):
    with pytest.raises(EgressError) as caught:
        parse_entry(text)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("egress_allow"), message
    assert all(word in message for word in words), message


def test_parse_allow_takes_a_list_or_comma_separated_text_sorted_and_unique():
    from_list = parse_allow(["pkgs.example:443", "192.0.2.0/24", "PKGS.example:443", "2001:db8::1", "a.example"])
    from_text = parse_allow("a.example, 2001:db8::1,192.0.2.0/24,pkgs.example:443,")
    assert from_list == from_text
    assert [e.text for e in from_list] == ["a.example", "pkgs.example:443", "192.0.2.0/24", "2001:db8::1"]
    with pytest.raises(EgressError, match="empty entry"):
        parse_allow(["pkgs.example", " "])


def test_mode_is_allowlist_by_default_and_open_warns():
    assert egress.check_mode(None) == "allowlist"
    assert egress.check_mode(" Open ") == "open"
    assert warnings_for_status("allowlist") == []
    assert warnings_for_status("open") == [OPEN_WARNING]
    with pytest.raises(EgressError, match="use allowlist .* or open"):
        egress.check_mode("closed")
    assert make_policy("open", ["pkgs.example"]).entries == ()


# ---------------------------------------------------------------- the default policy

def test_the_default_allowlist_is_the_api_and_loopback():
    assert [e.text for e in default_entries()] == ["api.anthropic.com:443", "127.0.0.0/8", "::1"]


@pytest.mark.parametrize("url,entry", [
    ("https://gw.example/anthropic", "gw.example:443"),
    ("http://gw.example", "gw.example:80"),
    ("https://gw.example:8443/v1", "gw.example:8443"),
    ("http://[2001:db8::7]:8080", "[2001:db8::7]:8080"),
    ("https://192.0.2.10", "192.0.2.10:443"),
])
def test_anthropic_base_url_adds_its_host_with_the_schemes_default_port(url, entry):
    assert entry in [e.text for e in default_entries(url)]


def test_a_gateway_in_a_private_range_is_listed_explicitly_by_anthropic_base_url():
    policy = make_policy(anthropic_base_url="http://10.0.0.5:4000")
    rules = rules_of(compiled(policy), NAMESPACE_CHAIN)
    assert '-A HAL9000-EGRESS-NS -d 10.0.0.5/32 -p tcp -m tcp --dport 4000 -m comment --comment "10.0.0.5:4000" -j RETURN' in rules


def test_the_default_policy_text():
    assert restore_text(compiled(), 4) == """\
*filter
:HAL9000-EGRESS - [0:0]
:HAL9000-EGRESS-NS - [0:0]
-A HAL9000-EGRESS -m owner --uid-owner 1-4294967294 -g HAL9000-EGRESS-NS
-A HAL9000-EGRESS-NS -d 169.254.0.0/16 -j REJECT --reject-with icmp-admin-prohibited
-A HAL9000-EGRESS-NS -d 224.0.0.0/4 -j REJECT --reject-with icmp-admin-prohibited
-A HAL9000-EGRESS-NS -d 255.255.255.255/32 -j REJECT --reject-with icmp-admin-prohibited
-A HAL9000-EGRESS-NS -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN
-A HAL9000-EGRESS-NS -d 127.0.0.11/32 -p udp -m udp --dport 53 -m comment --comment "dns" -j RETURN
-A HAL9000-EGRESS-NS -d 127.0.0.11/32 -p tcp -m tcp --dport 53 -m comment --comment "dns" -j RETURN
-A HAL9000-EGRESS-NS -d 127.0.0.0/8 -m comment --comment "127.0.0.0/8" -j RETURN
-A HAL9000-EGRESS-NS -d 160.79.104.10/32 -p tcp -m tcp --dport 443 -m comment --comment "api.anthropic.com:443" -j RETURN
-A HAL9000-EGRESS-NS -d 160.79.104.10/32 -p udp -m udp --dport 443 -m comment --comment "api.anthropic.com:443" -j RETURN
-A HAL9000-EGRESS-NS -p tcp -j REJECT --reject-with tcp-reset
-A HAL9000-EGRESS-NS -j REJECT --reject-with icmp-admin-prohibited
COMMIT
"""
    assert restore_text(compiled(), 6) == """\
*filter
:HAL9000-EGRESS - [0:0]
:HAL9000-EGRESS-NS - [0:0]
-A HAL9000-EGRESS -m owner --uid-owner 1-4294967294 -g HAL9000-EGRESS-NS
-A HAL9000-EGRESS-NS -d fe80::/10 -j REJECT --reject-with icmp6-adm-prohibited
-A HAL9000-EGRESS-NS -d ff00::/8 -j REJECT --reject-with icmp6-adm-prohibited
-A HAL9000-EGRESS-NS -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN
-A HAL9000-EGRESS-NS -d ::1/128 -m comment --comment "::1" -j RETURN
-A HAL9000-EGRESS-NS -d 2607:6bc0::10/128 -p tcp -m tcp --dport 443 -m comment --comment "api.anthropic.com:443" -j RETURN
-A HAL9000-EGRESS-NS -d 2607:6bc0::10/128 -p udp -m udp --dport 443 -m comment --comment "api.anthropic.com:443" -j RETURN
-A HAL9000-EGRESS-NS -p tcp -j REJECT --reject-with tcp-reset
-A HAL9000-EGRESS-NS -j REJECT --reject-with icmp6-adm-prohibited
COMMIT
"""


def test_root_is_never_dispatched_and_socketless_packets_neither():
    """A positive uid range: a negated owner match (! --uid-owner 0) would also match the kernel's own packets."""
    for version in (4, 6):
        dispatcher = rules_of(compiled(per_uid={1002: make_policy()}), CHAIN, version)
        assert all("--uid-owner 0 " not in rule and "!" not in rule for rule in dispatcher)
        assert dispatcher[-1] == "-A HAL9000-EGRESS -m owner --uid-owner 1-4294967294 -g HAL9000-EGRESS-NS"
    with pytest.raises(EgressError, match="root is never filtered"):
        egress.uid_chain(0)


def test_open_mode_still_refuses_link_local_and_metadata():
    rules = rules_of(compiled(make_policy("open")), NAMESPACE_CHAIN)
    assert rules[0] == "-A HAL9000-EGRESS-NS -d 169.254.0.0/16 -j REJECT --reject-with icmp-admin-prohibited"
    assert rules[-1] == "-A HAL9000-EGRESS-NS -j RETURN"
    established = rules.index("-A HAL9000-EGRESS-NS -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN")
    assert not any("REJECT" in rule for rule in rules[established:])
    assert OPEN_WARNING in compiled(make_policy("open")).warnings


# ---------------------------------------------------------------- always refused, private ranges

def first_match(rules, address, port=None, proto="tcp"):
    """The verdict of the first rule of a chain that a new packet to ``address`` (port, proto) meets."""
    address = ipaddress.ip_address(address)
    for rule in rules:
        words = rule.split()
        if "--ctstate" in words:
            continue  # a new connection
        if "-d" in words and address not in ipaddress.ip_network(words[words.index("-d") + 1]):
            continue
        if "-p" in words and words[words.index("-p") + 1] != proto:
            continue
        if "--dport" in words:
            first, _sep, last = words[words.index("--dport") + 1].partition(":")
            if port is None or not int(first) <= port <= int(last or first):
                continue
        return words[words.index("-j") + 1]
    return "OUTPUT"


def test_metadata_is_refused_even_when_a_listed_cidr_covers_it():
    rules = rules_of(compiled(make_policy(allow=["168.0.0.0/6", "169.0.0.0/8"])), NAMESPACE_CHAIN)
    assert first_match(rules, "169.254.169.254", 80) == "REJECT"
    assert first_match(rules, "169.254.1.1", 443) == "REJECT"
    assert first_match(rules, "169.1.2.3", 443) == "RETURN", "the rest of the listed CIDR is allowed"
    assert first_match(rules, "170.0.0.1", 443) == "RETURN"


def test_a_name_resolving_to_metadata_is_dropped_with_a_warning():
    result = compiled(make_policy(allow=["rebind.example", "mapped.example", "169.0.0.0/8"]))
    rules = rules_of(result, NAMESPACE_CHAIN)
    assert first_match(rules, "169.254.169.254", 80) == "REJECT"
    assert first_match(rules, "203.0.113.9", 80) == "RETURN"
    assert not any("169.254.169.254" in rule for rule in rules)
    assert "egress: rebind.example resolves to 169.254.169.254, link-local: dropped." in result.warnings
    assert "egress: mapped.example resolves to ::ffff:a9fe:a9fe, an IPv4-mapped address: dropped." in result.warnings


@pytest.mark.parametrize("host,address", [
    ("intranet.example", "10.20.30.40"), ("cgnat.example", "100.64.1.1"), ("ula.example", "fd00::5"),
])
def test_a_name_resolving_into_a_private_range_is_dropped_unless_the_range_is_listed(host, address):
    version = ipaddress.ip_address(address).version
    dropped = compiled(make_policy(allow=[host]))
    assert first_match(rules_of(dropped, NAMESPACE_CHAIN, version), address, 443) == "REJECT"
    assert any(w.startswith(f"egress: {host} resolves to {address}, in the private range") for w in dropped.warnings)

    listed = {"10.20.30.40": "10.20.0.0/16:5432", "100.64.1.1": "100.64.0.0/10", "fd00::5": "fd00::/8"}[address]
    kept = compiled(make_policy(allow=[host, listed]))
    assert not any(host in w for w in kept.warnings)
    rules = rules_of(kept, NAMESPACE_CHAIN, version)
    assert f'-m comment --comment "{host}" -j RETURN' in "\n".join(rules)
    assert first_match(rules, address, 443) == "RETURN"


def test_listed_private_ranges_are_allowed_and_unlisted_ones_refused():
    rules = rules_of(compiled(make_policy(allow=["192.168.1.0/24:22"])), NAMESPACE_CHAIN)
    assert first_match(rules, "192.168.1.9", 22) == "RETURN"
    assert first_match(rules, "192.168.1.9", 23) == "REJECT"
    assert first_match(rules, "192.168.2.9", 22) == "REJECT"
    assert first_match(rules, "10.0.0.1", 443) == "REJECT"


def test_dns_only_to_the_resolvers_and_nothing_else_on_port_53():
    result = compiled(resolvers=resolvers_from("# docker\nnameserver 192.0.2.53\nnameserver 2001:db8::53 # v6\n"
                                               "search example\noptions ndots:0\nnameserver 192.0.2.53\n"))
    v4 = rules_of(result, NAMESPACE_CHAIN, 4)
    assert first_match(v4, "192.0.2.53", 53, "udp") == "RETURN"
    assert first_match(v4, "192.0.2.53", 53, "tcp") == "RETURN"
    assert first_match(v4, "192.0.2.53", 80) == "REJECT"
    assert first_match(v4, "8.8.8.8", 53, "udp") == "REJECT"
    assert first_match(rules_of(result, NAMESPACE_CHAIN, 6), "2001:db8::53", 53, "udp") == "RETURN"
    assert sum("--dport 53" in rule for rule in v4) == 2


def test_resolvers_from_resolv_conf():
    assert resolvers_from("nameserver 127.0.0.11\nnameserver fe80::1%eth0\nnameserver bogus\n;nameserver 1.1.1.1\n") == (
        "127.0.0.11", "fe80::1")


def test_everything_else_is_rejected_fast():
    rules = rules_of(compiled(), NAMESPACE_CHAIN)
    assert rules[-2:] == ["-A HAL9000-EGRESS-NS -p tcp -j REJECT --reject-with tcp-reset",
                          "-A HAL9000-EGRESS-NS -j REJECT --reject-with icmp-admin-prohibited"]
    assert first_match(rules, "203.0.113.1", 443) == "REJECT"
    assert first_match(rules, "160.79.104.10", 443) == "RETURN"
    assert first_match(rules, "160.79.104.10", 80) == "REJECT"
    assert first_match(rules, "127.0.0.1", 8765) == "RETURN", "the relay on loopback"


def test_an_unresolvable_name_allows_nothing_and_says_so():
    result = compiled(make_policy(allow=["nowhere.example:443"]))
    assert not any("nowhere.example" in rule for rule in rules_of(result, NAMESPACE_CHAIN))
    assert any(w.startswith("egress: nowhere.example is not allowed for now: it did not resolve") for w in result.warnings)


# ---------------------------------------------------------------- per-uid policies

def test_per_uid_chains_side_by_side():
    result = compiled(make_policy(allow=["pkgs.example:443"]),
                      {1002: make_policy(allow=["192.0.2.0/24:8080"]), 1003: make_policy("open"), 1001: make_policy()})
    assert rules_of(result, CHAIN) == [
        "-A HAL9000-EGRESS -m owner --uid-owner 1001 -g HAL9000-EGRESS-1001",
        "-A HAL9000-EGRESS -m owner --uid-owner 1002 -g HAL9000-EGRESS-1002",
        "-A HAL9000-EGRESS -m owner --uid-owner 1003 -g HAL9000-EGRESS-1003",
        "-A HAL9000-EGRESS -m owner --uid-owner 1-4294967294 -g HAL9000-EGRESS-NS",
    ]
    assert list(result.chains[4]) == [CHAIN, NAMESPACE_CHAIN, "HAL9000-EGRESS-1001", "HAL9000-EGRESS-1002", "HAL9000-EGRESS-1003"]
    ns, w1001, w1002, w1003 = (rules_of(result, c) for c in (NAMESPACE_CHAIN, "HAL9000-EGRESS-1001", "HAL9000-EGRESS-1002",
                                                             "HAL9000-EGRESS-1003"))
    assert first_match(ns, "198.51.100.23", 443) == "RETURN"
    assert first_match(w1001, "198.51.100.23", 443) == "REJECT", "a worker's own policy replaces the namespace's additions"
    assert first_match(w1002, "198.51.100.23", 443) == "REJECT"
    assert first_match(w1002, "192.0.2.10", 8080) == "RETURN"
    assert first_match(ns, "192.0.2.10", 8080) == "REJECT"
    assert first_match(w1003, "192.0.2.10", 8080) == "RETURN"
    assert first_match(w1003, "169.254.169.254", 80) == "REJECT"
    for chain in (ns, w1001, w1002):
        assert first_match(chain, "160.79.104.10", 443) == "RETURN", "the API is in every allowlist"
    assert "uid 1003: " + OPEN_WARNING in result.warnings
    assert OPEN_WARNING not in result.warnings


def test_the_same_policy_gives_byte_identical_text():
    def build(order):
        per_uid = {uid: make_policy(allow=allow) for uid, allow in order}
        answers = {host: (list(reversed(addresses)), ttl) for host, (addresses, ttl) in ANSWERS.items()}
        return compiled(make_policy(allow=["pkgs.example", "192.0.2.0/24"]), per_uid, answers)
    first = build([(1002, ["b.example", "pkgs.example:443"]), (1001, ["192.0.2.1"])])
    second = build([(1001, ["192.0.2.1"]), (1002, ["pkgs.example:443", "b.example", "PKGS.EXAMPLE:443"])])
    for version in (4, 6):
        assert restore_text(first, version) == restore_text(second, version)
    assert update_text(first, second, 4) == "" and update_text(first, second, 6) == ""


def test_a_claim_changing_one_uids_policy_rewrites_that_chain_alone():
    before = compiled(make_policy(allow=["pkgs.example:443"]), {1001: make_policy(), 1002: make_policy()})
    after = compiled(make_policy(allow=["pkgs.example:443"]), {1001: make_policy(), 1002: make_policy(allow=["192.0.2.0/24:8080"])})
    assert egress.changed_chains(before, after, 4) == ["HAL9000-EGRESS-1002"]
    assert egress.changed_chains(before, after, 6) == [], "an IPv4-only change leaves ip6tables alone"
    text = update_text(before, after, 4)
    assert text.splitlines()[:2] == ["*filter", ":HAL9000-EGRESS-1002 - [0:0]"]
    assert text.endswith("COMMIT\n")
    assert "HAL9000-EGRESS-1001" not in text and "HAL9000-EGRESS-NS" not in text and "-A HAL9000-EGRESS " not in text
    assert update_text(before, after, 6) == ""


def test_a_new_uid_adds_its_chain_and_the_dispatcher_only():
    before = compiled(make_policy(), {1001: make_policy()})
    after = compiled(make_policy(), {1001: make_policy(), 1005: make_policy(allow=["pkgs.example:443"])})
    assert egress.changed_chains(before, after, 4) == [CHAIN, "HAL9000-EGRESS-1005"]
    assert removed_chains(before, after, 4) == []
    assert removed_chains(after, before, 4) == ["HAL9000-EGRESS-1005"]
    assert egress.changed_chains(None, after, 4) == list(after.chains[4]), "the first start writes every chain"


def test_the_jump_from_output_is_checked_then_appended():
    assert egress.jump_commands(4) == (["iptables", "-w", "-C", "OUTPUT", "-j", CHAIN],
                                       ["iptables", "-w", "-A", "OUTPUT", "-j", CHAIN])
    assert egress.jump_commands(6)[1][0] == "ip6tables"


def test_apply_steps_write_everything_at_start_and_only_what_changed_later():
    first = compiled(make_policy(), {1001: make_policy()})
    steps = egress.apply_steps(None, first)
    assert [argv for argv, _stdin in steps] == [
        ["iptables-restore", "-w", "--noflush"], ["iptables", "-w", "-C", "OUTPUT", "-j", CHAIN],
        ["iptables", "-w", "-A", "OUTPUT", "-j", CHAIN],
        ["ip6tables-restore", "-w", "--noflush"], ["ip6tables", "-w", "-C", "OUTPUT", "-j", CHAIN],
        ["ip6tables", "-w", "-A", "OUTPUT", "-j", CHAIN],
    ]
    assert steps[0][1] == restore_text(first, 4) and steps[3][1] == restore_text(first, 6)
    assert egress.apply_steps(first, first) == []
    claimed = compiled(make_policy(), {1001: make_policy(allow=["192.0.2.1:22"])})
    assert egress.apply_steps(first, claimed) == [(["iptables-restore", "-w", "--noflush"], update_text(first, claimed, 4))]
    released = compiled(make_policy())
    assert [argv for argv, _stdin in egress.apply_steps(first, released)] == [
        ["iptables-restore", "-w", "--noflush"], ["iptables", "-w", "-F", "HAL9000-EGRESS-1001"],
        ["iptables", "-w", "-X", "HAL9000-EGRESS-1001"],
        ["ip6tables-restore", "-w", "--noflush"], ["ip6tables", "-w", "-F", "HAL9000-EGRESS-1001"],
        ["ip6tables", "-w", "-X", "HAL9000-EGRESS-1001"],
    ]


def test_a_long_host_names_comment_fits_the_kernels_limit():
    host = ".".join(["a" * 63] * 3) + "." + "b" * 61  # 253 characters
    result = compiled(make_policy(allow=[f"{host}:8000-8100"]), answers={host: (["192.0.2.1"], 60), **ANSWERS})
    comments = [rule.split('"')[1] for rule in rules_of(result, NAMESPACE_CHAIN) if "--comment" in rule]
    assert max(len(c) for c in comments) <= 255


def test_allowed_traffic_returns_to_output_so_the_chromadb_guard_still_applies():
    for version in (4, 6):
        result = compiled(make_policy(allow=["pkgs.example"]), {1002: make_policy("open")})
        for chain, rules in result.chains[version].items():
            assert not any("-j ACCEPT" in rule for rule in rules), chain


# ---------------------------------------------------------------- resolution

def test_resolution_keeps_addresses_ttls_and_errors():
    resolution = resolve_hosts(["pkgs.example", "gw.example", "nowhere.example", "pkgs.example"], fake_resolver())
    assert resolution["pkgs.example"] == Resolved(("198.51.100.23", "198.51.100.64"), 120, "")
    assert resolution["gw.example"].ttl == egress.DEFAULT_TTL
    assert resolution["nowhere.example"].addresses == () and "not known" in resolution["nowhere.example"].error
    assert resolution["nowhere.example"].ttl == egress.RETRY_AFTER
    tiny = resolve_hosts(["a.example"], fake_resolver({"a.example": (["192.0.2.1", "not-an-ip", "192.0.2.1"], 0)}))
    assert tiny["a.example"] == Resolved(("192.0.2.1",), egress.MIN_TTL, "")


def test_reresolve_says_when_to_rewrite_and_when_to_look_again():
    first = resolve_hosts(["pkgs.example", "api.anthropic.com"], fake_resolver())
    rewrite, next_at = reresolve(None, first, now=1000.0)
    assert rewrite and next_at == 1060.0, "the smallest TTL (api.anthropic.com's 60 s)"

    same_addresses_new_ttls = {host: r._replace(ttl=r.ttl * 2) for host, r in first.items()}
    assert reresolve(first, same_addresses_new_ttls, now=2000.0) == (False, 2120.0)

    moved = dict(first, **{"pkgs.example": Resolved(("198.51.100.128",), 120, "")})
    assert reresolve(first, moved, now=3000.0) == (True, 3060.0)

    gone = dict(first, **{"pkgs.example": Resolved((), egress.RETRY_AFTER, "timeout")})
    assert reresolve(first, gone, now=0.0) == (True, egress.RETRY_AFTER)
    assert reresolve({}, {}, now=5.0) == (False, 5.0 + egress.DEFAULT_TTL)


def test_a_new_resolution_rewrites_only_the_chains_whose_rules_change():
    namespace = make_policy(allow=["pkgs.example:443"])
    per_uid = {1002: make_policy(allow=["192.0.2.0/24"])}
    hosts = egress.hosts_of([namespace, *per_uid.values()])
    before = compile_policies(namespace, per_uid, resolve_hosts(hosts, fake_resolver()), RESOLVERS)
    moved = dict(ANSWERS, **{"pkgs.example": (["198.51.100.192"], 120)})
    after = compile_policies(namespace, per_uid, resolve_hosts(hosts, fake_resolver(moved)), RESOLVERS)
    assert egress.changed_chains(before, after, 4) == [NAMESPACE_CHAIN]
    assert "198.51.100.192" in update_text(before, after, 4)


def test_the_system_resolver_reads_the_hosts_file_and_has_no_ttl():
    addresses, ttl = egress.system_resolver("localhost")
    assert "127.0.0.1" in addresses and ttl is None
