"""A connection's buffers: what was received and not consumed, and what waits to be sent.

``InboundBuffer`` owns the inbound bytes and the size of the next read;
``Conn`` extends it, so the handler's ``next``/``peek``/``discard``/``read``
are its methods.  ``OutboundBuffer`` is the queue of what the kernel would
not take yet.

Inbound: who writes what.  The event loop reads once per readiness event,
with ``os.read``, into a fresh ``bytes`` object and gives it to the buffer
(``_receive``) just before ``on_traffic``; the handler consumes from it;
after the callback the loop calls ``_settle``, which keeps what the handler
left in the buffer's own ``bytearray``.  Those three methods, ``_drop``, the consuming
methods and ``_adapt_read_size`` are the only code that writes the state
below -- with one exception: the reactor's inlined fast path
(``EventLoop._poll_loop``) does ``_receive``'s one assignment itself when
nothing is left over, because a method call there is a measurable part of
a message in the pure-Python build (docs/architecture.md §8, "The inlined receive"); it
says so where it does, and tests/test_buffer.py checks that both paths behave
the same.

The state: ``_src`` is what is readable, consumed up to ``_pos``.

* Outside a callback, either nothing is buffered (``_src is NOTHING``,
  ``_pos == 0``) or the leftover is, in a ``bytearray`` of our own
  (``_pos == 0``).
* During a callback, ``_src`` may be the fresh read itself: ``next()``
  hands that very object to the handler when it takes everything -- no copy,
  no allocation -- and ``peek``/``next(n)``/``read`` serve slices of it.
* Every consume that reaches the end resets to "nothing buffered"; the loop
  tests ``_src is NOTHING`` after the callback to skip ``_settle``.

Why not a per-loop ``bytearray`` filled with ``readv``, as gnet does in Go:
``next()`` must return ``bytes``, so that design copies every message out of
the shared buffer again.  A ``memoryview`` from ``peek`` is valid until the
next consume or the end of the callback (as in gnet) -- in practice it stays
valid longer, since ``bytes`` never change, but do not rely on that.
docs/architecture.md §1 has the measurements behind both choices.

Read size.  CPython builds objects of up to 512 bytes with its own
small-object allocator and anything larger -- a 64 KiB read buffer, say --
with malloc, realloc (to shrink it to what was read) and free.  So, like
Netty's adaptive receive buffer, a connection starts by reading at most
``SMALL_READ`` bytes; a read that fills that switches it to the full
``read_buffer_cap`` (the rest of a large message arrives with the next read,
which level-triggered polling reports at once); after ``SHRINK_AFTER`` reads
that would have fit the small size, it goes back.  The hysteresis keeps a
connection whose messages alternate around the threshold from splitting
every large one.

Outbound.  What a handler writes goes straight to the socket while nothing
is queued (see ``Conn.write``).  Only what the kernel would not take waits in
an ``OutboundBuffer``, flushed with one ``writev`` over the queued pieces when
the socket is writable again.  It is a ``list`` subclass so that "is
anything queued?" -- asked on every write -- is the C-level truth test of a
list, not a Python method call.  Pieces are kept as they came when they are
immutable ``bytes`` (no copy); small pieces and mutable ones (bytearray,
memoryview: the caller may reuse them) are copied into a trailing
``bytearray`` that coalesces up to ``chunk_cap`` bytes, so ten thousand tiny
writes become a few iovecs.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Final

from .errors import ShortBufferError

try:  # mypyc's class attributes; without mypy_extensions installed (pure Python) they change nothing
    from mypy_extensions import mypyc_attr
except ImportError:  # pragma: no cover
    def mypyc_attr(*attrs: str, **kwattrs: object) -> Any:  # type: ignore[misc]
        return lambda cls: cls

# ``_src`` when nothing is buffered.  Public to the package: the loop's
# inlined fast path tests for it by identity.  Final: compiled code (mypyc) reads a
# Final constant from a C static; any other module-level name it looks up in the
# module's dict at every use.  (b"" is CPython's one empty bytes: the same object
# in every module that names it.)
NOTHING: Final = b""
# The largest bytes payload CPython's small-object allocator serves (512-byte blocks).
SMALL_READ = 512 - sys.getsizeof(b"")
SHRINK_AFTER = 4

# The kernel refuses writev with more iovecs than this (IOV_MAX on Linux).
IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024
# Below this size a bytes piece is cheaper to copy into the coalescing tail
# than to carry as its own iovec.
SMALL = 4096


@mypyc_attr(allow_interpreted_subclasses=True)
class InboundBuffer:
    """Received bytes not yet consumed, and the size of the next read (see the module docstring)."""

    # The consuming methods are on the hot path of every message: they bind
    # nothing they do not need and, in the common case, allocate nothing.
    # _read_arg is _read_size as the object the loop passes to read(): compiled, the int field
    # would be boxed anew for every read (neither size is one of CPython's cached small ints).
    __slots__ = ("_src", "_pos", "_read_size", "_read_arg", "_small_reads")

    def __init__(self, read_size: int) -> None:
        self._src: Any = NOTHING
        self._pos = 0
        self._read_size = read_size
        self._read_arg: Any = read_size
        self._small_reads = 0

    # -- the handler's side ----------------------------------------------------

    @property
    def inbound_buffered(self) -> int:
        """Bytes available to ``peek``/``next``/``read`` now."""
        return len(self._src) - self._pos

    def next(self, n: int = -1) -> bytes:
        """Consume and return ``n`` bytes (all with -1); ``ShortBufferError`` if fewer are buffered."""
        src = self._src
        # type(src) is bytes, not src.__class__: compiled, the first is a pointer
        # comparison, the second a generic attribute lookup (the same cost interpreted).
        if n < 0:
            if type(src) is bytes and not self._pos:
                self._src = NOTHING  # the whole read, handed over as it is
                return src  # type: ignore[no-any-return]
            pos = self._pos
            end = len(src)
        else:
            pos = self._pos
            end = pos + n
            if end > len(src):
                raise ShortBufferError(f"next({n}): only {len(src) - pos} bytes buffered")
        chunk = src[pos:end] if type(src) is bytes else bytes(memoryview(src)[pos:end])
        # _consumed(src, end), inlined: next(n) runs once per frame in framed protocols.
        if end < len(src):
            self._pos = end
        else:
            self._src = NOTHING
            self._pos = 0
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
            self._src = NOTHING
            self._pos = 0

    # -- the event loop's side -------------------------------------------------

    def _receive(self, data: bytes) -> None:
        """Before ``on_traffic``: make ``data`` (a fresh read, or b"" for a wake-up) readable after what was left."""
        src = self._src
        if src is NOTHING:
            self._src = data  # no copy: the handler may get this very object from next()
        elif data:
            try:
                src += data  # the leftover bytearray, grown in place
            except BufferError:
                # The handler kept a view from peek(): leave that buffer to it.
                self._src = bytearray(src) + data

    def _settle(self) -> int:
        """After ``on_traffic``: keep what the handler left, in a buffer of our own; return its size."""
        src: Any = self._src
        pos = self._pos
        if pos >= len(src):
            self._src = NOTHING
            self._pos = 0
            return 0
        if type(src) is bytes:
            # A fresh read, partly consumed: copy the rest, let the read go.
            self._src = bytearray(memoryview(src)[pos:])
        elif pos:
            try:
                del src[:pos]  # our leftover bytearray, trimmed in place
            except BufferError:
                self._src = bytearray(memoryview(src)[pos:])
        self._pos = 0
        return len(self._src)

    def _drop(self) -> None:
        """Forget whatever is buffered (a datagram's leftovers: udp.py)."""
        self._src = NOTHING
        self._pos = 0

    def _adapt_read_size(self, got: int, small: int, large: int) -> None:
        """After a read of ``got`` bytes: grow on a full small read, shrink after small large-mode reads.

        ``small`` is ``SMALL_READ``, or ``read_buffer_cap`` when that is
        smaller (then both sizes are the same and nothing ever changes).  The
        event loop tests for the cases that change nothing inline (a small
        read that did not fill its buffer; a large-mode read above ``small``)
        and calls this only for the others.  The shrink counter restarts
        whenever the connection grows again, so it counts small reads since
        the last burst.
        """
        if self._read_size == small:
            if got == small:
                self._read_size = self._read_arg = large
                self._small_reads = 0
            return
        if got <= small:
            self._small_reads += 1
            if self._small_reads >= SHRINK_AFTER:
                self._read_size = self._read_arg = small


@mypyc_attr(native_class=False)
class OutboundBuffer(list):  # type: ignore[type-arg]
    __slots__ = ("nbytes", "chunk_cap")

    def __init__(self, chunk_cap: int) -> None:
        super().__init__()
        self.nbytes = 0
        self.chunk_cap = chunk_cap

    def append_data(self, data: Any) -> int:
        """Queue ``data`` (any bytes-like object); return its size in bytes."""
        if data.__class__ is not bytes and data.__class__ is not bytearray:
            data = memoryview(data)
            if data.format != "B" or data.ndim != 1:
                data = data.cast("B")
            size = data.nbytes
            # A view of immutable bytes can be kept as it is; any other view
            # may change under us once the caller returns.
            immutable = data.readonly and data.obj.__class__ is bytes
        else:
            size = len(data)
            immutable = data.__class__ is bytes
        if not size:
            return 0
        tail = self[-1] if self else None
        if immutable and size >= SMALL:
            self.append(data)
        elif tail.__class__ is bytearray and len(tail) + size <= self.chunk_cap:
            tail += data
        else:
            self.append(bytearray(data))
        self.nbytes += size
        return size

    def flush_to(self, fd: int, budget: int = 0) -> int:
        """One ``writev`` of the queued pieces; drop what the kernel took.

        Returns the bytes written.  Raises ``BlockingIOError`` when the socket
        takes nothing and the ``OSError`` of a broken connection.  ``budget``
        (edge-triggered mode) caps the bytes offered, 0 means no cap.
        """
        pieces = self if len(self) <= IOV_MAX else self[:IOV_MAX]
        if budget and self.nbytes > budget:
            pieces = _within(pieces, budget)
        written = os.writev(fd, pieces)
        # The views _within cut from a bytearray piece must be released before
        # _drop trims that bytearray in place (BufferError otherwise).
        del pieces
        self._drop(written)
        return written

    def _drop(self, written: int) -> None:
        self.nbytes -= written
        done = 0
        for piece in self:
            size = len(piece)
            if written < size:
                break
            written -= size
            done += 1
        del self[:done]
        if written:
            head = self[0]
            if head.__class__ is bytearray:
                del head[:written]  # in place: the tail may still grow
            else:
                self[0] = memoryview(head)[written:]

    def clear_all(self) -> int:
        dropped = self.nbytes
        self.clear()
        self.nbytes = 0
        return dropped


def _within(pieces: list[Any], budget: int) -> list[Any]:
    taken: list[Any] = []
    for piece in pieces:
        if budget <= 0:
            break
        taken.append(piece if len(piece) <= budget else memoryview(piece)[:budget])
        budget -= len(piece)
    return taken
