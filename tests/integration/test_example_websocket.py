"""examples/websocket.py through examples/http_server.py: the websockets client against the upgrade on
the HTTP port -- echo byte for byte (text and binary, 1 B to 1 MiB, fragmented), broadcast, ping,
close codes, the message limit -- and raw sockets for what a polite client never does."""

from __future__ import annotations

import base64
import os
import random
import socket
import string
import struct
import sys
from typing import Any

import pytest

from conftest import WAIT, connect, recv_exact, recv_until_eof, wait_for

pytest.importorskip("httptools", reason="the example parses HTTP with httptools")
pytest.importorskip("websockets", reason="the example drives websockets' sans-I/O ServerProtocol")
from websockets.exceptions import ConnectionClosedError  # noqa: E402
from websockets.frames import Frame, Opcode  # noqa: E402
from websockets.sync.client import connect as ws_connect  # noqa: E402
from websockets.utils import accept_key  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MiB = 1 << 20


def load_example() -> Any:
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    try:
        import http_server
    finally:
        sys.path.pop(0)
    return http_server


class Server:
    def __init__(self, serve: Any) -> None:
        self.handler = load_example().HttpServer()
        self.addr = serve(self.handler, "tcp://127.0.0.1:0").addrs[0]
        self.url = f"ws://{self.addr[0]}:{self.addr[1]}/ws"

    def client(self, **kwargs: Any) -> Any:
        return ws_connect(self.url, open_timeout=WAIT, close_timeout=WAIT, max_size=2 * MiB, **kwargs)

    def websockets_open(self) -> int:
        return self.handler.ws.count()


@pytest.fixture
def server(serve: Any) -> Server:
    return Server(serve)


def text_of(size: int, rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=size))


@pytest.mark.parametrize("size", [1, 64 * 1024, MiB])
def test_echo_text_and_binary(server: Server, size: int) -> None:
    rng = random.Random(size)
    text, data = text_of(size, rng), rng.randbytes(size)
    with server.client() as ws:
        ws.send(text)
        assert ws.recv(timeout=WAIT) == text
        ws.send(data)
        got = ws.recv(timeout=WAIT)
        assert isinstance(got, bytes) and got == data
        ws.send("é€😀")   # multi-byte UTF-8 comes back as it went
        assert ws.recv(timeout=WAIT) == "é€😀"


def test_fragmented_messages_come_back_whole(server: Server) -> None:
    rng = random.Random(3)
    pieces = [rng.randbytes(64 * 1024) for _ in range(16)]   # 1 MiB in 16 frames
    with server.client() as ws:
        ws.send(["ab", "cd", "ef"])
        assert ws.recv(timeout=WAIT) == "abcdef"
        ws.send(pieces)
        assert ws.recv(timeout=WAIT) == b"".join(pieces)
        ws.send(["broadcast:", "to all"])   # the prefix is judged on the whole message
        assert ws.recv(timeout=WAIT) == "broadcast:to all"


def test_broadcast_reaches_every_connection(server: Server) -> None:
    with server.client() as a, server.client() as b, server.client() as c:
        wait_for(lambda: server.websockets_open() == 3)
        a.send("broadcast:hello")
        assert [ws.recv(timeout=WAIT) for ws in (a, b, c)] == ["broadcast:hello"] * 3
        b.send("just me")   # an echo is for the sender only
        assert b.recv(timeout=WAIT) == "just me"
        c.send("broadcast:second")
        assert [ws.recv(timeout=WAIT) for ws in (a, b, c)] == ["broadcast:second"] * 3


def test_ping_is_answered(server: Server) -> None:
    with server.client() as ws:
        for payload in (b"", b"ping-1", os.urandom(125)):
            assert ws.ping(payload).wait(WAIT), f"no pong for {payload!r}"
        ws.send("still echoing")
        assert ws.recv(timeout=WAIT) == "still echoing"


@pytest.mark.parametrize("code", [1000, 4000])
def test_close_handshake(server: Server, code: int) -> None:
    with server.client() as ws:
        wait_for(lambda: server.websockets_open() == 1)
        ws.close(code, "bye")
        # The server answered with the same code (a dropped connection would read 1006).
        assert (ws.close_code, ws.close_reason) == (code, "bye")
    wait_for(lambda: server.websockets_open() == 0)


def test_message_over_the_limit_closes_1009(server: Server) -> None:
    with server.client() as ws:
        ws.send(b"x" * (MiB + 1))
        with pytest.raises(ConnectionClosedError):
            ws.recv(timeout=WAIT)
        assert ws.close_code == 1009
    wait_for(lambda: server.websockets_open() == 0)


# -- raw sockets -----------------------------------------------------------------------------------


def handshake(addr: tuple[str, int], extra: bytes = b"", key: str | None = None) -> tuple[socket.socket, bytes]:
    """A raw upgrade (``extra`` sent in the same write); returns the socket and the response head."""
    key = key or base64.b64encode(os.urandom(16)).decode()
    s = connect(addr)
    s.sendall(b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n%s" % (key.encode(), extra))
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += recv_exact(s, 1)
    return s, head


def masked(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin).serialize(mask=True, extensions=[])


def read_frame(s: socket.socket) -> tuple[int, bytes]:
    """(first byte, payload) of one unmasked server frame."""
    first, size = recv_exact(s, 2)
    if size == 126:
        size = struct.unpack("!H", recv_exact(s, 2))[0]
    elif size == 127:
        size = struct.unpack("!Q", recv_exact(s, 8))[0]
    return first, recv_exact(s, size)


def test_frames_in_the_same_write_as_the_upgrade(server: Server) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    s, head = handshake(server.addr, masked(Opcode.TEXT, b"early") + masked(Opcode.PING, b"p"), key)
    with s:
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert f"\r\nSec-WebSocket-Accept: {accept_key(key)}\r\n".encode() in head
        # The pong is the protocol's answer while it reads; the echo follows from the message.
        assert sorted([read_frame(s), read_frame(s)]) == [(0x81, b"early"), (0x8A, b"p")]
        s.sendall(masked(Opcode.CLOSE, struct.pack("!H", 4001)))
        assert read_frame(s) == (0x88, struct.pack("!H", 4001))
        assert recv_until_eof(s) == b""   # the server closes the TCP connection first


@pytest.mark.parametrize("how", ["fin", "reset", "mid-frame"])
def test_a_peer_that_vanishes(server: Server, how: str) -> None:
    with server.client() as ws:
        s, head = handshake(server.addr)
        assert head.startswith(b"HTTP/1.1 101 ")
        wait_for(lambda: server.websockets_open() == 2)
        if how == "mid-frame":
            s.sendall(masked(Opcode.BINARY, b"z" * 1000)[:500])
        if how == "reset":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        wait_for(lambda: server.websockets_open() == 1)   # gone from the broadcast set
        ws.send("broadcast:anyone?")
        assert ws.recv(timeout=WAIT) == "broadcast:anyone?"


def test_invalid_utf8_text_closes_1007(server: Server) -> None:
    s, _ = handshake(server.addr)
    with s:
        s.sendall(masked(Opcode.TEXT, b"\xff\xfe"))
        first, payload = read_frame(s)
        assert (first, payload[:2]) == (0x88, struct.pack("!H", 1007))
        assert recv_until_eof(s) == b""


def test_http_and_bad_upgrades_on_the_same_port(server: Server) -> None:
    with server.client() as ws:
        with connect(server.addr) as s:
            s.sendall(b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert recv_until_eof(s).endswith(b"\r\n\r\nHello, World!")
        ws.send("ok")
        assert ws.recv(timeout=WAIT) == "ok"
    with connect(server.addr) as s:   # no Sec-WebSocket-Key: the protocol refuses, then closes
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Version: 13\r\n\r\n")
        assert recv_until_eof(s).startswith(b"HTTP/1.1 400 Bad Request\r\n")
    with connect(server.addr) as s:   # /ws without an upgrade is a plain 404
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert recv_until_eof(s).startswith(b"HTTP/1.1 404 Not Found\r\n")
    with connect(server.addr) as s:   # an upgrade it does not speak is answered as HTTP, and HTTP goes on
        s.sendall(b"GET /plaintext HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
                  b"GET /json HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        reply = recv_until_eof(s)
        assert reply.count(b"HTTP/1.1 200 OK\r\n") == 2 and reply.endswith(b'{"message": "Hello, World!"}')
