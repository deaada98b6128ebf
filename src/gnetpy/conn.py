"""Conn: one connection's buffers and the API a handler sees.

Reading.  The event loop reads once per readiness event, with ``os.read``,
into a fresh ``bytes`` object and points the connection at it (``_src``,
consumed up to ``_pos``) for the duration of ``on_traffic``.  ``next()``
hands that very object to the handler when it takes everything -- no copy,
no allocation -- and ``peek``/``next(n)``/``read`` serve slices of it.
Whatever the handler leaves unconsumed is copied into the connection's own
``bytearray`` (``_in``) when the callback returns; the next read is appended
to it.  So, outside a callback, either nothing is buffered (``_src is
_NOTHING``, ``_pos == 0``) or the leftover is (``_src is _in``, ``_pos ==
0``).  Every consume that reaches the end resets the connection to
"nothing buffered", which is what the loop tests after the callback.

Why not a per-loop ``bytearray`` filled with ``readv``, as gnet does in Go:
``next()`` must return ``bytes``, so that design copies every message out of
the shared buffer again (``memoryview`` slice + ``tobytes``: ~1,300 CPU
instructions per call on CPython 3.11, measured with callgrind) while
``os.read`` builds the ``bytes`` directly for ~650 more than ``readv``.  A
``memoryview`` from ``peek`` is valid until the next consume or the end of
the callback (as in gnet) -- in practice it stays valid longer, since
``bytes`` never change, but do not rely on that.

Writing.  ``write`` goes straight to the socket while nothing is queued;
what the kernel does not take is queued (see ``buffer.OutboundBuffer``) and
flushed by the loop when the socket is writable.  ``_out`` is the empty tuple
until something is queued, so an idle connection carries no buffer.

Threads.  ``peek/next/discard/read/write/writev/flush`` and the socket option
setters are loop-only: call them from callbacks of this connection's loop.
``async_write``, ``async_writev``, ``wake`` and ``close`` are safe from any
thread; their callbacks run on the loop as ``callback(conn, err)``.

``next``/``write`` are on the hot path of every message: they bind nothing
they do not need and, in the common case, allocate nothing.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

from . import listener as _sockopts
from .buffer import IOV_MAX, OutboundBuffer
from .errors import ConnClosedError, ShortBufferError, UnsupportedProtocolError
from .listener import AddrInfo, format_addr

if TYPE_CHECKING:
    from .eventloop import EventLoop

Callback = Optional[Callable[["Conn", Optional[BaseException]], Any]]

OPEN, CLOSING, CLOSED = 0, 1, 2
_NOTHING_QUEUED: Any = ()
# ``_src`` when nothing is buffered; the loop tests for it by identity.
_NOTHING = b""
_write = os.write


class Conn:
    __slots__ = ("_fd", "_sock", "_loop", "_src", "_pos", "_in", "_read_size", "_small_reads", "_out", "_state", "_err",
                 "_remote", "_local", "_close_callbacks", "context", "__weakref__")

    def __init__(self, loop: EventLoop, sock: socket.socket, remote: Any) -> None:
        self._fd = sock.fileno()
        self._sock = sock
        self._loop = loop
        self._src: Any = _NOTHING
        self._pos = 0
        self._in: bytearray | None = None
        # Adaptive read size, managed by the loop (see readsize.py).
        self._read_size = loop._small_read
        self._small_reads = 0
        self._out: OutboundBuffer = _NOTHING_QUEUED
        self._state = OPEN
        # An error that has doomed the connection (a failed write); the loop
        # closes it with this error once the running callback returns.
        self._err: BaseException | None = None
        self._remote = remote
        self._local: Any = None
        self._close_callbacks: list[Callback] | None = None
        self.context: Any = None

    # -- inbound ------------------------------------------------------------

    @property
    def inbound_buffered(self) -> int:
        """Bytes available to ``peek``/``next``/``read`` now."""
        return len(self._src) - self._pos

    def next(self, n: int = -1) -> bytes:
        """Consume and return ``n`` bytes (all with -1); ``ShortBufferError`` if fewer are buffered."""
        src = self._src
        if n < 0:
            if src.__class__ is bytes and not self._pos:
                self._src = _NOTHING  # the whole read, handed over as it is
                return src  # type: ignore[no-any-return]
            pos = self._pos
            end = len(src)
        else:
            pos = self._pos
            end = pos + n
            if end > len(src):
                raise ShortBufferError(f"next({n}): only {len(src) - pos} bytes buffered")
        chunk = src[pos:end] if src.__class__ is bytes else bytes(memoryview(src)[pos:end])
        self._consumed(src, end)
        return chunk

    def peek(self, n: int = -1) -> memoryview:
        """The next ``n`` bytes (all with -1), not consumed, without a copy.

        Valid until the next consume or the end of the callback: copy what you keep.
        """
        src = self._src
        pos = self._pos
        if n < 0:
            end = len(src)
        else:
            end = pos + n
            if end > len(src):
                raise ShortBufferError(f"peek({n}): only {len(src) - pos} bytes buffered")
        return memoryview(src)[pos:end]

    def discard(self, n: int = -1) -> int:
        """Drop up to ``n`` bytes (all with -1); return how many were dropped."""
        src = self._src
        available = len(src) - self._pos
        if n < 0 or n > available:
            n = available
        self._consumed(src, self._pos + n)
        return n

    def read(self, n: int = -1) -> bytes:
        """Consume and return up to ``n`` bytes (all with -1); never raises for a short buffer."""
        available = len(self._src) - self._pos
        return self.next(-1 if n < 0 or n >= available else n)

    def _consumed(self, src: Any, end: int) -> None:
        if end < len(src):
            self._pos = end
        else:
            self._src = _NOTHING
            self._pos = 0
            self._in = None

    # -- outbound -----------------------------------------------------------

    @property
    def outbound_buffered(self) -> int:
        """Bytes written but not yet taken by the kernel."""
        return self._out.nbytes if self._out else 0

    def write(self, data: Any) -> int:
        """Send ``data`` (bytes-like) now, queueing what the socket does not take.

        Returns its size: everything is either sent or queued, in order.
        A connection that has failed accepts nothing (returns 0; ``on_close``
        tells why); one that is closed raises ``ConnClosedError``.
        """
        if self._out:
            return self._queue(data)
        try:
            sent = _write(self._fd, data)
            if sent == len(data):
                return sent
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            return self._write_failed(exc)
        return self._queue_rest(data, sent)

    def writev(self, buffers: Iterable[Any]) -> int:
        """Write several buffers in one system call (``writev``); returns their total size."""
        pieces = buffers if isinstance(buffers, list) else list(buffers)
        if self._out or len(pieces) > IOV_MAX:
            return sum(self._queue(piece) for piece in pieces)
        try:
            sent = os.writev(self._fd, pieces)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            return self._write_failed(exc)
        total = 0
        for piece in pieces:
            size = _nbytes(piece)
            total += size
            if sent >= size:
                sent -= size
            else:
                self._queue(memoryview(piece).cast("B")[sent:] if sent else piece)
                sent = 0
        return total

    def flush(self) -> None:
        """Try to send the queued bytes now rather than when the loop next sees the socket writable."""
        if self._out and self._state != CLOSED:
            self._loop._flush(self)

    def send_to(self, data: Any, addr: Any) -> int:
        """UDP only: send a datagram to ``addr``."""
        raise UnsupportedProtocolError("send_to is for UDP connections; this one is a stream (use write)")

    def _queue(self, data: Any) -> int:
        if self._state != OPEN:
            return self._write_failed(None)
        out = self._out
        if not out:
            if out is _NOTHING_QUEUED:
                out = self._out = OutboundBuffer(self._loop._write_chunk)
            self._loop._want_write(self)
        return out.append_data(data)

    def _queue_rest(self, data: Any, sent: int) -> int:
        size = _nbytes(data)
        if sent < size:
            self._queue(memoryview(data).cast("B")[sent:] if sent else data)
        return size

    def _write_failed(self, exc: OSError | None) -> int:
        if self._state == CLOSED:
            raise ConnClosedError(f"write on a closed connection ({self!r})")
        if exc is not None and self._err is None:
            self._err = exc
            self._loop._doom(self)
        return 0

    # -- safe from any thread -------------------------------------------------

    def async_write(self, data: Any, callback: Callback = None) -> None:
        """Write ``data`` from any thread; ``callback(conn, err)`` runs on the loop once it is written or queued."""
        if data.__class__ is not bytes:
            data = bytes(data)  # the caller may reuse its buffer as soon as we return
        self._loop._submit_urgent(self, callback, self._async_write, data, callback)

    def async_writev(self, buffers: Iterable[Any], callback: Callback = None) -> None:
        """``writev`` from any thread; see ``async_write``."""
        snapshot = [piece if piece.__class__ is bytes else bytes(piece) for piece in buffers]
        self._loop._submit_urgent(self, callback, self._async_writev, snapshot, callback)

    def wake(self, callback: Callback = None) -> None:
        """Run ``on_traffic`` on the loop even though no data arrived."""
        self._loop._submit(self, callback, self._loop._wake_conn, self, callback)

    def close(self, callback: Callback = None) -> None:
        """Close from any thread, after what is queued has been sent; ``on_close`` gets ``err=None``."""
        self._loop._submit(self, callback, self._loop._close_from_user, self, callback)

    def _async_write(self, data: bytes, callback: Callback) -> None:
        self._loop._after_write(self, self.write(data) if self._state == OPEN else -1, callback)

    def _async_writev(self, pieces: list[bytes], callback: Callback) -> None:
        self._loop._after_write(self, self.writev(pieces) if self._state == OPEN else -1, callback)

    # -- identity and socket options -----------------------------------------

    @property
    def fd(self) -> int:
        """The socket's descriptor (-1 once closed)."""
        return self._fd

    @property
    def event_loop(self) -> EventLoop:
        return self._loop

    @property
    def remote_addr(self) -> AddrInfo:
        return self._remote

    @property
    def local_addr(self) -> AddrInfo:
        if self._local is None and self._state != CLOSED:
            self._local = format_addr(self._sock.getsockname())
        return self._local

    @property
    def closed(self) -> bool:
        return self._state == CLOSED

    def dup(self) -> int:
        """A duplicate of the socket's descriptor, owned by the caller (it shares the non-blocking flag)."""
        self._check_open("dup")
        return os.dup(self._fd)

    def set_no_delay(self, no_delay: bool = True) -> None:
        self._check_tcp("set_no_delay")
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1 if no_delay else 0)

    def set_keep_alive(self, idle: float, interval: float | None = None, count: int | None = None) -> None:
        """TCP keep-alive after ``idle`` seconds (0 disables), probes every ``interval`` (idle/5), ``count`` (5) times."""
        self._check_tcp("set_keep_alive")
        _sockopts.set_keep_alive(self._sock, idle, interval, count)

    def set_read_buffer(self, size: int) -> None:
        self._check_open("set_read_buffer")
        _sockopts.set_read_buffer(self._sock, size)

    def set_write_buffer(self, size: int) -> None:
        self._check_open("set_write_buffer")
        _sockopts.set_write_buffer(self._sock, size)

    def set_linger(self, seconds: int | None) -> None:
        """SO_LINGER: ``None`` restores the default; 0 makes close send a reset."""
        self._check_open("set_linger")
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 0):
            raise ValueError(f"set_linger: {seconds!r}; accepted: None or whole seconds >= 0")
        onoff, value = (0, 0) if seconds is None else (1, seconds)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, onoff.to_bytes(4, "little", signed=True)
                              + value.to_bytes(4, "little", signed=True))

    def _check_open(self, what: str) -> None:
        if self._state == CLOSED:
            raise ConnClosedError(f"{what} on a closed connection ({self!r})")

    def _check_tcp(self, what: str) -> None:
        self._check_open(what)
        if self._sock.family not in (socket.AF_INET, socket.AF_INET6):
            raise UnsupportedProtocolError(f"{what} is a TCP option; this is a {self._sock.family.name} connection")

    def __repr__(self) -> str:
        state = ("open", "closing", "closed")[self._state]
        return f"<Conn fd={self._fd} {state} remote={self._remote!r} loop={self._loop.index}>"


def _nbytes(data: Any) -> int:
    return data.nbytes if isinstance(data, memoryview) else memoryview(data).nbytes
