"""Conn: the inbound and outbound API as a handler sees it, on real connections."""

from __future__ import annotations

import os
import queue
import socket
import struct
import threading
import time
from typing import Any, Callable

import pytest

import gnetpy
from conftest import WAIT, connect, recv_exact, recv_until_eof, wait_for


class Probe(gnetpy.EventHandler):
    """Runs ``self.step(c)`` in on_traffic and queues its result (or exception)."""

    def __init__(self, step: Callable[[gnetpy.Conn], Any]) -> None:
        self.step = step
        self.results: queue.Queue[Any] = queue.Queue()
        self.conns: list[gnetpy.Conn] = []
        self.closed: list[Any] = []

    def on_open(self, c: gnetpy.Conn) -> Any:
        self.conns.append(c)

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        try:
            self.results.put(self.step(c))
        except Exception as exc:  # recorded for the test to inspect
            self.results.put(exc)

    def on_close(self, c: gnetpy.Conn, err: Any) -> Any:
        self.closed.append(err)

    def result(self) -> Any:
        return self.results.get(timeout=WAIT)


def send(engine: gnetpy.Engine, *pieces: bytes, pause: float = 0.05) -> socket.socket:
    s = connect(engine.addrs[0])
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for piece in pieces:
        s.sendall(piece)
        time.sleep(pause)  # each piece its own read on the server
    return s


def test_next_peek_discard_read(serve: Any) -> None:
    def step(c: gnetpy.Conn) -> Any:
        out = [c.inbound_buffered, bytes(c.peek(3)), bytes(c.peek()), c.next(2), c.inbound_buffered]
        out += [c.discard(1), c.read(2), c.read(), c.read(), c.inbound_buffered, c.discard(), c.next()]
        return out

    engine = serve(Probe(step))
    with send(engine, b"abcdefgh"):
        assert engine._handler.result() == [8, b"abc", b"abcdefgh", b"ab", 6, 1, b"de", b"fgh", b"", 0, 0, b""]


def test_next_returns_bytes_and_short_buffer_errors(serve: Any) -> None:
    def step(c: gnetpy.Conn) -> Any:
        errors = []
        for call in (lambda: c.next(5), lambda: c.peek(5)):
            try:
                call()
            except gnetpy.ShortBufferError as exc:
                errors.append(str(exc))
        whole = c.next()
        return errors, type(whole), whole, c.inbound_buffered

    engine = serve(Probe(step))
    with send(engine, b"abc"):
        errors, kind, whole, left = engine._handler.result()
    assert errors == ["next(5): only 3 bytes buffered", "peek(5): only 3 bytes buffered"]
    assert kind is bytes and whole == b"abc" and left == 0


def test_leftover_is_kept_and_joined_with_the_next_read(serve: Any) -> None:
    def step(c: gnetpy.Conn) -> Any:
        seen = (c.inbound_buffered, bytes(c.peek()))
        if c.inbound_buffered >= 6:
            return seen, c.next(6), c.inbound_buffered
        return seen, None, c.inbound_buffered  # leave it all

    engine = serve(Probe(step))
    with send(engine, b"abc", b"defg", b"hij"):
        h = engine._handler
        assert h.result() == ((3, b"abc"), None, 3)
        assert h.result() == ((7, b"abcdefg"), b"abcdef", 1)
        assert h.result() == ((4, b"ghij"), None, 4)


def test_next_with_exact_size_after_partial_consume(serve: Any) -> None:
    def step(c: gnetpy.Conn) -> Any:
        return [c.next(1), c.next(c.inbound_buffered), c.inbound_buffered, c.next()]

    engine = serve(Probe(step))
    with send(engine, b"xyz"):
        assert engine._handler.result() == [b"x", b"yz", 0, b""]


def test_write_returns_size_and_queues_what_the_socket_refuses(serve: Any) -> None:
    big = os.urandom(8 << 20)

    def step(c: gnetpy.Conn) -> Any:
        c.next()
        return c.write(big), c.outbound_buffered > 0, c.write(b"tail"), c.write(b"")

    engine = serve(Probe(step))
    with send(engine, b"go") as s:
        size, queued, tail, empty = engine._handler.result()
        assert (size, queued, tail, empty) == (len(big), True, 4, 0)
        assert recv_exact(s, len(big) + 4) == big + b"tail"
    wait_for(lambda: engine._handler.conns[0].outbound_buffered == 0 or engine._handler.closed)


def test_write_accepts_bytes_like_and_copies_mutable_data(serve: Any) -> None:
    def step(c: gnetpy.Conn) -> Any:
        c.next()
        mutable = bytearray(b"1234")
        n = c.write(mutable)
        mutable[:] = b"XXXX"  # must not affect what was written
        n += c.write(memoryview(b"5678"))
        n += c.writev([b"ab", bytearray(b"cd"), memoryview(b"ef")])
        return n

    engine = serve(Probe(step))
    with send(engine, b"go") as s:
        assert engine._handler.result() == 14
        assert recv_exact(s, 14) == b"12345678abcdef"


def test_writev_with_more_pieces_than_iov_max(serve: Any) -> None:
    pieces = [bytes([i % 251]) * 3 for i in range(5000)]

    def step(c: gnetpy.Conn) -> Any:
        c.next()
        return c.writev(pieces)

    engine = serve(Probe(step))
    with send(engine, b"go") as s:
        assert engine._handler.result() == 15000
        assert recv_exact(s, 15000) == b"".join(pieces)


def test_write_rejects_non_bytes(serve: Any) -> None:
    engine = serve(Probe(lambda c: (c.next(), c.write("text"))))  # type: ignore[arg-type]
    with send(engine, b"go"):
        assert isinstance(engine._handler.result(), TypeError)


def test_flush_sends_queued_bytes(serve: Any) -> None:
    received: queue.Queue[bytes] = queue.Queue()

    def step(c: gnetpy.Conn) -> Any:
        c.next()
        c.set_write_buffer(4096)
        c.write(b"q" * (1 << 20))
        before = c.outbound_buffered
        time.sleep(0.3)  # the client drains the socket meanwhile; the loop, inside this callback, cannot flush
        c.flush()
        return before, c.outbound_buffered

    engine = serve(Probe(step))
    with send(engine, b"go") as s:
        reader = threading.Thread(target=lambda: received.put(recv_exact(s, 1 << 20)))
        reader.start()
        before, after = engine._handler.result()
        assert before > 0 and after < before  # flush() sent some of the queue itself
        reader.join(WAIT)
        assert received.get(timeout=WAIT) == b"q" * (1 << 20)


def test_write_after_close_raises_conn_closed(serve: Any) -> None:
    handler = Probe(lambda c: c.next())
    engine = serve(handler)
    with send(engine, b"go"):
        handler.result()
    wait_for(lambda: handler.closed)
    c = handler.conns[0]
    assert c.closed and c.fd == -1
    with pytest.raises(gnetpy.ConnClosedError):
        c.write(b"late")
    with pytest.raises(gnetpy.ConnClosedError):
        c.dup()


def test_async_writev_from_a_thread(serve: Any) -> None:
    handler = Probe(lambda c: c.next())
    engine = serve(handler)
    with send(engine, b"go") as s:
        handler.result()
        done: queue.Queue[Any] = queue.Queue()
        buf = bytearray(b"reused")
        t = threading.Thread(target=handler.conns[0].async_writev,
                             args=([b"one ", buf, memoryview(b" two")], lambda c, err: done.put(err)))
        t.start()
        t.join(WAIT)
        buf[:] = b"XXXXXX"  # the call snapshot the buffers
        assert done.get(timeout=WAIT) is None
        assert recv_exact(s, 14) == b"one reused two"


def test_identity_context_and_addresses(serve: Any, tmp_path: Any) -> None:
    def step(c: gnetpy.Conn) -> Any:
        c.context = {"user": 1}
        return c.fd > 0, c.local_addr, c.remote_addr, c.event_loop.index, c.context, c.closed

    engine = serve(Probe(step), ["tcp://127.0.0.1:0", f"unix://{tmp_path}/c.sock"])
    with send(engine, b"x") as s:
        ok, local, remote, index, context, closed = engine._handler.result()
        assert ok and local == engine.addrs[0] and remote == s.getsockname()
        assert index == 0 and context == {"user": 1} and not closed
    with connect(engine.addrs[1]) as u:
        u.sendall(b"x")
        ok, local, remote, index, context, closed = engine._handler.result()
        assert local == f"{tmp_path}/c.sock" and remote == ""


def test_dup_returns_an_independent_descriptor(serve: Any) -> None:
    def step(c: gnetpy.Conn) -> Any:
        c.next()
        fd = c.dup()
        try:
            os.write(fd, b"via dup")
            return fd != c.fd
        finally:
            os.close(fd)

    engine = serve(Probe(step))
    with send(engine, b"go") as s:
        assert engine._handler.result() is True
        assert recv_exact(s, 7) == b"via dup"


def test_socket_option_setters(serve: Any) -> None:
    def step(c: gnetpy.Conn) -> Any:
        c.next()
        c.set_no_delay(False)
        c.set_keep_alive(30, 3, 4)
        c.set_read_buffer(1 << 16)
        c.set_write_buffer(1 << 16)
        c.set_linger(0)
        with socket.socket(fileno=os.dup(c.fd)) as view:
            return (view.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
                    view.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                    view.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                    view.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                    view.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                    view.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 1 << 16,
                    struct.unpack("ii", view.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8)))

    engine = serve(Probe(step))
    with send(engine, b"go"):
        assert engine._handler.result() == (0, 1, 30, 3, 4, True, (1, 0))


def test_socket_option_errors(serve: Any, tmp_path: Any) -> None:
    def step(c: gnetpy.Conn) -> Any:
        c.next()
        errors = []
        for call in (lambda: c.set_no_delay(True), lambda: c.set_linger(-1), lambda: c.set_read_buffer(0),
                     lambda: c.send_to(b"x", ("127.0.0.1", 9))):
            try:
                call()
                errors.append(None)
            except (gnetpy.GnetError, ValueError) as exc:
                errors.append(type(exc).__name__)
        return errors

    engine = serve(Probe(step), f"unix://{tmp_path}/o.sock")
    with connect(engine.addrs[0]) as s:
        s.sendall(b"go")
        assert engine._handler.result() == ["UnsupportedProtocolError", "ValueError", "ValueError",
                                            "UnsupportedProtocolError"]


def test_peer_half_close_still_gets_the_queued_reply(serve: Any) -> None:
    """EOF from the peer while a large reply is queued: the reply is flushed, then on_close(EOFError)."""
    size = 8 << 20

    def step(c: gnetpy.Conn) -> Any:
        c.next()
        return c.write(b"r" * size)

    handler = Probe(step)
    engine = serve(handler)
    with send(engine, b"go") as s:
        handler.result()
        s.shutdown(socket.SHUT_WR)
        assert len(recv_until_eof(s)) == size
    wait_for(lambda: handler.closed)
    assert isinstance(handler.closed[0], EOFError)
