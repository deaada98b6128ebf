"""Conn: one connection as a handler sees it -- the base every kind shares, and ``StreamConn``.

Kinds.  ``Conn`` is the public type and holds what every connection has: the
inbound bytes (``InboundBuffer``, which it extends so that ``next``/``peek``
cost one Python call), identity and addresses, ``context``, the calls safe
from any thread (``async_write``, ``wake``, ``close``) and ``reset_codec``.
Each kind adds its own part in a subclass: ``StreamConn`` (TCP and unix
streams: the write queue, backpressure, socket options), ``tls.TlsConn`` (a
stream whose bytes on the wire are TLS records) and ``udp.DatagramConn`` (a
peer of a datagram socket).  An operation a kind cannot do is refused in one
place, ``_refuse``, with the reason its class gives in ``_REFUSED``.

How a connection reaches its loop: only through the loop's internal interface
(eventloop.py, "The connections' side") -- never its attributes.

Writing (streams): gathered.  What a loop callback writes is held, in order
-- the ``bytes`` objects themselves, no copy -- and sent when the callback
returns, before the loop goes on to the next ready descriptor: one ``write``
for one piece, one ``writev`` for several (``_send_gathered``).  So a handler
that answers sixteen pipelined requests with sixteen writes makes one system
call, not sixteen (Netty's flush at read-complete).  The connection puts
itself on its loop's list of connections with something gathered (``_dirty``,
the list the loop hands every connection) at its first write of a callback.
What the kernel does not take is queued (``buffer.OutboundBuffer``) and
flushed by the loop when the socket is writable; while anything is queued,
writes go straight to the queue (the order is kept).  ``_out`` is the empty
tuple until something is queued, so an idle connection carries no buffer.
A piece that is not ``bytes`` may change once ``write`` returns: a small one
is copied, a large one (``GATHER_COPY_MAX``) sends what is gathered and goes
to the socket at once rather than be copied.  ``write`` is on the hot path
of every message: it binds nothing it does not need and, in the common case,
allocates nothing.

States.  ``_state`` is a ``ConnState`` (state.py, where the diagram is);
only the event loop changes it.

Threads.  ``peek/next/discard/read/write/writev/flush`` and the socket option
setters are loop-only: call them from callbacks of this connection's loop.
``async_write``, ``async_writev``, ``wake`` and ``close`` are safe from any
thread: each queues a task whose body (``_*_on_loop`` below) runs on the
loop, and their callbacks run there as ``callback(conn, err)``.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Final, Iterable, NoReturn, Optional

from . import sockopts, syscalls
from .address import AddrInfo, format_addr
from .buffer import IOV_MAX, InboundBuffer, OutboundBuffer
from .errors import ConnClosedError, EngineStoppedError, UnsupportedOperationError, UnsupportedProtocolError
from .state import CLOSED, OPEN, ConnState
from .tally import Tally

try:  # mypyc's class attributes; without mypy_extensions installed (pure Python) they change nothing
    from mypy_extensions import mypyc_attr
except ImportError:  # pragma: no cover
    def mypyc_attr(*attrs: str, **kwattrs: object) -> Any:  # type: ignore[misc]
        return lambda cls: cls

if TYPE_CHECKING:
    from .loopapi import LoopServices

Callback = Optional[Callable[["Conn", Optional[BaseException]], Any]]

_NOTHING_QUEUED: Any = ()
# A non-blocking socket: no GIL hand-off where _sysio is built.  Final: a C static when
# compiled, not a module-dict lookup per write (buffer.NOTHING says more).
_write: Final = syscalls.write
_writev: Final = syscalls.writev
# The states the write path tests, as Final constants: compiled, a name imported from the
# interpreted state.py is looked up in this module's dict at every use.
_OPEN: Final = OPEN
_CLOSED: Final = CLOSED
# Why reading is paused (StreamConn._paused, a bit set): reading resumes when it is 0.
PAUSED_BY_QUEUE = 1  # the outbound queue passed write_high_water (backpressure)
PAUSED_BY_USER = 2  # pause_reading()
PAUSED_BY_FRAMES = 4  # the codec's frame budget ran out: buffered frames wait for the next iteration
# A write of a mutable buffer (bytearray, memoryview) up to this size is copied to be gathered;
# a larger one goes to the socket at once, after what is gathered.
GATHER_COPY_MAX: Final = 64 * 1024


@mypyc_attr(allow_interpreted_subclasses=True)  # the kinds below subclass it
class Conn(InboundBuffer):
    """A connection: what every kind has (see the module docstring)."""

    __slots__ = ("_fd", "_sock", "_loop", "_state", "_err", "_remote", "_local", "_close_callbacks", "_seen",
                 "_codec_state", "_proxy", "context", "__weakref__")

    # What this kind cannot do: operation -> (error class, why), for _refuse.
    _REFUSED: ClassVar[dict[str, tuple[type[Exception], str]]] = {}

    def __init__(self, loop: LoopServices, sock: socket.socket, remote: Any, read_size: int) -> None:
        InboundBuffer.__init__(self, read_size)
        self._fd = sock.fileno()
        self._sock = sock
        self._loop = loop
        self._state: ConnState = OPEN
        # An error that has doomed the connection (a failed write); the loop
        # closes it with this error once the running callback returns.
        self._err: BaseException | None = None
        self._remote = remote
        self._local: Any = None
        self._close_callbacks: list[Callback] | None = None
        self._seen = 0.0  # when it last read (the loop's clock; idle timeouts: deadlines.py)
        self._codec_state: Any = None  # the codec option's per-connection state (codec.py)
        self._proxy: Any = None  # the PROXY header it began with (proxystage.py), if its listener expects one
        self.context: Any = None

    def _refuse(self, operation: str) -> NoReturn:
        """Every operation a kind cannot do ends here, with the reason its class gives."""
        error, why = self._REFUSED.get(operation, (UnsupportedOperationError, "not available"))
        raise error(f"{operation} on a {self._kind()} connection: {why}")

    def _kind(self) -> str:
        return "stream"

    # -- the kind's part (each subclass implements what it can) ------------------------

    def write(self, data: Any) -> int:
        """Send ``data``; returns its size (everything is sent or queued, in order)."""
        self._refuse("write")

    def writev(self, buffers: Iterable[Any]) -> int:
        """Write several buffers in one system call (``writev``); returns their total size."""
        self._refuse("writev")

    def flush(self) -> None:
        """Send what is queued now rather than when the loop next sees the socket writable."""
        self._refuse("flush")

    @property
    def outbound_buffered(self) -> int:
        """Bytes written but not yet taken by the kernel."""
        return 0

    def send_to(self, data: Any, addr: Any) -> int:
        """UDP only: send a datagram to ``addr``."""
        self._refuse("send_to")

    def async_writev(self, buffers: Iterable[Any], callback: Callback = None) -> None:
        """``writev`` from any thread; see ``async_write``."""
        self._refuse("async_writev")

    def pause_reading(self) -> None:
        """Stop reading from this connection until ``resume_reading()`` (loop-only)."""
        self._refuse("pause_reading")

    def resume_reading(self) -> None:
        """Undo ``pause_reading()`` (loop-only)."""
        self._refuse("resume_reading")

    @property
    def reading_paused(self) -> bool:
        """True while reading is off."""
        return False

    def dup(self) -> int:
        """A duplicate of the socket's descriptor, owned by the caller."""
        self._refuse("dup")

    def set_no_delay(self, no_delay: bool = True) -> None:
        self._refuse("set_no_delay")

    def set_keep_alive(self, idle: float, interval: float | None = None, count: int | None = None) -> None:
        self._refuse("set_keep_alive")

    def set_read_buffer(self, size: int) -> None:
        self._refuse("set_read_buffer")

    def set_write_buffer(self, size: int) -> None:
        self._refuse("set_write_buffer")

    def set_linger(self, seconds: int | None) -> None:
        self._refuse("set_linger")

    def _end(self, err: BaseException | None) -> None:
        """On the loop: what ``Action.CLOSE`` (``err`` None) or a callback's exception does to this kind."""
        raise NotImplementedError

    def _woken(self) -> None:
        """On the loop: ``wake()``'s ``on_traffic`` for this kind."""
        raise NotImplementedError

    # -- codecs ------------------------------------------------------------------------

    def reset_codec(self) -> None:
        """Forget the codec's place in this connection's input (its per-connection state).

        Call it after consuming or discarding buffered bytes by hand when a
        codec decodes the same connection (``codec.decode(c)`` or the
        ``codec=`` option): a delimiter codec remembers how far it has
        searched, and that offset is stale once bytes were taken behind its back.
        """
        self._codec_state = None

    # -- safe from any thread -------------------------------------------------

    def async_write(self, data: Any, callback: Callback = None) -> None:
        """Write ``data`` from any thread; ``callback(conn, err)`` runs on the loop once it is written or queued.

        Bounded: while what this connection has waiting -- queued, or handed
        to the loop and not yet written -- is at ``async_write_limit`` (16 MiB)
        or more, it raises ``LimitExceededError`` instead of taking more: a
        peer that does not read cannot make a producing thread fill memory.
        Wait for the callback of an earlier write (or ``on_drained``) first.
        """
        if data.__class__ is not bytes:
            data = bytes(data)  # the caller may reuse its buffer as soon as we return
        size = len(data)
        self._loop.reserve_async(self, size)
        if not self._submit(True, callback, self._write_on_loop, data, callback, size):
            self._loop.release_async(self, size)

    def wake(self, callback: Callback = None) -> None:
        """Run ``on_traffic`` on the loop even though no data arrived."""
        self._submit(False, callback, self._wake_on_loop, callback)

    def close(self, callback: Callback = None) -> None:
        """Close from any thread, after what is queued has been sent; ``on_close`` gets ``err=None``."""
        self._submit(False, callback, self._close_on_loop, callback)

    def _submit(self, urgent: bool, callback: Callback, fn: Callable[..., Any], *args: Any) -> bool:
        """Queue a task body for the loop; False (and the callback told, here) once the loop has stopped."""
        loop = self._loop
        if loop.submit(urgent, fn, *args):
            return True
        if callback is not None:
            # The loop is gone: tell the callback here, on the caller's thread.
            try:
                callback(self, EngineStoppedError(f"event loop {loop.index} has stopped"))
            except Exception:  # on the caller's thread: its BaseExceptions are its own
                loop.logger.exception("gnetpy: callback %r raised", callback)
        return False

    # The task bodies: these run on the loop.

    def _write_on_loop(self, data: bytes, callback: Callback, size: int) -> None:
        self._loop.release_async(self, size)
        self._after_write(self.write(data) if self._state == OPEN else -1, callback)

    def _after_write(self, result: int, callback: Callback) -> None:
        if callback is not None:
            err = ConnClosedError(f"{self!r} was closed before the write") if result < 0 else self._err
            self._loop.run_callback(callback, self, err)

    def _wake_on_loop(self, callback: Callback) -> None:
        if self._state != OPEN:
            self._loop.run_callback(callback, self, ConnClosedError(f"wake: {self!r} is closed"))
            return
        self._woken()
        self._loop.run_callback(callback, self, None)

    def _close_on_loop(self, callback: Callback) -> None:
        if self._state == CLOSED:
            self._loop.run_callback(callback, self, ConnClosedError(f"close: {self!r} is already closed"))
            return
        if callback is not None:
            if self._close_callbacks is None:
                self._close_callbacks = []
            self._close_callbacks.append(callback)
        self._end(None)

    # -- identity -------------------------------------------------------------

    @property
    def fd(self) -> int:
        """The socket's descriptor (-1 once closed)."""
        return self._fd

    @property
    def event_loop(self) -> LoopServices:
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
    def proxy(self) -> Any:
        """The PROXY header this connection began with (a ``gnetpy.ProxyInfo``: ``command``, ``family``,
        ``source``, ``destination``, ``tlvs``, ``version``...), or None without ``proxy_protocol``."""
        return self._proxy

    @property
    def tls(self) -> Any:
        """None for a plain connection; a TLS one's session facts (``version()``, ``cipher()``...): tls.TlsInfo."""
        return None

    @property
    def closed(self) -> bool:
        return self._state == CLOSED

    def _check_open(self, what: str) -> None:
        if self._state == CLOSED:
            raise ConnClosedError(f"{what} on a closed connection ({self!r})")

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} fd={self._fd} {self._state.name.lower()} remote={self._remote!r} "
                f"loop={self._loop.index}>")


class StreamConn(Conn):
    """A TCP or unix stream connection: gathered writes, the write queue, backpressure, socket options."""

    __slots__ = ("_out", "_paused", "_transport", "_gather", "_serving", "_dirty", "_tally")

    _REFUSED: ClassVar[dict[str, tuple[type[Exception], str]]] = {
        "send_to": (UnsupportedProtocolError, "send_to is for UDP connections (use write)"),
    }

    def __init__(self, loop: LoopServices, sock: socket.socket, remote: Any, read_size: int) -> None:
        Conn.__init__(self, loop, sock, remote, read_size)
        self._out: Any = _NOTHING_QUEUED  # an OutboundBuffer once something is queued (Any: mypyc checks types)
        self._paused = 0  # why reading is off: a set of PAUSED_BY_* bits (0: reading)
        # What stands between the socket and the handler, if anything: a PROXY header still to
        # read (proxystage.py), then a TLS session (tls.py); the reactor tests it per event.
        self._transport: Any = None
        # What this callback wrote, not yet sent: None, one bytes, or a list of them.
        self._gather: Any = None
        # True while the reactor runs this connection's on_traffic inline: it sends what that
        # callback gathers itself, so a write need not put the connection on the loop's list.
        self._serving = False
        self._dirty: list[StreamConn] = loop.dirty  # the loop's connections with something gathered
        self._tally: Tally = loop.tally  # the loop's figures: the bytes the kernel takes are counted there

    # -- outbound -----------------------------------------------------------

    @property
    def outbound_buffered(self) -> int:
        """Bytes written but not yet taken by the kernel (gathered or queued)."""
        gather = self._gather
        queued = self._out.nbytes if self._out else 0
        if gather is None:
            return queued
        unsent = queued + (len(gather) if type(gather) is bytes else sum(map(len, gather)))
        # Seen past write_high_water: on_drained is owed, even if the kernel then takes it all.
        self._loop.gathered_seen(self, unsent)
        return unsent

    def write(self, data: Any) -> int:
        """Send ``data`` (bytes-like) when this callback returns, with the others it writes (module docstring).

        Returns its size: everything is either sent or queued, in order.
        A connection that has failed accepts nothing (returns 0; ``on_close``
        tells why); one that is closed raises ``ConnClosedError``.
        """
        # The first write of a callback, the common case, in one test: nothing queued or gathered,
        # bytes, open (`is`: states are singletons, and compiled `==` on their int subclass is a
        # generic call), no failed write.
        if (not self._out and self._gather is None and type(data) is bytes and self._state is _OPEN
                and self._err is None):
            self._gather = data
            if not self._serving:
                self._dirty.append(self)
            return len(data)
        return self._write_more(data)

    def _write_more(self, data: Any) -> int:
        if self._out:
            return self._queue(data)
        if self._state is not _OPEN or self._err is not None:
            return self._write_failed(None)
        if type(data) is not bytes:
            if _nbytes(data) > GATHER_COPY_MAX:
                self._send_gathered()  # a large buffer is not copied: what is gathered, then it
                return self._write_now(data)
            data = bytes(data)  # the caller may change it once we return
        return self._gathered(data)

    def _gathered(self, data: bytes) -> int:
        """Hold ``data`` with what this callback wrote before it (TlsConn's writes too)."""
        gather = self._gather
        if gather is None:
            self._gather = data
            if not self._serving:
                self._dirty.append(self)
            return len(data)
        return self._gather_more(gather, data)

    def _gather_more(self, gather: Any, data: bytes) -> int:
        if type(gather) is bytes:
            self._gather = [gather, data]
        else:
            gather.append(data)
        return len(data)

    def _send_gathered(self) -> None:
        """On the loop, once the callback returned (or ``flush()``, or a close): send what it wrote.

        Nothing is queued here (a write made while anything was queued went to the queue, not
        to the gather), so one piece goes straight to the socket.
        """
        gather = self._gather
        if gather is None:
            return
        self._gather = None
        if self._state is _CLOSED:
            return
        if type(gather) is not bytes:
            self._writev_now(gather)
            return
        data: bytes = gather
        try:
            sent = _write(self._fd, data)
            self._tally.bytes_sent += sent
            if sent == len(data):
                return
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._write_failed(exc)
            return
        self._queue_rest(data, sent)

    def _write_now(self, data: Any) -> int:
        """``data`` to the socket now, queueing what it does not take (behind what is queued already)."""
        if self._out:
            return self._queue(data)
        try:
            sent = _write(self._fd, data)
            self._tally.bytes_sent += sent
            if sent == len(data):
                return sent
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            return self._write_failed(exc)
        return self._queue_rest(data, sent)

    def _writev_now(self, pieces: list[Any]) -> int:
        """Several pieces in one ``writev`` (``IOV_MAX`` at a time), queueing what the socket does not take."""
        total = 0
        start = 0
        while start < len(pieces):
            batch = pieces if start == 0 and len(pieces) <= IOV_MAX else pieces[start:start + IOV_MAX]
            start += len(batch)
            if self._out:
                for piece in batch:
                    total += self._queue(piece)
                continue
            try:
                sent = _writev(self._fd, batch)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                return self._write_failed(exc)
            self._tally.bytes_sent += sent
            for piece in batch:
                size = len(piece) if type(piece) is bytes else _nbytes(piece)
                total += size
                if sent >= size:
                    sent -= size
                else:
                    self._queue(memoryview(piece).cast("B")[sent:] if sent else piece)
                    sent = 0
        return total

    def writev(self, buffers: Iterable[Any]) -> int:
        """Write several buffers, gathered like ``write`` (one ``writev`` with the rest); returns their size."""
        return sum([self.write(piece) for piece in buffers])

    def flush(self) -> None:
        """Send what this callback has written now, and try the queue, rather than when the callback returns."""
        self._send_gathered()
        if self._out and self._state != CLOSED:
            self._loop.flush_conn(self)

    def async_writev(self, buffers: Iterable[Any], callback: Callback = None) -> None:
        """``writev`` from any thread; see ``async_write``."""
        snapshot = [piece if piece.__class__ is bytes else bytes(piece) for piece in buffers]
        size = sum(len(piece) for piece in snapshot)
        self._loop.reserve_async(self, size)
        if not self._submit(True, callback, self._writev_on_loop, snapshot, callback, size):
            self._loop.release_async(self, size)

    def _writev_on_loop(self, pieces: list[bytes], callback: Callback, size: int) -> None:
        self._loop.release_async(self, size)
        self._after_write(self.writev(pieces) if self._state == OPEN else -1, callback)

    def _queue(self, data: Any) -> int:
        if self._state != OPEN:
            return self._write_failed(None)
        out = self._out
        if out is _NOTHING_QUEUED:
            out = self._out = self._loop.new_outbound()
        was_empty = not out
        size = out.append_data(data)
        self._loop.queued(self, was_empty)  # want-write on the first bytes; backpressure past the mark
        return size

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
            self._loop.doom(self)
        return 0

    # -- reading paused and resumed ------------------------------------------------

    def pause_reading(self) -> None:
        """Stop reading from this connection until ``resume_reading()`` (loop-only).

        The loop also stops reading on its own while the outbound queue is
        above ``write_high_water`` (a peer that does not read must not make us
        buffer without bound) and resumes under ``write_low_water``, calling
        ``on_drained(c)``.  The two are independent: reading resumes when
        neither holds it.  A relay pauses one side while the other's queue is
        full, and resumes it from the other's ``on_drained`` (examples/proxy.py).
        """
        self._check_open("pause_reading")
        self._loop.pause_reading(self, PAUSED_BY_USER)

    def resume_reading(self) -> None:
        """Undo ``pause_reading()`` (loop-only); bytes that arrived meanwhile are delivered then."""
        self._check_open("resume_reading")
        self._loop.resume_reading(self, PAUSED_BY_USER)

    @property
    def reading_paused(self) -> bool:
        """True while reading is off (``pause_reading()``, the outbound queue above its high-water mark, or --
        with a codec -- frames already read waiting for the next loop iteration: ``frame_budget``)."""
        return bool(self._paused)

    # -- the loop's side -----------------------------------------------------------------

    def _end(self, err: BaseException | None) -> None:
        self._loop.close_conn(self, err, True)  # graceful: what was written is delivered first

    def _woken(self) -> None:
        self._loop.deliver(self, b"")

    # -- socket options -------------------------------------------------------------------

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
        sockopts.set_keep_alive(self._sock, idle, interval, count)

    def set_read_buffer(self, size: int) -> None:
        self._check_open("set_read_buffer")
        sockopts.set_read_buffer(self._sock, size)

    def set_write_buffer(self, size: int) -> None:
        self._check_open("set_write_buffer")
        sockopts.set_write_buffer(self._sock, size)

    def set_linger(self, seconds: int | None) -> None:
        """SO_LINGER: ``None`` restores the default; 0 makes close send a reset."""
        self._check_open("set_linger")
        sockopts.set_linger(self._sock, seconds)

    def _check_tcp(self, what: str) -> None:
        self._check_open(what)
        if self._sock.family not in (socket.AF_INET, socket.AF_INET6):
            raise UnsupportedProtocolError(f"{what} is a TCP option; this is a {self._sock.family.name} connection")


def _nbytes(data: Any) -> int:
    return data.nbytes if isinstance(data, memoryview) else memoryview(data).nbytes
