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

import select

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_ET = select.EPOLLET
_EXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 0)


class EpollPoller:
    name = "epoll"

    def __init__(self, edge_triggered: bool = False) -> None:
        self._ep = select.epoll()
        self.edge_triggered = edge_triggered
        # Bound once: the event loop calls it every iteration.
        self.wait = self._ep.poll

    def add_listener(self, fd: int, shared: bool = False) -> None:
        # A listener registered in several loops (a shared unix socket) wakes
        # only one of them per connection with EPOLLEXCLUSIVE, not all.
        self._ep.register(fd, _IN | (_EXCLUSIVE if shared else 0))

    def add_read(self, fd: int) -> None:
        self._ep.register(fd, _IN | _OUT | _ET if self.edge_triggered else _IN)

    def add_read_write(self, fd: int) -> None:
        self._ep.register(fd, _IN | _OUT | (_ET if self.edge_triggered else 0))

    def modify_read(self, fd: int) -> None:
        self._ep.modify(fd, _IN)

    def modify_read_write(self, fd: int) -> None:
        self._ep.modify(fd, _IN | _OUT)

    def modify_write(self, fd: int) -> None:
        self._ep.modify(fd, _OUT)

    def delete(self, fd: int) -> None:
        try:
            self._ep.unregister(fd)
        except (OSError, ValueError):
            pass  # already closed or never registered: nothing to undo

    def close(self) -> None:
        self._ep.close()
