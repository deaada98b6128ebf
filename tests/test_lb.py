"""lb.py: the three load balancers and ``LoadBalancing.parse``, against fake event loops.

A balancer needs nothing from a loop but ``count_connections()``, so the
loops here are small fakes whose counts the tests set directly.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import zlib

import pytest

from gnetpy import LoadBalancing
from gnetpy.lb import LeastConnections, RoundRobin, SourceAddrHash, new_balancer


class FakeLoop:
    def __init__(self, index: int, connections: int = 0) -> None:
        self.index = index
        self.connections = connections

    def count_connections(self) -> int:
        return self.connections

    def __repr__(self) -> str:
        return f"<FakeLoop {self.index} conns={self.connections}>"


def loops(n: int, counts: list[int] | None = None) -> list[FakeLoop]:
    counts = counts or [0] * n
    return [FakeLoop(i, counts[i]) for i in range(n)]


def picks(balancer: object, addrs: list[object]) -> list[int]:
    return [balancer.next(a).index for a in addrs]  # type: ignore[attr-defined]


# -- round robin -----------------------------------------------------------


def test_round_robin_visits_each_loop_in_order_and_wraps() -> None:
    rr = RoundRobin(loops(3))
    assert picks(rr, [("10.0.0.1", p) for p in range(7)]) == [0, 1, 2, 0, 1, 2, 0]


def test_round_robin_ignores_the_remote_address_and_the_counts() -> None:
    rr = RoundRobin(loops(2, [100, 0]))
    assert picks(rr, [("10.0.0.1", 1)] * 4) == [0, 1, 0, 1]


def test_round_robin_with_one_loop_always_picks_it() -> None:
    rr = RoundRobin(loops(1))
    assert picks(rr, [None] * 5) == [0] * 5


# -- least connections -----------------------------------------------------


def test_least_connections_picks_the_minimum() -> None:
    ls = loops(4, [5, 3, 9, 4])
    assert LeastConnections(ls).next(None).index == 1


def test_least_connections_ties_go_to_the_lowest_index() -> None:
    assert LeastConnections(loops(4, [7, 2, 2, 2])).next(None).index == 1
    assert LeastConnections(loops(3)).next(None).index == 0


def test_least_connections_follows_the_counts_as_they_change() -> None:
    ls = loops(3)
    lc = LeastConnections(ls)
    chosen = []
    for _ in range(9):
        loop = lc.next(("10.0.0.1", 1))
        loop.connections += 1  # what the accepting side does
        chosen.append(loop.index)
    assert chosen == [0, 1, 2] * 3
    ls[2].connections = 0
    assert lc.next(None).index == 2


# -- source address hash ---------------------------------------------------


def test_source_hash_is_stable_for_a_host_whatever_the_port() -> None:
    sh = SourceAddrHash(loops(4))
    for host in ("10.0.0.1", "192.168.7.33", "::1", "2001:db8::5"):
        assert len(set(picks(sh, [(host, port) for port in (1, 1024, 40000, 65535)]))) == 1


def test_source_hash_accepts_ipv6_four_tuples() -> None:
    sh = SourceAddrHash(loops(4))
    assert sh.next(("2001:db8::5", 80, 0, 0)) is sh.next(("2001:db8::5", 9999))


def test_source_hash_spreads_different_hosts() -> None:
    sh = SourceAddrHash(loops(4))
    counts = collections.Counter(picks(sh, [(f"10.0.{i // 256}.{i % 256}", 5000) for i in range(400)]))
    assert set(counts) == {0, 1, 2, 3}
    assert min(counts.values()) >= 50  # 100 each if perfectly even


def test_source_hash_handles_unix_peers() -> None:
    sh = SourceAddrHash(loops(3))
    # An unnamed unix peer is '' (str) and an abstract one bytes: both must work, stably.
    assert sh.next("") is sh.next("")
    assert sh.next(b"\0peer") is sh.next(b"\0peer")
    assert sh.next(b"") is sh.next("")
    assert sh.next(None) is sh.next("")


def test_source_hash_treats_str_and_bytes_hosts_alike() -> None:
    sh = SourceAddrHash(loops(5))
    assert sh.next(("10.1.2.3", 1)) is sh.next((b"10.1.2.3", 2))


def test_source_hash_is_the_same_in_every_process() -> None:
    """Unlike ``hash()``, the choice must not depend on the per-process hash seed."""
    hosts = [f"172.16.{i}.{i * 7 % 256}" for i in range(40)]
    script = (
        "import sys; from gnetpy.lb import SourceAddrHash\n"
        "class L:\n    def __init__(self, i): self.i = i\n"
        "sh = SourceAddrHash([L(i) for i in range(7)])\n"
        "print(','.join(str(sh.next((h, 1)).i) for h in sys.argv[1:]))\n"
    )
    results = set()
    for seed in ("1", "2", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", script, *hosts], env=env, capture_output=True,
                             text=True, timeout=30, check=True)
        results.add(out.stdout.strip())
    assert len(results) == 1
    here = picks(SourceAddrHash(loops(7)), [(h, 1) for h in hosts])
    assert results.pop() == ",".join(map(str, here))


def test_source_hash_uses_crc32_of_the_host() -> None:
    # The documented function, so that operators can predict placement.
    sh = SourceAddrHash(loops(6))
    for host in ("10.0.0.1", "10.0.0.2", "fe80::1"):
        assert sh.next((host, 1)).index == zlib.crc32(host.encode()) % 6


# -- factory and parsing ---------------------------------------------------


@pytest.mark.parametrize("kind, cls", [(LoadBalancing.ROUND_ROBIN, RoundRobin),
                                       (LoadBalancing.LEAST_CONNECTIONS, LeastConnections),
                                       (LoadBalancing.SOURCE_ADDR_HASH, SourceAddrHash)])
def test_new_balancer_builds_the_named_kind(kind: LoadBalancing, cls: type) -> None:
    assert type(new_balancer(kind, loops(2))) is cls


def test_new_balancer_needs_a_loop() -> None:
    with pytest.raises(ValueError, match="at least one event loop"):
        new_balancer(LoadBalancing.ROUND_ROBIN, [])


@pytest.mark.parametrize("member", list(LoadBalancing))
def test_parse_accepts_members_values_and_names(member: LoadBalancing) -> None:
    assert LoadBalancing.parse(member) is member
    assert LoadBalancing.parse(member.value) is member
    assert LoadBalancing.parse(member.name) is member
    assert LoadBalancing.parse(member.name.lower()) is member


def test_parse_spellings() -> None:
    assert LoadBalancing.parse("least-connections") is LoadBalancing.LEAST_CONNECTIONS
    assert LoadBalancing.parse("LEAST_CONNECTIONS") is LoadBalancing.LEAST_CONNECTIONS
    assert LoadBalancing.parse(" Source-Addr-Hash ") is LoadBalancing.SOURCE_ADDR_HASH
    assert LoadBalancing.parse("round_robin") is LoadBalancing.ROUND_ROBIN


@pytest.mark.parametrize("junk", ["random", "", "least", "roundrobin", 0, 1, None, b"round-robin"])
def test_parse_rejects_junk_naming_accepted_values(junk: object) -> None:
    with pytest.raises(ValueError) as info:
        LoadBalancing.parse(junk)
    message = str(info.value)
    assert message.startswith("lb: ")
    assert repr(junk) in message
    for member in LoadBalancing:
        assert member.name in message and repr(member.value) in message
