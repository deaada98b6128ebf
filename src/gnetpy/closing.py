"""The graceful close: flush what is queued, half-close, linger -- all within ``close_timeout``.

state.py has the diagram and says why each step is there.  ``GracefulClose``
is a component of one event loop: the loop decides *whether* a close is
graceful (``EventLoop.close_conn``) and hands the connection over with
``begin``; from then on the connection is this object's -- off the reactor's
hot path, its events routed here, its input read and dropped -- until it
leaves through the loop's ``finish_close``.

``close_timeout`` is one value per engine, so connections reach their
deadlines in the order they began closing: one ``FifoDeadlines``
(deadlines.py) serves them all -- no timer per connection, and no scan of
those not yet due.
"""

from __future__ import annotations

import os
import socket
from functools import partial
from typing import TYPE_CHECKING, Final

from .deadlines import FifoDeadlines
from .errors import CloseTimeoutError
from .poller import IN, OUT, READ_EVENTS
from .sockopts import unacked_bytes
from .state import FLUSHING, LINGERING, ConnState, after_flush, check_transition

if TYPE_CHECKING:
    from .conn import StreamConn
    from .loopapi import LoopServices

# Lingering: how soon to ask the kernel whether the peer has acknowledged
# everything (on loopback it has within microseconds; across a network, an RTT).
LINGER_CHECK_FIRST: Final = 0.001
LINGER_CHECK_MAX: Final = 0.1
# What a closing connection reads (and drops) per readiness event.
DISCARD_SIZE: Final = 65536
DISCARD_READS: Final = 4


def lingers(err: BaseException | None) -> bool:
    """A close that should wait for the peer: a local one, not the peer's EOF (it will send nothing more)."""
    return err.__class__ is not EOFError


class GracefulClose:
    """One loop's closing connections (FLUSHING and LINGERING) and their deadline."""

    def __init__(self, loop: LoopServices, close_timeout: float) -> None:
        self._loop = loop
        self._edge_triggered = loop.edge_triggered
        self.conns: dict[int, StreamConn] = {}
        self._deadlines = FifoDeadlines(close_timeout, loop.call_later, self._timed_out)

    def __len__(self) -> int:
        return len(self.conns)

    def begin(self, c: StreamConn, target: ConnState, err: BaseException | None) -> None:
        """OPEN -> FLUSHING or LINGERING: ``c`` has left the loop's open connections; ``err`` is for on_close."""
        check_transition(c._state, target)
        fd = c._fd
        c._state = target
        c._err = err  # what on_close will be told once the close is over
        self.conns[fd] = c
        self._loop.route(fd, partial(self._on_event, c))
        self._deadlines.add(fd)
        if target == LINGERING:
            self._linger(c)
        elif self._edge_triggered:
            self._loop.write_again(c)
        else:  # input is read and discarded while flushing, unless the peer already closed its side
            self._loop.set_interest(fd, OUT if err.__class__ is EOFError else IN | OUT)

    def forget(self, fd: int) -> bool:
        """``fd`` is being closed for good: drop it here; False if it was not closing."""
        if self.conns.pop(fd, None) is None:
            return False
        self._deadlines.discard(fd)
        return True

    def flushed(self, c: StreamConn) -> None:
        """A FLUSHING connection's queue is empty."""
        if after_flush(lingers(c._err)) == LINGERING:
            check_transition(c._state, LINGERING)
            c._state = LINGERING
            self._linger(c)
        else:
            self._loop.finish_close(c, c._err)

    def stop(self) -> None:
        self._deadlines.stop()

    def _linger(self, c: StreamConn) -> None:
        """Half-close, then wait for the peer's EOF or its acknowledgement of everything sent."""
        try:
            c._sock.shutdown(socket.SHUT_WR)
        except OSError:  # the peer is already gone: nothing to wait for
            self._loop.finish_close(c, c._err)
            return
        self._loop.set_interest(c._fd, IN)
        self._check_linger(c, LINGER_CHECK_FIRST)

    def _check_linger(self, c: StreamConn, delay: float) -> None:
        if c._state != LINGERING:
            return
        unacked = unacked_bytes(c._sock)
        if unacked == 0:  # the peer has everything, our FIN included: a reset can lose nothing now
            self._loop.finish_close(c, c._err)
        elif unacked is not None:
            self._loop.call_later(delay, partial(self._check_linger, c, min(2 * delay, LINGER_CHECK_MAX)))
        # None: the kernel cannot tell; the peer's EOF or close_timeout ends it.

    def _on_event(self, c: StreamConn, ev: int) -> None:
        if ev & READ_EVENTS and not self._discard_input(c):
            return
        if c._state == FLUSHING and (ev & OUT or self._edge_triggered):
            self._loop.flush_conn(c)

    def _discard_input(self, c: StreamConn) -> bool:
        """Read and drop what a closing connection's peer sends; False once the connection is closed."""
        fd = c._fd
        for _ in range(DISCARD_READS):
            try:
                data = os.read(fd, DISCARD_SIZE)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError as exc:
                self._loop.close_conn(c, exc, False)
                return False
            c._tally.bytes_received += len(data)
            if not data:  # the peer's EOF
                if c._state == LINGERING:
                    self._loop.finish_close(c, c._err)
                    return False
                self._loop.set_interest(fd, OUT)  # keep flushing: the peer may still read
                return True
            if len(data) < DISCARD_SIZE:
                return True
        return True

    def _timed_out(self, fd: int) -> None:
        """close_timeout passed while ``fd`` was still closing: drop it."""
        c = self.conns[fd]
        unsent = c.outbound_buffered
        what = f"{unsent} bytes unsent" if unsent else "the peer had not acknowledged everything sent"
        loop = self._loop
        loop.logger.info("gnetpy: %r dropped after close_timeout (%gs): %s", c, self._deadlines.seconds, what)
        err = CloseTimeoutError(f"close_timeout ({self._deadlines.seconds:g}s) expired: {what}")
        loop.close_conn(c, err, False)
