"""The PROXY protocol on real sockets: what the handler sees, what is refused, and gnetpy sending a header.

Every header is sent by a plain socket on loopback.  Most are built by
``gnetpy.proxyproto``'s encoders, but the ones that must be refused are written
out by hand.  The parser's byte-level rules are tested in tests/test_proxyproto.py.
This module checks the engine's part: the reader before ``on_open``
(proxystage.py), the addresses a header gives, the bytes that follow it,
``proxy_trusted``, ``proxy_header_timeout``, TLS after the header, worker
processes, and ``dial(proxy_header=...)``.  A refused connection must never reach
the handler: no ``on_open``, no ``on_close``, one ``proxy_refused`` count, and
nothing logged above DEBUG.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
from typing import Any

import pytest

import gnetpy
from conftest import WAIT, connect, has_ipv6_loopback, needs_ipv6, read_line, recv_exact, wait_for
from gnetpy.proxyproto import encode_v1, encode_v2

VERSIONS = ["v1", "v2"]
CLIENT4, SERVER4 = ("192.0.2.10", 40001), ("198.51.100.7", 443)  # documentation networks: never local
CLIENT6, SERVER6 = ("2001:db8::10", 40002), ("2001:db8:1::7", 8443)


def header(version: str, family: str = "TCP4", source: Any = CLIENT4, destination: Any = SERVER4) -> bytes:
    if version == "v1":
        return encode_v1(family, source, destination)
    return encode_v2("PROXY", family, source, destination)


class Seen(gnetpy.EventHandler):
    """Echoes, and records what each connection looked like in ``on_open``, and every close."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.opened: list[dict[str, Any]] = []
        self.closed: list[BaseException | None] = []

    def on_open(self, c: gnetpy.Conn) -> Any:
        facts = {"remote": c.remote_addr, "local": c.local_addr, "proxy": c.proxy,
                 "tls": getattr(c, "tls", None) is not None}
        with self.lock:
            self.opened.append(facts)

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        c.write(c.next())

    def on_close(self, c: gnetpy.Conn, err: BaseException | None) -> Any:
        with self.lock:
            self.closed.append(err)


def refused(engine: gnetpy.Engine) -> int:
    return engine.count_proxy_refused()


def nodelay(s: socket.socket) -> socket.socket:
    if s.family != socket.AF_UNIX:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def send_one_segment(s: socket.socket, data: bytes) -> None:
    """One send() call: on loopback (MTU 64 KiB) the bytes arrive together, header and what follows it."""
    assert s.send(data) == len(data)


def closed_by_server(s: socket.socket, timeout: float = WAIT) -> bytes:
    """Read until the server's end of stream (or reset); return whatever came first (nothing, for a refusal)."""
    s.settimeout(timeout)
    got = bytearray()
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return bytes(got)
            got += chunk
    except ConnectionResetError:  # closed with our bytes unread: the kernel answers with a reset
        return bytes(got)


def echo_once(s: socket.socket, data: bytes) -> bytes:
    s.sendall(data)
    return recv_exact(s, len(data))


def gnetpy_records_above_debug(caplog: Any) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno > logging.DEBUG and r.name.startswith("gnetpy") and "serving" not in r.getMessage()]


# -- what on_open sees ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_tcp4_header_gives_the_clients_addresses_and_the_bytes_after_it_arrive(serve: Any, version: str) -> None:
    handler = Seen()
    engine = serve(handler, proxy_protocol=version)
    with nodelay(connect(engine.addrs[0])) as s:
        send_one_segment(s, header(version) + b"first bytes, same segment")
        assert recv_exact(s, 25) == b"first bytes, same segment"
        assert echo_once(s, b"and after") == b"and after"
    wait_for(lambda: handler.closed)
    (seen,) = handler.opened
    assert seen["remote"] == CLIENT4 and seen["local"] == SERVER4
    info = seen["proxy"]
    assert isinstance(info, gnetpy.ProxyInfo)
    assert (info.version, info.command, info.family) == (int(version[1]), "PROXY", "TCP4")
    assert (info.source, info.destination) == (CLIENT4, SERVER4)
    assert refused(engine) == 0


@pytest.mark.parametrize("listener", ["tcp4", pytest.param("tcp6", marks=needs_ipv6)])
@pytest.mark.parametrize("version", VERSIONS)
def test_tcp6_header_gives_ipv6_addresses_that_need_not_be_local(serve: Any, version: str, listener: str) -> None:
    handler = Seen()
    addr = "tcp://127.0.0.1:0" if listener == "tcp4" else "tcp6://[::1]:0"
    engine = serve(handler, addr, proxy_protocol=version)
    with nodelay(connect(engine.addrs[0])) as s:
        send_one_segment(s, header(version, "TCP6", CLIENT6, SERVER6) + b"v6")
        assert recv_exact(s, 2) == b"v6"
    wait_for(lambda: handler.closed)
    (seen,) = handler.opened
    assert seen["remote"] == CLIENT6 and seen["local"] == SERVER6
    assert seen["proxy"].family == "TCP6"


def test_v2_unix_header_gives_paths(serve: Any) -> None:
    handler = Seen()
    engine = serve(handler, proxy_protocol="v2")
    with nodelay(connect(engine.addrs[0])) as s:
        send_one_segment(s, encode_v2("PROXY", "UNIX", "/run/client.sock", "/run/app.sock") + b"unix")
        assert recv_exact(s, 4) == b"unix"
    wait_for(lambda: handler.closed)
    (seen,) = handler.opened
    assert seen["remote"] == "/run/client.sock" and seen["local"] == "/run/app.sock"
    assert (seen["proxy"].command, seen["proxy"].family) == ("PROXY", "UNIX")


UNKNOWN_HEADERS = {
    "v1-unknown": (b"PROXY UNKNOWN\r\n", "v1", "PROXY"),
    # "the receiver must ignore anything presented before the CRLF": the longest such line
    "v1-unknown-long": (b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", "v1", "PROXY"),
    "v2-local": (encode_v2("LOCAL"), "v2", "LOCAL"),  # what a health check sends
    "v2-proxy-unknown": (encode_v2("PROXY", "UNKNOWN"), "v2", "PROXY"),
}


@pytest.mark.parametrize("kind", sorted(UNKNOWN_HEADERS))
def test_unknown_and_local_keep_the_sockets_own_addresses(serve: Any, kind: str) -> None:
    raw, mode, command = UNKNOWN_HEADERS[kind]
    handler = Seen()
    engine = serve(handler, proxy_protocol=mode)
    with nodelay(connect(engine.addrs[0])) as s:
        send_one_segment(s, raw + b"hc")
        assert recv_exact(s, 2) == b"hc"
        own = s.getsockname()
    wait_for(lambda: handler.closed)
    (seen,) = handler.opened
    assert seen["remote"] == own and seen["local"] == tuple(engine.addrs[0])
    assert seen["proxy"].command == command and seen["proxy"].family == "UNKNOWN"
    assert seen["proxy"].source is None and seen["proxy"].destination is None


def test_v2_tlvs_reach_c_proxy(serve: Any) -> None:
    handler = Seen()
    engine = serve(handler, proxy_protocol="v2")
    raw = encode_v2("PROXY", "TCP4", CLIENT4, SERVER4,
                    tlvs=[(0x01, b"h2"), (0x02, b"api.example.com"), (0x05, b"req-42")], crc32c=True)
    with nodelay(connect(engine.addrs[0])) as s:
        send_one_segment(s, raw + b"x")
        assert recv_exact(s, 1) == b"x"
    wait_for(lambda: handler.closed)
    info = handler.opened[0]["proxy"]
    assert (info.alpn, info.authority, info.unique_id) == (b"h2", "api.example.com", b"req-42")


# Edge-triggered, the header stage stops reading at the header's end (one 4 KiB read at most), so
# whatever is still in the socket -- more data, the peer's FIN -- raises no new edge: the loop must read on.
TRIGGERS = [False, True]


@pytest.mark.parametrize("edge_triggered", TRIGGERS)
@pytest.mark.parametrize("version", VERSIONS)
def test_a_large_payload_in_the_headers_segment_is_echoed_whole(serve: Any, version: str,
                                                               edge_triggered: bool) -> None:
    handler = Seen()
    engine = serve(handler, proxy_protocol=version, edge_triggered=edge_triggered)
    payload = bytes(k % 251 for k in range(30000))  # more than one read of the header stage (4 KiB)
    with nodelay(connect(engine.addrs[0], timeout=2)) as s:
        send_one_segment(s, header(version) + payload)
        got = bytearray()
        try:
            while len(got) < len(payload):
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        except TimeoutError:
            pass
        assert len(got) == len(payload) and got == payload


@pytest.mark.parametrize("edge_triggered", TRIGGERS)
@pytest.mark.parametrize("version", VERSIONS)
def test_header_data_and_eof_arriving_together(serve: Any, version: str, edge_triggered: bool) -> None:
    """on_open, on_traffic with the data, then on_close for the end of file -- nothing left unread."""
    handler = Seen()
    engine = serve(handler, proxy_protocol=version, edge_triggered=edge_triggered)
    with nodelay(connect(engine.addrs[0])) as s:
        s.sendall(header(version) + b"last words")
        s.shutdown(socket.SHUT_WR)
        assert closed_by_server(s, timeout=2) == b"last words"
    wait_for(lambda: handler.closed, timeout=2)
    assert handler.opened[0]["remote"] == CLIENT4 and isinstance(handler.closed[0], EOFError)


@pytest.mark.parametrize("version", VERSIONS)
def test_a_header_sent_one_byte_at_a_time(serve: Any, version: str) -> None:
    handler = Seen()
    engine = serve(handler, proxy_protocol=version)
    if version == "v1":
        raw = header("v1", "TCP6", CLIENT6, SERVER6)
    else:
        raw = encode_v2("PROXY", "TCP6", CLIENT6, SERVER6, tlvs=[(0x02, b"a.example")], crc32c=True)
    with nodelay(connect(engine.addrs[0])) as s:
        for i in range(len(raw) - 1):
            s.send(raw[i:i + 1])
            time.sleep(0.001)  # each byte its own segment, most of them their own read
        time.sleep(0.05)
        assert handler.opened == []  # not open before the header is whole
        s.send(raw[-1:])
        wait_for(lambda: handler.opened)
        assert echo_once(s, b"after") == b"after"
    wait_for(lambda: handler.closed)
    assert handler.opened[0]["remote"] == CLIENT6 and handler.opened[0]["local"] == SERVER6
    assert refused(engine) == 0


# -- modes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sent", VERSIONS)
def test_any_accepts_both_versions(serve: Any, sent: str) -> None:
    handler = Seen()
    engine = serve(handler, proxy_protocol="any")
    with nodelay(connect(engine.addrs[0])) as s:
        send_one_segment(s, header(sent) + b"ok")
        assert recv_exact(s, 2) == b"ok"
    wait_for(lambda: handler.closed)
    assert handler.opened[0]["remote"] == CLIENT4 and handler.opened[0]["proxy"].version == int(sent[1])


@pytest.mark.parametrize("mode, sent", [("v1", "v2"), ("v2", "v1")])
def test_a_listener_for_one_version_refuses_the_other(serve: Any, caplog: Any, mode: str, sent: str) -> None:
    handler = Seen()
    engine = serve(handler, proxy_protocol=mode)
    with caplog.at_level(logging.DEBUG, "gnetpy"):
        with nodelay(connect(engine.addrs[0])) as s:
            send_one_segment(s, header(sent) + b"data")
            assert closed_by_server(s) == b""
        wait_for(lambda: refused(engine) == 1)
    assert handler.opened == [] and handler.closed == []
    assert gnetpy_records_above_debug(caplog) == []


# -- refusals ----------------------------------------------------------------------------------------

V2_HEAD = header("v2")
BAD = {
    "no-header": b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "garbage": bytes(range(256)),
    "tls-hello-without-header": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32),
    "v1-oversized": b"PROXY UNKNOWN " + b"x" * 200 + b"\r\n",  # no CRLF within the spec's 107 bytes
    "v1-bad-address": b"PROXY TCP4 300.1.2.3 10.0.0.1 1 2\r\n",
    "v2-bad-version": V2_HEAD[:12] + b"\x31" + V2_HEAD[13:],
    "v2-short-length": V2_HEAD[:14] + b"\x00\x04" + V2_HEAD[16:],  # shorter than a TCP4 address block
}
BAD_CASES = [(name, mode) for name in BAD for mode in ("v1", "v2", "any")
             if not (name.startswith("v1-") and mode == "v2") and not (name.startswith("v2-") and mode == "v1")]


@pytest.mark.parametrize("name, mode", BAD_CASES)
def test_a_bad_header_closes_unseen_counted_and_logged_at_debug(serve: Any, caplog: Any, name: str,
                                                                mode: str) -> None:
    handler = Seen()
    engine = serve(handler, proxy_protocol=mode)
    with caplog.at_level(logging.DEBUG, "gnetpy"):
        with nodelay(connect(engine.addrs[0])) as good:
            send_one_segment(good, header("v2" if mode == "v2" else "v1"))
            with nodelay(connect(engine.addrs[0])) as bad:
                bad.sendall(BAD[name])
                assert closed_by_server(bad) == b""
            wait_for(lambda: refused(engine) == 1)
            assert echo_once(good, b"still served") == b"still served"  # the loop serves on
        wait_for(lambda: len(handler.closed) == 1)
    assert len(handler.opened) == 1 and handler.closed == [handler.closed[0]]  # only the good one
    assert gnetpy_records_above_debug(caplog) == []
    assert any("PROXY" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)


PARTIAL = {"v1": header("v1")[:20], "v2": header("v2")[:20]}


@pytest.mark.parametrize("version", VERSIONS)
def test_a_partial_header_then_eof_is_refused(serve: Any, caplog: Any, version: str) -> None:
    handler = Seen()
    engine = serve(handler, proxy_protocol=version)
    with caplog.at_level(logging.DEBUG, "gnetpy"):
        with nodelay(connect(engine.addrs[0])) as s:
            s.sendall(PARTIAL[version])
            time.sleep(0.05)
            s.shutdown(socket.SHUT_WR)
            assert closed_by_server(s) == b""
        wait_for(lambda: refused(engine) == 1)
    assert handler.opened == [] and handler.closed == []
    assert gnetpy_records_above_debug(caplog) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_a_partial_header_then_silence_is_dropped_at_the_header_timeout(serve: Any, caplog: Any,
                                                                       version: str) -> None:
    handler = Seen()
    engine = serve(handler, proxy_protocol=version, proxy_header_timeout=0.3)
    with caplog.at_level(logging.DEBUG, "gnetpy"):
        with nodelay(connect(engine.addrs[0])) as s:
            s.sendall(PARTIAL[version])
            started = time.monotonic()
            assert closed_by_server(s) == b""
            took = time.monotonic() - started
        wait_for(lambda: refused(engine) == 1)
    assert 0.25 <= took < 1.5, f"closed after {took:.3f}s, proxy_header_timeout is 0.3s"
    assert handler.opened == [] and handler.closed == []
    assert gnetpy_records_above_debug(caplog) == []
    assert any("proxy_header_timeout" in r.getMessage() for r in caplog.records)


def test_a_silent_connection_is_dropped_at_the_header_timeout_too(serve: Any) -> None:
    handler = Seen()
    engine = serve(handler, proxy_protocol="any", proxy_header_timeout=0.3)
    with connect(engine.addrs[0]) as s:
        started = time.monotonic()
        assert closed_by_server(s) == b""
        assert 0.25 <= time.monotonic() - started < 1.5
    wait_for(lambda: refused(engine) == 1)
    assert handler.opened == []


# -- who may send a header ---------------------------------------------------------------------------


def test_an_untrusted_peer_is_refused_unread(serve: Any, caplog: Any) -> None:
    handler = Seen()
    engine = serve(handler, proxy_protocol="v1", proxy_trusted=("10.0.0.0/8",))
    with caplog.at_level(logging.DEBUG, "gnetpy"):
        with nodelay(connect(engine.addrs[0])) as s:
            send_one_segment(s, header("v1") + b"hello")
            assert closed_by_server(s) == b""
        wait_for(lambda: refused(engine) == 1)
    assert handler.opened == [] and handler.closed == []
    assert gnetpy_records_above_debug(caplog) == []
    assert any("proxy_trusted" in r.getMessage() for r in caplog.records)


def test_trust_is_by_the_peers_address(serve: Any) -> None:
    """Trusted: 127.0.0.2 only.  The same header from 127.0.0.1 is refused."""
    handler = Seen()
    engine = serve(handler, proxy_protocol="v2", proxy_trusted=["127.0.0.2/32"])
    port = engine.addrs[0][1]
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT, source_address=("127.0.0.2", 0)) as s:
        s.sendall(header("v2") + b"trusted")
        assert recv_exact(s, 7) == b"trusted"
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT, source_address=("127.0.0.1", 0)) as s:
        s.sendall(header("v2") + b"not trusted")
        assert closed_by_server(s) == b""
    wait_for(lambda: refused(engine) == 1)
    assert len(handler.opened) == 1 and handler.opened[0]["remote"] == CLIENT4


def test_a_dual_stack_listener_trusts_ipv4_loopback_peers(serve: Any) -> None:
    """An IPv4 peer of a [::] listener is ::ffff:127.0.0.1 to the socket: the default trust still admits it."""
    if not has_ipv6_loopback():
        pytest.skip("no IPv6")
    handler = Seen()
    engine = serve(handler, "tcp://[::]:0", proxy_protocol="v1")
    with nodelay(socket.create_connection(("127.0.0.1", engine.addrs[0][1]), timeout=WAIT)) as s:
        send_one_segment(s, header("v1") + b"mapped")
        assert recv_exact(s, 6) == b"mapped"
    wait_for(lambda: handler.closed)
    assert handler.opened[0]["remote"] == CLIENT4 and refused(engine) == 0


def test_a_unix_listener_trusts_its_peers_only_with_unix(serve: Any, tmp_path: Any) -> None:
    handler = Seen()
    trusted = serve(handler, f"unix://{tmp_path}/trusted.sock", proxy_protocol="v2", proxy_trusted=("unix",))
    with connect(trusted.addrs[0]) as s:
        s.sendall(header("v2") + b"via unix")
        assert recv_exact(s, 8) == b"via unix"
    wait_for(lambda: handler.closed)
    assert handler.opened[0]["remote"] == CLIENT4 and handler.opened[0]["local"] == SERVER4
    # The default trusts loopback networks only: a unix peer is not one of them.
    default = serve(handler, f"unix://{tmp_path}/default.sock", proxy_protocol="v2")
    with connect(default.addrs[0]) as s:
        s.sendall(header("v2") + b"refused")
        assert closed_by_server(s) == b""
    wait_for(lambda: refused(default) == 1)
    assert len(handler.opened) == 1


def test_proxy_protocol_per_listener(serve: Any, tmp_path: Any) -> None:
    """{address: mode}: the tcp listener expects a header, the unix one serves as usual."""
    handler = Seen()
    plain = f"unix://{tmp_path}/plain.sock"
    engine = serve(handler, ["tcp://127.0.0.1:0", plain], proxy_protocol={"tcp://127.0.0.1:0": "v2"})
    with nodelay(connect(engine.addrs[0])) as s:
        send_one_segment(s, header("v2") + b"behind")
        assert recv_exact(s, 6) == b"behind"
    raw = header("v2")
    with connect(engine.addrs[1]) as s:  # no header expected: a header here is just data
        s.sendall(raw)
        assert recv_exact(s, len(raw)) == raw
    with nodelay(connect(engine.addrs[0])) as s:  # and no header where one is expected: refused
        s.sendall(b"plain bytes")
        assert closed_by_server(s) == b""
    wait_for(lambda: len(handler.closed) == 2 and refused(engine) == 1)
    by_proxy = sorted(handler.opened, key=lambda seen: seen["proxy"] is None)
    assert by_proxy[0]["remote"] == CLIENT4 and by_proxy[0]["proxy"].version == 2
    assert by_proxy[1]["proxy"] is None and by_proxy[1]["local"] == engine.addrs[1]


# -- TLS after the header ----------------------------------------------------------------------------

try:
    import trustme  # in the test extra: installed by ./test.sh
except ImportError:  # pragma: no cover
    trustme = None


@pytest.fixture(scope="module")
def ca() -> Any:
    if trustme is None:
        pytest.skip("trustme is not installed")
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_contexts(ca: Any) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


def tls_after_header(s: socket.socket, client_ctx: ssl.SSLContext, raw: bytes) -> ssl.SSLObject:
    """The header and the ClientHello in one segment, then the handshake over ``s`` by hand."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    send_one_segment(s, raw + outgoing.read())
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            if outgoing.pending:
                s.sendall(outgoing.read())
            chunk = s.recv(65536)
            if not chunk:
                raise EOFError("the server closed during the handshake")
            incoming.write(chunk)
    if outgoing.pending:
        s.sendall(outgoing.read())
    tls.incoming, tls.outgoing = incoming, outgoing  # type: ignore[attr-defined]
    return tls


def tls_echo(s: socket.socket, tls: Any, data: bytes) -> bytes:
    tls.write(data)
    s.sendall(tls.outgoing.read())
    got = b""
    while len(got) < len(data):
        try:
            got += tls.read(65536)
        except ssl.SSLWantReadError:
            chunk = s.recv(65536)
            if not chunk:
                raise EOFError("closed") from None
            tls.incoming.write(chunk)
    return got


@pytest.mark.parametrize("edge_triggered", TRIGGERS)
@pytest.mark.parametrize("version", VERSIONS)
def test_tls_handshake_after_the_header_in_the_same_segment(serve: Any, tls_contexts: Any, version: str,
                                                            edge_triggered: bool) -> None:
    server_ctx, client_ctx = tls_contexts
    handler = Seen()
    engine = serve(handler, proxy_protocol=version, ssl_context=server_ctx, edge_triggered=edge_triggered)
    with nodelay(connect(engine.addrs[0])) as s:
        tls = tls_after_header(s, client_ctx, header(version))
        assert tls_echo(s, tls, b"encrypted after the header") == b"encrypted after the header"
    wait_for(lambda: handler.closed)
    (seen,) = handler.opened
    assert seen["tls"] and seen["remote"] == CLIENT4 and seen["local"] == SERVER4
    assert engine.count_tls_failures() == 0 and refused(engine) == 0


def test_tls_without_a_header_is_refused_before_any_handshake(serve: Any, tls_contexts: Any) -> None:
    server_ctx, client_ctx = tls_contexts
    handler = Seen()
    engine = serve(handler, proxy_protocol="any", ssl_context=server_ctx)
    with nodelay(connect(engine.addrs[0])) as s:
        with pytest.raises((ssl.SSLError, OSError, EOFError)):
            tls_after_header(s, client_ctx, b"")  # a ClientHello where the header should be
    wait_for(lambda: refused(engine) == 1)
    assert engine.count_tls_failures() == 0  # no handshake was ever started
    assert handler.opened == [] and handler.closed == []


# -- worker processes --------------------------------------------------------------------------------


class Report(gnetpy.EventHandler):
    """Writes what on_open saw back to the client, then echoes (state stays in each worker process)."""

    def on_open(self, c: gnetpy.Conn) -> Any:
        proxy = c.proxy
        c.write(f"{c.remote_addr!r}|{c.local_addr!r}|{proxy.version if proxy else None}|{os.getpid()}\n".encode())

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        c.write(c.next())


@pytest.mark.parametrize("accept", ["main-reactor", "reuse-port"])
@pytest.mark.parametrize("version", VERSIONS)
def test_worker_processes_see_the_header(serve: Any, version: str, accept: str) -> None:
    engine = serve(Report(), processes=True, num_event_loop=2, proxy_protocol=version,
                   reuse_port=accept == "reuse-port")
    pids = set()
    for i in range(6):
        source, destination = (f"192.0.2.{i + 1}", 50000 + i), ("198.51.100.1", 443)
        with nodelay(connect(engine.addrs[0])) as s:
            send_one_segment(s, header(version, "TCP4", source, destination) + b"payload")
            remote, local, seen_version, pid = read_line(s).split("|")
            assert (remote, local, seen_version) == (repr(source), repr(destination), version[1])
            assert recv_exact(s, 7) == b"payload"
            pids.add(pid)
    if accept == "main-reactor":
        assert len(pids) == 2  # round robin: both workers served, both read headers
    with nodelay(connect(engine.addrs[0])) as s:  # and refuse like a loop in this process would
        s.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert closed_by_server(s) == b""
    wait_for(lambda: refused(engine) == 1)  # counted in the worker, read through the shared counters


# -- gnetpy sending a header -------------------------------------------------------------------------


class Front(gnetpy.EventHandler):
    """A TCP proxy: each client connection dials the backend, passing the client's addresses on."""

    def __init__(self, backend: str, version: int) -> None:
        self.backend = backend
        self.version = version

    def on_open(self, c: gnetpy.Conn) -> Any:
        if c.context is not None:  # the backend side: its client set context before dialing
            return None
        family = "TCP6" if ":" in c.remote_addr[0] else "TCP4"
        info = gnetpy.ProxyInfo(version=self.version, command="PROXY", family=family,
                                source=tuple(c.remote_addr[:2]), destination=tuple(c.local_addr[:2]))
        c.context = "dialing"

        def dialed(backend: gnetpy.Conn | None, err: BaseException | None) -> None:
            if err is not None or backend is None:
                c.close()
                return
            c.context = backend
            backend.write(bytes(c.next()) if c.inbound_buffered else b"")

        c.event_loop.dial(self.backend, dialed, WAIT, context=c, proxy_header=info)
        return None

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        peer = c.context
        if isinstance(peer, gnetpy.Conn):
            peer.write(c.next())
        return None  # still dialing: the bytes wait in c's buffer

    def on_close(self, c: gnetpy.Conn, err: BaseException | None) -> Any:
        if isinstance(c.context, gnetpy.Conn):
            c.context.close()


@pytest.mark.parametrize("version", [1, 2])
def test_gnetpy_in_front_of_gnetpy_passes_the_client_on(serve: Any, version: int) -> None:
    backend = serve(Report(), proxy_protocol=f"v{version}", processes=False)
    front = serve(Front(f"tcp://127.0.0.1:{backend.addrs[0][1]}", version), processes=False)
    host, port = front.addrs[0]
    with socket.create_connection((host, port), timeout=WAIT, source_address=("127.0.0.3", 0)) as s:
        me = s.getsockname()
        remote, local, seen_version, _ = read_line(s).split("|")
        assert remote == repr(me) and local == repr((host, port)) and seen_version == str(version)
        assert echo_once(s, b"through both") == b"through both"
    assert refused(backend) == 0


class Collect(gnetpy.EventHandler):
    def __init__(self) -> None:
        self.got = bytearray()
        self.cond = threading.Condition()

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        with self.cond:
            self.got += c.next()
            self.cond.notify_all()

    def line(self) -> str:
        with self.cond:
            assert self.cond.wait_for(lambda: b"\n" in self.got, WAIT)
            return self.got.split(b"\n", 1)[0].decode()


@pytest.mark.parametrize("form", ["bytes-v1", "bytes-v2", "info-v2-local"])
def test_client_dial_sends_the_header_first(serve: Any, form: str) -> None:
    backend = serve(Report(), proxy_protocol="any")
    sent = {"bytes-v1": header("v1"), "bytes-v2": header("v2", "TCP6", CLIENT6, SERVER6),
            "info-v2-local": gnetpy.ProxyInfo(version=2, command="LOCAL", family="UNKNOWN")}[form]
    handler = Collect()
    with gnetpy.Client(handler) as client:
        conn = client.dial(f"tcp://127.0.0.1:{backend.addrs[0][1]}", WAIT, proxy_header=sent)
        remote, local, seen_version, _ = handler.line().split("|")
        if form == "bytes-v1":
            assert (remote, local, seen_version) == (repr(CLIENT4), repr(SERVER4), "1")
        elif form == "bytes-v2":
            assert (remote, local, seen_version) == (repr(CLIENT6), repr(SERVER6), "2")
        else:  # LOCAL: the backend keeps the socket's addresses
            assert remote == repr(conn.local_addr) and seen_version == "2"
        conn.close()
    assert refused(backend) == 0


def test_client_dial_refuses_a_header_of_the_wrong_type() -> None:
    with gnetpy.Client(Collect()) as client, pytest.raises(TypeError, match="proxy_header"):
        client.dial("tcp://127.0.0.1:9", WAIT, proxy_header="PROXY UNKNOWN\r\n")


# -- options -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("addrs, options, option", [
    ("tcp://127.0.0.1:0", {"proxy_protocol": "v3"}, "proxy_protocol"),
    ("tcp://127.0.0.1:0", {"proxy_protocol": True}, "proxy_protocol"),
    ("tcp://127.0.0.1:0", {"proxy_protocol": {"tcp://127.0.0.1:0": "v3"}}, "proxy_protocol"),
    ("tcp://127.0.0.1:0", {"proxy_protocol": {"tcp://127.0.0.1:1": "v1"}}, "proxy_protocol"),
    ("udp://127.0.0.1:0", {"proxy_protocol": {"udp://127.0.0.1:0": "v1"}}, "proxy_protocol"),
    ("tcp://127.0.0.1:0", {"proxy_protocol": "v1", "proxy_trusted": ["not-a-net"]}, "proxy_trusted"),
    ("tcp://127.0.0.1:0", {"proxy_protocol": "v1", "proxy_trusted": "127.0.0.1"}, "proxy_trusted"),
    ("tcp://127.0.0.1:0", {"proxy_protocol": "v1", "proxy_header_timeout": 0}, "proxy_header_timeout"),
    ("tcp://127.0.0.1:0", {"proxy_protocol": "v1", "proxy_header_timeout": -1.0}, "proxy_header_timeout"),
])
def test_bad_proxy_options_are_named(addrs: str, options: dict[str, Any], option: str) -> None:
    with pytest.raises(ValueError, match=option):
        gnetpy.start(gnetpy.EventHandler(), addrs, **options)
