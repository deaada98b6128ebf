"""The graceful close: flush what is queued, half-close, linger -- all within ``close_timeout``.

state.py has the diagram and says why each step is there.  A connection gets
here from ``ConnLifecycle._close`` (lifecycle.py) when ``close_target`` says
FLUSHING or LINGERING, and leaves through ``_finish_close``.  While it is
closing it is off the reactor's hot path: its events reach
``_on_closing_event`` through ``_watchers``, and its input is read and dropped.

``close_timeout`` is one value per engine, so connections reach their
deadlines in the order they began closing: one ``FifoDeadlines``
(``_close_timeouts``, deadlines.py) serves them all -- no timer per
connection, and no scan of those not yet due.
"""

from __future__ import annotations

import os
import socket
from functools import partial

from .conn import Conn
from .loopbase import LoopBase
from .poller import IN, OUT, READ_EVENTS
from .sockopts import unacked_bytes
from .state import FLUSHING, LINGERING, ConnState, after_flush, check_transition

# Lingering: how soon to ask the kernel whether the peer has acknowledged
# everything (on loopback it has within microseconds; across a network, an RTT).
LINGER_CHECK_FIRST = 0.001
LINGER_CHECK_MAX = 0.1
# What a closing connection reads (and drops) per readiness event.
DISCARD_SIZE = 65536
DISCARD_READS = 4


def lingers(c: Conn, err: BaseException | None) -> bool:
    """A close that should wait for the peer: a local one, not the peer's EOF (it will send nothing more)."""
    return err.__class__ is not EOFError


class GracefulClose(LoopBase):
    def _start_closing(self, c: Conn, target: ConnState, err: BaseException | None) -> None:
        """OPEN -> FLUSHING or LINGERING: off the hot path, on the close_timeout clock."""
        check_transition(c._state, target)
        fd = c._fd
        c._state = target
        c._err = err  # what on_close will be told once the close is over
        del self._conns[fd]
        if self._holding:
            self._release_inbound(c)
        self._closing[fd] = c
        self._watchers[fd] = partial(self._on_closing_event, c)
        self._busy_read.pop(fd, None)
        self._close_timeouts.add(fd)
        if target == LINGERING:
            self._linger(c)
        elif self._edge_triggered:
            self._busy_write[fd] = c
        else:  # input is read and discarded while flushing, unless the peer already closed its side
            self._poller.modify(fd, OUT if err.__class__ is EOFError else IN | OUT)

    def _flushed(self, c: Conn) -> None:
        """A FLUSHING connection's queue is empty."""
        if after_flush(lingers(c, c._err)) == LINGERING:
            check_transition(c._state, LINGERING)
            c._state = LINGERING
            self._linger(c)
        else:
            self._finish_close(c, c._err)

    def _linger(self, c: Conn) -> None:
        """Half-close, then wait for the peer's EOF or its acknowledgement of everything sent."""
        try:
            c._sock.shutdown(socket.SHUT_WR)
        except OSError:  # the peer is already gone: nothing to wait for
            self._finish_close(c, c._err)
            return
        if not self._edge_triggered:
            self._poller.modify(c._fd, IN)
        self._check_linger(c, LINGER_CHECK_FIRST)

    def _check_linger(self, c: Conn, delay: float) -> None:
        if c._state != LINGERING:
            return
        unacked = unacked_bytes(c._sock)
        if unacked == 0:  # the peer has everything, our FIN included: a reset can lose nothing now
            self._finish_close(c, c._err)
        elif unacked is not None:
            self.call_later(delay, partial(self._check_linger, c, min(2 * delay, LINGER_CHECK_MAX)))
        # None: the kernel cannot tell; the peer's EOF or close_timeout ends it.

    def _on_closing_event(self, c: Conn, ev: int) -> None:
        if ev & READ_EVENTS and not self._discard_input(c):
            return
        if c._state == FLUSHING and (ev & OUT or self._edge_triggered):
            self._flush(c)

    def _discard_input(self, c: Conn) -> bool:
        """Read and drop what a closing connection's peer sends; False once the connection is closed."""
        fd = c._fd
        for _ in range(DISCARD_READS):
            try:
                data = os.read(fd, DISCARD_SIZE)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError as exc:
                self._close(c, exc, False)
                return False
            if not data:  # the peer's EOF
                if c._state == LINGERING:
                    self._finish_close(c, c._err)
                    return False
                if not self._edge_triggered:
                    self._poller.modify(fd, OUT)  # keep flushing: the peer may still read
                return True
            if len(data) < DISCARD_SIZE:
                return True
        return True

    def _close_timed_out(self, fd: int) -> None:
        """close_timeout passed while ``fd`` was still closing: drop it."""
        c = self._closing[fd]
        unsent = c._out.nbytes if c._out else 0
        what = f"{unsent} bytes unsent" if unsent else "the peer had not acknowledged everything sent"
        self._logger.info("gnetpy: %r dropped after close_timeout (%gs): %s", c, self._opts.close_timeout, what)
        self._close(c, TimeoutError(f"close_timeout ({self._opts.close_timeout:g}s) expired: {what}"), False)
