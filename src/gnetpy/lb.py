"""Load balancers: which event loop gets the next accepted connection.

The acceptor calls ``balancer.next(remote_addr)`` once per accepted socket, on
its own thread.  A balancer spreads over event loops (thread mode) or worker
processes' handles (process mode) alike: anything with ``count_connections``.
The counts it reads are published by the loops themselves (counters.py);
reading a slightly stale count is harmless -- it only makes one choice a
little less even.
"""

from __future__ import annotations

import enum
import zlib
from typing import Any, Generic, Protocol, Sequence, TypeVar


class Countable(Protocol):
    """What a balancer spreads connections over: an event loop, or a worker process's handle."""

    def count_connections(self) -> int: ...


T = TypeVar("T", bound=Countable)


class LoadBalancing(enum.Enum):
    ROUND_ROBIN = "round-robin"
    LEAST_CONNECTIONS = "least-connections"
    SOURCE_ADDR_HASH = "source-addr-hash"

    @classmethod
    def parse(cls, value: Any) -> LoadBalancing:
        """Accept an enum member or its name/value ("least-connections", "LEAST_CONNECTIONS")."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            key = value.strip().lower().replace("_", "-")
            for member in cls:
                if member.value == key:
                    return member
        accepted = ", ".join(f"LoadBalancing.{m.name} ({m.value!r})" for m in cls)
        raise ValueError(f"lb: {value!r} is not a load balancer; accepted: {accepted}")


class RoundRobin(Generic[T]):
    """Each loop in turn: an even spread when connections cost the same."""

    __slots__ = ("_loops", "_next")

    def __init__(self, loops: Sequence[T]) -> None:
        self._loops = tuple(loops)
        self._next = 0

    def next(self, remote_addr: Any) -> T:
        loop = self._loops[self._next]
        self._next = (self._next + 1) % len(self._loops)
        return loop


class LeastConnections(Generic[T]):
    """The loop with the fewest connections; ties go to the lowest index."""

    __slots__ = ("_loops",)

    def __init__(self, loops: Sequence[T]) -> None:
        self._loops = tuple(loops)

    def next(self, remote_addr: Any) -> T:
        return min(self._loops, key=_connection_count)


def _connection_count(loop: Countable) -> int:
    return loop.count_connections()


class SourceAddrHash(Generic[T]):
    """The same client address always lands on the same loop.

    The hash is CRC-32 of the host part only (not the port, which changes with
    every connection), so it is stable across connections, processes and
    restarts -- unlike ``hash()``, which is salted per process.
    """

    __slots__ = ("_loops",)

    def __init__(self, loops: Sequence[T]) -> None:
        self._loops = tuple(loops)

    def next(self, remote_addr: Any) -> T:
        host = remote_addr[0] if isinstance(remote_addr, tuple) else remote_addr
        if isinstance(host, str):
            host = host.encode()
        return self._loops[zlib.crc32(host or b"") % len(self._loops)]


def new_balancer(kind: LoadBalancing, loops: Sequence[T]) -> RoundRobin[T] | LeastConnections[T] | SourceAddrHash[T]:
    if not loops:
        raise ValueError("a load balancer needs at least one event loop")
    if kind is LoadBalancing.ROUND_ROBIN:
        return RoundRobin(loops)
    if kind is LoadBalancing.LEAST_CONNECTIONS:
        return LeastConnections(loops)
    return SourceAddrHash(loops)
