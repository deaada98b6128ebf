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
* The reactor sends a TLS connection's events to its ``TlsTransport``, never
  down the plain inline read path: one test of ``StreamConn._transport`` per event.
  The transport is the connection's (its ``SSLObject``, BIOs, handshake
  state); it reaches the loop only through the loop's internal interface.
"""

from __future__ import annotations

import os
import ssl
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from .conn import StreamConn
from .errors import UnsupportedOperationError, UnsupportedProtocolError
from .poller import ERR, HUP, OUT, READ_EVENTS
from .state import HANDSHAKING, OPEN

if TYPE_CHECKING:
    from .loopapi import LoopServices

# Ciphertext read per read call, and plaintext taken from the SSLObject per call.
TLS_READ = 65536
# Reads per readiness event (level-triggered: more comes with the next event).
READS_PER_EVENT = 4


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


class TlsTransport:
    """One TLS connection's session: the ``SSLObject``, its two BIOs, the handshake, and who waits for it.

    Made before its connection, for the loop that will serve it (a dial sets
    ``on_handshake``); the loop binds it to the ``TlsConn`` it opens
    (``attach``) and sends that connection's events to ``on_event``.
    """

    __slots__ = ("sslobj", "incoming", "outgoing", "on_handshake", "closing", "info", "conn", "loop")

    def __init__(self, loop: LoopServices, context: ssl.SSLContext, server_side: bool,
                 server_hostname: str | None = None) -> None:
        self.loop = loop
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.sslobj = context.wrap_bio(self.incoming, self.outgoing, server_side=server_side,
                                       server_hostname=server_hostname)
        # A dial waiting for the handshake: called (conn, err) once it is over either way.
        self.on_handshake: Callable[[StreamConn | None, BaseException | None], Any] | None = None
        self.closing = False
        self.info: TlsInfo | None = None  # once the handshake is done
        self.conn: Any = None  # its TlsConn, once the loop has opened it (attach)

    def attach(self, c: TlsConn) -> None:
        self.conn = c

    def begin(self, received: bytes) -> None:
        """After a PROXY header (proxystage.py): start, with what followed the header already received."""
        self.start()
        if received:
            self.incoming.write(received)
            if self.conn._state == HANDSHAKING and not self._handshake():
                return
            self._decrypt(False)

    def start(self) -> None:
        """The connection is registered: under the handshake timeout; a client speaks first."""
        self.loop.handshake_started(self.conn)
        if not self.sslobj.server_side:
            self._handshake()

    # -- events -----------------------------------------------------------------------------

    def on_event(self, events: int) -> None:
        """Every readiness event of the connection while it is handshaking or open."""
        c = self.conn
        if events & READ_EVENTS and (not c._paused or events & (ERR | HUP)):
            self._read()
            if c._state not in (OPEN, HANDSHAKING):
                return
        if c._out and (events & OUT or self.loop.edge_triggered):
            self.loop.flush_conn(c)

    def _read(self) -> None:
        c, loop = self.conn, self.loop
        fd = c._fd
        eof = False
        # Level-triggered: a few reads, the next event brings the rest.  Edge-triggered:
        # until the socket is drained, or the per-iteration budget is spent (then the
        # loop brings it back next iteration, as for a plain connection).
        edge = loop.edge_triggered
        budget = loop.options.edge_triggered_chunk if edge else READS_PER_EVENT * TLS_READ
        while True:
            try:
                raw = os.read(fd, TLS_READ)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._failed(exc)
                return
            if not raw:
                self.incoming.write_eof()
                eof = True
                break
            c._tally.bytes_received += len(raw)
            self.incoming.write(raw)
            if len(raw) < TLS_READ:
                break  # drained for now
            budget -= len(raw)
            if budget <= 0:
                if edge:
                    loop.read_again(c)
                break
        if c._state == HANDSHAKING and not self._handshake():
            return
        self._decrypt(eof)

    def _decrypt(self, eof: bool) -> None:
        """What the incoming BIO holds, as plaintext for the handler; the peer's end of the session."""
        c, loop = self.conn, self.loop
        plaintext: list[bytes] = []
        sslobj, incoming = self.sslobj, self.incoming
        # Read until nothing is left rather than until SSLWantReadError: an
        # exception per message was a large share of the server's CPU in W10.
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
                self.send_records()
                self._deliver(plaintext)
                self._failed(exc)
                return
            if not chunk:
                eof = True
                break
            plaintext.append(chunk)
        if self.outgoing.pending:
            self.send_records()  # post-handshake messages (key updates), alerts
        c._seen = loop.now
        self._deliver(plaintext)
        if eof and c._state == OPEN:
            loop.close_conn(c, EOFError("connection closed by the peer"), True)

    def _deliver(self, plaintext: list[bytes]) -> None:
        c = self.conn
        if plaintext and c._state == OPEN:
            self.loop.deliver(c, plaintext[0] if len(plaintext) == 1 else b"".join(plaintext))

    def _handshake(self) -> bool:
        """Advance the handshake; True once it is complete (and ``on_open`` has run)."""
        c = self.conn
        try:
            self.sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self.send_records()
            return False
        except (ssl.SSLError, OSError) as exc:
            self.send_records()  # the alert that says why, if the peer still listens
            self.loop.handshake_failed(c, exc)
            return False
        self.send_records()
        self.info = TlsInfo(self.sslobj)
        self.loop.handshake_done(c)
        waiting, self.on_handshake = self.on_handshake, None
        if waiting is not None:
            waiting(c, c._err)  # c may be closed already: on_open closed it, or raised
        return c._state == OPEN

    def _failed(self, exc: BaseException) -> None:
        c = self.conn
        if c._state == HANDSHAKING:
            self.loop.handshake_failed(c, exc)
        else:
            self.loop.close_conn(c, exc, False)

    # -- writing and closing ------------------------------------------------------------------

    def encrypt(self, data: Any) -> int:
        """The handler's plaintext, as records on their way to the socket; returns its size."""
        c = self.conn
        try:
            self.sslobj.write(data)
        except ssl.SSLError as exc:
            return c._write_failed(exc)
        self.send_records()
        return len(data) if data.__class__ is bytes else memoryview(data).nbytes

    def send_records(self) -> None:
        """What the SSLObject produced (records, alerts, handshake messages) to the socket, now."""
        records = self.outgoing.read()
        if records:
            StreamConn._write_now(self.conn, records)

    def close_notify(self) -> None:
        """Before a local close: tell the peer (``close_notify``), into the outbound queue like any write."""
        if self.closing:
            return
        self.closing = True
        try:
            self.sslobj.unwrap()
        except ssl.SSLWantReadError:
            pass  # the peer's close_notify has not come: we do not wait for it here (lingering reads on)
        except (ssl.SSLError, OSError):
            return
        self.send_records()

    def never_opened(self, err: BaseException | None) -> None:
        """The connection closed while handshaking (failed, timed out, the loop stopping): tell a dial that waits."""
        waiting, self.on_handshake = self.on_handshake, None
        if waiting is not None:
            waiting(None, err or ConnectionAbortedError("closed during the TLS handshake"))


class TlsConn(StreamConn):
    """A connection whose bytes on the wire are TLS records; its API is the plaintext (see the module docstring)."""

    __slots__ = ()

    _REFUSED: ClassVar[dict[str, tuple[type[Exception], str]]] = {
        "send_to": (UnsupportedProtocolError, "send_to is for UDP connections (use write)"),
        "dup": (UnsupportedOperationError, "its descriptor carries records only this loop can decrypt"),
    }

    def _kind(self) -> str:
        return "TLS"

    def write(self, data: Any) -> int:
        """Gather ``data``: what the callback writes is encrypted in one go when it returns (fewer, fuller
        records), then sent -- or queued behind what is queued, ciphertext all of it."""
        if self._state != OPEN or self._err is not None:
            return self._write_failed(None)  # refuses, or raises on a closed connection, as a stream does
        return self._gathered(data if type(data) is bytes else bytes(data))

    def _send_gathered(self) -> None:
        gather = self._gather
        if gather is None:
            return
        self._gather = None
        if self._state == OPEN:
            self._transport.encrypt(gather if type(gather) is bytes else b"".join(gather))

    @property
    def tls(self) -> TlsInfo | None:
        return self._transport.info  # type: ignore[no-any-return]

    def dup(self) -> int:
        self._refuse("dup")


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


__all__ = ["TlsConn", "TlsInfo", "TlsTransport"]
