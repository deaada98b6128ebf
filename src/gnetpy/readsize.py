"""How many bytes to ask for in each read: small while messages are small.

Each read returns a fresh ``bytes`` object (see conn.py).  CPython builds
objects of up to 512 bytes with its own small-object allocator, and anything
larger -- a 64 KiB read buffer, say -- with the C library's malloc, realloc
(to shrink it to what was read) and free.  On a 64-byte echo that
difference is about 800 CPU instructions per message, an eighth of the
whole per-message cost (callgrind, CPython 3.11).

So, like Netty's adaptive receive buffer, a connection starts by reading at
most ``SMALL_READ`` bytes; a read that fills that switches it to the full
``read_buffer_cap`` (the rest of a large message arrives with the next
read, which level-triggered polling reports at once); after
``SHRINK_AFTER`` reads that would have fit the small size, it goes
back.  The hysteresis keeps a connection whose messages alternate around the
threshold from splitting every large one.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .conn import Conn

# The largest bytes payload CPython's small-object allocator serves (512-byte blocks).
SMALL_READ = 512 - sys.getsizeof(b"")
SHRINK_AFTER = 4


def adapt(c: Conn, got: int, small: int, large: int) -> None:
    """After a read of ``got`` bytes: grow on a full small read, shrink after small large-mode reads.

    ``small`` is ``SMALL_READ``, or ``read_buffer_cap`` when that is smaller
    (then both sizes are the same and nothing ever changes).  The event loop
    inlines the common cases (a small read that did not fill its buffer; a
    large-mode read above ``small``) and calls this only for the others.
    The shrink counter restarts whenever the connection grows again, so it
    counts small reads since the last burst.
    """
    if c._read_size == small:
        if got == small:
            c._read_size = large
            c._small_reads = 0
        return
    if got <= small:
        c._small_reads += 1
        if c._small_reads >= SHRINK_AFTER:
            c._read_size = small
