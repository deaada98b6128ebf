"""The read, write and writev calls of the reactor's non-blocking sockets.

``_sysio`` (C, built with the compiled accelerator) makes them without releasing the GIL:
they never wait, and the hand-off (drop the GIL, take it back: a mutex and a condition
variable) is a large share of a small message's cost
(benchmarks/results/2026-11-27-compiled-accelerator.md).  Without the build, or with
GNETPY_NO_EXTENSIONS=1, they are ``os.read``, ``os.write`` and ``os.writev``: the same results and errors.
Only for descriptors that are non-blocking: a blocking call holding the GIL would stop
every other thread.

Datagrams: ``recvfrom_raw``/``sendto_raw`` (compiled only, else None) keep the peer as the
kernel's ``struct sockaddr`` in bytes, where ``socket.recvfrom``/``sendto`` format and parse
a ``(host, port)`` tuple per datagram; ``sockaddr_to_addr`` makes that tuple when it is
wanted (once per peer, udp.py).

``epoll_wait`` (compiled only, else None) is ``select.epoll.poll`` on the epoll
descriptor, its result list built without ``Py_BuildValue`` (poller/epoll.py).  It
releases the GIL while it waits, as ``select.epoll.poll`` does.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any, Callable, Optional

writev: Callable[[int, list[Any]], int]
recvfrom_raw: Optional[Callable[[int, int], tuple[bytes, bytes]]]
sendto_raw: Optional[Callable[[int, Any, bytes], int]]
epoll_wait: Optional[Callable[[int, float, int], list[tuple[int, int]]]]
try:
    from ._sysio import epoll_wait, read, write, writev
    from ._sysio import recvfrom as recvfrom_raw
    from ._sysio import sendto as sendto_raw
except ImportError:  # pure Python
    read, write, writev = os.read, os.write, os.writev
    recvfrom_raw = sendto_raw = epoll_wait = None


def sockaddr_to_addr(peer: Any) -> Any:
    """A peer as ``socket.recvfrom`` gives it: ``(host, port)`` for IPv4, ``(host, port,
    flowinfo, scope_id)`` for IPv6, from ``recvfrom_raw``'s bytes; anything else is returned as is."""
    if peer.__class__ is not bytes:
        return peer
    family = int.from_bytes(peer[:2], sys.byteorder)  # sa_family_t: host order; the port: network order
    port = int.from_bytes(peer[2:4], "big")
    if family == socket.AF_INET and len(peer) >= 8:
        return (socket.inet_ntop(socket.AF_INET, peer[4:8]), port)
    if family == socket.AF_INET6 and len(peer) >= 28:
        return (socket.inet_ntop(socket.AF_INET6, peer[8:24]), port, int.from_bytes(peer[4:8], "big"),
                int.from_bytes(peer[24:28], sys.byteorder))
    raise ValueError(f"a sockaddr of family {family} ({len(peer)} bytes): not IPv4 or IPv6")


__all__ = ["epoll_wait", "read", "recvfrom_raw", "sendto_raw", "sockaddr_to_addr", "write", "writev"]
