"""A connection's states, and the rules for moving between them.

::

                 accept / enroll
                       |
                       v
                     OPEN --------------------------+
                       |                            |
       graceful close  |  (Action.CLOSE, c.close(), |  error, reset, callback
       stop(), EOF)    |                            |  exception, forced stop
          +------------+-------------+              |
          | bytes queued             | none queued  |
          v                          |              |
       FLUSHING --- queue empty -----+              |
          |                          |              |
          | timeout / error          v              |
          |                    (closed)             |
          +------------------------> CLOSED <-------+
                                     on_close runs here, exactly once

Only ``EventLoop._close`` (the decision, made by ``close_target`` below) and
the closing protocol in closing.py move a connection between states, and
every move is checked against ``TRANSITIONS``.  States still to come have a
place here: "paused for backpressure" is a sibling of OPEN (reading off,
writing on), "connecting" (a non-blocking dial) and "TLS handshaking" come
before OPEN and go to CLOSED on failure, and lingering (half-closed, reading
and discarding until the peer's EOF) sits between FLUSHING and CLOSED.

The values are ints (see intenum.py): the event loop compares states on
paths that run for every event.
"""

from __future__ import annotations

from typing import ClassVar

from .intenum import IntConstant


class ConnState(IntConstant):
    __slots__ = ()
    OPEN: ClassVar[ConnState]
    FLUSHING: ClassVar[ConnState]
    CLOSED: ClassVar[ConnState]
    _values: ClassVar[dict[str, int]] = {"OPEN": 0, "FLUSHING": 1, "CLOSED": 2}


OPEN = ConnState.OPEN
FLUSHING = ConnState.FLUSHING  # closing: the outbound queue drains, nothing more is delivered
CLOSED = ConnState.CLOSED

TRANSITIONS: dict[ConnState, frozenset[ConnState]] = {
    OPEN: frozenset({FLUSHING, CLOSED}),
    FLUSHING: frozenset({CLOSED}),
    CLOSED: frozenset(),
}


class TransitionError(RuntimeError):
    """A move the state diagram does not have: a bug in gnetpy, never the user's doing."""


def check_transition(old: ConnState, new: ConnState) -> None:
    if new not in TRANSITIONS[old]:
        raise TransitionError(f"connection state {old.name} -> {new.name} is not a transition")


def close_target(state: ConnState, graceful: bool, queued: bool) -> ConnState | None:
    """Where a close request takes a connection in ``state``; None means "stay".

    ``graceful``: a local close, or the peer's EOF -- what was written is
    still delivered.  Otherwise (an error, a forced stop) the connection
    closes at once.  ``queued``: bytes wait in the outbound queue.
    """
    if state == CLOSED:
        return None
    if not graceful:
        return CLOSED
    if state == OPEN:
        return FLUSHING if queued else CLOSED
    return None  # already closing: the closing protocol finishes it
