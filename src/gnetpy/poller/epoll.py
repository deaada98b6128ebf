"""The epoll backend (Linux).

Connections are registered level-triggered by default: the loop reads once
per readiness event and, if bytes remain in the socket, simply hears about it
again on the next ``epoll_wait``.  With ``edge_triggered=True`` they are
registered once for both directions with EPOLLET and never modified again,
which saves the ``epoll_ctl`` calls that level-triggered mode makes whenever a
connection's outbound queue fills or drains; the event loop then owns the
"read until EAGAIN" duty (bounded per iteration, see ``EventLoop``).
Listeners and the wake-up descriptor are always level-triggered.
"""

from __future__ import annotations

import functools
import select
from typing import Callable

from .. import syscalls

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_ET = select.EPOLLET
_EXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 0)


class EpollPoller:
    name = "epoll"
    poll: Callable[[float, int], list[tuple[int, int]]]

    def __init__(self, edge_triggered: bool = False) -> None:
        self._ep = select.epoll()
        self.edge_triggered = edge_triggered
        # Bound once: the event loop calls it every iteration.  The compiled build's
        # epoll_wait on the same descriptor where there is one (syscalls.py), else the
        # epoll object's own method: the same results.
        if syscalls.epoll_wait is not None:
            self.poll = functools.partial(syscalls.epoll_wait, self._ep.fileno())
        else:
            self.poll = self._ep.poll

    def register(self, fd: int, events: int) -> None:
        self._ep.register(fd, _IN | _OUT | _ET if self.edge_triggered else events)

    def register_listener(self, fd: int, exclusive: bool = False) -> None:
        # A listener registered in several loops (a shared unix socket) wakes
        # only one of them per connection with EPOLLEXCLUSIVE, not all.
        self._ep.register(fd, _IN | (_EXCLUSIVE if exclusive else 0))

    def modify(self, fd: int, events: int) -> None:
        self._ep.modify(fd, events)

    def unregister(self, fd: int) -> None:
        try:
            self._ep.unregister(fd)
        except (OSError, ValueError):
            pass  # already closed or never registered: nothing to undo

    def close(self) -> None:
        self._ep.close()
