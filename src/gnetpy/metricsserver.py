"""``metrics_addr``: the engine answers ``GET /metrics`` itself, on one of its own loops.

A minimal HTTP/1.1 responder, enough for Prometheus and curl, nothing else:

* ``GET /metrics`` (or ``HEAD``; a query string is ignored) is answered 200 with the page
  (metrics.py) as ``text/plain; version=0.0.4``; another path is 404, another method 405,
  a request line that is not HTTP/1.x 400, a request head over ``MAX_REQUEST`` bytes 431.
* One request per connection: the reply says ``Connection: close`` and the connection is
  closed once it is sent.  Prometheus opens a connection per scrape without complaint.
* Bounded: ``MAX_CLIENTS`` connections at once (more are closed at once), and each must
  be over within ``EXCHANGE_TIMEOUT`` -- a client that connects and sends nothing holds
  a descriptor for that long, no longer.

Where it runs: on the main reactor when there is one (always in process mode, where it
is the parent's: it sums every worker), else on loop 0.  Its listener is accepted by an
ordinary ``Acceptor`` (EMFILE back-off included) that is never held while workers
restart; its connections are descriptors the loop serves through ``watch``, as it
serves a worker's channel, never ``Conn``s: the handler does not see them and
``stats()`` does not count them.  The page is built from ``Engine.stats()`` on that
loop: integers read, nothing locked.
"""

from __future__ import annotations

import logging
import socket
from functools import partial
from typing import TYPE_CHECKING, Any, Callable

from . import inherit
from .listener import Listener
from .metrics import CONTENT_TYPE
from .options import Options

if TYPE_CHECKING:
    from .address import Address, AddrInfo
    from .eventloop import EventLoop
    from .timers import TimerHandle

MAX_REQUEST = 8192  # bytes of request head; curl's GET is under 100, Prometheus' under 300
MAX_CLIENTS = 16  # scrapes served at once
EXCHANGE_TIMEOUT = 10.0  # seconds a connection may take to send its request and read the reply
_READ = 4096

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large"}


class MetricsServer:
    """The ``metrics_addr`` listener and the scrapes in progress; ``hand_over`` target of its acceptor."""

    def __init__(self, address: Address, page: Callable[[], str],
                 logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        # Bound with its own options: SO_REUSEADDR (a restart rebinds at once), none of the
        # engine's (reuse_port would let a second engine share the port).
        self._listener = Listener(address, Options(reuse_addr=True))
        self.addr: AddrInfo = self._listener.addr
        self._page = page
        self._logger = logger
        self._loop: EventLoop | None = None
        self._exchanges: dict[int, _Exchange] = {}
        inherit.register(self)

    def serve_on(self, loop: EventLoop) -> None:
        """Accept on ``loop`` once it runs."""
        self._loop = loop
        loop.add_listener(self._listener, lambda remote: self, holdable=False)

    def close(self) -> None:
        """When the engine has stopped: the listener and any scrape still open."""
        for exchange in list(self._exchanges.values()):
            exchange.sock.close()
        self._exchanges.clear()
        self._listener.close()

    def _forget_in_child(self) -> None:
        """In a forked worker: its copies of the scrapes' sockets (the listener forgets its own; inherit.py)."""
        for exchange in self._exchanges.values():
            exchange.sock.close()

    # -- on the loop -----------------------------------------------------------------------

    def hand_over(self, sock: socket.socket, remote: Any, role: Any = None) -> None:
        """An accepted scrape (non-blocking already): read its request."""
        loop = self._loop
        if loop is None or len(self._exchanges) >= MAX_CLIENTS:
            sock.close()
            return
        exchange = _Exchange(sock)
        self._exchanges[exchange.fd] = exchange
        exchange.timer = loop.call_later(EXCHANGE_TIMEOUT, partial(self._end, exchange))
        loop.watch(exchange.fd, partial(self._on_readable, exchange))

    def _on_readable(self, exchange: _Exchange, events: int) -> None:
        try:
            data = exchange.sock.recv(_READ)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._end(exchange)
            return
        if not data:
            self._end(exchange)
            return
        exchange.request += data
        end = exchange.request.find(b"\r\n\r\n")
        if end >= 0:
            self._reply(exchange, respond(bytes(exchange.request[:end]), self._page))
        elif len(exchange.request) > MAX_REQUEST:
            self._reply(exchange, response(431, b"request head too large\n"))

    def _reply(self, exchange: _Exchange, reply: bytes) -> None:
        assert self._loop is not None
        self._loop.unwatch(exchange.fd)
        exchange.watched = False
        exchange.out = memoryview(reply)
        self._send(exchange)

    def _send(self, exchange: _Exchange, events: int = 0) -> None:
        """The reply, as far as the socket takes it; the rest when it is writable; then the end."""
        assert self._loop is not None
        try:
            sent = exchange.sock.send(exchange.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._end(exchange)
            return
        exchange.out = exchange.out[sent:]
        if not exchange.out:
            self._end(exchange)
        elif not exchange.watched:
            self._loop.watch_writable(exchange.fd, partial(self._send, exchange))
            exchange.watched = True

    def _end(self, exchange: _Exchange) -> None:
        """Done, failed or too slow: forget the connection and close it."""
        if self._exchanges.pop(exchange.fd, None) is None:
            return  # ended already (its timer came after)
        assert self._loop is not None
        if exchange.timer is not None:
            exchange.timer.cancel()
        if exchange.watched:
            self._loop.unwatch(exchange.fd)
        exchange.sock.close()


class _Exchange:
    """One scrape: its socket, the request read so far, the reply still to send."""

    __slots__ = ("sock", "fd", "request", "out", "timer", "watched")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.request = bytearray()
        self.out = memoryview(b"")
        self.timer: TimerHandle | None = None
        self.watched = True  # registered with the loop (for reading, then for writing the rest)


def respond(head: bytes, page: Callable[[], str]) -> bytes:
    """The whole reply to a request ``head`` (without its blank line): the page, or the error that says why not."""
    request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return response(400, b"expected an HTTP/1.x request line: GET /metrics HTTP/1.1\n")
    method, target, _ = parts
    if target.split("?", 1)[0] != "/metrics":
        return response(404, b"only /metrics is served here\n")
    if method not in ("GET", "HEAD"):
        return response(405, b"GET /metrics\n", ("Allow", "GET, HEAD"))
    body = page().encode()
    reply = response(200, body, ("Content-Type", CONTENT_TYPE))
    return reply[:len(reply) - len(body)] if method == "HEAD" else reply  # HEAD: the same head, no body


def response(status: int, body: bytes, *headers: tuple[str, str]) -> bytes:
    """An HTTP/1.1 response that closes the connection; text/plain unless a header says otherwise."""
    fields = dict(headers)
    fields.setdefault("Content-Type", "text/plain; charset=utf-8")
    fields["Content-Length"] = str(len(body))
    fields["Connection"] = "close"
    head = f"HTTP/1.1 {status} {_REASONS[status]}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return head.encode("latin-1") + b"\r\n" + body


__all__ = ["MetricsServer", "respond", "response"]
