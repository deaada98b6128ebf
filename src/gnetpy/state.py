"""A connection's states, and the rules for moving between them.

::

        accept / enroll / dial ---- TLS ----> HANDSHAKING
                         |                       |      |
                         v        done: on_open  |      | fails, times out
                       OPEN <--------------------+      | (closed unseen:
                         |                              |  no on_close)
                         +-----------------------------------------+
                         |                              |          |
      graceful close     |  (Action.CLOSE, c.close(),   |          | error, reset,
                         |   stop(), the peer's EOF)    |          | callback exception,
        +----------------+------------------+           |          | forced stop
        | bytes queued   | none queued,     | none      |          |
        v                | local close      | queued,   |          |
     FLUSHING            v                  | the peer's|          |
        | queue empty  LINGERING            | EOF       |          |
        +------------->  |                  |           |          |
        | (no linger)    | peer's EOF, all  |           |          |
        |                | acknowledged     |           |          |
        v                v                  v           v          |
        +-------------> CLOSED <------------+-----------+----------+
      close_timeout,    on_close runs here, exactly once (if on_open ran)
      error

FLUSHING: the outbound queue drains; input is read and discarded (a peer
blocked in a write of its own must not keep ours from finishing).
LINGERING (after a local close): the write side is shut (``SHUT_WR``: the
peer reads an end of stream after everything we sent) and input is read and
discarded until the peer's EOF, or until the kernel reports that the peer
has everything (TCP: acknowledged, our FIN included; unix: read) -- closing
a socket with unread input sends a TCP reset, which destroys whatever the
peer has not yet received (nginx's "lingering close"), and makes a unix
peer's read fail with ECONNRESET instead of ending cleanly.  Both closing
states are bounded by ``close_timeout``; a connection still closing then is
dropped with a ``TimeoutError``.  A close caused by the peer's EOF does not
linger: the peer will send nothing more.

Only ``EventLoop.close_conn`` (the decision, made by ``close_target`` below)
and the closing protocol in closing.py move a connection between states,
and every move is checked against ``TRANSITIONS``.  HANDSHAKING (TLS) comes
before OPEN: ``on_open`` runs when it completes, and one that fails goes to
CLOSED without ``on_close`` -- the handler never saw it (tls.py).  Two things
that look like states are not: reading paused (backpressure,
``pause_reading``) is an OPEN connection with ``Conn._paused`` set, so every
write path still sees it as open; and a connect in progress (dial.py) is not
yet a ``Conn`` at all -- it becomes OPEN (or HANDSHAKING) or nothing.

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
    LINGERING: ClassVar[ConnState]
    CLOSED: ClassVar[ConnState]
    HANDSHAKING: ClassVar[ConnState]
    _values: ClassVar[dict[str, int]] = {"OPEN": 0, "FLUSHING": 1, "LINGERING": 2, "CLOSED": 3, "HANDSHAKING": 4}


OPEN = ConnState.OPEN
FLUSHING = ConnState.FLUSHING  # closing: the outbound queue drains, nothing more is delivered
LINGERING = ConnState.LINGERING  # closing: FIN sent, waiting for the peer's EOF or acknowledgement
CLOSED = ConnState.CLOSED
HANDSHAKING = ConnState.HANDSHAKING  # TLS: not yet open; on_open when the handshake completes (tls.py)

TRANSITIONS: dict[ConnState, frozenset[ConnState]] = {
    OPEN: frozenset({FLUSHING, LINGERING, CLOSED}),
    FLUSHING: frozenset({LINGERING, CLOSED}),
    LINGERING: frozenset({CLOSED}),
    CLOSED: frozenset(),
    HANDSHAKING: frozenset({OPEN, CLOSED}),
}


class TransitionError(RuntimeError):
    """A move the state diagram does not have: a bug in gnetpy, never the user's doing."""


def check_transition(old: ConnState, new: ConnState) -> None:
    if new not in TRANSITIONS[old]:
        raise TransitionError(f"connection state {old.name} -> {new.name} is not a transition")


def close_target(state: ConnState, graceful: bool, queued: bool, lingers: bool) -> ConnState | None:
    """Where a close request takes a connection in ``state``; None means "stay".

    ``graceful``: a local close, or the peer's EOF -- what was written is
    still delivered.  Otherwise (an error, a forced stop) the connection
    closes at once.  ``queued``: bytes wait in the outbound queue.
    ``lingers``: once they are sent, wait for the peer (see the module
    docstring: a local close of a TCP connection).
    """
    if state == CLOSED:
        return None
    if not graceful or state == HANDSHAKING:  # a handshake in progress has nothing to deliver
        return CLOSED
    if state == OPEN:
        return FLUSHING if queued else after_flush(lingers)
    return None  # already closing: the closing protocol finishes it


def after_flush(lingers: bool) -> ConnState:
    """Where a closing connection goes once its outbound queue is empty."""
    return LINGERING if lingers else CLOSED
