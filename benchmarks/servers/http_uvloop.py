"""examples/http_server.py's HTTP handler on asyncio's Protocol API and uvloop: the baseline to compare.

    python benchmarks/servers/http_uvloop.py --addr 127.0.0.1:8080 [--asyncio]

The same routes (GET /plaintext, GET /json, POST /echo, 404 otherwise), the
same parsing (one httptools parser per connection, fed each ``data_received``),
the same limits (400, 413, 431, each followed by a close), HTTP/1.0 and
Connection: close, the same cached Date header (refreshed once a second by a
timer), and each response written with ``transport.write`` as soon as its
request is complete.  No WebSocket.  It prints nothing but errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast

import httptools

MAX_BODY = 1 << 20
MAX_HEADER = 8 << 10

SERVER = b"Server: gnetpy\r\n"   # the same bytes as the gnetpy example's responses
TEXT = b"text/plain"
HELLO = b"Hello, World!"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
CONNECTION_CLOSE = b"Connection: close\r\n"
CONNECTION_KEEP_ALIVE = b"Connection: keep-alive\r\n"
STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in HTTPStatus}


def response(status: int, content_type: bytes, body: bytes, date: bytes, connection: bytes = b"") -> bytes:
    return b"".join((STATUS_LINES[status], SERVER, date, b"Content-Type: ", content_type,
                     b"\r\nContent-Length: ", b"%d" % len(body), b"\r\n", connection, b"\r\n", body))


def route(method: bytes, url: bytes, body: bytes) -> tuple[int, bytes, bytes]:
    path = url.partition(b"?")[0]
    if method == b"GET" and path == b"/plaintext":
        return 200, TEXT, HELLO
    if method == b"GET" and path == b"/json":
        return 200, b"application/json", json.dumps({"message": "Hello, World!"}).encode()
    if method == b"POST" and path == b"/echo":
        return 200, b"application/octet-stream", body
    return 404, TEXT, b"Not Found\n"


class HttpError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Clock:
    """The Date header line, refreshed once a second by the loop's timer."""

    line = b""

    @classmethod
    def tick(cls) -> None:
        cls.line = b"Date: " + formatdate(usegmt=True).encode() + b"\r\n"
        asyncio.get_running_loop().call_later(1.001 - time.time() % 1.0, cls.tick)


class HttpProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)   # uvloop's transports are no asyncio.Transport
        self.parser = httptools.HttpRequestParser(self)
        self.closing = False
        self.feeds = 0
        self.on_message_begin()

    def data_received(self, data: bytes) -> None:
        self.feeds += 1
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:   # no WebSocket here: answered as plain HTTP, go on
            if self.closing:
                self.transport.close()
                return
            self.parser = httptools.HttpRequestParser(self)
            if data[exc.args[0]:]:
                self.data_received(data[exc.args[0]:])
            return
        except httptools.HttpParserError as exc:
            self.failed(exc)
            return
        if self.closing:
            self.transport.close()
        elif self.in_headers and self.begun_in != self.feeds:
            self.header_bytes += len(data)
            if self.header_bytes > MAX_HEADER:
                self.error(431)

    def failed(self, exc: httptools.HttpParserError) -> None:
        if self.closing:
            self.transport.close()
            return
        cause = exc.__context__
        if isinstance(cause, HttpError):
            self.error(cause.status)
            return
        if isinstance(exc, httptools.HttpParserCallbackError) and cause is not None:
            raise cause
        self.error(400)

    def error(self, status: int) -> None:
        phrase = HTTPStatus(status).phrase.encode() + b"\n"
        self.transport.write(response(status, TEXT, phrase, Clock.line, CONNECTION_CLOSE))
        self.transport.close()

    # httptools' callbacks

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
        self.header_bytes += len(url)
        if self.header_bytes > MAX_HEADER:
            raise HttpError(431)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > MAX_HEADER:
            raise HttpError(431)
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_headers = False
        expect = False
        for name, value in self.headers:
            name = name.lower()
            if name == b"content-length" and int(value) > MAX_BODY:
                raise HttpError(413)
            if name == b"expect" and value.lower() == b"100-continue":
                expect = True
        if expect:
            self.transport.write(CONTINUE)

    def on_body(self, data: bytes) -> None:
        self.body_bytes += len(data)
        if self.body_bytes > MAX_BODY:
            raise HttpError(413)
        self.body.append(data)

    def on_message_complete(self) -> None:
        parser = self.parser
        status, content_type, body = route(parser.get_method(), self.url, b"".join(self.body))
        if not parser.should_keep_alive():
            self.closing, connection = True, CONNECTION_CLOSE
        elif parser.get_http_version() == "1.0":
            connection = CONNECTION_KEEP_ALIVE
        else:
            connection = b""
        self.transport.write(response(status, content_type, body, Clock.line, connection))


async def serve(host: str, port: int) -> None:
    Clock.tick()
    server = await asyncio.get_running_loop().create_server(HttpProtocol, host, port, reuse_address=True)
    async with server:
        await server.serve_forever()


def main(argv: Any = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True, help="host:port (tcp://host:port also accepted)")
    parser.add_argument("--asyncio", action="store_true", help="asyncio's own event loop instead of uvloop")
    args = parser.parse_args(argv)
    host, _, port = args.addr.removeprefix("tcp://").rpartition(":")
    if args.asyncio:
        asyncio.run(serve(host.strip("[]"), int(port)))
    else:
        import uvloop

        uvloop.run(serve(host.strip("[]"), int(port)))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
