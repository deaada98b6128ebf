"""UDP: echo integrity up to the largest datagram, per-peer sessions, whole datagrams only, multicast."""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from typing import Any

import pytest

import gnetpy
from conftest import WAIT, connect, needs_ipv6, recv_exact, wait_for

MAX_V4 = 65507  # 65 535 - 20 (IPv4 header) - 8 (UDP header)


class Echo(gnetpy.EventHandler):
    def on_traffic(self, c: gnetpy.Conn) -> Any:
        c.write(c.next())


def udp_client(addr: Any) -> socket.socket:
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.settimeout(WAIT)
    s.connect(addr)
    return s


def echo_from(addr: Any, seed: int, errors: list[BaseException]) -> None:
    """Ten datagrams, 1 B to 65 507 B, each echoed whole.  UDP may drop one under load (a socket
    buffer overflows): then it is sent again -- but what comes back must always be exactly it."""
    rng = random.Random(seed)
    try:
        with udp_client(addr) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.settimeout(1.0)
            for size in [1, MAX_V4, *(rng.randint(1, MAX_V4) for _ in range(8))]:
                payload = rng.randbytes(size)
                for _attempt in range(5):
                    s.send(payload)
                    try:
                        reply = s.recv(65536)
                    except TimeoutError:
                        continue
                    assert reply == payload, f"{size}-byte datagram came back different ({len(reply)} bytes)"
                    break
                else:
                    raise TimeoutError(f"{size}-byte datagram: no echo in 5 tries")
    except BaseException as exc:
        errors.append(exc)


@pytest.mark.parametrize("family", ["udp4", pytest.param("udp6", marks=needs_ipv6)])
@pytest.mark.parametrize("mode", [{}, {"num_event_loop": 4, "processes": False}, {"num_event_loop": 4, "processes": True}],
                         ids=["1-loop", "4-threads", "4-processes"])
def test_echo_up_to_the_largest_datagram_from_ten_senders(serve: Any, family: str, mode: dict[str, Any]) -> None:
    addr = "udp4://127.0.0.1:0" if family == "udp4" else "udp6://[::1]:0"
    engine = serve(Echo(), addr, socket_recv_buffer=4 << 20, **mode)
    errors: list[BaseException] = []
    senders = [threading.Thread(target=echo_from, args=(engine.addrs[0], i, errors)) for i in range(10)]
    for t in senders:
        t.start()
    for t in senders:
        t.join(60)
    assert not errors, errors[:3]


class Sessions(gnetpy.EventHandler):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.opened: list[Any] = []
        self.closed: list[tuple[Any, BaseException | None]] = []

    def on_open(self, c: gnetpy.Conn) -> Any:
        c.context = 0
        with self.lock:
            self.opened.append(c.remote_addr)

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        c.next()
        if c.context is not None:
            c.context += 1
        c.write(b"%s" % str(c.context).encode())

    def on_close(self, c: gnetpy.Conn, err: BaseException | None) -> Any:
        with self.lock:
            self.closed.append((c.remote_addr, err))


def test_a_peer_keeps_its_context_until_its_session_expires(serve: Any) -> None:
    handler = Sessions()
    engine = serve(handler, "udp://127.0.0.1:0", udp_session_timeout=0.4)
    with udp_client(engine.addrs[0]) as a, udp_client(engine.addrs[0]) as b:
        for n in range(1, 7):  # over 0.75 s, past the timeout: a peer that keeps talking keeps its session
            time.sleep(0.15 if n > 1 else 0)
            a.send(b"x")
            assert a.recv(100) == str(n).encode()  # the same conn, its context counting
        b.send(b"x")
        assert b.recv(100) == b"1"  # another peer, another session
        assert len(handler.opened) == 2 and engine.count_connections() == 2
        wait_for(lambda: len(handler.closed) == 2)  # both go quiet: both expire
        assert all(isinstance(err, TimeoutError) and "udp_session_timeout" in str(err) for _, err in handler.closed)
        assert engine.count_connections() == 0
        a.send(b"x")
        assert a.recv(100) == b"1"  # a new session, from scratch


def test_without_sessions_every_datagram_gets_a_fresh_conn(serve: Any) -> None:
    handler = Sessions()
    engine = serve(handler, "udp://127.0.0.1:0", udp_session_timeout=0)
    with udp_client(engine.addrs[0]) as a:
        for _ in range(3):
            a.send(b"x")
            assert a.recv(100) == b"None"  # gnet's behaviour: no on_open, no context kept
    assert handler.opened == [] and handler.closed == [] and engine.count_connections() == 0


def test_max_udp_sessions_bounds_the_table_and_serves_the_rest_without(serve: Any, caplog: Any) -> None:
    handler = Sessions()
    engine = serve(handler, "udp://127.0.0.1:0", max_udp_sessions=5)
    clients = [udp_client(engine.addrs[0]) for _ in range(10)]
    try:
        replies = []
        for s in clients:
            s.send(b"x")
            replies.append(s.recv(100))
        assert replies.count(b"1") == 5 and replies.count(b"None") == 5
        assert engine.count_connections() == 5
        assert any("max_udp_sessions (5) reached" in r.getMessage() for r in caplog.records)
    finally:
        for s in clients:
            s.close()


def test_a_datagram_conn_writes_whole_datagrams_and_refuses_stream_operations(serve: Any) -> None:
    outcomes: list[Any] = []

    class Probe(gnetpy.EventHandler):
        def on_traffic(self, c: gnetpy.Conn) -> Any:
            data = c.next()
            for op in (lambda: c.writev([b"a", b"b"]), lambda: c.async_writev([b"a"]), c.dup,
                       lambda: c.set_no_delay(True)):
                try:
                    op()
                except gnetpy.GnetError as exc:
                    outcomes.append(type(exc).__name__)
            try:
                c.send_to(b"x", ("localhost", 1))
            except ValueError as exc:
                outcomes.append(str(exc))
            threading.Thread(target=c.async_write, args=(b"from a thread: " + data,)).start()

    engine = serve(Probe(), "udp://127.0.0.1:0")
    with udp_client(engine.addrs[0]) as s:
        s.send(b"hello")
        assert s.recv(100) == b"from a thread: hello"
    assert outcomes[:4] == ["UnsupportedOperationError"] * 3 + ["UnsupportedProtocolError"]
    assert "is a name" in outcomes[4]


def test_send_to_reaches_another_peer(serve: Any) -> None:
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    other.settimeout(WAIT)

    class Forward(gnetpy.EventHandler):
        def on_traffic(self, c: gnetpy.Conn) -> Any:
            c.send_to(c.next(), f"udp://127.0.0.1:{other.getsockname()[1]}")

    try:
        engine = serve(Forward(), "udp://127.0.0.1:0")
        with udp_client(engine.addrs[0]) as s:
            s.send(b"forward me")
            data, sender = other.recvfrom(100)
        assert data == b"forward me" and sender[1] == engine.addrs[0][1]
    finally:
        other.close()


def test_a_burst_arrives_as_whole_datagrams_or_not_at_all(serve: Any) -> None:
    """Loopback may drop some of a burst (the receiver's buffer is full): never a part of one."""
    class Burst(gnetpy.EventHandler):
        def on_traffic(self, c: gnetpy.Conn) -> Any:
            c.next()
            for i in range(400):
                c.write(struct.pack("!I", i) * 2000)  # 8000-byte datagrams

    engine = serve(Burst(), "udp://127.0.0.1:0")
    with udp_client(engine.addrs[0]) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.send(b"go")
        got = []
        s.settimeout(1.0)
        try:
            while True:
                got.append(s.recv(65536))
        except TimeoutError:
            pass
    assert got
    for datagram in got:
        assert len(datagram) == 8000 and datagram == datagram[:4] * 2000


def test_udp_beside_tcp_and_unix_in_one_engine(serve: Any, tmp_path: Any) -> None:
    engine = serve(Echo(), ["tcp://127.0.0.1:0", "udp://127.0.0.1:0", f"unix://{tmp_path}/m.sock"])
    tcp, udp, unix = engine.addrs
    with connect(tcp) as a, connect(unix) as b, udp_client(udp) as c:
        a.sendall(b"tcp")
        b.sendall(b"unix")
        c.send(b"udp")
        assert recv_exact(a, 3) == b"tcp" and recv_exact(b, 4) == b"unix" and c.recv(10) == b"udp"


def test_a_udp_flood_does_not_starve_tcp_connections(serve: Any) -> None:
    engine = serve(Echo(), ["tcp://127.0.0.1:0", "udp://127.0.0.1:0"], processes=False)
    udp = engine.event_loops[0]._datagrams[0]
    receive, last = udp._receive, []

    def never_empty(source: Any, size: int) -> Any:  # a flood the loop cannot outrun: one sender in this
        try:                                         # process shares our GIL and lets the socket drain
            last[:] = [receive(source, size)]
        except BlockingIOError:
            if not last:
                raise
        return last[0]

    udp._receive = never_empty
    stop = threading.Event()

    def flood() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            while not stop.is_set():
                for _ in range(100):
                    try:
                        s.sendto(b"f" * 64, engine.addrs[1])
                    except OSError:
                        pass

    flooder = threading.Thread(target=flood)
    flooder.start()
    try:
        with connect(engine.addrs[0]) as s:
            worst = 0.0
            for _ in range(50):
                started = time.monotonic()
                s.sendall(b"ping")
                assert recv_exact(s, 4) == b"ping"
                worst = max(worst, time.monotonic() - started)
        assert worst < 1.0  # a batch of datagrams per event, then the others' turn
    finally:
        stop.set()
        flooder.join(WAIT)


def test_multicast_group_membership_on_loopback(serve: Any) -> None:
    group = "239.255.77.77"
    try:
        engine = serve(Echo(), f"udp4://{group}:0", multicast_interface_index=socket.if_nametoindex("lo"))
    except OSError as exc:
        pytest.skip(f"this kernel refuses multicast membership on loopback: {exc}")
    with open("/proc/net/igmp") as f:  # joined, whether or not this kernel delivers on loopback
        assert socket.inet_aton(group)[::-1].hex().upper() in f.read()
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        sender.bind(("127.0.0.1", 0))
        sender.settimeout(2)
        sender.sendto(b"to the group", (group, engine.addrs[0][1]))
        try:
            assert sender.recv(100) == b"to the group"
        except TimeoutError:
            pytest.skip("multicast on loopback is not delivered by this kernel (joined, nothing arrived)")
    finally:
        sender.close()
