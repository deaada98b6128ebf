"""Backpressure and bounded memory: a peer that does not read, a proxy between two, and the limits.

Queues are measured (the largest ``outbound_buffered`` a handler saw), not
wall time; the slow-reader server runs in its own process so that its
resident memory can be read from /proc.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any, Iterator

import pytest

import gnetpy
from conftest import WAIT, Recorder, WriteEcho, connect, recv_exact, recv_until_eof, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HIGH = 64 * 1024


PERIOD = 251  # a prime: the byte at offset k is k % 251
BLOCK = bytes(range(PERIOD)) * ((2 << 20) // PERIOD + 2)


def pattern(total: int, chunk: int = 1 << 16) -> Iterator[bytes]:
    """A stream whose every byte depends on its offset: reordering, loss or duplication shows."""
    offset = 0
    while offset < total:
        size = min(chunk, total - offset)
        start = offset % PERIOD
        yield BLOCK[start:start + size]
        offset += size


def receive_pattern(s: socket.socket, total: int) -> None:
    """Read ``total`` bytes of ``pattern`` and check each against its offset."""
    received = 0
    view = memoryview(BLOCK)
    while received < total:
        chunk = s.recv(1 << 20)
        assert chunk, f"closed after {received} bytes"
        start = received % PERIOD
        assert chunk == view[start:start + len(chunk)], f"corrupt data at byte {received}"
        received += len(chunk)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


SLOW_READER_SERVER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {src!r})
    import gnetpy

    class Echo(gnetpy.EventHandler):
        most = 0
        def on_boot(self, engine):
            print(engine.addrs[0][1], flush=True)
        def on_traffic(self, c):
            c.write(c.next())
            Echo.most = max(Echo.most, c.outbound_buffered)
        def on_close(self, c, err):
            print("most-queued", Echo.most, flush=True)

    gnetpy.run(Echo(), "tcp://127.0.0.1:0")
""")


def test_a_client_that_sends_and_does_not_read_cannot_make_the_server_buffer(tmp_path: Any) -> None:
    script = tmp_path / "server.py"
    script.write_text(SLOW_READER_SERVER.format(src=os.path.join(ROOT, "src")))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    total = 200 << 20
    try:
        port = int(proc.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
            s.setblocking(False)
            before = rss_kib(proc.pid)
            stream = pattern(total)
            pending = b""
            sent = 0
            stuck_since = None
            while stuck_since is None or time.monotonic() - stuck_since < 1.0:  # send until it stops taking more
                if not pending:
                    pending = next(stream)
                try:
                    n = s.send(pending)
                    sent += n
                    pending = pending[n:]
                    stuck_since = None
                except BlockingIOError:
                    stuck_since = stuck_since or time.monotonic()
                    select.select([], [s], [], 0.05)
            grew = rss_kib(proc.pid) - before
            assert sent < total  # the server stopped reading: it did not take all 200 MiB
            assert grew < 10 * 1024, f"the server grew {grew} KiB while a client did not read"
            # Now read: every byte comes back in order, while the rest is sent.
            s.setblocking(True)
            s.settimeout(WAIT)
            sender = threading.Thread(target=_send_rest, args=(s, pending, stream))
            sender.start()
            receive_pattern(s, total)
            sender.join(WAIT)
        line = proc.stdout.readline().split()
        assert line[0] == "most-queued" and int(line[1]) <= HIGH + 64 * 1024  # the high mark plus one read
    finally:
        proc.terminate()
        proc.communicate(timeout=WAIT)


def _send_rest(s: socket.socket, pending: bytes, stream: Iterator[bytes]) -> None:
    s.sendall(pending)
    for piece in stream:
        s.sendall(piece)


# -- the proxy example --------------------------------------------------------------------------


def load_proxy() -> Any:
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    try:
        import proxy
    finally:
        sys.path.pop(0)
    return proxy


class MeasuredProxy:
    """The example's handler, recording the largest queue it saw on either side."""

    @staticmethod
    def make(backend: str) -> Any:
        base = load_proxy().Proxy

        class Measured(base):  # type: ignore[misc, valid-type]
            most = 0

            def on_traffic(self, c: gnetpy.Conn) -> Any:
                result = super().on_traffic(c)
                peer = c.context.peer
                if peer is not None:
                    Measured.most = max(Measured.most, peer.outbound_buffered)
                return result

        return Measured(backend)


def test_fifty_mib_through_the_proxy_and_a_slow_reader_keeps_its_queues_bounded(serve: Any) -> None:
    backend = serve(WriteEcho())
    handler = MeasuredProxy.make(f"tcp://127.0.0.1:{backend.addrs[0][1]}")
    proxy = serve(handler, processes=False, write_high_water=HIGH)
    total = 50 << 20
    with connect(proxy.addrs[0]) as s:
        s.setblocking(False)
        stream = pattern(total)
        pending = next(stream)
        # First a slow reader: send, read nothing, for a second.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                n = s.send(pending)
                pending = pending[n:] or next(stream)
            except BlockingIOError:
                select.select([], [s], [], 0.05)
        assert type(handler).most <= HIGH + 64 * 1024  # nothing piles up in the proxy
        s.setblocking(True)
        s.settimeout(WAIT)
        sender = threading.Thread(target=_send_rest, args=(s, pending, stream))
        sender.start()
        receive_pattern(s, total)
        sender.join(WAIT)
    assert type(handler).most <= HIGH + 64 * 1024


def test_the_proxy_closes_the_client_when_the_backend_is_down(serve: Any) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
    proxy = serve(load_proxy().Proxy(f"tcp://127.0.0.1:{port}"), processes=False)
    with connect(proxy.addrs[0]) as s:
        assert s.recv(10) == b""


# -- pause_reading, resume_reading, on_drained --------------------------------------------------


class BigReply(gnetpy.EventHandler):
    """Each request: one reply just past the high mark, written in one callback (so, gathered)."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.drained = 0

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        c.discard()
        c.write(b"x" * (HIGH + 1))
        self.seen.append(c.outbound_buffered)

    def on_drained(self, c: gnetpy.Conn) -> Any:
        self.drained += 1


@pytest.mark.parametrize("edge_triggered", [False, True])
def test_gathered_bytes_seen_past_the_high_mark_owe_on_drained(serve: Any, edge_triggered: bool) -> None:
    """The kernel takes the whole reply at once, so no queue ever passes the mark -- but the
    handler saw outbound_buffered past it (and might have paused another connection on that,
    as examples/proxy.py does): on_drained must follow, and reading resume."""
    handler = BigReply()
    engine = serve(handler, write_high_water=HIGH, edge_triggered=edge_triggered)
    with connect(engine.addrs[0]) as s:
        for round_ in (1, 2, 3):
            s.sendall(b"go")
            assert recv_exact(s, HIGH + 1) == b"x" * (HIGH + 1)
            wait_for(lambda: handler.drained == round_)
    assert handler.seen == [HIGH + 1] * 3


def test_pause_reading_holds_input_until_resume(serve: Any) -> None:
    class Pauser(Recorder):
        def on_traffic(self, c: gnetpy.Conn) -> Any:
            data = c.next()
            c.write(data)
            if data.startswith(b"pause"):
                c.pause_reading()
                assert c.reading_paused
                c.event_loop.call_later(0.3, c.resume_reading)

    engine = serve(Pauser())
    with connect(engine.addrs[0]) as s:
        s.sendall(b"pause")
        assert recv_exact(s, 5) == b"pause"
        started = time.monotonic()
        s.sendall(b"more")
        assert recv_exact(s, 4) == b"more"
        assert time.monotonic() - started >= 0.25  # held while paused


def test_on_drained_after_the_queue_passes_the_high_mark(serve: Any) -> None:
    drained = threading.Event()

    class Big(Recorder):
        def on_traffic(self, c: gnetpy.Conn) -> Any:
            c.next()
            c.write(b"x" * (32 << 20))  # more than any kernel buffer takes at once
            assert c.reading_paused  # queue above the high mark: reading is off

        def on_drained(self, c: gnetpy.Conn) -> Any:
            assert not c.reading_paused and c.outbound_buffered <= HIGH // 4
            drained.set()

    engine = serve(Big(), write_high_water=HIGH)
    with connect(engine.addrs[0]) as s:
        s.sendall(b"go")
        assert len(recv_exact(s, 32 << 20)) == 32 << 20
        assert drained.wait(WAIT)


# -- the limits ---------------------------------------------------------------------------------


def test_max_inbound_buffered_closes_only_the_connection_that_passes_it(serve: Any) -> None:
    class NeedsAFrameEnd(Recorder):
        def on_traffic(self, c: gnetpy.Conn) -> Any:
            data = bytes(c.peek())
            if data.endswith(b"\n"):
                c.write(c.next())

    handler = NeedsAFrameEnd()
    engine = serve(handler, max_inbound_buffered=64 * 1024)
    with connect(engine.addrs[0]) as good, connect(engine.addrs[0]) as bad:
        bad.sendall(b"x" * (200 * 1024))  # no frame end: never consumed
        wait_for(lambda: handler.closed)
        err = handler.closed[0][1]
        assert isinstance(err, gnetpy.LimitExceededError) and "max_inbound_buffered (65536)" in str(err)
        good.sendall(b"still fine\n")
        assert recv_exact(good, 11) == b"still fine\n"


def test_max_connections_serves_fifty_and_the_rest_when_others_leave(serve: Any, caplog: Any) -> None:
    engine = serve(WriteEcho(), max_connections=50)
    clients = [connect(engine.addrs[0]) for _ in range(80)]  # the kernel completes every handshake (backlog)
    try:
        for i, s in enumerate(clients):
            s.sendall(b"%03d" % i)
        served: list[socket.socket] = []
        deadline = time.monotonic() + 1.0  # long enough for 50 echoes; the rest must not come
        while time.monotonic() < deadline:
            ready, _, _ = select.select([s for s in clients if s not in served], [], [], 0.1)
            for s in ready:
                assert len(recv_exact(s, 3)) == 3
                served.append(s)
        assert len(served) == 50 and engine.count_connections() == 50
        waiting = [s for s in clients if s not in served]
        for s in served[:30]:
            s.close()
        for s in waiting:  # served as the others left
            s.settimeout(WAIT)
            assert len(s.recv(3)) == 3
        wait_for(lambda: engine.count_connections() == 50)
    finally:
        for s in clients:
            s.close()
    port = engine.addrs[0][1]  # the log names the port it serves, not the 0 it was given
    assert any(f"max_connections (50) reached on tcp://127.0.0.1:{port}:" in r.getMessage() for r in caplog.records)


def test_an_async_write_flood_to_a_peer_that_does_not_read_is_refused_not_buffered(serve: Any) -> None:
    handler = Recorder()
    engine = serve(handler, async_write_limit=1 << 20)
    with connect(engine.addrs[0]):
        c = wait_for(lambda: handler.opened and handler.opened[0])
        accepted = 0
        written = threading.Event()
        with pytest.raises(gnetpy.LimitExceededError, match="async_write_limit"):
            while accepted <= 256 << 20:  # each write waits for the last: what waits is the loop's queue
                written.clear()
                c.async_write(b"f" * 65536, lambda conn, err: written.set())
                assert written.wait(WAIT)
                accepted += 65536
        assert accepted < 64 << 20  # refused long before memory filled


class FrameOk(Recorder):
    """With a length-field codec: "ok" for each whole frame."""

    def on_frame(self, c: gnetpy.Conn, frame: bytes) -> Any:
        c.write(b"ok")


def held_by_the_engine(engine: gnetpy.Engine) -> int:
    """Unconsumed inbound bytes every loop (or worker) holds: the counters max_inbound_total sums."""
    return sum((loop._counts if hasattr(loop, "_counts") else loop._counters).inbound for loop in engine._loops)


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "worker processes"])
def test_max_inbound_total_bounds_partial_frames_over_the_whole_engine(serve: Any, processes: bool) -> None:
    from gnetpy.codec import LengthFieldBasedFrameCodec

    handler = FrameOk()
    codec = LengthFieldBasedFrameCodec(length_field_length=4, initial_bytes_to_strip=4, max_frame_length=2 << 20)
    engine = serve(handler, codec=codec, num_event_loop=2, processes=processes, lb="round-robin",
                   max_inbound_total=1_000_000)
    header = (400_000).to_bytes(4, "big")
    clients = [connect(engine.addrs[0]) for _ in range(4)]  # round robin: two on each loop
    try:
        for i, s in enumerate(clients[:2]):  # 600 kB held, on two loops: under the limit
            s.sendall(header + b"p" * 300_000)
            wait_for(lambda i=i: held_by_the_engine(engine) == 300_004 * (i + 1))
        clients[2].sendall(header + b"p" * 399_999)  # 1,000,011 bytes would be held: this one is closed
        assert recv_until_eof(clients[2]) == b""
        wait_for(lambda: held_by_the_engine(engine) == 600_008)
        for s in clients[:2]:  # the others were not touched: their frames complete
            s.sendall(b"p" * 100_000)
            assert recv_exact(s, 2) == b"ok"
        wait_for(lambda: held_by_the_engine(engine) == 0)  # nothing held, nothing left over in the count
        clients[3].sendall((900_000).to_bytes(4, "big") + b"p" * 900_000)  # alone, a frame of 0.9 MB passes
        assert recv_exact(clients[3], 2) == b"ok"
    finally:
        for s in clients:
            s.close()
    if not processes:  # the handler's on_close runs in the workers in process mode
        wait_for(lambda: len(handler.closed) == 4)
        errors = [err for _, err in handler.closed if not isinstance(err, EOFError)]  # the others: our closes
        assert len(errors) == 1 and isinstance(errors[0], gnetpy.LimitExceededError)
        assert "max_inbound_total (1000000)" in str(errors[0])
