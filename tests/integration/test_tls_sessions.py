"""TLS on the reactor: echo integrity, a real peer (openssl s_client), ALPN, SNI, mutual TLS, the client side,
the handshake timeout, and bad peers that must close only themselves.

Certificates come from ``trustme`` (a throwaway CA per test module); the
Python side of each exchange is the stdlib ``ssl`` module (through asyncio
for the many-client echo, blocking sockets elsewhere).
"""

from __future__ import annotations

import asyncio
import logging
import random
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
from typing import Any

import pytest

import gnetpy
from conftest import WAIT, WriteEcho, connect, random_payloads, recv_exact, wait_for

trustme = pytest.importorskip("trustme")  # in the test extra: installed by ./test.sh

ECHO_CLIENTS = 10


@pytest.fixture(scope="module")
def ca() -> Any:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_cert(ca: Any) -> Any:
    return ca.issue_cert("localhost", "127.0.0.1", "::1")


def server_context(cert: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    return ctx


def client_context(ca: Any, **settings: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    for name, value in settings.items():
        setattr(ctx, name, value)
    return ctx


def tls_connect(addr: Any, ctx: ssl.SSLContext, hostname: str = "localhost",
                suppress_ragged_eofs: bool = True) -> ssl.SSLSocket:
    """``suppress_ragged_eofs=False``: a TCP end of stream without ``close_notify`` raises ``SSLEOFError``
    instead of reading as ``b""`` (the ssl default hides the difference)."""
    return ctx.wrap_socket(connect(addr), server_hostname=hostname, suppress_ragged_eofs=suppress_ragged_eofs)


class TlsRecorder(gnetpy.EventHandler):
    """Echoes, and keeps what the handler saw: the TLS facts at on_open, the errors at on_close."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.opened: list[dict[str, Any]] = []
        self.closed: list[BaseException | None] = []

    def on_open(self, c: gnetpy.Conn) -> Any:
        info = c.tls
        if info is None:
            return
        facts = {"version": info.version(), "cipher": info.cipher(), "alpn": info.selected_alpn_protocol(),
                 "peercert": info.getpeercert(), "server_side": info.server_side}
        with self.lock:
            self.opened.append(facts)

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        c.write(c.next())

    def on_close(self, c: gnetpy.Conn, err: BaseException | None) -> Any:
        with self.lock:
            self.closed.append(err)


# -- echo integrity ---------------------------------------------------------------------------


async def _echo_client(addr: Any, ctx: ssl.SSLContext, payloads: list[bytes]) -> bytes:
    if isinstance(addr, str):
        reader, writer = await asyncio.open_unix_connection(addr, ssl=ctx, server_hostname="localhost")
    else:
        reader, writer = await asyncio.open_connection(addr[0], addr[1], ssl=ctx, server_hostname="localhost")
    want = sum(len(p) for p in payloads)

    async def send() -> None:
        for payload in payloads:
            writer.write(payload)
            await writer.drain()

    sender = asyncio.ensure_future(send())
    received = await reader.readexactly(want)
    await sender
    writer.close()
    try:
        await writer.wait_closed()
    except (ssl.SSLError, ConnectionError):
        pass  # the server's close_notify may cross ours
    return received


def tls_exchange(addr: Any, ctx: ssl.SSLContext, payloads: list[list[bytes]], timeout: float = 60.0) -> list[bytes]:
    async def everyone() -> list[bytes]:
        clients = [_echo_client(addr, ctx, items) for items in payloads]
        return list(await asyncio.wait_for(asyncio.gather(*clients), timeout))

    return asyncio.run(everyone())


def check_echo(engine: gnetpy.Engine, ctx: ssl.SSLContext, seed: int) -> None:
    rng = random.Random(seed)
    payloads = [random_payloads(rng) for _ in range(ECHO_CLIENTS)]
    received = tls_exchange(engine.addrs[0], ctx, payloads)
    for i, (sent, got) in enumerate(zip(payloads, received)):
        assert got == b"".join(sent), f"client {i}: the echo differs ({len(got)} bytes back)"


TOPOLOGIES = {
    "1-loop": {"num_event_loop": 1},
    "4-threads": {"num_event_loop": 4, "processes": False},
    "4-threads-reuse-port": {"num_event_loop": 4, "processes": False, "reuse_port": True},
    "2-processes": {"num_event_loop": 2, "processes": True},
}


@pytest.mark.parametrize("trigger", ["level", "edge"])
@pytest.mark.parametrize("transport, topology", [(transport, topology) for transport in ("tcp", "unix")
                                                 for topology in TOPOLOGIES
                                                 if transport == "tcp" or "reuse_port" not in TOPOLOGIES[topology]])
def test_tls_echo_integrity(serve: Any, tmp_path: Any, ca: Any, server_cert: Any, transport: str, topology: str,
                            trigger: str) -> None:
    addr = "tcp://127.0.0.1:0" if transport == "tcp" else f"unix://{tmp_path}/tls.sock"
    engine = serve(WriteEcho(), addr, ssl_context=server_context(server_cert), edge_triggered=trigger == "edge",
                   **TOPOLOGIES[topology])
    check_echo(engine, client_context(ca), seed=hash((transport, topology, trigger)))
    assert engine.count_tls_failures() == 0


def test_tls_echo_with_a_small_read_buffer_and_write_queue(serve: Any, ca: Any, server_cert: Any) -> None:
    """Records larger than the read size, writes that queue: ciphertext crosses every partial path."""
    engine = serve(WriteEcho(), ssl_context=server_context(server_cert), edge_triggered=True,
                   read_buffer_cap=1024, edge_triggered_chunk=4096, write_buffer_cap=1500)
    check_echo(engine, client_context(ca), seed=5)


class WritevAsyncEcho(gnetpy.EventHandler):
    """Echoes with writev on some connections, async_write on the others (one way per connection keeps the order)."""

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        data = c.next()
        if c.fd % 2:
            c.async_write(data)
        else:
            half = len(data) // 2
            c.writev([data[:half], memoryview(data)[half:half + 1], bytearray(data[half + 1:])])


def test_writev_and_async_write_encrypt(serve: Any, ca: Any, server_cert: Any) -> None:
    engine = serve(WritevAsyncEcho(), ssl_context=server_context(server_cert))
    check_echo(engine, client_context(ca), seed=6)


# -- a peer no one here wrote ---------------------------------------------------------------


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command (Debian: openssl)")
def test_openssl_s_client_handshakes_echoes_a_line_and_closes_cleanly(serve: Any, tmp_path: Any, ca: Any,
                                                                      server_cert: Any) -> None:
    handler = TlsRecorder()
    engine = serve(handler, ssl_context=server_context(server_cert))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    port = engine.addrs[0][1]
    peer = subprocess.Popen(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", "-CAfile", str(ca_file),
         "-verify_return_error", "-verify_hostname", "localhost", "-quiet", "-no_ign_eof", "-tls1_3"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert peer.stdin is not None and peer.stdout is not None
        peer.stdin.write(b"hello over TLS\n")
        peer.stdin.flush()
        ready, _, _ = select.select([peer.stdout], [], [], WAIT)
        assert ready, "openssl s_client echoed nothing"
        assert peer.stdout.readline() == b"hello over TLS\n"
        peer.stdin.close()  # end of input: s_client closes the session (close_notify) and exits
        assert peer.wait(WAIT) == 0, peer.stderr.read().decode(errors="replace") if peer.stderr else ""
    finally:
        if peer.poll() is None:
            peer.kill()
            peer.wait()
        for stream in (peer.stdout, peer.stderr):
            if stream is not None:
                stream.close()
    wait_for(lambda: handler.closed)
    assert handler.opened[0]["version"] == "TLSv1.3"
    assert isinstance(handler.closed[0], EOFError), handler.closed  # an orderly end, not an SSLError
    assert engine.count_tls_failures() == 0


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command (Debian: openssl)")
def test_a_renegotiation_attempt_closes_that_connection_with_the_ssl_error(serve: Any, tmp_path: Any, ca: Any,
                                                                          server_cert: Any) -> None:
    """s_client's interactive "R" asks a TLS 1.2 server to renegotiate; OpenSSL 3 refuses, the client aborts."""
    handler = TlsRecorder()
    engine = serve(handler, ssl_context=server_context(server_cert))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    peer = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{engine.addrs[0][1]}", "-tls1_2",
                             "-CAfile", str(ca_file)],  # interactive (no -quiet): "R" is a command
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert peer.stdin is not None
        wait_for(lambda: handler.opened)
        peer.stdin.write(b"R\n")
        peer.stdin.flush()
        wait_for(lambda: handler.closed)
    finally:
        peer.kill()
        peer.wait(WAIT)
        if peer.stdin is not None:
            try:
                peer.stdin.close()
            except BrokenPipeError:
                pass
    assert handler.opened[0]["version"] == "TLSv1.2"
    assert isinstance(handler.closed[0], ssl.SSLError), handler.closed
    with tls_connect(engine.addrs[0], client_context(ca)) as s:  # the server goes on
        s.sendall(b"next")
        assert recv_exact(s, 4) == b"next"


# -- ALPN, SNI, mutual TLS ----------------------------------------------------------------


@pytest.mark.parametrize("offered,chosen", [(["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1"),
                                            (["spdy/3"], None)])
def test_alpn_negotiation(serve: Any, ca: Any, server_cert: Any, offered: list[str], chosen: str | None) -> None:
    handler = TlsRecorder()
    ctx = server_context(server_cert)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    engine = serve(handler, ssl_context=ctx)
    client_ctx = client_context(ca)
    client_ctx.set_alpn_protocols(offered)
    try:
        with tls_connect(engine.addrs[0], client_ctx) as s:
            assert s.selected_alpn_protocol() == chosen
            s.sendall(b"x")
            assert recv_exact(s, 1) == b"x"
    except ssl.SSLError:
        assert chosen is None  # OpenSSL may refuse a connection with no protocol in common
        return
    wait_for(lambda: handler.opened)
    assert handler.opened[0]["alpn"] == chosen


def test_sni_callback_picks_the_certificate(serve: Any, ca: Any) -> None:
    first = server_context(ca.issue_cert("a.example"))
    second = server_context(ca.issue_cert("b.example"))
    names: list[str | None] = []

    def choose(sslobj: Any, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        names.append(server_name)
        if server_name == "b.example":
            sslobj.context = second

    first.sni_callback = choose
    engine = serve(WriteEcho(), ssl_context=first)
    for name in ("a.example", "b.example"):
        with tls_connect(engine.addrs[0], client_context(ca), hostname=name) as s:  # checks the name
            subject_names = [value for kind, value in s.getpeercert()["subjectAltName"]]
            assert subject_names == [name]
            s.sendall(b"ping")
            assert recv_exact(s, 4) == b"ping"
    assert names == ["a.example", "b.example"]


def mutual_server_context(ca: Any, server_cert: Any) -> ssl.SSLContext:
    ctx = server_context(server_cert)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(ctx)
    return ctx


def test_mutual_tls_accepts_a_client_certificate_and_shows_it_in_on_open(serve: Any, ca: Any,
                                                                         server_cert: Any) -> None:
    handler = TlsRecorder()
    engine = serve(handler, ssl_context=mutual_server_context(ca, server_cert))
    client_ctx = client_context(ca)
    ca.issue_cert("client@example.com").configure_cert(client_ctx)
    with tls_connect(engine.addrs[0], client_ctx) as s:
        s.sendall(b"who am i")
        assert recv_exact(s, 8) == b"who am i"
    wait_for(lambda: handler.opened)
    alt_names = handler.opened[0]["peercert"]["subjectAltName"]
    assert ("email", "client@example.com") in alt_names


def test_mutual_tls_refuses_a_client_without_a_certificate(serve: Any, ca: Any, server_cert: Any) -> None:
    handler = TlsRecorder()
    engine = serve(handler, ssl_context=mutual_server_context(ca, server_cert))
    # TLS 1.3: the client's handshake ends before the server has judged its (absent) certificate;
    # the refusal arrives as an alert on the first read.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with tls_connect(engine.addrs[0], client_context(ca)) as s:
            s.sendall(b"let me in")
            if not s.recv(100):
                raise ConnectionResetError("closed without an answer")
    wait_for(lambda: engine.count_tls_failures() == 1)
    assert handler.opened == [] and handler.closed == []


# -- the client side ------------------------------------------------------------------------


class Gather(gnetpy.EventHandler):
    def __init__(self) -> None:
        self.received = bytearray()
        self.done = threading.Event()
        self.facts: list[Any] = []

    def on_open(self, c: gnetpy.Conn) -> Any:
        self.facts.append((c.tls.server_hostname, c.tls.server_side, c.tls.version()))
        c.write(b"hello from the client")

    def on_traffic(self, c: gnetpy.Conn) -> Any:
        self.received += c.next()
        if len(self.received) >= 21:
            self.done.set()


def test_client_dials_tls_checks_the_name_and_echoes(serve: Any, ca: Any, server_cert: Any) -> None:
    engine = serve(WriteEcho(), ssl_context=server_context(server_cert))
    port = engine.addrs[0][1]
    handler = Gather()
    with gnetpy.Client(handler) as client:
        c = client.dial(f"tcp://localhost:{port}", timeout=WAIT, ssl_context=client_context(ca))
        assert c.tls is not None and handler.facts == [("localhost", False, "TLSv1.3")]
        assert handler.done.wait(WAIT) and bytes(handler.received) == b"hello from the client"
        with pytest.raises(ssl.SSLCertVerificationError):  # the certificate names localhost, not this
            client.dial(f"tcp://127.0.0.1:{port}", timeout=WAIT, ssl_context=client_context(ca),
                        server_hostname="elsewhere.example")
        with pytest.raises(ssl.SSLCertVerificationError):  # a CA it does not trust
            client.dial(f"tcp://127.0.0.1:{port}", timeout=WAIT, ssl_context=ssl.create_default_context())
        assert client.count_connections() == 1
    wait_for(lambda: engine.count_tls_failures() == 2)


def test_client_tls_over_unix_and_by_ip_literal(serve: Any, tmp_path: Any, ca: Any, server_cert: Any) -> None:
    ctx = server_context(server_cert)
    engine = serve(WriteEcho(), ["tcp://127.0.0.1:0", f"unix://{tmp_path}/c.sock"], ssl_context=ctx)
    with gnetpy.Client(Gather()) as client:
        by_ip = client.dial(f"tcp://127.0.0.1:{engine.addrs[0][1]}", timeout=WAIT, ssl_context=client_context(ca))
        assert by_ip.tls.server_hostname == "127.0.0.1"  # the certificate carries the IP address
        with pytest.raises(ValueError, match="server_hostname"):  # a unix path is no host name
            client.dial(f"unix://{tmp_path}/c.sock", ssl_context=client_context(ca))
        over_unix = client.dial(f"unix://{tmp_path}/c.sock", timeout=WAIT, ssl_context=client_context(ca),
                                server_hostname="localhost")
        assert over_unix.tls.version() == "TLSv1.3"


def test_client_dial_times_out_on_a_server_that_never_answers_the_handshake(ca: Any) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with gnetpy.Client(Gather()) as client:
            started = time.monotonic()
            with pytest.raises(TimeoutError, match="TLS handshake"):
                client.dial(f"tcp://127.0.0.1:{silent.getsockname()[1]}", timeout=0.3,
                            ssl_context=client_context(ca))
            assert time.monotonic() - started < WAIT
            assert client.count_connections() == 0


def test_event_loop_dial_with_tls_from_a_callback(serve: Any, ca: Any, server_cert: Any) -> None:
    backend = serve(WriteEcho(), ssl_context=server_context(server_cert))
    outcome: list[Any] = []
    done = threading.Event()

    class Dialer(gnetpy.EventHandler):
        def on_open(self, c: gnetpy.Conn) -> Any:
            if c.context == "dialed":
                return

            def dialed(conn: gnetpy.Conn | None, err: BaseException | None) -> None:
                outcome.append((conn is not None and conn.tls.version(), err))
                done.set()

            c.event_loop.dial(f"tcp://127.0.0.1:{backend.addrs[0][1]}", dialed, timeout=WAIT, context="dialed",
                              ssl_context=client_context(ca), server_hostname="localhost")

    front = serve(Dialer())
    with connect(front.addrs[0]):
        assert done.wait(WAIT)
    assert outcome == [("TLSv1.3", None)]


def test_dial_arguments_are_checked_before_connecting() -> None:
    with gnetpy.Client(Gather()) as client:
        with pytest.raises(TypeError, match="ssl_context"):
            client.dial("tcp://127.0.0.1:1", ssl_context="yes please")
        with pytest.raises(ValueError, match="server_hostname without ssl_context"):
            client.dial("tcp://127.0.0.1:1", server_hostname="example.com")


# -- slow, silent and bad peers -------------------------------------------------------------


def test_a_silent_client_is_dropped_after_the_handshake_timeout(serve: Any, server_cert: Any) -> None:
    handler = TlsRecorder()
    engine = serve(handler, ssl_context=server_context(server_cert), tls_handshake_timeout=0.3)
    with connect(engine.addrs[0]) as s:
        started = time.monotonic()
        assert s.recv(100) == b""  # closed by the server, nothing sent
        assert 0.25 < time.monotonic() - started < WAIT
    wait_for(lambda: engine.count_tls_failures() == 1)
    assert handler.opened == [] and handler.closed == []
    wait_for(lambda: engine.count_connections() == 0)


def test_a_hundred_silent_clients_do_not_hold_up_an_active_one(serve: Any, ca: Any, server_cert: Any) -> None:
    engine = serve(WriteEcho(), ssl_context=server_context(server_cert), tls_handshake_timeout=3)
    silent = [connect(engine.addrs[0]) for _ in range(100)]
    try:
        wait_for(lambda: engine.count_connections() == 100)
        started = time.monotonic()
        with tls_connect(engine.addrs[0], client_context(ca)) as active:
            for i in range(200):
                message = f"round trip {i}".encode()
                active.sendall(message)
                assert recv_exact(active, len(message)) == message
        # Served while all of them waited: well before the first of them timed out.
        assert time.monotonic() - started < 3
        assert engine.count_connections() >= 100
        for s in silent:
            s.settimeout(WAIT)
            assert s.recv(100) == b""
        assert engine.count_tls_failures() == 100
    finally:
        for s in silent:
            s.close()


def client_hello() -> bytes:
    """The first flight of a real client, captured from an SSLObject."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    sslobj = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        sslobj.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("bad", ["http", "zeros", "truncated-hello", "hello-then-eof"])
def test_bad_handshakes_close_only_their_connection_and_log_at_most_debug(serve: Any, caplog: Any, ca: Any,
                                                                         server_cert: Any, bad: str) -> None:
    handler = TlsRecorder()
    engine = serve(handler, ssl_context=server_context(server_cert))
    with tls_connect(engine.addrs[0], client_context(ca)) as good, caplog.at_level(logging.DEBUG, "gnetpy"):
        hello = client_hello()
        sent = {"http": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", "zeros": bytes(512),
                "truncated-hello": hello[:40], "hello-then-eof": hello}[bad]
        with connect(engine.addrs[0]) as s:
            s.sendall(sent)
            if bad in ("truncated-hello", "hello-then-eof"):
                s.shutdown(socket.SHUT_WR)  # the rest never comes
            s.settimeout(WAIT)
            while s.recv(65536):  # an alert may come first; then the server closes
                pass
        wait_for(lambda: engine.count_tls_failures() == 1)
        good.sendall(b"still here")
        assert recv_exact(good, 10) == b"still here"
        assert len(handler.opened) == 1 and handler.closed == []  # the bad one never reached the handler
    assert [r for r in caplog.records if r.levelno > logging.DEBUG and r.name.startswith("gnetpy")
            and "serving" not in r.getMessage()] == []
    assert any("TLS handshake" in r.getMessage() for r in caplog.records)


def records_after_handshake(addr: Any, ca: Any) -> tuple[socket.socket, ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    """A handshake done by hand over a plain socket, so the test can then send whatever bytes it likes."""
    sock = connect(addr)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    sslobj = client_context(ca).wrap_bio(incoming, outgoing, server_hostname="localhost")
    while True:
        try:
            sslobj.do_handshake()
            break
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            incoming.write(sock.recv(65536))
    sock.sendall(outgoing.read())
    return sock, sslobj, incoming, outgoing


@pytest.mark.parametrize("bad", ["corrupt-record", "truncated-record-then-eof", "eof-without-close-notify"])
def test_bad_records_after_the_handshake_close_with_the_ssl_error(serve: Any, caplog: Any, ca: Any,
                                                                 server_cert: Any, bad: str) -> None:
    handler = TlsRecorder()
    engine = serve(handler, ssl_context=server_context(server_cert))
    sock, sslobj, _, outgoing = records_after_handshake(engine.addrs[0], ca)
    with sock, caplog.at_level(logging.DEBUG, "gnetpy"):
        wait_for(lambda: handler.opened)
        sslobj.write(b"a real record")
        record = outgoing.read()
        if bad == "corrupt-record":
            sock.sendall(record[:-1] + bytes([record[-1] ^ 1]))
        elif bad == "truncated-record-then-eof":
            sock.sendall(record[:-3])
            sock.shutdown(socket.SHUT_WR)
        else:
            sock.shutdown(socket.SHUT_WR)
        wait_for(lambda: handler.closed)
    assert isinstance(handler.closed[0], ssl.SSLError), handler.closed
    assert engine.count_tls_failures() == 0  # the handshake succeeded: this one reached the handler
    assert [r for r in caplog.records if r.levelno > logging.INFO and r.name.startswith("gnetpy")] == []


def test_a_local_close_sends_close_notify_after_what_was_written(serve: Any, ca: Any, server_cert: Any) -> None:
    class SayAndClose(gnetpy.EventHandler):
        def on_open(self, c: gnetpy.Conn) -> Any:
            c.write(b"x" * 300_000)
            c.close()

    engine = serve(SayAndClose(), ssl_context=server_context(server_cert))
    with tls_connect(engine.addrs[0], client_context(ca), suppress_ragged_eofs=False) as s:
        received = bytearray()
        while True:
            chunk = s.recv(65536)  # b"" only after a close_notify: an EOF without one raises SSLEOFError
            if not chunk:
                break
            received += chunk
        assert bytes(received) == b"x" * 300_000


def test_backpressure_counts_ciphertext(serve: Any, ca: Any, server_cert: Any) -> None:
    size = 8 << 20  # more than the kernel takes at once
    seen: list[tuple[int, bool]] = []
    drained = threading.Event()

    class Flood(gnetpy.EventHandler):
        def on_open(self, c: gnetpy.Conn) -> Any:
            c.write(b"y" * size)  # gathered: encrypted and sent when on_open returns
            c.event_loop.call_later(0, lambda: seen.append((c.outbound_buffered, c.reading_paused)))

        def on_drained(self, c: gnetpy.Conn) -> Any:
            drained.set()

    engine = serve(Flood(), ssl_context=server_context(server_cert), write_high_water=256 * 1024)
    with tls_connect(engine.addrs[0], client_context(ca)) as s:
        wait_for(lambda: seen)
        queued, paused = seen[0]
        assert paused and queued > 256 * 1024
        # What is queued is records: 16 KiB of plaintext each, plus framing and the AEAD tag.
        assert queued <= size + (size // 16384 + 1) * 64
        received = 0
        while received < size:
            received += len(s.recv(1 << 20))
        assert received == size
        assert drained.wait(WAIT)


# -- listeners -----------------------------------------------------------------------------


def test_plain_and_tls_listeners_in_one_engine(serve: Any, tmp_path: Any, ca: Any, server_cert: Any) -> None:
    tls_addr, plain_addr, tls_unix = "tcp://127.0.0.1:0", "tcp4://127.0.0.1:0", f"unix://{tmp_path}/t.sock"
    ctx = server_context(server_cert)
    handler = TlsRecorder()
    engine = serve(handler, [tls_addr, plain_addr, tls_unix], ssl_context={tls_addr: ctx, tls_unix: ctx},
                   num_event_loop=2, processes=False)
    with tls_connect(engine.addrs[0], client_context(ca)) as s:
        s.sendall(b"secret")
        assert recv_exact(s, 6) == b"secret"
    with connect(engine.addrs[1]) as s:
        s.sendall(b"public")
        assert recv_exact(s, 6) == b"public"
    with tls_connect(engine.addrs[2], client_context(ca)) as s:
        s.sendall(b"local")
        assert recv_exact(s, 5) == b"local"


def test_ssl_context_mistakes_are_named(tmp_path: Any, server_cert: Any) -> None:
    ctx = server_context(server_cert)
    with pytest.raises(ValueError, match="ssl_context"):
        gnetpy.start(WriteEcho(), "tcp://127.0.0.1:0", ssl_context="cert.pem")
    with pytest.raises(ValueError, match="not one of the addresses"):
        gnetpy.start(WriteEcho(), "tcp://127.0.0.1:0", ssl_context={"tcp://127.0.0.1:443": ctx})
    with pytest.raises(gnetpy.UnsupportedProtocolError, match="DTLS"):
        gnetpy.start(WriteEcho(), "udp://127.0.0.1:0", ssl_context={"udp://127.0.0.1:0": ctx})
    with pytest.raises(ValueError, match="tls_handshake_timeout"):
        gnetpy.start(WriteEcho(), "tcp://127.0.0.1:0", ssl_context=ctx, tls_handshake_timeout=-1)


def test_plain_connections_have_no_tls(serve: Any) -> None:
    seen: list[Any] = []

    class Look(gnetpy.EventHandler):
        def on_open(self, c: gnetpy.Conn) -> Any:
            seen.append(c.tls)

    engine = serve(Look())
    with connect(engine.addrs[0]):
        wait_for(lambda: seen)
    assert seen == [None]


def test_a_callbacks_writes_are_encrypted_together_and_arrive_in_order(serve: Any, ca: Any, server_cert: Any) -> None:
    class ManySmallReplies(gnetpy.EventHandler):
        def on_traffic(self, c: gnetpy.Conn) -> Any:
            c.next()
            for i in range(500):  # gathered: one SSLObject.write, then records sent together
                c.write(b"%04d," % i)
            c.writev([b"end", bytearray(b".")])

    engine = serve(ManySmallReplies(), ssl_context=server_context(server_cert))
    with tls_connect(engine.addrs[0], client_context(ca)) as s:
        s.sendall(b"go")
        want = b"".join(b"%04d," % i for i in range(500)) + b"end."
        got = bytearray()
        while len(got) < len(want):
            got += s.recv(65536)
        assert bytes(got) == want
