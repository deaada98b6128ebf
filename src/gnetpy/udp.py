"""UDP: datagram sockets on the event loop, a ``Conn`` per peer, and per-peer sessions.

Every loop owns a datagram socket bound to the address (``SO_REUSEPORT``: the
kernel spreads peers over the loops by their address, so one peer always
reaches the same loop) -- in threads and in worker processes alike, as gnet
does.  A ``DatagramSocket`` is one of the loop's watched descriptors
(``EventLoop.watch``); on each readiness event it reads at most ``READ_BATCH``
datagrams, so a flood cannot starve the loop's TCP connections: what is
left is read on the next iteration.

Each datagram reaches ``on_traffic(c)`` as the whole of ``c``'s input:
``c.next()``/``c.read()`` return exactly that datagram, and what the handler
leaves is dropped afterwards -- datagrams are messages, never a stream.
Every read asks for 65 536 bytes, more than the largest UDP payload (65 507
over IPv4, 65 527 over IPv6), so a datagram is never cut (no ``MSG_TRUNC``).

``c`` is a ``DatagramConn``: ``c.remote_addr`` is the sender, ``c.write``
replies to it, ``c.send_to(data, addr)`` sends anywhere.  A send the kernel
refuses for now (``EAGAIN``) queues the *whole* datagram -- never a part --
up to ``max_udp_queued`` bytes for the socket; beyond that datagrams are
dropped and counted (``c.datagrams_dropped``), as UDP itself would.

Sessions (beyond gnet, whose UDP conns forget everything between
datagrams): with ``udp_session_timeout`` (default 60 s) the ``DatagramConn``
of a peer lives on between its datagrams -- ``c.context`` persists --
``on_open`` runs at its first datagram and ``on_close(c, TimeoutError)`` once
it has sent nothing for that long (the idle-timeout wheel of deadlines.py).
At most ``max_udp_sessions`` peers have one per socket; beyond that a new
peer's datagrams are served without a session (a fresh conn each time, no
``on_open``/``on_close``) until sessions expire: spoofed source addresses
cannot grow the table without bound.  ``udp_session_timeout=0`` turns
sessions off: every datagram gets a fresh conn, gnet's behaviour.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import time
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar, Final

from . import inherit, syscalls
from .address import Address, AddrInfo, format_addr, is_ip_literal, parse_address
from .conn import Conn
from .deadlines import IdleWheel
from .errors import ConnClosedError, UnsupportedOperationError, UnsupportedProtocolError
from .listener import BoundSocket
from .poller import IN, OUT
from .sockopts import bind, set_listener_options
from .state import CLOSED, OPEN
from .tally import Tally

if TYPE_CHECKING:
    from .loopapi import LoopServices
    from .options import Options

# Datagrams read per readiness event: a flood on one socket leaves the loop's
# other descriptors their turn.  (Final: C statics when compiled, see buffer.NOTHING.)
READ_BATCH: Final = 64
# Bigger than any UDP payload: no datagram is ever cut.
READ_SIZE: Final = 65536


class DatagramListener(BoundSocket):
    """A bound datagram socket waiting for its loop (the engine binds one per loop, before they run)."""

    def __init__(self, address: Address, opts: Options) -> None:
        self.address = address
        self.sock = bind_datagram(address, opts)
        inherit.register(self)


def reserve_port(address: Address) -> int:
    """Process mode: the port every worker will bind (port 0 picks one now, by a bind closed again at once).

    The parent must not keep a datagram socket on the port -- unlike a TCP
    socket that never listens, a bound UDP socket would receive its share of
    the datagrams, and no one would read them.
    """
    if address.port:
        return address.port
    with socket.socket(address.family, socket.SOCK_DGRAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        bind(probe, address)
        return int(probe.getsockname()[1])


def bind_datagram(address: Address, opts: Options) -> socket.socket:
    """A datagram socket bound to ``address`` with ``SO_REUSEPORT`` (every loop binds the same port) -- or,
    for an inherited one (activation.py), that socket, as it was bound."""
    if address.fd >= 0:
        sock = socket.socket(fileno=address.fd)
        sock.setblocking(False)
        return sock
    sock = socket.socket(address.family, socket.SOCK_DGRAM)
    try:
        set_listener_options(sock, address, opts)
        bind(sock, address)
        _join_multicast(sock, address, opts.multicast_interface_index)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _join_multicast(sock: socket.socket, address: Address, ifindex: int) -> None:
    """A multicast group address: join it (on ``ifindex``, 0 for the kernel's choice), and send through it."""
    try:
        group = ipaddress.ip_address(address.host.split("%", 1)[0])
    except ValueError:
        return
    if not group.is_multicast:
        if ifindex:
            _set_multicast_interface(sock, address.family, ifindex)
        return
    try:
        if group.version == 4:
            # struct ip_mreqn: the group, any local address, the interface index.
            mreq = group.packed + socket.inet_aton("0.0.0.0") + struct.pack("@i", ifindex)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group.packed + struct.pack("@I", ifindex))
        if ifindex:
            _set_multicast_interface(sock, address.family, ifindex)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot join multicast group {group} for {address.text!r} "
                                 f"(multicast_interface_index={ifindex}): {exc.strerror}") from None


def _set_multicast_interface(sock: socket.socket, family: int, ifindex: int) -> None:
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                        socket.inet_aton("0.0.0.0") * 2 + struct.pack("@i", ifindex))


class DatagramSocket:
    """One loop's datagram socket: reading in batches, the sessions, the send queue."""

    def __init__(self, loop: LoopServices, sock: socket.socket, opts: Options) -> None:
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.local = format_addr(sock.getsockname())
        # How datagrams are received: compiled, the peer comes as its sockaddr bytes, the key of
        # its session and where replies go, with no address formatted or parsed per datagram
        # (syscalls.py); pure Python, as the socket's (host, port) tuple.  Either way one call,
        # receive(source, size), in the hot loop.
        if syscalls.recvfrom_raw is not None:
            self._receive: Any = syscalls.recvfrom_raw
            self._source: Any = self.fd
        else:
            self._receive, self._source = socket.socket.recvfrom, sock
        self._sessions: dict[Any, DatagramConn] = {}
        self._max_sessions = opts.max_udp_sessions
        self._wheel = (IdleWheel(opts.udp_session_timeout, loop.call_later, self._expire)
                       if opts.udp_session_timeout else None)
        self._queue: deque[tuple[bytes, Any]] = deque()
        self._queued = 0
        self._max_queued = opts.max_udp_queued
        self._writing = False
        self.dropped = 0
        self._tally: Tally = loop.tally  # the loop's figures: datagrams and their bytes, counted there (tally.py)
        self._full_logged = False
        self._traffic: Any = None  # set by start()

    def start(self) -> None:
        # What a datagram goes to (on_traffic, or the codec's dispatcher), looked up once.
        self._traffic = self.loop.traffic
        self.loop.watch(self.fd, self._on_event)

    # -- receiving: the hot path of UDP ----------------------------------------------------

    def _on_event(self, events: int) -> None:
        if events & OUT:
            self._flush()
        if not events & IN:
            return
        receive, source = self._receive, self._source
        sessions = self._sessions
        on_traffic = self._traffic
        wheel = self._wheel
        tally = self._tally
        now = time.monotonic() if wheel is not None else 0.0
        for _ in range(READ_BATCH):
            try:
                data, peer = receive(source, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # an ICMP error for an earlier send (ECONNREFUSED...): not ours to stop on
                if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    continue
                raise
            tally.datagrams_received += 1
            tally.bytes_received += len(data)
            c = sessions.get(peer)
            if c is None:
                c = self._open(peer, now)
            c._seen = now
            c._receive(data)
            try:
                action = on_traffic(c)
            except BaseException as exc:
                c._datagram_done()
                self.loop.callback_raised(c, exc)
                continue
            c._datagram_done()
            if action:
                self.loop.act(c, action)

    def _open(self, peer: Any, now: float) -> DatagramConn:
        c = DatagramConn(self, peer)
        if self._wheel is None:
            return c  # no sessions: a conn for this datagram only
        if len(self._sessions) >= self._max_sessions:
            if not self._full_logged:
                self._full_logged = True
                self.loop.logger.warning("gnetpy: max_udp_sessions (%d) reached on %s: new peers are served "
                                         "without a session until sessions expire", self._max_sessions, self.local)
            return c
        self._sessions[peer] = c
        c._session = True
        c._seen = now
        self.loop.counts.opened += 1
        self._wheel.add(c, now)
        self.loop.open_conn(c)
        return c

    # -- sessions ------------------------------------------------------------------------------

    def _expire(self, c: Conn) -> None:
        assert isinstance(c, DatagramConn)
        self.end(c, TimeoutError(f"no datagram for {self._wheel.timeout if self._wheel else 0:g}s "
                                 f"(udp_session_timeout)"))

    def end(self, c: DatagramConn, err: BaseException | None) -> None:
        """A session (or a conn without one) is over: on_close once, for sessions."""
        if c._state == CLOSED:
            return
        c._state = CLOSED
        if not c._session:
            return
        self._sessions.pop(c._peer, None)
        self.loop.counts.closed += 1
        self.loop.closed_conn(c, err)

    def close(self) -> None:
        """The loop stops: end every session, send what is queued if the kernel takes it now, close."""
        for c in list(self._sessions.values()):
            self.end(c, None)
        if self._wheel is not None:
            self._wheel.stop()
        self._flush()
        self.loop.unwatch(self.fd)
        self.sock.close()

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    # -- sending -------------------------------------------------------------------------------

    def send(self, data: Any, peer: Any) -> int:
        """One whole datagram to ``peer``: now, queued, or dropped (counted) beyond max_udp_queued."""
        size = len(data) if type(data) is bytes else memoryview(data).nbytes
        if not self._queue:
            try:
                return self._sendto(data, peer)
            except (BlockingIOError, InterruptedError):
                pass
        if self._queued + size > self._max_queued:
            self.dropped += 1
            self._tally.datagrams_dropped += 1
            return 0
        self._queue.append((bytes(data), peer))
        self._queued += size
        if not self._writing:
            self._writing = True
            self.loop.set_interest(self.fd, IN | OUT)
        return size

    def _sendto(self, data: Any, peer: Any) -> int:
        if type(peer) is bytes:  # a sender's sockaddr, as recvfrom_raw gave it: a reply
            sent: int = syscalls.sendto_raw(self.fd, data, peer)  # type: ignore[misc]
        else:
            sent = self.sock.sendto(data, peer)  # a tuple: the socket's own recvfrom, or send_to
        tally = self._tally
        tally.datagrams_sent += 1
        tally.bytes_sent += sent
        return sent

    def _flush(self) -> None:
        queue = self._queue
        while queue:
            data, peer = queue[0]
            try:
                self._sendto(data, peer)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.dropped += 1  # this datagram cannot go (a bad address): the others still may
                self._tally.datagrams_dropped += 1
            queue.popleft()
            self._queued -= len(data)
        if self._writing:
            self._writing = False
            self.loop.set_interest(self.fd, IN)

class DatagramConn(Conn):
    """A peer of a datagram socket: the ``Conn`` API over datagrams (see the module docstring)."""

    __slots__ = ("_udp", "_peer", "_session")

    _REFUSED: ClassVar[dict[str, tuple[type[Exception], str]]] = {
        "writev": (UnsupportedOperationError, "a datagram is one write (use write)"),
        "async_writev": (UnsupportedOperationError, "a datagram is one write (use async_write)"),
        "dup": (UnsupportedOperationError, "its socket is shared by every peer"),
        "pause_reading": (UnsupportedOperationError, "its socket is shared by every peer"),
        "resume_reading": (UnsupportedOperationError, "its socket is shared by every peer"),
        "set_no_delay": (UnsupportedProtocolError, "a TCP option"),
        "set_keep_alive": (UnsupportedProtocolError, "a TCP option"),
        "set_read_buffer": (UnsupportedOperationError, "its socket is shared: use socket_recv_buffer"),
        "set_write_buffer": (UnsupportedOperationError, "its socket is shared: use socket_send_buffer"),
        "set_linger": (UnsupportedOperationError, "UDP has no close to linger on"),
    }

    def __init__(self, udp: DatagramSocket, peer: Any) -> None:
        Conn.__init__(self, udp.loop, udp.sock, format_addr(syscalls.sockaddr_to_addr(peer)), READ_SIZE)
        self._udp = udp
        self._peer = peer
        self._session = False
        self._local = udp.local

    def _kind(self) -> str:
        return "datagram"

    # -- sending: whole datagrams --------------------------------------------------------------

    def write(self, data: Any) -> int:
        """Send ``data`` as one datagram to this peer (queued whole if the socket is full, never split)."""
        if self._state == CLOSED and self._session:
            raise ConnClosedError(f"write on a closed session ({self!r})")
        return self._udp.send(data, self._peer)

    def send_to(self, data: Any, addr: Any) -> int:
        """Send ``data`` as one datagram to ``addr``: ``(host, port)`` or ``"udp://host:port"``."""
        return self._udp.send(data, _sockaddr(addr))

    def flush(self) -> None:
        self._udp._flush()

    @property
    def outbound_buffered(self) -> int:
        """Bytes of datagrams waiting for the socket (shared by every peer of it)."""
        return self._udp._queued

    @property
    def datagrams_dropped(self) -> int:
        """Datagrams this socket dropped since it opened: its queue (``max_udp_queued``) was full."""
        return self._udp.dropped

    # -- the loop's side, for datagrams -------------------------------------------------------

    def _end(self, err: BaseException | None) -> None:
        self._udp.end(self, err)

    def _datagram_done(self) -> None:
        """After ``on_traffic``: what the handler left of the datagram is dropped, and with it any
        codec's place in it."""
        self._drop()
        self._codec_state = None

    def _woken(self) -> None:
        loop = self._loop
        try:
            action = loop.traffic(self)
        except BaseException as exc:
            self._datagram_done()
            loop.callback_raised(self, exc)
            return
        self._datagram_done()
        if action:
            loop.act(self, action)

    def __repr__(self) -> str:
        kind = "session" if self._session else "datagram"
        return f"<DatagramConn {kind} {self._state.name.lower()} remote={self._remote!r} loop={self._loop.index}>"


def _sockaddr(addr: Any) -> Any:
    """Where ``send_to`` sends: an IP address -- a name would block the loop while it is looked up."""
    if isinstance(addr, str):
        address = parse_address(addr, dial=True)
        if address.network != "udp":
            raise UnsupportedProtocolError(f"send_to {addr!r}: a datagram goes to a udp:// address")
        addr = (address.host, address.port)
    if not (isinstance(addr, tuple) and len(addr) >= 2 and isinstance(addr[0], str)):
        raise TypeError(f"send_to: address {addr!r}; expected (host, port) or 'udp://host:port'")
    if not is_ip_literal(addr[0]):
        raise ValueError(f"send_to: {addr[0]!r} is a name; give an IP address (looking a name up would block "
                         f"the event loop: resolve it beforehand, off the loop)")
    return addr
