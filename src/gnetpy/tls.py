"""TLS on the reactor: an ``ssl.SSLObject`` over two memory BIOs per connection, no thread, no blocking call.

The way asyncio's ``sslproto.py`` and uvloop do it: the socket carries
ciphertext, which the loop reads into the connection's *incoming* BIO; the
``SSLObject`` turns it into plaintext for the handler (``peek``/``next``/
``read`` see only that), and turns what the handler writes into ciphertext
in the *outgoing* BIO, which goes to the socket through the ordinary write
path -- so ``outbound_buffered``, backpressure and the graceful close all
count and carry ciphertext, exactly what is queued.

* **Handshaking** is a state of the connection (state.py): the handshake is
  driven by readiness events; ``on_open`` runs once it completed (so
  ``on_open`` can write, and ``c.tls`` has the peer's certificate, the
  cipher, the ALPN protocol).  A handshake that fails -- garbage instead of
  a ClientHello, a certificate refused, a peer that hangs up -- never
  reaches the handler: no ``on_open``, no ``on_close``; it is logged at
  DEBUG (a scanner must not flood the log) and counted
  (``Engine.count_tls_failures``).  ``tls_handshake_timeout`` (10 s) drops a
  peer that never finishes (a slowloris on the handshake), with one timer
  for them all (``FifoDeadlines``).
* **After the handshake**, a bad record, an unexpected end of file (no
  ``close_notify``) or a refused renegotiation closes the connection with
  the ``ssl.SSLError`` in ``on_close``; a ``close_notify`` followed by end of
  file is the peer's orderly close (``EOFError``, as for plain TCP).
* **A local close** sends ``close_notify`` first, then the lingering close
  of closing.py.
* The reactor sends a TLS connection's events here, never down the plain
  inline read path: one test of ``Conn._tls`` per event.
"""

from __future__ import annotations

import os
import ssl
from typing import TYPE_CHECKING, Any, Callable

from .conn import Conn
from .errors import UnsupportedOperationError
from .poller import ERR, HUP, OUT, READ_EVENTS
from .state import HANDSHAKING, OPEN

if TYPE_CHECKING:
    import socket

    from .eventloop import EventLoop

# Ciphertext read per read call, and plaintext taken from the SSLObject per call.
TLS_READ = 65536
# Reads per readiness event (level-triggered: more comes with the next event).
READS_PER_EVENT = 4


class TlsSession:
    """A connection's TLS state: the ``SSLObject``, its two BIOs, and who waits for the handshake."""

    __slots__ = ("sslobj", "incoming", "outgoing", "on_handshake", "closing", "info")

    def __init__(self, context: ssl.SSLContext, server_side: bool, server_hostname: str | None) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.sslobj = context.wrap_bio(self.incoming, self.outgoing, server_side=server_side,
                                       server_hostname=server_hostname)
        # A dial waiting for the handshake: called (conn, err) once it is over either way.
        self.on_handshake: Callable[[Conn | None, BaseException | None], Any] | None = None
        self.closing = False
        self.info: TlsInfo | None = None  # once the handshake is done


class TlsInfo:
    """What ``c.tls`` shows of a connection's TLS session: the ``SSLObject``'s facts, read once the handshake is done.

    A snapshot, not a view: an ``SSLObject`` is not safe to touch from two
    threads, and these facts do not change after the handshake (TLS 1.3 has
    no renegotiation; OpenSSL 3 refuses one a TLS 1.2 client asks for), so
    ``c.tls`` may be read from any thread.
    """

    __slots__ = ("_version", "_cipher", "_alpn", "_peercert", "_peercert_der", "server_hostname", "server_side")

    def __init__(self, sslobj: ssl.SSLObject) -> None:
        self._version = sslobj.version()
        self._cipher = sslobj.cipher()
        self._alpn = sslobj.selected_alpn_protocol()
        self._peercert = sslobj.getpeercert()
        self._peercert_der = sslobj.getpeercert(True)
        self.server_hostname: str | None = sslobj.server_hostname
        self.server_side: bool = sslobj.server_side

    def version(self) -> str | None:
        """``'TLSv1.3'``, ``'TLSv1.2'``..."""
        return self._version

    def cipher(self) -> tuple[str, str, int] | None:
        """(name, protocol, secret bits), as ``ssl.SSLObject.cipher``."""
        return self._cipher

    def selected_alpn_protocol(self) -> str | None:
        return self._alpn

    def getpeercert(self, binary_form: bool = False) -> Any:
        """The peer's certificate, as ``ssl.SSLObject.getpeercert`` (``{}`` when not verified, None when none)."""
        return self._peercert_der if binary_form else self._peercert

    def __repr__(self) -> str:
        return f"<TlsInfo {self._version} {self._cipher[0] if self._cipher else '-'}>"


class TlsConn(Conn):
    """A connection whose bytes on the wire are TLS records; its API is the plaintext (see the module docstring)."""

    __slots__ = ()

    def write(self, data: Any) -> int:
        """Encrypt ``data`` and send the records (queued like any write when the socket is full)."""
        if self._state != OPEN:
            return Conn.write(self, data)  # refuses, or raises on a closed connection, as Conn does
        try:
            self._tls.sslobj.write(data)
        except ssl.SSLError as exc:
            return self._write_failed(exc)
        _send_records(self)
        return len(data) if data.__class__ is bytes else memoryview(data).nbytes

    def writev(self, buffers: Any) -> int:
        """TLS frames what it is given: the pieces go into one write."""
        pieces = [bytes(piece) for piece in buffers]
        return self.write(b"".join(pieces))

    @property
    def tls(self) -> TlsInfo | None:
        return self._tls.info

    def dup(self) -> int:
        raise UnsupportedOperationError("dup on a TLS connection: its descriptor carries records only this "
                                        "loop can decrypt")


def _send_records(c: Conn) -> None:
    """What the SSLObject produced (records, alerts, handshake messages) to the socket."""
    records = c._tls.outgoing.read()
    if records:
        Conn.write(c, records)


# -- the loop's side --------------------------------------------------------------------------


def start(loop: EventLoop, c: Conn) -> None:
    """A new TLS connection (accepted, or dialed): under the handshake timeout; a client speaks first."""
    loop._handshakes.add(c._fd)
    if not c._tls.sslobj.server_side:
        _handshake(loop, c)


def on_event(loop: EventLoop, c: Conn, fd: int, events: int) -> None:
    """Every readiness event of a TLS connection that is handshaking or open."""
    if events & READ_EVENTS and (not c._paused or events & (ERR | HUP)):
        _read(loop, c, fd)
        if c._state not in (OPEN, HANDSHAKING):
            return
    if c._out and (events & OUT or loop._edge_triggered):
        loop._flush(c)


def _read(loop: EventLoop, c: Conn, fd: int) -> None:
    session = c._tls
    eof = False
    # Level-triggered: a few reads, the next event brings the rest.  Edge-triggered:
    # until the socket is drained, or the per-iteration budget is spent (then
    # _busy_read brings it back next iteration, as for a plain connection).
    edge = loop._edge_triggered
    budget = loop._opts.edge_triggered_chunk if edge else READS_PER_EVENT * TLS_READ
    if edge:
        loop._busy_read.pop(fd, None)
    while True:
        try:
            raw = os.read(fd, TLS_READ)
        except (BlockingIOError, InterruptedError):
            break
        except OSError as exc:
            _failed(loop, c, exc)
            return
        if not raw:
            session.incoming.write_eof()
            eof = True
            break
        session.incoming.write(raw)
        if len(raw) < TLS_READ:
            break  # drained for now
        budget -= len(raw)
        if budget <= 0:
            if edge:
                loop._busy_read[fd] = c
            break
    if c._state == HANDSHAKING and not _handshake(loop, c):
        return
    plaintext: list[bytes] = []
    sslobj, incoming = session.sslobj, session.incoming
    # Read until nothing is left rather than until SSLWantReadError: an
    # exception per message cost a quarter of the server's CPU in W10.
    # At EOF keep reading: the read that finds it says how (close_notify or not).
    while incoming.pending or sslobj.pending() or eof:
        try:
            chunk = sslobj.read(TLS_READ)
        except ssl.SSLWantReadError:
            break
        except ssl.SSLZeroReturnError:  # the peer's close_notify: an orderly end
            eof = True
            break
        except ssl.SSLError as exc:  # a bad record, an EOF without close_notify, a renegotiation refused
            _send_records(c)
            _deliver(loop, c, plaintext)
            _failed(loop, c, exc)
            return
        if not chunk:
            eof = True
            break
        plaintext.append(chunk)
    if session.outgoing.pending:
        _send_records(c)  # post-handshake messages (key updates), alerts
    c._seen = loop._now
    _deliver(loop, c, plaintext)
    if eof and c._state == OPEN:
        loop._close(c, EOFError("connection closed by the peer"), True)


def _deliver(loop: EventLoop, c: Conn, plaintext: list[bytes]) -> None:
    if plaintext and c._state == OPEN:
        loop._deliver(c, plaintext[0] if len(plaintext) == 1 else b"".join(plaintext))


def _handshake(loop: EventLoop, c: Conn) -> bool:
    """Advance the handshake; True once it is complete (and ``on_open`` has run)."""
    session = c._tls
    try:
        session.sslobj.do_handshake()
    except ssl.SSLWantReadError:
        _send_records(c)
        return False
    except (ssl.SSLError, OSError) as exc:
        _send_records(c)  # the alert that says why, if the peer still listens
        _handshake_failed(loop, c, exc)
        return False
    _send_records(c)
    loop._handshakes.discard(c._fd)
    session.info = TlsInfo(session.sslobj)
    loop._tls_opened(c)
    waiting, session.on_handshake = session.on_handshake, None
    if waiting is not None:
        waiting(c, c._err)  # c may be closed already: on_open closed it, or raised
    return c._state == OPEN


def _handshake_failed(loop: EventLoop, c: Conn, exc: BaseException) -> None:
    """Never reached the handler: DEBUG, counted, closed -- no on_open, no on_close."""
    loop._logger.debug("gnetpy: TLS handshake with %s failed: %s", c._remote, exc)
    loop._counts.tls_failed += 1
    loop._close(c, exc, False)


def never_opened(c: Conn, err: BaseException | None) -> None:
    """A handshaking connection closed (failed, timed out, the loop stopping): tell a dial that waits."""
    waiting, c._tls.on_handshake = c._tls.on_handshake, None
    if waiting is not None:
        waiting(None, err or ConnectionAbortedError("closed during the TLS handshake"))


def handshake_timed_out(loop: EventLoop, fd: int) -> None:
    c = loop._conns.get(fd)
    if c is not None and c._state == HANDSHAKING:
        _handshake_failed(loop, c, TimeoutError(f"TLS handshake not done in {loop._opts.tls_handshake_timeout:g}s "
                                                f"(tls_handshake_timeout)"))


def _failed(loop: EventLoop, c: Conn, exc: BaseException) -> None:
    if c._state == HANDSHAKING:
        _handshake_failed(loop, c, exc)
    else:
        loop._close(c, exc, False)


def close_notify(c: Conn) -> None:
    """Before a local close: tell the peer (``close_notify``), into the outbound queue like any write."""
    session = c._tls
    if session.closing:
        return
    session.closing = True
    try:
        session.sslobj.unwrap()
    except ssl.SSLWantReadError:
        pass  # the peer's close_notify has not come: we do not wait for it here (lingering reads on)
    except (ssl.SSLError, OSError):
        return
    _send_records(c)


def wrap(context: Any, server_side: bool, server_hostname: str | None = None) -> TlsSession:
    return TlsSession(context, server_side, server_hostname)


def client_side(ssl_context: Any, server_hostname: str | None, host: str) -> tuple[ssl.SSLContext, str | None] | None:
    """A dial's TLS settings, checked before anything connects: ``(context, hostname)``, or None for plain.

    ``server_hostname`` defaults to the host dialed (a name or an IP
    literal: the stdlib checks either against the certificate); a unix
    address has none, so a context that checks host names needs it given.
    """
    if ssl_context is None:
        if server_hostname is not None:
            raise ValueError("dial: server_hostname without ssl_context")
        return None
    if not isinstance(ssl_context, ssl.SSLContext):
        raise TypeError(f"dial: ssl_context {ssl_context!r} is not an ssl.SSLContext")
    if server_hostname is None:
        server_hostname = host or None
    if ssl_context.check_hostname and not server_hostname:
        raise ValueError("dial: this ssl_context checks host names (check_hostname) and the address has none: "
                         "give server_hostname=")
    return ssl_context, server_hostname


def new_conn(loop: EventLoop, sock: socket.socket, remote: Any, session: TlsSession) -> TlsConn:
    c = TlsConn(loop, sock, remote, loop._small_read)
    c._tls = session
    c._state = HANDSHAKING
    return c


__all__ = ["TlsConn", "TlsInfo", "TlsSession"]
