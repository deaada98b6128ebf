"""Actions returned by callbacks, wake(), and close() from other threads."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import gnetpy
from conftest import Recorder, connect, recv_exact, recv_until_eof, wait_for


class CloseOnOpen(Recorder):
    def on_open(self, c: gnetpy.Conn) -> Any:
        super().on_open(c)
        c.write(b"bye")
        return gnetpy.Action.CLOSE


def test_close_from_on_open_delivers_greeting_then_closes(serve: Any) -> None:
    handler = CloseOnOpen()
    engine = serve(handler)
    with connect(engine.addrs[0]) as s:
        assert recv_until_eof(s) == b"bye"
    wait_for(lambda: len(handler.closed) == 1)
    assert handler.closed[0][1] is None  # a local close


class CloseOnTraffic(Recorder):
    def on_traffic(self, c: gnetpy.Conn) -> Any:
        c.write(c.next().upper())
        return gnetpy.Action.CLOSE


def test_close_from_on_traffic_flushes_a_large_reply_first(serve: Any) -> None:
    """The reply (8 MiB, more than the socket buffers hold) is delivered before the close."""
    class BigReplyThenClose(Recorder):
        def on_traffic(self, c: gnetpy.Conn) -> Any:
            c.next()
            c.write(b"x" * (8 << 20))
            return gnetpy.Action.CLOSE

    handler = BigReplyThenClose()
    engine = serve(handler)
    with connect(engine.addrs[0]) as s:
        s.sendall(b"go")
        time.sleep(0.2)  # let the server queue most of it and enter "closing"
        assert len(recv_until_eof(s)) == 8 << 20
    wait_for(lambda: len(handler.closed) == 1)
    assert handler.closed[0][1] is None


def test_close_from_on_traffic(serve: Any) -> None:
    handler = CloseOnTraffic()
    engine = serve(handler)
    with connect(engine.addrs[0]) as s:
        s.sendall(b"abc")
        assert recv_until_eof(s) == b"ABC"
    wait_for(lambda: len(handler.closed) == 1)
    assert engine.count_connections() == 0


class ShutdownFrom(Recorder):
    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where
        self.shutdown_seen = threading.Event()

    def on_open(self, c: gnetpy.Conn) -> Any:
        super().on_open(c)
        return gnetpy.Action.SHUTDOWN if self.where == "on_open" else None

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        c.write(c.next())
        return gnetpy.Action.SHUTDOWN if self.where == "on_traffic" else None

    def on_tick(self) -> Any:
        return (0.05, gnetpy.Action.SHUTDOWN if self.where == "on_tick" else gnetpy.Action.NONE)

    def on_shutdown(self, engine: gnetpy.Engine) -> None:
        self.shutdown_seen.set()


@pytest.mark.parametrize("where", ["on_open", "on_traffic"])
def test_shutdown_from_connection_callbacks(serve: Any, where: str) -> None:
    handler = ShutdownFrom(where)
    engine = serve(handler)
    with connect(engine.addrs[0]) as s:
        s.sendall(b"last words")
        if where == "on_traffic":
            assert recv_exact(s, 10) == b"last words"  # written before the stop: delivered
        assert engine.wait(10)
        assert recv_until_eof(s) in (b"", b"last words")
    assert handler.shutdown_seen.is_set()
    assert not engine.is_running
    assert len(handler.closed) == len(handler.opened) == 1


def test_shutdown_from_on_tick(serve: Any) -> None:
    handler = ShutdownFrom("on_tick")
    engine = serve(handler, ticker=True)
    assert engine.wait(10)
    assert handler.shutdown_seen.is_set()


def test_shutdown_from_on_boot_never_serves(serve: Any) -> None:
    class NoBoot(gnetpy.EventHandler):
        def on_boot(self, engine: gnetpy.Engine) -> Any:
            self.addrs = engine.addrs  # bound already: the real port is known
            return gnetpy.Action.SHUTDOWN

    handler = NoBoot()
    engine = serve(handler)
    assert not engine.is_running
    assert engine.wait(0)
    assert handler.addrs[0][1] > 0
    with pytest.raises(ConnectionRefusedError):
        connect(handler.addrs[0])


def test_shutdown_from_on_close(serve: Any) -> None:
    class LastOneOut(Recorder):
        def on_close(self, c: gnetpy.Conn, err: Any) -> Any:
            super().on_close(c, err)
            return gnetpy.Action.SHUTDOWN

    engine = serve(LastOneOut())
    connect(engine.addrs[0]).close()
    assert engine.wait(10)


class Waker(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.traffic_calls = 0
        self.buffered_at_wake: list[int] = []

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        self.traffic_calls += 1
        if c.context == "woken":
            self.buffered_at_wake.append(c.inbound_buffered)
            c.write(b"woken:" + c.next())
        elif c.inbound_buffered >= 3:
            c.discard(3)  # consume 3, leave the rest for the wake-up


def test_wake_runs_on_traffic_without_new_data(serve: Any) -> None:
    handler = Waker()
    engine = serve(handler)
    with connect(engine.addrs[0]) as s:
        s.sendall(b"abcdef")
        wait_for(lambda: handler.traffic_calls >= 1 and handler.opened)
        c = handler.opened[0]
        c.context = "woken"
        done = threading.Event()
        errors: list[Any] = []
        threading.Thread(target=c.wake, args=(lambda conn, err: (errors.append(err), done.set()),)).start()
        assert done.wait(10)
        assert errors == [None]
        assert recv_exact(s, 9) == b"woken:def"
    assert handler.buffered_at_wake == [3]


def test_close_from_another_thread(serve: Any) -> None:
    handler = Recorder()
    engine = serve(handler)
    with connect(engine.addrs[0]) as s:
        wait_for(lambda: handler.opened)
        c = handler.opened[0]
        results: list[Any] = []
        t = threading.Thread(target=c.close, args=(lambda conn, err: results.append((conn, err)),))
        t.start()
        t.join(10)
        assert recv_until_eof(s) == b""
        wait_for(lambda: results)
    assert results == [(c, None)]
    assert handler.closed == [(c, None)]
    assert c.closed
    # Closing again reports that it is already closed, on the loop.
    again: list[Any] = []
    c.close(lambda conn, err: again.append(err))
    wait_for(lambda: again)
    assert isinstance(again[0], gnetpy.ConnClosedError)


def test_async_write_to_closed_connection_reports_error(serve: Any) -> None:
    handler = Recorder()
    engine = serve(handler)
    with connect(engine.addrs[0]):
        wait_for(lambda: handler.opened)
    c = handler.opened[0]
    wait_for(lambda: handler.closed)
    assert isinstance(handler.closed[0][1], EOFError)
    results: list[Any] = []
    c.async_write(b"too late", lambda conn, err: results.append(err))
    wait_for(lambda: results)
    assert isinstance(results[0], gnetpy.ConnClosedError)


def test_async_write_after_engine_stopped_reports_error(serve: Any) -> None:
    handler = Recorder()
    engine = serve(handler)
    with connect(engine.addrs[0]):
        wait_for(lambda: handler.opened)
        engine.stop()
    results: list[Any] = []
    handler.opened[0].async_write(b"too late", lambda conn, err: results.append(err))
    assert isinstance(results[0], gnetpy.EngineStoppedError)
