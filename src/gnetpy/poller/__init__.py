"""Readiness polling: one backend per mechanism, plus the loop's wake-up and task queue.

A poller registers descriptors and waits.  ``wait(timeout, maxevents)``
returns ``[(fd, mask), ...]`` with the epoll bit values (``READ_EVENTS``,
``WRITE_EVENTS``...); ``select.poll`` uses the same bits on Linux, so the
event loop needs no translation whichever backend runs.
"""

from __future__ import annotations

import select

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

Poller = EpollPoller | PollPoller


def new_poller(kind: str | None, edge_triggered: bool) -> Poller:
    """The best poller available, or the one ``kind`` names ("epoll", "poll")."""
    if kind is None:
        kind = "epoll" if hasattr(select, "epoll") else "poll"
    if kind == "epoll":
        return EpollPoller(edge_triggered)
    if kind == "poll":
        return PollPoller()
    raise ValueError(f"poller: {kind!r}; accepted: 'epoll', 'poll'")
