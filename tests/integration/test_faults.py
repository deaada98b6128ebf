"""Faults: raising handlers, resets, running out of descriptors, and stop() leaving nothing behind."""

from __future__ import annotations

import logging
import os
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest

import gnetpy
from conftest import WAIT, Recorder, connect, gnetpy_threads, open_fds, recv_exact, recv_until_eof, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Boom(Exception):
    pass


class RaisesEveryTenth(Recorder):
    """Line echo that raises on every 10th line of a connection."""

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        while True:
            data = bytes(c.peek())
            line_end = data.find(b"\n")
            if line_end < 0:
                return
            line = c.next(line_end + 1)
            c.context = (c.context or 0) + 1
            if c.context % 10 == 0:
                raise Boom(f"message {c.context}")
            c.write(line)


def test_raising_handler_closes_only_its_connection(serve: Any, caplog: Any) -> None:
    handler = RaisesEveryTenth()
    engine = serve(handler, num_event_loop=2, processes=False)
    clients = [connect(engine.addrs[0]) for _ in range(6)]
    try:
        with caplog.at_level(logging.ERROR, logger="gnetpy"):
            # Even clients send 10 lines and are closed on the 10th; odd ones
            # send 8, then one more after the others were closed.
            for i, s in enumerate(clients):
                for n in range(1, 11 if i % 2 == 0 else 9):
                    line = b"line %d\n" % n
                    s.sendall(line)
                    if n < 10:
                        assert recv_exact(s, len(line)) == line
            for i, s in enumerate(clients):
                if i % 2 == 0:
                    assert recv_until_eof(s) == b""
                else:
                    s.sendall(b"still here\n")
                    assert recv_exact(s, 11) == b"still here\n"
            wait_for(lambda: len(handler.closed) == 3)
        for _, err in handler.closed:
            assert isinstance(err, Boom) and str(err) == "message 10"
        assert sum("callback raised" in r.getMessage() for r in caplog.records) == 3
        assert all(r.exc_info and r.exc_info[0] is Boom for r in caplog.records if "callback raised" in r.getMessage())
        assert engine.is_running and engine.count_connections() == 3
    finally:
        for s in clients:
            s.close()


def test_on_close_runs_exactly_once_per_connection(serve: Any) -> None:
    """A mix of peer closes, resets, local closes and engine stop: one on_close each."""
    class Mixed(Recorder):
        def on_traffic(self, c: gnetpy.Conn) -> Any:
            data = c.next()
            if data == b"close":
                return gnetpy.Action.CLOSE
            if data == b"raise":
                raise Boom("raise")
            c.write(data)
            c.close()  # and a concurrent close request racing the peer
            return None

    handler = Mixed()
    engine = serve(handler, num_event_loop=3, processes=False)
    socks = []
    for i in range(60):
        s = connect(engine.addrs[0])
        kind = i % 5
        if kind == 0:
            s.sendall(b"close")
        elif kind == 1:
            s.sendall(b"raise")
        elif kind == 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()  # reset
            continue
        elif kind == 3:
            s.sendall(b"echo")
        socks.append(s)
    wait_for(lambda: len(handler.opened) == 60)
    engine.stop(timeout=5)
    for s in socks:
        s.close()
    opened = {id(c) for c in handler.opened}
    closed = [id(c) for c, _ in handler.closed]
    assert sorted(closed) == sorted(opened)  # every opened connection closed, none twice
    assert engine.count_connections() == 0


def test_reset_by_peer_reaches_on_close_as_oserror(serve: Any) -> None:
    handler = Recorder()
    engine = serve(handler)
    s = connect(engine.addrs[0])
    s.sendall(b"ping")
    assert recv_exact(s, 4) == b"ping"
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    wait_for(lambda: handler.closed)
    err = handler.closed[0][1]
    assert isinstance(err, ConnectionResetError), err  # the reset, not an orderly end of stream


def test_write_to_vanished_peer_closes_with_broken_pipe(serve: Any) -> None:
    """The server keeps writing to a peer that reset: the error reaches on_close, the loop serves on."""
    ready = threading.Event()

    class Streamer(Recorder):
        def on_open(self, c: gnetpy.Conn) -> Any:
            super().on_open(c)
            c.write(b"x" * (4 << 20))  # fills the socket buffers; the rest waits in the queue
            ready.set()

    handler = Streamer()
    engine = serve(handler)
    s = connect(engine.addrs[0])
    assert ready.wait(WAIT)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    wait_for(lambda: handler.closed)
    assert isinstance(handler.closed[0][1], OSError)
    with connect(engine.addrs[0]) as again:  # and the engine serves on
        assert recv_exact(again, 1024) == b"x" * 1024


def test_stop_flushes_pending_outbound(serve: Any) -> None:
    """Data queued when stop() is called reaches a peer that reads it, even after stop began."""
    size = 16 << 20

    class Bulk(Recorder):
        def on_open(self, c: gnetpy.Conn) -> Any:
            super().on_open(c)
            c.write(b"y" * size)

    handler = Bulk()
    engine = serve(handler)
    with connect(engine.addrs[0]) as s:
        wait_for(lambda: handler.opened and handler.opened[0].outbound_buffered > 0)
        stopper = threading.Thread(target=engine.stop, kwargs={"timeout": 20})
        stopper.start()
        received = recv_until_eof(s)
        stopper.join(WAIT)
    assert len(received) == size
    assert handler.closed[0][1] is None


def test_stop_timeout_bounds_the_flush_to_a_peer_that_never_reads(serve: Any) -> None:
    class Bulk(Recorder):
        def on_open(self, c: gnetpy.Conn) -> Any:
            super().on_open(c)
            c.write(b"z" * (16 << 20))

    handler = Bulk()
    engine = serve(handler)
    with connect(engine.addrs[0]):
        wait_for(lambda: handler.opened)
        started = time.monotonic()
        engine.stop(timeout=0.5)
        elapsed = time.monotonic() - started
    assert elapsed < 5
    assert isinstance(handler.closed[0][1], TimeoutError)


# -- a close never makes dropped bytes look like a clean end --------------------------------------


class WritesThenRaises(Recorder):
    """On the first message: write ``size`` bytes of replies, then fail."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        c.next()
        for _ in range(self.size // 100_000):
            c.write(b"r" * 100_000)
        raise Boom("after the replies")


def small_window_client(addr: Any) -> socket.socket:
    s = socket.socket(socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # before connect: a 64 KiB window
    s.settimeout(WAIT)
    s.connect(addr)
    return s


def test_what_a_handler_wrote_before_it_raised_is_delivered_then_the_connection_ends(serve: Any) -> None:
    handler = WritesThenRaises(12_000_000)
    engine = serve(handler)
    with small_window_client(engine.addrs[0]) as s:
        s.sendall(b"go")
        time.sleep(0.2)  # the handler has raised with most of its 12 MB still queued
        received = recv_until_eof(s)  # then an orderly end: a reset would raise here
    assert len(received) == 12_000_000
    wait_for(lambda: handler.closed)
    assert isinstance(handler.closed[0][1], Boom)


@pytest.mark.parametrize("how", ["close_timeout", "stop deadline"])
def test_a_close_that_drops_written_bytes_ends_with_a_reset_not_a_clean_end(serve: Any, how: str) -> None:
    handler = WritesThenRaises(12_000_000) if how == "close_timeout" else Recorder()
    engine = serve(handler, close_timeout=0.3)
    with small_window_client(engine.addrs[0]) as s:
        if how == "close_timeout":
            s.sendall(b"go")  # the handler raises; its replies cannot all go within 0.3 s: we do not read
        else:
            c = wait_for(lambda: handler.opened and handler.opened[0])
            c.async_write(b"r" * 12_000_000)
            time.sleep(0.2)
            engine.stop(timeout=0.2)  # the stop deadline drops the rest
        wait_for(lambda: handler.closed)
        received = 0
        with pytest.raises(ConnectionResetError):
            while True:  # what the kernel had taken, then the reset -- never b"" (a clean end)
                chunk = s.recv(1 << 20)
                assert chunk, f"an orderly end of stream after {received} of 12000000 bytes: the drop looks clean"
                received += len(chunk)
    assert 0 < received < 12_000_000
    assert isinstance(handler.closed[0][1], TimeoutError)


@pytest.mark.parametrize("loops", [1, 4])
def test_stop_leaves_no_thread_descriptor_or_socket_file(tmp_path: Any, loops: int) -> None:
    fds_before = open_fds()
    path = tmp_path / "leak.sock"
    engine = gnetpy.start(Recorder(), ["tcp://127.0.0.1:0", f"unix://{path}", "tcp6://[::1]:0"
                                       if _ipv6() else "tcp://127.0.0.1:0"], num_event_loop=loops,
                          processes=False)
    clients = [connect(engine.addrs[0]), connect(engine.addrs[1])]
    for s in clients:
        s.sendall(b"hi")
        assert recv_exact(s, 2) == b"hi"
    assert path.exists() and gnetpy_threads()
    engine.stop()
    for s in clients:
        s.close()
    assert not path.exists()
    assert gnetpy_threads() == []
    assert open_fds() == fds_before


def test_stale_unix_socket_file_is_replaced_but_other_files_are_not(tmp_path: Any) -> None:
    path = tmp_path / "stale.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, like after a crash
    with gnetpy.start(Recorder(), f"unix://{path}") as engine:
        with connect(engine.addrs[0]) as s:
            s.sendall(b"ok")
            assert recv_exact(s, 2) == b"ok"
    assert not path.exists()
    regular = tmp_path / "data.txt"
    regular.write_text("precious")
    with pytest.raises(OSError, match="not a socket"):
        gnetpy.start(Recorder(), f"unix://{regular}")
    assert regular.read_text() == "precious"


def _ipv6() -> bool:
    from conftest import has_ipv6_loopback
    return has_ipv6_loopback()


EMFILE_SERVER = textwrap.dedent("""
    import os, resource, sys, time
    sys.path.insert(0, {src!r})
    import gnetpy

    class Echo(gnetpy.EventHandler):
        def on_traffic(self, c):
            c.write(c.next())

    engine = gnetpy.start(Echo(), "tcp://127.0.0.1:0")
    # Leave room for exactly a handful of connections.
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 4, 4096))
    print(engine.addrs[0][1], flush=True)
    sys.stdin.readline()
    engine.stop()
""")


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_emfile_backs_off_without_spinning_and_recovers(tmp_path: Any) -> None:
    script = tmp_path / "server.py"
    script.write_text(EMFILE_SERVER.format(src=os.path.join(ROOT, "src")))
    proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    clients: list[socket.socket] = []
    try:
        port = int(proc.stdout.readline())
        # More connections than the server has descriptors for: the kernel
        # completes the handshakes (backlog), the server cannot accept them all.
        for _ in range(12):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=WAIT))
        time.sleep(0.3)
        cpu_before = _cpu_seconds(proc.pid)
        time.sleep(1.0)
        busy = _cpu_seconds(proc.pid) - cpu_before
        assert busy < 0.3, f"the server burnt {busy:.2f}s of CPU in 1s while out of descriptors (spinning)"
        for s in clients[:8]:  # free descriptors on the server side
            s.close()
        del clients[:8]
        # The connections that waited in the backlog are served now.
        for s in clients:
            s.sendall(b"ping")
            assert recv_exact(s, 4) == b"ping"
    finally:
        for s in clients:
            s.close()
        try:
            proc.stdin.write("\n")
            proc.stdin.flush()
            proc.wait(WAIT)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(WAIT)
        stderr = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
        proc.stdin.close()
    assert proc.returncode == 0, stderr


# -- SystemExit, KeyboardInterrupt and other BaseExceptions in callbacks -------------------------------


class ExitsIn(Recorder):
    """Raises ``exc`` from the named callback (on_open, on_traffic, on_close, a timer or on_tick)."""

    def __init__(self, where: str, exc: BaseException) -> None:
        super().__init__()
        self.where = where
        self.exc = exc

    def on_open(self, c: gnetpy.Conn) -> Any:
        super().on_open(c)
        if self.where == "on_open":
            raise self.exc
        if self.where == "timer":
            c.event_loop.call_later(0, self._raise)

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        if self.where == "on_traffic":
            raise self.exc
        return super().on_traffic(c)

    def on_close(self, c: gnetpy.Conn, err: BaseException | None) -> Any:
        super().on_close(c, err)
        if self.where == "on_close":
            raise self.exc

    def on_tick(self) -> Any:
        if self.where == "on_tick":
            raise self.exc
        return 0.05

    def _raise(self) -> None:
        raise self.exc


@pytest.mark.parametrize("where", ["on_open", "on_traffic", "on_close", "timer", "on_tick"])
@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt()], ids=["SystemExit", "KeyboardInterrupt"])
@pytest.mark.parametrize("loops", [1, 2])
def test_a_base_exception_in_a_callback_stops_the_engine_gracefully(caplog: Any, where: str, exc: BaseException,
                                                                    loops: int) -> None:
    handler = ExitsIn(where, exc)
    with caplog.at_level(logging.CRITICAL, logger="gnetpy"):
        engine = gnetpy.start(handler, "tcp://127.0.0.1:0", num_event_loop=loops, ticker=where == "on_tick",
                              processes=False)
        addr = engine.addrs[0]
        try:
            if where != "on_tick":
                with connect(addr) as s:
                    s.sendall(b"x")
                    if where == "on_close":
                        assert recv_exact(s, 1) == b"x"
            assert engine.wait(WAIT), "the engine did not stop"
        finally:
            engine.stop(timeout=5)
    assert engine.error is exc
    assert not engine.is_running
    assert any(r.levelno == logging.CRITICAL and type(exc).__name__ in r.getMessage() for r in caplog.records)
    with pytest.raises(OSError):  # nothing accepts any more
        socket.create_connection(addr, timeout=1).close()
    wait_for(lambda: not gnetpy_threads())


def test_run_re_raises_a_system_exit_from_a_callback_in_its_caller() -> None:
    handler = ExitsIn("on_traffic", SystemExit(7))
    port_holder = socket.socket()
    port_holder.bind(("127.0.0.1", 0))
    port = port_holder.getsockname()[1]
    port_holder.close()
    raised: list[BaseException] = []

    def serve_it() -> None:
        try:
            gnetpy.run(handler, f"tcp://127.0.0.1:{port}")
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=serve_it)
    thread.start()
    try:
        s = wait_for(lambda: _try_connect(("127.0.0.1", port)))
        with s:
            s.sendall(b"bye")
        thread.join(WAIT)
    finally:
        thread.join(WAIT)
    assert len(raised) == 1 and isinstance(raised[0], SystemExit) and raised[0].code == 7


def _try_connect(addr: Any) -> socket.socket | None:
    try:
        return socket.create_connection(addr, timeout=WAIT)
    except OSError:
        return None


# -- what callbacks return ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [True, "close", 1.5, [1]])
def test_a_return_value_that_is_not_an_action_closes_that_connection_with_a_type_error(
        serve: Any, caplog: Any, value: Any) -> None:
    class Returns(Recorder):
        def on_traffic(self, c: gnetpy.Conn) -> Any:
            c.write(c.next())
            return value

    handler = Returns()
    engine = serve(handler)
    with caplog.at_level(logging.ERROR, logger="gnetpy"):
        with connect(engine.addrs[0]) as s:
            s.sendall(b"one")
            assert recv_exact(s, 3) == b"one"  # what it wrote before returning still arrives
            assert recv_until_eof(s) == b""
        wait_for(lambda: handler.closed)
    err = handler.closed[0][1]
    assert isinstance(err, TypeError) and repr(value) in str(err)
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1  # once, not per message


def test_returning_none_or_an_action_is_fine(serve: Any, caplog: Any) -> None:
    class Alternates(Recorder):
        def on_traffic(self, c: gnetpy.Conn) -> Any:
            c.write(c.next())
            c.context = not c.context
            return gnetpy.Action.NONE if c.context else None

    handler = Alternates()
    engine = serve(handler)
    with caplog.at_level(logging.ERROR, logger="gnetpy"), connect(engine.addrs[0]) as s:
        for i in range(10):
            s.sendall(b"%d" % i)
            assert recv_exact(s, 1) == b"%d" % i
    assert not caplog.records


# -- a callback that blocks the loop at stop() ---------------------------------------------------------


def test_stop_with_a_blocked_callback_returns_and_on_shutdown_still_comes_last(caplog: Any) -> None:
    release = threading.Event()
    order: list[str] = []

    class Blocks(gnetpy.EventHandler):
        def on_traffic(self, c: gnetpy.Conn) -> Any:
            release.wait(WAIT)  # a handler that blocks (it must not)

        def on_close(self, c: gnetpy.Conn, err: BaseException | None) -> Any:
            order.append("on_close")

        def on_shutdown(self, engine: gnetpy.Engine) -> None:
            order.append("on_shutdown")

    engine = gnetpy.start(Blocks(), "tcp://127.0.0.1:0")
    try:
        with connect(engine.addrs[0]) as s, caplog.at_level(logging.ERROR, logger="gnetpy"):
            s.sendall(b"x")
            time.sleep(0.2)  # the loop is now inside on_traffic
            started = time.monotonic()
            engine.stop(timeout=0.5)
            assert time.monotonic() - started < 4  # the stop deadline plus the grace, not forever
            assert order == []  # on_shutdown has not run before that connection's on_close
            message = " ".join(r.getMessage() for r in caplog.records)
            assert "did not stop" in message and "on_traffic" in message and "Blocks" in message
    finally:
        release.set()
    wait_for(lambda: order == ["on_close", "on_shutdown"])
    wait_for(lambda: not gnetpy_threads())


# -- internal errors ---------------------------------------------------------------------------------


def test_an_internal_error_that_repeats_backs_off_and_stops_the_engine(caplog: Any) -> None:
    calls: list[float] = []

    class Broken(gnetpy.EventHandler):
        def on_boot(self, engine: gnetpy.Engine) -> None:
            def poll(timeout: float, maxevents: int) -> Any:
                calls.append(time.monotonic())
                raise MemoryError("simulated")
            engine.event_loops[0]._poller.poll = poll  # type: ignore[method-assign]

    with caplog.at_level(logging.ERROR, logger="gnetpy"):
        engine = gnetpy.start(Broken(), "tcp://127.0.0.1:0")
        try:
            assert engine.wait(WAIT)
        finally:
            engine.stop(timeout=1)
    assert 2 <= len(calls) <= 8  # backed off, then gave up: not hundreds of tries a second
    assert calls[-1] - calls[0] >= 0.5
    assert isinstance(engine.error, MemoryError)
    wait_for(lambda: not gnetpy_threads())
