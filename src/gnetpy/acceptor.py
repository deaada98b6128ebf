"""Accepting connections: one Acceptor per (listener, accepting loop).

In main-reactor mode the acceptors live on the main reactor and hand each
socket to the loop the load balancer picks (through that loop's task queue);
in ``reuse_port`` mode, and when there is a single loop, every loop accepts
for itself and no hand-over happens.

Running out of descriptors (EMFILE/ENFILE) is the classic way a reactor
melts: the listener stays readable, accept fails at once, and the loop spins
at 100% CPU while nothing is served.  An acceptor that hits it takes its
listener out of the poller and retries after a back-off that doubles from
10 ms to 1 s; pending connections wait in the kernel's backlog meanwhile.
"""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING, Any, Callable

from .listener import Listener, configure_accepted, format_addr

if TYPE_CHECKING:
    from .eventloop import EventLoop

# Connections accepted per readiness event: enough to drain a burst quickly,
# few enough that the loop's own connections are not kept waiting.
ACCEPT_BATCH = 64
_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
# Failures that concern one pending connection (it was reset or refused by a
# firewall hook before we got to it), not the listener: skip and go on.
_PEER_GONE = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ENOPROTOOPT, errno.ENONET,
              errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.EOPNOTSUPP, errno.ENETUNREACH,
              errno.ENETDOWN, errno.ETIMEDOUT}
BACKOFF_MIN = 0.01
BACKOFF_MAX = 1.0


class Acceptor:
    def __init__(self, owner: EventLoop, listener: Listener, pick: Callable[[Any], EventLoop],
                 shared: bool = False) -> None:
        self._owner = owner
        self._listener = listener
        self._sock = listener.sock
        self.fd = listener.fd
        self._pick = pick
        self._shared = shared
        self._is_tcp = listener.address.network == "tcp"
        self._backoff = 0.0
        self._registered = False
        self._stopped = False

    def start(self) -> None:
        if not self._stopped and not self._registered:
            self._owner._poller.add_listener(self.fd, self._shared)
            self._registered = True

    def stop(self) -> None:
        self._stopped = True
        self._unregister()

    def _unregister(self) -> None:
        if self._registered:
            self._owner._poller.delete(self.fd)
            self._registered = False

    def on_acceptable(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_DESCRIPTORS:
                    self._back_off(exc)
                    return
                if exc.errno in _PEER_GONE:
                    continue
                self._owner._logger.error("gnetpy: accept on %s failed: %s", self._listener.address.text, exc)
                return
            self._backoff = 0.0
            self._hand_over(sock, format_addr(addr))

    def _hand_over(self, sock: socket.socket, remote: Any) -> None:
        try:
            configure_accepted(sock, self._owner._opts, self._is_tcp)
        except OSError:
            sock.close()  # reset between accept and setsockopt: nothing to serve
            return
        target = self._pick(remote)
        target._accepted_for += 1
        if target is self._owner:
            target._open_accepted(sock, remote)
        elif not target._tasks.push_urgent(target._open_accepted, sock, remote):
            target._accepted_for -= 1
            sock.close()

    def _back_off(self, exc: OSError) -> None:
        self._backoff = min(BACKOFF_MAX, max(BACKOFF_MIN, self._backoff * 2))
        self._owner._logger.warning("gnetpy: accept on %s: %s; pausing accept for %.2fs",
                                    self._listener.address.text, exc.strerror, self._backoff)
        self._unregister()
        self._owner.call_later(self._backoff, self.start)
