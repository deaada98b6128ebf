"""closing.py's GracefulClose on a fake loop: a real StreamConn over a unix socket pair, no EventLoop, no poller.

The fake loop records what the component asks of its loop; its timers run only
when a test fires them.  tests/integration/test_closes.py has the end-to-end scenarios.
"""

from __future__ import annotations

import logging
import socket
from typing import Any, Callable

import pytest

from conftest import WAIT
from gnetpy.buffer import OutboundBuffer
from gnetpy.closing import LINGER_CHECK_FIRST, LINGER_CHECK_MAX, GracefulClose
from gnetpy.conn import StreamConn
from gnetpy.poller import IN, OUT
from gnetpy.state import CLOSED, FLUSHING, LINGERING
from gnetpy.tally import Tally


class Timer:
    def __init__(self, delay: float, fn: Callable[[], Any]) -> None:
        self.delay, self.fn, self.cancelled = delay, fn, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    index = 0

    def __init__(self, edge_triggered: bool = False) -> None:
        self.dirty: list[StreamConn] = []  # where a stream puts itself when written to (conn.py)
        self.tally = Tally()  # where it counts the bytes it reads and writes
        self.edge_triggered = edge_triggered
        self.calls: list[tuple[Any, ...]] = []
        self.timers: list[Timer] = []
        self.routed: dict[int, Callable[[int], Any]] = {}
        self.closer: Any = None
        self.logger = logging.getLogger("gnetpy.test_closing")

    def call_later(self, delay: float, fn: Callable[[], Any]) -> Timer:
        self.timers.append(Timer(delay, fn))
        return self.timers[-1]

    def route(self, fd: int, fn: Callable[[int], Any]) -> None:
        self.calls.append(("route", fd))
        self.routed[fd] = fn

    def set_interest(self, fd: int, events: int) -> None:
        self.calls.append(("set_interest", fd, events))

    def write_again(self, c: StreamConn) -> None:
        self.calls.append(("write_again", c))

    def flush_conn(self, c: StreamConn) -> None:
        self.calls.append(("flush_conn", c))

    def finish_close(self, c: StreamConn, err: BaseException | None) -> None:
        self.calls.append(("finish_close", c, err))
        c._state = CLOSED
        self.closer.forget(c._fd)  # as the real loop's finish_close does

    def close_conn(self, c: StreamConn, err: BaseException | None, graceful: bool) -> None:
        self.calls.append(("close_conn", c, err, graceful))
        c._state = CLOSED
        self.closer.forget(c._fd)

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [call for call in self.calls if call[0] == name]


class Setup:
    def __init__(self, edge_triggered: bool = False, close_timeout: float = 30.0) -> None:
        self.loop = FakeLoop(edge_triggered)
        self.closer = self.loop.closer = GracefulClose(self.loop, close_timeout)  # type: ignore[arg-type]
        self.sock, self.peer = socket.socketpair()
        self.sock.setblocking(False)
        self.peer.settimeout(WAIT)
        self.c = StreamConn(self.loop, self.sock, "peer", 512)  # type: ignore[arg-type]

    def queue(self, n: int) -> None:
        self.c._out = OutboundBuffer(65536)
        self.c._out.append_data(b"q" * n)

    def event(self, ev: int) -> None:
        self.loop.routed[self.c._fd](ev)

    def close(self) -> None:
        self.closer.stop()
        self.sock.close()
        self.peer.close()


@pytest.fixture
def setup(request: pytest.FixtureRequest) -> Callable[..., Setup]:
    def make(**kwargs: Any) -> Setup:
        made = Setup(**kwargs)
        request.addfinalizer(made.close)
        return made

    return make


@pytest.mark.parametrize(("err", "interest"), [(None, IN | OUT), (EOFError(), OUT)], ids=["local", "peers-eof"])
def test_flushing_routes_the_fd_here_and_reads_too_unless_the_peer_sent_eof(setup: Any, err: Any,
                                                                            interest: int) -> None:
    s = setup()
    s.queue(100)
    s.closer.begin(s.c, FLUSHING, err)
    assert s.c._state == FLUSHING and s.closer.conns == {s.c._fd: s.c} and len(s.closer) == 1
    assert s.loop.calls == [("route", s.c._fd), ("set_interest", s.c._fd, interest)]
    assert len(s.loop.timers) == 1 and s.loop.timers[0].delay == 30.0  # the close_timeout sweep


def test_flushing_edge_triggered_asks_for_a_write_next_iteration_not_an_interest(setup: Any) -> None:
    s = setup(edge_triggered=True)
    s.queue(100)
    s.closer.begin(s.c, FLUSHING, None)
    assert s.loop.named("write_again") == [("write_again", s.c)] and not s.loop.named("set_interest")
    s.event(IN)  # edge-triggered: any event of a flushing connection flushes
    assert s.loop.named("flush_conn") == [("flush_conn", s.c)]


def test_lingering_half_closes_so_the_peer_reads_eof_and_finishes_once_all_is_read(setup: Any) -> None:
    s = setup()
    s.sock.send(b"reply")
    s.closer.begin(s.c, LINGERING, None)
    assert s.c._state == LINGERING
    assert s.loop.named("set_interest") == [("set_interest", s.c._fd, IN)]
    assert s.peer.recv(100) == b"reply" and s.peer.recv(100) == b""  # SHUT_WR: the end of stream
    assert not s.loop.named("finish_close")  # the peer had not read it when the check ran
    check = s.loop.timers[-1]
    assert check.delay == LINGER_CHECK_FIRST
    check.fn()  # the peer has everything now (TIOCOUTQ says 0)
    assert s.loop.named("finish_close") == [("finish_close", s.c, None)]


def test_the_linger_check_backs_off_to_its_cap_while_the_peer_has_not_read(setup: Any) -> None:
    s = setup()
    s.sock.send(b"unread")
    s.closer.begin(s.c, LINGERING, None)
    delays = []
    for _ in range(12):
        check = s.loop.timers[-1]
        delays.append(check.delay)
        check.fn()
    assert delays[:3] == [LINGER_CHECK_FIRST, 2 * LINGER_CHECK_FIRST, 4 * LINGER_CHECK_FIRST]
    assert delays[-1] == LINGER_CHECK_MAX and max(delays) == LINGER_CHECK_MAX
    assert not s.loop.named("finish_close")


def test_a_linger_whose_shutdown_fails_finishes_at_once(setup: Any) -> None:
    s = setup()
    with socket.socket() as unconnected:  # shutdown: ENOTCONN, as for a peer already gone
        c = StreamConn(s.loop, unconnected, "gone", 512)
        s.closer.begin(c, LINGERING, None)
        assert s.loop.named("finish_close") == [("finish_close", c, None)]
        assert c._fd not in s.closer.conns and not s.loop.named("set_interest")


def test_flushed_lingers_after_a_local_close(setup: Any) -> None:
    s = setup()
    s.queue(10)
    s.closer.begin(s.c, FLUSHING, None)
    s.c._out.clear_all()
    s.sock.send(b"r")  # unread by the peer: the linger check cannot finish it at once
    s.closer.flushed(s.c)
    assert s.c._state == LINGERING and s.peer.recv(10) == b"r" and s.peer.recv(10) == b""
    assert s.loop.named("set_interest")[-1] == ("set_interest", s.c._fd, IN)


def test_flushed_after_the_peers_eof_closes_without_lingering(setup: Any) -> None:
    s = setup()
    s.queue(10)
    eof = EOFError("peer closed")
    s.closer.begin(s.c, FLUSHING, eof)
    s.sock.send(b"unread")  # lingering could not finish at once: it must not linger at all
    s.closer.flushed(s.c)
    assert s.loop.named("finish_close") == [("finish_close", s.c, eof)] and not s.closer.conns
    assert s.loop.named("set_interest") == [("set_interest", s.c._fd, OUT)]  # never waited for IN alone


def test_input_is_read_and_dropped_while_closing(setup: Any) -> None:
    s = setup()
    s.queue(10)
    s.closer.begin(s.c, FLUSHING, None)
    s.peer.sendall(b"x" * 70000)
    s.event(IN)
    assert s.c.inbound_buffered == 0 and s.c._state == FLUSHING
    with pytest.raises(BlockingIOError):
        s.sock.recv(1)  # all of it was read (and dropped)
    assert not s.loop.named("flush_conn")  # IN alone does not flush (level-triggered)
    s.event(OUT)
    assert s.loop.named("flush_conn") == [("flush_conn", s.c)]


def test_the_peers_eof_while_flushing_keeps_flushing_for_out_only(setup: Any) -> None:
    s = setup()
    s.queue(10)
    s.closer.begin(s.c, FLUSHING, None)
    s.peer.shutdown(socket.SHUT_WR)
    s.event(IN | OUT)
    assert s.loop.named("set_interest")[-1] == ("set_interest", s.c._fd, OUT)
    assert s.loop.named("flush_conn") == [("flush_conn", s.c)] and s.c._state == FLUSHING


def test_the_peers_eof_while_lingering_finishes_the_close(setup: Any) -> None:
    s = setup()
    s.sock.send(b"unread")  # so the linger check cannot finish it first
    s.closer.begin(s.c, LINGERING, None)
    s.peer.shutdown(socket.SHUT_WR)
    s.event(IN)
    assert s.loop.named("finish_close") == [("finish_close", s.c, None)] and not s.closer.conns


def test_a_read_error_while_closing_closes_at_once(setup: Any) -> None:
    s = setup()
    s.sock.send(b"unread")
    s.closer.begin(s.c, LINGERING, None)
    s.peer.close()  # with our bytes unread: a unix peer's close resets us
    s.event(IN)
    [(_, c, err, graceful)] = s.loop.named("close_conn")
    assert c is s.c and isinstance(err, ConnectionResetError) and graceful is False


@pytest.mark.parametrize(("state", "what"), [(FLUSHING, "1234 bytes unsent"),
                                             (LINGERING, "the peer had not acknowledged everything sent")])
def test_close_timeout_drops_a_closing_conn_naming_the_option_and_what_is_left(setup: Any, caplog: Any, state: Any,
                                                                                 what: str) -> None:
    s = setup(close_timeout=0)
    if state == FLUSHING:
        s.queue(1234)
    else:
        s.sock.send(b"unread")  # so lingering does not finish at once
    s.closer.begin(s.c, state, None)
    with caplog.at_level(logging.INFO, "gnetpy.test_closing"):
        s.loop.timers[0].fn()
    [(_, c, err, graceful)] = s.loop.named("close_conn")
    assert c is s.c and graceful is False and isinstance(err, TimeoutError)
    assert str(err) == f"close_timeout (0s) expired: {what}"
    assert what in caplog.text and not s.closer.conns


def test_close_timeout_not_yet_due_drops_nothing_and_sweeps_again_until_stopped(setup: Any) -> None:
    s = setup(close_timeout=30)
    s.queue(10)
    s.closer.begin(s.c, FLUSHING, None)
    s.loop.timers[0].fn()
    assert not s.loop.named("close_conn") and s.c._state == FLUSHING
    assert len(s.loop.timers) == 2 and 29 < s.loop.timers[1].delay <= 30
    s.closer.stop()
    assert s.loop.timers[1].cancelled


def test_forget_drops_the_conn_and_its_deadline(setup: Any) -> None:
    s = setup(close_timeout=0)
    s.queue(10)
    s.closer.begin(s.c, FLUSHING, None)
    assert s.closer.forget(s.c._fd) is True and s.closer.forget(s.c._fd) is False
    assert not s.closer.conns
    s.loop.timers[0].fn()  # its deadline went with it: nothing to expire
    assert not s.loop.named("close_conn")
