"""Client and EventLoop.dial: non-blocking connects, against gnetpy and against a peer no one here wrote (Redis).

redis-server comes from Debian's registry (``.ci/run`` installs it); each
test that needs it starts its own on a free loopback port and stops it.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

import gnetpy
from conftest import WAIT, WriteEcho, open_fds, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Collect(gnetpy.EventHandler):
    """Gathers what each connection receives; ``await_bytes`` waits for a count."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.opened: list[gnetpy.Conn] = []
        self.closed: list[tuple[gnetpy.Conn, BaseException | None]] = []

    def on_open(self, c: gnetpy.Conn) -> Any:
        if c.context is None:
            c.context = bytearray()
        with self.cond:
            self.opened.append(c)

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        data = c.next()
        with self.cond:
            c.context += data
            self.cond.notify_all()

    def on_close(self, c: gnetpy.Conn, err: BaseException | None) -> Any:
        with self.cond:
            self.closed.append((c, err))
            self.cond.notify_all()

    def await_bytes(self, c: gnetpy.Conn, n: int, timeout: float = WAIT) -> bytes:
        with self.cond:
            if not self.cond.wait_for(lambda: len(c.context) >= n, timeout):
                raise TimeoutError(f"{len(c.context)} of {n} bytes")
            return bytes(c.context)


def run_dials(client: gnetpy.Client, addr: str, count: int, threads: int) -> None:
    """``count`` dials from ``threads`` threads at once, each echoing a random payload."""
    handler = client._engine._handler
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(count // threads):
                c = client.dial(addr, timeout=WAIT)
                payload = rng.randbytes(rng.randint(1, 200_000))
                c.async_write(payload)
                assert handler.await_bytes(c, len(payload)) == payload
                c.close()
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    assert not errors, errors[:3]


def test_two_hundred_dials_from_eight_threads(serve: Any) -> None:
    engine = serve(WriteEcho())
    with gnetpy.Client(Collect(), num_event_loop=2) as client:
        run_dials(client, f"tcp://127.0.0.1:{engine.addrs[0][1]}", 200, 8)
        wait_for(lambda: client.count_connections() == 0)


def test_dials_to_a_server_in_another_process(tmp_path: Any) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "gnetpy", "echo", "--addr", "tcp://127.0.0.1:0", "--loops", "2"],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "src")},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        port = None
        while port is None:
            line = proc.stdout.readline()
            assert line, "the server exited"
            if "echo server on" in line:
                port = int(line.rsplit(",", 1)[1].strip(" )]\n"))
        with gnetpy.Client(Collect()) as client:
            run_dials(client, f"tcp://127.0.0.1:{port}", 40, 4)
    finally:
        proc.terminate()
        proc.communicate(timeout=WAIT)


def test_dial_by_host_name_and_over_unix(serve: Any, tmp_path: Any) -> None:
    engine = serve(WriteEcho(), ["tcp://127.0.0.1:0", f"unix://{tmp_path}/e.sock"])
    handler = Collect()
    with gnetpy.Client(handler) as client:
        for addr in (f"tcp://localhost:{engine.addrs[0][1]}", f"unix://{engine.addrs[1]}"):
            c = client.dial(addr, timeout=WAIT)
            assert handler.opened[-1] is c  # on_open ran before dial returned
            c.async_write(b"ping")
            assert handler.await_bytes(c, 4) == b"ping"


def test_a_refused_dial_raises_and_leaves_nothing_open() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once it is closed
    handler = Collect()
    with gnetpy.Client(handler) as client:
        before = open_fds()
        for _ in range(3):
            with pytest.raises(ConnectionRefusedError):
                client.dial(f"tcp://127.0.0.1:{port}", timeout=WAIT)
        assert open_fds() == before
        assert client.count_connections() == 0 and handler.opened == []


def test_a_dial_that_gets_no_answer_times_out_and_leaves_nothing_open() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    try:
        for _ in range(8):  # fill the backlog: the next SYN gets no answer
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(listener.getsockname())
            except BlockingIOError:
                pass
            fillers.append(s)
        with gnetpy.Client(Collect()) as client:
            before = open_fds()
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                client.dial(f"tcp://127.0.0.1:{listener.getsockname()[1]}", timeout=0.2)
            assert 0.19 <= time.monotonic() - started < 2
            assert open_fds() == before
            assert not client.event_loops[0]._dials and client.count_connections() == 0
    finally:
        for s in fillers:
            s.close()
        listener.close()


def test_bad_dial_arguments_are_named() -> None:
    with gnetpy.Client(Collect()) as client:
        with pytest.raises(gnetpy.UnsupportedProtocolError, match="connected UDP"):
            client.dial("udp://127.0.0.1:53")
        with pytest.raises(gnetpy.InvalidAddressError, match="missing ':port'"):
            client.dial("tcp://127.0.0.1")
        with pytest.raises(ValueError, match="timeout"):
            client.dial("tcp://127.0.0.1:1", timeout=-1)
        with pytest.raises(OSError, match="cannot resolve"):
            client.dial("tcp://no-such-host.invalid:80", timeout=WAIT)
    with pytest.raises(gnetpy.EngineStoppedError, match="not started"):
        gnetpy.Client(Collect()).dial("tcp://127.0.0.1:1")
    with pytest.raises(ValueError, match="threads"):
        gnetpy.Client(Collect(), processes=True)


def test_dial_from_a_client_callback_is_refused_with_the_way_out(serve: Any) -> None:
    engine = serve(WriteEcho())
    seen: list[BaseException] = []

    class Redials(Collect):
        def on_traffic(self, c: gnetpy.Conn) -> Any:
            c.next()
            try:
                client.dial(f"tcp://127.0.0.1:{engine.addrs[0][1]}")
            except RuntimeError as exc:
                seen.append(exc)

    with gnetpy.Client(Redials()) as client:
        c = client.dial(f"tcp://127.0.0.1:{engine.addrs[0][1]}")
        c.async_write(b"x")
        wait_for(lambda: seen)
    assert "event_loop.dial" in str(seen[0])


def test_stop_flushes_and_closes_every_client_connection(serve: Any) -> None:
    received: list[int] = []

    class Counts(gnetpy.EventHandler):
        def on_traffic(self, c: gnetpy.Conn) -> Any:
            c.context = (c.context or 0) + len(c.next())

        def on_close(self, c: gnetpy.Conn, err: BaseException | None) -> Any:
            received.append(c.context or 0)

    engine = serve(Counts())
    handler = Collect()
    client = gnetpy.Client(handler).start()
    conns = [client.dial(f"tcp://127.0.0.1:{engine.addrs[0][1]}") for _ in range(3)]
    for c in conns:
        c.async_write(b"z" * (4 << 20))
    client.stop()
    assert all(c.closed for c in conns) and [err for _, err in handler.closed] == [None, None, None]
    wait_for(lambda: len(received) == 3)
    assert received == [4 << 20] * 3


def test_event_loop_dial_from_a_server_callback_pairs_on_one_loop(serve: Any) -> None:
    """A proxy's move: from on_open of an accepted connection, dial a backend on the same loop."""
    backend = serve(WriteEcho())
    results: list[tuple[Any, Any]] = []

    class Front(gnetpy.EventHandler):
        def on_open(self, c: gnetpy.Conn) -> Any:
            if c.context == "backend":
                return None
            c.event_loop.dial(f"tcp://localhost:{backend.addrs[0][1]}",  # a name: resolved off the loop
                              lambda b, err: results.append((b, err, c.event_loop)), WAIT, context="backend")
            return None

    front = serve(Front(), processes=False)
    with socket.create_connection(front.addrs[0], timeout=WAIT):
        wait_for(lambda: results)
    conn, err, loop = results[0]
    assert err is None and conn.context == "backend" and conn.event_loop is loop


def test_event_loop_dial_failures_reach_the_callback(serve: Any) -> None:
    outcomes: list[BaseException | None] = []

    class Dialer(gnetpy.EventHandler):
        def on_open(self, c: gnetpy.Conn) -> Any:
            c.event_loop.dial("tcp://127.0.0.1:1", lambda b, err: outcomes.append(err), WAIT)
            c.event_loop.dial("tcp://no-such-host.invalid:1", lambda b, err: outcomes.append(err), WAIT)

    front = serve(Dialer(), processes=False)
    with socket.create_connection(front.addrs[0], timeout=WAIT):
        wait_for(lambda: len(outcomes) == 2)
    assert any(isinstance(e, ConnectionRefusedError) for e in outcomes)
    assert any(isinstance(e, OSError) and "cannot resolve" in str(e) for e in outcomes)


# -- a real peer: redis-server ---------------------------------------------------------------


@pytest.fixture
def redis(tmp_path: Any) -> Any:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (.ci/run installs it from Debian's registry)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _accepts(port))
        yield f"tcp://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(WAIT)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class Resp(gnetpy.EventHandler):
    """Just enough RESP to read replies: simple strings, integers, bulk strings."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.replies: list[Any] = []

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        while True:
            reply = self._parse(c)
            if reply is None:
                return None
            with self.cond:
                self.replies.append(reply)
                self.cond.notify_all()

    @staticmethod
    def _parse(c: gnetpy.Conn) -> Any:
        data = bytes(c.peek())
        end = data.find(b"\r\n")
        if end < 0:
            return None
        kind, body = data[:1], data[1:end]
        if kind == b"$":
            size = int(body)
            if size < 0:
                c.next(end + 2)
                return b""
            if len(data) < end + 2 + size + 2:
                return None
            c.next(end + 2)
            value = c.next(size)
            c.next(2)
            return value
        c.next(end + 2)
        return int(body) if kind == b":" else body.decode()

    def wait(self, n: int) -> list[Any]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.replies) >= n, 30), f"{len(self.replies)} of {n} replies"
            return list(self.replies)


def command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def test_a_client_conn_talks_to_redis(redis: str) -> None:
    handler = Resp()
    value = os.urandom(1 << 20)
    with gnetpy.Client(handler) as client:
        c = client.dial(redis, timeout=WAIT)
        c.async_write(command(b"PING"))
        assert handler.wait(1) == ["PONG"]
        c.async_write(command(b"SET", b"gnetpy:big", value))
        c.async_write(command(b"GET", b"gnetpy:big"))
        assert handler.wait(3)[1:] == ["OK", value]
        batch = command(b"DEL", b"gnetpy:n") + command(b"INCR", b"gnetpy:n") * 10_000
        c.async_write(batch)  # pipelined: one write, 10 001 replies
        replies = handler.wait(3 + 10_001)[3:]
        assert replies[1:] == list(range(1, 10_001))
