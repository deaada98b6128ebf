"""The outbound queue of a connection.

What a handler writes goes straight to the socket while nothing is queued
(see ``Conn.write``).  Only what the kernel would not take waits here, and it
is flushed with one ``writev`` over the queued pieces when the socket is
writable again.

The queue is a ``list`` subclass so that "is anything queued?" -- asked on
every write -- is the C-level truth test of a list, not a Python method call.
Pieces are kept as they came when they are immutable ``bytes`` (no copy);
small pieces and mutable ones (bytearray, memoryview: the caller may reuse
them) are copied into a trailing ``bytearray`` that coalesces up to
``chunk_cap`` bytes, so ten thousand tiny writes become a few iovecs.
"""

from __future__ import annotations

import os
from typing import Any

# The kernel refuses writev with more iovecs than this (IOV_MAX on Linux).
IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024
# Below this size a bytes piece is cheaper to copy into the coalescing tail
# than to carry as its own iovec.
SMALL = 4096


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
