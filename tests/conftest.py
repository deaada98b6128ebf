"""Fixtures and helpers shared by every test: engines that always stop, bounded waits, real sockets.

Every engine a test starts goes through ``serve`` so that it is stopped (and
its threads joined) even when the test fails; every wait here has a timeout.
"""

from __future__ import annotations

import gc
import os
import random
import selectors
import socket
import threading
import time
from typing import Any, Callable, Iterator

import pytest

import gnetpy

WAIT = 10.0  # the longest any single wait in the suite may take


def wait_for(predicate: Callable[[], Any], timeout: float = WAIT, interval: float = 0.005) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {getattr(predicate, '__name__', predicate)}")
        time.sleep(interval)


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="SO_BINDTODEVICE needs CAP_NET_RAW")


def kernel_size(requested: int) -> int:
    """What getsockopt reports for a SO_RCVBUF/SO_SNDBUF of ``requested`` (below the sysctl caps).

    Linux reserves as much again for bookkeeping and reports the doubled value.
    """
    return 2 * requested


def sockopt(sock: socket.socket, level: int, name: int) -> int:
    return sock.getsockopt(level, name)


def connect(addr: Any, timeout: float = WAIT) -> socket.socket:
    """A blocking client socket (with a timeout) to an ``engine.addrs`` entry."""
    if isinstance(addr, str):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(timeout)
        s.connect(addr)
        return s
    s = socket.create_connection(addr, timeout=timeout)
    return s


def recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise EOFError(f"peer closed after {len(chunks)} of {n} bytes")
        chunks += chunk
    return bytes(chunks)


def read_line(sock: socket.socket) -> str:
    """One line, without its newline, read a byte at a time (what follows it stays in the socket)."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise EOFError(f"closed after {line!r}")
        line += chunk
    return line.decode()[:-1]


def recv_until_eof(sock: socket.socket) -> bytes:
    chunks = bytearray()
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return bytes(chunks)
        chunks += chunk


def exchange(addr: Any, payloads: list[list[bytes]], timeout: float = 60.0) -> list[bytes]:
    """Drive one connection per payload list concurrently from one thread; return what each received.

    Each connection sends its payloads back to back while reading, and is
    done when it has received as many bytes as it sent.
    """
    sel = selectors.DefaultSelector()
    state = []
    try:
        for items in payloads:
            s = connect(addr)
            s.setblocking(False)
            outbound = memoryview(b"".join(items))
            entry = {"sock": s, "out": outbound, "sent": 0, "got": bytearray(), "want": len(outbound)}
            state.append(entry)
            sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, entry)
        deadline = time.monotonic() + timeout
        pending = len(state)
        while pending:
            if time.monotonic() > deadline:
                progress = [(len(e["got"]), e["want"]) for e in state]
                raise TimeoutError(f"exchange timed out; received/expected per connection: {progress}")
            for key, mask in sel.select(0.5):
                e = key.data
                if mask & selectors.EVENT_WRITE and e["sent"] < e["want"]:
                    try:
                        e["sent"] += e["sock"].send(e["out"][e["sent"]:e["sent"] + 262144])
                    except BlockingIOError:
                        pass
                    if e["sent"] == e["want"]:
                        sel.modify(e["sock"], selectors.EVENT_READ, e)
                if mask & selectors.EVENT_READ:
                    try:
                        chunk = e["sock"].recv(1 << 20)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        raise EOFError(f"server closed a connection after {len(e['got'])} of {e['want']} bytes")
                    e["got"] += chunk
                    if len(e["got"]) >= e["want"]:
                        sel.unregister(e["sock"])
                        pending -= 1
        return [bytes(e["got"]) for e in state]
    finally:
        for e in state:
            e["sock"].close()
        sel.close()


MiB = 1 << 20
ECHO_CLIENTS = 10


def random_payloads(rng: random.Random) -> list[bytes]:
    """1 byte, 1 MiB, and a log-uniform spread between, in random order."""
    sizes = [1, MiB] + [int(2 ** rng.uniform(0, 20)) for _ in range(3)]
    rng.shuffle(sizes)
    return [rng.randbytes(size) for size in sizes]


class WriteEcho(gnetpy.EventHandler):
    def on_traffic(self, c: gnetpy.Conn) -> Any:
        c.write(c.next())


def run_echo(serve: Any, handler: gnetpy.EventHandler, addr: str, seed: int, **options: Any) -> None:
    """ECHO_CLIENTS concurrent clients send random payloads (1 B to 1 MiB); every byte must come back in order."""
    rng = random.Random(seed)
    payloads = [random_payloads(rng) for _ in range(ECHO_CLIENTS)]
    engine = serve(handler, addr, **options)
    received = exchange(engine.addrs[0], payloads)
    for i, (sent, got) in enumerate(zip(payloads, received)):
        expected = b"".join(sent)
        if got != expected:
            first_bad = next((k for k, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
            pytest.fail(f"client {i}: echo differs at byte {first_bad} ({len(got)} received, {len(expected)} sent)")


class Recorder(gnetpy.EventHandler):
    """An echo handler that records what happened, for assertions."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.opened: list[gnetpy.Conn] = []
        self.closed: list[tuple[gnetpy.Conn, BaseException | None]] = []

    def on_open(self, c: gnetpy.Conn) -> Any:
        with self.lock:
            self.opened.append(c)

    def on_close(self, c: gnetpy.Conn, err: BaseException | None) -> Any:
        with self.lock:
            self.closed.append((c, err))

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        c.write(c.next())


@pytest.fixture
def serve() -> Iterator[Callable[..., gnetpy.Engine]]:
    """``serve(handler, addrs, **options)`` starts an engine that is stopped when the test ends."""
    engines: list[gnetpy.Engine] = []

    def start(handler: gnetpy.EventHandler, addrs: Any = "tcp://127.0.0.1:0", **options: Any) -> gnetpy.Engine:
        engine = gnetpy.start(handler, addrs, **options)
        engines.append(engine)
        return engine

    yield start
    for engine in engines:
        engine.stop(timeout=5)
        assert engine.wait(WAIT), "engine did not stop"


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def gnetpy_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("gnetpy")]


def child_processes() -> list[int]:
    """This process's children (worker processes, subprocesses), exited-but-unreaped ones included."""
    pids: list[int] = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                pids.extend(int(pid) for pid in f.read().split())
        except FileNotFoundError:  # a thread that just ended
            pass
    return pids


def open_sockets() -> set[int]:
    sockets = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                sockets.add(int(fd))
        except OSError:  # closed meanwhile
            pass
    return sockets


@pytest.fixture(autouse=True)
def no_leaked_threads_processes_or_sockets() -> Iterator[None]:
    """Every test must leave no gnetpy thread, no child process and no socket behind."""
    before = open_sockets()
    yield
    wait_for(lambda: not gnetpy_threads(), timeout=WAIT)
    wait_for(lambda: not child_processes(), timeout=WAIT)
    gc.collect()  # a socket only a reference cycle still holds is the test's garbage, not a leak
    left = open_sockets() - before
    assert not left, f"the test left {len(left)} socket(s) open: {sorted(left)}"


# -- pollers, socket pairs, wakers (the poller, waker and task-queue tests) ------------------

POLLER_KINDS = ["epoll", "poll"]


@pytest.fixture(params=POLLER_KINDS)
def poller(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Each backend in turn, level-triggered."""
    from gnetpy.poller import new_poller

    p = new_poller(request.param, False)
    yield p
    p.close()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected unix stream pair."""
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def waker() -> Iterator[Any]:
    from gnetpy.waker import Waker

    w = Waker()
    yield w
    if w.fd >= 0:
        w.close()


def events(p: Any, timeout: float = 0) -> dict[int, int]:
    """What a poller reports within ``timeout``, as {fd: mask}."""
    return dict(p.poll(timeout, 64))
