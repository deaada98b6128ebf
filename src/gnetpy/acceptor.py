"""Accepting connections: one Acceptor per (listener, accepting loop).

An acceptor runs on the loop whose poller watches its listener.  For each
accepted socket it asks ``pick(remote)`` for a target -- the accepting loop
itself (one loop, ``reuse_port``), or the loop the load balancer chooses
(main-reactor mode) -- and calls ``target.hand_over(sock, remote)``.  The
target may be an ``EventLoop`` in this process or, in process mode, a worker
that receives the descriptor over a socket pair: the acceptor does not know
or care which.

``max_connections``: before each accept the acceptor asks whether the
engine has room; when it has not, the listener leaves the poller (pending
connections wait in the kernel's backlog, and are served in order as others
leave) -- a log line when it fills and when it empties, no spinning.

``hold``: in process mode, while no worker serves (every one is being
restarted) the supervisor holds the parent's acceptors the same way: the
listener leaves the poller and connections wait in the backlog until a
worker serves again (workers.py).  An acceptor made with ``holdable=False`` (the
``metrics_addr`` page's) is never held: metrics matter most while workers restart.

Running out of descriptors (EMFILE/ENFILE) is the classic way a reactor
melts: the listener stays readable, accept fails at once, and the loop spins
at 100% CPU while nothing is served.  An acceptor that hits it takes its
listener out of the poller and retries after a back-off that doubles from
10 ms to 1 s; pending connections wait in the kernel's backlog meanwhile.
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import TYPE_CHECKING, Any, Callable, Protocol

from .address import format_addr
from .listener import Listener
from .sockopts import configure_accepted

if TYPE_CHECKING:
    from .options import Options
    from .poller import Poller

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
# At max_connections, how often to look whether a connection has gone (the
# engine's count is several loops' counters: no one event says "below").
ROOM_CHECK = 0.01


class HandOverTarget(Protocol):
    """Where an accepted socket goes: an ``EventLoop``, or a worker process's end of a socket pair."""

    def hand_over(self, sock: socket.socket, remote: Any, role: Any = None) -> None: ...


class Acceptor:
    def __init__(self, listener: Listener, poller: Poller, pick: Callable[[Any], HandOverTarget],
                 call_later: Callable[[float, Callable[[], Any]], Any], opts: Options,
                 exclusive: bool = False, admit: Callable[[], bool] | None = None, holdable: bool = True) -> None:
        self._listener = listener
        self._sock = listener.sock
        self.fd = listener.fd
        self._poller = poller
        self._pick = pick
        self._call_later = call_later
        self._opts = opts
        self._logger: logging.Logger | logging.LoggerAdapter[Any] = opts.log
        self._exclusive = exclusive
        self._is_tcp = listener.address.network == "tcp"
        self._backoff = 0.0
        self._registered = False
        self._stopped = False
        self._admit = admit  # max_connections: False while the engine is full
        self._full = False
        self._held = False  # hold(True): no worker to give a connection to (process mode)
        self.holdable = holdable
        self._role = listener.role  # what its connections begin with (a PROXY header, TLS), or None

    def start(self) -> None:
        """Accept (again) -- unless stopped, held, or full (then the room check registers it)."""
        if not self._stopped and not self._held and not self._full and not self._registered:
            self._poller.register_listener(self.fd, self._exclusive)
            self._registered = True

    def stop(self) -> None:
        self._stopped = True
        self._unregister()

    def forget(self) -> None:
        """In a forked worker: the poller is the parent's copy, closed there; nothing to unregister."""
        self._registered = False

    def hold(self, held: bool) -> None:
        """Stop accepting (True) -- the backlog keeps what arrives -- or accept again (False)."""
        if not self.holdable:
            return
        self._held = held
        if held:
            self._unregister()
        else:
            self.start()

    @property
    def where(self) -> str:
        """The listener's address as bound (its real port, not the 0 it was given)."""
        return self._listener.bound_text

    def _unregister(self) -> None:
        if self._registered:
            self._poller.unregister(self.fd)
            self._registered = False

    def on_acceptable(self, events: int = 0) -> None:
        for _ in range(ACCEPT_BATCH):
            if self._admit is not None and not self._admit():
                self._wait_for_room()
                return
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
                self._logger.error("gnetpy: accept on %s failed: %s", self.where, exc)
                return
            self._backoff = 0.0
            try:
                configure_accepted(sock, self._opts, self._is_tcp)
            except OSError:
                sock.close()  # reset between accept and setsockopt: nothing to serve
                continue
            remote = format_addr(addr)
            self._pick(remote).hand_over(sock, remote, self._role)

    def _wait_for_room(self) -> None:
        """max_connections reached: stop accepting (the backlog holds the rest) and look again shortly."""
        if not self._full:
            self._full = True
            self._logger.warning("gnetpy: max_connections (%d) reached on %s: accepting paused",
                                 self._opts.max_connections, self.where)
        self._unregister()
        self._call_later(ROOM_CHECK, self._check_room)

    def _check_room(self) -> None:
        if self._stopped:
            return
        if self._admit is not None and not self._admit():
            self._call_later(ROOM_CHECK, self._check_room)
            return
        self._full = False
        self._logger.info("gnetpy: below max_connections again: accepting on %s", self.where)
        self.start()

    def _back_off(self, exc: OSError) -> None:
        self._backoff = min(BACKOFF_MAX, max(BACKOFF_MIN, self._backoff * 2))
        self._logger.warning("gnetpy: accept on %s: %s; pausing accept for %.2fs",
                             self.where, exc.strerror, self._backoff)
        self._unregister()
        self._call_later(self._backoff, self.start)
