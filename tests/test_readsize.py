"""Adaptive read size: small reads while messages are small, read_buffer_cap for bursts."""

from __future__ import annotations

import socket
import threading
from types import SimpleNamespace
from typing import Any

import gnetpy
from conftest import connect, recv_exact
from gnetpy.readsize import SHRINK_AFTER, SMALL_READ, adapt


def conn(read_size: int) -> Any:
    return SimpleNamespace(_read_size=read_size, _small_reads=0)


def test_small_read_is_the_largest_small_object_payload() -> None:
    assert SMALL_READ == 479  # CPython 3.11: 512-byte blocks minus the bytes header


def test_grows_on_a_full_small_read_and_shrinks_after_small_reads() -> None:
    c = conn(SMALL_READ)
    adapt(c, SMALL_READ, SMALL_READ, 65536)
    assert c._read_size == 65536
    for _ in range(SHRINK_AFTER - 1):
        adapt(c, 100, SMALL_READ, 65536)
        assert c._read_size == 65536
    adapt(c, 100, SMALL_READ, 65536)
    assert c._read_size == SMALL_READ


def test_cap_below_small_read_never_changes() -> None:
    c = conn(7)
    adapt(c, 7, 7, 7)
    assert c._read_size == 7


class Sizes(gnetpy.EventHandler):
    """Echo that records how many bytes each on_traffic saw (it always consumes all)."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.lock = threading.Lock()

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        data = c.next()
        with self.lock:
            self.sizes.append(len(data))
        c.write(data)


def test_reads_never_exceed_a_small_read_buffer_cap(serve: Any) -> None:
    handler = Sizes()
    engine = serve(handler, read_buffer_cap=7)
    with connect(engine.addrs[0]) as s:
        s.sendall(b"x" * 1000)
        assert recv_exact(s, 1000) == b"x" * 1000
    assert max(handler.sizes) <= 7 and sum(handler.sizes) == 1000


def test_a_burst_switches_to_large_reads_and_small_messages_switch_back(serve: Any) -> None:
    handler = Sizes()
    engine = serve(handler)
    with connect(engine.addrs[0]) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"a" * 200_000)  # a burst: the first read fills 479 bytes, the next ones are large
        assert recv_exact(s, 200_000) == b"a" * 200_000
        assert handler.sizes[0] == SMALL_READ
        assert max(handler.sizes) > SMALL_READ
        burst_reads = len(handler.sizes)
        for _ in range(SHRINK_AFTER + 3):  # small messages, one read each
            s.sendall(b"b" * 600)  # larger than SMALL_READ: one read while in large mode
            assert recv_exact(s, 600) == b"b" * 600
            s.sendall(b"c" * 50)
            assert recv_exact(s, 50) == b"c" * 50
        after_burst = handler.sizes[burst_reads:]
        # In large mode the 600-byte messages arrive whole; after SHRINK_AFTER small
        # reads the connection is back to small reads and the next one is split.
        assert after_burst[0] == 600
        assert SMALL_READ in after_burst[2 * SHRINK_AFTER:]
