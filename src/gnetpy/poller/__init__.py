"""Readiness polling: the ``Poller`` protocol and one backend per mechanism.

A poller registers descriptors and waits, nothing more (``selectors`` is the
model); the event loop's wake-up and task queue sit beside it, in waker.py
and taskqueue.py, because they work the same over any backend: the waker's
descriptor is registered like a listener's.

``poll(timeout, maxevents)`` returns ``[(fd, mask), ...]`` with epoll's bit
values (``IN``, ``OUT``, ``ERR``, ``HUP``); ``select.poll`` uses the same
bits on Linux, so the event loop needs no translation whichever backend runs.
"""

from __future__ import annotations

import select
from typing import Protocol

from .epoll import EpollPoller
from .poll import PollPoller

IN = select.POLLIN
OUT = select.POLLOUT
ERR = select.POLLERR
HUP = select.POLLHUP
NVAL = select.POLLNVAL
# What sends a connection down the read path: data, or an error/hang-up that
# the next read will report (as an exception or as EOF).
READ_EVENTS = IN | ERR | HUP | NVAL


class Poller(Protocol):
    """What the event loop needs from a readiness backend."""

    name: str
    # True: connections are registered once for IN|OUT, edge-triggered, and
    # never modified; the loop reads and writes until EAGAIN itself.
    edge_triggered: bool

    def poll(self, timeout: float, maxevents: int, /) -> list[tuple[int, int]]:
        """Wait up to ``timeout`` seconds (negative: forever) for at most ``maxevents`` ready descriptors."""

    def register(self, fd: int, events: int) -> None:
        """A connection, interested in ``events`` (level-triggered) -- or IN|OUT once, edge-triggered."""

    def register_listener(self, fd: int, exclusive: bool = False) -> None:
        """A listener or wake-up descriptor: always level-triggered IN.

        ``exclusive``: the descriptor is registered in several loops (a shared
        unix listener); wake only one of them per event where the backend can.
        """

    def modify(self, fd: int, events: int) -> None:
        """Change a level-triggered connection's interest (never called when edge-triggered)."""

    def unregister(self, fd: int) -> None:
        """Forget ``fd``; a descriptor already closed or never registered is not an error."""

    def close(self) -> None: ...


def new_poller(kind: str | None, edge_triggered: bool) -> Poller:
    """The best poller available, or the one ``kind`` names ("epoll", "poll")."""
    if kind is None:
        kind = "epoll" if hasattr(select, "epoll") else "poll"
    if kind == "epoll":
        return EpollPoller(edge_triggered)
    if kind == "poll":
        return PollPoller()
    raise ValueError(f"poller: {kind!r}; accepted: 'epoll', 'poll'")


__all__ = ["ERR", "HUP", "IN", "NVAL", "OUT", "READ_EVENTS", "EpollPoller", "PollPoller", "Poller", "new_poller"]
