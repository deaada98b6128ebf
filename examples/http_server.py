"""An HTTP/1.1 server on gnetpy, with WebSocket on the same port.

    python examples/http_server.py --addr tcp://127.0.0.1:8080 --loops 1
    curl -i http://127.0.0.1:8080/plaintext
    curl -i --data-binary 'hello' http://127.0.0.1:8080/echo

What it shows:

- one httptools parser (llhttp, as in uvicorn) per connection, kept in
  ``c.context`` and fed whatever arrived; each response is written with
  ``c.write`` as soon as its request is complete.  That is all keep-alive and
  pipelining take: the engine sends every write of one callback in one system
  call, so 16 pipelined requests cost one ``write``;
- bodies by Content-Length and chunked (and ``Expect: 100-continue``),
  HTTP/1.0 (closed unless it asks for keep-alive) and ``Connection: close``;
- bad input answered and closed: 400 for a malformed request (Content-Length
  together with Transfer-Encoding included), 413 for a body over ``--max-body``,
  431 for a request line and headers over ``--max-header``;
- the Date header formatted once a second by a timer on each event loop
  (``c.event_loop.call_later``), not once per response;
- TechEmpower's two simplest tests, ``GET /plaintext`` and ``GET /json``, plus
  ``POST /echo`` (the body back) and 404 for anything else;
- ``GET /ws`` with ``Upgrade: websocket``: the connection is handed to
  examples/websocket.py (echo, broadcast, ping, close handshake).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, HERE)

import httptools  # noqa: E402

import gnetpy  # noqa: E402
from websocket import MAX_MESSAGE, WebSocketHub  # noqa: E402  (examples/websocket.py)

MAX_BODY = 1 << 20       # bytes of request body; more is answered 413
MAX_HEADER = 8 << 10     # bytes of request line and headers; more is answered 431

CLOSE = gnetpy.Action.CLOSE
SERVER = b"Server: gnetpy\r\n"
TEXT = b"text/plain"
HELLO = b"Hello, World!"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
CONNECTION_CLOSE = b"Connection: close\r\n"
CONNECTION_KEEP_ALIVE = b"Connection: keep-alive\r\n"   # only HTTP/1.0 needs telling
STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}


def response(status: int, content_type: bytes, body: bytes, date: bytes, connection: bytes = b"") -> bytes:
    return b"".join((STATUS_LINES[status], SERVER, date, b"Content-Type: ", content_type,
                     b"\r\nContent-Length: ", b"%d" % len(body), b"\r\n", connection, b"\r\n", body))


# The lengths of the header names on_headers_complete looks at: Expect, Connection, Content-Length.
SPECIAL_LENGTHS = frozenset((6, 10, 14))
# Routes whose response is the same bytes for every request (within a second: the Date header).
STATIC = {(b"GET", b"/plaintext"): (200, TEXT, HELLO)}
NOT_FOUND = (404, TEXT, b"Not Found\n")


def route(method: bytes, path: bytes, body: bytes) -> tuple[int, bytes, bytes]:
    """(status, content type, body) for one request."""
    if method == b"GET" and path == b"/json":
        # TechEmpower's rules: serialize per request.
        return 200, b"application/json", json.dumps({"message": "Hello, World!"}).encode()
    if method == b"POST" and path == b"/echo":
        return 200, b"application/octet-stream", body
    return STATIC.get((method, path), NOT_FOUND)


class HttpError(Exception):
    """Raised in a parser callback: answer with ``status`` and close."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Clock:
    """The Date header line, refreshed once a second by a timer on each loop that serves."""

    def __init__(self) -> None:
        self.line = b""
        self.loops: set[Any] = set()
        self.static: dict[tuple[bytes, bytes, bytes], bytes] = {}  # (method, path, connection) -> response
        self.refresh()

    def refresh(self) -> None:
        self.line = b"Date: " + formatdate(usegmt=True).encode() + b"\r\n"
        self.static.clear()  # made again with the new date, at most a few per second

    def static_response(self, key: tuple[bytes, bytes, bytes]) -> bytes:
        """A STATIC route's response, made once a second (bounded: STATIC's routes x 3 connection lines)."""
        status, content_type, body = STATIC[key[:2]]
        made = self.static[key] = response(status, content_type, body, self.line, key[2])
        return made

    def start(self, loop: Any) -> None:
        if loop not in self.loops:
            self.loops.add(loop)
            self.tick(loop)

    def tick(self, loop: Any) -> None:
        self.refresh()
        loop.call_later(1.001 - time.time() % 1.0, lambda: self.tick(loop))   # just past the next second


class HttpConn:
    """One connection's HTTP state: httptools calls the ``on_*`` methods from ``feed_data``."""

    def __init__(self, server: HttpServer, conn: gnetpy.Conn) -> None:
        self.server = server
        self.conn = conn
        self.parser = httptools.HttpRequestParser(self)
        self.closing = False        # a response said Connection: close
        self.upgrade: tuple[bytes, list[tuple[bytes, bytes]]] | None = None   # a WebSocket request
        self.feeds = 0              # feed_data calls so far
        self.fed = 0                # bytes in the latest
        self.on_message_begin()

    # -- feeding the parser ----------------------------------------------------------------

    def feed(self, data: bytes) -> gnetpy.Action | None:
        self.feeds += 1
        self.fed = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            return self.upgraded(data[exc.args[0]:])
        except httptools.HttpParserError as exc:
            return self.failed(exc)
        if self.closing:
            return CLOSE
        # Headers still incomplete: count every byte of the chunks after the one they began in.
        if self.in_headers and self.begun_in != self.feeds:
            self.header_bytes += len(data)
            if self.header_bytes > self.server.max_header:
                return self.error(431)
        return None

    def upgraded(self, rest: bytes) -> gnetpy.Action | None:
        if self.upgrade is not None:
            url, headers = self.upgrade
            return self.server.ws.accept(self.conn, url, headers, rest)
        if self.closing:
            return CLOSE
        # An upgrade we do not speak (h2c, ...) was answered as plain HTTP: go on with HTTP.
        self.parser = httptools.HttpRequestParser(self)
        return self.feed(rest) if rest else None

    def failed(self, exc: httptools.HttpParserError) -> gnetpy.Action:
        if self.closing:   # bytes after a Connection: close request: nobody will answer them
            return CLOSE
        cause = exc.__context__
        if isinstance(cause, HttpError):
            return self.error(cause.status)
        if isinstance(exc, httptools.HttpParserCallbackError) and cause is not None:
            raise cause    # a bug in a callback, not bad input: gnetpy logs it and closes
        return self.error(400)

    def error(self, status: int) -> gnetpy.Action:
        phrase = HTTPStatus(status).phrase.encode() + b"\n"
        self.conn.write(response(status, TEXT, phrase, self.server.clock.line, CONNECTION_CLOSE))
        return CLOSE

    # -- httptools' callbacks ------------------------------------------------------------
    #
    # Called for every request: they do as little as they can (a 16-deep pipelined read is
    # 16 of each).  The header limit is checked once, when the head is complete (and in
    # feed for a head that spans reads), not per header.

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.header_bytes = 0
        self.in_headers = True
        self.begun_in = self.feeds

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_headers = False
        self.keep_alive = b""
        for name, value in self.headers:
            if len(name) in SPECIAL_LENGTHS:   # most headers are none of these: no lower() for them
                self.special_header(name.lower(), value)
        # A head that arrived in one read no longer than the limit is within it: no sum needed.
        if self.begun_in != self.feeds or self.fed > self.server.max_header:
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > self.server.max_header:
                raise HttpError(431)

    def special_header(self, name: bytes, value: bytes) -> None:
        if name == b"content-length" and int(value) > self.server.max_body:   # llhttp checked the digits
            raise HttpError(413)   # before the body arrives
        if name == b"expect" and value.lower() == b"100-continue":
            self.conn.write(CONTINUE)
        elif name == b"connection" and value.lower() == b"keep-alive":
            self.keep_alive = CONNECTION_KEEP_ALIVE   # said back: HTTP/1.0 needs it, 1.1 allows it

    def on_body(self, data: bytes) -> None:
        self.body_bytes += len(data)
        if self.body_bytes > self.server.max_body:
            raise HttpError(413)   # chunked: no length up front
        self.body.append(data)

    def on_message_complete(self) -> None:
        parser = self.parser
        method = parser.get_method()
        path = self.url.partition(b"?")[0]
        if parser.should_upgrade() and method == b"GET" and path == b"/ws" and any(
                name.lower() == b"upgrade" and value.lower() == b"websocket" for name, value in self.headers):
            self.upgrade = (self.url, self.headers)   # answered by the WebSocket side, after feed_data
            return
        if parser.should_keep_alive():
            connection = self.keep_alive
        else:
            self.closing, connection = True, CONNECTION_CLOSE
        clock = self.server.clock
        cached = clock.static.get((method, path, connection))
        if cached is not None:
            self.conn.write(cached)
            return
        if (method, path) in STATIC:
            self.conn.write(clock.static_response((method, path, connection)))
            return
        status, content_type, body = route(method, path, b"".join(self.body))
        self.conn.write(response(status, content_type, body, clock.line, connection))


class HttpServer(gnetpy.EventHandler):
    def __init__(self, max_body: int = MAX_BODY, max_header: int = MAX_HEADER,
                 max_message: int = MAX_MESSAGE) -> None:
        self.max_body = max_body
        self.max_header = max_header
        self.clock = Clock()
        self.ws = WebSocketHub(max_message)

    def on_boot(self, engine: gnetpy.Engine) -> None:
        logging.getLogger("http").info("http server on %s", engine.addrs)

    def on_open(self, c: gnetpy.Conn) -> None:
        self.clock.start(c.event_loop)
        c.context = HttpConn(self, c)

    def on_traffic(self, c: gnetpy.Conn) -> gnetpy.Action | None:
        state = c.context
        if state.__class__ is HttpConn:
            return state.feed(c.next())
        return self.ws.on_traffic(c)   # upgraded

    def on_close(self, c: gnetpy.Conn, err: BaseException | None) -> None:
        if c.context.__class__ is not HttpConn:
            self.ws.on_close(c, err)
        c.context = None   # HttpConn and Conn point at each other


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="gnetpy HTTP/1.1 + WebSocket server")
    parser.add_argument("--addr", default="tcp://127.0.0.1:8080", help="tcp://host:port or unix:///path")
    parser.add_argument("--loops", type=int, default=1, help="event loops; 0 = one per CPU")
    parser.add_argument("--max-body", type=int, default=MAX_BODY, help="request body limit in bytes (413)")
    parser.add_argument("--max-header", type=int, default=MAX_HEADER, help="request head limit in bytes (431)")
    parser.add_argument("--max-message", type=int, default=MAX_MESSAGE, help="WebSocket message limit (1009)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)   # it logs every connection at INFO
    server = HttpServer(args.max_body, args.max_header, args.max_message)
    gnetpy.run(server, args.addr, num_event_loop=args.loops, multicore=args.loops == 0, reuse_addr=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
