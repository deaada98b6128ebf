"""Outbound connections: a non-blocking connect, finished on the event loop.

``EventLoop.dial`` and ``Client.dial`` both come here.  The address is parsed
(``address.parse_dial_address``) and, when the host is a name, resolved off
the loop -- by the calling thread for ``Client.dial``, by a short-lived
``gnetpy-resolve`` thread for ``EventLoop.dial`` -- because ``getaddrinfo``
blocks.  Then, on the loop:

1. a non-blocking socket ``connect``; TCP answers ``EINPROGRESS`` and the
   socket is watched for writability (``EventLoop.watch_writable``, like
   every descriptor that is not an open connection);
2. writable means the handshake ended: ``SO_ERROR`` says how.  Success makes
   it a ``Conn`` (``on_open`` runs, then the dial's callback); a failure tries
   the next address the name resolved to, then reports the last error;
3. a timer bounds the whole dial; when it fires the socket is closed and the
   callback gets ``TimeoutError``.

A connect in progress is not yet a connection: no ``Conn`` exists, the
handler sees nothing, and a failed dial leaves no descriptor and no
registration behind (state.py calls this CONNECTING; it ends in OPEN or in
nothing).  A unix socket whose listener's backlog is full answers ``EAGAIN``
rather than completing later: that connect is retried every few
milliseconds until the timeout.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Optional

from . import tls
from .address import Address, format_addr, is_ip_literal, parse_address
from .errors import EngineStoppedError, UnsupportedProtocolError
from .proxyproto import ProxyInfo, encode
from .state import CLOSED
from .timers import is_delay

if TYPE_CHECKING:
    from .conn import Conn, StreamConn
    from .loopapi import LoopServices

DialCallback = Callable[[Optional["Conn"], Optional[BaseException]], Any]
Target = tuple[int, Any]  # (family, sockaddr)
TlsSettings = Optional[tuple[Any, Optional[str]]]  # (ssl_context, server_hostname), or None: plain

# A unix connect refused for a full backlog is tried again this often.
UNIX_RETRY = 0.01
_IN_PROGRESS = {errno.EINPROGRESS, errno.EALREADY, errno.EINTR}


def check_dial(addr: str, timeout: float | None, ssl_context: Any, server_hostname: str | None
               ) -> tuple[Address, TlsSettings]:
    """What every dial checks before it connects: the address, the timeout, the TLS settings."""
    address = parse_address(addr, dial=True)
    if address.network == "udp":
        raise UnsupportedProtocolError(f"dial {addr!r}: connected UDP is not available in this version")
    if timeout is not None and not is_delay(timeout):
        raise ValueError(f"dial: timeout {timeout!r}; accepted: None or finite seconds >= 0")
    return address, tls.client_side(ssl_context, server_hostname, address.host)


def proxy_preamble(header: Any) -> bytes:
    """A dial's ``proxy_header``, as the bytes to send first: a ``ProxyInfo`` encoded, bytes as they are."""
    if header is None:
        return b""
    if isinstance(header, (bytes, bytearray)):
        return bytes(header)
    if isinstance(header, ProxyInfo):
        return encode(header)
    raise TypeError(f"dial: proxy_header {header!r}; expected None, a gnetpy.ProxyInfo or bytes")


def start_dial(loop: LoopServices, addr: str, callback: DialCallback, timeout: float | None, context: Any,
               ssl_context: Any = None, server_hostname: str | None = None, proxy_header: Any = None) -> None:
    """``EventLoop.dial``: check, resolve off the loop if need be, then connect on it."""
    address, tls_settings = check_dial(addr, timeout, ssl_context, server_hostname)
    preamble = proxy_preamble(proxy_header)
    deadline = None if timeout is None else time.monotonic() + timeout

    def connect(targets: list[Target] | None, err: BaseException | None) -> None:
        if err is not None or not targets:
            _tell(loop, callback, err or OSError(f"dial {addr!r}: nothing to connect to"))
            return
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        Connect(loop, targets, callback, left, context, tls_settings, preamble).start()

    resolver = partial(resolve, address.network, address.family, address.host, address.port, address.path)
    if address.network == "unix" or is_ip_literal(address.host):
        targets = resolver()  # no name to look up: nothing blocks
        if loop.in_loop_thread():
            connect(targets, None)
        elif not loop.submit(True, connect, targets, None):
            raise EngineStoppedError(f"event loop {loop.index} has stopped")
    else:
        resolve_in_thread(loop, resolver, connect)


def _tell(loop: LoopServices, callback: DialCallback, err: BaseException) -> None:
    try:
        callback(None, err)
    except BaseException as exc:
        loop.user_raised(exc, f"dial callback {callback!r}")


def resolve(network: str, family: int, host: str, port: int, path: str) -> list[Target]:
    """Where to connect, in the order to try (this blocks for a host name: call it off the loop)."""
    if network == "unix":
        return [(socket.AF_UNIX, "\0" + path[1:] if path.startswith("@") else path)]
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError(exc.errno, f"cannot resolve {host!r}: {exc.strerror}") from None
    return [(found_family, sockaddr) for found_family, _, _, _, sockaddr in infos]


def resolve_in_thread(loop: LoopServices, resolver: Callable[[], list[Target]],
                      then: Callable[[list[Target] | None, BaseException | None], Any]) -> None:
    """Run ``resolver`` on a short-lived thread and ``then(targets, err)`` back on ``loop``."""
    def work() -> None:
        try:
            targets, err = resolver(), None
        except BaseException as exc:
            targets, err = None, exc
        if not loop.submit(True, then, targets, err):
            then(None, OSError(errno.ECANCELED, f"event loop {loop.index} stopped while resolving"))

    threading.Thread(target=work, name="gnetpy-resolve", daemon=True).start()


class Connect:
    """One dial in progress on a loop: the socket, what is left to try, and who to tell."""

    __slots__ = ("_loop", "_targets", "_callback", "_sock", "_timer", "_last_error", "_done", "_retry", "_context",
                 "_tls", "_handshaking", "_preamble")

    def __init__(self, loop: LoopServices, targets: list[Target], callback: DialCallback, timeout: float | None,
                 context: Any = None, tls_settings: TlsSettings = None, preamble: bytes = b"") -> None:
        self._loop = loop
        self._preamble = preamble  # a PROXY header, sent before anything else
        self._context = context
        self._tls = tls_settings
        self._handshaking: StreamConn | None = None  # TLS: connected, the handshake under way
        self._targets = list(targets)
        self._callback = callback
        self._sock: socket.socket | None = None
        self._last_error: BaseException | None = None
        self._done = False
        self._retry: Any = None
        self._timer = loop.call_later(timeout, self._expire) if timeout is not None else None
        loop.add_dial(self)

    def start(self) -> None:
        """On the loop: try the first address."""
        if self._loop.stopping:
            self._fail(OSError(errno.ECANCELED, f"event loop {self._loop.index} is stopping"))
            return
        self._next()

    def _next(self) -> None:
        while self._targets and not self._done:
            family, sockaddr = self._targets[0]
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
            except OSError as exc:
                self._targets.pop(0)
                self._last_error = exc
                continue
            sock.setblocking(False)
            code = sock.connect_ex(sockaddr)
            if code == 0:
                self._targets.pop(0)
                self._connected(sock)
                return
            if code in _IN_PROGRESS:
                self._sock = sock
                self._loop.watch_writable(sock.fileno(), self._on_writable)
                return
            sock.close()
            if code == errno.EAGAIN and family == socket.AF_UNIX:  # a full backlog: not in progress
                self._retry = self._loop.call_later(UNIX_RETRY, self._next)
                return
            self._targets.pop(0)
            self._last_error = OSError(code, f"connect to {format_addr(sockaddr)!r}: {os.strerror(code)}")
        if not self._done:
            self._fail(self._last_error or OSError(errno.EHOSTUNREACH, "no address to connect to"))

    def _on_writable(self, events: int) -> None:
        sock = self._forget_socket()
        if sock is None:
            return
        family, sockaddr = self._targets.pop(0)
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code == 0:
            self._connected(sock)
            return
        sock.close()
        self._last_error = OSError(code, f"connect to {format_addr(sockaddr)!r}: {os.strerror(code)}")
        self._next()

    def _connected(self, sock: socket.socket) -> None:
        if self._tls is None:
            self._finish()
            transport = None
        else:  # the dial goes on until the handshake is over, under the same timeout
            transport = tls.TlsTransport(self._loop, self._tls[0], False, self._tls[1])
            transport.on_handshake = self._handshake_over
        try:
            conn = self._loop.enroll_conn(sock, self._context, transport, self._preamble)
        except BaseException as exc:
            self._finish()
            self._callback_with(None, exc)
            return
        if transport is None:
            self._opened(conn, None)
        elif not self._done:
            self._handshaking = conn

    def _handshake_over(self, conn: Conn | None, err: BaseException | None) -> None:
        if self._done:  # abandoned: the caller was told already
            return
        self._finish()
        if conn is None:
            self._callback_with(None, err)
        else:
            self._opened(conn, err)

    def _opened(self, conn: Conn, err: BaseException | None) -> None:
        if conn._state == CLOSED:  # closed already (on_open closed it, or it raised): say why
            self._callback_with(conn, err or conn._err or OSError(errno.ECONNABORTED, "closed during on_open"))
        else:
            self._callback_with(conn, None)

    def _expire(self) -> None:
        if self._done:
            return
        if self._handshaking is not None:  # closing it tells _handshake_over
            self._loop.close_conn(self._handshaking, TimeoutError("dial timed out during the TLS handshake"),
                                  False)
            return
        self._forget_socket_and_close()
        self._fail(TimeoutError(f"dial timed out ({self._last_error or 'no answer'})"))

    def _fail(self, err: BaseException) -> None:
        self._finish()
        self._callback_with(None, err)

    def _finish(self) -> None:
        self._done = True
        self._loop.drop_dial(self)
        if self._timer is not None:
            self._timer.cancel()
        if self._retry is not None:
            self._retry.cancel()

    def _callback_with(self, conn: Conn | None, err: BaseException | None) -> None:
        try:
            self._callback(conn, err)
        except BaseException as exc:
            if conn is not None and not conn.closed:
                self._loop.callback_raised(conn, exc)
            else:
                self._loop.user_raised(exc, f"dial callback {self._callback!r}")

    def _forget_socket(self) -> socket.socket | None:
        sock, self._sock = self._sock, None
        if sock is not None:
            self._loop.unwatch(sock.fileno())
        return sock

    def _forget_socket_and_close(self) -> None:
        sock = self._forget_socket()
        if sock is not None:
            sock.close()

    def abandon(self) -> None:
        """The loop is going away: close the socket, tell the caller."""
        if not self._done:
            self._forget_socket_and_close()
            self._fail(OSError(errno.ECANCELED, "the event loop stopped before the connection was made"))

