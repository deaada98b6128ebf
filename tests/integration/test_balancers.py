"""Connections spread over loops as each balancer promises."""

from __future__ import annotations

import collections
import socket
from typing import Any

import gnetpy
from conftest import WAIT, Recorder, wait_for


def loop_of(handler: Recorder, clients: list[socket.socket]) -> list[int]:
    """The loop serving each client, in the clients' order."""
    wait_for(lambda: {s.getsockname()[1] for s in clients} <= {c.remote_addr[1] for c in handler.opened})
    by_port = {c.remote_addr[1]: c.event_loop.index for c in handler.opened}
    return [by_port[s.getsockname()[1]] for s in clients]


def test_round_robin_is_even(serve: Any) -> None:
    handler = Recorder()
    engine = serve(handler, num_event_loop=4, lb=gnetpy.LoadBalancing.ROUND_ROBIN, processes=False)
    clients = [socket.create_connection(engine.addrs[0], timeout=WAIT) for _ in range(12)]
    try:
        indexes = loop_of(handler, clients)
        assert collections.Counter(indexes) == {0: 3, 1: 3, 2: 3, 3: 3}
        assert indexes[:4] == [0, 1, 2, 3]  # in turn, from loop 0
    finally:
        for s in clients:
            s.close()


def test_least_connections_fills_the_emptiest_loop(serve: Any) -> None:
    handler = Recorder()
    engine = serve(handler, num_event_loop=4, lb="least-connections", processes=False)
    clients = [socket.create_connection(engine.addrs[0], timeout=WAIT) for _ in range(8)]
    try:
        indexes = loop_of(handler, clients)
        assert collections.Counter(indexes) == {0: 2, 1: 2, 2: 2, 3: 2}
        # Empty loop 2: close both of its connections.
        for s, index in zip(clients, indexes):
            if index == 2:
                s.close()
        wait_for(lambda: engine.event_loops[2].count_connections() == 0)
        more = [socket.create_connection(engine.addrs[0], timeout=WAIT) for _ in range(2)]
        assert loop_of(handler, more) == [2, 2]
        clients += more
        assert [loop.count_connections() for loop in engine.event_loops] == [2, 2, 2, 2]
    finally:
        for s in clients:
            s.close()


def test_source_addr_hash_is_stable_per_address(serve: Any) -> None:
    handler = Recorder()
    engine = serve(handler, num_event_loop=4, lb=gnetpy.LoadBalancing.SOURCE_ADDR_HASH, processes=False)
    port = engine.addrs[0][1]
    clients = []
    sources = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"]
    try:
        for source in sources * 3:  # three connections from each source address
            s = socket.socket()
            s.settimeout(WAIT)
            s.bind((source, 0))
            s.connect(("127.0.0.1", port))
            clients.append(s)
        wait_for(lambda: len(handler.opened) == len(clients))
        by_source = collections.defaultdict(set)
        for c in handler.opened:
            by_source[c.remote_addr[0]].add(c.event_loop.index)
        assert all(len(loops) == 1 for loops in by_source.values()), by_source
        assert len({next(iter(loops)) for loops in by_source.values()}) > 1  # and they do spread
    finally:
        for s in clients:
            s.close()


def test_reuse_port_loops_accept_for_themselves(serve: Any) -> None:
    handler = Recorder()
    engine = serve(handler, num_event_loop=4, reuse_port=True, processes=False)
    clients = [socket.create_connection(engine.addrs[0], timeout=WAIT) for _ in range(64)]
    try:
        indexes = loop_of(handler, clients)
        # The kernel hashes connections over the four listeners: all get some.
        assert set(indexes) == {0, 1, 2, 3}
        assert not any(t.name == "gnetpy-main-reactor" for t in __import__("threading").enumerate())
    finally:
        for s in clients:
            s.close()
