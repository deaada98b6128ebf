"""udp.py: the send queue of a datagram socket -- whole datagrams or none -- on a fake socket and loop.

On loopback the kernel rarely refuses a UDP send (it drops instead), so the
queue is driven here by a socket that answers EAGAIN on demand.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

import gnetpy
from gnetpy.eventloop import EventLoop
from gnetpy.udp import DatagramSocket


class FullSocket:
    """Takes datagrams until ``room`` runs out, then answers EAGAIN."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.sent: list[tuple[bytes, Any]] = []

    def fileno(self) -> int:
        return 99

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 9)

    def sendto(self, data: Any, peer: Any) -> int:
        if self.room <= 0:
            raise BlockingIOError
        self.room -= 1
        self.sent.append((bytes(data), peer))
        return len(data)


class RecordingPoller:
    """Stands in for the loop's poller: records each interest change."""

    def __init__(self) -> None:
        self.interest: list[int] = []

    def modify(self, fd: int, events: int) -> None:
        self.interest.append(events)


@pytest.fixture
def datagram_socket() -> Iterator[Callable[[int, int], tuple[DatagramSocket, FullSocket, list[int]]]]:
    """A DatagramSocket on a real event loop that never runs (its poller swapped for a recorder).

    A real EventLoop, not a stand-in: in the compiled build udp.py checks the loop's type.
    """
    loops: list[tuple[EventLoop, Any]] = []

    def make(room: int, max_queued: int) -> tuple[DatagramSocket, FullSocket, list[int]]:
        opts = gnetpy.Options(max_udp_queued=max_queued, udp_session_timeout=0)
        loop = EventLoop(0, opts, gnetpy.EventHandler(), lambda *_: None)
        loops.append((loop, loop._poller))
        recorder = RecordingPoller()
        loop._poller = recorder  # type: ignore[assignment]
        sock = FullSocket(room)
        return DatagramSocket(loop, sock, opts), sock, recorder.interest  # type: ignore[arg-type]

    yield make
    for loop, poller in loops:
        poller.close()
        loop._waker.close()


def test_a_refused_send_queues_the_whole_datagram_and_asks_for_writability(datagram_socket: Any) -> None:
    udp, sock, interest = datagram_socket(room=2, max_queued=10_000)
    for i in range(5):
        assert udp.send(bytes([i]) * 1000, ("127.0.0.1", 1)) == 1000
    assert [d[0] for d, _ in sock.sent] == [0, 1]
    assert udp._queued == 3000 and udp.dropped == 0 and interest == [gnetpy.poller.IN | gnetpy.poller.OUT]
    sock.room = 10
    udp._flush()
    assert [d[0] for d, _ in sock.sent] == [0, 1, 2, 3, 4]  # in order, each whole
    assert all(len(d) == 1000 for d, _ in sock.sent)
    assert udp._queued == 0 and interest[-1] == gnetpy.poller.IN  # writability no longer wanted


def test_beyond_max_udp_queued_datagrams_are_dropped_and_counted_never_split(datagram_socket: Any) -> None:
    udp, sock, _ = datagram_socket(room=0, max_queued=2500)
    results = [udp.send(b"x" * 1000, ("127.0.0.1", 1)) for _ in range(5)]
    assert results == [1000, 1000, 0, 0, 0]
    assert udp._queued == 2000 and udp.dropped == 3
    sock.room = 10
    udp._flush()
    assert [len(d) for d, _ in sock.sent] == [1000, 1000]


def test_while_something_is_queued_new_datagrams_wait_their_turn(datagram_socket: Any) -> None:
    udp, sock, _ = datagram_socket(room=0, max_queued=10_000)
    udp.send(b"first", ("127.0.0.1", 1))
    sock.room = 10
    udp.send(b"second", ("127.0.0.1", 1))  # the socket has room now, but "first" goes first
    assert sock.sent == []
    udp._flush()
    assert [d for d, _ in sock.sent] == [b"first", b"second"]
