"""The portable backend: ``select.poll``, for systems without epoll (and tests).

Level-triggered only; ``edge_triggered`` is reported as False so the event
loop keeps to its level-triggered paths.  Its masks are epoll's bit values
on Linux, so the loop needs no translation.
"""

from __future__ import annotations

import math
import select

_IN = select.POLLIN


class PollPoller:
    name = "poll"
    edge_triggered = False

    def __init__(self) -> None:
        self._poll = select.poll()
        self._wait_ms = self._poll.poll

    def poll(self, timeout: float = -1, maxevents: int = -1) -> list[tuple[int, int]]:
        """Same contract as ``epoll.poll``: seconds, negative blocks."""
        return self._wait_ms(-1 if timeout < 0 else math.ceil(timeout * 1000))

    def register(self, fd: int, events: int) -> None:
        self._poll.register(fd, events)

    def register_listener(self, fd: int, exclusive: bool = False) -> None:
        self._poll.register(fd, _IN)

    def modify(self, fd: int, events: int) -> None:
        self._poll.modify(fd, events)

    def unregister(self, fd: int) -> None:
        try:
            self._poll.unregister(fd)
        except (KeyError, OSError, ValueError):
            pass

    def close(self) -> None:
        pass  # select.poll holds no descriptor
