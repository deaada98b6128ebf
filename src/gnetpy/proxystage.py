"""A connection's first bytes behind a load balancer: the PROXY header, read before anything else.

With ``proxy_protocol`` on a listener, every connection it accepts must begin with a
PROXY header (HAProxy's protocol, v1 text or v2 binary: proxyproto.py parses it).  Until
the header is whole the connection is not open: it is HANDSHAKING, as during a TLS
handshake -- no ``on_open``, and if it fails no ``on_close`` either -- and its events come
to this object, its transport for now.  Then the loop takes over (``proxy_done``): the
header's addresses become ``c.remote_addr``/``c.local_addr``, ``c.proxy`` its facts, the
connection's TLS session (if its listener speaks TLS) or the handler gets it, and the
bytes that followed the header in the same read go on to them, not lost.

Bounded: a header is at most 107 bytes (v1) or 16 + 65,535 (v2), and it is read in
small pieces -- never past the header's own end by more than one read -- within
``proxy_header_timeout``.  A peer outside ``proxy_trusted``, a malformed or oversized
header, an end of file, or the timeout closes the connection without the handler ever
seeing it: counted, logged at DEBUG (a scanner must not flood the log).  The header is
required, never guessed at: the spec's security rule is that a listener either expects
one on every connection or never reads one.
"""

from __future__ import annotations

import ipaddress
import os
from typing import TYPE_CHECKING, Any, Final

from .poller import READ_EVENTS
from .proxyproto import ProxyHeaderError, parse

if TYPE_CHECKING:
    from .conn import StreamConn
    from .loopapi import LoopServices

# The most a header can be: v2's 16 bytes and a 16-bit length.
MAX_HEADER: Final = 16 + 65535
# What one read asks for: a v1 header and the start of what follows, or a v2 header's fixed part.
READ_SIZE: Final = 4096


class ProxyReader:
    """One connection's PROXY header, being read (see the module docstring)."""

    __slots__ = ("loop", "conn", "mode", "received", "then")

    info = None  # what TlsConn.tls shows while the header is read: no session yet

    def __init__(self, loop: LoopServices, mode: str, then: Any = None) -> None:
        self.loop = loop
        self.mode = mode
        self.received = bytearray()
        self.then = then  # the TlsTransport to start once the header is read (None: plain)
        self.conn: Any = None

    def attach(self, c: StreamConn) -> None:
        self.conn = c
        if self.then is not None:
            self.then.attach(c)

    def start(self) -> None:
        self.loop.proxy_started(self.conn)

    def on_event(self, events: int) -> None:
        """Read until the socket is drained (edge-triggered needs it) or the header is whole."""
        if not events & READ_EVENTS:
            return
        c = self.conn
        while True:
            try:
                data = os.read(c._fd, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.loop.proxy_failed(c, exc)
                return
            if not data:
                self.loop.proxy_failed(c, EOFError("connection closed before its PROXY header was whole"))
                return
            c._tally.bytes_received += len(data)
            self.received += data
            try:
                info = parse(self.received, self.mode)
            except ProxyHeaderError as exc:
                self.loop.proxy_failed(c, exc)
                return
            if info is not None:
                rest = bytes(self.received[info.header_length:])
                self.received.clear()
                self.loop.proxy_done(c, info, rest, self.then)
                return
            if len(self.received) >= MAX_HEADER:  # parse would have said so; a bound of our own anyway
                self.loop.proxy_failed(c, ProxyHeaderError(f"no whole PROXY header in {MAX_HEADER} bytes"))
                return

    # A transport's other duties: none before the header is read.

    def close_notify(self) -> None:
        pass

    def never_opened(self, err: BaseException | None) -> None:
        if self.then is not None:
            self.then.never_opened(err)  # a dial waiting for a TLS handshake would hear why


class Trust:
    """``proxy_trusted``: the peers a PROXY header is accepted from -- networks, and "unix" for unix listeners.

    Everyone else's connection is closed unread: a header from anyone could claim any
    address (the spec's first security rule).
    """

    __slots__ = ("networks", "unix", "_seen")

    # Decisions remembered by host: a listener behind a balancer hears from a few hosts, and
    # ipaddress's parse and network tests cost more per connection than the header's own parse.
    SEEN_MAX: Final = 1024

    def __init__(self, networks: tuple[Any, ...], unix: bool) -> None:
        self.networks = networks
        self.unix = unix
        self._seen: dict[str, bool] = {}

    @classmethod
    def parse(cls, value: Any) -> Trust:
        if isinstance(value, str) or not hasattr(value, "__iter__"):
            raise ValueError(f"proxy_trusted: {value!r}; accepted: an iterable of networks "
                             f"('10.0.0.0/8', '::1/128', an address) and 'unix'")
        networks = []
        unix = False
        for item in value:
            if item == "unix":
                unix = True
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"proxy_trusted: {item!r} is not a network or 'unix' ({exc})") from None
        return cls(tuple(networks), unix)

    def admits(self, remote: Any) -> bool:
        """Whether a connection from ``remote`` (``(host, port...)``, a unix path or None) may send a header."""
        if not isinstance(remote, tuple):
            return self.unix
        host = remote[0]
        known = self._seen.get(host)
        if known is None:
            if len(self._seen) >= self.SEEN_MAX:  # bounded: many distinct peers start it afresh
                self._seen.clear()
            known = self._seen[host] = self._decide(host)
        return known

    def _decide(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped is not None:  # a dual-stack listener's IPv4 peer
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)
