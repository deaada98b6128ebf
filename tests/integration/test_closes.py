"""The graceful close: what was written reaches the peer, whatever it sent meanwhile -- within close_timeout.

A socket closed with unread input sends a TCP reset, and a reset destroys
whatever the peer has not received yet: a pipelining client that sent more
than the server read saw ECONNRESET after about 2.5 of 4 MiB.  Closing
connections now flush, half-close, read and drop input, and close once the
peer has everything (state.py).  Each test below failed before that.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

import gnetpy
from conftest import WAIT, Recorder, connect, open_fds, recv_until_eof, wait_for
from gnetpy.state import FLUSHING

REPLY = 4 << 20


class BigReplyThenClose(Recorder):
    """On the first byte: queue 4 MiB, then close the way the test says (or leave it to engine.stop())."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        if c.context:
            return None  # later bytes stay unread in our buffer
        c.context = True
        c.next(1)
        c.write(b"y" * REPLY)
        if self.how == "action":
            return gnetpy.Action.CLOSE
        if self.how == "close":
            c.close()
        return None


def read_all(s: socket.socket) -> tuple[int, BaseException | None]:
    """Bytes read until EOF, and the error that ended the read instead of EOF, if any."""
    got = 0
    try:
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                return got, None
            got += len(chunk)
    except OSError as exc:
        return got, exc


@pytest.mark.parametrize("how", ["action", "close", "stop"])
@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_a_local_close_delivers_everything_to_a_peer_that_sent_more(serve: Any, tmp_path: Any, how: str,
                                                                  family: str) -> None:
    handler = BigReplyThenClose(how)
    addr = "tcp://127.0.0.1:0" if family == "tcp" else f"unix://{tmp_path}/c.sock"
    engine = serve(handler, addr)
    stopper = threading.Thread(target=engine.stop, args=(WAIT,))
    with connect(engine.addrs[0]) as s:
        s.sendall(b"G")
        time.sleep(0.05)
        if how == "stop":
            stopper.start()
            time.sleep(0.1)
        s.sendall(b"E" * 10)  # arrives while the reply is still queued: never read by the handler
        time.sleep(0.3)
        got, err = read_all(s)
    if how == "stop":
        stopper.join(WAIT)
    assert (got, err) == (REPLY, None)
    wait_for(lambda: handler.closed)
    assert handler.closed[0][1] is None


def test_a_peer_that_reads_everything_but_never_closes_is_let_go_at_once(serve: Any) -> None:
    """Lingering ends when the peer has acknowledged everything -- not at close_timeout."""
    handler = BigReplyThenClose("action")
    engine = serve(handler, close_timeout=30)
    with connect(engine.addrs[0]) as s:
        s.sendall(b"G")
        got = 0
        while got < REPLY:
            got += len(s.recv(1 << 20))
        started = time.monotonic()
        wait_for(lambda: handler.closed, timeout=5)  # the client still holds its socket open
        assert time.monotonic() - started < 2
        assert s.recv(10) == b""  # and it reads a clean end of stream
    assert handler.closed[0][1] is None


def test_input_pipelined_behind_a_close_is_dropped_while_lingering_not_reset(serve: Any) -> None:
    """Input the handler never read is drained by the lingering close: the peer reads an end of stream, no reset.

    The input is sent before the close, in one send with the request, so it is in
    our receive queue when the linger begins.  (Input the peer sends *after* it has
    acknowledged our FIN may meet a reset: lingering ends at that acknowledgement,
    by design -- the peer's kernel has everything then -- and on loopback that is
    microseconds after the FIN, so a test cannot send in between.)
    """

    class CloseAtOnce(Recorder):
        def on_traffic(self, c: gnetpy.Conn) -> Any:
            c.write(b"bye")
            return gnetpy.Action.CLOSE  # the rest of the input stays unread

    handler = CloseAtOnce()
    engine = serve(handler)
    with connect(engine.addrs[0]) as s:
        s.sendall(b"hello" + b"x" * 50_000)  # well within the receive buffer: the send completes at once
        assert recv_until_eof(s) == b"bye"  # a reset would raise ConnectionResetError here
    wait_for(lambda: handler.closed)
    assert handler.closed[0][1] is None


def test_close_timeout_drops_a_closing_connection_whose_peer_never_reads(serve: Any) -> None:
    class Flood(Recorder):
        def on_traffic(self, c: gnetpy.Conn) -> Any:
            c.next()
            c.write(b"z" * (50 << 20))
            return gnetpy.Action.CLOSE

    handler = Flood()
    before = open_fds()
    engine = serve(handler, close_timeout=1)
    s = connect(engine.addrs[0])
    try:
        s.sendall(b"go")
        started = time.monotonic()
        wait_for(lambda: handler.closed, timeout=5)
        elapsed = time.monotonic() - started
        err = handler.closed[0][1]
        assert isinstance(err, TimeoutError) and "close_timeout" in str(err) and "unsent" in str(err)
        assert 0.9 <= elapsed < 3.5
        assert engine.count_connections() == 0
    finally:
        s.close()
    engine.stop()
    assert open_fds() <= before


def test_many_closing_connections_share_one_deadline_timer(serve: Any) -> None:
    """close_timeout costs no timer per connection: the loop's timer heap stays small while 200 close.

    Every connection must still be FLUSHING when the timers are counted: a lingering
    one polls the kernel for the peer's acknowledgement on a timer of its own
    (closing.py), which is not what this test is about.  Small socket buffers on both
    sides keep most of the 4 MiB in our queue (with the kernel's autotuning a client's
    receive buffer here can grow to 32 MiB, and some connections finished flushing).
    """
    class Flood(Recorder):
        def on_traffic(self, c: gnetpy.Conn) -> Any:
            c.next()
            c.write(b"z" * (4 << 20))
            return gnetpy.Action.CLOSE

    def small_window_client(addr: Any) -> socket.socket:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)  # before connect: no autotuning
        s.settimeout(WAIT)
        s.connect(addr)
        return s

    handler = Flood()
    engine = serve(handler, close_timeout=30, socket_send_buffer=64 << 10)
    clients = [small_window_client(engine.addrs[0]) for _ in range(200)]
    try:
        for s in clients:
            s.sendall(b"go")
        loop = engine.event_loops[0]
        closing = loop._closer.conns  # the loop's close protocol (closing.py)
        wait_for(lambda: loop.count_connections() == 200 and len(closing) == 200)
        assert all(c._state == FLUSHING for c in closing.values())
        assert len(loop._timers) <= 3  # the close-deadline sweep (and nothing per connection)
    finally:
        for s in clients:
            s.close()
