"""Gathered writes: what a callback writes goes out when it returns, in one system call, in order.

The system-call count is read from the outside: the server runs under ``strace`` in a
process of its own (both builds: ``_sysio``'s calls are the same ``write``/``writev``
system calls as ``os``'s), and every ``write``/``writev`` on the connection's descriptor
is counted.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest

import gnetpy
from conftest import WAIT, Recorder, connect, recv_exact, recv_until_eof, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Numbered(gnetpy.EventHandler):
    """Per request: "n" pieces numbered 0..n-1, through write, writev and flush mixed."""

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        n = int(c.next())
        for i in range(0, n, 4):
            c.write(b"%05d" % i)
            c.writev([b"%05d" % (i + 1), bytearray(b"%05d" % (i + 2))])
            if i % 8 == 0:
                c.flush()
            c.write(memoryview(b"%05d" % (i + 3)))


def test_write_writev_and_flush_keep_their_order(serve: Any) -> None:
    engine = serve(Numbered())
    with connect(engine.addrs[0]) as s:
        s.sendall(b"400")
        assert recv_exact(s, 2000) == b"".join(b"%05d" % i for i in range(400))


def test_async_writes_from_a_thread_arrive_in_order_between_callbacks(serve: Any) -> None:
    handler = Recorder()
    engine = serve(handler)
    with connect(engine.addrs[0]) as s:
        c = wait_for(lambda: handler.opened and handler.opened[0])
        done = threading.Event()
        sent = [b"%06d" % i for i in range(2000)]

        def produce() -> None:
            for piece in sent:
                c.async_write(piece)
            done.set()

        producer = threading.Thread(target=produce)
        producer.start()
        s.sendall(b"echoed")  # a callback's own writes, somewhere among them
        got = recv_exact(s, 6 * 2000 + 6)
        producer.join(WAIT)
    assert got.replace(b"echoed", b"", 1) == b"".join(sent)


class WritesThen(gnetpy.EventHandler):
    def __init__(self, then: str) -> None:
        self.then = then
        self.closed: list[BaseException | None] = []

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        c.next()
        for _ in range(100):
            c.write(b"r" * 10_000)
        if self.then == "close":
            return gnetpy.Action.CLOSE
        if self.then == "c.close":
            c.close()
            return None
        raise RuntimeError("after a megabyte of replies")

    def on_close(self, c: gnetpy.Conn, err: BaseException | None) -> Any:
        self.closed.append(err)


@pytest.mark.parametrize("then", ["close", "c.close", "raise"])
def test_what_a_callback_wrote_before_closing_or_raising_is_sent_first(serve: Any, then: str) -> None:
    handler = WritesThen(then)
    engine = serve(handler)
    with connect(engine.addrs[0]) as s:
        s.sendall(b"go")
        assert recv_until_eof(s) == b"r" * 1_000_000
    wait_for(lambda: handler.closed)
    assert (handler.closed[0] is None) if then != "raise" else isinstance(handler.closed[0], RuntimeError)


def test_gathered_bytes_count_toward_backpressure(serve: Any) -> None:
    seen: list[tuple[int, bool, bool]] = []
    drained = threading.Event()

    class Flood(gnetpy.EventHandler):
        def on_traffic(self, c: gnetpy.Conn) -> Any:
            c.next()
            for _ in range(64):
                c.write(b"f" * 16384)  # 1 MiB in one callback, far past write_high_water
            seen.append((c.outbound_buffered, c.reading_paused, False))
            c.event_loop.call_later(0, lambda: seen.append((c.outbound_buffered, c.reading_paused, True)))

        def on_drained(self, c: gnetpy.Conn) -> Any:
            drained.set()

    engine = serve(Flood(), write_high_water=64 << 10, socket_send_buffer=64 << 10)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        s.settimeout(WAIT)
        s.connect(engine.addrs[0])
        s.sendall(b"go")
        wait_for(lambda: len(seen) == 2)
        during, after = seen
        # Gathered: counted, nothing sent yet -- and seen past the mark, so reading pauses at once,
        # as for a queue past it (on_drained is owed: tests/integration/test_backpressure.py).
        assert during[0] == 1 << 20 and during[1]
        assert after[0] > 64 << 10 and after[1]  # what the socket did not take is queued: reading stops
        assert recv_exact(s, 1 << 20) == b"f" * (1 << 20)
        assert drained.wait(WAIT)


def test_a_mutable_buffer_may_change_once_write_returns(serve: Any) -> None:
    class Reuses(gnetpy.EventHandler):
        def on_traffic(self, c: gnetpy.Conn) -> Any:
            c.next()
            for size in (100, 1 << 20):  # copied to be gathered; large: straight to the socket
                buf = bytearray(b"a" * size)
                c.write(buf)
                buf[:] = b"b" * size

    engine = serve(Reuses())
    with connect(engine.addrs[0]) as s:
        s.sendall(b"go")
        assert recv_exact(s, 100 + (1 << 20)) == b"a" * (100 + (1 << 20))


def test_datagrams_are_never_merged(serve: Any) -> None:
    class ThreeReplies(gnetpy.EventHandler):
        def on_traffic(self, c: gnetpy.Conn) -> Any:
            data = c.next()
            for i in range(3):
                c.write(b"%d:%s" % (i, data))

    engine = serve(ThreeReplies(), "udp://127.0.0.1:0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(WAIT)
        s.sendto(b"x", engine.addrs[0])
        assert [s.recv(100) for _ in range(3)] == [b"0:x", b"1:x", b"2:x"]


STRACED = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {src!r})
    import gnetpy

    class Lines(gnetpy.EventHandler):
        def on_boot(self, engine):
            print(engine.addrs[0][1], os.getpid(), flush=True)
        def on_open(self, c):
            print("fd", c.fd, flush=True)
        def on_traffic(self, c):
            while True:  # one reply per line, written as soon as it is parsed
                data = bytes(c.peek())
                end = data.find(b"\\n")
                if end < 0:
                    return
                c.write(c.next(end + 1).upper())

    gnetpy.run(Lines(), "tcp://127.0.0.1:0")
""")


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed (.ci/run installs it)")
@pytest.mark.parametrize("build", ["compiled", "pure"])
def test_sixteen_replies_in_one_callback_are_one_system_call(tmp_path: Any, build: str) -> None:
    if build == "compiled" and not gnetpy.compiled:
        pytest.skip("no compiled build here")
    script = tmp_path / "server.py"
    script.write_text(STRACED.format(src=os.path.join(ROOT, "src")))
    trace = tmp_path / "trace"
    env = dict(os.environ, GNETPY_NO_EXTENSIONS="1" if build == "pure" else "")
    proc = subprocess.Popen(["strace", "-f", "-qq", "-e", "trace=write,writev", "-o", str(trace), sys.executable,
                             str(script)], stdout=subprocess.PIPE, text=True, env=env)
    server_pid = 0
    try:
        port, server_pid = map(int, proc.stdout.readline().split())
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
            fd = int(proc.stdout.readline().split()[1])
            for _ in range(10):
                s.sendall(b"".join(b"line %02d\n" % i for i in range(16)))  # one read: 16 requests
                assert recv_exact(s, 16 * 8) == b"".join(b"LINE %02d\n" % i for i in range(16))
                time.sleep(0.01)  # the next batch in a read of its own
    finally:
        if server_pid:
            os.kill(server_pid, signal.SIGTERM)  # the traced server; strace ends with it
        try:
            proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            if server_pid:
                os.kill(server_pid, signal.SIGKILL)
            proc.kill()
            proc.wait(WAIT)
        finally:
            proc.stdout.close()
    calls = [line for line in trace.read_text().splitlines() if re.search(rf"\b(write|writev)\({fd},", line)]
    assert len(calls) == 10, calls[:20]
